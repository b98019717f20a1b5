//! The queue task: the only owner of a queue's [`QueueState`]. It drains its mailbox in
//! batches, applies each command, runs one dispatch round and sends the resulting deliveries
//! to the consumers' connections; between batches it sleeps until the state's next deadline
//! (TTL, consumer ack timeout, `x-expires`). It never awaits anything but its own mailbox.

use std::sync::{Arc, Weak};

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::admission::{self, Admission};
use super::args::QueueArgs;
use super::dead_letter::{DeathReason, dead_letter, is_cycle};
use super::state::{Delivery, Enqueued, QueueState};
use super::{ConnEvent, ConnInbox, MAILBOX_CAPACITY, Publish, QueueCmd, QueueHandle, QueueStats};
use crate::broker::vhost::VHost;
use crate::error::AmqpError;
use crate::store::persister::{PendingConfirms, SyncRequest, release};
use crate::store::segment::Recovered;
use crate::store::{AnyStore, MessageStore};

/// Commands taken from the mailbox per round before dispatching.
///
/// Batching amortises the dispatch pass over many publishes; 64 keeps a round short enough
/// that acks and consumes are not stuck behind a long publish burst.
const BATCH: usize = 64;

/// Published messages taken per round before dispatching (see the loop in `run`).
///
/// A socket read can carry hundreds of publishes in one command; without a bound a fast
/// publisher gets whole rounds to itself while consumers of the same queue wait.
const MESSAGES_PER_ROUND: usize = 1024;
/// The budget while a backlog of more than [`BACKLOG`] messages waits for consumers: the queue
/// then spends its rounds on delivering, and publishers feel the backpressure (RabbitMQ's
/// credit flow does the same) instead of the backlog growing without end.
const MESSAGES_PER_ROUND_BACKLOGGED: usize = 128;
const BACKLOG: usize = 10_000;
/// The same budget in body bytes (large messages: a few per round).
const BYTES_PER_ROUND: u64 = 4 * 1024 * 1024;
/// A backlog also counts as one past this many bytes of ready bodies.
const BACKLOG_BYTES: u64 = 64 * 1024 * 1024;

/// Start a queue task over `store` (holding the `recovered` messages) and return its mailbox.
pub fn spawn(
    name: &str,
    vhost: &Arc<VHost>,
    auto_delete: bool,
    args: QueueArgs,
    store: AnyStore,
    recovered: Vec<Recovered>,
) -> QueueHandle {
    let (tx, rx) = mpsc::channel(MAILBOX_CAPACITY);
    let (ctl, ctl_rx) = mpsc::unbounded_channel();
    let handle =
        QueueHandle { name: name.into(), tx, ctl, admission: Default::default(), activity: Default::default() };
    let now = Instant::now();
    let mut state = QueueState::with_store(name, vhost.name(), args.clone(), now, store);
    state.restore(recovered, now);
    state.set_default_consumer_timeout(vhost.consumer_timeout());
    let actor = QueueActor {
        state,
        args,
        name: name.to_string(),
        vhost_name: vhost.name().to_string(),
        vhost: Arc::downgrade(vhost),
        me: handle.tx.downgrade(),
        ctl: handle.ctl.clone(),
        name_arc: handle.name.clone(),
        admission: handle.admission.clone(),
        activity: handle.activity.clone(),
        delivered: 0,
        last_delivery: now,
        active_at: now,
        auto_delete,
        deleted: false,
        awaiting_sync: Vec::new(),
        dead_letters: super::dead_letter::Forwarder::default(),
    };
    tokio::spawn(actor.run(rx, ctl_rx));
    handle
}

