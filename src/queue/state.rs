//! The state of one queue, without I/O: ready messages in order, deliveries awaiting
//! acknowledgement, consumers with their credit, and round-robin dispatch.
//!
//! The queue task ([`super::actor`]) feeds it commands and carries out what it returns; tests
//! drive it directly. Every message gets a sequence number on enqueue; a requeued message goes
//! back to its original position by that number, as RabbitMQ's classic queues do. The messages
//! themselves live in the queue's [`MessageStore`]; this state only orders sequence numbers.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::error::{AmqpError, AmqpResult};
use crate::message::Message;
use crate::store::memory::MemoryStore;
use crate::store::{MessageStore, StoreError};

use super::{ConsumerSpec, GetReply, Outcome};

#[derive(Debug)]
struct Ready {
    seq: u64,
    redelivered: bool,
}

/// A delivery awaiting its ack: (connection, channel, tag) of the consumer it went to, or None
/// for basic.get. The message stays in the store until settled.
type Unacked = Option<(u64, u16, Arc<str>)>;

#[derive(Debug)]
struct Consumer {
    spec: ConsumerSpec,
    /// Deliveries not yet settled (for the per-consumer prefetch).
    unacked: u32,
}

impl Consumer {
    fn is(&self, conn_id: u64, channel: u16, tag: &str) -> bool {
        self.spec.conn_id == conn_id && self.spec.channel == channel && &*self.spec.tag == tag
    }
}

/// A delivery decided by [`QueueState::dispatch`], for the shell to send.
#[derive(Debug)]
pub struct Delivery {
    pub consumer: ConsumerSpec,
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

#[derive(Debug)]
pub struct QueueState<S: MessageStore = MemoryStore> {
    name: String,
    vhost: String,
    ready: VecDeque<Ready>,
    unacked: HashMap<u64, Unacked>,
    consumers: Vec<Consumer>,
    /// Index of the consumer to try first in the next dispatch (round-robin).
    cursor: usize,
    next_seq: u64,
    /// Whether a consumer was ever attached (auto-delete only applies after one was).
    had_consumer: bool,
    store: S,
}

impl QueueState<MemoryStore> {
    /// A queue keeping its messages in memory.
    pub fn new(name: impl Into<String>, vhost: impl Into<String>) -> Self {
        Self::with_store(name, vhost, MemoryStore::new())
    }
}

impl<S: MessageStore> QueueState<S> {
    pub fn with_store(name: impl Into<String>, vhost: impl Into<String>, store: S) -> Self {
        QueueState {
            name: name.into(),
            vhost: vhost.into(),
            ready: VecDeque::new(),
            unacked: HashMap::new(),
            consumers: Vec::new(),
            cursor: 0,
            next_seq: 1,
            had_consumer: false,
            store,
        }
    }

    pub fn ready_count(&self) -> u32 {
        self.ready.len() as u32
    }

    pub fn unacked_count(&self) -> u32 {
        self.unacked.len() as u32
    }

    pub fn consumer_count(&self) -> u32 {
        self.consumers.len() as u32
    }

    /// Whether an auto-delete queue should now go: it had consumers and has none left.
    pub fn is_unused_after_consumers(&self) -> bool {
        self.had_consumer && self.consumers.is_empty()
    }

    /// Append a message; returns its sequence number.
    pub fn enqueue(&mut self, msg: Arc<Message>) -> Result<u64, StoreError> {
        let seq = self.next_seq;
        self.store.append(seq, &msg)?;
        self.next_seq += 1;
        self.ready.push_back(Ready { seq, redelivered: false });
        Ok(seq)
    }

    /// Attach a consumer, enforcing exclusivity (403 as RabbitMQ).
    pub fn add_consumer(&mut self, spec: ConsumerSpec) -> AmqpResult<()> {
        let exclusive_held = self.consumers.iter().any(|c| c.spec.exclusive);
        if exclusive_held || (spec.exclusive && !self.consumers.is_empty()) {
            return Err(AmqpError::access_refused(format_args!(
                "queue '{}' in vhost '{}' in exclusive use",
                self.name, self.vhost
            )));
        }
        self.consumers.push(Consumer { spec, unacked: 0 });
        self.had_consumer = true;
        Ok(())
    }

    /// Detach one consumer; its unacked deliveries stay unacked. Returns whether it existed.
    pub fn remove_consumer(&mut self, conn_id: u64, channel: u16, tag: &str) -> bool {
        let before = self.consumers.len();
        self.consumers.retain(|c| !c.is(conn_id, channel, tag));
        before != self.consumers.len()
    }

    /// A channel closed: drop its consumers and requeue the given deliveries.
    pub fn channel_closed(&mut self, conn_id: u64, channel: u16, requeue: &[u64]) {
        self.consumers.retain(|c| !(c.spec.conn_id == conn_id && c.spec.channel == channel));
        self.settle(requeue, Outcome::Requeue);
    }

