//! One lapin session for the fuzz seed corpus (AMQP_URL): declares with arguments, binds,
//! consume, publishes with headers and properties, confirms, tx, get/ack/nack, deletes.

use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};

fn table(entries: Vec<(&str, AMQPValue)>) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert(k.into(), v);
    }
    t
}

fn s(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v.as_bytes().to_vec()))
}

#[tokio::main]
async fn main() -> Result<(), lapin::Error> {
    let url = std::env::var("AMQP_URL").expect("AMQP_URL");
    let conn = Connection::connect(&url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.basic_qos(20, BasicQosOptions::default()).await?;
    ch.exchange_declare(
        "seedrs.x".into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions { durable: true, ..Default::default() },
        table(vec![("alternate-exchange", s("seedrs.ae"))]),
    )
    .await?;
    ch.exchange_declare("seedrs.ae".into(), ExchangeKind::Fanout, Default::default(), FieldTable::default()).await?;
    ch.exchange_declare("seedrs.h".into(), ExchangeKind::Headers, Default::default(), FieldTable::default()).await?;
    let args = table(vec![
        ("x-message-ttl", AMQPValue::LongInt(45_000)),
        ("x-expires", AMQPValue::LongLongInt(3_600_000)),
        ("x-max-length-bytes", AMQPValue::LongLongInt(1 << 20)),
        ("x-dead-letter-exchange", s("seedrs.ae")),
        ("x-max-priority", AMQPValue::ShortShortUInt(9)),
        ("x-queue-type", s("classic")),
    ]);
    ch.queue_declare("seedrs.q".into(), QueueDeclareOptions { durable: true, ..Default::default() }, args).await?;
    ch.queue_bind("seedrs.q".into(), "seedrs.x".into(), "a.#".into(), Default::default(), FieldTable::default())
        .await?;
    ch.queue_bind(
        "seedrs.q".into(),
        "seedrs.h".into(),
        "".into(),
        Default::default(),
        table(vec![("x-match", s("all")), ("color", s("red")), ("size", AMQPValue::ShortInt(3))]),
    )
    .await?;
    ch.exchange_bind("seedrs.ae".into(), "seedrs.x".into(), "z.*".into(), Default::default(), FieldTable::default())
        .await?;
    let nested = table(vec![("deep", AMQPValue::FieldTable(table(vec![("deeper", AMQPValue::Boolean(false))])))]);
    let headers = table(vec![
        ("color", s("red")),
        ("size", AMQPValue::ShortInt(3)),
        ("ratio", AMQPValue::Double(0.25)),
        ("f32", AMQPValue::Float(-1.5)),
        ("ts", AMQPValue::Timestamp(1_700_000_000)),
        ("list", AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::LongInt(1), s("two"), AMQPValue::Void]))),
        ("nested", AMQPValue::FieldTable(nested)),
        ("bytes", AMQPValue::ByteArray(vec![0u8, 1, 2, 255].into())),
    ]);
    let props = BasicProperties::default()
        .with_content_type("text/plain".into())
        .with_content_encoding("utf8".into())
        .with_headers(headers.clone())
        .with_delivery_mode(2)
        .with_priority(4)
        .with_correlation_id("c-rs".into())
        .with_reply_to("replies".into())
        .with_expiration("120000".into())
        .with_message_id("m-rs".into())
        .with_timestamp(1_700_000_001)
        .with_type("t".into())
        .with_user_id("guest".into())
        .with_app_id("seed-rs".into());
    ch.basic_publish("seedrs.x".into(), "a.b".into(), Default::default(), b"hello from lapin", props).await?;
    ch.basic_publish(
        "seedrs.h".into(),
        "".into(),
        Default::default(),
        b"headers routed",
        BasicProperties::default().with_headers(headers),
    )
    .await?;
    ch.basic_publish("".into(), "seedrs.q".into(), Default::default(), &vec![7u8; 70_000], Default::default()).await?;
    let mut consumer = ch
        .basic_consume(
            "seedrs.q".into(),
            "seedrs-consumer".into(),
            Default::default(),
            table(vec![("x-priority", AMQPValue::LongInt(1))]),
        )
        .await?;
    for _ in 0..2 {
        if let Some(Ok(d)) = consumer.next().await {
            d.ack(BasicAckOptions::default()).await?;
        }
    }
    ch.basic_cancel("seedrs-consumer".into(), Default::default()).await?;
    let cc = conn.create_channel().await?;
    cc.confirm_select(Default::default()).await?;
    cc.basic_publish(
        "seedrs.x".into(),
        "a.c".into(),
        BasicPublishOptions { mandatory: true, ..Default::default() },
        b"confirmed",
        Default::default(),
    )
    .await?
    .await?;
    cc.basic_publish("seedrs.x".into(), "z.y".into(), Default::default(), b"alt", Default::default()).await?.await?;
    let tx = conn.create_channel().await?;
    tx.tx_select().await?;
    tx.basic_publish("".into(), "seedrs.q".into(), Default::default(), b"tx", Default::default()).await?;
    tx.tx_commit().await?;
    tx.basic_publish("".into(), "seedrs.q".into(), Default::default(), b"rollback", Default::default()).await?;
    tx.tx_rollback().await?;
    if let Some(m) = ch.basic_get("seedrs.q".into(), Default::default()).await? {
        m.nack(BasicNackOptions { requeue: true, ..Default::default() }).await?;
    }
    if let Some(m) = ch.basic_get("seedrs.q".into(), Default::default()).await? {
        m.reject(BasicRejectOptions { requeue: false }).await?;
    }
    ch.basic_recover(BasicRecoverOptions { requeue: true }).await?;
    ch.queue_unbind("seedrs.q".into(), "seedrs.x".into(), "a.#".into(), FieldTable::default()).await?;
    ch.exchange_unbind("seedrs.ae".into(), "seedrs.x".into(), "z.*".into(), Default::default(), FieldTable::default())
        .await?;
    ch.queue_purge("seedrs.q".into(), Default::default()).await?;
    ch.queue_delete("seedrs.q".into(), Default::default()).await?;
    ch.exchange_delete("seedrs.x".into(), Default::default()).await?;
    ch.exchange_delete("seedrs.h".into(), Default::default()).await?;
    tx.close(200, "bye".into()).await?;
    cc.close(200, "bye".into()).await?;
    ch.close(200, "bye".into()).await?;
    conn.close(200, "bye".into()).await?;
    println!("lapin session done");
    Ok(())
}
