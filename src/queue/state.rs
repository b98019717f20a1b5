//! The state of one queue, without I/O: ready messages in order (per priority), deliveries
//! awaiting acknowledgement, consumers with their credit, and every rule that depends on
//! them — TTL, length limits, dead-lettering, single active consumer, consumer priorities,
//! consumer ack timeouts, delivery limits, deduplication. Time is passed in (`now`).
//!
//! The queue task ([`super::actor`]) feeds it commands and carries out what it returns; tests
//! drive it directly. Every message gets a sequence number on enqueue; a requeued message goes
//! back to its original position by that number, as RabbitMQ's classic queues do. The messages
//! themselves live in the queue's [`MessageStore`]; this state only orders sequence numbers.
//! Messages leaving by rejection, expiry, overflow or delivery limit are collected in
//! [`QueueState::take_dead`] for the shell to dead-letter.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use amq_protocol::types::AMQPValue;
use tokio::time::Instant;

use super::args::{Overflow, QueueArgs};
use super::dead_letter::DeathReason;
use super::{ConsumerSpec, GetReply, Outcome};
use crate::error::{AmqpError, AmqpResult};
use crate::exchange::dedup::dedup_key;
use crate::message::Message;
use crate::message::parse_expiration;
use crate::stats::LocalCounters;
use crate::store::memory::MemoryStore;
use crate::store::segment::Recovered;
use crate::store::{MessageStore, StoreError};

/// A message waiting in the queue (the message itself is in the store).
/// A point in time as nanoseconds since the queue's epoch (8 bytes instead of an optional
/// `Instant`'s 16: this sits in every queued message). [`NEVER`] = no deadline.
type Deadline = u64;
const NEVER: Deadline = u64::MAX;

#[derive(Debug, Clone, Copy)]
struct Ready {
    seq: u64,
    expires: Deadline,
    /// Body size (bodies are at most 512 MiB).
    size: u32,
    priority: u8,
    redelivered: bool,
    /// Persistent, in a durable queue (survives a restart).
    persistent: bool,
}

/// Ready messages, one FIFO per priority level (a single level without `x-max-priority`).
#[derive(Debug)]
struct ReadyList {
    levels: Vec<VecDeque<Ready>>,
    len: usize,
}

impl ReadyList {
    fn new(levels: usize) -> Self {
        ReadyList { levels: (0..levels.max(1)).map(|_| VecDeque::new()).collect(), len: 0 }
    }

    fn push_back(&mut self, r: Ready) {
        self.levels[r.priority as usize].push_back(r);
        self.len += 1;
    }

    /// Put back at its position by sequence number.
    fn insert_ordered(&mut self, r: Ready) {
        let level = &mut self.levels[r.priority as usize];
        let at = level.partition_point(|x| x.seq < r.seq);
        level.insert(at, r);
        self.len += 1;
    }

    /// The head: the oldest message of the highest priority.
    fn pop_front(&mut self) -> Option<Ready> {
        let r = self.levels.iter_mut().rev().find_map(VecDeque::pop_front)?;
        self.len -= 1;
        Some(r)
    }

    /// Pop a level head that has expired (`strict`: expired before `now`, not at it).
    fn pop_expired(&mut self, now: Deadline, strict: bool) -> Option<Ready> {
        let level = self.levels.iter_mut().find(|l| {
            l.front().is_some_and(|r| r.expires != NEVER && if strict { r.expires < now } else { r.expires <= now })
        })?;
        let r = level.pop_front();
        self.len -= 1;
        r
    }

    fn next_expiry(&self) -> Option<Deadline> {
        self.levels.iter().filter_map(|l| l.front().map(|r| r.expires)).filter(|e| *e != NEVER).min()
    }

    fn drain(&mut self) -> Vec<Ready> {
        self.len = 0;
        self.levels.iter_mut().flat_map(|l| l.drain(..)).collect()
    }
}

/// A delivery awaiting its ack.
#[derive(Debug)]
struct Unacked {
    /// Id of the consumer it went to; None for basic.get.
    consumer: Option<u64>,
    /// What it needs to go back to the ready list.
    ready: Ready,
}

