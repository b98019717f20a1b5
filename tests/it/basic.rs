//! The basic class: publish/consume/get round trips (properties, headers, body sizes across
//! frame boundaries), consumer round-robin, acknowledgements (ack/nack/reject, multiple, tag 0,
//! unknown tags), requeue position, recover, per-consumer and global QoS, consumer tags and
//! exclusivity, cancel (client and server initiated), returns of unroutable messages, and
//! errors raised by publish.

use futures_util::StreamExt;
use lapin::options::*;
use lapin::protocol::AMQPClass;
use lapin::types::{AMQPValue, DecimalValue, FieldArray, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Consumer};

use crate::common::*;

async fn publish(ch: &Channel, queue: &str, body: &[u8]) {
    ch.basic_publish("".into(), queue.into(), BasicPublishOptions::default(), body, BasicProperties::default())
        .await
        .expect("basic.publish");
}

async fn consume(ch: &Channel, queue: &str, options: BasicConsumeOptions) -> Consumer {
    within("basic.consume", ch.basic_consume(queue.into(), "".into(), options, FieldTable::default()))
        .await
        .expect("basic.consume")
}

async fn get(ch: &Channel, queue: &str) -> Option<lapin::message::BasicGetMessage> {
    within("basic.get", ch.basic_get(queue.into(), BasicGetOptions::default())).await.expect("basic.get")
}

/// A synchronous round trip on `ch`: everything the broker sent on this channel before the
/// reply (deliveries, returns) has been processed by lapin when this returns.
async fn barrier(ch: &Channel) {
    within(
        "barrier",
        ch.exchange_declare(
            "amq.direct".into(),
            lapin::ExchangeKind::Direct,
            ExchangeDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await
    .expect("passive declare of amq.direct");
}

fn body_text(d: &lapin::message::Delivery) -> String {
    String::from_utf8_lossy(&d.data).to_string()
}

#[tokio::test]
async fn properties_and_headers_survive_a_round_trip() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = exclusive_queue(&ch).await;
    let mut nested = FieldTable::default();
    nested.insert("inner".into(), AMQPValue::LongString("yes".into()));
    let mut array = FieldArray::default();
    array.push(AMQPValue::LongInt(1));
    array.push(AMQPValue::LongString("two".into()));
    let mut headers = FieldTable::default();
    headers.insert("string".into(), AMQPValue::LongString(LongString::from("hello")));
    headers.insert("bool".into(), AMQPValue::Boolean(true));
    headers.insert("i8".into(), AMQPValue::ShortShortInt(-5));
    headers.insert("i16".into(), AMQPValue::ShortInt(-300));
    headers.insert("i32".into(), AMQPValue::LongInt(-70000));
    headers.insert("i64".into(), AMQPValue::LongLongInt(1 << 40));
    headers.insert("u32".into(), AMQPValue::LongUInt(4_000_000_000));
    headers.insert("f64".into(), AMQPValue::Double(2.5));
    headers.insert("decimal".into(), AMQPValue::DecimalValue(DecimalValue { scale: 2, value: 12345 }));
    headers.insert("ts".into(), AMQPValue::Timestamp(1_700_000_000));
    headers.insert("table".into(), AMQPValue::FieldTable(nested));
    headers.insert("array".into(), AMQPValue::FieldArray(array));
    headers.insert("void".into(), AMQPValue::Void);
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("utf-8".into())
        .with_headers(headers)
        .with_delivery_mode(2)
        .with_priority(7)
        .with_correlation_id("corr-1".into())
        .with_reply_to("reply.queue".into())
        .with_message_id("msg-42".into())
        .with_timestamp(1_700_000_123)
        .with_type("order.created".into())
        .with_app_id("warren-tests".into());
    ch.basic_publish("".into(), q.as_str().into(), BasicPublishOptions::default(), b"{\"a\":1}", props.clone())
        .await
        .expect("publish");
    let mut consumer = consume(&ch, &q, BasicConsumeOptions::default()).await;
    let d = next_delivery(&mut consumer).await;
    assert_eq!(d.data, b"{\"a\":1}");
    assert_eq!(d.properties, props, "every property and header value is delivered unchanged");
    assert_eq!(d.exchange.as_str(), "");
    assert_eq!(d.routing_key.as_str(), q);
    assert!(!d.redelivered);
    assert_eq!(d.delivery_tag, 1, "delivery tags start at 1 on a channel");
}

#[tokio::test]
async fn bodies_of_every_size_arrive_byte_exact() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    let frame_max = conn.configuration().frame_max() as usize;
    assert_eq!(frame_max, 131072);
    let q = exclusive_queue(&ch).await;
    // 0 (no body frame), 1, exactly one full body frame, one byte more, and many frames.
    let sizes = [0, 1, frame_max - 8, frame_max - 7, 3 * frame_max + 17, 1 << 20];
    let bodies: Vec<Vec<u8>> =
        sizes.iter().enumerate().map(|(n, &len)| (0..len).map(|i| ((i * 31 + n * 7) % 251) as u8).collect()).collect();
    for body in &bodies {
        publish(&ch, &q, body).await;
    }
    let mut consumer = consume(&ch, &q, BasicConsumeOptions { no_ack: true, ..Default::default() }).await;
    for (body, len) in bodies.iter().zip(sizes) {
        let d = next_delivery(&mut consumer).await;
        assert_eq!(d.data.len(), len);
        assert!(d.data == *body, "body of {len} bytes differs");
    }
    // And via basic.get as well (get-ok + multi-frame content).
    ch.basic_cancel(consumer.tag(), BasicCancelOptions::default()).await.expect("cancel");
    publish(&ch, &q, &bodies[5]).await;
    let got = get(&ch, &q).await.expect("get-ok with a 1 MiB body");
    assert!(got.delivery.data == bodies[5], "1 MiB body via basic.get differs");
}

