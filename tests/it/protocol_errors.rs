//! Protocol-level behaviour seen through a raw socket: protocol header, handshake and
//! authentication, heartbeats, framing errors, channel/method errors, channel-close races,
//! message size limit, graceful shutdown, and a seeded fuzz run.
//!
//! Every error case checks the exact close (code, reply text, class id, method id), that the
//! broker is still healthy afterwards, and where it matters that a connection opened before the
//! error is untouched. Reply texts that embed an Erlang dump of the offending bytes
//! (`FRAME_ERROR - type 1, all octets = <<...>>: ...`) are checked by their fixed prefix only.

use std::time::{Duration, Instant};

use crate::common::{Broker, unique};
use crate::raw::*;

/// queue.declare passive for a queue that does not exist (provokes a 404 channel close).
fn passive_declare(name: &str) -> Args {
    RawConn::queue_declare_args(name, true, false, false, false)
}

/// basic.publish to the default exchange with the given routing key and `immediate` flag.
pub(crate) fn publish_args(routing_key: &str, immediate: bool) -> Args {
    Args::new().short(0).shortstr("").shortstr(routing_key).bits(&[false, immediate])
}

// ---------------------------------------------------------------------------------------------
// Protocol header
// ---------------------------------------------------------------------------------------------

async fn assert_header_refused(addr: &str, header: &[u8]) {
    let mut c = RawConn::connect(addr).await;
    c.send(header).await;
    let reply = c.read_raw_until_eof(8).await;
    assert_eq!(reply, PROTOCOL_HEADER, "reply to header {header:?}");
    c.expect_eof().await;
}

#[tokio::test]
async fn unsupported_protocol_header_gets_0_9_1_header_and_close() {
    let b = Broker::start();
    let bystander = Bystander::open(&b.addr).await;
    assert_header_refused(&b.addr, b"AMQP\x00\x00\x09\x02").await;
    assert_header_refused(&b.addr, b"AMQP\x00\x00\x0a\x00").await;
    assert_header_refused(&b.addr, b"HTTP/1.1").await;
    assert_header_refused(&b.addr, b"GET / HT").await;
    assert_header_refused(&b.addr, &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01]).await;
    assert_header_refused(&b.addr, &[0xff, 0x00, 0x13, 0x37, 0xde, 0xad, 0xbe, 0xef]).await;
    bystander.assert_untouched().await;
    assert_broker_healthy(&b.addr).await;
}

// ---------------------------------------------------------------------------------------------
// Handshake and authentication
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn connection_start_advertises_version_mechanisms_locales_and_properties() {
    let b = Broker::start();
    let mut c = RawConn::connect(&b.addr).await;
    c.send_protocol_header().await;
    let start = c.expect_start().await;
    assert_eq!((start.version_major, start.version_minor), (0, 9));
    let mechanisms: Vec<&str> = start.mechanisms.split(' ').collect();
    assert!(mechanisms.contains(&"PLAIN"), "mechanisms {:?}", start.mechanisms);
    assert!(mechanisms.contains(&"AMQPLAIN"), "mechanisms {:?}", start.mechanisms);
    assert!(start.locales.split(' ').any(|l| l == "en_US"), "locales {:?}", start.locales);
    let props = &start.server_properties;
    for key in ["product", "version"] {
        match lookup(props, key) {
            Some(Value::Bytes(s)) if !s.is_empty() => {}
            other => panic!("server-properties {key} should be a non-empty longstr, got {other:?}"),
        }
    }
    let Some(Value::Table(caps)) = lookup(props, "capabilities") else {
        panic!("server-properties capabilities should be a table: {props:?}");
    };
    let mut keys: Vec<&str> = caps.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "authentication_failure_close",
            "basic.nack",
            "connection.blocked",
            "consumer_cancel_notify",
            "consumer_priorities",
            "direct_reply_to",
            "exchange_exchange_bindings",
            "per_consumer_qos",
            "publisher_confirms",
        ]
    );
    assert!(caps.iter().all(|(_, v)| *v == Value::Bool(true)), "all capabilities true: {caps:?}");
    // Finish the handshake so the broker sees a well-behaved client.
    c.send_start_ok("PLAIN", &plain_response("guest", "guest")).await;
    let tune = c.expect_tune().await;
    assert!(tune.frame_max >= 4096, "proposed frame_max {}", tune.frame_max);
    c.send_tune_ok(Tune::default()).await;
    c.send_connection_open("/").await;
    c.expect_method(0, 10, 41).await;
    c.close().await;
}

#[tokio::test]
async fn amqplain_login_with_length_less_table_succeeds() {
    let b = Broker::start();
    let mut c = RawConn::connect(&b.addr).await;
    c.send_protocol_header().await;
    c.expect_start().await;
    c.send_start_ok("AMQPLAIN", &amqplain_response("guest", "guest")).await;
    c.expect_tune().await;
    c.send_tune_ok(Tune::default()).await;
    c.send_connection_open("/").await;
    c.expect_method(0, 10, 41).await;
    c.open_channel(1).await;
    c.assert_can_declare_queue(1).await;
    c.close().await;
}

