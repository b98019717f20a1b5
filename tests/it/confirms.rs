//! Publisher confirms: confirm.select, acks for routed and unroutable messages, basic.return
//! arriving before the ack of a mandatory unroutable publish, many (batched) confirms with no
//! loss, and a publish that closes the channel getting neither ack nor nack.

use futures_util::future::join_all;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation};

use crate::common::*;

#[tokio::test]
async fn confirm_select_then_publish_is_acked() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = exclusive_queue(&ch).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    assert!(ch.status().confirm());
    let confirm = ch
        .basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            b"hello",
            BasicProperties::default(),
        )
        .await
        .expect("publish");
    assert_eq!(within("confirm", confirm).await.expect("confirm"), Confirmation::Ack(None));
    assert_eq!(get_all(&ch, &q).await, vec!["hello"]);
}

#[tokio::test]
async fn unroutable_non_mandatory_publish_is_still_acked() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let confirm = ch
        .basic_publish(
            "amq.direct".into(),
            unique("nobody").as_str().into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        )
        .await
        .expect("publish");
    assert_eq!(within("confirm", confirm).await.expect("confirm"), Confirmation::Ack(None));
}

#[tokio::test]
async fn many_publishes_are_all_acked_one_by_one() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = exclusive_queue(&ch).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let mut acks = 0;
    for i in 0..300 {
        let confirm = ch
            .basic_publish(
                "".into(),
                q.as_str().into(),
                BasicPublishOptions::default(),
                i.to_string().as_bytes(),
                BasicProperties::default(),
            )
            .await
            .expect("publish");
        if within("confirm", confirm).await.expect("confirm").is_ack() {
            acks += 1;
        }
    }
    assert_eq!(acks, 300);
    let ok = ch
        .queue_declare(
            q.as_str().into(),
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("passive declare");
    assert_eq!(ok.message_count(), 300, "every acked message is in the queue");
}

#[tokio::test]
async fn a_burst_of_publishes_is_fully_confirmed() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = exclusive_queue(&ch).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let mut pending = Vec::new();
    for i in 0..100 {
        pending.push(
            ch.basic_publish(
                "".into(),
                q.as_str().into(),
                BasicPublishOptions::default(),
                i.to_string().as_bytes(),
                BasicProperties::default(),
            )
            .await
            .expect("publish"),
        );
    }
    // The broker may ack several publishes with one multiple=true ack; each still resolves.
    let results = within("100 confirms", join_all(pending)).await;
    assert_eq!(results.len(), 100);
    for r in results {
        assert_eq!(r.expect("confirm"), Confirmation::Ack(None));
    }
    assert!(within("wait_for_confirms", ch.wait_for_confirms()).await.expect("nothing pending").is_empty());
    let bodies = get_all(&ch, &q).await;
    assert_eq!(bodies, (0..100).map(|i| i.to_string()).collect::<Vec<_>>(), "no loss, in order");
}

#[tokio::test]
async fn mandatory_unroutable_publish_is_returned_before_its_ack() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let key = unique("unroutable");
    let confirm = ch
        .basic_publish(
            "amq.direct".into(),
            key.as_str().into(),
            BasicPublishOptions { mandatory: true, ..Default::default() },
            b"back",
            BasicProperties::default(),
        )
        .await
        .expect("publish");
    // lapin attaches a basic.return to the confirmation only if it arrived before the ack.
    match within("confirm", confirm).await.expect("confirm") {
        Confirmation::Ack(Some(returned)) => {
            assert_eq!(returned.reply_code, 312);
            assert_eq!(returned.reply_text.as_str(), "NO_ROUTE");
            assert_eq!(returned.delivery.exchange.as_str(), "amq.direct");
            assert_eq!(returned.delivery.routing_key.as_str(), key);
            assert_eq!(returned.delivery.data, b"back");
        }
        other => panic!("expected an ack carrying the returned message, got {other:?}"),
    }
    // A routable mandatory publish afterwards is a plain ack.
    let q = exclusive_queue(&ch).await;
    let confirm = ch
        .basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions { mandatory: true, ..Default::default() },
            b"ok",
            BasicProperties::default(),
        )
        .await
        .expect("publish");
    assert_eq!(within("confirm", confirm).await.expect("confirm"), Confirmation::Ack(None));
}