#[derive(Debug)]
struct Consumer {
    /// Unique within the queue (cheaper to compare than the tag on every ack).
    id: u64,
    spec: ConsumerSpec,
    /// Deliveries not yet settled (for the per-consumer prefetch).
    unacked: u32,
    /// When this consumer last got a message (round-robin among equal priorities).
    last_served: u64,
}

impl Consumer {
    fn is(&self, conn_id: u64, channel: u16, tag: &str) -> bool {
        self.spec.conn_id == conn_id && self.spec.channel == channel && &*self.spec.tag == tag
    }

    fn has_credit(&self) -> bool {
        self.spec.no_ack || self.spec.prefetch == 0 || self.unacked < self.spec.prefetch
    }
}

/// Hashing for sequence-number keys: a multiplicative (Fibonacci) hash, much cheaper than the
/// default SipHash and well spread for dense, increasing numbers (keys are not peer-chosen).
#[derive(Debug, Default, Clone, Copy)]
struct SeqHash;

impl std::hash::BuildHasher for SeqHash {
    type Hasher = SeqHasher;
    fn build_hasher(&self) -> SeqHasher {
        SeqHasher(0)
    }
}

#[derive(Debug)]
struct SeqHasher(u64);

impl std::hash::Hasher for SeqHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ *b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A delivery decided by [`QueueState::dispatch`], for the shell to send.
#[derive(Debug)]
pub struct Delivery {
    /// Index of the consumer (see [`QueueState::consumer_spec`]); valid until consumers change.
    pub consumer: usize,
    pub seq: u64,
    pub msg: Arc<Message>,
    pub redelivered: bool,
}

/// Result of a dispatch round.
#[derive(Debug, Default)]
pub struct Dispatch {
    pub deliveries: Vec<Delivery>,
    /// Consumers skipped because their connection's writer is congested.
    pub congested: Vec<ConsumerSpec>,
}

/// What happened to a published message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    Accepted,
    /// Refused by `x-overflow` reject-publish(-dlx): the publisher gets a nack.
    Rejected,
    /// A duplicate under `x-message-deduplication`: dropped, but confirmed.
    Duplicate,
}

#[derive(Debug)]
pub struct QueueState<S: MessageStore = MemoryStore> {
    /// Origin of the queue's [`Deadline`]s.
    epoch: Instant,
    name: String,
    vhost: String,
    args: QueueArgs,
    ready: ReadyList,
    /// Body bytes of the ready messages (for `x-max-length-bytes`).
    ready_bytes: u64,
    unacked: HashMap<u64, Unacked, SeqHash>,
    /// Ack deadlines of consumer deliveries, in delivery order (one timeout per queue keeps
    /// them sorted).
    ack_deadlines: VecDeque<(Instant, u64)>,
    consumer_timeout: Option<Duration>,
    /// The broker-wide consumer timeout (used when the queue's settings set none).
    default_consumer_timeout: Option<Duration>,
    consumers: Vec<Consumer>,
    serve_clock: u64,
    next_seq: u64,
    /// Whether a consumer was ever attached (auto-delete only applies after one was).
    had_consumer: bool,
    /// Last consume, get or redeclare (for `x-expires`).
    last_used: Instant,
    /// Quorum queues: deliveries so far, per message.
    delivery_counts: HashMap<u64, u64>,
    /// Deduplication keys of the messages in the queue.
    dedup: HashMap<Vec<u8>, u64>,
    dedup_by_seq: HashMap<u64, Vec<u8>>,
    /// Messages to dead-letter, with their reason.
    dead: Vec<(Arc<Message>, DeathReason)>,
    /// Persistent messages (ready and unacked) and their body bytes.
    persistent: (u64, u64),
    /// What happened here since the queue started (RabbitMQ's queue `message_stats`).
    pub counters: LocalCounters,
    store: S,
}

impl QueueState<MemoryStore> {
    /// A queue keeping its messages in memory.
    pub fn new(name: impl Into<String>, vhost: impl Into<String>, args: QueueArgs, now: Instant) -> Self {
        Self::with_store(name, vhost, args, now, MemoryStore::new())
    }
}

