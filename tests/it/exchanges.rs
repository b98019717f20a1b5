//! Exchanges: the predeclared set, declare/redeclare/delete rules and their exact refusals, and
//! routing through direct, fanout, topic (wildcards and empty words) and headers exchanges,
//! exchange-to-exchange bindings, alternate exchanges, internal and auto-delete exchanges.

use std::collections::BTreeSet;

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation, ExchangeKind};

use crate::common::*;

async fn declare(ch: &Channel, name: &str, kind: ExchangeKind) {
    ch.exchange_declare(name.into(), kind, ExchangeDeclareOptions::default(), FieldTable::default())
        .await
        .expect("exchange.declare");
}

async fn delete(ch: &Channel, name: &str) {
    ch.exchange_delete(name.into(), ExchangeDeleteOptions::default()).await.expect("exchange.delete");
}

async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str, args: FieldTable) {
    ch.queue_bind(queue.into(), exchange.into(), key.into(), QueueBindOptions::default(), args)
        .await
        .expect("queue.bind");
}

async fn publish(ch: &Channel, exchange: &str, key: &str, body: &str, headers: Option<FieldTable>) {
    let mut props = BasicProperties::default();
    if let Some(h) = headers {
        props = props.with_headers(h);
    }
    ch.basic_publish(exchange.into(), key.into(), BasicPublishOptions::default(), body.as_bytes(), props)
        .await
        .expect("basic.publish");
}

