//! A stream-protocol producer: one connection, one publisher (id 0, no reference, so no
//! deduplication), publishing as the stream clients do: many messages per Publish frame
//! (`--batch-size`, stream-perf-test's 100 by default) with at most a window of unconfirmed
//! messages (`-c`, stream-perf-test's 10,000 by default). Frames are rendered from a template
//! and written many per system call; a reader task on the same socket settles PublishConfirms
//! (each publishing id once: an id never published, or confirmed twice, fails the run).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{mpsc, watch};

use crate::conn::fill;
use crate::error::{Error, Result};
use crate::producer::{Confirms, Pace, ProducerCfg, Tracker, finish, spawn_reader};
use crate::stats::{Counters, now_nanos};
use crate::stream_conn::{READ_MAX, StreamConn};
use crate::stream_wire::{self as sw, Frame, MessageTemplate, key, response};
use crate::uri::AmqpUri;

/// Target size of one socket write.
const WRITE_BATCH: usize = 64 * 1024;
/// The publisher id the tool declares.
const PUBLISHER: u8 = 0;
/// Octets of a Publish frame before its messages (size prefix not counted: key, version,
/// publisher id, count).
const PUBLISH_HEAD: usize = 2 + 2 + 1 + 4;
/// The confirm window when `-c` is not given (stream-perf-test's `--confirms`).
pub const DEFAULT_WINDOW: u64 = 10_000;

pub struct StreamProducer {
    conn: StreamConn,
    cfg: ProducerCfg,
    batch: usize,
}

impl StreamProducer {
    /// Connect and declare the publisher on `stream`.
    pub async fn connect(
        uri: &AmqpUri,
        name: &str,
        stream: &str,
        cfg: ProducerCfg,
        batch: usize,
    ) -> Result<StreamProducer> {
        let mut conn = StreamConn::open(uri, name).await?;
        conn.declare_publisher(PUBLISHER, stream).await?;
        Ok(StreamProducer { conn, cfg, batch: batch.max(1) })
    }

    /// Publish until `stop` (or the message count), then close the connection.
    pub async fn run(
        self,
        counters: Arc<Counters>,
        mut stop: watch::Receiver<bool>,
        fail: mpsc::UnboundedSender<Error>,
    ) -> Result<()> {
        let StreamProducer { conn, mut cfg, batch } = self;
        cfg.confirm_window.get_or_insert(DEFAULT_WINDOW);
        let mut parts = conn.into_parts();
        let confirms = Arc::new(Confirms::default());
        let highest = Arc::new(AtomicU64::new(0));
        let (c2, k2, h2) = (confirms.clone(), counters.clone(), highest.clone());
        let (rd, rbuf) = (parts.rd, std::mem::take(&mut parts.rbuf));
        let (reader, _guard) = spawn_reader(read_confirms(rd, rbuf, c2, k2, h2), fail);

        let tpl = MessageTemplate::new(cfg.body_size);
        // A Publish frame stays within the broker's frame_max: fewer messages per frame if need be.
        let batch = match parts.frame_max as usize {
            0 => batch,
            max if max < PUBLISH_HEAD + tpl.wire_len() => {
                return Err(Error::Usage(format!(
                    "a {} B message does not fit the broker's stream frame_max of {max} B",
                    cfg.body_size
                )));
            }
            max => batch.min((max - PUBLISH_HEAD) / tpl.wire_len()),
        };
        let frames_per_write = (WRITE_BATCH / (tpl.wire_len() * batch)).max(1);
        let max = (frames_per_write * batch) as u64;
        let mut buf = BytesMut::with_capacity(frames_per_write * (batch * tpl.wire_len() + 16));
        let pace = Pace::new(&cfg);
        let mut published = 0u64;
        while let Some(n) = pace.next(published, max, &confirms, &mut stop).await {
            let stamp = now_nanos();
            let mut left = n;
            while left > 0 {
                let k = left.min(batch as u64);
                sw::put_publish(&mut buf, PUBLISHER, &tpl, published + 1, k, stamp);
                published += k;
                left -= k;
            }
            // Counted before the write: confirms may come back before write_all returns.
            highest.store(published, Ordering::Release);
            counters.sent.fetch_add(n, Ordering::Relaxed);
            parts.wr.write_all(&buf).await?;
            buf.clear();
        }
        pace.await_confirms(published, &confirms, &mut stop).await;
        let mut close = BytesMut::new();
        sw::put_close(&mut close, parts.correlation);
        finish(&mut parts.wr, &close, reader, &counters, "the stream Close response").await
    }
}

