//! A producer: one connection, one channel. The writer renders many publishes into one buffer
//! and writes it with a single call; a separate reader task on the same socket counts
//! publisher confirms and wakes the writer when the confirm window opens.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use amq_protocol::protocol::{AMQPClass, confirm};
use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use crate::conn::{self, CH, Conn};
use crate::error::{Error, Result};
use crate::stats::{Counters, now_nanos};
use crate::topology::{Rng, random_key};
use crate::wire::{self, FRAME_HEARTBEAT, FRAME_METHOD, MessageTemplate};

/// Target size of one socket write.
const WRITE_BATCH: usize = 64 * 1024;
/// At most this many messages in one write.
const MAX_BATCH_MSGS: usize = 2048;

#[derive(Debug, Clone)]
pub struct ProducerCfg {
    pub exchange: String,
    /// None: a random routing key per message.
    pub routing_key: Option<String>,
    pub body_size: usize,
    pub persistent: bool,
    /// Publisher confirms with at most this many unconfirmed messages.
    pub confirm_window: Option<u64>,
    /// Messages per second for this producer.
    pub rate: Option<f64>,
    /// Stop after this many messages (and wait for their confirms).
    pub count: Option<u64>,
    pub seed: u64,
}

/// Confirm bookkeeping shared by a producer's writer and its reader.
#[derive(Default)]
pub struct Confirms {
    settled: AtomicU64,
    notify: Notify,
}

impl Confirms {
    /// The reader settled `n` more messages (confirmed or refused): wake the writer.
    pub fn settle(&self, n: u64) {
        self.settled.fetch_add(n, Ordering::Release);
        self.notify.notify_one();
    }

    fn settled(&self) -> u64 {
        self.settled.load(Ordering::Acquire)
    }

    /// Wait for a settlement or `stop`.
    async fn wait(&self, stop: &mut watch::Receiver<bool>) {
        tokio::select! {
            _ = self.notify.notified() => {}
            _ = stop.changed() => {}
        }
    }
}

/// How many messages a producer may send at a time: its message count, its confirm window
/// and its rate.
pub struct Pace {
    count: Option<u64>,
    window: Option<u64>,
    rate: Option<f64>,
    start: Instant,
}

impl Pace {
    pub fn new(cfg: &ProducerCfg) -> Pace {
        Pace { count: cfg.count, window: cfg.confirm_window, rate: cfg.rate, start: Instant::now() }
    }

    /// Wait until up to `max` more messages may follow the `published` ones and say how many;
    /// None once stopped or the count is published.
    pub async fn next(
        &self,
        published: u64,
        max: u64,
        confirms: &Confirms,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<u64> {
        loop {
            if *stop.borrow() {
                return None;
            }
            let mut n = max;
            if let Some(c) = self.count {
                if published >= c {
                    return None;
                }
                n = n.min(c - published);
            }
            if let Some(w) = self.window {
                let outstanding = published - confirms.settled();
                if outstanding >= w {
                    confirms.wait(stop).await;
                    continue;
                }
                n = n.min(w - outstanding);
            }
            if let Some(rate) = self.rate {
                let due = (self.start.elapsed().as_secs_f64() * rate) as u64 + 1;
                if due <= published {
                    let at = self.start + Duration::from_secs_f64(published as f64 / rate);
                    tokio::select! {
                        _ = tokio::time::sleep_until(at.into()) => {}
                        _ = stop.changed() => {}
                    }
                    continue;
                }
                n = n.min(due - published);
            }
            return Some(n);
        }
    }

    /// A counted run waits for its confirms (a prefill must be in the queues when it ends).
    pub async fn await_confirms(&self, published: u64, confirms: &Confirms, stop: &mut watch::Receiver<bool>) {
        if self.count.is_some() && self.window.is_some() {
            while confirms.settled() < published && !*stop.borrow() {
                confirms.wait(stop).await;
            }
        }
    }
}

/// Tracks which delivery tags are confirmed; confirms may arrive out of order.
#[derive(Debug)]
pub struct Tracker {
    /// Lowest unsettled tag.
    base: u64,
    /// settled[i] is tag base + i.
    settled: VecDeque<bool>,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker { base: 1, settled: VecDeque::new() }
    }
}

