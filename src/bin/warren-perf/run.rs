//! One run: declare, (idle connections), (prefill), start consumers then producers, report each
//! second, stop on the duration / message counts / Ctrl-C / the first error, summarise, clean up.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::Args;
use crate::clients::Clients;
use crate::error::{Error, Result};
use crate::producer::ProducerCfg;
use crate::report::{Cpu, LatencySummary, Prefill, Rss, StreamStats, Summary};
use crate::stats::{Counters, cpu_seconds, memory, rss_bytes};
use crate::stream_conn::{create_streams, delete_streams};
use crate::stream_wire::StreamOffset;
use crate::topology::Plan;
use crate::{idle, stats};

/// How often end conditions are checked.
const TICK: Duration = Duration::from_millis(20);
/// A finite run whose deliveries cannot be predicted (random keys) ends after this long idle.
const IDLE_END: Duration = Duration::from_secs(2);
/// How long stopped tasks get to close their connections.
const SHUTDOWN: Duration = Duration::from_secs(10);
/// A finite run whose expected deliveries stop coming for this long fails.
const STALL: Duration = Duration::from_secs(30);

fn unique_queue_name() -> String {
    let n = stats::now_nanos();
    format!("warren-perf-{}-{:x}", std::process::id(), n & 0xff_ffff)
}

fn validate(args: &Args) -> Result<(bool, Vec<String>)> {
    let mut persistent = false;
    for f in &args.flags {
        match f.as_str() {
            "persistent" => persistent = true,
            other => return Err(Error::Usage(format!("unsupported -f {other:?} (supported: persistent)"))),
        }
    }
    if !args.autoack && args.qos > 0 && args.multi_ack_every > args.qos as u64 {
        return Err(Error::Usage(format!(
            "-A {} is larger than the prefetch -q {}: consumers would stall",
            args.multi_ack_every, args.qos
        )));
    }
    if args.rate.is_some_and(|r| r <= 0.0) {
        return Err(Error::Usage("-r must be positive".into()));
    }
    if args.confirm == Some(0) {
        return Err(Error::Usage("-c must be at least 1".into()));
    }
    if args.time.is_some_and(|t| t <= 0.0) {
        return Err(Error::Usage("-z must be positive".into()));
    }
    let queues = match &args.queue_pattern {
        Some(p) => {
            if !p.contains("%d") {
                return Err(Error::Usage("--queue-pattern needs a %d".into()));
            }
            let to = args.queue_pattern_to.unwrap_or(args.queue_pattern_from);
            if to < args.queue_pattern_from {
                return Err(Error::Usage("--queue-pattern-to is below --queue-pattern-from".into()));
            }
            (args.queue_pattern_from..=to).map(|i| p.replace("%d", &i.to_string())).collect()
        }
        None => vec![args.queue.clone().unwrap_or_else(unique_queue_name)],
    };
    if args.size < 8 {
        eprintln!("warren-perf: note: bodies under 8 bytes carry no timestamp, so no latency is measured");
    }
    Ok((persistent, queues))
}

pub async fn run(args: Args) -> Result<Summary> {
    let (persistent, queues) = validate(&args)?;
    let clients = Clients::new(&args)?;
    let mut plan = Plan::new(
        queues,
        &args.exchange,
        &args.exchange_type,
        args.routing_key.as_deref(),
        args.random_routing_key,
        args.bindings,
        persistent,
    )?;
    plan.stream = args.streams();
    let t = Instant::now();
    match clients.stream_only() {
        Some(su) => create_streams(su, &plan.queues).await?,
        None => plan.declare(&clients.uri).await?,
    }
    if args.bindings > 0 || plan.queues.len() > 1 {
        let msg = format!(
            "declared {} queue(s) and {} extra binding(s) in {:.1} s",
            plan.queues.len(),
            args.bindings,
            t.elapsed().as_secs_f64()
        );
        progress(args.json, msg);
    }
    let mut result = measure(&clients, &plan, persistent).await;
    if !args.no_cleanup {
        let cleanup = match clients.stream_only() {
            Some(su) => delete_streams(su, &plan.queues).await,
            None => plan.delete(&clients.uri).await,
        };
        match (&result, cleanup) {
            (Ok(_), Err(e)) => return Err(e),
            (Err(_), Err(e)) => eprintln!("warren-perf: clean-up failed too: {e}"),
            _ => {}
        }
        if let (Ok(summary), Some(pid), true) = (&mut result, args.broker_pid, args.rss_after_cleanup)
            && let Some(rss) = summary.rss.as_mut()
        {
            rss.after_cleanup = settled_rss(pid).await;
        }
    }
    result
}

