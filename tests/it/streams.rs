//! Stream queues over AMQP 0-9-1 (lapin), as RabbitMQ serves them (`../shared/reference/
//! streams.md` §2–6): declare, publish with confirms, consume from each `x-stream-offset`,
//! deliveries with the `x-stream-offset` header and their properties intact, credit from the
//! prefetch given back by acks, RabbitMQ's refusals, delete, restart and kill -9, retention and
//! chunk filtering.

use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Consumer};

use crate::common::*;

fn stream_args(extra: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = table(&[("x-queue-type", lstr("stream"))]);
    for (k, v) in extra {
        t.insert((*k).into(), v.clone());
    }
    t
}

async fn declare_stream(ch: &Channel, prefix: &str, extra: &[(&str, AMQPValue)]) -> String {
    let q = unique(prefix);
    let ok = declare_queue(ch, &q, QueueDeclareOptions::durable(), stream_args(extra)).await.expect("declare stream");
    assert_eq!((ok.message_count(), ok.consumer_count()), (0, 0));
    q
}

/// Publish `bodies` to `q` on a confirm channel, one confirmed publish at a time (one chunk each).
async fn publish_each(ch: &Channel, q: &str, bodies: &[&str]) {
    for b in bodies {
        let c = publish_confirmed_props(ch, "", q, b, BasicProperties::default()).await;
        assert!(c.is_ack(), "confirm of {b}");
    }
}

async fn confirm_channel(b: &Broker) -> (lapin::Connection, Channel) {
    let (conn, ch) = b.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    (conn, ch)
}

async fn stream_consumer(ch: &Channel, q: &str, prefetch: u16, offset: Option<AMQPValue>) -> Consumer {
    ch.basic_qos(prefetch, BasicQosOptions::default()).await.expect("basic.qos");
    let args = match offset {
        Some(v) => table(&[("x-stream-offset", v)]),
        None => FieldTable::default(),
    };
    consume_with(ch, q, BasicConsumeOptions::default(), args).await
}

fn offset_of(d: &lapin::message::Delivery) -> i64 {
    match header(&d.properties, "x-stream-offset") {
        Some(AMQPValue::LongLongInt(n)) => *n,
        other => panic!("x-stream-offset must be a signed 64-bit header, got {other:?}"),
    }
}

async fn take(consumer: &mut Consumer, n: usize) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    for d in deliveries(consumer, n).await {
        out.push((offset_of(&d), text(&d.data)));
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    out
}

#[tokio::test]
async fn a_stream_keeps_messages_for_every_consumer_with_offsets_and_properties() {
    let b = Broker::start();
    let (_c, ch) = confirm_channel(&b).await;
    let q = declare_stream(&ch, "stream-basic", &[]).await;
    let mut headers = FieldTable::default();
    headers.insert("str".into(), lstr("v"));
    headers.insert("int".into(), AMQPValue::LongInt(-7));
    headers.insert("bool".into(), AMQPValue::Boolean(true));
    let props = BasicProperties::default()
        .with_content_type(ShortString::from("text/plain"))
        .with_delivery_mode(2)
        .with_priority(3)
        .with_correlation_id("corr".into())
        .with_message_id("m-1".into())
        .with_timestamp(1_700_000_000)
        .with_app_id("app".into())
        .with_headers(headers);
    let c = publish_confirmed_props(&ch, "", &q, "first", props).await;
    assert!(c.is_ack());
    publish_each(&ch, &q, &["second", "third"]).await;

    // Two consumers, each reading everything (a stream removes nothing).
    for _ in 0..2 {
        let (_c2, ch2) = b.channel().await;
        let mut consumer = stream_consumer(&ch2, &q, 10, Some(lstr("first"))).await;
        let got = deliveries(&mut consumer, 3).await;
        let offsets: Vec<i64> = got.iter().map(offset_of).collect();
        assert_eq!(offsets, vec![0, 1, 2]);
        let bodies: Vec<String> = got.iter().map(|d| text(&d.data)).collect();
        assert_eq!(bodies, vec!["first", "second", "third"]);
        let d = &got[0];
        assert!(!d.redelivered);
        assert_eq!(d.exchange.as_str(), "");
        assert_eq!(d.routing_key.as_str(), q);
        let p = &d.properties;
        assert_eq!(p.content_type().as_ref().map(|s| s.as_str()), Some("text/plain"));
        assert_eq!(*p.delivery_mode(), Some(2));
        assert_eq!(*p.priority(), Some(3));
        assert_eq!(p.correlation_id().as_ref().map(|s| s.as_str()), Some("corr"));
        assert_eq!(p.message_id().as_ref().map(|s| s.as_str()), Some("m-1"));
        assert_eq!(*p.timestamp(), Some(1_700_000_000));
        assert_eq!(p.app_id().as_ref().map(|s| s.as_str()), Some("app"));
        assert_eq!(header(p, "str"), Some(&lstr("v")));
        assert_eq!(header(p, "int"), Some(&AMQPValue::LongInt(-7)));
        assert_eq!(header(p, "bool"), Some(&AMQPValue::Boolean(true)));
    }
    // Declare-ok counts the stream's messages and never its consumers (RabbitMQ 3.10).
    let ok = declare_queue(&ch, &q, QueueDeclareOptions::durable(), stream_args(&[])).await.expect("redeclare");
    assert_eq!((ok.message_count(), ok.consumer_count()), (3, 0));
}

