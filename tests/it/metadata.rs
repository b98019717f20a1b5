//! Durable metadata (Warren-only: these tests restart, kill and damage the broker they start):
//! arguments of every field type come back exactly, and a definitions file that is lost,
//! damaged or edited never costs a queue's messages.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use amq_protocol::types::generation::gen_field_table;
use lapin::options::*;
use lapin::types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString};
use lapin::{BasicProperties, ExchangeKind};

use crate::common::*;

use warren::protocol::fields::MAX_NESTING;

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions { durable: true, ..Default::default() }
}

fn durable_x() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions { durable: true, ..Default::default() }
}

/// The vhost `/` directory of a data directory.
fn vhost_dir(data: &Path) -> PathBuf {
    data.join("vhosts").join("%2F")
}

fn definitions_path(data: &Path) -> PathBuf {
    vhost_dir(data).join("definitions.json")
}

/// What is stored: `definitions.json` with the journal of later changes
/// (`definitions.journal`, one JSON record per line) replayed over it, here independently of
/// the broker's code.
fn definitions(data: &Path) -> serde_json::Value {
    let mut d: serde_json::Value = match std::fs::read_to_string(definitions_path(data)) {
        Ok(text) => serde_json::from_str(&text).expect("JSON"),
        Err(_) => serde_json::json!({"version": 2, "exchanges": [], "queues": [], "bindings": []}),
    };
    let journal = std::fs::read_to_string(vhost_dir(data).join("definitions.journal")).unwrap_or_default();
    for line in journal.lines() {
        let r: serde_json::Value = serde_json::from_str(line).expect("a journal record");
        let list = |d: &mut serde_json::Value, k: &str| d[k].as_array_mut().expect("a list").clone();
        let name = r["name"].clone();
        let same_binding = |b: &serde_json::Value| {
            ["source", "destination", "destination_type", "routing_key", "arguments"].iter().all(|k| b[*k] == r[*k])
        };
        let set = |d: &mut serde_json::Value, k: &str, keep: &dyn Fn(&serde_json::Value) -> bool, add: bool| {
            let mut l: Vec<serde_json::Value> = list(d, k).into_iter().filter(|e| keep(e)).collect();
            if add {
                let mut e = r.clone();
                e.as_object_mut().unwrap().remove("op");
                l.push(e);
            }
            d[k] = l.into();
        };
        match r["op"].as_str().expect("op") {
            "put_exchange" => set(&mut d, "exchanges", &|e| e["name"] != name, true),
            "put_queue" => set(&mut d, "queues", &|e| e["name"] != name, true),
            "put_binding" => set(&mut d, "bindings", &|b| !same_binding(b), true),
            "delete_binding" => set(&mut d, "bindings", &|b| !same_binding(b), false),
            "delete_queue" => {
                set(&mut d, "queues", &|e| e["name"] != name, false);
                set(&mut d, "bindings", &|b| !(b["destination_type"] == "queue" && b["destination"] == name), false);
            }
            "delete_exchange" => {
                set(&mut d, "exchanges", &|e| e["name"] != name, false);
                let gone = |b: &serde_json::Value| {
                    b["source"] == name || (b["destination_type"] == "exchange" && b["destination"] == name)
                };
                set(&mut d, "bindings", &|b| !gone(b), false);
            }
            other => panic!("unknown journal op {other}"),
        }
    }
    d
}

