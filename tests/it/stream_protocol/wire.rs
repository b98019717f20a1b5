//! The protocol's details over raw frames: the handshake, response codes (streams.md §8.4's
//! measured table), credit in chunks, offsets, MetadataUpdate, and hostile input.

use std::time::Duration;

use bytes::BufMut;

use super::raw::{Raw, map, parse_deliver, string};
use super::{addr, raw_stream, start};
use crate::common::*;

/// Publish `bodies` one confirmed message at a time (one chunk each) on a fresh publisher.
async fn publish_chunks(r: &mut Raw, stream: &str, publisher: u8, bodies: &[&str]) {
    assert_eq!(r.declare_publisher(publisher, "", stream).await, 1);
    for (i, b) in bodies.iter().enumerate() {
        r.publish(publisher, &[(i as u64 + 1, b.as_bytes())]).await;
        assert_eq!(r.confirms(publisher, 1).await, [i as u64 + 1]);
    }
}

/// Every record delivered until `quiet` passes without a Deliver, with its chunk's id.
async fn drain(r: &mut Raw, quiet: Duration) -> Vec<(u64, String)> {
    let mut got = Vec::new();
    while let Some(f) = r.quiet(quiet).await {
        if f.key == 0x0008 {
            let (_, chunk, records) = parse_deliver(&f);
            got.extend(records.into_iter().map(|m| (chunk, String::from_utf8(m).unwrap())));
        }
    }
    got
}

fn bodies(got: &[(u64, String)]) -> Vec<&str> {
    got.iter().map(|(_, b)| b.as_str()).collect()
}

#[tokio::test]
async fn handshake_answers_as_rabbitmq_and_refuses_bad_logins() {
    let b = start();
    let a = addr(&b);
    // PeerProperties: RabbitMQ's keys.
    let mut r = Raw::connect(&a).await;
    let mut body = Vec::new();
    map(&mut body, &[("product", "raw")]);
    let f = r.call(0x0011, &body).await;
    let mut rd = f.reader();
    assert_eq!((rd.u32(), rd.u16()), (101, 1));
    let n = rd.u32();
    let keys: Vec<String> = (0..n)
        .map(|_| {
            let k = rd.string();
            rd.string();
            k
        })
        .collect();
    for k in ["cluster_name", "copyright", "information", "platform", "product", "version"] {
        assert!(keys.iter().any(|x| x == k), "{k} in {keys:?}");
    }
    // SaslHandshake lists PLAIN and AMQPLAIN.
    let f = r.call(0x0012, &[]).await;
    let mut rd = f.reader();
    rd.u32();
    assert_eq!(rd.u16(), 1);
    assert_eq!(rd.strings(), ["PLAIN", "AMQPLAIN"]);

    // A wrong password: 0x08, then the socket closes.
    assert_eq!(Raw::open_as(&a, "guest", "wrong", "/").await.err(), Some(0x08));
    // An unknown vhost: 0x0c.
    assert_eq!(Raw::open_as(&a, "guest", "guest", "nope").await.err(), Some(0x0c));
    // Open answers with where to connect.
    let mut r = Raw::connect(&a).await;
    let mut body = Vec::new();
    map(&mut body, &[]);
    r.call(0x0011, &body).await;
    r.call(0x0012, &[]).await;
    let mut body = Vec::new();
    string(&mut body, "PLAIN");
    body.put_i32(12);
    body.extend_from_slice(b"\0guest\0guest");
    assert_eq!(r.call(0x0013, &body).await.response().1, 1);
    let tune = r.frame().await.unwrap();
    let mut rd = tune.reader();
    assert_eq!((tune.key, rd.u32(), rd.u32()), (0x0014, 1_048_576, 60), "RabbitMQ's frame_max and heartbeat");
    r.send(0x8014, 1, &[0, 0x10, 0, 0, 0, 0, 0, 0]).await;
    let mut body = Vec::new();
    string(&mut body, "/");
    let f = r.call(0x0015, &body).await;
    let mut rd = f.reader();
    rd.u32();
    assert_eq!(rd.u16(), 1);
    assert_eq!(rd.u32(), 2);
    let props: Vec<(String, String)> = (0..2).map(|_| (rd.string(), rd.string())).collect();
    assert!(props.contains(&("advertised_host".into(), "127.0.0.1".into())), "{props:?}");
    assert!(props.contains(&("advertised_port".into(), super::port(&b).to_string())), "{props:?}");
}