struct QueueActor {
    state: QueueState<AnyStore>,
    args: QueueArgs,
    name: String,
    vhost_name: String,
    vhost: Weak<VHost>,
    /// Our own mailbox, weakly: the task ends when every sender (topology, connections holding
    /// unacked deliveries) is gone.
    me: mpsc::WeakSender<QueueCmd>,
    /// The settlement mailbox (kept open by the task itself; the main mailbox decides its end).
    ctl: mpsc::UnboundedSender<QueueCmd>,
    name_arc: Arc<str>,
    /// Publisher flow control (see [`super::admission`]).
    admission: Arc<Admission>,
    /// See [`QueueHandle::activity`] (only this task writes it).
    activity: Arc<std::sync::atomic::AtomicU64>,
    /// Messages delivered this round (credit for limited publishers).
    delivered: usize,
    /// When a consumer last got a message (consumers idle for [`admission::STALL`] stopped).
    last_delivery: Instant,
    /// When the queue last did something (for the API's `idle_since`).
    active_at: Instant,
    auto_delete: bool,
    /// Set once the queue is deleted; it then only drains its mailbox.
    deleted: bool,
    /// Confirms of persistent messages written this round: released after the fsync.
    awaiting_sync: Vec<PendingConfirms>,
    /// Dead letters waiting for room in full target mailboxes (bounded; one task at most).
    dead_letters: super::dead_letter::Forwarder,
}

impl QueueActor {
    async fn run(mut self, mut rx: mpsc::Receiver<QueueCmd>, mut ctl_rx: mpsc::UnboundedReceiver<QueueCmd>) {
        // Grown on first use: most queues of a large node sit idle, and two batches' room
        // (~9 KB) per queue was half of an idle queue's memory.
        let mut buf = Vec::new();
        let mut settles = Vec::new();
        // A restored queue acts once its vhost's whole topology is back (see VHost::restored).
        if let Some(restored) = self.vhost.upgrade().map(|v| v.restored.clone()) {
            restored.cancelled().await;
        }
        loop {
            let deadline = if self.deleted { None } else { self.next_deadline() };
            let got = tokio::select! {
                biased;
                _ = ctl_rx.recv_many(&mut settles, BATCH) => Some(1),
                cmd = rx.recv() => match cmd {
                    Some(cmd) => {
                        buf.push(cmd);
                        Some(1)
                    }
                    None => Some(0),
                },
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => None,
            };
            if got == Some(0) {
                break;
            }
            if got.is_none() {
                // A timer round: give back what a past burst grew.
                buf.shrink_to_fit();
                settles.shrink_to_fit();
            }
            let now = Instant::now();
            // Settlements first (they free consumer credit), then whatever else is waiting.
            while let Ok(cmd) = ctl_rx.try_recv() {
                settles.push(cmd);
            }
            for cmd in settles.drain(..) {
                self.handle(cmd, now);
            }
            // Take commands up to the round's budget of published messages, so consumers get
            // their share of every round and a publish burst waits in the mailbox (where it
            // holds its publishers back) instead of piling up in the queue.
            let (mut published, mut bytes) =
                buf.iter().map(QueueCmd::published).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
            let (budget, byte_budget) = if self.backlogged() {
                (MESSAGES_PER_ROUND_BACKLOGGED, BYTES_PER_ROUND)
            } else {
                (MESSAGES_PER_ROUND, BYTES_PER_ROUND)
            };
            while buf.len() < BATCH && published < budget && bytes < byte_budget {
                match rx.try_recv() {
                    Ok(cmd) => {
                        let (n, b) = cmd.published();
                        published += n;
                        bytes += b;
                        buf.push(cmd);
                    }
                    Err(_) => break,
                }
            }
            for cmd in buf.drain(..) {
                self.handle(cmd, now);
            }
            if !self.deleted {
                self.dispatch(now);
                self.on_timer(now);
                self.dead_letter();
            }
            self.admit(now);
            self.flush_store();
        }
        debug!(queue = %self.name, "queue task stopped");
    }