/// The AMQP wire encoding of a table, as the definitions file stores it (hex).
fn wire_hex(t: &FieldTable) -> String {
    let bytes = cookie_factory::gen_simple(gen_field_table(t), Vec::new()).expect("encode");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decode a stored arguments table with the protocol library (not the broker's code).
fn decode_hex(hex: &str) -> FieldTable {
    let bytes: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
    let (rest, t) = amq_protocol::types::parsing::parse_field_table(&bytes[..]).expect("a stored table decodes");
    assert!(rest.is_empty());
    t
}

/// The stored arguments of the entity of `kind` ("exchanges", "queues") named `name`.
fn stored_args(data: &Path, kind: &str, name: &str) -> String {
    let d = definitions(data);
    let e = d[kind].as_array().unwrap().iter().find(|e| e["name"] == name);
    e.unwrap_or_else(|| panic!("{kind} '{name}' not in definitions: {d}"))["arguments"].as_str().unwrap().to_string()
}

/// Every file under `dir` with its contents (what must survive untouched).
fn snapshot_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), std::fs::read(e.path()).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// A value of `levels` nested arrays and tables (alternating), with a NaN at the bottom.
fn nested(levels: usize) -> AMQPValue {
    let mut v = AMQPValue::Double(f64::from_bits(0x7ff8_0000_0000_0bad));
    for level in (1..=levels).rev() {
        v = if level % 2 == 0 {
            AMQPValue::FieldArray(FieldArray::from(vec![v]))
        } else {
            AMQPValue::FieldTable(table(&[("k", v)]))
        };
    }
    v
}

/// Arguments holding every field type, the values JSON cannot represent among them.
fn every_type() -> FieldTable {
    let inner =
        table(&[("i64", AMQPValue::LongLongInt(i64::MIN)), ("nan", AMQPValue::Float(f32::from_bits(0xffc0_0001)))]);
    table(&[
        ("t", AMQPValue::Boolean(true)),
        ("b", AMQPValue::ShortShortInt(-128)),
        ("B", AMQPValue::ShortShortUInt(255)),
        ("s", AMQPValue::ShortInt(-32768)),
        ("u", AMQPValue::ShortUInt(65535)),
        ("I", AMQPValue::LongInt(i32::MIN)),
        ("i", AMQPValue::LongUInt(u32::MAX)),
        ("l", AMQPValue::LongLongInt(i64::MAX)),
        ("f-nan", AMQPValue::Float(f32::NAN)),
        ("f-inf", AMQPValue::Float(f32::INFINITY)),
        ("f-neg-inf", AMQPValue::Float(f32::NEG_INFINITY)),
        ("f-neg-zero", AMQPValue::Float(-0.0)),
        ("d-nan", AMQPValue::Double(f64::from_bits(0x7ff8_0000_dead_beef))),
        ("d-neg-nan", AMQPValue::Double(f64::from_bits(0xfff8_0000_0000_0001))),
        ("d-inf", AMQPValue::Double(f64::INFINITY)),
        ("d-neg-inf", AMQPValue::Double(f64::NEG_INFINITY)),
        ("D", AMQPValue::DecimalValue(DecimalValue { scale: 255, value: u32::MAX })),
        ("T", AMQPValue::Timestamp(u64::MAX)),
        ("S-binary", AMQPValue::LongString(LongString::from(vec![0xffu8, 0xfe, 0x00, 0xc3]))),
        ("S-text", lstr("héllo")),
        ("x", AMQPValue::ByteArray(ByteArray::from(vec![0u8, 0xff, 0x80]))),
        ("V", AMQPValue::Void),
        (
            "A",
            AMQPValue::FieldArray(FieldArray::from(vec![
                AMQPValue::Void,
                AMQPValue::Double(f64::NAN),
                AMQPValue::FieldTable(inner.clone()),
            ])),
        ),
        ("F", AMQPValue::FieldTable(inner)),
        ("deep", nested(MAX_NESTING - 1)), // with the arguments table itself: MAX_NESTING
    ])
}

/// A broker whose log (stderr) the test reads.
struct Logged {
    addr: String,
    child: Child,
    logs: mpsc::Receiver<String>,
}

impl Logged {
    fn start(data: &Path) -> Logged {
        let mut child = spawn_warren(data);
        let logs = forward_lines(child.stderr.take().unwrap());
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = loop {
            let line = out.next().expect("warren exited before it was listening").unwrap();
            if let Some(a) = line.strip_prefix("listening on ") {
                break a.trim().to_string();
            }
        };
        std::thread::spawn(move || for _ in out {});
        Logged { addr, child, logs }
    }

    async fn channel(&self) -> (lapin::Connection, lapin::Channel) {
        let uri = format!("amqp://guest:guest@{}/%2f", self.addr);
        let conn = lapin::Connection::connect(&uri, lapin::ConnectionProperties::default()).await.expect("connect");
        let ch = conn.create_channel().await.expect("channel");
        (conn, ch)
    }

    /// Wait for a log line containing every one of `parts`.
    fn expect_log(&self, parts: &[&str]) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.logs.recv_timeout(left) {
                Ok(line) if parts.iter().all(|p| line.contains(p)) => return line,
                Ok(_) => {}
                Err(_) => panic!("no log line with {parts:?}"),
            }
        }
    }

    fn terminate(mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        assert!(self.child.wait().unwrap().success());
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn forward_lines(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// The `warren` binary on `data`, on free loopback ports, with its output piped.
fn spawn_warren(data: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_warren"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn warren")
}

/// Start `warren` on `data` where it must refuse to start: returns its exit status and log.
fn start_refused(data: &Path) -> (std::process::ExitStatus, String) {
    let mut child = spawn_warren(data);
    let logs = forward_lines(child.stderr.take().unwrap());
    // stdout ends when the process exits; a broker that starts anyway says it is listening.
    for line in BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok) {
        if line.contains("listening on") {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the broker started on damaged definitions");
        }
    }
    let status = child.wait().unwrap();
    let log: Vec<String> = logs.iter().collect();
    (status, log.join("\n"))
}