fn table(pairs: &[(&str, &str)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), AMQPValue::LongString(LongString::from(v.as_bytes().to_vec())));
    }
    t
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn predeclared_exchanges_exist() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    for (name, kind) in [
        ("amq.direct", ExchangeKind::Direct),
        ("amq.fanout", ExchangeKind::Fanout),
        ("amq.topic", ExchangeKind::Topic),
        ("amq.headers", ExchangeKind::Headers),
        ("amq.match", ExchangeKind::Headers),
    ] {
        ch.exchange_declare(
            name.into(),
            kind,
            ExchangeDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{name} must exist: {e}"));
    }
    // Redeclaring a predeclared exchange with identical properties is allowed too.
    ch.exchange_declare(
        "amq.direct".into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions { durable: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("equivalent redeclare of amq.direct");
}

#[tokio::test]
async fn each_builtin_type_can_be_declared_and_found_again() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    for (label, kind) in [
        ("direct", ExchangeKind::Direct),
        ("fanout", ExchangeKind::Fanout),
        ("topic", ExchangeKind::Topic),
        ("headers", ExchangeKind::Headers),
    ] {
        let name = unique(&format!("x-{label}"));
        declare(&ch, &name, kind.clone()).await;
        ch.exchange_declare(
            name.as_str().into(),
            kind.clone(),
            ExchangeDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("passive declare finds it");
        // An identical redeclare is a no-op.
        declare(&ch, &name, kind).await;
        delete(&ch, &name).await;
    }
}

#[tokio::test]
async fn redeclare_with_another_type_is_precondition_failed() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    let x = unique("x-type");
    declare(&ch, &x, ExchangeKind::Direct).await;
    let err = expect_amqp_error(
        ch.exchange_declare(
            x.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await,
    );
    assert_eq!(
        err,
        (
            406,
            format!(
                "PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{x}' in vhost '/': received 'fanout' but current is 'direct'"
            )
        )
    );
    let ch2 = conn.create_channel().await.expect("channel");
    delete(&ch2, &x).await;
}

#[tokio::test]
async fn redeclare_with_another_durability_is_precondition_failed() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    let x = unique("x-durable");
    declare(&ch, &x, ExchangeKind::Direct).await;
    let err = expect_amqp_error(
        ch.exchange_declare(
            x.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await,
    );
    assert_eq!(
        err,
        (
            406,
            format!(
                "PRECONDITION_FAILED - inequivalent arg 'durable' for exchange '{x}' in vhost '/': received 'true' but current is 'false'"
            )
        )
    );
    let ch2 = conn.create_channel().await.expect("channel");
    delete(&ch2, &x).await;
}

#[tokio::test]
async fn passive_declare_of_a_missing_exchange_is_not_found() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let x = unique("x-missing");
    let err = expect_amqp_error(
        ch.exchange_declare(
            x.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await,
    );
    assert_eq!(err, (404, format!("NOT_FOUND - no exchange '{x}' in vhost '/'")));
}

#[tokio::test]
async fn declaring_an_amq_prefixed_exchange_is_access_refused() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let x = format!("amq.{}", unique("foo"));
    let err = expect_amqp_error(
        ch.exchange_declare(
            x.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await,
    );
    assert_eq!(err, (403, format!("ACCESS_REFUSED - exchange name '{x}' contains reserved prefix 'amq.*'")));
}

#[tokio::test]
async fn declaring_the_default_exchange_is_access_refused() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    let err = expect_amqp_error(
        ch.exchange_declare("".into(), ExchangeKind::Direct, ExchangeDeclareOptions::default(), FieldTable::default())
            .await,
    );
    assert_eq!(err, (403, "ACCESS_REFUSED - operation not permitted on the default exchange".to_string()));
    // Even a passive declare is refused.
    let ch2 = conn.create_channel().await.expect("channel");
    let err = expect_amqp_error(
        ch2.exchange_declare(
            "".into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await,
    );
    assert_eq!(err, (403, "ACCESS_REFUSED - operation not permitted on the default exchange".to_string()));
}

#[tokio::test]
async fn deleting_the_default_exchange_is_access_refused() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let err = expect_amqp_error(ch.exchange_delete("".into(), ExchangeDeleteOptions::default()).await);
    assert_eq!(err, (403, "ACCESS_REFUSED - operation not permitted on the default exchange".to_string()));
}

#[tokio::test]
async fn deleting_amq_direct_is_access_refused() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    let err = expect_amqp_error(ch.exchange_delete("amq.direct".into(), ExchangeDeleteOptions::default()).await);
    assert_eq!(
        err,
        (403, "ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost '/' not allowed".to_string())
    );
    // And it is still there.
    let ch2 = conn.create_channel().await.expect("channel");
    ch2.exchange_declare(
        "amq.direct".into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions { passive: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("amq.direct survives");
}

#[tokio::test]
async fn delete_if_unused_refuses_an_exchange_with_bindings() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    let x = unique("x-in-use");
    declare(&ch, &x, ExchangeKind::Direct).await;
    let q = exclusive_queue(&ch).await;
    bind(&ch, &q, &x, "k", FieldTable::default()).await;
    let err = expect_amqp_error(
        ch.exchange_delete(x.as_str().into(), ExchangeDeleteOptions { if_unused: true, ..Default::default() }).await,
    );
    assert_eq!(err, (406, format!("PRECONDITION_FAILED - exchange '{x}' in vhost '/' in use")));
    let ch2 = conn.create_channel().await.expect("channel");
    delete(&ch2, &x).await;
}

#[tokio::test]
async fn deleting_a_missing_exchange_succeeds() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    ch.exchange_delete(unique("x-never").as_str().into(), ExchangeDeleteOptions::default())
        .await
        .expect("delete of a missing exchange is idempotent");
    assert!(ch.status().connected());
}

#[tokio::test]
async fn publishing_to_an_internal_exchange_is_access_refused() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    let x = unique("int-x");
    ch.exchange_declare(
        x.as_str().into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions { internal: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("declare internal");
    let mut ev = events(&conn);
    publish(&ch, &x, "", "nope", None).await;
    assert_eq!(
        next_close(&mut ev).await,
        (403, format!("ACCESS_REFUSED - cannot publish to internal exchange '{x}' in vhost '/'"))
    );
    let ch2 = conn.create_channel().await.expect("channel");
    delete(&ch2, &x).await;
}

#[tokio::test]
async fn direct_exchange_routes_by_exact_key() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let x = unique("x-direct");
    declare(&ch, &x, ExchangeKind::Direct).await;
    let qa = exclusive_queue(&ch).await;
    let qb = exclusive_queue(&ch).await;
    bind(&ch, &qa, &x, "apple", FieldTable::default()).await;
    bind(&ch, &qb, &x, "banana", FieldTable::default()).await;
    bind(&ch, &qb, &x, "apple.pie", FieldTable::default()).await;
    publish(&ch, &x, "apple", "1", None).await;
    publish(&ch, &x, "banana", "2", None).await;
    publish(&ch, &x, "apple.pie", "3", None).await;
    publish(&ch, &x, "APPLE", "4", None).await;
    publish(&ch, &x, "", "5", None).await;
    assert_eq!(get_all(&ch, &qa).await, vec!["1"]);
    assert_eq!(get_all(&ch, &qb).await, vec!["2", "3"]);
    delete(&ch, &x).await;
}

