//! One AMQP connection: the task that owns its socket's read half and the state of all of its
//! channels; it writes its output itself when the socket takes it, else through a writer task
//! ([`writer`]).
//!
//! Flow: protocol header → [`handshake`] (sans-IO) → the run loop, which waits on four things:
//! frames from the socket, events from queues (deliveries, confirms, cancels) on the inbox,
//! the heartbeat deadline, and broker shutdown. Frames are dispatched to
//! [`methods`] (one handler per AMQP method); output is gathered in an [`Outbound`] batch and
//! handed to the writer once per loop turn. Publishes from one socket read are grouped per
//! queue and sent as one mailbox command each.
//!
//! Errors: a soft [`AmqpError`] closes its channel, a hard one the connection; both are turned
//! into close frames only in [`Connection::fail`].

pub mod flow;
pub mod handshake;
pub mod heartbeat;
pub mod methods;
pub mod publish;
pub mod writer;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::broker::Broker;
use crate::broker::connections::ConnState;
use crate::broker::vhost::VHost;
use crate::channel::{Channel, ChannelPhase};
use crate::error::{AmqpError, ReplyCode};
use crate::protocol::codec::{DecodeError, Frame, FrameCodec, octets};
use crate::protocol::encode::{self, Outbound};
use crate::protocol::{AMQPClass, PROTOCOL_HEADER, methods as m};
use crate::queue::state::delivery_size;
use crate::queue::{ConnEvent, ConnInbox, Publish, QueueCmd, QueueHandle};
use flow::FlowGauge;
use handshake::{Handshake, HandshakeError, Negotiated, Progress};
use heartbeat::{Heartbeat, HeartbeatAction};
use writer::Writer;

/// Frames handled per loop turn when more are already buffered, before output is flushed and
/// the inbox gets a turn (fairness between a busy publisher and its own deliveries).
const FRAMES_PER_TURN: usize = 256;
/// How long the broker waits, after its close-ok, for the client to close the socket.
const CLIENT_CLOSE_GRACE: Duration = Duration::from_secs(1);
/// How long the broker waits for `connection.close-ok` after sending `connection.close`.
const CLOSE_OK_TIMEOUT: Duration = Duration::from_secs(3);

type Framed = FramedRead<CountingReader, FrameCodec>;

/// An accepted socket: plain TCP, or TLS after its handshake.
pub struct Transport {
    local: Option<SocketAddr>,
    reader: Box<dyn AsyncRead + Send + Unpin>,
    sink: writer::Sink,
    /// TLS connections: the user their verified client certificate names (EXTERNAL login), if any.
    tls: Option<Option<String>>,
}

impl Transport {
    /// Its pieces: local address, reading half, writing half, and whether it is TLS.
    pub(crate) fn into_parts(self) -> (Option<SocketAddr>, Box<dyn AsyncRead + Send + Unpin>, writer::Sink, bool) {
        (self.local, self.reader, self.sink, self.tls.is_some())
    }

    pub fn tcp(stream: TcpStream) -> Transport {
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().ok();
        let (rd, wr) = stream.into_split();
        Transport { local, reader: Box::new(rd), sink: writer::Sink::Tcp(wr), tls: None }
    }

    /// `cert_login`: the user the client certificate names, when it sent a verified one.
    pub fn tls(stream: tokio_rustls::server::TlsStream<TcpStream>, cert_login: Option<String>) -> Transport {
        let _ = stream.get_ref().0.set_nodelay(true);
        let local = stream.get_ref().0.local_addr().ok();
        let (rd, wr) = tokio::io::split(stream);
        Transport {
            local,
            reader: Box::new(rd),
            sink: writer::Sink::Tls(tokio::sync::Mutex::new(wr)),
            tls: Some(cert_login),
        }
    }
}

/// Serve one accepted connection until it closes.
pub async fn serve(transport: Transport, peer: SocketAddr, broker: Arc<Broker>) {
    let id = broker.next_connection_id();
    let span = info_span!("conn", id, %peer, tls = transport.tls.is_some());
    async move {
        debug!("accepted");
        run(transport, peer, broker, id).await;
        debug!("closed");
    }
    .instrument(span)
    .await
}

