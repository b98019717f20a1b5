//! Durability (Warren-only: these tests restart or kill the broker process they started):
//! what survives a graceful restart, confirmed messages across `kill -9`, and recovery around
//! damaged segment files.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, ExchangeKind};

use crate::common::*;

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions { durable: true, ..Default::default() }
}

async fn confirm_channel(b: &Broker) -> (lapin::Connection, lapin::Channel) {
    let (conn, ch) = b.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    (conn, ch)
}

/// Every segment file of every queue under `data_dir` (durable queues in `queues/`,
/// non-durable ones paging in `transient/`).
fn segment_files(data_dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(vhosts) = std::fs::read_dir(data_dir.join("vhosts")) else { return out };
    for v in vhosts.flatten() {
        let areas = ["queues", "transient"].map(|a| std::fs::read_dir(v.path().join(a)));
        for q in areas.into_iter().flatten().flatten().flatten() {
            for f in std::fs::read_dir(q.path()).into_iter().flatten().flatten() {
                if f.path().extension().is_some_and(|e| e == ext) {
                    out.push(f.path());
                }
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn a_graceful_restart_keeps_exactly_what_rabbitmq_keeps() {
    let dir = TempDir::new();
    let mut b = Broker::start_in(&dir.0, &[]);
    {
        let (_conn, ch) = confirm_channel(&b).await;
        ch.exchange_declare(
            "dx".into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("durable exchange");
        ch.exchange_declare(
            "tx".into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("transient exchange");
        declare_queue(&ch, "dq", durable(), table(&[("x-max-length", lapin::types::AMQPValue::LongInt(100))]))
            .await
            .expect("durable queue");
        declare_queue(&ch, "tq", QueueDeclareOptions::default(), FieldTable::default()).await.expect("transient queue");
        bind(&ch, "dq", "dx", "k").await;
        for (q, body, props) in [
            ("dq", "p1", persistent()),
            ("dq", "t1", BasicProperties::default()),
            ("dq", "p2", persistent()),
            ("tq", "p3", persistent()),
        ] {
            assert!(publish_confirmed_props(&ch, "", q, body, props).await.is_ack());
        }
        // p1 is delivered and left unacknowledged when the broker stops.
        let got = ch.basic_get("dq".into(), BasicGetOptions { no_ack: false }).await.expect("get").expect("p1");
        assert_eq!(text(&got.delivery.data), "p1");
        let status = b.terminate().expect("a Warren process");
        assert!(status.success(), "graceful shutdown exits 0: {status:?}");
    }
    let b = Broker::start_in(&dir.0, &[]);
    let (_conn, ch) = confirm_channel(&b).await;
    // Durable queue with its arguments: a redeclare with other arguments is refused.
    let (code, _) = expect_amqp_error(declare_queue(&ch, "dq", durable(), FieldTable::default()).await);
    assert_eq!(code, 406, "x-max-length was restored with the queue");
    let (_conn, ch) = confirm_channel(&b).await;
    let first = ch.basic_get("dq".into(), BasicGetOptions { no_ack: true }).await.expect("get").expect("p1 kept");
    assert_eq!(text(&first.delivery.data), "p1");
    assert!(first.delivery.redelivered, "delivered before the restart: redelivered");
    let second = ch.basic_get("dq".into(), BasicGetOptions { no_ack: true }).await.expect("get").expect("p2 kept");
    assert_eq!(text(&second.delivery.data), "p2");
    assert!(!second.delivery.redelivered, "never delivered: not redelivered");
    assert!(get_all(&ch, "dq").await.is_empty(), "the transient message t1 is gone");
    // The durable exchange and its binding to the durable queue are back; the rest is gone.
    assert!(publish_confirmed_props(&ch, "dx", "k", "after", persistent()).await.is_ack());
    assert_eq!(get_all(&ch, "dq").await, ["after"]);
    let (code, _) = expect_amqp_error(
        declare_queue(&ch, "tq", QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
            .await,
    );
    assert_eq!(code, 404, "a non-durable queue does not survive");
    let (_conn, ch) = confirm_channel(&b).await;
    let (code, _) = expect_amqp_error(
        ch.exchange_declare(
            "tx".into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await,
    );
    assert_eq!(code, 404, "a non-durable exchange does not survive");
}

/// The crash test: publishers with confirms and acking consumers on a durable queue, the broker
/// killed with SIGKILL at a random moment, restarted, again and again. Every confirmed message
/// must come out at least once; duplicates are bounded by what was in flight at each kill;
/// within one broker life messages come in publish order (FIFO); a message the consumer saw
/// before the publisher sent a message that was then confirmed comes back redelivered=true.
/// `CRASH_CYCLES` sets the number of cycles (`make crash-test` runs 100).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_messages_survive_kill_9() {
    let cycles: u64 = std::env::var("CRASH_CYCLES").ok().and_then(|c| c.parse().ok()).unwrap_or(4);
    const PREFETCH: u16 = 50;
    const WINDOW: u64 = 50;
    let dir = TempDir::new();
    let confirmed: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let consumed: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    // One clock for the publisher's sends and the consumer's deliveries (to order them).
    let clock = Arc::new(AtomicU64::new(0));
    // Ids seen before a later send that was confirmed: their delivery marks are on disk.
    let mut covered: HashSet<u64> = HashSet::new();
    let mut problems: Vec<String> = Vec::new();
    let mut next_id = 0u64;
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    for cycle in 0..cycles {
        let mut b = Broker::start_in(&dir.0, &[]);
        let (pub_conn, pch) = confirm_channel(&b).await;
        declare_queue(&pch, "crash", durable(), FieldTable::default()).await.expect("declare");
        let (con_conn, cch) = b.channel().await;
        cch.basic_qos(PREFETCH, BasicQosOptions::default()).await.expect("qos");
        let mut consumer = consume(&cch, "crash").await;

        let start = next_id;
        next_id += 1_000_000; // each cycle publishes from its own id range
        let (conf, clk) = (confirmed.clone(), clock.clone());
        let last_confirmed_send = Arc::new(AtomicU64::new(0));
        let last_send = last_confirmed_send.clone();
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
                            "crash".into(),
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
                        Ok(c) if c.is_ack() => {
                            conf.lock().unwrap().insert(id);
                            last_send.fetch_max(at, Ordering::SeqCst);
                        }
                        _ => return,
                    }
                }
            }
        });
        let (seen, clk) = (consumed.clone(), clock.clone());
        let life: Arc<Mutex<Vec<(u64, bool, u64)>>> = Arc::default();
        let this_life = life.clone();
        let consuming = tokio::spawn(async move {
            while let Some(Ok(d)) = consumer.next().await {
                let at = clk.fetch_add(1, Ordering::SeqCst);
                let id: u64 = text(&d.data).parse().expect("a published id");
                *seen.lock().unwrap().entry(id).or_default() += 1;
                this_life.lock().unwrap().push((id, d.redelivered, at));
                if d.ack(BasicAckOptions::default()).await.is_err() {
                    return;
                }
            }
        });
        // The crash moment is the point of the test (not a wait for something to happen):
        // anywhere from 50 ms to 550 ms into the cycle.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(50 + seed % 500)).await;
        b.kill9();
        // The clients' tasks are done with; lapin does not always end a consumer stream when
        // its socket dies, so stop them rather than wait (what they recorded stands).
        publisher.abort();
        consuming.abort();
        let _ = publisher.await;
        let _ = consuming.await;
        drop((pub_conn, con_conn));
        let life = std::mem::take(&mut *life.lock().unwrap());
        check_life(&life, &covered, &mut problems);
        let synced_at = last_confirmed_send.load(Ordering::SeqCst);
        covered.extend(life.iter().filter(|(_, _, at)| *at < synced_at).map(|(id, _, _)| *id));
        eprintln!("crash cycle {cycle}: {} confirmed so far", confirmed.lock().unwrap().len());
    }
    // Drain what is left after the last crash.
    let b = Broker::start_in(&dir.0, &[]);
    let (_conn, ch) = b.channel().await;
    declare_queue(&ch, "crash", durable(), FieldTable::default()).await.expect("declare");
    let mut life = Vec::new();
    while let Some(m) = ch.basic_get("crash".into(), BasicGetOptions { no_ack: true }).await.expect("basic.get") {
        let id: u64 = text(&m.delivery.data).parse().expect("a published id");
        *consumed.lock().unwrap().entry(id).or_default() += 1;
        life.push((id, m.delivery.redelivered, 0));
    }
    check_life(&life, &covered, &mut problems);
    assert!(problems.is_empty(), "{}", problems[..problems.len().min(10)].join("\n"));
    let confirmed = confirmed.lock().unwrap();
    let consumed = consumed.lock().unwrap();
    assert!(!confirmed.is_empty(), "the publisher got confirms in {cycles} cycles");
    let lost: Vec<&u64> = confirmed.iter().filter(|id| !consumed.contains_key(id)).collect();
    assert!(lost.is_empty(), "{} confirmed messages lost, e.g. {:?}", lost.len(), &lost[..lost.len().min(10)]);
    let duplicates: u32 = consumed.values().map(|n| n - 1).sum();
    let bound = (cycles as u32) * (PREFETCH as u32 + 64);
    assert!(duplicates <= bound, "{duplicates} redeliveries exceed the in-flight bound {bound}");
    eprintln!("{} confirmed, {} consumed ids, {duplicates} redeliveries", confirmed.len(), consumed.len());
}

/// One broker life's deliveries (id, redelivered, clock): ids only grow (FIFO: the queue holds
/// them in publish order and nothing is requeued while the broker lives), and a message known
/// to have been delivered before is flagged redelivered.
fn check_life(life: &[(u64, bool, u64)], covered: &HashSet<u64>, problems: &mut Vec<String>) {
    for w in life.windows(2) {
        if w[1].0 <= w[0].0 {
            problems.push(format!("out of order: {} delivered after {}", w[1].0, w[0].0));
        }
    }
    for (id, redelivered, _) in life {
        if !redelivered && covered.contains(id) {
            problems.push(format!("message {id} had been delivered but came back with redelivered=false"));
        }
    }
}

#[tokio::test]
async fn damaged_segments_are_recovered_around() {
    let dir = TempDir::new();
    let mut b = Broker::start_in(&dir.0, &[]);
    {
        let (_conn, ch) = confirm_channel(&b).await;
        declare_queue(&ch, "damaged", durable(), FieldTable::default()).await.expect("declare");
        for body in ["message-1", "message-2", "message-3", "message-4"] {
            assert!(publish_confirmed_props(&ch, "", "damaged", body, persistent()).await.is_ack());
        }
    }
    b.terminate().expect("a Warren process");
    let segs = segment_files(&dir.0, "msgs");
    assert_eq!(segs.len(), 1, "{segs:?}");
    let mut data = std::fs::read(&segs[0]).unwrap();
    // Flip a byte of the second message's body, and tear the last record in half.
    let at = data.windows(9).position(|w| w == b"message-2").unwrap();
    data[at + 2] ^= 0x55;
    data.truncate(data.len() - 4);
    std::fs::write(&segs[0], &data).unwrap();
    let mut b = Broker::start_in_logging(&dir.0, &[], "info");
    let (_conn, ch) = b.channel().await;
    declare_queue(&ch, "damaged", durable(), FieldTable::default()).await.expect("declare");
    assert_eq!(get_all(&ch, "damaged").await, ["message-1", "message-3"], "the intact messages are served");
    assert!(b.is_running());
    // Both repairs are logged: the skipped record, the cut tail, and the summary line.
    b.wait_for_log("the skipped corrupt record", |l| l.contains("WARN") && l.contains("corrupt message record"));
    b.wait_for_log("the cut tail", |l| l.contains("WARN") && l.contains("torn segment tail"));
    let line = b.wait_for_log("the recovery summary", |l| l.contains("queue recovered"));
    assert_eq!((log_field(&line, "messages"), log_field(&line, "skipped_corrupt")), ("2".into(), "1".into()), "{line}");
}

#[tokio::test]
async fn a_missing_acks_file_means_redelivery_not_loss() {
    let dir = TempDir::new();
    let mut b = Broker::start_in(&dir.0, &[]);
    {
        let (_conn, ch) = confirm_channel(&b).await;
        declare_queue(&ch, "noacks", durable(), FieldTable::default()).await.expect("declare");
        for body in ["a", "b"] {
            assert!(publish_confirmed_props(&ch, "", "noacks", body, persistent()).await.is_ack());
        }
        let got = ch.basic_get("noacks".into(), BasicGetOptions { no_ack: false }).await.expect("get").expect("a");
        got.delivery.ack(BasicAckOptions::default()).await.expect("ack");
        sync_point(&ch).await;
    }
    b.terminate().expect("a Warren process");
    let acks = segment_files(&dir.0, "acks");
    assert!(!acks.is_empty(), "the ack was recorded");
    for f in acks {
        std::fs::remove_file(f).unwrap();
    }
    let b = Broker::start_in(&dir.0, &[]);
    let (_conn, ch) = b.channel().await;
    declare_queue(&ch, "noacks", durable(), FieldTable::default()).await.expect("declare");
    assert_eq!(get_all(&ch, "noacks").await, ["a", "b"]);
}

#[tokio::test]
async fn delayed_messages_survive_a_restart() {
    let dir = TempDir::new();
    let mut b = Broker::start_in(&dir.0, &[]);
    {
        let (conn, ch) = confirm_channel(&b).await;
        ch.exchange_declare(
            "delayed".into(),
            ExchangeKind::Custom("x-delayed-message".into()),
            ExchangeDeclareOptions { durable: true, ..Default::default() },
            table(&[("x-delayed-type", lstr("direct"))]),
        )
        .await
        .expect("delayed exchange");
        declare_queue(&ch, "later", durable(), FieldTable::default()).await.expect("declare");
        bind(&ch, "later", "delayed", "k").await;
        let props =
            BasicProperties::default().with_headers(table(&[("x-delay", lapin::types::AMQPValue::LongInt(3000))]));
        // A transient message: the delayed-message store keeps it anyway, as the plugin does.
        assert!(publish_confirmed_props(&ch, "delayed", "k", "held", props).await.is_ack());
        assert!(get_all(&ch, "later").await.is_empty(), "not routed before its delay");
        conn.close(200, "bye".into()).await.expect("close");
    }
    b.terminate().expect("a Warren process");
    let b = Broker::start_in(&dir.0, &[]);
    let (_conn, ch) = b.channel().await;
    // Had it been routed before the restart, this transient message would be gone now.
    assert_eq!(ready_count(&ch, "later").await, 0, "still held after the restart");
    let mut consumer = consume(&ch, "later").await;
    let d = next_delivery(&mut consumer).await;
    assert_eq!(text(&d.data), "held", "routed after the restart, when due");
}

/// Free bytes on the file system holding `path` (via `df`).
fn free_bytes(path: &Path) -> u64 {
    let out = std::process::Command::new("df").args(["--output=avail", "-B1"]).arg(path).output().expect("run df");
    String::from_utf8_lossy(&out.stdout).lines().nth(1).and_then(|l| l.trim().parse().ok()).expect("df output")
}

/// The disk alarm, on a real file system: the limit is set just below the current free space,
/// a filler file takes that space away, then gives it back.
#[tokio::test]
async fn low_disk_blocks_publishers_until_space_returns() {
    let dir = TempDir::new();
    let limit = free_bytes(&dir.0).saturating_sub(256 << 20);
    let config = dir.0.join("warren.toml");
    std::fs::write(&config, format!("[storage]\ndisk_free_limit = {limit}\n")).unwrap();
    let data = dir.0.join("data");
    let b = Broker::start_in(&data, &["--config", config.to_str().unwrap()]);
    let (publisher, pch) = confirm_channel(&b).await;
    let mut pub_events = events(&publisher);
    declare_queue(&pch, "disk", QueueDeclareOptions::default(), FieldTable::default()).await.expect("declare");
    assert!(publish_confirmed_props(&pch, "", "disk", "before", BasicProperties::default()).await.is_ack());

    let filler = dir.0.join("filler");
    let st = std::process::Command::new("fallocate").args(["-l", "512M"]).arg(&filler).status().expect("fallocate");
    assert!(st.success(), "fallocate a 512 MiB filler");
    // Keep publishing until the broker, which checks free space every second, blocks us.
    let mut sent = 1;
    let mut pending = Vec::new();
    within("connection.blocked", async {
        loop {
            tokio::select! {
                ev = pub_events.next() => match ev {
                    Some(lapin::Event::ConnectionBlocked(reason)) => {
                        assert_eq!(reason, "low on disk");
                        return;
                    }
                    Some(_) => {}
                    None => panic!("event stream ended"),
                },
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    let c = pch
                        .basic_publish("".into(), "disk".into(), BasicPublishOptions::default(), b"during", BasicProperties::default())
                        .await
                        .expect("publish");
                    pending.push(c);
                    sent += 1;
                }
            }
        }
    })
    .await;
    // A connection that does not publish keeps working: it can declare and drain the queue.
    let (_consumer, cch) = b.channel().await;
    let got = cch.basic_get("disk".into(), BasicGetOptions { no_ack: true }).await.expect("get").expect("a message");
    assert_eq!(text(&got.delivery.data), "before");

    std::fs::remove_file(&filler).unwrap();
    within("connection.unblocked", async {
        loop {
            match pub_events.next().await {
                Some(lapin::Event::ConnectionUnblocked) => return,
                Some(_) => {}
                None => panic!("event stream ended"),
            }
        }
    })
    .await;
    for c in pending {
        assert!(within("a confirm after unblocking", c).await.expect("confirm").is_ack());
    }
    // Everything published during the alarm was kept, none lost.
    assert_eq!(get_all(&cch, "disk").await.len(), sent - 1);
}

/// A backlog larger than a queue's memory budget (8 MiB without consumers) is paged to disk
/// and every message comes back intact, transient ones included.
#[tokio::test]
async fn a_backlog_beyond_memory_is_paged_and_delivered_intact() {
    let b = Broker::start();
    let (_conn, ch) = confirm_channel(&b).await;
    declare_queue(&ch, "paged", QueueDeclareOptions::default(), FieldTable::default()).await.expect("declare");
    let body = |i: usize| format!("{i:06}").repeat(512 * 1024 / 6);
    for i in 0..40 {
        assert!(publish_confirmed_props(&ch, "", "paged", &body(i), BasicProperties::default()).await.is_ack());
    }
    let paged: u64 = segment_files(&b.data_dir().expect("a Warren process"), "msgs")
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    assert!(paged > 4 << 20, "bodies beyond the budget went to disk ({paged} bytes)");
    let got = get_all(&ch, "paged").await;
    assert_eq!(got.len(), 40);
    for (i, g) in got.iter().enumerate() {
        assert!(*g == body(i), "message {i} intact");
    }
}

/// TTLs keep counting across a restart: a queue with `x-message-ttl` and a per-message
/// `expiration`, both durable with persistent messages and a durable dead-letter exchange. The
/// broker is stopped (gracefully, or with `kill -9`) after most of the TTL has passed; after the
/// restart each message is dead-lettered (reason `expired`) when its original TTL runs out, not
/// a full TTL after the restart. With `down_until`, the broker stays down until that long after
/// publishing (past the TTL): the messages are then dead-lettered as soon as it is back.
async fn ttl_counts_across_a_restart(kill: bool, down_until: Option<Duration>) {
    const TTL: Duration = Duration::from_millis(4000);
    const BEFORE_STOP: Duration = Duration::from_millis(2500);
    let dir = TempDir::new();
    let mut b = Broker::start_in(&dir.0, &[]);
    let published;
    {
        let (conn, ch) = confirm_channel(&b).await;
        ch.exchange_declare(
            "ttl-dlx".into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("durable dead-letter exchange");
        declare_queue(&ch, "ttl-dead", durable(), FieldTable::default()).await.expect("declare ttl-dead");
        let dlx = ("x-dead-letter-exchange", lstr("ttl-dlx"));
        let queue_ttl = ("x-message-ttl", lapin::types::AMQPValue::LongInt(TTL.as_millis() as i32));
        declare_queue(&ch, "queue-ttl", durable(), table(&[dlx.clone(), queue_ttl])).await.expect("declare queue-ttl");
        declare_queue(&ch, "message-ttl", durable(), table(&[dlx])).await.expect("declare message-ttl");
        for q in ["queue-ttl", "message-ttl"] {
            bind(&ch, "ttl-dead", "ttl-dlx", q).await;
        }
        published = std::time::Instant::now();
        assert!(publish_confirmed_props(&ch, "", "queue-ttl", "by queue ttl", persistent()).await.is_ack());
        let expiring = persistent().with_expiration(TTL.as_millis().to_string().into());
        assert!(publish_confirmed_props(&ch, "", "message-ttl", "by expiration", expiring).await.is_ack());
        // Let most of the TTL pass while the broker runs: this is the time that must count.
        tokio::time::sleep(BEFORE_STOP.saturating_sub(published.elapsed())).await;
        for q in ["queue-ttl", "message-ttl"] {
            assert_eq!(ready_count(&ch, q).await, 1, "{q}: not expired before the stop");
        }
        // Close cleanly, so the graceful stop does not wait for an unanswered connection.close.
        conn.close(200, "bye".into()).await.expect("close");
    }
    let stopping = published.elapsed();
    if kill {
        b.kill9();
    } else {
        assert!(b.terminate().expect("a Warren process").success());
    }
    if let Some(until) = down_until {
        // Time passing while the broker is down is what this case is about.
        tokio::time::sleep(until.saturating_sub(published.elapsed())).await;
    }
    let b = Broker::start_in(&dir.0, &[]);
    let (_conn, ch) = b.channel().await;
    let mut dead = consume(&ch, "ttl-dead").await;
    let consuming = published.elapsed();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let d = next_delivery(&mut dead).await;
        let at = published.elapsed();
        let death = &x_death(&d.properties)[0];
        assert_eq!(str_field(death, "reason"), "expired");
        seen.push((str_field(death, "queue"), text(&d.data)));
        let body = text(&d.data);
        assert!(at >= TTL - Duration::from_millis(300), "{body} expired early, {at:?} after publishing");
        // Due at TTL after publishing, or at once if the restart took longer than that.
        assert!(
            at < TTL.max(consuming) + Duration::from_millis(1000),
            "{body} expired {at:?} after publishing (TTL {TTL:?}, consuming from {consuming:?})"
        );
        // A TTL restarted by the restart would run out no earlier than `stopping + TTL`.
        assert!(
            at + Duration::from_millis(1000) < stopping + TTL,
            "{body} expired {at:?} after publishing: the TTL restarted with the broker (stopped at {stopping:?})"
        );
        d.acker.ack(BasicAckOptions::default()).await.expect("ack");
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            ("message-ttl".to_string(), "by expiration".to_string()),
            ("queue-ttl".to_string(), "by queue ttl".to_string())
        ]
    );
}

