//! Queue length limits: `x-max-length` and `x-max-length-bytes` with the default drop-head
//! overflow (newest kept), a limit of 0, limits counting ready messages only, `reject-publish`
//! (basic.nack in confirm mode, silent drop otherwise, no basic.return), and the validation texts.

use lapin::BasicProperties;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};

use crate::common::*;

fn max_len(n: i32) -> FieldTable {
    table(&[("x-max-length", AMQPValue::LongInt(n))])
}

#[tokio::test]
async fn max_length_drop_head_keeps_the_newest_messages() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = exclusive_queue_with(&ch, "maxlen", max_len(2)).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    for i in 1..=5 {
        let confirmation = publish_confirmed_props(&ch, "", &q, &format!("m{i}"), BasicProperties::default()).await;
        assert!(confirmation.is_ack(), "drop-head acks every publish");
    }
    assert_eq!(ready_count(&ch, &q).await, 2);
    assert_eq!(get_all(&ch, &q).await, vec!["m4", "m5"]);
}

#[tokio::test]
async fn max_length_bytes_counts_body_bytes() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = exclusive_queue_with(&ch, "maxbytes", table(&[("x-max-length-bytes", AMQPValue::LongInt(5))])).await;
    publish_to(&ch, &q, "aaa").await;
    publish_to(&ch, &q, "bbb").await;
    assert_eq!(get_all(&ch, &q).await, vec!["bbb"], "two 3-byte bodies exceed 5 bytes: the oldest goes");

    let q2 = exclusive_queue_with(&ch, "maxbytes2", table(&[("x-max-length-bytes", AMQPValue::LongInt(10))])).await;
    for body in ["1111", "2222", "3333"] {
        publish_to(&ch, &q2, body).await;
    }
    assert_eq!(get_all(&ch, &q2).await, vec!["2222", "3333"]);
}

#[tokio::test]
async fn max_length_zero_keeps_nothing() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = exclusive_queue_with(&ch, "maxlen-zero", max_len(0)).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    assert!(publish_confirmed_props(&ch, "", &q, "gone", BasicProperties::default()).await.is_ack());
    assert_eq!(ready_count(&ch, &q).await, 0);
    assert!(get_all(&ch, &q).await.is_empty());
}

#[tokio::test]
async fn max_length_counts_ready_messages_only() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    let q = exclusive_queue_with(&ch, "maxlen-ready", max_len(1)).await;
    let cch = conn.create_channel().await.expect("channel");
    cch.basic_qos(1, BasicQosOptions::default()).await.expect("qos");
    let mut consumer = consume(&cch, &q).await;
    publish_to(&ch, &q, "held").await;
    let held = next_delivery(&mut consumer).await;
    assert_eq!(text(&held.data), "held");
    publish_to(&ch, &q, "ready").await;
    assert_eq!(get_all(&ch, &q).await, vec!["ready"], "the unacked message does not count toward the limit");
    held.acker.ack(BasicAckOptions::default()).await.expect("ack");
}

#[tokio::test]
async fn reject_publish_nacks_confirmed_publishes_over_the_limit() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let args = table(&[("x-max-length", AMQPValue::LongInt(1)), ("x-overflow", lstr("reject-publish"))]);
    let q = exclusive_queue_with(&ch, "reject-publish", args).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    assert!(publish_confirmed_props(&ch, "", &q, "first", BasicProperties::default()).await.is_ack());
    assert!(publish_confirmed_props(&ch, "", &q, "second", BasicProperties::default()).await.is_nack());
    assert!(publish_confirmed_props(&ch, "", &q, "third", BasicProperties::default()).await.is_nack());
    assert_eq!(get_all(&ch, &q).await, vec!["first"], "the oldest stays, new ones are refused");
    assert!(publish_confirmed_props(&ch, "", &q, "room again", BasicProperties::default()).await.is_ack());
    assert_eq!(get_all(&ch, &q).await, vec!["room again"]);
}

#[tokio::test]
async fn reject_publish_without_confirms_drops_silently_without_a_return() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let args = table(&[("x-max-length", AMQPValue::LongInt(1)), ("x-overflow", lstr("reject-publish"))]);
    let q = exclusive_queue_with(&ch, "reject-publish-silent", args).await;
    publish_to(&ch, &q, "first").await;
    ch.basic_publish(
        "".into(),
        q.as_str().into(),
        BasicPublishOptions { mandatory: true, ..Default::default() },
        b"second",
        BasicProperties::default(),
    )
    .await
    .expect("publish");
    sync_point(&ch).await;
    assert!(
        ch.wait_for_confirms().await.expect("returns").is_empty(),
        "routed to a queue that refused it: no basic.return"
    );
    assert!(ch.status().connected());
    assert_eq!(get_all(&ch, &q).await, vec!["first"]);
}

#[tokio::test]
async fn invalid_length_arguments_are_precondition_failed() {
    let b = Broker::start();
    let conn = b.connect().await;
    let cases = [
        ("x-overflow", lstr("bogus"), "invalid_overflow"),
        ("x-overflow", AMQPValue::LongInt(1), "{unacceptable_type,signedint}"),
        ("x-max-length", AMQPValue::LongInt(-1), "{value_negative,-1}"),
        ("x-max-length", lstr("10"), "\"expected integer, got longstr\""),
        ("x-max-length-bytes", lstr("10"), "\"expected integer, got longstr\""),
        ("x-max-length-bytes", AMQPValue::LongInt(-1), "{value_negative,-1}"),
    ];
    for (key, value, reason) in cases {
        let ch = conn.create_channel().await.expect("channel");
        let q = unique("maxlen-invalid");
        let err = expect_amqp_error(
            declare_queue(&ch, &q, QueueDeclareOptions::exclusive(), table(&[(key, value.clone())])).await,
        );
        assert_eq!(
            err,
            (406, format!("PRECONDITION_FAILED - invalid arg '{key}' for queue '{q}' in vhost '/': {reason}")),
            "{key} = {value:?}"
        );
    }
}
