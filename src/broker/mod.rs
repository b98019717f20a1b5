//! The broker: configuration, virtual hosts, and the ids handed to connections.

pub mod alarm;
pub mod connections;
pub mod delayed;
pub mod names;
pub mod rate_limit;
pub mod topology;
pub mod vhost;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::definitions::{Definitions, VHostDef};
use crate::error::BrokerError;
use crate::queue::ConnInbox;
use crate::queue::policy::{Policies, Policy};
use crate::store::StorageSettings;
use crate::store::persister::Persister;
use crate::store::tenancy::TenancyFile;
use vhost::VHost;

/// Shared by every connection task (cloned `Arc`).
#[derive(Debug)]
pub struct Broker {
    pub config: Config,
    vhosts: RwLock<HashMap<String, Arc<VHost>>>,
    next_connection: AtomicU64,
    /// Cancelled on SIGINT/SIGTERM: connections close with 320 CONNECTION_FORCED.
    pub shutdown: CancellationToken,
    /// Who may log in, and their permissions (rebuilt from `definitions` on every change).
    users: RwLock<Arc<crate::auth::Users>>,
    /// Users, vhosts, permissions, policies and limits: what `users` and the vhosts' settings
    /// are made from, and what is saved in `tenancy.json`. Its lock serialises changes.
    definitions: Mutex<Definitions>,
    tenancy_file: TenancyFile,
    persister: Persister,
    /// Bumped on every change of users or permissions: connections then fetch theirs again.
    permissions_epoch: AtomicU64,
    /// Direct reply-to: reply name → the requesting channel.
    replies: Mutex<HashMap<String, ReplyRoute>>,
    /// Raised while free disk space is below `storage.disk_free_limit` or memory use is above
    /// `memory.high_watermark`.
    pub disk_alarm: alarm::DiskAlarm,
    /// The open connections and their states.
    pub connections: Arc<connections::Connections>,
    /// Message counters since start (see [`crate::stats`]).
    pub counters: Arc<crate::stats::Counters>,
    /// When the broker started.
    pub started: std::time::Instant,
    /// The bound listeners: (protocol as RabbitMQ names it, address).
    listeners: Mutex<Vec<(&'static str, std::net::SocketAddr)>>,
    /// Publisher rate limits by vhost and by user (`[[rate_limits]]`).
    rate_limits: HashMap<(RateScope, String), Arc<rate_limit::RateLimit>>,
}

/// What a rate limit covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateScope {
    VHost,
    User,
}

impl std::fmt::Debug for TenancyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TenancyFile({})", self.path().display())
    }
}

/// Direct reply-to etc. below.
#[derive(Debug, Clone)]
pub struct ReplyRoute {
    pub inbox: ConnInbox,
    pub channel: u16,
    /// The vhost of the requesting channel: replies only come from the same vhost.
    pub vhost: String,
}

fn import_topologies(vhosts: &HashMap<String, Arc<VHost>>, t: crate::definitions::Topologies) -> Vec<String> {
    let mut errors = Vec::new();
    for (name, d) in t {
        match vhosts.get(&name) {
            Some(v) => errors.extend(v.import(d)),
            None => {
                errors.push(format!("vhost '{name}' does not exist; its queues, exchanges and bindings were skipped"))
            }
        }
    }
    errors
}

/// The policies of `vhost` in `defs`, validated.
fn compile_policies(defs: &Definitions, vhost: &str) -> Result<Policies, String> {
    let mut out = Policies::default();
    for p in defs.policies.iter().filter(|p| p.vhost == vhost) {
        let what = if p.operator { "operator policy" } else { "policy" };
        let compiled = Policy::new(&p.name, &p.pattern, &p.apply_to, p.priority, p.definition.clone(), p.operator)
            .map_err(|e| format!("{what} '{}' in vhost '{vhost}': {e}", p.name))?;
        out.put(compiled, p.operator);
    }
    Ok(out)
}

impl Broker {
    /// At a clean stop: every vhost's definitions in one snapshot file (see
    /// [`crate::store::definitions::journal`]).
    pub fn checkpoint_definitions(&self) {
        for v in self.vhosts.read().unwrap_or_else(|p| p.into_inner()).values() {
            v.compact_definitions();
        }
    }

    fn open_vhost(
        config: &Config,
        persister: &Persister,
        def: &VHostDef,
        policies: Policies,
    ) -> Result<Arc<VHost>, String> {
        let storage = StorageSettings {
            dir: config.data_dir.join("vhosts").join(vhost_dir_name(&def.name)),
            fsync: config.storage.fsync,
            segment_size: config.storage.segment_size,
            persister: persister.clone(),
        };
        VHost::open(&def.name, config.amqp.consumer_timeout_duration(), storage, policies, def.clone()).map_err(|e| {
            format!("cannot open the durable data of vhost '{}' under {}: {e}", def.name, config.data_dir.display())
        })
    }