#[tokio::test]
async fn two_consumers_on_one_queue_share_messages_round_robin() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    let q = exclusive_queue(&ch).await;
    let ch2 = conn.create_channel().await.expect("channel");
    let mut c1 = consume(&ch, &q, BasicConsumeOptions { no_ack: true, ..Default::default() }).await;
    let mut c2 = consume(&ch2, &q, BasicConsumeOptions { no_ack: true, ..Default::default() }).await;
    for i in 0..6 {
        publish(&ch, &q, i.to_string().as_bytes()).await;
    }
    let a: Vec<String> = deliveries(&mut c1, 3).await.iter().map(body_text).collect();
    let b2: Vec<String> = deliveries(&mut c2, 3).await.iter().map(body_text).collect();
    let (odd, even) = (vec!["1", "3", "5"], vec!["0", "2", "4"]);
    assert!((a == even && b2 == odd) || (a == odd && b2 == even), "consumers must alternate: {a:?} / {b2:?}");
}

#[tokio::test]
async fn basic_get_reports_remaining_count_and_get_empty() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = exclusive_queue(&ch).await;
    for i in 0..5 {
        publish(&ch, &q, format!("m{i}").as_bytes()).await;
    }
    let first = get(&ch, &q).await.expect("get-ok");
    assert_eq!(first.message_count, 4, "5 queued: the first get-ok says 4 remain");
    assert_eq!(first.delivery.data, b"m0");
    assert_eq!(first.delivery.delivery_tag, 1);
    assert_eq!(first.delivery.routing_key.as_str(), q);
    let mut last = first;
    for expected in (0..4).rev() {
        last = get(&ch, &q).await.expect("get-ok");
        assert_eq!(last.message_count, expected);
    }
    assert_eq!(last.delivery.data, b"m4");
    assert!(get(&ch, &q).await.is_none(), "get-empty once the queue is drained");
}

#[tokio::test]
async fn ack_single_and_multiple_settle_exactly_those_tags() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = exclusive_queue(&ch).await;
    for body in ["a", "b", "c", "d"] {
        publish(&ch, &q, body.as_bytes()).await;
    }
    let mut tags = Vec::new();
    for _ in 0..4 {
        tags.push(get(&ch, &q).await.expect("message").delivery.delivery_tag);
    }
    assert_eq!(tags, vec![1, 2, 3, 4]);
    ch.basic_ack(2, BasicAckOptions { multiple: true }).await.expect("ack 1..=2");
    ch.basic_ack(4, BasicAckOptions { multiple: false }).await.expect("ack 4");
    // Only tag 3 is still unacked: recover brings exactly that one back.
    ch.basic_recover(BasicRecoverOptions { requeue: true }).await.expect("recover");
    let back = get(&ch, &q).await.expect("the unacked message is back");
    assert_eq!(back.delivery.data, b"c");
    assert!(back.delivery.redelivered);
    assert_eq!(back.message_count, 0);
    ch.basic_ack(back.delivery.delivery_tag, BasicAckOptions::default()).await.expect("ack");
    barrier(&ch).await;
    assert!(ch.status().connected());
}

