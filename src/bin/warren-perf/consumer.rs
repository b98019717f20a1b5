//! A consumer: one connection, one channel, one `basic.consume`. Each socket read is parsed in
//! place; deliveries are counted, their latency taken from the body's timestamp against the
//! time of the read, and the acks they call for are written back in one write per read.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use amq_protocol::protocol::{AMQPClass, basic};
use amq_protocol_types::FieldTable;
use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::conn::{self, CH, Conn};
use crate::error::{Error, Result};
use crate::stats::{Counters, now_nanos};
use crate::stream_wire::StreamOffset;
use crate::uri::AmqpUri;
use crate::wire::{self, FRAME_BODY, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD};

#[derive(Debug, Clone)]
pub struct ConsumerCfg {
    pub queue: String,
    pub auto_ack: bool,
    /// basic.qos prefetch-count (0: unlimited, no basic.qos sent).
    pub prefetch: u16,
    /// Ack with `multiple` every this many deliveries (≤ 1: ack each one).
    pub multi_ack_every: u64,
    /// On a stream: where to start (`x-stream-offset`).
    pub stream_offset: Option<StreamOffset>,
}

pub struct Consumer {
    conn: Conn,
    cfg: ConsumerCfg,
}

/// Where the consumer is within a delivery (method, header, body frames).
#[derive(Debug, Clone, Copy)]
enum State {
    Idle,
    Header { tag: u64 },
    Body { tag: u64, left: u64, first: bool },
}

/// `basic.consume` arguments: `x-stream-offset` on a stream.
fn stream_arguments(offset: Option<StreamOffset>) -> FieldTable {
    let mut t = FieldTable::default();
    if let Some(o) = offset {
        t.insert("x-stream-offset".into(), o.amqp_argument());
    }
    t
}

impl Consumer {
    pub async fn connect(uri: &AmqpUri, name: &str, tag: &str, cfg: ConsumerCfg) -> Result<Consumer> {
        let mut conn = Conn::open(uri, name).await?;
        conn.open_channel().await?;
        if cfg.prefetch > 0 && !cfg.auto_ack {
            conn.rpc(
                AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos { prefetch_count: cfg.prefetch, global: false })),
                |m| matches!(m, AMQPClass::Basic(basic::AMQPMethod::QosOk(_))),
                "basic.qos",
            )
            .await?;
        }
        conn.rpc(
            AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                queue: cfg.queue.as_str().into(),
                consumer_tag: tag.into(),
                no_ack: cfg.auto_ack,
                arguments: stream_arguments(cfg.stream_offset),
                ..Default::default()
            })),
            |m| matches!(m, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_))),
            "basic.consume",
        )
        .await?;
        Ok(Consumer { conn, cfg })
    }

    /// Consume until `stop`, then close the connection.
    pub async fn run(self, counters: Arc<Counters>, mut stop: watch::Receiver<bool>) -> Result<()> {
        let Consumer { conn, cfg } = self;
        let (mut rd, mut wr, mut rbuf, frame_max) = conn.into_parts();
        let mut acks = BytesMut::with_capacity(4096);
        let mut latencies: Vec<u64> = Vec::with_capacity(1024);
        let mut state = State::Idle;
        let mut unacked = 0u64;
        let multi = cfg.multi_ack_every.max(1);
        while !*stop.borrow() {
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                r = conn::fill(&mut rd, &mut rbuf) => r?,
            }
            let arrived = now_nanos();
            let mut delivered = 0u64;
            while let Some(f) = wire::peek_frame(&mut rbuf, frame_max)? {
                let p = f.payload(&rbuf);
                let complete = match (f.kind, state) {
                    (FRAME_METHOD, State::Idle) => {
                        if wire::method_id(p)? == wire::BASIC_DELIVER {
                            state = State::Header { tag: wire::deliver_tag(p)? };
                            None
                        } else {
                            let m = wire::parse_method(p)?;
                            if let AMQPClass::Basic(basic::AMQPMethod::Cancel(c)) = &m {
                                return Err(Error::Protocol(format!(
                                    "the broker cancelled consumer {} on queue {} (queue deleted?)",
                                    c.consumer_tag, cfg.queue
                                )));
                            }
                            return Err(wire::close_error(f.channel, &m).unwrap_or_else(|| {
                                Error::Unexpected(format!("{m:?} on consumer channel {}", f.channel))
                            }));
                        }
                    }
                    (FRAME_HEADER, State::Header { tag }) => {
                        let size = wire::content_body_size(p)?;
                        if size == 0 {
                            Some(tag)
                        } else {
                            state = State::Body { tag, left: size, first: true };
                            None
                        }
                    }
                    (FRAME_BODY, State::Body { tag, left, first }) => {
                        if first && let Some(stamp) = wire::body_stamp(p) {
                            latencies.push(arrived.saturating_sub(stamp) / 1000);
                        }
                        let left = left.checked_sub(p.len() as u64).ok_or_else(|| {
                            Error::Protocol(format!(
                                "body frames exceed the content header's body size on {}",
                                cfg.queue
                            ))
                        })?;
                        if left == 0 {
                            Some(tag)
                        } else {
                            state = State::Body { tag, left, first: false };
                            None
                        }
                    }
                    (FRAME_HEARTBEAT, _) => None,
                    (kind, state) => {
                        let what = match kind {
                            FRAME_METHOD => format!("{:?}", wire::parse_method(p)?),
                            k => format!("a frame of type {k}"),
                        };
                        if let Ok(m) = wire::parse_method(p)
                            && let Some(e) = wire::close_error(f.channel, &m)
                        {
                            return Err(e);
                        }
                        return Err(Error::Unexpected(format!("{what} while in state {state:?}")));
                    }
                };
                rbuf.advance(f.total());
                if let Some(tag) = complete {
                    state = State::Idle;
                    delivered += 1;
                    if !cfg.auto_ack {
                        unacked += 1;
                        if unacked >= multi {
                            wire::put_basic_ack(&mut acks, CH, tag, multi > 1);
                            unacked = 0;
                        }
                    }
                }
            }
            if !acks.is_empty() {
                wr.write_all(&acks).await?;
                acks.clear();
            }
            if delivered > 0 {
                counters.last_delivery_ns.fetch_max(arrived, Ordering::Relaxed);
                counters.received.fetch_add(delivered, Ordering::Relaxed);
                counters.record_latencies(&latencies);
                latencies.clear();
            }
        }
        conn::close_split(rd, wr, &mut rbuf, frame_max).await
    }
}
