//! Streams through RabbitMQ's Rust stream client, as applications use them: connect, create
//! and delete, publish with confirms, named producers that resume without duplicates, the
//! offset specifications, filtering, offset tracking, retention, single active consumer.

use std::time::Duration;

use futures_util::StreamExt;
use rabbitmq_stream_client::error::{ProducerPublishError, StreamCreateError, StreamDeleteError};
use rabbitmq_stream_client::types::{ByteCapacity, Message, OffsetSpecification, ResponseCode};
use rabbitmq_stream_client::{
    ConfirmationStatus, Consumer, Dedup, Environment, FilterConfiguration, NoDedup, Producer,
};

use super::{client_stream, env, port, start};
use crate::common::*;

/// Both kinds of producer (`batch_send_with_confirm` takes `&mut` on a named one).
pub trait Confirming {
    fn batch(&mut self, m: Vec<Message>)
    -> impl Future<Output = Result<Vec<ConfirmationStatus>, ProducerPublishError>>;
}

impl Confirming for Producer<NoDedup> {
    fn batch(
        &mut self,
        m: Vec<Message>,
    ) -> impl Future<Output = Result<Vec<ConfirmationStatus>, ProducerPublishError>> {
        self.batch_send_with_confirm(m)
    }
}

impl Confirming for Producer<Dedup> {
    fn batch(
        &mut self,
        m: Vec<Message>,
    ) -> impl Future<Output = Result<Vec<ConfirmationStatus>, ProducerPublishError>> {
        self.batch_send_with_confirm(m)
    }
}

/// Publish `bodies` as one batch and wait for every confirm.
pub async fn send_confirmed(p: &mut impl Confirming, bodies: &[String]) {
    let msgs = bodies.iter().map(|b| Message::builder().body(b.clone()).build()).collect();
    let statuses = within("publish confirms", p.batch(msgs)).await.expect("batch send");
    assert_eq!(statuses.len(), bodies.len());
    assert!(statuses.iter().all(|s| s.confirmed()), "every message confirmed");
}

/// The next `n` deliveries: (offset, body).
pub async fn receive(c: &mut Consumer, n: usize) -> Vec<(u64, String)> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let d = within("a delivery", c.next()).await.expect("the consumer is open").expect("a delivery");
        let body = String::from_utf8(d.message().data().unwrap_or_default().to_vec()).unwrap();
        out.push((d.offset(), body));
    }
    out
}

/// Nothing more is delivered for a while (an absence check).
pub async fn nothing_more(c: &mut Consumer) {
    if let Ok(Some(d)) = tokio::time::timeout(QUIET, c.next()).await {
        panic!("unexpected delivery at offset {:?}", d.map(|d| d.offset()));
    }
}

pub fn numbered(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}{i}")).collect()
}

pub async fn consumer(e: &Environment, stream: &str, offset: OffsetSpecification) -> Consumer {
    within("subscribe", e.consumer().offset(offset).build(stream)).await.expect("consumer")
}

