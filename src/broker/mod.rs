//! The broker: configuration, virtual hosts, and the ids handed to connections.

pub mod names;
pub mod topology;
pub mod vhost;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use vhost::VHost;

/// Shared by every connection task (cloned `Arc`).
#[derive(Debug)]
pub struct Broker {
    pub config: Config,
    vhosts: HashMap<String, Arc<VHost>>,
    next_connection: AtomicU64,
    /// Cancelled on SIGINT/SIGTERM: connections close with 320 CONNECTION_FORCED.
    pub shutdown: CancellationToken,
}

impl Broker {
    pub fn new(config: Config) -> Arc<Broker> {
        let vhosts = config.auth.vhosts.iter().map(|v| (v.clone(), VHost::new(v))).collect();
        Arc::new(Broker { config, vhosts, next_connection: AtomicU64::new(1), shutdown: CancellationToken::new() })
    }

    pub fn vhost(&self, name: &str) -> Option<&Arc<VHost>> {
        self.vhosts.get(name)
    }

    pub fn next_connection_id(&self) -> u64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }
}