    fn handle(&mut self, cmd: QueueCmd, now: Instant) {
        if !matches!(cmd, QueueCmd::Info { .. }) {
            self.active_at = now;
            // (A resume can lead to deliveries: it counts as something happening.)
            self.moved();
        }
        match cmd {
            QueueCmd::Publish(items) => self.publish(items, now),
            QueueCmd::Consume { spec, reply } => {
                let r = if self.deleted {
                    Err(AmqpError::not_found(format_args!("no queue '{}' in vhost '{}'", self.name, self.vhost_name)))
                } else {
                    self.state.add_consumer(spec, now)
                };
                let _ = reply.send(r);
            }
            QueueCmd::ConsumeStream { reply, .. } => {
                // Only streams are sent this (the channel looks at the queue type first).
                let _ = reply.send(Err(AmqpError::internal()));
            }
            QueueCmd::Cancel { conn_id, channel, tag, reply } => {
                self.state.remove_consumer(conn_id, channel, &tag, now);
                if let Some(inbox) = reply {
                    let _ = inbox.send(ConnEvent::CancelOk { channel, consumer_tag: tag });
                }
                self.maybe_auto_delete();
            }
            QueueCmd::Settle { seqs, outcome } => self.state.settle(&seqs, outcome),
            QueueCmd::ChannelClosed { conn_id, channel, requeue } => {
                self.state.channel_closed(conn_id, channel, &requeue, now);
                self.maybe_auto_delete();
            }
            QueueCmd::Get { reply, no_ack } => {
                let _ = reply.send(if self.deleted { None } else { self.state.get(no_ack, now) });
            }
            QueueCmd::Stats { reply } => {
                if self.deleted {
                    let _ = reply.send(None);
                    return;
                }
                self.state.touch(now);
                let _ = reply.send(Some(QueueStats {
                    messages: self.state.ready_count(),
                    consumers: self.state.consumer_count(),
                }));
            }
            QueueCmd::Sync { reply } => {
                let _ = reply.send(());
            }
            QueueCmd::Purge { reply } => {
                let _ = reply.send(self.state.purge());
            }
            QueueCmd::Delete { if_unused, if_empty, reply } => {
                if self.deleted {
                    let _ = reply.send(Ok(0));
                } else if if_unused && self.state.consumer_count() > 0 {
                    let _ = reply.send(Err(AmqpError::precondition(format_args!(
                        "queue '{}' in vhost '{}' in use",
                        self.name, self.vhost_name
                    ))));
                } else if if_empty && self.state.ready_count() > 0 {
                    let _ = reply.send(Err(AmqpError::precondition(format_args!(
                        "queue '{}' in vhost '{}' not empty",
                        self.name, self.vhost_name
                    ))));
                } else {
                    let n = self.state.ready_count();
                    self.delete();
                    let _ = reply.send(Ok(n));
                }
            }
            QueueCmd::Resume => {}
            QueueCmd::Info { reply } => {
                let idle = now.saturating_duration_since(self.active_at);
                let info = (!self.deleted).then(|| super::QueueInfo {
                    counters: self.state.counters,
                    persistent: self.state.persistent(),
                    paged_out: self.state.paged_out(),
                    head_message_timestamp: self.state.head_timestamp(),
                    idle_since: (idle >= super::IDLE_AFTER).then(|| std::time::SystemTime::now() - idle),
                    messages_ready: self.state.ready_count(),
                    messages_unacknowledged: self.state.unacked_count(),
                    message_bytes_ready: self.state.ready_bytes(),
                    message_bytes_unacknowledged: self.state.unacked_bytes(),
                    consumers: self.state.consumers().cloned().collect(),
                    effective: self.args.clone(),
                    single_active_consumer_tag: self.state.single_active_tag().map(String::from),
                });
                let _ = reply.send(info);
            }
            QueueCmd::SetArgs(args) => {
                if *args != self.args {
                    debug!(queue = %self.name, "settings changed by a policy");
                    self.args = (*args).clone();
                    self.state.set_args(*args, now);
                }
            }
        }
    }

