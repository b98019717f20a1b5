//! The native stream protocol's listener (RabbitMQ's `rabbitmq_stream` plugin, port 5552): the
//! same stream queues AMQP 0-9-1 sees, spoken to by stream clients.
//!
//! * [`connection`] owns one socket: it drives the sans-IO [`protocol::state`] machine (handshake,
//!   heartbeats, close), and [`commands`] executes the commands it lets through;
//! * [`publishers`] and [`subscriptions`] are a connection's publishers (Publish, confirms,
//!   deduplication by reference) and subscriptions (readers over the stream's files, credit in
//!   chunks, filters, single active consumer);
//! * [`management`] is the rest: Create/Delete through the vhost's own declare and delete (so
//!   AMQP, definitions and permissions see the same streams), Metadata, StreamStats, super
//!   streams (Route, Partitions, CreateSuperStream, DeleteSuperStream);
//! * [`sac`] holds the node's single-active-consumer groups.
//!
//! Memory stays bounded whatever a peer does: frames are size-checked before they are buffered
//! (the state machine), a connection reads its socket only while its unsent output is small and
//! its unconfirmed publishes are few ([`publishers::UNCONFIRMED_MAX`]), publishes wait for room
//! in the stream's mailbox, and a subscription reads a chunk only when it has credit and the
//! socket has drained below [`connection::DELIVER_WATERMARK`].
//!
//! [`protocol::state`]: super::protocol::state

mod commands;
mod connection;
mod management;
mod publishers;
pub mod sac;
mod subscriptions;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::protocol::state;
use crate::broker::Broker;
use crate::connection::Transport;

/// Node-wide state of the stream listener, shared by its connections.
pub(crate) struct StreamServer {
    broker: Arc<Broker>,
    /// What the handshake offers and enforces.
    protocol: state::Config,
    /// Open's `advertised_host`/`advertised_port` and Metadata's broker.
    advertised_host: String,
    advertised_port: u16,
    /// What TLS connections are told (the TLS listener's port).
    advertised_tls_port: u16,
    /// Single-active-consumer groups.
    sac: Mutex<sac::Groups>,
    /// Each open connection's inbox for [`sac::Notice`]s.
    inboxes: Mutex<HashMap<u64, mpsc::UnboundedSender<sac::Notice>>>,
}

impl StreamServer {
    /// `bound`: the plain listener's address, else the TLS one's; `tls_bound`: the TLS one's.
    fn new(broker: Arc<Broker>, bound: SocketAddr, tls_bound: Option<SocketAddr>) -> StreamServer {
        let c = &broker.config;
        let host = c
            .stream
            .advertised_host
            .clone()
            .unwrap_or_else(|| if bound.ip().is_unspecified() { hostname() } else { bound.ip().to_string() });
        let version = env!("CARGO_PKG_VERSION");
        let server_properties = vec![
            ("cluster_name".into(), "warren@localhost".into()),
            ("copyright".into(), "Copyright (c) the Warren authors".into()),
            ("information".into(), format!("Warren {version}, an AMQP 0-9-1 and RabbitMQ stream protocol broker")),
            ("platform".into(), format!("Warren {version} (Rust)")),
            ("product".into(), c.amqp.product.clone()),
            ("version".into(), c.amqp.product_version.clone()),
        ];
        let protocol = state::Config {
            frame_max: c.stream.frame_max,
            heartbeat: c.stream.heartbeat,
            // EXTERNAL (a client certificate login) is not offered on the stream ports.
            mechanisms: c.auth.mechanisms.iter().filter(|m| *m != "EXTERNAL").cloned().collect(),
            server_properties,
            step_timeout: Duration::from_secs(c.amqp.handshake_timeout.max(1)),
            ..state::Config::default()
        };
        StreamServer {
            protocol,
            advertised_host: host,
            advertised_port: c.stream.advertised_port.unwrap_or(bound.port()),
            advertised_tls_port: c.stream.advertised_tls_port.or(tls_bound.map(|a| a.port())).unwrap_or(bound.port()),
            sac: Mutex::default(),
            inboxes: Mutex::default(),
            broker,
        }
    }

