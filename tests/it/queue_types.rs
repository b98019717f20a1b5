//! Queue types (`x-queue-type`): classic given explicitly equals absent; quorum queues (durable
//! only, no exclusive/auto-delete/server-named, `x-delivery-limit` with the `x-delivery-count`
//! header on redeliveries and dead-lettering/dropping past the limit); streams' declare
//! refusals (the rest in `streams.rs`); `x-queue-mode`; and the validation texts.

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};

use crate::common::*;

fn queue_type(t: &str) -> FieldTable {
    table(&[("x-queue-type", lstr(t))])
}

fn quorum_with(extra: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = queue_type("quorum");
    for (k, v) in extra {
        t.insert((*k).into(), v.clone());
    }
    t
}

async fn delete_queue(ch: &Channel, q: &str) {
    within("queue.delete", ch.queue_delete(q.into(), QueueDeleteOptions::default())).await.expect("queue.delete");
}

fn delivery_count(d: &lapin::message::Delivery) -> Option<i64> {
    header(&d.properties, "x-delivery-count").map(|v| match v {
        AMQPValue::LongLongInt(n) => *n,
        AMQPValue::LongInt(n) => i64::from(*n),
        AMQPValue::LongUInt(n) => i64::from(*n),
        AMQPValue::ShortInt(n) => i64::from(*n),
        other => panic!("x-delivery-count must be an integer, got {other:?}"),
    })
}

#[tokio::test]
async fn explicit_classic_type_is_equivalent_to_no_type() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q1 = exclusive_queue_with(&ch, "classic-absent", FieldTable::default()).await;
    declare_queue(&ch, &q1, QueueDeclareOptions::exclusive(), queue_type("classic"))
        .await
        .expect("redeclare with classic");
    let q2 = exclusive_queue_with(&ch, "classic-explicit", queue_type("classic")).await;
    declare_queue(&ch, &q2, QueueDeclareOptions::exclusive(), FieldTable::default())
        .await
        .expect("redeclare without a type");
}

#[tokio::test]
async fn quorum_queue_is_declared_and_round_trips_messages() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = unique("quorum");
    let ok =
        declare_queue(&ch, &q, QueueDeclareOptions::durable(), queue_type("quorum")).await.expect("declare quorum");
    assert_eq!((ok.message_count(), ok.consumer_count()), (0, 0));
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    assert!(publish_confirmed_props(&ch, "", &q, "replicated", BasicProperties::default()).await.is_ack());
    assert_eq!(ready_count(&ch, &q).await, 1);
    declare_queue(&ch, &q, QueueDeclareOptions::durable(), queue_type("quorum")).await.expect("equal redeclare");
    assert_eq!(get_all(&ch, &q).await, vec!["replicated"]);
    delete_queue(&ch, &q).await;
}

#[tokio::test]
async fn redeclaring_a_classic_queue_as_quorum_is_precondition_failed() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = unique("classic-then-quorum");
    declare_queue(&ch, &q, QueueDeclareOptions::durable(), FieldTable::default()).await.expect("declare classic");
    let err = expect_amqp_error(declare_queue(&ch, &q, QueueDeclareOptions::durable(), queue_type("quorum")).await);
    assert_eq!(
        err,
        (
            406,
            format!(
                "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue '{q}' in vhost '/': received the value 'quorum' of type 'longstr' but current is none"
            )
        )
    );
    delete_queue(&b.channel().await.1, &q).await;
}

#[tokio::test]
async fn non_durable_quorum_queue_is_precondition_failed() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = unique("quorum-transient");
    let err = expect_amqp_error(declare_queue(&ch, &q, QueueDeclareOptions::default(), queue_type("quorum")).await);
    assert_eq!(
        err,
        (406, format!("PRECONDITION_FAILED - invalid property 'non-durable' for queue '{q}' in vhost '/'"))
    );
}

