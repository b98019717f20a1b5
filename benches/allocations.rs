//! Heap allocations per message on the broker's hot paths, counted with a counting global
//! allocator (`cargo bench --bench allocations`; `make bench` runs it too).
//!
//! The broker runs in this process (the library's `Broker::open` + `server::run`, exactly as the
//! `warren` binary starts it) on its own multi-threaded runtime, listening on a free loopback
//! port. The client is warren-perf's lean AMQP client on a separate thread whose allocations are
//! not counted, talking to the broker over a real socket. Each phase resets the counter, drives
//! `N` messages through, and reports the broker's allocations (and bytes) per message:
//!
//! * publish: `basic.publish` of 16 B transient messages into a queue with no consumer;
//! * deliver (auto-ack): a no-ack consumer drains that backlog;
//! * publish + deliver (auto-ack): 1 producer, 1 no-ack consumer on one queue (scenario 1);
//! * publish + deliver + ack: the same with prefetch 1000 and a multiple ack every 100 (scenario 2);
//! * persistent + confirms: persistent messages on a durable queue, confirm window 100, acked
//!   consumer (scenario 6).
//!
//! Allocation counts are deterministic enough to compare commits; the figures include the
//! broker's amortised costs (buffer growth, mailbox blocks), which is why they are averages.

#![allow(dead_code, unused_imports)]

#[path = "../src/bin/warren-perf/conn.rs"]
mod conn;
#[path = "../src/bin/warren-perf/error.rs"]
mod error;
#[path = "../src/bin/warren-perf/uri.rs"]
mod uri;
#[path = "../src/bin/warren-perf/wire.rs"]
mod wire;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use amq_protocol::protocol::{AMQPClass, basic, confirm, queue};
use amq_protocol_types::FieldTable;
use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;

use warren::broker::Broker;
use warren::config::Config;
use warren::server;

use conn::{CH, Conn};
use error::{Error, Result};
use wire::{FRAME_BODY, FRAME_HEADER, FRAME_METHOD, MessageTemplate};

// ---------------------------------------------------------------------------------------------
// The counting allocator.

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set on the client's thread: its allocations are not the broker's.
    static UNCOUNTED: Cell<bool> = const { Cell::new(false) };
}

fn counted() -> bool {
    UNCOUNTED.try_with(|u| !u.get()).unwrap_or(true)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counted() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if counted() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counted() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(new_size.saturating_sub(layout.size()) as u64, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn snapshot() -> (u64, u64) {
    (ALLOCS.load(Ordering::SeqCst), BYTES.load(Ordering::SeqCst))
}

// ---------------------------------------------------------------------------------------------
// The client side (uncounted thread).

/// Messages per phase (`ALLOC_BENCH_N` overrides, e.g. for a run under valgrind's DHAT).
fn n() -> u64 {
    std::env::var("ALLOC_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000)
}
const BODY: usize = 16;

struct Phase {
    name: &'static str,
    allocs: u64,
    bytes: u64,
    messages: u64,
}

/// Measure the broker's allocations while `work` runs.
async fn measure<F: std::future::Future<Output = Result<u64>>>(
    name: &'static str,
    work: F,
    out: &mut Vec<Phase>,
) -> Result<()> {
    eprintln!("allocations: {name}");
    let (a0, b0) = snapshot();
    let messages = work.await?;
    let (a1, b1) = snapshot();
    out.push(Phase { name, allocs: a1 - a0, bytes: b1 - b0, messages });
    Ok(())
}

async fn open(uri: &uri::AmqpUri, name: &str) -> Result<Conn> {
    let mut c = Conn::open(uri, name).await?;
    c.open_channel().await?;
    Ok(c)
}

async fn declare(c: &mut Conn, name: &str, durable: bool) -> Result<u32> {
    let reply = c
        .rpc(
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: name.into(),
                passive: false,
                durable,
                exclusive: false,
                auto_delete: false,
                nowait: false,
                arguments: FieldTable::default(),
            })),
            |m| matches!(m, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_))),
            "queue.declare",
        )
        .await?;
    match reply {
        AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok)) => Ok(ok.message_count),
        _ => unreachable!("checked by rpc"),
    }
}

/// Publish `n` messages, written in batches; with `confirms`, keep at most `window` unconfirmed.
async fn publish(c: &mut Conn, q: &str, n: u64, persistent: bool, window: Option<u64>) -> Result<()> {
    let tpl = MessageTemplate::new(CH, "", Some(q), BODY, persistent, c.frame_max);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let (mut sent, mut confirmed) = (0u64, 0u64);
    while sent < n {
        let room = window.map_or(u64::MAX, |w| w - (sent - confirmed));
        let batch = (n - sent).min(500).min(room);
        for i in 0..batch {
            tpl.put(&mut buf, sent + i);
        }
        sent += batch;
        if batch > 0 {
            c.stream.write_all(&buf).await?;
            buf.clear();
        }
        if let Some(w) = window {
            let until = if sent == n { n } else { (sent + 1).saturating_sub(w) };
            confirmed = read_confirms(c, confirmed, until).await?;
        }
    }
    Ok(())
}

