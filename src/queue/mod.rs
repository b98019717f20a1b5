//! Queues. Each queue is an owner task ([`actor`]) holding a sans-IO [`state::QueueState`] and a
//! [`crate::store::MessageStore`]. Connections talk to it only through [`QueueCmd`]s on a bounded
//! mailbox (the one direction that may block: publishers are slowed when a queue falls behind);
//! the queue answers through unbounded connection inboxes ([`ConnEvent`]) whose size is bounded
//! by prefetch and the writer watermark, so it never waits on a consumer.

pub mod actor;
pub mod admission;
pub mod args;
pub mod dead_letter;
pub mod policy;
pub mod state;
pub mod stream_args;

use std::sync::Arc;

use amq_protocol::types::FieldTable;
use tokio::sync::{mpsc, oneshot};

use crate::connection::flow::{ChannelLimit, FlowGauge};
use crate::error::AmqpResult;
use crate::message::Message;

/// Commands a queue's mailbox holds at most; beyond that, publishers wait (backpressure).
pub const MAILBOX_CAPACITY: usize = 256;

/// A queue's registry entry: its declaration and its mailbox.
#[derive(Debug)]
pub struct QueueEntry {
    pub name: String,
    pub durable: bool,
    /// Connection id of the owner of an exclusive queue.
    pub exclusive_owner: Option<u64>,
    pub auto_delete: bool,
    pub arguments: FieldTable,
    /// The validated `x-` arguments.
    pub args: args::QueueArgs,
    pub handle: QueueHandle,
    /// A stream's native-protocol face (None for other queue types).
    pub stream: Option<crate::stream::handle::StreamHandle>,
}

/// The mailboxes of a queue task: a bounded one for publishes and requests (where publishers
/// wait when the queue falls behind) and an unbounded one for settlements, which the queue
/// takes first so acks are never stuck behind a publish burst. Settlements are bounded by
/// construction: there are never more than the deliveries awaiting them.
#[derive(Debug, Clone)]
pub struct QueueHandle {
    pub name: Arc<str>,
    pub tx: mpsc::Sender<QueueCmd>,
    pub ctl: mpsc::UnboundedSender<QueueCmd>,
    /// Publisher flow control: whether the queue admits more publishes now.
    pub admission: Arc<admission::Admission>,
    /// Bumped by the queue task whenever something happened (not by [`QueueHandle::info`]):
    /// the statistics sampler asks only queues whose count moved.
    pub activity: Arc<std::sync::atomic::AtomicU64>,
}

impl QueueHandle {
    /// The queue's state for the management API (None once it is deleted). On the control
    /// mailbox, and not counted as use for `x-expires`.
    pub async fn info(&self) -> Option<QueueInfo> {
        // (The reply counts as nothing happening: `activity` is unchanged by it.)
        let (reply, rx) = oneshot::channel();
        self.ctl.send(QueueCmd::Info { reply }).ok()?;
        rx.await.ok().flatten()
    }

    /// Send a command, waiting for room (downstream direction). A deleted queue's closed mailbox
    /// is ignored: the message or request simply has no queue any more.
    pub async fn send(&self, cmd: QueueCmd) {
        if matches!(cmd, QueueCmd::Settle { .. } | QueueCmd::Resume | QueueCmd::SetArgs(_)) {
            let _ = self.ctl.send(cmd);
        } else {
            let _ = self.tx.send(cmd).await;
        }
    }
}

/// Events a queue sends back to a connection.
pub type ConnInbox = mpsc::UnboundedSender<ConnEvent>;

/// Where to report the confirm of a published message.
#[derive(Debug, Clone)]
pub struct ConfirmTo {
    pub inbox: ConnInbox,
    pub channel: u16,
    pub seq: u64,
}

/// One message handed to a queue.
#[derive(Debug)]
pub struct Publish {
    pub msg: Arc<Message>,
    pub confirm: Option<ConfirmTo>,
}

/// A consumer as the queue sees it.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    pub conn_id: u64,
    pub channel: u16,
    pub tag: Arc<str>,
    pub no_ack: bool,
    pub exclusive: bool,
    /// Per-consumer prefetch (`basic.qos global=false` at consume time); 0 = unlimited.
    pub prefetch: u32,
    /// `x-priority` consumer argument: higher priorities are served first.
    pub priority: i64,
    /// The channel's shared limit (`basic.qos global=true`).
    pub channel_limit: Arc<ChannelLimit>,
    /// The consuming connection's pending output.
    pub gauge: Arc<FlowGauge>,
    pub inbox: ConnInbox,
}

/// How a delivery was settled by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ack,
    /// Back to its original position, redelivered=true.
    Requeue,
    /// reject/nack with requeue=false: dropped (dead-lettered once DLX exists).
    Reject,
}

/// A message taken by `basic.get`.
#[derive(Debug)]
pub struct GetReply {
    pub seq: u64,
    pub msg: Arc<Message>,
    pub redelivered: bool,
    /// Ready messages left after this one.
    pub remaining: u32,
}

