//! The management API's object endpoints (queues, exchanges, bindings, connections, consumers,
//! overview, health checks) against RabbitMQ 3.10.8's answers: field names from
//! `tests/fixtures/rabbitmq-3.10.8-management-shapes.json`, values from the live broker.

use lapin::BasicProperties;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{Value, json};

use crate::common::*;

fn fixture() -> Value {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rabbitmq-3.10.8-management-shapes.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn first(v: &Value) -> Value {
    match v {
        Value::Array(a) => a.first().cloned().unwrap_or(Value::Null),
        v => v.clone(),
    }
}

/// Fields RabbitMQ has that Warren does not report: Erlang process internals, certificate
/// details, and `idle_since` (present only once a queue has been idle for a second).
const NOT_YET: &[&str] = &[
    "backing_queue_status",
    "garbage_collection",
    "idle_since",
    "memory",
    "recoverable_slaves",
    "reductions",
    "reductions_details",
    "peer_cert_issuer",
    "peer_cert_subject",
    "peer_cert_validity",
    "ssl_cipher",
    "ssl_hash",
    "ssl_key_exchange",
    "ssl_protocol",
];

#[tokio::test]
async fn objects_have_rabbitmqs_fields_and_live_values() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    // The fixture's setup, as it was made on RabbitMQ: a durable queue with x-max-length, a
    // topic exchange bound to it, three messages, a consumer with prefetch 5 and no acks.
    declare_queue(
        &ch,
        "mq",
        QueueDeclareOptions { durable: true, ..Default::default() },
        table(&[("x-max-length", AMQPValue::LongInt(10))]),
    )
    .await
    .unwrap();
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    ch.exchange_declare("mx".into(), lapin::ExchangeKind::Topic, durable, FieldTable::default()).await.unwrap();
    bind(&ch, "mq", "mx", "a.#").await;
    for _ in 0..3 {
        publish_props(&ch, "mx", "a.b", "hello", BasicProperties::default().with_delivery_mode(2)).await;
    }
    ch.basic_qos(5, BasicQosOptions::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume("mq".into(), "ctag1".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .unwrap();
    deliveries(&mut consumer, 3).await;

    let reference = fixture();
    for path in [
        "/api/overview",
        "/api/queues/%2F/mq",
        "/api/exchanges/%2F/mx",
        "/api/bindings/%2F",
        "/api/connections",
        "/api/consumers",
        "/api/queues?page=1&page_size=2",
    ] {
        let ours = first(&b.admin("GET", path, None));
        let theirs = first(&reference[path]);
        let missing: Vec<&String> = theirs
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| !ours.as_object().is_some_and(|o| o.contains_key(*k)) && !NOT_YET.contains(&k.as_str()))
            .collect();
        assert!(missing.is_empty(), "{path}: fields RabbitMQ has and Warren lacks: {missing:?}");
    }
    let q = b.admin("GET", "/api/queues/%2F/mq", None);
    assert_eq!(
        (q["messages"].clone(), q["messages_ready"].clone(), q["messages_unacknowledged"].clone()),
        (json!(3), json!(0), json!(3))
    );
    assert_eq!(
        (q["consumers"].clone(), q["durable"].clone(), q["type"].clone()),
        (json!(1), json!(true), json!("classic"))
    );
    assert_eq!(q["arguments"], json!({"x-max-length": 10}));
    assert_eq!(q["message_bytes_unacknowledged"], json!(15));
    assert_eq!(q["consumer_details"][0]["consumer_tag"], "ctag1");
    assert_eq!(q["consumer_details"][0]["prefetch_count"], 5);
    let overview = b.admin("GET", "/api/overview", None);
    assert_eq!(overview["queue_totals"]["messages_unacknowledged"], 3);
    assert_eq!(overview["object_totals"]["connections"], 1);
    let bindings = b.admin("GET", "/api/bindings/%2F", None);
    assert!(
        bindings
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["source"] == "mx" && x["destination"] == "mq" && x["routing_key"] == "a.#")
    );
    let c = first(&b.admin("GET", "/api/connections", None));
    assert_eq!(
        (c["user"].clone(), c["vhost"].clone(), c["state"].clone(), c["auth_mechanism"].clone()),
        (json!("guest"), json!("/"), json!("running"), json!("PLAIN"))
    );
    assert!(c["client_properties"]["product"].is_string(), "lapin's client properties");
    let chan = first(&b.admin("GET", "/api/channels", None));
    assert_eq!(
        (
            chan["number"].clone(),
            chan["consumer_count"].clone(),
            chan["prefetch_count"].clone(),
            chan["messages_unacknowledged"].clone()
        ),
        (json!(1), json!(1), json!(5), json!(3))
    );
}