async fn publish_persistent(ch: &lapin::Channel, queue: &str, n: usize, prefix: &str) {
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    for i in 0..n {
        let props = BasicProperties::default().with_delivery_mode(2);
        assert!(publish_confirmed_props(ch, "", queue, &format!("{prefix}{i}"), props).await.is_ack());
    }
}

fn expected_bodies(n: usize, prefix: &str) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// The reproduction: a NaN argument used to make the whole file unreadable, the vhost start
/// empty, and every queue directory (with confirmed messages) be deleted.
#[tokio::test]
async fn a_nan_argument_survives_a_restart_and_costs_no_messages() {
    let dir = TempDir::new();
    let nan = f64::from_bits(0x7ff8_0000_0000_0042);
    let args = table(&[("x-foo", AMQPValue::Double(nan))]);
    {
        let b = Broker::start_in(&dir.0, &[]);
        let (_c, ch) = b.channel().await;
        declare_queue(&ch, "nan-q", durable(), args.clone()).await.expect("declare nan-q");
        declare_queue(&ch, "data-q", durable(), FieldTable::default()).await.expect("declare data-q");
        publish_persistent(&ch, "data-q", 100, "m").await;
        let mut b = b;
        assert!(b.terminate().unwrap().success());
    }
    let b = Broker::start_in(&dir.0, &[]);
    let (_c, ch) = b.channel().await;
    assert_eq!(get_all(&ch, "data-q").await, expected_bodies(100, "m"));
    let passive = QueueDeclareOptions { passive: true, ..durable() };
    declare_queue(&ch, "nan-q", passive, FieldTable::default()).await.expect("nan-q restored");
    declare_queue(&ch, "nan-q", durable(), args.clone()).await.expect("same arguments: equivalent");
    assert_eq!(stored_args(&dir.0, "queues", "nan-q"), wire_hex(&args));
    let stored = decode_hex(&stored_args(&dir.0, "queues", "nan-q"));
    match stored.inner().get("x-foo") {
        Some(AMQPValue::Double(d)) => assert_eq!(d.to_bits(), nan.to_bits(), "the same NaN"),
        other => panic!("x-foo is {other:?}"),
    }
}

