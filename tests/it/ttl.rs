//! Time-to-live: per-queue `x-message-ttl`, per-message `expiration` (the smaller one wins),
//! expiry at the head of a queue with no consumer, TTL 0 with and without a waiting consumer,
//! the exact 406 texts for invalid `expiration` values and TTL arguments, and `x-expires`
//! deleting an unused queue (a consumer keeps it alive).

use std::time::Duration;

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection};

use crate::common::*;

fn ttl(ms: i32) -> FieldTable {
    table(&[("x-message-ttl", AMQPValue::LongInt(ms))])
}

fn expiring(ms: &str) -> BasicProperties {
    BasicProperties::default().with_expiration(ms.into())
}

/// Whether `queue` exists, probed with a mandatory publish on a confirm-mode channel: a deleted
/// queue makes the probe unroutable (basic.return before the ack). Unlike a passive declare or
/// basic.get, publishing does not count as using the queue, so it does not reset `x-expires`.
async fn queue_exists(probe: &Channel, queue: &str) -> bool {
    let confirm = within(
        "basic.publish",
        probe.basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions { mandatory: true, ..Default::default() },
            b"probe",
            BasicProperties::default(),
        ),
    )
    .await
    .expect("basic.publish");
    match within("publisher confirm", confirm).await.expect("confirm") {
        Confirmation::Ack(None) => true,
        Confirmation::Ack(Some(returned)) => {
            assert_eq!((returned.reply_code, returned.reply_text.as_str()), (312, "NO_ROUTE"));
            false
        }
        other => panic!("unexpected confirmation {other:?}"),
    }
}

async fn confirm_channel(conn: &Connection) -> Channel {
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    ch
}

/// Declare `name` with `arguments` on a fresh channel of `conn` and return the 406 it causes.
async fn refused_declare(conn: &Connection, name: &str, arguments: FieldTable) -> (u16, String) {
    let ch = conn.create_channel().await.expect("channel");
    expect_amqp_error(declare_queue(&ch, name, QueueDeclareOptions::exclusive(), arguments).await)
}

#[tokio::test]
async fn queue_ttl_removes_an_expired_message_from_the_head_without_a_consumer() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = exclusive_queue_with(&ch, "ttl-queue", ttl(100)).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    assert!(publish_confirmed_props(&ch, "", &q, "stale", BasicProperties::default()).await.is_ack());
    eventually("message_count to drop to 0", || async { ready_count(&ch, &q).await == 0 }).await;
    let mut consumer =
        consume_with(&ch, &q, BasicConsumeOptions { no_ack: true, ..Default::default() }, FieldTable::default()).await;
    // Absence check: the expired message is never delivered.
    assert_no_delivery(&mut consumer).await;
}

#[tokio::test]
async fn queue_ttl_does_not_touch_a_message_taken_in_time() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = exclusive_queue_with(&ch, "ttl-in-time", ttl(60_000)).await;
    let mut consumer = consume(&ch, &q).await;
    publish_to(&ch, &q, "fresh").await;
    let d = next_delivery(&mut consumer).await;
    assert_eq!(text(&d.data), "fresh");
    assert_eq!(d.properties.expiration(), &None, "the queue TTL is not written into the message");
}

#[tokio::test]
async fn per_message_expiration_expires_only_that_message() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = exclusive_queue_with(&ch, "ttl-per-msg", FieldTable::default()).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    assert!(publish_confirmed_props(&ch, "", &q, "short", expiring("100")).await.is_ack());
    assert!(publish_confirmed_props(&ch, "", &q, "long", BasicProperties::default()).await.is_ack());
    eventually("the expiring message to go", || async { ready_count(&ch, &q).await == 1 }).await;
    assert_eq!(get_all(&ch, &q).await, vec!["long"]);
}

#[tokio::test]
async fn the_smaller_of_queue_ttl_and_expiration_applies() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    // Long queue TTL, short message TTL.
    let q1 = exclusive_queue_with(&ch, "ttl-min-msg", ttl(60_000)).await;
    assert!(publish_confirmed_props(&ch, "", &q1, "a", expiring("100")).await.is_ack());
    // Short queue TTL, long message TTL.
    let q2 = exclusive_queue_with(&ch, "ttl-min-queue", ttl(100)).await;
    assert!(publish_confirmed_props(&ch, "", &q2, "b", expiring("60000")).await.is_ack());
    // Both expire well within the 10 s bound, far below the 60 s alternative.
    eventually("the message with the short per-message TTL to expire", || async { ready_count(&ch, &q1).await == 0 })
        .await;
    eventually("the message in the short-TTL queue to expire", || async { ready_count(&ch, &q2).await == 0 }).await;
}

#[tokio::test]
async fn expiration_zero_is_delivered_to_a_waiting_consumer_and_dropped_otherwise() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let waiting = exclusive_queue_with(&ch, "ttl-zero-consumer", FieldTable::default()).await;
    let mut consumer = consume(&ch, &waiting).await;
    publish_props(&ch, "", &waiting, "now", expiring("0")).await;
    let d = next_delivery(&mut consumer).await;
    assert_eq!(text(&d.data), "now");
    assert_eq!(d.properties.expiration().as_ref().map(|s| s.as_str()), Some("0"), "expiration is delivered unchanged");

    let idle = exclusive_queue_with(&ch, "ttl-zero-idle", FieldTable::default()).await;
    publish_props(&ch, "", &idle, "never", expiring("0")).await;
    publish_to(&ch, &idle, "kept").await;
    assert_eq!(get_all(&ch, &idle).await, vec!["kept"], "TTL 0 with nobody to take it is discarded");
}

