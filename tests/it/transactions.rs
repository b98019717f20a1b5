//! Transactions (`tx` class): publishes held until `tx.commit` and discarded by `tx.rollback`
//! or channel close, acks held the same way (rolled-back acks leave messages unacked),
//! mandatory returns sent at commit before `commit-ok`, and the 406 texts for commit/rollback
//! without `tx.select` and for mixing tx with publisher confirms.

use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};

use crate::common::*;

async fn get_unacked(ch: &Channel, q: &str) -> lapin::message::BasicGetMessage {
    within("basic.get", ch.basic_get(q.into(), BasicGetOptions { no_ack: false }))
        .await
        .expect("basic.get")
        .expect("a message to get")
}

#[tokio::test]
async fn transactional_publishes_are_invisible_until_commit() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    let q = exclusive_queue(&ch).await;
    ch.tx_select().await.expect("tx.select");
    publish_to(&ch, &q, "a").await;
    publish_to(&ch, &q, "b").await;
    // basic.get is not transactional: it sees the queue as it is now.
    assert!(get_all(&ch, &q).await.is_empty(), "nothing enqueued before commit");
    let other = conn.create_channel().await.expect("channel");
    assert_eq!(ready_count(&other, &q).await, 0);
    within("tx.commit", ch.tx_commit()).await.expect("tx.commit");
    assert_eq!(ready_count(&other, &q).await, 2, "commit-ok means the messages are enqueued");
    assert_eq!(get_all(&other, &q).await, vec!["a", "b"]);
}

#[tokio::test]
async fn rollback_discards_publishes_and_the_channel_stays_transactional() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    let q = exclusive_queue(&ch).await;
    ch.tx_select().await.expect("tx.select");
    publish_to(&ch, &q, "discarded").await;
    within("tx.rollback", ch.tx_rollback()).await.expect("tx.rollback");
    within("tx.commit", ch.tx_commit()).await.expect("empty tx.commit");
    let other = conn.create_channel().await.expect("channel");
    assert!(get_all(&other, &q).await.is_empty(), "rolled-back publish never arrives");
    publish_to(&ch, &q, "kept").await;
    assert!(get_all(&other, &q).await.is_empty(), "still transactional after a rollback");
    within("tx.commit", ch.tx_commit()).await.expect("tx.commit");
    assert_eq!(get_all(&other, &q).await, vec!["kept"]);
}

#[tokio::test]
async fn closing_a_transactional_channel_discards_uncommitted_publishes() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    let q = exclusive_queue(&ch).await;
    let tx = conn.create_channel().await.expect("channel");
    tx.tx_select().await.expect("tx.select");
    publish_to(&tx, &q, "never").await;
    tx.close(200, "OK".into()).await.expect("close");
    assert!(get_all(&ch, &q).await.is_empty());
}

#[tokio::test]
async fn rolled_back_acks_leave_messages_unacked() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    let q = exclusive_queue(&ch).await;
    publish_to(&ch, &q, "m1").await;
    publish_to(&ch, &q, "m2").await;
    sync_point(&ch).await;
    let tx = conn.create_channel().await.expect("channel");
    let _first = get_unacked(&tx, &q).await;
    let second = get_unacked(&tx, &q).await;
    tx.tx_select().await.expect("tx.select");
    tx.basic_ack(second.delivery.delivery_tag, BasicAckOptions { multiple: true }).await.expect("ack");
    within("tx.rollback", tx.tx_rollback()).await.expect("tx.rollback");
    assert_eq!(ready_count(&ch, &q).await, 0, "rolled-back acks requeue nothing");
    tx.close(200, "OK".into()).await.expect("close");
    // The messages were still unacked, so closing the channel requeues them.
    eventually("the unacked messages to be requeued", || async { ready_count(&ch, &q).await == 2 }).await;
}

