//! WARREN-ONLY: delayed-message exchanges, compatible with the rabbitmq-delayed-message-exchange
//! plugin (github rabbitmq/rabbitmq-delayed-message-exchange README). The reference RabbitMQ 3.10
//! has no such plugin and refuses the exchange type (503 `unknown exchange type`), so every test
//! here fails against it by design.
//!
//! Behaviour expected of Warren (from the plugin's documentation and source):
//! * exchange type `x-delayed-message`; argument `x-delayed-type` (required) picks the routing of
//!   direct / topic / fanout;
//! * a message with header `x-delay` (ms, > 0) is routed only after that delay; without the
//!   header (or with a delay <= 0) it is routed at once;
//! * a missing `x-delayed-type` is refused with 406 `PRECONDITION_FAILED - Invalid argument,
//!   'x-delayed-type' must be an existing exchange type`, and `x-delayed-type =
//!   x-delayed-message` with 406 `PRECONDITION_FAILED - Invalid argument, 'x-delayed-message'
//!   can't be used for 'x-delayed-type'`.

use std::time::{Duration, Instant};

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Consumer, ExchangeKind};

use crate::common::*;

const DELAYED: &str = "x-delayed-message";

async fn declare_delayed(ch: &Channel, delayed_type: Option<&str>) -> lapin::Result<String> {
    let name = unique("delayed");
    let arguments = match delayed_type {
        Some(t) => table(&[("x-delayed-type", lstr(t))]),
        None => FieldTable::default(),
    };
    within(
        "exchange.declare",
        ch.exchange_declare(
            name.as_str().into(),
            ExchangeKind::Custom(DELAYED.into()),
            ExchangeDeclareOptions { auto_delete: true, ..Default::default() },
            arguments,
        ),
    )
    .await
    .map(|_| name)
}

/// A delayed exchange of `delayed_type` and a no-ack consumer on a queue bound with `key`.
async fn delayed_setup(ch: &Channel, delayed_type: &str, key: &str) -> (String, Consumer) {
    let x = declare_delayed(ch, Some(delayed_type)).await.expect("declare x-delayed-message exchange");
    let q = exclusive_queue(ch).await;
    bind(ch, &q, &x, key).await;
    let consumer =
        consume_with(ch, &q, BasicConsumeOptions { no_ack: true, ..Default::default() }, FieldTable::default()).await;
    (x, consumer)
}

fn delay(ms: i32) -> BasicProperties {
    BasicProperties::default().with_headers(table(&[("x-delay", AMQPValue::LongInt(ms))]))
}

/// Assert that nothing arrives for `window` (a bounded wait that only checks for absence).
async fn assert_nothing_for(consumer: &mut Consumer, window: Duration) {
    use futures_util::StreamExt;
    if let Ok(Some(item)) = tokio::time::timeout(window, consumer.next()).await {
        panic!("expected no delivery yet, got {:?}", item.map(|d| text(&d.data)));
    }
}

#[tokio::test]
async fn x_delay_holds_a_message_back_on_a_direct_delayed_exchange() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let (x, mut consumer) = delayed_setup(&ch, "direct", "k").await;
    let sent = Instant::now();
    publish_props(&ch, &x, "k", "later", delay(500)).await;
    // Absence check: nothing during the first 300 ms of a 500 ms delay.
    assert_nothing_for(&mut consumer, Duration::from_millis(300)).await;
    let d = next_delivery(&mut consumer).await;
    assert_eq!(text(&d.data), "later");
    assert!(
        sent.elapsed() >= Duration::from_millis(450),
        "delivered after {:?}, before the 500 ms delay",
        sent.elapsed()
    );
    assert_eq!(d.exchange.as_str(), x);
    assert_eq!(d.routing_key.as_str(), "k");
}