#[tokio::test]
async fn ack_tag_zero_with_multiple_acks_everything_outstanding() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = exclusive_queue(&ch).await;
    for body in ["a", "b", "c"] {
        publish(&ch, &q, body.as_bytes()).await;
    }
    for _ in 0..3 {
        get(&ch, &q).await.expect("message");
    }
    ch.basic_ack(0, BasicAckOptions { multiple: true }).await.expect("ack all");
    ch.basic_recover(BasicRecoverOptions { requeue: true }).await.expect("recover");
    assert!(get(&ch, &q).await.is_none(), "nothing was left unacked");
    // With nothing outstanding, tag 0 + multiple is still fine.
    ch.basic_ack(0, BasicAckOptions { multiple: true }).await.expect("ack all again");
    barrier(&ch).await;
}

#[tokio::test]
async fn acking_an_unknown_delivery_tag_is_precondition_failed() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    let mut ev = events(&conn);
    ch.basic_ack(99, BasicAckOptions::default()).await.expect("send ack");
    assert_eq!(next_close(&mut ev).await, (406, "PRECONDITION_FAILED - unknown delivery tag 99".to_string()));
    assert!(conn.status().connected(), "a channel error leaves the connection open");
}

#[tokio::test]
async fn acking_twice_is_precondition_failed() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    let q = exclusive_queue(&ch).await;
    publish(&ch, &q, b"once").await;
    let m = get(&ch, &q).await.expect("message");
    let mut ev = events(&conn);
    ch.basic_ack(m.delivery.delivery_tag, BasicAckOptions::default()).await.expect("first ack");
    ch.basic_ack(m.delivery.delivery_tag, BasicAckOptions::default()).await.expect("send second ack");
    assert_eq!(next_close(&mut ev).await, (406, "PRECONDITION_FAILED - unknown delivery tag 1".to_string()));
}

#[tokio::test]
async fn reject_with_requeue_returns_the_message_to_its_original_position() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = exclusive_queue(&ch).await;
    for body in ["a", "b", "c"] {
        publish(&ch, &q, body.as_bytes()).await;
    }
    let a = get(&ch, &q).await.expect("a");
    assert_eq!(a.delivery.data, b"a");
    ch.basic_reject(a.delivery.delivery_tag, BasicRejectOptions { requeue: true }).await.expect("reject");
    let again = get(&ch, &q).await.expect("a again");
    assert_eq!(again.delivery.data, b"a", "requeued at the head, not the tail");
    assert!(again.delivery.redelivered);
    assert_eq!(again.message_count, 2);
    let next = get(&ch, &q).await.expect("b");
    assert_eq!(next.delivery.data, b"b");
    assert!(!next.delivery.redelivered);
}

#[tokio::test]
async fn nack_with_requeue_single_and_multiple_restores_original_order() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = exclusive_queue(&ch).await;
    for body in ["a", "b", "c", "d"] {
        publish(&ch, &q, body.as_bytes()).await;
    }
    for tag in 1..=4 {
        assert_eq!(get(&ch, &q).await.expect("message").delivery.delivery_tag, tag);
    }
    ch.basic_ack(4, BasicAckOptions::default()).await.expect("ack d");
    // Requeue c first, then b: they still line up in their original order.
    ch.basic_nack(3, BasicNackOptions { multiple: false, requeue: true }).await.expect("nack c");
    ch.basic_nack(2, BasicNackOptions { multiple: false, requeue: true }).await.expect("nack b");
    let b2 = get(&ch, &q).await.expect("b");
    let c2 = get(&ch, &q).await.expect("c");
    assert_eq!((b2.delivery.data.as_slice(), c2.delivery.data.as_slice()), (&b"b"[..], &b"c"[..]));
    assert!(b2.delivery.redelivered && c2.delivery.redelivered);
    assert_eq!((b2.delivery.delivery_tag, c2.delivery.delivery_tag), (5, 6));
    // multiple=true up to tag 6 requeues everything outstanding: a (1), b (5), c (6).
    ch.basic_nack(6, BasicNackOptions { multiple: true, requeue: true }).await.expect("nack multiple");
    let mut again = Vec::new();
    for _ in 0..3 {
        let m = get(&ch, &q).await.expect("requeued message");
        assert!(m.delivery.redelivered);
        again.push(body_text(&m.delivery));
    }
    assert_eq!(again, ["a", "b", "c"]);
    assert!(get(&ch, &q).await.is_none());
}

