//! The native stream protocol (port 5552) against a Warren started with `--stream-listen`:
//! with RabbitMQ's Rust stream client (`rabbitmq-stream-client`, as applications use it) and
//! with raw frames ([`raw`]) where the protocol's details matter (response codes, credit,
//! MetadataUpdate, hostile input). Behaviour as RabbitMQ 3.13 (`../shared/reference/streams.md`
//! §8).
//!
//! Tests using the client run on a multi-threaded runtime: its `Producer` closes itself on drop
//! with `futures::executor::block_on`, which never completes on a current-thread runtime.

mod client;
mod durability;
mod faces;
mod raw;
mod super_streams;
mod tls;
mod wire;

use rabbitmq_stream_client::Environment;

use crate::common::*;

/// A fresh broker with the stream listener on a free loopback port.
pub fn start() -> Broker {
    Broker::start_with_args(&["--stream-listen", "127.0.0.1:0"])
}

/// The stream listener's address.
pub fn addr(b: &Broker) -> String {
    b.stream_addr.clone().expect("the broker prints its stream listener's address")
}

pub fn port(b: &Broker) -> u16 {
    addr(b).rsplit_once(':').and_then(|(_, p)| p.parse().ok()).expect("a port")
}

/// A fresh broker, a raw connection to it, and a new stream there.
pub async fn raw_stream(prefix: &str) -> (Broker, raw::Raw, String) {
    let b = start();
    let mut r = raw::Raw::open(&addr(&b)).await;
    let s = unique(prefix);
    assert_eq!(r.create(&s, &[]).await, 1, "create {s}");
    (b, r, s)
}

/// A fresh broker, the stream client on it, and a new stream there.
pub async fn client_stream(prefix: &str) -> (Broker, Environment, String) {
    let b = start();
    let e = env(&b).await;
    let s = unique(prefix);
    e.stream_creator().create(&s).await.expect("create a stream");
    (b, e, s)
}

/// An environment of the Rust stream client on the broker, as guest.
pub async fn env(b: &Broker) -> Environment {
    within("the stream client to connect", Environment::builder().host("127.0.0.1").port(port(b)).build())
        .await
        .expect("connect with the stream client")
}
