//! Virtual hosts, policies and limits changed at runtime through the management API (RabbitMQ's
//! paths and answers), applied to live queues and connections, and surviving a restart.

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::json;

use crate::common::*;

const HTTP: &[&str] = &["--http-listen", "127.0.0.1:0"];

async fn connect_to(b: &Broker, user: &str, pass: &str, vhost: &str) -> lapin::Result<Connection> {
    let uri = format!("amqp://{user}:{pass}@{}/{}", b.addr, vhost.replace('/', "%2f"));
    within("connect", Connection::connect(&uri, ConnectionProperties::default())).await
}

fn passive() -> QueueDeclareOptions {
    QueueDeclareOptions { passive: true, ..Default::default() }
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions { durable: true, ..Default::default() }
}

#[tokio::test]
async fn vhosts_are_created_isolated_deleted_and_remembered() {
    let dir = TempDir::new();
    let mut b = Broker::start_in(&dir.0, HTTP);
    // Create: 201, then an update: 204 (RabbitMQ's answers).
    let (s, _) = b.api(
        "PUT",
        "/api/vhosts/tenant-a",
        ("guest", "guest"),
        Some(json!({"description": "team A", "tags": "prod,eu"})),
    );
    assert_eq!(s, 201);
    let (s, _) = b.api(
        "PUT",
        "/api/vhosts/tenant-a",
        ("guest", "guest"),
        Some(json!({"description": "team A", "tags": ["prod"], "default_queue_type": "quorum"})),
    );
    assert_eq!(s, 204);
    let v = b.admin("GET", "/api/vhosts/tenant-a", None);
    assert_eq!(
        (v["description"].as_str(), v["tags"].clone(), v["default_queue_type"].as_str()),
        (Some("team A"), json!(["prod"]), Some("quorum"))
    );
    b.admin("PUT", "/api/vhosts/tenant-b", None);

    // The creator (guest) may use it; a queue there is invisible from "/" and from tenant-b.
    let a = connect_to(&b, "guest", "guest", "tenant-a").await.expect("guest on tenant-a");
    let ach = a.create_channel().await.unwrap();
    ach.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let q = declare_queue(&ach, "orders", durable(), FieldTable::default()).await.unwrap();
    assert_eq!(q.name().as_str(), "orders");
    // The vhost's default queue type made it a quorum queue: a classic-only argument is refused.
    let (code, text) = expect_amqp_error(
        declare_queue(
            &a.create_channel().await.unwrap(),
            "orders2",
            durable(),
            table(&[("x-max-priority", AMQPValue::LongInt(3))]),
        )
        .await,
    );
    assert_eq!(code, 406);
    assert!(text.contains("rabbit_quorum_queue"), "{text}");
    let props = BasicProperties::default().with_delivery_mode(2);
    for i in 0..3 {
        publish_confirmed_props(&ach, "", "orders", &format!("m{i}"), props.clone()).await;
    }
    for vhost in ["/", "tenant-b"] {
        let c = connect_to(&b, "guest", "guest", vhost).await.unwrap();
        let (code, text) = expect_amqp_error(
            declare_queue(&c.create_channel().await.unwrap(), "orders", passive(), FieldTable::default()).await,
        );
        assert_eq!((code, text), (404, format!("NOT_FOUND - no queue 'orders' in vhost '{vhost}'")));
        // Publishing to it from there routes nowhere (the default exchange of another vhost).
        let ch = c.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        publish_confirmed_props(&ch, "", "orders", "stray", BasicProperties::default()).await;
    }
    assert_eq!(ready_count(&ach, "orders").await, 3, "nothing from other vhosts arrived");

    // Remembered across a crash (kill -9), with its queue and messages; the metadata too.
    drop((ach, a));
    b.kill9();
    let mut b = Broker::start_in(&dir.0, HTTP);
    let v = b.admin("GET", "/api/vhosts/tenant-a", None);
    assert_eq!(v["description"], "team A");
    let a = connect_to(&b, "guest", "guest", "tenant-a").await.expect("tenant-a after restart");
    let ach = a.create_channel().await.unwrap();
    assert_eq!(ready_count(&ach, "orders").await, 3);
    let vhost_dir = dir.0.join("vhosts").join("tenant-a");
    assert!(vhost_dir.exists());

    // Deleting it closes its connections (320, RabbitMQ's text) and removes its data.
    let mut ev = events(&a);
    let other = connect_to(&b, "guest", "guest", "tenant-b").await.unwrap();
    let (s, _) = b.api("DELETE", "/api/vhosts/tenant-a", ("guest", "guest"), None);
    assert_eq!(s, 204);
    assert_eq!(next_close(&mut ev).await, (320, "CONNECTION_FORCED - vhost 'tenant-a' is deleted".to_string()));
    assert!(!vhost_dir.exists(), "its data is gone");
    other.create_channel().await.expect("other vhosts' connections are untouched");
    let err = connect_to(&b, "guest", "guest", "tenant-a").await.unwrap_err();
    assert_eq!(amqp_error(&err), (530, "NOT_ALLOWED - vhost tenant-a not found".to_string()));
    let (s, v) = b.api("DELETE", "/api/vhosts/tenant-a", ("guest", "guest"), None);
    assert_eq!((s, v), (404, json!({"error": "Object Not Found", "reason": "Not Found"})));

    // Still deleted after a restart; tenant-b still there.
    b.terminate();
    let b = Broker::start_in(&dir.0, HTTP);
    assert_eq!(b.api("GET", "/api/vhosts/tenant-a", ("guest", "guest"), None).0, 404);
    connect_to(&b, "guest", "guest", "tenant-b").await.expect("tenant-b after restart");
}