#[tokio::test]
async fn nack_and_reject_without_requeue_drop_the_message() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = exclusive_queue(&ch).await;
    for body in ["a", "b", "c"] {
        publish(&ch, &q, body.as_bytes()).await;
    }
    let a = get(&ch, &q).await.expect("a");
    ch.basic_nack(a.delivery.delivery_tag, BasicNackOptions { multiple: false, requeue: false }).await.expect("nack");
    let b2 = get(&ch, &q).await.expect("b");
    assert_eq!(b2.delivery.data, b"b");
    ch.basic_reject(b2.delivery.delivery_tag, BasicRejectOptions { requeue: false }).await.expect("reject");
    let c = get(&ch, &q).await.expect("c");
    assert_eq!(c.delivery.data, b"c");
    assert_eq!(c.message_count, 0);
    ch.basic_ack(c.delivery.delivery_tag, BasicAckOptions::default()).await.expect("ack");
    ch.basic_recover(BasicRecoverOptions { requeue: true }).await.expect("recover");
    assert!(get(&ch, &q).await.is_none(), "dropped messages never come back");
}

#[tokio::test]
async fn recover_requeues_every_unacked_delivery_as_redelivered() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = exclusive_queue(&ch).await;
    for body in ["a", "b"] {
        publish(&ch, &q, body.as_bytes()).await;
    }
    let mut consumer = consume(&ch, &q, BasicConsumeOptions::default()).await;
    let first = deliveries(&mut consumer, 2).await;
    assert!(first.iter().all(|d| !d.redelivered));
    ch.basic_recover(BasicRecoverOptions { requeue: true }).await.expect("recover");
    let again = deliveries(&mut consumer, 2).await;
    assert_eq!(again.iter().map(body_text).collect::<Vec<_>>(), ["a", "b"]);
    assert!(again.iter().all(|d| d.redelivered));
    assert!(again[0].delivery_tag > first[1].delivery_tag, "new deliveries get new tags");
}

#[tokio::test]
async fn per_consumer_prefetch_limits_unacked_deliveries() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = exclusive_queue(&ch).await;
    for i in 0..5 {
        publish(&ch, &q, i.to_string().as_bytes()).await;
    }
    ch.basic_qos(2, BasicQosOptions { global: false }).await.expect("qos");
    let mut consumer = consume(&ch, &q, BasicConsumeOptions::default()).await;
    let two = deliveries(&mut consumer, 2).await;
    assert_no_delivery(&mut consumer).await; // prefetch 2 reached
    two[0].ack(BasicAckOptions::default()).await.expect("ack");
    let third = next_delivery(&mut consumer).await;
    assert_eq!(third.data, b"2");
    assert_no_delivery(&mut consumer).await;
}

#[tokio::test]
async fn global_prefetch_is_shared_by_the_consumers_of_a_channel() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q1 = exclusive_queue(&ch).await;
    let q2 = exclusive_queue(&ch).await;
    for i in 0..3 {
        publish(&ch, &q1, format!("q1-{i}").as_bytes()).await;
        publish(&ch, &q2, format!("q2-{i}").as_bytes()).await;
    }
    ch.basic_qos(2, BasicQosOptions { global: true }).await.expect("qos global");
    let c1 = consume(&ch, &q1, BasicConsumeOptions::default()).await;
    let c2 = consume(&ch, &q2, BasicConsumeOptions::default()).await;
    let mut both = futures_util::stream::select(c1, c2);
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(within("a delivery", both.next()).await.expect("stream").expect("delivery"));
    }
    // A bounded wait that only checks that no third delivery arrives.
    let extra = tokio::time::timeout(QUIET, both.next()).await;
    assert!(extra.is_err(), "the channel-wide limit of 2 is shared by both consumers");
    got[0].ack(BasicAckOptions::default()).await.expect("ack");
    let third = within("a delivery after ack", both.next()).await.expect("stream").expect("delivery");
    assert!(!third.data.is_empty());
    assert!(tokio::time::timeout(QUIET, both.next()).await.is_err(), "still limited to 2 unacked");
}

#[tokio::test]
async fn raising_global_prefetch_releases_more_deliveries_immediately() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = exclusive_queue(&ch).await;
    for i in 0..6 {
        publish(&ch, &q, i.to_string().as_bytes()).await;
    }
    ch.basic_qos(1, BasicQosOptions { global: true }).await.expect("qos 1");
    let mut consumer = consume(&ch, &q, BasicConsumeOptions::default()).await;
    assert_eq!(next_delivery(&mut consumer).await.data, b"0");
    assert_no_delivery(&mut consumer).await;
    ch.basic_qos(4, BasicQosOptions { global: true }).await.expect("qos 4");
    let more = deliveries(&mut consumer, 3).await;
    assert_eq!(more.iter().map(body_text).collect::<Vec<_>>(), ["1", "2", "3"]);
    assert_no_delivery(&mut consumer).await;
}