#[tokio::test]
async fn queues_are_paged_filtered_sorted_declared_purged_and_deleted() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    for (i, name) in ["pg-c", "pg-a", "pg-e", "pg-b", "pg-d", "other"].iter().enumerate() {
        declare_queue(&ch, name, QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
        for _ in 0..i {
            publish_to(&ch, name, "x").await;
        }
    }
    sync_point(&ch).await;
    let page = b.admin("GET", "/api/queues/%2F?page=2&page_size=2&name=pg-&sort=name", None);
    assert_eq!(
        (page["page"].clone(), page["page_count"].clone(), page["filtered_count"].clone(), page["total_count"].clone()),
        (json!(2), json!(3), json!(5), json!(6))
    );
    let names: Vec<&str> = page["items"].as_array().unwrap().iter().map(|q| q["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["pg-c", "pg-d"]);
    let deepest = b.admin("GET", "/api/queues?sort=messages&sort_reverse=true&columns=name,messages", None);
    assert_eq!(first(&deepest), json!({"name": "other", "messages": 5}), "sorted by depth, only the asked columns");
    let re = b.admin("GET", "/api/queues?page=1&name=%5Epg-%5Bab%5D%24&use_regex=true", None);
    assert_eq!(re["filtered_count"], 2);
    assert_eq!(b.api("GET", "/api/queues?page=9", ("guest", "guest"), None).0, 400);

    // PUT declares (201, then 204 for an equivalent one; 400 with the AMQP text otherwise).
    let (s, _) = b.api(
        "PUT",
        "/api/queues/%2F/made",
        ("guest", "guest"),
        Some(json!({"durable": true, "arguments": {"x-max-length": 2}})),
    );
    assert_eq!(s, 201);
    let (s, _) = b.api(
        "PUT",
        "/api/queues/%2F/made",
        ("guest", "guest"),
        Some(json!({"durable": true, "arguments": {"x-max-length": 2}})),
    );
    assert_eq!(s, 204);
    let (s, v) = b.api("PUT", "/api/queues/%2F/made", ("guest", "guest"), Some(json!({"durable": false})));
    assert_eq!(s, 400);
    assert!(v["reason"].as_str().unwrap().contains("inequivalent arg 'durable'"), "{v}");
    let q = declare_queue(
        &ch,
        "made",
        QueueDeclareOptions { durable: true, passive: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .unwrap();
    assert_eq!(q.name().as_str(), "made", "visible to AMQP clients");

    // if-empty refuses a queue with messages; purge empties it; then the delete goes through.
    let (s, _) = b.api("DELETE", "/api/queues/%2F/other?if-empty=true", ("guest", "guest"), None);
    assert_eq!(s, 400);
    assert_eq!(b.api("DELETE", "/api/queues/%2F/other/contents", ("guest", "guest"), None).0, 204);
    assert_eq!(ready_count(&ch, "other").await, 0);
    assert_eq!(b.api("DELETE", "/api/queues/%2F/other?if-empty=true", ("guest", "guest"), None).0, 204);
    assert_eq!(b.api("GET", "/api/queues/%2F/other", ("guest", "guest"), None).0, 404);
    // A user without permissions on the queue is refused.
    b.admin("PUT", "/api/users/viewer", Some(json!({"password": "v", "tags": "management"})));
    b.admin("PUT", "/api/permissions/%2F/viewer", Some(json!({"configure": "^mine$", "write": "", "read": ""})));
    assert_eq!(b.api("PUT", "/api/queues/%2F/theirs", ("viewer", "v"), None).0, 401);
    assert_eq!(b.api("PUT", "/api/queues/%2F/mine", ("viewer", "v"), None).0, 201);
}

#[tokio::test]
async fn connections_are_listed_and_closed_with_the_given_reason() {
    let b = Broker::start();
    let c = b.connect().await;
    let mut ev = events(&c);
    let list = b.admin("GET", "/api/connections", None);
    let name = list[0]["name"].as_str().unwrap().to_string();
    assert!(name.contains(" -> "), "RabbitMQ's 'peer -> local' name: {name}");
    let path = format!("/api/connections/{}", name.replace(' ', "%20").replace('>', "%3E"));
    assert_eq!(b.admin("GET", &path, None)["name"], name);
    let token = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode("guest:guest")
    };
    let res = ureq::delete(&format!("http://{}{path}", b.http_addr.as_ref().unwrap()))
        .set("authorization", &format!("Basic {token}"))
        .set("x-reason", "maintenance window")
        .call()
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(next_close(&mut ev).await, (320, "CONNECTION_FORCED - maintenance window".to_string()));
}

#[tokio::test]
async fn health_checks_and_aliveness() {
    let b = Broker::start();
    for path in [
        "/api/health/checks/alarms",
        "/api/health/checks/local-alarms",
        "/api/health/checks/virtual-hosts",
        "/api/health/checks/ready-to-serve-clients",
        "/api/health/checks/is-in-service",
        "/api/health/checks/protocol-listener/amqp",
        "/api/aliveness-test/%2F",
    ] {
        assert_eq!(b.api("GET", path, ("guest", "guest"), None), (200, json!({"status": "ok"})), "{path}");
    }
    let port = b.addr.rsplit(':').next().unwrap();
    assert_eq!(b.api("GET", &format!("/api/health/checks/port-listener/{port}"), ("guest", "guest"), None).0, 200);
    let (s, v) = b.api("GET", "/api/health/checks/port-listener/1", ("guest", "guest"), None);
    assert_eq!((s, v["status"].clone()), (503, json!("failed")));
    assert_eq!(
        b.api("GET", "/api/health/checks/protocol-listener/amqps", ("guest", "guest"), None).0,
        503,
        "no TLS listener"
    );
    assert_eq!(b.api("GET", "/api/aliveness-test/nope", ("guest", "guest"), None).0, 404);
}

#[tokio::test]
async fn the_api_can_be_turned_off() {
    let b = Broker::start_with_args(&["--http-listen", ""]);
    assert!(b.http_addr.is_none());
    b.connect().await;
}

/// Scrape `path` of the broker's Prometheus endpoint.
fn scrape(b: &Broker, path: &str) -> String {
    let addr = b.metrics_addr.as_ref().expect("the Prometheus listener is on");
    ureq::get(&format!("http://{addr}{path}")).call().unwrap().into_string().unwrap()
}

/// The value of the series `series` (name with labels, as written) in a scrape.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok())
    })
}

