//! Connection-level behaviour seen through lapin: the handshake (login, vhost, tune values and
//! the `connection.start` server-properties), opening and closing channels, isolation between
//! connections, and what closing a connection does to its unacknowledged messages.

use lapin::options::*;
use lapin::protocol::AMQPClass;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};

use crate::common::*;

#[tokio::test]
async fn guest_guest_login_opens_a_usable_connection() {
    let b = Broker::start();
    let conn = b.connect().await;
    assert!(conn.status().connected());
    let ch = conn.create_channel().await.expect("create channel");
    assert!(ch.status().connected());
    // The connection really works: a round trip through the broker succeeds.
    let q =
        ch.queue_declare("".into(), QueueDeclareOptions::exclusive(), FieldTable::default()).await.expect("declare");
    assert!(q.name().as_str().starts_with("amq.gen-"));
    conn.close(200, "OK".into()).await.expect("close");
    // lapin resolves close() on close-ok and marks the status closed on its own internal task
    // just after; it offers no event for that, so poll the status (bounded).
    within("lapin to mark the connection closed", async {
        while !conn.status().closed() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn wrong_password_is_refused_with_access_refused() {
    let b = Broker::start();
    let uri = format!("amqp://guest:wrong@{}/%2f", b.addr);
    let res = within("login refusal", Connection::connect(&uri, ConnectionProperties::default())).await;
    let err = match res {
        Ok(_) => panic!("a wrong password must not open a connection"),
        Err(e) => e,
    };
    // lapin advertises authentication_failure_close, so the broker explains with a 403 close.
    assert_eq!(
        amqp_error(&err),
        (
            403,
            "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile.".to_string()
        )
    );
}

#[tokio::test]
async fn unknown_vhost_is_refused_with_not_allowed() {
    let b = Broker::start();
    let uri = format!("amqp://guest:guest@{}/nope", b.addr);
    let res = within("vhost refusal", Connection::connect(&uri, ConnectionProperties::default())).await;
    let err = match res {
        Ok(_) => panic!("an unknown vhost must not open a connection"),
        Err(e) => e,
    };
    assert_eq!(amqp_error(&err), (530, "NOT_ALLOWED - vhost nope not found".to_string()));
}

#[tokio::test]
async fn connection_start_announces_rabbitmq_3_with_its_capabilities() {
    // lapin does not expose server-properties, so read connection.start from a raw socket.
    let b = Broker::start();
    let mut raw = RawAmqp::connect(&b.addr).await;
    let start = match raw.read_method().await {
        (0, AMQPClass::Connection(lapin::protocol::connection::AMQPMethod::Start(s))) => s,
        other => panic!("expected connection.start on channel 0, got {other:?}"),
    };
    assert_eq!((start.version_major, start.version_minor), (0, 9));
    let mechanisms = String::from_utf8_lossy(start.mechanisms.as_bytes()).to_string();
    assert!(mechanisms.split(' ').any(|m| m == "PLAIN"), "mechanisms {mechanisms:?}");
    assert!(mechanisms.split(' ').any(|m| m == "AMQPLAIN"), "mechanisms {mechanisms:?}");
    assert_eq!(start.locales.as_bytes(), b"en_US");

    let props = start.server_properties.inner();
    let string = |key: &str| match props.get(key) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).to_string(),
        other => panic!("server-properties {key}: expected a longstr, got {other:?}"),
    };
    assert_eq!(string("product"), "RabbitMQ");
    let version = string("version");
    assert!(version.starts_with("3."), "version {version:?} must look like RabbitMQ 3.x");
    let caps = match props.get("capabilities") {
        Some(AMQPValue::FieldTable(t)) => t.inner().clone(),
        other => panic!("capabilities must be a table, got {other:?}"),
    };
    // The same nine capabilities as RabbitMQ, each of which Warren implements (§13 #13).
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "consumer_priorities",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
    ] {
        assert_eq!(caps.get(cap), Some(&AMQPValue::Boolean(true)), "capability {cap}");
    }
}

#[tokio::test]
async fn tune_defaults_are_frame_max_131072_channel_max_2047_heartbeat_60() {
    let b = Broker::start();
    let conn = b.connect().await;
    let cfg = conn.configuration();
    assert_eq!(cfg.frame_max(), 131072);
    assert_eq!(cfg.channel_max(), 2047);
    assert_eq!(cfg.heartbeat(), 60);
}

