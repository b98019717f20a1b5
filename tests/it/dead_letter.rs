//! Dead lettering: the triggers (reject/nack without requeue, TTL expiry, max-length drop-head,
//! reject-publish-dlx), routing to the dead-letter exchange (original keys incl. CC, or
//! x-dead-letter-routing-key), the exact x-death layout and x-first-death-* headers, count and
//! ordering on repeated deaths, cycle detection, a missing DLX, purge/delete not dead-lettering,
//! and argument validation texts.

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Consumer, ExchangeKind};

use crate::common::*;

/// An auto-delete direct exchange to dead-letter into, and a no-ack consumer on an exclusive
/// queue bound to it with each of `keys`.
async fn dead_letter_target(ch: &Channel, keys: &[&str]) -> (String, Consumer) {
    let dlx = auto_delete_exchange(ch, "dlx", ExchangeKind::Direct).await;
    let target = exclusive_queue_with(ch, "dlx-target", FieldTable::default()).await;
    for key in keys {
        bind(ch, &target, &dlx, key).await;
    }
    let consumer =
        consume_with(ch, &target, BasicConsumeOptions { no_ack: true, ..Default::default() }, FieldTable::default())
            .await;
    (dlx, consumer)
}

fn dlx_args(dlx: &str) -> FieldTable {
    table(&[("x-dead-letter-exchange", lstr(dlx))])
}

fn count_of(entry: &FieldTable) -> i64 {
    match entry.inner().get("count") {
        Some(AMQPValue::LongLongInt(n)) => *n,
        other => panic!("x-death count must be a long-long int (l), got {other:?}"),
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
}

fn keys_of(t: &FieldTable) -> Vec<String> {
    t.inner().keys().map(|k| k.as_str().to_string()).collect()
}

#[tokio::test]
async fn rejected_message_goes_to_the_dlx_with_its_original_routing_key() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = unique("dl-reject");
    let (dlx, mut dead) = dead_letter_target(&ch, &[&q]).await;
    declare_queue(&ch, &q, QueueDeclareOptions::exclusive(), dlx_args(&dlx)).await.expect("declare");
    publish_to(&ch, &q, "poison").await;
    let mut consumer = consume(&ch, &q).await;
    let d = next_delivery(&mut consumer).await;
    d.acker.reject(BasicRejectOptions { requeue: false }).await.expect("reject");

    let dl = next_delivery(&mut dead).await;
    assert_eq!(text(&dl.data), "poison");
    assert_eq!(dl.exchange.as_str(), dlx, "delivered from the dead-letter exchange");
    assert_eq!(dl.routing_key.as_str(), q, "the original routing key is kept");
    let deaths = x_death(&dl.properties);
    assert_eq!(deaths.len(), 1);
    assert_eq!(str_field(&deaths[0], "reason"), "rejected");
    assert_eq!(str_field(&deaths[0], "queue"), q);
    assert_eq!(count_of(&deaths[0]), 1);
    assert!(!deaths[0].contains_key("original-expiration"), "no expiration, no original-expiration");
    assert_eq!(ready_count(&ch, &q).await, 0, "the rejected message left the source queue");
}

#[tokio::test]
async fn nacked_messages_are_dead_lettered_with_reason_rejected() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = unique("dl-nack");
    let (dlx, mut dead) = dead_letter_target(&ch, &[&q]).await;
    declare_queue(&ch, &q, QueueDeclareOptions::exclusive(), dlx_args(&dlx)).await.expect("declare");
    publish_to(&ch, &q, "a").await;
    publish_to(&ch, &q, "b").await;
    let mut consumer = consume(&ch, &q).await;
    let got = deliveries(&mut consumer, 2).await;
    got[1].acker.nack(BasicNackOptions { multiple: true, requeue: false }).await.expect("nack multiple");
    let dl = deliveries(&mut dead, 2).await;
    assert_eq!(dl.iter().map(|d| text(&d.data)).collect::<Vec<_>>(), vec!["a", "b"]);
    for d in &dl {
        let deaths = x_death(&d.properties);
        assert_eq!(str_field(&deaths[0], "reason"), "rejected");
        assert_eq!(str_field(&deaths[0], "queue"), q);
    }
}