    /// Every consumer (for cancel notifications on delete).
    pub fn consumers(&self) -> impl Iterator<Item = &ConsumerSpec> {
        self.consumers.iter().map(|c| &c.spec)
    }

    /// Settle deliveries. Unknown sequence numbers are ignored (the channel already validated
    /// the delivery tags; a number may belong to a purged or requeued message).
    pub fn settle(&mut self, seqs: &[u64], outcome: Outcome) {
        for &seq in seqs {
            let Some(consumer) = self.unacked.remove(&seq) else { continue };
            if let Some((conn, ch, tag)) = &consumer
                && let Some(c) = self.consumers.iter_mut().find(|c| c.is(*conn, *ch, tag))
            {
                c.unacked = c.unacked.saturating_sub(1);
            }
            match outcome {
                Outcome::Requeue => self.requeue(seq),
                Outcome::Ack | Outcome::Reject => self.store.remove(seq),
            }
        }
    }

    /// Put a message back at its original position, marked redelivered.
    fn requeue(&mut self, seq: u64) {
        let at = self.ready.partition_point(|r| r.seq < seq);
        self.ready.insert(at, Ready { seq, redelivered: true });
    }

    /// A delivery that could not be handed to its connection goes back where it was. (A no-ack
    /// delivery was settled when sent: at-most-once, it is gone, as in RabbitMQ.)
    pub fn undeliverable(&mut self, seq: u64) {
        self.settle(&[seq], Outcome::Requeue);
    }

    /// `basic.get`: take the head message.
    pub fn get(&mut self, no_ack: bool) -> Option<GetReply> {
        loop {
            let r = self.ready.pop_front()?;
            let Some(msg) = self.store.read(r.seq) else { continue };
            if no_ack {
                self.store.remove(r.seq);
            } else {
                self.unacked.insert(r.seq, None);
            }
            return Some(GetReply { seq: r.seq, msg, redelivered: r.redelivered, remaining: self.ready_count() });
        }
    }

    /// Remove every ready message; returns how many.
    pub fn purge(&mut self) -> u32 {
        let n = self.ready.len() as u32;
        for r in self.ready.drain(..) {
            self.store.remove(r.seq);
        }
        n
    }

    /// Hand ready messages to consumers with credit, round-robin.
    pub fn dispatch(&mut self) -> Dispatch {
        let mut out = Dispatch::default();
        let n = self.consumers.len();
        if n == 0 {
            return out;
        }
        // Consumers found unable to take more in this round; once all are, stop.
        let mut blocked = vec![false; n];
        let mut blocked_count = 0;
        let mut i = self.cursor % n;
        while !self.ready.is_empty() && blocked_count < n {
            if blocked[i] {
                i = (i + 1) % n;
                continue;
            }
            let c = &mut self.consumers[i];
            let per_consumer_ok = c.spec.no_ack || c.spec.prefetch == 0 || c.unacked < c.spec.prefetch;
            let congested = c.spec.gauge.is_congested();
            let can = per_consumer_ok && !congested && (c.spec.no_ack || c.spec.channel_limit.try_acquire());
            if !can {
                if congested {
                    out.congested.push(c.spec.clone());
                }
                blocked[i] = true;
                blocked_count += 1;
                i = (i + 1) % n;
                continue;
            }
            let Some(r) = self.ready.pop_front() else { break };
            let Some(msg) = self.store.read(r.seq) else {
                // Nothing stored under this number (cannot happen with a healthy store): skip it,
                // and give back the channel credit just taken.
                if !c.spec.no_ack {
                    c.spec.channel_limit.release(1);
                }
                continue;
            };
            c.spec.gauge.add(delivery_size(&msg));
            if c.spec.no_ack {
                self.store.remove(r.seq);
            } else {
                c.unacked += 1;
                self.unacked.insert(r.seq, Some((c.spec.conn_id, c.spec.channel, c.spec.tag.clone())));
            }
            out.deliveries.push(Delivery { consumer: c.spec.clone(), seq: r.seq, msg, redelivered: r.redelivered });
            i = (i + 1) % n;
            self.cursor = i;
        }
        out
    }

