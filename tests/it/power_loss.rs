//! Power loss (Warren-only): "a confirm means fsync" checked against a model of what a kernel
//! may lose when the power goes, which `kill -9` alone cannot show (the page cache survives a
//! killed process, so a broker that confirms after `write` passes a kill -9 test).
//!
//! The broker runs under the `LD_PRELOAD` library of tests/powercut, which logs, for the files
//! under the data directory, every successful fsync (file length before the call; directory
//! syncs), file and directory creation, rename and truncation. A power cut is: `kill -9`, then
//! [`PowerCut::cut`] replays the log and puts the directory in the worst state the kernel could
//! leave: every file loses what was appended after its last fsync (or, in "torn" cuts, a random
//! part of it), every file or directory created and every rename whose parent directory was not
//! synced since is undone (the file a rename replaced comes back). Unlinks are taken as done
//! (undoing one only brings back settled data). Then the broker restarts on what is left.
//!
//! `POWER_CYCLES` sets the number of cuts of the long test (`make crash-test` runs 20).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::BasicProperties;
use lapin::options::*;
use lapin::types::FieldTable;

use crate::common::*;

/// Build (once per test run) the shim library in its own target directory, so that this
/// nested cargo never waits on the lock of the build that runs the tests.
fn shim() -> PathBuf {
    static SHIM: OnceLock<PathBuf> = OnceLock::new();
    SHIM.get_or_init(|| {
        let exe = PathBuf::from(env!("CARGO_BIN_EXE_warren"));
        let target = exe.parent().and_then(Path::parent).expect("target dir").join("powercut");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "--quiet", "-p", "warren-powercut", "--manifest-path"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .expect("run cargo to build the power-cut shim");
        assert!(st.success(), "building tests/powercut failed");
        let lib = target.join("debug").join("libwarren_powercut.so");
        assert!(lib.exists(), "{} was built", lib.display());
        lib
    })
    .clone()
}

/// What the kernel may drop of the bytes appended after a file's last fsync.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Loss {
    /// All of them.
    All,
    /// A random part of the tail (torn writes), chosen with this seed.
    Torn(u64),
}

/// A data directory the broker only ever sees through the shim, and the model of it.
struct PowerCut {
    dir: TempDir,
    /// File sizes when the broker started: on disk, durable.
    baseline: HashMap<PathBuf, u64>,
}

#[derive(Debug)]
enum Pending {
    Create(PathBuf),
    Mkdir(PathBuf),
    /// `prev`: the durable size of the file the rename replaced (kept at `saved`).
    Rename {
        from: PathBuf,
        to: PathBuf,
        saved: Option<PathBuf>,
        prev: Option<u64>,
    },
}

/// `p` with its prefix `from` replaced by `to` (a directory was renamed).
fn rebase(p: &mut PathBuf, from: &Path, to: &Path) {
    if let Ok(rest) = p.strip_prefix(from) {
        *p = if rest.as_os_str().is_empty() { to.to_path_buf() } else { to.join(rest) };
    }
}

/// Everything recorded under `from` now lives under `to`.
fn move_tree(durable: &mut HashMap<PathBuf, u64>, pending: &mut [Pending], from: &Path, to: &Path) {
    let moved: Vec<PathBuf> = durable.keys().filter(|k| k.starts_with(from)).cloned().collect();
    for k in moved {
        let v = durable.remove(&k).unwrap_or(0);
        let mut n = k;
        rebase(&mut n, from, to);
        durable.insert(n, v);
    }
    for p in pending {
        match p {
            Pending::Create(x) | Pending::Mkdir(x) => rebase(x, from, to),
            Pending::Rename { from: f, to: t, .. } => {
                rebase(f, from, to);
                rebase(t, from, to);
            }
        }
    }
}

impl Pending {
    fn dir(&self) -> Option<&Path> {
        match self {
            Pending::Create(p) | Pending::Mkdir(p) | Pending::Rename { to: p, .. } => p.parent(),
        }
    }
}

