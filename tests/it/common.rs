//! Shared harness for the integration tests: start the real `warren` binary on a free loopback
//! port and connect real clients to it.
//!
//! Set `WARREN_TEST_ADDR=127.0.0.1:5690` to run the same tests against an already running broker
//! instead (this is how the suite is checked against RabbitMQ 3.10 itself).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use lapin::{Channel, Connection, ConnectionProperties};

/// A broker under test. Dropping it kills the child process (if we started one).
pub struct Broker {
    pub addr: String,
    /// The amqps listener's address, when the config has one.
    pub tls_addr: Option<String>,
    /// The management API's address (`--http-listen`), when on.
    pub http_addr: Option<String>,
    /// The Prometheus endpoint's address (`--metrics-listen`), when on.
    pub metrics_addr: Option<String>,
    /// The stream protocol listener's address (`--stream-listen`), when on.
    pub stream_addr: Option<String>,
    /// The stream protocol's TLS listener (`[stream] tls_listen`), when on.
    pub stream_tls_addr: Option<String>,
    child: Option<Child>,
    _data_dir: Option<TempDir>,
    /// Standard-error lines of the process this harness started (its log), as they arrive.
    log: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Broker {
    /// Start a fresh `warren` on 127.0.0.1 with an OS-chosen port, or use `WARREN_TEST_ADDR`.
    pub fn start() -> Broker {
        Self::start_with_args(&[])
    }

    /// Like [`Broker::start`], with extra command-line arguments for `warren`.
    pub fn start_with_args(extra: &[&str]) -> Broker {
        if let Ok(addr) = std::env::var("WARREN_TEST_ADDR") {
            return Broker {
                addr,
                tls_addr: None,
                http_addr: None,
                metrics_addr: None,
                stream_addr: None,
                stream_tls_addr: None,
                child: None,
                _data_dir: None,
                log: Arc::default(),
            };
        }
        let data_dir = TempDir::new();
        let mut b = Self::spawn(&data_dir.0, extra, None, &[]);
        b._data_dir = Some(data_dir);
        b
    }

    /// Start `warren` on a data directory the caller keeps (to restart on the same data).
    /// Needs a Warren process: fails loudly against an external broker.
    pub fn start_in(data_dir: &std::path::Path, extra: &[&str]) -> Broker {
        assert!(
            std::env::var("WARREN_TEST_ADDR").is_err(),
            "restart tests need a Warren process they start themselves"
        );
        Self::spawn(data_dir, extra, None, &[])
    }

    /// [`Broker::start_in`] with extra environment variables for the process.
    pub fn start_in_env(data_dir: &std::path::Path, extra: &[&str], env: &[(&str, std::ffi::OsString)]) -> Broker {
        assert!(
            std::env::var("WARREN_TEST_ADDR").is_err(),
            "restart tests need a Warren process they start themselves"
        );
        Self::spawn(data_dir, extra, None, env)
    }

    /// Like [`Broker::start_in`] with the log filter `filter` (`RUST_LOG`) instead of the
    /// default `warn`, so a test can read lines logged below warning level with [`Broker::wait_for_log`].
    pub fn start_in_logging(data_dir: &std::path::Path, extra: &[&str], filter: &str) -> Broker {
        assert!(std::env::var("WARREN_TEST_ADDR").is_err(), "log tests need a Warren process they start themselves");
        Self::spawn(data_dir, extra, Some(filter), &[])
    }

    /// Start a fresh `warren` with `toml` as its configuration file (`--config`), on a fresh
    /// data directory. Needs a Warren process: fails loudly against an external broker.
    pub fn start_with_config(toml: &str) -> Broker {
        assert!(
            std::env::var("WARREN_TEST_ADDR").is_err(),
            "configuration tests need a Warren process they start themselves"
        );
        let data_dir = TempDir::new();
        let config = data_dir.0.join("test-config.toml");
        std::fs::write(&config, toml).expect("write test config");
        let config = config.to_str().expect("utf-8 temp path").to_string();
        let mut b = Self::spawn(&data_dir.0, &["--config", &config], None, &[]);
        b._data_dir = Some(data_dir);
        b
    }

    /// [`Broker::start_with_config`] with the log filter `filter` (see [`Broker::start_in_logging`]).
    pub fn start_with_config_logging(toml: &str, filter: &str) -> Broker {
        assert!(std::env::var("WARREN_TEST_ADDR").is_err(), "log tests need a Warren process they start themselves");
        let data_dir = TempDir::new();
        let config = data_dir.0.join("test-config.toml");
        std::fs::write(&config, toml).expect("write test config");
        let config = config.to_str().expect("utf-8 temp path").to_string();
        let mut b = Self::spawn(&data_dir.0, &["--config", &config], Some(filter), &[]);
        b._data_dir = Some(data_dir);
        b
    }

    /// Whether a log line of this broker seen so far satisfies `pred` (no waiting).
    pub fn logged(&self, pred: impl Fn(&str) -> bool) -> bool {
        self.log.0.lock().unwrap_or_else(|e| e.into_inner()).iter().any(|l| pred(l))
    }

    fn spawn(
        data_dir: &std::path::Path,
        extra: &[&str],
        filter: Option<&str>,
        env: &[(&str, std::ffi::OsString)],
    ) -> Broker {
        let filter = match filter {
            Some(f) => f.to_string(),
            None => std::env::var("WARREN_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        };
        // The management API on a free port too (its default, 15672, would collide between tests).
        let http: &[&str] = if extra.contains(&"--http-listen") { &[] } else { &["--http-listen", "127.0.0.1:0"] };
        let metrics: &[&str] =
            if extra.contains(&"--metrics-listen") { &[] } else { &["--metrics-listen", "127.0.0.1:0"] };
        let mut child = Command::new(env!("CARGO_BIN_EXE_warren"))
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(http)
            .args(metrics)
            .args(extra)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", filter)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn warren binary");
        // Collect the log (standard error) and pass it on to the test's standard error.
        let log: Arc<(Mutex<Vec<String>>, Condvar)> = Arc::default();
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("{line}");
                sink.0.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                sink.1.notify_all();
            }
        });
        // The broker prints `listening on ADDR` on stdout once the socket is bound.
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let (mut tls_addr, mut http_addr, mut metrics_addr, mut stream_addr) = (None, None, None, None);
        let mut stream_tls_addr = None;
        let addr = loop {
            let line = lines.next().expect("warren exited before it was listening").expect("read warren stdout");
            if let Some(rest) = line.split("stream protocol listening for TLS on ").nth(1) {
                stream_tls_addr = Some(rest.trim().to_string());
            } else if let Some(rest) = line.split("listening for amqps on ").nth(1) {
                tls_addr = Some(rest.trim().to_string());
            } else if let Some(rest) = line.split("management API listening on ").nth(1) {
                http_addr = Some(rest.trim().to_string());
            } else if let Some(rest) = line.split("prometheus metrics listening on ").nth(1) {
                metrics_addr = Some(rest.trim().to_string());
            } else if let Some(rest) = line.split("stream protocol listening on ").nth(1) {
                stream_addr = Some(rest.trim().to_string());
            } else if let Some(rest) = line.split("listening on ").nth(1) {
                break rest.trim().to_string();
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Broker {
            addr,
            tls_addr,
            http_addr,
            metrics_addr,
            stream_addr,
            stream_tls_addr,
            child: Some(child),
            _data_dir: None,
            log,
        }
    }

    /// Wait (up to [`WAIT`]) for a log line of this broker for which `pred` holds, and return it.
    pub fn wait_for_log(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        let (lines, arrived) = &*self.log;
        let mut seen = lines.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(l) = seen.iter().find(|l| pred(l)) {
                return l.clone();
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(!left.is_zero(), "timed out waiting for a log line: {what}; the log was:\n{}", seen.join("\n"));
            seen = arrived.wait_timeout(seen, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// The data directory of a broker this harness started.
    pub fn data_dir(&self) -> Option<std::path::PathBuf> {
        self._data_dir.as_ref().map(|d| d.0.clone())
    }

    /// `kill -9` the broker process and reap it.
    pub fn kill9(&mut self) {
        let child = self.child.as_mut().expect("kill9 needs a Warren process");
        let _ = child.kill();
        let _ = child.wait();
    }

    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    /// Open a lapin connection to this broker.
    pub async fn connect(&self) -> Connection {
        Connection::connect(&self.uri(), ConnectionProperties::default()).await.expect("lapin connect")
    }

    /// Open a lapin connection and one channel on it.
    pub async fn channel(&self) -> (Connection, Channel) {
        let conn = self.connect().await;
        let ch = conn.create_channel().await.expect("create channel");
        (conn, ch)
    }

    /// Whether the broker process is still alive (always true for an external broker).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().expect("try_wait").is_none(),
            None => true,
        }
    }

    /// Call the management API as `user`:`pass` (`body`: JSON for PUT/POST); the status and
    /// the JSON answer (Null when empty).
    pub fn api(
        &self,
        method: &str,
        path: &str,
        auth: (&str, &str),
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        use base64::Engine;
        let addr = self.http_addr.as_ref().expect("start the broker with --http-listen 127.0.0.1:0");
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", auth.0, auth.1));
        let req = ureq::request(method, &format!("http://{addr}{path}"))
            .set("authorization", &format!("Basic {token}"))
            .timeout(std::time::Duration::from_secs(20));
        let res = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        let res = match res {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let status = res.status();
        let text = res.into_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }

    /// [`Broker::api`] as guest, expecting a 2xx status.
    pub fn admin(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
        let (status, v) = self.api(method, path, ("guest", "guest"), body);
        assert!((200..300).contains(&status), "{method} {path}: {status} {v}");
        v
    }

    /// Send a signal (`"HUP"`, `"TERM"`, ...) to the broker process.
    pub fn signal(&self, sig: &str) {
        let child = self.child.as_ref().expect("signals need a Warren process");
        let ok = Command::new("kill").arg(format!("-{sig}")).arg(child.id().to_string()).status().expect("run kill");
        assert!(ok.success(), "kill -{sig} failed");
    }

    /// Send SIGTERM and wait for the exit status (None for an external broker).
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        Some(child.wait().expect("wait warren"))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A temporary directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "warren-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A unique name for a test entity (queues/exchanges), so tests can share an external broker.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}-{}-{}-{nanos}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Bound for waiting on events that must happen; a test fails rather than hangs.
pub const WAIT: Duration = Duration::from_secs(10);

/// Await `fut`, failing the test if it takes longer than [`WAIT`].
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut).await.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

// ---------------------------------------------------------------------------------------------
// Helpers shared by the lapin test modules (connection, exchanges, queues, basic, confirms).
// ---------------------------------------------------------------------------------------------

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use lapin::message::Delivery;
use lapin::{Consumer, Event};

/// How long a test waits to assert that something does NOT happen (e.g. no further delivery).
/// Only ever used for absence checks, never as synchronisation.
pub const QUIET: Duration = Duration::from_millis(300);

/// The reply code and reply text of a lapin error caused by a broker `channel.close` or
/// `connection.close`. Panics (failing the test) on any other kind of error.
pub fn amqp_error(err: &lapin::Error) -> (u16, String) {
    match err.kind() {
        lapin::ErrorKind::ProtocolError(e) => (e.get_id(), e.get_message().to_string()),
        other => panic!("expected an AMQP error from the broker, got {other:?}"),
    }
}

/// Like [`amqp_error`] for a result that must be an error.
pub fn expect_amqp_error<T: std::fmt::Debug>(res: lapin::Result<T>) -> (u16, String) {
    match res {
        Ok(v) => panic!("expected the broker to refuse, got Ok({v:?})"),
        Err(e) => amqp_error(&e),
    }
}

/// A connection's event stream; create it BEFORE triggering the error you want to observe.
pub type Events = Pin<Box<dyn Stream<Item = Event> + Send>>;

pub fn events(conn: &lapin::Connection) -> Events {
    Box::pin(conn.events_listener())
}

/// Wait for the broker to close a channel or the connection (reported as an error event by
/// lapin) and return its reply code and text.
pub async fn next_close(events: &mut Events) -> (u16, String) {
    within("a close from the broker", async {
        loop {
            match events.next().await {
                Some(Event::Error(e)) => return amqp_error(&e),
                Some(_) => continue,
                None => panic!("event stream ended before the broker closed anything"),
            }
        }
    })
    .await
}

/// The next delivery of `consumer` (bounded by [`WAIT`]).
pub async fn next_delivery(consumer: &mut Consumer) -> Delivery {
    within("a delivery", consumer.next())
        .await
        .expect("consumer ended before a delivery arrived")
        .expect("consumer reported an error instead of a delivery")
}

/// The next `n` deliveries of `consumer`, in arrival order.
pub async fn deliveries(consumer: &mut Consumer, n: usize) -> Vec<Delivery> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(next_delivery(consumer).await);
    }
    out
}

/// Assert that `consumer` gets no delivery during [`QUIET`] (a bounded wait that only checks
/// for absence).
pub async fn assert_no_delivery(consumer: &mut Consumer) {
    if let Ok(Some(item)) = tokio::time::timeout(QUIET, consumer.next()).await {
        panic!("expected no delivery, got {:?}", item.map(|d| d.data));
    }
}

// ---- a tiny raw AMQP client for what lapin cannot express (server-properties, prefetch_size) ----

/// A raw AMQP 0-9-1 socket: frames are written by hand and methods decoded with
/// `lapin::protocol::parse_class`.
pub struct RawAmqp {
    pub stream: tokio::net::TcpStream,
}

/// Append an AMQP shortstr.
pub fn put_shortstr(buf: &mut Vec<u8>, s: &str) {
    buf.push(s.len() as u8);
    buf.extend_from_slice(s.as_bytes());
}

/// Append an AMQP longstr.
pub fn put_longstr(buf: &mut Vec<u8>, s: &[u8]) {
    buf.extend_from_slice(&(s.len() as u32).to_be_bytes());
    buf.extend_from_slice(s);
}

impl RawAmqp {
    /// Open a TCP connection and send the AMQP 0-9-1 protocol header.
    pub async fn connect(addr: &str) -> RawAmqp {
        use tokio::io::AsyncWriteExt;
        let mut stream = within("tcp connect", tokio::net::TcpStream::connect(addr)).await.expect("tcp connect");
        stream.write_all(b"AMQP\x00\x00\x09\x01").await.expect("write protocol header");
        RawAmqp { stream }
    }