    /// Change the single-active-consumer groups, then hand the resulting notices to their
    /// connections.
    fn sac<R>(&self, change: impl FnOnce(&mut sac::Groups) -> (R, Vec<sac::Notice>)) -> R {
        let (r, notices) = change(&mut self.sac.lock().unwrap_or_else(|p| p.into_inner()));
        let inboxes = self.inboxes.lock().unwrap_or_else(|p| p.into_inner());
        for n in notices {
            if let Some(inbox) = inboxes.get(&n.connection) {
                let _ = inbox.send(n);
            }
        }
        r
    }
}

/// The next connection on `listener`; never, without one.
async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

async fn accept_failed(e: std::io::Error) {
    // Typically EMFILE: back off briefly instead of spinning.
    warn!(error = %e, "stream listener: accept failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// The TLS handshake (bounded by the handshake timeout), then the stream connection.
async fn serve_tls(
    socket: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    server: Arc<StreamServer>,
) {
    let timeout = Duration::from_secs(server.broker.config.amqp.handshake_timeout.max(1));
    match tokio::time::timeout(timeout, acceptor.accept(socket)).await {
        Ok(Ok(tls)) => connection::serve(Transport::tls(tls, None), peer, server).await,
        Ok(Err(e)) => warn!(%peer, error = %e, "stream protocol: TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "stream protocol: TLS handshake timed out"),
    }
}

/// This machine's host name (advertised when listening on a wildcard address).
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or
    // fails.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let name = buf.iter().position(|&b| b == 0).map(|n| String::from_utf8_lossy(&buf[..n]).into_owned());
    match name {
        Some(n) if ok && !n.is_empty() => n,
        _ => "localhost".into(),
    }
}

/// Bind the stream listener (`[stream] listen`); None when it is off.
pub async fn bind(broker: &Broker) -> Result<Option<TcpListener>, String> {
    let Some(addr) = broker.config.stream.address()? else { return Ok(None) };
    TcpListener::bind(addr)
        .await
        .map(Some)
        .map_err(|e| format!("cannot listen for the stream protocol on {addr}: {e} (change stream.listen)"))
}

/// Bind the stream protocol's TLS listener (`[stream] tls_listen`); None when it is off.
pub async fn bind_tls(broker: &Broker) -> Result<Option<TcpListener>, String> {
    let Some(addr) = broker.config.stream.tls_address()? else { return Ok(None) };
    TcpListener::bind(addr).await.map(Some).map_err(|e| {
        format!("cannot listen for the stream protocol over TLS on {addr}: {e} (change stream.tls_listen)")
    })
}

/// Accept stream connections (plain, and over TLS with `tls`'s certificate) until the broker
/// shuts down; then wait (bounded) for them.
pub async fn run(listener: Option<TcpListener>, tls: Option<(TcpListener, Arc<crate::tls::Tls>)>, broker: Arc<Broker>) {
    let tls_bound = tls.as_ref().map(|(l, _)| crate::server::local_addr(l));
    let Some(bound) = listener.as_ref().map(crate::server::local_addr).or(tls_bound) else { return };
    let server = Arc::new(StreamServer::new(broker.clone(), bound, tls_bound));
    info!(
        advertised_host = %server.advertised_host,
        advertised_port = server.advertised_port,
        "stream protocol listener started"
    );
    let tracker = TaskTracker::new();
    loop {
        tokio::select! {
            _ = broker.shutdown.cancelled() => break,
            accepted = accept(listener.as_ref()) => match accepted {
                Ok((socket, peer)) => {
                    tracker.spawn(connection::serve(Transport::tcp(socket), peer, server.clone()));
                }
                Err(e) => accept_failed(e).await,
            },
            accepted = accept(tls.as_ref().map(|(l, _)| l)) => match (accepted, &tls) {
                (Ok((socket, peer)), Some((_, t))) => {
                    tracker.spawn(serve_tls(socket, peer, t.acceptor(), server.clone()));
                }
                (Err(e), _) => accept_failed(e).await,
                _ => {}
            },
        }
    }
    drop(listener);
    drop(tls);
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
}