async fn run(transport: Transport, peer: SocketAddr, broker: Arc<Broker>, id: u64) {
    let Transport { local, reader: rd, sink: mut wr, tls } = transport;
    let tls_connection = tls.is_some();
    let traffic = Arc::new(crate::stats::Octets::default());
    let mut rd = CountingReader { inner: rd, octets: traffic.clone() };
    // One deadline for the whole handshake, from accept to open-ok (RabbitMQ's
    // handshake_timeout): a peer sending a byte at a time cannot stretch it.
    let handshake_deadline = Instant::now() + Duration::from_secs(broker.config.amqp.handshake_timeout);

    let mut header = [0u8; 8];
    match tokio::time::timeout_at(handshake_deadline, rd.read_exact(&mut header)).await {
        Ok(Ok(_)) => {}
        _ => return,
    }
    // 0-9-1, and 0-9 which RabbitMQ also serves as 0-9-1.
    if &header != PROTOCOL_HEADER && &header != b"AMQP\x01\x01\x00\x09" {
        debug!(header = %octets(&header), "wrong protocol header");
        match &mut wr {
            writer::Sink::Tcp(w) => {
                let _ = w.write_all(PROTOCOL_HEADER).await;
                let _ = w.shutdown().await;
            }
            writer::Sink::Tls(w) => {
                let mut w = w.lock().await;
                let _ = w.write_all(PROTOCOL_HEADER).await;
                let _ = w.shutdown().await;
            }
        }
        return;
    }

    let gauge = Arc::new(FlowGauge::default());
    let wtx = Writer::start(wr, gauge.clone());
    // Until the client has tuned, frames are limited to the AMQP minimum (as RabbitMQ 3.x does):
    // an unauthenticated peer cannot make the broker buffer more.
    let mut framed = FramedRead::new(rd, FrameCodec::new(crate::protocol::FRAME_MIN_SIZE));

    let (mut negotiated, open_ok) =
        match tokio::time::timeout_at(handshake_deadline, handshake(&mut framed, &wtx, &broker, peer, tls)).await {
            Ok(Some((n, open_ok))) => (n, open_ok),
            Ok(None) => return,
            Err(_) => {
                debug!("handshake timed out");
                wtx.close();
                return;
            }
        };
    framed.decoder_mut().set_frame_max(negotiated.frame_max);
    let Some(vhost) = broker.vhost(&negotiated.vhost) else { return };
    // The handshake refused users without permissions on the vhost.
    let permissions_epoch = broker.permissions_epoch();
    let users = broker.users();
    let Some(permission) = users.permission(&negotiated.user, &negotiated.vhost) else { return };
    info!(user = %negotiated.user, vhost = %negotiated.vhost, heartbeat = negotiated.heartbeat, "connection open");

    let (inbox, inbox_rx) = mpsc::unbounded_channel();
    let alarm = broker.disk_alarm.clone();
    let broker_content_limit = broker.config.amqp.max_content_in_progress;
    let rate_limits = broker.rate_limits(&negotiated.vhost, &negotiated.user);
    let details = crate::broker::connections::ConnectionDetails {
        local,
        channel_max: negotiated.channel_max,
        frame_max: negotiated.frame_max,
        heartbeat: negotiated.heartbeat,
        // Moved, not copied: only the management API reads them after the handshake.
        client_properties: std::mem::take(&mut negotiated.client_properties),
        auth_mechanism: negotiated.mechanism.clone(),
        tls: tls_connection,
        inbox: Some(inbox.clone()),
        octets: traffic.clone(),
        protocol: None,
        connected_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    };
    let registration = broker.connections.register_with(id, peer, &negotiated.user, &negotiated.vhost, details);
    {
        let mut buf = bytes::BytesMut::new();
        encode::method(&mut buf, 0, &open_ok);
        wtx.send(vec![buf.freeze()], 0);
    }
    let impersonator = users.get(&negotiated.user).is_some_and(|u| u.tags.iter().any(|t| t == "impersonator"));
    let conn = Connection {
        id,
        permission,
        permissions_epoch,
        impersonator,
        registration,
        heartbeat: Heartbeat::new(negotiated.heartbeat, Instant::now()),
        neg: negotiated,
        broker,
        vhost,
        writer: wtx,
        gauge,
        out: Outbound::new(),
        credit: 0,
        channels: HashMap::default(),
        inbox,
        pending: Vec::new(),
        routed: Vec::new(),
        closing: None,
        client_closed: false,
        alarm,
        blocked: false,
        sent_blocked: false,
        output_blocked: false,
        held: Vec::new(),
        rate_limits,
        rate_used: (0, 0),
        write_allowed: None,
        stats: crate::stats::LocalCounters { connection_created: 1, ..Default::default() },
        exchange_stats: Default::default(),
        throttled_until: None,
        compact_left: publish::COMPACT_FIRST,
        definitions_wait: 0,
        flow_wake: Arc::new(tokio::sync::Notify::new()),
        content_budget: crate::channel::assembler::ContentBudget::new(broker_content_limit),
        done: false,
    };
    conn.run(framed, inbox_rx, traffic).await;
}