#[tokio::test]
async fn nonzero_prefetch_size_is_not_implemented() {
    // lapin always sends prefetch_size 0, so this one goes over a raw socket.
    let b = Broker::start();
    let (mut raw, _) = RawAmqp::open(&b.addr).await;
    let mut args = Vec::new();
    args.extend_from_slice(&1000u32.to_be_bytes()); // prefetch-size
    args.extend_from_slice(&10u16.to_be_bytes()); // prefetch-count
    args.push(0); // global
    raw.send_method(1, 60, 10, &args).await;
    match raw.read_method().await {
        (0, AMQPClass::Connection(lapin::protocol::connection::AMQPMethod::Close(c))) => {
            assert_eq!(c.reply_code, 540);
            assert_eq!(c.reply_text.as_str(), "NOT_IMPLEMENTED - prefetch_size!=0 (1000)");
            assert_eq!((c.class_id, c.method_id), (60, 10));
        }
        other => panic!("expected connection.close, got {other:?}"),
    }
}

#[tokio::test]
async fn server_generated_consumer_tags_start_with_amq_ctag() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = exclusive_queue(&ch).await;
    let c1 = consume(&ch, &q, BasicConsumeOptions::default()).await;
    let c2 = consume(&ch, &q, BasicConsumeOptions::default()).await;
    for tag in [c1.tag(), c2.tag()] {
        assert!(tag.as_str().starts_with("amq.ctag-"), "{tag}");
        assert_eq!(tag.as_str().len(), 31, "amq.ctag- plus 22 characters: {tag}");
    }
    assert_ne!(c1.tag(), c2.tag());
}

#[tokio::test]
async fn reusing_a_consumer_tag_on_a_channel_is_a_connection_error() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    let q = exclusive_queue(&ch).await;
    // The same tag on another channel is fine.
    let other = conn.create_channel().await.expect("channel");
    other
        .basic_consume(q.as_str().into(), "dup".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("tag on channel 2");
    ch.basic_consume(q.as_str().into(), "dup".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("first use");
    let err = expect_amqp_error(
        ch.basic_consume(q.as_str().into(), "dup".into(), BasicConsumeOptions::default(), FieldTable::default()).await,
    );
    assert_eq!(err, (530, "NOT_ALLOWED - attempt to reuse consumer tag 'dup'".to_string()));
    assert!(!conn.status().connected(), "530 closes the whole connection");
}

#[tokio::test]
async fn exclusive_consume_conflicts_are_access_refused() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    let q = exclusive_queue(&ch).await;
    let refused = (403, format!("ACCESS_REFUSED - queue '{q}' in vhost '/' in exclusive use"));
    let _plain = consume(&ch, &q, BasicConsumeOptions::default()).await;
    let ch2 = conn.create_channel().await.expect("channel");
    let err = expect_amqp_error(
        ch2.basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions { exclusive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await,
    );
    assert_eq!(err, refused, "exclusive consume on a queue that has a consumer");

    let q2 = exclusive_queue(&ch).await;
    let _excl = consume(&ch, &q2, BasicConsumeOptions { exclusive: true, ..Default::default() }).await;
    let ch3 = conn.create_channel().await.expect("channel");
    let err = expect_amqp_error(
        ch3.basic_consume(q2.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default()).await,
    );
    assert_eq!(
        err,
        (403, format!("ACCESS_REFUSED - queue '{q2}' in vhost '/' in exclusive use")),
        "consume next to an exclusive consumer"
    );
}

#[tokio::test]
async fn cancel_stops_deliveries_and_unknown_tags_cancel_fine() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = exclusive_queue(&ch).await;
    let mut consumer = consume(&ch, &q, BasicConsumeOptions { no_ack: true, ..Default::default() }).await;
    publish(&ch, &q, b"before").await;
    assert_eq!(next_delivery(&mut consumer).await.data, b"before");
    ch.basic_cancel(consumer.tag(), BasicCancelOptions::default()).await.expect("cancel");
    publish(&ch, &q, b"after").await;
    let end = within("consumer end", consumer.next()).await;
    assert!(end.is_none(), "a cancelled consumer's stream ends without further deliveries");
    assert_eq!(get_all(&ch, &q).await, vec!["after"], "the message stays in the queue");
    ch.basic_cancel("no-such-consumer".into(), BasicCancelOptions::default()).await.expect("cancel unknown tag");
    barrier(&ch).await;
}