#[tokio::test]
async fn each_stream_offset_specification_starts_where_rabbitmq_starts() {
    let b = Broker::start();
    let (_c, ch) = confirm_channel(&b).await;
    let q = declare_stream(&ch, "stream-offsets", &[]).await;
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    publish_each(&ch, &q, &["m0", "m1", "m2", "m3"]).await;

    let cases: Vec<(&str, Option<AMQPValue>, Vec<i64>)> = vec![
        ("first", Some(lstr("first")), vec![0, 1, 2, 3]),
        // `last`: the start of the last chunk (here one message per chunk).
        ("last", Some(lstr("last")), vec![3]),
        ("offset 2 (long)", Some(AMQPValue::LongLongInt(2)), vec![2, 3]),
        ("offset 1 (byte)", Some(AMQPValue::ShortShortUInt(1)), vec![1, 2, 3]),
        ("negative offset: from the first", Some(AMQPValue::LongInt(-1)), vec![0, 1, 2, 3]),
        ("timestamp before everything", Some(AMQPValue::Timestamp(before.saturating_sub(60))), vec![0, 1, 2, 3]),
        ("interval", Some(lstr("1h")), vec![0, 1, 2, 3]),
    ];
    for (what, offset, want) in cases {
        let (_c2, ch2) = b.channel().await;
        let mut consumer = stream_consumer(&ch2, &q, 100, offset).await;
        let got: Vec<i64> = take(&mut consumer, want.len()).await.into_iter().map(|(o, _)| o).collect();
        assert_eq!(got, want, "{what}");
        assert_no_delivery(&mut consumer).await;
    }

    // `next` (and no argument) and offsets past the end wait for new messages; an offset past
    // the end still skips what lies below it (RabbitMQ).
    let (_c3, ch3) = b.channel().await;
    let mut next = stream_consumer(&ch3, &q, 100, Some(lstr("next"))).await;
    let mut absent = stream_consumer(&ch3, &q, 100, None).await;
    let mut beyond = stream_consumer(&ch3, &q, 100, Some(AMQPValue::LongLongInt(5))).await;
    let mut future = stream_consumer(&ch3, &q, 100, Some(AMQPValue::Timestamp(before + 3600))).await;
    assert_no_delivery(&mut next).await;
    publish_each(&ch, &q, &["m4", "m5", "m6"]).await;
    assert_eq!(take(&mut next, 3).await.iter().map(|(o, _)| *o).collect::<Vec<_>>(), vec![4, 5, 6]);
    assert_eq!(take(&mut absent, 3).await.iter().map(|(o, _)| *o).collect::<Vec<_>>(), vec![4, 5, 6]);
    assert_eq!(take(&mut beyond, 2).await.iter().map(|(o, _)| *o).collect::<Vec<_>>(), vec![5, 6]);
    assert_no_delivery(&mut beyond).await;
    // A timestamp in the future: like next (later messages are delivered).
    assert_eq!(take(&mut future, 3).await.iter().map(|(o, _)| *o).collect::<Vec<_>>(), vec![4, 5, 6]);
}

