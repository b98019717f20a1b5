//! Queues: server-named queues, declare-ok counts, redeclare equivalence and its exact 406
//! texts, reserved names, exclusive and auto-delete lifetimes, bind/unbind, purge, delete (with
//! if-unused / if-empty), and the "last declared queue" shortcut for an empty queue name.

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};

use crate::common::*;

fn args(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

async fn declare(
    ch: &Channel,
    name: &str,
    options: QueueDeclareOptions,
    arguments: FieldTable,
) -> lapin::Result<lapin::Queue> {
    within("queue.declare", ch.queue_declare(name.into(), options, arguments)).await
}

async fn publish(ch: &Channel, queue: &str, body: &str) {
    ch.basic_publish(
        "".into(),
        queue.into(),
        BasicPublishOptions::default(),
        body.as_bytes(),
        BasicProperties::default(),
    )
    .await
    .expect("basic.publish");
}

/// Publish on a channel in confirm mode and wait for the broker's ack, so the message is
/// known to be enqueued (RabbitMQ answers queue.declare's counts out of band of in-flight
/// publishes).
async fn publish_confirmed(ch: &Channel, queue: &str, body: &str) {
    let confirm = ch
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            BasicProperties::default(),
        )
        .await
        .expect("basic.publish");
    assert!(within("publisher confirm", confirm).await.expect("confirm").is_ack());
}

async fn delete(ch: &Channel, queue: &str) -> u32 {
    within("queue.delete", ch.queue_delete(queue.into(), QueueDeleteOptions::default())).await.expect("queue.delete")
}

fn passive() -> QueueDeclareOptions {
    QueueDeclareOptions::default().passive()
}

#[tokio::test]
async fn server_named_queue_gets_an_amq_gen_name() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = declare(&ch, "", QueueDeclareOptions::exclusive(), FieldTable::default()).await.expect("declare");
    let name = q.name().as_str();
    assert!(name.starts_with("amq.gen-"), "{name}");
    assert_eq!(name.len(), 30, "amq.gen- plus 22 characters: {name}");
    assert_eq!((q.message_count(), q.consumer_count()), (0, 0));
    let other = declare(&ch, "", QueueDeclareOptions::exclusive(), FieldTable::default()).await.expect("declare");
    assert_ne!(other.name().as_str(), name, "each server-named queue is new");
}

#[tokio::test]
async fn declare_ok_counts_ready_messages_and_consumers() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    let q = unique("counts");
    declare(&ch, &q, QueueDeclareOptions::default(), FieldTable::default()).await.expect("declare");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    for i in 0..3 {
        publish_confirmed(&ch, &q, &format!("m{i}")).await;
    }
    let ok = declare(&ch, &q, passive(), FieldTable::default()).await.expect("passive");
    assert_eq!((ok.message_count(), ok.consumer_count()), (3, 0));

    // One consumer holding one unacked delivery: that message is no longer "ready".
    let cch = conn.create_channel().await.expect("channel");
    cch.basic_qos(1, BasicQosOptions::default()).await.expect("qos");
    let mut consumer = cch
        .basic_consume(q.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let d = next_delivery(&mut consumer).await;
    assert_eq!(d.data, b"m0");
    let ok = declare(&ch, &q, passive(), FieldTable::default()).await.expect("passive");
    assert_eq!((ok.message_count(), ok.consumer_count()), (2, 1));
    assert_eq!(delete(&ch, &q).await, 2);
}

#[tokio::test]
async fn redeclare_with_other_durable_flag_is_precondition_failed() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    let q = unique("redeclare-durable");
    declare(&ch, &q, QueueDeclareOptions::default(), FieldTable::default()).await.expect("declare");
    let err = expect_amqp_error(declare(&ch, &q, QueueDeclareOptions::durable(), FieldTable::default()).await);
    assert_eq!(
        err,
        (
            406,
            format!(
                "PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{q}' in vhost '/': received 'true' but current is 'false'"
            )
        )
    );
    delete(&conn.create_channel().await.expect("channel"), &q).await;
}

#[tokio::test]
async fn redeclare_with_other_auto_delete_flag_is_precondition_failed() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    let q = unique("redeclare-autodelete");
    declare(&ch, &q, QueueDeclareOptions::default(), FieldTable::default()).await.expect("declare");
    let err =
        expect_amqp_error(declare(&ch, &q, QueueDeclareOptions::default().auto_delete(), FieldTable::default()).await);
    assert_eq!(
        err,
        (
            406,
            format!(
                "PRECONDITION_FAILED - inequivalent arg 'auto_delete' for queue '{q}' in vhost '/': received 'true' but current is 'false'"
            )
        )
    );
    delete(&conn.create_channel().await.expect("channel"), &q).await;
}