#[tokio::test]
async fn message_counters_reach_the_overview_and_prometheus() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    let q = exclusive_queue(&ch).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    for i in 0..6 {
        publish_confirmed_props(&ch, "", &q, &format!("m{i}"), BasicProperties::default()).await;
    }
    // Unroutable: one dropped, one returned (mandatory).
    publish_confirmed_props(&ch, "amq.direct", "nowhere", "x", BasicProperties::default()).await;
    let returned = ch
        .basic_publish(
            "amq.direct".into(),
            "nowhere".into(),
            BasicPublishOptions { mandatory: true, ..Default::default() },
            b"y",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    returned.await.unwrap();
    // Two gets with ack, one without; three deliveries to a consumer, acked.
    for no_ack in [false, false, true] {
        let got = ch.basic_get(q.as_str().into(), BasicGetOptions { no_ack }).await.unwrap().expect("a message");
        if !no_ack {
            got.delivery.ack(BasicAckOptions::default()).await.unwrap();
        }
    }
    let mut consumer = consume(&ch, &q).await;
    for d in deliveries(&mut consumer, 3).await {
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    sync_point(&ch).await;
    let want = [
        ("publish", 8),
        ("confirm", 8),
        ("get", 2),
        ("get_no_ack", 1),
        ("deliver", 3),
        ("ack", 5),
        ("deliver_get", 6),
        ("drop_unroutable", 1),
        ("return_unroutable", 1),
    ];
    let overview = b.admin("GET", "/api/overview", None);
    for (k, v) in want {
        assert_eq!(overview["message_stats"][k], v, "{k}: {}", overview["message_stats"]);
        assert!(overview["message_stats"][format!("{k}_details")]["rate"].is_number());
    }
    // The same counts per channel and per vhost; per queue those that concern it.
    let chan = first(&b.admin("GET", "/api/channels", None));
    let queue = b.admin("GET", &format!("/api/queues/%2F/{q}"), None);
    for (k, v) in want {
        assert_eq!(chan["message_stats"][k], v, "channel {k}: {}", chan["message_stats"]);
    }
    let per_queue = [("publish", 6), ("get", 2), ("get_no_ack", 1), ("deliver", 3), ("ack", 5), ("deliver_get", 6)];
    for (k, v) in per_queue {
        assert_eq!(queue["message_stats"][k], v, "queue {k}: {}", queue["message_stats"]);
        assert!(queue["message_stats"][format!("{k}_details")]["rate"].is_number());
    }
    assert!(queue["message_stats"].get("confirm").is_none(), "not a queue counter in RabbitMQ");
    // The vhost: its connections' counts, its queues' depth, its connections' traffic.
    let vhost = b.admin("GET", "/api/vhosts/%2F", None);
    for (k, v) in want {
        assert_eq!(vhost["message_stats"][k], v, "vhost {k}: {}", vhost["message_stats"]);
    }
    assert_eq!(vhost["messages"], 0);
    assert!(vhost["recv_oct"].as_u64().is_some_and(|n| n > 0) && vhost["send_oct_details"]["rate"].is_number());
    b.admin("PUT", "/api/vhosts/quiet", Some(json!({})));
    let quiet = b.admin("GET", "/api/vhosts", None);
    let quiet = quiet.as_array().unwrap().iter().find(|v| v["name"] == "quiet").unwrap().clone();
    assert_eq!(quiet["message_stats"]["publish"], 0, "counts are per vhost");
    // Exchanges: messages in, and copies routed out.
    let direct = b.admin("GET", "/api/exchanges/%2F/amq.direct", None);
    assert_eq!(
        (direct["message_stats"]["publish_in"].clone(), direct["message_stats"]["publish_out"].clone()),
        (json!(2), json!(0))
    );
    let default = b.admin("GET", "/api/exchanges/%2F", None);
    let default = default.as_array().unwrap().iter().find(|x| x["name"] == "").unwrap().clone();
    assert_eq!(default["message_stats"]["publish_in"], 6);
    assert_eq!(default["message_stats"]["publish_out"], 6);
    let fanout = b.admin("GET", "/api/exchanges/%2F/amq.fanout", None);
    assert_eq!(fanout["message_stats"], json!({}), "nothing published there");
    // The connection's socket traffic.
    let conn = first(&b.admin("GET", "/api/connections", None));
    for k in ["recv_oct", "send_oct", "recv_cnt", "send_cnt"] {
        assert!(conn[k].as_u64().is_some_and(|n| n > 0), "{k}: {conn}");
    }
    assert!(conn["recv_oct"].as_u64() > Some(6 * 2), "at least the six bodies and their frames");
    let m = scrape(&b, "/metrics");
    let global = |name: &str| sample(&m, &format!("{name}{{protocol=\"amqp091\"}}"));
    assert_eq!(global("rabbitmq_global_messages_received_total"), Some(8.0));
    assert_eq!(global("rabbitmq_global_messages_routed_total"), Some(6.0));
    assert_eq!(global("rabbitmq_global_messages_delivered_total"), Some(6.0));
    assert_eq!(global("rabbitmq_global_messages_acknowledged_total"), Some(5.0));
    assert_eq!(global("rabbitmq_global_messages_confirmed_total"), Some(8.0));
    assert_eq!(global("rabbitmq_global_messages_unroutable_returned_total"), Some(1.0));
    assert_eq!(sample(&m, "rabbitmq_connections"), Some(1.0));
    assert_eq!(sample(&m, "rabbitmq_queues"), Some(1.0));
    assert!(m.contains("# TYPE rabbitmq_queue_messages_ready gauge"), "{m}");
    assert!(sample(&m, "rabbitmq_process_resident_memory_bytes").is_some_and(|v| v > 1e6));
}

#[tokio::test]
async fn prometheus_reports_queue_depth_per_queue() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    declare_queue(&ch, "depth", QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
    for _ in 0..4 {
        publish_to(&ch, "depth", "12345").await;
    }
    sync_point(&ch).await;
    let per = scrape(&b, "/metrics/per-object");
    assert_eq!(sample(&per, "rabbitmq_queue_messages_ready{vhost=\"/\",queue=\"depth\"}"), Some(4.0), "{per}");
    assert_eq!(sample(&per, "rabbitmq_queue_messages_ready_bytes{vhost=\"/\",queue=\"depth\"}"), Some(20.0));
    let node = scrape(&b, "/metrics");
    assert_eq!(sample(&node, "rabbitmq_queue_messages_ready"), Some(4.0), "node-wide: no per-queue labels");
}

/// rabbitmqadmin's `publish` and `get`: RabbitMQ's bodies (measured on 3.10.8: `{"routed":…}`,
/// the get list, 404 `not_found` with the AMQP text for a missing queue) and ack modes.
#[tokio::test]
async fn publish_and_get_through_the_api() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    declare_queue(&ch, "api-q", QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
    let publish = |key: &str, payload: &str, enc: &str| {
        b.api(
            "POST",
            "/api/exchanges/%2F/amq.default/publish",
            ("guest", "guest"),
            Some(json!({"properties": {"delivery_mode": 2, "headers": {"h": 1}, "correlation_id": "c1"},
                        "routing_key": key, "payload": payload, "payload_encoding": enc})),
        )
    };
    assert_eq!(publish("api-q", "hello", "string"), (200, json!({"routed": true})));
    assert_eq!(publish("api-q", "//4=", "base64"), (200, json!({"routed": true})));
    assert_eq!(publish("nowhere", "x", "string"), (200, json!({"routed": false})));
    // An AMQP consumer sees the properties the API set.
    let got = ch.basic_get("api-q".into(), BasicGetOptions { no_ack: false }).await.unwrap().unwrap();
    assert_eq!(got.delivery.data, b"hello");
    assert_eq!(got.delivery.properties.correlation_id().as_ref().map(|s| s.as_str()), Some("c1"));
    assert_eq!(got.delivery.properties.delivery_mode(), &Some(2));
    got.delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await.unwrap();
    sync_point(&ch).await;

    let get = |mode: &str| {
        b.api(
            "POST",
            "/api/queues/%2F/api-q/get",
            ("guest", "guest"),
            Some(json!({"count": 5, "ackmode": mode, "encoding": "auto", "truncate": 50000})),
        )
    };
    // Requeue mode leaves both in the queue.
    let (s, list) = get("ack_requeue_true");
    assert_eq!(s, 200);
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[0]["payload"], "hello");
    assert_eq!(list[0]["payload_encoding"], "string");
    assert_eq!(list[0]["redelivered"], true);
    assert_eq!(list[0]["properties"]["headers"], json!({"h": 1}));
    assert_eq!(list[1]["payload"], "//4=", "bytes that are not UTF-8 come back as base64");
    assert_eq!(list[1]["payload_encoding"], "base64");
    assert_eq!(ready_count(&ch, "api-q").await, 2);
    // Ack mode takes them.
    assert_eq!(get("ack_requeue_false").1.as_array().unwrap().len(), 2);
    assert_eq!(ready_count(&ch, "api-q").await, 0);
    let (s, v) = b.api(
        "POST",
        "/api/queues/%2F/nope/get",
        ("guest", "guest"),
        Some(json!({"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"})),
    );
    assert_eq!((s, v), (404, json!({"error": "not_found", "reason": "NOT_FOUND - no queue 'nope' in vhost '/'"})));
}

