//! `warrenctl`, the real binary, against the real broker's management API: every command's
//! effect checked through the API or lapin, and the exit codes of the failures scripts meet
//! (64 usage, 65 data, 69 unavailable, 75 timeout, 77 login).

use std::io::Write;
use std::process::{Command, Stdio};

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{Value, json};

use crate::common::*;

/// What one run of warrenctl gave.
#[derive(Debug)]
struct Run {
    code: i32,
    out: String,
    err: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.out).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.out))
    }

    /// A failure with this exit code whose message mentions `text`.
    fn fails(&self, code: i32, text: &str) {
        assert_eq!(self.code, code, "expected exit {code}: {self:?}");
        assert!(self.err.contains(text), "expected {text:?} on stderr: {self:?}");
        let last = self.err.lines().last().unwrap_or_default();
        assert!(last.starts_with("Error: ") || code == 64, "the error comes last: {self:?}");
    }
}

/// Run warrenctl with `args` (and `stdin`), the WARREN_* variables of this process removed and
/// `env` set.
fn run_env(args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_warrenctl"));
    cmd.args(args);
    for k in ["WARREN_URL", "WARREN_USER", "WARREN_PASSWORD", "WARREN_VHOST"] {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().copied());
    let mut child =
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn warrenctl");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let o = child.wait_with_output().expect("wait for warrenctl");
    Run {
        code: o.status.code().expect("warrenctl exited by a signal"),
        out: String::from_utf8_lossy(&o.stdout).into_owned(),
        err: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn url(b: &Broker) -> String {
    format!("http://{}", b.http_addr.as_ref().expect("the harness turns the API on"))
}

/// warrenctl against `b` as guest.
fn ctl(b: &Broker, args: &[&str]) -> Run {
    ctl_in(b, args, b"")
}

fn ctl_in(b: &Broker, args: &[&str], stdin: &[u8]) -> Run {
    let u = url(b);
    let mut all = vec!["--url", &u];
    all.extend_from_slice(args);
    run_env(&all, stdin, &[])
}

/// warrenctl against `b`, which must succeed; its standard output.
fn ok(b: &Broker, args: &[&str]) -> String {
    let r = ctl(b, args);
    assert_eq!(r.code, 0, "warrenctl {args:?} failed: {r:?}");
    r.out
}

/// A loopback URL where nothing listens, reserved while the socket lives (bound, never
/// listening: connections to it are refused, and no other process can take the port).
fn dead_url() -> (socket2::Socket, String) {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    let port = s.local_addr().unwrap().as_socket().unwrap().port();
    (s, format!("http://127.0.0.1:{port}"))
}

#[tokio::test]
async fn list_shows_objects_in_aligned_columns_and_json() {
    let b = Broker::start();
    ok(&b, &["add_vhost", "t"]);
    let (conn, ch) = {
        let c = lapin::Connection::connect(
            &format!("amqp://guest:guest@{}/t", b.addr),
            lapin::ConnectionProperties::default(),
        )
        .await
        .unwrap();
        let ch = c.create_channel().await.unwrap();
        (c, ch)
    };
    declare_queue(&ch, "a", QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
    declare_queue(&ch, "bbbbbb", QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
    publish_to(&ch, "a", "1").await;
    publish_to(&ch, "a", "2").await;
    sync_point(&ch).await;
    ch.exchange_declare("tx".into(), lapin::ExchangeKind::Topic, Default::default(), FieldTable::default())
        .await
        .unwrap();
    bind(&ch, "bbbbbb", "tx", "k.#").await;
    ch.basic_qos(7, BasicQosOptions::default()).await.unwrap();
    let _consumer = ch
        .basic_consume("bbbbbb".into(), "ctag-1".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .unwrap();

    // rabbitmqctl's default columns, aligned; the info line on standard error only.
    let r = ctl(&b, &["-p", "t", "list", "queues"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.out, "name    messages\na       2\nbbbbbb  0\n");
    assert!(r.err.contains("Listing queues for vhost 't'"), "{r:?}");
    assert_eq!(ctl(&b, &["-q", "-p", "t", "list", "queues"]).err, "");
    assert_eq!(ok(&b, &["-p", "t", "list", "queues", "--no-table-headers", "--columns", "name"]), "a\nbbbbbb\n");
    let cols = ok(&b, &["-p", "t", "list", "queues", "--columns", "name,consumers,durable"]);
    assert_eq!(cols, "name    consumers  durable\na       0          false\nbbbbbb  1          false\n");

    // JSON: the API's objects, or only the columns asked for.
    let full = ctl(&b, &["-p", "t", "--format", "json", "list", "queues"]).json();
    assert_eq!(full.as_array().unwrap().len(), 2);
    assert_eq!(full[0]["messages_ready"], 2);
    let narrow = ok(&b, &["-p", "t", "--format", "json", "list", "queues", "--columns", "name,messages"]);
    assert_eq!(
        serde_json::from_str::<Value>(&narrow).unwrap(),
        json!([{"name": "a", "messages": 2}, {"name": "bbbbbb", "messages": 0}])
    );

    let x = ok(&b, &["-p", "t", "list", "exchanges"]);
    assert!(x.starts_with("name "), "{x}");
    assert!(x.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["tx", "topic"]), "{x}");
    let bindings = ok(&b, &["-p", "t", "list", "bindings"]);
    assert!(
        bindings.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["tx", "bbbbbb", "queue", "k.#", "{}"]),
        "{bindings}"
    );
    let consumers = ctl(&b, &["-p", "t", "--format", "json", "list", "consumers"]).json();
    assert_eq!(consumers[0]["consumer_tag"], "ctag-1");
    let consumers = ok(&b, &["-p", "t", "list", "consumers", "--columns", "queue.name,consumer_tag,prefetch_count"]);
    assert_eq!(consumers, "queue.name  consumer_tag  prefetch_count\nbbbbbb      ctag-1        7\n");
    let conns = ctl(&b, &["--format", "json", "list", "connections"]).json();
    assert_eq!(conns.as_array().unwrap().len(), 1);
    assert_eq!((conns[0]["user"].as_str(), conns[0]["vhost"].as_str()), (Some("guest"), Some("t")));
    let channels = ok(&b, &["list", "channels", "--columns", "user,consumer_count"]);
    assert_eq!(channels, "user   consumer_count\nguest  1\n");
    assert_eq!(ok(&b, &["list", "users"]), "name   tags\nguest  administrator\n");
    assert_eq!(ok(&b, &["list", "vhosts"]), "name\n/\nt\n");
    assert_eq!(
        ok(&b, &["-p", "t", "list", "permissions"]),
        "user   configure  write  read\nguest  .*         .*     .*\n"
    );
    ok(&b, &["-p", "t", "set_policy", "lim", "^a$", r#"{"max-length": 5}"#]);
    let policies = ok(&b, &["list", "policies", "--all-vhosts"]);
    assert_eq!(
        policies,
        "vhost  name  pattern  apply-to  definition        priority\nt      lim   ^a$      all       {\"max-length\":5}  0\n"
    );

    // Errors: an unknown vhost is a data error with the API's reason; an unknown kind is usage.
    ctl(&b, &["-p", "nope", "list", "queues"]).fails(65, "Not Found");
    ctl(&b, &["list", "widgets"]).fails(64, "invalid value 'widgets'");
    drop(conn);
}

#[tokio::test]
async fn declare_and_delete_queues_exchanges_and_bindings() {
    let b = Broker::start();
    ok(&b, &["declare", "queue", "dq", "--arg", "x-max-length=10", "--arguments", r#"{"x-queue-mode": "lazy"}"#]);
    let q = b.admin("GET", "/api/queues/%2F/dq", None);
    assert_eq!(q["durable"], true);
    assert_eq!(q["arguments"], json!({"x-max-length": 10, "x-queue-mode": "lazy"}));
    ok(&b, &["declare", "queue", "tq", "--durable", "false", "--auto-delete"]);
    let q = b.admin("GET", "/api/queues/%2F/tq", None);
    assert_eq!((q["durable"].as_bool(), q["auto_delete"].as_bool()), (Some(false), Some(true)));
    ok(&b, &["declare", "queue", "qq", "--type", "quorum"]);
    assert_eq!(b.admin("GET", "/api/queues/%2F/qq", None)["type"], "quorum");
    // Redeclaring with other arguments is refused with RabbitMQ's text.
    ctl(&b, &["declare", "queue", "dq", "--arg", "x-max-length=11"]).fails(65, "PRECONDITION_FAILED");
    ctl(&b, &["declare", "queue", "dq", "--arguments", "[1]"]).fails(65, "--arguments must be a JSON object");
    ctl(&b, &["declare", "queue", "dq", "--arg", "novalue"]).fails(65, "'novalue' is not KEY=VALUE");

    ok(&b, &["declare", "exchange", "dx", "--type", "topic", "--internal"]);
    let x = b.admin("GET", "/api/exchanges/%2F/dx", None);
    assert_eq!(
        (x["type"].as_str(), x["internal"].as_bool(), x["durable"].as_bool()),
        (Some("topic"), Some(true), Some(true))
    );
    ok(&b, &["declare", "exchange", "src", "--type", "direct"]);
    ctl(&b, &["declare", "exchange", "bad", "--type", "nonsense"]).fails(65, "");

    // Bindings to a queue and to an exchange, with and without arguments; messages follow them.
    ok(&b, &["declare", "binding", "--source", "src", "--destination", "dq", "--routing-key", "k"]);
    ok(&b, &["declare", "binding", "--source", "src", "--destination", "dq", "--routing-key", "k", "--arg", "x=1"]);
    ok(&b, &["declare", "binding", "--source", "src", "--destination", "dx", "--destination-type", "exchange"]);
    let listed = b.admin("GET", "/api/bindings/%2F/e/src/q/dq", None);
    let mut keys: Vec<&str> =
        listed.as_array().unwrap().iter().map(|x| x["properties_key"].as_str().unwrap()).collect();
    keys.sort();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], "k");
    assert!(keys[1].starts_with("k~"), "{keys:?}");
    assert_eq!(b.admin("GET", "/api/bindings/%2F/e/src/e/dx", None)[0]["properties_key"], "~");
    let (_c, ch) = b.channel().await;
    publish_props(&ch, "src", "k", "via binding", Default::default()).await;
    sync_point(&ch).await;
    assert_eq!(get_all(&ch, "dq").await, ["via binding"]);
    ctl(&b, &["declare", "binding", "--source", "src", "--destination", "missing"]).fails(65, "no queue 'missing'");
    ctl(&b, &["declare", "binding", "--source", "nosuch", "--destination", "dq"]).fails(65, "no exchange 'nosuch'");
    // RabbitMQ's properties keys: the routing key quoted (3.10.8 lists `a.#` as `a.%23`).
    ok(&b, &["declare", "binding", "--source", "src", "--destination", "qq", "--routing-key", "a.#"]);
    assert_eq!(b.admin("GET", "/api/bindings/%2F/e/src/q/qq", None)[0]["properties_key"], "a.%23");
    assert_eq!(b.admin("GET", "/api/bindings/%2F/e/src/q/qq/a.%2523", None)["routing_key"], "a.#");
    assert_eq!(b.admin("GET", "/api/bindings/%2F/e/nosuch/q/qq", None), json!([]));
    let guest = ("guest", "guest");
    assert_eq!(b.api("POST", "/api/bindings/%2F/e/src/q/qq", guest, Some(json!({"routing_key": "z"}))).0, 201);
    assert_eq!(b.api("DELETE", "/api/bindings/%2F/e/src/q/qq/z", guest, None).0, 204);
    assert_eq!(b.api("DELETE", "/api/bindings/%2F/e/src/q/qq/z", guest, None).0, 404);
    // Binding needs write permission on the destination, as queue.bind does.
    ok(&b, &["add_user", "reader", "pw", "--tags", "management"]);
    ok(&b, &["set_permissions", "reader", "", "", ".*"]);
    let reader = ["--user", "reader", "--password", "pw"];
    let args = [&reader[..], &["declare", "binding", "--source", "src", "--destination", "qq"]].concat();
    ctl(&b, &args).fails(77, "ACCESS_REFUSED - access to queue 'qq' in vhost '/' refused for user 'reader'");

    ok(&b, &["delete", "binding", "--source", "src", "--destination", "dq", "--routing-key", "k", "--arg", "x=1"]);
    assert_eq!(
        b.admin("GET", "/api/bindings/%2F/e/src/q/dq", None),
        json!([{"source": "src", "vhost": "/",
        "destination": "dq", "destination_type": "queue", "routing_key": "k", "arguments": {}, "properties_key": "k"}])
    );
    ok(&b, &["delete", "binding", "--source", "src", "--destination", "dq", "--routing-key", "k"]);
    ok(&b, &["delete", "binding", "--source", "src", "--destination", "dx", "--destination-type", "exchange"]);
    assert_eq!(b.admin("GET", "/api/bindings/%2F/e/src/q/dq", None), json!([]));
    ctl(&b, &["delete", "binding", "--source", "src", "--destination", "dq", "--routing-key", "k"])
        .fails(65, "no binding");

    // Queue deletion with its conditions.
    publish_to(&ch, "dq", "m").await;
    sync_point(&ch).await;
    ctl(&b, &["delete", "queue", "dq", "--if-empty"]).fails(65, "PRECONDITION_FAILED");
    assert_eq!(b.api("GET", "/api/queues/%2F/dq", ("guest", "guest"), None).0, 200);
    let _consumer = consume(&ch, "tq").await;
    ctl(&b, &["delete", "queue", "tq", "--if-unused"]).fails(65, "PRECONDITION_FAILED");
    ok(&b, &["delete", "queue", "dq"]);
    assert_eq!(b.api("GET", "/api/queues/%2F/dq", ("guest", "guest"), None).0, 404);
    ctl(&b, &["delete", "queue", "dq"]).fails(65, "queue 'dq' in vhost '/': Not Found");

    ok(&b, &["declare", "binding", "--source", "dx", "--destination", "qq"]);
    ctl(&b, &["delete", "exchange", "dx", "--if-unused"]).fails(65, "PRECONDITION_FAILED");
    ok(&b, &["delete", "exchange", "dx"]);
    assert_eq!(b.api("GET", "/api/exchanges/%2F/dx", ("guest", "guest"), None).0, 404);
    ctl(&b, &["delete", "exchange", "dx"]).fails(65, "Not Found");
    ctl(&b, &["delete", "queue"]).fails(64, "required");
}

#[tokio::test]
async fn publish_get_and_purge() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    declare_queue(&ch, "pq", QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();

    // The payload from the argument, with properties and headers.
    let r = ctl(
        &b,
        &[
            "publish",
            "-k",
            "pq",
            "hello",
            "--property",
            "content_type=text/plain",
            "--property",
            "delivery_mode=2",
            "--property",
            "message_id=42",
            "--header",
            "n=5",
            "--header",
            "s=x",
            "--properties",
            r#"{"priority": 3}"#,
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let m = ch.basic_get("pq".into(), BasicGetOptions { no_ack: true }).await.unwrap().expect("a message");
    assert_eq!(m.delivery.data, b"hello");
    let p = &m.delivery.properties;
    assert_eq!(p.content_type().as_ref().map(|s| s.as_str()), Some("text/plain"));
    assert_eq!((*p.delivery_mode(), *p.priority()), (Some(2), Some(3)));
    assert_eq!(p.message_id().as_ref().map(|s| s.as_str()), Some("42"));
    let h = p.headers().as_ref().unwrap().inner();
    assert!(matches!(h.get("n"), Some(AMQPValue::LongLongInt(5)) | Some(AMQPValue::LongInt(5))), "{h:?}");
    assert_eq!(h.get("s").and_then(|v| v.as_long_string()).map(|s| s.to_string()), Some("x".to_string()));

    // From standard input: bytes that are not UTF-8 arrive unchanged.
    let body = [0xffu8, 0x00, 0x80, b'z'];
    assert_eq!(ctl_in(&b, &["publish", "--routing-key", "pq"], &body).code, 0);
    let m = ch.basic_get("pq".into(), BasicGetOptions { no_ack: true }).await.unwrap().expect("a message");
    assert_eq!(m.delivery.data, body);

    // Through a named exchange; --format json prints the API's answer; unroutable is a warning,
    // or an error with --mandatory.
    let r = ctl(&b, &["--format", "json", "publish", "-e", "amq.direct", "-k", "nowhere", "x"]);
    assert_eq!((r.code, r.json()), (0, json!({"routed": false})), "{r:?}");
    assert!(r.err.contains("Warning: the message was not routed"), "{r:?}");
    ctl(&b, &["publish", "-e", "amq.direct", "-k", "nowhere", "--mandatory", "x"]).fails(65, "not routed");
    ctl(&b, &["publish", "-e", "nosuch", "x"]).fails(65, "exchange 'nosuch' in vhost '/': Not Found");
    ctl(&b, &["publish", "-k", "pq", "--property", "priority=high", "x"]).fails(65, "priority must be a number");

    // get: requeue leaves the messages, ack removes them, reject drops them.
    for i in 1..=3 {
        ok(&b, &["publish", "-k", "pq", &format!("m{i}")]);
    }
    let got = ctl(&b, &["--format", "json", "get", "pq", "--count", "2"]).json();
    let payloads: Vec<&str> = got.as_array().unwrap().iter().map(|m| m["payload"].as_str().unwrap()).collect();
    assert_eq!(payloads, ["m1", "m2"]);
    assert_eq!(b.admin("GET", "/api/queues/%2F/pq", None)["messages"], 3);
    let table = ok(&b, &["get", "pq"]);
    let mut lines = table.lines();
    assert!(lines.next().unwrap().starts_with("routing_key  exchange  message_count  redelivered"), "{table}");
    assert_eq!(lines.next().unwrap().split_whitespace().collect::<Vec<_>>(), ["pq", "2", "true", "2", "string", "m1"]);
    ok(&b, &["get", "pq", "--ackmode", "ack"]);
    ok(&b, &["get", "pq", "--ackmode", "reject"]);
    assert_eq!(get_all(&ch, "pq").await, ["m3"]);
    let r = ctl(&b, &["get", "pq"]);
    assert_eq!((r.code, r.out.as_str()), (0, ""), "{r:?}");
    assert!(r.err.contains("Queue 'pq' is empty"), "{r:?}");
    ctl(&b, &["get", "nope"]).fails(65, "NOT_FOUND - no queue 'nope'");
    ctl(&b, &["get", "pq", "--ackmode", "sometimes"]).fails(64, "invalid value 'sometimes'");

    // purge
    for i in 0..5 {
        publish_to(&ch, "pq", &i.to_string()).await;
    }
    sync_point(&ch).await;
    ok(&b, &["purge", "pq"]);
    assert_eq!(b.admin("GET", "/api/queues/%2F/pq", None)["messages"], 0);
    assert!(get_all(&ch, "pq").await.is_empty());
    ctl(&b, &["purge", "nope"]).fails(65, "queue 'nope' in vhost '/': Not Found");
}

#[tokio::test]
async fn users_passwords_and_tags() {
    let b = Broker::start();
    // The password on standard input, as rabbitmqctl reads it.
    assert_eq!(ctl_in(&b, &["add_user", "ann", "--tags", "management"], b"first\n").code, 0);
    let u = b.admin("GET", "/api/users/ann", None);
    assert_eq!(u["tags"], json!(["management"]));
    assert_eq!(
        b.api("GET", "/api/whoami", ("ann", "first"), None),
        (200, json!({"name": "ann", "tags": ["management"]}))
    );
    ctl(&b, &["add_user", "ann", "other"]).fails(65, "user 'ann' already exists");
    ctl(&b, &["add_user", "nopass"]).fails(64, "no password given");

    ok(&b, &["set_user_tags", "ann", "monitoring", "policymaker"]);
    assert_eq!(b.admin("GET", "/api/users/ann", None)["tags"], json!(["monitoring", "policymaker"]));
    // The password is kept when the tags change, and the tags when the password does.
    assert_eq!(b.api("GET", "/api/whoami", ("ann", "first"), None).0, 200);
    ok(&b, &["change_password", "ann", "second"]);
    assert_eq!(b.api("GET", "/api/whoami", ("ann", "first"), None).0, 401);
    assert_eq!(b.api("GET", "/api/whoami", ("ann", "second"), None).1["tags"], json!(["monitoring", "policymaker"]));
    ctl(&b, &["change_password", "nobody", "x"]).fails(65, "user 'nobody': Not Found");
    ctl(&b, &["set_user_tags", "nobody", "x"]).fails(65, "user 'nobody': Not Found");

    // The user logs in over AMQP too (after being given permissions).
    ok(&b, &["set_permissions", "ann", ".*", ".*", ".*"]);
    let amqp = format!("amqp://ann:second@{}/%2f", b.addr);
    lapin::Connection::connect(&amqp, lapin::ConnectionProperties::default()).await.expect("ann logs in");

    // Credentials from the environment; a wrong password is refused with the API's reason (77).
    let u = url(&b);
    let env = [("WARREN_URL", u.as_str()), ("WARREN_USER", "ann"), ("WARREN_PASSWORD", "second")];
    let r = run_env(&["--format", "json", "list", "vhosts", "--columns", "name"], b"", &env);
    assert_eq!((r.code, r.json()), (0, json!([{"name": "/"}])), "{r:?}");
    ctl(&b, &["--user", "ann", "--password", "wrong", "list", "queues"]).fails(77, "Login failed");
    // Not an administrator: refused with RabbitMQ's reason.
    run_env(&["add_vhost", "v"], b"", &env).fails(77, "Not administrator user");

    ok(&b, &["delete_user", "ann"]);
    assert_eq!(b.api("GET", "/api/users/ann", ("guest", "guest"), None).0, 404);
    ctl(&b, &["delete_user", "ann"]).fails(65, "user 'ann': Not Found");
}

#[tokio::test]
async fn vhosts_permissions_policies_and_limits() {
    let b = Broker::start();
    // A vhost name with a slash travels as %2F.
    ok(&b, &["add_vhost", "team/a", "--description", "team a", "--default-queue-type", "quorum"]);
    let v = b.admin("GET", "/api/vhosts/team%2Fa", None);
    assert_eq!((v["description"].as_str(), v["default_queue_type"].as_str()), (Some("team a"), Some("quorum")));
    ctl(&b, &["add_vhost", "bad", "--default-queue-type", "stream-ish"]).fails(65, "unsupported default queue type");

    ok(&b, &["add_user", "bo", "pw"]);
    ok(&b, &["-p", "team/a", "set_permissions", "bo", "^bo-.*", ".*", "^$"]);
    assert_eq!(
        b.admin("GET", "/api/permissions/team%2Fa/bo", None),
        json!({"user": "bo", "vhost": "team/a", "configure": "^bo-.*", "write": ".*", "read": "^$"})
    );
    ctl(&b, &["-p", "nope", "set_permissions", "bo", ".*", ".*", ".*"]).fails(65, "Not Found");
    ok(&b, &["-p", "team/a", "clear_permissions", "bo"]);
    assert_eq!(b.api("GET", "/api/permissions/team%2Fa/bo", ("guest", "guest"), None).0, 404);
    ctl(&b, &["-p", "team/a", "clear_permissions", "bo"]).fails(65, "Not Found");

    // A policy applies to the queues it matches.
    ok(
        &b,
        &[
            "-p",
            "team/a",
            "set_policy",
            "ttl",
            "^t\\.",
            r#"{"message-ttl": 1000}"#,
            "--priority",
            "3",
            "--apply-to",
            "queues",
        ],
    );
    assert_eq!(
        b.admin("GET", "/api/policies/team%2Fa/ttl", None),
        json!({"vhost": "team/a", "name": "ttl", "pattern": "^t\\.", "apply-to": "queues",
            "definition": {"message-ttl": 1000}, "priority": 3})
    );
    ok(&b, &["-p", "team/a", "declare", "queue", "t.1"]);
    assert_eq!(b.admin("GET", "/api/queues/team%2Fa/t.1", None)["policy"], "ttl");
    ctl(&b, &["-p", "team/a", "set_policy", "bad", ".*", r#"{"message-ttl": "soon"}"#])
        .fails(65, "Validation failed: \"soon\" is not a valid message TTL (400");
    ctl(&b, &["-p", "team/a", "set_policy", "bad", ".*", "{"]).fails(65, "not valid JSON");
    ctl(&b, &["-p", "team/a", "set_policy", "bad", ".*", "{}", "--apply-to", "streams"]).fails(64, "invalid value");
    ok(&b, &["-p", "team/a", "clear_policy", "ttl"]);
    assert_eq!(b.api("GET", "/api/policies/team%2Fa/ttl", ("guest", "guest"), None).0, 404);
    ctl(&b, &["-p", "team/a", "clear_policy", "ttl"]).fails(65, "policy 'ttl' in vhost 'team/a': Not Found");

    // Limits replace the previous ones, as rabbitmqctl's do.
    ok(&b, &["-p", "team/a", "set_vhost_limits", r#"{"max-queues": 5, "max-connections": 3}"#]);
    assert_eq!(
        b.admin("GET", "/api/vhost-limits/team%2Fa", None),
        json!([{"vhost": "team/a", "value": {"max-queues": 5, "max-connections": 3}}])
    );
    ok(&b, &["-p", "team/a", "set_vhost_limits", r#"{"max-queues": 1}"#]);
    assert_eq!(
        b.admin("GET", "/api/vhost-limits/team%2Fa", None),
        json!([{"vhost": "team/a", "value": {"max-queues": 1}}])
    );
    // In force: the vhost already has one queue.
    ctl(&b, &["-p", "team/a", "declare", "queue", "second"]).fails(65, "queue limit in vhost 'team/a' (1) is reached");
    ctl(&b, &["-p", "team/a", "set_vhost_limits", r#"{"max-queues": "many"}"#]).fails(65, "must be an integer");
    ctl(&b, &["-p", "team/a", "set_vhost_limits", r#"{"max-widgets": 1}"#]).fails(65, "unknown limit 'max-widgets'");
    ok(&b, &["set_user_limits", "bo", r#"{"max-channels": 2}"#]);
    assert_eq!(b.admin("GET", "/api/user-limits/bo", None), json!([{"user": "bo", "value": {"max-channels": 2}}]));
    ctl(&b, &["set_user_limits", "nobody", r#"{"max-channels": 2}"#]).fails(65, "user 'nobody': Not Found");

    ok(&b, &["delete_vhost", "team/a"]);
    assert_eq!(b.api("GET", "/api/vhosts/team%2Fa", ("guest", "guest"), None).0, 404);
    ctl(&b, &["delete_vhost", "team/a"]).fails(65, "vhost 'team/a': Not Found");
}

#[tokio::test]
async fn export_and_import_definitions() {
    let b = Broker::start();
    let dir = TempDir::new();
    let file = dir.0.join("defs.json");
    let file = file.to_str().unwrap();
    ok(&b, &["add_vhost", "ex"]);
    ok(&b, &["-p", "ex", "declare", "queue", "kept", "--arg", "x-max-length=3"]);
    ok(&b, &["add_user", "carl", "pw", "--tags", "management"]);
    ok(&b, &["export", file]);
    let exported: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    assert!(exported["queues"].as_array().unwrap().iter().any(|q| q["name"] == "kept" && q["vhost"] == "ex"));
    // To standard output: the same definitions.
    let r = ctl(&b, &["export", "-"]);
    assert_eq!(r.json()["users"], exported["users"]);

    ok(&b, &["delete_vhost", "ex"]);
    ok(&b, &["delete_user", "carl"]);
    ok(&b, &["import", file]);
    assert_eq!(b.admin("GET", "/api/queues/ex/kept", None)["arguments"], json!({"x-max-length": 3}));
    assert_eq!(b.admin("GET", "/api/users/carl", None)["tags"], json!(["management"]));
    // From standard input.
    let defs = json!({"vhosts": [{"name": "piped"}]}).to_string();
    assert_eq!(ctl_in(&b, &["import", "-"], defs.as_bytes()).code, 0);
    assert_eq!(b.admin("GET", "/api/vhosts/piped", None)["name"], "piped");

    ctl(&b, &["import", dir.0.join("missing.json").to_str().unwrap()]).fails(65, "cannot read");
    ctl_in(&b, &["import", "-"], b"{not json").fails(65, "not valid JSON");
    ctl_in(&b, &["import", "-"], b"[1, 2]").fails(65, "not a definitions object");
    ctl(&b, &["export", dir.0.join("no/such/dir.json").to_str().unwrap()]).fails(73, "cannot write");
}

#[tokio::test]
async fn close_connection_closes_it_with_the_reason() {
    let b = Broker::start();
    let conn = b.connect().await;
    let mut ev = events(&conn);
    let conns = ctl(&b, &["--format", "json", "list", "connections", "--columns", "name"]).json();
    let name = conns[0]["name"].as_str().expect("a connection name").to_string();
    assert!(name.contains(" -> "), "{name}");
    ok(&b, &["close_connection", &name, "maintenance by script"]);
    assert_eq!(next_close(&mut ev).await, (320, "CONNECTION_FORCED - maintenance by script".to_string()));
    ctl(&b, &["close_connection", "127.0.0.1:1 -> 127.0.0.1:2"]).fails(65, "Not Found");
}

#[tokio::test]
async fn status_and_await_startup() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    declare_queue(&ch, "sq", QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
    publish_to(&ch, "sq", "x").await;
    sync_point(&ch).await;
    let table = ok(&b, &["status"]);
    let row = |key: &str| {
        table.lines().find(|l| l.starts_with(key)).map(|l| l[key.len()..].trim().to_string()).unwrap_or_default()
    };
    assert_eq!(row("Node"), "warren@localhost");
    assert_eq!(row("Total queues"), "1");
    assert_eq!(row("Queued messages ready"), "1");
    assert!(table.contains(&format!("amqp on {}", b.addr)), "{table}");
    let s = ctl(&b, &["--format", "json", "status"]).json();
    assert_eq!(
        (s["object_totals"]["connections"].as_u64(), s["queue_totals"]["messages"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(s["uptime_ms"].is_u64(), "{s}");

    assert_eq!(ok(&b, &["-q", "await_startup"]), "");

    // Nothing listening: every command is "unavailable" (69); await_startup times out (75).
    let (_reserved, dead) = dead_url();
    run_env(&["--url", &dead, "status"], b"", &[]).fails(69, "cannot reach the management API");
    run_env(&["--url", &dead, "list", "queues"], b"", &[]).fails(69, "Connection refused");
    run_env(&["--url", &dead, "await_startup", "--timeout", "1"], b"", &[]).fails(75, "not ready within 1 s");
    // Wrong credentials will not get better by waiting: 77 at once.
    let started = std::time::Instant::now();
    ctl(&b, &["--password", "bad", "await_startup", "--timeout", "60"]).fails(77, "Login failed");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));

    // Usage errors are 64; --help is 0.
    run_env(&[], b"", &[]).fails(64, "Usage");
    run_env(&["frobnicate"], b"", &[]).fails(64, "unrecognized subcommand");
    run_env(&["--format", "xml", "status"], b"", &[]).fails(64, "invalid value 'xml'");
    run_env(&["--url", "not a url", "status"], b"", &[]).fails(64, "");
    let help = run_env(&["--help"], b"", &[]);
    assert_eq!(help.code, 0);
    assert!(help.out.contains("await_startup") && help.out.contains("Exit codes"), "{help:?}");
}

#[test]
fn await_startup_waits_for_a_broker_that_starts_later() {
    let (reserved, dead) = dead_url();
    let addr = dead.trim_start_matches("http://").to_string();
    let waiter = Command::new(env!("CARGO_BIN_EXE_warrenctl"))
        .args(["--url", &dead, "await_startup", "--timeout", "60"])
        .env_remove("WARREN_USER")
        .env_remove("WARREN_PASSWORD")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Started after the waiter, on the address it polls.
    drop(reserved);
    let _b = Broker::start_with_args(&["--http-listen", &addr]);
    let o = waiter.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("The broker is ready"));
}

#[tokio::test]
async fn names_are_encoded_in_paths() {
    let b = Broker::start();
    ok(&b, &["add_vhost", "a/b?c#d"]);
    let odd = "q /?#%&+~ü";
    ok(&b, &["-p", "a/b?c#d", "declare", "queue", odd]);
    ok(&b, &["-p", "a/b?c#d", "declare", "exchange", "x/%"]);
    ok(&b, &["-p", "a/b?c#d", "declare", "binding", "--source", "x/%", "--destination", odd, "--routing-key", "a b/#"]);
    let q = b.admin("GET", "/api/queues/a%2Fb%3Fc%23d/q%20%2F%3F%23%25%26%2B~%C3%BC", None);
    assert_eq!(q["name"], odd);
    ok(&b, &["-p", "a/b?c#d", "publish", "-e", "x/%", "-k", "a b/#", "through"]);
    let got = ctl(&b, &["-p", "a/b?c#d", "--format", "json", "get", odd, "--ackmode", "ack"]).json();
    assert_eq!(got[0]["payload"], "through");
    ok(&b, &["-p", "a/b?c#d", "delete", "binding", "--source", "x/%", "--destination", odd, "--routing-key", "a b/#"]);
    assert_eq!(
        b.admin("GET", "/api/bindings/a%2Fb%3Fc%23d/e/x%2F%25/q/q%20%2F%3F%23%25%26%2B~%C3%BC", None),
        json!([])
    );
    ok(&b, &["-p", "a/b?c#d", "delete", "queue", odd]);
    ok(&b, &["delete_vhost", "a/b?c#d"]);
    assert_eq!(b.api("GET", "/api/vhosts/a%2Fb%3Fc%23d", ("guest", "guest"), None).0, 404);
    // Names URL normalisation would rewrite are refused before any request.
    for name in [".", ".."] {
        ctl(&b, &["delete", "queue", name]).fails(65, "cannot be addressed");
    }
    ctl(&b, &["-p", "", "list", "queues"]).fails(65, "cannot be addressed");
}