/// Declare exchanges, a queue and bindings (queue and exchange-to-exchange) with `args`.
async fn declare_all(ch: &lapin::Channel, args: &FieldTable, ttl: i32) -> lapin::Result<()> {
    let mut qargs = args.clone();
    qargs.insert("x-message-ttl".into(), AMQPValue::LongInt(ttl));
    ch.exchange_declare("meta-x".into(), ExchangeKind::Direct, durable_x(), args.clone()).await?;
    ch.exchange_declare("meta-src".into(), ExchangeKind::Fanout, durable_x(), args.clone()).await?;
    ch.queue_declare("meta-q".into(), durable(), qargs).await?;
    ch.queue_bind("meta-q".into(), "meta-x".into(), "k".into(), QueueBindOptions::default(), args.clone()).await?;
    ch.exchange_bind("meta-x".into(), "meta-src".into(), "k".into(), ExchangeBindOptions::default(), args.clone())
        .await?;
    Ok(())
}

fn assert_stored_exactly(data: &Path, args: &FieldTable) {
    let want = wire_hex(args);
    assert_eq!(stored_args(data, "exchanges", "meta-x"), want);
    assert_eq!(stored_args(data, "exchanges", "meta-src"), want);
    let mut qargs = args.clone();
    qargs.insert("x-message-ttl".into(), AMQPValue::LongInt(60_000));
    assert_eq!(stored_args(data, "queues", "meta-q"), wire_hex(&qargs));
    let d = definitions(data);
    let bindings = d["bindings"].as_array().unwrap();
    assert_eq!(bindings.len(), 2, "{d}");
    for b in bindings {
        assert_eq!(b["arguments"].as_str().unwrap(), want, "binding {b}");
    }
    assert_eq!(decode_hex(&want).inner().len(), args.inner().len());
}

/// After a restart: everything is there with the same arguments, and routes as before.
async fn check_restored(b: &Broker, args: &FieldTable) {
    let (_c, ch) = b.channel().await;
    declare_all(&ch, args, 60_000).await.expect("redeclare with the same arguments is equivalent");
    let e = expect_amqp_error(
        declare_queue(&ch, "meta-q", durable(), table(&[("x-message-ttl", AMQPValue::LongInt(5))])).await,
    );
    assert_eq!(e.0, 406);
    assert!(e.1.contains("x-message-ttl") && e.1.contains("current is '60000'"), "{}", e.1);
    let (_c, ch) = b.channel().await;
    publish_props(&ch, "meta-src", "k", "routed", BasicProperties::default()).await;
    sync_point(&ch).await;
    assert_eq!(get_all(&ch, "meta-q").await, ["routed"], "both bindings restored");
}

#[tokio::test]
async fn every_field_type_comes_back_byte_for_byte_after_restart_and_kill9() {
    let dir = TempDir::new();
    let args = every_type();
    assert_eq!(warren::protocol::fields::depth(&AMQPValue::FieldTable(args.clone())), MAX_NESTING);
    let mut b = Broker::start_in(&dir.0, &[]);
    {
        let (_c, ch) = b.channel().await;
        declare_all(&ch, &args, 60_000).await.expect("declare with every field type");
    }
    assert_stored_exactly(&dir.0, &args);

    assert!(b.terminate().unwrap().success());
    let mut b = Broker::start_in(&dir.0, &[]);
    check_restored(&b, &args).await;
    assert_stored_exactly(&dir.0, &args);

    b.kill9();
    let b = Broker::start_in(&dir.0, &[]);
    check_restored(&b, &args).await;
    assert_stored_exactly(&dir.0, &args);
    // Unbinding with the same (NaN-holding) arguments finds the binding.
    let (_c, ch) = b.channel().await;
    ch.queue_unbind("meta-q".into(), "meta-x".into(), "k".into(), args.clone()).await.expect("unbind");
    publish_props(&ch, "meta-x", "k", "unrouted", BasicProperties::default()).await;
    sync_point(&ch).await;
    assert!(get_all(&ch, "meta-q").await.is_empty(), "the binding is gone");
    assert_eq!(definitions(&dir.0)["bindings"].as_array().unwrap().len(), 1);
    // One level more is refused on the wire (501), so nothing deeper is ever stored.
    let (_c, ch) = b.channel().await;
    let too_deep = table(&[("deep", nested(MAX_NESTING))]);
    let e = expect_amqp_error(declare_queue(&ch, "too-deep", durable(), too_deep).await);
    assert_eq!(e.0, 501, "{e:?}");
    assert!(!definitions(&dir.0)["queues"].as_array().unwrap().iter().any(|q| q["name"] == "too-deep"));
}