    /// Send one method frame: `args` are the encoded arguments after class and method id.
    pub async fn send_method(&mut self, channel: u16, class: u16, method: u16, args: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let mut payload = Vec::with_capacity(4 + args.len());
        payload.extend_from_slice(&class.to_be_bytes());
        payload.extend_from_slice(&method.to_be_bytes());
        payload.extend_from_slice(args);
        let mut frame = vec![1u8];
        frame.extend_from_slice(&channel.to_be_bytes());
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(&payload);
        frame.push(0xCE);
        self.stream.write_all(&frame).await.expect("write frame");
    }

    /// Read frames until a method frame arrives; returns its channel and decoded method.
    pub async fn read_method(&mut self) -> (u16, lapin::protocol::AMQPClass) {
        use tokio::io::AsyncReadExt;
        within("a method frame", async {
            loop {
                let mut header = [0u8; 7];
                self.stream.read_exact(&mut header).await.expect("read frame header");
                let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]) as usize;
                let mut payload = vec![0u8; size + 1];
                self.stream.read_exact(&mut payload).await.expect("read frame payload");
                assert_eq!(payload[size], 0xCE, "frame end octet");
                if header[0] != 1 {
                    continue; // heartbeat or content frame
                }
                let channel = u16::from_be_bytes([header[1], header[2]]);
                match lapin::protocol::parse_class(&payload[..size]) {
                    Ok((_, class)) => return (channel, class),
                    Err(e) => panic!("undecodable method frame: {e:?}"),
                }
            }
        })
        .await
    }

    /// Read `connection.start`, log in as guest/guest, tune (frame_max 131072, no heartbeat),
    /// open vhost `/` and open channel 1. Returns the `connection.start` the broker sent.
    pub async fn open(addr: &str) -> (RawAmqp, lapin::protocol::connection::Start) {
        use lapin::protocol::{AMQPClass, channel, connection};
        let mut raw = RawAmqp::connect(addr).await;
        let start = match raw.read_method().await {
            (0, AMQPClass::Connection(connection::AMQPMethod::Start(s))) => s,
            other => panic!("expected connection.start, got {other:?}"),
        };
        let mut args = Vec::new();
        args.extend_from_slice(&0u32.to_be_bytes()); // empty client-properties
        put_shortstr(&mut args, "PLAIN");
        put_longstr(&mut args, b"\0guest\0guest");
        put_shortstr(&mut args, "en_US");
        raw.send_method(0, 10, 11, &args).await;
        match raw.read_method().await {
            (0, AMQPClass::Connection(connection::AMQPMethod::Tune(_))) => {}
            other => panic!("expected connection.tune, got {other:?}"),
        }
        let mut args = Vec::new();
        args.extend_from_slice(&2047u16.to_be_bytes());
        args.extend_from_slice(&131072u32.to_be_bytes());
        args.extend_from_slice(&0u16.to_be_bytes());
        raw.send_method(0, 10, 31, &args).await;
        let mut args = Vec::new();
        put_shortstr(&mut args, "/");
        put_shortstr(&mut args, "");
        args.push(0);
        raw.send_method(0, 10, 40, &args).await;
        match raw.read_method().await {
            (0, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))) => {}
            other => panic!("expected connection.open-ok, got {other:?}"),
        }
        let mut args = Vec::new();
        put_shortstr(&mut args, "");
        raw.send_method(1, 20, 10, &args).await;
        match raw.read_method().await {
            (1, AMQPClass::Channel(channel::AMQPMethod::OpenOk(_))) => {}
            other => panic!("expected channel.open-ok, got {other:?}"),
        }
        (raw, start)
    }
}