#[tokio::test]
async fn acks_take_effect_at_commit_and_can_be_repeated_after_a_rollback() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    let q = exclusive_queue(&ch).await;
    publish_to(&ch, &q, "m1").await;
    publish_to(&ch, &q, "m2").await;
    sync_point(&ch).await;
    let tx = conn.create_channel().await.expect("channel");
    let first = get_unacked(&tx, &q).await;
    let second = get_unacked(&tx, &q).await;
    tx.tx_select().await.expect("tx.select");
    tx.basic_ack(first.delivery.delivery_tag, BasicAckOptions::default()).await.expect("ack");
    within("tx.rollback", tx.tx_rollback()).await.expect("tx.rollback");
    // The same tags are still outstanding: acking them again is valid, not 406.
    tx.basic_ack(first.delivery.delivery_tag, BasicAckOptions::default()).await.expect("ack again");
    tx.basic_ack(second.delivery.delivery_tag, BasicAckOptions::default()).await.expect("ack");
    within("tx.commit", tx.tx_commit()).await.expect("tx.commit");
    tx.close(200, "OK".into()).await.expect("close");
    let mut consumer =
        consume_with(&ch, &q, BasicConsumeOptions { no_ack: true, ..Default::default() }, FieldTable::default()).await;
    // Absence check: committed acks settled both messages, so closing requeued nothing.
    assert_no_delivery(&mut consumer).await;
}

#[tokio::test]
async fn mandatory_returns_arrive_at_commit_before_commit_ok() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    ch.tx_select().await.expect("tx.select");
    let key = unique("nobody");
    ch.basic_publish(
        "amq.direct".into(),
        key.as_str().into(),
        BasicPublishOptions { mandatory: true, ..Default::default() },
        b"bounce",
        BasicProperties::default(),
    )
    .await
    .expect("publish");
    sync_point(&ch).await;
    assert!(ch.wait_for_confirms().await.expect("returns").is_empty(), "no basic.return before commit");
    within("tx.commit", ch.tx_commit()).await.expect("tx.commit");
    // The return precedes commit-ok on the channel, so lapin has it once the commit resolves.
    let returned = ch.wait_for_confirms().await.expect("returns");
    assert_eq!(returned.len(), 1);
    assert_eq!((returned[0].reply_code, returned[0].reply_text.as_str()), (312, "NO_ROUTE"));
    assert_eq!(returned[0].delivery.routing_key.as_str(), key);
    assert_eq!(returned[0].delivery.data, b"bounce");
}

#[tokio::test]
async fn commit_or_rollback_without_select_is_precondition_failed() {
    let b = Broker::start();
    let conn = b.connect().await;
    let not_tx = (406, "PRECONDITION_FAILED - channel is not transactional".to_string());
    let ch = conn.create_channel().await.expect("channel");
    assert_eq!(expect_amqp_error(within("tx.commit", ch.tx_commit()).await), not_tx);
    let ch = conn.create_channel().await.expect("channel");
    assert_eq!(expect_amqp_error(within("tx.rollback", ch.tx_rollback()).await), not_tx);
}

#[tokio::test]
async fn tx_and_confirm_modes_are_mutually_exclusive() {
    let b = Broker::start();
    let conn = b.connect().await;
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    assert_eq!(
        expect_amqp_error(within("tx.select", ch.tx_select()).await),
        (406, "PRECONDITION_FAILED - cannot switch from confirm to tx mode".to_string())
    );
    let ch = conn.create_channel().await.expect("channel");
    ch.tx_select().await.expect("tx.select");
    assert_eq!(
        expect_amqp_error(within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await),
        (406, "PRECONDITION_FAILED - cannot switch from tx to confirm mode".to_string())
    );
    let ch = conn.create_channel().await.expect("channel");
    ch.tx_select().await.expect("tx.select");
    ch.tx_select().await.expect("tx.select is repeatable");
    let q = exclusive_queue_with(&ch, "tx-ok", FieldTable::default()).await;
    assert_eq!(ready_count(&ch, &q).await, 0);
}
