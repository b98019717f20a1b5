//! A stream-protocol consumer: one connection, one subscription, with credit handled as the
//! stream clients do: an initial credit of `--credit` chunks (10 by default) and one more
//! chunk for each chunk received (the Credit frames of one read go out in one write).
//!
//! Every delivered chunk is checked, so the run measures real work: its CRC, entry and record
//! counts (`warren::stream::log::chunk`), offsets that only go forward from one
//! chunk to the next (a gap is counted, an overlap fails the run), and each message's AMQP 1.0
//! body size when the run knows it. Records are what is counted; the latency is taken from the
//! first message of each chunk.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::watch;
use warren::stream::log::chunk::{self, ChunkType, EntryRef};

use crate::conn::fill;
use crate::error::{Error, Result};
use crate::stats::{Counters, now_nanos};
use crate::stream_conn::{self, READ_MAX, StreamConn};
use crate::stream_crc::crc32;
use crate::stream_wire::{self as sw, Frame, StreamOffset, key, response};
use crate::uri::AmqpUri;
use crate::wire::body_stamp;

/// The subscription id the tool uses.
const SUBSCRIPTION: u8 = 0;

#[derive(Debug, Clone)]
pub struct StreamConsumerCfg {
    pub stream: String,
    pub offset: StreamOffset,
    /// Initial credit, in chunks.
    pub credit: u16,
    /// The body size every message must have (None: not checked).
    pub body_size: Option<usize>,
    /// Replay: the stream holds this many records; after reading them all, unsubscribe and
    /// read it again from `offset` (until the run stops).
    pub replay: Option<u64>,
}

pub struct StreamConsumer {
    conn: StreamConn,
    cfg: StreamConsumerCfg,
}

/// What one delivered chunk held.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Records counted (at or after the subscription's start).
    pub records: u64,
    /// The send time in the first counted message.
    pub stamp: Option<u64>,
    /// The chunk did not start where the previous one ended.
    pub gap: bool,
}

/// The checks across a subscription's chunks.
#[derive(Debug)]
pub struct ChunkCheck {
    /// The offset after the last chunk seen.
    next: Option<u64>,
    /// Records below this offset (in the first chunk) are not counted.
    floor: u64,
    body_size: Option<usize>,
}

impl ChunkCheck {
    pub fn new(cfg: &StreamConsumerCfg) -> ChunkCheck {
        ChunkCheck { next: None, floor: cfg.offset.floor(), body_size: cfg.body_size }
    }

    /// Check a Deliver frame's body (after key and version) and count its records.
    pub fn deliver(&mut self, version: u16, body: &[u8]) -> Result<Delivered> {
        // v1: subscription id, chunk; v2 puts the committed chunk id before the chunk.
        let skip = if version >= 2 { 9 } else { 1 };
        let bytes = body.get(skip..).ok_or_else(|| Error::Protocol("truncated Deliver".into()))?;
        // A Deliver carries the header, the bloom filter and the data; the trailer (writer
        // tracking) stays on the broker, as RabbitMQ's does.
        let fail = |e: chunk::ChunkError| Error::Protocol(format!("a delivered chunk: {e}"));
        let h = chunk::ChunkHeader::parse(bytes).map_err(fail)?;
        let data = bytes
            .get(h.data_start() as usize..h.trailer_start() as usize)
            .ok_or_else(|| fail(chunk::ChunkError::Truncated))?;
        let crc = crc32(data);
        if crc != h.crc {
            return Err(fail(chunk::ChunkError::Crc { expected: h.crc, actual: crc }));
        }
        let mut out = Delivered::default();
        if let Some(next) = self.next {
            if h.chunk_id < next {
                return Err(Error::Protocol(format!(
                    "chunk at offset {} delivered after the one ending before {next}: offsets went back",
                    h.chunk_id
                )));
            }
            out.gap = h.chunk_id > next;
        }
        self.next = Some(h.next_offset());
        // One walk over the entries: their counts against the header, and the messages.
        let user = h.chunk_type == ChunkType::User;
        let (mut entries, mut offset) = (0u32, h.chunk_id);
        for e in chunk::entries(data) {
            let e = e.map_err(fail)?;
            let n = e.records() as u64;
            entries += 1;
            if user && offset + n > self.floor {
                match e {
                    EntryRef::Simple(m) => {
                        let body = sw::message_body(m).ok_or_else(|| {
                            Error::Protocol(format!("the message at offset {offset} has no AMQP 1.0 data section"))
                        })?;
                        if let Some(size) = self.body_size
                            && body.len() != size
                        {
                            return Err(Error::Protocol(format!(
                                "the message at offset {offset} has a body of {} octets, not {size}",
                                body.len()
                            )));
                        }
                        if out.stamp.is_none() {
                            out.stamp = body_stamp(body);
                        }
                        out.records += 1;
                    }
                    EntryRef::SubBatch { .. } => out.records += offset + n - self.floor.max(offset),
                }
            }
            offset += n;
        }
        if entries != h.num_entries as u32 || offset != h.next_offset() {
            return Err(fail(chunk::ChunkError::Entries("entry or record count differs from the header")));
        }
        Ok(out)
    }
}