#[tokio::test]
async fn exclusive_auto_delete_and_server_named_quorum_queues_are_refused() {
    let b = Broker::start();
    let conn = b.connect().await;
    let cases = [
        (QueueDeclareOptions { durable: true, exclusive: true, ..Default::default() }, "exclusive-owner"),
        (QueueDeclareOptions { durable: true, auto_delete: true, ..Default::default() }, "auto-delete"),
    ];
    for (options, property) in cases {
        let ch = conn.create_channel().await.expect("channel");
        let q = unique("quorum-refused");
        let err = expect_amqp_error(declare_queue(&ch, &q, options, queue_type("quorum")).await);
        assert_eq!(
            err,
            (406, format!("PRECONDITION_FAILED - invalid property '{property}' for queue '{q}' in vhost '/'"))
        );
    }
    let ch = conn.create_channel().await.expect("channel");
    let err = expect_amqp_error(declare_queue(&ch, "", QueueDeclareOptions::durable(), queue_type("quorum")).await);
    assert_eq!(
        err,
        (406, "PRECONDITION_FAILED - Cannot declare a server-named queue for type rabbit_quorum_queue".to_string())
    );
}

#[tokio::test]
async fn quorum_delivery_limit_dead_letters_after_the_last_redelivery() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let dlx = auto_delete_exchange(&ch, "qq-dlx", ExchangeKind::Direct).await;
    let target = exclusive_queue(&ch).await;
    bind(&ch, &target, &dlx, "poison").await;
    let q = unique("quorum-limit");
    let args = quorum_with(&[
        ("x-delivery-limit", AMQPValue::LongInt(2)),
        ("x-dead-letter-exchange", lstr(&dlx)),
        ("x-dead-letter-routing-key", lstr("poison")),
    ]);
    declare_queue(&ch, &q, QueueDeclareOptions::durable(), args).await.expect("declare");
    publish_to(&ch, &q, "bad").await;
    let mut consumer = consume(&ch, &q).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let d = next_delivery(&mut consumer).await;
        seen.push((d.redelivered, delivery_count(&d)));
        d.acker.nack(BasicNackOptions { multiple: false, requeue: true }).await.expect("nack requeue");
    }
    assert_eq!(
        seen,
        vec![(false, None), (true, Some(1)), (true, Some(2))],
        "(redelivered, x-delivery-count) per delivery"
    );
    let mut dead =
        consume_with(&ch, &target, BasicConsumeOptions { no_ack: true, ..Default::default() }, FieldTable::default())
            .await;
    let d = next_delivery(&mut dead).await;
    assert_eq!(text(&d.data), "bad");
    let deaths = x_death(&d.properties);
    assert_eq!(str_field(&deaths[0], "reason"), "delivery_limit");
    assert_eq!(str_field(&deaths[0], "queue"), q);
    // Absence check: the message is gone from the quorum queue.
    assert_no_delivery(&mut consumer).await;
    delete_queue(&ch, &q).await;
}

#[tokio::test]
async fn quorum_delivery_limit_without_dlx_drops_the_message() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = unique("quorum-limit-drop");
    declare_queue(&ch, &q, QueueDeclareOptions::durable(), quorum_with(&[("x-delivery-limit", AMQPValue::LongInt(1))]))
        .await
        .expect("declare");
    publish_to(&ch, &q, "bad").await;
    let mut consumer = consume(&ch, &q).await;
    for expected in [None, Some(1)] {
        let d = next_delivery(&mut consumer).await;
        assert_eq!(delivery_count(&d), expected);
        d.acker.nack(BasicNackOptions { multiple: false, requeue: true }).await.expect("nack requeue");
    }
    // Absence check: past the limit the message is not delivered again.
    assert_no_delivery(&mut consumer).await;
    assert_eq!(ready_count(&ch, &q).await, 0);
    delete_queue(&ch, &q).await;
}

#[tokio::test]
async fn delivery_limit_on_a_classic_queue_is_precondition_failed() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = unique("classic-limit");
    let err = expect_amqp_error(
        declare_queue(&ch, &q, QueueDeclareOptions::exclusive(), table(&[("x-delivery-limit", AMQPValue::LongInt(3))]))
            .await,
    );
    assert_eq!(
        err,
        (
            406,
            format!(
                "PRECONDITION_FAILED - invalid arg 'x-delivery-limit' for queue '{q}' in vhost '/' of queue type rabbit_classic_queue"
            )
        )
    );
}