#[tokio::test]
async fn wrong_password_gets_access_refused_close() {
    let b = Broker::start();
    let bystander = Bystander::open(&b.addr).await;
    let mut c = RawConn::connect(&b.addr).await;
    c.send_protocol_header().await;
    c.expect_start().await;
    // send_start_ok advertises capabilities.authentication_failure_close = true.
    c.send_start_ok("PLAIN", &plain_response("guest", "not-the-password")).await;
    assert_eq!(
        c.expect_connection_close().await,
        Close::new(
            403,
            "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile.",
            0,
            0
        )
    );
    bystander.assert_untouched().await;
    assert_broker_healthy(&b.addr).await;
}

#[tokio::test]
async fn tune_ok_frame_max_below_4096_is_refused() {
    let b = Broker::start();
    let bystander = Bystander::open(&b.addr).await;
    let mut c = RawConn::connect(&b.addr).await;
    c.send_protocol_header().await;
    c.expect_start().await;
    c.send_start_ok("PLAIN", &plain_response("guest", "guest")).await;
    c.expect_tune().await;
    c.send_tune_ok(Tune { frame_max: 1000, ..Tune::default() }).await;
    // The broker may already be closing; a failed write is fine.
    let _ = c.try_send(&method_frame(0, 10, 40, Args::new().shortstr("/").shortstr("").bits(&[false]).bytes())).await;
    // RabbitMQ 3.10 closes the socket without a frame (about 3 s later); a 530 close with the
    // negotiation text is also acceptable. Either way, no open-ok: the connection is unusable.
    if let Some(close) = c.expect_connection_close_or_eof().await {
        assert_eq!(
            close,
            Close::new(
                530,
                "NOT_ALLOWED - failed to negotiate connection parameters: negotiated frame_max = 1000 is lower than the minimum allowed value (4096)",
                0,
                0
            )
        );
    }
    bystander.assert_untouched().await;
    assert_broker_healthy(&b.addr).await;
}

#[tokio::test]
async fn silent_client_gets_heartbeats_then_is_disconnected() {
    let b = Broker::start();
    let bystander = Bystander::open(&b.addr).await;
    let mut c = RawConn::open_with(&b.addr, Tune { heartbeat: 1, ..Tune::default() }).await;
    let started = Instant::now();
    let mut heartbeats = 0;
    // Send nothing; the broker must heartbeat us and then drop the socket (no connection.close).
    loop {
        match c.recv_timeout(WAIT).await {
            None => {
                panic!("broker neither sent a frame nor closed a silent heartbeat=1 connection")
            }
            Some(Event::Frame(f)) => {
                assert!(f.is_heartbeat() && f.channel == 0 && f.payload.is_empty(), "expected heartbeat, got {f:?}");
                heartbeats += 1;
            }
            Some(Event::Eof) => break,
        }
    }
    let elapsed = started.elapsed();
    assert!(heartbeats >= 1, "broker sent no heartbeat before closing");
    assert!(elapsed >= Duration::from_secs(1), "closed after {elapsed:?}, before one heartbeat timeout");
    assert!(elapsed <= Duration::from_secs(6), "closed only after {elapsed:?}");
    bystander.assert_untouched().await;
    assert_broker_healthy(&b.addr).await;
}

#[tokio::test]
async fn client_sending_heartbeats_stays_connected() {
    let b = Broker::start();
    let mut c = RawConn::open_with(&b.addr, Tune { heartbeat: 1, ..Tune::default() }).await;
    let mut tick = tokio::time::interval(Duration::from_millis(400));
    let mut received = 0;
    // Bounded wait to show that something does NOT happen: a silent client is dropped after
    // 2-3 s at heartbeat=1; keep heartbeating for 4 s and the socket must stay open.
    let deadline = tokio::time::sleep(Duration::from_secs(4));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            _ = tick.tick() => c.send(&heartbeat_frame(0)).await,
            e = c.recv_timeout(Duration::from_secs(5)) => match e {
                Some(Event::Frame(f)) if f.is_heartbeat() && f.channel == 0 => received += 1,
                other => panic!("heartbeating connection got {other:?}"),
            },
        }
    }
    assert!(received >= 2, "broker sent {received} heartbeats in 4 s at heartbeat=1");
    c.open_channel(1).await;
    c.assert_can_declare_queue(1).await;
    c.close().await;
}

#[tokio::test]
async fn unknown_vhost_is_not_allowed() {
    let b = Broker::start();
    let bystander = Bystander::open(&b.addr).await;
    let vhost = unique("no-such-vhost");
    let mut c = RawConn::connect(&b.addr).await;
    c.send_protocol_header().await;
    c.expect_start().await;
    c.send_start_ok("PLAIN", &plain_response("guest", "guest")).await;
    c.expect_tune().await;
    c.send_tune_ok(Tune::default()).await;
    c.send_connection_open(&vhost).await;
    assert_eq!(
        c.expect_connection_close().await,
        Close::new(530, &format!("NOT_ALLOWED - vhost {vhost} not found"), 10, 40)
    );
    bystander.assert_untouched().await;
    assert_broker_healthy(&b.addr).await;
}

// ---------------------------------------------------------------------------------------------
// Frame errors
// ---------------------------------------------------------------------------------------------

/// Open a bystander and a victim connection (channel 1 open), send `bytes` on the victim,
/// and return the connection.close it gets (after which the socket must close); then check
/// bystander and broker health.
async fn provoke(tune: Tune, bytes: &[u8]) -> Close {
    provoke_and(tune, bytes, true).await
}

