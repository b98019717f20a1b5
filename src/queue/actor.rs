//! The queue task: the only owner of a queue's [`QueueState`]. It drains its mailbox in
//! batches, applies each command, then runs one dispatch round and sends the resulting
//! deliveries to the consumers' connections. It never awaits anything but its own mailbox.

use std::sync::{Arc, Weak};

use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::state::{Delivery, QueueState};
use super::{ConnEvent, ConnInbox, MAILBOX_CAPACITY, Publish, QueueCmd, QueueHandle, QueueStats};
use crate::broker::vhost::VHost;
use crate::error::AmqpError;

/// Commands taken from the mailbox per round before dispatching.
///
/// Batching amortises the dispatch pass over many publishes; 64 keeps a round short enough
/// that acks and consumes are not stuck behind a long publish burst.
const BATCH: usize = 64;

/// Start a queue task and return its mailbox.
pub fn spawn(name: &str, vhost: &Arc<VHost>, auto_delete: bool) -> QueueHandle {
    let (tx, rx) = mpsc::channel(MAILBOX_CAPACITY);
    let handle = QueueHandle { name: name.into(), tx: tx.clone() };
    let actor = QueueActor {
        state: QueueState::new(name, vhost.name()),
        name: name.to_string(),
        vhost_name: vhost.name().to_string(),
        vhost: Arc::downgrade(vhost),
        me: tx.downgrade(),
        handle: handle.clone(),
        auto_delete,
        deleted: false,
    };
    tokio::spawn(actor.run(rx));
    handle
}

struct QueueActor {
    state: QueueState,
    name: String,
    vhost_name: String,
    vhost: Weak<VHost>,
    /// Our own mailbox, weakly: the task ends when every real sender is gone.
    me: mpsc::WeakSender<QueueCmd>,
    handle: QueueHandle,
    auto_delete: bool,
    /// Set once the queue is deleted; it then only drains its mailbox.
    deleted: bool,
}

impl QueueActor {
    async fn run(mut self, mut rx: mpsc::Receiver<QueueCmd>) {
        // The handle we hand out in deliveries must not keep the mailbox open forever.
        let mut buf = Vec::with_capacity(BATCH);
        loop {
            if rx.recv_many(&mut buf, BATCH).await == 0 {
                break;
            }
            for cmd in buf.drain(..) {
                self.handle(cmd);
            }
            if !self.deleted {
                self.dispatch();
            }
        }
        debug!(queue = %self.name, "queue task stopped");
    }

    fn handle(&mut self, cmd: QueueCmd) {
        match cmd {
            QueueCmd::Publish(items) => self.publish(items),
            QueueCmd::Consume { spec, reply } => {
                let r = if self.deleted {
                    Err(AmqpError::not_found(format_args!("no queue '{}' in vhost '{}'", self.name, self.vhost_name)))
                } else {
                    self.state.add_consumer(spec)
                };
                let _ = reply.send(r);
            }
            QueueCmd::Cancel { conn_id, channel, tag, reply } => {
                self.state.remove_consumer(conn_id, channel, &tag);
                if let Some(inbox) = reply {
                    let _ = inbox.send(ConnEvent::CancelOk { channel, consumer_tag: tag });
                }
                self.maybe_auto_delete();
            }
            QueueCmd::Settle { seqs, outcome } => self.state.settle(&seqs, outcome),
            QueueCmd::ChannelClosed { conn_id, channel, requeue } => {
                self.state.channel_closed(conn_id, channel, &requeue);
                self.maybe_auto_delete();
            }
            QueueCmd::Get { reply, no_ack } => {
                let _ = reply.send(if self.deleted { None } else { self.state.get(no_ack) });
            }
            QueueCmd::Stats { reply } => {
                let _ = reply
                    .send(QueueStats { messages: self.state.ready_count(), consumers: self.state.consumer_count() });
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
        }
    }

    fn publish(&mut self, items: Vec<Publish>) {
        // Confirms grouped per (connection, channel): one event each.
        let mut confirms: Vec<(ConnInbox, u16, Vec<u64>)> = Vec::new();
        for p in items {
            if !self.deleted
                && let Err(e) = self.state.enqueue(p.msg)
            {
                // Not stored: the publisher must not be told it was (no confirm).
                warn!(queue = %self.name, error = %e, "message not stored");
                continue;
            }
            if let Some(c) = p.confirm {
                match confirms.iter_mut().find(|(i, ch, _)| *ch == c.channel && i.same_channel(&c.inbox)) {
                    Some((_, _, seqs)) => seqs.push(c.seq),
                    None => confirms.push((c.inbox, c.channel, vec![c.seq])),
                }
            }
        }
        for (inbox, channel, seqs) in confirms {
            let _ = inbox.send(ConnEvent::Confirms { channel, seqs, ack: true });
        }
    }

    fn dispatch(&mut self) {
        loop {
            let round = self.state.dispatch();
            for d in round.deliveries {
                self.deliver(d);
            }
            if round.congested.is_empty() {
                return;
            }
            let Some(me) = self.me.upgrade() else { return };
            // Register with every congested writer (no short-circuit); if one drained meanwhile, go again.
            let mut still = true;
            for c in &round.congested {
                still &= c.gauge.wait(&me);
            }
            if still {
                return;
            }
        }
    }

    fn deliver(&mut self, d: Delivery) {
        let Delivery { consumer, seq, msg, redelivered } = d;
        let ev = ConnEvent::Deliver {
            channel: consumer.channel,
            consumer_tag: consumer.tag.clone(),
            queue: self.handle.clone(),
            seq,
            msg,
            redelivered,
            no_ack: consumer.no_ack,
        };
        if let Err(mpsc::error::SendError(ev)) = consumer.inbox.send(ev) {
            // The connection is gone: take the consumer off and keep the message.
            self.state.remove_consumer(consumer.conn_id, consumer.channel, &consumer.tag);
            if let ConnEvent::Deliver { seq, .. } = ev {
                self.state.undeliverable(seq);
            }
            self.maybe_auto_delete();
        }
    }

    fn maybe_auto_delete(&mut self) {
        if self.auto_delete && !self.deleted && self.state.is_unused_after_consumers() {
            if let Some(vhost) = self.vhost.upgrade() {
                vhost.forget_queue(&self.name, &self.handle);
            }
            self.delete();
        }
    }

    fn delete(&mut self) {
        for c in self.state.consumers() {
            let _ = c.inbox.send(ConnEvent::ConsumerCancelled { channel: c.channel, consumer_tag: c.tag.clone() });
        }
        self.state.clear();
        self.deleted = true;
        debug!(queue = %self.name, vhost = %self.vhost_name, "queue deleted");
    }
}