#[tokio::test]
async fn damaged_definitions_stop_the_start_and_delete_nothing() {
    let dir = TempDir::new();
    {
        let mut b = Broker::start_in(&dir.0, &[]);
        let (_c, ch) = b.channel().await;
        declare_queue(&ch, "kept", durable(), table(&[("x-foo", AMQPValue::Float(f32::NAN))])).await.unwrap();
        publish_persistent(&ch, "kept", 20, "k").await;
        assert!(b.terminate().unwrap().success());
    }
    let path = definitions_path(&dir.0);
    let good = std::fs::read(&path).unwrap();
    let queues = vhost_dir(&dir.0).join("queues");
    let before = snapshot_files(&queues);
    assert!(before.iter().any(|(p, _)| p.extension().is_some_and(|e| e == "msgs")), "{before:?}");

    for damaged in [good[..good.len() / 2].to_vec(), b"\x00garbage{{".to_vec(), Vec::new()] {
        std::fs::write(&path, &damaged).unwrap();
        let (status, log) = start_refused(&dir.0);
        assert!(!status.success());
        assert!(log.contains(&path.display().to_string()), "the message names the file: {log}");
        assert!(log.contains("move it aside") && log.contains("restore"), "and says how to recover: {log}");
        assert_eq!(std::fs::read(&path).unwrap(), damaged, "the file is left as it was");
        assert_eq!(snapshot_files(&queues), before, "no queue file deleted or changed");
    }

    // Moving it aside starts the vhost empty, and keeps the queue's data.
    std::fs::rename(&path, path.with_extension("json.damaged")).unwrap();
    {
        let b = Logged::start(&dir.0);
        b.expect_log(&["without a definition kept", "queue=kept"]);
        let (_c, ch) = b.channel().await;
        let passive = QueueDeclareOptions { passive: true, ..durable() };
        assert_eq!(expect_amqp_error(declare_queue(&ch, "kept", passive, FieldTable::default()).await).0, 404);
        b.terminate();
    }
    assert_eq!(snapshot_files(&queues), before);

    // With the file restored, every message is back.
    std::fs::write(&path, &good).unwrap();
    let b = Broker::start_in(&dir.0, &[]);
    let (_c, ch) = b.channel().await;
    assert_eq!(get_all(&ch, "kept").await, expected_bodies(20, "k"));
}

