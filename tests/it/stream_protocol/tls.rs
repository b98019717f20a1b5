//! The stream protocol over TLS (`[stream] tls_listen`, RabbitMQ's port 5551) with `[tls]`'s
//! certificate: RabbitMQ's Rust stream client connects with the CA as its root, publishes and
//! reads, and is told the TLS port; a plain-text client on the TLS port gets nothing.

use rabbitmq_stream_client::types::OffsetSpecification;
use rabbitmq_stream_client::{Environment, TlsConfiguration};
use rcgen::{CertificateParams, KeyPair};

use super::client::{consumer, numbered, receive, send_confirmed};
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_clients_connect_over_tls_and_are_told_the_tls_port() {
    let dir = TempDir::new();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_path, key_path) = (dir.0.join("server.pem"), dir.0.join("server.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let b = Broker::start_with_config(&format!(
        "[stream]\nlisten = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\n\n[tls]\ncertfile = \"{}\"\nkeyfile = \"{}\"\n",
        cert_path.display(),
        key_path.display()
    ));
    let tls_addr = b.stream_tls_addr.clone().expect("the broker prints its stream TLS listener");
    let tls_port: u16 = tls_addr.rsplit_once(':').unwrap().1.parse().unwrap();

    // The client's rustls needs a process-wide provider when several are compiled in.
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let tls = TlsConfiguration::builder()
        .add_root_certificates(cert_path.to_string_lossy().into_owned())
        .build()
        .expect("a TLS configuration");
    let env =
        within("the stream client over TLS", Environment::builder().host("localhost").port(tls_port).tls(tls).build())
            .await
            .expect("connect over TLS");
    let s = unique("tls-stream");
    env.stream_creator().create(&s).await.expect("create over TLS");
    let mut p = within("producer", env.producer().build(&s)).await.unwrap();
    let bodies = numbered("t", 0..5);
    send_confirmed(&mut p, &bodies).await;
    let mut c = consumer(&env, &s, OffsetSpecification::First).await;
    let got: Vec<String> = receive(&mut c, 5).await.into_iter().map(|(_, body)| body).collect();
    assert_eq!(got, bodies);

    // Open and Metadata on the TLS port advertise the TLS port (the client connects its
    // producers and consumers there: they worked). A raw plain-text client on it gets no
    // stream protocol answer.
    let mut raw = tokio::net::TcpStream::connect(&tls_addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    raw.write_all(&[0, 0, 0, 8, 0, 0x11, 0, 1, 0, 0, 0, 1]).await.unwrap();
    let mut buf = [0u8; 64];
    let n = within("the TLS listener to drop a plain-text client", raw.read(&mut buf)).await.unwrap_or(0);
    assert!(n == 0 || buf[..n] != [0, 0, 0, 8][..n.min(4)], "no stream protocol frame in plain text");
}
