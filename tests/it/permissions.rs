//! Configure / write / read permissions per operation, with the texts and order of checks
//! measured on RabbitMQ 3.10.8 (user bob, permissions `^bob-.*` for all three on `/`).

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};

use crate::common::*;

const CONFIG: &str = r#"
[[auth.users]]
name = "bob"
password = "bob"

[[auth.permissions]]
user = "bob"
vhost = "/"
configure = "^bob-.*"
write = "^bob-.*"
read = "^bob-.*"

[[auth.users]]
name = "reader"
password = "r"

[[auth.permissions]]
user = "reader"
vhost = "/"
configure = ""
write = ".*"
read = ".*"
"#;

fn refused(kind: &str, name: &str, user: &str) -> (u16, String) {
    (403, format!("ACCESS_REFUSED - access to {kind} '{name}' in vhost '/' refused for user '{user}'"))
}

async fn connect(b: &Broker, user: &str, pass: &str) -> Connection {
    let uri = format!("amqp://{user}:{pass}@{}/%2f", b.addr);
    within("login", Connection::connect(&uri, ConnectionProperties::default())).await.expect("login")
}

#[tokio::test]
async fn each_operation_needs_its_permission_as_in_rabbitmq() {
    let b = Broker::start_with_config(CONFIG);
    // What bob may not touch, made by the default user.
    let (_g, admin) = b.channel().await;
    declare_queue(&admin, "notbob", QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
    admin.exchange_declare("gx".into(), ExchangeKind::Direct, Default::default(), FieldTable::default()).await.unwrap();

    let c = connect(&b, "bob", "bob").await;
    let ch = || async { c.create_channel().await.unwrap() };
    let nop = QueueDeclareOptions::default();
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };

    // Declares: configure on the name (a server-named queue's generated one), not for passive.
    assert_eq!(
        expect_amqp_error(declare_queue(&ch().await, "notbob", nop, FieldTable::default()).await),
        refused("queue", "notbob", "bob")
    );
    declare_queue(&ch().await, "bob-1", nop, FieldTable::default()).await.unwrap();
    declare_queue(&ch().await, "notbob", passive, FieldTable::default()).await.unwrap();
    assert_eq!(expect_amqp_error(declare_queue(&ch().await, "missing", passive, FieldTable::default()).await).0, 404);
    let (code, text) = expect_amqp_error(declare_queue(&ch().await, "", nop, FieldTable::default()).await);
    assert_eq!(code, 403);
    assert!(text.starts_with("ACCESS_REFUSED - access to queue 'amq.gen-"), "{text}");
    assert_eq!(
        expect_amqp_error(declare_queue(&ch().await, "amq.foo", nop, FieldTable::default()).await).1,
        "ACCESS_REFUSED - queue name 'amq.foo' contains reserved prefix 'amq.*'",
        "the name is checked first"
    );
    let x = ch().await;
    assert_eq!(
        expect_amqp_error(
            x.exchange_declare("x".into(), ExchangeKind::Direct, Default::default(), FieldTable::default()).await
        ),
        refused("exchange", "x", "bob")
    );
    let x = ch().await;
    x.exchange_declare("bob-x".into(), ExchangeKind::Direct, Default::default(), FieldTable::default()).await.unwrap();
    let opts = ExchangeDeclareOptions { passive: true, ..Default::default() };
    x.exchange_declare("gx".into(), ExchangeKind::Direct, opts, FieldTable::default()).await.unwrap();

    // A dead-letter exchange needs write on it.
    let mut dl = FieldTable::default();
    dl.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("gx".into()));
    assert_eq!(
        expect_amqp_error(declare_queue(&ch().await, "bob-dl", nop, dl).await),
        refused("exchange", "gx", "bob")
    );
    let mut dl = FieldTable::default();
    dl.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("bob-x".into()));
    declare_queue(&ch().await, "bob-dl", nop, dl).await.unwrap();

    // Publish: write on the exchange, before it is looked up; the default exchange is amq.default.
    for (exchange, shown) in [("amq.direct", "amq.direct"), ("", "amq.default"), ("nope", "nope")] {
        let p = ch().await;
        // The refusal is a channel close that races any next method on the channel (lapin then
        // answers InvalidChannelState itself): read it from the connection's events.
        let mut ev = events(&c);
        publish_props(&p, exchange, "bob-1", "x", BasicProperties::default()).await;
        assert_eq!(next_close(&mut ev).await, refused("exchange", shown, "bob"), "publish to {exchange:?}");
    }
    let p = ch().await;
    publish_props(&p, "bob-x", "k", "x", BasicProperties::default()).await;
    sync_point(&p).await;

    // Bindings: write on the queue (or destination), then read on the exchange (or source).
    let q = ch().await;
    let e = expect_amqp_error(
        q.queue_bind("bob-1".into(), "amq.direct".into(), "k".into(), Default::default(), FieldTable::default()).await,
    );
    assert_eq!(e, refused("exchange", "amq.direct", "bob"));
    ch().await
        .queue_bind("bob-1".into(), "bob-x".into(), "k".into(), Default::default(), FieldTable::default())
        .await
        .unwrap();
    let e = expect_amqp_error(
        ch().await.queue_unbind("notbob".into(), "gx".into(), "k".into(), FieldTable::default()).await,
    );
    assert_eq!(e, refused("queue", "notbob", "bob"));
    for (dest, source) in [("bob-x", "gx"), ("gx", "bob-x")] {
        let e = expect_amqp_error(
            ch().await
                .exchange_bind(dest.into(), source.into(), "k".into(), Default::default(), FieldTable::default())
                .await,
        );
        assert_eq!(e, refused("exchange", "gx", "bob"), "{dest} <- {source}");
    }

    // Reads: before the queue is looked up.
    assert_eq!(
        expect_amqp_error(ch().await.basic_get("q-x".into(), Default::default()).await),
        refused("queue", "q-x", "bob")
    );
    assert_eq!(
        expect_amqp_error(
            ch().await.basic_consume("notbob".into(), "".into(), Default::default(), FieldTable::default()).await
        ),
        refused("queue", "notbob", "bob")
    );
    assert_eq!(
        expect_amqp_error(ch().await.queue_purge("notbob".into(), Default::default()).await),
        refused("queue", "notbob", "bob")
    );
    assert!(ch().await.basic_get("bob-1".into(), Default::default()).await.is_ok());

    // Deletes: configure, before existence.
    assert_eq!(
        expect_amqp_error(ch().await.queue_delete("notbob".into(), Default::default()).await),
        refused("queue", "notbob", "bob")
    );
    assert_eq!(
        expect_amqp_error(ch().await.queue_delete("zz".into(), Default::default()).await),
        refused("queue", "zz", "bob")
    );
    ch().await.queue_delete("bob-zz".into(), Default::default()).await.unwrap();
    assert_eq!(
        expect_amqp_error(ch().await.exchange_delete("gx".into(), Default::default()).await),
        refused("exchange", "gx", "bob")
    );
    ch().await.exchange_delete("bob-x".into(), Default::default()).await.unwrap();
    ch().await.queue_delete("bob-1".into(), Default::default()).await.unwrap();

    // The default user's queue and exchange are untouched; the connection survived it all.
    declare_queue(&admin, "notbob", passive, FieldTable::default()).await.unwrap();
    assert!(c.status().connected());

    // An empty pattern grants nothing; the others still work.
    let r = connect(&b, "reader", "r").await;
    let rc = r.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(1));
    assert_eq!(
        expect_amqp_error(declare_queue(&rc, "anything", nop, args).await),
        refused("queue", "anything", "reader")
    );
    let rc = r.create_channel().await.unwrap();
    publish_props(&rc, "", "notbob", "from reader", BasicProperties::default()).await;
    sync_point(&rc).await;
    let got = rc.basic_get("notbob".into(), BasicGetOptions { no_ack: true }).await.unwrap();
    assert_eq!(got.map(|m| m.delivery.data), Some(b"from reader".to_vec()));
}