#[tokio::test]
async fn prefetch_is_credit_that_acks_give_back() {
    let b = Broker::start();
    let (_c, ch) = confirm_channel(&b).await;
    let q = declare_stream(&ch, "stream-credit", &[]).await;
    publish_each(&ch, &q, &["a", "b", "c", "d", "e"]).await;
    let (_c2, ch2) = b.channel().await;
    let mut consumer = stream_consumer(&ch2, &q, 2, Some(lstr("first"))).await;
    let got = deliveries(&mut consumer, 2).await;
    assert_eq!(got.iter().map(offset_of).collect::<Vec<_>>(), vec![0, 1]);
    assert_no_delivery(&mut consumer).await;
    // One ack: one more delivery.
    got[1].ack(BasicAckOptions::default()).await.expect("ack");
    let third = next_delivery(&mut consumer).await;
    assert_eq!(offset_of(&third), 2);
    assert_no_delivery(&mut consumer).await;
    // nack and reject settle as acks do (RabbitMQ 3.13): credit back, nothing requeued.
    got[0].nack(BasicNackOptions { requeue: true, ..Default::default() }).await.expect("nack");
    third.reject(BasicRejectOptions { requeue: true }).await.expect("reject");
    let more = deliveries(&mut consumer, 2).await;
    assert_eq!(more.iter().map(offset_of).collect::<Vec<_>>(), vec![3, 4]);
    assert!(more.iter().all(|d| !d.redelivered));
    assert_no_delivery(&mut consumer).await;
}

