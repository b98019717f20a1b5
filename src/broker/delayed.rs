//! Delayed delivery for `x-delayed-message` exchanges (compatible with RabbitMQ's
//! delayed-message plugin): a message published with an `x-delay` header (milliseconds) is
//! held here and routed through its exchange when the delay has passed.
//!
//! One scheduler task per vhost, started on first use, keeps the held messages in a heap by
//! due time. Routing uses the topology snapshot current at that moment (bindings made during
//! the delay count; a deleted exchange drops the message, as the plugin does).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Weak};

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::debug;

use super::vhost::VHost;
use crate::message::Message;
use crate::queue::{Publish, QueueCmd};

/// A message waiting for its time.
#[derive(Debug)]
pub struct Delayed {
    pub due: Instant,
    pub exchange: String,
    pub msg: Arc<Message>,
}

struct Entry(Reverse<(Instant, u64)>, Delayed);

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

/// Start the scheduler for `vhost`; returns where to send delayed messages.
pub fn spawn(vhost: Weak<VHost>) -> mpsc::UnboundedSender<Delayed> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Delayed>();
    tokio::spawn(async move {
        let mut heap: BinaryHeap<Entry> = BinaryHeap::new();
        let mut n = 0u64;
        loop {
            let next = heap.peek().map(|e| (e.0).0.0);
            tokio::select! {
                got = rx.recv() => match got {
                    Some(d) => {
                        n += 1;
                        heap.push(Entry(Reverse((d.due, n)), d));
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                    let now = Instant::now();
                    let Some(vhost) = vhost.upgrade() else { break };
                    let topology = vhost.snapshot();
                    while heap.peek().is_some_and(|e| (e.0).0.0 <= now) {
                        let Some(Entry(_, d)) = heap.pop() else { break };
                        let headers = d.msg.properties.headers().clone();
                        let queues = topology.route(&d.exchange, &d.msg.routing_key, headers.as_ref());
                        debug!(exchange = %d.exchange, queues = queues.len(), "delayed message due");
                        for q in queues {
                            let cmd = QueueCmd::Publish(vec![Publish { msg: d.msg.clone(), confirm: None }]);
                            if let Err(mpsc::error::TrySendError::Full(cmd)) = q.handle.tx.try_send(cmd) {
                                let h = q.handle.clone();
                                tokio::spawn(async move { h.send(cmd).await });
                            }
                        }
                    }
                }
            }
        }
    });
    tx
}