/// Drive the handshake; None when it failed (the failure was already answered).
async fn handshake(
    framed: &mut Framed,
    wtx: &Writer,
    broker: &Broker,
    peer: SocketAddr,
    tls: Option<Option<String>>,
) -> Option<(Negotiated, AMQPClass)> {
    let send = |method: &AMQPClass| {
        let mut buf = bytes::BytesMut::new();
        encode::method(&mut buf, 0, method);
        wtx.send(vec![buf.freeze()], 0);
    };
    let fail = |e: AmqpError| {
        warn!(reason = %e.text, "handshake refused");
        send(&m::connection_close(&e));
        wtx.close();
    };
    // EXTERNAL only where a verified client certificate names a user (as RabbitMQ's
    // rabbit_auth_mechanism_ssl offers itself only then).
    let cert_login = tls.flatten();
    let mechanisms: Vec<&str> = broker
        .config
        .auth
        .mechanisms
        .iter()
        .map(String::as_str)
        .filter(|m| *m != "EXTERNAL" || cert_login.is_some())
        .collect();
    send(&handshake::start_method(&broker.config, &mechanisms));
    let vhost_exists = |v: &str| broker.vhost(v).is_some();
    let users = broker.users();
    let open_limits = |user: &str, vhost: &str| open_limits(broker, user, vhost);
    let cx = handshake::Context {
        config: &broker.config,
        users: &users,
        open_limits: &open_limits,
        node_connections: broker.connections.len(),
        peer_is_loopback: peer.ip().is_loopback(),
        vhost_exists: &vhost_exists,
        mechanisms: &mechanisms,
        cert_login: cert_login.as_deref(),
    };
    let mut state = Handshake::AwaitStartOk;
    loop {
        let frame = match framed.next().await {
            Some(Ok(f)) => f,
            Some(Err(DecodeError::Protocol(e))) => {
                fail(e);
                return None;
            }
            _ => return None,
        };
        let method = match frame {
            Frame::Method { channel: 0, method } => method,
            Frame::Heartbeat { channel: 0 } => continue,
            _ => {
                fail(AmqpError::unexpected_frame("expected method frame on channel 0 during the handshake"));
                return None;
            }
        };
        // A refusal in answer to start-ok is a failed login: answered only after a delay, so
        // that a connection cannot try passwords faster than one per delay.
        let login_step = matches!(state, Handshake::AwaitStartOk);
        let result = state.on_method(&method, &cx);
        if login_step && result.is_err() {
            tokio::time::sleep(broker.config.auth.login_failure_delay()).await;
        }
        match result {
            Ok(Progress::Continue(next, reply)) => {
                if let Some(r) = reply {
                    send(&r);
                }
                state = next;
            }
            Ok(Progress::Done(n, reply)) => {
                // open-ok is sent by the caller once the connection is registered (so the
                // connection limits count it before its client can open another).
                return Some((n, reply));
            }
            Err(HandshakeError::Close(e)) => {
                fail(e);
                // Keep reading until the client's close-ok (or its EOF, briefly): closing the
                // socket with its close-ok unread would reset the connection, and a reset can
                // discard our connection.close before the client reads it.
                let _ = tokio::time::timeout(CLIENT_CLOSE_GRACE, async {
                    while let Some(Ok(f)) = framed.next().await {
                        if let Frame::Method { channel: 0, method } = &f
                            && matches!(
                                **method,
                                AMQPClass::Connection(amq_protocol::protocol::connection::AMQPMethod::CloseOk(_))
                            )
                        {
                            break;
                        }
                    }
                })
                .await;
                return None;
            }
            Err(HandshakeError::Silent(why)) => {
                warn!(reason = %why, "handshake refused");
                wtx.close();
                return None;
            }
        }
    }
}

impl Connection {
    /// Fetch this user's permissions again (they changed); a user that lost access to the
    /// vhost keeps its connection but may do nothing more in it.
    fn refresh_permission(&mut self, epoch: u64) {
        let users = self.broker.users();
        self.permission = users
            .permission(&self.neg.user, self.vhost.name())
            .unwrap_or_else(|| Arc::new(crate::auth::permissions::Permission::none(&self.neg.user, self.vhost.name())));
        self.impersonator = users.get(&self.neg.user).is_some_and(|u| u.tags.iter().any(|t| t == "impersonator"));
        self.permissions_epoch = epoch;
        self.write_allowed = None;
    }

    /// Open channels changed: keep the count the user's `max-channels` limit reads.
    pub(crate) fn channels_changed(&self) {
        self.registration.info.set_channels(self.channels.len());
    }
}

/// RabbitMQ's connection limits at `connection.open` (after the vhost and permission checks):
/// the vhost's `max-connections`, then the user's; 530 with RabbitMQ's texts. (The node's
/// `connection_max` is checked first, in the handshake.)
pub(crate) fn open_limits(broker: &Broker, user: &str, vhost: &str) -> Result<(), AmqpError> {
    if let Some(max) = broker.vhost(vhost).and_then(|v| v.limits().max_connections)
        && broker.connections.count_where(|c| c.vhost == vhost) as u64 >= max
    {
        return Err(AmqpError::not_allowed(format_args!(
            "access to vhost '{vhost}' refused for user '{user}': connection limit ({max}) is reached"
        )));
    }
    if let Some(max) = broker.users().get(user).and_then(|u| u.limits.max_connections)
        && broker.connections.count_where(|c| c.user == user) as u64 >= max
    {
        return Err(AmqpError::not_allowed(format_args!(
            "connection refused for user '{user}': user connection limit ({max}) is reached"
        )));
    }
    Ok(())
}

