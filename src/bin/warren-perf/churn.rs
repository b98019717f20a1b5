//! Churn and object-scale modes, each a loop of whole cycles rather than a message stream:
//!
//! - `--churn connections`: each of `--churn-clients` clients loops: TCP connect, the full AMQP
//!   handshake, `channel.open`, `confirm.select`, publish one persistent message to a durable
//!   queue (declared once up front), wait for its confirm, `connection.close` and its close-ok.
//!   Reported: cycles/s, connect-to-confirm latency, the broker's CPU time per cycle, and the
//!   broker's open fds, threads and RSS before and after (they must come back).
//! - `--churn queues`: on one connection per client, each cycle declares an exclusive
//!   server-named queue, binds it to `amq.direct`, consumes from it (no-ack), publishes one
//!   message to it through `amq.direct`, receives it, cancels the consumer and deletes the queue
//!   (RPC without direct reply-to: a temporary queue per request).
//! - `--declare-queues N`: declare N queues (durable unless `--transient-queues`), then bind
//!   each to `amq.direct`, pipelined; report the rates and the broker's RSS per queue and per
//!   binding. Queues are left in place for a restart measurement (`--await-queue`).
//! - `--await-queue NAME`: connect until the broker answers a passive declare of NAME; report
//!   the time since `--since` (a UNIX time in seconds, e.g. the broker's start).

use std::time::{Duration, Instant};

use amq_protocol::protocol::{AMQPClass, basic, confirm, queue};
use amq_protocol_types::FieldTable;
use bytes::{Buf, BytesMut};
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::Args;
use crate::conn::{CH, Conn, fill};
use crate::error::{Error, Result};
use crate::stats::{Histogram, cpu_seconds, rss_bytes};
use crate::uri::AmqpUri;
use crate::wire::{self, FRAME_BODY, FRAME_HEADER, FRAME_METHOD, MessageTemplate};

/// Declarations (or bindings) sent before reading their replies in `--declare-queues`.
const DECLARE_WINDOW: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChurnMode {
    Connections,
    Queues,
}

/// The broker's process resources at one moment (Linux /proc).
#[derive(Debug, Default, Clone, Serialize)]
pub struct Resources {
    pub fds: Option<u64>,
    pub threads: Option<u64>,
    pub rss: Option<u64>,
}

impl Resources {
    fn read(pid: Option<u32>) -> Resources {
        let Some(pid) = pid else { return Resources::default() };
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok().map(|d| d.count() as u64);
        let threads = std::fs::read_to_string(format!("/proc/{pid}/status")).ok().and_then(|s| {
            s.lines().find(|l| l.starts_with("Threads:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        });
        Resources { fds, threads, rss: rss_bytes(pid) }
    }
}

#[derive(Debug, Serialize)]
pub struct LatencyUs {
    pub p50: Option<u64>,
    pub p99: Option<u64>,
    pub p999: Option<u64>,
    pub max: u64,
}

#[derive(Debug, Serialize)]
pub struct ChurnSummary {
    pub mode: ChurnMode,
    pub clients: usize,
    pub duration_s: f64,
    pub cycles: u64,
    pub cycles_per_s: f64,
    /// Per cycle, from its start to the message's confirm (connections) or delivery (queues).
    pub latency_us: LatencyUs,
    /// Broker CPU (user + system) per cycle, milliseconds.
    pub broker_cpu_ms_per_cycle: Option<f64>,
    pub broker_cpu_pct: Option<f64>,
    pub tool_cpu_pct: Option<f64>,
    pub before: Resources,
    /// Read once the broker had a moment to release what the last cycles held.
    pub after: Resources,
}

impl ChurnSummary {
    pub fn render(&self) -> String {
        let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3} ms"));
        let opt = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
        format!(
            "churn {:?}: {} clients, {:.1} s, {} cycles, {:.0} cycles/s\n\
             latency: p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs\n\
             broker cpu per cycle: {}\n\
             broker before: fds {}, threads {}, rss {}; after: fds {}, threads {}, rss {}\n",
            self.mode,
            self.clients,
            self.duration_s,
            self.cycles,
            self.cycles_per_s,
            opt(self.latency_us.p50),
            opt(self.latency_us.p99),
            opt(self.latency_us.p999),
            self.latency_us.max,
            ms(self.broker_cpu_ms_per_cycle),
            opt(self.before.fds),
            opt(self.before.threads),
            opt(self.before.rss),
            opt(self.after.fds),
            opt(self.after.threads),
            opt(self.after.rss),
        )
    }
}

fn declare_ok(m: &AMQPClass) -> bool {
    matches!(m, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_)))
}

fn declare(name: &str, durable: bool, exclusive: bool, passive: bool) -> AMQPClass {
    AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
        queue: name.into(),
        passive,
        durable,
        exclusive,
        auto_delete: false,
        nowait: false,
        arguments: FieldTable::default(),
    }))
}

