//! QueueState driven directly, with explicit time.

use std::sync::Arc;
use std::time::Duration;

use amq_protocol::types::{AMQPValue, FieldTable};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::*;
use crate::connection::flow::{ChannelLimit, FlowGauge, WRITER_HIGH_WATERMARK};
use crate::protocol::BasicProperties;
use crate::protocol::methods::longstr;
use crate::queue::args::QueueArgs;

fn msg_with(n: u8, props: BasicProperties) -> Arc<Message> {
    Arc::new(Message::build("".into(), "q".into(), props, [bytes::Bytes::from(vec![n])].into_iter().collect()))
}

fn msg(n: u8) -> Arc<Message> {
    msg_with(n, BasicProperties::default())
}

fn consumer(tag: &str, prefetch: u32, limit: &Arc<ChannelLimit>) -> ConsumerSpec {
    let (inbox, _rx) = mpsc::unbounded_channel();
    ConsumerSpec {
        conn_id: 1,
        channel: 1,
        tag: tag.into(),
        no_ack: false,
        exclusive: false,
        prefetch,
        priority: 0,
        channel_limit: limit.clone(),
        gauge: Arc::new(FlowGauge::default()),
        inbox,
    }
}

fn body(d: &Delivery) -> u8 {
    d.msg.body[0][0]
}

fn queue(args: QueueArgs) -> (QueueState, Instant) {
    let now = Instant::now();
    (QueueState::new("q", "/", args, now), now)
}

fn dlx() -> QueueArgs {
    QueueArgs { dead_letter_exchange: Some("dlx".into()), ..Default::default() }
}

fn reasons(q: &mut QueueState) -> Vec<(u8, &'static str)> {
    q.take_dead().iter().map(|(m, r)| (m.body[0][0], r.as_str())).collect()
}

#[test]
fn round_robin_with_per_consumer_prefetch() {
    let limit = Arc::new(ChannelLimit::default());
    let (mut q, now) = queue(QueueArgs::default());
    q.add_consumer(consumer("a", 2, &limit), now).unwrap();
    q.add_consumer(consumer("b", 2, &limit), now).unwrap();
    for i in 0..6 {
        q.enqueue(msg(i), now).unwrap();
    }
    let d = q.dispatch(now).deliveries;
    let tags: Vec<&str> = d.iter().map(|d| &*q.consumer_spec(d.consumer).tag).collect();
    assert_eq!(tags, ["a", "b", "a", "b"]);
    assert_eq!(q.ready_count(), 2);
    assert!(q.dispatch(now).deliveries.is_empty(), "everyone at prefetch");
    q.settle(&[d[0].seq], Outcome::Ack);
    let d2 = q.dispatch(now).deliveries;
    assert_eq!(d2.len(), 1);
    assert_eq!(&*q.consumer_spec(d2[0].consumer).tag, "a");
}

#[test]
fn requeue_restores_original_position_and_marks_redelivered() {
    let limit = Arc::new(ChannelLimit::default());
    let (mut q, now) = queue(QueueArgs::default());
    for i in 0..4 {
        q.enqueue(msg(i), now).unwrap();
    }
    let first = q.get(false, now).unwrap();
    let second = q.get(false, now).unwrap();
    assert_eq!(first.remaining, 3);
    q.settle(&[second.seq, first.seq], Outcome::Requeue);
    q.add_consumer(consumer("a", 0, &limit), now).unwrap();
    let d = q.dispatch(now).deliveries;
    assert_eq!(d.iter().map(body).collect::<Vec<_>>(), [0, 1, 2, 3]);
    assert_eq!(d.iter().map(|d| d.redelivered).collect::<Vec<_>>(), [true, true, false, false]);
}

#[test]
fn shared_channel_limit_spans_consumers_and_applies_at_once() {
    let limit = Arc::new(ChannelLimit::default());
    limit.set_limit(1);
    let (mut q, now) = queue(QueueArgs::default());
    q.add_consumer(consumer("a", 0, &limit), now).unwrap();
    q.add_consumer(consumer("b", 0, &limit), now).unwrap();
    for i in 0..6 {
        q.enqueue(msg(i), now).unwrap();
    }
    assert_eq!(q.dispatch(now).deliveries.len(), 1);
    limit.set_limit(4);
    assert_eq!(q.dispatch(now).deliveries.len(), 3, "raising the limit releases 3 more");
}