#[tokio::test]
async fn hostile_input_closes_only_that_connection() {
    let b = start();
    let a = addr(&b);
    let mut witness = Raw::open(&a).await;
    assert_eq!(witness.create("hostile-witness", &[]).await, 1);

    // A command before authentication: the socket closes without an answer.
    let mut r = Raw::connect(&a).await;
    let mut body = Vec::new();
    string(&mut body, "s");
    map(&mut body, &[]);
    r.request(0x000d, &body).await;
    assert!(r.closed().await.is_empty(), "no answer before authentication");

    // Garbage bytes.
    let mut r = Raw::connect(&a).await;
    r.send_bytes(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(r.closed().await.is_empty());

    // An unknown command after authentication: Close(0x0d, "unknown frame").
    let mut r = Raw::open(&a).await;
    r.send(0x0077, 1, &[0, 0, 0, 1]).await;
    let f = r.expect(|f| f.key == 0x0016).await;
    let mut rd = f.reader();
    let id = rd.u32();
    assert_eq!((rd.u16(), rd.string()), (0x0d, "unknown frame".to_string()));
    let mut answer = id.to_be_bytes().to_vec();
    answer.put_u16(1);
    r.send(0x8016, 1, &answer).await;
    assert!(r.closed().await.is_empty(), "the socket closes after the close handshake");

    // A frame over frame_max: Close(0x0e, "frame too large").
    let mut r = Raw::open(&a).await;
    r.send_bytes(&(2u32 << 20).to_be_bytes()).await;
    let f = r.expect(|f| f.key == 0x0016).await;
    let mut rd = f.reader();
    rd.u32();
    assert_eq!((rd.u16(), rd.string()), (0x0e, "frame too large".to_string()));

    // A Publish whose counts lie: unknown frame (it does not parse).
    let mut r = Raw::open(&a).await;
    r.send(0x0002, 1, &[1, 0x7f, 0xff, 0xff, 0xff]).await;
    let f = r.expect(|f| f.key == 0x0016).await;
    assert_eq!(f.reader().0[4..6], [0, 0x0d]);

    // The broker and the other connection are unharmed.
    assert_eq!(witness.create("hostile-witness", &[]).await, 5);
    assert_eq!(witness.delete("hostile-witness").await, 1);
    let mut again = Raw::open(&a).await;
    assert_eq!(again.create("hostile-after", &[]).await, 1);
}

#[tokio::test]
async fn create_and_delete_answer_with_rabbitmqs_codes() {
    let b = start();
    let mut r = Raw::open(&addr(&b)).await;
    let s = unique("codes");
    assert_eq!(r.create(&s, &[("max-age", "1h")]).await, 1);
    assert_eq!(r.create(&s, &[("max-age", "1h")]).await, 5, "same name, same arguments: already exists");
    assert_eq!(r.create(&s, &[("max-age", "2h")]).await, 0x11, "same name, other arguments");
    assert_eq!(r.create("amq.s", &[]).await, 0x11);
    assert_eq!(r.create("", &[]).await, 0x11);
    assert_eq!(r.create(&unique("c"), &[("initial-cluster-size", "0")]).await, 0x11);
    assert_eq!(r.create(&unique("c"), &[("queue-leader-locator", "nope")]).await, 0x11);
    assert_eq!(r.create(&unique("c"), &[("stream-max-segment-size-bytes", "3000000001")]).await, 0x11);
    assert_eq!(r.create(&unique("c"), &[("max-length-bytes", "abc")]).await, 0x11);
    let other = unique("c");
    assert_eq!(r.create(&other, &[("x-foo", "1")]).await, 1, "unknown arguments are ignored");
    // CR and LF are stripped from the name.
    let crlf = unique("crlf");
    assert_eq!(r.create(&format!("{crlf}\r\n"), &[]).await, 1);
    assert_eq!(r.delete(&crlf).await, 1);
    assert_eq!(r.delete(&s).await, 1);
    assert_eq!(r.delete(&s).await, 2, "deleted already");
    assert_eq!(r.delete(&other).await, 1);

    // The same streams as AMQP 0-9-1: a stream created here is a stream queue there, and a
    // classic queue is no stream here.
    let made = unique("both");
    assert_eq!(r.create(&made, &[("max-length-bytes", "1000000")]).await, 1);
    let (_c, ch) = b.channel().await;
    let args = table(&[("x-queue-type", lstr("stream")), ("x-max-length-bytes", AMQPValue::LongLongInt(1_000_000))]);
    declare_queue(&ch, &made, lapin::options::QueueDeclareOptions::durable(), args).await.expect("equivalent");
    let classic = unique("classic");
    declare_queue(&ch, &classic, lapin::options::QueueDeclareOptions::durable(), Default::default()).await.unwrap();
    assert_eq!(r.delete(&classic).await, 2, "a classic queue is not a stream");
    assert_eq!(r.create(&classic, &[]).await, 0x11, "a queue of that name exists with another type");
    let mut p = Raw::open(&addr(&b)).await;
    assert_eq!(p.declare_publisher(1, "", &classic).await, 2);
}

use lapin::types::AMQPValue;

#[tokio::test]
async fn publishers_confirm_and_refuse_as_rabbitmq() {
    let (_b, mut r, s) = raw_stream("pub").await;
    assert_eq!(r.declare_publisher(1, "ref", &s).await, 1);
    assert_eq!(r.declare_publisher(1, "", &s).await, 0x11, "publisher id in use");
    assert_eq!(r.declare_publisher(2, "ref", &s).await, 0x11, "reference in use on the stream");
    assert_eq!(r.declare_publisher(3, "", "no-such-stream").await, 2);
    r.publish(1, &[(1, b"a"), (2, b"b"), (3, b"c")]).await;
    assert_eq!(r.confirms(1, 3).await, [1, 2, 3]);
    // An undeclared publisher: PublishError 0x12 for each publishing id.
    r.publish(9, &[(7, b"x"), (8, b"y")]).await;
    let f = r.expect(|f| f.key == 0x0004).await;
    let mut rd = f.reader();
    assert_eq!((rd.u8(), rd.u32()), (9, 2));
    assert_eq!((rd.u64(), rd.u16(), rd.u64(), rd.u16()), (7, 0x12, 8, 0x12));
    let mut body = vec![1];
    assert_eq!(r.call(0x0006, &body).await.response().1, 1, "DeletePublisher");
    assert_eq!(r.call(0x0006, &body).await.response().1, 0x12, "deleted already");
    body[0] = 2;
    assert_eq!(r.declare_publisher(2, "ref", &s).await, 1, "the reference is free again");
}

/// QueryPublisherSequence's answer.
async fn sequence(r: &mut Raw, reference: &str, stream: &str) -> (u16, u64) {
    let mut body = Vec::new();
    string(&mut body, reference);
    string(&mut body, stream);
    let f = r.call(0x0005, &body).await;
    let mut rd = f.reader();
    rd.u32();
    (rd.u16(), rd.u64())
}

#[tokio::test]
async fn duplicates_of_a_named_publisher_are_confirmed_not_stored() {
    let b = start();
    let a = addr(&b);
    let s = unique("dedup");
    let mut r = Raw::open(&a).await;
    assert_eq!(r.create(&s, &[]).await, 1);
    assert_eq!(sequence(&mut r, "app", &s).await, (1, 0), "unknown reference: 0");
    assert_eq!(sequence(&mut r, "app", "no-such-stream").await.0, 2);
    assert_eq!(r.declare_publisher(1, "app", &s).await, 1);
    r.publish(1, &[(1, b"m1"), (2, b"m2"), (3, b"m3")]).await;
    assert_eq!(r.confirms(1, 3).await, [1, 2, 3]);
    drop(r);

    // Another connection resumes under the same reference and resends 2 and 3.
    let mut r = Raw::open(&a).await;
    assert_eq!(sequence(&mut r, "app", &s).await, (1, 3));
    assert_eq!(r.declare_publisher(7, "app", &s).await, 1);
    r.publish(7, &[(2, b"m2"), (3, b"m3"), (4, b"m4"), (5, b"m5")]).await;
    let mut confirmed = r.confirms(7, 4).await;
    confirmed.sort_unstable();
    assert_eq!(confirmed, [2, 3, 4, 5], "duplicates are confirmed too");
    assert_eq!(sequence(&mut r, "app", &s).await, (1, 5));
    // Without a reference nothing is deduplicated.
    assert_eq!(r.declare_publisher(8, "", &s).await, 1);
    r.publish(8, &[(1, b"x"), (1, b"x")]).await;
    assert_eq!(r.confirms(8, 2).await, [1, 1]);

    assert_eq!(r.subscribe(1, &s, 1, 0, 100, &[]).await, 1);
    let got = drain(&mut r, Duration::from_millis(500)).await;
    assert_eq!(bodies(&got), ["m1", "m2", "m3", "m4", "m5", "x", "x"]);
}

#[tokio::test]
async fn credit_is_counted_in_chunks() {
    let (_b, mut r, s) = raw_stream("credit").await;
    publish_chunks(&mut r, &s, 1, &["a", "b", "c", "d"]).await;
    assert_eq!(r.subscribe(5, &s, 1, 0, 2, &[]).await, 1);
    let first = drain(&mut r, QUIET).await;
    assert_eq!(bodies(&first), ["a", "b"], "credit 2: two chunks, then nothing");
    r.credit(5, 1).await;
    assert_eq!(bodies(&drain(&mut r, QUIET).await), ["c"]);
    r.credit(5, 10).await;
    assert_eq!(bodies(&drain(&mut r, QUIET).await), ["d"]);
    // With credit left, new chunks arrive as they are committed.
    publish_chunks(&mut r, &s, 2, &["e"]).await;
    let (sub, _, recs) = r.deliver().await;
    assert_eq!((sub, recs), (5, vec![b"e".to_vec()]));

    assert_eq!(r.subscribe(5, &s, 1, 0, 1, &[]).await, 3, "subscription id in use");
    assert_eq!(r.subscribe(6, "no-such-stream", 1, 0, 1, &[]).await, 2);
    assert_eq!(r.call(0x000c, &[9]).await.response().1, 4, "unsubscribe unknown");
    // Credit for an unknown subscription: 0x8009 with the code and the id, no correlation id.
    r.credit(9, 1).await;
    let f = r.expect(|f| f.key == 0x8009).await;
    assert_eq!(f.body, [0, 4, 9]);
    assert_eq!(r.call(0x000c, &[5]).await.response().1, 1);
    publish_chunks(&mut r, &s, 3, &["f"]).await;
    assert!(drain(&mut r, QUIET).await.is_empty(), "nothing after Unsubscribe");
}

#[tokio::test]
async fn offset_specifications() {
    let (b, mut r, s) = raw_stream("offsets").await;
    publish_chunks(&mut r, &s, 1, &["m0", "m1", "m2", "m3", "m4"]).await;
    let q = Duration::from_millis(400);
    let cases: &[(u16, u64, &[&str])] = &[
        (1, 0, &["m0", "m1", "m2", "m3", "m4"]), // first
        (2, 0, &["m4"]),                         // last: the last chunk
        (3, 0, &[]),                             // next
        (4, 2, &["m2", "m3", "m4"]),             // offset 2
        (4, 100, &[]),                           // beyond the end
        (5, 0, &["m0", "m1", "m2", "m3", "m4"]), // timestamp 0
    ];
    for (i, (kind, value, want)) in cases.iter().enumerate() {
        let id = i as u8 + 1;
        assert_eq!(r.subscribe(id, &s, *kind, *value, 100, &[]).await, 1);
        assert_eq!(bodies(&drain(&mut r, q).await), *want, "offset type {kind} value {value}");
        assert_eq!(r.call(0x000c, &[id]).await.response().1, 1);
    }
    // A timestamp an hour ahead: nothing of what is there, but what comes later (as "next").
    let later =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64 + 3_600_000;
    assert_eq!(r.subscribe(20, &s, 5, later, 100, &[]).await, 1);
    assert_eq!(r.subscribe(21, &s, 3, 0, 100, &[]).await, 1);
    assert!(drain(&mut r, q).await.is_empty());
    let mut p = Raw::open(&addr(&b)).await;
    publish_chunks(&mut p, &s, 1, &["m5"]).await;
    let mut got = vec![r.deliver().await, r.deliver().await];
    got.sort();
    assert_eq!(got, [(20, 5, vec![b"m5".to_vec()]), (21, 5, vec![b"m5".to_vec()])], "offsets are dense");
}

#[tokio::test]
async fn offsets_are_stored_and_queried() {
    let (_b, mut r, s) = raw_stream("track").await;
    let query = |reference: &str, stream: &str| {
        let mut body = Vec::new();
        string(&mut body, reference);
        string(&mut body, stream);
        body
    };
    let f = r.call(0x000b, &query("app", &s)).await;
    let mut rd = f.reader();
    rd.u32();
    assert_eq!((rd.u16(), rd.u64()), (0x13, 0), "no offset stored yet");
    let mut store = query("app", &s);
    store.put_u64(42);
    r.send(0x000a, 1, &store).await;
    let f = r.call(0x000b, &query("app", &s)).await;
    let mut rd = f.reader();
    rd.u32();
    assert_eq!((rd.u16(), rd.u64()), (1, 42));
    // A store to a missing stream has no answer at all; a query answers 0x02.
    let mut store = query("app", "no-such-stream");
    store.put_u64(1);
    r.send(0x000a, 1, &store).await;
    assert_eq!(r.call(0x000b, &query("app", "no-such-stream")).await.response().1, 2);
}

#[tokio::test]
async fn metadata_names_the_advertised_broker() {
    let (b, mut r, s) = raw_stream("meta").await;
    let mut body = Vec::new();
    body.put_i32(2);
    string(&mut body, &s);
    string(&mut body, "no-such-stream");
    let f = r.call(0x000f, &body).await;
    let mut rd = f.reader();
    rd.u32();
    assert_eq!(rd.u32(), 1, "one broker");
    assert_eq!((rd.u16(), rd.string(), rd.u32()), (0, "127.0.0.1".to_string(), super::port(&b) as u32));
    assert_eq!(rd.u32(), 2);
    assert_eq!((rd.string(), rd.u16(), rd.u16(), rd.u32()), (s.clone(), 1, 0, 0));
    assert_eq!((rd.string(), rd.u16(), rd.u16(), rd.u32()), ("no-such-stream".to_string(), 2, 0xffff, 0));

    // StreamStats: the first and committed chunk ids (-1 while empty).
    let mut body = Vec::new();
    string(&mut body, &s);
    let stats = |f: &super::raw::Frame| {
        let mut rd = f.reader();
        rd.u32();
        let c = rd.u16();
        let n = rd.u32();
        let mut kv: Vec<(String, i64)> = (0..n).map(|_| (rd.string(), rd.i64())).collect();
        kv.sort();
        (c, kv)
    };
    let (c, kv) = stats(&r.call(0x001c, &body).await);
    assert_eq!((c, kv), (1, vec![("committed_chunk_id".into(), -1), ("first_chunk_id".into(), -1)]));
    publish_chunks(&mut r, &s, 1, &["a", "b"]).await;
    let (_, kv) = stats(&r.call(0x001c, &body).await);
    assert_eq!(kv, vec![("committed_chunk_id".into(), 1), ("first_chunk_id".into(), 0)]);
}

#[tokio::test]
async fn deleting_a_stream_tells_its_publishers_and_subscribers() {
    let b = start();
    let a = addr(&b);
    let s = unique("gone");
    let mut admin = Raw::open(&a).await;
    assert_eq!(admin.create(&s, &[]).await, 1);
    let mut sub = Raw::open(&a).await;
    assert_eq!(sub.subscribe(1, &s, 1, 0, 10, &[]).await, 1);
    let mut publ = Raw::open(&a).await;
    assert_eq!(publ.declare_publisher(1, "", &s).await, 1);
    publ.publish(1, &[(1, b"before")]).await;
    assert_eq!(publ.confirms(1, 1).await, [1]);
    assert_eq!(sub.deliver().await.2, [b"before".to_vec()]);

    assert_eq!(admin.delete(&s).await, 1);
    for c in [&mut sub, &mut publ] {
        let f = c.expect(|f| f.key == 0x0010).await;
        let mut rd = f.reader();
        assert_eq!((rd.u16(), rd.string()), (6, s.clone()), "MetadataUpdate(stream not available)");
    }
    assert!(admin.quiet(QUIET).await.is_none(), "the deleting connection used nothing of it");
    // The publisher is gone with it.
    publ.publish(1, &[(2, b"after")]).await;
    let f = publ.expect(|f| f.key == 0x0004).await;
    assert_eq!(&f.body[f.body.len() - 2..], [0, 0x12]);
    // The subscription too: its id is free.
    assert_eq!(admin.create(&s, &[]).await, 1, "the name can be used again");
    assert_eq!(sub.subscribe(1, &s, 1, 0, 10, &[]).await, 1);
}

#[tokio::test]
async fn a_subscriber_that_does_not_read_costs_bounded_memory() {
    let b = start();
    let a = addr(&b);
    let s = unique("slow");
    let mut p = Raw::open(&a).await;
    assert_eq!(p.create(&s, &[]).await, 1);
    assert_eq!(p.declare_publisher(1, "", &s).await, 1);
    // 64 MiB in 1 MiB chunks (a publish frame near the frame limit makes one chunk).
    let body = vec![b'x'; 1000];
    for round in 0..64u64 {
        let batch: Vec<(u64, &[u8])> = (0..1000).map(|i| (round * 1000 + i, &body[..])).collect();
        p.publish(1, &batch).await;
        p.confirms(1, 1000).await;
    }
    let rss_before = rss_of_listener(&b);
    // Subscribe with all the credit there is and never read.
    let mut lazy = Raw::open(&a).await;
    lazy.request(0x0007, &{
        let mut body = vec![1];
        string(&mut body, &s);
        body.put_u16(1);
        body.put_u16(u16::MAX);
        map(&mut body, &[]);
        body
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = rss_of_listener(&b);
    assert!(
        rss_after < rss_before + 24 * 1024 * 1024,
        "a subscriber that does not read made the broker grow from {rss_before} to {rss_after} bytes"
    );
    // The broker still serves others.
    let mut other = Raw::open(&a).await;
    assert_eq!(other.subscribe(1, &s, 2, 0, 1, &[]).await, 1);
    assert_eq!(other.deliver().await.0, 1);
    drop(lazy);
}

/// The broker's resident memory, from the management API's node entry.
fn rss_of_listener(b: &Broker) -> u64 {
    let nodes = b.admin("GET", "/api/nodes", None);
    nodes[0]["mem_used"].as_u64().expect("mem_used")
}

const LIMITED: &str = r#"
[stream]
listen = "127.0.0.1:0"

[[auth.users]]
name = "bob"
password = "bob"

[[auth.permissions]]
user = "bob"
vhost = "/"
configure = "^bob-"
write = "^bob-"
read = "^bob-"
"#;

#[tokio::test]
async fn permissions_apply_as_for_amqp() {
    let b = Broker::start_with_config(LIMITED);
    let a = addr(&b);
    let mut guest = Raw::open(&a).await;
    assert_eq!(guest.create("other", &[]).await, 1);
    let mut bob = Raw::open_as(&a, "bob", "bob", "/").await.expect("bob may open /");
    // Configure: Create and Delete.
    assert_eq!(bob.create("other-2", &[]).await, 0x10);
    assert_eq!(bob.delete("other").await, 0x10);
    assert_eq!(bob.create("bob-1", &[]).await, 1);
    // Write: DeclarePublisher. Read: Subscribe, QueryOffset, QueryPublisherSequence, StreamStats.
    assert_eq!(bob.declare_publisher(1, "", "other").await, 0x10);
    assert_eq!(bob.subscribe(1, "other", 1, 0, 1, &[]).await, 0x10);
    let mut body = Vec::new();
    string(&mut body, "ref");
    string(&mut body, "other");
    assert_eq!(bob.call(0x000b, &body).await.response().1, 0x10, "QueryOffset");
    assert_eq!(bob.call(0x0005, &body).await.response().1, 0x10, "QueryPublisherSequence");
    let mut body = Vec::new();
    string(&mut body, "other");
    assert_eq!(bob.call(0x001c, &body).await.response().1, 0x10, "StreamStats");
    assert_eq!(bob.declare_publisher(1, "", "bob-1").await, 1);
    assert_eq!(bob.subscribe(1, "bob-1", 1, 0, 1, &[]).await, 1);
    // A super stream needs configure and read on its exchange and configure and write on each
    // partition.
    let mut body = Vec::new();
    string(&mut body, "bob-super");
    body.put_i32(1);
    string(&mut body, "other-0");
    body.put_i32(1);
    string(&mut body, "0");
    map(&mut body, &[]);
    assert_eq!(bob.call(0x001d, &body).await.response().1, 0x10);
    // The management API shows the connections as stream connections.
    let conns = b.admin("GET", "/api/connections", None);
    let protocols: Vec<&str> = conns.as_array().unwrap().iter().filter_map(|c| c["protocol"].as_str()).collect();
    assert_eq!(protocols, ["stream", "stream"]);
    // Deleting the user closes its connection (the socket, as RabbitMQ does).
    b.admin("DELETE", "/api/users/bob", None);
    bob.closed().await;
    assert_eq!(guest.delete("other").await, 1, "the other connection is unharmed");
}

#[tokio::test]
async fn sub_batch_entries_are_stored_as_they_come() {
    let (_b, mut r, s) = raw_stream("subbatch").await;
    assert_eq!(r.declare_publisher(1, "batcher", &s).await, 1);
    // One sub-batch entry (uncompressed): three records under publishing id 1.
    let mut records = Vec::new();
    for m in [&b"r1"[..], b"r2", b"r3"] {
        records.put_u32(m.len() as u32);
        records.extend_from_slice(m);
    }
    let entry = |id: u64| {
        let mut b = Vec::new();
        b.put_u64(id);
        b.put_u8(0x80); // sub-batch, no compression
        b.put_u16(3);
        b.put_u32(records.len() as u32);
        b.put_u32(records.len() as u32);
        b.extend_from_slice(&records);
        b
    };
    let mut body = vec![1];
    body.put_i32(2);
    body.extend(entry(1));
    body.extend(entry(1)); // a duplicate of it: confirmed, not stored
    r.send(0x0002, 1, &body).await;
    assert_eq!(r.confirms(1, 2).await, [1, 1]);
    r.publish(1, &[(2, b"after")]).await;
    assert_eq!(r.confirms(1, 1).await, [2]);

    assert_eq!(r.subscribe(1, &s, 1, 0, 10, &[]).await, 1);
    let f = r.expect(|f| f.key == 0x0008).await;
    let mut rd = f.reader();
    rd.u8();
    let (_, _, entries, n_records) = (rd.u8(), rd.u8(), rd.u16(), rd.u32());
    assert_eq!((entries, n_records), (1, 3), "one entry holding three records");
    let data = &f.body[1 + 48..];
    assert_eq!(data[0] & 0x80, 0x80, "a sub-batch entry");
    assert_eq!(&data[data.len() - records.len()..], &records[..]);
    let (_, chunk, recs) = r.deliver().await;
    assert_eq!((chunk, recs), (3, vec![b"after".to_vec()]), "the sub-batch took offsets 0..3");
}