/// Like [`provoke`] for fatal frame errors, after which RabbitMQ stops reading and drops the
/// socket only ~3 s later whatever the client does: the close is checked, not the EOF.
async fn provoke_fatal(tune: Tune, bytes: &[u8]) -> Close {
    provoke_and(tune, bytes, false).await
}

async fn provoke_and(tune: Tune, bytes: &[u8], wait_eof: bool) -> Close {
    let b = Broker::start();
    let bystander = Bystander::open(&b.addr).await;
    let mut c = RawConn::open_with(&b.addr, tune).await;
    c.open_channel(1).await;
    c.send(bytes).await;
    let close = if wait_eof { c.expect_connection_close().await } else { c.expect_connection_close_frame().await };
    bystander.assert_untouched().await;
    assert_broker_healthy(&b.addr).await;
    close
}

#[tokio::test]
async fn bad_frame_end_octet_is_frame_error() {
    let mut bytes = method_frame(1, 60, 10, Args::new().long(0).short(10).bits(&[false]).bytes());
    *bytes.last_mut().unwrap() = 0x00;
    provoke_fatal(Tune::default(), &bytes).await.assert_prefix(501, "FRAME_ERROR - ", 0, 0);
}

#[tokio::test]
async fn frame_larger_than_frame_max_is_frame_error() {
    let tune = Tune { frame_max: 4096, ..Tune::default() };
    let bytes = body_frame(1, &[b'x'; 5000]);
    provoke_fatal(tune, &bytes).await.assert_prefix(501, "FRAME_ERROR - ", 0, 0);
}

#[tokio::test]
async fn unknown_frame_type_is_frame_error() {
    provoke(Tune::default(), &frame(9, 0, b"abc")).await.assert_prefix(501, "FRAME_ERROR - ", 0, 0);
}

#[tokio::test]
async fn heartbeat_on_channel_1_is_unexpected_frame() {
    provoke(Tune::default(), &heartbeat_frame(1)).await.assert_prefix(505, "UNEXPECTED_FRAME - ", 0, 0);
}

#[tokio::test]
async fn content_header_on_channel_0_is_unexpected_frame() {
    let bytes = content_header_frame(0, 60, 0, 0, &[]);
    provoke(Tune::default(), &bytes).await.assert_prefix(505, "UNEXPECTED_FRAME - ", 0, 0);
}

#[tokio::test]
async fn content_body_on_channel_0_is_unexpected_frame() {
    provoke(Tune::default(), &body_frame(0, b"abc")).await.assert_prefix(505, "UNEXPECTED_FRAME - ", 0, 0);
}

#[tokio::test]
async fn body_without_publish_is_unexpected_frame() {
    assert_eq!(
        provoke(Tune::default(), &body_frame(1, b"abc")).await,
        Close::new(505, "UNEXPECTED_FRAME - expected method frame, got non method frame instead", 0, 0)
    );
}

#[tokio::test]
async fn content_header_without_publish_is_unexpected_frame() {
    assert_eq!(
        provoke(Tune::default(), &content_header_frame(1, 60, 3, 0, &[])).await,
        Close::new(505, "UNEXPECTED_FRAME - expected method frame, got non method frame instead", 0, 0)
    );
}

#[tokio::test]
async fn method_while_content_header_expected_is_unexpected_frame() {
    let mut bytes = method_frame(1, 60, 40, publish_args("q", false).bytes());
    bytes.extend(method_frame(1, 60, 40, publish_args("q", false).bytes()));
    assert_eq!(
        provoke(Tune::default(), &bytes).await,
        Close::new(
            505,
            "UNEXPECTED_FRAME - expected content header for class 60, got non content header frame instead",
            60,
            40
        )
    );
}

#[tokio::test]
async fn content_header_for_wrong_class_is_unexpected_frame() {
    let mut bytes = method_frame(1, 60, 40, publish_args("q", false).bytes());
    bytes.extend(content_header_frame(1, 50, 3, 0, &[]));
    assert_eq!(
        provoke(Tune::default(), &bytes).await,
        Close::new(
            505,
            "UNEXPECTED_FRAME - expected content header for class 60, got one for class 50 instead",
            60,
            40
        )
    );
}

#[tokio::test]
async fn method_while_content_body_expected_is_unexpected_frame() {
    let mut bytes = method_frame(1, 60, 40, publish_args("q", false).bytes());
    bytes.extend(content_header_frame(1, 60, 3, 0, &[]));
    bytes.extend(method_frame(1, 60, 40, publish_args("q", false).bytes()));
    assert_eq!(
        provoke(Tune::default(), &bytes).await,
        Close::new(505, "UNEXPECTED_FRAME - expected content body, got non content body frame instead", 60, 40)
    );
}

#[tokio::test]
async fn truncated_method_arguments_are_frame_error() {
    // queue.declare: ticket 0, then a shortstr claiming 5 bytes with only 2 present.
    let bytes = method_frame(1, 50, 10, &[0, 0, 5, b'a', b'b']);
    provoke(Tune::default(), &bytes).await.assert_prefix(501, "FRAME_ERROR - ", 50, 10);
}