/// What a cut did.
#[derive(Debug, Default)]
struct CutReport {
    bytes_dropped: u64,
    undone: usize,
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

impl PowerCut {
    fn new() -> PowerCut {
        let dir = TempDir::new();
        std::fs::create_dir_all(dir.0.join("data")).unwrap();
        std::fs::create_dir_all(dir.0.join("saved")).unwrap();
        PowerCut { dir, baseline: HashMap::new() }
    }

    fn data(&self) -> PathBuf {
        self.dir.0.join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.0.join("powercut.log")
    }

    /// Start the broker under the shim, on what the last cut left.
    fn start(&mut self, extra: &[&str]) -> Broker {
        let mut files = Vec::new();
        walk(&self.data(), &mut files);
        self.baseline =
            files.into_iter().map(|f| (f.metadata().map_or(0, |m| m.len()), f)).map(|(l, f)| (f, l)).collect();
        let _ = std::fs::remove_file(self.log());
        let env = [
            ("LD_PRELOAD", shim().into_os_string()),
            ("WARREN_POWERCUT_LOG", self.log().into_os_string()),
            ("WARREN_POWERCUT_ROOT", self.data().into_os_string()),
            ("WARREN_POWERCUT_SAVE", self.dir.0.join("saved").into_os_string()),
        ];
        Broker::start_in_env(&self.data(), extra, &env)
    }

    /// The power goes: kill the broker, then leave on disk only what the kernel had to keep.
    fn cut(&self, b: &mut Broker, loss: Loss) -> CutReport {
        b.kill9();
        let log = std::fs::read_to_string(self.log()).unwrap_or_default();
        let mut durable = self.baseline.clone();
        let mut pending: Vec<Pending> = Vec::new();
        for line in log.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            let path = |i: usize| PathBuf::from(f[i]);
            let num = |i: usize| f[i].parse::<u64>().expect("a number in the power-cut log");
            match f[0] {
                "C" => {
                    durable.insert(path(1), 0);
                    pending.push(Pending::Create(path(1)));
                }
                "M" => pending.push(Pending::Mkdir(path(1))),
                "S" => {
                    let d = durable.entry(path(1)).or_insert(0);
                    *d = (*d).max(num(2));
                }
                "T" => {
                    let d = durable.entry(path(1)).or_insert(0);
                    *d = (*d).min(num(2));
                }
                "D" => {
                    let dir = path(1);
                    pending.retain(|p| p.dir() != Some(dir.as_path()));
                }
                "R" => {
                    let (from, to) = (path(1), path(2));
                    let saved = (f[3] != "-").then(|| path(3));
                    let prev = if saved.is_some() { durable.remove(&to) } else { None };
                    // A file, or a directory with everything in it.
                    move_tree(&mut durable, &mut pending, &from, &to);
                    pending.push(Pending::Rename { from, to, saved, prev });
                }
                other => panic!("unknown power-cut log entry {other:?}"),
            }
        }
        let mut report = CutReport { undone: pending.len(), ..Default::default() };
        // Namespace changes never made durable are lost, newest first.
        while let Some(p) = pending.pop() {
            match p {
                Pending::Create(p) => {
                    let _ = std::fs::remove_file(&p);
                    durable.remove(&p);
                }
                Pending::Mkdir(p) => {
                    let _ = std::fs::remove_dir_all(&p);
                }
                Pending::Rename { from, to, saved, prev } => {
                    if to.exists() && std::fs::rename(&to, &from).is_ok() {
                        move_tree(&mut durable, &mut pending, &to, &from);
                    }
                    if let Some(saved) = saved {
                        std::fs::rename(&saved, &to).expect("bring back the file a lost rename replaced");
                        durable.insert(to, prev.unwrap_or(0));
                    }
                }
            }
        }
        // Every file keeps what was fsynced, and of the rest what the loss mode allows.
        let mut files = Vec::new();
        walk(&self.data(), &mut files);
        let mut seed = match loss {
            Loss::All => 0,
            Loss::Torn(s) => s | 1,
        };
        for f in files {
            let keep = *durable.get(&f).unwrap_or_else(|| panic!("{} appeared unseen by the shim", f.display()));
            let len = f.metadata().map_or(0, |m| m.len());
            if len <= keep {
                continue;
            }
            let keep = match loss {
                Loss::All => keep,
                Loss::Torn(_) => {
                    seed = xorshift(seed);
                    keep + seed % (len - keep + 1)
                }
            };
            let file = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
            file.set_len(keep).unwrap();
            report.bytes_dropped += len - keep;
        }
        for e in std::fs::read_dir(self.dir.0.join("saved")).unwrap().flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        report
    }
}