#[tokio::test]
async fn requeued_rejection_is_not_dead_lettered() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = unique("dl-requeue");
    let (dlx, mut dead) = dead_letter_target(&ch, &[&q]).await;
    declare_queue(&ch, &q, QueueDeclareOptions::exclusive(), dlx_args(&dlx)).await.expect("declare");
    publish_to(&ch, &q, "again").await;
    let mut consumer = consume(&ch, &q).await;
    let d = next_delivery(&mut consumer).await;
    d.acker.reject(BasicRejectOptions { requeue: true }).await.expect("reject requeue");
    let again = next_delivery(&mut consumer).await;
    assert!(again.redelivered);
    assert!(header(&again.properties, "x-death").is_none());
    // Absence check: nothing reached the dead-letter exchange.
    assert_no_delivery(&mut dead).await;
}

#[tokio::test]
async fn dead_letter_routing_key_replaces_the_original_key_and_removes_cc() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = unique("dl-key");
    let (dlx, mut dead) = dead_letter_target(&ch, &["dead-key"]).await;
    let args = table(&[("x-dead-letter-exchange", lstr(&dlx)), ("x-dead-letter-routing-key", lstr("dead-key"))]);
    declare_queue(&ch, &q, QueueDeclareOptions::exclusive(), args).await.expect("declare");
    let cc = unique("cc");
    let props = BasicProperties::default().with_headers(table(&[("CC", str_array(&[&cc]))]));
    publish_props(&ch, "", &q, "m", props).await;
    let mut consumer = consume(&ch, &q).await;
    next_delivery(&mut consumer).await.acker.reject(BasicRejectOptions { requeue: false }).await.expect("reject");

    let dl = next_delivery(&mut dead).await;
    assert_eq!(dl.routing_key.as_str(), "dead-key");
    assert!(header(&dl.properties, "CC").is_none(), "CC is removed when a dead-letter routing key is set");
    let deaths = x_death(&dl.properties);
    assert_eq!(deaths[0].inner().get("routing-keys"), Some(&str_array(&[&q, &cc])), "x-death keeps the original keys");
    // Absence check: exactly one copy, routed by the dead-letter routing key only.
    assert_no_delivery(&mut dead).await;
}

#[tokio::test]
async fn default_dead_letter_routing_uses_the_publish_key_and_cc_keys() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = unique("dl-cc");
    let cc = unique("cc-key");
    let dlx = auto_delete_exchange(&ch, "dlx", ExchangeKind::Direct).await;
    let by_key = exclusive_queue_with(&ch, "by-key", FieldTable::default()).await;
    let by_cc = exclusive_queue_with(&ch, "by-cc", FieldTable::default()).await;
    bind(&ch, &by_key, &dlx, &q).await;
    bind(&ch, &by_cc, &dlx, &cc).await;
    declare_queue(&ch, &q, QueueDeclareOptions::exclusive(), dlx_args(&dlx)).await.expect("declare");
    let props = BasicProperties::default().with_headers(table(&[("CC", str_array(&[&cc]))]));
    publish_props(&ch, "", &q, "m", props).await;
    let mut consumer = consume(&ch, &q).await;
    next_delivery(&mut consumer).await.acker.reject(BasicRejectOptions { requeue: false }).await.expect("reject");

    let no_ack = BasicConsumeOptions { no_ack: true, ..Default::default() };
    let mut key_consumer = consume_with(&ch, &by_key, no_ack, FieldTable::default()).await;
    let mut cc_consumer = consume_with(&ch, &by_cc, no_ack, FieldTable::default()).await;
    let via_key = next_delivery(&mut key_consumer).await;
    let via_cc = next_delivery(&mut cc_consumer).await;
    for d in [&via_key, &via_cc] {
        assert_eq!(text(&d.data), "m");
        assert_eq!(d.routing_key.as_str(), q, "the delivered routing key is the original publish key");
        assert_eq!(
            header(&d.properties, "CC"),
            Some(&str_array(&[&cc])),
            "CC is kept without a dead-letter routing key"
        );
        assert_eq!(x_death(&d.properties)[0].inner().get("routing-keys"), Some(&str_array(&[&q, &cc])));
    }
}