/// Room the consumer keeps for one read: chunks are often larger than [`fill`]'s step.
const READ_ROOM: usize = 1 << 20;

/// Read more into `buf` with at least [`READ_ROOM`] free (fewer system calls per chunk).
async fn fill_large(rd: &mut OwnedReadHalf, buf: &mut BytesMut) -> Result<()> {
    if buf.capacity() - buf.len() < READ_ROOM / 4 {
        buf.reserve(READ_ROOM);
    }
    fill(rd, buf).await
}

impl StreamConsumer {
    /// Connect; the subscription starts when the consumer runs (inside the measurement).
    pub async fn connect(uri: &AmqpUri, name: &str, cfg: StreamConsumerCfg) -> Result<StreamConsumer> {
        Ok(StreamConsumer { conn: StreamConn::open(uri, name).await?, cfg })
    }

    /// Subscribe, consume until `stop`, then close the connection.
    pub async fn run(self, counters: Arc<Counters>, mut stop: watch::Receiver<bool>) -> Result<()> {
        let StreamConsumer { conn, cfg } = self;
        let mut parts = conn.into_parts();
        let mut check = ChunkCheck::new(&cfg);
        let mut out = BytesMut::with_capacity(1024);
        let mut latencies: Vec<u64> = Vec::with_capacity(64);
        // Records of the current pass over the stream, and the Unsubscribe answer awaited
        // between passes (a chunk then would be past the end of the stream).
        let mut pass = 0u64;
        let mut ending: Option<u32> = None;
        let mut correlation = parts.correlation;
        let subscribe = |out: &mut BytesMut, correlation: &mut u32| {
            sw::put_subscribe(out, *correlation, SUBSCRIPTION, &cfg.stream, cfg.offset, cfg.credit);
            *correlation += 1;
        };
        subscribe(&mut out, &mut correlation);
        parts.wr.write_all(&out).await?;
        out.clear();
        while !*stop.borrow() {
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                r = fill_large(&mut parts.rd, &mut parts.rbuf) => r?,
            }
            let arrived = now_nanos();
            let (mut records, mut chunks, mut gaps) = (0u64, 0u64, 0u64);
            while let Some(total) = sw::peek(&mut parts.rbuf, READ_MAX)? {
                let f = Frame::at(&parts.rbuf, total);
                match f.key {
                    key::DELIVER => {
                        if ending.is_some() {
                            return Err(Error::Protocol(format!(
                                "a chunk past the end of stream {} (after all {pass} records of the pass)",
                                cfg.stream
                            )));
                        }
                        let d = check.deliver(f.version, f.body.rest())?;
                        records += d.records;
                        pass += d.records;
                        chunks += 1;
                        gaps += u64::from(d.gap);
                        if let Some(s) = d.stamp {
                            latencies.push(arrived.saturating_sub(s) / 1000);
                        }
                        sw::put_credit(&mut out, SUBSCRIPTION, 1);
                        if let Some(every) = cfg.replay {
                            if pass > every {
                                return Err(Error::Protocol(format!(
                                    "{pass} records in one pass over stream {}, which holds {every}",
                                    cfg.stream
                                )));
                            }
                            if pass == every {
                                // The end: read the stream again from the start.
                                sw::put_unsubscribe(&mut out, correlation, SUBSCRIPTION);
                                ending = Some(correlation);
                                correlation += 1;
                                subscribe(&mut out, &mut correlation);
                                check = ChunkCheck::new(&cfg);
                                pass = 0;
                            }
                        }
                    }
                    k if k == response(key::SUBSCRIBE) => {
                        sw::expect_ok(f.body, "Subscribe")?;
                    }
                    k if k == response(key::UNSUBSCRIBE) => {
                        let c = sw::expect_ok(f.body, "Unsubscribe")?;
                        if ending == Some(c) {
                            ending = None;
                        }
                    }
                    key::HEARTBEAT => {}
                    k => {
                        return Err(f.fatal().unwrap_or_else(|| {
                            Error::Unexpected(format!("stream frame key {k:#06x} on a consumer connection"))
                        }));
                    }
                }
                parts.rbuf.advance(total);
            }
            if !out.is_empty() {
                parts.wr.write_all(&out).await?;
                out.clear();
            }
            if chunks > 0 {
                counters.last_delivery_ns.fetch_max(arrived, Ordering::Relaxed);
                counters.received.fetch_add(records, Ordering::Relaxed);
                counters.chunks.fetch_add(chunks, Ordering::Relaxed);
                counters.offset_gaps.fetch_add(gaps, Ordering::Relaxed);
                counters.record_latencies(&latencies);
                latencies.clear();
            }
        }
        parts.correlation = correlation;
        stream_conn::close_split(parts).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;
    use warren::stream::log::chunk::encode_simple;