fn xorshift(mut s: u64) -> u64 {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    s
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions { durable: true, ..Default::default() }
}

/// One delivery as the consumer saw it.
#[derive(Debug, Clone, Copy)]
struct Seen {
    id: u64,
    redelivered: bool,
    /// When, on the clock shared with the publisher's sends.
    at: u64,
}

/// What the clients saw over all the broker's lives.
#[derive(Default)]
struct Outcome {
    confirmed: BTreeSet<u64>,
    /// Every delivery, per broker life (the last entry: the drain after the last cut).
    lives: Vec<Vec<Seen>>,
    bytes_dropped: u64,
}

impl Outcome {
    fn lost(&self) -> Vec<u64> {
        let got: HashSet<u64> = self.lives.iter().flatten().map(|s| s.id).collect();
        self.confirmed.iter().filter(|id| !got.contains(id)).copied().collect()
    }

    /// Within one broker life, deliveries come in queue order: ids only grow (the queue holds
    /// them in publish order, and nothing is requeued while the broker lives).
    fn fifo_violations(&self) -> Vec<(u64, u64)> {
        let mut bad = Vec::new();
        for life in &self.lives {
            for w in life.windows(2) {
                if w[1].id <= w[0].id {
                    bad.push((w[0].id, w[1].id));
                }
            }
        }
        bad
    }

    fn duplicates(&self) -> usize {
        let all: Vec<u64> = self.lives.iter().flatten().map(|s| s.id).collect();
        all.len() - all.iter().collect::<HashSet<_>>().len()
    }
}