#[tokio::test]
async fn nodes_extensions_and_permission_lists() {
    let b = Broker::start();
    let nodes = b.admin("GET", "/api/nodes", None);
    let node = &nodes[0];
    assert_eq!((node["name"].clone(), node["running"].clone()), (json!("warren@localhost"), json!(true)));
    assert!(node["mem_used"].as_u64().is_some_and(|m| m > 1_000_000), "{node}");
    for k in ["mem_limit", "disk_free", "fd_total", "fd_used"] {
        assert!(node[k].as_u64().is_some_and(|v| v > 0), "{k}: {node}");
    }
    assert!(node["mem_limit"].as_u64() > node["mem_used"].as_u64(), "no alarm: below the watermark");
    assert_eq!((node["mem_alarm"].clone(), node["disk_free_alarm"].clone()), (json!(false), json!(false)));
    let m = scrape(&b, "/metrics");
    for name in
        ["rabbitmq_process_max_fds", "rabbitmq_resident_memory_limit_bytes", "rabbitmq_disk_space_available_bytes"]
    {
        assert!(sample(&m, name).is_some_and(|v| v > 0.0), "{name}");
    }
    assert_eq!(b.admin("GET", "/api/nodes/warren@localhost", None)["name"], "warren@localhost");
    assert_eq!(b.api("GET", "/api/nodes/rabbit@elsewhere", ("guest", "guest"), None).0, 404);
    assert_eq!(b.admin("GET", "/api/extensions", None), json!([]));
    let by_vhost = b.admin("GET", "/api/vhosts/%2F/permissions", None);
    assert_eq!(by_vhost, json!([{"user": "guest", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}]));
    assert_eq!(b.admin("GET", "/api/users/guest/permissions", None), by_vhost);
    assert_eq!(b.api("GET", "/api/vhosts/nope/permissions", ("guest", "guest"), None).0, 404);
}