#[tokio::test]
async fn truncated_publish_arguments_are_frame_error() {
    // basic.publish (read by hand): ticket 0, exchange "", then a routing key claiming 9 bytes.
    let bytes = method_frame(1, 60, 40, &[0, 0, 0, 9, b'q']);
    provoke(Tune::default(), &bytes).await.assert_prefix(501, "FRAME_ERROR - ", 60, 40);
}

#[tokio::test]
async fn content_header_too_short_for_its_fields_is_frame_error() {
    // RabbitMQ 3.10.8: a 10-byte header payload is `unknown_frame`, 501, connection closed.
    let mut bytes = method_frame(1, 60, 40, publish_args("q", false).bytes());
    bytes.extend(frame(2, 1, &[0, 60, 0, 0, 0, 0, 0, 0, 0, 0]));
    assert_eq!(
        provoke_fatal(Tune::default(), &bytes).await,
        Close::new(501, "FRAME_ERROR - type 2, all octets = <<0,60,0,0,0,0,0,0,0,0>>: unknown_frame", 0, 0)
    );
}

#[tokio::test]
async fn truncated_property_list_is_internal_error_as_rabbitmq() {
    // RabbitMQ 3.10.8 decodes properties in the channel process, which crashes on a list that
    // ends early: connection.close 541 INTERNAL_ERROR (class 0, method 0). Content type, then
    // priority, announced by the flags but absent.
    for flags in [0x8000u16, 0x0800, 0x2000] {
        let mut bytes = method_frame(1, 60, 40, publish_args("q", false).bytes());
        bytes.extend(content_header_frame(1, 60, 3, flags, &[]));
        bytes.extend(body_frame(1, b"abc"));
        assert_eq!(
            provoke_fatal(Tune::default(), &bytes).await,
            Close::new(541, "INTERNAL_ERROR", 0, 0),
            "flags {flags:#x}"
        );
    }
}

#[tokio::test]
async fn property_strings_that_are_not_utf8_are_delivered_byte_exact() {
    // RabbitMQ 3.10.8 accepts any bytes in property strings and forwards the header as is.
    let b = Broker::start();
    let mut c = RawConn::open(&b.addr).await;
    c.open_channel(1).await;
    let q = unique("bytes-props");
    c.send_method(1, 50, 10, &RawConn::queue_declare_args(&q, false, false, true, false)).await;
    c.expect_method(1, 50, 11).await;
    // content-type 0xFF 0xFE, and a headers table whose key is not UTF-8.
    let mut props = vec![2, 0xFF, 0xFE];
    props.extend_from_slice(&[0, 0, 0, 4, 2, 0xC3, 0x28, b'V']);
    let header = content_header_frame(1, 60, 3, 0x8000 | 0x2000, &props);
    let mut bytes = method_frame(1, 60, 40, publish_args(&q, false).bytes());
    bytes.extend(&header);
    bytes.extend(body_frame(1, b"abc"));
    c.send(&bytes).await;
    c.send_method(1, 60, 70, &Args::new().short(0).shortstr(&q).bits(&[true])).await;
    c.expect_method(1, 60, 71).await;
    let Event::Frame(got) = c.recv().await else { panic!("expected the content header") };
    assert_eq!(got.payload, header[7..header.len() - 1], "the header is forwarded byte for byte");
    let Event::Frame(body) = c.recv().await else { panic!("expected the body") };
    assert_eq!(body.payload, b"abc");
    c.assert_can_declare_queue(1).await;
}

#[tokio::test]
async fn routing_keys_that_are_not_utf8_are_routed_and_returned_byte_exact() {
    // RabbitMQ 3.10.8 accepts any bytes as a publish's routing key: a fanout delivers it and a
    // return carries it as published; an exchange name that is not UTF-8 is simply not found.
    let b = Broker::start();
    let mut c = RawConn::open(&b.addr).await;
    c.open_channel(1).await;
    let q = unique("bytes-key");
    c.send_method(1, 50, 10, &RawConn::queue_declare_args(&q, false, false, true, false)).await;
    c.expect_method(1, 50, 11).await;
    let bind = Args::new().short(0).shortstr(&q).shortstr("amq.fanout").shortstr("").bits(&[false]).table(&[]);
    c.send_method(1, 50, 20, &bind).await;
    c.expect_method(1, 50, 21).await;
    let publish = |exchange: &str, key: &[u8], mandatory: bool| {
        let mut bytes = method_frame(
            1,
            60,
            40,
            Args::new().short(0).shortstr(exchange).octet(key.len() as u8).raw(key).bits(&[mandatory, false]).bytes(),
        );
        bytes.extend(content_header_frame(1, 60, 2, 0, &[]));
        bytes.extend(body_frame(1, b"hi"));
        bytes
    };
    c.send(&publish("amq.fanout", b"k\xff.x", false)).await;
    c.send_method(1, 60, 70, &Args::new().short(0).shortstr(&q).bits(&[true])).await;
    let ok = c.expect_method(1, 60, 71).await;
    let mut r = Reader(ok.args());
    let _tag = r.longlong();
    let _redelivered = r.octet();
    let exchange = r.shortstr();
    let n = r.octet() as usize;
    assert_eq!((exchange.as_str(), r.take(n)), ("amq.fanout", &b"k\xff.x"[..]));
    for _ in 0..2 {
        c.recv().await; // header and body
    }
    // Unroutable and mandatory: the return names the key exactly as published.
    c.send(&publish("amq.direct", b"z\xfe", true)).await;
    let ret = c.expect_method(1, 60, 50).await;
    let mut r = Reader(ret.args());
    assert_eq!((r.short(), r.shortstr(), r.shortstr()), (312, "NO_ROUTE".to_string(), "amq.direct".to_string()));
    let n = r.octet() as usize;
    assert_eq!(r.take(n), b"z\xfe");
    for _ in 0..2 {
        c.recv().await;
    }
    c.assert_can_declare_queue(1).await;
    // An exchange name that is not UTF-8 names no exchange: 404 on the channel.
    let mut bytes =
        method_frame(1, 60, 40, Args::new().short(0).raw(&[2, b'e', 0xFF]).shortstr("k").bits(&[false, false]).bytes());
    bytes.extend(content_header_frame(1, 60, 0, 0, &[]));
    c.send(&bytes).await;
    c.expect_channel_close(1).await.assert_prefix(404, "NOT_FOUND - no exchange 'e", 60, 40);
}