#[tokio::test]
async fn an_orphan_queue_directory_is_kept_logged_and_never_reused_by_a_transient_queue() {
    let dir = TempDir::new();
    {
        let mut b = Broker::start_in(&dir.0, &[]);
        let (_c, ch) = b.channel().await;
        declare_queue(&ch, "orph", durable(), FieldTable::default()).await.unwrap();
        declare_queue(&ch, "other", durable(), FieldTable::default()).await.unwrap();
        publish_persistent(&ch, "orph", 10, "o").await;
        assert!(b.terminate().unwrap().success());
    }
    let path = definitions_path(&dir.0);
    let good = std::fs::read_to_string(&path).unwrap();
    let mut d: serde_json::Value = serde_json::from_str(&good).unwrap();
    d["queues"].as_array_mut().unwrap().retain(|q| q["name"] != "orph");
    std::fs::write(&path, serde_json::to_string(&d).unwrap()).unwrap();
    let queues = vhost_dir(&dir.0).join("queues");
    let before = snapshot_files(&queues);

    {
        let b = Logged::start(&dir.0);
        let line = b.expect_log(&["without a definition kept", "queue=orph"]);
        assert!(line.contains(&queues.display().to_string()), "the log names the directory: {line}");
        let (_c, ch) = b.channel().await;
        // A non-durable queue of the same name pages elsewhere: the orphan stays untouched.
        declare_queue(&ch, "orph", QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
        publish_to(&ch, "orph", "transient").await;
        sync_point(&ch).await;
        assert_eq!(get_all(&ch, "orph").await, ["transient"]);
        b.terminate();
    }
    assert_eq!(snapshot_files(&queues), before, "the orphan directory is kept as it was");

    // A new durable queue of that name sets the leftover aside (under orphaned/), not deleting it.
    {
        let b = Logged::start(&dir.0);
        let (_c, ch) = b.channel().await;
        declare_queue(&ch, "orph", durable(), FieldTable::default()).await.unwrap();
        b.expect_log(&["leftover directory", "queue=orph"]);
        assert!(get_all(&ch, "orph").await.is_empty(), "the new queue starts empty");
        b.terminate();
    }
    let orphaned = vhost_dir(&dir.0).join("orphaned");
    let kept = snapshot_files(&orphaned);
    assert!(kept.iter().any(|(p, c)| p.ends_with("name") && c == b"orph"), "{kept:?}");
    let kept_msgs: Vec<_> = kept.iter().filter(|(p, _)| p.extension().is_some_and(|e| e == "msgs")).collect();
    let old_msgs: Vec<_> = before.iter().filter(|(p, _)| p.extension().is_some_and(|e| e == "msgs")).collect();
    assert_eq!(
        kept_msgs.iter().map(|(_, c)| c).collect::<Vec<_>>(),
        old_msgs.iter().map(|(_, c)| c).collect::<Vec<_>>()
    );
}

/// A data directory from before this format: unversioned definitions (a NaN written as null)
/// and queue directories without a name file. Everything comes back, and is rewritten.
#[tokio::test]
async fn a_data_directory_of_the_first_format_is_migrated() {
    let dir = TempDir::new();
    {
        let mut b = Broker::start_in(&dir.0, &[]);
        let (_c, ch) = b.channel().await;
        declare_queue(&ch, "old-q", durable(), FieldTable::default()).await.unwrap();
        publish_persistent(&ch, "old-q", 10, "old").await;
        assert!(b.terminate().unwrap().success());
    }
    let queues = vhost_dir(&dir.0).join("queues");
    let qdirs: Vec<PathBuf> = std::fs::read_dir(&queues).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(qdirs.len(), 1);
    std::fs::remove_file(qdirs[0].join("name")).unwrap();
    let legacy = r#"{"exchanges":[{"name":"old-x","type":"direct","auto_delete":false,"internal":false,"arguments":{}}],
        "queues":[{"name":"old-q","auto_delete":false,"arguments":{"x-foo":{"Double":null},"x-max-length":{"LongInt":50}}}],
        "bindings":[{"source":"old-x","destination":"old-q","destination_type":"queue","routing_key":"k","arguments":{}}]}"#;
    std::fs::write(definitions_path(&dir.0), legacy).unwrap();

    let b = Broker::start_in(&dir.0, &[]);
    let (_c, ch) = b.channel().await;
    assert_eq!(get_all(&ch, "old-q").await, expected_bodies(10, "old"));
    assert_eq!(std::fs::read(qdirs[0].join("name")).unwrap(), b"old-q", "the directory is adopted");
    let e = expect_amqp_error(
        declare_queue(&ch, "old-q", durable(), table(&[("x-max-length", AMQPValue::LongInt(7))])).await,
    );
    assert!(e.1.contains("current is '50'"), "arguments restored: {}", e.1);
    let (_c, ch) = b.channel().await;
    publish_props(&ch, "old-x", "k", "bound", BasicProperties::default()).await;
    sync_point(&ch).await;
    assert_eq!(get_all(&ch, "old-q").await, ["bound"]);
    // The next change writes the current format, the NaN still there.
    declare_queue(&ch, "new-q", durable(), FieldTable::default()).await.unwrap();
    assert_eq!(definitions(&dir.0)["version"], 2);
    let stored = decode_hex(&stored_args(&dir.0, "queues", "old-q"));
    assert!(matches!(stored.inner().get("x-foo"), Some(AMQPValue::Double(d)) if d.is_nan()));
}

