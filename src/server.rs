//! The listener: accepts TCP connections and runs each in its own task until shutdown.
//!
//! On shutdown (SIGINT/SIGTERM) it stops accepting, lets every connection send
//! `connection.close 320 CONNECTION_FORCED`, and waits (bounded) for them to finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::broker::Broker;
use crate::connection;

/// How long shutdown waits for connections to acknowledge their close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Bind the configured listen address.
pub async fn bind(broker: &Broker) -> std::io::Result<TcpListener> {
    TcpListener::bind(broker.config.listen).await
}

/// Accept connections until `broker.shutdown` is cancelled, then close them all.
pub async fn run(listener: TcpListener, broker: Arc<Broker>) {
    let tracker = TaskTracker::new();
    loop {
        tokio::select! {
            _ = broker.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tracker.spawn(connection::serve(stream, peer, broker.clone()));
                }
                Err(e) => {
                    // Typically EMFILE: back off briefly instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    tracker.close();
    info!(connections = tracker.len(), "shutting down: closing connections");
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait()).await.is_err() {
        warn!("some connections did not close in time");
    }
}

/// The address actually bound (the configured port may be 0).
pub fn local_addr(listener: &TcpListener) -> SocketAddr {
    listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}