#[tokio::test]
async fn many_channels_open_and_close_cleanly() {
    let b = Broker::start();
    let conn = b.connect().await;
    let mut channels = Vec::new();
    for _ in 0..100 {
        channels.push(within("channel.open", conn.create_channel()).await.expect("open channel"));
    }
    let mut ids: Vec<u16> = channels.iter().map(|c| c.id()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 100, "every channel gets its own number");
    for ch in &channels {
        within("channel.close", ch.close(200, "OK".into())).await.expect("close channel");
        assert!(!ch.status().connected());
    }
    // The connection is still healthy after all that churn.
    let ch = conn.create_channel().await.expect("open after closes");
    ch.queue_declare("".into(), QueueDeclareOptions::exclusive(), FieldTable::default())
        .await
        .expect("declare on a fresh channel");
    assert!(conn.status().connected());
}

#[tokio::test]
async fn a_closed_channel_number_can_be_opened_again() {
    let b = Broker::start();
    // channel_max=1 forces lapin to reuse channel number 1.
    let uri = format!("{}?channel_max=1", b.uri());
    let conn = Connection::connect(&uri, ConnectionProperties::default()).await.expect("connect");
    assert_eq!(conn.configuration().channel_max(), 1);
    let first = conn.create_channel().await.expect("first open");
    assert_eq!(first.id(), 1);
    let q = unique("reopen");
    first
        .queue_declare(q.as_str().into(), QueueDeclareOptions::exclusive(), FieldTable::default())
        .await
        .expect("declare on first incarnation");
    first.close(200, "OK".into()).await.expect("close");

    // lapin frees the number in its own bookkeeping just after close-ok; retry only on that
    // client-side condition (the broker is not involved until channel.open is sent).
    let second = within("re-open", async {
        loop {
            match conn.create_channel().await {
                Err(e) if matches!(e.kind(), lapin::ErrorKind::ChannelsLimitReached) => tokio::task::yield_now().await,
                other => break other,
            }
        }
    })
    .await
    .expect("re-open channel 1");
    assert_eq!(second.id(), 1);
    // The new incarnation works and sees the queue declared before (same connection).
    let ok = second
        .queue_declare(q.as_str().into(), QueueDeclareOptions::exclusive().passive(), FieldTable::default())
        .await
        .expect("passive declare on reopened channel");
    assert_eq!(ok.message_count(), 0);
}

#[tokio::test]
async fn a_channel_error_on_one_connection_leaves_other_connections_alone() {
    let b = Broker::start();
    let (conn_a, ch_a) = b.channel().await;
    let (conn_b, ch_b) = b.channel().await;
    let other_a = conn_a.create_channel().await.expect("second channel on A");

    let missing = unique("missing");
    let err = expect_amqp_error(
        ch_a.queue_declare(missing.as_str().into(), QueueDeclareOptions::default().passive(), FieldTable::default())
            .await,
    );
    assert_eq!(err, (404, format!("NOT_FOUND - no queue '{missing}' in vhost '/'")));

    // Connection B is untouched and fully usable.
    assert!(conn_b.status().connected());
    let q = ch_b
        .queue_declare("".into(), QueueDeclareOptions::exclusive(), FieldTable::default())
        .await
        .expect("declare on B");
    ch_b.basic_publish("".into(), q.name().clone(), BasicPublishOptions::default(), b"hi", BasicProperties::default())
        .await
        .expect("publish on B");
    let got = within("get on B", ch_b.basic_get(q.name().clone(), BasicGetOptions { no_ack: true }))
        .await
        .expect("get")
        .expect("message");
    assert_eq!(got.delivery.data, b"hi");
    // A soft error closes only that channel: A's other channel still works.
    assert!(conn_a.status().connected());
    other_a
        .queue_declare("".into(), QueueDeclareOptions::exclusive(), FieldTable::default())
        .await
        .expect("A's other channel is unaffected");
}