    /// Open the broker: its saved users, vhosts, permissions and policies with those of the
    /// import file and the config file, and every vhost's durable storage under `data_dir`
    /// (restoring what was there).
    pub fn open(config: Config) -> Result<Arc<Broker>, BrokerError> {
        let persister = Persister::start();
        crate::queue::admission::configure(config.amqp.flow_backlog_messages, config.amqp.flow_backlog_bytes);
        let tenancy_file = TenancyFile::new(&config.data_dir);
        let saved = tenancy_file.load().map_err(BrokerError::Config)?;
        let import_path = config.definitions.import_file.as_ref().or(config.auth.definitions.as_ref());
        let (imported, topologies) = match import_path {
            Some(path) => {
                let (d, t) = Definitions::read(path).map_err(BrokerError::Config)?;
                (Some(d), t)
            }
            None => (None, Vec::new()),
        };
        if let Some(i) = &imported
            && !i.not_imported.is_empty()
        {
            let sections: Vec<String> = i.not_imported.iter().map(|(s, n)| format!("{s} ({n})")).collect();
            tracing::warn!(
                sections = %sections.join(", "),
                "the definitions file has sections this version does not import (it imports users, vhosts, \
                 permissions, topic permissions, policies, operator policies, limits, global parameters, queues, \
                 exchanges and bindings); they are ignored"
            );
        }
        let defs = crate::definitions::at_start(&config, saved, imported).map_err(BrokerError::Config)?;
        let users = crate::auth::Users::build(&defs, &config.auth).map_err(BrokerError::Config)?;
        for name in config.auth.loopback_users.iter().filter(|n| defs.user(n).is_none()) {
            tracing::warn!(user = %name, "auth.loopback_users names a user that does not exist");
        }
        let mut vhosts = HashMap::new();
        let counters = Arc::new(crate::stats::Counters::default());
        for v in &defs.vhosts {
            let policies = compile_policies(&defs, &v.name).map_err(BrokerError::Config)?;
            let vhost = Self::open_vhost(&config, &persister, v, policies).map_err(BrokerError::Storage)?;
            vhost.count_for_node(counters.clone());
            vhosts.insert(v.name.clone(), vhost);
        }
        for e in import_topologies(&vhosts, topologies) {
            tracing::warn!("definitions file: {e}");
        }
        tenancy_file
            .save(&defs)
            .map_err(|e| BrokerError::Storage(format!("cannot write {}: {e}", tenancy_file.path().display())))?;
        let mut rate_limits = HashMap::new();
        for r in &config.rate_limits {
            let key = match (&r.vhost, &r.user) {
                (Some(v), None) => (RateScope::VHost, v.clone()),
                (None, Some(u)) => (RateScope::User, u.clone()),
                _ => return Err(BrokerError::Config("a [[rate_limits]] entry names either a vhost or a user".into())),
            };
            if let Some(l) = rate_limit::RateLimit::new(r.messages_per_second, r.bytes_per_second) {
                rate_limits.insert(key, Arc::new(l));
            }
        }
        let disk_alarm = alarm::start(&config);
        Ok(Arc::new(Broker {
            listeners: Mutex::new(Vec::new()),
            counters,
            started: std::time::Instant::now(),
            rate_limits,
            users: RwLock::new(Arc::new(users)),
            config,
            vhosts: RwLock::new(vhosts),
            next_connection: AtomicU64::new(1),
            shutdown: CancellationToken::new(),
            definitions: Mutex::new(defs),
            tenancy_file,
            persister,
            permissions_epoch: AtomicU64::new(0),
            replies: Mutex::new(HashMap::new()),
            disk_alarm,
            connections: Default::default(),
        }))
    }