impl<S: MessageStore> QueueState<S> {
    pub fn with_store(
        name: impl Into<String>,
        vhost: impl Into<String>,
        args: QueueArgs,
        now: Instant,
        store: S,
    ) -> Self {
        let levels = args.max_priority.map_or(1, |p| p as usize + 1);
        QueueState {
            name: name.into(),
            vhost: vhost.into(),
            ready: ReadyList::new(levels),
            ready_bytes: 0,
            unacked: HashMap::default(),
            ack_deadlines: VecDeque::new(),
            consumer_timeout: args.consumer_timeout,
            default_consumer_timeout: None,
            consumers: Vec::new(),
            serve_clock: 0,
            next_seq: 1,
            had_consumer: false,
            last_used: now,
            epoch: now,
            delivery_counts: HashMap::new(),
            dedup: HashMap::new(),
            dedup_by_seq: HashMap::new(),
            dead: Vec::new(),
            persistent: (0, 0),
            counters: LocalCounters::default(),
            store,
            args,
        }
    }

    /// Rebuild the ready list from messages recovered by the store (already in it), in order.
    /// TTLs keep counting from the original enqueue time.
    pub fn restore(&mut self, recovered: Vec<Recovered>, now: Instant) {
        let wall_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        for r in recovered {
            let Some(msg) = self.store.read(r.seq) else { continue };
            let age = Duration::from_millis(wall_ms.saturating_sub(r.enqueued_at_ms));
            let expires = self.ttl_of(&msg).map_or(NEVER, |t| self.deadline(now + t.saturating_sub(age)));
            let priority = self.priority_of(&msg);
            self.ready.push_back(Ready {
                seq: r.seq,
                expires,
                size: msg.body_size as u32,
                priority,
                redelivered: r.redelivered,
                persistent: true,
            });
            self.persistent.0 += 1;
            self.persistent.1 += msg.body_size;
            self.ready_bytes += msg.body_size;
            self.next_seq = self.next_seq.max(r.seq.saturating_add(1));
        }
    }

    /// The store, for the shell (flushing, durability).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Apply the broker-wide consumer timeout unless the queue sets its own (None = off).
    pub fn set_default_consumer_timeout(&mut self, t: Option<Duration>) {
        self.default_consumer_timeout = t;
        if self.args.consumer_timeout.is_none() {
            self.consumer_timeout = t;
        }
    }

    /// New settings (a policy applied, changed or cleared), in force at once: with drop-head
    /// overflow a lower length limit drops (and dead-letters) the oldest messages now; new
    /// TTLs apply to messages enqueued from now on, as in RabbitMQ. The priority levels stay
    /// those of the declaration.
    pub fn set_args(&mut self, mut a: QueueArgs, _now: Instant) {
        a.max_priority = self.args.max_priority;
        self.consumer_timeout = a.consumer_timeout.or(self.default_consumer_timeout);
        self.args = a;
        if self.args.overflow == Overflow::DropHead {
            while self.exceeds(0, 0) {
                let Some(head) = self.ready.pop_front() else { break };
                self.ready_bytes -= head.size as u64;
                self.drop_message(head, Some(DeathReason::Maxlen));
            }
        }
    }

    pub fn ready_count(&self) -> u32 {
        self.ready.len as u32
    }

    /// Body bytes of the ready messages.
    pub fn ready_bytes(&self) -> u64 {
        self.ready_bytes
    }

    /// Persistent messages (ready and unacked) and their body bytes.
    pub fn persistent(&self) -> (u64, u64) {
        self.persistent
    }

    /// The `timestamp` property of the message at the head, if it has one.
    pub fn head_timestamp(&self) -> Option<u64> {
        let head = self.ready.levels.iter().rev().find_map(VecDeque::front)?;
        self.store.read(head.seq)?.timestamp()
    }

    /// Messages kept only on disk, and their body bytes.
    pub fn paged_out(&self) -> (u64, u64) {
        self.store.paged_out()
    }

    pub fn unacked_count(&self) -> u32 {
        self.unacked.len() as u32
    }

    /// Body bytes of the deliveries awaiting acks (a walk over them: for the management API,
    /// not the message path).
    pub fn unacked_bytes(&self) -> u64 {
        self.unacked.values().map(|u| u.ready.size as u64).sum()
    }