async fn producer(e: &Environment, stream: &str) -> Producer<NoDedup> {
    within("declare a producer", e.producer().build(stream)).await.expect("producer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_publish_consume_and_delete() {
    let b = start();
    // Wrong credentials are refused.
    let bad = Environment::builder().host("127.0.0.1").port(port(&b)).password("wrong").build().await;
    assert!(bad.is_err(), "a wrong password is refused");
    let e = env(&b).await;
    let s = unique("basic");
    e.stream_creator().create(&s).await.expect("create");
    match e.stream_creator().create(&s).await {
        Err(StreamCreateError::Create { status: ResponseCode::StreamAlreadyExists, .. }) => {}
        other => panic!("a second create of the same name: {other:?}"),
    }
    let mut p = producer(&e, &s).await;
    let sent = numbered("m", 0..10);
    send_confirmed(&mut p, &sent).await;
    let mut c = consumer(&e, &s, OffsetSpecification::First).await;
    let got = receive(&mut c, 10).await;
    assert_eq!(got.iter().map(|(o, _)| *o).collect::<Vec<_>>(), (0..10).collect::<Vec<u64>>());
    assert_eq!(got.iter().map(|(_, b)| b.clone()).collect::<Vec<_>>(), sent);
    // Live: what is published now arrives too.
    send_confirmed(&mut p, &["live".to_string()]).await;
    assert_eq!(receive(&mut c, 1).await, [(10, "live".to_string())]);
    p.close().await.expect("close producer");
    c.handle().close().await.expect("close consumer");

    e.delete_stream(&s).await.expect("delete");
    match e.delete_stream(&s).await {
        Err(StreamDeleteError::Delete { status: ResponseCode::StreamDoesNotExist, .. }) => {}
        other => panic!("deleting a deleted stream: {other:?}"),
    }
    // The stream is gone for AMQP 0-9-1 too.
    let (_c, ch) = b.channel().await;
    let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
    let err = declare_queue(&ch, &s, passive, Default::default()).await.unwrap_err();
    assert_eq!(amqp_error(&err).0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_producer_resumes_without_duplicates() {
    let (b, e, s) = client_stream("dedup").await;
    let mut p = within("producer", e.producer().name("app").build(&s)).await.unwrap();
    send_confirmed(&mut p, &numbered("m", 0..5)).await;
    p.close().await.unwrap();

    // A new connection, the same producer name: the sequence resumes after the last stored
    // id; resending ids 3 and 4 is confirmed but stores nothing.
    let e2 = env(&b).await;
    let mut p = within("producer", e2.producer().name("app").build(&s)).await.unwrap();
    let msgs: Vec<Message> =
        (3..8).map(|i| Message::builder().body(format!("m{i}")).publishing_id(i).build()).collect();
    let statuses = within("confirms", p.batch_send_with_confirm(msgs)).await.unwrap();
    assert!(statuses.iter().all(|s| s.confirmed()));
    let mut ids: Vec<u64> = statuses.iter().map(|s| s.publishing_id()).collect();
    ids.sort_unstable();
    assert_eq!(ids, [3, 4, 5, 6, 7], "every id confirmed, the duplicates too");
    let mut c = consumer(&e2, &s, OffsetSpecification::First).await;
    let got = receive(&mut c, 8).await;
    assert_eq!(got.iter().map(|(_, b)| b.clone()).collect::<Vec<_>>(), numbered("m", 0..8));
    nothing_more(&mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_offset_specification() {
    let (_b, e, s) = client_stream("offsets").await;
    let mut p = producer(&e, &s).await;
    // Three chunks: a0..a2, b0..b2, c0..c2.
    for prefix in ["a", "b", "c"] {
        send_confirmed(&mut p, &numbered(prefix, 0..3)).await;
    }
    // Chunk timestamps are milliseconds: step past the last one's before taking the instant.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let before_d = chrono_ms();
    tokio::time::sleep(Duration::from_millis(20)).await;
    send_confirmed(&mut p, &numbered("d", 0..3)).await;

    let mut c = consumer(&e, &s, OffsetSpecification::First).await;
    assert_eq!(receive(&mut c, 12).await[0], (0, "a0".to_string()));
    // Offset 4: the client skips the records of the chunk below it.
    let mut c = consumer(&e, &s, OffsetSpecification::Offset(4)).await;
    assert_eq!(receive(&mut c, 8).await[0], (4, "b1".to_string()));
    // Last: the whole last chunk.
    let mut c = consumer(&e, &s, OffsetSpecification::Last).await;
    assert_eq!(receive(&mut c, 3).await, [(9, "d0".into()), (10, "d1".into()), (11, "d2".into())]);
    // A timestamp: the chunks written at or after it.
    let mut c = consumer(&e, &s, OffsetSpecification::Timestamp(before_d)).await;
    assert_eq!(receive(&mut c, 3).await[0], (9, "d0".to_string()));
    nothing_more(&mut c).await;
    // Next: only what comes after.
    let mut c = consumer(&e, &s, OffsetSpecification::Next).await;
    nothing_more(&mut c).await;
    send_confirmed(&mut p, &["e0".to_string()]).await;
    assert_eq!(receive(&mut c, 1).await, [(12, "e0".to_string())]);
}

fn chrono_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_subscriptions_get_the_chunks_that_may_match() {
    let (_b, e, s) = client_stream("filter").await;
    let p = within(
        "producer",
        e.producer()
            .filter_value_extractor(|m| {
                m.application_properties()
                    .and_then(|a| a.get("region"))
                    .map(|v| String::try_from(v.clone()).unwrap_or_default())
                    .unwrap_or_default()
            })
            .build(&s),
    )
    .await
    .unwrap();
    let region = |r: &str, i: usize| {
        let mut m = Message::builder().body(format!("{r}{i}"));
        if !r.is_empty() {
            m = m.application_properties().insert("region", r).message_builder();
        }
        m.build()
    };
    // One chunk per region (each batch confirmed before the next), and one without a value.
    for r in ["us", "eu", "us", ""] {
        let msgs: Vec<Message> = (0..5).map(|i| region(r, i)).collect();
        let st = within("confirms", p.batch_send_with_confirm(msgs)).await.unwrap();
        assert!(st.iter().all(|s| s.confirmed()));
    }
    let filtered = |values: &[&str], unfiltered: bool| {
        let e = e.clone();
        let s = s.clone();
        let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        async move {
            let mut c = within(
                "subscribe",
                e.consumer()
                    .offset(OffsetSpecification::First)
                    .filter_input(Some(FilterConfiguration::new(values, unfiltered)))
                    .build(&s),
            )
            .await
            .unwrap();
            let mut got = Vec::new();
            while let Ok(Some(Ok(d))) = tokio::time::timeout(QUIET, c.next()).await {
                got.push(String::from_utf8(d.message().data().unwrap().to_vec()).unwrap());
            }
            got
        }
    };
    assert_eq!(filtered(&["eu"], false).await, numbered("eu", 0..5), "only the eu chunk");
    let us = filtered(&["us"], false).await;
    assert_eq!(us.len(), 10, "both us chunks: {us:?}");
    assert!(us.iter().all(|m| m.starts_with("us")));
    let eu_or_none = filtered(&["eu"], true).await;
    assert_eq!(eu_or_none, [numbered("eu", 0..5), numbered("", 0..5)].concat(), "match-unfiltered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_old_segments() {
    let b = start();
    let e = env(&b).await;
    let s = unique("retention");
    e.stream_creator()
        .max_segment_size(ByteCapacity::B(1000))
        .max_length(ByteCapacity::B(3000))
        .create(&s)
        .await
        .expect("create with retention");
    let mut p = producer(&e, &s).await;
    let body = "x".repeat(200);
    for i in 0..40 {
        send_confirmed(&mut p, &[format!("{i:02}{body}")]).await;
    }
    let mut c = consumer(&e, &s, OffsetSpecification::First).await;
    let first = receive(&mut c, 1).await[0].clone();
    assert!(first.0 > 0, "the oldest segments are gone: the first offset is {}", first.0);
    let n = 40 - first.0 as usize;
    let rest = receive(&mut c, n - 1).await;
    assert_eq!(rest.last().unwrap().1[..2], *"39", "the newest message survives");
    nothing_more(&mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_single_active_consumer_takes_over() {
    let (_b, e, s) = client_stream("sac").await;
    let mut p = producer(&e, &s).await;
    send_confirmed(&mut p, &numbered("a", 0..3)).await;
    let sac = |e: Environment, s: String| async move {
        within(
            "subscribe",
            e.consumer()
                .name("group")
                .enable_single_active_consumer(true)
                .offset(OffsetSpecification::First)
                // The newly active consumer starts where the application says: here, the start.
                .consumer_update(|_active, _ctx| async { OffsetSpecification::First })
                .build(&s),
        )
        .await
        .expect("single active consumer")
    };
    let mut first = sac(e.clone(), s.clone()).await;
    let mut second = sac(e.clone(), s.clone()).await;
    assert_eq!(receive(&mut first, 3).await.len(), 3, "the first one is active");
    nothing_more(&mut second).await;
    first.handle().close().await.expect("the active one leaves");
    send_confirmed(&mut p, &numbered("b", 0..2)).await;
    let got = receive(&mut second, 5).await;
    assert_eq!(
        got.iter().map(|(_, b)| b.as_str()).collect::<Vec<_>>(),
        ["a0", "a1", "a2", "b0", "b1"],
        "the second takes over from where it was told"
    );
    // A consumer without a name cannot be a single active one.
    let unnamed = e.consumer().properties([("single-active-consumer".to_string(), "true".to_string())].into());
    assert!(unnamed.build(&s).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_through_the_client() {
    let (b, _e, s) = client_stream("meta").await;
    let client = rabbitmq_stream_client::Client::connect(
        rabbitmq_stream_client::ClientOptions::builder().host("127.0.0.1").port(port(&b)).build(),
    )
    .await
    .expect("client");
    let meta = client.metadata(vec![s.clone(), "no-such-stream".into()]).await.expect("metadata");
    let m = meta.get(&s).expect("the stream's metadata");
    assert_eq!((m.leader.host.as_str(), m.leader.port), ("127.0.0.1", port(&b) as u32));
    assert!(m.replicas.is_empty());
    assert!(!meta.contains_key("no-such-stream"), "a missing stream has no leader");
    client.close().await.unwrap();
}