#[tokio::test]
async fn fanout_exchange_copies_to_every_bound_queue() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let x = unique("x-fanout");
    declare(&ch, &x, ExchangeKind::Fanout).await;
    let mut queues = Vec::new();
    for key in ["", "ignored", "x.y"] {
        let q = exclusive_queue(&ch).await;
        bind(&ch, &q, &x, key, FieldTable::default()).await;
        queues.push(q);
    }
    publish(&ch, &x, "any.key", "m1", None).await;
    publish(&ch, &x, "", "m2", None).await;
    for q in &queues {
        assert_eq!(get_all(&ch, q).await, vec!["m1", "m2"], "queue {q}");
    }
    delete(&ch, &x).await;
}

/// Every routing key the topic tables below are checked against.
const TOPIC_KEYS: &[&str] = &[
    "", "a", "b", "#", "*", "a*", "#a", "a.b", ".", "..", "a.", ".a", "b.a", "a.a", "a.b.c", "a..c", "a.c", "a.b.b.c",
    "x.a.y",
];

/// Bind one queue per binding key to a fresh topic exchange, publish every key of
/// [`TOPIC_KEYS`] (body = key) and check which keys each queue received.
async fn check_topic(cases: &[(&str, &[&str])]) {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let x = unique("x-topic");
    declare(&ch, &x, ExchangeKind::Topic).await;
    let mut queues = Vec::new();
    for (binding, _) in cases {
        let q = exclusive_queue(&ch).await;
        bind(&ch, &q, &x, binding, FieldTable::default()).await;
        queues.push(q);
    }
    for key in TOPIC_KEYS {
        publish(&ch, &x, key, key, None).await;
    }
    for ((binding, expected), q) in cases.iter().zip(&queues) {
        let got: BTreeSet<String> = get_all(&ch, q).await.into_iter().collect();
        assert_eq!(got, set(expected), "binding key {binding:?}");
    }
    delete(&ch, &x).await;
}

#[tokio::test]
async fn topic_star_and_hash_wildcards() {
    let all_but_empty: Vec<&str> = TOPIC_KEYS.iter().copied().filter(|k| !k.is_empty()).collect();
    check_topic(&[
        ("*", &["a", "b", "#", "*", "a*", "#a"]),
        ("#", TOPIC_KEYS),
        ("#.#", TOPIC_KEYS),
        ("*.#", &all_but_empty),
        ("#.*", &all_but_empty),
        ("*.*", &["a.b", ".", "a.", ".a", "b.a", "a.a", "a.c"]),
    ])
    .await;
}

#[tokio::test]
async fn topic_wildcards_mixed_with_literal_words() {
    check_topic(&[
        ("a.#", &["a", "a.b", "a.", "a.a", "a.b.c", "a..c", "a.c", "a.b.b.c"]),
        ("#.a", &["a", ".a", "b.a", "a.a"]),
        ("a.*.c", &["a.b.c", "a..c"]),
        ("a.#.c", &["a.b.c", "a..c", "a.c", "a.b.b.c"]),
        ("*.a.#", &[".a", "b.a", "a.a", "x.a.y"]),
    ])
    .await;
}

#[tokio::test]
async fn topic_literal_keys_and_empty_words_match_only_themselves() {
    check_topic(&[
        ("", &[""]),
        (".", &["."]),
        ("a.", &["a."]),
        (".a", &[".a"]),
        ("#a", &["#a"]),
        ("a*", &["a*"]),
        ("a.b", &["a.b"]),
    ])
    .await;
}