#[tokio::test]
async fn deleting_the_queue_cancels_its_consumers_from_the_server() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    let q = unique("server-cancel");
    ch.queue_declare(q.as_str().into(), QueueDeclareOptions::default(), FieldTable::default()).await.expect("declare");
    let mut consumer = consume(&ch, &q, BasicConsumeOptions::default()).await;
    let other = conn.create_channel().await.expect("channel");
    other.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await.expect("delete");
    let end = within("server basic.cancel", consumer.next()).await;
    assert!(end.is_none(), "lapin ends the stream on a server-sent basic.cancel");
    // The consumer's channel stays open.
    barrier(&ch).await;
}

#[tokio::test]
async fn publishing_to_a_missing_exchange_is_not_found() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    let x = unique("no-such-exchange");
    let mut ev = events(&conn);
    ch.basic_publish(x.as_str().into(), "k".into(), BasicPublishOptions::default(), b"x", BasicProperties::default())
        .await
        .expect("send publish");
    assert_eq!(next_close(&mut ev).await, (404, format!("NOT_FOUND - no exchange '{x}' in vhost '/'")));
}

#[tokio::test]
async fn mandatory_unroutable_message_comes_back_as_basic_return() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let key = unique("nobody-bound");
    let props = BasicProperties::default().with_message_id("m-1".into()).with_content_type("text/plain".into());
    ch.basic_publish(
        "amq.direct".into(),
        key.as_str().into(),
        BasicPublishOptions { mandatory: true, ..Default::default() },
        b"bounce",
        props.clone(),
    )
    .await
    .expect("publish");
    barrier(&ch).await; // the return precedes the declare-ok on this channel
    let returned = ch.wait_for_confirms().await.expect("returned messages");
    assert_eq!(returned.len(), 1);
    let r = &returned[0];
    assert_eq!((r.reply_code, r.reply_text.as_str()), (312, "NO_ROUTE"));
    assert_eq!(r.delivery.exchange.as_str(), "amq.direct");
    assert_eq!(r.delivery.routing_key.as_str(), key);
    assert_eq!(r.delivery.data, b"bounce");
    assert_eq!(r.delivery.properties, props);
}

#[tokio::test]
async fn non_mandatory_unroutable_message_is_dropped_silently() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    ch.basic_publish(
        "amq.direct".into(),
        unique("nobody").as_str().into(),
        BasicPublishOptions::default(),
        b"gone",
        BasicProperties::default(),
    )
    .await
    .expect("publish");
    barrier(&ch).await;
    assert!(ch.wait_for_confirms().await.expect("returns").is_empty(), "no basic.return");
    assert!(ch.status().connected());
    let q = exclusive_queue(&ch).await;
    publish(&ch, &q, b"still usable").await;
    assert_eq!(get_all(&ch, &q).await, vec!["still usable"]);
}

#[tokio::test]
async fn closing_a_channel_requeues_its_unacked_messages() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    let q = exclusive_queue(&ch).await;
    publish(&ch, &q, b"held").await;
    let ch1 = conn.create_channel().await.expect("channel");
    let mut consumer = consume(&ch1, &q, BasicConsumeOptions::default()).await;
    let d = next_delivery(&mut consumer).await;
    assert!(!d.redelivered);
    ch1.close(200, "OK".into()).await.expect("close");
    let mut watcher = consume(&ch, &q, BasicConsumeOptions { no_ack: true, ..Default::default() }).await;
    let again = next_delivery(&mut watcher).await;
    assert_eq!(again.data, b"held");
    assert!(again.redelivered);
}

#[tokio::test]
async fn acking_a_no_ack_delivery_is_precondition_failed() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    let q = exclusive_queue(&ch).await;
    let mut consumer = consume(&ch, &q, BasicConsumeOptions { no_ack: true, ..Default::default() }).await;
    publish(&ch, &q, b"auto-acked").await;
    let d = next_delivery(&mut consumer).await;
    let mut ev = events(&conn);
    ch.basic_ack(d.delivery_tag, BasicAckOptions::default()).await.expect("send ack");
    assert_eq!(
        next_close(&mut ev).await,
        (406, format!("PRECONDITION_FAILED - unknown delivery tag {}", d.delivery_tag))
    );
}
