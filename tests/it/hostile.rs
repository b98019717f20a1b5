//! Hostile and careless peers: raw sockets that send what no well-behaved client sends, while a
//! well-behaved lapin connection on the same broker keeps publishing and consuming.
//!
//! Every test starts a [`Scene`]: a broker and a lapin [`Witness`] (publisher + consumer) that
//! round-trips a message before the hostile act and again after it. The `// RabbitMQ 3.10.8:`
//! comment next to each test is what a private RabbitMQ 3.10.8 (Erlang/OTP 25.2.3) answered to
//! the same bytes, measured with a raw Python socket; the test asserts that answer, or says
//! where and why Warren deliberately differs (a RabbitMQ crash is never copied).
//!
//! Cases already covered in `protocol_errors.rs` (8-byte bad headers, bad frame-end, frame
//! larger than frame_max, heartbeat on channel 1, content without publish, unknown class id,
//! truncated shortstr, method on a never-opened channel, ...) are not repeated here.

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use lapin::types::FieldTable;

use crate::common::{Broker, exclusive_queue, publish_to, text, unique, within};
use crate::protocol_errors::publish_args;
use crate::raw::*;

// ---------------------------------------------------------------------------------------------
// The scene: a broker and a well-behaved witness connection
// ---------------------------------------------------------------------------------------------

/// A lapin connection with a publisher channel and a consumer on an exclusive queue.
struct Witness {
    conn: lapin::Connection,
    publisher: lapin::Channel,
    queue: String,
    consumer: lapin::Consumer,
    sent: usize,
}

