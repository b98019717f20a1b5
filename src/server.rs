//! The listeners: accept TCP connections (and TLS ones on the amqps listener, after their TLS
//! handshake) and run each in its own task until shutdown.
//!
//! On shutdown (SIGINT/SIGTERM) it stops accepting, lets every connection send
//! `connection.close 320 CONNECTION_FORCED`, and waits (bounded) for them to finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::broker::Broker;
use crate::connection::{self, Transport};
use crate::tls::{Tls, cert_login};

/// How long shutdown waits for connections to acknowledge their close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Bind the configured listen address.
pub async fn bind(broker: &Broker) -> std::io::Result<TcpListener> {
    TcpListener::bind(broker.config.listen).await
}

/// The amqps listener and its TLS settings.
pub struct TlsListener {
    pub listener: TcpListener,
    pub tls: Arc<Tls>,
}

/// Bind the amqps listener (`[tls] listen`), reading its certificates; None when TLS is off.
pub async fn bind_tls(broker: &Broker) -> Result<Option<TlsListener>, String> {
    let Some(addr) = broker.config.tls.listen else { return Ok(None) };
    let tls = Tls::load(&broker.config.tls)?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen for amqps on {addr}: {e} (change tls.listen)"))?;
    Ok(Some(TlsListener { listener, tls }))
}

/// Accept connections until `broker.shutdown` is cancelled, then close them all.
pub async fn run(listener: TcpListener, tls: Option<TlsListener>, broker: Arc<Broker>) {
    let tracker = TaskTracker::new();
    loop {
        let tls_accept = async {
            match &tls {
                Some(t) => t.listener.accept().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = broker.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tracker.spawn(connection::serve(Transport::tcp(stream), peer, broker.clone()));
                }
                Err(e) => accept_failed(e).await,
            },
            accepted = tls_accept => match (accepted, &tls) {
                (Ok((stream, peer)), Some(t)) => {
                    tracker.spawn(serve_tls(stream, peer, t.tls.acceptor(), broker.clone()));
                }
                (Err(e), _) => accept_failed(e).await,
                _ => {}
            },
        }
    }
    drop(listener);
    drop(tls);
    tracker.close();
    info!(connections = tracker.len(), "shutting down: closing connections");
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait()).await.is_err() {
        warn!("some connections did not close in time");
    }
}

async fn accept_failed(e: std::io::Error) {
    // Typically EMFILE: back off briefly instead of spinning.
    warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// The TLS handshake (bounded by the AMQP handshake timeout), then the AMQP connection.
async fn serve_tls(stream: TcpStream, peer: SocketAddr, acceptor: TlsAcceptor, broker: Arc<Broker>) {
    let timeout = Duration::from_secs(broker.config.amqp.handshake_timeout);
    let tls = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            warn!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let from = broker.config.auth.ssl_cert_login_from.as_str();
    let login = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|c| cert_login(c, from));
    connection::serve(Transport::tls(tls, login), peer, broker).await
}

/// The address actually bound (the configured port may be 0).
pub fn local_addr(listener: &TcpListener) -> SocketAddr {
    listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}