/// Counts reported in `queue.declare-ok`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    pub messages: u32,
    pub consumers: u32,
}

/// What the management API shows of a queue (taken without counting as use for `x-expires`).
#[derive(Debug, Clone)]
pub struct QueueInfo {
    pub messages_ready: u32,
    pub messages_unacknowledged: u32,
    pub message_bytes_ready: u64,
    pub message_bytes_unacknowledged: u64,
    /// (connection id, channel, tag, ack required, exclusive, prefetch, priority)
    pub consumers: Vec<ConsumerSpec>,
    /// The settings in force (declared arguments with policies applied).
    pub effective: args::QueueArgs,
    pub single_active_consumer_tag: Option<String>,
    /// What happened in the queue since it started (publish, deliver, get, ack, …).
    pub counters: crate::stats::LocalCounters,
    /// Persistent messages and their body bytes.
    pub persistent: (u64, u64),
    /// Messages kept only on disk and their stored bytes.
    pub paged_out: (u64, u64),
    /// The head message's `timestamp` property (seconds).
    pub head_message_timestamp: Option<u64>,
    /// Since when the queue has done nothing (None: active within [`IDLE_AFTER`]).
    pub idle_since: Option<std::time::SystemTime>,
}

/// A queue that did nothing for this long shows as idle (`idle_since`).
pub const IDLE_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug)]
pub enum QueueCmd {
    Publish(Vec<Publish>),
    Consume {
        spec: ConsumerSpec,
        reply: oneshot::Sender<AmqpResult<()>>,
    },
    /// `basic.consume` on a stream: where its reader starts and which chunks it wants
    /// (`x-stream-offset`, `x-stream-filter`; checked by the channel).
    ConsumeStream {
        spec: ConsumerSpec,
        offset: crate::stream::log::OffsetSpec,
        filter: Option<crate::stream::log::ChunkFilter>,
        reply: oneshot::Sender<AmqpResult<()>>,
    },
    /// `basic.cancel`; `cancel-ok` goes back through the consumer's inbox, after every delivery
    /// the queue made to it.
    Cancel {
        conn_id: u64,
        channel: u16,
        tag: Arc<str>,
        reply: Option<ConnInbox>,
    },
    Settle {
        seqs: Vec<u64>,
        outcome: Outcome,
    },
    /// A channel closed: drop its consumers and requeue what it held.
    ChannelClosed {
        conn_id: u64,
        channel: u16,
        requeue: Vec<u64>,
    },
    Get {
        reply: oneshot::Sender<Option<GetReply>>,
        no_ack: bool,
    },
    /// Counts for declare-ok (a declare also counts as use for `x-expires`); `None` once the
    /// queue has been deleted (its name is then already free for a new declaration).
    Stats {
        reply: oneshot::Sender<Option<QueueStats>>,
    },
    /// Answered once every command sent before it has been applied (transaction commit).
    Sync {
        reply: oneshot::Sender<()>,
    },
    Purge {
        reply: oneshot::Sender<u32>,
    },
    /// Delete the queue (after the checks); replies with the ready count.
    /// The queue's state for the management API.
    Info {
        reply: oneshot::Sender<Option<QueueInfo>>,
    },
    /// New settings (a policy was applied, changed or cleared).
    SetArgs(Box<args::QueueArgs>),
    Delete {
        if_unused: bool,
        if_empty: bool,
        reply: oneshot::Sender<AmqpResult<u32>>,
    },
    /// Try dispatching again (a writer drained, or channel credit was freed).
    Resume,
}

impl QueueCmd {
    /// Messages this command publishes and their body bytes (for the queue's round budget).
    pub fn published(&self) -> (usize, u64) {
        match self {
            QueueCmd::Publish(items) => (items.len(), items.iter().map(|p| p.msg.body_size).sum()),
            _ => (0, 0),
        }
    }
}

/// What a queue sends to a connection.
#[derive(Debug)]
pub enum ConnEvent {
    /// The management API asks for the connection's channels.
    DescribeChannels {
        reply: oneshot::Sender<Vec<crate::broker::connections::ChannelSummary>>,
    },
    Deliver {
        channel: u16,
        consumer_tag: Arc<str>,
        /// The queue, for the ack; None for a no-ack consumer.
        queue: Option<QueueHandle>,
        seq: u64,
        msg: Arc<Message>,
        redelivered: bool,
    },
    Confirms {
        channel: u16,
        seqs: Vec<u64>,
        ack: bool,
    },
    CancelOk {
        channel: u16,
        consumer_tag: Arc<str>,
    },
    /// The queue was deleted under this consumer (server-sent basic.cancel).
    ConsumerCancelled {
        channel: u16,
        consumer_tag: Arc<str>,
    },
    /// A delivery on this channel waited longer than the consumer ack timeout.
    ConsumerTimeout {
        channel: u16,
        timeout_ms: u64,
    },
    /// A reply through direct reply-to (`amq.rabbitmq.reply-to`) for this channel's reply consumer.
    DirectReply {
        channel: u16,
        msg: Arc<Message>,
    },
}