/// Topic permissions (RabbitMQ 3.10.8: `set_topic_permissions -p / bob amq.topic '^{username}\.' '^r\.'`):
/// routing keys of publishes and binding keys of binds on that topic exchange, `{username}`
/// expanded; other exchanges are not restricted.
#[tokio::test]
async fn topic_permissions_restrict_routing_and_binding_keys() {
    let config = r#"
[[auth.users]]
name = "bob"
password = "bob"

[[auth.permissions]]
user = "bob"
vhost = "/"

[[auth.topic_permissions]]
user = "bob"
vhost = "/"
exchange = "amq.topic"
write = '^{username}\.'
read = '^r\.'
"#;
    let b = Broker::start_with_config(config);
    let c = connect(&b, "bob", "bob").await;
    let ch = || async { c.create_channel().await.unwrap() };
    let refused_topic = |key: &str| {
        (
            403,
            format!(
                "ACCESS_REFUSED - access to topic '{key}' in exchange 'amq.topic' in vhost '/' refused for user 'bob'"
            ),
        )
    };
    let publish = |exchange: &'static str, key: &'static str| {
        let c = &c;
        async move {
            let p = c.create_channel().await.unwrap();
            publish_props(&p, exchange, key, "x", BasicProperties::default()).await;
            within(
                "round trip",
                p.exchange_declare(
                    "amq.direct".into(),
                    ExchangeKind::Direct,
                    ExchangeDeclareOptions { passive: true, ..Default::default() },
                    FieldTable::default(),
                ),
            )
            .await
        }
    };
    publish("amq.topic", "bob.x").await.unwrap();
    // The refusal closes the channel while the round trip may already be on its way (lapin
    // then answers InvalidChannelState itself): read the close from the connection's events.
    let mut ev = events(&c);
    let _ = publish("amq.topic", "other.x").await;
    assert_eq!(next_close(&mut ev).await, refused_topic("other.x"));
    publish("amq.direct", "other.x").await.unwrap();
    declare_queue(&ch().await, "t-q", QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
    ch().await
        .queue_bind("t-q".into(), "amq.topic".into(), "r.#".into(), Default::default(), FieldTable::default())
        .await
        .unwrap();
    let e = expect_amqp_error(
        ch().await
            .queue_bind("t-q".into(), "amq.topic".into(), "x.#".into(), Default::default(), FieldTable::default())
            .await,
    );
    assert_eq!(e, refused_topic("x.#"));
    let e = expect_amqp_error(
        ch().await.queue_unbind("t-q".into(), "amq.topic".into(), "x.#".into(), FieldTable::default()).await,
    );
    assert_eq!(e, refused_topic("x.#"));
    let x = ch().await;
    x.exchange_declare("my-topic".into(), ExchangeKind::Topic, Default::default(), FieldTable::default())
        .await
        .unwrap();
    publish("my-topic", "other.x").await.unwrap();
    let e = expect_amqp_error(
        ch().await
            .exchange_bind(
                "my-topic".into(),
                "amq.topic".into(),
                "x.#".into(),
                Default::default(),
                FieldTable::default(),
            )
            .await,
    );
    assert_eq!(e, refused_topic("x.#"));
}

/// `user_id` must be the authenticated user (406, RabbitMQ's text), unless the user has the
/// `impersonator` tag.
#[tokio::test]
async fn user_id_must_be_the_login_unless_impersonator() {
    let config = r#"
[[auth.users]]
name = "relay"
password = "r"
tags = ["impersonator"]

[[auth.permissions]]
user = "relay"
vhost = "/"
"#;
    let b = Broker::start_with_config(config);
    let (_c, admin) = b.channel().await;
    declare_queue(&admin, "uid-q", QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
    let as_bob = BasicProperties::default().with_user_id("bob".into());
    let (pc, p) = b.channel().await;
    let mut ev = events(&pc);
    publish_props(&p, "", "uid-q", "forged", as_bob.clone()).await;
    assert_eq!(
        next_close(&mut ev).await,
        (406, "PRECONDITION_FAILED - user_id property set to 'bob' but authenticated user was 'guest'".to_string())
    );
    let p = b.channel().await.1;
    publish_props(&p, "", "uid-q", "own", BasicProperties::default().with_user_id("guest".into())).await;
    sync_point(&p).await;
    let relay = connect(&b, "relay", "r").await;
    let r = relay.create_channel().await.unwrap();
    publish_props(&r, "", "uid-q", "relayed", as_bob).await;
    sync_point(&r).await;
    let mut got = Vec::new();
    while let Some(m) = admin.basic_get("uid-q".into(), BasicGetOptions { no_ack: true }).await.unwrap() {
        got.push(String::from_utf8(m.delivery.data.clone()).unwrap());
    }
    assert_eq!(got, ["own", "relayed"]);
}