#[tokio::test]
async fn expired_message_is_dead_lettered_with_reason_expired() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = unique("dl-ttl");
    let (dlx, mut dead) = dead_letter_target(&ch, &[&q]).await;
    let args = table(&[("x-dead-letter-exchange", lstr(&dlx)), ("x-message-ttl", AMQPValue::LongInt(100))]);
    declare_queue(&ch, &q, QueueDeclareOptions::exclusive(), args).await.expect("declare");
    publish_to(&ch, &q, "stale").await;
    let dl = next_delivery(&mut dead).await;
    assert_eq!(text(&dl.data), "stale");
    let deaths = x_death(&dl.properties);
    assert_eq!(str_field(&deaths[0], "reason"), "expired");
    assert_eq!(str_field(&deaths[0], "queue"), q);
    assert_eq!(str_field(&deaths[0], "exchange"), "");
    assert_eq!(ready_count(&ch, &q).await, 0);
}

#[tokio::test]
async fn per_message_expiry_moves_expiration_to_original_expiration() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = unique("dl-msg-ttl");
    let (dlx, mut dead) = dead_letter_target(&ch, &[&q]).await;
    declare_queue(&ch, &q, QueueDeclareOptions::exclusive(), dlx_args(&dlx)).await.expect("declare");
    publish_props(&ch, "", &q, "short-lived", BasicProperties::default().with_expiration("100".into())).await;
    let dl = next_delivery(&mut dead).await;
    assert_eq!(dl.properties.expiration(), &None, "expiration is removed from the dead-lettered message");
    let deaths = x_death(&dl.properties);
    assert_eq!(str_field(&deaths[0], "reason"), "expired");
    assert_eq!(str_field(&deaths[0], "original-expiration"), "100");
}

#[tokio::test]
async fn max_length_drop_head_dead_letters_the_oldest_with_reason_maxlen() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = unique("dl-maxlen");
    let (dlx, mut dead) = dead_letter_target(&ch, &[&q]).await;
    let args = table(&[("x-dead-letter-exchange", lstr(&dlx)), ("x-max-length", AMQPValue::LongInt(1))]);
    declare_queue(&ch, &q, QueueDeclareOptions::exclusive(), args).await.expect("declare");
    publish_to(&ch, &q, "old").await;
    publish_to(&ch, &q, "new").await;
    let dl = next_delivery(&mut dead).await;
    assert_eq!(text(&dl.data), "old");
    assert_eq!(str_field(&x_death(&dl.properties)[0], "reason"), "maxlen");
    assert_eq!(get_all(&ch, &q).await, vec!["new"]);
}

#[tokio::test]
async fn reject_publish_dlx_dead_letters_the_new_message_and_nacks_it() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = unique("dl-reject-publish");
    let (dlx, mut dead) = dead_letter_target(&ch, &[&q]).await;
    let args = table(&[
        ("x-dead-letter-exchange", lstr(&dlx)),
        ("x-max-length", AMQPValue::LongInt(1)),
        ("x-overflow", lstr("reject-publish-dlx")),
    ]);
    declare_queue(&ch, &q, QueueDeclareOptions::exclusive(), args).await.expect("declare");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    assert!(publish_confirmed_props(&ch, "", &q, "kept", BasicProperties::default()).await.is_ack());
    assert!(publish_confirmed_props(&ch, "", &q, "refused", BasicProperties::default()).await.is_nack());
    let dl = next_delivery(&mut dead).await;
    assert_eq!(text(&dl.data), "refused");
    assert_eq!(str_field(&x_death(&dl.properties)[0], "reason"), "maxlen");
    assert_eq!(get_all(&ch, &q).await, vec!["kept"]);
}