#[tokio::test]
async fn shorter_delays_are_delivered_first() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let (x, mut consumer) = delayed_setup(&ch, "direct", "k").await;
    publish_props(&ch, &x, "k", "slow", delay(500)).await;
    publish_props(&ch, &x, "k", "fast", delay(100)).await;
    let got = deliveries(&mut consumer, 2).await;
    assert_eq!(got.iter().map(|d| text(&d.data)).collect::<Vec<_>>(), vec!["fast", "slow"]);
}

#[tokio::test]
async fn without_x_delay_a_message_is_routed_at_once() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let (x, mut consumer) = delayed_setup(&ch, "direct", "k").await;
    // A long-delayed message first: the undelayed one must not wait behind it.
    publish_props(&ch, &x, "k", "parked", delay(5_000)).await;
    publish_props(&ch, &x, "k", "now", BasicProperties::default()).await;
    let d = within("an undelayed delivery", async {
        tokio::time::timeout(Duration::from_millis(1_000), next_delivery(&mut consumer))
            .await
            .expect("delivered at once")
    })
    .await;
    assert_eq!(text(&d.data), "now");
}

#[tokio::test]
async fn delayed_routing_follows_x_delayed_type_direct() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let (x, mut consumer) = delayed_setup(&ch, "direct", "green").await;
    publish_props(&ch, &x, "red", "wrong key", delay(100)).await;
    publish_props(&ch, &x, "green", "right key", delay(150)).await;
    assert_eq!(text(&next_delivery(&mut consumer).await.data), "right key");
    // Absence check: the message with an unbound key is never delivered.
    assert_no_delivery(&mut consumer).await;
}

#[tokio::test]
async fn delayed_routing_follows_x_delayed_type_topic() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let (x, mut consumer) = delayed_setup(&ch, "topic", "orders.*").await;
    publish_props(&ch, &x, "payments.new", "no match", delay(100)).await;
    publish_props(&ch, &x, "orders.new", "match", delay(150)).await;
    let d = next_delivery(&mut consumer).await;
    assert_eq!(text(&d.data), "match");
    assert_eq!(d.routing_key.as_str(), "orders.new");
    // Absence check: the non-matching topic is never delivered.
    assert_no_delivery(&mut consumer).await;
}

#[tokio::test]
async fn delayed_routing_follows_x_delayed_type_fanout() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let x = declare_delayed(&ch, Some("fanout")).await.expect("declare");
    let (q1, q2) = (exclusive_queue(&ch).await, exclusive_queue(&ch).await);
    bind(&ch, &q1, &x, "ignored-1").await;
    bind(&ch, &q2, &x, "ignored-2").await;
    let no_ack = BasicConsumeOptions { no_ack: true, ..Default::default() };
    let mut c1 = consume_with(&ch, &q1, no_ack, FieldTable::default()).await;
    let mut c2 = consume_with(&ch, &q2, no_ack, FieldTable::default()).await;
    publish_props(&ch, &x, "any-key", "to all", delay(150)).await;
    assert_eq!(text(&next_delivery(&mut c1).await.data), "to all");
    assert_eq!(text(&next_delivery(&mut c2).await.data), "to all");
}

#[tokio::test]
async fn delayed_exchange_without_x_delayed_type_is_precondition_failed() {
    let b = Broker::start();
    let conn = b.connect().await;
    let ch = conn.create_channel().await.expect("channel");
    let err = expect_amqp_error(declare_delayed(&ch, None).await);
    assert_eq!(
        err,
        (406, "PRECONDITION_FAILED - Invalid argument, 'x-delayed-type' must be an existing exchange type".to_string())
    );
    let ch = conn.create_channel().await.expect("channel");
    let err = expect_amqp_error(declare_delayed(&ch, Some(DELAYED)).await);
    assert_eq!(
        err,
        (
            406,
            "PRECONDITION_FAILED - Invalid argument, 'x-delayed-message' can't be used for 'x-delayed-type'"
                .to_string()
        )
    );
}