fn bind(name: &str) -> AMQPClass {
    AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
        queue: name.into(),
        exchange: "amq.direct".into(),
        routing_key: name.into(),
        nowait: false,
        arguments: FieldTable::default(),
    }))
}

fn delete(name: &str) -> AMQPClass {
    AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete {
        queue: name.into(),
        if_unused: false,
        if_empty: false,
        nowait: false,
    }))
}

/// Read frames until one for which `f` returns Some (methods parsed; a broker close is an error).
async fn read_until<T>(c: &mut Conn, mut f: impl FnMut(u8, &[u8]) -> Result<Option<T>>) -> Result<T> {
    loop {
        while let Some(fr) = wire::peek_frame(&mut c.rbuf, c.frame_max.max(wire::CLIENT_FRAME_MAX))? {
            let p = fr.payload(&c.rbuf);
            if fr.kind == FRAME_METHOD {
                let id = wire::method_id(p)?;
                if id == wire::CONNECTION_CLOSE || id == (20, 40) {
                    let m = wire::parse_method(p)?;
                    if let Some(e) = wire::close_error(fr.channel, &m) {
                        return Err(e);
                    }
                }
            }
            let r = f(fr.kind, p)?;
            c.rbuf.advance(fr.total());
            if let Some(v) = r {
                return Ok(v);
            }
        }
        fill(&mut c.stream, &mut c.rbuf).await?;
    }
}

/// One connection-churn cycle; returns its connect-to-confirm latency.
async fn connection_cycle(uri: &AmqpUri, queue: &str, template: &MessageTemplate) -> Result<Duration> {
    let t0 = Instant::now();
    let mut c = Conn::open(uri, "warren-perf churn").await?;
    c.open_channel().await?;
    c.rpc(
        AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select { nowait: false })),
        |m| matches!(m, AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(_))),
        "confirm.select",
    )
    .await?;
    let mut out = BytesMut::new();
    template.put(&mut out, crate::stats::now_nanos());
    c.stream.write_all(&out).await?;
    let _ = queue;
    read_until(&mut c, |kind, p| {
        if kind != FRAME_METHOD {
            return Ok(None);
        }
        match wire::method_id(p)? {
            wire::BASIC_ACK => Ok(Some(())),
            wire::BASIC_NACK => Err(Error::Protocol("the broker nacked the churn message".into())),
            _ => Ok(None),
        }
    })
    .await?;
    let latency = t0.elapsed();
    c.close().await?;
    Ok(latency)
}

/// One queue-churn cycle on an open connection; returns its declare-to-delivery latency.
async fn queue_cycle(c: &mut Conn, tag: u64) -> Result<Duration> {
    let t0 = Instant::now();
    let reply = c.rpc(declare("", false, true, false), declare_ok, "queue.declare").await?;
    let AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok)) = reply else { unreachable!("checked by rpc") };
    let name = ok.queue.to_string();
    c.rpc(bind(&name), |m| matches!(m, AMQPClass::Queue(queue::AMQPMethod::BindOk(_))), "queue.bind").await?;
    c.rpc(
        AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: name.as_str().into(),
            consumer_tag: format!("churn-{tag}").into(),
            no_local: false,
            no_ack: true,
            exclusive: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
        |m| matches!(m, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_))),
        "basic.consume",
    )
    .await?;
    let template = MessageTemplate::new(CH, "amq.direct", Some(&name), 16, false, c.frame_max);
    let mut out = BytesMut::new();
    template.put(&mut out, crate::stats::now_nanos());
    c.stream.write_all(&out).await?;
    // basic.deliver, the content header, then the body.
    let mut seen_deliver = false;
    read_until(c, |kind, p| match kind {
        FRAME_METHOD if wire::method_id(p)? == wire::BASIC_DELIVER => {
            seen_deliver = true;
            Ok(None)
        }
        FRAME_HEADER => Ok(None),
        FRAME_BODY if seen_deliver => Ok(Some(())),
        _ => Ok(None),
    })
    .await?;
    let latency = t0.elapsed();
    c.rpc(
        AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
            consumer_tag: format!("churn-{tag}").into(),
            nowait: false,
        })),
        |m| matches!(m, AMQPClass::Basic(basic::AMQPMethod::CancelOk(_))),
        "basic.cancel",
    )
    .await?;
    c.rpc(delete(&name), |m| matches!(m, AMQPClass::Queue(queue::AMQPMethod::DeleteOk(_))), "queue.delete").await?;
    Ok(latency)
}