impl Witness {
    async fn start(b: &Broker) -> Witness {
        let conn = b.connect().await;
        let publisher = conn.create_channel().await.expect("publisher channel");
        let consuming = conn.create_channel().await.expect("consumer channel");
        let queue = exclusive_queue(&consuming).await;
        let consumer = within(
            "basic.consume",
            consuming.basic_consume(
                queue.as_str().into(),
                "witness".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await
        .expect("witness basic.consume");
        let mut w = Witness { conn, publisher, queue, consumer, sent: 0 };
        w.round_trip().await;
        w
    }

    /// Publish one message and consume (and ack) it.
    async fn round_trip(&mut self) {
        self.sent += 1;
        let body = format!("witness message {}", self.sent);
        publish_to(&self.publisher, &self.queue, &body).await;
        let delivery = within("the witness's own message", self.consumer.next())
            .await
            .expect("witness consumer ended")
            .expect("witness consumer error");
        assert_eq!(text(&delivery.data), body, "witness got its own message back, in order");
        delivery.acker.ack(BasicAckOptions::default()).await.expect("witness ack");
    }

    /// Still publishing and consuming: a few more round trips, then a clean close.
    async fn assert_unharmed(mut self) {
        for _ in 0..3 {
            self.round_trip().await;
        }
        within("witness close", self.conn.close(200, "bye".into())).await.expect("witness close");
    }
}

struct Scene {
    b: Broker,
    witness: Witness,
}

impl Scene {
    async fn start() -> Scene {
        let b = Broker::start();
        let witness = Witness::start(&b).await;
        Scene { b, witness }
    }

    fn addr(&self) -> &str {
        &self.b.addr
    }

    /// A raw connection, handshake done, channel 1 open.
    async fn victim(&self) -> RawConn {
        let mut c = RawConn::open(&self.b.addr).await;
        c.open_channel(1).await;
        c
    }

    /// The witness still round-trips messages and a fresh connection works.
    async fn finish(self) {
        self.witness.assert_unharmed().await;
        assert_broker_healthy(&self.b.addr).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding helpers
// ---------------------------------------------------------------------------------------------

/// A field value nested `depth` levels deep around a void: `A` arrays (5 bytes a level) or `F`
/// tables with an empty key (6 bytes a level).
fn nested(depth: usize, table: bool) -> Vec<u8> {
    let mut v = vec![b'V'];
    for _ in 0..depth {
        let mut outer = Vec::with_capacity(v.len() + 6);
        if table {
            outer.push(b'F');
            outer.extend_from_slice(&(v.len() as u32 + 1).to_be_bytes());
            outer.push(0);
        } else {
            outer.push(b'A');
            outer.extend_from_slice(&(v.len() as u32).to_be_bytes());
        }
        outer.extend_from_slice(&v);
        v = outer;
    }
    v
}

/// A field table (with its length) holding one entry `key` → the given encoded value.
fn table_with(key: &str, value: &[u8]) -> Vec<u8> {
    let mut body = vec![key.len() as u8];
    body.extend_from_slice(key.as_bytes());
    body.extend_from_slice(value);
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// A short string of raw bytes (not necessarily UTF-8).
fn shortstr_bytes(s: &[u8]) -> Vec<u8> {
    let mut out = vec![s.len() as u8];
    out.extend_from_slice(s);
    out
}

const EMPTY_TABLE: [u8; 4] = [0, 0, 0, 0];

/// queue.declare of `name` (no flags) with a raw arguments table.
fn queue_declare(name: &str, arguments: &[u8]) -> Args {
    Args::new().short(0).shortstr(name).bits(&[false; 5]).raw(arguments)
}

/// A complete publish (method, header, body) on `channel`.
fn publish(
    channel: u16,
    exchange: &[u8],
    routing_key: &[u8],
    mandatory: bool,
    flags: u16,
    props: &[u8],
    body: &[u8],
) -> Vec<u8> {
    let args =
        Args::new().short(0).raw(&shortstr_bytes(exchange)).raw(&shortstr_bytes(routing_key)).bits(&[mandatory, false]);
    let mut out = method_frame(channel, 60, 40, args.bytes());
    out.extend(content_header_frame(channel, 60, body.len() as u64, flags, props));
    if !body.is_empty() {
        out.extend(body_frame(channel, body));
    }
    out
}

/// Declare `name` (not exclusive, so it outlives the victim) on a fresh connection.
async fn declare_queue(addr: &str, name: &str) {
    let mut c = RawConn::open(addr).await;
    c.open_channel(1).await;
    c.send_method(1, 50, 10, &queue_declare(name, &EMPTY_TABLE)).await;
    c.expect_method(1, 50, 11).await;
    c.close().await;
}

/// Message count of `name` (passive declare on a fresh connection); deletes the queue after.
async fn message_count_then_delete(addr: &str, name: &str) -> u32 {
    let mut c = RawConn::open(addr).await;
    c.open_channel(1).await;
    c.send_method(1, 50, 10, &RawConn::queue_declare_args(name, true, false, false, false)).await;
    let ok = c.expect_method(1, 50, 11).await;
    let mut r = Reader(ok.args());
    r.shortstr();
    let count = r.long();
    c.send_method(1, 50, 40, &Args::new().short(0).shortstr(name).bits(&[false, false, false])).await;
    c.expect_method(1, 50, 41).await;
    c.close().await;
    count
}

/// The queue `name` must not exist (a passive declare on a fresh connection gets 404).
async fn assert_queue_missing(addr: &str, name: &str) {
    let mut c = RawConn::open(addr).await;
    c.open_channel(1).await;
    c.send_method(1, 50, 10, &RawConn::queue_declare_args(name, true, false, false, false)).await;
    assert_eq!(
        c.expect_channel_close(1).await,
        Close::new(404, &format!("NOT_FOUND - no queue '{name}' in vhost '/'"), 50, 10)
    );
    c.send_method(1, 20, 41, &Args::new()).await;
    c.close().await;
}

/// basic.get (no-ack) on `queue`: the get-ok's content header frame and the whole body.
async fn get_one(c: &mut RawConn, channel: u16, queue: &str) -> (Frame, Vec<u8>) {
    c.send_method(channel, 60, 70, &Args::new().short(0).shortstr(queue).bits(&[true])).await;
    c.expect_method(channel, 60, 71).await;
    let header = match c.recv().await {
        Event::Frame(f) if f.kind == FRAME_HEADER && f.channel == channel => f,
        other => panic!("expected the content header after get-ok, got {other:?}"),
    };
    let size = Reader(&header.payload[4..12]).longlong() as usize;
    let mut body = Vec::new();
    while body.len() < size {
        match c.recv().await {
            Event::Frame(f) if f.kind == FRAME_BODY && f.channel == channel => body.extend_from_slice(&f.payload),
            other => panic!("expected body frames, got {other:?}"),
        }
    }
    (header, body)
}

/// One `class.method` reply on each of `channels`, in any order (RabbitMQ's channels answer
/// independently, so open-oks of pipelined opens may arrive out of order).
async fn expect_on_each(c: &mut RawConn, channels: std::ops::RangeInclusive<u16>, class_id: u16, method_id: u16) {
    let mut missing: std::collections::BTreeSet<u16> = channels.collect();
    while !missing.is_empty() {
        match c.recv().await {
            Event::Frame(f) if f.method() == Some((class_id, method_id)) && missing.remove(&f.channel) => {}
            other => panic!(
                "expected {class_id}.{method_id} on one of {} channels still waiting, got {other:?}",
                missing.len()
            ),
        }
    }
}

/// The close must be the field-table depth error (pending on main: a bound in field-table
/// decoding answered with 501 and a clear text) on the method that carried it.
fn assert_depth_error(close: &Close, class_id: u16, method_id: u16) {
    close.assert_prefix(501, "FRAME_ERROR - ", class_id, method_id);
}

// ---------------------------------------------------------------------------------------------
// Deeply nested field values (pending on main: depth bound; today each one overflows a tokio
// worker stack and aborts the whole broker)
// ---------------------------------------------------------------------------------------------

// RabbitMQ 3.10.8: 20,000 nested arrays in client-properties make a 100 KB start-ok, above the
// pre-tune frame limit (payload 4096): no frame at all, socket reset 3.0 s later
// (log: `frame_too_large,100047,4088`). Nesting that fits 4096 bytes (800 arrays) is accepted.
#[tokio::test]
async fn start_ok_with_20000_nested_arrays_is_refused_before_auth() {
    let s = Scene::start().await;
    let mut c = RawConn::connect(s.addr()).await;
    c.send_protocol_header().await;
    c.expect_start().await;
    let props = table_with("nest", &nested(20_000, false));
    let args = Args::new().raw(&props).shortstr("PLAIN").longstr(&plain_response("guest", "guest")).shortstr("en_US");
    let _ = c.try_send(&method_frame(0, 10, 11, args.bytes())).await;
    if let Some(close) = c.expect_connection_close_or_eof().await {
        // A close is tolerated (RabbitMQ sends none before auth); it must be the size error.
        close.assert_prefix(501, "FRAME_ERROR - type 1, all octets = <<>>: {frame_too_large,", 0, 0);
    }
    s.finish().await;
}

// RabbitMQ 3.10.8: 100 nested arrays (505 bytes) in client-properties: accepted, tune follows.
#[tokio::test]
async fn start_ok_with_100_nested_arrays_is_accepted() {
    let s = Scene::start().await;
    let mut c = RawConn::connect(s.addr()).await;
    c.send_protocol_header().await;
    c.expect_start().await;
    let props = table_with("nest", &nested(100, false));
    let args = Args::new().raw(&props).shortstr("PLAIN").longstr(&plain_response("guest", "guest")).shortstr("en_US");
    c.send_method(0, 10, 11, &args).await;
    c.expect_tune().await;
    c.send_tune_ok(Tune::default()).await;
    c.send_connection_open("/").await;
    c.expect_method(0, 10, 41).await;
    c.open_channel(1).await;
    c.assert_can_declare_queue(1).await;
    c.close().await;
    s.finish().await;
}

/// Send `class.method` with `args` on channel 1 of a fresh victim and expect the depth error.
async fn nested_arguments_refused(class_id: u16, method_id: u16, args: Args) {
    let s = Scene::start().await;
    let mut c = s.victim().await;
    let _ = c.try_send(&method_frame(1, class_id, method_id, args.bytes())).await;
    assert_depth_error(&c.expect_connection_close().await, class_id, method_id);
    s.finish().await;
}

fn deep_arguments(table: bool) -> Vec<u8> {
    table_with("x-nest", &nested(20_000, table))
}

// RabbitMQ 3.10.8: queue.declare with 20,000 nested arrays (or empty-keyed tables) in an
// unknown x- argument: declare-ok. 100 levels: declare-ok. (No depth limit; Warren bounds it.)
#[tokio::test]
async fn queue_declare_arguments_nested_20000_deep_are_refused() {
    nested_arguments_refused(50, 10, queue_declare(&unique("nest"), &deep_arguments(false))).await;
}

// RabbitMQ 3.10.8: queue.bind with 20,000 nested arrays or tables: the Erlang VM SEGFAULTS
// (dmesg: `scheduler segfault in beam.smp`), the whole node is gone. 10,000 levels: bind-ok.
#[tokio::test]
async fn queue_bind_arguments_nested_20000_deep_are_refused() {
    let args = Args::new()
        .short(0)
        .shortstr("q")
        .shortstr("amq.direct")
        .shortstr("k")
        .bits(&[false])
        .raw(&deep_arguments(true));
    nested_arguments_refused(50, 20, args).await;
}

// RabbitMQ 3.10.8: queue.unbind with 20,000 nested arrays: unbind-ok.
#[tokio::test]
async fn queue_unbind_arguments_nested_20000_deep_are_refused() {
    let args = Args::new().short(0).shortstr("q").shortstr("amq.direct").shortstr("k").raw(&deep_arguments(false));
    nested_arguments_refused(50, 50, args).await;
}

// RabbitMQ 3.10.8: exchange.declare with 20,000 nested arrays or tables: declare-ok.
#[tokio::test]
async fn exchange_declare_arguments_nested_20000_deep_are_refused() {
    let args = Args::new()
        .short(0)
        .shortstr(&unique("nest-x"))
        .shortstr("direct")
        .bits(&[false; 5])
        .raw(&deep_arguments(true));
    nested_arguments_refused(40, 10, args).await;
}

// RabbitMQ 3.10.8: exchange.bind with 20,000 nested arrays or tables: the VM segfaults, as for
// queue.bind.
#[tokio::test]
async fn exchange_bind_arguments_nested_20000_deep_are_refused() {
    let args = Args::new()
        .short(0)
        .shortstr("amq.fanout")
        .shortstr("amq.direct")
        .shortstr("k")
        .bits(&[false])
        .raw(&deep_arguments(false));
    nested_arguments_refused(40, 30, args).await;
}

// RabbitMQ 3.10.8: exchange.unbind with 20,000 nested arrays: unbind-ok.
#[tokio::test]
async fn exchange_unbind_arguments_nested_20000_deep_are_refused() {
    let args = Args::new()
        .short(0)
        .shortstr("amq.fanout")
        .shortstr("amq.direct")
        .shortstr("k")
        .bits(&[false])
        .raw(&deep_arguments(false));
    nested_arguments_refused(40, 40, args).await;
}

// RabbitMQ 3.10.8: basic.consume with 20,000 nested arrays or tables: consume-ok.
#[tokio::test]
async fn basic_consume_arguments_nested_20000_deep_are_refused() {
    let args = Args::new().short(0).shortstr("q").shortstr("").bits(&[false; 4]).raw(&deep_arguments(true));
    nested_arguments_refused(60, 20, args).await;
}

// RabbitMQ 3.10.8: queue.declare/bind/unbind, exchange.declare/bind/unbind and basic.consume
// with 100 nested levels (arrays and tables) all succeed.
#[tokio::test]
async fn arguments_nested_100_deep_are_accepted_everywhere() {
    let s = Scene::start().await;
    let mut c = s.victim().await;
    for table in [false, true] {
        let args = table_with("x-nest", &nested(100, table));
        let queue = unique("nest100");
        let exchange = unique("nest100-x");
        c.send_method(
            1,
            50,
            10,
            &Args::new().short(0).shortstr(&queue).bits(&[false, false, true, false, false]).raw(&args),
        )
        .await;
        c.expect_method(1, 50, 11).await;
        c.send_method(
            1,
            40,
            10,
            &Args::new().short(0).shortstr(&exchange).shortstr("direct").bits(&[false; 5]).raw(&args),
        )
        .await;
        c.expect_method(1, 40, 11).await;
        let bind = |k: &str| Args::new().short(0).shortstr(&queue).shortstr(&exchange).shortstr(k);
        c.send_method(1, 50, 20, &bind("k").bits(&[false]).raw(&args)).await;
        c.expect_method(1, 50, 21).await;
        c.send_method(1, 50, 50, &bind("k").raw(&args)).await;
        c.expect_method(1, 50, 51).await;
        let xbind =
            Args::new().short(0).shortstr("amq.fanout").shortstr(&exchange).shortstr("k").bits(&[false]).raw(&args);
        c.send_method(1, 40, 30, &xbind).await;
        c.expect_method(1, 40, 31).await;
        c.send_method(1, 40, 40, &xbind).await;
        c.expect_method(1, 40, 51).await;
        c.send_method(1, 60, 20, &Args::new().short(0).shortstr(&queue).shortstr("").bits(&[false; 4]).raw(&args))
            .await;
        c.expect_method(1, 60, 21).await;
        c.send_method(1, 40, 20, &Args::new().short(0).shortstr(&exchange).bits(&[false, false])).await;
        c.expect_method(1, 40, 21).await;
    }
    c.close().await;
    s.finish().await;
}

// RabbitMQ 3.10.8: a `headers` property with 20,000 nested arrays (100 KB content header) or
// tables, published to a queue through the default exchange: accepted, and basic.get returns
// the content header byte for byte (RabbitMQ decodes properties lazily, without a depth limit).
// Warren decodes a message's headers when it takes the message (routing, CC/BCC, x-delay,
// deduplication and dead-lettering read them), within its nesting bound
// (`protocol::fields::MAX_NESTING`, 128): deeper headers are the depth error, 501 on the
// connection. Both depths of both container kinds are checked, and one level inside the bound
// still passes through byte for byte.
#[tokio::test]
async fn headers_property_nested_past_the_bound_is_a_depth_error() {
    let s = Scene::start().await;
    for table in [false, true] {
        for levels in [20_000, warren::protocol::fields::MAX_NESTING] {
            let mut c = s.victim().await;
            let props = table_with("h", &nested(levels, table));
            c.send(&publish(1, b"", b"nowhere", false, 0x2000, &props, b"abc")).await;
            assert_depth_error(&c.expect_connection_close().await, 0, 0);
        }
        // The headers table itself is level 1: this is the deepest accepted.
        let mut c = s.victim().await;
        let queue = unique("nest-h");
        c.send_method(1, 50, 10, &RawConn::queue_declare_args(&queue, false, false, true, false)).await;
        c.expect_method(1, 50, 11).await;
        let props = table_with("h", &nested(warren::protocol::fields::MAX_NESTING - 1, table));
        c.send(&publish(1, b"", queue.as_bytes(), false, 0x2000, &props, b"abc")).await;
        let (header, body) = get_one(&mut c, 1, &queue).await;
        let mut expected = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0x20, 0];
        expected.extend_from_slice(&props);
        assert!(header.payload == expected, "content header not passed through byte-exact");
        assert_eq!(body, b"abc");
        c.close().await;
    }
    s.finish().await;
}

// RabbitMQ 3.10.8: the same 20,000-deep `headers` published to amq.headers (which must look at
// the headers to route): accepted, nothing answered, connection fine. Warren may instead refuse
// the undecodable headers with the depth error; it must not fall over.
#[tokio::test]
async fn headers_property_nested_20000_deep_to_headers_exchange_does_not_crash() {
    let s = Scene::start().await;
    let mut c = s.victim().await;
    let props = table_with("h", &nested(20_000, false));
    // Either write may fail once the broker has refused the headers and closed.
    let _ = c.try_send(&publish(1, b"amq.headers", b"", false, 0x2000, &props, b"abc")).await;
    let declare = RawConn::queue_declare_args("", false, false, true, false);
    let _ = c.try_send(&method_frame(1, 50, 10, declare.bytes())).await;
    match c.recv().await {
        Event::Frame(f) if f.is_method(1, 50, 11) => c.close().await,
        Event::Frame(f) if f.is_method(0, 10, 50) => {
            assert_depth_error(&Close::decode(f.args()), 0, 0);
            let _ = c.try_send(&method_frame(0, 10, 51, &[])).await;
            c.expect_eof().await;
        }
        other => panic!("expected declare-ok or a depth error, got {other:?}"),
    }
    s.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Not AMQP at all
// ---------------------------------------------------------------------------------------------

/// A TLS 1.3 ClientHello as a TLS client would send it (201 bytes).
fn tls_client_hello() -> Vec<u8> {
    let mut hello = vec![0x16, 0x03, 0x01, 0x00, 0xc4, 0x01, 0x00, 0x00, 0xc0, 0x03, 0x03];
    hello.extend_from_slice(&[0u8; 32]); // random
    hello.push(0); // session id
    hello.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]); // one cipher suite
    hello.extend_from_slice(&[0x01, 0x00]); // null compression
    hello.extend_from_slice(&[0x00, 0x95]);
    hello.extend_from_slice(&[0u8; 0x95]); // extensions
    hello
}

// RabbitMQ 3.10.8: a 201-byte TLS ClientHello on the AMQP port: answers `AMQP\0\0\x09\x01` at
// once and closes the socket (reset, as the rest of the hello is unread).
#[tokio::test]
async fn tls_client_hello_gets_protocol_header_and_close() {
    let s = Scene::start().await;
    let mut c = RawConn::connect(s.addr()).await;
    let _ = c.try_send(&tls_client_hello()).await;
    assert_eq!(c.read_raw_until_eof(8).await, PROTOCOL_HEADER);
    c.expect_eof().await;
    s.finish().await;
}

// RabbitMQ 3.10.8: `GET / HTTP/1.1` with headers on the AMQP port: `AMQP\0\0\x09\x01`, then the
// socket is closed.
#[tokio::test]
async fn http_request_gets_protocol_header_and_close() {
    let s = Scene::start().await;
    let mut c = RawConn::connect(s.addr()).await;
    let _ = c.try_send(b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl/8.0\r\nAccept: */*\r\n\r\n").await;
    assert_eq!(c.read_raw_until_eof(8).await, PROTOCOL_HEADER);
    c.expect_eof().await;
    s.finish().await;
}

// RabbitMQ 3.10.8: `AMQ` then EOF: the socket is closed at once, nothing sent.
#[tokio::test]
async fn partial_protocol_header_then_eof_is_closed_silently() {
    let s = Scene::start().await;
    let mut c = RawConn::connect(s.addr()).await;
    c.send(b"AMQ").await;
    c.shutdown_write().await;
    assert_eq!(c.read_raw_until_eof(1).await, b"", "nothing is sent back");
    s.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------------------------

// RabbitMQ 3.10.8: 9 bytes of a queue.declare frame, then EOF: socket closed at once, no frame.
#[tokio::test]
async fn truncated_frame_then_eof_is_closed_silently() {
    let s = Scene::start().await;
    let mut c = s.victim().await;
    let f = method_frame(1, 50, 10, queue_declare(&unique("trunc"), &EMPTY_TABLE).bytes());
    c.send(&f[..9]).await;
    c.shutdown_write().await;
    c.expect_eof().await;
    s.finish().await;
}

// RabbitMQ 3.10.8: 2 bytes of a frame header, then EOF: socket closed at once, no frame.
#[tokio::test]
async fn truncated_frame_header_then_eof_is_closed_silently() {
    let s = Scene::start().await;
    let mut c = s.victim().await;
    c.send(&[1, 0]).await;
    c.shutdown_write().await;
    c.expect_eof().await;
    s.finish().await;
}

// RabbitMQ 3.10.8: a frame header announcing 4294967295 bytes after tune: answered at once from
// the header alone, `501 FRAME_ERROR - type 1, all octets = <<>>:
// {frame_too_large,4294967295,131064}` 0.0, socket closed 3 s later.
#[tokio::test]
async fn frame_announcing_4_gib_is_refused_from_its_header() {
    let s = Scene::start().await;
    let mut c = s.victim().await;
    c.send(&[1, 0, 1, 0xff, 0xff, 0xff, 0xff, 0, 60]).await;
    assert_eq!(
        c.expect_connection_close_frame().await,
        Close::new(501, "FRAME_ERROR - type 1, all octets = <<>>: {frame_too_large,4294967295,131064}", 0, 0)
    );
    s.finish().await;
}

// RabbitMQ 3.10.8, frame_max 4096 negotiated: body frames of 4088, 4089 and 4096 payload bytes
// are all accepted (the limit is the payload > frame_max, although the error text names
// frame_max - 8); 4097 gets `501 FRAME_ERROR - type 3, all octets = <<>>:
// {frame_too_large,4097,4088}` 0.0. Needs src/protocol/codec.rs: Warren refuses above 4088.
#[tokio::test]
async fn body_frame_of_exactly_frame_max_payload_bytes_is_accepted() {
    let s = Scene::start().await;
    let mut c = RawConn::open_with(s.addr(), Tune { frame_max: 4096, ..Tune::default() }).await;
    c.open_channel(1).await;
    let queue = unique("frame-max");
    c.send_method(1, 50, 10, &RawConn::queue_declare_args(&queue, false, false, true, false)).await;
    c.expect_method(1, 50, 11).await;
    let body = vec![b'x'; 4096];
    c.send(&publish(1, b"", queue.as_bytes(), false, 0, &[], &body)).await;
    let (_, got) = get_one(&mut c, 1, &queue).await;
    assert_eq!(got.len(), 4096);
    c.send(&publish(1, b"", queue.as_bytes(), false, 0, &[], &[b'x'; 4097])).await;
    assert_eq!(
        c.expect_connection_close_frame().await,
        Close::new(501, "FRAME_ERROR - type 3, all octets = <<>>: {frame_too_large,4097,4088}", 0, 0)
    );
    s.finish().await;
}

/// A start-ok whose frame payload is exactly `payload` bytes (padded in client-properties).
fn start_ok_of_payload(payload: usize) -> Vec<u8> {
    let tail = Args::new().shortstr("PLAIN").longstr(&plain_response("guest", "guest")).shortstr("en_US");
    // class+method (4), table length (4), key "big" (4), 'S' (1), longstr length (4).
    let pad = payload - 4 - 4 - 4 - 1 - 4 - tail.bytes().len();
    let mut value = vec![b'S'];
    value.extend_from_slice(&(pad as u32).to_be_bytes());
    value.extend(std::iter::repeat_n(b'x', pad));
    let args = Args::new().raw(&table_with("big", &value)).raw(tail.bytes());
    let f = method_frame(0, 10, 11, args.bytes());
    assert_eq!(f.len(), payload + 8);
    f
}

// RabbitMQ 3.10.8: before tune the frame limit is 4096 payload bytes: a 4096-byte start-ok is
// accepted (tune follows)...
#[tokio::test]
async fn start_ok_of_4096_bytes_is_accepted() {
    let s = Scene::start().await;
    let mut c = RawConn::connect(s.addr()).await;
    c.send_protocol_header().await;
    c.expect_start().await;
    c.send(&start_ok_of_payload(4096)).await;
    c.expect_tune().await;
    c.send_tune_ok(Tune::default()).await;
    c.send_connection_open("/").await;
    c.expect_method(0, 10, 41).await;
    c.close().await;
    s.finish().await;
}

// ...and a 4097-byte one gets no frame: the socket is reset 3.0 s later (log:
// `{frame_too_large,4097,4088}`). Pending on main (pre-tune limit): today Warren accepts it.
// A close is tolerated if it carries that error.
#[tokio::test]
async fn start_ok_of_4097_bytes_is_refused() {
    let s = Scene::start().await;
    let mut c = RawConn::connect(s.addr()).await;
    c.send_protocol_header().await;
    c.expect_start().await;
    c.send(&start_ok_of_payload(4097)).await;
    if let Some(close) = c.expect_connection_close_or_eof().await {
        assert_eq!(
            close,
            Close::new(501, "FRAME_ERROR - type 1, all octets = <<>>: {frame_too_large,4097,4088}", 0, 0)
        );
    }
    s.finish().await;
}

// RabbitMQ 3.10.8: a frame header announcing 1 MiB right after connection.start: no frame,
// socket reset 3.0 s later (pre-tune limit 4088+8). Pending on main (pre-tune limit): today
// Warren answers 501 with the post-tune limit 131064.
#[tokio::test]
async fn oversized_frame_before_tune_is_refused_with_the_pre_tune_limit() {
    let s = Scene::start().await;
    let mut c = RawConn::connect(s.addr()).await;
    c.send_protocol_header().await;
    c.expect_start().await;
    c.send(&[1, 0, 0, 0, 0x10, 0, 0]).await;
    if let Some(close) = c.expect_connection_close_or_eof().await {
        assert_eq!(
            close,
            Close::new(501, "FRAME_ERROR - type 1, all octets = <<>>: {frame_too_large,1048576,4088}", 0, 0)
        );
    }
    s.finish().await;
}

// RabbitMQ 3.10.8: a heartbeat frame carrying a payload: `501 FRAME_ERROR - type 8, all octets
// = <<"abc">>: unknown_frame` 0.0. Needs src/protocol/codec.rs (heartbeat payload is dropped
// unchecked today, so Warren answers nothing).
#[tokio::test]
async fn heartbeat_with_payload_is_frame_error() {
    let s = Scene::start().await;
    let mut c = s.victim().await;
    c.send(&frame(FRAME_HEARTBEAT, 0, b"abc")).await;
    assert_eq!(
        c.expect_connection_close().await,
        Close::new(501, "FRAME_ERROR - type 8, all octets = <<\"abc\">>: unknown_frame", 0, 0)
    );
    s.finish().await;
}

// RabbitMQ 3.10.8: a heartbeat on a channel never opened (5): `505 UNEXPECTED_FRAME - type 8,
// all octets = <<>>` 0.0.
#[tokio::test]
async fn heartbeat_on_unopened_channel_is_unexpected_frame() {
    let s = Scene::start().await;
    let mut c = s.victim().await;
    c.send(&heartbeat_frame(5)).await;
    assert_eq!(
        c.expect_connection_close().await,
        Close::new(505, "UNEXPECTED_FRAME - type 8, all octets = <<>>", 0, 0)
    );
    s.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Content frames out of place
// ---------------------------------------------------------------------------------------------

// RabbitMQ 3.10.8: a content header on channel 5, never opened: `505 UNEXPECTED_FRAME -
// expected method frame, got non method frame instead` 0.0 (Warren said 504 `expected
// 'channel.open'` before).
#[tokio::test]
async fn content_header_on_unopened_channel_is_unexpected_frame() {
    let s = Scene::start().await;
    let mut c = s.victim().await;
    c.send(&content_header_frame(5, 60, 3, 0, &[])).await;
    assert_eq!(
        c.expect_connection_close().await,
        Close::new(505, "UNEXPECTED_FRAME - expected method frame, got non method frame instead", 0, 0)
    );
    s.finish().await;
}

// RabbitMQ 3.10.8: a body frame on channel 5, never opened: the same 505, 0.0.
#[tokio::test]
async fn content_body_on_unopened_channel_is_unexpected_frame() {
    let s = Scene::start().await;
    let mut c = s.victim().await;
    c.send(&body_frame(5, b"abc")).await;
    assert_eq!(
        c.expect_connection_close().await,
        Close::new(505, "UNEXPECTED_FRAME - expected method frame, got non method frame instead", 0, 0)
    );
    s.finish().await;
}

// RabbitMQ 3.10.8: queue.declare followed by a content header: declare-ok, then `505
// UNEXPECTED_FRAME - expected method frame, got non method frame instead` 0.0.
#[tokio::test]
async fn content_header_after_a_non_content_method_is_unexpected_frame() {
    let s = Scene::start().await;
    let mut c = s.victim().await;
    let mut bytes = method_frame(1, 50, 10, RawConn::queue_declare_args("", false, false, true, false).bytes());
    bytes.extend(content_header_frame(1, 50, 0, 0, &[]));
    c.send(&bytes).await;
    // The declare-ok may come before the close (Warren, and RabbitMQ usually) or not at all
    // (RabbitMQ's reader can reject the header before the channel process has answered).
    let close = match c.recv().await {
        Event::Frame(f) if f.is_method(1, 50, 11) => c.expect_connection_close().await,
        Event::Frame(f) if f.is_method(0, 10, 50) => {
            let _ = c.try_send(&method_frame(0, 10, 51, &[])).await;
            c.expect_eof().await;
            Close::decode(f.args())
        }
        other => panic!("expected declare-ok or connection.close, got {other:?}"),
    };
    assert_eq!(close, Close::new(505, "UNEXPECTED_FRAME - expected method frame, got non method frame instead", 0, 0));
    s.finish().await;
}

// RabbitMQ 3.10.8: a body frame (even empty) after a body-size-0 header completed the message:
// `505 UNEXPECTED_FRAME - expected method frame, got non method frame instead` 0.0.
#[tokio::test]
async fn body_frame_after_a_complete_message_is_unexpected_frame() {
    let s = Scene::start().await;
    let mut c = s.victim().await;
    let mut bytes = method_frame(1, 60, 40, publish_args(&unique("nowhere"), false).bytes());
    bytes.extend(content_header_frame(1, 60, 0, 0, &[]));
    bytes.extend(body_frame(1, b""));
    c.send(&bytes).await;
    assert_eq!(
        c.expect_connection_close().await,
        Close::new(505, "UNEXPECTED_FRAME - expected method frame, got non method frame instead", 0, 0)
    );
    s.finish().await;
}

// RabbitMQ 3.10.8: body-size 3 then a 5-byte body frame: nothing at first (the content never
// completes), the next method then gets `505 UNEXPECTED_FRAME - expected content body, got non
// content body frame instead` 60.40; the message is lost. RabbitMQ 4.x (and Warren) answer at
// once `501 FRAME_ERROR - content body frame exceeds remaining content size` 60.40. Either
// way the connection is closed on 60.40 and nothing is enqueued.
#[tokio::test]
async fn body_longer_than_announced_closes_the_connection() {
    let s = Scene::start().await;
    let queue = unique("long-body");
    declare_queue(s.addr(), &queue).await;
    let mut c = s.victim().await;
    let mut bytes = method_frame(1, 60, 40, publish_args(&queue, false).bytes());
    bytes.extend(content_header_frame(1, 60, 3, 0, &[]));
    bytes.extend(body_frame(1, b"abcde"));
    bytes.extend(method_frame(1, 60, 10, Args::new().long(0).short(10).bits(&[false]).bytes()));
    let _ = c.try_send(&bytes).await;
    let close = c.expect_connection_close().await;
    assert!(
        close == Close::new(501, "FRAME_ERROR - content body frame exceeds remaining content size", 60, 40)
            || close
                == Close::new(
                    505,
                    "UNEXPECTED_FRAME - expected content body, got non content body frame instead",
                    60,
                    40
                ),
        "{close:?}"
    );
    assert_eq!(message_count_then_delete(s.addr(), &queue).await, 0, "the overlong message is not enqueued");
    s.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Unknown methods
// ---------------------------------------------------------------------------------------------

// RabbitMQ 3.10.8: method 60.999 (unknown method of a known class): the TCP connection is
// dropped at once without a frame. Warren answers `540 NOT_IMPLEMENTED - unknown method
// {60,999}` 60.999 first (see the reference's interop pitfall 14); both pass.
#[tokio::test]
async fn unknown_method_of_known_class_closes_the_connection() {
    let s = Scene::start().await;
    let mut c = s.victim().await;
    c.send(&method_frame(1, 60, 999, &[])).await;
    if let Some(close) = c.expect_connection_close_or_eof().await {
        assert_eq!(close, Close::new(540, "NOT_IMPLEMENTED - unknown method {60,999}", 60, 999));
    }
    s.finish().await;
}

// RabbitMQ 3.10.8: method 10.99 on channel 0: TCP dropped without a frame; Warren: 540.
#[tokio::test]
async fn unknown_connection_method_closes_the_connection() {
    let s = Scene::start().await;
    let mut c = s.victim().await;
    c.send(&method_frame(0, 10, 99, &[])).await;
    if let Some(close) = c.expect_connection_close_or_eof().await {
        assert_eq!(close, Close::new(540, "NOT_IMPLEMENTED - unknown method {10,99}", 10, 99));
    }
    s.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Lying lengths
// ---------------------------------------------------------------------------------------------

/// queue.declare "lie", auto-delete, with the given raw bytes where the arguments go.
fn lying_declare(arguments: &[u8]) -> Vec<u8> {
    method_frame(
        1,
        50,
        10,
        Args::new().short(0).shortstr("lie").bits(&[false, false, false, true, false]).raw(arguments).bytes(),
    )
}

// RabbitMQ 3.10.8: an arguments table claiming 1000 bytes in a 14-byte payload: `501
// FRAME_ERROR - cannot decode <<0,0,3,108,105,101,8,0,0,3,232,1,107,86>>` 50.10.
#[tokio::test]
async fn table_length_past_the_frame_is_frame_error() {
    let s = Scene::start().await;
    let mut c = s.victim().await;
    let mut arguments = 1000u32.to_be_bytes().to_vec();
    arguments.extend_from_slice(b"\x01kV");
    c.send(&lying_declare(&arguments)).await;
    assert_eq!(
        c.expect_connection_close().await,
        Close::new(501, "FRAME_ERROR - cannot decode <<0,0,3,108,105,101,8,0,0,3,232,1,107,86>>", 50, 10)
    );
    s.finish().await;
}

/// RabbitMQ 3.10.8 drops the TCP connection without a frame when a value inside a well-sized
/// table lies (its table parser crashes); Warren answers `501 FRAME_ERROR - cannot decode
/// <<...>>` on the method first. Both pass; nothing else does.
async fn lying_table_value(value: &[u8]) {
    let s = Scene::start().await;
    let mut c = s.victim().await;
    let mut entries = b"\x01k".to_vec();
    entries.extend_from_slice(value);
    let mut arguments = (entries.len() as u32).to_be_bytes().to_vec();
    arguments.extend_from_slice(&entries);
    c.send(&lying_declare(&arguments)).await;
    if let Some(close) = c.expect_connection_close_or_eof().await {
        close.assert_prefix(501, "FRAME_ERROR - cannot decode <<", 50, 10);
    }
    s.finish().await;
}

// RabbitMQ 3.10.8: a long string claiming 1000 bytes (3 present) inside the table: TCP dropped.
#[tokio::test]
async fn long_string_length_past_the_frame_closes_the_connection() {
    let mut value = b"S".to_vec();
    value.extend_from_slice(&1000u32.to_be_bytes());
    value.extend_from_slice(b"abc");
    lying_table_value(&value).await;
}

// RabbitMQ 3.10.8: an array claiming 1000 bytes (1 present) inside the table: TCP dropped.
#[tokio::test]
async fn array_length_past_the_frame_closes_the_connection() {
    let mut value = b"A".to_vec();
    value.extend_from_slice(&1000u32.to_be_bytes());
    value.push(b'V');
    lying_table_value(&value).await;
}

// RabbitMQ 3.10.8: a table key claiming 9 bytes with 1 left in the table: TCP dropped.
#[tokio::test]
async fn short_string_key_past_the_table_closes_the_connection() {
    let s = Scene::start().await;
    let mut c = s.victim().await;
    c.send(&lying_declare(&[0, 0, 0, 2, 9, b'k'])).await;
    if let Some(close) = c.expect_connection_close_or_eof().await {
        assert_eq!(close, Close::new(501, "FRAME_ERROR - cannot decode <<0,0,3,108,105,101,8,0,0,0,2,9,107>>", 50, 10));
    }
    s.finish().await;
}

// RabbitMQ 3.10.8: 8 bytes of junk after a complete queue.declare: `501 FRAME_ERROR - cannot
// decode <<0,0,0,8,0,0,0,0,106,117,110,107,106,117,110,107>>` 50.10. Needs
// src/protocol/codec.rs: Warren ignores trailing bytes today and declares the queue.
#[tokio::test]
async fn trailing_bytes_after_method_arguments_are_frame_error() {
    let s = Scene::start().await;
    let mut c = s.victim().await;
    let args =
        Args::new().short(0).shortstr("").bits(&[false, false, false, true, false]).raw(&EMPTY_TABLE).raw(b"junkjunk");
    c.send_method(1, 50, 10, &args).await;
    assert_eq!(
        c.expect_connection_close().await,
        Close::new(501, "FRAME_ERROR - cannot decode <<0,0,0,8,0,0,0,0,106,117,110,107,106,117,110,107>>", 50, 10)
    );
    s.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Channel 0 misuse
// ---------------------------------------------------------------------------------------------

async fn channel_0_misuse(bytes: Vec<u8>, expected: Close) {
    let s = Scene::start().await;
    let mut c = s.victim().await;
    c.send(&bytes).await;
    assert_eq!(c.expect_connection_close().await, expected);
    s.finish().await;
}

// RabbitMQ 3.10.8: channel.open on channel 0: `504 CHANNEL_ERROR - unexpected method in
// connection state running` 20.10.
#[tokio::test]
async fn channel_open_on_channel_0_is_channel_error() {
    let bytes = method_frame(0, 20, 10, Args::new().shortstr("").bytes());
    channel_0_misuse(bytes, Close::new(504, "CHANNEL_ERROR - unexpected method in connection state running", 20, 10))
        .await;
}

// RabbitMQ 3.10.8: basic.publish (and its header) on channel 0: the same 504, on 60.40.
#[tokio::test]
async fn publish_on_channel_0_is_channel_error() {
    let mut bytes = method_frame(0, 60, 40, publish_args("x", false).bytes());
    bytes.extend(content_header_frame(0, 60, 0, 0, &[]));
    channel_0_misuse(bytes, Close::new(504, "CHANNEL_ERROR - unexpected method in connection state running", 60, 40))
        .await;
}

// RabbitMQ 3.10.8: connection.close-ok never asked for: the same 504, on 10.51.
#[tokio::test]
async fn unsolicited_connection_close_ok_is_channel_error() {
    channel_0_misuse(
        method_frame(0, 10, 51, &[]),
        Close::new(504, "CHANNEL_ERROR - unexpected method in connection state running", 10, 51),
    )
    .await;
}

// RabbitMQ 3.10.8: connection.open on channel 1: `503 COMMAND_INVALID - unimplemented method`
// 10.40.
#[tokio::test]
async fn connection_method_on_channel_1_is_command_invalid() {
    let bytes = method_frame(1, 10, 40, Args::new().shortstr("/").shortstr("").bits(&[false]).bytes());
    channel_0_misuse(bytes, Close::new(503, "COMMAND_INVALID - unimplemented method", 10, 40)).await;
}

// ---------------------------------------------------------------------------------------------
// After connection.close
// ---------------------------------------------------------------------------------------------

// RabbitMQ 3.10.8: connection.close and a queue.declare in one write: close-ok, the declare is
// not run, and the socket is dropped once the client closes it (RabbitMQ waits up to 30 s for
// that; Warren 1 s).
#[tokio::test]
async fn methods_after_client_close_are_ignored() {
    let s = Scene::start().await;
    let mut c = s.victim().await;
    let queue = unique("after-close");
    let mut bytes = method_frame(0, 10, 50, Args::new().short(200).shortstr("bye").short(0).short(0).bytes());
    bytes.extend(method_frame(1, 50, 10, queue_declare(&queue, &EMPTY_TABLE).bytes()));
    c.send(&bytes).await;
    c.expect_method(0, 10, 51).await;
    drop(c);
    assert_queue_missing(s.addr(), &queue).await;
    s.finish().await;
}

// RabbitMQ 3.10.8: after the broker's connection.close (504 on a never-opened channel), a
// queue.declare and a whole publish are ignored, connection.close is answered with close-ok,
// and the socket closes on the client's close-ok.
#[tokio::test]
async fn methods_after_server_close_are_ignored() {
    let s = Scene::start().await;
    let mut c = s.victim().await;
    c.send_method(7, 50, 10, &queue_declare("x", &EMPTY_TABLE)).await;
    let close = match c.recv().await {
        Event::Frame(f) if f.is_method(0, 10, 50) => Close::decode(f.args()),
        other => panic!("expected connection.close, got {other:?}"),
    };
    assert_eq!(close, Close::new(504, "CHANNEL_ERROR - expected 'channel.open'", 50, 10));
    let queue = unique("after-server-close");
    let mut bytes = method_frame(1, 50, 10, queue_declare(&queue, &EMPTY_TABLE).bytes());
    bytes.extend(publish(1, b"", queue.as_bytes(), true, 0, &[], b"abc"));
    bytes.extend(method_frame(0, 10, 50, Args::new().short(200).shortstr("bye").short(0).short(0).bytes()));
    c.send(&bytes).await;
    c.expect_method(0, 10, 51).await;
    let _ = c.try_send(&method_frame(0, 10, 51, &[])).await;
    c.expect_eof().await;
    assert_queue_missing(s.addr(), &queue).await;
    s.finish().await;
}

// RabbitMQ 3.10.8: the client's connection.close crossing the broker's (sent in the same write
// as the failing method): the broker's 504 close arrives and the client's close is NOT
// answered; the socket closes on the client's close-ok. (When the client's close comes later,
// RabbitMQ does answer it with close-ok, as Warren always does: tolerated.)
#[tokio::test]
async fn client_close_crossing_server_close() {
    let s = Scene::start().await;
    let mut c = s.victim().await;
    let mut bytes = method_frame(7, 50, 10, queue_declare("x", &EMPTY_TABLE).bytes());
    bytes.extend(method_frame(0, 10, 50, Args::new().short(200).shortstr("bye").short(0).short(0).bytes()));
    c.send(&bytes).await;
    let close = match c.recv().await {
        Event::Frame(f) if f.is_method(0, 10, 50) => Close::decode(f.args()),
        other => panic!("expected connection.close, got {other:?}"),
    };
    assert_eq!(close, Close::new(504, "CHANNEL_ERROR - expected 'channel.open'", 50, 10));
    let _ = c.try_send(&method_frame(0, 10, 51, &[])).await;
    match c.recv().await {
        Event::Eof => {}
        Event::Frame(f) if f.is_method(0, 10, 51) => c.expect_eof().await,
        Event::Frame(f) => panic!("expected close-ok or EOF, got {f:?}"),
    }
    s.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Channels
// ---------------------------------------------------------------------------------------------

// RabbitMQ 3.10.8: with channel_max 2047, channels 1..=2047 all open; opening channel 2048 then
// gets `530 NOT_ALLOWED - number of channels opened (2047) has reached the negotiated
// channel_max (2047)` 0.0.
#[tokio::test]
async fn opening_channel_2048_with_2047_open_is_not_allowed() {
    let s = Scene::start().await;
    let mut c = s.victim().await;
    let mut bytes = Vec::new();
    for ch in 2..=2047u16 {
        bytes.extend(method_frame(ch, 20, 10, Args::new().shortstr("").bytes()));
    }
    c.send(&bytes).await;
    expect_on_each(&mut c, 2..=2047, 20, 11).await;
    c.send_method(2048, 20, 10, &Args::new().shortstr("")).await;
    assert_eq!(
        c.expect_connection_close().await,
        Close::new(
            530,
            "NOT_ALLOWED - number of channels opened (2047) has reached the negotiated channel_max (2047)",
            0,
            0
        )
    );
    s.finish().await;
}

// RabbitMQ 3.10.8: channels 2..=2047 opened and closed, three rounds (6138 opens, 6138 closes):
// every open-ok and close-ok arrives, and channel 1 still works.
#[tokio::test]
async fn channels_2047_opened_and_closed_in_a_loop() {
    let s = Scene::start().await;
    let mut c = s.victim().await;
    for _ in 0..3 {
        let mut opens = Vec::new();
        let mut closes = Vec::new();
        for ch in 2..=2047u16 {
            opens.extend(method_frame(ch, 20, 10, Args::new().shortstr("").bytes()));
            closes.extend(method_frame(ch, 20, 40, Args::new().short(200).shortstr("").short(0).short(0).bytes()));
        }
        c.send(&opens).await;
        expect_on_each(&mut c, 2..=2047, 20, 11).await;
        c.send(&closes).await;
        expect_on_each(&mut c, 2..=2047, 20, 41).await;
    }
    c.assert_can_declare_queue(1).await;
    c.close().await;
    s.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Non-UTF-8 short strings (pending on main)
// ---------------------------------------------------------------------------------------------

// RabbitMQ 3.10.8: a queue name that is not UTF-8 (`q-\xff\xfe-\xc3`) in queue.declare: `501
// FRAME_ERROR - Malformed UTF-8 in shortstr` 0.0 (the same for queue.bind's routing key,
// exchange.declare's name, basic.consume's tag, basic.get's and queue.delete's queue); the
// socket closes on close-ok (30 s without it). Warren today: `501 FRAME_ERROR - cannot decode
// <<...>>` 50.10.
#[tokio::test]
async fn non_utf8_queue_name_is_malformed_utf8_frame_error() {
    let s = Scene::start().await;
    let mut c = s.victim().await;
    let args = Args::new()
        .short(0)
        .raw(&shortstr_bytes(b"q-\xff\xfe-\xc3"))
        .bits(&[false, false, true, false, false])
        .raw(&EMPTY_TABLE);
    c.send_method(1, 50, 10, &args).await;
    assert_eq!(c.expect_connection_close().await, Close::new(501, "FRAME_ERROR - Malformed UTF-8 in shortstr", 0, 0));
    s.finish().await;
}

// RabbitMQ 3.10.8: basic.publish is not checked: a routing key `k\xff` is taken as bytes; with
// mandatory and no such queue the message comes back in basic.return 312 NO_ROUTE carrying the
// routing key byte for byte. An exchange name `x\xff` gets channel.close `404 NOT_FOUND - no
// exchange 'x\xff' in vhost '/'` 60.40 with the raw byte in the text. Warren today: 501.
#[tokio::test]
async fn non_utf8_routing_key_is_taken_as_bytes() {
    let s = Scene::start().await;
    let mut c = s.victim().await;
    c.send(&publish(1, b"", b"k\xff", true, 0, &[], b"abc")).await;
    let ret = c.expect_method(1, 60, 50).await;
    let mut r = Reader(ret.args());
    assert_eq!(r.short(), 312);
    assert_eq!(r.shortstr(), "NO_ROUTE");
    assert_eq!(r.shortstr(), "", "exchange");
    let n = r.octet() as usize;
    assert_eq!(r.take(n), b"k\xff", "routing key returned byte for byte");
    match c.recv().await {
        Event::Frame(f) if f.kind == FRAME_HEADER && f.channel == 1 => {}
        other => panic!("expected the returned message's header, got {other:?}"),
    }
    match c.recv().await {
        Event::Frame(f) if f.kind == FRAME_BODY && f.channel == 1 => assert_eq!(f.payload, b"abc"),
        other => panic!("expected the returned message's body, got {other:?}"),
    }
    c.send(&publish(1, b"x\xff", b"k", false, 0, &[], b"abc")).await;
    let close = match c.recv().await {
        Event::Frame(f) if f.is_method(1, 20, 40) => Close::decode(f.args()),
        other => panic!("expected channel.close, got {other:?}"),
    };
    // Reader::shortstr is lossy: the raw 0xff byte reads back as U+FFFD.
    assert_eq!(close, Close::new(404, "NOT_FOUND - no exchange 'x\u{fffd}' in vhost '/'", 60, 40));
    c.send_method(1, 20, 41, &Args::new()).await;
    c.open_channel(1).await;
    c.assert_can_declare_queue(1).await;
    c.close().await;
    s.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Content-header property lists
// ---------------------------------------------------------------------------------------------

/// Publish a 3-byte message with property `flags` and raw property bytes to a fresh queue and
/// expect the connection to be closed for it, with nothing enqueued.
async fn bad_property_list(flags: u16, props: &[u8]) {
    let s = Scene::start().await;
    let queue = unique("bad-props");
    declare_queue(s.addr(), &queue).await;
    let mut c = s.victim().await;
    let _ = c.try_send(&publish(1, b"", queue.as_bytes(), false, flags, props, b"abc")).await;
    let close = c.expect_connection_close().await;
    assert!(
        close == Close::new(541, "INTERNAL_ERROR", 0, 0)
            || (close.code == 501
                && close.text.starts_with("FRAME_ERROR - cannot decode content header <<")
                && (close.class_id, close.method_id) == (0, 0)),
        "{close:?}"
    );
    assert_eq!(message_count_then_delete(s.addr(), &queue).await, 0, "the message is not enqueued");
    s.finish().await;
}

// RabbitMQ 3.10.8: flags announce content-type, the header frame holds a shortstr claiming 10
// bytes with 4 present. Nothing happens at the header (RabbitMQ decodes properties lazily);
// once the body completes the message, the channel decodes them and crashes: connection.close
// `541 INTERNAL_ERROR` 0.0 at once, the message is not enqueued. With the header alone and no
// body: nothing within 3 s. Warren refuses at the header frame: `501 FRAME_ERROR - cannot
// decode content header <<...>>` 0.0. Both pass.
#[tokio::test]
async fn truncated_property_list_closes_the_connection() {
    bad_property_list(0x8000, b"\x0atext").await;
}

// RabbitMQ 3.10.8: flags announce delivery-mode but the property list is empty: 541 as above.
#[tokio::test]
async fn missing_property_closes_the_connection() {
    bad_property_list(0x1000, b"").await;
}

// RabbitMQ 3.10.8: a content-type `text` followed by 4 bytes no flag accounts for: 541 as
// above once the body arrives. Needs src/protocol/properties.rs: Warren's property scan
// ignores trailing bytes today and delivers them.
#[tokio::test]
async fn trailing_bytes_after_property_list_close_the_connection() {
    bad_property_list(0x8000, b"\x04textJUNK").await;
}

// RabbitMQ 3.10.8: flags 0x0001 (a continuation flag word announced but absent): accepted, and
// basic.get returns the content header byte for byte (flags 0x0001, no properties).
#[tokio::test]
async fn continuation_flag_without_more_flags_passes_through() {
    let s = Scene::start().await;
    let mut c = s.victim().await;
    let queue = unique("cont-flag");
    c.send_method(1, 50, 10, &RawConn::queue_declare_args(&queue, false, false, true, false)).await;
    c.expect_method(1, 50, 11).await;
    c.send(&publish(1, b"", queue.as_bytes(), false, 0x0001, &[], b"abc")).await;
    let (header, body) = get_one(&mut c, 1, &queue).await;
    assert_eq!(header.payload, [0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 1]);
    assert_eq!(body, b"abc");
    c.close().await;
    s.finish().await;
}