#[tokio::test]
async fn x_death_entry_has_exactly_the_documented_fields() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let src_x = auto_delete_exchange(&ch, "src-x", ExchangeKind::Direct).await;
    let q = unique("dl-layout");
    let (dlx, mut dead) = dead_letter_target(&ch, &["k1"]).await;
    declare_queue(&ch, &q, QueueDeclareOptions::exclusive(), dlx_args(&dlx)).await.expect("declare");
    bind(&ch, &q, &src_x, "k1").await;
    let props = BasicProperties::default().with_expiration("60000".into()).with_message_id("id-1".into());
    let before = now_secs();
    publish_props(&ch, &src_x, "k1", "body", props).await;
    let mut consumer = consume(&ch, &q).await;
    next_delivery(&mut consumer).await.acker.reject(BasicRejectOptions { requeue: false }).await.expect("reject");

    let dl = next_delivery(&mut dead).await;
    assert_eq!(dl.properties.expiration(), &None, "expiration removed");
    assert_eq!(dl.properties.message_id().as_ref().map(|s| s.as_str()), Some("id-1"), "other properties kept");
    let deaths = x_death(&dl.properties);
    assert_eq!(deaths.len(), 1);
    let e = &deaths[0];
    let mut keys = keys_of(e);
    keys.sort();
    assert_eq!(keys, vec!["count", "exchange", "original-expiration", "queue", "reason", "routing-keys", "time"]);
    assert_eq!(count_of(e), 1);
    assert_eq!(str_field(e, "reason"), "rejected");
    assert_eq!(str_field(e, "queue"), q);
    assert_eq!(str_field(e, "exchange"), src_x);
    assert_eq!(e.inner().get("routing-keys"), Some(&str_array(&["k1"])));
    assert_eq!(str_field(e, "original-expiration"), "60000");
    match e.inner().get("time") {
        Some(AMQPValue::Timestamp(t)) => {
            assert!(*t + 5 >= before && *t <= now_secs() + 5, "time {t} is in seconds, now")
        }
        other => panic!("x-death time must be a timestamp (T), got {other:?}"),
    }
    assert_eq!(header(&dl.properties, "x-first-death-queue"), Some(&lstr(&q)));
    assert_eq!(header(&dl.properties, "x-first-death-reason"), Some(&lstr("rejected")));
    assert_eq!(header(&dl.properties, "x-first-death-exchange"), Some(&lstr(&src_x)));
}

/// Two queues dead-lettering into each other via the default exchange: a cycle that contains
/// rejections keeps going, and a repeated (queue, reason) increments `count` and moves that
/// entry to the front.
#[tokio::test]
async fn repeated_death_increments_count_and_moves_the_entry_to_the_front() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q1 = unique("dl-ping");
    let q2 = unique("dl-pong");
    let to = |other: &str| table(&[("x-dead-letter-exchange", lstr("")), ("x-dead-letter-routing-key", lstr(other))]);
    declare_queue(&ch, &q1, QueueDeclareOptions::exclusive(), to(&q2)).await.expect("declare q1");
    declare_queue(&ch, &q2, QueueDeclareOptions::exclusive(), to(&q1)).await.expect("declare q2");
    publish_to(&ch, &q1, "ball").await;
    let mut c1 = consume(&ch, &q1).await;
    let mut c2 = consume(&ch, &q2).await;
    let reject = BasicRejectOptions { requeue: false };

    next_delivery(&mut c1).await.acker.reject(reject).await.expect("reject in q1");
    let d = next_delivery(&mut c2).await;
    let deaths = x_death(&d.properties);
    assert_eq!(deaths.len(), 1);
    assert_eq!((str_field(&deaths[0], "queue"), count_of(&deaths[0])), (q1.clone(), 1));
    d.acker.reject(reject).await.expect("reject in q2");

    let d = next_delivery(&mut c1).await;
    let deaths = x_death(&d.properties);
    assert_eq!(deaths.len(), 2);
    assert_eq!((str_field(&deaths[0], "queue"), count_of(&deaths[0])), (q2.clone(), 1), "newest first");
    assert_eq!((str_field(&deaths[1], "queue"), count_of(&deaths[1])), (q1.clone(), 1));
    d.acker.reject(reject).await.expect("reject in q1 again");

    let d = next_delivery(&mut c2).await;
    let deaths = x_death(&d.properties);
    assert_eq!(deaths.len(), 2, "one entry per (queue, reason)");
    assert_eq!((str_field(&deaths[0], "queue"), count_of(&deaths[0])), (q1.clone(), 2), "repeat moves to the front");
    assert_eq!(str_field(&deaths[0], "reason"), "rejected");
    assert_eq!((str_field(&deaths[1], "queue"), count_of(&deaths[1])), (q2.clone(), 1));
    assert_eq!(header(&d.properties, "x-first-death-queue"), Some(&lstr(&q1)), "first death never changes");
    d.acker.ack(BasicAckOptions::default()).await.expect("ack");
}