/// Fetch (no-ack `basic.get`) every ready message of `queue`, returning the bodies as strings.
/// Publishes made earlier on the same channel are routed before the gets are served.
pub async fn get_all(ch: &lapin::Channel, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let got = within("basic.get", ch.basic_get(queue.into(), lapin::options::BasicGetOptions { no_ack: true }))
            .await
            .expect("basic.get");
        match got {
            Some(m) => out.push(String::from_utf8_lossy(&m.delivery.data).to_string()),
            None => return out,
        }
        assert!(out.len() < 10_000, "queue {queue} never runs empty");
    }
}

/// Declare a server-named exclusive queue (deleted with the connection) and return its name.
pub async fn exclusive_queue(ch: &lapin::Channel) -> String {
    ch.queue_declare("".into(), lapin::options::QueueDeclareOptions::exclusive(), lapin::types::FieldTable::default())
        .await
        .expect("declare exclusive queue")
        .name()
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// Helpers for the queue-semantics modules (dead_letter, ttl, length_limits, priorities,
// consumers, rpc, transactions, queue_types, delayed, dedup).
// ---------------------------------------------------------------------------------------------

use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString};

/// A field table from `(key, value)` pairs.
pub fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

/// An AMQP longstr value (`S`).
pub fn lstr(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// An AMQP array (`A`) of longstr values.
pub fn str_array(items: &[&str]) -> AMQPValue {
    AMQPValue::FieldArray(FieldArray::from(items.iter().map(|s| lstr(s)).collect::<Vec<_>>()))
}

/// A message body as text.
pub fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).to_string()
}

