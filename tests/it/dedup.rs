//! WARREN-ONLY: message deduplication compatible with the rabbitmq-message-deduplication plugin
//! (github noxdafox/rabbitmq-message-deduplication README and source). The reference RabbitMQ
//! 3.10 has no such plugin: it refuses the exchange type (503) and ignores the queue argument,
//! so these tests fail against it by design.
//!
//! Behaviour expected of Warren:
//! * queue argument `x-message-deduplication = true`: a message whose `x-deduplication-header`
//!   value equals that of a message still in the queue (ready or unacked) is dropped; the value is
//!   forgotten once that message is acked (or fetched with no-ack); messages without the header
//!   are never deduplicated;
//! * exchange type `x-message-deduplication` (routes like fanout) with `x-cache-size` (required,
//!   integer > 0) and optional `x-cache-ttl` (ms): a message whose header value was seen within
//!   the cache TTL is not routed;
//! * a publisher in confirm mode gets a basic.ack for a dropped duplicate;
//! * a missing `x-cache-size` is refused with 406 `PRECONDITION_FAILED - Missing or invalid
//!   argument, ... 'x-cache-size' must be an integer greater than 0`.

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, ExchangeKind};

use crate::common::*;

fn dedup_key(key: &str) -> BasicProperties {
    BasicProperties::default().with_headers(table(&[("x-deduplication-header", lstr(key))]))
}

async fn declare_dedup_exchange(ch: &Channel, arguments: FieldTable) -> lapin::Result<String> {
    let name = unique("dedup-x");
    within(
        "exchange.declare",
        ch.exchange_declare(
            name.as_str().into(),
            ExchangeKind::Custom("x-message-deduplication".into()),
            ExchangeDeclareOptions { auto_delete: true, ..Default::default() },
            arguments,
        ),
    )
    .await
    .map(|_| name)
}

async fn confirm_channel(b: &Broker) -> (lapin::Connection, Channel) {
    let (conn, ch) = b.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    (conn, ch)
}

async fn dedup_queue(ch: &Channel) -> String {
    exclusive_queue_with(ch, "dedup-q", table(&[("x-message-deduplication", AMQPValue::Boolean(true))])).await
}

#[tokio::test]
async fn dedup_queue_drops_a_duplicate_of_a_message_still_in_the_queue() {
    let b = Broker::start();
    let (_conn, ch) = confirm_channel(&b).await;
    let q = dedup_queue(&ch).await;
    for (key, body) in [("k1", "first"), ("k1", "duplicate"), ("k2", "other")] {
        let confirmation = publish_confirmed_props(&ch, "", &q, body, dedup_key(key)).await;
        assert_eq!(confirmation, Confirmation::Ack(None), "every publish is acked, even a dropped duplicate");
    }
    assert_eq!(ready_count(&ch, &q).await, 2);
    assert_eq!(get_all(&ch, &q).await, vec!["first", "other"]);
}

#[tokio::test]
async fn dedup_queue_forgets_a_key_once_its_message_is_acked() {
    let b = Broker::start();
    let (_conn, ch) = confirm_channel(&b).await;
    let q = dedup_queue(&ch).await;
    assert!(publish_confirmed_props(&ch, "", &q, "one", dedup_key("k")).await.is_ack());
    let got = within("basic.get", ch.basic_get(q.as_str().into(), BasicGetOptions { no_ack: false }))
        .await
        .expect("basic.get")
        .expect("a message");
    assert_eq!(text(&got.delivery.data), "one");
    assert!(publish_confirmed_props(&ch, "", &q, "while unacked", dedup_key("k")).await.is_ack());
    assert_eq!(ready_count(&ch, &q).await, 0, "the unacked message still holds its key");
    ch.basic_ack(got.delivery.delivery_tag, BasicAckOptions::default()).await.expect("ack");
    assert!(publish_confirmed_props(&ch, "", &q, "after ack", dedup_key("k")).await.is_ack());
    assert_eq!(get_all(&ch, &q).await, vec!["after ack"]);
}

#[tokio::test]
async fn messages_without_the_dedup_header_are_never_deduplicated() {
    let b = Broker::start();
    let (_conn, ch) = confirm_channel(&b).await;
    let q = dedup_queue(&ch).await;
    for body in ["same", "same"] {
        assert!(publish_confirmed_props(&ch, "", &q, body, BasicProperties::default()).await.is_ack());
    }
    assert_eq!(get_all(&ch, &q).await, vec!["same", "same"]);
}

#[tokio::test]
async fn dedup_exchange_drops_duplicates_within_its_cache_and_routes_like_fanout() {
    let b = Broker::start();
    let (_conn, ch) = confirm_channel(&b).await;
    let x = declare_dedup_exchange(&ch, table(&[("x-cache-size", AMQPValue::LongInt(10))])).await.expect("declare");
    let q = exclusive_queue(&ch).await;
    bind(&ch, &q, &x, "bound-key").await;
    for (key, body) in [("a", "a-1"), ("a", "a-2"), ("b", "b-1"), ("a", "a-3")] {
        let confirmation = publish_confirmed_props(&ch, &x, "other-key", body, dedup_key(key)).await;
        assert_eq!(confirmation, Confirmation::Ack(None), "a dropped duplicate is still acked");
    }
    assert_eq!(get_all(&ch, &q).await, vec!["a-1", "b-1"], "fanout routing, duplicates dropped even after consumption");
}

#[tokio::test]
async fn dedup_exchange_routes_a_key_again_after_the_cache_ttl() {
    let b = Broker::start();
    let (_conn, ch) = confirm_channel(&b).await;
    let args = table(&[("x-cache-size", AMQPValue::LongInt(10)), ("x-cache-ttl", AMQPValue::LongInt(300))]);
    let x = declare_dedup_exchange(&ch, args).await.expect("declare");
    let q = exclusive_queue(&ch).await;
    bind(&ch, &q, &x, "").await;
    let first_sent = std::time::Instant::now();
    assert!(publish_confirmed_props(&ch, &x, "", "first", dedup_key("k")).await.is_ack());
    assert!(publish_confirmed_props(&ch, &x, "", "dup", dedup_key("k")).await.is_ack());
    assert_eq!(get_all(&ch, &q).await, vec!["first"]);
    // Re-publish the same key until it is routed again: that must happen only once the 300 ms
    // cache TTL has passed.
    // (Polled every 20 ms, bounded by WAIT: there is no event for a cache entry expiring.)
    let routed_again = within("the key to be routed again after its TTL", async {
        loop {
            assert!(publish_confirmed_props(&ch, &x, "", "retry", dedup_key("k")).await.is_ack());
            let got = get_all(&ch, &q).await;
            if !got.is_empty() {
                return got;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(routed_again, vec!["retry"]);
    assert!(
        first_sent.elapsed() >= std::time::Duration::from_millis(250),
        "routed again after only {:?}",
        first_sent.elapsed()
    );
}

#[tokio::test]
async fn dedup_exchange_without_cache_size_is_precondition_failed() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let (code, text) = expect_amqp_error(declare_dedup_exchange(&ch, FieldTable::default()).await);
    assert_eq!(code, 406);
    assert!(text.starts_with("PRECONDITION_FAILED - Missing or invalid argument,"), "{text}");
    assert!(text.ends_with("'x-cache-size' must be an integer greater than 0"), "{text}");
}