#[tokio::test]
async fn ttls_keep_counting_across_a_graceful_restart() {
    ttl_counts_across_a_restart(false, None).await;
}

#[tokio::test]
async fn ttls_keep_counting_across_kill_9() {
    ttl_counts_across_a_restart(true, None).await;
}

#[tokio::test]
async fn ttls_that_ran_out_while_the_broker_was_down_expire_when_it_is_back() {
    ttl_counts_across_a_restart(true, Some(Duration::from_millis(4300))).await;
}

/// The numbers in a logged line's `key=value` field (quotes allowed around the value).
fn log_field(line: &str, key: &str) -> String {
    let at = line.find(&format!(" {key}=")).unwrap_or_else(|| panic!("no {key}= in log line: {line}"));
    line[at + key.len() + 2..].split_whitespace().next().unwrap_or("").trim_matches('"').to_string()
}

/// Recovery logs what it recovered, per queue: the number of messages, the MB read and the
/// seconds taken.
#[tokio::test]
async fn recovery_logs_messages_megabytes_and_seconds() {
    const N: usize = 200;
    const BODY: usize = 10_000;
    let dir = TempDir::new();
    let mut b = Broker::start_in(&dir.0, &[]);
    {
        let (_conn, ch) = confirm_channel(&b).await;
        declare_queue(&ch, "logged", durable(), FieldTable::default()).await.expect("declare");
        let body = "x".repeat(BODY);
        let confirms: Vec<_> = {
            let mut v = Vec::new();
            for _ in 0..N {
                v.push(
                    ch.basic_publish(
                        "".into(),
                        "logged".into(),
                        BasicPublishOptions::default(),
                        body.as_bytes(),
                        persistent(),
                    )
                    .await
                    .expect("publish"),
                );
            }
            v
        };
        for c in confirms {
            assert!(within("confirm", c).await.expect("confirm").is_ack());
        }
    }
    assert!(b.terminate().expect("a Warren process").success());
    let b = Broker::start_in_logging(&dir.0, &[], "info");
    let line = b.wait_for_log("the queue recovery line", |l| l.contains("queue recovered"));
    assert_eq!(log_field(&line, "messages"), N.to_string(), "{line}");
    let mb: f64 = log_field(&line, "mb").parse().unwrap_or_else(|e| panic!("mb is not a number ({e}): {line}"));
    let bodies_mb = (N * BODY) as f64 / 1_048_576.0;
    assert!(mb >= bodies_mb - 0.1 && mb <= bodies_mb * 1.2, "mb={mb}, bodies alone are {bodies_mb:.2} MB: {line}");
    let seconds: f64 =
        log_field(&line, "seconds").parse().unwrap_or_else(|e| panic!("seconds is not a number ({e}): {line}"));
    assert!((0.0..10.0).contains(&seconds), "{line}");
    assert_eq!(log_field(&line, "skipped_corrupt"), "0", "{line}");
    let (_conn, ch) = b.channel().await;
    assert_eq!(ready_count(&ch, "logged").await, N as u32, "what the line counts is what is served");
}