#[tokio::test]
async fn the_api_answers_with_rabbitmq_codes() {
    let b = Broker::start_with_args(HTTP);
    let (s, v) = b.api("GET", "/api/vhosts", ("guest", "wrong"), None);
    assert_eq!((s, v), (401, json!({"error": "not_authorized", "reason": "Login failed"})));
    b.admin("PUT", "/api/users/mon", Some(json!({"password": "m", "tags": "management"})));
    let (s, v) = b.api("PUT", "/api/vhosts/x", ("mon", "m"), None);
    assert_eq!((s, v), (401, json!({"error": "not_authorised", "reason": "Not administrator user"})));
    let (s, v) = b.api(
        "PUT",
        "/api/policies/%2F/p",
        ("guest", "guest"),
        Some(json!({"pattern": "^q", "definition": {"max-length": -1}})),
    );
    assert_eq!(
        (s, v),
        (400, json!({"error": "bad_request", "reason": "Validation failed\n\n-1 is not a valid maximum length\n"}))
    );
    let (s, v) = b.api(
        "PUT",
        "/api/policies/%2F/p",
        ("guest", "guest"),
        Some(json!({"pattern": "^q", "definition": {"foo": 1}})),
    );
    assert_eq!(s, 400);
    assert_eq!(v["reason"], "Validation failed\n\n[{<<\"foo\">>,1}] are not recognised policy settings\n");
    let (s, _) = b.api(
        "PUT",
        "/api/permissions/%2F/mon",
        ("guest", "guest"),
        Some(json!({"configure": "(", "write": "", "read": ""})),
    );
    assert_eq!(s, 400, "a pattern that is no regular expression");
    assert_eq!(b.api("GET", "/api/whoami", ("mon", "m"), None).1, json!({"name": "mon", "tags": ["management"]}));
}

