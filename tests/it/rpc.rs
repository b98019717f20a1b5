//! Request/reply helpers: direct reply-to (`amq.rabbitmq.reply-to` pseudo-queue: consume with
//! no-ack, reply_to rewriting, replies delivered to the requester's consumer, the 406 texts,
//! passive declare) and sender-selected distribution (`CC`/`BCC` headers adding routing keys,
//! one copy per queue, BCC stripped, CC kept, validation).

use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, ExchangeKind};

use crate::common::*;

const REPLY_TO: &str = "amq.rabbitmq.reply-to";

fn no_ack() -> BasicConsumeOptions {
    BasicConsumeOptions { no_ack: true, ..Default::default() }
}

#[tokio::test]
async fn direct_reply_to_round_trip() {
    let b = Broker::start();
    let (_server_conn, server) = b.channel().await;
    let requests = exclusive_queue(&server).await;
    let mut incoming = consume_with(&server, &requests, no_ack(), FieldTable::default()).await;

    let (_client_conn, client) = b.channel().await;
    let mut replies = consume_with(&client, REPLY_TO, no_ack(), FieldTable::default()).await;
    let props = BasicProperties::default().with_reply_to(REPLY_TO.into()).with_correlation_id("req-1".into());
    publish_props(&client, "", &requests, "ping", props).await;

    let request = next_delivery(&mut incoming).await;
    assert_eq!(text(&request.data), "ping");
    let reply_name = request.properties.reply_to().as_ref().expect("reply_to is set").as_str().to_string();
    assert!(
        reply_name.starts_with("amq.rabbitmq.reply-to.") && reply_name.len() > REPLY_TO.len() + 1,
        "reply_to is rewritten to a per-channel name: {reply_name}"
    );
    let reply_props = BasicProperties::default().with_correlation_id("req-1".into());
    publish_props(&server, "", &reply_name, "pong", reply_props).await;

    // lapin hands a delivery to this stream only when it carries this consumer's tag.
    let reply = next_delivery(&mut replies).await;
    assert_eq!(text(&reply.data), "pong");
    assert_eq!(reply.exchange.as_str(), "");
    assert_eq!(reply.routing_key.as_str(), reply_name, "delivered with the full reply name as routing key");
    assert_eq!(reply.properties.correlation_id().as_ref().map(|s| s.as_str()), Some("req-1"));
}

#[tokio::test]
async fn consuming_reply_to_with_acks_is_precondition_failed() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let err = expect_amqp_error(
        ch.basic_consume(REPLY_TO.into(), "".into(), BasicConsumeOptions::default(), FieldTable::default()).await,
    );
    assert_eq!(err, (406, "PRECONDITION_FAILED - reply consumer cannot acknowledge".to_string()));
}

#[tokio::test]
async fn a_second_reply_consumer_on_the_channel_is_precondition_failed() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let _first = consume_with(&ch, REPLY_TO, no_ack(), FieldTable::default()).await;
    let err = expect_amqp_error(ch.basic_consume(REPLY_TO.into(), "".into(), no_ack(), FieldTable::default()).await);
    assert_eq!(err, (406, "PRECONDITION_FAILED - reply consumer already set".to_string()));
}

#[tokio::test]
async fn publishing_with_reply_to_but_no_reply_consumer_is_precondition_failed() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    let q = exclusive_queue(&ch).await;
    let other = conn.create_channel().await.expect("channel");
    let mut ev = events(&conn);
    publish_props(&other, "", &q, "orphan", BasicProperties::default().with_reply_to(REPLY_TO.into())).await;
    assert_eq!(
        next_close(&mut ev).await,
        (406, "PRECONDITION_FAILED - fast reply consumer does not exist".to_string())
    );
    assert!(get_all(&ch, &q).await.is_empty(), "the request was not routed");
}

#[tokio::test]
async fn passive_declare_of_the_reply_to_pseudo_queue_succeeds() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let ok = declare_queue(
        &ch,
        REPLY_TO,
        QueueDeclareOptions { passive: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("passive declare of amq.rabbitmq.reply-to");
    assert_eq!(ok.name().as_str(), REPLY_TO);
    assert_eq!(ok.message_count(), 0);
    sync_point(&ch).await;
}

#[tokio::test]
async fn cc_and_bcc_add_routing_keys_bcc_is_stripped_and_cc_kept() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let x = auto_delete_exchange(&ch, "ssd", ExchangeKind::Direct).await;
    let (qa, qb, qc) = (exclusive_queue(&ch).await, exclusive_queue(&ch).await, exclusive_queue(&ch).await);
    bind(&ch, &qa, &x, "key-a").await;
    bind(&ch, &qb, &x, "key-b").await;
    bind(&ch, &qc, &x, "key-c").await;
    let headers = table(&[("CC", str_array(&["key-b"])), ("BCC", str_array(&["key-c"]))]);
    publish_props(&ch, &x, "key-a", "fan", BasicProperties::default().with_headers(headers)).await;
    for q in [&qa, &qb, &qc] {
        let mut consumer = consume_with(&ch, q, no_ack(), FieldTable::default()).await;
        let d = next_delivery(&mut consumer).await;
        assert_eq!(text(&d.data), "fan");
        assert_eq!(d.routing_key.as_str(), "key-a", "every copy carries the original routing key");
        assert_eq!(header(&d.properties, "CC"), Some(&str_array(&["key-b"])), "CC is kept");
        assert!(header(&d.properties, "BCC").is_none(), "BCC is stripped");
    }
}

#[tokio::test]
async fn cc_matching_the_same_queue_twice_delivers_one_copy() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let x = auto_delete_exchange(&ch, "ssd-once", ExchangeKind::Direct).await;
    let q = exclusive_queue(&ch).await;
    bind(&ch, &q, &x, "k1").await;
    bind(&ch, &q, &x, "k2").await;
    let headers = table(&[("CC", str_array(&["k2", "k1"]))]);
    publish_props(&ch, &x, "k1", "once", BasicProperties::default().with_headers(headers)).await;
    assert_eq!(get_all(&ch, &q).await, vec!["once"]);
}

#[tokio::test]
async fn bcc_through_the_default_exchange_reaches_the_named_queue() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let (q1, q2) = (exclusive_queue(&ch).await, exclusive_queue(&ch).await);
    let headers = table(&[("BCC", str_array(&[&q2]))]);
    publish_props(&ch, "", &q1, "both", BasicProperties::default().with_headers(headers)).await;
    assert_eq!(get_all(&ch, &q1).await, vec!["both"]);
    assert_eq!(get_all(&ch, &q2).await, vec!["both"]);
}

#[tokio::test]
async fn non_array_cc_or_bcc_header_is_precondition_failed() {
    let b = Broker::start();
    let conn = b.connect().await;
    let setup = conn.create_channel().await.expect("channel");
    let q = exclusive_queue(&setup).await;
    for key in ["CC", "BCC"] {
        let ch = conn.create_channel().await.expect("channel");
        let mut ev = events(&conn);
        let headers = table(&[(key, lstr("not-an-array"))]);
        publish_props(&ch, "", &q, "bad", BasicProperties::default().with_headers(headers)).await;
        assert_eq!(
            next_close(&mut ev).await,
            (406, format!("PRECONDITION_FAILED - invalid message: {{unacceptable_type_in_header,\"{key}\",longstr}}"))
        );
    }
    assert!(get_all(&setup, &q).await.is_empty());
}