impl Tracker {
    /// Settle `tag` (and every earlier tag if `multiple`); returns how many were newly settled.
    pub fn settle(&mut self, tag: u64, multiple: bool) -> u64 {
        if tag < self.base {
            return 0;
        }
        let idx = (tag - self.base) as usize;
        if self.settled.len() <= idx {
            self.settled.resize(idx + 1, false);
        }
        let mut n = 0;
        let from = if multiple { 0 } else { idx };
        for s in self.settled.range_mut(from..=idx) {
            if !*s {
                *s = true;
                n += 1;
            }
        }
        while self.settled.front() == Some(&true) {
            self.settled.pop_front();
            self.base += 1;
        }
        n
    }
}

pub struct Producer {
    conn: Conn,
    cfg: ProducerCfg,
}

impl Producer {
    /// Connect, open the channel and enable confirms if asked.
    pub async fn connect(uri: &crate::uri::AmqpUri, name: &str, cfg: ProducerCfg) -> Result<Producer> {
        let mut conn = Conn::open(uri, name).await?;
        conn.open_channel().await?;
        if cfg.confirm_window.is_some() {
            conn.rpc(
                AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select { nowait: false })),
                |m| matches!(m, AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(_))),
                "confirm.select",
            )
            .await?;
        }
        Ok(Producer { conn, cfg })
    }

    /// Publish until `stop` (or the message count), then close the connection.
    /// Errors of the confirm reader go straight to `fail` (the run then stops everything).
    pub async fn run(
        self,
        counters: Arc<Counters>,
        mut stop: watch::Receiver<bool>,
        fail: mpsc::UnboundedSender<Error>,
    ) -> Result<()> {
        let Producer { conn, cfg } = self;
        let (rd, mut wr, rbuf, frame_max) = conn.into_parts();
        let confirms = Arc::new(Confirms::default());
        let (c2, k2) = (confirms.clone(), counters.clone());
        let (reader, _guard) = spawn_reader(read_confirms(rd, rbuf, frame_max, c2, k2), fail);

        let tpl = MessageTemplate::new(
            CH,
            &cfg.exchange,
            cfg.routing_key.as_deref(),
            cfg.body_size,
            cfg.persistent,
            frame_max,
        );
        let per_msg = tpl.wire_len() + if cfg.routing_key.is_none() { 40 } else { 0 };
        let batch_max = (WRITE_BATCH / per_msg).clamp(1, MAX_BATCH_MSGS) as u64;
        // Messages larger than a batch are not copied into the write buffer.
        let large = cfg.routing_key.is_some() && per_msg > WRITE_BATCH;
        let mut buf = BytesMut::with_capacity(if large { 1024 } else { per_msg * batch_max as usize + 64 });
        let mut rng = Rng::new(cfg.seed);
        let mut key = String::with_capacity(32);
        let pace = Pace::new(&cfg);
        let mut published = 0u64;
        while let Some(n) = pace.next(published, batch_max, &confirms, &mut stop).await {
            let stamp = now_nanos();
            if large {
                // One message: its head from the buffer, its body straight from the template.
                counters.sent.fetch_add(1, Ordering::Relaxed);
                published += 1;
                let tail = tpl.put_head(&mut buf, stamp);
                wr.write_all(&buf).await?;
                wr.write_all(tail).await?;
                buf.clear();
                continue;
            }
            for _ in 0..n {
                if cfg.routing_key.is_some() {
                    tpl.put(&mut buf, stamp);
                } else {
                    random_key(&mut rng, &mut key);
                    wire::put_publish(&mut buf, CH, &cfg.exchange, &key, false);
                    tpl.put_content(&mut buf, stamp);
                }
            }
            // Counted before the write: confirms may come back before write_all returns.
            counters.sent.fetch_add(n, Ordering::Relaxed);
            published += n;
            wr.write_all(&buf).await?;
            buf.clear();
        }
        pace.await_confirms(published, &confirms, &mut stop).await;
        let mut close = BytesMut::new();
        wire::put_method(&mut close, 0, &conn::close_method());
        finish(&mut wr, &close, reader, &counters, "connection.close-ok").await
    }
}