/// Stored arguments that no longer validate do not lose the queue or its messages.
#[tokio::test]
async fn a_queue_with_arguments_that_no_longer_validate_is_still_restored() {
    let dir = TempDir::new();
    {
        let mut b = Broker::start_in(&dir.0, &[]);
        let (_c, ch) = b.channel().await;
        declare_queue(&ch, "strict", durable(), FieldTable::default()).await.unwrap();
        publish_persistent(&ch, "strict", 10, "s").await;
        assert!(b.terminate().unwrap().success());
    }
    let bad = table(&[("x-max-length", lstr("not a number"))]);
    let path = definitions_path(&dir.0);
    let mut d = definitions(&dir.0);
    d["queues"][0]["arguments"] = wire_hex(&bad).into();
    std::fs::write(&path, serde_json::to_string(&d).unwrap()).unwrap();

    let b = Logged::start(&dir.0);
    b.expect_log(&["no longer valid", "queue=strict"]);
    let (_c, ch) = b.channel().await;
    assert_eq!(get_all(&ch, "strict").await, expected_bodies(10, "s"));
    declare_queue(&ch, "other", durable(), FieldTable::default()).await.unwrap();
    assert_eq!(stored_args(&dir.0, "queues", "strict"), wire_hex(&bad), "kept as stored");
    b.terminate();
}

#[tokio::test]
async fn stored_exchanges_and_bindings_that_cannot_be_restored_stay_in_the_file() {
    // E.g. a definitions file naming a plugin's exchange type Warren does not have: the exchange
    // and its bindings are not restored (logged), and saving later changes must not drop them.
    let dir = TempDir::new();
    {
        let mut b = Broker::start_in(&dir.0, &[]);
        let (_c, ch) = b.channel().await;
        ch.exchange_declare("hashed".into(), ExchangeKind::Direct, durable_x(), FieldTable::default()).await.unwrap();
        declare_queue(&ch, "target", durable(), FieldTable::default()).await.unwrap();
        bind(&ch, "target", "hashed", "k").await;
        assert!(b.terminate().unwrap().success());
    }
    let path = definitions_path(&dir.0);
    let mut d = definitions(&dir.0);
    d["exchanges"][0]["type"] = "x-consistent-hash".into();
    std::fs::write(&path, serde_json::to_string(&d).unwrap()).unwrap();

    let b = Logged::start(&dir.0);
    b.expect_log(&["durable exchange not restored", "exchange=hashed"]);
    b.expect_log(&["durable binding not restored", "source=hashed"]);
    let (_c, ch) = b.channel().await;
    // A later change saves the file: what could not be restored is still in it.
    declare_queue(&ch, "other", durable(), FieldTable::default()).await.unwrap();
    let saved = definitions(&dir.0);
    assert!(saved["queues"].as_array().unwrap().iter().any(|q| q["name"] == "other"), "{saved}");
    let x = saved["exchanges"].as_array().unwrap().iter().find(|x| x["name"] == "hashed");
    assert_eq!(x.map(|x| x["type"].clone()), Some("x-consistent-hash".into()), "{saved}");
    let bound =
        saved["bindings"].as_array().unwrap().iter().any(|b| b["source"] == "hashed" && b["destination"] == "target");
    assert!(bound, "{saved}");
    b.terminate();
}