#[tokio::test]
async fn redeclare_adding_an_x_argument_is_precondition_failed() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    let q = unique("redeclare-added");
    declare(&ch, &q, QueueDeclareOptions::default(), FieldTable::default()).await.expect("declare");
    let err = expect_amqp_error(
        declare(&ch, &q, QueueDeclareOptions::default(), args(&[("x-max-length", AMQPValue::LongInt(10))])).await,
    );
    assert_eq!(
        err,
        (
            406,
            format!(
                "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue '{q}' in vhost '/': received the value '10' of type 'signedint' but current is none"
            )
        )
    );
    delete(&conn.create_channel().await.expect("channel"), &q).await;
}

#[tokio::test]
async fn redeclare_changing_an_x_argument_is_precondition_failed() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    let q = unique("redeclare-changed");
    declare(&ch, &q, QueueDeclareOptions::default(), args(&[("x-message-ttl", AMQPValue::LongInt(1000))]))
        .await
        .expect("declare");
    let err = expect_amqp_error(
        declare(&ch, &q, QueueDeclareOptions::default(), args(&[("x-message-ttl", AMQPValue::LongInt(2000))])).await,
    );
    assert_eq!(
        err,
        (
            406,
            format!(
                "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue '{q}' in vhost '/': received '2000' but current is '1000'"
            )
        )
    );
    delete(&conn.create_channel().await.expect("channel"), &q).await;
}

#[tokio::test]
async fn redeclare_removing_an_x_argument_is_precondition_failed() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    let q = unique("redeclare-removed");
    declare(&ch, &q, QueueDeclareOptions::default(), args(&[("x-message-ttl", AMQPValue::LongInt(1000))]))
        .await
        .expect("declare");
    let err = expect_amqp_error(declare(&ch, &q, QueueDeclareOptions::default(), FieldTable::default()).await);
    assert_eq!(
        err,
        (
            406,
            format!(
                "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue '{q}' in vhost '/': received none but current is the value '1000' of type 'signedint'"
            )
        )
    );
    delete(&conn.create_channel().await.expect("channel"), &q).await;
}

#[tokio::test]
async fn equivalent_redeclare_ignores_integer_width_and_unknown_arguments() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = unique("redeclare-equivalent");
    declare(&ch, &q, QueueDeclareOptions::default(), args(&[("x-max-length", AMQPValue::LongInt(10))]))
        .await
        .expect("declare");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    publish_confirmed(&ch, &q, "kept").await;
    let ok = declare(
        &ch,
        &q,
        QueueDeclareOptions::default(),
        args(&[("x-max-length", AMQPValue::LongLongInt(10)), ("x-foo", AMQPValue::LongString("bar".into()))]),
    )
    .await
    .expect("same value with another integer width, plus an unknown x- key, is equivalent");
    assert_eq!(ok.message_count(), 1);
    // A passive declare ignores flags and arguments altogether.
    declare(&ch, &q, QueueDeclareOptions { durable: true, ..passive() }, FieldTable::default())
        .await
        .expect("passive ignores flags");
    assert_eq!(delete(&ch, &q).await, 1);
}

#[tokio::test]
async fn passive_declare_of_a_missing_queue_is_not_found() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = unique("missing");
    let err = expect_amqp_error(declare(&ch, &q, passive(), FieldTable::default()).await);
    assert_eq!(err, (404, format!("NOT_FOUND - no queue '{q}' in vhost '/'")));
}

#[tokio::test]
async fn declaring_an_amq_prefixed_queue_is_access_refused() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = format!("amq.{}", unique("foo"));
    let err = expect_amqp_error(declare(&ch, &q, QueueDeclareOptions::default(), FieldTable::default()).await);
    assert_eq!(err, (403, format!("ACCESS_REFUSED - queue name '{q}' contains reserved prefix 'amq.*'")));
}

