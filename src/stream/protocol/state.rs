//! One stream-protocol connection as a sans-IO state machine: the handshake, heartbeats and the
//! close handshake, as RabbitMQ's `rabbit_stream_reader` runs them.
//!
//! ```text
//! PeerProperties → SaslHandshake → SaslAuthenticate ─(caller checks)→ server Tune
//!   → client Tune → Open(vhost) ─(caller allows)→ open: every other command goes up
//! ```
//!
//! It owns no socket and no clock, in the manner of quinn-proto: the driver feeds it what it
//! read ([`Connection::handle_input`]) and the time, writes out what [`Connection::poll_transmit`]
//! hands back, acts on each [`Event`] from [`Connection::poll_event`], and calls
//! [`Connection::handle_timeout`] at [`Connection::poll_timeout`]. It knows no users and no
//! vhosts: credentials and the vhost go up as events, and the caller's verdict comes back in
//! through [`Connection::authenticate`] and [`Connection::open`]; until then further input
//! waits in the buffer, since the client may have pipelined frames behind them.
//!
//! RabbitMQ's rules it keeps: any command out of order before Open closes the socket without an
//! answer (so do a frame that does not parse and one over the pre-Open size ceiling); a failed
//! login is answered (0x08, 0x0b loopback-only, 0x09 malformed, 0x07 unknown mechanism) and then
//! the socket closes; a refused vhost gets 0x0c and the socket closes. After Open an unknown or
//! malformed frame gets `Close(0x0d, "unknown frame")`, an oversized one `Close(0x0e, "frame too
//! large")`, after which only the client's CloseResponse (or a timeout) matters.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use super::codec::split_frame;
use super::frame::{self, ClientFrame, FrameError, Properties};
use super::{ADVERTISED_VERSIONS, RESPONSE_FLAG, code, encode, key};
use crate::connection::heartbeat::{Heartbeat, HeartbeatAction};

/// What the server offers and enforces.
#[derive(Debug, Clone)]
pub struct Config {
    /// Largest frame accepted once open, proposed in Tune (0: no limit).
    pub frame_max: u32,
    /// Heartbeat seconds proposed in Tune (0: none).
    pub heartbeat: u32,
    /// The frame-size ceiling until Open succeeds (0: `frame_max` applies).
    pub initial_frame_max: u32,
    /// SASL mechanisms offered, in order. PLAIN and AMQPLAIN responses are decoded here;
    /// EXTERNAL goes up with an empty user name (the certificate names the user).
    pub mechanisms: Vec<String>,
    /// The PeerProperties answer (product, version, cluster_name, platform, copyright,
    /// information).
    pub server_properties: Vec<(String, String)>,
    /// How long each handshake step, and the wait for a CloseResponse, may take (RabbitMQ's
    /// `connection_negotiation_step_timeout`).
    pub step_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            frame_max: super::DEFAULT_FRAME_MAX,
            heartbeat: super::DEFAULT_HEARTBEAT,
            initial_frame_max: super::DEFAULT_INITIAL_FRAME_MAX,
            mechanisms: vec!["PLAIN".into(), "AMQPLAIN".into()],
            server_properties: Vec::new(),
            step_timeout: Duration::from_secs(10),
        }
    }
}

/// What the caller must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Check a login; answer with [`Connection::authenticate`].
    Authenticate { mechanism: String, username: String, password: String },
    /// The authenticated user wants this vhost; answer with [`Connection::open`].
    Open { vhost: String },
    /// A command of the open connection, for the broker.
    Command(ClientFrame),
    /// The server sent Close (the reason is here); stop serving the connection. [`Event::Closed`]
    /// follows once the client answers or the wait times out.
    Closing { code: u16, reason: String },
    /// Send what [`Connection::poll_transmit`] still holds, then close the socket.
    Closed(CloseReason),
}

/// Why the connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent Close (answered).
    ByPeer { code: u16, reason: String },
    /// The client answered the server's Close.
    Acknowledged,
    /// The client broke the handshake's order.
    Handshake(&'static str),
    /// The login failed (answered with this code).
    Authentication(u16),
    /// The vhost was refused (answered with 0x0c).
    VhostRefused,
    /// A frame was refused before the connection was open.
    Frame(FrameError),
    /// No byte from the client for two heartbeat intervals.
    HeartbeatTimeout,
    /// A handshake step, or the close handshake, took too long.
    Timeout,
    /// The caller closed the connection before it was open.
    Local,
}

/// The caller's verdict on [`Event::Authenticate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    Accepted,
    /// Wrong user or password: 0x08.
    Refused,
    /// A user that may only log in from loopback, from elsewhere: 0x0b.
    LoopbackOnly,
}