/// The connection task's state.
pub struct Connection {
    pub id: u64,
    /// The user's permissions in this vhost (checked per operation), as of
    /// `permissions_epoch` (fetched again when the broker's epoch moves on).
    pub permission: Arc<crate::auth::permissions::Permission>,
    pub permissions_epoch: u64,
    /// The user may publish with another user's `user_id` (tag `impersonator`).
    pub impersonator: bool,
    /// This connection in the broker's list (removed when the task ends).
    registration: crate::broker::connections::Registration,
    pub neg: Negotiated,
    pub broker: Arc<Broker>,
    pub vhost: Arc<VHost>,
    writer: Writer,
    pub(crate) gauge: Arc<FlowGauge>,
    /// Output gathered during this loop turn.
    pub out: Outbound,
    /// Delivery bytes in `out` that queues counted in the gauge.
    credit: usize,
    pub channels: HashMap<u16, Channel, foldhash::fast::RandomState>,
    /// Handed to queues so they can reach this connection.
    pub inbox: ConnInbox,
    /// Publishes of this turn, grouped per queue.
    pending: Vec<(QueueHandle, Vec<Publish>)>,
    /// The queues the last routed message went to (a buffer kept to route without allocating).
    routed: Vec<Arc<crate::queue::QueueEntry>>,
    /// Set when the broker sent `connection.close`: the deadline for `close-ok`.
    closing: Option<Instant>,
    /// The client sent `connection.close` (answered with close-ok at teardown).
    client_closed: bool,
    /// The broker's resource alarms (memory, disk).
    alarm: crate::broker::alarm::Alarm,
    /// Publishing during an alarm stopped reading this socket until the alarm clears.
    blocked: bool,
    /// `connection.blocked` was sent (so `unblocked` is owed).
    sent_blocked: bool,
    /// The peer left too much of our output unread: this socket is not read until the writer
    /// drains (see [`writer`]).
    output_blocked: bool,
    /// Publisher flow control: queues this connection published to that admit no more for
    /// now; its socket is not read until they do (see [`crate::queue::admission`]).
    held: Vec<QueueHandle>,
    /// Publisher rate limits of this vhost and user (see [`crate::broker::rate_limit`]).
    rate_limits: Vec<Arc<crate::broker::rate_limit::RateLimit>>,
    /// Messages and body bytes published since the limits were last charged.
    pub(crate) rate_used: (u64, u64),
    /// Message counts not yet added to the broker's totals (once per loop turn).
    pub(crate) stats: crate::stats::LocalCounters,
    /// Per-exchange `publish_in`/`publish_out` not yet added to the vhost's.
    pub(crate) exchange_stats: crate::stats::LocalExchangeCounts,
    /// The last exchange this connection was allowed to publish to (cleared when the
    /// permissions change).
    pub(crate) write_allowed: Option<Box<str>>,
    /// Over a rate limit: the socket is not read until then.
    throttled_until: Option<Instant>,
    /// How many more published messages get their own allocation (see
    /// [`crate::message::Message::compacted`]).
    compact_left: u8,
    /// The definitions journal position this connection's topology changes reached: their
    /// replies are not sent before it is on disk (group commit; 0 = nothing to wait for).
    pub(crate) definitions_wait: u64,
    /// Notified by those queues when they admit again.
    flow_wake: Arc<tokio::sync::Notify>,
    /// Bytes of partially received bodies across this connection's channels, and their limit.
    pub(crate) content_budget: crate::channel::assembler::ContentBudget,
    done: bool,
    heartbeat: Option<Heartbeat>,
}