    /// The active consumer of a single-active-consumer queue.
    pub fn single_active_tag(&self) -> Option<&str> {
        if !self.args.single_active_consumer {
            return None;
        }
        self.consumers.first().map(|c| &*c.spec.tag)
    }

    pub fn consumer_count(&self) -> u32 {
        self.consumers.len() as u32
    }

    /// Whether an auto-delete queue should now go: it had consumers and has none left.
    pub fn is_unused_after_consumers(&self) -> bool {
        self.had_consumer && self.consumers.is_empty()
    }

    /// Messages that left the queue towards its dead-letter exchange since the last call.
    pub fn take_dead(&mut self) -> Vec<(Arc<Message>, DeathReason)> {
        std::mem::take(&mut self.dead)
    }

    /// A redeclare or passive declare counts as use (`x-expires`).
    pub fn touch(&mut self, now: Instant) {
        self.last_used = now;
    }

    fn exceeds(&self, extra_msgs: usize, extra_bytes: u64) -> bool {
        self.args.max_length.is_some_and(|m| (self.ready.len + extra_msgs) as u64 > m)
            || self.args.max_length_bytes.is_some_and(|m| self.ready_bytes + extra_bytes > m)
    }

    /// Publish a message into the queue.
    pub fn enqueue(&mut self, msg: Arc<Message>, now: Instant) -> Result<Enqueued, StoreError> {
        let key = if self.args.deduplication {
            msg.headers().and_then(|h| h.inner().get("x-deduplication-header")).map(dedup_key)
        } else {
            None
        };
        if key.as_ref().is_some_and(|k| self.dedup.contains_key(k)) {
            return Ok(Enqueued::Duplicate);
        }
        let size = msg.body_size;
        if self.args.overflow != Overflow::DropHead && self.exceeds(1, size) {
            if self.args.overflow == Overflow::RejectPublishDlx && self.args.dead_letter_exchange.is_some() {
                self.dead.push((msg, DeathReason::Maxlen));
            }
            return Ok(Enqueued::Rejected);
        }
        let seq = self.next_seq;
        self.store.append(seq, &msg)?;
        self.next_seq += 1;
        let (ttl, priority) = (self.ttl_of(&msg), self.priority_of(&msg));
        let persistent = msg.is_persistent() && self.store.is_durable();
        self.ready.push_back(Ready {
            seq,
            expires: ttl.map_or(NEVER, |t| self.deadline(now + t)),
            size: size as u32,
            priority,
            redelivered: false,
            persistent,
        });
        self.ready_bytes += size;
        self.counters.publish += 1;
        if persistent {
            self.persistent.0 += 1;
            self.persistent.1 += size;
        }
        if let Some(k) = key {
            self.dedup.insert(k.clone(), seq);
            self.dedup_by_seq.insert(seq, k);
        }
        if self.args.overflow == Overflow::DropHead {
            while self.exceeds(0, 0) {
                let Some(head) = self.ready.pop_front() else { break };
                self.ready_bytes -= head.size as u64;
                self.drop_message(head, Some(DeathReason::Maxlen));
            }
        }
        Ok(Enqueued::Accepted)
    }

    /// `t` as a [`Deadline`] (times before the epoch count as the epoch).
    fn deadline(&self, t: Instant) -> Deadline {
        t.saturating_duration_since(self.epoch).as_nanos().min((NEVER - 1) as u128) as Deadline
    }

