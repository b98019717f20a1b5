//! Per-channel state, owned by the connection task: the publish being assembled, publisher
//! confirms, deliveries awaiting acks, consumers, and prefetch settings. The pieces with rules
//! ([`assembler`], [`confirms`], [`unacked`]) are pure and tested without sockets; the
//! connection's method handlers ([`crate::connection::methods`]) drive them.

pub mod assembler;
pub mod confirms;
pub mod unacked;

use std::collections::HashMap;
use std::sync::Arc;

use crate::connection::flow::ChannelLimit;
use crate::queue::QueueHandle;
use assembler::Assembler;
use confirms::Confirms;
use unacked::Unacked;

/// Lifecycle of an open channel number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelPhase {
    Open,
    /// The broker sent `channel.close`: every frame is dropped until `close-ok` (or a crossing
    /// `channel.close`, answered with `close-ok`).
    Closing,
}

#[derive(Debug)]
pub struct Channel {
    pub id: u16,
    pub phase: ChannelPhase,
    pub assembler: Assembler,
    /// Some once `confirm.select` was received.
    pub confirms: Option<Confirms>,
    pub unacked: Unacked,
    /// Consumer tag → the queue it consumes from.
    pub consumers: HashMap<Arc<str>, QueueHandle, foldhash::fast::RandomState>,
    /// Consumers being cancelled by the client: tag → whether it asked for no reply (nowait).
    pub cancelling: HashMap<Arc<str>, bool, foldhash::fast::RandomState>,
    /// `basic.qos global=false`: prefetch given to consumers created from now on.
    pub consumer_prefetch: u32,
    /// `basic.qos global=true`: shared by every consumer on the channel.
    pub limit: Arc<ChannelLimit>,
    /// The last queue declared on this channel (empty queue names refer to it).
    pub last_queue: Option<String>,
    /// The direct reply-to consumer (`amq.rabbitmq.reply-to`), if any.
    pub reply_consumer: Option<ReplyConsumer>,
    /// Some once `tx.select` was received: the work held until `tx.commit`.
    pub tx: Option<TxBuffer>,
    /// What happened on this channel (RabbitMQ's channel `message_stats`); allocated at the
    /// first count, so idle channels pay one pointer (see [`Channel::stats`]).
    counts: Option<Box<crate::stats::LocalCounters>>,
}

/// This channel's consumer of `amq.rabbitmq.reply-to`.
#[derive(Debug, Clone)]
pub struct ReplyConsumer {
    pub tag: Arc<str>,
    /// The name responders publish to (`amq.rabbitmq.reply-to.<unique>`).
    pub name: String,
}

/// A transaction in progress.
#[derive(Debug, Default)]
pub struct TxBuffer {
    /// Validated messages to route at commit, with their mandatory flag.
    pub publishes: Vec<(Arc<crate::message::Message>, bool)>,
    /// Body bytes of `publishes` (bounded by `amqp.transaction_max_bytes`).
    pub bytes: u64,
    /// Settlements to apply at commit (taken out of `unacked`; put back on rollback).
    pub settles: Vec<(Vec<(u64, unacked::Pending)>, crate::queue::Outcome)>,
}

impl Channel {
    /// The channel's counters, for counting.
    pub fn stats(&mut self) -> &mut crate::stats::LocalCounters {
        self.counts.get_or_insert_with(Default::default)
    }

    /// The channel's counters so far.
    pub fn counters(&self) -> crate::stats::LocalCounters {
        self.counts.as_deref().copied().unwrap_or_default()
    }

    pub fn new(id: u16) -> Self {
        Channel {
            id,
            phase: ChannelPhase::Open,
            assembler: Assembler::default(),
            confirms: None,
            unacked: Unacked::default(),
            consumers: HashMap::default(),
            cancelling: HashMap::default(),
            consumer_prefetch: 0,
            limit: Arc::new(ChannelLimit::default()),
            last_queue: None,
            reply_consumer: None,
            tx: None,
            counts: None,
        }
    }

    /// Queues with a consumer of this channel (to wake when channel credit frees up).
    pub fn consumer_queues(&self) -> Vec<QueueHandle> {
        let mut out: Vec<QueueHandle> = Vec::new();
        for c in self.consumers.values() {
            if !out.iter().any(|q| q.tx.same_channel(&c.tx)) {
                out.push(c.clone());
            }
        }
        out
    }
}
