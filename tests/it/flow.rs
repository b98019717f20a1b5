//! Publisher flow control: a publisher faster than a queue's consumers is held (its socket is not
//! read) so that the backlog stays near `amqp.flow_backlog_messages` instead of growing without
//! end; a connection that consumes from the queue it publishes to is never held by it (RabbitMQ's
//! classic deadlock), cycles between connections resolve, stopped consumers do not hold
//! publishers for ever, and a held publisher stalls no other queue.
//!
//! Consumers here are slow on purpose (they pause 1 ms every few messages, standing in for
//! work), so that a lapin publisher outruns them; nothing waits on a timer for synchronisation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};
use tokio::task::JoinHandle;

use crate::common::{Broker, exclusive_queue, ready_count, unique, within};

/// The flow threshold the tests' broker runs with (the default is 10,000).
const BACKLOG: u32 = 1000;
/// How far above the threshold a queue may get: one read turn of a publisher (at most 256
/// frames, about 85 messages) plus what its mailbox held when limiting began.
const SLACK: u32 = 3000;

fn broker() -> Broker {
    Broker::start_with_config_logging(
        &format!("[amqp]\nflow_backlog_messages = {BACKLOG}\n"),
        "warn,warren::connection=debug,warren::queue::actor=debug",
    )
}

fn held(line: &str) -> bool {
    line.contains("publisher held (flow)")
}

/// Wait up to `secs` for `fut` (these tests move tens of thousands of messages through a debug
/// build).
async fn within_secs<T>(secs: u64, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut).await.unwrap_or_else(|_| panic!("timed out: {what}"))
}

async fn publish(ch: &Channel, queue: &str, i: u32) {
    ch.basic_publish(
        "".into(),
        queue.into(),
        BasicPublishOptions::default(),
        format!("{i:0100}").as_bytes(),
        BasicProperties::default(),
    )
    .await
    .expect("basic.publish");
}