impl Connection {
    async fn run(
        mut self,
        mut framed: Framed,
        mut inbox_rx: mpsc::UnboundedReceiver<ConnEvent>,
        octets: Arc<crate::stats::Octets>,
    ) {
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        let info = self.registration.info.clone();
        let mut forced = std::pin::pin!(info.forced());
        while !self.done {
            let hb_at = self.heartbeat.as_ref().map_or(far, Heartbeat::next_deadline);
            let close_at = self.closing.unwrap_or(far);
            tokio::select! {
                _ = self.broker.shutdown.cancelled(), if self.closing.is_none() => {
                    self.fail(0, AmqpError::new(ReplyCode::ConnectionForced, "broker forced connection closure with reason 'shutdown'"));
                }
                reason = forced.as_mut(), if self.closing.is_none() => {
                    self.fail(0, AmqpError::new(ReplyCode::ConnectionForced, reason));
                }
                ev = inbox_rx.recv() => {
                    if let Some(ev) = ev {
                        self.on_event(ev).await;
                        // Take whatever else is queued now, so a burst of deliveries is one write.
                        for _ in 0..FRAMES_PER_TURN {
                            match inbox_rx.try_recv() {
                                Ok(ev) => self.on_event(ev).await,
                                Err(_) => break,
                            }
                        }
                    }
                }
                frame = framed.next(), if !self.blocked && !self.output_blocked && self.held.is_empty() && self.throttled_until.is_none() => {
                    self.on_read(frame).await;
                    for _ in 0..FRAMES_PER_TURN {
                        if self.done || self.blocked || self.output_full() || !self.held.is_empty() {
                            break;
                        }
                        match framed.next().now_or_never() {
                            Some(frame) => self.on_read(frame).await,
                            None => break,
                        }
                    }
                    self.flush_publishes().await;
                }
                _ = tokio::time::sleep_until(self.throttled_until.unwrap_or(far)), if self.throttled_until.is_some() => {
                    self.throttled_until = None;
                    if self.held.is_empty() && !self.blocked {
                        self.set_state(ConnState::Running);
                    }
                }
                _ = self.flow_wake.notified(), if !self.held.is_empty() => {
                    let wake = self.flow_wake.clone();
                    self.held.retain(|q| !q.admission.wait(&wake));
                    if self.held.is_empty() {
                        self.set_state(ConnState::Running);
                    }
                }
                changed = self.alarm.changes.changed(), if self.blocked => {
                    if changed.is_err() || *self.alarm.changes.borrow() == 0 {
                        self.unblock();
                    }
                }
                _ = self.writer.drained(), if self.output_blocked => {
                    if self.writer.unsent() < writer::OUTPUT_LOW_WATERMARK {
                        debug!("peer drained its output; reading its socket again");
                        self.output_blocked = false;
                    }
                }
                _ = tokio::time::sleep_until(hb_at), if self.heartbeat.is_some() => {
                    let now = Instant::now();
                    if self.blocked || self.output_blocked || !self.held.is_empty() || self.throttled_until.is_some() {
                        // Not reading the socket is our doing: the peer is not silent.
                        if let Some(h) = self.heartbeat.as_mut() {
                            h.touch(now);
                        }
                    }
                    let action = self.heartbeat.as_mut().map(|h| h.poll(now, octets.recv_oct.load(Ordering::Relaxed)));
                    match action {
                        Some(HeartbeatAction::Send) => encode::heartbeat(self.out_buf()),
                        Some(HeartbeatAction::TimedOut) => {
                            let secs = self.heartbeat.as_ref().map_or(0, |h| h.interval().as_secs());
                            warn!("missed heartbeats from client, timeout: {secs}s");
                            self.done = true;
                        }
                        _ => {}
                    }
                }
                _ = tokio::time::sleep_until(close_at), if self.closing.is_some() => {
                    debug!("no connection.close-ok from client; closing");
                    self.done = true;
                }
            }
            if self.definitions_wait > 0 {
                // Declare-ok and friends promise durability: wait for the journal's sync, shared
                // with every change made before it.
                let seq = std::mem::take(&mut self.definitions_wait);
                self.vhost.sync_definitions(seq).await;
            }
            self.flush();
            if !self.stats.is_zero() {
                self.vhost.counters.add(&self.stats);
                self.broker.counters.absorb(&mut self.stats);
            }
            if !self.exchange_stats.is_empty() {
                self.vhost.exchange_counts.absorb(&mut self.exchange_stats);
            }
            if !self.output_blocked && self.writer.is_backed_up() {
                debug!(unsent = self.writer.unsent(), "peer does not read its output; not reading its socket");
                self.output_blocked = true;
            }
        }
        self.flush_publishes().await;
        self.teardown(framed).await;
    }

    /// Whether this turn must stop reading frames: the output the peer has not read yet (queued
    /// for the writer or gathered this turn) reached [`writer::OUTPUT_HIGH_WATERMARK`].
    fn output_full(&self) -> bool {
        self.writer.is_backed_up() || self.writer.unsent() + self.out.len() >= writer::OUTPUT_HIGH_WATERMARK
    }

    fn out_buf(&mut self) -> &mut bytes::BytesMut {
        use encode::Sink;
        self.out.buf()
    }

    /// One item from the frame stream.
    async fn on_read(&mut self, frame: Option<Result<Frame, DecodeError>>) {
        match frame {
            Some(Ok(f)) => {
                if let Err((ch, e)) = self.on_frame(f).await {
                    self.fail(ch, e);
                }
            }
            Some(Err(DecodeError::Protocol(e))) => {
                // The byte stream can no longer be trusted: say why and hang up.
                self.fail(0, e);
                self.done = true;
            }
            Some(Err(DecodeError::Io(e))) => {
                debug!(error = %e, "socket read failed");
                self.done = true;
            }
            None => {
                debug!("peer closed the socket");
                self.done = true;
            }
        }
    }

    /// Hand this turn's output to the writer.
    fn flush(&mut self) {
        if self.out.is_empty() {
            return;
        }
        let segments = self.out.take();
        self.registration.info.details.octets.sent(segments.iter().map(bytes::Bytes::len).sum());
        let credit = std::mem::take(&mut self.credit);
        if let Some(h) = self.heartbeat.as_mut() {
            h.sent(Instant::now());
        }
        self.writer.send(segments, credit);
    }

