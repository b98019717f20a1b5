//! The broker: configuration, virtual hosts, and the ids handed to connections.

pub mod alarm;
pub mod connections;
pub mod delayed;
pub mod names;
pub mod topology;
pub mod vhost;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::BrokerError;
use crate::queue::ConnInbox;
use crate::store::StorageSettings;
use crate::store::persister::Persister;
use vhost::VHost;

/// Shared by every connection task (cloned `Arc`).
#[derive(Debug)]
pub struct Broker {
    pub config: Config,
    vhosts: HashMap<String, Arc<VHost>>,
    next_connection: AtomicU64,
    /// Cancelled on SIGINT/SIGTERM: connections close with 320 CONNECTION_FORCED.
    pub shutdown: CancellationToken,
    /// Who may log in.
    pub users: crate::auth::Users,
    /// Direct reply-to: reply name → the requesting channel.
    replies: Mutex<HashMap<String, ReplyRoute>>,
    /// Raised while free disk space is below `storage.disk_free_limit` or memory use is above
    /// `memory.high_watermark`.
    pub disk_alarm: alarm::DiskAlarm,
    /// The open connections and their states.
    pub connections: Arc<connections::Connections>,
}

/// Where replies to a direct reply-to name go.
#[derive(Debug, Clone)]
pub struct ReplyRoute {
    pub inbox: ConnInbox,
    pub channel: u16,
}

impl Broker {
    /// At a clean stop: every vhost's definitions in one snapshot file (see
    /// [`crate::store::definitions::journal`]).
    pub fn checkpoint_definitions(&self) {
        for v in self.vhosts.values() {
            v.compact_definitions();
        }
    }

    /// Open the broker: every configured vhost, with durable storage under `data_dir`
    /// (restoring what was there).
    pub fn open(config: Config) -> Result<Arc<Broker>, BrokerError> {
        let timeout = config.amqp.consumer_timeout_duration();
        let persister = Persister::start();
        crate::queue::admission::configure(config.amqp.flow_backlog_messages, config.amqp.flow_backlog_bytes);
        let imported = match &config.auth.definitions {
            Some(path) => crate::auth::definitions::read(path).map_err(BrokerError::Config)?,
            None => Default::default(),
        };
        if !imported.not_imported.is_empty() {
            let sections: Vec<String> = imported.not_imported.iter().map(|(s, n)| format!("{s} ({n})")).collect();
            tracing::warn!(
                sections = %sections.join(", "),
                "the definitions file has sections this version does not import yet (it imports users, vhosts \
                 and permissions); they are ignored"
            );
        }
        let users = crate::auth::Users::from_config_and(&config.auth, &imported).map_err(BrokerError::Config)?;
        let mut vhost_names = config.auth.vhosts.clone();
        for v in imported.vhosts {
            if !vhost_names.contains(&v) {
                vhost_names.push(v);
            }
        }
        let mut vhosts = HashMap::new();
        for v in &vhost_names {
            let storage = StorageSettings {
                dir: config.data_dir.join("vhosts").join(vhost_dir_name(v)),
                fsync: config.storage.fsync,
                segment_size: config.storage.segment_size,
                persister: persister.clone(),
            };
            let vhost = VHost::open(v, timeout, storage).map_err(|e| {
                BrokerError::Storage(format!(
                    "cannot open the durable data of vhost '{v}' under {}: {e}",
                    config.data_dir.display()
                ))
            })?;
            vhosts.insert(v.clone(), vhost);
        }
        let disk_alarm = alarm::start(&config);
        Ok(Arc::new(Broker {
            users,
            config,
            vhosts,
            next_connection: AtomicU64::new(1),
            shutdown: CancellationToken::new(),
            replies: Mutex::new(HashMap::new()),
            disk_alarm,
            connections: Default::default(),
        }))
    }

    pub fn vhost(&self, name: &str) -> Option<&Arc<VHost>> {
        self.vhosts.get(name)
    }

    pub fn register_reply(&self, name: String, route: ReplyRoute) {
        self.replies.lock().unwrap_or_else(|p| p.into_inner()).insert(name, route);
    }

    pub fn unregister_reply(&self, name: &str) {
        self.replies.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
    }

    /// The channel waiting for replies sent to `name`, if it still exists.
    pub fn reply_route(&self, name: &str) -> Option<ReplyRoute> {
        self.replies.lock().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    pub fn next_connection_id(&self) -> u64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }
}

/// A vhost's directory name: the name with everything but letters, digits, `-` and `_`
/// percent-encoded (`/` is `%2F`).
fn vhost_dir_name(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