/// Read PublishConfirms (and anything else the broker sends) until the Close response.
async fn read_confirms(
    mut rd: OwnedReadHalf,
    mut rbuf: BytesMut,
    confirms: Arc<Confirms>,
    counters: Arc<Counters>,
    highest: Arc<AtomicU64>,
) -> Result<()> {
    let mut tracker = Tracker::default();
    loop {
        let mut settled = 0;
        while let Some(total) = sw::peek(&mut rbuf, READ_MAX)? {
            let top = highest.load(Ordering::Acquire);
            match on_frame(Frame::at(&rbuf, total), &mut tracker, top)? {
                Some(n) => settled += n,
                None => return Ok(()),
            }
            rbuf.advance(total);
        }
        if settled > 0 {
            counters.confirmed.fetch_add(settled, Ordering::Relaxed);
            confirms.settle(settled);
        }
        fill(&mut rd, &mut rbuf).await?;
    }
}

/// One frame on a producer connection: how many messages it confirmed, or None for the
/// response to the tool's Close. Ids are checked against `top`, the highest one published.
fn on_frame(f: Frame<'_>, tracker: &mut Tracker, top: u64) -> Result<Option<u64>> {
    let mut r = f.body;
    match f.key {
        key::PUBLISH_CONFIRM => {
            let _publisher = r.u8()?;
            let mut settled = 0;
            for _ in 0..r.count()? {
                let id = r.u64()?;
                if id == 0 || id > top {
                    return Err(Error::Protocol(format!(
                        "a PublishConfirm for publishing id {id}, which was not published (highest {top})"
                    )));
                }
                match tracker.settle(id, false) {
                    1 => settled += 1,
                    _ => return Err(Error::Protocol(format!("publishing id {id} confirmed twice"))),
                }
            }
            Ok(Some(settled))
        }
        key::PUBLISH_ERROR => {
            let _publisher = r.u8()?;
            let n = r.count()?;
            let (id, c) = (r.u64()?, r.u16()?);
            Err(Error::Protocol(format!(
                "PublishError for {n} message(s), the first publishing id {id}: {c:#04x} ({})",
                sw::code_name(c)
            )))
        }
        key::HEARTBEAT => Ok(Some(0)),
        k if k == response(key::CLOSE) => Ok(None),
        k => Err(f
            .fatal()
            .unwrap_or_else(|| Error::Unexpected(format!("stream frame key {k:#06x} on a producer connection")))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren::stream::protocol::encode;

    fn frame(b: &BytesMut) -> Frame<'_> {
        let mut copy = b.clone();
        let total = sw::peek(&mut copy, 0).unwrap().expect("a whole frame");
        Frame::at(b, total)
    }

    #[test]
    fn reads_what_warren_sends_a_producer() {
        let mut t = Tracker::default();
        let mut b = BytesMut::new();
        encode::publish_confirm(&mut b, PUBLISHER, &[1, 2, 3]);
        assert_eq!(on_frame(frame(&b), &mut t, 3).unwrap(), Some(3));
        // Confirmed again, or never published: the run fails.
        assert!(on_frame(frame(&b), &mut t, 3).is_err());
        b.clear();
        encode::publish_confirm(&mut b, PUBLISHER, &[9]);
        assert!(on_frame(frame(&b), &mut Tracker::default(), 5).is_err());
        b.clear();
        encode::publish_error(&mut b, PUBLISHER, &[(4, sw::code::PUBLISHER_DOES_NOT_EXIST)]);
        let e = on_frame(frame(&b), &mut t, 5).unwrap_err().to_string();
        assert!(e.contains("publishing id 4") && e.contains("publisher does not exist"), "{e}");
        b.clear();
        encode::heartbeat(&mut b);
        assert_eq!(on_frame(frame(&b), &mut t, 5).unwrap(), Some(0));
        b.clear();
        encode::simple_response(&mut b, key::CLOSE, 7, sw::code::OK);
        assert_eq!(on_frame(frame(&b), &mut t, 5).unwrap(), None);
        b.clear();
        encode::metadata_update(&mut b, sw::code::STREAM_NOT_AVAILABLE, "s");
        assert!(on_frame(frame(&b), &mut t, 5).unwrap_err().to_string().contains("went away"));
    }
}