    /// Send this turn's publishes: one mailbox command per queue. Waiting here (a full queue
    /// mailbox) stops this connection reading its socket: TCP backpressure on the publisher.
    ///
    /// A queue limiting its publishers (its consumers have a backlog to work through) that has
    /// no credit left holds this connection: its socket is not read until the queue admits
    /// again. Deliveries, confirms and other queue events keep flowing meanwhile.
    pub async fn flush_publishes(&mut self) {
        if self.rate_used != (0, 0) {
            let (n, bytes) = std::mem::take(&mut self.rate_used);
            let now = Instant::now();
            let pause = self.rate_limits.iter().filter_map(|l| l.charge(n, bytes, now)).max();
            if let Some(until) = pause {
                if self.throttled_until.is_none() && self.held.is_empty() {
                    debug!("over its publish rate limit: publisher paused");
                    self.set_state(ConnState::Flow);
                }
                self.throttled_until = Some(self.throttled_until.map_or(until, |t| t.max(until)));
            }
        }
        let mut pending = std::mem::take(&mut self.pending);
        for (q, items) in pending.drain(..) {
            let n = items.len();
            q.send(QueueCmd::Publish(items)).await;
            if !q.admission.take(n) && !self.consumes_from(&q) && !q.admission.wait(&self.flow_wake) {
                if self.held.is_empty() {
                    debug!(queue = %q.name, "queue admits no more for now: publisher held (flow)");
                    self.set_state(ConnState::Flow);
                }
                if !self.held.iter().any(|h| h.tx.same_channel(&q.tx)) {
                    self.held.push(q);
                }
            }
        }
        self.pending = pending;
    }

    /// Whether a channel of this connection consumes from `q`. Such a queue never holds this
    /// connection: its acks would not be read, and the queue would wait on them for ever.
    fn consumes_from(&self, q: &QueueHandle) -> bool {
        self.channels.values().any(|c| c.consumers.values().any(|h| h.tx.same_channel(&q.tx)))
    }

    /// A publish arrived during a resource alarm: stop reading this connection (after the
    /// frames already decoded) and tell the client, if it asked to be told.
    pub fn block_if_alarmed(&mut self) {
        if self.blocked || !self.alarm.is_raised() {
            return;
        }
        self.blocked = true;
        self.set_state(ConnState::Blocked);
        let reason = crate::broker::alarm::reason(self.alarm.mask());
        info!(reason, "blocking a publishing connection: resource alarm");
        if self.neg.client.connection_blocked && !self.sent_blocked {
            use amq_protocol::protocol::connection;
            let m =
                AMQPClass::Connection(connection::AMQPMethod::Blocked(connection::Blocked { reason: reason.into() }));
            encode::method(&mut self.out, 0, &m);
            self.sent_blocked = true;
        }
    }

    fn unblock(&mut self) {
        self.blocked = false;
        self.set_state(if self.held.is_empty() { ConnState::Running } else { ConnState::Flow });
        if std::mem::take(&mut self.sent_blocked) {
            use amq_protocol::protocol::connection;
            let m = AMQPClass::Connection(connection::AMQPMethod::Unblocked(connection::Unblocked {}));
            encode::method(&mut self.out, 0, &m);
        }
        info!("connection unblocked");
    }

    /// Queue a message for `queue` in this turn's batch.
    pub fn push_publish(&mut self, queue: &QueueHandle, p: Publish) {
        match self.pending.iter_mut().find(|(q, _)| q.tx.same_channel(&queue.tx)) {
            Some((_, items)) => items.push(p),
            None => self.pending.push((queue.clone(), vec![p])),
        }
    }

    fn set_state(&self, s: ConnState) {
        self.registration.info.set_state(s);
    }

    /// Report an error: a soft one closes channel `ch`, a hard one the connection.
    pub fn fail(&mut self, ch: u16, e: AmqpError) {
        if e.closes_connection() || ch == 0 {
            if self.closing.is_some() {
                return;
            }
            if e.code == ReplyCode::ConnectionForced {
                info!(reason = %e.text, "closing connection");
            } else {
                warn!(code = e.code.code(), reason = %e.text, class = e.class_id, method = e.method_id, "connection error");
            }
            encode::method(&mut self.out, 0, &m::connection_close(&e));
            self.closing = Some(Instant::now() + CLOSE_OK_TIMEOUT);
            self.set_state(ConnState::Closing);
        } else {
            info!(channel = ch, code = e.code.code(), reason = %e.text, "channel error");
            encode::method(&mut self.out, ch, &m::channel_close(&e));
            let old = self.channels.insert(ch, {
                let mut c = Channel::new(ch);
                c.phase = ChannelPhase::Closing;
                c
            });
            if let Some(old) = old {
                self.release(old);
            }
        }
    }