/// Topology changes after the last snapshot live in the definitions journal: they survive
/// kill -9, a torn last record is ignored, and a damaged record stops the start without
/// changing or deleting anything.
#[tokio::test]
async fn the_definitions_journal_survives_kill9_and_a_damaged_record_stops_the_start() {
    let dir = TempDir::new();
    {
        let mut b = Broker::start_in(&dir.0, &[]);
        let (_c, ch) = b.channel().await;
        ch.exchange_declare("jx".into(), ExchangeKind::Topic, durable_x(), FieldTable::default()).await.unwrap();
        for q in ["j1", "j2", "j3"] {
            declare_queue(&ch, q, durable(), FieldTable::default()).await.unwrap();
            bind(&ch, q, "jx", &format!("{q}.#")).await;
        }
        ch.queue_unbind("j1".into(), "jx".into(), "j1.#".into(), FieldTable::default()).await.unwrap();
        ch.queue_delete("j2".into(), Default::default()).await.unwrap();
        publish_persistent(&ch, "j3", 5, "m").await;
        b.kill9();
    }
    let journal = vhost_dir(&dir.0).join("definitions.journal");
    let records = std::fs::read_to_string(&journal).unwrap();
    assert!(records.lines().count() >= 8, "the changes are in the journal: {records}");
    // A crash in the middle of an append: a torn last line.
    std::fs::write(&journal, format!("{records}{{\"op\":\"put_queue\",\"na")).unwrap();
    {
        let mut b = Broker::start_in(&dir.0, &[]);
        let (_c, ch) = b.channel().await;
        let passive = QueueDeclareOptions { passive: true, ..durable() };
        declare_queue(&ch, "j1", passive, FieldTable::default()).await.unwrap();
        assert_eq!(expect_amqp_error(declare_queue(&ch, "j2", passive, FieldTable::default()).await).0, 404);
        let (_c, ch) = b.channel().await;
        publish_props(&ch, "jx", "j1.a", "unbound", BasicProperties::default()).await;
        publish_props(&ch, "jx", "j3.a", "bound", BasicProperties::default()).await;
        sync_point(&ch).await;
        assert!(get_all(&ch, "j1").await.is_empty(), "the unbind survived");
        let mut want = expected_bodies(5, "m");
        want.push("bound".into());
        assert_eq!(get_all(&ch, "j3").await, want);
        b.kill9();
    }
    // The start after the crash wrote a new snapshot; damage a record of a fresh journal.
    {
        let mut b = Broker::start_in(&dir.0, &[]);
        let (_c, ch) = b.channel().await;
        declare_queue(&ch, "j4", durable(), FieldTable::default()).await.unwrap();
        b.kill9();
    }
    let good = std::fs::read_to_string(&journal).unwrap();
    assert!(good.contains("j4"), "{good}");
    let damaged = format!("{{\"op\":\"put_queue\",\"name\":7}}\n{good}");
    std::fs::write(&journal, &damaged).unwrap();
    let snapshot = std::fs::read(definitions_path(&dir.0)).unwrap();
    let queues = vhost_dir(&dir.0).join("queues");
    let before = snapshot_files(&queues);
    let (status, log) = start_refused(&dir.0);
    assert!(!status.success());
    assert!(log.contains("definitions journal") && log.contains("line 1"), "the message says where: {log}");
    assert!(log.contains("move it aside"), "and how to recover: {log}");
    assert_eq!(std::fs::read_to_string(&journal).unwrap(), damaged, "the journal is left as it was");
    assert_eq!(std::fs::read(definitions_path(&dir.0)).unwrap(), snapshot, "and the snapshot");
    assert_eq!(snapshot_files(&queues), before, "no queue file deleted or changed");
}