#[tokio::test]
async fn closing_a_connection_requeues_its_unacked_messages() {
    let b = Broker::start();
    let (conn_a, ch_a) = b.channel().await;
    let (_conn_b, ch_b) = b.channel().await;
    let q = unique("requeue-on-close");
    ch_b.queue_declare(q.as_str().into(), QueueDeclareOptions::default(), FieldTable::default())
        .await
        .expect("declare");
    ch_b.basic_publish(
        "".into(),
        q.as_str().into(),
        BasicPublishOptions::default(),
        b"payload",
        BasicProperties::default(),
    )
    .await
    .expect("publish");

    let mut consumer_a = ch_a
        .basic_consume(q.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume on A");
    let first = next_delivery(&mut consumer_a).await;
    assert_eq!(first.data, b"payload");
    assert!(!first.redelivered);

    let mut consumer_b = ch_b
        .basic_consume(q.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume on B");
    assert_no_delivery(&mut consumer_b).await; // the message is held unacked by A

    conn_a.close(200, "OK".into()).await.expect("close A");
    let again = next_delivery(&mut consumer_b).await;
    assert_eq!(again.data, b"payload");
    assert!(again.redelivered, "a requeued message is flagged redelivered");
    again.ack(BasicAckOptions::default()).await.expect("ack");
    ch_b.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await.expect("cleanup");
}

/// Users from the config file: a RabbitMQ-exported SHA-256 hash and a plain password (hashed
/// at load) both log in; a wrong password, an unknown user and a user without a password are
/// refused with RabbitMQ's 403, logged with the reason and without the password.
#[tokio::test]
async fn configured_users_log_in_with_rabbitmq_password_hashes() {
    let config = r#"
[[auth.users]]
name = "alice"
# Exported by RabbitMQ 3.10.8 for the password S3cret!
password_hash = "F0F+DkwlOADPqn8qR8a4yfqSCf0V+zMO74HfwT2nxsb+5lEs"
tags = ["monitoring"]

[[auth.users]]
name = "bob"
password = "b0b-pw"
hashing_algorithm = "rabbit_password_hashing_sha512"

[[auth.users]]
name = "cert-only"

[[auth.users]]
name = "no-perms"
password = "np"

[[auth.permissions]]
user = "alice"
vhost = "/"

[[auth.permissions]]
user = "bob"
vhost = "/"
"#;
    let b = Broker::start_with_config_logging(config, "warn");
    for (user, pass) in [("alice", "S3cret%21"), ("bob", "b0b-pw"), ("guest", "guest")] {
        let uri = format!("amqp://{user}:{pass}@{}/%2f", b.addr);
        let c = within("login", Connection::connect(&uri, ConnectionProperties::default()))
            .await
            .unwrap_or_else(|e| panic!("{user} must log in: {e}"));
        let ch = c.create_channel().await.unwrap();
        ch.queue_declare("".into(), Default::default(), Default::default()).await.unwrap();
        c.close(200, "bye".into()).await.unwrap();
    }
    for (user, pass, reason) in
        [("alice", "n0t-it", "wrong password"), ("carol", "x", "no such user"), ("cert-only", "", "no password")]
    {
        let uri = format!("amqp://{user}:{pass}@{}/%2f", b.addr);
        let err = match within("refusal", Connection::connect(&uri, ConnectionProperties::default())).await {
            Ok(_) => panic!("{user} must be refused"),
            Err(e) => e,
        };
        assert_eq!(amqp_error(&err).0, 403, "{user}");
        let who = format!("user={user}");
        b.wait_for_log(reason, |l| l.contains("login refused") && l.contains(&who) && l.contains(reason));
    }
    assert!(
        !b.logged(|l| l.contains("S3cret") || l.contains("b0b-pw") || l.contains("n0t-it")),
        "no password in the log"
    );
    // Logged in, but no permissions on the vhost: RabbitMQ's 530 at connection.open.
    let uri = format!("amqp://no-perms:np@{}/%2f", b.addr);
    let err = match within("vhost refusal", Connection::connect(&uri, ConnectionProperties::default())).await {
        Ok(_) => panic!("a user without permissions on the vhost must be refused"),
        Err(e) => e,
    };
    assert_eq!(amqp_error(&err), (530, "NOT_ALLOWED - access to vhost '/' refused for user 'no-perms'".to_string()));
}

/// Users and vhosts from a definitions file exported by RabbitMQ 3.10.8 (`auth.definitions`):
/// its users log in with their RabbitMQ passwords, its vhosts exist, and the sections not
/// imported (here federation's parameters) are named in a warning.
#[tokio::test]
async fn users_and_vhosts_come_from_a_rabbitmq_definitions_export() {
    let dir = TempDir::new();
    let defs = dir.0.join("definitions.json");
    std::fs::write(
        &defs,
        r#"{"bindings":[],"exchanges":[],"topic_permissions":[],
        "parameters":[{"component":"federation-upstream","name":"up","vhost":"/","value":{"uri":"amqp://"}}],
        "global_parameters":[{"name":"internal_cluster_id","value":"rabbitmq-cluster-id-x"}],
        "queues":[{"name":"q","vhost":"/","durable":true,"auto_delete":false,"arguments":{}}],
        "policies":[{"vhost":"/","name":"ttl","pattern":"^t[.]","apply-to":"queues","definition":{"message-ttl":1000},"priority":0}],
        "permissions":[{"configure":".*","read":".*","user":"alice","vhost":"tenant-a","write":".*"},
                       {"configure":".*","read":".*","user":"guest","vhost":"/","write":".*"}],
        "rabbit_version":"3.10.8","rabbitmq_version":"3.10.8",
        "users":[{"hashing_algorithm":"rabbit_password_hashing_sha256","limits":{},"name":"alice","password_hash":"F0F+DkwlOADPqn8qR8a4yfqSCf0V+zMO74HfwT2nxsb+5lEs","tags":[]},
                 {"hashing_algorithm":"rabbit_password_hashing_sha256","limits":{},"name":"guest","password_hash":"i5KII00KzG9U7uwcAZ15Ejdw6Pn1J6mJwbt4t2+HrIQm0BzL","tags":["administrator"]}],
        "vhosts":[{"limits":[],"metadata":{"description":"Default virtual host","tags":[]},"name":"/"},{"name":"tenant-a"}]}"#,
    )
    .unwrap();
    let config = format!("[auth]\ndefinitions = {:?}\n", defs.to_str().unwrap());
    let b = Broker::start_with_config_logging(&config, "warn");
    b.wait_for_log("not imported", |l| {
        l.contains("does not import") && l.contains("parameters (other components) (1)")
    });
    // An imported user has only the vhosts the file gives it (alice: tenant-a, not /).
    let uri = format!("amqp://alice:S3cret%21@{}/%2f", b.addr);
    let err = match within("vhost refusal", Connection::connect(&uri, ConnectionProperties::default())).await {
        Ok(_) => panic!("alice has no permissions on /"),
        Err(e) => e,
    };
    assert_eq!(amqp_error(&err).0, 530);
    for (user, pass, vhost) in [("alice", "S3cret%21", "tenant-a"), ("guest", "guest", "%2f")] {
        let uri = format!("amqp://{user}:{pass}@{}/{vhost}", b.addr);
        let c = within("login", Connection::connect(&uri, ConnectionProperties::default()))
            .await
            .unwrap_or_else(|e| panic!("{user} on {vhost}: {e}"));
        c.close(200, "bye".into()).await.unwrap();
    }
    let uri = format!("amqp://alice:nope@{}/tenant-a", b.addr);
    let err = match within("refusal", Connection::connect(&uri, ConnectionProperties::default())).await {
        Ok(_) => panic!("a wrong password must be refused"),
        Err(e) => e,
    };
    assert_eq!(amqp_error(&err).0, 403);
}

/// A failed login is answered only after `auth.login_failure_delay_ms`; a good one at once.
#[tokio::test]
async fn a_failed_login_is_answered_after_the_configured_delay() {
    let b = Broker::start_with_config("[auth]\nlogin_failure_delay_ms = 1500\n");
    let t = std::time::Instant::now();
    let uri = format!("amqp://guest:wrong@{}/%2f", b.addr);
    let err = match within("refusal", Connection::connect(&uri, ConnectionProperties::default())).await {
        Ok(_) => panic!("a wrong password must be refused"),
        Err(e) => e,
    };
    assert_eq!(amqp_error(&err).0, 403);
    assert!(t.elapsed() >= std::time::Duration::from_millis(1500), "answered after {:?}", t.elapsed());
    let t = std::time::Instant::now();
    let c = within("login", Connection::connect(&b.uri(), ConnectionProperties::default())).await.unwrap();
    assert!(t.elapsed() < std::time::Duration::from_millis(1500), "a good login is not delayed: {:?}", t.elapsed());
    c.close(200, "bye".into()).await.unwrap();
}
