//! One stream-protocol connection: the task that owns its socket and drives the sans-IO
//! [`Connection`] state machine (handshake, heartbeats, close), executing the commands it lets
//! through ([`super::commands`], [`super::management`]).
//!
//! The loop waits on: the socket (read only while the connection may take more: the state
//! machine wants input, its unsent output is below the writer's high watermark, its publishes
//! are within their credit and no resource alarm holds its publishers), its publishers'
//! outcomes (PublishConfirm/PublishError), single-active-consumer notices, wake-ups (a
//! subscription's stream has new data; a stream it uses was deleted), the state machine's
//! timer, the writer draining, and broker shutdown or a forced close. After each wake-up it
//! runs the state machine's events, delivers what its subscriptions may take, and writes the
//! turn's output in one go.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use amq_protocol::types::{AMQPValue, FieldTable};
use bytes::BytesMut;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{Instrument, debug, info, info_span, warn};

use super::StreamServer;
use super::publishers::Publishers;
use super::sac::Notice;
use super::subscriptions::{DataReady, Next, Output, Subscription, Subscriptions};
use crate::auth::permissions::{Access, Permission};
use crate::broker::connections::{ConnectionDetails, Registration};
use crate::broker::vhost::VHost;
use crate::connection::Transport;
use crate::connection::flow::FlowGauge;
use crate::connection::writer::{OUTPUT_LOW_WATERMARK, Writer};
use crate::stream::handle::{StreamEvent, StreamHandle};
use crate::stream::protocol::state::{AuthOutcome, CloseReason, Connection, Event, OpenOutcome};
use crate::stream::protocol::{code, encode};

/// Bytes read from the socket at most per read.
const READ_CHUNK: usize = 64 * 1024;
/// A subscription reads its next chunk only while the connection's unsent output (written to
/// the writer and not yet taken by the socket, plus this turn's) is below this: a consumer that
/// does not read holds at most this much and one chunk in memory, whatever its credit.
pub(super) const DELIVER_WATERMARK: usize = OUTPUT_LOW_WATERMARK;
/// Chunks delivered per turn before the connection looks at its socket and inbox again
/// (fairness between its subscriptions and its other work).
const CHUNKS_PER_TURN: usize = 64;

/// Publish outcomes answered per turn beyond the first (fairness with the socket).
const OUTCOMES_PER_TURN: usize = 256;

/// What woke the connection up besides its socket.
pub(super) enum Wake {
    Data(DataReady),
    /// A stream it uses was deleted.
    Deleted(Arc<str>),
    /// A wait that is no longer needed ended.
    Stopped,
}

/// The pending wake-ups. A `FuturesUnordered` of `Send` futures is not `Sync`, and the
/// connection is borrowed across awaits of its own task; the mutex makes it `Sync` and is
/// never locked (only `get_mut` is used).
#[derive(Default)]
struct Wakes(std::sync::Mutex<FuturesUnordered<BoxFuture<'static, Wake>>>);

impl Wakes {
    fn get(&mut self) -> &mut FuturesUnordered<BoxFuture<'static, Wake>> {
        self.0.get_mut().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&mut self, f: impl Future<Output = Wake> + Send + 'static) {
        self.get().push(Box::pin(f));
    }
}

/// The watch on a stream this connection uses, ended when dropped.
struct Watched {
    deleted: CancellationToken,
    _stop: DropGuard,
}

/// What the connection is once open.
pub(super) struct Session {
    pub vhost: Arc<VHost>,
    pub user: String,
    permission: Arc<Permission>,
    permissions_epoch: u64,
    registration: Registration,
}