    fn publish(&mut self, items: Vec<Publish>, now: Instant) {
        // Confirms grouped per (connection, channel, ack/nack): one event each.
        let mut confirms: Vec<(ConnInbox, u16, bool, Vec<u64>)> = Vec::new();
        let durable = self.state.store_mut().is_durable();
        for p in items {
            let persistent = durable && p.msg.is_persistent();
            let ack = if self.deleted {
                true
            } else {
                match self.state.enqueue(p.msg, now) {
                    Ok(Enqueued::Accepted) if persistent => {
                        // Confirmed once the persister has synced it.
                        if let Some(c) = p.confirm {
                            match self
                                .awaiting_sync
                                .iter_mut()
                                .find(|w| w.channel == c.channel && w.inbox.same_channel(&c.inbox))
                            {
                                Some(w) => w.seqs.push(c.seq),
                                None => self.awaiting_sync.push(PendingConfirms {
                                    inbox: c.inbox,
                                    channel: c.channel,
                                    seqs: vec![c.seq],
                                }),
                            }
                        }
                        continue;
                    }
                    Ok(Enqueued::Accepted) | Ok(Enqueued::Duplicate) => true,
                    Ok(Enqueued::Rejected) => false,
                    Err(e) => {
                        // Not stored: the publisher is told so (nack), never that it was.
                        warn!(queue = %self.name, error = %e, "message not stored");
                        false
                    }
                }
            };
            if let Some(c) = p.confirm {
                match confirms
                    .iter_mut()
                    .find(|(i, ch, a, _)| *ch == c.channel && *a == ack && i.same_channel(&c.inbox))
                {
                    Some((_, _, _, seqs)) => seqs.push(c.seq),
                    None => confirms.push((c.inbox, c.channel, ack, vec![c.seq])),
                }
            }
        }
        for (inbox, channel, ack, seqs) in confirms {
            let _ = inbox.send(ConnEvent::Confirms { channel, seqs, ack });
        }
    }

    /// Hand this round's writes to the OS; confirms of persistent messages wait for the
    /// broker-wide persister's fsync (or not, with `storage.fsync = false`).
    fn flush_store(&mut self) {
        let confirms = std::mem::take(&mut self.awaiting_sync);
        let storage = self.vhost.upgrade().and_then(|v| v.storage().cloned());
        match self.state.store_mut().flush() {
            Ok(Some(files)) if !confirms.is_empty() => match storage.filter(|s| s.fsync) {
                Some(s) => s.persister.submit(SyncRequest { files, confirms }),
                None => release(confirms, true),
            },
            Ok(_) => release(confirms, true),
            Err(e) => {
                warn!(queue = %self.name, error = %e, "write to the message store failed");
                release(confirms, false);
            }
        }
    }

    fn dispatch(&mut self, now: Instant) {
        loop {
            let round = self.state.dispatch(now);
            self.delivered += round.deliveries.len();
            if !round.deliveries.is_empty() {
                self.deliver(round.deliveries, now);
            }
            if round.congested.is_empty() {
                return;
            }
            // Register with every congested writer (no short-circuit); if one drained meanwhile, go again.
            let mut still = true;
            for c in &round.congested {
                still &= c.gauge.wait(&self.ctl);
            }
            if still {
                return;
            }
        }
    }

    /// Publisher flow control after a round: limit publishers to the delivery rate while
    /// working consumers have a backlog, open otherwise (see [`super::admission`]).
    fn admit(&mut self, now: Instant) {
        let delivered = std::mem::take(&mut self.delivered);
        if delivered > 0 {
            self.last_delivery = now;
        }
        let limiting = self.admission.is_limiting();
        let backlog = !self.deleted
            && self.state.consumer_count() > 0
            && Admission::over(self.state.ready_count(), self.state.ready_bytes(), limiting);
        if backlog && now.duration_since(self.last_delivery) < admission::STALL {
            if !limiting {
                debug!(queue = %self.name, ready = self.state.ready_count(), "backlog: limiting publishers to the delivery rate");
            }
            self.admission.limit(delivered);
        } else if limiting {
            debug!(queue = %self.name, ready = self.state.ready_count(), stalled = backlog, "publishers no longer limited");
            self.admission.open();
        }
    }

    /// The state's next deadline, and while limiting publishers the moment consumers count as
    /// stopped (the queue then opens).
    fn next_deadline(&self) -> Option<Instant> {
        let d = self.state.next_deadline();
        if !self.admission.is_limiting() {
            return d;
        }
        let stall = self.last_delivery + admission::STALL;
        Some(d.map_or(stall, |d| d.min(stall)))
    }

    /// Whether ready messages are piling up for this queue's consumers.
    fn backlogged(&self) -> bool {
        self.state.consumer_count() > 0
            && (self.state.ready_count() as usize > BACKLOG || self.state.ready_bytes() > BACKLOG_BYTES)
    }

    /// A handle on our own mailbox (None once nothing else holds one: the queue is unreachable).
    fn own_handle(&self) -> Option<QueueHandle> {
        self.me.upgrade().map(|tx| QueueHandle {
            name: self.name_arc.clone(),
            tx,
            ctl: self.ctl.clone(),
            admission: self.admission.clone(),
            activity: self.activity.clone(),
        })
    }