/// The values of a `*_details.samples` list, newest first.
fn samples(details: &Value) -> Vec<u64> {
    details["samples"].as_array().map_or(vec![], |a| a.iter().filter_map(|s| s["sample"].as_u64()).collect())
}

#[tokio::test]
async fn queue_depth_and_rates_are_sampled_every_five_seconds() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    let q = exclusive_queue(&ch).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let stamped = BasicProperties::default().with_timestamp(1_700_000_000).with_delivery_mode(2);
    for i in 0..4 {
        publish_confirmed_props(&ch, "", &q, &format!("m{i}"), stamped.clone()).await;
    }
    let path = format!("/api/queues/%2F/{q}?lengths_age=60&lengths_incr=5&msg_rates_age=60&msg_rates_incr=5");
    // The sampler runs on wall-clock multiples of 5 s: the depth shows in a sample within 5 s.
    eventually("a sample with the queue's depth", || async {
        samples(&b.admin("GET", &path, None)["messages_details"]).first() == Some(&4)
    })
    .await;
    let queue = b.admin("GET", &path, None);
    let d = &queue["messages_details"];
    assert_eq!(samples(d).len(), 13, "60 s at 5 s, both ends: {d}");
    let stamps: Vec<u64> = d["samples"].as_array().unwrap().iter().map(|s| s["timestamp"].as_u64().unwrap()).collect();
    assert!(stamps.windows(2).all(|w| w[0] == w[1] + 5000), "newest first, 5 s apart: {stamps:?}");
    assert!(stamps[0].is_multiple_of(5000), "aligned to the interval");
    assert!(d["avg"].is_number() && d["avg_rate"].is_number(), "{d}");
    assert_eq!(samples(&queue["message_stats"]["publish_details"]).first(), Some(&4));
    assert_eq!(queue["head_message_timestamp"], 1_700_000_000);
    assert_eq!(queue["messages_persistent"], 0, "an exclusive queue is not durable: nothing persists");
    assert_eq!(queue["messages_ram"], 4);
    // Without the parameters: rates only.
    let plain = b.admin("GET", &format!("/api/queues/%2F/{q}"), None);
    assert!(plain["messages_details"]["rate"].is_number() && plain["messages_details"].get("samples").is_none());
    // The overview's totals get the same series.
    let o = b.admin("GET", "/api/overview?lengths_age=60&lengths_incr=5&msg_rates_age=60&msg_rates_incr=5", None);
    assert_eq!(samples(&o["queue_totals"]["messages_details"]).first(), Some(&4));
    assert_eq!(samples(&o["message_stats"]["publish_details"]).first(), Some(&4));
    // An idle queue says since when.
    eventually("idle_since", || async {
        b.admin("GET", &format!("/api/queues/%2F/{q}"), None)["idle_since"].is_string()
    })
    .await;
}