#[tokio::test]
async fn exclusive_queue_is_locked_to_its_connection_but_others_may_publish() {
    let b = Broker::start();
    let (_owner, ch) = b.channel().await;
    let q = unique("exclusive");
    declare(&ch, &q, QueueDeclareOptions::exclusive(), FieldTable::default()).await.expect("declare");
    let locked = format!(
        "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{q}' in vhost '/'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration."
    );
    let other = b.connect().await;
    let qs = q.as_str();

    let c = other.create_channel().await.expect("channel");
    assert_eq!(
        expect_amqp_error(declare(&c, qs, QueueDeclareOptions::exclusive(), FieldTable::default()).await),
        (405, locked.clone()),
        "declare"
    );
    let c = other.create_channel().await.expect("channel");
    assert_eq!(
        expect_amqp_error(declare(&c, qs, passive(), FieldTable::default()).await),
        (405, locked.clone()),
        "passive declare"
    );
    let c = other.create_channel().await.expect("channel");
    assert_eq!(
        expect_amqp_error(
            c.basic_consume(qs.into(), "".into(), BasicConsumeOptions::default(), FieldTable::default()).await
        ),
        (405, locked.clone()),
        "consume"
    );
    let c = other.create_channel().await.expect("channel");
    assert_eq!(
        expect_amqp_error(c.basic_get(qs.into(), BasicGetOptions::default()).await),
        (405, locked.clone()),
        "get"
    );
    let c = other.create_channel().await.expect("channel");
    assert_eq!(
        expect_amqp_error(c.queue_purge(qs.into(), QueuePurgeOptions::default()).await),
        (405, locked.clone()),
        "purge"
    );
    let c = other.create_channel().await.expect("channel");
    assert_eq!(
        expect_amqp_error(c.queue_delete(qs.into(), QueueDeleteOptions::default()).await),
        (405, locked.clone()),
        "delete"
    );

    // Publishing to it from the other connection is allowed and reaches the owner.
    let c = other.create_channel().await.expect("channel");
    publish(&c, qs, "from-elsewhere").await;
    c.exchange_declare(
        "amq.direct".into(),
        lapin::ExchangeKind::Direct,
        ExchangeDeclareOptions { passive: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("the publishing channel is still open");
    let mut consumer = ch
        .basic_consume(
            qs.into(),
            "".into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("owner consumes");
    assert_eq!(next_delivery(&mut consumer).await.data, b"from-elsewhere");
}

#[tokio::test]
async fn exclusive_queue_is_deleted_when_its_connection_closes() {
    let b = Broker::start();
    let (owner, ch) = b.channel().await;
    let q = unique("exclusive-gone");
    declare(&ch, &q, QueueDeclareOptions::exclusive(), FieldTable::default()).await.expect("declare");
    owner.close(200, "OK".into()).await.expect("close owner");
    let (_other, ch2) = b.channel().await;
    let err = expect_amqp_error(declare(&ch2, &q, passive(), FieldTable::default()).await);
    assert_eq!(err, (404, format!("NOT_FOUND - no queue '{q}' in vhost '/'")));
}

#[tokio::test]
async fn auto_delete_queue_goes_after_its_last_consumer_cancels() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    let q = unique("autodelete");
    declare(&ch, &q, QueueDeclareOptions::default().auto_delete(), FieldTable::default()).await.expect("declare");
    // basic.get does not count as a consumer, and a queue that never had one stays.
    publish(&ch, &q, "x").await;
    assert_eq!(get_all(&ch, &q).await, vec!["x"]);
    declare(&ch, &q, passive(), FieldTable::default()).await.expect("still there before any consumer");

    let c1 = ch
        .basic_consume(q.as_str().into(), "c1".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume 1");
    let c2 = ch
        .basic_consume(q.as_str().into(), "c2".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume 2");
    ch.basic_cancel(c1.tag(), BasicCancelOptions::default()).await.expect("cancel 1");
    let ok = declare(&ch, &q, passive(), FieldTable::default()).await.expect("still one consumer left");
    assert_eq!(ok.consumer_count(), 1);
    ch.basic_cancel(c2.tag(), BasicCancelOptions::default()).await.expect("cancel 2");

    let ch2 = conn.create_channel().await.expect("channel");
    let err = expect_amqp_error(declare(&ch2, &q, passive(), FieldTable::default()).await);
    assert_eq!(err, (404, format!("NOT_FOUND - no queue '{q}' in vhost '/'")));
}

#[tokio::test]
async fn bind_and_unbind_control_routing() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = exclusive_queue(&ch).await;
    let key = unique("key");
    ch.queue_bind(
        q.as_str().into(),
        "amq.direct".into(),
        key.as_str().into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind");
    let send = |body: &'static str| {
        let ch = ch.clone();
        let key = key.clone();
        async move {
            ch.basic_publish(
                "amq.direct".into(),
                key.as_str().into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default(),
            )
            .await
            .expect("publish");
        }
    };
    send("bound").await;
    assert_eq!(get_all(&ch, &q).await, vec!["bound"]);
    ch.queue_unbind(q.as_str().into(), "amq.direct".into(), key.as_str().into(), FieldTable::default())
        .await
        .expect("unbind");
    send("unbound").await;
    assert_eq!(get_all(&ch, &q).await, Vec::<String>::new());
    // Unbinding a binding that no longer exists succeeds.
    ch.queue_unbind(q.as_str().into(), "amq.direct".into(), key.as_str().into(), FieldTable::default())
        .await
        .expect("unbind again");
}

#[tokio::test]
async fn purge_removes_ready_messages_only_and_returns_their_count() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = exclusive_queue(&ch).await;
    for body in ["a", "b", "c"] {
        publish(&ch, &q, body).await;
    }
    let held = ch.basic_get(q.as_str().into(), BasicGetOptions::default()).await.expect("get").expect("message");
    assert_eq!(held.delivery.data, b"a");
    let purged = ch.queue_purge(q.as_str().into(), QueuePurgeOptions::default()).await.expect("purge");
    assert_eq!(purged, 2, "only the two ready messages are purged");
    // The unacked message survived the purge and comes back when rejected with requeue.
    ch.basic_reject(held.delivery.delivery_tag, BasicRejectOptions { requeue: true }).await.expect("reject");
    assert_eq!(get_all(&ch, &q).await, vec!["a"]);
    assert_eq!(ch.queue_purge(q.as_str().into(), QueuePurgeOptions::default()).await.expect("purge"), 0);
}

#[tokio::test]
async fn delete_returns_the_number_of_ready_messages() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = unique("delete-count");
    declare(&ch, &q, QueueDeclareOptions::default(), FieldTable::default()).await.expect("declare");
    for i in 0..4 {
        publish(&ch, &q, &i.to_string()).await;
    }
    assert_eq!(delete(&ch, &q).await, 4);
    let err = expect_amqp_error(declare(&ch, &q, passive(), FieldTable::default()).await);
    assert_eq!(err.0, 404, "the queue is gone");
}

#[tokio::test]
async fn delete_if_unused_refuses_a_queue_with_consumers() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    let q = exclusive_queue(&ch).await;
    let _consumer = ch
        .basic_consume(q.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let ch2 = conn.create_channel().await.expect("channel");
    let err = expect_amqp_error(
        ch2.queue_delete(q.as_str().into(), QueueDeleteOptions { if_unused: true, ..Default::default() }).await,
    );
    assert_eq!(err, (406, format!("PRECONDITION_FAILED - queue '{q}' in vhost '/' in use")));
    declare(&ch, &q, passive(), FieldTable::default()).await.expect("queue still exists");
}

#[tokio::test]
async fn delete_if_empty_refuses_a_queue_with_messages() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    let q = exclusive_queue(&ch).await;
    publish(&ch, &q, "x").await;
    let ch2 = conn.create_channel().await.expect("channel");
    let err = expect_amqp_error(
        ch2.queue_delete(q.as_str().into(), QueueDeleteOptions { if_empty: true, ..Default::default() }).await,
    );
    assert_eq!(err, (406, format!("PRECONDITION_FAILED - queue '{q}' in vhost '/' not empty")));
    let ok = declare(&ch, &q, passive(), FieldTable::default()).await.expect("queue still exists");
    assert_eq!(ok.message_count(), 1);
}