    async fn on_frame(&mut self, f: Frame) -> Result<(), (u16, AmqpError)> {
        if self.closing.is_some() {
            // After connection.close only close / close-ok matter.
            if let Frame::Method { channel: 0, method } = &f {
                use amq_protocol::protocol::connection::AMQPMethod as C;
                match **method {
                    AMQPClass::Connection(C::Close(_)) => {
                        encode::method(&mut self.out, 0, &AMQPClass::Connection(C::CloseOk(Default::default())));
                        self.done = true;
                    }
                    AMQPClass::Connection(C::CloseOk(_)) => self.done = true,
                    _ => {}
                }
            }
            return Ok(());
        }
        // Users and permissions changed at runtime apply from the next frame on.
        let epoch = self.broker.permissions_epoch();
        if epoch != self.permissions_epoch {
            self.refresh_permission(epoch);
        }
        match f {
            Frame::Heartbeat { channel: 0 } => Ok(()),
            Frame::Heartbeat { channel } => Err((channel, AmqpError::unexpected_frame("type 8, all octets = <<>>"))),
            Frame::Method { channel: 0, method } => self.on_connection_method(*method).map_err(|e| (0, e)),
            Frame::Method { channel, method } => {
                self.on_channel_method(channel, *method).await.map_err(|e| (channel, e))
            }
            Frame::Publish { channel: 0, method } => self.on_connection_method(method.to_class()).map_err(|e| (0, e)),
            Frame::Publish { channel, method } => self.on_publish(channel, method).await.map_err(|e| (channel, e)),
            Frame::Header { channel: 0, payload } => {
                Err((0, AmqpError::unexpected_frame(format_args!("type 2, all octets = {}", octets(&payload)))))
            }
            Frame::Body { channel: 0, payload } => {
                Err((0, AmqpError::unexpected_frame(format_args!("type 3, all octets = {}", octets(&payload)))))
            }
            Frame::Header { channel, payload } => {
                self.on_content(channel, publish::ContentFrame::Header(payload)).await.map_err(|e| (channel, e))
            }
            Frame::Body { channel, payload } => {
                self.on_content(channel, publish::ContentFrame::Body(payload)).await.map_err(|e| (channel, e))
            }
        }
    }

    fn on_connection_method(&mut self, method: AMQPClass) -> Result<(), AmqpError> {
        use amq_protocol::protocol::connection::AMQPMethod as C;
        match method {
            AMQPClass::Connection(C::Close(c)) => {
                debug!(code = c.reply_code, text = %c.reply_text.as_str(), "client closed the connection");
                // close-ok goes out from teardown, after channels are released and exclusive
                // queues deleted, as RabbitMQ does.
                self.client_closed = true;
                self.done = true;
                Ok(())
            }
            AMQPClass::Connection(C::UpdateSecret(_)) => {
                encode::method(&mut self.out, 0, &AMQPClass::Connection(C::UpdateSecretOk(Default::default())));
                Ok(())
            }
            // A close-ok we did not ask for, and everything else, is out of place on channel 0.
            other => Err(AmqpError::channel_error("unexpected method in connection state running")
                .on(other.get_amqp_class_id(), other.get_amqp_method_id())),
        }
    }