#[tokio::test]
async fn durable_queues_count_persistent_messages() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    declare_queue(&ch, "dq", QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default())
        .await
        .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    for (i, mode) in [2, 2, 1].into_iter().enumerate() {
        publish_confirmed_props(
            &ch,
            "",
            "dq",
            &format!("body{i}"),
            BasicProperties::default().with_delivery_mode(mode),
        )
        .await;
    }
    let q = b.admin("GET", "/api/queues/%2F/dq", None);
    assert_eq!((q["messages_persistent"].clone(), q["message_bytes_persistent"].clone()), (json!(2), json!(10)));
    let got = ch.basic_get("dq".into(), BasicGetOptions { no_ack: true }).await.unwrap().expect("a message");
    assert_eq!(got.delivery.data, b"body0");
    assert_eq!(b.admin("GET", "/api/queues/%2F/dq", None)["messages_persistent"], 1);
    assert_eq!(q["head_message_timestamp"], Value::Null, "no timestamp property");
}

#[tokio::test]
async fn churn_is_counted_in_the_overview_and_prometheus() {
    let b = Broker::start();
    {
        let (c, ch) = b.channel().await;
        let _second = c.create_channel().await.unwrap();
        let exclusive = QueueDeclareOptions { exclusive: true, ..Default::default() };
        for _ in 0..2 {
            // Declared twice, created once.
            declare_queue(&ch, "churned", exclusive, FieldTable::default()).await.unwrap();
        }
        ch.close(200, "bye".into()).await.unwrap();
        c.close(200, "bye".into()).await.unwrap(); // the other channel and the exclusive queue go with it
    }
    let want = [
        ("connection_created", 1),
        ("connection_closed", 1),
        ("channel_created", 2),
        ("channel_closed", 2),
        ("queue_declared", 2),
        ("queue_created", 1),
        ("queue_deleted", 1),
    ];
    eventually("the connection's close to be counted", || async {
        b.admin("GET", "/api/overview", None)["churn_rates"]["connection_closed"] == 1
    })
    .await;
    let churn = b.admin("GET", "/api/overview", None)["churn_rates"].clone();
    for (k, v) in want {
        assert_eq!(churn[k], v, "{k}: {churn}");
    }
    let m = scrape(&b, "/metrics");
    for (name, v) in [
        ("rabbitmq_connections_opened_total", 1.0),
        ("rabbitmq_connections_closed_total", 1.0),
        ("rabbitmq_channels_opened_total", 2.0),
        ("rabbitmq_queues_declared_total", 2.0),
        ("rabbitmq_queues_created_total", 1.0),
        ("rabbitmq_queues_deleted_total", 1.0),
    ] {
        assert_eq!(sample(&m, name), Some(v), "{name}");
    }
}

