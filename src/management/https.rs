//! HTTPS for the management API (`[management] tls = true`): TLS handshakes run in their own
//! tasks, bounded in time and number, so a client that stalls its handshake delays nobody;
//! finished ones are handed to axum through [`HttpsListener`]. The certificate and settings are
//! `[tls]`'s (reloaded on SIGHUP with the amqps listener's).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::server::TlsStream;

use crate::broker::Broker;
use crate::tls::Tls;

/// Handshakes in progress at most; more connections wait to be accepted.
const HANDSHAKES: usize = 256;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections whose TLS handshake completed.
pub struct HttpsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl HttpsListener {
    /// Accept on `tcp` until the broker shuts down.
    pub fn start(tcp: TcpListener, tls: Arc<Tls>, broker: &Broker) -> HttpsListener {
        let local = crate::server::local_addr(&tcp);
        let (tx, ready) = mpsc::channel(HANDSHAKES);
        let shutdown = broker.shutdown.clone();
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(HANDSHAKES));
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else { return };
                let (stream, peer) = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    accepted = tcp.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!(error = %e, "management API: accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let (acceptor, tx) = (tls.acceptor(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => {
                            let _ = tx.send((s, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "management API: TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "management API: TLS handshake timed out"),
                    }
                    drop(permit);
                });
            }
        });
        HttpsListener { ready, local }
    }
}

impl axum::serve::Listener for HttpsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept loop ended (shutdown): no more connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}