    /// Effective TTL: the smaller of `x-message-ttl` and the message's `expiration`.
    fn ttl_of(&self, msg: &Message) -> Option<Duration> {
        let per_message = msg.expiration().and_then(|e| parse_expiration(e).ok());
        match (self.args.message_ttl, per_message.map(Duration::from_millis)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Priority level: the message's `priority` capped at `x-max-priority` (0 without it).
    fn priority_of(&self, msg: &Message) -> u8 {
        self.args.max_priority.map_or(0, |max| msg.summary.priority.unwrap_or(0).min(max))
    }

    /// Remove a message for good, dead-lettering it when the queue has a DLX.
    fn drop_message(&mut self, r: Ready, reason: Option<DeathReason>) {
        let seq = r.seq;
        if r.persistent {
            self.persistent.0 -= 1;
            self.persistent.1 -= r.size as u64;
        }
        if let Some(reason) = reason
            && self.args.dead_letter_exchange.is_some()
            && let Some(msg) = self.store.read(seq)
        {
            self.dead.push((msg, reason));
        }
        self.store.remove(seq);
        if !self.delivery_counts.is_empty() {
            self.delivery_counts.remove(&seq);
        }
        if !self.dedup_by_seq.is_empty()
            && let Some(k) = self.dedup_by_seq.remove(&seq)
        {
            self.dedup.remove(&k);
        }
    }

    /// Attach a consumer, enforcing exclusivity (403 as RabbitMQ).
    pub fn add_consumer(&mut self, spec: ConsumerSpec, now: Instant) -> AmqpResult<()> {
        let exclusive_held = self.consumers.iter().any(|c| c.spec.exclusive);
        if exclusive_held || (spec.exclusive && (!self.consumers.is_empty() || self.args.single_active_consumer)) {
            return Err(AmqpError::access_refused(format_args!(
                "queue '{}' in vhost '{}' in exclusive use",
                self.name, self.vhost
            )));
        }
        self.serve_clock += 1;
        self.consumers.push(Consumer { id: self.serve_clock, spec, unacked: 0, last_served: 0 });
        self.store.set_consumed(true);
        self.had_consumer = true;
        self.last_used = now;
        Ok(())
    }

    /// Detach one consumer; its unacked deliveries stay unacked. Returns whether it existed.
    pub fn remove_consumer(&mut self, conn_id: u64, channel: u16, tag: &str, now: Instant) -> bool {
        let before = self.consumers.len();
        self.consumers.retain(|c| !c.is(conn_id, channel, tag));
        self.store.set_consumed(!self.consumers.is_empty());
        self.last_used = now;
        before != self.consumers.len()
    }

    /// A channel closed: drop its consumers and requeue the given deliveries.
    pub fn channel_closed(&mut self, conn_id: u64, channel: u16, requeue: &[u64], now: Instant) {
        self.consumers.retain(|c| !(c.spec.conn_id == conn_id && c.spec.channel == channel));
        self.store.set_consumed(!self.consumers.is_empty());
        self.last_used = now;
        self.settle(requeue, Outcome::Requeue);
    }

    /// The consumer a [`Delivery`] names.
    pub fn consumer_spec(&self, i: usize) -> &ConsumerSpec {
        &self.consumers[i].spec
    }

    /// Every consumer (for cancel notifications on delete).
    pub fn consumers(&self) -> impl Iterator<Item = &ConsumerSpec> {
        self.consumers.iter().map(|c| &c.spec)
    }

    /// Drop ack deadlines of deliveries no longer awaiting an ack: those at the front at once,
    /// the rest once they outnumber the unacked deliveries (an old delivery left unacked would
    /// otherwise keep every later entry for the whole timeout).
    fn trim_ack_deadlines(&mut self) {
        while let Some(&(_, seq)) = self.ack_deadlines.front() {
            if self.unacked.contains_key(&seq) {
                break;
            }
            self.ack_deadlines.pop_front();
        }
        if self.ack_deadlines.len() > 2 * self.unacked.len() + 1024 {
            let unacked = &self.unacked;
            self.ack_deadlines.retain(|(_, seq)| unacked.contains_key(seq));
        }
    }

    /// Settle deliveries. Unknown sequence numbers are ignored (the channel already validated
    /// the delivery tags; a number may belong to a purged or requeued message).
    pub fn settle(&mut self, seqs: &[u64], outcome: Outcome) {
        self.settle_each(seqs, outcome);
        self.trim_ack_deadlines();
    }

    fn settle_each(&mut self, seqs: &[u64], outcome: Outcome) {
        for &seq in seqs {
            let Some(u) = self.unacked.remove(&seq) else { continue };
            if let Some(id) = u.consumer
                && let Some(c) = self.consumers.iter_mut().find(|c| c.id == id)
            {
                c.unacked = c.unacked.saturating_sub(1);
            }
            match outcome {
                Outcome::Ack => {
                    self.counters.ack += 1;
                    self.drop_message(u.ready, None)
                }
                Outcome::Reject => self.drop_message(u.ready, Some(DeathReason::Rejected)),
                Outcome::Requeue => {
                    let returns = self.delivery_counts.get(&seq).copied().unwrap_or(0);
                    if self.args.delivery_limit.is_some_and(|limit| returns > limit) {
                        self.drop_message(u.ready, Some(DeathReason::DeliveryLimit));
                    } else {
                        self.ready_bytes += u.ready.size as u64;
                        self.ready.insert_ordered(Ready { redelivered: true, ..u.ready });
                    }
                }
            }
        }
    }

    /// A delivery that could not be handed to its connection goes back where it was. (A no-ack
    /// delivery was settled when sent: at-most-once, it is gone, as in RabbitMQ.)
    pub fn undeliverable(&mut self, seq: u64) {
        self.settle(&[seq], Outcome::Requeue);
    }

    /// Take the head message for delivery: expired heads are dropped on the way, and quorum
    /// redeliveries get their `x-delivery-count` header.
    ///
    /// `strict`: only messages that expired before `now` are dropped, so a message with TTL 0
    /// reaches a consumer waiting in the same round (RabbitMQ delivers it if a consumer can take
    /// it immediately); `basic.get` is not waiting, and gets no such grace.
    fn take_head(&mut self, now: Instant, strict: bool) -> Option<(Ready, Arc<Message>)> {
        loop {
            let now_d = self.deadline(now);
            while let Some(r) = self.ready.pop_expired(now_d, strict) {
                self.ready_bytes -= r.size as u64;
                self.drop_message(r, Some(DeathReason::Expired));
            }
            let r = self.ready.pop_front()?;
            self.ready_bytes -= r.size as u64;
            let Some(mut msg) = self.store.read(r.seq) else { continue };
            self.store.delivered(r.seq);
            if self.args.delivery_limit.is_some() || self.args.queue_type == super::args::QueueType::Quorum {
                let n = self.delivery_counts.entry(r.seq).or_insert(0);
                *n += 1;
                if *n > 1 {
                    msg = Arc::new(msg.with_header("x-delivery-count", AMQPValue::LongLongInt(*n as i64 - 1)));
                }
            }
            return Some((r, msg));
        }
    }

    /// `basic.get`: take the head message.
    pub fn get(&mut self, no_ack: bool, now: Instant) -> Option<GetReply> {
        self.last_used = now;
        let Some((r, msg)) = self.take_head(now, false) else {
            self.counters.get_empty += 1;
            return None;
        };
        self.counters.redeliver += r.redelivered as u64;
        if no_ack {
            self.counters.get_no_ack += 1;
            self.drop_message(r, None);
        } else {
            self.counters.get += 1;
            self.unacked.insert(r.seq, Unacked { consumer: None, ready: r });
        }
        Some(GetReply { seq: r.seq, msg, redelivered: r.redelivered, remaining: self.ready_count() })
    }

    /// Remove every ready message; returns how many (purged messages are not dead-lettered).
    pub fn purge(&mut self) -> u32 {
        let n = self.ready.len as u32;
        for r in self.ready.drain() {
            self.drop_message(r, None);
        }
        self.ready_bytes = 0;
        n
    }

    /// The consumer to serve next among those not `blocked`: the single active one, or the
    /// highest priority, least recently served.
    fn pick(&self, blocked: &[bool]) -> Option<usize> {
        if self.args.single_active_consumer {
            return (!self.consumers.is_empty() && !blocked[0]).then_some(0);
        }
        self.consumers
            .iter()
            .enumerate()
            .filter(|(i, _)| !blocked[*i])
            .min_by_key(|(i, c)| (std::cmp::Reverse(c.spec.priority), c.last_served, *i))
            .map(|(i, _)| i)
    }

    /// Hand ready messages to consumers with credit.
    pub fn dispatch(&mut self, now: Instant) -> Dispatch {
        let mut out = Dispatch::default();
        let mut blocked = vec![false; self.consumers.len()];
        while self.ready.len > 0 {
            let Some(i) = self.pick(&blocked) else { break };
            let c = &self.consumers[i];
            let congested = c.spec.gauge.is_congested();
            if !c.has_credit() || congested || !(c.spec.no_ack || c.spec.channel_limit.try_acquire()) {
                if congested {
                    out.congested.push(c.spec.clone());
                }
                blocked[i] = true;
                continue;
            }
            let no_ack = c.spec.no_ack;
            let Some((r, msg)) = self.take_head(now, true) else {
                // Only expired messages were left: give back the channel credit just taken.
                if !no_ack {
                    self.consumers[i].spec.channel_limit.release(1);
                }
                break;
            };
            self.serve_clock += 1;
            let c = &mut self.consumers[i];
            c.last_served = self.serve_clock;
            c.spec.gauge.add(delivery_size(&msg));
            self.counters.redeliver += r.redelivered as u64;
            if no_ack {
                self.counters.deliver_no_ack += 1;
                self.drop_message(r, None);
            } else {
                self.counters.deliver += 1;
                c.unacked += 1;
                self.unacked.insert(r.seq, Unacked { consumer: Some(c.id), ready: r });
                if let Some(t) = self.consumer_timeout {
                    self.ack_deadlines.push_back((now + t, r.seq));
                }
            }
            out.deliveries.push(Delivery { consumer: i, seq: r.seq, msg, redelivered: r.redelivered });
        }
        out
    }

    /// Apply deadlines due at `now`: expire messages at the heads, and report consumers whose
    /// oldest delivery has waited longer than the ack timeout (their channel must be closed).
    /// Returns the timed-out consumers.
    pub fn on_timer(&mut self, now: Instant) -> Vec<ConsumerSpec> {
        let now_d = self.deadline(now);
        while let Some(r) = self.ready.pop_expired(now_d, false) {
            self.ready_bytes -= r.size as u64;
            self.drop_message(r, Some(DeathReason::Expired));
        }
        let mut timed_out: Vec<ConsumerSpec> = Vec::new();
        while let Some(&(at, seq)) = self.ack_deadlines.front() {
            if at > now {
                break;
            }
            self.ack_deadlines.pop_front();
            let Some(Some(id)) = self.unacked.get(&seq).map(|u| u.consumer) else { continue };
            let Some(c) = self.consumers.iter().find(|c| c.id == id) else { continue };
            if !timed_out.iter().any(|t| t.conn_id == c.spec.conn_id && t.channel == c.spec.channel) {
                timed_out.push(c.spec.clone());
            }
        }
        timed_out
    }

    /// The consumer timeout in force, for the error text.
    pub fn consumer_timeout(&self) -> Option<Duration> {
        self.consumer_timeout
    }

    /// Whether `x-expires` says this unused queue is due for deletion.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.consumers.is_empty() && self.args.expires.is_some_and(|e| now >= self.last_used + e)
    }

    /// When [`QueueState::on_timer`] (or the expiry check) should next run.
    pub fn next_deadline(&self) -> Option<Instant> {
        let expiry = self.consumers.is_empty().then(|| self.args.expires.map(|e| self.last_used + e)).flatten();
        let ttl = self.ready.next_expiry().map(|d| self.epoch + Duration::from_nanos(d));
        [ttl, self.ack_deadlines.front().map(|d| d.0), expiry].into_iter().flatten().min()
    }

    /// Drop everything (queue deleted); returns the ready count. Nothing is dead-lettered.
    pub fn clear(&mut self) -> u32 {
        let n = self.purge();
        let gone: Vec<Ready> = self.unacked.drain().map(|(_, u)| u.ready).collect();
        for r in gone {
            self.drop_message(r, None);
        }
        self.consumers.clear();
        self.ack_deadlines.clear();
        self.dead.clear();
        n
    }
}

/// Approximate bytes a delivery puts on the wire (for the writer gauge).
pub fn delivery_size(msg: &Message) -> usize {
    64 + msg.raw_header.len() + msg.body_size as usize + msg.exchange.len() + msg.routing_key.len()
}

#[cfg(test)]
mod tests;
