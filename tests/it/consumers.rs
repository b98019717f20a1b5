//! Consumer selection: single active consumer (only the first registered consumer gets
//! messages; failover on cancel and on channel close in registration order; exclusive consume
//! refused; argument validation), consumer priorities (`x-priority` consumer argument with
//! prefetch, round-robin among equals, validation), and the Warren-only per-queue consumer
//! acknowledgement timeout (`x-consumer-timeout`).

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Consumer};

use crate::common::*;

fn sac() -> FieldTable {
    table(&[("x-single-active-consumer", AMQPValue::Boolean(true))])
}

fn priority(p: i32) -> FieldTable {
    table(&[("x-priority", AMQPValue::LongInt(p))])
}

async fn publish_confirmed_all(ch: &Channel, q: &str, bodies: &[&str]) {
    for body in bodies {
        assert!(publish_confirmed_props(ch, "", q, body, BasicProperties::default()).await.is_ack());
    }
}

fn bodies(ds: &[lapin::message::Delivery]) -> Vec<String> {
    ds.iter().map(|d| text(&d.data)).collect()
}

/// A consumer on its own channel of `conn`, with per-consumer prefetch `prefetch` (0 = none).
async fn consumer_on_new_channel(
    conn: &lapin::Connection,
    q: &str,
    prefetch: u16,
    arguments: FieldTable,
) -> (Channel, Consumer) {
    let ch = conn.create_channel().await.expect("channel");
    if prefetch > 0 {
        ch.basic_qos(prefetch, BasicQosOptions::default()).await.expect("qos");
    }
    let consumer = consume_with(&ch, q, BasicConsumeOptions::default(), arguments).await;
    (ch, consumer)
}

#[tokio::test]
async fn single_active_consumer_only_the_first_consumer_gets_messages() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let q = exclusive_queue_with(&ch, "sac", sac()).await;
    let (_c1, mut first) = consumer_on_new_channel(&conn, &q, 0, FieldTable::default()).await;
    let (_c2, mut second) = consumer_on_new_channel(&conn, &q, 0, FieldTable::default()).await;
    publish_confirmed_all(&ch, &q, &["a", "b", "c", "d"]).await;
    assert_eq!(bodies(&deliveries(&mut first, 4).await), vec!["a", "b", "c", "d"]);
    // Absence check: the waiting consumer gets nothing while the first one is active.
    assert_no_delivery(&mut second).await;
    let ok = declare_queue(&ch, &q, QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await
        .expect("passive");
    assert_eq!(ok.consumer_count(), 2, "consumer-count includes the waiting consumer");
}

#[tokio::test]
async fn single_active_consumer_fails_over_on_cancel_in_registration_order() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let q = exclusive_queue_with(&ch, "sac-cancel", sac()).await;
    let (c1, mut first) = consumer_on_new_channel(&conn, &q, 0, FieldTable::default()).await;
    let (_c2, mut second) = consumer_on_new_channel(&conn, &q, 0, FieldTable::default()).await;
    let (_c3, mut third) = consumer_on_new_channel(&conn, &q, 0, FieldTable::default()).await;
    publish_confirmed_all(&ch, &q, &["one"]).await;
    let d = next_delivery(&mut first).await;
    assert_eq!(text(&d.data), "one");
    d.acker.ack(BasicAckOptions::default()).await.expect("ack");
    c1.basic_cancel(first.tag(), BasicCancelOptions::default()).await.expect("cancel");
    publish_confirmed_all(&ch, &q, &["two", "three"]).await;
    assert_eq!(
        bodies(&deliveries(&mut second, 2).await),
        vec!["two", "three"],
        "the next registered consumer takes over"
    );
    // Absence check: the third consumer is still waiting.
    assert_no_delivery(&mut third).await;
}

#[tokio::test]
async fn single_active_consumer_fails_over_on_channel_close_with_unacked_messages_requeued() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let q = exclusive_queue_with(&ch, "sac-close", sac()).await;
    let (c1, mut first) = consumer_on_new_channel(&conn, &q, 0, FieldTable::default()).await;
    let (_c2, mut second) = consumer_on_new_channel(&conn, &q, 0, FieldTable::default()).await;
    publish_confirmed_all(&ch, &q, &["held"]).await;
    assert_eq!(text(&next_delivery(&mut first).await.data), "held");
    c1.close(200, "OK".into()).await.expect("close channel");
    let d = next_delivery(&mut second).await;
    assert_eq!(text(&d.data), "held");
    assert!(d.redelivered, "the unacked message comes back redelivered to the new active consumer");
    publish_confirmed_all(&ch, &q, &["after"]).await;
    assert_eq!(text(&next_delivery(&mut second).await.data), "after");
}

#[tokio::test]
async fn exclusive_consume_on_a_single_active_consumer_queue_is_access_refused() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = exclusive_queue_with(&ch, "sac-exclusive", sac()).await;
    let err = expect_amqp_error(
        ch.basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions { exclusive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await,
    );
    assert_eq!(err, (403, format!("ACCESS_REFUSED - queue '{q}' in vhost '/' in exclusive use")));
}