/// A consumer on `ch` acking every message and pausing 1 ms every `pace` messages; returns how
/// many it took once it has `n`.
fn slow_consumer(ch: Channel, queue: String, n: u32, prefetch: u16, pace: u32) -> JoinHandle<u32> {
    tokio::spawn(async move {
        ch.basic_qos(prefetch, BasicQosOptions::default()).await.expect("basic.qos");
        let mut consumer = ch
            .basic_consume(queue.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .expect("basic.consume");
        let mut got = 0;
        while got < n {
            let d = within_secs(30, "a delivery", consumer.next()).await.expect("consumer ended").expect("delivery");
            d.ack(BasicAckOptions::default()).await.expect("basic.ack");
            got += 1;
            if got % pace == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        got
    })
}

/// A queue other connections may use too (each test has its own broker).
async fn shared_queue(ch: &Channel) -> String {
    let q = unique("flow");
    crate::common::declare_queue(ch, &q, Default::default(), FieldTable::default()).await.expect("queue.declare");
    q
}

/// Samples the ready count of `queue` (passive declare on its own connection) until stopped;
/// returns the highest seen.
fn depth_sampler(broker: &Broker, queue: &str, stop: Arc<AtomicBool>) -> JoinHandle<u32> {
    let uri = broker.uri();
    let queue = queue.to_string();
    tokio::spawn(async move {
        let conn = lapin::Connection::connect(&uri, Default::default()).await.expect("connect");
        let ch = conn.create_channel().await.expect("channel");
        let mut max = 0;
        while !stop.load(Ordering::Relaxed) {
            max = max.max(ready_count(&ch, &queue).await);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        max
    })
}

#[tokio::test]
async fn a_fast_publisher_is_held_at_its_consumers_pace() {
    let b = broker();
    let n = 15_000;
    let (_pc, pch) = b.channel().await;
    let q = shared_queue(&pch).await;
    let cconn = b.connect().await;
    let consumer = slow_consumer(cconn.create_channel().await.expect("channel"), q.clone(), n, 50, 5);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = depth_sampler(&b, &q, stop.clone());
    within_secs(60, "publishing", async {
        for i in 0..n {
            publish(&pch, &q, i).await;
        }
    })
    .await;
    let got = within_secs(60, "the consumer", consumer).await.expect("consumer task");
    stop.store(true, Ordering::Relaxed);
    let max = sampler.await.expect("sampler task");
    assert_eq!(got, n);
    assert!(max <= BACKLOG + SLACK, "the backlog reached {max} ready messages (threshold {BACKLOG})");
    b.wait_for_log("the queue limiting its publishers", |l| l.contains("limiting publishers to the delivery rate"));
    b.wait_for_log("the publisher held", held);
}

#[tokio::test]
async fn a_connection_publishing_to_a_queue_it_consumes_from_is_never_held_by_it() {
    let b = broker();
    let n = 15_000;
    let conn = b.connect().await;
    let pub_ch = conn.create_channel().await.expect("channel");
    let q = exclusive_queue(&pub_ch).await;
    // One channel publishes, another on the same connection consumes; then one channel does both.
    let consumer = slow_consumer(conn.create_channel().await.expect("channel"), q.clone(), n, 50, 5);
    within_secs(60, "publishing", async {
        for i in 0..n {
            publish(&pub_ch, &q, i).await;
        }
    })
    .await;
    assert_eq!(within_secs(60, "the consumer", consumer).await.expect("consumer task"), n);

    let both = conn.create_channel().await.expect("channel");
    let q2 = exclusive_queue(&both).await;
    let consumer = slow_consumer(both.clone(), q2.clone(), n, 50, 5);
    within_secs(60, "publishing", async {
        for i in 0..n {
            publish(&both, &q2, i).await;
        }
    })
    .await;
    assert_eq!(within_secs(60, "the consumer", consumer).await.expect("consumer task"), n);
    // The queues did limit (the publisher outran its consumer), but never held this connection.
    b.wait_for_log("a queue limiting its publishers", |l| l.contains("limiting publishers to the delivery rate"));
    assert!(!b.logged(held), "a connection was held by a queue it consumes from");
}

#[tokio::test]
async fn two_connections_holding_each_other_do_not_deadlock() {
    // A publishes to q1 and consumes q2; B publishes to q2 and consumes q1. Both held at once
    // means neither reads the other's acks; the stalled queue opens after a second.
    let b = broker();
    let n = 8_000;
    let (a, bconn) = (b.connect().await, b.connect().await);
    let (a_pub, b_pub) = (a.create_channel().await.expect("channel"), bconn.create_channel().await.expect("channel"));
    let (q1, q2) = (unique("flow-q1"), unique("flow-q2"));
    for q in [&q1, &q2] {
        crate::common::declare_queue(&a_pub, q, Default::default(), FieldTable::default()).await.expect("declare");
    }
    let a_cons = slow_consumer(a.create_channel().await.expect("channel"), q2.clone(), n, 50, 5);
    let b_cons = slow_consumer(bconn.create_channel().await.expect("channel"), q1.clone(), n, 50, 5);
    let pa = {
        let (ch, q) = (a_pub.clone(), q1.clone());
        tokio::spawn(async move {
            for i in 0..n {
                publish(&ch, &q, i).await;
            }
        })
    };
    let pb = {
        let (ch, q) = (b_pub.clone(), q2.clone());
        tokio::spawn(async move {
            for i in 0..n {
                publish(&ch, &q, i).await;
            }
        })
    };
    within_secs(120, "both publishers", async {
        pa.await.expect("publisher a");
        pb.await.expect("publisher b");
    })
    .await;
    assert_eq!(within_secs(120, "consumer of q2", a_cons).await.expect("task"), n);
    assert_eq!(within_secs(120, "consumer of q1", b_cons).await.expect("task"), n);
    for q in [&q1, &q2] {
        a_pub.queue_delete(q.as_str().into(), Default::default()).await.expect("delete");
    }
}

#[tokio::test]
async fn a_held_publisher_stalls_no_other_queue_and_gets_all_its_confirms() {
    let b = broker();
    let n = 15_000;
    let (_pc, pch) = b.channel().await;
    pch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let q = shared_queue(&pch).await;
    let cconn = b.connect().await;
    let consumer = slow_consumer(cconn.create_channel().await.expect("channel"), q.clone(), n, 50, 2);
    let publisher = {
        let (ch, q) = (pch.clone(), q.clone());
        tokio::spawn(async move {
            let mut confirms = Vec::with_capacity(n as usize);
            for i in 0..n {
                confirms.push(
                    ch.basic_publish(
                        "".into(),
                        q.as_str().into(),
                        BasicPublishOptions::default(),
                        format!("{i:0100}").as_bytes(),
                        BasicProperties::default(),
                    )
                    .await
                    .expect("basic.publish"),
                );
            }
            let mut acked = 0u32;
            for c in confirms {
                if c.await.expect("confirm").is_ack() {
                    acked += 1;
                }
            }
            acked
        })
    };
    // While the publisher is held, another client publishes with confirms to its own queue and
    // consumes what it published.
    within_secs(60, "the publisher to be held", async {
        while !b.logged(held) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let (_oc, och) = b.channel().await;
    och.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let other = exclusive_queue(&och).await;
    let mut other_consumer = crate::common::consume(&och, &other).await;
    within("a round trip through another queue while the publisher is held", async {
        for i in 0..500 {
            let c = och
                .basic_publish(
                    "".into(),
                    other.as_str().into(),
                    BasicPublishOptions::default(),
                    format!("o{i}").as_bytes(),
                    BasicProperties::default(),
                )
                .await
                .expect("basic.publish");
            assert!(c.await.expect("confirm").is_ack());
        }
        for _ in 0..500 {
            let d = other_consumer.next().await.expect("consumer ended").expect("delivery");
            d.ack(BasicAckOptions::default()).await.expect("ack");
        }
    })
    .await;
    assert_eq!(within_secs(120, "the held publisher's confirms", publisher).await.expect("task"), n);
    assert_eq!(within_secs(120, "the consumer", consumer).await.expect("task"), n);
}

#[tokio::test]
async fn stopped_consumers_do_not_hold_publishers_for_ever() {
    let b = broker();
    let n = 5_000u32;
    let (_pc, pch) = b.channel().await;
    pch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let q = shared_queue(&pch).await;
    // A consumer that takes its prefetch and never acks.
    let (_cc, cch) = b.channel().await;
    cch.basic_qos(10, BasicQosOptions::default()).await.expect("basic.qos");
    let taken = Arc::new(AtomicU32::new(0));
    let mut consumer = crate::common::consume(&cch, &q).await;
    let count = taken.clone();
    let _hold = tokio::spawn(async move {
        while let Some(Ok(_d)) = consumer.next().await {
            count.fetch_add(1, Ordering::Relaxed);
        }
    });
    let mut confirms = Vec::new();
    within_secs(30, "publishing", async {
        for i in 0..n {
            let body = format!("{i}");
            let c = pch
                .basic_publish(
                    "".into(),
                    q.as_str().into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    BasicProperties::default(),
                )
                .await
                .expect("basic.publish");
            confirms.push(c);
        }
    })
    .await;
    within_secs(30, "every confirm", async {
        for c in confirms {
            assert!(c.await.expect("confirm").is_ack());
        }
    })
    .await;
    assert_eq!(taken.load(Ordering::Relaxed), 10);
    assert_eq!(ready_count(&pch, &q).await, n - 10);
}