/// How long the broker is watched after the clean-up for its memory to go back.
pub const SETTLE: Duration = Duration::from_secs(5);

/// The lowest RSS of the broker over [`SETTLE`] (sampled every 250 ms).
async fn settled_rss(pid: u32) -> Option<u64> {
    let until = Instant::now() + SETTLE;
    let mut low = rss_bytes(pid)?;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(250)).await;
        low = low.min(rss_bytes(pid)?);
    }
    Some(low)
}

/// Spawn a task whose error goes to `fail`.
fn spawn(
    fut: impl Future<Output = Result<()>> + Send + 'static,
    fail: &mpsc::UnboundedSender<Error>,
) -> JoinHandle<()> {
    let fail = fail.clone();
    tokio::spawn(async move {
        if let Err(e) = fut.await {
            let _ = fail.send(e);
        }
    })
}

/// Await `fut`, unless a task reports an error first.
async fn or_fail<T>(fut: impl Future<Output = Result<T>>, fail: &mut mpsc::UnboundedReceiver<Error>) -> Result<T> {
    tokio::select! {
        r = fut => r,
        Some(e) = fail.recv() => Err(e),
    }
}

struct Tasks {
    stop: watch::Sender<bool>,
    handles: Vec<JoinHandle<()>>,
}

impl Tasks {
    /// Signal stop and give every task a bounded time to close its connection.
    async fn shutdown(self) {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + SHUTDOWN;
        for h in self.handles {
            let abort = h.abort_handle();
            if tokio::time::timeout_at(deadline, h).await.is_err() {
                abort.abort();
            }
        }
    }
}