pub(super) struct Conn {
    pub id: u64,
    pub server: Arc<StreamServer>,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    /// Over TLS (the TLS listener's port is the one advertised).
    tls: bool,
    pub proto: Connection,
    writer: Writer,
    /// This turn's output.
    pub out: Output,
    pub session: Option<Session>,
    pub publishers: Publishers,
    pub subscriptions: Subscriptions,
    wakes: Wakes,
    /// Streams in use, by name: their deletion is watched.
    watched: HashMap<Arc<str>, Watched>,
    /// The connection's inbox for single-active-consumer notices (registered once open).
    inbox: mpsc::UnboundedSender<Notice>,
    /// Close the socket once this turn's output is written (a failed re-authentication).
    pub terminate: bool,
    /// Deliveries are pending but the turn's budget ran out.
    more_to_deliver: bool,
    /// Deliveries wait for the socket to drain.
    wait_drain: bool,
    /// The subscription after which the next turn starts delivering (fairness).
    deliver_cursor: u8,
}

/// Serve one accepted connection until it closes.
pub(super) async fn serve(socket: Transport, peer: SocketAddr, server: Arc<StreamServer>) {
    let id = server.broker.next_connection_id();
    let span = info_span!("stream", id, %peer);
    async move {
        debug!("accepted");
        let (local, read, sink, tls) = socket.into_parts();
        let writer = Writer::start(sink, Arc::new(FlowGauge::default()));
        let (inbox, notices) = mpsc::unbounded_channel();
        let conn = Conn {
            id,
            proto: Connection::new(server.protocol.clone(), Instant::now()),
            server,
            peer,
            local,
            tls,
            writer,
            out: Output::default(),
            session: None,
            publishers: Publishers::default(),
            subscriptions: Subscriptions::default(),
            wakes: Wakes::default(),
            watched: HashMap::new(),
            inbox,
            terminate: false,
            more_to_deliver: false,
            wait_drain: false,
            deliver_cursor: 0,
        };
        conn.run(read, notices).await;
        debug!("closed");
    }
    .instrument(span)
    .await
}