#[tokio::test]
async fn policies_apply_to_live_queues_at_once_and_clear() {
    let b = Broker::start_with_args(HTTP);
    let (_c, ch) = b.channel().await;
    let q = unique("pol");
    declare_queue(&ch, &q, QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
    let dead = exclusive_queue(&ch).await;
    ch.exchange_declare("pol-dlx".into(), lapin::ExchangeKind::Fanout, Default::default(), FieldTable::default())
        .await
        .unwrap();
    bind(&ch, &dead, "pol-dlx", "").await;
    for i in 0..10 {
        publish_to(&ch, &q, &format!("m{i}")).await;
    }
    assert_eq!(ready_count(&ch, &q).await, 10);

    // A policy with a lower max-length: the oldest go at once, dead-lettered as maxlen.
    let (s, _) = b.api(
        "PUT",
        "/api/policies/%2F/cap",
        ("guest", "guest"),
        Some(json!({"pattern": format!("^{q}$"), "definition": {"max-length": 3, "dead-letter-exchange": "pol-dlx"}, "apply-to": "queues"})),
    );
    assert_eq!(s, 201);
    assert_eq!(ready_count(&ch, &q).await, 3);
    assert_eq!(get_all(&ch, &q).await, ["m7", "m8", "m9"]);
    let mut dl = consume(&ch, &dead).await;
    let got = deliveries(&mut dl, 7).await;
    assert_eq!(text(&got[0].data), "m0");
    assert_eq!(str_field(&x_death(&got[0].properties)[0], "reason"), "maxlen");

    // A higher-priority policy replaces it entirely (never merged): no limit, but a TTL.
    b.admin(
        "PUT",
        "/api/policies/%2F/ttl",
        Some(json!({"pattern": "^pol", "definition": {"message-ttl": 60000}, "priority": 5})),
    );
    for i in 0..5 {
        publish_to(&ch, &q, &format!("n{i}")).await;
    }
    assert_eq!(ready_count(&ch, &q).await, 5, "max-length 3 no longer applies");

    // An operator policy caps what the policies allow: the lower value wins.
    b.admin(
        "PUT",
        "/api/operator-policies/%2F/op",
        Some(json!({"pattern": ".*", "definition": {"max-length": 2}, "apply-to": "queues"})),
    );
    assert_eq!(ready_count(&ch, &q).await, 2);
    let listed = b.admin("GET", "/api/operator-policies/%2F", None);
    assert_eq!(listed[0]["definition"], json!({"max-length": 2}));

    // Cleared: nothing limits the queue any more.
    for path in ["/api/operator-policies/%2F/op", "/api/policies/%2F/ttl", "/api/policies/%2F/cap"] {
        assert_eq!(b.api("DELETE", path, ("guest", "guest"), None).0, 204);
    }
    for i in 0..6 {
        publish_to(&ch, &q, &format!("o{i}")).await;
    }
    assert_eq!(ready_count(&ch, &q).await, 8);

    // A queue's own x-max-length stays when lower than the policy's; higher, the policy's wins.
    let own = unique("own");
    declare_queue(&ch, &own, QueueDeclareOptions::default(), table(&[("x-max-length", AMQPValue::LongInt(2))]))
        .await
        .unwrap();
    b.admin(
        "PUT",
        "/api/policies/%2F/own",
        Some(json!({"pattern": format!("^{own}$"), "definition": {"max-length": 4}})),
    );
    for i in 0..5 {
        publish_to(&ch, &own, &format!("{i}")).await;
    }
    assert_eq!(ready_count(&ch, &own).await, 2);

    // An exchange policy: unroutable messages go to the policy's alternate exchange.
    let ae_q = exclusive_queue(&ch).await;
    ch.exchange_declare("pol-ae".into(), lapin::ExchangeKind::Fanout, Default::default(), FieldTable::default())
        .await
        .unwrap();
    bind(&ch, &ae_q, "pol-ae", "").await;
    ch.exchange_declare("pol-x".into(), lapin::ExchangeKind::Direct, Default::default(), FieldTable::default())
        .await
        .unwrap();
    b.admin(
        "PUT",
        "/api/policies/%2F/ae",
        Some(json!({"pattern": "^pol-x$", "definition": {"alternate-exchange": "pol-ae"}, "apply-to": "exchanges"})),
    );
    publish_props(&ch, "pol-x", "nowhere", "lost?", BasicProperties::default()).await;
    assert_eq!(get_all(&ch, &ae_q).await, ["lost?"]);
}

#[tokio::test]
async fn policies_and_limits_from_the_config_survive_restart() {
    let dir = TempDir::new();
    let config = dir.0.join("w.toml");
    std::fs::write(
        &config,
        r#"
[[vhosts]]
name = "lim"
description = "limited"
max_connections = 1
max_queues = 1

[[auth.permissions]]
user = "guest"
vhost = "lim"

[[policies]]
vhost = "/"
name = "short"
pattern = '^short\.'
apply-to = "queues"
definition = { max-length = 1 }
"#,
    )
    .unwrap();
    let args = ["--config", config.to_str().unwrap()];
    for round in 0..2 {
        let mut b = Broker::start_in(&dir.0, &args);
        let (_c, ch) = b.channel().await;
        let q = format!("short.{round}");
        declare_queue(&ch, &q, QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
        publish_to(&ch, &q, "a").await;
        publish_to(&ch, &q, "b").await;
        assert_eq!(get_all(&ch, &q).await, ["b"], "round {round}: the config's policy");

        let first = connect_to(&b, "guest", "guest", "lim").await.expect("one connection");
        let err = connect_to(&b, "guest", "guest", "lim").await.unwrap_err();
        assert_eq!(
            amqp_error(&err),
            (
                530,
                "NOT_ALLOWED - access to vhost 'lim' refused for user 'guest': connection limit (1) is reached"
                    .to_string()
            )
        );
        let lch = first.create_channel().await.unwrap();
        declare_queue(&lch, "one", QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
        let (code, text) =
            expect_amqp_error(declare_queue(&lch, "two", QueueDeclareOptions::default(), FieldTable::default()).await);
        assert_eq!(
            (code, text.as_str()),
            (406, "PRECONDITION_FAILED - cannot declare queue 'two': queue limit in vhost 'lim' (1) is reached")
        );
        drop(first);
        b.terminate();
    }
}

#[tokio::test]
async fn user_limits_and_permission_changes_apply_to_open_connections() {
    let b = Broker::start_with_args(HTTP);
    b.admin("PUT", "/api/users/bob", Some(json!({"password": "pw", "tags": ""})));
    b.admin("PUT", "/api/permissions/%2F/bob", Some(json!({"configure": ".*", "write": ".*", "read": ".*"})));
    b.admin("PUT", "/api/user-limits/bob/max-connections", Some(json!({"value": 1})));
    b.admin("PUT", "/api/user-limits/bob/max-channels", Some(json!({"value": 2})));
    assert_eq!(
        b.admin("GET", "/api/user-limits/bob", None),
        json!([{"user": "bob", "value": {"max-connections": 1, "max-channels": 2}}])
    );

    let bob = connect_to(&b, "bob", "pw", "/").await.expect("bob");
    let err = connect_to(&b, "bob", "pw", "/").await.unwrap_err();
    assert_eq!(
        amqp_error(&err),
        (530, "NOT_ALLOWED - connection refused for user 'bob': user connection limit (1) is reached".to_string())
    );
    let ch = bob.create_channel().await.unwrap();
    let ch2 = bob.create_channel().await.unwrap();
    let mut ev = events(&bob);
    let _ = bob.create_channel().await;
    assert_eq!(
        next_close(&mut ev).await,
        (
            530,
            "NOT_ALLOWED - number of channels opened for user 'bob' has reached the maximum allowed user limit of (2)"
                .to_string()
        )
    );
    drop((ch, ch2));

    // Permissions changed while connected apply to the next operation. (The connection limit is
    // cleared first: the closed connection may still be finishing its close on the broker.)
    assert_eq!(b.api("DELETE", "/api/user-limits/bob/max-connections", ("guest", "guest"), None).0, 204);
    assert_eq!(b.admin("GET", "/api/user-limits/bob", None), json!([{"user": "bob", "value": {"max-channels": 2}}]));
    let bob = connect_to(&b, "bob", "pw", "/").await.expect("bob again");
    let ch = bob.create_channel().await.unwrap();
    declare_queue(&ch, &unique("bob-a"), QueueDeclareOptions::exclusive(), FieldTable::default()).await.unwrap();
    b.admin("PUT", "/api/permissions/%2F/bob", Some(json!({"configure": "^bob-", "write": ".*", "read": ".*"})));
    let (code, text) =
        expect_amqp_error(declare_queue(&ch, "alice-q", QueueDeclareOptions::exclusive(), FieldTable::default()).await);
    assert_eq!(
        (code, text.as_str()),
        (403, "ACCESS_REFUSED - access to queue 'alice-q' in vhost '/' refused for user 'bob'")
    );

    // Deleting the user closes its connections (320, RabbitMQ's text); it cannot log in again.
    let mut ev = events(&bob);
    assert_eq!(b.api("DELETE", "/api/users/bob", ("guest", "guest"), None).0, 204);
    assert_eq!(next_close(&mut ev).await, (320, "CONNECTION_FORCED - user 'bob' is deleted".to_string()));
    assert_eq!(amqp_error(&connect_to(&b, "bob", "pw", "/").await.unwrap_err()).0, 403);
}

#[tokio::test]
async fn node_connection_max_and_consumers_per_channel() {
    let b = Broker::start_with_config("[amqp]\nconnection_max = 1\nconsumer_max_per_channel = 1\n");
    let c = b.connect().await;
    let err = within("refused", Connection::connect(&b.uri(), ConnectionProperties::default())).await.unwrap_err();
    assert_eq!(
        amqp_error(&err),
        (530, "NOT_ALLOWED - connection refused: node connection limit (1) is reached".to_string())
    );
    let ch = c.create_channel().await.unwrap();
    let q = exclusive_queue(&ch).await;
    consume(&ch, &q).await;
    let mut ev = events(&c);
    let _ = ch
        .basic_consume(q.as_str().into(), "second".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await;
    assert_eq!(
        next_close(&mut ev).await,
        (530, "NOT_ALLOWED - reached maximum (1) of consumers per channel".to_string())
    );
}

#[tokio::test]
async fn definitions_export_imports_into_a_fresh_broker() {
    let b = Broker::start_with_args(HTTP);
    b.admin("PUT", "/api/vhosts/exported", Some(json!({"description": "from the API"})));
    b.admin("PUT", "/api/users/carol", Some(json!({"password": "c4rol", "tags": "monitoring"})));
    b.admin("PUT", "/api/permissions/exported/carol", Some(json!({"configure": "", "write": ".*", "read": ".*"})));
    b.admin("PUT", "/api/policies/exported/p", Some(json!({"pattern": ".*", "definition": {"max-length": 1}})));
    b.admin("PUT", "/api/vhost-limits/exported/max-queues", Some(json!({"value": 5})));
    // Durable queues, exchanges and bindings travel too (transient ones do not).
    let g = connect_to(&b, "guest", "guest", "exported").await.unwrap();
    let gch = g.create_channel().await.unwrap();
    declare_queue(&gch, "kept", durable(), table(&[("x-max-length", AMQPValue::LongInt(7))])).await.unwrap();
    declare_queue(&gch, "transient", QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
    let durable_x = ExchangeDeclareOptions { durable: true, ..Default::default() };
    gch.exchange_declare("kx".into(), lapin::ExchangeKind::Topic, durable_x, FieldTable::default()).await.unwrap();
    gch.queue_bind("kept".into(), "kx".into(), "k.#".into(), QueueBindOptions::default(), FieldTable::default())
        .await
        .unwrap();
    let defs = b.admin("GET", "/api/definitions", None);
    assert_eq!(defs["queues"].as_array().map(Vec::len), Some(1), "{}", defs["queues"]);
    assert_eq!(defs["queues"][0]["arguments"], json!({"x-max-length": 7}));
    let dir = TempDir::new();
    let file = dir.0.join("defs.json");
    std::fs::write(&file, defs.to_string()).unwrap();
    let b2 = Broker::start_with_config(&format!("[definitions]\nimport_file = {:?}\n", file.to_str().unwrap()));
    let c = connect_to(&b2, "carol", "c4rol", "exported").await.expect("carol logs in with her password");
    let ch = c.create_channel().await.unwrap();
    let (code, _) =
        expect_amqp_error(declare_queue(&ch, "q", QueueDeclareOptions::default(), FieldTable::default()).await);
    assert_eq!(code, 403, "her configure permission is empty");
    // The durable queue with its arguments, the exchange and the binding came along (passive
    // declares: nothing here creates them); the transient queue did not.
    let g2 = connect_to(&b2, "guest", "guest", "exported").await.unwrap();
    let ch = g2.create_channel().await.unwrap();
    declare_queue(&ch, "kept", QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await
        .expect("the imported queue exists");
    let q = b2.admin("GET", "/api/queues/exported/kept", None);
    assert_eq!((q["durable"].clone(), q["arguments"].clone()), (json!(true), json!({"x-max-length": 7})));
    let (code, _) = expect_amqp_error(declare_queue(&ch, "transient", passive(), FieldTable::default()).await);
    assert_eq!(code, 404);
    let ch = g2.create_channel().await.unwrap();
    publish_props(&ch, "kx", "k.1", "routed", BasicProperties::default()).await;
    assert_eq!(get_all(&ch, "kept").await, ["routed"], "through the imported exchange and binding");
}

/// `rabbitmqctl export_definitions` of a RabbitMQ 3.10.8 node (tests/fixtures): a vhost with a
/// policy, an operator policy (exported as a list of pairs), vhost and user limits, topic
/// permissions and users with their passwords ("bob"/"bob", "carol"/"x").
#[tokio::test]
async fn a_rabbitmq_export_imports_with_policies_limits_and_passwords() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rabbitmq-3.10.8-export.json");
    let b = Broker::start_with_config(&format!("[definitions]\nimport_file = {:?}\n", fixture.to_str().unwrap()));
    let bob = connect_to(&b, "bob", "bob", "t1").await.expect("bob logs in with his RabbitMQ password");
    // t1's max-connections is 1.
    let err = connect_to(&b, "carol", "x", "t1").await.unwrap_err();
    assert_eq!(amqp_error(&err).0, 530);
    let ch = bob.create_channel().await.unwrap();
    // The policy p1 (^q: max-length 1) and the operator policy op (.*: max-length 5).
    for (q, kept) in [("q-one", 1), ("other", 5)] {
        declare_queue(&ch, q, QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
        for i in 0..8 {
            publish_to(&ch, q, &format!("{i}")).await;
        }
        assert_eq!(ready_count(&ch, q).await, kept, "{q}");
    }
    // Topic permissions: bob publishes to amq.topic only with keys starting with his name.
    // (The refusal is a channel close that can beat a next method: read it from the events.)
    let mut ev = events(&bob);
    publish_props(&ch, "amq.topic", "alice.x", "no", BasicProperties::default()).await;
    let (code, text) = next_close(&mut ev).await;
    assert_eq!(
        (code, text.as_str()),
        (
            403,
            "ACCESS_REFUSED - access to topic 'alice.x' in exchange 'amq.topic' in vhost 't1' refused for user 'bob'"
        )
    );
}

/// Publish as fast as confirms allow (100 in flight) until `stop`; returns the count confirmed.
async fn flood(c: Connection, queue: &'static str, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> u64 {
    let ch = c.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let mut n = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let mut batch = Vec::new();
        for _ in 0..100 {
            batch.push(
                ch.basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    b"0123456789",
                    BasicProperties::default(),
                )
                .await
                .unwrap(),
            );
        }
        for c in batch {
            c.await.unwrap();
            n += 1;
        }
    }
    n
}

/// A vhost limited to 300 messages/s: its publisher is slowed to that rate (measured over 3 s
/// after a warm-up, within 10%) without errors or losses, while a publisher in another vhost
/// runs unthrottled at the same time.
#[tokio::test]
async fn rate_limits_slow_one_vhost_and_not_another() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let b = Broker::start_with_config(
        r#"
[auth]
vhosts = ["/", "slow"]

[[rate_limits]]
vhost = "slow"
messages_per_second = 300
"#,
    );
    let (slow, fast) = (connect_to(&b, "guest", "guest", "slow").await.unwrap(), b.connect().await);
    let (sch, fch) = (slow.create_channel().await.unwrap(), fast.create_channel().await.unwrap());
    declare_queue(&sch, "rl", QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
    declare_queue(&fch, "rl", QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let s = tokio::spawn(flood(slow, "rl", stop.clone()));
    let f = tokio::spawn(flood(fast, "rl", stop.clone()));
    // Measured on the broker's side, after a second of warm-up.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let (s0, f0) = (ready_count(&sch, "rl").await, ready_count(&fch, "rl").await);
    let t0 = std::time::Instant::now();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let (s1, f1) = (ready_count(&sch, "rl").await, ready_count(&fch, "rl").await);
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let (slow_rate, fast_rate) = ((s1 - s0) as f64 / secs, (f1 - f0) as f64 / secs);
    eprintln!("rate-limited vhost: {slow_rate:.0} msg/s; unlimited vhost: {fast_rate:.0} msg/s");
    assert!((270.0..=330.0).contains(&slow_rate), "limited to 300/s, measured {slow_rate:.0}/s");
    assert!(fast_rate > 3.0 * slow_rate, "the other vhost is not throttled ({fast_rate:.0}/s)");
    // Nothing was lost or refused: every confirmed message is in its queue.
    let (sent_slow, _) = (s.await.unwrap(), f.await.unwrap());
    assert_eq!(ready_count(&sch, "rl").await as u64, sent_slow);
}

/// A direct reply-to name is reachable only from its own vhost: a reply published to it from
/// another vhost goes nowhere (returned as unroutable with mandatory), one from the same vhost
/// arrives.
#[tokio::test]
async fn direct_reply_to_names_do_not_cross_vhosts() {
    const REPLY_TO: &str = "amq.rabbitmq.reply-to";
    let b = Broker::start_with_config("[auth]\nvhosts = [\"/\", \"other\"]\n");
    let (_sc, server) = b.channel().await;
    let requests = exclusive_queue(&server).await;
    let no_ack = BasicConsumeOptions { no_ack: true, ..Default::default() };
    let mut incoming = consume_with(&server, &requests, no_ack, FieldTable::default()).await;
    let (_cc, client) = b.channel().await;
    let mut replies = consume_with(&client, REPLY_TO, no_ack, FieldTable::default()).await;
    publish_props(&client, "", &requests, "ping", BasicProperties::default().with_reply_to(REPLY_TO.into())).await;
    let request = next_delivery(&mut incoming).await;
    let reply_name = request.properties.reply_to().as_ref().unwrap().as_str().to_string();

    let stranger = connect_to(&b, "guest", "guest", "other").await.unwrap();
    let sch = stranger.create_channel().await.unwrap();
    sch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let confirm = sch
        .basic_publish(
            "".into(),
            reply_name.as_str().into(),
            BasicPublishOptions { mandatory: true, ..Default::default() },
            b"forged",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.take_message().is_some(), "unroutable from another vhost: returned");
    publish_props(&server, "", &reply_name, "pong", BasicProperties::default()).await;
    assert_eq!(text(&next_delivery(&mut replies).await.data), "pong", "only the same vhost's reply arrives");
}

/// `/api/parameters[/{component}[/{vhost}[/{name}]]]`, `/api/global-parameters` and the cluster
/// name, with the answers of RabbitMQ 3.10.8 (federation and shovel are unknown components there
/// without their plugins, as here).
#[tokio::test]
async fn parameters_and_global_parameters_answer_as_rabbitmq() {
    let b = Broker::start_with_args(HTTP);
    let g = ("guest", "guest");
    for path in ["/api/parameters", "/api/parameters/federation-upstream", "/api/parameters/shovel/%2F"] {
        assert_eq!(b.api("GET", path, g, None), (200, json!([])), "{path}");
    }
    let not_found = json!({"error": "Object Not Found", "reason": "Not Found"});
    assert_eq!(b.api("GET", "/api/parameters/federation-upstream/nov", g, None), (404, not_found.clone()));
    assert_eq!(b.api("GET", "/api/parameters/shovel/%2F/s", g, None), (404, not_found.clone()));
    let (s, v) =
        b.api("PUT", "/api/parameters/federation-upstream/%2F/up", g, Some(json!({"value": {"uri": "amqp://"}})));
    assert_eq!(
        (s, v),
        (
            400,
            json!({"error": "bad_request", "reason": "Validation failed\n\ncomponent federation-upstream not found\n"})
        )
    );
    assert_eq!(b.api("DELETE", "/api/parameters/federation-upstream/%2F/up", g, None).0, 404);

    // Limits and operator policies are parameters; policies are listed only by component.
    b.admin("PUT", "/api/vhost-limits/%2F/max-queues", Some(json!({"value": 100})));
    b.admin(
        "PUT",
        "/api/operator-policies/%2F/op",
        Some(json!({"pattern": "^a", "definition": {"max-length": 10}, "apply-to": "queues"})),
    );
    b.admin("PUT", "/api/policies/%2F/p", Some(json!({"pattern": "^b", "definition": {"max-length": 3}})));
    let limits = json!({"value": {"max-queues": 100}, "vhost": "/", "component": "vhost-limits", "name": "limits"});
    let op = json!({"value": {"pattern": "^a", "definition": {"max-length": 10}, "priority": 0, "apply-to": "queues"},
        "vhost": "/", "component": "operator_policy", "name": "op"});
    assert_eq!(b.admin("GET", "/api/parameters", None), json!([limits, op]));
    assert_eq!(b.admin("GET", "/api/parameters/vhost-limits/%2F/limits", None), limits);
    assert_eq!(b.admin("GET", "/api/parameters/policy/%2F", None)[0]["value"]["pattern"], "^b");
    let (s, v) = b.api("PUT", "/api/parameters/policy/%2F/p2", g, Some(json!({"value": {"pattern": "x"}})));
    assert_eq!((s, v["reason"].as_str()), (400, Some("policies may not be set using this method")));
    assert_eq!(
        b.api("PUT", "/api/parameters/vhost-limits/%2F/limits", g, Some(json!({}))),
        (400, json!({"error": "bad_request", "reason": "[{key_missing,value}]"}))
    );
    assert_eq!(
        b.api("PUT", "/api/parameters/vhost-limits/nov/limits", g, Some(json!({"value": {"max-queues": 1}}))),
        (404, json!({"error": "not_found", "reason": "vhost_not_found"}))
    );
    let (s, _) =
        b.api("PUT", "/api/parameters/vhost-limits/%2F/limits", g, Some(json!({"value": {"max-connections": 5}})));
    assert_eq!(s, 204, "the vhost had limits: an update");
    assert_eq!(b.admin("GET", "/api/vhost-limits/%2F", None), json!([{"vhost": "/", "value": {"max-connections": 5}}]));
    let (s, v) = b.api(
        "PUT",
        "/api/parameters/operator_policy/%2F/op2",
        g,
        Some(json!({"value": {"pattern": "^c", "definition": {}}})),
    );
    assert_eq!((s, v["reason"].as_str()), (400, Some("Validation failed\n\nKey \"priority\" not found in op2\n")));
    assert_eq!(b.api("DELETE", "/api/parameters/vhost-limits/%2F/limits", g, None).0, 204);
    assert_eq!(b.admin("GET", "/api/vhost-limits", None), json!([]));
    assert_eq!(b.api("DELETE", "/api/parameters/operator_policy/%2F/op", g, None).0, 204);
    assert_eq!(b.admin("GET", "/api/parameters", None), json!([]));

    // Global parameters; the cluster name is one of them.
    assert_eq!(b.admin("GET", "/api/cluster-name", None), json!({"name": "warren@localhost"}));
    assert_eq!(b.api("GET", "/api/global-parameters/cluster_name", g, None), (404, not_found.clone()));
    assert_eq!(b.api("PUT", "/api/global-parameters/cluster_name", g, Some(json!({"value": "blue"}))).0, 201);
    assert_eq!(b.admin("GET", "/api/cluster-name", None), json!({"name": "blue"}));
    assert_eq!(b.api("PUT", "/api/cluster-name", g, Some(json!({"name": "green"}))).0, 204);
    assert_eq!(b.admin("GET", "/api/global-parameters", None), json!([{"name": "cluster_name", "value": "green"}]));
    assert_eq!(b.admin("GET", "/api/overview", None)["cluster_name"], "green");
    assert_eq!(
        b.api("PUT", "/api/global-parameters/x", g, Some(json!({"v": 1}))),
        (400, json!({"error": "bad_request", "reason": "[{key_missing,value}]"}))
    );
    assert_eq!(b.api("PUT", "/api/global-parameters/x", g, Some(json!({"value": {"a": 1}}))).0, 201);
    assert_eq!(b.api("PUT", "/api/global-parameters/x", g, Some(json!({"value": {"a": 2}}))).0, 204);
    assert_eq!(b.admin("GET", "/api/global-parameters/x", None), json!({"name": "x", "value": {"a": 2}}));
    assert_eq!(b.api("DELETE", "/api/global-parameters/x", g, None).0, 204);
    assert_eq!(b.api("DELETE", "/api/global-parameters/x", g, None), (404, not_found));
    b.admin("PUT", "/api/users/mon", Some(json!({"password": "m", "tags": "monitoring"})));
    assert_eq!(b.api("GET", "/api/parameters", ("mon", "m"), None).0, 401, "parameters need policymaker");
    assert_eq!(b.api("GET", "/api/global-parameters", ("mon", "m"), None).0, 401);
    // A policymaker may set limits and operator policies as parameters (not through
    // /api/operator-policies) and global parameters, but not the cluster name (RabbitMQ's rules).
    b.admin("PUT", "/api/users/pm", Some(json!({"password": "p", "tags": "policymaker"})));
    let pm = ("pm", "p");
    let limit = json!({"value": {"max-queues": 3}});
    assert_eq!(b.api("PUT", "/api/parameters/vhost-limits/%2F/limits", pm, Some(limit)).0, 201);
    let op = json!({"value": {"pattern": ".*", "definition": {"max-length": 1}, "priority": 0}});
    assert_eq!(b.api("PUT", "/api/parameters/operator_policy/%2F/o", pm, Some(op)).0, 201);
    let direct = json!({"pattern": ".*", "definition": {"max-length": 1}});
    assert_eq!(b.api("PUT", "/api/operator-policies/%2F/o2", pm, Some(direct)).0, 401);
    assert_eq!(b.api("PUT", "/api/global-parameters/y", pm, Some(json!({"value": 1}))).0, 201);
    assert_eq!(b.api("DELETE", "/api/global-parameters/y", pm, None).0, 204);
    assert_eq!(b.api("PUT", "/api/cluster-name", pm, Some(json!({"name": "red"}))).0, 401);
    assert_eq!(b.api("DELETE", "/api/parameters/operator_policy/%2F/o", pm, None).0, 204);
    assert!(
        b.admin("GET", "/api/definitions", None)["global_parameters"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "cluster_name", "value": "green"}))
    );
}

/// `/api/definitions/{vhost}` both ways, `/api/users/bulk-delete`, `/api/users/without-permissions`
/// and `/api/vhosts/{vhost}/start/{node}`, with RabbitMQ 3.10.8's bodies and codes.
#[tokio::test]
async fn per_vhost_definitions_bulk_delete_and_vhost_start() {
    let b = Broker::start_with_args(HTTP);
    let g = ("guest", "guest");
    b.admin("PUT", "/api/vhosts/v1", None);
    b.admin("PUT", "/api/vhosts/v2", Some(json!({"description": "kept"})));
    b.admin("PUT", "/api/queues/v1/q1", Some(json!({"durable": true, "arguments": {"x-max-length": 5}})));
    b.admin("PUT", "/api/exchanges/v1/x1", Some(json!({"type": "topic", "durable": true})));
    assert_eq!(b.api("POST", "/api/bindings/v1/e/x1/q/q1", g, Some(json!({"routing_key": "k"}))).0, 201);
    b.admin("PUT", "/api/policies/v1/pp", Some(json!({"pattern": ".*", "definition": {"max-length": 10}})));
    b.admin("PUT", "/api/vhost-limits/v1/max-queues", Some(json!({"value": 10})));
    let d = b.admin("GET", "/api/definitions/v1", None);
    let mut keys: Vec<&str> = d.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["bindings", "exchanges", "parameters", "policies", "queues", "rabbit_version"]);
    assert_eq!(
        d["queues"],
        json!([{"name": "q1", "durable": true, "auto_delete": false, "arguments": {"x-max-length": 5}, "type": "classic"}])
    );
    assert_eq!(
        d["bindings"],
        json!([{"source": "x1", "destination": "q1", "destination_type": "queue", "routing_key": "k", "arguments": {}}])
    );
    assert_eq!(d["policies"][0]["vhost"], "v1", "policies and parameters keep their vhost");
    assert_eq!(
        d["parameters"],
        json!([{"vhost": "v1", "component": "vhost-limits", "name": "limits", "value": {"max-queues": 10}}])
    );
    assert_eq!(
        b.api("GET", "/api/definitions/nov", g, None),
        (400, json!({"error": "bad_request", "reason": "vhost_not_found"}))
    );
    assert_eq!(
        b.api("POST", "/api/definitions/nov", g, Some(d.clone())),
        (404, json!({"error": "not_found", "reason": "vhost_not_found"}))
    );
    // Imported into v2: everything lands there, whatever vhost the file names; v2 keeps its
    // description; users and vhosts in the file are ignored.
    let mut file = d.clone();
    file["users"] = json!([{"name": "zz", "password_hash": "", "tags": []}]);
    file["vhosts"] = json!([{"name": "v9"}]);
    file["policies"][0]["vhost"] = json!("v1");
    assert_eq!(b.api("POST", "/api/definitions/v2", g, Some(file)).0, 204);
    let again = b.admin("GET", "/api/definitions/v2", None);
    for section in ["queues", "exchanges", "bindings"] {
        assert_eq!(again[section], d[section], "{section}");
    }
    assert_eq!(again["policies"][0]["vhost"], "v2");
    assert_eq!(again["parameters"][0]["value"], json!({"max-queues": 10}));
    assert_eq!(b.admin("GET", "/api/vhosts/v2", None)["description"], "kept");
    assert_eq!(b.api("GET", "/api/users/zz", g, None).0, 404);
    assert_eq!(b.api("GET", "/api/vhosts/v9", g, None).0, 404);
    let (s, v) = b.api("GET", "/api/queues/v2/q1", g, None);
    assert_eq!((s, v["arguments"].clone()), (200, json!({"x-max-length": 5})));

    // Users without permissions; bulk delete stops at the first unknown name.
    for u in ["u1", "u2", "u3"] {
        b.admin("PUT", &format!("/api/users/{u}"), Some(json!({"password": "p", "tags": ""})));
    }
    b.admin("PUT", "/api/permissions/v1/u3", Some(json!({"configure": ".*", "write": ".*", "read": ".*"})));
    let names = |v: serde_json::Value| -> Vec<String> {
        v.as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(names(b.admin("GET", "/api/users/without-permissions", None)), ["u1", "u2"]);
    assert_eq!(
        b.api("POST", "/api/users/bulk-delete", g, Some(json!({"users": ["u1", "nosuch", "u2"]}))),
        (400, json!({"error": "bad_request", "reason": ["no_such_user", "nosuch"]}))
    );
    assert_eq!(names(b.admin("GET", "/api/users/without-permissions", None)), ["u2"], "u1 went, u2 stayed");
    assert_eq!(
        b.api("POST", "/api/users/bulk-delete", g, Some(json!({}))),
        (400, json!({"error": "bad_request", "reason": "[{key_missing,users}]"}))
    );
    assert_eq!(b.api("POST", "/api/users/bulk-delete", g, Some(json!({"users": ["u2", "u3"]}))).0, 204);
    assert_eq!(b.api("GET", "/api/users/u3", g, None).0, 404);
    assert!(b.admin("GET", "/api/permissions", None).as_array().unwrap().iter().all(|p| p["user"] != "u3"));

    // Starting a vhost: Warren's always run; unknown node or vhost as RabbitMQ answers them.
    assert_eq!(b.api("POST", "/api/vhosts/v1/start/warren@localhost", g, None).0, 204);
    assert_eq!(
        b.api("POST", "/api/vhosts/v1/start/other@x", g, None),
        (400, json!({"error": "bad_request", "reason": "Request to node other@x failed with nodedown"}))
    );
    let (s, v) = b.api("POST", "/api/vhosts/nov/start/warren@localhost", g, None);
    assert_eq!(
        (s, v["reason"].as_str()),
        (400, Some("Request to node warren@localhost failed with {no_such_vhost,<<\"nov\">>}"))
    );
}

/// Bindings by their ends, as rabbitmqadmin declares and deletes them: `properties_key` is `~`
/// for an empty key without arguments, the percent-encoded key, or the key and a hash of the
/// arguments; POST answers 201, a missing end 404 with RabbitMQ's reason.
#[tokio::test]
async fn bindings_by_their_ends() {
    let b = Broker::start_with_args(HTTP);
    let g = ("guest", "guest");
    b.admin("PUT", "/api/queues/%2F/bq", Some(json!({"durable": "false", "auto_delete": "false"})));
    assert_eq!(b.admin("GET", "/api/queues/%2F/bq", None)["durable"], false, "a string boolean");
    let (s, v) = b.api("PUT", "/api/queues/%2F/bad", g, Some(json!({"durable": "maybe"})));
    assert_eq!(s, 400, "{v}");
    for (key, args) in [("", json!({})), ("a/b%c~d", json!({})), ("k", json!({"x": 1}))] {
        let body = json!({"routing_key": key, "arguments": args});
        assert_eq!(b.api("POST", "/api/bindings/%2F/e/amq.topic/q/bq", g, Some(body)).0, 201);
    }
    assert_eq!(
        b.api("POST", "/api/bindings/%2F/e/amq.topic/e/amq.direct", g, Some(json!({"routing_key": "k"}))).0,
        201
    );
    let list = b.admin("GET", "/api/bindings/%2F/e/amq.topic/q/bq", None);
    let keys: Vec<&str> = list.as_array().unwrap().iter().map(|x| x["properties_key"].as_str().unwrap()).collect();
    assert_eq!(keys.len(), 3);
    assert_eq!(&keys[..2], ["~", "a%2Fb%25c%7Ed"]);
    assert!(keys[2].starts_with("k~") && keys[2].len() > 2, "{keys:?}");
    assert_eq!(b.admin("GET", "/api/bindings/%2F/e/amq.topic/q/bq/%7E", None)["routing_key"], "");
    assert_eq!(b.admin("GET", "/api/bindings/%2F/e/amq.topic/q/nosuch", None), json!([]));
    assert_eq!(
        b.api("POST", "/api/bindings/%2F/e/amq.topic/q/nosuch", g, Some(json!({}))),
        (404, json!({"error": "not_found", "reason": "no queue 'nosuch' in vhost '/'"}))
    );
    assert_eq!(
        b.api("POST", "/api/bindings/%2F/e/nosuch/q/bq", g, Some(json!({}))),
        (404, json!({"error": "not_found", "reason": "no exchange 'nosuch' in vhost '/'"}))
    );
    let sources = b.admin("GET", "/api/exchanges/%2F/amq.topic/bindings/source", None);
    assert_eq!(sources.as_array().unwrap().len(), 4);
    assert_eq!(b.admin("GET", "/api/exchanges/%2F/amq.direct/bindings/destination", None)[0]["source"], "amq.topic");
    let to_queue = b.admin("GET", "/api/queues/%2F/bq/bindings", None);
    assert_eq!(
        to_queue[0],
        json!({"source": "", "vhost": "/", "destination": "bq", "destination_type": "queue",
        "routing_key": "bq", "arguments": {}, "properties_key": "bq"})
    );
    // Delete by properties key (the URL encodes it once more, as rabbitmqadmin does).
    assert_eq!(b.api("DELETE", "/api/bindings/%2F/e/amq.topic/q/bq/a%252Fb%2525c%257Ed", g, None).0, 204);
    let k_args = format!("/api/bindings/%2F/e/amq.topic/q/bq/{}", keys[2].replace('~', "%7E"));
    assert_eq!(b.api("DELETE", &k_args, g, None).0, 204);
    assert_eq!(b.api("DELETE", &k_args, g, None).0, 404);
    assert_eq!(b.api("DELETE", "/api/bindings/%2F/e/amq.topic/e/amq.direct/k", g, None).0, 204);
    let left = b.admin("GET", "/api/bindings/%2F/e/amq.topic/q/bq", None);
    assert_eq!(left.as_array().unwrap().len(), 1);
    assert_eq!(left[0]["properties_key"], "~");
}
