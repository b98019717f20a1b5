//! Both faces of one stream: what AMQP 0-9-1 publishes, a stream client reads as the AMQP 1.0
//! message RabbitMQ would have stored, and the other way round.

use futures_util::StreamExt;
use lapin::BasicProperties;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use rabbitmq_stream_client::types::{Message, OffsetSpecification, SimpleValue};

use super::client::{consumer, send_confirmed};
use super::{client_stream, env, start};
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_publishes_reach_stream_clients_with_their_properties() {
    let b = start();
    let (_c, ch) = b.channel().await;
    ch.confirm_select(Default::default()).await.unwrap();
    let s = unique("face-in");
    declare_queue(&ch, &s, QueueDeclareOptions::durable(), table(&[("x-queue-type", lstr("stream"))])).await.unwrap();
    let mut headers = FieldTable::default();
    headers.insert("str".into(), lstr("v"));
    // -700, not a value in -128..=127: those go out as AMQP 1.0 `smallint` (as RabbitMQ writes
    // them), which this client reads back unsigned.
    headers.insert("int".into(), AMQPValue::LongInt(-700));
    headers.insert("bool".into(), AMQPValue::Boolean(true));
    let props = BasicProperties::default()
        .with_content_type(ShortString::from("text/plain"))
        .with_content_encoding(ShortString::from("utf-8"))
        .with_delivery_mode(2)
        .with_priority(3)
        .with_correlation_id(ShortString::from("corr-1"))
        .with_reply_to(ShortString::from("replies"))
        .with_message_id(ShortString::from("mid-1"))
        .with_user_id(ShortString::from("guest"))
        .with_app_id(ShortString::from("the-app"))
        .with_headers(headers);
    let c = publish_confirmed_props(&ch, "", &s, "hello stream", props).await;
    assert!(c.is_ack());

    let e = env(&b).await;
    let mut sub = consumer(&e, &s, OffsetSpecification::First).await;
    let d = within("a delivery", sub.next()).await.unwrap().unwrap();
    let m = d.message();
    assert_eq!(d.offset(), 0);
    assert_eq!(m.data(), Some(&b"hello stream"[..]));
    let p = m.properties().expect("properties");
    assert_eq!(p.message_id, Some("mid-1".to_string().into()));
    assert_eq!(p.correlation_id, Some("corr-1".to_string().into()));
    assert_eq!(p.content_type.as_ref().map(|s| s.to_string()), Some("text/plain".into()));
    assert_eq!(p.content_encoding.as_ref().map(|s| s.to_string()), Some("utf-8".into()));
    assert_eq!(p.reply_to.as_deref(), Some("replies"));
    assert_eq!(p.user_id.as_deref(), Some(&b"guest"[..]));
    assert_eq!(p.group_id.as_deref(), Some("the-app"), "app-id goes in group-id, as RabbitMQ");
    let h = m.header().expect("header");
    assert_eq!((h.durable, h.priority), (true, 3));
    let a = m.application_properties().expect("application properties");
    assert_eq!(a.get("str"), Some(&SimpleValue::from("v")));
    assert_eq!(a.get("int"), Some(&SimpleValue::Int(-700)));
    assert_eq!(a.get("bool"), Some(&SimpleValue::Boolean(true)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_client_publishes_reach_amqp_consumers() {
    let (b, e, s) = client_stream("face-out").await;
    let mut p = within("producer", e.producer().build(&s)).await.unwrap();
    let m = Message::builder()
        .body("from the stream protocol")
        .properties()
        .message_id("m-1".to_string())
        .correlation_id("c-1".to_string())
        .content_type("application/json")
        .message_builder()
        .application_properties()
        .insert("k", "v")
        .insert("n", 7i32)
        .message_builder()
        .build();
    let st = within("confirm", p.batch_send_with_confirm(vec![m])).await.unwrap();
    assert!(st[0].confirmed());
    send_confirmed(&mut p, &["second".to_string()]).await;

    let (_c, ch) = b.channel().await;
    ch.basic_qos(10, BasicQosOptions::default()).await.unwrap();
    let args = table(&[("x-stream-offset", lstr("first"))]);
    let mut c = consume_with(&ch, &s, BasicConsumeOptions::default(), args).await;
    let got = deliveries(&mut c, 2).await;
    let d = &got[0];
    assert_eq!(text(&d.data), "from the stream protocol");
    assert_eq!((d.exchange.as_str(), d.routing_key.as_str()), ("", s.as_str()), "RabbitMQ's exchange and key");
    assert!(!d.redelivered);
    let props = &d.properties;
    assert_eq!(props.message_id().as_ref().map(|v| v.as_str()), Some("m-1"));
    assert_eq!(props.correlation_id().as_ref().map(|v| v.as_str()), Some("c-1"));
    assert_eq!(props.content_type().as_ref().map(|v| v.as_str()), Some("application/json"));
    let headers = props.headers().as_ref().expect("headers").inner();
    assert_eq!(headers.get("k"), Some(&lstr("v")));
    assert_eq!(headers.get("n"), Some(&AMQPValue::LongInt(7)));
    assert_eq!(headers.get("x-stream-offset"), Some(&AMQPValue::LongLongInt(0)));
    assert_eq!(text(&got[1].data), "second");
    for d in got {
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
}

/// A record that is not an AMQP 1.0 message (a client that publishes raw bytes) reaches AMQP
/// 0-9-1 consumers as its bytes, not skipped: nothing in the stream is invisible to them.
#[tokio::test]
async fn raw_records_reach_amqp_consumers_as_their_bytes() {
    let (b, mut r, s) = super::raw_stream("face-raw").await;
    assert_eq!(r.declare_publisher(1, "", &s).await, 1);
    r.publish(1, &[(1, b"not amqp 1.0".as_slice()), (2, b"\x00\x53\x75".as_slice())]).await;
    assert_eq!(r.confirms(1, 2).await, vec![1, 2]);
    let (_c, ch) = b.channel().await;
    ch.basic_qos(10, BasicQosOptions::default()).await.unwrap();
    let args = table(&[("x-stream-offset", lstr("first"))]);
    let mut c = consume_with(&ch, &s, BasicConsumeOptions::default(), args).await;
    let got = deliveries(&mut c, 2).await;
    assert_eq!(got[0].data, b"not amqp 1.0");
    assert_eq!(got[1].data, b"\x00\x53\x75", "a truncated section is delivered raw too");
    assert_eq!((got[0].exchange.as_str(), got[0].routing_key.as_str()), ("", s.as_str()));
    assert_eq!(header(&got[1].properties, "x-stream-offset"), Some(&AMQPValue::LongLongInt(1)));
}