#[tokio::test]
async fn headers_exchange_x_match_variants() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let x = unique("x-headers");
    declare(&ch, &x, ExchangeKind::Headers).await;
    let bindings: Vec<(&str, FieldTable)> = vec![
        ("all", table(&[("x-match", "all"), ("format", "pdf"), ("type", "report")])),
        ("any", table(&[("x-match", "any"), ("format", "pdf"), ("type", "report")])),
        ("all-with-x", table(&[("x-match", "all-with-x"), ("x-tag", "v"), ("format", "pdf")])),
        ("any-with-x", table(&[("x-match", "any-with-x"), ("x-tag", "v"), ("format", "zip")])),
        ("no-args", FieldTable::default()),
        ("default-is-all", table(&[("format", "pdf"), ("type", "report")])),
        ("all-ignores-x", table(&[("x-match", "all"), ("x-tag", "v")])),
    ];
    let mut queues = Vec::new();
    for (_, args) in &bindings {
        let q = exclusive_queue(&ch).await;
        bind(&ch, &q, &x, "ignored-key", args.clone()).await;
        queues.push(q);
    }
    publish(&ch, &x, "k", "pdf+report", Some(table(&[("format", "pdf"), ("type", "report")]))).await;
    publish(&ch, &x, "k", "pdf", Some(table(&[("format", "pdf")]))).await;
    publish(&ch, &x, "k", "pdf+xtag", Some(table(&[("format", "pdf"), ("x-tag", "v")]))).await;
    publish(&ch, &x, "k", "xtag", Some(table(&[("x-tag", "v")]))).await;
    publish(&ch, &x, "k", "none", None).await;
    publish(&ch, &x, "k", "other", Some(table(&[("format", "doc"), ("type", "memo")]))).await;

    let expected: Vec<&[&str]> = vec![
        &["pdf+report"],
        &["pdf+report", "pdf", "pdf+xtag"],
        &["pdf+xtag"],
        &["pdf+xtag", "xtag"],
        &["pdf+report", "pdf", "pdf+xtag", "xtag", "none", "other"],
        &["pdf+report"],
        &["pdf+report", "pdf", "pdf+xtag", "xtag", "none", "other"],
    ];
    for (((name, _), q), want) in bindings.iter().zip(&queues).zip(expected) {
        assert_eq!(get_all(&ch, q).await, want.to_vec(), "binding {name}");
    }
    delete(&ch, &x).await;
}

#[tokio::test]
async fn headers_binding_with_invalid_x_match_is_precondition_failed() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    let x = unique("x-headers-bad");
    declare(&ch, &x, ExchangeKind::Headers).await;
    let q = exclusive_queue(&ch).await;
    let err = expect_amqp_error(
        ch.queue_bind(
            q.as_str().into(),
            x.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            table(&[("x-match", "foo")]),
        )
        .await,
    );
    assert_eq!(
        err,
        (406, "PRECONDITION_FAILED - Invalid x-match field value <<\"foo\">>; expected all, any, all-with-x, or any-with-x".to_string())
    );
    let ch2 = conn.create_channel().await.expect("channel");
    delete(&ch2, &x).await;
}

