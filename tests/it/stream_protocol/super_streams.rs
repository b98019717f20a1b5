//! Super streams: a direct exchange with `x-super-stream` whose partitions are streams bound
//! with `x-stream-partition-order` (as RabbitMQ makes them), Route and Partitions, a producer
//! routing by key, and single active consumers shared out over the partitions.

use bytes::BufMut;
use rabbitmq_stream_client::error::StreamCreateError;
use rabbitmq_stream_client::types::{
    Message, OffsetSpecification, ResponseCode, RoutingKeyRoutingStrategy, RoutingStrategy,
};

use super::client::{consumer, nothing_more, receive};
use super::raw::{Raw, string};
use super::{addr, env, start};
use crate::common::*;

/// Route's or Partitions' answer: the code and the streams.
async fn streams_of(r: &mut Raw, key: u16, body: &[u8]) -> (u16, Vec<String>) {
    let f = r.call(key, body).await;
    let mut rd = f.reader();
    rd.u32();
    (rd.u16(), rd.strings())
}

async fn route(r: &mut Raw, key: &str, super_stream: &str) -> (u16, Vec<String>) {
    let mut b = Vec::new();
    string(&mut b, key);
    string(&mut b, super_stream);
    streams_of(r, 0x0018, &b).await
}

async fn partitions(r: &mut Raw, super_stream: &str) -> (u16, Vec<String>) {
    let mut b = Vec::new();
    string(&mut b, super_stream);
    streams_of(r, 0x0019, &b).await
}

fn region(m: &Message) -> String {
    m.application_properties().and_then(|a| a.get("region")).and_then(|v| String::try_from(v.clone()).ok()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_route_publish_and_delete_a_super_stream() {
    let b = start();
    let e = env(&b).await;
    let name = unique("invoices");
    let keys: Vec<String> = ["emea", "apac", "amer"].iter().map(|s| s.to_string()).collect();
    e.stream_creator().create_super_stream(&name, 3, Some(keys.clone())).await.expect("create super stream");
    match e.stream_creator().create_super_stream(&name, 3, Some(keys)).await {
        Err(StreamCreateError::Create { status: ResponseCode::StreamAlreadyExists, .. }) => {}
        other => panic!("creating it again: {other:?}"),
    }
    let parts: Vec<String> = ["emea", "apac", "amer"].iter().map(|k| format!("{name}-{k}")).collect();
    let mut r = Raw::open(&addr(&b)).await;
    assert_eq!(partitions(&mut r, &name).await, (1, parts.clone()), "in partition order");
    assert_eq!(route(&mut r, "apac", &name).await, (1, vec![parts[1].clone()]));
    assert_eq!(route(&mut r, "nowhere", &name).await, (1, vec![]));
    assert_eq!(route(&mut r, "apac", "no-such-super-stream").await.0, 2);
    assert_eq!(partitions(&mut r, "no-such-super-stream").await.0, 2);

    // What AMQP 0-9-1 sees: the exchange and its bindings, as RabbitMQ makes them.
    let x = b.admin("GET", &format!("/api/exchanges/%2F/{name}"), None);
    assert_eq!((x["type"].as_str(), x["durable"].as_bool()), (Some("direct"), Some(true)));
    assert_eq!(x["arguments"]["x-super-stream"], serde_json::json!(true));
    let bindings = b.admin("GET", &format!("/api/exchanges/%2F/{name}/bindings/source"), None);
    let mut orders: Vec<(String, i64)> = bindings
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["destination"].as_str().unwrap().to_string(),
                b["arguments"]["x-stream-partition-order"].as_i64().unwrap(),
            )
        })
        .collect();
    orders.sort_by_key(|(_, o)| *o);
    assert_eq!(orders, parts.iter().cloned().zip(0..).collect::<Vec<_>>());

    // A producer routing by key: each message lands in its region's partition.
    let mut producer = within(
        "super stream producer",
        e.super_stream_producer(RoutingStrategy::RoutingKeyStrategy(RoutingKeyRoutingStrategy {
            routing_extractor: &region,
        }))
        .build(&name),
    )
    .await
    .expect("super stream producer");
    let (done, mut confirmed) = tokio::sync::mpsc::unbounded_channel();
    for (i, k) in ["emea", "apac", "amer", "apac"].iter().enumerate() {
        let m = Message::builder()
            .body(format!("{k}-{i}"))
            .application_properties()
            .insert("region", *k)
            .message_builder()
            .build();
        let done = done.clone();
        let confirm = move |r: Result<rabbitmq_stream_client::ConfirmationStatus, _>| {
            let done = done.clone();
            async move { done.send(r.map(|s| s.confirmed()).unwrap_or(false)).unwrap() }
        };
        producer.send(m, confirm).await.unwrap();
    }
    for _ in 0..4 {
        assert_eq!(within("confirm", confirmed.recv()).await, Some(true));
    }
    let mut apac = consumer(&e, &parts[1], OffsetSpecification::First).await;
    let got: Vec<String> = receive(&mut apac, 2).await.into_iter().map(|(_, b)| b).collect();
    assert_eq!(got, ["apac-1", "apac-3"]);
    nothing_more(&mut apac).await;
    let mut emea = consumer(&e, &parts[0], OffsetSpecification::First).await;
    assert_eq!(receive(&mut emea, 1).await[0].1, "emea-0");
    producer.close().await.unwrap();

    e.delete_super_stream(&name).await.expect("delete super stream");
    assert_eq!(partitions(&mut r, &name).await.0, 2, "the exchange is gone");
    for p in &parts {
        assert_eq!(r.create(p, &[]).await, 1, "partition {p} is gone");
    }
}