/// Segment files whose messages are all acknowledged are deleted (small segments from the
/// config file, so a few dozen messages span many of them).
#[tokio::test]
async fn fully_acknowledged_segments_are_deleted() {
    let b = Broker::start_with_config("[storage]\nsegment_size = 4096\n");
    let data_dir = b.data_dir().expect("a Warren process");
    let (_conn, ch) = confirm_channel(&b).await;
    declare_queue(&ch, "settled", durable(), FieldTable::default()).await.expect("declare");
    let body = "s".repeat(1000);
    for _ in 0..40 {
        assert!(publish_confirmed_props(&ch, "", "settled", &body, persistent()).await.is_ack());
    }
    let written = segment_files(&data_dir, "msgs").len();
    assert!(written >= 8, "40 KB in 4 KiB segments spans many files, found {written}");
    let mut consumer = consume(&ch, "settled").await;
    for d in deliveries(&mut consumer, 40).await {
        d.acker.ack(BasicAckOptions::default()).await.expect("ack");
    }
    sync_point(&ch).await;
    // No event announces a deleted file: wait for the directory to shrink.
    eventually("settled segments deleted", || {
        let left = segment_files(&data_dir, "msgs").len();
        async move { left <= 1 }
    })
    .await;
}

/// Messages that expired while the broker was down are dead-lettered after the restart through
/// the restored bindings: each restored queue waits for its vhost's whole topology before it
/// acts (before, a queue task could expire its messages while the bindings were still being
/// restored, and the dead letters were dropped as unroutable).
#[tokio::test]
async fn dead_letters_of_messages_expired_while_down_reach_restored_bindings() {
    const QUEUES: usize = 60;
    let dir = TempDir::new();
    let mut b = Broker::start_in(&dir.0, &[]);
    {
        let (_conn, ch) = confirm_channel(&b).await;
        let durable_x = ExchangeDeclareOptions { durable: true, ..Default::default() };
        ch.exchange_declare("down-dlx".into(), ExchangeKind::Fanout, durable_x, FieldTable::default()).await.unwrap();
        declare_queue(&ch, "down-sink", durable(), FieldTable::default()).await.unwrap();
        bind(&ch, "down-sink", "down-dlx", "").await;
        let args = table(&[
            ("x-dead-letter-exchange", lstr("down-dlx")),
            ("x-message-ttl", lapin::types::AMQPValue::LongInt(300)),
        ]);
        for i in 0..QUEUES {
            let q = format!("down-ttl-{i}");
            declare_queue(&ch, &q, durable(), args.clone()).await.unwrap();
            assert!(publish_confirmed_props(&ch, "", &q, "expires while down", persistent()).await.is_ack());
        }
    }
    b.kill9();
    // Every TTL runs out while the broker is down.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let b = Broker::start_in(&dir.0, &[]);
    let (_conn, ch) = b.channel().await;
    eventually("every expired message dead-lettered into the sink", || async {
        ready_count(&ch, "down-sink").await as usize == QUEUES
    })
    .await;
}
