//! What survives: stored offsets and publisher sequences across a restart, and every confirmed
//! message across kill -9.

use std::sync::{Arc, Mutex};

use rabbitmq_stream_client::Environment;
use rabbitmq_stream_client::types::{Message, OffsetSpecification};

use super::client::{nothing_more, numbered, receive, send_confirmed};
use crate::common::*;

fn start_in(dir: &TempDir) -> Broker {
    Broker::start_in(&dir.0, &["--stream-listen", "127.0.0.1:0"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_offsets_and_sequences_survive_a_restart() {
    let dir = TempDir::new();
    let s = unique("kept");
    {
        let mut b = start_in(&dir);
        let e = super::env(&b).await;
        e.stream_creator().create(&s).await.unwrap();
        let mut p = within("producer", e.producer().name("writer").build(&s)).await.unwrap();
        send_confirmed(&mut p, &numbered("m", 0..10)).await;
        let mut c =
            within("consumer", e.consumer().name("reader").offset(OffsetSpecification::First).build(&s)).await.unwrap();
        receive(&mut c, 6).await;
        c.store_offset(5).await.expect("store offset");
        assert_eq!(c.query_offset().await.expect("query offset"), 5);
        assert_eq!(b.terminate().map(|s| s.success()), Some(true));
    }
    let b = start_in(&dir);
    let e = super::env(&b).await;
    // The consumer resumes after its stored offset.
    let mut c =
        within("consumer", e.consumer().name("reader").offset(OffsetSpecification::First).build(&s)).await.unwrap();
    let stored = c.query_offset().await.expect("the offset survived");
    assert_eq!(stored, 5);
    let mut c2 =
        within("consumer", e.consumer().offset(OffsetSpecification::Offset(stored + 1)).build(&s)).await.unwrap();
    assert_eq!(receive(&mut c2, 4).await[0], (6, "m6".to_string()));
    receive(&mut c, 10).await;
    // The producer resumes after its last publishing id (0..9 were sent).
    let client = rabbitmq_stream_client::Client::connect(
        rabbitmq_stream_client::ClientOptions::builder().host("127.0.0.1").port(super::port(&b)).build(),
    )
    .await
    .unwrap();
    assert_eq!(client.query_publisher_sequence("writer", &s).await.unwrap(), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_confirmed_message() {
    let dir = TempDir::new();
    let s = unique("kill9");
    let mut b = start_in(&dir);
    let e = super::env(&b).await;
    e.stream_creator().create(&s).await.unwrap();
    let confirmed: Arc<Mutex<Vec<u64>>> = Arc::default();
    // Leaked: a producer dropped after its broker died would close itself with a blocking
    // call that never returns.
    let producer: &'static _ = Box::leak(Box::new(within("producer", e.producer().build(&s)).await.unwrap()));
    // Publish in batches until the broker dies, recording what was confirmed.
    let record = confirmed.clone();
    let (count, mut counted) = tokio::sync::watch::channel(0usize);
    let load = tokio::spawn(async move {
        for batch in 0u64.. {
            let msgs: Vec<Message> =
                (0..50).map(|i| Message::builder().body(format!("{}", batch * 50 + i)).build()).collect();
            let Ok(statuses) = producer.batch_send_with_confirm(msgs).await else { return };
            let mut ok = record.lock().unwrap();
            for st in statuses.iter().filter(|s| s.confirmed()) {
                let body = String::from_utf8(st.message().data().unwrap().to_vec()).unwrap();
                ok.push(body.parse().unwrap());
            }
            count.send_replace(ok.len());
        }
    });
    // Kill once a good number is confirmed, with publishes in flight.
    within("confirms before the kill", counted.wait_for(|n| *n >= 2000)).await.unwrap();
    b.kill9();
    load.abort();
    let confirmed = confirmed.lock().unwrap().clone();
    drop(e);

    let b = start_in(&dir);
    let e: Environment = super::env(&b).await;
    let mut c = within("consumer", e.consumer().offset(OffsetSpecification::First).build(&s)).await.unwrap();
    let max = *confirmed.iter().max().unwrap();
    let mut seen = Vec::new();
    while seen.last().is_none_or(|&n| n < max) {
        let (_, body) = receive(&mut c, 1).await.remove(0);
        seen.push(body.parse::<u64>().unwrap());
    }
    let mut stored = seen.clone();
    stored.sort_unstable();
    stored.dedup();
    assert_eq!(stored.len(), seen.len(), "no message is stored twice");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in publish order");
    let missing: Vec<u64> = confirmed.iter().filter(|n| stored.binary_search(n).is_err()).copied().collect();
    assert!(
        missing.is_empty(),
        "{} confirmed messages lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    drop(c);
    let mut tail = within("consumer", e.consumer().offset(OffsetSpecification::Next).build(&s)).await.unwrap();
    nothing_more(&mut tail).await;
}
