//! Memory bounds per client: a peer that does not read its output, an endless transaction,
//! bodies dribbled on every channel, a slow handshake, and the memory alarm. Each test reads
//! the broker's resident memory from /proc/<pid>/status and keeps a well-behaved client
//! publishing and consuming on the same broker throughout.
//!
//! These tests need a Warren process they start themselves (they read its /proc entry).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::task::JoinHandle;

use crate::common::{Broker, TempDir, WAIT, unique, within};
use crate::raw::{
    Args, FRAME_END, PROTOCOL_HEADER, Reader, Value, body_frame, content_header_frame, method_frame, plain_response,
};

const MIB: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// The broker process
// ---------------------------------------------------------------------------------------------

/// A broker started with `config` (TOML), and its process id.
struct Proc {
    broker: Broker,
    pid: u32,
    _config_dir: TempDir,
}

fn start(config: &str) -> Proc {
    assert!(std::env::var("WARREN_TEST_ADDR").is_err(), "memory tests read the /proc entry of a Warren they start");
    let dir = TempDir::new();
    let path = dir.0.join("warren.toml");
    std::fs::write(&path, config).expect("write test config");
    let broker = Broker::start_with_args(&["--config", path.to_str().expect("utf-8 path")]);
    let data_dir = broker.data_dir().expect("data dir").to_string_lossy().into_owned();
    let pid = find_pid(&data_dir).expect("the warren process in /proc");
    Proc { broker, pid, _config_dir: dir }
}

/// The warren process whose command line names `data_dir` (unique per test).
fn find_pid(data_dir: &str) -> Option<u32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        if args.contains(&data_dir.as_bytes()) && args[0].ends_with(b"warren") {
            return Some(pid);
        }
    }
    None
}

/// Resident memory of `pid` in bytes (VmRSS).
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<pid>/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status");
    kb * 1024
}

// ---------------------------------------------------------------------------------------------
// A raw peer whose reading and writing are separate (it can write without ever reading)
// ---------------------------------------------------------------------------------------------

struct FrameReader {
    rd: OwnedReadHalf,
    buf: BytesMut,
}

/// type, channel, payload
type RawFrame = (u8, u16, Vec<u8>);

impl FrameReader {
    /// The next frame, or None at EOF.
    async fn next(&mut self) -> Option<RawFrame> {
        loop {
            if self.buf.len() >= 7 {
                let size = u32::from_be_bytes([self.buf[3], self.buf[4], self.buf[5], self.buf[6]]) as usize;
                if self.buf.len() >= size + 8 {
                    let kind = self.buf.get_u8();
                    let channel = self.buf.get_u16();
                    self.buf.advance(4);
                    let payload = self.buf.split_to(size).to_vec();
                    assert_eq!(self.buf.get_u8(), FRAME_END);
                    return Some((kind, channel, payload));
                }
            }
            match self.rd.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Skip frames until method `class.method` on `channel`; panics at EOF or after [`WAIT`].
    async fn until_method(&mut self, channel: u16, class: u16, method: u16) -> Vec<u8> {
        within(&format!("method {class}.{method} on channel {channel}"), async {
            loop {
                let (kind, ch, p) = self.next().await.expect("connection closed");
                if kind == 1
                    && ch == channel
                    && p.len() >= 4
                    && p[0..4] == [(class >> 8) as u8, class as u8, (method >> 8) as u8, method as u8]
                {
                    return p[4..].to_vec();
                }
            }
        })
        .await
    }
}

/// Connect and complete the handshake (guest, vhost /, frame_max 131072, no heartbeats);
/// `blocked_capability` advertises `connection.blocked`.
async fn raw_open(addr: &str, blocked_capability: bool) -> (FrameReader, OwnedWriteHalf) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).unwrap();
    let (rd, mut wr) = stream.into_split();
    let mut rd = FrameReader { rd, buf: BytesMut::new() };
    wr.write_all(PROTOCOL_HEADER).await.unwrap();
    rd.until_method(0, 10, 10).await;
    let caps = vec![("connection.blocked".to_string(), Value::Bool(blocked_capability))];
    let props = [("product", Value::str("warren memory test")), ("capabilities", Value::Table(caps))];
    let start_ok =
        Args::new().table(&props).shortstr("PLAIN").longstr(&plain_response("guest", "guest")).shortstr("en_US");
    wr.write_all(&method_frame(0, 10, 11, start_ok.bytes())).await.unwrap();
    rd.until_method(0, 10, 30).await;
    wr.write_all(&method_frame(0, 10, 31, Args::new().short(2047).long(131_072).short(0).bytes())).await.unwrap();
    wr.write_all(&method_frame(0, 10, 40, Args::new().shortstr("/").shortstr("").bits(&[false]).bytes()))
        .await
        .unwrap();
    rd.until_method(0, 10, 41).await;
    (rd, wr)
}