    pub fn vhost(&self, name: &str) -> Option<Arc<VHost>> {
        self.vhosts.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    /// Record a bound listener (`amqp`, `amqp/ssl`, `http`).
    pub fn add_listener(&self, protocol: &'static str, addr: std::net::SocketAddr) {
        self.listeners.lock().unwrap_or_else(|p| p.into_inner()).push((protocol, addr));
    }

    pub fn listeners(&self) -> Vec<(&'static str, std::net::SocketAddr)> {
        self.listeners.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The publisher rate limits that apply to `user` publishing in `vhost`.
    pub fn rate_limits(&self, vhost: &str, user: &str) -> Vec<Arc<rate_limit::RateLimit>> {
        [(RateScope::VHost, vhost), (RateScope::User, user)]
            .into_iter()
            .filter_map(|(s, n)| self.rate_limits.get(&(s, n.to_string())).cloned())
            .collect()
    }

    /// Every vhost, sorted by name.
    pub fn vhosts_sorted(&self) -> Vec<Arc<VHost>> {
        let mut all: Vec<Arc<VHost>> =
            self.vhosts.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        all
    }

    /// The users and their permissions now.
    pub fn users(&self) -> Arc<crate::auth::Users> {
        self.users.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Changes with every change of users or permissions.
    pub fn permissions_epoch(&self) -> u64 {
        self.permissions_epoch.load(Ordering::Acquire)
    }

    /// Declare the queues, exchanges and bindings of a definitions file in their vhosts;
    /// what could not be done, one line each.
    pub fn import_topologies(&self, t: crate::definitions::Topologies) -> Vec<String> {
        let vhosts = self.vhosts.read().unwrap_or_else(|p| p.into_inner()).clone();
        import_topologies(&vhosts, t)
    }

    /// Everything as a RabbitMQ definitions export: users, vhosts, permissions, policies,
    /// limits, and each vhost's durable exchanges, queues and bindings.
    pub fn export_definitions(&self) -> serde_json::Value {
        let mut v = self.definitions().to_json();
        let t: crate::definitions::Topologies =
            self.vhosts_sorted().iter().map(|v| (v.name().to_string(), v.durable_topology())).collect();
        crate::definitions::add_topologies(&mut v, &t);
        v
    }

    /// A copy of the users, vhosts, permissions, policies and limits.
    pub fn definitions(&self) -> Definitions {
        self.definitions.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Change users, vhosts, permissions, policies or limits at runtime: `edit` changes a copy,
    /// which is validated as a whole, saved, and put in force: new vhosts open, changed policies
    /// apply to running queues at once, connections of a deleted vhost or user are closed
    /// (320, RabbitMQ's texts) and a deleted vhost's queues and data are removed. On any
    /// error nothing changes.
    pub async fn change(&self, edit: impl FnOnce(&mut Definitions) -> Result<(), String>) -> Result<(), String> {
        // Saving (fsync) and opening vhosts block: off the runtime's worker (see `blocking`).
        let (gone_vhosts, gone_users) = blocking(|| {
            let mut current = self.definitions.lock().unwrap_or_else(|p| p.into_inner());
            let mut d = current.clone();
            edit(&mut d)?;
            if d == *current {
                return Ok((Vec::new(), Vec::new()));
            }
            let users = crate::auth::Users::build(&d, &self.config.auth)?;
            let mut policies = HashMap::new();
            for v in &d.vhosts {
                policies.insert(v.name.clone(), compile_policies(&d, &v.name)?);
            }
            let existing: Vec<String> = self.vhosts.read().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
            let mut opened = Vec::new();
            for v in d.vhosts.iter().filter(|v| !existing.contains(&v.name)) {
                let p = policies.remove(&v.name).unwrap_or_default();
                let vhost = Self::open_vhost(&self.config, &self.persister, v, p)?;
                vhost.count_for_node(self.counters.clone());
                opened.push(vhost);
            }
            self.tenancy_file
                .save(&d)
                .map_err(|e| format!("cannot write {}: {e}", self.tenancy_file.path().display()))?;
            let mut vhosts = self.vhosts.write().unwrap_or_else(|p| p.into_inner());
            for v in opened {
                vhosts.insert(v.name().to_string(), v);
            }
            for v in &d.vhosts {
                if let Some(vh) = vhosts.get(&v.name) {
                    vh.set_settings(v.clone());
                    if let Some(p) = policies.remove(&v.name) {
                        vh.set_policies(p);
                    }
                }
            }
            let gone_vhosts: Vec<Arc<VHost>> =
                existing.iter().filter(|n| d.vhost(n).is_none()).filter_map(|n| vhosts.remove(n)).collect();
            drop(vhosts);
            let gone_users: Vec<String> =
                current.users.iter().filter(|u| d.user(&u.name).is_none()).map(|u| u.name.clone()).collect();
            *self.users.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(users);
            self.permissions_epoch.fetch_add(1, Ordering::AcqRel);
            *current = d;
            Ok::<_, String>((gone_vhosts, gone_users))
        })?;
        for u in gone_users {
            self.connections.close_where(|c| c.user == u, &format!("user '{u}' is deleted"));
        }
        for v in gone_vhosts {
            let name = v.name().to_string();
            self.connections.close_where(|c| c.vhost == name, &format!("vhost '{name}' is deleted"));
            v.destroy().await;
            tracing::info!(vhost = %name, "vhost deleted");
        }
        Ok(())
    }

    pub fn register_reply(&self, name: String, route: ReplyRoute) {
        self.replies.lock().unwrap_or_else(|p| p.into_inner()).insert(name, route);
    }

    pub fn unregister_reply(&self, name: &str) {
        self.replies.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
    }

    /// The channel waiting for replies sent to `name` from `vhost`, if it still exists (a
    /// reply name is not reachable from another vhost).
    pub fn reply_route(&self, name: &str, vhost: &str) -> Option<ReplyRoute> {
        self.replies.lock().unwrap_or_else(|p| p.into_inner()).get(name).filter(|r| r.vhost == vhost).cloned()
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

/// Run blocking work (file writes with fsync, directory scans) from async code: on a
/// multi-threaded runtime the worker hands its other tasks to another thread meanwhile; on a
/// single-threaded one (tests) it just runs.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}