/// `--churn MODE`.
pub async fn run_churn(args: &Args, mode: ChurnMode) -> Result<ChurnSummary> {
    let uri = AmqpUri::parse(&args.uri)?;
    let pid = args.broker_pid;
    let secs = args.time.unwrap_or(10.0);
    let clients = args.churn_clients.max(1);
    let queue = args.queue.clone().unwrap_or_else(|| format!("warren-perf-churn-{}", std::process::id()));
    if mode == ChurnMode::Connections {
        let mut c = Conn::open(&uri, "warren-perf churn setup").await?;
        c.open_channel().await?;
        c.rpc(declare(&queue, true, false, false), declare_ok, "queue.declare").await?;
        c.close().await?;
    }
    let before = Resources::read(pid);
    let cpu0 = (cpu_seconds(None), pid.and_then(|p| cpu_seconds(Some(p))));
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for i in 0..clients {
        let (uri, queue) = (uri.clone(), queue.clone());
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::default();
            let mut n = 0u64;
            match mode {
                ChurnMode::Connections => {
                    let template = MessageTemplate::new(CH, "", Some(&queue), 16, true, wire::CLIENT_FRAME_MAX);
                    while Instant::now() < deadline {
                        h.record(connection_cycle(&uri, &queue, &template).await?.as_micros() as u64);
                        n += 1;
                    }
                }
                ChurnMode::Queues => {
                    let mut c = Conn::open(&uri, &format!("warren-perf queue churn {i}")).await?;
                    c.open_channel().await?;
                    while Instant::now() < deadline {
                        h.record(queue_cycle(&mut c, n).await?.as_micros() as u64);
                        n += 1;
                    }
                    c.close().await?;
                }
            }
            Ok::<_, Error>((n, h))
        }));
    }
    let mut cycles = 0;
    let mut hist = Histogram::default();
    for t in tasks {
        let (n, h) = t.await.map_err(|e| Error::Protocol(format!("a churn client panicked: {e}")))??;
        cycles += n;
        hist.merge(&h);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu1 = (cpu_seconds(None), pid.and_then(|p| cpu_seconds(Some(p))));
    if mode == ChurnMode::Connections && !args.no_cleanup {
        let mut c = Conn::open(&uri, "warren-perf churn cleanup").await?;
        c.open_channel().await?;
        c.rpc(delete(&queue), |m| matches!(m, AMQPClass::Queue(queue::AMQPMethod::DeleteOk(_))), "queue.delete")
            .await?;
        c.close().await?;
    }
    // Give the broker a moment to finish closing the last connections before reading it again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = Resources::read(pid);
    let broker_cpu = match (cpu0.1, cpu1.1) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let tool_cpu = match (cpu0.0, cpu1.0) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    Ok(ChurnSummary {
        mode,
        clients,
        duration_s: elapsed,
        cycles,
        cycles_per_s: cycles as f64 / elapsed,
        latency_us: LatencyUs {
            p50: hist.quantile(0.5),
            p99: hist.quantile(0.99),
            p999: hist.quantile(0.999),
            max: hist.max(),
        },
        broker_cpu_ms_per_cycle: broker_cpu.filter(|_| cycles > 0).map(|s| s * 1000.0 / cycles as f64),
        broker_cpu_pct: broker_cpu.map(|s| s * 100.0 / elapsed),
        tool_cpu_pct: tool_cpu.map(|s| s * 100.0 / elapsed),
        before,
        after,
    })
}

#[derive(Debug, Serialize)]
pub struct ScaleSummary {
    pub queues: u64,
    pub durable: bool,
    pub declare_s: f64,
    pub declares_per_s: f64,
    pub bind_s: f64,
    pub binds_per_s: f64,
    pub rss_before: Option<u64>,
    pub rss_after_declare: Option<u64>,
    pub rss_after_bind: Option<u64>,
    /// (after declare − before) / queues.
    pub rss_per_queue: Option<f64>,
    /// (after bind − after declare) / queues.
    pub rss_per_binding: Option<f64>,
    pub broker_fds: Option<u64>,
}