async fn open_channel(rd: &mut FrameReader, wr: &mut OwnedWriteHalf, ch: u16) {
    wr.write_all(&method_frame(ch, 20, 10, Args::new().shortstr("").bytes())).await.unwrap();
    rd.until_method(ch, 20, 11).await;
}

/// basic.publish + header (+ one body frame) on `ch`.
fn publish_frames(out: &mut Vec<u8>, ch: u16, exchange: &str, key: &str, mandatory: bool, body: &[u8]) {
    out.extend(method_frame(
        ch,
        60,
        40,
        Args::new().short(0).shortstr(exchange).shortstr(key).bits(&[mandatory, false]).bytes(),
    ));
    out.extend(content_header_frame(ch, 60, body.len() as u64, 0, &[]));
    if !body.is_empty() {
        out.extend(body_frame(ch, body));
    }
}

/// A `basic.qos` round trip on `ch` (proves the connection is read and answered).
async fn qos_round_trip(rd: &mut FrameReader, wr: &mut OwnedWriteHalf, ch: u16) {
    wr.write_all(&method_frame(ch, 60, 10, Args::new().long(0).short(10).bits(&[false]).bytes())).await.unwrap();
    rd.until_method(ch, 60, 11).await;
}

/// Write chunks from `next_chunk` until told to stop, counting the bytes the broker took.
struct Flood {
    written: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<OwnedWriteHalf>,
}

