//! An AMQP 0-9-1 consumer of a stream: its own task, a [`Reader`] over the stream's files. While
//! it has credit (its prefetch, given back by acks) it reads the next whole chunk and delivers
//! every record in it at or after its start offset, each converted back to the AMQP 0-9-1
//! message it was published as, with the `x-stream-offset` header (RabbitMQ: a consumer may
//! get more than its prefetch when chunks are large; credit then goes negative).
//!
//! Delivery tags map back to the consumer through the queue's `seq`: the consumer's key in
//! the top bits ([`key_of`]), its own delivery count below.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use amq_protocol::types::AMQPValue;
use bytes::Bytes;
use tokio::sync::{Notify, oneshot};
use tracing::{debug, warn};

use super::log::{Chunk, EntryRef, Reader, chunk};
use crate::message::Message;
use crate::protocol::routing_key::RoutingKey;
use crate::queue::{ConnEvent, ConnInbox, ConsumerSpec, QueueHandle};

/// Bits of a delivery's `seq` below the consumer key.
const KEY_SHIFT: u32 = 40;
/// Consumer keys wrap at this mask (24 bits).
pub const MAX_KEY: u32 = (1 << 24) - 1;

/// The consumer a delivery's `seq` belongs to.
pub fn key_of(seq: u64) -> u32 {
    (seq >> KEY_SHIFT) as u32
}

/// Why a consumer stops.
#[derive(Debug)]
pub enum Stop {
    /// `basic.cancel`: cancel-ok (to this inbox, unless nowait) after the last delivery.
    Cancel(Option<ConnInbox>),
    /// The stream was deleted: the client gets `basic.cancel`.
    Deleted,
    /// Its channel or connection closed: nothing to say.
    Closed,
}

/// Deliveries a consumer may still make (may go negative: whole chunks are delivered).
#[derive(Debug)]
pub struct Credit {
    n: AtomicI64,
    more: Notify,
}

impl Credit {
    pub fn new(n: i64) -> Credit {
        Credit { n: AtomicI64::new(n), more: Notify::new() }
    }

    pub fn add(&self, n: i64) {
        if self.n.fetch_add(n, Ordering::AcqRel) + n > 0 {
            self.more.notify_one();
        }
    }

    fn take(&self, n: i64) {
        self.n.fetch_sub(n, Ordering::AcqRel);
    }

    fn available(&self) -> bool {
        self.n.load(Ordering::Acquire) > 0
    }
}

pub struct Consumer {
    pub reader: Reader,
    /// Records below this offset are skipped (the reader starts at their chunk).
    pub start: u64,
    pub stream: Arc<str>,
    pub spec: ConsumerSpec,
    pub key: u32,
    pub credit: Arc<Credit>,
    pub stop: oneshot::Receiver<Stop>,
    /// The stream's mailbox, carried by each delivery for its ack.
    pub queue: QueueHandle,
    /// The stream's delivery count.
    pub delivered: Arc<AtomicU64>,
}

pub fn spawn(c: Consumer) {
    tokio::spawn(c.run());
}

impl Consumer {
    async fn run(mut self) {
        let mut count: u64 = 0;
        let mut warned = false;
        let stop = loop {
            if let Ok(stop) = self.stop.try_recv() {
                break stop;
            }
            if self.credit.available() {
                match self.reader.read_chunk() {
                    Ok(Some(chunk)) => {
                        if !self.deliver(&chunk, &mut count, &mut warned) {
                            break Stop::Closed;
                        }
                        // A consumer whose acks keep its credit up would otherwise never
                        // give its worker thread back.
                        tokio::task::consume_budget().await;
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        warn!(stream = %self.stream, tag = %self.spec.tag, error = %e, "stream consumer cannot read; cancelled");
                        break Stop::Deleted;
                    }
                }
            }
            let credit = &self.credit;
            let more = credit.more.notified();
            tokio::select! {
                stop = &mut self.stop => break stop.unwrap_or(Stop::Closed),
                _ = more, if !credit.available() => {}
                open = self.reader.wait(), if credit.available() => if !open {
                    break Stop::Closed;
                },
            }
        };
        let (channel, consumer_tag) = (self.spec.channel, self.spec.tag.clone());
        match stop {
            Stop::Cancel(Some(inbox)) => {
                let _ = inbox.send(ConnEvent::CancelOk { channel, consumer_tag });
            }
            Stop::Deleted => {
                let _ = self.spec.inbox.send(ConnEvent::ConsumerCancelled { channel, consumer_tag });
            }
            Stop::Cancel(None) | Stop::Closed => {}
        }
    }