// ---------------------------------------------------------------------------------------------
// Channel and method errors
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn method_on_never_opened_channel_is_channel_error() {
    let bytes = method_frame(7, 50, 10, passive_declare("q").bytes());
    assert_eq!(
        provoke(Tune::default(), &bytes).await,
        Close::new(504, "CHANNEL_ERROR - expected 'channel.open'", 50, 10)
    );
}

#[tokio::test]
async fn second_channel_open_is_channel_error() {
    let bytes = method_frame(1, 20, 10, Args::new().shortstr("").bytes());
    assert_eq!(
        provoke(Tune::default(), &bytes).await,
        Close::new(504, "CHANNEL_ERROR - second 'channel.open' seen", 20, 10)
    );
}

#[tokio::test]
async fn queue_method_on_channel_0_is_channel_error() {
    let bytes = method_frame(0, 50, 10, passive_declare("q").bytes());
    assert_eq!(
        provoke(Tune::default(), &bytes).await,
        Close::new(504, "CHANNEL_ERROR - unexpected method in connection state running", 50, 10)
    );
}

#[tokio::test]
async fn tune_ok_after_handshake_is_channel_error() {
    let bytes = method_frame(0, 10, 31, Args::new().short(2047).long(131072).short(0).bytes());
    assert_eq!(
        provoke(Tune::default(), &bytes).await,
        Close::new(504, "CHANNEL_ERROR - unexpected method in connection state running", 10, 31)
    );
}

#[tokio::test]
async fn unsolicited_channel_close_ok_is_command_invalid() {
    assert_eq!(
        provoke(Tune::default(), &method_frame(1, 20, 41, &[])).await,
        Close::new(503, "COMMAND_INVALID - unimplemented method", 20, 41)
    );
}

#[tokio::test]
async fn method_after_client_channel_close_is_channel_error() {
    let b = Broker::start();
    let bystander = Bystander::open(&b.addr).await;
    let mut c = RawConn::open(&b.addr).await;
    c.open_channel(1).await;
    c.send_method(1, 20, 40, &Args::new().short(200).shortstr("bye").short(0).short(0)).await;
    c.expect_method(1, 20, 41).await;
    c.send_method(1, 50, 10, &passive_declare("q")).await;
    assert_eq!(c.expect_connection_close().await, Close::new(504, "CHANNEL_ERROR - expected 'channel.open'", 50, 10));
    bystander.assert_untouched().await;
    assert_broker_healthy(&b.addr).await;
}

#[tokio::test]
async fn opening_more_channels_than_channel_max_is_not_allowed() {
    let tune = Tune { channel_max: 1, ..Tune::default() };
    let bytes = method_frame(2, 20, 10, Args::new().shortstr("").bytes());
    assert_eq!(
        provoke(tune, &bytes).await,
        Close::new(530, "NOT_ALLOWED - number of channels opened (1) has reached the negotiated channel_max (1)", 0, 0)
    );
}

/// Warren-only: RabbitMQ 3.10 drops the TCP connection without a frame on an unknown class id;
/// Warren answers with connection.close 540 or 503. Both pass.
#[tokio::test]
async fn unknown_class_id_closes_the_connection() {
    let b = Broker::start();
    let bystander = Bystander::open(&b.addr).await;
    let mut c = RawConn::open(&b.addr).await;
    c.open_channel(1).await;
    c.send(&method_frame(1, 99, 10, &[])).await;
    if let Some(close) = c.expect_connection_close_or_eof().await {
        match close.code {
            540 => assert!(close.text.starts_with("NOT_IMPLEMENTED - "), "{close:?}"),
            503 => assert!(close.text.starts_with("COMMAND_INVALID - "), "{close:?}"),
            _ => panic!("unknown class id should give 540 or 503, got {close:?}"),
        }
    }
    bystander.assert_untouched().await;
    assert_broker_healthy(&b.addr).await;
}

#[tokio::test]
async fn publish_immediate_is_not_implemented() {
    let mut bytes = method_frame(1, 60, 40, publish_args(&unique("q"), true).bytes());
    bytes.extend(content_header_frame(1, 60, 3, 0, &[]));
    bytes.extend(body_frame(1, b"abc"));
    assert_eq!(provoke(Tune::default(), &bytes).await, Close::new(540, "NOT_IMPLEMENTED - immediate=true", 60, 40));
}