/// A synchronous round trip on `ch`: everything the broker sent on this channel before the reply
/// (deliveries, returns, acks) has been processed by lapin when this returns.
pub async fn sync_point(ch: &lapin::Channel) {
    within(
        "a round trip",
        ch.exchange_declare(
            "amq.direct".into(),
            lapin::ExchangeKind::Direct,
            lapin::options::ExchangeDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await
    .expect("passive declare of amq.direct");
}

/// Declare a queue (bounded by [`WAIT`]).
pub async fn declare_queue(
    ch: &lapin::Channel,
    name: &str,
    options: lapin::options::QueueDeclareOptions,
    arguments: FieldTable,
) -> lapin::Result<lapin::Queue> {
    within("queue.declare", ch.queue_declare(name.into(), options, arguments)).await
}

/// Declare an exclusive queue named after `prefix` with `arguments`, returning its name.
pub async fn exclusive_queue_with(ch: &lapin::Channel, prefix: &str, arguments: FieldTable) -> String {
    let name = unique(prefix);
    declare_queue(ch, &name, lapin::options::QueueDeclareOptions::exclusive(), arguments)
        .await
        .expect("declare exclusive queue");
    name
}

/// Declare an auto-delete exchange of `kind` (removed with its last binding).
pub async fn auto_delete_exchange(ch: &lapin::Channel, prefix: &str, kind: lapin::ExchangeKind) -> String {
    let name = unique(prefix);
    within(
        "exchange.declare",
        ch.exchange_declare(
            name.as_str().into(),
            kind,
            lapin::options::ExchangeDeclareOptions { auto_delete: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await
    .expect("declare exchange");
    name
}

/// Bind `queue` to `exchange` with `key`.
pub async fn bind(ch: &lapin::Channel, queue: &str, exchange: &str, key: &str) {
    within(
        "queue.bind",
        ch.queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            lapin::options::QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("queue.bind");
}

/// Publish (without waiting for a confirm, even in confirm mode).
pub async fn publish_props(ch: &lapin::Channel, exchange: &str, key: &str, body: &str, props: lapin::BasicProperties) {
    within(
        "basic.publish",
        ch.basic_publish(
            exchange.into(),
            key.into(),
            lapin::options::BasicPublishOptions::default(),
            body.as_bytes(),
            props,
        ),
    )
    .await
    .expect("basic.publish");
}

/// Publish to the default exchange with default properties.
pub async fn publish_to(ch: &lapin::Channel, queue: &str, body: &str) {
    publish_props(ch, "", queue, body, lapin::BasicProperties::default()).await;
}

/// Publish on a confirm-mode channel and return the broker's confirmation.
pub async fn publish_confirmed_props(
    ch: &lapin::Channel,
    exchange: &str,
    key: &str,
    body: &str,
    props: lapin::BasicProperties,
) -> lapin::Confirmation {
    let confirm = within(
        "basic.publish",
        ch.basic_publish(
            exchange.into(),
            key.into(),
            lapin::options::BasicPublishOptions::default(),
            body.as_bytes(),
            props,
        ),
    )
    .await
    .expect("basic.publish");
    within("publisher confirm", confirm).await.expect("publisher confirm")
}

/// Start a consumer with a server-generated tag.
pub async fn consume_with(
    ch: &lapin::Channel,
    queue: &str,
    options: lapin::options::BasicConsumeOptions,
    arguments: FieldTable,
) -> Consumer {
    within("basic.consume", ch.basic_consume(queue.into(), "".into(), options, arguments)).await.expect("basic.consume")
}

/// Start a manual-ack consumer with a server-generated tag and no arguments.
pub async fn consume(ch: &lapin::Channel, queue: &str) -> Consumer {
    consume_with(ch, queue, lapin::options::BasicConsumeOptions::default(), FieldTable::default()).await
}

/// Ready-message count of `queue` (passive declare).
pub async fn ready_count(ch: &lapin::Channel, queue: &str) -> u32 {
    declare_queue(
        ch,
        queue,
        lapin::options::QueueDeclareOptions { passive: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("passive queue.declare")
    .message_count()
}

/// Poll `check` every 20 ms until it returns true, failing after [`WAIT`]. Used only where the
/// broker emits no event for the state change (e.g. a message expiring at the head of a queue
/// with no consumer), so the test awaits the change itself rather than sleeping a fixed time.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    within(what, async {
        loop {
            if check().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// A header of a message, if present.
pub fn header<'a>(props: &'a lapin::BasicProperties, key: &str) -> Option<&'a AMQPValue> {
    props.headers().as_ref().and_then(|h| h.inner().get(key))
}

/// The `x-death` entries of a dead-lettered message (newest first).
pub fn x_death(props: &lapin::BasicProperties) -> Vec<FieldTable> {
    match header(props, "x-death") {
        Some(AMQPValue::FieldArray(a)) => a
            .as_slice()
            .iter()
            .map(|v| match v {
                AMQPValue::FieldTable(t) => t.clone(),
                other => panic!("x-death entry is not a table: {other:?}"),
            })
            .collect(),
        other => panic!("expected an x-death array, got {other:?}"),
    }
}

/// The value of a longstr field of a table (panics if absent or of another type).
pub fn str_field(t: &FieldTable, key: &str) -> String {
    match t.inner().get(key) {
        Some(AMQPValue::LongString(s)) => text(s.as_bytes()),
        other => panic!("expected longstr '{key}', got {other:?} in {t:?}"),
    }
}