#[test]
fn exclusive_consumer_rules() {
    let limit = Arc::new(ChannelLimit::default());
    let (mut q, now) = queue(QueueArgs::default());
    q.add_consumer(consumer("a", 0, &limit), now).unwrap();
    let mut ex = consumer("x", 0, &limit);
    ex.exclusive = true;
    let e = q.add_consumer(ex.clone(), now).unwrap_err();
    assert_eq!(e.text, "ACCESS_REFUSED - queue 'q' in vhost '/' in exclusive use");
    assert!(q.remove_consumer(1, 1, "a", now));
    q.add_consumer(ex, now).unwrap();
    assert!(q.add_consumer(consumer("b", 0, &limit), now).is_err());
}

#[test]
fn channel_close_requeues_and_auto_delete_condition() {
    let limit = Arc::new(ChannelLimit::default());
    let (mut q, now) = queue(QueueArgs::default());
    assert!(!q.is_unused_after_consumers(), "never had a consumer");
    q.add_consumer(consumer("a", 0, &limit), now).unwrap();
    q.enqueue(msg(7), now).unwrap();
    let d = q.dispatch(now).deliveries;
    assert_eq!(q.unacked_count(), 1);
    q.channel_closed(1, 1, &[d[0].seq], now);
    assert_eq!((q.ready_count(), q.unacked_count(), q.consumer_count()), (1, 0, 0));
    assert!(q.is_unused_after_consumers());
}

#[test]
fn congested_writer_is_skipped_and_reported() {
    let limit = Arc::new(ChannelLimit::default());
    let (mut q, now) = queue(QueueArgs::default());
    let c = consumer("a", 0, &limit);
    c.gauge.add(WRITER_HIGH_WATERMARK);
    q.add_consumer(c, now).unwrap();
    q.enqueue(msg(1), now).unwrap();
    let d = q.dispatch(now);
    assert!(d.deliveries.is_empty());
    assert_eq!(d.congested.len(), 1);
}

#[test]
fn message_ttl_expires_heads_with_no_consumer_and_dead_letters_them() {
    let args = QueueArgs { message_ttl: Some(Duration::from_millis(100)), ..dlx() };
    let (mut q, t0) = queue(args);
    q.enqueue(msg(1), t0).unwrap();
    q.enqueue(msg_with(2, BasicProperties::default().with_expiration("20".into())), t0 + Duration::from_millis(50))
        .unwrap();
    assert_eq!(q.next_deadline(), Some(t0 + Duration::from_millis(100)), "per-message TTL only counts at the head");
    assert!(q.on_timer(t0 + Duration::from_millis(99)).is_empty());
    assert_eq!(q.ready_count(), 2);
    q.on_timer(t0 + Duration::from_millis(100));
    assert_eq!(q.ready_count(), 0, "head expired, then the second (expired at 70 ms) reached the head");
    assert_eq!(reasons(&mut q), [(1, "expired"), (2, "expired")]);
}

#[test]
fn ttl_zero_reaches_a_waiting_consumer_but_is_dropped_otherwise() {
    let limit = Arc::new(ChannelLimit::default());
    let (mut q, now) = queue(QueueArgs { message_ttl: Some(Duration::ZERO), ..Default::default() });
    q.enqueue(msg(1), now).unwrap();
    q.on_timer(now);
    assert_eq!(q.ready_count(), 0, "no consumer: dropped");
    q.add_consumer(consumer("a", 0, &limit), now).unwrap();
    q.enqueue(msg(2), now).unwrap();
    assert_eq!(q.dispatch(now).deliveries.len(), 1, "a consumer that can take it gets it");
}

#[test]
fn max_length_drop_head_keeps_the_newest() {
    let args = QueueArgs { max_length: Some(2), ..dlx() };
    let (mut q, now) = queue(args);
    for i in 1..=4 {
        assert_eq!(q.enqueue(msg(i), now).unwrap(), Enqueued::Accepted);
    }
    assert_eq!(q.ready_count(), 2);
    assert_eq!(reasons(&mut q), [(1, "maxlen"), (2, "maxlen")]);
    let (mut q, now) = queue(QueueArgs { max_length_bytes: Some(1), ..Default::default() });
    q.enqueue(msg(1), now).unwrap();
    q.enqueue(msg(2), now).unwrap();
    assert_eq!(q.get(true, now).unwrap().msg.body[0][0], 2);
}