#[tokio::test]
async fn channel_flow_inactive_is_not_implemented() {
    let bytes = method_frame(1, 20, 20, Args::new().bits(&[false]).bytes());
    assert_eq!(provoke(Tune::default(), &bytes).await, Close::new(540, "NOT_IMPLEMENTED - active=false", 20, 20));
}

#[tokio::test]
async fn basic_recover_without_requeue_is_not_implemented() {
    let bytes = method_frame(1, 60, 110, Args::new().bits(&[false]).bytes());
    assert_eq!(provoke(Tune::default(), &bytes).await, Close::new(540, "NOT_IMPLEMENTED - requeue=false", 60, 110));
}

#[tokio::test]
async fn channel_flow_active_gets_flow_ok() {
    let b = Broker::start();
    let mut c = RawConn::open(&b.addr).await;
    c.open_channel(1).await;
    c.send_method(1, 20, 20, &Args::new().bits(&[true])).await;
    let ok = c.expect_method(1, 20, 21).await;
    assert_eq!(ok.args(), [1], "flow-ok active=true");
    c.assert_can_declare_queue(1).await;
    c.close().await;
}

#[tokio::test]
async fn access_request_gets_request_ok() {
    let b = Broker::start();
    let mut c = RawConn::open(&b.addr).await;
    c.open_channel(1).await;
    // realm "/data", flags exclusive, passive, active, write, read.
    c.send_method(1, 30, 10, &Args::new().shortstr("/data").bits(&[false, true, true, true, true])).await;
    let ok = c.expect_method(1, 30, 11).await;
    assert_eq!(ok.args().len(), 2, "request-ok carries a short ticket");
    c.assert_can_declare_queue(1).await;
    c.close().await;
}

// ---------------------------------------------------------------------------------------------
// Channel-close races
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn frames_on_a_closing_channel_are_ignored_until_close_ok() {
    let b = Broker::start();
    let mut c = RawConn::open(&b.addr).await;
    c.open_channel(1).await;
    c.open_channel(2).await;
    let missing = unique("missing");
    c.send_method(1, 50, 10, &passive_declare(&missing)).await;
    assert_eq!(
        c.expect_channel_close(1).await,
        Close::new(404, &format!("NOT_FOUND - no queue '{missing}' in vhost '/'"), 50, 10)
    );
    // Until we answer close-ok, everything on channel 1 must be discarded: a declare that would
    // create a queue, and a complete publish.
    let would_be_created = unique("discarded");
    c.send_method(1, 50, 10, &RawConn::queue_declare_args(&would_be_created, false, false, false, true)).await;
    let mut publish = method_frame(1, 60, 40, publish_args(&would_be_created, false).bytes());
    publish.extend(content_header_frame(1, 60, 3, 0, &[]));
    publish.extend(body_frame(1, b"abc"));
    c.send(&publish).await;
    // A round trip on channel 2 proves the frames above were read and produced no reply or error.
    c.assert_can_declare_queue(2).await;
    c.send_method(1, 20, 41, &Args::new()).await;
    c.open_channel(1).await;
    c.send_method(1, 50, 10, &passive_declare(&would_be_created)).await;
    assert_eq!(
        c.expect_channel_close(1).await,
        Close::new(404, &format!("NOT_FOUND - no queue '{would_be_created}' in vhost '/'"), 50, 10),
        "the declare sent on the closing channel must not have run"
    );
    c.send_method(1, 20, 41, &Args::new()).await;
    c.assert_can_declare_queue(2).await;
    c.close().await;
}

#[tokio::test]
async fn client_channel_close_crossing_server_close_gets_close_ok() {
    let b = Broker::start();
    let mut c = RawConn::open(&b.addr).await;
    c.open_channel(1).await;
    let missing = unique("missing");
    // Send the failing declare and our own channel.close back to back, so they cross.
    let mut bytes = method_frame(1, 50, 10, passive_declare(&missing).bytes());
    bytes.extend(method_frame(1, 20, 40, Args::new().short(200).shortstr("bye").short(0).short(0).bytes()));
    c.send(&bytes).await;
    assert_eq!(
        c.expect_channel_close(1).await,
        Close::new(404, &format!("NOT_FOUND - no queue '{missing}' in vhost '/'"), 50, 10)
    );
    c.expect_method(1, 20, 41).await;
    c.send_method(1, 20, 41, &Args::new()).await;
    c.open_channel(1).await;
    c.assert_can_declare_queue(1).await;
    c.close().await;
}

#[tokio::test]
async fn soft_error_closes_only_its_channel() {
    let b = Broker::start();
    let bystander = Bystander::open(&b.addr).await;
    let mut c = RawConn::open(&b.addr).await;
    c.open_channel(1).await;
    c.open_channel(2).await;
    let missing = unique("missing");
    c.send_method(1, 50, 10, &passive_declare(&missing)).await;
    assert_eq!(
        c.expect_channel_close(1).await,
        Close::new(404, &format!("NOT_FOUND - no queue '{missing}' in vhost '/'"), 50, 10)
    );
    c.assert_can_declare_queue(2).await;
    c.send_method(1, 20, 41, &Args::new()).await;
    c.assert_can_declare_queue(2).await;
    c.close().await;
    bystander.assert_untouched().await;
}

// ---------------------------------------------------------------------------------------------
// Message size
// ---------------------------------------------------------------------------------------------