#[tokio::test]
async fn prometheus_detailed_serves_the_families_asked_for() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    for q in ["dq1", "dq2"] {
        declare_queue(&ch, q, QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
    }
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    for _ in 0..3 {
        publish_confirmed_props(&ch, "", "dq1", "hello", BasicProperties::default()).await;
    }
    let got = ch.basic_get("dq1".into(), BasicGetOptions { no_ack: true }).await.unwrap();
    assert!(got.is_some());
    b.admin("PUT", "/api/vhosts/other", Some(json!({})));
    let m = scrape(&b, "/metrics/detailed?family=queue_coarse_metrics&family=queue_delivery_metrics&vhost=%2F");
    assert_eq!(sample(&m, "rabbitmq_detailed_queue_messages_ready{vhost=\"/\",queue=\"dq1\"}"), Some(2.0), "{m}");
    assert_eq!(sample(&m, "rabbitmq_detailed_queue_messages{vhost=\"/\",queue=\"dq2\"}"), Some(0.0));
    assert_eq!(sample(&m, "rabbitmq_detailed_queue_get_total{vhost=\"/\",queue=\"dq1\"}"), Some(1.0));
    assert!(m.contains("# TYPE rabbitmq_detailed_queue_messages_ready gauge"));
    assert!(!m.contains("rabbitmq_detailed_queue_consumers"), "a family not asked for");
    assert!(!m.contains("rabbitmq_connections "), "no node-wide metrics here");
    let m = scrape(&b, "/metrics/detailed?family=queue_coarse_metrics&vhost=other");
    assert!(!m.contains("dq1"), "another vhost's queues are filtered out: {m}");
    let m = scrape(
        &b,
        "/metrics/detailed?family=connection_coarse_metrics&family=channel_exchange_metrics&family=exchange_metrics&family=vhost_status&family=connection_churn_metrics",
    );
    assert!(sample_where(&m, "rabbitmq_detailed_connection_incoming_bytes_total").is_some_and(|v| v > 0.0), "{m}");
    assert_eq!(sample_where(&m, "rabbitmq_detailed_channel_messages_published_total"), Some(3.0));
    assert!(m.contains("# TYPE rabbitmq_detailed_exchange_messages_published counter"), "{m}");
    assert_eq!(sample(&m, "rabbitmq_detailed_vhost_status{vhost=\"other\"}"), Some(1.0));
    assert_eq!(sample(&m, "rabbitmq_detailed_connections_opened_total"), Some(1.0));
    assert_eq!(scrape(&b, "/metrics/detailed?family=no_such_family").trim(), "# EOF");
}