#[tokio::test]
async fn publish_to_a_missing_exchange_closes_the_channel_without_ack_or_nack() {
    let b = Broker::start();
    let (conn, ch) = b.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let x = unique("missing-x");
    let mut ev = events(&conn);
    let confirm = ch
        .basic_publish(x.as_str().into(), "k".into(), BasicPublishOptions::default(), b"x", BasicProperties::default())
        .await
        .expect("publish");
    let expected = (404, format!("NOT_FOUND - no exchange '{x}' in vhost '/'"));
    // The confirm fails with the channel's close reason: it was neither acked nor nacked.
    match within("confirm", confirm).await {
        Err(e) => assert_eq!(amqp_error(&e), expected),
        Ok(c) => panic!("expected no confirmation, got {c:?}"),
    }
    assert_eq!(next_close(&mut ev).await, expected);
    assert!(conn.status().connected());
}

#[tokio::test]
async fn confirm_select_twice_is_harmless() {
    let b = Broker::start();
    let (_conn, ch) = b.channel().await;
    let q = exclusive_queue(&ch).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("first confirm.select");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("second confirm.select");
    for body in ["one", "two"] {
        let confirm = ch
            .basic_publish(
                "".into(),
                q.as_str().into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default(),
            )
            .await
            .expect("publish");
        assert_eq!(within("confirm", confirm).await.expect("confirm"), Confirmation::Ack(None));
    }
    assert_eq!(get_all(&ch, &q).await, vec!["one", "two"]);
}

/// On the wire (raw socket): a burst of persistent publishes to a durable queue is confirmed
/// with `basic.ack` frames that cover every delivery tag exactly once, and at least one of them
/// is a cumulative `multiple=true` ack covering several tags (the README's claim; RabbitMQ does
/// the same for a burst).
#[tokio::test]
async fn a_burst_of_persistent_publishes_is_confirmed_cumulatively_on_the_wire() {
    use crate::raw::*;
    const N: u64 = 500;
    let b = Broker::start();
    let mut c = RawConn::open(&b.addr).await;
    c.open_channel(1).await;
    let q = unique("raw-confirms");
    c.send_method(1, 50, 10, &RawConn::queue_declare_args(&q, false, true, false, false)).await;
    c.expect_method(1, 50, 11).await;
    c.send_method(1, 85, 10, &Args::new().bits(&[false])).await;
    c.expect_method(1, 85, 11).await;

    // All N publishes in one write: delivery-mode 2 (property flag bit 12), 16-byte bodies.
    let mut burst = Vec::new();
    for i in 0..N {
        let publish = Args::new().short(0).shortstr("").shortstr(&q).bits(&[false, false]);
        burst.extend(method_frame(1, 60, 40, publish.bytes()));
        burst.extend(content_header_frame(1, 60, 16, 0x1000, &[2]));
        burst.extend(body_frame(1, format!("{i:016}").as_bytes()));
    }
    c.send(&burst).await;

    let mut confirmed = std::collections::BTreeSet::new();
    let mut largest_multiple = 0usize;
    while (confirmed.len() as u64) < N {
        let f = match c.recv().await {
            Event::Frame(f) if f.is_method(1, 60, 80) => f,
            other => panic!("expected basic.ack on channel 1, got {other:?}"),
        };
        let mut r = Reader(f.args());
        let tag = r.longlong();
        let multiple = r.octet() & 1 == 1;
        assert!((1..=N).contains(&tag), "ack for unknown tag {tag}");
        let covered: Vec<u64> =
            if multiple { (1..=tag).filter(|t| !confirmed.contains(t)).collect() } else { vec![tag] };
        assert!(!covered.is_empty(), "multiple=true ack for tag {tag} covers nothing not already confirmed");
        for t in &covered {
            assert!(confirmed.insert(*t), "tag {t} confirmed twice (ack tag {tag}, multiple={multiple})");
        }
        if multiple {
            largest_multiple = largest_multiple.max(covered.len());
        }
    }
    assert_eq!(confirmed, (1..=N).collect(), "every tag confirmed");
    assert!(largest_multiple >= 2, "no multiple=true ack covered several tags");

    // Nothing is confirmed again: no further basic.ack arrives before the delete-ok.
    c.send_method(1, 50, 40, &Args::new().short(0).shortstr(&q).bits(&[false, false, false])).await;
    let ok = match c.recv().await {
        Event::Frame(f) if f.is_method(1, 50, 41) => f,
        Event::Frame(f) if f.is_method(1, 60, 80) => {
            panic!("an extra basic.ack after every tag was confirmed: {:?}", f.args())
        }
        other => panic!("expected queue.delete-ok, got {other:?}"),
    };
    assert_eq!(Reader(ok.args()).long(), N as u32, "all {N} messages are in the queue");
    c.close().await;
}