#[tokio::test]
async fn deleting_a_missing_queue_succeeds_with_zero() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    assert_eq!(delete(&ch, &unique("never-declared")).await, 0);
    assert!(ch.status().connected());
}

#[tokio::test]
async fn empty_queue_name_means_the_last_declared_queue() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let first = exclusive_queue(&ch).await;
    let q = exclusive_queue(&ch).await; // last declared on this channel
    let key = unique("key");
    ch.queue_bind(
        "".into(),
        "amq.direct".into(),
        key.as_str().into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind with empty queue name");
    // Empty queue AND empty routing key: the routing key becomes the queue name.
    ch.queue_bind("".into(), "amq.direct".into(), "".into(), QueueBindOptions::default(), FieldTable::default())
        .await
        .expect("bind with empty queue and key");
    for rk in [key.as_str(), q.as_str()] {
        ch.basic_publish(
            "amq.direct".into(),
            rk.into(),
            BasicPublishOptions::default(),
            rk.as_bytes(),
            BasicProperties::default(),
        )
        .await
        .expect("publish");
    }
    let got = ch.basic_get("".into(), BasicGetOptions { no_ack: true }).await.expect("get").expect("message");
    assert_eq!(got.delivery.data, key.as_bytes());
    let mut consumer = ch
        .basic_consume(
            "".into(),
            "".into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("consume with empty queue name");
    assert_eq!(next_delivery(&mut consumer).await.data, q.as_bytes());
    assert_eq!(get_all(&ch, &first).await, Vec::<String>::new(), "the earlier queue got nothing");
}

#[tokio::test]
async fn empty_queue_name_without_a_declared_queue_is_not_found() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    let err = expect_amqp_error(
        ch.queue_bind("".into(), "amq.direct".into(), "k".into(), QueueBindOptions::default(), FieldTable::default())
            .await,
    );
    assert_eq!(err, (404, "NOT_FOUND - no previously declared queue".to_string()));
    let ch2 = conn.create_channel().await.expect("channel");
    let err = expect_amqp_error(
        ch2.basic_consume("".into(), "".into(), BasicConsumeOptions::default(), FieldTable::default()).await,
    );
    assert_eq!(err, (404, "NOT_FOUND - no previously declared queue".to_string()));
}