#[tokio::test]
async fn queue_ttl_zero_delivers_only_to_a_waiting_consumer() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = exclusive_queue_with(&ch, "ttl-q-zero", ttl(0)).await;
    publish_to(&ch, &q, "dropped").await;
    assert!(get_all(&ch, &q).await.is_empty());
    let mut consumer = consume(&ch, &q).await;
    publish_to(&ch, &q, "taken").await;
    assert_eq!(text(&next_delivery(&mut consumer).await.data), "taken");
}

#[tokio::test]
async fn expiration_with_sign_or_leading_zero_is_accepted_and_delivered_unchanged() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = exclusive_queue_with(&ch, "ttl-forms", FieldTable::default()).await;
    let mut consumer = consume(&ch, &q).await;
    for value in ["+60000", "060000", "60000"] {
        publish_props(&ch, "", &q, value, expiring(value)).await;
        let d = next_delivery(&mut consumer).await;
        assert_eq!(text(&d.data), value);
        assert_eq!(d.properties.expiration().as_ref().map(|s| s.as_str()), Some(value));
    }
}

#[tokio::test]
async fn invalid_expiration_values_are_precondition_failed() {
    let b = Broker::start();
    let conn = b.connect().await;
    let setup = conn.create_channel().await.expect("channel");
    let q = exclusive_queue(&setup).await;
    let cases = [
        ("", "no_integer".to_string()),
        ("abc", "no_integer".to_string()),
        (" 10", "no_integer".to_string()),
        ("1.5", "{leftover_string,\".5\"}".to_string()),
        ("-1", "{value_negative,-1}".to_string()),
        (
            "99999999999999999999",
            "{value_too_large,\n                                            99999999999999999999}".to_string(),
        ),
    ];
    for (value, reason) in cases {
        let ch = conn.create_channel().await.expect("channel");
        let mut ev = events(&conn);
        publish_props(&ch, "", &q, "x", expiring(value)).await;
        assert_eq!(
            next_close(&mut ev).await,
            (406, format!("PRECONDITION_FAILED - invalid expiration '{value}': {reason}")),
            "expiration {value:?}"
        );
    }
    assert!(get_all(&setup, &q).await.is_empty(), "no invalid message was enqueued");
}

#[tokio::test]
async fn invalid_x_message_ttl_is_precondition_failed() {
    let b = Broker::start();
    let conn = b.connect().await;
    let cases = [
        (AMQPValue::LongInt(-1), "{value_negative,-1}"),
        (AMQPValue::LongLongInt(315_360_000_001), "{value_too_large,315360000001}"),
        (lstr("1000"), "\"expected integer, got longstr\""),
        (AMQPValue::Double(1.5), "\"expected integer, got double\""),
    ];
    for (value, reason) in cases {
        let q = unique("ttl-invalid");
        let err = refused_declare(&conn, &q, table(&[("x-message-ttl", value.clone())])).await;
        assert_eq!(
            err,
            (406, format!("PRECONDITION_FAILED - invalid arg 'x-message-ttl' for queue '{q}' in vhost '/': {reason}")),
            "{value:?}"
        );
    }
}

#[tokio::test]
async fn x_expires_deletes_an_unused_queue() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    let q = unique("expires");
    declare_queue(&ch, &q, QueueDeclareOptions::default(), table(&[("x-expires", AMQPValue::LongInt(200))]))
        .await
        .expect("declare");
    let probe = confirm_channel(&conn).await;
    assert!(queue_exists(&probe, &q).await);
    eventually("the unused queue to be deleted", || async { !queue_exists(&probe, &q).await }).await;
}

#[tokio::test]
async fn a_consumer_keeps_an_expiring_queue_alive() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    let q = unique("expires-used");
    declare_queue(&ch, &q, QueueDeclareOptions::default(), table(&[("x-expires", AMQPValue::LongInt(200))]))
        .await
        .expect("declare");
    let consumer =
        consume_with(&ch, &q, BasicConsumeOptions { no_ack: true, ..Default::default() }, FieldTable::default()).await;
    // Absence check: well past x-expires the consumed queue must still exist.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let probe = confirm_channel(&conn).await;
    assert!(queue_exists(&probe, &q).await, "a queue with a consumer is in use");
    ch.basic_cancel(consumer.tag(), BasicCancelOptions::default()).await.expect("cancel");
    eventually("the queue to expire once unused", || async { !queue_exists(&probe, &q).await }).await;
}

#[tokio::test]
async fn invalid_x_expires_is_precondition_failed() {
    let b = Broker::start();
    let conn = b.connect().await;
    let cases = [
        (AMQPValue::LongInt(0), "{value_zero,0}"),
        (AMQPValue::LongInt(-5), "{value_negative,-5}"),
        (lstr("100"), "\"expected integer, got longstr\""),
    ];
    for (value, reason) in cases {
        let q = unique("expires-invalid");
        let err = refused_declare(&conn, &q, table(&[("x-expires", value.clone())])).await;
        assert_eq!(
            err,
            (406, format!("PRECONDITION_FAILED - invalid arg 'x-expires' for queue '{q}' in vhost '/': {reason}")),
            "{value:?}"
        );
    }
}