/// Read confirms until `until` messages are confirmed; return the confirmed count.
async fn read_confirms(c: &mut Conn, mut confirmed: u64, until: u64) -> Result<u64> {
    loop {
        while let Some(f) = wire::peek_frame(&mut c.rbuf, c.frame_max)? {
            let p = f.payload(&c.rbuf);
            if f.kind != FRAME_METHOD {
                return Err(Error::Unexpected(format!("a frame of type {} on a publishing connection", f.kind)));
            }
            if wire::method_id(p)? != wire::BASIC_ACK {
                return Err(Error::Unexpected(format!("{:?}", wire::parse_method(p)?)));
            }
            confirmed = confirmed.max(wire::confirm_args(p)?.0);
            c.rbuf.advance(f.total());
        }
        if confirmed >= until {
            return Ok(confirmed);
        }
        conn::fill(&mut c.stream, &mut c.rbuf).await?;
    }
}

/// Start consuming `q` on `c`.
async fn consume(c: &mut Conn, q: &str, no_ack: bool, prefetch: u16) -> Result<()> {
    if prefetch > 0 {
        c.rpc(
            AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos { prefetch_count: prefetch, global: false })),
            |m| matches!(m, AMQPClass::Basic(basic::AMQPMethod::QosOk(_))),
            "basic.qos",
        )
        .await?;
    }
    c.rpc(
        AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: q.into(),
            consumer_tag: "alloc-bench".into(),
            no_local: false,
            no_ack,
            exclusive: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
        |m| matches!(m, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_))),
        "basic.consume",
    )
    .await
    .map(drop)
}

/// Receive `n` deliveries; with `ack_every`, ack (multiple) every that many.
async fn receive(c: &mut Conn, n: u64, ack_every: Option<u64>) -> Result<()> {
    let mut got = 0u64;
    let mut last_tag = 0u64;
    let mut acked = 0u64;
    let mut out = BytesMut::new();
    while got < n {
        while got < n
            && let Some(f) = wire::peek_frame(&mut c.rbuf, c.frame_max)?
        {
            let p = f.payload(&c.rbuf);
            match f.kind {
                FRAME_METHOD if wire::method_id(p)? == wire::BASIC_DELIVER => last_tag = wire::deliver_tag(p)?,
                FRAME_METHOD => return Err(Error::Unexpected(format!("{:?}", wire::parse_method(p)?))),
                FRAME_HEADER => {}
                FRAME_BODY => got += 1,
                _ => {}
            }
            c.rbuf.advance(f.total());
        }
        if let Some(every) = ack_every
            && (last_tag - acked >= every || (got == n && last_tag > acked))
        {
            wire::put_basic_ack(&mut out, CH, last_tag, true);
            c.stream.write_all(&out).await?;
            out.clear();
            acked = last_tag;
        }
        if got < n {
            conn::fill(&mut c.stream, &mut c.rbuf).await?;
        }
    }
    Ok(())
}