/// Publish a message of `size` bytes on `channel`, in body frames of at most 131064 bytes
/// (frame_max 131072 minus frame overhead).
async fn publish_body_of_size(c: &mut RawConn, channel: u16, routing_key: &str, size: u64) {
    let mut head = method_frame(channel, 60, 40, publish_args(routing_key, false).bytes());
    head.extend(content_header_frame(channel, 60, size, 0, &[]));
    c.send(&head).await;
    let full = body_frame(channel, &vec![b'x'; 131064]);
    let mut left = size as usize;
    while left >= 131064 {
        c.send(&full).await;
        left -= 131064;
    }
    if left > 0 {
        c.send(&body_frame(channel, &vec![b'x'; left])).await;
    }
}

/// RabbitMQ 3.x's default max message size is 128 MiB; one byte more is refused after the
/// whole body has arrived (RabbitMQ does not act on the declared size alone).
#[tokio::test]
async fn message_larger_than_default_max_size_is_precondition_failed() {
    let b = Broker::start();
    let bystander = Bystander::open(&b.addr).await;
    let mut c = RawConn::open(&b.addr).await;
    c.open_channel(1).await;
    c.open_channel(2).await;
    publish_body_of_size(&mut c, 1, &unique("q"), 134217729).await;
    assert_eq!(
        c.expect_channel_close(1).await,
        Close::new(
            406,
            "PRECONDITION_FAILED - message size 134217729 is larger than configured max size 134217728",
            60,
            40
        )
    );
    c.send_method(1, 20, 41, &Args::new()).await;
    c.assert_can_declare_queue(2).await;
    c.open_channel(1).await;
    c.assert_can_declare_queue(1).await;
    c.close().await;
    bystander.assert_untouched().await;
    assert_broker_healthy(&b.addr).await;
}

/// Warren-only: needs a Warren process started with a config file (`[amqp] max_message_size`).
/// Against an external broker (`WARREN_TEST_ADDR`) it fails on purpose, since the setting
/// cannot be applied there.
#[tokio::test]
async fn configured_max_message_size_is_enforced() {
    assert!(
        std::env::var("WARREN_TEST_ADDR").is_err(),
        "configured_max_message_size_is_enforced needs a Warren process started with --config; \
         it cannot run against an external broker (WARREN_TEST_ADDR is set)"
    );
    let dir = crate::common::TempDir::new();
    let config = dir.0.join("warren.toml");
    std::fs::write(&config, "[amqp]\nmax_message_size = 1024\n").expect("write config");
    let b = Broker::start_with_args(&["--config", config.to_str().expect("utf-8 path")]);
    let mut c = RawConn::open(&b.addr).await;
    c.open_channel(1).await;
    // Exactly the limit is accepted: publish to a queue and fetch it back.
    let queue = unique("max-size");
    c.send_method(1, 50, 10, &RawConn::queue_declare_args(&queue, false, false, true, false)).await;
    c.expect_method(1, 50, 11).await;
    publish_body_of_size(&mut c, 1, &queue, 1024).await;
    c.send_method(1, 60, 70, &Args::new().short(0).shortstr(&queue).bits(&[true])).await;
    c.expect_method(1, 60, 71).await;
    match c.recv().await {
        Event::Frame(f) if f.kind == FRAME_HEADER && f.channel == 1 => {
            assert_eq!(Reader(&f.payload[4..12]).longlong(), 1024, "delivered body size");
        }
        other => panic!("expected the content header of the 1024-byte message, got {other:?}"),
    }
    let mut got = 0;
    while got < 1024 {
        match c.recv().await {
            Event::Frame(f) if f.kind == FRAME_BODY && f.channel == 1 => got += f.payload.len(),
            other => panic!("expected body frames, got {other:?}"),
        }
    }
    assert_eq!(got, 1024);
    // One byte more is refused.
    publish_body_of_size(&mut c, 1, &queue, 1025).await;
    assert_eq!(
        c.expect_channel_close(1).await,
        Close::new(406, "PRECONDITION_FAILED - message size 1025 is larger than configured max size 1024", 60, 40)
    );
    c.send_method(1, 20, 41, &Args::new()).await;
    c.close().await;
    assert_broker_healthy(&b.addr).await;
}

// ---------------------------------------------------------------------------------------------
// Graceful shutdown
// ---------------------------------------------------------------------------------------------

/// Warren-only: needs a broker process this test started, so it can send SIGTERM. Against an
/// external broker (`WARREN_TEST_ADDR`) it fails on purpose rather than silently passing.
#[tokio::test]
async fn shutdown_closes_connections_with_connection_forced() {
    let mut b = Broker::start();
    let mut c = RawConn::open(&b.addr).await;
    c.open_channel(1).await;
    // Read the close (and answer close-ok) while the broker is shutting down.
    let reader = tokio::spawn(async move { c.expect_connection_close().await });
    let terminate = tokio::task::spawn_blocking(move || b.terminate());
    let status = crate::common::within("the broker to exit after SIGTERM", terminate).await.expect("terminate task");
    let Some(status) = status else {
        panic!(
            "shutdown_closes_connections_with_connection_forced needs a Warren process started by the \
             test (SIGTERM); terminate() returned None because WARREN_TEST_ADDR points at an external broker"
        );
    };
    let close = crate::common::within("connection.close on shutdown", reader).await.expect("reader task");
    close.assert_prefix(320, "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'", 0, 0);
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM: {status:?}");
}