/// Answer a ConsumerUpdate (key 0x001a) with offset type `kind` (1 first, 3 next).
async fn answer_update(r: &mut Raw, kind: u16) -> (u8, bool) {
    let f = r.expect(|f| f.key == 0x001a).await;
    let mut rd = f.reader();
    let (id, sub, active) = (rd.u32(), rd.u8(), rd.u8() == 1);
    let mut body = id.to_be_bytes().to_vec();
    body.put_u16(1);
    body.put_u16(kind);
    r.send(0x801a, 1, &body).await;
    (sub, active)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_active_consumers_share_out_partitions() {
    let b = start();
    let name = unique("sac-super");
    let e = env(&b).await;
    e.stream_creator().create_super_stream(&name, 2, None).await.expect("create");
    let p1 = format!("{name}-1");
    let props = [("single-active-consumer", "true"), ("name", "app"), ("super-stream", name.as_str())];
    let mut one = Raw::open(&addr(&b)).await;
    let mut two = Raw::open(&addr(&b)).await;
    // Partition 1, one consumer: it is active.
    assert_eq!(one.subscribe(1, &p1, 1, 0, 10, &props).await, 1);
    assert_eq!(answer_update(&mut one, 1).await, (1, true));
    // A second one: 1 % 2 = 1 picks it; the first steps down, then the second is told.
    assert_eq!(two.subscribe(7, &p1, 1, 0, 10, &props).await, 1);
    assert_eq!(answer_update(&mut one, 1).await, (1, false));
    assert_eq!(answer_update(&mut two, 1).await, (7, true));
    // Only the active one gets messages; an inactive one is told its credit is not used.
    let mut p = Raw::open(&addr(&b)).await;
    assert_eq!(p.declare_publisher(1, "", &p1).await, 1);
    p.publish(1, &[(1, b"x")]).await;
    p.confirms(1, 1).await;
    assert_eq!(two.deliver().await.0, 7);
    one.credit(1, 1).await;
    let f = one.expect(|f| f.key == 0x8009 || f.key == 0x0008).await;
    assert_eq!((f.key, f.body.clone()), (0x8009, vec![0, 0x11, 1]));
    // The active one's connection goes: the other takes over.
    drop(two);
    assert_eq!(answer_update(&mut one, 1).await, (1, true));
    assert_eq!(one.deliver().await.2, [b"x".to_vec()]);
}