    /// Deliver a chunk's records from the start offset on; false when the connection is gone.
    fn deliver(&mut self, chunk: &Chunk, count: &mut u64, warned: &mut bool) -> bool {
        let mut offset = chunk.header.chunk_id;
        let data = chunk.bytes.slice(chunk.header.data_start() as usize..chunk.header.trailer_start() as usize);
        let mut sent = 0i64;
        for entry in chunk::entries(&data) {
            let Ok(entry) = entry else {
                warn!(stream = %self.stream, chunk = chunk.header.chunk_id, "malformed entry in a stream chunk; rest of the chunk skipped");
                break;
            };
            match entry {
                EntryRef::Simple(rec) => {
                    if !self.offer(&data, rec, offset, count, &mut sent) {
                        return false;
                    }
                    offset += 1;
                }
                EntryRef::SubBatch { compression: 0, records, data: batch, .. } => {
                    let mut at = 0usize;
                    for _ in 0..records {
                        let Some(rec) = sub_record(batch, &mut at) else { break };
                        if !self.offer(&data, rec, offset, count, &mut sent) {
                            return false;
                        }
                        offset += 1;
                    }
                }
                EntryRef::SubBatch { records, compression, .. } => {
                    // Compressed by a stream client: AMQP 0-9-1 consumers cannot read it (said
                    // once per consumer).
                    if !std::mem::replace(warned, true) {
                        warn!(stream = %self.stream, tag = %self.spec.tag, compression, "compressed sub-batches are skipped for AMQP 0-9-1 consumers");
                    }
                    offset += records as u64;
                }
            }
        }
        self.credit.take(sent);
        self.delivered.fetch_add(sent as u64, Ordering::Relaxed);
        true
    }

    /// Deliver the record at `offset` (a slice of the chunk's `data`) unless it lies below the
    /// start offset; false when the connection is gone.
    fn offer(&self, data: &Bytes, rec: &[u8], offset: u64, count: &mut u64, sent: &mut i64) -> bool {
        if offset < self.start {
            return true;
        }
        *sent += 1;
        self.deliver_record(&data.slice_ref(rec), offset, count)
    }

    fn deliver_record(&self, rec: &Bytes, offset: u64, count: &mut u64) -> bool {
        let m = match super::amqp10::convert::to_amqp091(rec, &self.stream) {
            Ok(m) => m,
            Err(e) => {
                // Written by a stream client that sent raw bytes: delivered as they are (a
                // warning per record would let one client flood the log).
                debug!(stream = %self.stream, offset, error = %e, "stream record is not an AMQP 1.0 message; delivered raw");
                super::amqp10::convert::Amqp091 {
                    exchange: Default::default(),
                    routing_key: Bytes::copy_from_slice(self.stream.as_bytes()),
                    properties: Default::default(),
                    body: std::iter::once(rec.clone()).collect(),
                }
            }
        };
        let mut headers = m.properties.headers().clone().unwrap_or_default();
        headers.insert("x-stream-offset".into(), AMQPValue::LongLongInt(offset as i64));
        let properties = m.properties.with_headers(headers);
        let msg = Message::build(m.exchange, RoutingKey::from_wire(m.routing_key), properties, m.body);
        *count += 1;
        let seq = ((self.key as u64) << KEY_SHIFT) | (*count & ((1 << KEY_SHIFT) - 1));
        self.spec
            .inbox
            .send(ConnEvent::Deliver {
                channel: self.spec.channel,
                consumer_tag: self.spec.tag.clone(),
                queue: Some(self.queue.clone()),
                seq,
                msg: Arc::new(msg),
                redelivered: false,
            })
            .is_ok()
    }
}

/// The next record of an uncompressed sub-batch (`u32` size, then the record).
fn sub_record<'a>(batch: &'a [u8], at: &mut usize) -> Option<&'a [u8]> {
    let size = u32::from_be_bytes(batch.get(*at..*at + 4)?.try_into().ok()?) as usize;
    let rec = batch.get(*at + 4..(*at + 4).checked_add(size)?)?;
    *at += 4 + size;
    Some(rec)
}