/// Publishers with confirms and an acking consumer on a durable queue; the power is cut at a
/// random moment, `cycles` times. `covered` checks the redelivered flag: a message the consumer
/// had seen before the publisher sent a message that was then confirmed must come back with
/// redelivered=true (its delivery mark went to disk with that confirm's sync).
async fn power_cycles(cycles: u64, extra: &[&str], loss: impl Fn(u64) -> Loss) -> (Outcome, Vec<String>) {
    const PREFETCH: u16 = 50;
    const WINDOW: u64 = 50;
    let mut pc = PowerCut::new();
    let mut out = Outcome::default();
    let mut covered: HashSet<u64> = HashSet::new();
    let mut flag_errors = Vec::new();
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    for cycle in 0..=cycles {
        let mut b = pc.start(extra);
        let clock = Arc::new(AtomicU64::new(0));
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (pub_conn, pch) = b.channel().await;
        pch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
        declare_queue(&pch, "power", durable(), FieldTable::default()).await.expect("declare");
        if cycle == cycles {
            // The last life only drains what the last cut left.
            let mut life = Vec::new();
            loop {
                let got = within("basic.get", pch.basic_get("power".into(), BasicGetOptions { no_ack: true }))
                    .await
                    .expect("basic.get");
                let Some(m) = got else { break };
                let at = clock.fetch_add(1, Ordering::SeqCst);
                life.push(Seen {
                    id: text(&m.delivery.data).parse().expect("an id"),
                    redelivered: m.delivery.redelivered,
                    at,
                });
            }
            check_flags(&life, &covered, &mut flag_errors);
            out.lives.push(life);
            break;
        }
        let (con_conn, cch) = b.channel().await;
        cch.basic_qos(PREFETCH, BasicQosOptions::default()).await.expect("qos");
        let mut consumer = consume(&cch, "power").await;
        // (id, clock when sent) of each confirmed message of this life.
        let confirmed: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
        let start = cycle * 1_000_000;
        let (conf, clk) = (confirmed.clone(), clock.clone());
        let publisher = tokio::spawn(async move {
            let mut id = start;
            loop {
                let mut pending = Vec::new();
                for _ in 0..WINDOW {
                    let at = clk.fetch_add(1, Ordering::SeqCst);
                    let body = id.to_string();
                    match pch
                        .basic_publish(
                            "".into(),
                            "power".into(),
                            BasicPublishOptions::default(),
                            body.as_bytes(),
                            persistent(),
                        )
                        .await
                    {
                        Ok(c) => pending.push((id, at, c)),
                        Err(_) => return,
                    }
                    id += 1;
                }
                for (id, at, c) in pending {
                    match c.await {
                        Ok(c) if c.is_ack() => conf.lock().unwrap().push((id, at)),
                        _ => return,
                    }
                }
            }
        });
        let (s, clk) = (seen.clone(), clock.clone());
        let consuming = tokio::spawn(async move {
            while let Some(Ok(d)) = consumer.next().await {
                let at = clk.fetch_add(1, Ordering::SeqCst);
                let id: u64 = text(&d.data).parse().expect("a published id");
                s.lock().unwrap().push(Seen { id, redelivered: d.redelivered, at });
                if d.ack(BasicAckOptions::default()).await.is_err() {
                    return;
                }
            }
        });
        // The moment of the cut is the point of the test: 50 to 550 ms into the life.
        seed = xorshift(seed);
        tokio::time::sleep(Duration::from_millis(50 + seed % 500)).await;
        let report = pc.cut(&mut b, loss(cycle));
        out.bytes_dropped += report.bytes_dropped;
        publisher.abort();
        consuming.abort();
        let _ = publisher.await;
        let _ = consuming.await;
        drop((pub_conn, con_conn));
        let life = std::mem::take(&mut *seen.lock().unwrap());
        let confirmed = std::mem::take(&mut *confirmed.lock().unwrap());
        check_flags(&life, &covered, &mut flag_errors);
        // Deliveries seen before a later send that was confirmed are marked on disk.
        let last_sync = confirmed.iter().map(|(_, at)| *at).max();
        if std::env::var("POWER_DEBUG").is_ok() {
            eprintln!(
                "life {cycle}: last confirmed send at {last_sync:?}; seen {:?}",
                life.iter().map(|s| (s.id, s.at, s.redelivered)).collect::<Vec<_>>()
            );
        }
        covered.extend(life.iter().filter(|s| last_sync.is_some_and(|t| s.at < t)).map(|s| s.id));
        out.confirmed.extend(confirmed.iter().map(|(id, _)| *id));
        eprintln!(
            "power cut {cycle} ({:?}): {} confirmed so far, {} bytes dropped, {} namespace changes undone",
            loss(cycle),
            out.confirmed.len(),
            report.bytes_dropped,
            report.undone
        );
        out.lives.push(life);
    }
    (out, flag_errors)
}

/// A message seen before a confirmed later send must not come back as never delivered.
fn check_flags(life: &[Seen], covered: &HashSet<u64>, errors: &mut Vec<String>) {
    for s in life {
        if !s.redelivered && covered.contains(&s.id) {
            errors.push(format!("message {} was delivered before the cut but came back with redelivered=false", s.id));
        }
    }
}

fn cycles_from_env(default: u64) -> u64 {
    std::env::var("POWER_CYCLES").ok().and_then(|c| c.parse().ok()).unwrap_or(default)
}