#[tokio::test]
async fn self_dead_lettering_on_expiry_is_a_cycle_and_drops_the_message() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    // DLX = default exchange, no dead-letter routing key: the original key routes back here.
    let args = table(&[("x-dead-letter-exchange", lstr("")), ("x-message-ttl", AMQPValue::LongInt(100))]);
    let q = exclusive_queue_with(&ch, "dl-self", args).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    assert!(publish_confirmed_props(&ch, "", &q, "loop", BasicProperties::default()).await.is_ack());
    eventually("the message to expire", || async { ready_count(&ch, &q).await == 0 }).await;
    let mut consumer =
        consume_with(&ch, &q, BasicConsumeOptions { no_ack: true, ..Default::default() }, FieldTable::default()).await;
    // Absence check: a re-enqueued copy would be delivered at once (and again every 100 ms).
    assert_no_delivery(&mut consumer).await;
}

#[tokio::test]
async fn expiry_cycle_drops_only_the_copy_for_the_queue_already_in_x_death() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let fan = auto_delete_exchange(&ch, "dl-fan", ExchangeKind::Fanout).await;
    let args = table(&[("x-dead-letter-exchange", lstr(&fan)), ("x-message-ttl", AMQPValue::LongInt(100))]);
    let q = exclusive_queue_with(&ch, "dl-cyc", args).await;
    let observer = exclusive_queue_with(&ch, "dl-observer", FieldTable::default()).await;
    bind(&ch, &q, &fan, "").await;
    bind(&ch, &observer, &fan, "").await;
    publish_to(&ch, &q, "once").await;
    let mut watch =
        consume_with(&ch, &observer, BasicConsumeOptions { no_ack: true, ..Default::default() }, FieldTable::default())
            .await;
    let d = next_delivery(&mut watch).await;
    assert_eq!(text(&d.data), "once");
    assert_eq!(str_field(&x_death(&d.properties)[0], "reason"), "expired");
    // Absence check: had the copy re-entered the source queue it would expire and reach the
    // observer again 100 ms later.
    assert_no_delivery(&mut watch).await;
    assert_eq!(ready_count(&ch, &q).await, 0);
}

#[tokio::test]
async fn missing_dead_letter_exchange_drops_the_message_silently() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = exclusive_queue_with(&ch, "dl-missing", dlx_args(&unique("no-such-dlx"))).await;
    publish_to(&ch, &q, "lost").await;
    let mut consumer = consume(&ch, &q).await;
    next_delivery(&mut consumer).await.acker.reject(BasicRejectOptions { requeue: false }).await.expect("reject");
    sync_point(&ch).await;
    assert!(ch.status().connected(), "no channel error");
    ch.basic_cancel(consumer.tag(), BasicCancelOptions::default()).await.expect("cancel");
    assert_eq!(ready_count(&ch, &q).await, 0, "not requeued either");
}

#[tokio::test]
async fn purge_does_not_dead_letter() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let (dlx, mut dead) = dead_letter_target(&ch, &[""]).await;
    let q = exclusive_queue_with(
        &ch,
        "dl-purge",
        table(&[("x-dead-letter-exchange", lstr(&dlx)), ("x-dead-letter-routing-key", lstr(""))]),
    )
    .await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    for body in ["a", "b"] {
        assert!(publish_confirmed_props(&ch, "", &q, body, BasicProperties::default()).await.is_ack());
    }
    assert_eq!(ch.queue_purge(q.as_str().into(), QueuePurgeOptions::default()).await.expect("purge"), 2);
    // Absence check: purged messages never reach the dead-letter exchange.
    assert_no_delivery(&mut dead).await;
}

#[tokio::test]
async fn queue_delete_does_not_dead_letter() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let (dlx, mut dead) = dead_letter_target(&ch, &[""]).await;
    let q = exclusive_queue_with(
        &ch,
        "dl-delete",
        table(&[("x-dead-letter-exchange", lstr(&dlx)), ("x-dead-letter-routing-key", lstr(""))]),
    )
    .await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    for body in ["a", "b"] {
        assert!(publish_confirmed_props(&ch, "", &q, body, BasicProperties::default()).await.is_ack());
    }
    assert_eq!(ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await.expect("delete"), 2);
    // Absence check: messages of a deleted queue are not dead-lettered.
    assert_no_delivery(&mut dead).await;
}

