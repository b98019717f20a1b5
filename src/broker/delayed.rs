//! Delayed delivery for `x-delayed-message` exchanges (compatible with RabbitMQ's
//! delayed-message plugin): a message published with an `x-delay` header (milliseconds) is
//! held here and routed through its exchange when the delay has passed.
//!
//! One scheduler task per vhost keeps the held messages in a heap by due time. With durable
//! storage they are also written to the vhost's `delayed/` segment store (whatever their
//! delivery mode, as the plugin does) and confirmed to the publisher once synced, so delays
//! survive a restart: the due time is recomputed from the enqueue time and `x-delay`.
//! Routing uses the topology snapshot current when the message is due (a deleted exchange
//! drops the message, as the plugin does).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::vhost::VHost;
use crate::message::Message;
use crate::protocol::methods::{value_int, value_str};
use crate::queue::{ConfirmTo, ConnEvent, Publish, QueueCmd};
use crate::store::persister::{PendingConfirms, SyncRequest};
use crate::store::segment::SegmentStore;
use crate::store::{MessageStore, StorageSettings};

/// A message waiting for its time.
#[derive(Debug)]
pub struct Delayed {
    pub due: Instant,
    /// Routed through `msg.exchange` when due.
    pub msg: Arc<Message>,
    /// The publisher's confirm, sent once the message is stored.
    pub confirm: Option<ConfirmTo>,
}

/// Heap entry: earliest due first, then arrival order.
struct Entry(Reverse<(Instant, u64)>, Arc<Message>);

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        self.0 == o.0
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.cmp(&o.0)
    }
}

/// The `x-delay` of a message, in milliseconds (only a positive delay holds it).
pub fn delay_of(msg: &Message) -> Option<Duration> {
    let v = msg.headers()?.inner().get("x-delay")?;
    let ms = value_int(v).or_else(|| value_str(v).and_then(|s| s.trim().parse().ok()))?;
    // Capped at ten years (RabbitMQ's TTL ceiling) so no header can overflow a deadline.
    (ms > 0).then(|| Duration::from_millis((ms as u64).min(crate::queue::args::MAX_TTL_MS as u64)))
}

struct Scheduler {
    vhost: Weak<VHost>,
    heap: BinaryHeap<Entry>,
    next_seq: u64,
    store: Option<SegmentStore>,
    storage: Option<StorageSettings>,
}

/// Start the scheduler for `vhost`, recovering held messages from `storage`; returns where to
/// send delayed messages.
pub fn spawn(vhost: Weak<VHost>, storage: Option<StorageSettings>) -> mpsc::UnboundedSender<Delayed> {
    let (tx, rx) = mpsc::unbounded_channel::<Delayed>();
    let mut s = Scheduler { vhost, heap: BinaryHeap::new(), next_seq: 1, store: None, storage };
    s.recover();
    tokio::spawn(s.run(rx));
    tx
}

impl Scheduler {
    fn recover(&mut self) {
        let Some(settings) = &self.storage else { return };
        let (mut store, recovered) = match SegmentStore::open(&settings.dir.join("delayed"), settings.segment_size) {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "cannot open the delayed-message store; delayed messages will not survive a restart");
                return;
            }
        };
        store.persist_all();
        let now_wall = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let now = Instant::now();
        for r in recovered {
            let Some(msg) = store.read(r.seq) else { continue };
            let delay = delay_of(&msg).unwrap_or_default();
            let waited = Duration::from_millis(now_wall.saturating_sub(r.enqueued_at_ms));
            self.heap.push(Entry(Reverse((now + delay.saturating_sub(waited), r.seq)), msg));
            self.next_seq = self.next_seq.max(r.seq.saturating_add(1));
        }
        self.store = Some(store);
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Delayed>) {
        let mut batch = Vec::new();
        loop {
            let next = self.heap.peek().map(|e| (e.0).0.0);
            tokio::select! {
                n = rx.recv_many(&mut batch, 256) => {
                    if n == 0 {
                        break;
                    }
                    self.hold(&mut batch);
                }
                _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => self.release_due(),
            }
        }
    }

    /// Store newly delayed messages; confirms go out once they are on disk.
    fn hold(&mut self, batch: &mut Vec<Delayed>) {
        let mut confirms: Vec<ConfirmTo> = Vec::new();
        for d in batch.drain(..) {
            let seq = self.next_seq;
            self.next_seq += 1;
            if let Some(store) = self.store.as_mut()
                && let Err(e) = store.append(seq, &d.msg)
            {
                warn!(error = %e, "cannot store a delayed message");
                if let Some(c) = d.confirm {
                    let _ = c.inbox.send(ConnEvent::Confirms { channel: c.channel, seqs: vec![c.seq], ack: false });
                }
                continue;
            }
            self.heap.push(Entry(Reverse((d.due, seq)), d.msg));
            confirms.extend(d.confirm);
        }
        let pending: Vec<PendingConfirms> = confirms
            .into_iter()
            .map(|c| PendingConfirms { inbox: c.inbox, channel: c.channel, seqs: vec![c.seq] })
            .collect();
        let files = self.store.as_mut().and_then(|s| s.flush().ok().flatten());
        match (files, self.storage.as_ref().filter(|s| s.fsync)) {
            (Some(files), Some(s)) if !pending.is_empty() => {
                s.persister.submit(SyncRequest { files, confirms: pending })
            }
            _ => {
                for c in pending {
                    let _ = c.inbox.send(ConnEvent::Confirms { channel: c.channel, seqs: c.seqs, ack: true });
                }
            }
        }
    }

    /// Route every message whose time has come.
    fn release_due(&mut self) {
        let now = Instant::now();
        let Some(vhost) = self.vhost.upgrade() else { return };
        let topology = vhost.snapshot();
        while self.heap.peek().is_some_and(|e| (e.0).0.0 <= now) {
            let Some(Entry(Reverse((_, seq)), msg)) = self.heap.pop() else { break };
            let queues = topology.route(&msg.exchange, &msg.routing_key, msg.headers());
            debug!(exchange = %msg.exchange, queues = queues.len(), "delayed message due");
            for q in queues {
                let cmd = QueueCmd::Publish(vec![Publish { msg: msg.clone(), confirm: None }]);
                if let Err(mpsc::error::TrySendError::Full(cmd)) = q.handle.tx.try_send(cmd) {
                    let h = q.handle.clone();
                    tokio::spawn(async move { h.send(cmd).await });
                }
            }
            if let Some(store) = self.store.as_mut() {
                store.remove(seq);
            }
        }
        if let Some(store) = self.store.as_mut() {
            let _ = store.flush();
        }
    }
}
