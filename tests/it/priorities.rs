//! Message priorities (`x-max-priority` queues): higher priority first, FIFO within a priority,
//! a missing priority counting as 0, priorities above the maximum treated as the maximum, queues
//! without `x-max-priority` ignoring the property, and the validation texts.

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};

use crate::common::*;

fn max_priority(n: i32) -> FieldTable {
    table(&[("x-max-priority", AMQPValue::LongInt(n))])
}

/// Publish `(priority, body)` pairs (None = no priority property) on a confirm-mode channel.
async fn publish_all(ch: &Channel, q: &str, messages: &[(Option<u8>, &str)]) {
    for (priority, body) in messages {
        let props = match priority {
            Some(p) => BasicProperties::default().with_priority(*p),
            None => BasicProperties::default(),
        };
        assert!(publish_confirmed_props(ch, "", q, body, props).await.is_ack());
    }
}

async fn confirm_channel(b: &Broker) -> (lapin::Connection, Channel) {
    let (conn, ch) = b.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    (conn, ch)
}

#[tokio::test]
async fn higher_priority_first_and_fifo_within_a_priority() {
    let b = Broker::start();
    let (_conn, ch) = confirm_channel(&b).await;
    let q = exclusive_queue_with(&ch, "prio", max_priority(5)).await;
    publish_all(
        &ch,
        &q,
        &[(Some(1), "p1-a"), (Some(3), "p3-a"), (Some(1), "p1-b"), (Some(3), "p3-b"), (Some(5), "p5")],
    )
    .await;
    assert_eq!(get_all(&ch, &q).await, vec!["p5", "p3-a", "p3-b", "p1-a", "p1-b"]);
}

#[tokio::test]
async fn a_message_without_priority_counts_as_zero() {
    let b = Broker::start();
    let (_conn, ch) = confirm_channel(&b).await;
    let q = exclusive_queue_with(&ch, "prio-none", max_priority(5)).await;
    publish_all(&ch, &q, &[(None, "none-a"), (Some(0), "p0"), (None, "none-b"), (Some(1), "p1")]).await;
    assert_eq!(get_all(&ch, &q).await, vec!["p1", "none-a", "p0", "none-b"]);
}

#[tokio::test]
async fn priority_above_the_maximum_is_treated_as_the_maximum() {
    let b = Broker::start();
    let (_conn, ch) = confirm_channel(&b).await;
    let q = exclusive_queue_with(&ch, "prio-cap", max_priority(5)).await;
    publish_all(
        &ch,
        &q,
        &[(Some(3), "p3"), (Some(5), "p5"), (Some(9), "p9"), (Some(1), "p1"), (None, "none"), (Some(0), "p0")],
    )
    .await;
    // p9 is capped to 5, so it stays behind the earlier p5 (FIFO within the top priority).
    assert_eq!(get_all(&ch, &q).await, vec!["p5", "p9", "p3", "p1", "none", "p0"]);
}

#[tokio::test]
async fn a_queue_without_max_priority_ignores_priorities() {
    let b = Broker::start();
    let (_conn, ch) = confirm_channel(&b).await;
    let q = exclusive_queue_with(&ch, "prio-plain", FieldTable::default()).await;
    publish_all(&ch, &q, &[(Some(1), "first"), (Some(9), "second"), (None, "third"), (Some(5), "fourth")]).await;
    assert_eq!(get_all(&ch, &q).await, vec!["first", "second", "third", "fourth"]);
}

#[tokio::test]
async fn a_consumer_gets_waiting_messages_in_priority_order() {
    let b = Broker::start();
    let (_conn, ch) = confirm_channel(&b).await;
    let q = exclusive_queue_with(&ch, "prio-consume", max_priority(10)).await;
    publish_all(&ch, &q, &[(Some(2), "low"), (Some(8), "high"), (Some(5), "mid")]).await;
    let mut consumer =
        consume_with(&ch, &q, BasicConsumeOptions { no_ack: true, ..Default::default() }, FieldTable::default()).await;
    let got = deliveries(&mut consumer, 3).await;
    assert_eq!(got.iter().map(|d| text(&d.data)).collect::<Vec<_>>(), vec!["high", "mid", "low"]);
    assert_eq!(got[0].properties.priority(), &Some(8), "the priority property is delivered unchanged");
}

#[tokio::test]
async fn invalid_x_max_priority_is_precondition_failed() {
    let b = Broker::start();
    let conn = b.connect().await;
    let cases = [
        (AMQPValue::LongInt(256), "{max_value_exceeded,256}"),
        (AMQPValue::LongInt(-1), "{value_negative,-1}"),
        (lstr("5"), "\"expected integer, got longstr\""),
    ];
    for (value, reason) in cases {
        let ch = conn.create_channel().await.expect("channel");
        let q = unique("prio-invalid");
        let err = expect_amqp_error(
            declare_queue(&ch, &q, QueueDeclareOptions::exclusive(), table(&[("x-max-priority", value.clone())])).await,
        );
        assert_eq!(
            err,
            (406, format!("PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue '{q}' in vhost '/': {reason}")),
            "{value:?}"
        );
    }
}