#[tokio::test]
async fn what_streams_do_not_do_is_refused_as_rabbitmq_refuses_it() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    let q = declare_stream(&ch, "stream-refusals", &[]).await;
    let vq = format!("queue '{q}' in vhost '/'");

    // No prefetch: a channel error.
    let (conn, ch) = b.channel().await;
    let r = ch.basic_consume(q.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default()).await;
    let (code, text) = expect_amqp_error(r);
    assert_eq!(code, 406);
    assert_eq!(text, format!("PRECONDITION_FAILED - consumer prefetch count is not set for '{vq}'"));
    assert!(conn.status().connected(), "a channel error leaves the connection");

    // Consume with a prefetch and these arguments on a fresh channel: the refusal.
    let refused_with = |args: FieldTable| {
        let conn = &conn;
        let q = q.clone();
        async move {
            let ch = conn.create_channel().await.expect("channel");
            ch.basic_qos(10, BasicQosOptions::default()).await.expect("qos");
            expect_amqp_error(
                ch.basic_consume(q.as_str().into(), "".into(), BasicConsumeOptions::default(), args).await,
            )
        }
    };

    // x-priority: a channel error naming the stream queue type.
    let (code, text) = refused_with(table(&[("x-priority", AMQPValue::LongInt(5))])).await;
    assert_eq!(
        (code, text),
        (406, format!("PRECONDITION_FAILED - invalid arg 'x-priority' for {vq} of queue type rabbit_stream_queue"))
    );

    // A bad x-stream-offset.
    let (code, text) = refused_with(table(&[("x-stream-offset", lstr("1A"))])).await;
    assert_eq!(code, 406);
    assert_eq!(
        text,
        format!(
            "PRECONDITION_FAILED - invalid arg 'x-stream-offset' for {vq}: {{invalid_stream_offset_arg,{{longstr,<<\"1A\">>}}}}"
        )
    );

    // Connection errors (540): automatic acks, global qos, basic.get, queue.purge.
    let connection_error = |what: &'static str, want: String| (what, want);
    let cases = [
        connection_error(
            "no-ack",
            format!("NOT_IMPLEMENTED - automatic acknowledgement not supported by stream queues {vq}"),
        ),
        connection_error("global", format!("NOT_IMPLEMENTED - {vq} does not support global qos")),
        connection_error("get", format!("NOT_IMPLEMENTED - basic.get not supported by stream queues {vq}")),
        connection_error("purge", format!("NOT_IMPLEMENTED - queue.purge not supported by stream queues {vq}")),
    ];
    for (what, want) in cases {
        let (conn, ch) = b.channel().await;
        let r = match what {
            "no-ack" => {
                ch.basic_qos(10, BasicQosOptions::default()).await.expect("qos");
                let o = BasicConsumeOptions { no_ack: true, ..Default::default() };
                ch.basic_consume(q.as_str().into(), "".into(), o, FieldTable::default()).await.map(|_| ())
            }
            "global" => {
                ch.basic_qos(10, BasicQosOptions::default()).await.expect("qos");
                ch.basic_qos(10, BasicQosOptions { global: true }).await.expect("global qos");
                ch.basic_consume(q.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
                    .await
                    .map(|_| ())
            }
            "get" => ch.basic_get(q.as_str().into(), BasicGetOptions::default()).await.map(|_| ()),
            _ => ch.queue_purge(q.as_str().into(), QueuePurgeOptions::default()).await.map(|_| ()),
        };
        let (code, text) = expect_amqp_error(r);
        assert_eq!((code, text), (540, want), "{what}");
        eventually("the connection to close", || {
            let closed = !conn.status().connected();
            async move { closed }
        })
        .await;
    }
    // The stream is unharmed.
    let (_c, ch) = b.channel().await;
    declare_queue(&ch, &q, QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await
        .expect("the stream is still there");
}

#[tokio::test]
async fn deleting_a_stream_cancels_its_consumers_whatever_they_hold() {
    let b = Broker::start();
    let (_c, ch) = confirm_channel(&b).await;
    let q = declare_stream(&ch, "stream-delete", &[]).await;
    publish_each(&ch, &q, &["x", "y"]).await;
    let (_c2, ch2) = b.channel().await;
    let mut consumer = stream_consumer(&ch2, &q, 10, Some(lstr("first"))).await;
    deliveries(&mut consumer, 2).await;
    // if-unused and if-empty are not looked at for streams; delete-ok says 0 (RabbitMQ).
    let n = ch
        .queue_delete(q.as_str().into(), QueueDeleteOptions { if_unused: true, if_empty: true, ..Default::default() })
        .await
        .expect("queue.delete");
    assert_eq!(n, 0);
    // The consumer is cancelled by the server: its stream of deliveries ends.
    let end = within("the consumer's cancel", consumer.next()).await;
    assert!(end.is_none(), "expected the consumer to be cancelled, got {end:?}");
    let r = declare_queue(&ch, &q, QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await;
    assert_eq!(expect_amqp_error(r).0, 404);
    // A new stream of the same name starts empty.
    let (_c3, ch3) = b.channel().await;
    let ok = declare_queue(&ch3, &q, QueueDeclareOptions::durable(), stream_args(&[])).await.expect("declare again");
    assert_eq!(ok.message_count(), 0);
}

#[tokio::test]
async fn cancel_stops_deliveries_and_the_tag_can_be_reused() {
    let b = Broker::start();
    let (_c, ch) = confirm_channel(&b).await;
    let q = declare_stream(&ch, "stream-cancel", &[]).await;
    publish_each(&ch, &q, &["1"]).await;
    let (_c2, ch2) = b.channel().await;
    ch2.basic_qos(5, BasicQosOptions::default()).await.expect("qos");
    let args = table(&[("x-stream-offset", lstr("first"))]);
    let mut c1 = ch2
        .basic_consume(q.as_str().into(), "tag".into(), BasicConsumeOptions::default(), args.clone())
        .await
        .expect("consume");
    next_delivery(&mut c1).await;
    ch2.basic_cancel("tag".into(), BasicCancelOptions::default()).await.expect("cancel");
    let mut c2 = ch2
        .basic_consume(q.as_str().into(), "tag".into(), BasicConsumeOptions::default(), args)
        .await
        .expect("reuse tag");
    assert_eq!(offset_of(&next_delivery(&mut c2).await), 0);
}

#[tokio::test]
async fn exchanges_route_to_streams_and_the_exchange_and_key_come_back() {
    let b = Broker::start();
    let (_c, ch) = confirm_channel(&b).await;
    let q = declare_stream(&ch, "stream-routed", &[]).await;
    let x = auto_delete_exchange(&ch, "to-stream", lapin::ExchangeKind::Topic).await;
    bind(&ch, &q, &x, "a.#").await;
    let c = publish_confirmed_props(&ch, &x, "a.b.c", "routed", BasicProperties::default()).await;
    assert!(c.is_ack());
    let (_c2, ch2) = b.channel().await;
    let mut consumer = stream_consumer(&ch2, &q, 1, Some(lstr("first"))).await;
    let d = next_delivery(&mut consumer).await;
    assert_eq!((d.exchange.as_str(), d.routing_key.as_str(), text(&d.data).as_str()), (x.as_str(), "a.b.c", "routed"));
}

#[tokio::test]
async fn a_large_body_round_trips() {
    let b = Broker::start();
    let (_c, ch) = confirm_channel(&b).await;
    let q = declare_stream(&ch, "stream-large", &[]).await;
    let body: String = (0..300_000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let c = publish_confirmed_props(&ch, "", &q, &body, BasicProperties::default()).await;
    assert!(c.is_ack());
    let (_c2, ch2) = b.channel().await;
    let mut consumer = stream_consumer(&ch2, &q, 1, Some(lstr("first"))).await;
    assert_eq!(text(&next_delivery(&mut consumer).await.data), body);
}

#[tokio::test]
async fn confirmed_messages_survive_kill_9_and_a_restart() {
    let dir = TempDir::new();
    let q = unique("stream-durable");
    let total = 500;
    {
        let mut b = Broker::start_in(&dir.0, &[]);
        let (_c, ch) = confirm_channel(&b).await;
        declare_queue(&ch, &q, QueueDeclareOptions::durable(), stream_args(&[])).await.expect("declare");
        let mut confirms = Vec::new();
        for i in 0..total {
            let p = ch
                .basic_publish(
                    "".into(),
                    q.as_str().into(),
                    BasicPublishOptions::default(),
                    format!("m{i}").as_bytes(),
                    BasicProperties::default(),
                )
                .await
                .expect("publish");
            confirms.push(p);
        }
        for c in confirms {
            assert!(within("confirm", c).await.expect("confirm").is_ack());
        }
        b.kill9();
    }
    let b = Broker::start_in(&dir.0, &[]);
    let (_c, ch) = b.channel().await;
    let ok = declare_queue(&ch, &q, QueueDeclareOptions::durable(), stream_args(&[])).await.expect("redeclare");
    assert_eq!(ok.message_count(), total);
    let mut consumer = stream_consumer(&ch, &q, 1000, Some(lstr("first"))).await;
    let got = deliveries(&mut consumer, total as usize).await;
    for (i, d) in got.iter().enumerate() {
        assert_eq!((offset_of(d), text(&d.data)), (i as i64, format!("m{i}")));
    }
    // And the stream goes on from where it was.
    let (_c2, ch2) = confirm_channel(&b).await;
    publish_each(&ch2, &q, &["after"]).await;
    let d = next_delivery(&mut consumer).await;
    assert_eq!((offset_of(&d), text(&d.data)), (total as i64, "after".to_string()));
}

/// A stream of 1000-byte segments and `x-max-length-bytes`, holding `n` ~200-byte messages
/// published one chunk each; their bodies.
async fn small_segments_stream(ch: &Channel, prefix: &str, max_bytes: i64, n: usize) -> (String, Vec<String>) {
    let q = declare_stream(
        ch,
        prefix,
        &[
            ("x-max-length-bytes", AMQPValue::LongLongInt(max_bytes)),
            ("x-stream-max-segment-size-bytes", AMQPValue::LongLongInt(1000)),
        ],
    )
    .await;
    let body = "x".repeat(200);
    let bodies: Vec<String> = (0..n).map(|i| format!("{i:03}{body}")).collect();
    for m in &bodies {
        publish_each(ch, &q, &[m]).await;
    }
    (q, bodies)
}

#[tokio::test]
async fn retention_by_size_removes_whole_old_segments() {
    let b = Broker::start();
    let (_c, ch) = confirm_channel(&b).await;
    let (q, bodies) = small_segments_stream(&ch, "stream-retention", 3000, 40).await;
    let (_c2, ch2) = b.channel().await;
    let mut consumer = stream_consumer(&ch2, &q, 100, Some(lstr("first"))).await;
    let first = next_delivery(&mut consumer).await;
    let first_offset = offset_of(&first);
    assert!(first_offset > 0, "old segments are gone");
    // The survivors are a contiguous run up to the newest message.
    let rest = deliveries(&mut consumer, (39 - first_offset) as usize).await;
    let mut offsets = vec![first_offset];
    offsets.extend(rest.iter().map(offset_of));
    assert_eq!(offsets, (first_offset..40).collect::<Vec<_>>());
    assert_eq!(text(&rest.last().unwrap().data), bodies[39]);
    assert_no_delivery(&mut consumer).await;
}

#[tokio::test]
async fn filtered_consumers_skip_chunks_without_their_values() {
    let b = Broker::start();
    let (_c, ch) = confirm_channel(&b).await;
    let q = declare_stream(&ch, "stream-filter", &[]).await;
    let with = |v: Option<&str>| {
        let mut h = FieldTable::default();
        if let Some(v) = v {
            h.insert("x-stream-filter-value".into(), lstr(v));
        }
        BasicProperties::default().with_headers(h)
    };
    for (body, value) in [("red-1", Some("red")), ("blue-1", Some("blue")), ("plain", None), ("red-2", Some("red"))] {
        assert!(publish_confirmed_props(&ch, "", &q, body, with(value)).await.is_ack());
    }
    let consume = |filter: AMQPValue, unfiltered: bool| {
        let b = &b;
        let q = q.clone();
        async move {
            let (c, ch) = b.channel().await;
            ch.basic_qos(10, BasicQosOptions::default()).await.expect("qos");
            let args = table(&[
                ("x-stream-offset", lstr("first")),
                ("x-stream-filter", filter),
                ("x-stream-match-unfiltered", AMQPValue::Boolean(unfiltered)),
            ]);
            (c, consume_with(&ch, &q, BasicConsumeOptions::default(), args).await)
        }
    };
    // One chunk per message here, so chunk-level filtering is exact.
    let (_c1, mut red) = consume(lstr("red"), false).await;
    let got: Vec<String> = deliveries(&mut red, 2).await.iter().map(|d| text(&d.data)).collect();
    assert_eq!(got, vec!["red-1", "red-2"]);
    assert_no_delivery(&mut red).await;
    let (_c2, mut blue_or_plain) = consume(str_array(&["blue"]), true).await;
    let got: Vec<String> = deliveries(&mut blue_or_plain, 2).await.iter().map(|d| text(&d.data)).collect();
    assert_eq!(got, vec!["blue-1", "plain"]);
    assert_no_delivery(&mut blue_or_plain).await;
}

#[tokio::test]
async fn stream_declares_are_checked_for_equivalence_on_stream_arguments() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    let q = declare_stream(&ch, "stream-equiv", &[("x-max-age", lstr("1D"))]).await;
    // Unknown x- arguments are not compared.
    declare_queue(
        &ch,
        &q,
        QueueDeclareOptions::durable(),
        stream_args(&[("x-max-age", lstr("1D")), ("x-foo", lstr("bar"))]),
    )
    .await
    .expect("same stream");
    let r = declare_queue(&ch, &q, QueueDeclareOptions::durable(), stream_args(&[("x-max-age", lstr("2D"))])).await;
    let (code, text) = expect_amqp_error(r);
    assert_eq!(code, 406);
    assert_eq!(
        text,
        format!(
            "PRECONDITION_FAILED - inequivalent arg 'x-max-age' for queue '{q}' in vhost '/': received '2D' but current is '1D'"
        )
    );
}

#[tokio::test]
async fn retention_by_age_removes_old_segments_even_when_nothing_is_written() {
    let b = Broker::start();
    let (_c, ch) = confirm_channel(&b).await;
    let q = declare_stream(
        &ch,
        "stream-age",
        &[("x-max-age", lstr("2s")), ("x-stream-max-segment-size-bytes", AMQPValue::LongLongInt(500))],
    )
    .await;
    let body = "y".repeat(300);
    for i in 0..6 {
        publish_each(&ch, &q, &[&format!("{i}{body}")]).await;
    }
    // The old segments go once they are older than 2 s (looked at periodically, as osiris
    // ≥ 1.4 does); the last segment always stays.
    eventually("old segments to expire", || {
        let b = &b;
        let q = q.clone();
        async move {
            let (_c, ch) = b.channel().await;
            let ok = declare_queue(
                &ch,
                &q,
                QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .expect("passive declare");
            ok.message_count() < 6
        }
    })
    .await;
    let (_c2, ch2) = b.channel().await;
    let mut consumer = stream_consumer(&ch2, &q, 10, Some(lstr("first"))).await;
    let d = next_delivery(&mut consumer).await;
    assert!(offset_of(&d) > 0 && offset_of(&d) <= 5, "only the newest segment is left");
}

#[tokio::test]
async fn a_policy_sets_a_streams_retention_over_its_argument() {
    let b = Broker::start_with_args(&["--http-listen", "127.0.0.1:0"]);
    let (_c, ch) = confirm_channel(&b).await;
    let (q, _) = small_segments_stream(&ch, "stream-policy", 1_000_000_000, 30).await;
    assert_eq!(ready_count(&ch, &q).await, 30);
    // RabbitMQ: for streams the policy's value wins over the argument (applied live).
    b.admin(
        "PUT",
        &format!("/api/policies/%2F/{q}-retention"),
        Some(serde_json::json!({"pattern": format!("^{q}$"), "apply-to": "streams", "definition": {"max-length-bytes": 2000}})),
    );
    eventually("the policy's retention to apply", || {
        let ch = ch.clone();
        let q = q.clone();
        async move { ready_count(&ch, &q).await < 30 }
    })
    .await;
    let v = b.admin("GET", &format!("/api/queues/%2F/{q}"), None);
    assert_eq!(v["type"], "stream");
    assert_eq!(v["policy"], format!("{q}-retention"));
}

#[tokio::test]
async fn transactions_write_a_streams_messages_at_commit() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    let q = declare_stream(&ch, "stream-tx", &[]).await;
    ch.tx_select().await.expect("tx.select");
    publish_to(&ch, &q, "kept").await;
    ch.tx_commit().await.expect("tx.commit");
    publish_to(&ch, &q, "dropped").await;
    ch.tx_rollback().await.expect("tx.rollback");
    let (_c2, ch2) = b.channel().await;
    let mut consumer = stream_consumer(&ch2, &q, 10, Some(lstr("first"))).await;
    assert_eq!(text(&next_delivery(&mut consumer).await.data), "kept");
    assert_no_delivery(&mut consumer).await;
}

#[tokio::test]
async fn the_management_api_shows_a_stream() {
    let b = Broker::start_with_args(&["--http-listen", "127.0.0.1:0"]);
    let (_c, ch) = confirm_channel(&b).await;
    let q = declare_stream(&ch, "stream-api", &[("x-max-age", lstr("7D"))]).await;
    publish_each(&ch, &q, &["a", "b"]).await;
    let v = b.admin("GET", &format!("/api/queues/%2F/{q}"), None);
    assert_eq!(v["type"], "stream");
    assert_eq!(v["durable"], true);
    assert_eq!(v["arguments"]["x-max-age"], "7D");
    assert_eq!(v["messages"], 2);
    // And deleted through it.
    b.admin("DELETE", &format!("/api/queues/%2F/{q}"), None);
    let r = declare_queue(&ch, &q, QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await;
    assert_eq!(expect_amqp_error(r).0, 404);
}

/// kill -9 while a publisher streams with confirms, a few times over: after the last restart
/// the stream holds every confirmed message, once, in publish order, at dense offsets.
#[tokio::test]
async fn no_confirmed_message_is_lost_across_repeated_kill_9() {
    use std::sync::{Arc, Mutex};
    let cycles: u64 = std::env::var("CRASH_CYCLES").ok().and_then(|c| c.parse().ok()).unwrap_or(4);
    let dir = TempDir::new();
    let q = "crash-stream";
    let confirmed: Arc<Mutex<Vec<u64>>> = Arc::default();
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    for cycle in 0..cycles {
        let mut b = Broker::start_in(&dir.0, &[]);
        let (conn, ch) = confirm_channel(&b).await;
        declare_queue(&ch, q, QueueDeclareOptions::durable(), stream_args(&[])).await.expect("declare");
        let conf = confirmed.clone();
        let publisher = tokio::spawn(async move {
            let mut id = cycle * 1_000_000;
            loop {
                let mut pending = Vec::new();
                for _ in 0..200 {
                    let body = id.to_string();
                    let p = ch.basic_publish(
                        "".into(),
                        q.into(),
                        BasicPublishOptions::default(),
                        body.as_bytes(),
                        BasicProperties::default(),
                    );
                    match p.await {
                        Ok(c) => pending.push((id, c)),
                        Err(_) => return,
                    }
                    id += 1;
                }
                for (id, c) in pending {
                    match c.await {
                        Ok(c) if c.is_ack() => conf.lock().unwrap().push(id),
                        _ => return,
                    }
                }
            }
        });
        // The crash moment is the point of the test: 50 to 550 ms into the cycle.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(std::time::Duration::from_millis(50 + seed % 500)).await;
        b.kill9();
        publisher.abort();
        let _ = publisher.await;
        drop(conn);
    }
    let b = Broker::start_in(&dir.0, &[]);
    let (_c, ch) = b.channel().await;
    let ok = declare_queue(&ch, q, QueueDeclareOptions::durable(), stream_args(&[])).await.expect("declare");
    let total = ok.message_count() as usize;
    let mut consumer = stream_consumer(&ch, q, 5000, Some(lstr("first"))).await;
    let mut ids = Vec::with_capacity(total);
    // Acked as they come: the prefetch is credit, and only acks give it back.
    for i in 0..total {
        let d = next_delivery(&mut consumer).await;
        assert_eq!(offset_of(&d), i as i64, "offsets are dense");
        ids.push(text(&d.data).parse::<u64>().expect("an id"));
        if i % 1000 == 999 {
            d.ack(BasicAckOptions { multiple: true }).await.expect("ack");
        }
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "publish order, no duplicates");
    let confirmed = confirmed.lock().unwrap();
    assert!(!confirmed.is_empty(), "the publisher got confirms");
    let kept: std::collections::HashSet<u64> = ids.iter().copied().collect();
    let lost: Vec<&u64> = confirmed.iter().filter(|id| !kept.contains(id)).collect();
    assert!(lost.is_empty(), "{} confirmed messages lost, e.g. {:?}", lost.len(), &lost[..lost.len().min(10)]);
    eprintln!("{} confirmed, {} in the stream", confirmed.len(), ids.len());
}

/// With `storage.fsync = false` a stream confirms and shows what it wrote without waiting
/// for the disk (as RabbitMQ's streams, which never fsync); nothing else changes.
#[tokio::test]
async fn without_fsync_a_stream_confirms_and_delivers_what_it_wrote() {
    let b = Broker::start_with_config("[storage]\nfsync = false\n");
    let (_c, ch) = confirm_channel(&b).await;
    let q = declare_stream(&ch, "stream-nofsync", &[]).await;
    publish_each(&ch, &q, &["a", "b", "c"]).await;
    let (_c2, ch2) = b.channel().await;
    let mut consumer = stream_consumer(&ch2, &q, 10, Some(lstr("first"))).await;
    assert_eq!(take(&mut consumer, 3).await, vec![(0, "a".into()), (1, "b".into()), (2, "c".into())]);
    assert_no_delivery(&mut consumer).await;
}