#[tokio::test]
async fn non_boolean_single_active_consumer_is_precondition_failed() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = unique("sac-invalid");
    let err = expect_amqp_error(
        declare_queue(
            &ch,
            &q,
            QueueDeclareOptions::exclusive(),
            table(&[("x-single-active-consumer", AMQPValue::LongInt(1))]),
        )
        .await,
    );
    assert_eq!(
        err,
        (
            406,
            format!(
                "PRECONDITION_FAILED - invalid arg 'x-single-active-consumer' for queue '{q}' in vhost '/': {{unacceptable_type,signedint}}"
            )
        )
    );
}

/// Reference measurement: prefetch 2, priorities 10 and 1, five messages ⇒ high, high, low,
/// low, and one left ready; an ack by the high-priority consumer releases the fifth to it.
#[tokio::test]
async fn higher_priority_consumer_is_served_first_until_its_prefetch_is_full() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let q = exclusive_queue_with(&ch, "cprio", FieldTable::default()).await;
    let (_low_ch, mut low) = consumer_on_new_channel(&conn, &q, 2, priority(1)).await;
    let (_high_ch, mut high) = consumer_on_new_channel(&conn, &q, 2, priority(10)).await;
    publish_confirmed_all(&ch, &q, &["m1", "m2", "m3", "m4", "m5"]).await;
    let to_high = deliveries(&mut high, 2).await;
    assert_eq!(bodies(&to_high), vec!["m1", "m2"]);
    assert_eq!(bodies(&deliveries(&mut low, 2).await), vec!["m3", "m4"]);
    assert_eq!(ready_count(&ch, &q).await, 1);
    to_high[0].acker.ack(BasicAckOptions::default()).await.expect("ack");
    assert_eq!(text(&next_delivery(&mut high).await.data), "m5");
    // Absence check: the low-priority consumer is full and gets nothing more.
    assert_no_delivery(&mut low).await;
}

#[tokio::test]
async fn consumers_of_equal_priority_share_round_robin_and_lower_ones_wait() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let q = exclusive_queue_with(&ch, "cprio-rr", FieldTable::default()).await;
    let (_x, mut lowest) = consumer_on_new_channel(&conn, &q, 0, priority(-1)).await;
    let (_y, mut a) = consumer_on_new_channel(&conn, &q, 0, priority(5)).await;
    let (_z, mut b2) = consumer_on_new_channel(&conn, &q, 0, priority(5)).await;
    publish_confirmed_all(&ch, &q, &["1", "2", "3", "4"]).await;
    let got_a = bodies(&deliveries(&mut a, 2).await);
    let got_b = bodies(&deliveries(&mut b2, 2).await);
    let mut all = [got_a.clone(), got_b.clone()].concat();
    all.sort();
    assert_eq!(all, vec!["1", "2", "3", "4"]);
    assert!(got_a == ["1", "3"] || got_a == ["2", "4"], "alternating deliveries, got {got_a:?} and {got_b:?}");
    // Absence check: the negative-priority consumer gets nothing while the others can accept.
    assert_no_delivery(&mut lowest).await;
}

#[tokio::test]
async fn non_integer_consumer_priority_is_precondition_failed() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = exclusive_queue_with(&ch, "cprio-invalid", FieldTable::default()).await;
    let err = expect_amqp_error(
        ch.basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            table(&[("x-priority", lstr("high"))]),
        )
        .await,
    );
    assert_eq!(
        err,
        (
            406,
            format!(
                "PRECONDITION_FAILED - invalid arg 'x-priority' for queue '{q}' in vhost '/': \"expected integer, got longstr\""
            )
        )
    );
}

/// WARREN-ONLY: RabbitMQ 3.10 has no per-queue `x-consumer-timeout` (it ignores the argument and
/// only checks its global `consumer_timeout` once a minute), so this test fails against it by
/// design. Warren must close the consumer's channel with RabbitMQ's consumer-timeout 406 text
/// (using that channel's id and the queue's timeout) once a delivery stays unacknowledged for
/// longer than 500 ms, and requeue the message for another consumer.
#[tokio::test]
async fn warren_only_unacked_delivery_past_x_consumer_timeout_closes_the_channel() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    let q = exclusive_queue_with(&ch, "ack-timeout", table(&[("x-consumer-timeout", AMQPValue::LongInt(500))])).await;
    let slow = conn.create_channel().await.expect("channel");
    let mut ev = events(&conn);
    let mut consumer = consume(&slow, &q).await;
    publish_to(&ch, &q, "forgotten").await;
    let d = next_delivery(&mut consumer).await;
    assert!(!d.redelivered);
    let started = std::time::Instant::now();
    let close = next_close(&mut ev).await;
    assert_eq!(
        close,
        (
            406,
            format!(
                "PRECONDITION_FAILED - delivery acknowledgement on channel {} timed out. Timeout value used: 500 ms. \
                 This timeout value can be configured, see consumers doc guide to learn more",
                slow.id()
            )
        )
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(300), "not closed long before the timeout");
    let mut other = consume(&ch, &q).await;
    let again = next_delivery(&mut other).await;
    assert_eq!(text(&again.data), "forgotten");
    assert!(again.redelivered, "the timed-out delivery is requeued");
}