#[test]
fn reject_publish_refuses_and_reject_publish_dlx_dead_letters_the_new_message() {
    let (mut q, now) = queue(QueueArgs { max_length: Some(1), overflow: Overflow::RejectPublish, ..dlx() });
    assert_eq!(q.enqueue(msg(1), now).unwrap(), Enqueued::Accepted);
    assert_eq!(q.enqueue(msg(2), now).unwrap(), Enqueued::Rejected);
    assert!(q.take_dead().is_empty(), "reject-publish does not dead-letter");
    let (mut q, now) = queue(QueueArgs { max_length: Some(0), overflow: Overflow::RejectPublishDlx, ..dlx() });
    assert_eq!(q.enqueue(msg(3), now).unwrap(), Enqueued::Rejected);
    assert_eq!(reasons(&mut q), [(3, "maxlen")]);
}

#[test]
fn priorities_higher_first_fifo_within_and_capped_at_max() {
    let (mut q, now) = queue(QueueArgs { max_priority: Some(5), ..Default::default() });
    let p = |n: u8, prio: Option<u8>| {
        let props = match prio {
            Some(x) => BasicProperties::default().with_priority(x),
            None => BasicProperties::default(),
        };
        msg_with(n, props)
    };
    for (n, prio) in [(1, Some(1)), (2, None), (3, Some(9)), (4, Some(5)), (5, Some(1)), (6, Some(0))] {
        q.enqueue(p(n, prio), now).unwrap();
    }
    let order: Vec<u8> = std::iter::from_fn(|| q.get(true, now)).map(|g| g.msg.body[0][0]).collect();
    assert_eq!(order, [3, 4, 1, 5, 2, 6]);
}

#[test]
fn single_active_consumer_fails_over_in_registration_order() {
    let limit = Arc::new(ChannelLimit::default());
    let (mut q, now) = queue(QueueArgs { single_active_consumer: true, ..Default::default() });
    q.add_consumer(consumer("a", 0, &limit), now).unwrap();
    q.add_consumer(consumer("b", 0, &limit), now).unwrap();
    q.add_consumer(consumer("c", 0, &limit), now).unwrap();
    for i in 0..3 {
        q.enqueue(msg(i), now).unwrap();
    }
    let d = q.dispatch(now).deliveries;
    assert!(d.iter().all(|d| &*q.consumer_spec(d.consumer).tag == "a"));
    q.remove_consumer(1, 1, "a", now);
    q.enqueue(msg(9), now).unwrap();
    let d = q.dispatch(now).deliveries;
    assert_eq!(&*q.consumer_spec(d[0].consumer).tag, "b");
    let mut ex = consumer("x", 0, &limit);
    ex.exclusive = true;
    assert!(q.add_consumer(ex, now).is_err(), "exclusive consume on a SAC queue is refused");
}

#[test]
fn consumer_priorities_serve_higher_first_while_it_has_credit() {
    let limit = Arc::new(ChannelLimit::default());
    let (mut q, now) = queue(QueueArgs::default());
    let mut high = consumer("high", 2, &limit);
    high.priority = 10;
    let mut low = consumer("low", 2, &limit);
    low.priority = 1;
    q.add_consumer(low, now).unwrap();
    q.add_consumer(high, now).unwrap();
    for i in 0..5 {
        q.enqueue(msg(i), now).unwrap();
    }
    let d = q.dispatch(now).deliveries;
    let tags: Vec<String> = d.iter().map(|d| q.consumer_spec(d.consumer).tag.to_string()).collect();
    assert_eq!(tags, ["high", "high", "low", "low"]);
    assert_eq!(q.ready_count(), 1);
}

#[test]
fn consumer_ack_timeout_reports_the_consumer_once() {
    let limit = Arc::new(ChannelLimit::default());
    let (mut q, t0) = queue(QueueArgs { consumer_timeout: Some(Duration::from_millis(500)), ..Default::default() });
    q.add_consumer(consumer("a", 0, &limit), t0).unwrap();
    q.enqueue(msg(1), t0).unwrap();
    q.enqueue(msg(2), t0).unwrap();
    assert_eq!(q.dispatch(t0).deliveries.len(), 2);
    assert_eq!(q.next_deadline(), Some(t0 + Duration::from_millis(500)));
    assert!(q.on_timer(t0 + Duration::from_millis(499)).is_empty());
    let out = q.on_timer(t0 + Duration::from_millis(500));
    assert_eq!(out.len(), 1, "one report per channel");
    assert!(q.on_timer(t0 + Duration::from_millis(600)).is_empty());
}