#[tokio::test]
async fn exchange_to_exchange_binding_routes_and_unbind_stops_it() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let src = unique("x-src");
    let dst = unique("x-dst");
    declare(&ch, &src, ExchangeKind::Topic).await;
    declare(&ch, &dst, ExchangeKind::Direct).await;
    let q = exclusive_queue(&ch).await;
    bind(&ch, &q, &dst, "orders.new", FieldTable::default()).await;
    ch.exchange_bind(
        dst.as_str().into(),
        src.as_str().into(),
        "orders.*".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("exchange.bind");
    publish(&ch, &src, "orders.new", "routed", None).await;
    publish(&ch, &src, "orders.old", "source-matches-destination-does-not", None).await;
    publish(&ch, &src, "billing.new", "source-does-not-match", None).await;
    assert_eq!(get_all(&ch, &q).await, vec!["routed"]);

    ch.exchange_unbind(
        dst.as_str().into(),
        src.as_str().into(),
        "orders.*".into(),
        ExchangeUnbindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("exchange.unbind");
    publish(&ch, &src, "orders.new", "after-unbind", None).await;
    assert_eq!(get_all(&ch, &q).await, Vec::<String>::new());
    // Unbinding again (binding no longer exists) also succeeds.
    ch.exchange_unbind(
        dst.as_str().into(),
        src.as_str().into(),
        "orders.*".into(),
        ExchangeUnbindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("unbind of a missing binding");
    delete(&ch, &src).await;
    delete(&ch, &dst).await;
}

#[tokio::test]
async fn a_queue_reached_by_two_paths_gets_one_copy() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let src = unique("x-src2");
    let dst = unique("x-dst2");
    declare(&ch, &src, ExchangeKind::Fanout).await;
    declare(&ch, &dst, ExchangeKind::Fanout).await;
    let q = exclusive_queue(&ch).await;
    bind(&ch, &q, &src, "", FieldTable::default()).await;
    bind(&ch, &q, &dst, "", FieldTable::default()).await;
    ch.exchange_bind(
        dst.as_str().into(),
        src.as_str().into(),
        "".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("exchange.bind");
    publish(&ch, &src, "k", "once", None).await;
    assert_eq!(get_all(&ch, &q).await, vec!["once"]);
    delete(&ch, &src).await;
    delete(&ch, &dst).await;
}

#[tokio::test]
async fn alternate_exchange_takes_unroutable_messages_and_satisfies_mandatory() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let ae = unique("x-ae");
    let main = unique("x-main");
    declare(&ch, &ae, ExchangeKind::Fanout).await;
    let mut args = FieldTable::default();
    args.insert("alternate-exchange".into(), AMQPValue::LongString(ae.as_str().into()));
    ch.exchange_declare(main.as_str().into(), ExchangeKind::Direct, ExchangeDeclareOptions::default(), args)
        .await
        .expect("declare with alternate-exchange");
    let routed_q = exclusive_queue(&ch).await;
    let ae_q = exclusive_queue(&ch).await;
    bind(&ch, &routed_q, &main, "known", FieldTable::default()).await;
    bind(&ch, &ae_q, &ae, "", FieldTable::default()).await;

    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let confirm = ch
        .basic_publish(
            main.as_str().into(),
            "unknown".into(),
            BasicPublishOptions { mandatory: true, ..Default::default() },
            b"lost?",
            BasicProperties::default(),
        )
        .await
        .expect("publish");
    // Routed via the AE: acked without a basic.return.
    assert_eq!(within("confirm", confirm).await.expect("confirm"), Confirmation::Ack(None));
    let got = within("get", ch.basic_get(ae_q.as_str().into(), BasicGetOptions { no_ack: true }))
        .await
        .expect("get")
        .expect("the AE queue has the message");
    assert_eq!(got.delivery.data, b"lost?");
    assert_eq!(got.delivery.routing_key.as_str(), "unknown", "original routing key kept");
    assert_eq!(got.delivery.exchange.as_str(), main, "exchange is the one published to");

    // Routable messages do not go to the AE.
    publish(&ch, &main, "known", "direct", None).await;
    assert_eq!(get_all(&ch, &routed_q).await, vec!["direct"]);
    assert_eq!(get_all(&ch, &ae_q).await, Vec::<String>::new());
    delete(&ch, &main).await;
    delete(&ch, &ae).await;
}

#[tokio::test]
async fn auto_delete_exchange_goes_when_its_last_binding_goes() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    let x = unique("x-autodel");
    ch.exchange_declare(
        x.as_str().into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions { auto_delete: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("declare auto-delete");
    let passive = ExchangeDeclareOptions { passive: true, ..Default::default() };
    // Never bound: it stays.
    ch.exchange_declare(x.as_str().into(), ExchangeKind::Direct, passive, FieldTable::default())
        .await
        .expect("an auto-delete exchange without bindings is not deleted");
    let q1 = exclusive_queue(&ch).await;
    let q2 = exclusive_queue(&ch).await;
    bind(&ch, &q1, &x, "a", FieldTable::default()).await;
    bind(&ch, &q2, &x, "b", FieldTable::default()).await;
    ch.queue_unbind(q1.as_str().into(), x.as_str().into(), "a".into(), FieldTable::default())
        .await
        .expect("unbind first");
    ch.exchange_declare(x.as_str().into(), ExchangeKind::Direct, passive, FieldTable::default())
        .await
        .expect("still one binding left");
    ch.queue_unbind(q2.as_str().into(), x.as_str().into(), "b".into(), FieldTable::default())
        .await
        .expect("unbind last");
    let err = expect_amqp_error(
        ch.exchange_declare(x.as_str().into(), ExchangeKind::Direct, passive, FieldTable::default()).await,
    );
    assert_eq!(err, (404, format!("NOT_FOUND - no exchange '{x}' in vhost '/'")));
    drop(conn);
}