    /// A queue's event for this connection.
    async fn on_event(&mut self, ev: ConnEvent) {
        match ev {
            ConnEvent::Deliver { channel, consumer_tag, queue, seq, msg, redelivered } => {
                let size = delivery_size(&msg);
                let frame_max = self.neg.frame_max;
                let Some(ch) = self.channels.get_mut(&channel).filter(|c| c.phase == ChannelPhase::Open) else {
                    // The channel closed while this was on its way: give it back.
                    self.gauge.written(size);
                    if let Some(queue) = queue {
                        queue.send(QueueCmd::Settle { seqs: vec![seq], outcome: crate::queue::Outcome::Requeue }).await;
                    }
                    return;
                };
                let tag = ch.unacked.next_tag();
                if let Some(queue) = queue {
                    ch.unacked.insert(tag, crate::channel::unacked::Pending { queue, seq, from_consumer: true });
                    self.stats.deliver += 1;
                    ch.stats().deliver += 1;
                } else {
                    self.stats.deliver_no_ack += 1;
                    ch.stats().deliver_no_ack += 1;
                }
                self.stats.redeliver += redelivered as u64;
                ch.stats().redeliver += redelivered as u64;
                encode::deliver(
                    &mut self.out,
                    channel,
                    &consumer_tag,
                    tag,
                    redelivered,
                    &msg.exchange,
                    msg.routing_key.as_wire(),
                );
                encode::content(&mut self.out, channel, &msg.raw_header, &msg.body, frame_max);
                self.credit += size;
            }
            ConnEvent::Confirms { channel, seqs, ack } => {
                let Some(ch) = self.channels.get_mut(&channel).filter(|c| c.phase == ChannelPhase::Open) else {
                    return;
                };
                let Some(confirms) = ch.confirms.as_mut() else { return };
                let before = confirms.acked;
                let frames = if ack { confirms.on_accepted(&seqs) } else { confirms.on_rejected(&seqs) };
                self.stats.confirm += confirms.acked - before;
                ch.stats().confirm += confirms.acked - before;
                for c in frames {
                    encode::confirm(&mut self.out, channel, c.tag, c.multiple, c.ack);
                }
            }
            ConnEvent::CancelOk { channel, consumer_tag } => {
                let Some(ch) = self.channels.get_mut(&channel).filter(|c| c.phase == ChannelPhase::Open) else {
                    return;
                };
                ch.consumers.remove(&consumer_tag);
                if ch.cancelling.remove(&consumer_tag) == Some(false) {
                    methods::send_cancel_ok(&mut self.out, channel, &consumer_tag);
                }
            }
            ConnEvent::DescribeChannels { reply } => {
                let mut list: Vec<_> = self
                    .channels
                    .values()
                    .filter(|c| c.phase == ChannelPhase::Open)
                    .map(|c| crate::broker::connections::ChannelSummary {
                        number: c.id,
                        consumer_count: c.consumers.len(),
                        prefetch_count: c.consumer_prefetch,
                        global_prefetch_count: c.limit.limit(),
                        messages_unacknowledged: c.unacked.len(),
                        messages_unconfirmed: c.confirms.as_ref().map_or(0, |x| x.outstanding()),
                        confirm: c.confirms.is_some(),
                        transactional: c.tx.is_some(),
                        counters: c.counters(),
                    })
                    .collect();
                list.sort_by_key(|c| c.number);
                let _ = reply.send(list);
            }
            ConnEvent::ConsumerTimeout { channel, timeout_ms } => {
                if self.channels.get(&channel).is_some_and(|c| c.phase == ChannelPhase::Open) {
                    self.fail(
                        channel,
                        AmqpError::precondition(format_args!(
                            "delivery acknowledgement on channel {channel} timed out. Timeout value used: {timeout_ms} ms. This timeout value can be configured, see consumers doc guide to learn more"
                        )),
                    );
                }
            }
            ConnEvent::DirectReply { channel, msg } => {
                if self.output_blocked || self.output_full() {
                    // Direct replies have no prefetch: a requester that does not read its socket
                    // loses them rather than growing our output without bound (as a reply to a
                    // requester that is gone is dropped).
                    debug!(channel, "requester does not read its output; direct reply dropped");
                } else {
                    self.deliver_reply(channel, &msg);
                }
            }
            ConnEvent::ConsumerCancelled { channel, consumer_tag } => {
                let Some(ch) = self.channels.get_mut(&channel).filter(|c| c.phase == ChannelPhase::Open) else {
                    return;
                };
                if ch.consumers.remove(&consumer_tag).is_some() && self.neg.client.consumer_cancel_notify {
                    methods::send_server_cancel(&mut self.out, channel, &consumer_tag);
                }
            }
        }
    }

    /// Give back everything a channel held: its consumers go, its unacked deliveries are
    /// requeued (redelivered=true), and the channel's queues get one command each.
    pub fn release(&self, mut ch: Channel) {
        if let Some(rc) = ch.reply_consumer.take() {
            self.broker.unregister_reply(&rc.name);
        }
        let conn_id = self.id;
        tokio::spawn(release_channel(conn_id, ch));
    }

    async fn teardown(mut self, mut framed: Framed) {
        let channels: Vec<Channel> = self.channels.drain().map(|(_, c)| c).collect();
        self.stats.channel_closed += channels.len() as u64;
        self.stats.connection_closed += 1;
        self.vhost.counters.add(&self.stats);
        self.broker.counters.absorb(&mut self.stats);
        for mut ch in channels {
            if let Some(rc) = ch.reply_consumer.take() {
                self.broker.unregister_reply(&rc.name);
            }
            release_channel(self.id, ch).await;
        }
        self.vhost.delete_exclusive_queues(self.id).await;
        if self.client_closed {
            use amq_protocol::protocol::connection::AMQPMethod as C;
            encode::method(&mut self.out, 0, &AMQPClass::Connection(C::CloseOk(Default::default())));
        }
        self.flush();
        if self.client_closed {
            // The client closes the socket once it has our close-ok (AMQP 0-9-1 §2.2.4); give it
            // a moment to do so before we do, so it never sees the socket vanish first.
            let _ = tokio::time::timeout(CLIENT_CLOSE_GRACE, async { while framed.next().await.is_some() {} }).await;
        }
        self.writer.close();
    }
}

/// Tell every queue a channel used that it is gone, requeueing its unacked deliveries.
pub async fn release_channel(conn_id: u64, mut ch: Channel) {
    // Every queue the channel consumed from hears of it, with or without deliveries to requeue.
    let mut per_queue: Vec<(QueueHandle, Vec<u64>)> =
        ch.consumer_queues().into_iter().map(|q| (q, Vec::new())).collect();
    crate::channel::unacked::group_by_queue(&mut per_queue, ch.unacked.take_all());
    for (q, requeue) in per_queue {
        q.send(QueueCmd::ChannelClosed { conn_id, channel: ch.id, requeue }).await;
    }
}

/// The socket's read half, counting every byte received (any byte proves the peer alive).
pub struct CountingReader {
    inner: Box<dyn AsyncRead + Send + Unpin>,
    octets: Arc<crate::stats::Octets>,
}

impl AsyncRead for CountingReader {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.octets.received(n);
        }
        r
    }
}