#[test]
fn quorum_delivery_limit_counts_returns_and_dead_letters() {
    let args = QueueArgs { delivery_limit: Some(1), queue_type: crate::queue::args::QueueType::Quorum, ..dlx() };
    let (mut q, now) = queue(args);
    q.enqueue(msg(1), now).unwrap();
    let g = q.get(false, now).unwrap();
    assert!(g.msg.properties().headers().is_none(), "first delivery has no x-delivery-count");
    q.settle(&[g.seq], Outcome::Requeue);
    let g = q.get(false, now).unwrap();
    let count = g.msg.properties().headers().as_ref().and_then(|h| h.inner().get("x-delivery-count").cloned());
    assert_eq!(count, Some(AMQPValue::LongLongInt(1)));
    q.settle(&[g.seq], Outcome::Requeue);
    assert_eq!(q.ready_count(), 0, "second return exceeds the limit of 1");
    assert_eq!(reasons(&mut q), [(1, "delivery_limit")]);
}

#[test]
fn deduplication_drops_a_duplicate_while_the_first_is_queued() {
    let (mut q, now) = queue(QueueArgs { deduplication: true, ..Default::default() });
    let with_key = |n: u8, k: &str| {
        let mut h = FieldTable::default();
        h.insert("x-deduplication-header".into(), longstr(k));
        msg_with(n, BasicProperties::default().with_headers(h))
    };
    assert_eq!(q.enqueue(with_key(1, "a"), now).unwrap(), Enqueued::Accepted);
    assert_eq!(q.enqueue(with_key(2, "a"), now).unwrap(), Enqueued::Duplicate);
    assert_eq!(q.enqueue(msg(3), now).unwrap(), Enqueued::Accepted, "no header: not checked");
    let g = q.get(false, now).unwrap();
    assert_eq!(q.enqueue(with_key(4, "a"), now).unwrap(), Enqueued::Duplicate, "still unacked");
    q.settle(&[g.seq], Outcome::Ack);
    assert_eq!(q.enqueue(with_key(5, "a"), now).unwrap(), Enqueued::Accepted);
}

#[test]
fn x_expires_counts_from_last_use_without_consumers() {
    let limit = Arc::new(ChannelLimit::default());
    let (mut q, t0) = queue(QueueArgs { expires: Some(Duration::from_secs(1)), ..Default::default() });
    assert!(!q.is_expired(t0 + Duration::from_millis(999)));
    q.add_consumer(consumer("a", 0, &limit), t0 + Duration::from_millis(500)).unwrap();
    assert!(!q.is_expired(t0 + Duration::from_secs(5)), "a consumer keeps it alive");
    assert_eq!(q.next_deadline(), None);
    q.remove_consumer(1, 1, "a", t0 + Duration::from_secs(5));
    assert!(!q.is_expired(t0 + Duration::from_millis(5999)));
    assert!(q.is_expired(t0 + Duration::from_secs(6)));
}

#[test]
fn a_queued_message_costs_at_most_24_bytes_of_queue_state() {
    // Together with the store's 24-byte slot this keeps a backlog whose bodies are on disk
    // under 64 bytes of RAM per message (issue target).
    assert!(std::mem::size_of::<super::Ready>() <= 24, "{}", std::mem::size_of::<super::Ready>());
}

#[test]
fn ack_deadlines_do_not_outlive_their_acks() {
    // A long consumer timeout: settled deliveries must not keep their deadline entries for it.
    let limit = Arc::new(ChannelLimit::default());
    let (mut q, now) = queue(QueueArgs { consumer_timeout: Some(Duration::from_secs(1800)), ..Default::default() });
    q.add_consumer(consumer("c", 10, &limit), now).unwrap();
    // One delivery left unacked throughout (acks out of order).
    q.enqueue(msg(0), now).unwrap();
    let first = q.dispatch(now).deliveries[0].seq;
    for round in 0..10_000u32 {
        q.enqueue(msg(round as u8), now).unwrap();
        let seqs: Vec<u64> = q.dispatch(now).deliveries.iter().map(|d| d.seq).collect();
        assert_eq!(seqs.len(), 1);
        q.settle(&seqs, Outcome::Ack);
    }
    assert!(q.ack_deadlines.len() <= 2 * q.unacked.len() + 1024, "{} deadline entries", q.ack_deadlines.len());
    // The old delivery still times out.
    assert_eq!(q.on_timer(now + Duration::from_secs(1801)).len(), 1);
    q.settle(&[first], Outcome::Ack);
    assert!(q.ack_deadlines.is_empty());
}