#[tokio::test]
async fn lazy_queue_mode_is_accepted_and_unknown_modes_are_refused() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    let q = exclusive_queue_with(&ch, "lazy", table(&[("x-queue-mode", lstr("lazy"))])).await;
    publish_to(&ch, &q, "lazy but there").await;
    assert_eq!(get_all(&ch, &q).await, vec!["lazy but there"]);
    exclusive_queue_with(&ch, "mode-default", table(&[("x-queue-mode", lstr("default"))])).await;

    let ch = conn.create_channel().await.expect("channel");
    let q = unique("mode-bogus");
    let err = expect_amqp_error(
        declare_queue(&ch, &q, QueueDeclareOptions::exclusive(), table(&[("x-queue-mode", lstr("bogus"))])).await,
    );
    assert_eq!(
        err,
        (
            406,
            format!(
                "PRECONDITION_FAILED - invalid arg 'x-queue-mode' for queue '{q}' in vhost '/': \"unsupported queue mode 'bogus'\""
            )
        )
    );
}

#[tokio::test]
async fn unknown_queue_type_is_precondition_failed() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = unique("type-bogus");
    let err = expect_amqp_error(declare_queue(&ch, &q, QueueDeclareOptions::exclusive(), queue_type("bogus")).await);
    assert_eq!(
        err,
        (
            406,
            format!(
                "PRECONDITION_FAILED - invalid arg 'x-queue-type' for queue '{q}' in vhost '/': \"unsupported queue type 'bogus'\""
            )
        )
    );
}

#[tokio::test]
async fn non_string_queue_type_and_mode_name_the_value_type() {
    // Measured on RabbitMQ 3.10.8: `{unacceptable_type,<type>}` for both arguments.
    let b = Broker::start();
    for (key, value, shown) in [
        ("x-queue-type", AMQPValue::LongInt(5), "signedint"),
        ("x-queue-type", AMQPValue::Boolean(true), "bool"),
        ("x-queue-mode", AMQPValue::LongInt(5), "signedint"),
    ] {
        let (_conn, ch) = b.channel().await;
        let q = unique("type-nonstring");
        let err =
            expect_amqp_error(declare_queue(&ch, &q, QueueDeclareOptions::exclusive(), table(&[(key, value)])).await);
        assert_eq!(
            err,
            (
                406,
                format!(
                    "PRECONDITION_FAILED - invalid arg '{key}' for queue '{q}' in vhost '/': {{unacceptable_type,{shown}}}"
                )
            )
        );
    }
}

/// `x-queue-version` (CQv1/CQv2 in RabbitMQ 3.10) is accepted with 1 or 2 and has no effect on
/// the wire; other integers and non-integers are refused with RabbitMQ's texts.
#[tokio::test]
async fn queue_version_one_or_two_is_accepted_and_others_are_refused() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    for v in [1, 2] {
        let q = exclusive_queue_with(&ch, "qv", table(&[("x-queue-version", AMQPValue::LongInt(v))])).await;
        publish_to(&ch, &q, "versioned").await;
        assert_eq!(get_all(&ch, &q).await, vec!["versioned"]);
    }
    for (value, why) in [
        (AMQPValue::LongInt(3), "\"unsupported queue version '3'\"".to_string()),
        (AMQPValue::LongInt(0), "\"unsupported queue version '0'\"".to_string()),
        (lstr("2"), "\"expected integer, got longstr\"".to_string()),
    ] {
        let ch = conn.create_channel().await.expect("channel");
        let q = unique("qv-bad");
        let err = expect_amqp_error(
            declare_queue(&ch, &q, QueueDeclareOptions::exclusive(), table(&[("x-queue-version", value)])).await,
        );
        assert_eq!(
            err,
            (406, format!("PRECONDITION_FAILED - invalid arg 'x-queue-version' for queue '{q}' in vhost '/': {why}"))
        );
    }
}