impl ScaleSummary {
    pub fn render(&self) -> String {
        let b = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0} B"));
        format!(
            "declared {} {} queues in {:.2} s ({:.0}/s), bound them in {:.2} s ({:.0}/s)\n\
             broker rss per queue {}, per binding {}; broker fds {}\n",
            self.queues,
            if self.durable { "durable" } else { "transient" },
            self.declare_s,
            self.declares_per_s,
            self.bind_s,
            self.binds_per_s,
            b(self.rss_per_queue),
            b(self.rss_per_binding),
            self.broker_fds.map_or("-".into(), |v| v.to_string()),
        )
    }
}

/// The name of queue `i` of `--declare-queues` (1-based; `--await-queue` waits for the last).
pub fn scale_queue_name(prefix: &str, i: u64) -> String {
    format!("{prefix}{i}")
}

/// Send `methods` pipelined in windows, checking each reply.
async fn pipelined(
    c: &mut Conn,
    methods: impl Iterator<Item = AMQPClass>,
    expect: fn(&AMQPClass) -> bool,
    what: &str,
) -> Result<()> {
    let mut in_flight = 0usize;
    let mut methods = methods.peekable();
    loop {
        while in_flight < DECLARE_WINDOW {
            let Some(m) = methods.next() else { break };
            c.queue(CH, &m);
            in_flight += 1;
        }
        c.flush().await?;
        if in_flight == 0 {
            return Ok(());
        }
        // Read half a window of replies before sending more.
        let target = if methods.peek().is_some() { in_flight - in_flight.min(DECLARE_WINDOW / 2) } else { 0 };
        while in_flight > target {
            let reply = c.recv_method(" waiting for a reply").await?;
            if !expect(&reply) {
                return Err(Error::Unexpected(format!("{reply:?} in reply to {what}")));
            }
            in_flight -= 1;
        }
    }
}

/// `--declare-queues N`.
pub async fn run_declare(args: &Args) -> Result<ScaleSummary> {
    let uri = AmqpUri::parse(&args.uri)?;
    let pid = args.broker_pid;
    let n = args.declare_queues;
    let durable = !args.transient_queues;
    let prefix = args.queue.clone().unwrap_or_else(|| "warren-perf-scale-".into());
    let mut c = Conn::open(&uri, "warren-perf declare").await?;
    c.open_channel().await?;
    let rss_before = pid.and_then(rss_bytes);
    let t0 = Instant::now();
    pipelined(
        &mut c,
        (1..=n).map(|i| declare(&scale_queue_name(&prefix, i), durable, false, false)),
        declare_ok,
        "queue.declare",
    )
    .await?;
    let declare_s = t0.elapsed().as_secs_f64();
    let rss_after_declare = pid.and_then(rss_bytes);
    let t1 = Instant::now();
    pipelined(
        &mut c,
        (1..=n).map(|i| bind(&scale_queue_name(&prefix, i))),
        |m| matches!(m, AMQPClass::Queue(queue::AMQPMethod::BindOk(_))),
        "queue.bind",
    )
    .await?;
    let bind_s = t1.elapsed().as_secs_f64();
    let rss_after_bind = pid.and_then(rss_bytes);
    c.close().await?;
    let per = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) if n > 0 => Some((b as f64 - a as f64) / n as f64),
        _ => None,
    };
    Ok(ScaleSummary {
        queues: n,
        durable,
        declare_s,
        declares_per_s: n as f64 / declare_s,
        bind_s,
        binds_per_s: n as f64 / bind_s,
        rss_before,
        rss_after_declare,
        rss_after_bind,
        rss_per_queue: per(rss_before, rss_after_declare),
        rss_per_binding: per(rss_after_declare, rss_after_bind),
        broker_fds: Resources::read(pid).fds,
    })
}

#[derive(Debug, Serialize)]
pub struct AwaitSummary {
    pub queue: String,
    /// Seconds from `--since` until the broker answered the passive declare.
    pub ready_s: f64,
    pub attempts: u64,
}

/// `--await-queue NAME`: poll until the broker is up and has NAME.
pub async fn run_await(args: &Args, queue: &str) -> Result<AwaitSummary> {
    let uri = AmqpUri::parse(&args.uri)?;
    let since = args.since.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
    });
    let limit = Duration::from_secs_f64(args.time.unwrap_or(300.0));
    let start = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let ok = async {
            let mut c = Conn::open(&uri, "warren-perf await").await?;
            c.open_channel().await?;
            c.rpc(declare(queue, false, false, true), declare_ok, "queue.declare passive").await?;
            c.close().await
        }
        .await;
        if ok.is_ok() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            return Ok(AwaitSummary { queue: queue.to_string(), ready_s: now - since, attempts });
        }
        if start.elapsed() > limit {
            return Err(Error::Timeout(format!("waiting for queue {queue:?}: last error {:?}", ok.err())));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