/// The consumer argument `x-cancel-on-ha-failover` (classic mirroring, RabbitMQ 3.x): a boolean
/// is accepted (and has no effect without mirrors); any other type is refused.
#[tokio::test]
async fn cancel_on_ha_failover_takes_a_boolean() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    let q = exclusive_queue_with(&ch, "ha-failover", FieldTable::default()).await;
    for flag in [true, false] {
        let mut c = consume_with(
            &ch,
            &q,
            BasicConsumeOptions::default(),
            table(&[("x-cancel-on-ha-failover", AMQPValue::Boolean(flag))]),
        )
        .await;
        publish_to(&ch, &q, "to the flagged consumer").await;
        let d = next_delivery(&mut c).await;
        assert_eq!(text(&d.data), "to the flagged consumer");
        d.acker.ack(BasicAckOptions::default()).await.expect("ack");
        within("basic.cancel", ch.basic_cancel(c.tag().as_str().into(), BasicCancelOptions::default()))
            .await
            .expect("cancel");
    }
    // Measured on RabbitMQ 3.10.8: `{unacceptable_type,<type>}`, in the queue-argument text shape.
    for (value, shown) in [(lstr("true"), "longstr"), (AMQPValue::LongInt(1), "signedint")] {
        let ch = conn.create_channel().await.expect("channel");
        let err = expect_amqp_error(
            ch.basic_consume(
                q.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                table(&[("x-cancel-on-ha-failover", value.clone())]),
            )
            .await,
        );
        assert_eq!(
            err,
            (
                406,
                format!(
                    "PRECONDITION_FAILED - invalid arg 'x-cancel-on-ha-failover' for queue '{q}' in vhost '/': {{unacceptable_type,{shown}}}"
                )
            )
        );
    }
}

/// WARREN-ONLY (needs its configuration file): the global `amqp.consumer_timeout` applies to
/// queues without `x-consumer-timeout`: an unacknowledged delivery older than it closes the
/// consumer's channel with RabbitMQ's 406 text naming the configured value.
#[tokio::test]
async fn global_consumer_timeout_from_the_config_file_closes_the_channel() {
    let b = Broker::start_with_config("[amqp]\nconsumer_timeout = 400\n");
    let (conn, ch) = b.channel().await;
    let q = exclusive_queue_with(&ch, "global-timeout", FieldTable::default()).await;
    let slow = conn.create_channel().await.expect("channel");
    let mut ev = events(&conn);
    let mut consumer = consume(&slow, &q).await;
    publish_to(&ch, &q, "held too long").await;
    next_delivery(&mut consumer).await;
    let started = std::time::Instant::now();
    assert_eq!(
        next_close(&mut ev).await,
        (
            406,
            format!(
                "PRECONDITION_FAILED - delivery acknowledgement on channel {} timed out. Timeout value used: 400 ms. \
                 This timeout value can be configured, see consumers doc guide to learn more",
                slow.id()
            )
        )
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(250), "not closed long before the timeout");
    assert_eq!(get_all(&ch, &q).await, vec!["held too long"], "the delivery is requeued");
}

/// WARREN-ONLY (needs its configuration file): `amqp.consumer_timeout = 0` disables the global
/// check. The observation window is an event: a second queue with its own 300 ms
/// `x-consumer-timeout`, delivered to later, has its channel closed; the delivery held longer on
/// the queue without the argument is still open and can be acknowledged.
#[tokio::test]
async fn global_consumer_timeout_zero_never_closes_the_channel() {
    let b = Broker::start_with_config("[amqp]\nconsumer_timeout = 0\n");
    let (conn, ch) = b.channel().await;
    let q = exclusive_queue_with(&ch, "no-timeout", FieldTable::default()).await;
    let timed =
        exclusive_queue_with(&ch, "own-timeout", table(&[("x-consumer-timeout", AMQPValue::LongInt(300))])).await;
    let patient = conn.create_channel().await.expect("channel");
    let watched = conn.create_channel().await.expect("channel");
    let mut ev = events(&conn);
    let mut kept = consume(&patient, &q).await;
    publish_to(&ch, &q, "kept").await;
    let held = next_delivery(&mut kept).await;
    let held_since = std::time::Instant::now();
    let mut dropped = consume(&watched, &timed).await;
    publish_to(&ch, &timed, "dropped").await;
    next_delivery(&mut dropped).await;
    let (code, why) = next_close(&mut ev).await;
    assert_eq!(code, 406);
    assert!(
        why.starts_with(&format!(
            "PRECONDITION_FAILED - delivery acknowledgement on channel {} timed out",
            watched.id()
        )),
        "only the channel of the queue with its own timeout is closed: {why}"
    );
    assert!(held_since.elapsed() >= std::time::Duration::from_millis(300), "the held delivery outlived that timeout");
    assert!(patient.status().connected(), "the channel holding the older delivery is still open");
    held.acker.ack(BasicAckOptions::default()).await.expect("ack the delivery held past the other timeout");
    sync_point(&patient).await;
    assert_eq!(ready_count(&patient, &q).await, 0, "acknowledged, not requeued");
}