/// The caller's verdict on [`Event::Open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenOutcome {
    /// Open, answering with these connection properties (RabbitMQ: `advertised_host`,
    /// `advertised_port`).
    Allowed { properties: Vec<(String, String)> },
    /// No such vhost or no access to it: 0x0c.
    Refused,
}

/// What the handshake settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub client_properties: Properties,
    pub mechanism: String,
    pub user: String,
    /// The largest frame the client may send once open (0: no limit).
    pub frame_max: u32,
    /// Seconds; 0: no heartbeats.
    pub heartbeat: u32,
    pub vhost: String,
    /// Deliver's version for this client: 2 once it said in ExchangeCommandVersions that it
    /// takes it, else 1.
    pub deliver_version: u16,
}

#[derive(Debug)]
enum Phase {
    AwaitPeerProperties,
    AwaitSaslHandshake,
    Authenticating,
    /// Waiting for the caller's [`AuthOutcome`].
    AuthPending {
        correlation_id: u32,
    },
    /// The server's Tune is out; the client's Tune (or straight away Open) is next.
    Tuning,
    Tuned,
    /// Waiting for the caller's [`OpenOutcome`].
    OpenPending {
        correlation_id: u32,
    },
    Open,
    /// The server sent Close; waiting for the CloseResponse.
    CloseSent,
    Closed,
}

/// One connection's protocol state.
#[derive(Debug)]
pub struct Connection {
    config: Config,
    phase: Phase,
    negotiated: Negotiated,
    input: BytesMut,
    output: BytesMut,
    events: VecDeque<Event>,
    /// Bytes received so far (any byte proves the client alive).
    rx_bytes: u64,
    heartbeat: Option<Heartbeat>,
    /// When the current handshake step, or the wait for a CloseResponse, times out.
    deadline: Option<Instant>,
    /// The last correlation id used for a request from the server.
    correlation_id: u32,
    /// A frame over the limit was refused: what follows cannot be framed, so input is dropped
    /// (as RabbitMQ does).
    desynced: bool,
}

/// `0` on either side means no limit: the other side's value applies.
fn negotiate_frame_max(client: u32, server: u32) -> u32 {
    match (client, server) {
        (0, s) => s,
        (c, 0) => c,
        (c, s) => c.min(s),
    }
}

impl Connection {
    pub fn new(config: Config, now: Instant) -> Self {
        let deadline = Some(now + config.step_timeout);
        Connection {
            negotiated: Negotiated {
                client_properties: Vec::new(),
                mechanism: String::new(),
                user: String::new(),
                frame_max: config.frame_max,
                heartbeat: 0,
                vhost: String::new(),
                deliver_version: 1,
            },
            config,
            phase: Phase::AwaitPeerProperties,
            input: BytesMut::new(),
            output: BytesMut::new(),
            events: VecDeque::new(),
            rx_bytes: 0,
            heartbeat: None,
            deadline,
            correlation_id: 0,
            desynced: false,
        }
    }

    /// Bytes read from the socket.
    pub fn handle_input(&mut self, data: &[u8], now: Instant) {
        self.rx_bytes += data.len() as u64;
        if matches!(self.phase, Phase::Closed) || self.desynced {
            return;
        }
        self.input.extend_from_slice(data);
        self.process(now);
    }

    /// The caller's verdict on [`Event::Authenticate`] (ignored at any other time).
    pub fn authenticate(&mut self, outcome: AuthOutcome, now: Instant) {
        let Phase::AuthPending { correlation_id } = self.phase else { return };
        let fail = |code| (code, Some(CloseReason::Authentication(code)));
        let (code, failure) = match outcome {
            AuthOutcome::Accepted => (code::OK, None),
            AuthOutcome::Refused => fail(code::AUTHENTICATION_FAILURE),
            AuthOutcome::LoopbackOnly => fail(code::SASL_AUTHENTICATION_FAILURE_LOOPBACK),
        };
        encode::sasl_authenticate_response(&mut self.output, correlation_id, code, &[]);
        if let Some(reason) = failure {
            return self.close_socket(reason);
        }
        encode::tune(&mut self.output, self.config.frame_max, self.config.heartbeat);
        self.step(Phase::Tuning, now);
        self.process(now);
    }

    /// The caller's verdict on [`Event::Open`] (ignored at any other time).
    pub fn open(&mut self, outcome: OpenOutcome, now: Instant) {
        let Phase::OpenPending { correlation_id } = self.phase else { return };
        match outcome {
            OpenOutcome::Refused => {
                encode::open_response(&mut self.output, correlation_id, code::VIRTUAL_HOST_ACCESS_FAILURE, &[]);
                self.close_socket(CloseReason::VhostRefused);
            }
            OpenOutcome::Allowed { properties } => {
                let props: Vec<(&str, &str)> = properties.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                encode::open_response(&mut self.output, correlation_id, code::OK, &props);
                self.phase = Phase::Open;
                self.deadline = None;
                self.process(now);
            }
        }
    }