impl Conn {
    async fn run(mut self, mut read: Box<dyn AsyncRead + Send + Unpin>, mut notices: mpsc::UnboundedReceiver<Notice>) {
        let mut input = BytesMut::with_capacity(READ_CHUNK);
        let shutdown = self.server.broker.shutdown.clone();
        let alarm = self.server.broker.disk_alarm.clone();
        let mut alarm_changes = alarm.changes.clone();
        loop {
            self.handle_events().await;
            if self.proto.is_open() && !self.terminate {
                self.deliver();
            }
            self.flush();
            if self.proto.is_closed() || self.terminate {
                break;
            }
            let timeout = self.proto.poll_timeout();
            // RabbitMQ blocks a connection with publishers during a resource alarm.
            let alarmed = !self.publishers.is_empty() && alarm.is_raised();
            let held = self.writer.is_backed_up() || self.publishers.blocked() || alarmed;
            let may_read = self.proto.wants_input() && !held;
            let registered = self.session.as_ref().map(|s| s.registration.info.clone());
            let forced = async move {
                match registered {
                    Some(info) => info.forced().await,
                    None => std::future::pending().await,
                }
            };
            input.reserve(READ_CHUNK);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    debug!("broker shutting down: connection closed");
                    break;
                }
                reason = forced => {
                    info!(%reason, "connection closed by the broker");
                    break;
                }
                e = std::future::poll_fn(|cx| self.publishers.poll_outcome(cx)) => self.on_outcomes(e),
                Some(n) = notices.recv() => self.on_notice(n),
                Some(w) = self.wakes.get().next(), if !self.wakes.get().is_empty() => self.on_wake(w),
                r = read.read_buf(&mut input), if may_read => match r {
                    Ok(0) | Err(_) => {
                        debug!("peer closed the connection");
                        break;
                    }
                    Ok(_) => {
                        self.proto.handle_input(&input, Instant::now());
                        input.clear();
                    }
                },
                _ = sleep_until(timeout), if timeout.is_some() => {
                    if held {
                        self.proto.input_paused(Instant::now());
                    }
                    self.proto.handle_timeout(Instant::now());
                }
                _ = self.writer.drained(), if self.wait_drain => {}
                _ = alarm_changes.changed(), if alarmed => {}
                _ = std::future::ready(()), if self.more_to_deliver => {}
            }
        }
        self.close();
    }

    /// Act on what the state machine reports, in order.
    async fn handle_events(&mut self) {
        while let Some(e) = self.proto.poll_event() {
            self.take_protocol_output();
            match e {
                Event::Authenticate { mechanism, username, password } => {
                    let outcome = self.check_login(&mechanism, &username, &password).await;
                    self.proto.authenticate(outcome, Instant::now());
                }
                Event::Open { vhost } => {
                    let outcome = self.open(&vhost);
                    self.proto.open(outcome, Instant::now());
                }
                Event::Command(f) if self.session.is_some() => self.command(f).await,
                Event::Command(_) => {}
                Event::Closing { code, reason } => debug!(code, %reason, "closing the connection"),
                Event::Closed(reason) => log_close(&reason),
            }
            if self.terminate {
                return;
            }
        }
    }

    /// Check a login (PLAIN, AMQPLAIN); a refusal is answered after the configured delay, as
    /// AMQP logins are.
    pub fn check_login(
        &self,
        mechanism: &str,
        user: &str,
        password: &str,
    ) -> impl Future<Output = AuthOutcome> + Send + 'static {
        let broker = self.server.broker.clone();
        let outcome = match broker.users().authenticate(user, password, self.peer.ip().is_loopback()) {
            Ok(_) => AuthOutcome::Accepted,
            Err(refusal) => {
                warn!(%user, mechanism, reason = refusal.reason(), "login refused");
                match refusal {
                    crate::auth::Refusal::LoopbackOnly => AuthOutcome::LoopbackOnly,
                    _ => AuthOutcome::Refused,
                }
            }
        };
        async move {
            if outcome != AuthOutcome::Accepted {
                tokio::time::sleep(broker.config.auth.login_failure_delay()).await;
            }
            outcome
        }
    }

    /// Open: the vhost must exist, the user have permissions there, and no connection limit be
    /// reached (0x0c otherwise).
    fn open(&mut self, vhost_name: &str) -> OpenOutcome {
        let broker = self.server.broker.clone();
        let user = self.proto.negotiated().user.clone();
        let users = broker.users();
        let (Some(vhost), Some(permission)) = (broker.vhost(vhost_name), users.permission(&user, vhost_name)) else {
            info!(%user, vhost = vhost_name, "vhost access refused");
            return OpenOutcome::Refused;
        };
        let node_max = broker.config.amqp.connection_max;
        let limit = if node_max > 0 && broker.connections.len() as u64 >= node_max {
            Err(format!("node connection limit ({node_max}) is reached"))
        } else {
            crate::connection::open_limits(&broker, &user, vhost_name).map_err(|e| e.text)
        };
        if let Err(why) = limit {
            info!(%user, vhost = vhost_name, reason = %why, "connection refused");
            return OpenOutcome::Refused;
        }
        let n = self.proto.negotiated();
        let client_properties: FieldTable = n
            .client_properties
            .iter()
            .map(|(k, v)| (k.to_string().into(), AMQPValue::LongString(v.as_bytes().to_vec().into())))
            .collect::<std::collections::BTreeMap<_, _>>()
            .into();
        let details = ConnectionDetails {
            local: self.local,
            frame_max: n.frame_max,
            heartbeat: u16::try_from(n.heartbeat).unwrap_or(u16::MAX),
            client_properties,
            auth_mechanism: n.mechanism.clone(),
            protocol: Some("stream"),
            connected_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            ..ConnectionDetails::default()
        };
        let registration = broker.connections.register_with(self.id, self.peer, &user, vhost_name, details);
        self.server.inboxes.lock().unwrap_or_else(|p| p.into_inner()).insert(self.id, self.inbox.clone());
        info!(%user, vhost = vhost_name, heartbeat = n.heartbeat, frame_max = n.frame_max, "stream connection open");
        self.session =
            Some(Session { vhost, user, permission, permissions_epoch: broker.permissions_epoch(), registration });
        let properties = vec![
            ("advertised_host".to_string(), self.server.advertised_host.clone()),
            ("advertised_port".to_string(), self.advertised_port().to_string()),
        ];
        OpenOutcome::Allowed { properties }
    }

    /// The port this connection's clients are told to use (the TLS one over TLS).
    pub fn advertised_port(&self) -> u16 {
        if self.tls { self.server.advertised_tls_port } else { self.server.advertised_port }
    }

    /// The open connection's session (commands come only after Open, which sets it).
    pub fn session(&self) -> &Session {
        self.session.as_ref().expect("commands are executed only once the connection is open")
    }

    /// Whether the user may do `access` on the queue or exchange `name` (permissions are
    /// fetched again when they changed since).
    pub fn permitted(&mut self, access: Access, kind: &str, name: &str) -> bool {
        let broker = self.server.broker.clone();
        let Some(s) = self.session.as_mut() else { return false };
        let epoch = broker.permissions_epoch();
        if epoch != s.permissions_epoch {
            s.permission = broker
                .users()
                .permission(&s.user, s.vhost.name())
                .unwrap_or_else(|| Arc::new(Permission::none(&s.user, s.vhost.name())));
            s.permissions_epoch = epoch;
        }
        s.permission.check(access, kind, name).is_ok()
    }

    /// The stream of this name in the connection's vhost (0x02 when there is none, or the
    /// queue of that name is not a stream).
    pub fn stream(&self, name: &str) -> Result<StreamHandle, u16> {
        let q = self.session().vhost.queue(name, self.id).map_err(|_| code::STREAM_DOES_NOT_EXIST)?;
        q.stream.clone().filter(|s| !s.deleted.is_cancelled()).ok_or(code::STREAM_DOES_NOT_EXIST)
    }

    /// Watch a stream this connection now uses for its deletion.
    pub fn watch(&mut self, stream: &StreamHandle) {
        if let Some(w) = self.watched.get(&stream.name) {
            if !w.deleted.is_cancelled() {
                return;
            }
            // Deleted and created again before the deletion was looked at: settle it first.
            let name = stream.name.clone();
            self.stream_deleted(&name);
        }
        let stop = CancellationToken::new();
        let (deleted, ended, name) = (stream.deleted.clone(), stop.clone(), stream.name.clone());
        self.wakes.push(async move {
            tokio::select! {
                _ = deleted.cancelled() => Wake::Deleted(name),
                _ = ended.cancelled() => Wake::Stopped,
            }
        });
        self.watched.insert(stream.name.clone(), Watched { deleted: stream.deleted.clone(), _stop: stop.drop_guard() });
    }

    /// Stop watching a stream nothing on this connection uses any more.
    pub fn unwatch_unused(&mut self, name: &str) {
        if !self.publishers.uses(name) && !self.subscriptions.uses(name) {
            self.watched.remove(name);
        }
    }

    /// A stream this connection used was deleted: its publishers and subscriptions are dropped
    /// and the client is told (MetadataUpdate 0x06), once.
    fn stream_deleted(&mut self, name: &Arc<str>) {
        let publishers = self.publishers.remove_deleted(name);
        let subscriptions = self.subscriptions.remove_deleted(name);
        for (id, s) in &subscriptions {
            self.leave_group(*id, s);
        }
        if publishers || !subscriptions.is_empty() {
            debug!(stream = %name, "stream deleted: its publishers and subscriptions are gone");
            encode::metadata_update(self.out.buf(), code::STREAM_NOT_AVAILABLE, name);
        }
        if self.watched.get(name).is_some_and(|w| w.deleted.is_cancelled()) {
            self.watched.remove(name);
        }
    }

    /// A single active consumer leaves its group (the next one may take over).
    pub fn leave_group(&self, id: u8, s: &Subscription) {
        if let Some(sac) = &s.sac {
            let conn = self.id;
            self.server.sac(|g| ((), g.unregister(&sac.group, conn, id)));
        }
    }

    /// Remove a subscription (Unsubscribe, a failed read).
    pub fn drop_subscription(&mut self, id: u8) -> bool {
        let Some(s) = self.subscriptions.remove(id) else { return false };
        self.leave_group(id, &s);
        self.unwatch_unused(&s.stream.name.clone());
        true
    }

    /// Answer this publish outcome and those already waiting (a bounded number).
    fn on_outcomes(&mut self, first: StreamEvent) {
        let frame_max = self.proto.negotiated().frame_max;
        self.publishers.on_outcome(first, self.out.buf(), frame_max);
        for _ in 0..OUTCOMES_PER_TURN {
            let Some(e) = self.publishers.try_outcome() else { break };
            self.publishers.on_outcome(e, self.out.buf(), frame_max);
        }
    }

    fn on_wake(&mut self, w: Wake) {
        match w {
            Wake::Data(r) => {
                self.subscriptions.data_ready(r);
            }
            Wake::Deleted(name) => self.stream_deleted(&name),
            Wake::Stopped => {}
        }
    }

    /// Deliver chunks to the subscriptions that have credit, while the output drains.
    fn deliver(&mut self) {
        self.more_to_deliver = false;
        self.wait_drain = false;
        let deliver_v2 = self.proto.negotiated().deliver_version >= 2;
        let mut ids = self.subscriptions.ids();
        let start = ids.iter().position(|&id| id > self.deliver_cursor).unwrap_or(0);
        ids.rotate_left(start);
        let mut budget = CHUNKS_PER_TURN;
        for id in ids {
            loop {
                if self.writer.unsent() + self.out.len() >= DELIVER_WATERMARK {
                    self.flush();
                    if self.writer.unsent() >= DELIVER_WATERMARK {
                        self.wait_drain = true;
                        return;
                    }
                }
                if budget == 0 {
                    self.more_to_deliver = true;
                    return;
                }
                match self.subscriptions.next_chunk(id, &mut self.out, deliver_v2) {
                    Next::Delivered => {
                        budget -= 1;
                        self.deliver_cursor = id;
                    }
                    Next::Idle => break,
                    Next::Wait(f) => {
                        self.wakes.push(async move { Wake::Data(f.await) });
                        break;
                    }
                    Next::Failed(e) => {
                        let stream = self.subscriptions.get(id).map(|s| s.stream.name.clone());
                        warn!(subscription = id, ?stream, error = %e, "cannot read the stream; subscription dropped");
                        self.drop_subscription(id);
                        if let Some(name) = stream {
                            encode::metadata_update(self.out.buf(), code::STREAM_NOT_AVAILABLE, &name);
                        }
                        break;
                    }
                }
            }
        }
    }

    /// Move what the state machine wrote into this turn's output.
    fn take_protocol_output(&mut self) {
        if let Some(b) = self.proto.poll_transmit() {
            self.out.push(b);
        }
    }

    /// Write this turn's output.
    fn flush(&mut self) {
        self.take_protocol_output();
        if self.out.is_empty() {
            return;
        }
        self.writer.send(self.out.take(), 0);
        self.proto.on_sent(Instant::now());
    }

    /// The connection ends: its consumers leave their groups, its inbox and registration go,
    /// and the socket is shut once the output is written.
    fn close(mut self) {
        self.flush();
        for (id, s) in self.subscriptions.drain() {
            self.leave_group(id, &s);
        }
        self.server.inboxes.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
        self.writer.close();
    }
}

/// Sleep until `at` (never when None; the branch is disabled then).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn log_close(reason: &CloseReason) {
    match reason {
        CloseReason::ByPeer { code, reason } => debug!(code, %reason, "closed by the client"),
        CloseReason::Acknowledged => debug!("close acknowledged by the client"),
        CloseReason::Authentication(code) => debug!(code, "login failed: connection closed"),
        CloseReason::VhostRefused => debug!("vhost refused: connection closed"),
        CloseReason::Handshake(why) => info!(reason = why, "handshake broken: connection closed"),
        CloseReason::Frame(e) => info!(error = %e, "bad frame before open: connection closed"),
        CloseReason::HeartbeatTimeout => info!("missed heartbeats: connection closed"),
        CloseReason::Timeout => info!("timed out: connection closed"),
        CloseReason::Local => debug!("connection closed"),
    }
}