fn flood(mut wr: OwnedWriteHalf, mut next_chunk: impl FnMut(u64) -> Vec<u8> + Send + 'static) -> Flood {
    let written = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (w, s) = (written.clone(), stop.clone());
    let task = tokio::spawn(async move {
        let mut i = 0;
        while !s.load(Ordering::Relaxed) {
            let chunk = next_chunk(i);
            i += 1;
            if wr.write_all(&chunk).await.is_err() {
                break;
            }
            w.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        wr
    });
    Flood { written, stop, task }
}

impl Flood {
    /// Wait until the broker stopped taking bytes (no progress for `quiet`); returns the total.
    /// Panics if `limit` bytes were taken first (the broker kept reading).
    async fn until_stalled(&self, quiet: Duration, limit: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = (self.written.load(Ordering::Relaxed), Instant::now());
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.written.load(Ordering::Relaxed);
            assert!(now < limit, "the broker kept reading a peer that does not read: {now} bytes taken");
            assert!(Instant::now() < deadline, "the peer neither stalled nor passed the limit");
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() >= quiet {
                return now;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The well-behaved client
// ---------------------------------------------------------------------------------------------

/// A lapin connection publishing to its own queue and consuming (and acking) every message,
/// one round trip at a time, each within [`WAIT`]; counts the round trips.
struct WellBehaved {
    trips: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
    _conn: Connection,
}

async fn well_behaved(broker: &Broker) -> WellBehaved {
    let (conn, ch) = broker.channel().await;
    let queue = unique("memory-ok");
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions { exclusive: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut consumer = ch
        .basic_consume(queue.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .unwrap();
    let trips = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (t, s) = (trips.clone(), stop.clone());
    let task = tokio::spawn(async move {
        let mut i = 0u64;
        while !s.load(Ordering::Relaxed) {
            let body = format!("ok-{i}");
            within("the well-behaved publish", async {
                ch.basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    BasicProperties::default(),
                )
                .await
                .unwrap();
            })
            .await;
            let d =
                within("the well-behaved delivery", consumer.next()).await.expect("consumer open").expect("delivery");
            assert_eq!(d.data, body.as_bytes());
            d.ack(BasicAckOptions::default()).await.unwrap();
            t.fetch_add(1, Ordering::Relaxed);
            i += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    WellBehaved { trips, stop, task, _conn: conn }
}

impl WellBehaved {
    /// Require `n` more round trips now.
    async fn makes_progress(&self, n: u64, during: &str) {
        let start = self.trips.load(Ordering::Relaxed);
        within(&format!("{n} well-behaved round trips {during}"), async {
            while self.trips.load(Ordering::Relaxed) < start + n {
                assert!(!self.task.is_finished(), "the well-behaved client failed {during}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }

    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        within("the well-behaved client to stop", self.task).await.expect("the well-behaved client never failed");
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Output a peer does not read
// ---------------------------------------------------------------------------------------------

/// Flood requests whose replies are big, never reading; the broker must stop reading the peer
/// with its memory bounded, serve others meanwhile, and resume once the peer reads.
async fn unread_output_is_bounded(
    p: &Proc,
    mut rd: FrameReader,
    wr: OwnedWriteHalf,
    chunk: impl FnMut(u64) -> Vec<u8> + Send + 'static,
) {
    let ok = well_behaved(&p.broker).await;
    ok.makes_progress(5, "before the flood").await;
    let before = rss(p.pid);
    let flood = flood(wr, chunk);
    let taken = flood.until_stalled(Duration::from_secs(2), 256 * MIB).await;
    let grown = rss(p.pid).saturating_sub(before);
    assert!(grown < 96 * MIB, "broker grew by {} MiB for a peer that does not read", grown / MIB);
    ok.makes_progress(20, "while the flooding peer is not read").await;
    assert_eq!(flood.written.load(Ordering::Relaxed), taken, "still not read while it does not read");
    // The peer reads what it was sent: the broker reads it again and answers.
    flood.stop.store(true, Ordering::Relaxed);
    let reader = tokio::spawn(async move {
        let mut frames = 0u64;
        while let Some((kind, ch, payload)) = rd.next().await {
            frames += 1;
            if kind == 1 && ch == 1 && payload[0..4] == [0, 60, 0, 11] {
                return (rd, frames);
            }
        }
        panic!("connection closed after {frames} frames");
    });
    // (Generous bounds: tiny requests still buffered in the sockets can stand for a lot of
    // output, written in 8 MiB steps as the peer reads.)
    let drain = Duration::from_secs(90);
    let mut wr = tokio::time::timeout(drain, flood.task).await.expect("the flooding peer's last write").unwrap();
    wr.write_all(&method_frame(1, 60, 10, Args::new().long(0).short(10).bits(&[false]).bytes())).await.unwrap();
    let (_rd, frames) =
        tokio::time::timeout(drain, reader).await.expect("qos-ok after the peer drained its output").unwrap();
    assert!(frames > 10, "the peer read its backlog first ({frames} frames)");
    ok.makes_progress(5, "after the flood").await;
    ok.finish().await;
}

#[tokio::test]
async fn a_peer_not_reading_its_basic_returns_stops_being_read() {
    let p = start("");
    let (mut rd, mut wr) = raw_open(&p.broker.addr, false).await;
    open_channel(&mut rd, &mut wr, 1).await;
    let body = vec![b'r'; 64 * 1024];
    unread_output_is_bounded(&p, rd, wr, move |_| {
        let mut out = Vec::new();
        for _ in 0..8 {
            publish_frames(&mut out, 1, "", "no-such-queue", true, &body);
        }
        out
    })
    .await;
}

#[tokio::test]
async fn a_peer_not_reading_its_basic_get_ok_stops_being_read() {
    let p = start("");
    let queue = unique("memory-get");
    {
        let (_c, ch) = p.broker.channel().await;
        ch.queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions { auto_delete: false, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            &vec![b'g'; 64 * 1024],
            BasicProperties::default(),
        )
        .await
        .unwrap();
        crate::common::sync_point(&ch).await;
    }
    let (mut rd, mut wr) = raw_open(&p.broker.addr, false).await;
    open_channel(&mut rd, &mut wr, 1).await;
    // basic.get then basic.reject(requeue) of what it got: every get returns the same message.
    unread_output_is_bounded(&p, rd, wr, move |i| {
        let mut out = Vec::new();
        for k in 0..8 {
            let tag = i * 8 + k + 1;
            out.extend(method_frame(1, 60, 70, Args::new().short(0).shortstr(&queue).bits(&[false]).bytes()));
            out.extend(method_frame(1, 60, 90, Args::new().longlong(tag).bits(&[true]).bytes()));
        }
        out
    })
    .await;
}

#[tokio::test]
async fn direct_replies_to_a_requester_that_does_not_read_are_bounded() {
    let p = start("");
    let ok = well_behaved(&p.broker).await;
    // The requester: consumes amq.rabbitmq.reply-to and sends one request, then never reads.
    let (mut rd, mut wr) = raw_open(&p.broker.addr, false).await;
    open_channel(&mut rd, &mut wr, 1).await;
    let requests = unique("memory-rpc");
    let (_rc, responder) = p.broker.channel().await;
    responder
        .queue_declare(
            requests.as_str().into(),
            QueueDeclareOptions { exclusive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut incoming = responder
        .basic_consume(
            requests.as_str().into(),
            "".into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let consume = Args::new()
        .short(0)
        .shortstr("amq.rabbitmq.reply-to")
        .shortstr("")
        .bits(&[false, true, false, false])
        .table(&[]);
    wr.write_all(&method_frame(1, 60, 20, consume.bytes())).await.unwrap();
    rd.until_method(1, 60, 21).await;
    // Request with reply_to = amq.rabbitmq.reply-to (property flag bit 9: reply-to).
    let mut request =
        method_frame(1, 60, 40, Args::new().short(0).shortstr("").shortstr(&requests).bits(&[false, false]).bytes());
    request.extend(content_header_frame(1, 60, 1, 1 << 9, Args::new().shortstr("amq.rabbitmq.reply-to").bytes()));
    request.extend(body_frame(1, b"?"));
    wr.write_all(&request).await.unwrap();
    let req = within("the request", incoming.next()).await.unwrap().unwrap();
    let reply_to = req.properties.reply_to().clone().expect("reply_to").to_string();
    assert!(reply_to.starts_with("amq.rabbitmq.reply-to."), "{reply_to}");
    // The responder answers 256 MiB; the requester never reads a byte.
    let before = rss(p.pid);
    let body = vec![b'a'; 256 * 1024];
    for _ in 0..1024 {
        within("a reply publish (the responder is never blocked)", async {
            responder
                .basic_publish(
                    "".into(),
                    reply_to.as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default(),
                )
                .await
                .unwrap();
        })
        .await;
    }
    crate::common::sync_point(&responder).await;
    let grown = rss(p.pid).saturating_sub(before);
    assert!(grown < 96 * MIB, "broker grew by {} MiB of replies nobody reads", grown / MIB);
    ok.makes_progress(10, "after the replies").await;
    // The requester's connection still works once it reads.
    let mut replies = 0;
    wr.write_all(&method_frame(1, 60, 10, Args::new().long(0).short(10).bits(&[false]).bytes())).await.unwrap();
    within("qos-ok after the replies", async {
        loop {
            let (kind, ch, payload) = rd.next().await.expect("requester connection open");
            if kind == 1 && ch == 1 && payload[0..4] == [0, 60, 0, 60] {
                replies += 1;
            }
            if kind == 1 && ch == 1 && payload[0..4] == [0, 60, 0, 11] {
                break;
            }
        }
    })
    .await;
    assert!(replies > 0 && replies < 1024, "some replies delivered, the rest dropped: {replies}");
    ok.finish().await;
}

// ---------------------------------------------------------------------------------------------
// 2. An endless transaction
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_transaction_of_a_million_publishes_is_refused_at_the_cap() {
    let p = start("");
    let ok = well_behaved(&p.broker).await;
    let before = rss(p.pid);
    let (mut rd, mut wr) = raw_open(&p.broker.addr, false).await;
    open_channel(&mut rd, &mut wr, 1).await;
    wr.write_all(&method_frame(1, 90, 10, &[])).await.unwrap();
    rd.until_method(1, 90, 11).await;
    let sent = Arc::new(AtomicU64::new(0));
    let s = sent.clone();
    let writer = tokio::spawn(async move {
        let mut chunk = Vec::new();
        for i in 0..1_000_000u64 {
            publish_frames(&mut chunk, 1, "", "tx-nowhere", false, b"");
            if i % 1000 == 999 {
                if wr.write_all(&chunk).await.is_err() {
                    break;
                }
                s.store(i + 1, Ordering::Relaxed);
                chunk.clear();
            }
        }
        wr
    });
    let close =
        tokio::time::timeout(Duration::from_secs(120), rd.until_method(1, 20, 40)).await.expect("channel.close");
    let mut r = Reader(&close);
    let (code, text) = (r.short(), r.shortstr());
    assert_eq!(code, 406);
    assert_eq!(
        text,
        "PRECONDITION_FAILED - transaction holds too many messages: the limit is 100000 (amqp.transaction_max_messages); commit more often"
    );
    let grown = rss(p.pid).saturating_sub(before);
    assert!(grown < 256 * MIB, "a refused transaction grew the broker by {} MiB", grown / MIB);
    ok.makes_progress(10, "after the transaction was refused").await;
    let mut wr = tokio::time::timeout(Duration::from_secs(120), writer).await.expect("all publishes written").unwrap();
    assert_eq!(sent.load(Ordering::Relaxed), 1_000_000, "the rest is dropped on the closing channel");
    // close-ok; the connection works on a new channel.
    wr.write_all(&method_frame(1, 20, 41, &[])).await.unwrap();
    open_channel(&mut rd, &mut wr, 2).await;
    qos_round_trip(&mut rd, &mut wr, 2).await;
    ok.finish().await;
}

// ---------------------------------------------------------------------------------------------
// 3. Channels and partial bodies
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn opening_and_closing_2047_channels_in_a_loop_keeps_memory_flat() {
    let p = start("");
    let ok = well_behaved(&p.broker).await;
    let (mut rd, mut wr) = raw_open(&p.broker.addr, false).await;
    let mut after_first = 0;
    for round in 0..10 {
        let mut out = Vec::new();
        for ch in 1..=2047u16 {
            out.extend(method_frame(ch, 20, 10, Args::new().shortstr("").bytes()));
        }
        wr.write_all(&out).await.unwrap();
        for ch in 1..=2047u16 {
            rd.until_method(ch, 20, 11).await;
        }
        let mut out = Vec::new();
        for ch in 1..=2047u16 {
            out.extend(method_frame(ch, 20, 40, Args::new().short(200).shortstr("bye").short(0).short(0).bytes()));
        }
        wr.write_all(&out).await.unwrap();
        for ch in 1..=2047u16 {
            rd.until_method(ch, 20, 41).await;
        }
        if round == 0 {
            after_first = rss(p.pid);
        }
    }
    let grown = rss(p.pid).saturating_sub(after_first);
    assert!(grown < 8 * MIB, "9 more rounds of 2047 channels grew the broker by {} KiB", grown / 1024);
    ok.makes_progress(5, "after the channel rounds").await;
    ok.finish().await;
}

#[tokio::test]
async fn partial_bodies_on_every_channel_are_bounded_per_connection() {
    let p = start("[amqp]\nmax_message_size = 1048576\nmax_content_in_progress = 4194304\n");
    let ok = well_behaved(&p.broker).await;
    let before = rss(p.pid);
    let (mut rd, mut wr) = raw_open(&p.broker.addr, false).await;
    let mut out = Vec::new();
    for ch in 1..=2047u16 {
        out.extend(method_frame(ch, 20, 10, Args::new().shortstr("").bytes()));
    }
    wr.write_all(&out).await.unwrap();
    for ch in 1..=2047u16 {
        rd.until_method(ch, 20, 11).await;
    }
    // Every channel announces a 1 MiB body and sends 8 KiB of it: 16 MiB in all.
    let chunk = vec![b'p'; 8 * 1024];
    let mut out = Vec::new();
    for ch in 1..=2047u16 {
        out.extend(method_frame(
            ch,
            60,
            40,
            Args::new().short(0).shortstr("").shortstr("nowhere").bits(&[false, false]).bytes(),
        ));
        out.extend(content_header_frame(ch, 60, 1024 * 1024, 0, &[]));
        out.extend(body_frame(ch, &chunk));
    }
    wr.write_all(&out).await.unwrap();
    // 4 MiB hold 512 partial bodies: the 513th channel is closed, and each one after it.
    let mut closed = Vec::new();
    within("the channel closes", async {
        while closed.len() < 2047 - 512 {
            let (kind, ch, payload) = rd.next().await.expect("connection open");
            if kind == 1 && payload[0..4] == [0, 20, 0, 40] {
                let mut r = Reader(&payload[4..]);
                assert_eq!(r.short(), 406);
                assert_eq!(
                    r.shortstr(),
                    "PRECONDITION_FAILED - partially received message bodies on this connection exceed 4194304 bytes"
                );
                closed.push(ch);
            }
        }
    })
    .await;
    assert_eq!(closed.first(), Some(&513), "the first channel past the budget");
    let grown = rss(p.pid).saturating_sub(before);
    assert!(grown < 64 * MIB, "partial bodies grew the broker by {} MiB", grown / MIB);
    // The budget stays full (a refused channel gives back only its own share), yet the
    // connection works: a reopened channel publishes a message that arrives whole in one frame.
    let (_c, admin) = p.broker.channel().await;
    let queue = crate::common::exclusive_queue(&admin).await;
    wr.write_all(&method_frame(513, 20, 41, &[])).await.unwrap();
    open_channel(&mut rd, &mut wr, 513).await;
    let mut out = Vec::new();
    publish_frames(&mut out, 513, "", &queue, false, &chunk);
    wr.write_all(&out).await.unwrap();
    qos_round_trip(&mut rd, &mut wr, 513).await;
    assert_eq!(crate::common::ready_count(&admin, &queue).await, 1, "the whole message was routed");
    ok.makes_progress(5, "after the partial bodies").await;
    ok.finish().await;
}

// ---------------------------------------------------------------------------------------------
// 5. The memory alarm
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_memory_alarm_blocks_publishers_and_consumers_drain() {
    // Learn this build's idle footprint, then set the watermark 64 MiB above it.
    let idle = {
        let p = start("");
        let _ok = well_behaved(&p.broker).await;
        rss(p.pid)
    };
    let watermark = idle + 64 * MIB;
    let p = start(&format!("[memory]\nhigh_watermark_absolute = {watermark}\n"));
    // (Every publisher is blocked during the alarm, so the well-behaved client runs before and
    // after it; during it, consumers must keep draining.)
    let ok = well_behaved(&p.broker).await;
    ok.makes_progress(5, "before the alarm").await;
    ok.finish().await;
    // 16 queues hold up to 8 MiB of bodies in memory each: 128 MiB when full.
    let (_c, admin) = p.broker.channel().await;
    let queues: Vec<String> = (0..16).map(|_| unique("memory-alarm")).collect();
    for q in &queues {
        admin.queue_declare(q.as_str().into(), QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
    }
    let (mut rd, mut wr) = raw_open(&p.broker.addr, true).await;
    open_channel(&mut rd, &mut wr, 1).await;
    let body = vec![b'm'; 100 * 1024];
    let qs = queues.clone();
    let flood = flood(wr, move |i| {
        let mut out = Vec::new();
        publish_frames(&mut out, 1, "", &qs[i as usize % qs.len()], false, &body);
        out
    });
    let blocked = within("connection.blocked", rd.until_method(0, 10, 60)).await;
    assert_eq!(Reader(&blocked).shortstr(), "low on memory");
    assert!(rss(p.pid) >= watermark - 16 * MIB, "blocked near the watermark");
    // Not read from while blocked.
    let taken = flood.until_stalled(Duration::from_secs(1), 1024 * MIB).await;
    flood.stop.store(true, Ordering::Relaxed);
    // Consumers keep draining during the alarm: every queue is consumed to empty.
    let (_c2, consumer_ch) = p.broker.channel().await;
    let mut drained = 0;
    for q in &queues {
        let n = crate::common::ready_count(&admin, q).await as usize;
        assert!(n > 0, "the flood filled every queue");
        let mut c = consumer_ch
            .basic_consume(
                q.as_str().into(),
                "".into(),
                BasicConsumeOptions { no_ack: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .unwrap();
        drained += crate::common::deliveries(&mut c, n).await.len();
    }
    assert!(drained as u64 * 100 * 1024 >= 32 * MIB, "drained {drained} messages during the alarm");
    within("connection.unblocked", rd.until_method(0, 10, 61)).await;
    within("the publisher to be read again", async {
        while flood.written.load(Ordering::Relaxed) == taken {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let mut wr = within("the flood to stop", flood.task).await.unwrap();
    qos_round_trip(&mut rd, &mut wr, 1).await;
    let ok = well_behaved(&p.broker).await;
    ok.makes_progress(5, "after the alarm").await;
    ok.finish().await;
}

// ---------------------------------------------------------------------------------------------
// 6. A handshake dribbled byte by byte
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_dribbled_handshake_is_cut_at_the_handshake_timeout_counted_from_accept() {
    let p = start("[amqp]\nhandshake_timeout = 2\n");
    let ok = well_behaved(&p.broker).await;
    let before = rss(p.pid);
    let mut conns = Vec::new();
    let started = Instant::now();
    for _ in 0..50 {
        conns.push(TcpStream::connect(&p.broker.addr).await.unwrap());
    }
    // The protocol header over 1.2 s, then a start-ok one byte every 100 ms.
    let start_ok = method_frame(
        0,
        10,
        11,
        Args::new().table(&[]).shortstr("PLAIN").longstr(&plain_response("guest", "guest")).shortstr("en_US").bytes(),
    );
    let mut bytes = PROTOCOL_HEADER.to_vec();
    bytes.extend(&start_ok);
    let mut closed_at: Vec<Option<Duration>> = vec![None; conns.len()];
    for (i, b) in bytes.iter().enumerate() {
        let pause = if i < 8 { 150 } else { 100 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
        for (c, at) in conns.iter_mut().zip(closed_at.iter_mut()) {
            if at.is_none() && c.write_all(&[*b]).await.is_err() {
                *at = Some(started.elapsed());
            }
        }
        if closed_at.iter().all(Option::is_some) || started.elapsed() > WAIT {
            break;
        }
    }
    // A write fails only after the broker's close (its RST comes back on the first write).
    let first = closed_at.iter().flatten().min().copied().expect("a dribbling peer was cut");
    let last = closed_at.iter().map(|c| c.expect("every dribbling peer was cut")).max().unwrap();
    assert!(first >= Duration::from_millis(1900), "not before the timeout: {first:?}");
    assert!(last < Duration::from_millis(3500), "cut at the 2 s handshake timeout counted from accept: {last:?}");
    for c in &mut conns {
        let mut sink = Vec::new();
        within("EOF from the broker", c.read_to_end(&mut sink)).await.ok();
    }
    assert!(rss(p.pid).saturating_sub(before) < 16 * MIB);
    ok.makes_progress(5, "after the dribbling peers").await;
    ok.finish().await;
}