// ---------------------------------------------------------------------------------------------
// Fuzzing
// ---------------------------------------------------------------------------------------------

/// xorshift64: small, deterministic, good enough to pick bytes and mutations.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Valid frames on channel 1 to mutate. None of them can create lasting broker state even when
/// mutated (no declares): publish to a missing queue, qos, flow, get/delete of missing queues...
fn fuzz_templates(missing: &str) -> Vec<Vec<u8>> {
    let mut publish = method_frame(1, 60, 40, publish_args(missing, false).bytes());
    publish.extend(content_header_frame(1, 60, 5, 0x9000, Args::new().shortstr("text/plain").octet(1).bytes()));
    publish.extend(body_frame(1, b"hello"));
    vec![
        publish,
        method_frame(2, 20, 10, Args::new().shortstr("").bytes()),
        method_frame(1, 60, 10, Args::new().long(0).short(10).bits(&[false]).bytes()),
        method_frame(1, 20, 20, Args::new().bits(&[true]).bytes()),
        method_frame(1, 60, 70, Args::new().short(0).shortstr(missing).bits(&[true]).bytes()),
        method_frame(1, 50, 40, Args::new().short(0).shortstr(missing).bits(&[false, false, false]).bytes()),
        method_frame(1, 60, 80, Args::new().longlong(0).bits(&[true]).bytes()),
        method_frame(1, 85, 10, Args::new().bits(&[false]).bytes()),
        method_frame(1, 90, 10, &[]),
        heartbeat_frame(0),
    ]
}

fn fuzz_input(rng: &mut XorShift, templates: &[Vec<u8>]) -> Vec<u8> {
    if rng.below(3) == 0 {
        let n = 1 + rng.below(64);
        return rng.bytes(n);
    }
    let mut f = templates[rng.below(templates.len())].clone();
    for _ in 0..1 + rng.below(3) {
        match rng.below(6) {
            0 => {
                let i = rng.below(f.len());
                f[i] = rng.next() as u8;
            }
            1 => f.truncate(rng.below(f.len()) + 1),
            2 => {
                let i = rng.below(f.len() + 1);
                let n = 1 + rng.below(8);
                let extra = rng.bytes(n);
                f.splice(i..i, extra);
            }
            3 if f.len() >= 7 => f[3..7].copy_from_slice(&(rng.next() as u32 >> rng.below(32)).to_be_bytes()),
            4 => f[0] = rng.next() as u8,
            _ if f.len() >= 3 => f[1..3].copy_from_slice(&(rng.below(4) as u16).to_be_bytes()),
            _ => {}
        }
    }
    f
}

/// Code -> the constant name its reply text must start with (hard errors only).
fn hard_error_name(code: u16) -> Option<&'static str> {
    Some(match code {
        501 => "FRAME_ERROR",
        502 => "SYNTAX_ERROR",
        503 => "COMMAND_INVALID",
        504 => "CHANNEL_ERROR",
        505 => "UNEXPECTED_FRAME",
        506 => "RESOURCE_ERROR",
        530 => "NOT_ALLOWED",
        540 => "NOT_IMPLEMENTED",
        541 => "INTERNAL_ERROR",
        _ => return None,
    })
}

/// Random bytes and mutated valid frames, sent after a valid handshake, each followed by
/// frame_max+ zero bytes (which cannot parse as a valid frame, so every case must end in an
/// error). The broker must answer every case with a hard-error connection.close or by closing
/// the socket, and keep serving others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_frames_get_connection_close_or_eof() {
    const CASES: usize = 512;
    const PARALLEL: usize = 8;
    let b = Broker::start();
    let bystander = Bystander::open(&b.addr).await;
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let templates = fuzz_templates(&unique("fuzz-missing"));
    let inputs: Vec<Vec<u8>> = (0..CASES).map(|_| fuzz_input(&mut rng, &templates)).collect();
    let tune = Tune { frame_max: 4096, ..Tune::default() };
    let mut closes = 0;
    for (batch_no, batch) in inputs.chunks(PARALLEL).enumerate() {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, input) in batch.iter().cloned().enumerate() {
            let addr = b.addr.clone();
            let case = batch_no * PARALLEL + i;
            tasks.spawn(async move {
                let mut c = RawConn::open_with(&addr, tune).await;
                c.open_channel(1).await;
                let mut bytes = input.clone();
                bytes.extend(std::iter::repeat_n(0u8, 4096 + 16));
                // The broker may close while we are still writing.
                let _ = c.try_send(&bytes).await;
                match c.until_connection_close_or_eof().await {
                    Some(close) => {
                        let name = hard_error_name(close.code)
                            .unwrap_or_else(|| panic!("case {case} {input:?}: not a hard error: {close:?}"));
                        assert!(close.text.starts_with(name), "case {case} {input:?}: {close:?}");
                        true
                    }
                    None => false,
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            if r.expect("fuzz case") {
                closes += 1;
            }
        }
    }
    // Almost every case is a framing error, which both RabbitMQ and Warren report with a close.
    assert!(closes >= CASES / 2, "only {closes} of {CASES} cases got a connection.close");
    bystander.assert_untouched().await;
    assert_broker_healthy(&b.addr).await;
}