    /// Send a round's deliveries to the consumers' connections.
    fn deliver(&mut self, deliveries: Vec<Delivery>, now: Instant) {
        let Some(queue) = self.own_handle() else { return };
        let mut gone: Vec<(u64, u16, Arc<str>, u64)> = Vec::new();
        for Delivery { consumer, seq, msg, redelivered } in deliveries {
            let c = self.state.consumer_spec(consumer);
            let ev = ConnEvent::Deliver {
                channel: c.channel,
                consumer_tag: c.tag.clone(),
                // Only deliveries awaiting an ack need a way back to the queue.
                queue: (!c.no_ack).then(|| queue.clone()),
                seq,
                msg,
                redelivered,
            };
            if c.inbox.send(ev).is_err() {
                gone.push((c.conn_id, c.channel, c.tag.clone(), seq));
            }
        }
        // Connections that are gone: take their consumers off and keep the messages.
        for (conn_id, channel, tag, seq) in gone {
            self.state.remove_consumer(conn_id, channel, &tag, now);
            self.state.undeliverable(seq);
        }
        self.maybe_auto_delete();
    }

    /// Deadlines: expired messages, consumers past the ack timeout, an unused `x-expires` queue.
    /// Something happened: bump [`QueueHandle::activity`] (one writer: a plain store).
    fn moved(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.activity.store(self.activity.load(Relaxed).wrapping_add(1), Relaxed);
    }

    fn on_timer(&mut self, now: Instant) {
        self.moved();
        let timeout_ms = self.state.consumer_timeout().map_or(0, |t| t.as_millis() as u64);
        for c in self.state.on_timer(now) {
            warn!(queue = %self.name, channel = c.channel, consumer = %c.tag, "consumer ack timeout");
            let _ = c.inbox.send(ConnEvent::ConsumerTimeout { channel: c.channel, timeout_ms });
        }
        if self.state.is_expired(now) {
            debug!(queue = %self.name, "queue expired (x-expires)");
            self.forget_and_delete();
        }
    }

    /// Publish what left the queue to its dead-letter exchange (at most once, like RabbitMQ's
    /// classic queues: a full or missing target drops it).
    fn dead_letter(&mut self) {
        let dead = self.state.take_dead();
        if dead.is_empty() {
            return;
        }
        let (Some(dlx), Some(vhost)) = (self.args.dead_letter_exchange.clone(), self.vhost.upgrade()) else { return };
        let topology = vhost.snapshot();
        if !dlx.is_empty() && !topology.exchanges.contains_key(&dlx) {
            debug!(queue = %self.name, exchange = %dlx, "dead-letter exchange missing; messages dropped");
            return;
        }
        for (msg, reason) in dead {
            let (out, keys) = dead_letter(&msg, reason, &self.name, &dlx, self.args.dead_letter_routing_key.as_deref());
            for q in topology.route_keys(&dlx, &keys, out.headers()) {
                if reason != DeathReason::Rejected && is_cycle(&out, &q.name) {
                    debug!(queue = %self.name, target = %q.name, "dead-letter cycle dropped");
                    continue;
                }
                self.dead_letters.send(&q.handle, out.clone());
            }
        }
    }

    fn maybe_auto_delete(&mut self) {
        if self.auto_delete && !self.deleted && self.state.is_unused_after_consumers() {
            self.forget_and_delete();
        }
    }

    /// Delete (the store's directory included) while the name is still taken, then free the
    /// name: a queue declared under it afterwards can never have its new directory removed.
    fn forget_and_delete(&mut self) {
        self.delete();
        if let (Some(vhost), Some(me)) = (self.vhost.upgrade(), self.own_handle()) {
            vhost.forget_queue(&self.name, &me);
        }
    }

    fn delete(&mut self) {
        for c in self.state.consumers() {
            let _ = c.inbox.send(ConnEvent::ConsumerCancelled { channel: c.channel, consumer_tag: c.tag.clone() });
        }
        self.state.clear();
        self.state.store_mut().destroy();
        self.deleted = true;
        debug!(queue = %self.name, vhost = %self.vhost_name, "queue deleted");
    }
}