    /// Drop everything (queue deleted); returns the ready count.
    pub fn clear(&mut self) -> u32 {
        let n = self.purge();
        for (seq, _) in self.unacked.drain() {
            self.store.remove(seq);
        }
        self.consumers.clear();
        n
    }
}

/// Approximate bytes a delivery puts on the wire (for the writer gauge).
pub fn delivery_size(msg: &Message) -> usize {
    64 + msg.raw_header.len() + msg.body_size as usize + msg.exchange.len() + msg.routing_key.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::flow::{ChannelLimit, FlowGauge};
    use crate::protocol::BasicProperties;
    use tokio::sync::mpsc;

    fn msg(n: u8) -> Arc<Message> {
        Arc::new(Message {
            exchange: String::new(),
            routing_key: "q".into(),
            properties: BasicProperties::default(),
            raw_header: bytes::Bytes::new(),
            body: vec![bytes::Bytes::from(vec![n])],
            body_size: 1,
        })
    }

    fn consumer(tag: &str, prefetch: u32, limit: &Arc<ChannelLimit>) -> ConsumerSpec {
        let (inbox, _rx) = mpsc::unbounded_channel();
        ConsumerSpec {
            conn_id: 1,
            channel: 1,
            tag: tag.into(),
            no_ack: false,
            exclusive: false,
            prefetch,
            channel_limit: limit.clone(),
            gauge: Arc::new(FlowGauge::default()),
            inbox,
        }
    }

    fn body(d: &Delivery) -> u8 {
        d.msg.body[0][0]
    }

    #[test]
    fn round_robin_with_per_consumer_prefetch() {
        let limit = Arc::new(ChannelLimit::default());
        let mut q = QueueState::new("q", "/");
        q.add_consumer(consumer("a", 2, &limit)).unwrap();
        q.add_consumer(consumer("b", 2, &limit)).unwrap();
        for i in 0..6 {
            q.enqueue(msg(i)).unwrap();
        }
        let d = q.dispatch().deliveries;
        let tags: Vec<&str> = d.iter().map(|d| &*d.consumer.tag).collect();
        assert_eq!(tags, ["a", "b", "a", "b"]);
        assert_eq!(q.ready_count(), 2);
        assert!(q.dispatch().deliveries.is_empty(), "everyone at prefetch");
        q.settle(&[d[0].seq], Outcome::Ack);
        let d2 = q.dispatch().deliveries;
        assert_eq!(d2.len(), 1);
        assert_eq!(&*d2[0].consumer.tag, "a");
    }

    #[test]
    fn requeue_restores_original_position_and_marks_redelivered() {
        let limit = Arc::new(ChannelLimit::default());
        let mut q = QueueState::new("q", "/");
        for i in 0..4 {
            q.enqueue(msg(i)).unwrap();
        }
        let first = q.get(false).unwrap();
        let second = q.get(false).unwrap();
        assert_eq!(first.remaining, 3);
        q.settle(&[second.seq, first.seq], Outcome::Requeue);
        q.add_consumer(consumer("a", 0, &limit)).unwrap();
        let d = q.dispatch().deliveries;
        assert_eq!(d.iter().map(body).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert_eq!(d.iter().map(|d| d.redelivered).collect::<Vec<_>>(), [true, true, false, false]);
    }

    #[test]
    fn shared_channel_limit_spans_consumers_and_applies_at_once() {
        let limit = Arc::new(ChannelLimit::default());
        limit.set_limit(1);
        let mut q = QueueState::new("q", "/");
        q.add_consumer(consumer("a", 0, &limit)).unwrap();
        q.add_consumer(consumer("b", 0, &limit)).unwrap();
        for i in 0..6 {
            q.enqueue(msg(i)).unwrap();
        }
        assert_eq!(q.dispatch().deliveries.len(), 1);
        limit.set_limit(4);
        assert_eq!(q.dispatch().deliveries.len(), 3, "raising the limit releases 3 more");
    }

    #[test]
    fn exclusive_consumer_rules() {
        let limit = Arc::new(ChannelLimit::default());
        let mut q = QueueState::new("q", "/");
        q.add_consumer(consumer("a", 0, &limit)).unwrap();
        let mut ex = consumer("x", 0, &limit);
        ex.exclusive = true;
        let e = q.add_consumer(ex.clone()).unwrap_err();
        assert_eq!(e.text, "ACCESS_REFUSED - queue 'q' in vhost '/' in exclusive use");
        assert!(q.remove_consumer(1, 1, "a"));
        q.add_consumer(ex).unwrap();
        assert!(q.add_consumer(consumer("b", 0, &limit)).is_err());
    }

    #[test]
    fn channel_close_requeues_and_auto_delete_condition() {
        let limit = Arc::new(ChannelLimit::default());
        let mut q = QueueState::new("q", "/");
        assert!(!q.is_unused_after_consumers(), "never had a consumer");
        q.add_consumer(consumer("a", 0, &limit)).unwrap();
        q.enqueue(msg(7)).unwrap();
        let d = q.dispatch().deliveries;
        assert_eq!(q.unacked_count(), 1);
        q.channel_closed(1, 1, &[d[0].seq]);
        assert_eq!((q.ready_count(), q.unacked_count(), q.consumer_count()), (1, 0, 0));
        assert!(q.is_unused_after_consumers());
    }

    #[test]
    fn congested_writer_is_skipped_and_reported() {
        let limit = Arc::new(ChannelLimit::default());
        let mut q = QueueState::new("q", "/");
        let c = consumer("a", 0, &limit);
        c.gauge.add(crate::connection::flow::WRITER_HIGH_WATERMARK);
        q.add_consumer(c).unwrap();
        q.enqueue(msg(1)).unwrap();
        let d = q.dispatch();
        assert!(d.deliveries.is_empty());
        assert_eq!(d.congested.len(), 1);
    }
}