fn progress(json: bool, line: String) {
    if json {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

async fn measure(clients: &Clients<'_>, plan: &Plan, persistent: bool) -> Result<Summary> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (fail_tx, mut fail_rx) = mpsc::unbounded_channel();
    let mut tasks = Tasks { stop: stop_tx, handles: Vec::new() };
    let r = measure_inner(clients, plan, persistent, &mut tasks, stop_rx, &fail_tx, &mut fail_rx).await;
    tasks.shutdown().await;
    let r = r?;
    // Errors while closing (a broker close, an unexpected frame) fail the run too; a broker
    // slow to answer connection.close (a backlog of publishes still in its socket) does not.
    while let Ok(e) = fail_rx.try_recv() {
        match e {
            Error::Timeout(what) => eprintln!("warren-perf: warning: timed out {what} at the end of the run"),
            e => return Err(e),
        }
    }
    Ok(r)
}

/// The prefill messages queue `q` gets: split over the queues when each message goes to one
/// of them, else all published once (to the first queue's key).
fn prefill_share(args: &Args, plan: &Plan, q: usize) -> u64 {
    let nq = plan.queues.len() as u64;
    match (plan.copies, q) {
        (Some(1), q) => args.prefill / nq + u64::from((q as u64) < args.prefill % nq),
        (_, 0) => args.prefill,
        _ => 0,
    }
}

/// Messages each queue receives in a counted run (prefill shares and producers' counts),
/// then deliveries expected: a stream gives every consumer all of its messages from `offset`
/// (unknown from `last` or `next`).
fn expected_deliveries(args: &Args, plan: &Plan, offset: StreamOffset) -> Option<u64> {
    if !args.streams() {
        return plan.copies.map(|c| (args.prefill + args.producers as u64 * args.pmessages.unwrap_or(0)) * c);
    }
    let skipped = match offset {
        StreamOffset::First => 0,
        StreamOffset::Offset(o) => o,
        StreamOffset::Last | StreamOffset::Next => return None,
    };
    let nq = plan.queues.len() as u64;
    let per_queue = |q: u64| {
        let prefill = prefill_share(args, plan, q as usize);
        let producers = (0..args.producers as u64).filter(|i| i % nq == q).count() as u64;
        let consumers = (0..args.consumers as u64).filter(|j| j % nq == q).count() as u64;
        (prefill + producers * args.pmessages.unwrap_or(0)).saturating_sub(skipped) * consumers
    };
    Some((0..nq).map(per_queue).sum())
}

async fn measure_inner(
    clients: &Clients<'_>,
    plan: &Plan,
    persistent: bool,
    tasks: &mut Tasks,
    stop: watch::Receiver<bool>,
    fail_tx: &mpsc::UnboundedSender<Error>,
    fail_rx: &mut mpsc::UnboundedReceiver<Error>,
) -> Result<Summary> {
    let args = clients.args;
    let uri = &clients.uri;
    let pid = args.broker_pid;
    let nq = plan.queues.len();
    let mut rss = Rss { start: pid.and_then(rss_bytes), ..Default::default() };

    if args.connections > 0 {
        let t = Instant::now();
        let idle = or_fail(idle::open(uri, args.connections, stop.clone(), fail_tx.clone()), fail_rx).await?;
        tasks.handles.extend(idle);
        progress(
            args.json,
            format!("opened {} idle connections in {:.1} s", args.connections, t.elapsed().as_secs_f64()),
        );
        // Let the broker finish what the handshakes started before reading its memory.
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss.after_connections = pid.and_then(rss_bytes);
        if let (Some(a), Some(b)) = (rss.start, rss.after_connections) {
            rss.per_connection = Some((b as f64 - a as f64) / args.connections as f64);
        }
    }

    let producer_cfg = |routing_key: Option<String>, seed: u64| ProducerCfg {
        exchange: plan.exchange.clone(),
        routing_key,
        body_size: args.size,
        persistent,
        confirm_window: args.confirm,
        rate: args.rate,
        count: args.pmessages,
        seed,
    };

    let mut prefill = None;
    if args.prefill > 0 {
        let t = Instant::now();
        let counters = Arc::new(Counters::default());
        // Messages routed per queue are split over the queues, a producer each; otherwise one
        // producer publishes them all (fanout, a shared key, random keys).
        let shares: Vec<(usize, u64)> = if plan.copies == Some(1) && nq > 1 {
            (0..nq).map(|i| (i, prefill_share(args, plan, i))).collect()
        } else {
            vec![(0, args.prefill)]
        };
        let mut handles = Vec::new();
        for (i, count) in shares {
            let window = args.confirm.unwrap_or(if args.stream_producers {
                crate::stream_producer::DEFAULT_WINDOW
            } else {
                1000
            });
            let cfg = ProducerCfg {
                confirm_window: Some(window),
                rate: None,
                count: Some(count),
                ..producer_cfg(plan.routing_keys[i].clone(), 1000 + i as u64)
            };
            let name = format!("warren-perf prefill {i}");
            let p = or_fail(clients.producer(&name, &plan.queues[i], cfg), fail_rx).await?;
            let (c, s) = (counters.clone(), stop.clone());
            let f = fail_tx.clone();
            handles.push(tokio::spawn(async move { p.run(c, s, f).await }));
        }
        for h in handles {
            let r =
                or_fail(async { h.await.map_err(|e| Error::Protocol(format!("prefill task failed: {e}"))) }, fail_rx)
                    .await?;
            r?;
        }
        let secs = t.elapsed().as_secs_f64();
        let confirmed = Counters::get(&counters.confirmed);
        let nacked = Counters::get(&counters.nacked);
        if nacked > 0 {
            return Err(Error::Protocol(format!("the broker nacked {nacked} prefill messages")));
        }
        progress(
            args.json,
            format!("prefilled {confirmed} messages in {secs:.1} s ({:.0} msg/s)", confirmed as f64 / secs),
        );
        rss.after_prefill = pid.and_then(rss_bytes);
        let before = rss.after_connections.or(rss.start);
        if let (Some(a), Some(b)) = (before, rss.after_prefill) {
            let copies = plan.copies.unwrap_or(1) as f64;
            rss.per_message = Some((b as f64 - a as f64) / (args.prefill as f64 * copies));
        }
        prefill = Some(Prefill { messages: args.prefill, seconds: secs, rate: args.prefill as f64 / secs });
    }

    let counters = Arc::new(Counters::default());
    let mut consumers = Vec::with_capacity(args.consumers);
    for j in 0..args.consumers {
        let q = j % nq;
        consumers.push(or_fail(clients.consumer(j, &plan.queues[q], prefill_share(args, plan, q)), fail_rx).await?);
    }
    let mut producers = Vec::with_capacity(args.producers);
    for i in 0..args.producers {
        let cfg = producer_cfg(plan.routing_keys[i % nq].clone(), i as u64 + 1);
        let name = format!("warren-perf producer {i}");
        producers.push(or_fail(clients.producer(&name, &plan.queues[i % nq], cfg), fail_rx).await?);
    }

    let t0 = Instant::now();
    let t0_ns = stats::now_nanos();
    let mem_at_start = pid.and_then(memory);
    let cpu0 = (cpu_seconds(None), pid.and_then(|p| cpu_seconds(Some(p))));
    for c in consumers {
        tasks.handles.push(spawn(c.run(counters.clone(), stop.clone()), fail_tx));
    }
    for p in producers {
        let (c, s, f) = (counters.clone(), stop.clone(), fail_tx.clone());
        tasks.handles.push(spawn(p.run(c, s, f), fail_tx));
    }

    let counted = args.pmessages.is_some();
    let finite = counted || (args.producers == 0 && args.prefill > 0 && !args.replay);
    let expected = expected_deliveries(args, plan, clients.offset);
    let deadline = args.time.map(Duration::from_secs_f64);

    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let (mut last_report, mut last_sent, mut last_recv) = (Duration::ZERO, 0u64, 0u64);
    let mut recv_seen = (0u64, t0);
    let mut rss_quarter: Option<(u64, Instant)> = None;
    let mut anon_max: Option<u64> = None;
    let mut producers_done_at = None;
    let mut recv_end = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            Some(e) = fail_rx.recv() => return Err(e),
            _ = &mut ctrl_c => break,
        }
        let now = Instant::now();
        let el = now - t0;
        let sent = Counters::get(&counters.sent);
        let recv = Counters::get(&counters.received);
        if recv != recv_seen.0 {
            recv_seen = (recv, now);
        }
        let mem_now = pid.and_then(memory);
        let rss_now = mem_now.map(|(r, _)| r);
        if let Some((r, anon)) = mem_now {
            rss.max = Some(rss.max.map_or(r, |m| m.max(r)));
            anon_max = anon_max.max(anon);
        }
        if el >= last_report + Duration::from_secs(1) {
            if let Some(r) = rss_now {
                // The reference point for growth: the first sample a quarter into the run.
                let quarter = deadline.map_or(Duration::from_secs(3), |d| d / 4);
                if rss_quarter.is_none() && el >= quarter {
                    rss_quarter = Some((r, now));
                }
            }
            let dt = (el - last_report).as_secs_f64();
            let p50 = {
                let mut l = counters.latency.lock().expect("latency lock");
                let p = l.interval.quantile(0.5);
                l.interval.clear();
                p
            };
            let lat = p50.map_or("-".to_string(), |p| format!("{p} µs"));
            progress(
                args.json,
                format!(
                    "time {:.1} s, sent {:.0} msg/s, received {:.0} msg/s, median latency {lat}",
                    el.as_secs_f64(),
                    (sent - last_sent) as f64 / dt,
                    (recv - last_recv) as f64 / dt
                ),
            );
            (last_report, last_sent, last_recv) = (el, sent, recv);
        }
        if deadline.is_some_and(|d| el >= d) {
            break;
        }
        if finite && Counters::get(&counters.producers_done) >= args.producers as u64 {
            producers_done_at.get_or_insert(now);
            if args.consumers == 0 {
                break;
            }
            // The receive window of a finite run ends at its last delivery.
            let last = Counters::get(&counters.last_delivery_ns).saturating_sub(t0_ns);
            match expected {
                Some(n) if recv >= n => {
                    recv_end = Some(t0 + Duration::from_nanos(last));
                    break;
                }
                None if now - recv_seen.1 >= IDLE_END => {
                    recv_end = Some(t0 + Duration::from_nanos(last));
                    break;
                }
                Some(n) if now - recv_seen.1 >= STALL => {
                    return Err(Error::Protocol(format!(
                        "deliveries stopped at {recv} of the {n} expected ({} s without one)",
                        STALL.as_secs()
                    )));
                }
                _ => {}
            }
        }
    }
    let end = Instant::now();
    let cpu1 = (cpu_seconds(None), pid.and_then(|p| cpu_seconds(Some(p))));
    rss.end = pid.and_then(rss_bytes);
    if let (Some(max), Some((at_start, anon_at_start))) = (rss.max, mem_at_start) {
        rss.max_growth = Some(max as i64 - at_start as i64);
        if let (Some(max), Some(at_start)) = (anon_max, anon_at_start) {
            rss.anon_max_growth = Some(max as i64 - at_start as i64);
        }
    }
    if let (Some((r0, t)), Some(r1)) = (rss_quarter, rss.end) {
        let secs = (end - t).as_secs_f64();
        if secs > 0.5 {
            rss.growth_per_s = Some((r1 as f64 - r0 as f64) / secs);
        }
    }
    let sent = Counters::get(&counters.sent);
    let confirmed = Counters::get(&counters.confirmed);
    let received = Counters::get(&counters.received);
    if let Some(n) = expected.filter(|&n| finite && received > n) {
        return Err(Error::Protocol(format!("{received} deliveries, more than the {n} expected")));
    }
    let chunks = Counters::get(&counters.chunks);
    let stream = (args.stream_consumers && args.consumers > 0).then(|| StreamStats {
        chunks,
        records_per_chunk: if chunks > 0 { received as f64 / chunks as f64 } else { 0.0 },
        offset_gaps: Counters::get(&counters.offset_gaps),
    });
    let latency = counters.latency.lock().expect("latency lock").total.clone();
    let wall = (end - t0).as_secs_f64();
    let send_secs = (producers_done_at.unwrap_or(end) - t0).as_secs_f64();
    let recv_secs = (recv_end.unwrap_or(end) - t0).as_secs_f64();
    let rate = |n: u64, secs: f64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    let pct = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if wall > 0.0 => Some((b - a) / wall * 100.0),
        _ => None,
    };
    Ok(Summary {
        duration_s: wall,
        producers: args.producers,
        consumers: args.consumers,
        queues: nq,
        body_size: args.size,
        sent,
        confirmed,
        nacked: Counters::get(&counters.nacked),
        received,
        expected: expected.filter(|_| finite),
        sent_rate: rate(sent, send_secs),
        sent_mb_s: rate(sent, send_secs) * args.size as f64 / 1e6,
        confirmed_rate: rate(confirmed, send_secs),
        confirmed_mb_s: rate(confirmed, send_secs) * args.size as f64 / 1e6,
        received_rate: rate(received, recv_secs),
        received_mb_s: rate(received, recv_secs) * args.size as f64 / 1e6,
        latency_us: (latency.count() > 0).then(|| LatencySummary {
            samples: latency.count(),
            p50: latency.quantile(0.5).unwrap_or(0),
            p95: latency.quantile(0.95).unwrap_or(0),
            p99: latency.quantile(0.99).unwrap_or(0),
            p999: latency.quantile(0.999).unwrap_or(0),
            max: latency.max(),
        }),
        prefill,
        connections: args.connections,
        rss: pid.map(|_| rss),
        stream,
        cpu: Cpu { tool_pct: pct(cpu0.0, cpu1.0), broker_pct: pct(cpu0.1, cpu1.1) },
    })
}