/// Run a producer's confirm reader as a task whose error goes to `fail`; the guard aborts it.
pub fn spawn_reader(
    read: impl Future<Output = Result<()>> + Send + 'static,
    fail: mpsc::UnboundedSender<Error>,
) -> (JoinHandle<()>, AbortOnDrop) {
    let reader = tokio::spawn(async move {
        if let Err(e) = read.await {
            let _ = fail.send(e);
        }
    });
    let guard = AbortOnDrop(reader.abort_handle());
    (reader, guard)
}

/// A producer's end: count it done, write its `close`, and wait (bounded) for the reader to
/// see the reply, `what`. The reader reports its own errors; here only a missing reply is one.
pub async fn finish(
    wr: &mut OwnedWriteHalf,
    close: &[u8],
    reader: JoinHandle<()>,
    counters: &Counters,
    what: &str,
) -> Result<()> {
    counters.producers_done.fetch_add(1, Ordering::Relaxed);
    wr.write_all(close).await?;
    match tokio::time::timeout(conn::CLOSE_TIMEOUT, reader).await {
        Ok(_) => Ok(()),
        Err(_) => Err(Error::Timeout(format!("waiting for {what}"))),
    }
}

/// Aborts a task (a producer's confirm reader) when its owner goes away.
pub struct AbortOnDrop(tokio::task::AbortHandle);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Read confirms (and anything else the broker sends) until `connection.close-ok`.
async fn read_confirms(
    mut rd: OwnedReadHalf,
    mut rbuf: BytesMut,
    frame_max: u32,
    confirms: Arc<Confirms>,
    counters: Arc<Counters>,
) -> Result<()> {
    let mut tracker = Tracker::default();
    loop {
        let mut settled = 0;
        let mut nacked = 0;
        while let Some(f) = wire::peek_frame(&mut rbuf, frame_max)? {
            match f.kind {
                FRAME_METHOD => {
                    let p = f.payload(&rbuf);
                    match wire::method_id(p)? {
                        wire::BASIC_ACK => {
                            let (tag, multiple) = wire::confirm_args(p)?;
                            settled += tracker.settle(tag, multiple);
                        }
                        wire::BASIC_NACK => {
                            let (tag, multiple) = wire::confirm_args(p)?;
                            let n = tracker.settle(tag, multiple);
                            settled += n;
                            nacked += n;
                        }
                        wire::CONNECTION_CLOSE_OK => return Ok(()),
                        _ => {
                            let m = wire::parse_method(p)?;
                            return Err(wire::close_error(f.channel, &m)
                                .unwrap_or_else(|| Error::Unexpected(format!("{m:?} on a producer connection"))));
                        }
                    }
                }
                FRAME_HEARTBEAT => {}
                k => return Err(Error::Unexpected(format!("a frame of type {k} on a producer connection"))),
            }
            rbuf.advance(f.total());
        }
        if settled > 0 {
            counters.confirmed.fetch_add(settled - nacked, Ordering::Relaxed);
            counters.nacked.fetch_add(nacked, Ordering::Relaxed);
            confirms.settle(settled);
        }
        conn::fill(&mut rd, &mut rbuf).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::Tracker;

    #[test]
    fn tracker_handles_multiple_and_out_of_order_confirms() {
        let mut t = Tracker::default();
        assert_eq!(t.settle(3, false), 1);
        assert_eq!(t.settle(2, true), 2);
        assert_eq!(t.settle(3, false), 0);
        assert_eq!(t.settle(5, true), 2);
        assert_eq!(t.settle(1, true), 0);
        assert_eq!(t.base, 6);
    }
}
