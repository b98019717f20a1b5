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

/// The most input buffered while the caller decides on a login or a vhost: a client may
/// pipeline the rest of its handshake (a few hundred bytes), not send on without limit.
const PENDING_INPUT_MAX: usize = 64 * 1024;

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
        if self.input.len() > PENDING_INPUT_MAX && !self.wants_input() {
            return self.close_socket(CloseReason::Handshake("too much input while a login or Open was decided"));
        }
        self.process(now);
    }

    /// Whether the driver should read from the socket: not while a login or Open waits for
    /// the caller's verdict (input then only piles up), nor once closed.
    pub fn wants_input(&self) -> bool {
        !matches!(self.phase, Phase::AuthPending { .. } | Phase::OpenPending { .. } | Phase::Closed) && !self.desynced
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

    /// The driver does not read the socket on purpose at `now` (flow control, a resource
    /// alarm): the client's silence meanwhile does not count against it, as RabbitMQ pauses its
    /// heartbeat monitor while a connection is blocked.
    pub fn input_paused(&mut self, now: Instant) {
        if let Some(hb) = self.heartbeat.as_mut() {
            hb.touch(now);
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

#[cfg(test)]
mod tests {
    use super::super::client::{self, Reader};
    use super::super::frame::OffsetSpec;
    use super::*;
    use crate::stream::protocol::CommandVersion;
    use bytestring::ByteString;

    fn config() -> Config {
        Config { server_properties: vec![("product".into(), "RabbitMQ".into())], ..Config::default() }
    }

    fn s(v: &str) -> ByteString {
        ByteString::from(v)
    }

    /// The frames the connection wrote, as (key, version, the whole frame).
    fn sent(c: &mut Connection) -> Vec<(u16, u16, Vec<u8>)> {
        let mut out = Vec::new();
        let mut buf = BytesMut::from(&c.poll_transmit().unwrap_or_default()[..]);
        while let Some(f) = split_frame(&mut buf, 0).unwrap() {
            let mut whole = (f.len() as u32).to_be_bytes().to_vec();
            whole.extend_from_slice(&f);
            out.push((u16::from_be_bytes([f[0], f[1]]), u16::from_be_bytes([f[2], f[3]]), whole));
        }
        assert!(buf.is_empty());
        out
    }

    fn events(c: &mut Connection) -> Vec<Event> {
        std::iter::from_fn(|| c.poll_event()).collect()
    }

    fn feed(c: &mut Connection, frames: &[ClientFrame], now: Instant) {
        let mut wire = Vec::new();
        for f in frames {
            wire.extend_from_slice(&client::encode(f));
        }
        c.handle_input(&wire, now);
    }

    fn plain(user: &str, pass: &str) -> ClientFrame {
        ClientFrame::SaslAuthenticate {
            correlation_id: 3,
            mechanism: s("PLAIN"),
            data: Bytes::from(format!("\0{user}\0{pass}")),
        }
    }

    fn hello() -> Vec<ClientFrame> {
        vec![
            ClientFrame::PeerProperties { correlation_id: 1, properties: vec![(s("product"), s("test"))] },
            ClientFrame::SaslHandshake { correlation_id: 2 },
        ]
    }

    /// A connection past a successful login (the server's Tune sent).
    fn logged_in(now: Instant) -> Connection {
        let mut c = Connection::new(config(), now);
        feed(&mut c, &hello(), now);
        feed(&mut c, &[plain("guest", "guest")], now);
        c.authenticate(AuthOutcome::Accepted, now);
        c
    }

    /// A connection taken through the handshake to open.
    fn open_connection(now: Instant) -> Connection {
        let mut c = logged_in(now);
        feed(&mut c, &[ClientFrame::Tune { frame_max: 131_072, heartbeat: 0 }], now);
        feed(&mut c, &[ClientFrame::Open { correlation_id: 4, vhost: s("/") }], now);
        c.open(OpenOutcome::Allowed { properties: vec![] }, now);
        assert!(c.is_open());
        sent(&mut c);
        events(&mut c);
        c
    }

    /// The response code of a response frame.
    fn code_of(frame: &[u8]) -> u16 {
        u16::from_be_bytes([frame[12], frame[13]])
    }

    #[test]
    fn handshake_to_open_and_commands_after() {
        let now = Instant::now();
        let mut c = Connection::new(config(), now);
        feed(&mut c, &hello(), now);
        let out = sent(&mut c);
        assert_eq!(out.iter().map(|f| f.0).collect::<Vec<_>>(), [0x8011, 0x8012]);
        let mut r = Reader(&out[0].2);
        r.header();
        assert_eq!((r.u32(), r.u16(), r.map()), (1, code::OK, vec![("product".into(), "RabbitMQ".into())]));
        let mut r = Reader(&out[1].2);
        r.header();
        assert_eq!((r.u32(), r.u16(), r.strings()), (2, code::OK, vec!["PLAIN".into(), "AMQPLAIN".into()]));
        assert_eq!(c.frame_limit(), 8192, "the pre-Open ceiling");

        feed(&mut c, &[plain("guest", "secret")], now);
        assert_eq!(
            events(&mut c),
            [Event::Authenticate { mechanism: "PLAIN".into(), username: "guest".into(), password: "secret".into() }]
        );
        assert!(sent(&mut c).is_empty(), "nothing answered before the caller decides");
        c.authenticate(AuthOutcome::Accepted, now);
        let out = sent(&mut c);
        assert_eq!(out.iter().map(|f| (f.0, f.1)).collect::<Vec<_>>(), [(0x8013, 1), (0x0014, 1)]);
        assert_eq!(code_of(&out[0].2), code::OK);
        assert_eq!(&out[1].2[8..], [0, 0x10, 0, 0, 0, 0, 0, 60], "Tune: 1 MiB, 60 s");

        // The client's Tune: a smaller frame_max is taken, and its heartbeat.
        feed(&mut c, &[ClientFrame::Tune { frame_max: 131_072, heartbeat: 30 }], now);
        assert!(sent(&mut c).is_empty() && events(&mut c).is_empty());
        feed(&mut c, &[ClientFrame::Open { correlation_id: 4, vhost: s("/") }], now);
        assert_eq!(events(&mut c), [Event::Open { vhost: "/".into() }]);
        assert_eq!(c.frame_limit(), 8192, "still the ceiling until Open is answered");
        let props =
            vec![("advertised_host".to_string(), "localhost".to_string()), ("advertised_port".into(), "5552".into())];
        c.open(OpenOutcome::Allowed { properties: props }, now);
        let out = sent(&mut c);
        assert_eq!(out[0].0, 0x8015);
        assert_eq!(code_of(&out[0].2), code::OK);
        assert!(c.is_open());
        assert_eq!(c.frame_limit(), 131_072);
        let n = c.negotiated();
        assert_eq!((n.user.as_str(), n.vhost.as_str(), n.frame_max, n.heartbeat), ("guest", "/", 131_072, 30));
        assert_eq!(n.client_properties, vec![(s("product"), s("test"))]);

        // ExchangeCommandVersions is answered here; a client taking Deliver v2 gets it.
        assert_eq!(c.negotiated().deliver_version, 1);
        let versions = vec![CommandVersion { key: 8, min: 1, max: 2 }];
        feed(&mut c, &[ClientFrame::ExchangeCommandVersions { correlation_id: 5, versions }], now);
        let out = sent(&mut c);
        assert_eq!(out[0].0, 0x801b);
        assert_eq!(c.negotiated().deliver_version, 2);

        // Everything else goes up, in order, heartbeats aside.
        let create = ClientFrame::Create { correlation_id: 6, stream: s("s1"), arguments: vec![] };
        let sub = ClientFrame::Subscribe {
            correlation_id: 7,
            subscription_id: 1,
            stream: s("s1"),
            offset: OffsetSpec::First,
            credit: 1,
            properties: vec![],
        };
        feed(&mut c, &[create.clone(), ClientFrame::Heartbeat, sub.clone()], now);
        assert_eq!(events(&mut c), [Event::Command(create), Event::Command(sub)]);

        // The client closes: answered, then the socket goes.
        feed(&mut c, &[ClientFrame::Close { correlation_id: 8, code: 1, reason: s("bye") }], now);
        let out = sent(&mut c);
        assert_eq!((out[0].0, code_of(&out[0].2)), (0x8016, code::OK));
        assert_eq!(events(&mut c), [Event::Closed(CloseReason::ByPeer { code: 1, reason: "bye".into() })]);
        assert!(c.is_closed());
    }

    #[test]
    fn pipelined_handshake_waits_for_each_answer() {
        let now = Instant::now();
        let mut c = Connection::new(config(), now);
        let mut frames = hello();
        frames.push(plain("guest", "guest"));
        frames.push(ClientFrame::Tune { frame_max: 0, heartbeat: 0 });
        frames.push(ClientFrame::Open { correlation_id: 4, vhost: s("/") });
        feed(&mut c, &frames, now);
        assert!(matches!(events(&mut c)[..], [Event::Authenticate { .. }]));
        c.authenticate(AuthOutcome::Accepted, now);
        assert_eq!(events(&mut c), [Event::Open { vhost: "/".into() }]);
        c.open(OpenOutcome::Allowed { properties: vec![] }, now);
        assert_eq!(sent(&mut c).iter().map(|f| f.0).collect::<Vec<_>>(), [0x8011, 0x8012, 0x8013, 0x0014, 0x8015]);
        assert_eq!(c.negotiated().frame_max, super::super::DEFAULT_FRAME_MAX, "client frame_max 0: the server's");
    }

    #[test]
    fn open_without_tune_is_taken() {
        let now = Instant::now();
        let mut c = logged_in(now);
        feed(&mut c, &[ClientFrame::Open { correlation_id: 4, vhost: s("/") }], now);
        assert_eq!(events(&mut c).last(), Some(&Event::Open { vhost: "/".into() }));
    }

    fn login_fails(auth: ClientFrame, outcome: Option<AuthOutcome>, expected: u16) {
        let now = Instant::now();
        let mut c = Connection::new(config(), now);
        feed(&mut c, &hello(), now);
        sent(&mut c);
        // Frames pipelined after the login are never looked at.
        feed(&mut c, &[auth, ClientFrame::Tune { frame_max: 0, heartbeat: 0 }], now);
        if let Some(o) = outcome {
            assert!(matches!(events(&mut c)[..], [Event::Authenticate { .. }]));
            c.authenticate(o, now);
        }
        let out = sent(&mut c);
        assert_eq!(out.len(), 1, "only the SaslAuthenticate answer, no Tune");
        assert_eq!((out[0].0, code_of(&out[0].2)), (0x8013, expected));
        assert_eq!(events(&mut c), [Event::Closed(CloseReason::Authentication(expected))]);
        assert!(c.is_closed());
        feed(&mut c, &hello(), now);
        assert!(sent(&mut c).is_empty(), "a closed connection says nothing more");
    }

    #[test]
    fn failed_logins() {
        login_fails(plain("guest", "wrong"), Some(AuthOutcome::Refused), code::AUTHENTICATION_FAILURE);
        login_fails(
            plain("guest", "guest"),
            Some(AuthOutcome::LoopbackOnly),
            code::SASL_AUTHENTICATION_FAILURE_LOOPBACK,
        );
        let unknown =
            ClientFrame::SaslAuthenticate { correlation_id: 3, mechanism: s("SCRAM-SHA-1"), data: Bytes::new() };
        login_fails(unknown, None, code::SASL_MECHANISM_NOT_SUPPORTED);
        // EXTERNAL is understood, but only when offered.
        let external =
            ClientFrame::SaslAuthenticate { correlation_id: 3, mechanism: s("EXTERNAL"), data: Bytes::new() };
        login_fails(external, None, code::SASL_MECHANISM_NOT_SUPPORTED);
        let garbled =
            ClientFrame::SaslAuthenticate { correlation_id: 3, mechanism: s("PLAIN"), data: Bytes::from("guest") };
        login_fails(garbled, None, code::SASL_ERROR);
    }

    #[test]
    fn refused_vhost() {
        let now = Instant::now();
        let mut c = logged_in(now);
        feed(&mut c, &[ClientFrame::Open { correlation_id: 4, vhost: s("nope") }], now);
        sent(&mut c);
        events(&mut c);
        c.open(OpenOutcome::Refused, now);
        let out = sent(&mut c);
        assert_eq!((out[0].0, code_of(&out[0].2)), (0x8015, code::VIRTUAL_HOST_ACCESS_FAILURE));
        assert_eq!(out[0].2.len(), 14, "no properties");
        assert_eq!(events(&mut c), [Event::Closed(CloseReason::VhostRefused)]);
    }

    #[test]
    fn commands_out_of_order_before_open_close_without_a_word() {
        let now = Instant::now();
        let create = ClientFrame::Create { correlation_id: 1, stream: s("s"), arguments: vec![] };
        let cases: Vec<Vec<ClientFrame>> = vec![
            vec![create.clone()],
            vec![ClientFrame::SaslHandshake { correlation_id: 1 }],
            vec![hello()[0].clone(), plain("guest", "guest")],
            vec![hello()[0].clone(), create.clone()],
            hello().into_iter().chain([ClientFrame::Open { correlation_id: 4, vhost: s("/") }]).collect(),
        ];
        for frames in cases {
            let mut c = Connection::new(config(), now);
            let (last, first) = frames.split_last().unwrap();
            feed(&mut c, first, now);
            sent(&mut c);
            feed(&mut c, std::slice::from_ref(last), now);
            assert!(sent(&mut c).is_empty(), "{frames:?}");
            assert!(matches!(events(&mut c)[..], [Event::Closed(CloseReason::Handshake(_))]), "{frames:?}");
        }
        // Commands between login and Open too.
        let mut c = logged_in(now);
        sent(&mut c);
        events(&mut c);
        feed(&mut c, &[create], now);
        assert!(sent(&mut c).is_empty());
        assert!(matches!(events(&mut c)[..], [Event::Closed(CloseReason::Handshake(_))]));
    }

    #[test]
    fn unknown_and_oversized_frames_before_open() {
        let now = Instant::now();
        let mut c = Connection::new(config(), now);
        c.handle_input(&[0, 0, 0, 4, 0, 0x77, 0, 1], now);
        assert!(sent(&mut c).is_empty());
        assert_eq!(events(&mut c), [Event::Closed(CloseReason::Frame(FrameError::Unknown { key: 0x77, version: 1 }))]);

        let mut c = Connection::new(config(), now);
        c.handle_input(&9000u32.to_be_bytes(), now);
        assert!(sent(&mut c).is_empty());
        assert_eq!(events(&mut c), [Event::Closed(CloseReason::Frame(FrameError::TooLarge { size: 9000, max: 8192 }))]);
    }

    #[test]
    fn unknown_frame_after_open_is_closed_with_0x0d() {
        let now = Instant::now();
        let mut c = open_connection(now);
        let create = ClientFrame::Create { correlation_id: 9, stream: s("s"), arguments: vec![] };
        let mut wire = vec![0, 0, 0, 4, 0, 0x77, 0, 1];
        wire.extend_from_slice(&client::encode(&create));
        c.handle_input(&wire, now);
        let out = sent(&mut c);
        assert_eq!(out.len(), 1);
        let mut r = Reader(&out[0].2);
        assert_eq!(r.header(), (0x0016, 1));
        let id = r.u32();
        assert_eq!((r.u16(), r.string()), (code::UNKNOWN_FRAME, "unknown frame".into()));
        assert_eq!(events(&mut c), [Event::Closing { code: code::UNKNOWN_FRAME, reason: "unknown frame".into() }]);
        // Commands after it are ignored; the client's CloseResponse ends it.
        feed(&mut c, &[ClientFrame::CloseResponse { correlation_id: id, code: code::OK }], now);
        assert_eq!(events(&mut c), [Event::Closed(CloseReason::Acknowledged)]);

        // A handshake command on an open connection is unknown there too.
        let mut c = open_connection(now);
        feed(&mut c, &[ClientFrame::Tune { frame_max: 0, heartbeat: 0 }], now);
        assert_eq!(sent(&mut c)[0].0, 0x0016);
        // A malformed body is refused as an unknown frame, as RabbitMQ does.
        let mut c = open_connection(now);
        c.handle_input(&[0, 0, 0, 6, 0, 0x0e, 0, 1, 0, 0], now);
        assert_eq!(events(&mut c), [Event::Closing { code: code::UNKNOWN_FRAME, reason: "unknown frame".into() }]);
    }

    #[test]
    fn oversized_frame_after_open_is_closed_with_0x0e() {
        let now = Instant::now();
        let mut c = open_connection(now);
        c.handle_input(&200_000u32.to_be_bytes(), now);
        let out = sent(&mut c);
        let mut r = Reader(&out[0].2);
        assert_eq!(r.header(), (0x0016, 1));
        r.u32();
        assert_eq!((r.u16(), r.string()), (code::FRAME_TOO_LARGE, "frame too large".into()));
        assert!(matches!(events(&mut c)[..], [Event::Closing { code: code::FRAME_TOO_LARGE, .. }]));
        // The input cannot be framed any more: what follows is dropped, the wait times out.
        feed(&mut c, &[ClientFrame::CloseResponse { correlation_id: 1, code: 1 }], now);
        assert!(events(&mut c).is_empty());
        let deadline = c.poll_timeout().unwrap();
        c.handle_timeout(deadline);
        assert_eq!(events(&mut c), [Event::Closed(CloseReason::Timeout)]);
    }

    /// A connection opened at `t0` with a 10 s heartbeat (its output and events taken).
    fn open_with_heartbeat(t0: Instant) -> Connection {
        let mut c = logged_in(t0);
        feed(&mut c, &[ClientFrame::Tune { frame_max: 0, heartbeat: 10 }], t0);
        feed(&mut c, &[ClientFrame::Open { correlation_id: 4, vhost: s("/") }], t0);
        c.open(OpenOutcome::Allowed { properties: vec![] }, t0);
        sent(&mut c);
        events(&mut c);
        c
    }

    #[test]
    fn heartbeats_and_silence() {
        let t0 = Instant::now();
        let sec = Duration::from_secs(1);
        let mut c = open_with_heartbeat(t0);
        // Half an interval without output: a heartbeat goes out.
        assert_eq!(c.poll_timeout(), Some(t0 + 5 * sec));
        c.handle_timeout(t0 + 5 * sec);
        assert_eq!(sent(&mut c).iter().map(|f| f.0).collect::<Vec<_>>(), [0x0017]);
        // The client's bytes keep it alive.
        feed(&mut c, &[ClientFrame::Heartbeat], t0 + 15 * sec);
        c.on_sent(t0 + 15 * sec);
        c.handle_timeout(t0 + 15 * sec);
        assert!(events(&mut c).is_empty());
        c.handle_timeout(t0 + 34 * sec);
        assert!(events(&mut c).is_empty());
        sent(&mut c);
        // Two silent intervals since its last byte: gone.
        c.handle_timeout(t0 + 35 * sec);
        assert_eq!(events(&mut c), [Event::Closed(CloseReason::HeartbeatTimeout)]);
    }

    #[test]
    fn paused_input_is_not_silence() {
        let t0 = Instant::now();
        let sec = Duration::from_secs(1);
        let mut c = open_with_heartbeat(t0);
        c.handle_timeout(t0 + sec);
        // The driver stopped reading at 15 s and still does at 30 s: 34 s without a byte.
        c.input_paused(t0 + 15 * sec);
        c.input_paused(t0 + 30 * sec);
        c.handle_timeout(t0 + 35 * sec);
        assert!(events(&mut c).is_empty(), "not timed out while paused");
        // Reading again since 30 s: two silent intervals are too many.
        c.handle_timeout(t0 + 50 * sec);
        assert_eq!(events(&mut c), [Event::Closed(CloseReason::HeartbeatTimeout)]);
    }

    #[test]
    fn a_stalled_handshake_step_times_out() {
        let t0 = Instant::now();
        let mut c = Connection::new(config(), t0);
        assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(10)));
        feed(&mut c, &hello()[..1], t0 + Duration::from_secs(9));
        c.handle_timeout(t0 + Duration::from_secs(10));
        assert!(events(&mut c).is_empty(), "each step gets its own time");
        c.handle_timeout(t0 + Duration::from_secs(19));
        assert_eq!(events(&mut c), [Event::Closed(CloseReason::Timeout)]);
    }

    #[test]
    fn input_piling_up_during_a_decision_is_bounded() {
        let now = Instant::now();
        let mut c = Connection::new(config(), now);
        feed(&mut c, &hello(), now);
        feed(&mut c, &[plain("guest", "guest")], now);
        assert!(!c.wants_input());
        let heartbeats: Vec<u8> = [0, 0, 0, 4, 0, 0x17, 0, 1].repeat(4096);
        c.handle_input(&heartbeats, now);
        assert!(!c.is_closed(), "32 KiB pipelined is fine");
        c.handle_input(&heartbeats, now);
        c.handle_input(&heartbeats, now);
        assert!(matches!(events(&mut c).last(), Some(Event::Closed(CloseReason::Handshake(_)))));
    }

    /// The fuzz seed of a whole session: through the handshake, every command up, then Close.
    #[test]
    fn whole_session_seed() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/stream_frames/session");
        let data = std::fs::read(path).unwrap();
        let now = Instant::now();
        let mut c = Connection::new(config(), now);
        let mut commands = 0;
        for piece in data.chunks(5) {
            c.handle_input(piece, now);
            while let Some(e) = c.poll_event() {
                match e {
                    Event::Authenticate { .. } => c.authenticate(AuthOutcome::Accepted, now),
                    Event::Open { .. } => c.open(OpenOutcome::Allowed { properties: vec![] }, now),
                    Event::Command(_) => commands += 1,
                    Event::Closed(r) => assert_eq!(r, CloseReason::ByPeer { code: 1, reason: "bye".into() }),
                    other => panic!("{other:?}"),
                }
            }
        }
        assert!(c.is_closed());
        assert_eq!(commands, 30, "every command after Open but heartbeats and ExchangeCommandVersions");
    }

    #[test]
    fn server_close() {
        let now = Instant::now();
        let mut c = open_connection(now);
        c.close(code::INTERNAL_ERROR, "shutdown", now);
        let out = sent(&mut c);
        assert_eq!(out[0].0, 0x0016);
        feed(&mut c, &[ClientFrame::Heartbeat, ClientFrame::CloseResponse { correlation_id: 1, code: 1 }], now);
        assert_eq!(
            events(&mut c),
            [
                Event::Closing { code: code::INTERNAL_ERROR, reason: "shutdown".into() },
                Event::Closed(CloseReason::Acknowledged)
            ]
        );
        let mut c = Connection::new(config(), now);
        c.close(code::INTERNAL_ERROR, "shutdown", now);
        assert_eq!(events(&mut c), [Event::Closed(CloseReason::Local)]);
    }
}