/// The promise: with `storage.fsync = true` (the default) no confirmed message is lost to a
/// power cut; what survives comes in publish order; delivered messages come back redelivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_messages_survive_power_loss() {
    let cycles = cycles_from_env(3);
    let (out, flag_errors) =
        power_cycles(cycles, &[], |c| if c % 2 == 0 { Loss::All } else { Loss::Torn(0x9E37_79B9 + c) }).await;
    assert!(!out.confirmed.is_empty(), "the publisher got confirms in {cycles} cycles");
    assert!(out.bytes_dropped > 0, "the cuts dropped unsynced bytes (else they tested nothing)");
    let lost = out.lost();
    assert!(lost.is_empty(), "{} confirmed messages lost, e.g. {:?}", lost.len(), &lost[..lost.len().min(10)]);
    let fifo = out.fifo_violations();
    assert!(fifo.is_empty(), "out of order after recovery: {:?}", &fifo[..fifo.len().min(10)]);
    assert!(flag_errors.is_empty(), "{}", flag_errors[..flag_errors.len().min(10)].join("\n"));
    eprintln!("{} confirmed, 0 lost, {} duplicates after {cycles} power cuts", out.confirmed.len(), out.duplicates());
}

/// The harness's self-check: a broker that confirms after `write` without fsync
/// (`storage.fsync = false`) must be caught losing confirmed messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_power_cut_catches_confirms_sent_before_fsync() {
    let dir = TempDir::new();
    let config = dir.0.join("nofsync.toml");
    std::fs::write(&config, "[storage]\nfsync = false\n").unwrap();
    let (out, _) = power_cycles(2, &["--config", config.to_str().unwrap()], |_| Loss::All).await;
    assert!(!out.confirmed.is_empty(), "the publisher got confirms");
    let lost = out.lost();
    assert!(!lost.is_empty(), "without fsync, {} confirmed messages all survived the power cuts", out.confirmed.len());
    eprintln!("self-check: without fsync the cuts lost {} of {} confirmed messages", lost.len(), out.confirmed.len());
}

/// Delivered-but-unacknowledged messages come back redelivered=true after a power cut, the
/// others redelivered=false, all in order: the delivery marks go to disk with the next confirm.
#[tokio::test]
async fn after_a_power_cut_delivered_messages_come_back_redelivered() {
    let mut pc = PowerCut::new();
    let mut b = pc.start(&[]);
    {
        let (_conn, ch) = b.channel().await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
        declare_queue(&ch, "marks", durable(), FieldTable::default()).await.expect("declare");
        for i in 0..10 {
            assert!(publish_confirmed_props(&ch, "", "marks", &format!("m{i}"), persistent()).await.is_ack());
        }
        for i in 0..4 {
            let got =
                ch.basic_get("marks".into(), BasicGetOptions { no_ack: false }).await.expect("get").expect("a message");
            assert_eq!(text(&got.delivery.data), format!("m{i}"));
        }
        // A confirmed publish after the deliveries: its sync carries their marks.
        assert!(publish_confirmed_props(&ch, "", "marks", "m10", persistent()).await.is_ack());
        pc.cut(&mut b, Loss::All);
    }
    let b = pc.start(&[]);
    let (_conn, ch) = b.channel().await;
    declare_queue(&ch, "marks", durable(), FieldTable::default()).await.expect("declare");
    let mut got = Vec::new();
    while let Some(m) = ch.basic_get("marks".into(), BasicGetOptions { no_ack: true }).await.expect("get") {
        got.push((text(&m.delivery.data), m.delivery.redelivered));
    }
    let want: Vec<(String, bool)> = (0..=10).map(|i| (format!("m{i}"), i < 4)).collect();
    assert_eq!(got, want, "every confirmed message, in order, redelivered exactly when it had been delivered");
}