    /// Close the connection from the server's side: Close(code, reason) when open (then wait
    /// for the CloseResponse), at once otherwise.
    pub fn close(&mut self, code: u16, reason: &str, now: Instant) {
        match self.phase {
            Phase::Open => self.send_close(code, reason, now),
            Phase::CloseSent | Phase::Closed => {}
            _ => self.close_socket(CloseReason::Local),
        }
    }

    /// The next event to act on.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Bytes to write to the socket, if any.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        (!self.output.is_empty()).then(|| self.output.split().freeze())
    }

    /// When [`Connection::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let heartbeat = self.heartbeat.as_ref().map(Heartbeat::next_deadline);
        match (self.deadline, heartbeat) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Time passed: send a heartbeat, or give up on a silent client or a stalled step.
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Closed) {
            return;
        }
        if self.deadline.is_some_and(|d| now >= d) {
            return self.close_socket(CloseReason::Timeout);
        }
        let Some(hb) = self.heartbeat.as_mut() else { return };
        match hb.poll(now, self.rx_bytes) {
            HeartbeatAction::Nothing => {}
            HeartbeatAction::Send => {
                encode::heartbeat(&mut self.output);
                hb.sent(now);
            }
            HeartbeatAction::TimedOut => self.close_socket(CloseReason::HeartbeatTimeout),
        }
    }

    /// The driver wrote frames of its own (deliveries, confirms) at `now`: no heartbeat is due.
    pub fn on_sent(&mut self, now: Instant) {
        if let Some(hb) = self.heartbeat.as_mut() {
            hb.sent(now);
        }
    }

    /// A fresh correlation id for a request from the server (ConsumerUpdate).
    pub fn next_correlation_id(&mut self) -> u32 {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        self.correlation_id
    }

    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open)
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// What the handshake settled so far (complete once open).
    pub fn negotiated(&self) -> &Negotiated {
        &self.negotiated
    }

    /// The frame-size limit in force for the next frame.
    pub fn frame_limit(&self) -> u32 {
        match self.phase {
            Phase::Open | Phase::CloseSent => self.negotiated.frame_max,
            _ if self.config.initial_frame_max == 0 => self.config.frame_max,
            _ => negotiate_frame_max(self.config.initial_frame_max, self.config.frame_max),
        }
    }

    /// Handle buffered frames until one needs the caller's answer or the connection ends.
    fn process(&mut self, now: Instant) {
        while matches!(
            self.phase,
            Phase::AwaitPeerProperties
                | Phase::AwaitSaslHandshake
                | Phase::Authenticating
                | Phase::Tuning
                | Phase::Tuned
                | Phase::Open
                | Phase::CloseSent
        ) {
            let limit = self.frame_limit();
            let raw = match split_frame(&mut self.input, limit) {
                Ok(Some(raw)) => raw,
                Ok(None) => return,
                Err(e) => return self.refuse(e, now),
            };
            match frame::parse(&raw) {
                Ok(f) => self.on_frame(f, now),
                Err(e) => self.refuse(e, now),
            }
        }
    }

    /// A frame that cannot be taken: RabbitMQ answers it with Close once open, and closes the
    /// socket without a word before that.
    fn refuse(&mut self, e: FrameError, now: Instant) {
        match self.phase {
            Phase::Open => {
                let reason = if e.code() == code::FRAME_TOO_LARGE { "frame too large" } else { "unknown frame" };
                if e.code() == code::FRAME_TOO_LARGE {
                    self.input.clear();
                    self.desynced = true;
                }
                self.send_close(e.code(), reason, now);
            }
            Phase::CloseSent if e.code() != code::FRAME_TOO_LARGE => {}
            _ => self.close_socket(CloseReason::Frame(e)),
        }
    }

    fn on_frame(&mut self, f: ClientFrame, now: Instant) {
        use ClientFrame as F;
        match (&self.phase, f) {
            // Heartbeats are welcome at any step; any byte already counted as a sign of life.
            (_, F::Heartbeat) => {}
            (Phase::AwaitPeerProperties, F::PeerProperties { correlation_id, properties }) => {
                let props: Vec<(&str, &str)> =
                    self.config.server_properties.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                encode::peer_properties_response(&mut self.output, correlation_id, code::OK, &props);
                self.negotiated.client_properties = properties;
                self.step(Phase::AwaitSaslHandshake, now);
            }
            (Phase::AwaitSaslHandshake | Phase::Authenticating, F::SaslHandshake { correlation_id }) => {
                let mechanisms: Vec<&str> = self.config.mechanisms.iter().map(String::as_str).collect();
                encode::sasl_handshake_response(&mut self.output, correlation_id, code::OK, &mechanisms);
                self.step(Phase::Authenticating, now);
            }
            (Phase::Authenticating, F::SaslAuthenticate { correlation_id, mechanism, data }) => {
                self.on_sasl(correlation_id, &mechanism, &data)
            }
            (Phase::Tuning, F::Tune { frame_max, heartbeat }) => {
                self.negotiated.frame_max = negotiate_frame_max(frame_max, self.config.frame_max);
                self.negotiated.heartbeat = heartbeat;
                let secs = u16::try_from(heartbeat).unwrap_or(u16::MAX);
                self.heartbeat = Heartbeat::new(secs, now);
                self.step(Phase::Tuned, now);
            }
            (Phase::Tuning | Phase::Tuned, F::Open { correlation_id, vhost }) => {
                self.negotiated.vhost = vhost.to_string();
                self.phase = Phase::OpenPending { correlation_id };
                self.deadline = None;
                self.events.push_back(Event::Open { vhost: vhost.to_string() });
            }
            (Phase::Open, F::Close { correlation_id, code, reason }) => {
                encode::simple_response(&mut self.output, key::CLOSE, correlation_id, code::OK);
                self.close_socket(CloseReason::ByPeer { code, reason: reason.to_string() });
            }
            (Phase::Open, F::ExchangeCommandVersions { correlation_id, versions }) => {
                if versions.iter().any(|v| v.key == key::DELIVER && v.min <= 2 && v.max >= 2) {
                    self.negotiated.deliver_version = 2;
                }
                encode::exchange_command_versions_response(
                    &mut self.output,
                    correlation_id,
                    code::OK,
                    ADVERTISED_VERSIONS,
                );
            }
            // Handshake commands have no place on an open connection (SASL ones do: a client
            // may re-authenticate to refresh its credentials).
            (
                Phase::Open,
                f @ (F::PeerProperties { .. } | F::Tune { .. } | F::Open { .. } | F::CloseResponse { .. }),
            ) => self.refuse(FrameError::Unknown { key: f.key(), version: 1 }, now),
            (Phase::Open, f) => self.events.push_back(Event::Command(f)),
            (Phase::CloseSent, F::CloseResponse { .. }) => self.close_socket(CloseReason::Acknowledged),
            // After Close, RabbitMQ ignores everything but the answer.
            (Phase::CloseSent, _) => {}
            (_, f) => {
                tracing::debug!(key = f.key() & !RESPONSE_FLAG, "stream command out of handshake order");
                self.close_socket(CloseReason::Handshake("command out of order before open"));
            }
        }
    }

    fn on_sasl(&mut self, correlation_id: u32, mechanism: &str, data: &[u8]) {
        let refuse = |this: &mut Self, code| {
            encode::sasl_authenticate_response(&mut this.output, correlation_id, code, &[]);
            this.close_socket(CloseReason::Authentication(code));
        };
        if !self.config.mechanisms.iter().any(|m| m == mechanism) {
            return refuse(self, code::SASL_MECHANISM_NOT_SUPPORTED);
        }
        let credentials = match mechanism {
            "PLAIN" => crate::connection::handshake::parse_plain(data),
            "AMQPLAIN" => crate::connection::handshake::parse_amqplain(data),
            "EXTERNAL" => Some((String::new(), String::new())),
            _ => return refuse(self, code::SASL_MECHANISM_NOT_SUPPORTED),
        };
        let Some((username, password)) = credentials else { return refuse(self, code::SASL_ERROR) };
        self.negotiated.mechanism = mechanism.to_string();
        self.negotiated.user = username.clone();
        self.phase = Phase::AuthPending { correlation_id };
        self.deadline = None;
        self.events.push_back(Event::Authenticate { mechanism: mechanism.to_string(), username, password });
    }

    /// Move to the next handshake step, which gets its own time limit.
    fn step(&mut self, phase: Phase, now: Instant) {
        self.phase = phase;
        self.deadline = Some(now + self.config.step_timeout);
    }

    fn send_close(&mut self, code: u16, reason: &str, now: Instant) {
        let id = self.next_correlation_id();
        encode::close(&mut self.output, id, code, reason);
        self.events.push_back(Event::Closing { code, reason: reason.to_string() });
        self.phase = Phase::CloseSent;
        self.deadline = Some(now + self.config.step_timeout);
    }

    fn close_socket(&mut self, reason: CloseReason) {
        self.phase = Phase::Closed;
        self.deadline = None;
        self.heartbeat = None;
        self.input.clear();
        self.events.push_back(Event::Closed(reason));
    }
}