#[tokio::test]
async fn dead_letter_routing_key_without_exchange_is_precondition_failed() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = unique("dl-key-only");
    let err = expect_amqp_error(
        declare_queue(&ch, &q, QueueDeclareOptions::exclusive(), table(&[("x-dead-letter-routing-key", lstr("k"))]))
            .await,
    );
    assert_eq!(
        err,
        (
            406,
            format!(
                "PRECONDITION_FAILED - invalid arg 'x-dead-letter-routing-key' for queue '{q}' in vhost '/': routing_key_but_no_dlx_defined"
            )
        )
    );
}

#[tokio::test]
async fn non_string_dead_letter_exchange_is_precondition_failed() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = unique("dl-bad-type");
    let err = expect_amqp_error(
        declare_queue(
            &ch,
            &q,
            QueueDeclareOptions::exclusive(),
            table(&[("x-dead-letter-exchange", AMQPValue::LongInt(1))]),
        )
        .await,
    );
    assert_eq!(
        err,
        (
            406,
            format!(
                "PRECONDITION_FAILED - invalid type 'signedint' for arg 'x-dead-letter-exchange' in queue '{q}' in vhost '/'"
            )
        )
    );
}

/// RabbitMQ 3.13 BEHAVIOUR (Warren follows it; RabbitMQ 3.10 sets no `x-last-death-*` headers,
/// measured, so this test fails against 3.10 by design): every death sets
/// `x-last-death-queue`/`-reason`/`-exchange` to that death, while `x-first-death-*` keep the
/// first. The message dies twice, through two queues, for two reasons, from two exchanges.
#[tokio::test]
async fn last_death_headers_follow_every_death_and_first_death_headers_stay() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let src_x = auto_delete_exchange(&ch, "src-x", ExchangeKind::Direct).await;
    let dlx1 = auto_delete_exchange(&ch, "dlx1", ExchangeKind::Direct).await;
    let (dlx2, mut dead) = dead_letter_target(&ch, &["k"]).await;
    let q1 = unique("dl-first");
    declare_queue(&ch, &q1, QueueDeclareOptions::exclusive(), dlx_args(&dlx1)).await.expect("declare q1");
    bind(&ch, &q1, &src_x, "k").await;
    // q2 expires what dlx1 routes to it into dlx2; an observer queue sees the same copy after
    // the first death.
    let mut q2_args = dlx_args(&dlx2);
    q2_args.insert("x-message-ttl".into(), AMQPValue::LongInt(50));
    let q2 = unique("dl-second");
    declare_queue(&ch, &q2, QueueDeclareOptions::exclusive(), q2_args).await.expect("declare q2");
    bind(&ch, &q2, &dlx1, "k").await;
    let observer = exclusive_queue_with(&ch, "dl-observer", FieldTable::default()).await;
    bind(&ch, &observer, &dlx1, "k").await;
    let mut seen =
        consume_with(&ch, &observer, BasicConsumeOptions { no_ack: true, ..Default::default() }, FieldTable::default())
            .await;

    publish_props(&ch, &src_x, "k", "twice dead", BasicProperties::default()).await;
    let mut consumer = consume(&ch, &q1).await;
    next_delivery(&mut consumer).await.acker.reject(BasicRejectOptions { requeue: false }).await.expect("reject");

    let once = next_delivery(&mut seen).await;
    let h = |d: &lapin::message::Delivery, k: &str| header(&d.properties, k).cloned();
    for (suffix, value) in [("queue", &q1), ("reason", &"rejected".to_string()), ("exchange", &src_x)] {
        assert_eq!(h(&once, &format!("x-first-death-{suffix}")), Some(lstr(value)), "first death {suffix}");
        assert_eq!(h(&once, &format!("x-last-death-{suffix}")), Some(lstr(value)), "last death after one: {suffix}");
    }

    let twice = next_delivery(&mut dead).await;
    assert_eq!(text(&twice.data), "twice dead");
    assert_eq!(x_death(&twice.properties).len(), 2);
    for (suffix, first, last) in [
        ("queue", q1.as_str(), q2.as_str()),
        ("reason", "rejected", "expired"),
        ("exchange", src_x.as_str(), dlx1.as_str()),
    ] {
        assert_eq!(h(&twice, &format!("x-first-death-{suffix}")), Some(lstr(first)), "first death {suffix} stays");
        assert_eq!(h(&twice, &format!("x-last-death-{suffix}")), Some(lstr(last)), "last death {suffix} moves");
    }
}