    fn message(size: usize, stamp: u64) -> Vec<u8> {
        let mut b = BytesMut::new();
        sw::MessageTemplate::new(size).put(&mut b, 1, stamp);
        b[12..].to_vec()
    }

    fn deliver(chunk: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_u8(SUBSCRIPTION);
        b.put_slice(chunk);
        b.to_vec()
    }

    fn cfg(offset: StreamOffset, size: usize) -> StreamConsumerCfg {
        StreamConsumerCfg { stream: "s".into(), offset, credit: 10, body_size: Some(size), replay: None }
    }

    #[test]
    fn chunks_are_counted_checked_and_ordered() {
        let (a, b) = (message(16, 5), message(16, 6));
        let c0 = encode_simple(ChunkType::User, 0, 1, 0, &[&a, &b], b"").unwrap();
        let c1 = encode_simple(ChunkType::User, 0, 1, 2, &[&b], b"").unwrap();
        let mut check = ChunkCheck::new(&cfg(StreamOffset::First, 16));
        assert_eq!(check.deliver(1, &deliver(&c0)).unwrap(), Delivered { records: 2, stamp: Some(5), gap: false });
        assert_eq!(check.deliver(1, &deliver(&c1)).unwrap().records, 1);
        // The same chunk again: offsets went back.
        assert!(check.deliver(1, &deliver(&c1)).is_err());
        // A later chunk after a gap is counted as a gap.
        let c5 = encode_simple(ChunkType::User, 0, 1, 5, &[&a], b"").unwrap();
        assert!(check.deliver(1, &deliver(&c5)).unwrap().gap);
        // A corrupt byte fails the CRC.
        let mut bad = c0.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(ChunkCheck::new(&cfg(StreamOffset::First, 16)).deliver(1, &deliver(&bad)).is_err());
        // A body of the wrong size is refused.
        assert!(ChunkCheck::new(&cfg(StreamOffset::First, 8)).deliver(1, &deliver(&c0)).is_err());
    }

    #[test]
    fn reads_the_deliver_frames_warren_sends() {
        use warren::stream::protocol::encode;
        let (a, b) = (message(16, 5), message(16, 6));
        // With a trailer on the broker's side (writer tracking), which a Deliver leaves out.
        let c = encode_simple(ChunkType::User, 0, 1, 0, &[&a, &b], b"trailer").unwrap();
        let sent = &c[..c.len() - 7];
        let mut frame = BytesMut::new();
        for part in encode::deliver(SUBSCRIPTION, None, bytes::Bytes::copy_from_slice(sent)) {
            frame.put_slice(&part);
        }
        let total = sw::peek(&mut frame, 0).unwrap().unwrap();
        let f = Frame::at(&frame, total);
        assert_eq!((f.key, f.version), (key::DELIVER, 1));
        let mut check = ChunkCheck::new(&cfg(StreamOffset::First, 16));
        assert_eq!(check.deliver(f.version, f.body.rest()).unwrap().records, 2);
        // A credit refused, a stream gone, the server closing: the run fails with the reason.
        for (enc, says) in [
            (
                &(|b: &mut BytesMut| encode::credit_response(b, sw::code::SUBSCRIPTION_ID_DOES_NOT_EXIST, 0))
                    as &dyn Fn(&mut BytesMut),
                "credit refused",
            ),
            (&|b: &mut BytesMut| encode::metadata_update(b, sw::code::STREAM_NOT_AVAILABLE, "s"), "went away"),
            (&|b: &mut BytesMut| encode::close(b, 1, sw::code::INTERNAL_ERROR, "bye"), "bye"),
        ] {
            let mut b = BytesMut::new();
            enc(&mut b);
            let total = sw::peek(&mut b, 0).unwrap().unwrap();
            let e = Frame::at(&b, total).fatal().expect("fatal").to_string();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn records_below_the_requested_offset_are_skipped() {
        let (a, b) = (message(16, 5), message(16, 6));
        let c = encode_simple(ChunkType::User, 0, 1, 10, &[&a, &b, &a], b"").unwrap();
        let mut check = ChunkCheck::new(&cfg(StreamOffset::Offset(11), 16));
        assert_eq!(check.deliver(1, &deliver(&c)).unwrap(), Delivered { records: 2, stamp: Some(6), gap: false });
        // Deliver v2 carries the committed chunk id first.
        let mut v2 = vec![SUBSCRIPTION];
        v2.extend_from_slice(&10u64.to_be_bytes());
        v2.extend_from_slice(&c);
        let mut check = ChunkCheck::new(&cfg(StreamOffset::First, 16));
        assert_eq!(check.deliver(2, &v2).unwrap().records, 3);
    }
}