/// Poll `queue.declare` until the queue holds `n` messages (the queue has taken them all in).
async fn await_depth(c: &mut Conn, q: &str, n: u32) -> Result<()> {
    for _ in 0..10_000 {
        if declare(c, q, false).await? == n {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Err(Error::Timeout(format!("waiting for {n} messages in {q}")))
}

async fn client(addr: SocketAddr) -> Result<Vec<Phase>> {
    #[allow(non_snake_case)]
    let (N, WARMUP) = (n(), n() / 10);
    let uri = uri::AmqpUri::parse(&format!("amqp://guest:guest@{addr}"))?;
    let mut p = open(&uri, "alloc-bench producer").await?;
    let mut c = open(&uri, "alloc-bench consumer").await?;
    let mut phases = Vec::new();

    // Backlog: publish into an idle queue, then drain it with a no-ack consumer.
    declare(&mut p, "alloc-backlog", false).await?;
    publish(&mut p, "alloc-backlog", WARMUP, false, None).await?;
    await_depth(&mut p, "alloc-backlog", WARMUP as u32).await?;
    measure(
        "publish (queue without consumers)",
        async {
            publish(&mut p, "alloc-backlog", N, false, None).await?;
            await_depth(&mut p, "alloc-backlog", (N + WARMUP) as u32).await?;
            Ok(N)
        },
        &mut phases,
    )
    .await?;
    consume(&mut c, "alloc-backlog", true, 0).await?;
    receive(&mut c, WARMUP, None).await?;
    measure("deliver (auto-ack, from a backlog)", async { receive(&mut c, N, None).await.map(|_| N) }, &mut phases)
        .await?;
    let mut c2 = open(&uri, "alloc-bench consumer 2").await?;
    drop(c);

    // End to end: scenario 1 (auto-ack).
    declare(&mut p, "alloc-e2e", false).await?;
    consume(&mut c2, "alloc-e2e", true, 0).await?;
    {
        let (a, b) = tokio::join!(publish(&mut p, "alloc-e2e", WARMUP, false, None), receive(&mut c2, WARMUP, None));
        a?;
        b?;
    }
    measure(
        "publish + deliver (1p/1c, auto-ack)",
        async {
            let (a, b) = tokio::join!(publish(&mut p, "alloc-e2e", N, false, None), receive(&mut c2, N, None));
            a.and(b).map(|_| N)
        },
        &mut phases,
    )
    .await?;

    // Scenario 2: manual acks, prefetch 1000, multiple ack every 100.
    let mut c3 = open(&uri, "alloc-bench consumer 3").await?;
    declare(&mut p, "alloc-acked", false).await?;
    consume(&mut c3, "alloc-acked", false, 1000).await?;
    {
        let (a, b) =
            tokio::join!(publish(&mut p, "alloc-acked", WARMUP, false, None), receive(&mut c3, WARMUP, Some(100)));
        a?;
        b?;
    }
    measure(
        "publish + deliver + ack (prefetch 1000, multi-ack 100)",
        async {
            let (a, b) = tokio::join!(publish(&mut p, "alloc-acked", N, false, None), receive(&mut c3, N, Some(100)));
            a.and(b).map(|_| N)
        },
        &mut phases,
    )
    .await?;

    // Scenario 6: persistent, durable queue, confirm window 100, acking consumer.
    let mut pc = open(&uri, "alloc-bench confirming producer").await?;
    pc.rpc(
        AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select { nowait: false })),
        |m| matches!(m, AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(_))),
        "confirm.select",
    )
    .await?;
    let mut c4 = open(&uri, "alloc-bench consumer 4").await?;
    declare(&mut pc, "alloc-durable", true).await?;
    consume(&mut c4, "alloc-durable", false, 1000).await?;
    let n6 = N / 4;
    {
        let (a, b) = tokio::join!(
            publish(&mut pc, "alloc-durable", WARMUP, true, Some(100)),
            receive(&mut c4, WARMUP, Some(100))
        );
        a?;
        b?;
    }
    measure(
        "persistent + confirms (window 100) + ack",
        async {
            let (a, b) =
                tokio::join!(publish(&mut pc, "alloc-durable", n6, true, Some(100)), receive(&mut c4, n6, Some(100)));
            a.and(b).map(|_| n6)
        },
        &mut phases,
    )
    .await?;
    Ok(phases)
}

fn main() {
    let data = std::env::temp_dir().join(format!("warren-alloc-bench-{}", std::process::id()));
    let config =
        Config { listen: "127.0.0.1:0".parse().expect("address"), data_dir: data.clone(), ..Default::default() };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_stack_size(warren::protocol::fields::THREAD_STACK)
        .enable_all()
        .build()
        .expect("runtime");
    let broker = runtime.block_on(async { Broker::open(config) }).expect("broker");
    let listener = runtime.block_on(server::bind(&broker)).expect("bind");
    let addr = server::local_addr(&listener);
    runtime.spawn(server::run(listener, None, broker.clone()));

    let result = std::thread::spawn(move || {
        UNCOUNTED.with(|u| u.set(true));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("client runtime");
        match rt.block_on(async { tokio::time::timeout(Duration::from_secs(300), client(addr)).await }) {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout("running the phases (5 minutes)".into())),
        }
    })
    .join()
    .expect("client thread");
    broker.shutdown.cancel();
    drop(runtime);
    let _ = std::fs::remove_dir_all(&data);

    let phases = match result {
        Ok(p) => p,
        Err(e) => {
            eprintln!("allocations: {e}");
            std::process::exit(1);
        }
    };
    println!("| path (16 B messages) | broker allocations / message | broker bytes allocated / message |");
    println!("|---|---:|---:|");
    for p in &phases {
        let m = p.messages.max(1) as f64;
        println!("| {} | {:.2} | {:.0} |", p.name, p.allocs as f64 / m, p.bytes as f64 / m);
    }
}