/// `x-dead-letter-strategy` belongs to quorum queues: `at-most-once` and `at-least-once` are
/// accepted there (Warren still dead-letters at most once, as its README says), anything else is
/// refused, and a classic queue refuses the argument altogether.
#[tokio::test]
async fn dead_letter_strategy_is_a_quorum_argument_with_two_values() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    for strategy in ["at-least-once", "at-most-once"] {
        let q = unique("dls");
        let args = quorum_with(&[
            ("x-dead-letter-strategy", lstr(strategy)),
            ("x-overflow", lstr("reject-publish")),
            ("x-dead-letter-exchange", lstr("")),
        ]);
        declare_queue(&ch, &q, QueueDeclareOptions::durable(), args).await.expect("declare quorum queue");
        delete_queue(&ch, &q).await;
    }

    // Measured on RabbitMQ 3.10.8.
    for (value, why) in
        [(lstr("bogus"), "invalid_dlx_strategy"), (AMQPValue::LongInt(1), "{unacceptable_type,signedint}")]
    {
        let ch = conn.create_channel().await.expect("channel");
        let q = unique("dls-bogus");
        let err = expect_amqp_error(
            declare_queue(&ch, &q, QueueDeclareOptions::durable(), quorum_with(&[("x-dead-letter-strategy", value)]))
                .await,
        );
        assert_eq!(
            err,
            (
                406,
                format!(
                    "PRECONDITION_FAILED - invalid arg 'x-dead-letter-strategy' for queue '{q}' in vhost '/': {why}"
                )
            )
        );
    }

    let ch = conn.create_channel().await.expect("channel");
    let q = unique("dls-classic");
    let err = expect_amqp_error(
        declare_queue(
            &ch,
            &q,
            QueueDeclareOptions::exclusive(),
            table(&[("x-dead-letter-strategy", lstr("at-least-once"))]),
        )
        .await,
    );
    assert_eq!(
        err,
        (
            406,
            format!(
                "PRECONDITION_FAILED - invalid arg 'x-dead-letter-strategy' for queue '{q}' in vhost '/' of queue type rabbit_classic_queue"
            )
        )
    );
}

/// A bad stream declare gets RabbitMQ 3.10's refusal (measured texts), in RabbitMQ's order:
/// the arguments, then the arguments of other queue types, then the flags.
#[tokio::test]
async fn bad_stream_declares_get_rabbitmqs_texts() {
    let b = Broker::start();
    let conn = b.connect().await;
    type Case = (QueueDeclareOptions, Vec<(&'static str, AMQPValue)>, &'static str);
    let cases: Vec<Case> = vec![
        (QueueDeclareOptions::default(), vec![], "invalid property 'non-durable' for queue 'Q' in vhost '/'"),
        (
            QueueDeclareOptions { durable: true, exclusive: true, ..Default::default() },
            vec![],
            "invalid property 'exclusive-owner' for queue 'Q' in vhost '/'",
        ),
        (
            QueueDeclareOptions { durable: true, ..Default::default() },
            vec![("x-max-age", lstr("1A"))],
            "invalid arg 'x-max-age' for queue 'Q' in vhost '/': invalid_max_age",
        ),
        (
            QueueDeclareOptions::default(),
            vec![("x-message-ttl", AMQPValue::LongInt(-5))],
            "invalid arg 'x-message-ttl' for queue 'Q' in vhost '/' of queue type rabbit_stream_queue",
        ),
        (
            QueueDeclareOptions { durable: true, ..Default::default() },
            vec![("x-stream-max-segment-size-bytes", AMQPValue::LongLongInt(3_000_000_001))],
            "Exceeded max value for x-stream-max-segment-size-bytes",
        ),
    ];
    for (flags, args, want) in cases {
        let ch = conn.create_channel().await.unwrap();
        let q = unique("bad-stream");
        let mut t = queue_type("stream");
        for (k, v) in args {
            t.insert(k.into(), v);
        }
        let (code, text) = expect_amqp_error(declare_queue(&ch, &q, flags, t).await);
        assert_eq!((code, text), (406, format!("PRECONDITION_FAILED - {}", want.replace("'Q'", &format!("'{q}'")))));
    }
}