/// The value of the first sample of `metric` whatever its labels.
fn sample_where(text: &str, metric: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(metric) && l[metric.len()..].starts_with(['{', ' ']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn queue_actions_are_accepted_for_existing_queues() {
    let b = Broker::start();
    b.admin("PUT", "/api/queues/%2F/acted", Some(json!({})));
    for action in ["sync", "cancel_sync"] {
        let (status, _) =
            b.api("POST", "/api/queues/%2F/acted/actions", ("guest", "guest"), Some(json!({"action": action})));
        assert_eq!(status, 204, "{action}");
    }
    let (status, body) =
        b.api("POST", "/api/queues/%2F/acted/actions", ("guest", "guest"), Some(json!({"action": "bogus"})));
    assert_eq!((status, body["error"].clone()), (400, json!("bad_request")));
    let (status, _) =
        b.api("POST", "/api/queues/%2F/absent/actions", ("guest", "guest"), Some(json!({"action": "sync"})));
    assert_eq!(status, 404);
}

#[tokio::test]
async fn bindings_of_one_exchange_or_queue() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    declare_queue(&ch, "bq", QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
    ch.exchange_declare("bx".into(), lapin::ExchangeKind::Topic, Default::default(), FieldTable::default())
        .await
        .unwrap();
    ch.exchange_declare("by".into(), lapin::ExchangeKind::Fanout, Default::default(), FieldTable::default())
        .await
        .unwrap();
    bind(&ch, "bq", "bx", "k.#").await;
    ch.exchange_bind("by".into(), "bx".into(), "e.*".into(), Default::default(), FieldTable::default()).await.unwrap();
    let keys = |v: Value| -> Vec<(String, String)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| (x["destination"].as_str().unwrap().to_string(), x["routing_key"].as_str().unwrap().to_string()))
            .collect()
    };
    let pair = |d: &str, k: &str| (d.to_string(), k.to_string());
    assert_eq!(
        keys(b.admin("GET", "/api/exchanges/%2F/bx/bindings/source", None)),
        vec![pair("bq", "k.#"), pair("by", "e.*")],
        "by destination, as RabbitMQ 3.10 lists them"
    );
    assert_eq!(keys(b.admin("GET", "/api/exchanges/%2F/by/bindings/destination", None)), vec![pair("by", "e.*")]);
    assert_eq!(keys(b.admin("GET", "/api/exchanges/%2F/by/bindings/source", None)), vec![]);
    assert_eq!(
        keys(b.admin("GET", "/api/queues/%2F/bq/bindings", None)),
        vec![pair("bq", "bq"), pair("bq", "k.#")],
        "the default exchange's binding first, as RabbitMQ lists it"
    );
    for path in
        ["/api/exchanges/%2F/nope/bindings/source", "/api/queues/%2F/nope/bindings", "/api/queues/nov/bq/bindings"]
    {
        assert_eq!(b.api("GET", path, ("guest", "guest"), None).0, 404, "{path}");
    }
}

#[tokio::test]
async fn unknown_paths_and_methods_are_answered_as_rabbitmq_does() {
    let b = Broker::start();
    let (status, body) = b.api("GET", "/api/no-such-thing", ("guest", "guest"), None);
    assert_eq!((status, body), (404, json!({"error": "Object Not Found", "reason": "Not Found"})));
    let (status, _) = b.api("DELETE", "/api/overview", ("guest", "guest"), None);
    assert_eq!(status, 405);
    let (status, body) = b.api("GET", "/api/overview", ("guest", "wrong"), None);
    assert_eq!((status, body), (401, json!({"error": "not_authorized", "reason": "Login failed"})));
}

/// A deleted exchange's counts go with it: the same name declared again starts from nothing
/// (and exchanges declared and deleted in a loop leave no counts behind).
#[tokio::test]
async fn a_deleted_exchanges_counts_go_with_it() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    let declare =
        || ch.exchange_declare("gone-x".into(), lapin::ExchangeKind::Fanout, Default::default(), FieldTable::default());
    declare().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    publish_confirmed_props(&ch, "gone-x", "", "counted", BasicProperties::default()).await;
    assert_eq!(b.admin("GET", "/api/exchanges/%2F/gone-x", None)["message_stats"]["publish_in"], 1);
    ch.exchange_delete("gone-x".into(), Default::default()).await.unwrap();
    declare().await.unwrap();
    assert_eq!(b.admin("GET", "/api/exchanges/%2F/gone-x", None)["message_stats"], json!({}));
}
