//! A virtual host: its exchanges, queues and bindings. Holds the current routing snapshot and
//! performs every topology change (declare, delete, bind, unbind) by building a new snapshot
//! under one writer lock. These are the cold-path operations; publishing only reads
//! [`VHost::snapshot`].

use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::Duration;

use amq_protocol::types::{AMQPValue, FieldTable};
use tokio::sync::oneshot;

use super::delayed::{self, Delayed};
use super::names;
use super::topology::Topology;
use crate::definitions::{VHostDef, VHostLimits};
use crate::error::{AmqpError, AmqpResult};
use crate::exchange::dedup::DedupCache;
use crate::exchange::headers::{XMatch, parse_x_match};
use crate::exchange::{Binding, Destination, Exchange, ExchangeKind};
use crate::protocol::methods::{type_name, value_display, value_int, value_str};
use crate::queue::args::{QueueArgs, QueueType};
use crate::queue::policy::{self, Policies};
use crate::queue::{QueueCmd, QueueEntry, QueueHandle, actor};
use crate::store::definitions::journal::{Change, JournalSync};
use crate::store::definitions::{BindingDef, Definitions, DefinitionsFile, ExchangeDef, QueueDef};
use crate::store::memory::MemoryStore;
use crate::store::segment::{Recovered, SegmentStore};
use crate::store::{AnyStore, StorageSettings, StoreError, queue_dirs};

/// Exchanges every vhost starts with (all durable).
const PREDECLARED: &[(&str, ExchangeKind, bool)] = &[
    ("amq.direct", ExchangeKind::Direct, false),
    ("amq.fanout", ExchangeKind::Fanout, false),
    ("amq.topic", ExchangeKind::Topic, false),
    ("amq.headers", ExchangeKind::Headers, false),
    ("amq.match", ExchangeKind::Headers, false),
    ("amq.rabbitmq.trace", ExchangeKind::Topic, true),
];

/// Queue arguments compared on redeclare (the known `x-` keys; others are ignored, as RabbitMQ).
const EQUIVALENCE_ARGS: &[&str] = &[
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-type",
    "x-queue-version",
    "x-single-active-consumer",
    "x-delivery-limit",
    "x-dead-letter-strategy",
    "x-queue-master-locator",
    "x-quorum-initial-group-size",
    "x-consumer-timeout",
    "x-message-deduplication",
];

/// What `queue.declare` asked for.
#[derive(Debug, Clone, Default)]
pub struct QueueDeclare {
    pub name: String,
    pub passive: bool,
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
    pub arguments: FieldTable,
}

/// What `exchange.declare` asked for.
#[derive(Debug, Clone, Default)]
pub struct ExchangeDeclare {
    pub name: String,
    pub kind: String,
    pub passive: bool,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
}

#[derive(Debug)]
pub struct VHost {
    name: String,
    snapshot: RwLock<Arc<Topology>>,
    /// Serialises topology changes (readers never take it).
    writer: Mutex<()>,
    me: Weak<VHost>,
    /// Broker-wide consumer ack timeout (None = off); queues may set their own.
    consumer_timeout: Option<Duration>,
    /// The delayed-message scheduler, started on first use.
    delayed: OnceLock<tokio::sync::mpsc::UnboundedSender<Delayed>>,
    /// Durable storage (None: everything in memory).
    storage: Option<StorageSettings>,
    definitions: Mutex<Option<DefinitionsFile>>,
    /// The definitions journal's group commit (with storage, once restored).
    journal: OnceLock<Arc<JournalSync>>,
    /// Stored definitions that could not be restored (an exchange type this version refuses,
    /// a binding whose ends are missing): saved back unchanged, never dropped from the file.
    unrestored: Mutex<Definitions>,
    /// Its policies and operator policies.
    policies: RwLock<Arc<Policies>>,
    /// Description, tags, default queue type and limits.
    settings: RwLock<VHostDef>,
    /// Message counters of its connections (RabbitMQ's vhost `message_stats`).
    pub counters: crate::stats::Counters,
    /// `publish_in`/`publish_out` per exchange.
    pub exchange_counts: crate::stats::ExchangeCounts,
    /// Cancelled once the vhost's durable topology is fully restored: restored queues wait for
    /// it before acting, so a message that expired while the broker was down is dead-lettered
    /// through bindings that exist (not dropped because its queue task ran first).
    pub restored: tokio_util::sync::CancellationToken,
    /// The node's counters (queue churn is counted here and there).
    node_counters: OnceLock<Arc<crate::stats::Counters>>,
}

fn b(v: bool) -> &'static str {
    if v { "true" } else { "false" }
}

impl VHost {
    /// A vhost keeping everything in memory.
    pub fn new(name: &str, consumer_timeout: Option<Duration>) -> Arc<VHost> {
        let settings = VHostDef { name: name.into(), ..Default::default() };
        let v = Self::build(name, consumer_timeout, None, Policies::default(), settings);
        v.restored.cancel();
        v
    }

    /// A vhost with durable storage: restores its durable exchanges, queues (with their
    /// persistent messages) and bindings.
    pub fn open(
        name: &str,
        consumer_timeout: Option<Duration>,
        storage: StorageSettings,
        policies: Policies,
        settings: VHostDef,
    ) -> std::io::Result<Arc<VHost>> {
        std::fs::create_dir_all(&storage.dir)?;
        let started = std::time::Instant::now();
        let mut file = DefinitionsFile::new(&storage.dir);
        // Unreadable definitions stop the start here, before anything on disk is touched.
        let defs = file.load()?;
        let loaded = started.elapsed();
        let counts = (defs.exchanges.len(), defs.queues.len(), defs.bindings.len());
        // Non-durable queues' paging files: never recovered, so never worth keeping.
        let transient = storage.transient_root();
        if transient.exists() {
            std::fs::remove_dir_all(&transient)?;
        }
        let held_delayed = storage.dir.join("delayed").exists();
        let v = Self::build(name, consumer_timeout, Some(storage), policies, settings);
        v.restore(defs);
        v.restored.cancel();
        if counts != (0, 0, 0) {
            tracing::info!(
                vhost = %name, exchanges = counts.0, queues = counts.1, bindings = counts.2,
                read_s = format!("{:.3}", loaded.as_secs_f64()),
                total_s = format!("{:.3}", started.elapsed().as_secs_f64()),
                "definitions restored"
            );
        }
        if held_delayed {
            // Delayed messages from before the restart are due whether or not anyone publishes.
            v.delayed.get_or_init(|| delayed::spawn(v.me.clone(), v.storage.clone()));
        }
        if let Some(sync) = file.journal_sync() {
            let _ = v.journal.set(sync);
        }
        if file.needs_compaction() {
            // After a crash (changes only in the journal) or an upgrade (an older format).
            let t = v.snapshot();
            if let Err(e) = file.compact(&v.with_unrestored(durable_definitions(&t), &t)) {
                tracing::warn!(vhost = %name, error = %e, "cannot rewrite the definitions snapshot; the journal keeps the changes");
            }
        }
        *v.definitions.lock().unwrap_or_else(|p| p.into_inner()) = Some(file);
        Ok(v)
    }

    fn build(
        name: &str,
        consumer_timeout: Option<Duration>,
        storage: Option<StorageSettings>,
        policies: Policies,
        settings: VHostDef,
    ) -> Arc<VHost> {
        let mut t = Topology::default();
        for (x, kind, internal) in PREDECLARED {
            let e = Exchange::new((*x).into(), *kind, true, false, *internal, FieldTable::default());
            t.exchanges.insert((*x).into(), Arc::new(e));
        }
        Arc::new_cyclic(|me| VHost {
            name: name.to_string(),
            snapshot: RwLock::new(Arc::new(t)),
            writer: Mutex::new(()),
            me: me.clone(),
            consumer_timeout,
            delayed: OnceLock::new(),
            storage,
            definitions: Mutex::new(None),
            journal: OnceLock::new(),
            unrestored: Mutex::new(Definitions::default()),
            policies: RwLock::new(Arc::new(policies)),
            settings: RwLock::new(settings),
            counters: Default::default(),
            exchange_counts: Default::default(),
            node_counters: OnceLock::new(),
            restored: tokio_util::sync::CancellationToken::new(),
        })
    }

    /// Count queue churn in `node` too (the broker's counters).
    pub fn count_for_node(&self, node: Arc<crate::stats::Counters>) {
        let _ = self.node_counters.set(node);
    }

    /// Add to one of the vhost's counters and the node's.
    fn count(&self, counter: impl Fn(&crate::stats::Counters) -> &std::sync::atomic::AtomicU64) {
        use std::sync::atomic::Ordering::Relaxed;
        counter(&self.counters).fetch_add(1, Relaxed);
        if let Some(node) = self.node_counters.get() {
            counter(node).fetch_add(1, Relaxed);
        }
    }

    /// Its description, tags, default queue type and limits.
    /// Its limits (max-connections, max-queues).
    pub fn limits(&self) -> VHostLimits {
        self.settings.read().unwrap_or_else(|p| p.into_inner()).limits
    }

    /// The type of durable queues declared without `x-queue-type` (None: classic).
    pub fn default_queue_type(&self) -> Option<String> {
        self.settings.read().unwrap_or_else(|p| p.into_inner()).default_queue_type.clone()
    }

    pub fn set_settings(&self, s: VHostDef) {
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = s;
    }

    pub fn policies(&self) -> Arc<Policies> {
        self.policies.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replace the policies and apply them at once: every queue whose settings change gets
    /// them (a lower max-length drops or dead-letters at once), every exchange its alternate.
    pub fn set_policies(&self, p: Policies) {
        if *self.policies() == p {
            return;
        }
        let p = Arc::new(p);
        *self.policies.write().unwrap_or_else(|p| p.into_inner()) = p.clone();
        let t = self.snapshot();
        for (name, q) in t.queues.iter() {
            let applied = p.for_queue(name, q.args.queue_type);
            let args = policy::queue_args(&q.args, &q.arguments, &applied);
            let _ = q.handle.ctl.send(QueueCmd::SetArgs(Box::new(args)));
        }
        let _ = self.mutate(|t, _| {
            let names: Vec<String> = t.exchanges.keys().cloned().collect();
            for name in names {
                let Some(x) = t.exchanges.get(&name) else { continue };
                let declared = x.arguments.inner().get("alternate-exchange").and_then(value_str);
                let alternate = policy::alternate_exchange(declared.as_deref(), &p.for_exchange(&name));
                if alternate != x.alternate {
                    let mut x = (**x).clone();
                    x.alternate = alternate;
                    t.exchanges.insert(name, Arc::new(x));
                }
            }
            Ok(())
        });
    }

    /// Its durable exchanges, queues and bindings (for a definitions export).
    pub fn durable_topology(&self) -> Definitions {
        durable_definitions(&self.snapshot())
    }

    /// Declare the exchanges, queues and bindings of a definitions file (durable; what exists
    /// already must be equivalent, as for a client's declare). Returns what could not be done.
    pub fn import(&self, d: Definitions) -> Vec<String> {
        let mut errors = Vec::new();
        let mut failed =
            |what: String, e: AmqpError| errors.push(format!("{what} in vhost '{}': {}", self.name, e.text));
        for x in d.exchanges {
            let decl = ExchangeDeclare {
                name: x.name.clone(),
                kind: x.kind,
                passive: false,
                durable: true,
                auto_delete: x.auto_delete,
                internal: x.internal,
                arguments: x.arguments,
            };
            if let Err(e) = self.declare_exchange(&decl) {
                failed(format!("exchange '{}'", x.name), e);
            }
        }
        for q in d.queues {
            let decl = QueueDeclare {
                name: q.name.clone(),
                durable: true,
                auto_delete: q.auto_delete,
                arguments: q.arguments,
                ..Default::default()
            };
            if let Err(e) = self.declare_queue(&decl, 0) {
                failed(format!("queue '{}'", q.name), e);
            }
        }
        for b in d.bindings {
            let r = match b.destination_type.as_str() {
                "exchange" => self.bind_exchange(&b.destination, &b.source, &b.routing_key, &b.arguments),
                _ => self.bind_queue(&b.destination, &b.source, &b.routing_key, &b.arguments, 0),
            };
            if let Err(e) = r {
                failed(format!("binding of '{}' to '{}'", b.destination, b.source), e);
            }
        }
        self.sync_definitions_now();
        errors
    }

    /// A queue's settings: its declared arguments with the policies applied.
    fn effective_args(&self, name: &str, declared: &QueueArgs, arguments: &FieldTable) -> QueueArgs {
        let applied = self.policies().for_queue(name, declared.queue_type);
        policy::queue_args(declared, arguments, &applied)
    }

    /// The vhost is being deleted: every queue goes (with its messages), and its data
    /// directory. Its connections were closed before.
    pub async fn destroy(&self) {
        let t = self.snapshot();
        for (name, q) in t.queues.iter() {
            let (reply, rx) = oneshot::channel();
            q.handle.send(QueueCmd::Delete { if_unused: false, if_empty: false, reply }).await;
            let _ = rx.await;
            self.forget_queue(name, &q.handle);
        }
        *self.definitions.lock().unwrap_or_else(|p| p.into_inner()) = None;
        if let Some(s) = &self.storage
            && let Err(e) = super::blocking(|| std::fs::remove_dir_all(&s.dir))
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(vhost = %self.name, dir = %s.dir.display(), error = %e, "cannot remove the deleted vhost's data");
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn consumer_timeout(&self) -> Option<Duration> {
        self.consumer_timeout
    }

    /// Hold a message published to an `x-delayed-message` exchange until it is due.
    pub fn schedule_delayed(&self, d: Delayed) {
        let tx = self.delayed.get_or_init(|| delayed::spawn(self.me.clone(), self.storage.clone()));
        let _ = tx.send(d);
    }

    /// The current routing snapshot (an `Arc` clone; the lock is held only for that).
    pub fn snapshot(&self) -> Arc<Topology> {
        self.snapshot.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Apply a change to a copy of the topology (O(log n): copy-on-write maps) and publish it.
    /// The closure lists the durable changes it made; they are appended to the definitions
    /// journal, and made durable by [`Self::sync_definitions`] before the caller replies.
    fn mutate<R>(&self, f: impl FnOnce(&mut Topology, &mut Vec<Change>) -> AmqpResult<R>) -> AmqpResult<R> {
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut t = (*self.snapshot()).clone();
        let exchanges_before = t.exchanges.len();
        let mut changes = Vec::new();
        let r = f(&mut t, &mut changes)?;
        if !changes.is_empty()
            && let Some(file) = self.definitions.lock().unwrap_or_else(|p| p.into_inner()).as_mut()
            && let Err(e) = file.append(&changes, || self.with_unrestored(durable_definitions(&t), &t))
        {
            tracing::error!(vhost = %self.name, error = %e, "cannot save definitions; this change will not survive a restart");
        }
        if t.exchanges.len() < exchanges_before {
            // Counts of the exchanges this change deleted go with them ("" is the default).
            self.exchange_counts.forget_gone(|x| x.is_empty() || t.exchanges.contains_key(x));
        }
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(t);
        Ok(r)
    }

    /// Write the definitions snapshot and empty the journal (at a clean stop).
    pub fn compact_definitions(&self) {
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let t = self.snapshot();
        if let Some(file) = self.definitions.lock().unwrap_or_else(|p| p.into_inner()).as_mut()
            && file.needs_compaction()
            && let Err(e) = file.compact(&self.with_unrestored(durable_definitions(&t), &t))
        {
            tracing::warn!(vhost = %self.name, error = %e, "cannot rewrite the definitions snapshot; the journal keeps the changes");
        }
    }

    /// How far the definitions journal has been written (0 without storage): a connection
    /// that changed the topology waits for [`Self::sync_definitions`] of it before replying.
    pub fn definitions_written(&self) -> u64 {
        self.journal.get().map_or(0, |j| j.appended())
    }

    /// Return once the definitions journal is on disk up to `seq` (group commit).
    pub async fn sync_definitions(&self, seq: u64) {
        if let Some(j) = self.journal.get() {
            j.wait(seq).await;
        }
    }

    /// [`Self::sync_definitions`] of everything written, blocking (no reply waits for it).
    fn sync_definitions_now(&self) {
        if let Some(j) = self.journal.get() {
            j.sync_now(j.appended());
        }
    }

    pub fn storage(&self) -> Option<&StorageSettings> {
        self.storage.as_ref()
    }

    /// Recreate what the definitions file lists; queues recover their messages.
    fn restore(&self, defs: Definitions) {
        for x in defs.exchanges {
            let d = ExchangeDeclare {
                name: x.name.clone(),
                kind: x.kind.clone(),
                durable: true,
                auto_delete: x.auto_delete,
                internal: x.internal,
                arguments: x.arguments.clone(),
                passive: false,
            };
            if let Err(e) = self.declare_exchange(&d) {
                tracing::error!(
                    exchange = %x.name, vhost = %self.name, error = %e.text,
                    "durable exchange not restored; its definition is kept in the file"
                );
                self.unrestored.lock().unwrap_or_else(|p| p.into_inner()).exchanges.push(x);
            }
        }
        // Queues and bindings are restored in one topology change each: 100,000 queues must
        // not build 100,000 snapshots.
        let mut lost_queues = Vec::new();
        let stores = self.open_stores(&defs.queues);
        let _ = self.mutate(|t, _| {
            for (q, store) in defs.queues.into_iter().zip(stores) {
                match store.and_then(|store| self.restore_queue(&q, store)) {
                    Ok(entry) => {
                        t.queues.insert(q.name.clone(), entry);
                    }
                    Err(e) => {
                        // Its directory (if any) stays, and is reported as orphaned below; its
                        // definition stays in the file.
                        tracing::error!(queue = %q.name, vhost = %self.name, error = %e.text, "durable queue not restored");
                        lost_queues.push(q);
                    }
                }
            }
            Ok(())
        });
        let mut lost_bindings = Vec::new();
        let _ = self.mutate(|t, ch| {
            for b in defs.bindings {
                let dest = match b.destination_type.as_str() {
                    "exchange" => Destination::Exchange(b.destination.clone()),
                    _ => Destination::Queue(b.destination.clone()),
                };
                let ends = t.exchanges.contains_key(&b.source)
                    && match &dest {
                        Destination::Exchange(e) => t.exchanges.contains_key(e),
                        Destination::Queue(q) => t.queues.contains_key(q),
                    };
                if ends && add_binding(t, ch, &b.source, dest, &b.routing_key, &b.arguments).is_ok() {
                    continue;
                }
                tracing::error!(
                    source = %b.source, destination = %b.destination, vhost = %self.name,
                    "durable binding not restored (an end is missing); its definition is kept in the file"
                );
                lost_bindings.push(b);
            }
            // Restoring writes nothing: these are already stored.
            ch.clear();
            Ok(())
        });
        {
            let mut kept = self.unrestored.lock().unwrap_or_else(|p| p.into_inner());
            kept.queues.extend(lost_queues);
            kept.bindings.extend(lost_bindings);
        }
        // Only logs, and reads a file per queue directory: not on the start's path.
        if let Some(me) = self.me.upgrade() {
            let spawned = std::thread::Builder::new().name("orphan-check".into()).spawn(move || me.report_orphans());
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start the orphaned-directory check");
            }
        }
    }

    /// What will be saved: the topology's durable part, and the stored definitions that could
    /// not be restored, unless the topology now has an entity of the same name (or the same
    /// binding).
    fn with_unrestored(&self, mut d: Definitions, t: &Topology) -> Definitions {
        let kept = self.unrestored.lock().unwrap_or_else(|p| p.into_inner());
        d.exchanges.extend(kept.exchanges.iter().filter(|x| !t.exchanges.contains_key(&x.name)).cloned());
        d.queues.extend(kept.queues.iter().filter(|q| !t.queues.contains_key(&q.name)).cloned());
        d.bindings.extend(kept.bindings.iter().filter(|b| !d.bindings.contains(b)).cloned().collect::<Vec<_>>());
        d
    }

    /// Recreate one durable queue. Arguments that no longer pass validation (a stricter
    /// version, a hand-edited file) do not lose the queue: it comes back with its arguments
    /// kept as stored (so they are saved again unchanged) and their effects off.
    fn restore_queue(&self, q: &QueueDef, store: (AnyStore, Vec<Recovered>)) -> AmqpResult<Arc<QueueEntry>> {
        let d = QueueDeclare {
            name: q.name.clone(),
            durable: true,
            auto_delete: q.auto_delete,
            arguments: q.arguments.clone(),
            ..Default::default()
        };
        let args =
            QueueArgs::parse(&d.arguments, &q.name, &self.name, true, false, d.auto_delete, false).or_else(|e| {
                tracing::warn!(
                    queue = %q.name, vhost = %self.name, error = %e.text,
                    "stored queue arguments no longer valid; queue restored with their effects off"
                );
                // A stream stays a stream (its log is in its directory), with its defaults.
                let mut kept = FieldTable::default();
                if is_stream_def(q) {
                    kept.insert("x-queue-type".into(), AMQPValue::LongString("stream".into()));
                }
                QueueArgs::parse(&kept, &q.name, &self.name, true, false, false, false)
            })?;
        if args.queue_type == QueueType::Stream {
            return self.start_stream(&d, &q.name, args, false);
        }
        self.start_queue(&d, &q.name, args, None, store)
    }

    /// Open the stores of the queues being restored, on a few threads: finding 100,000
    /// directories and reading their segments is most of a large node's start.
    fn open_stores(&self, queues: &[QueueDef]) -> Vec<AmqpResult<(AnyStore, Vec<Recovered>)>> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 8);
        let open = |q: &QueueDef| {
            if is_stream_def(q) {
                // A stream opens its log when it starts (restore_queue).
                return Ok((AnyStore::Memory(MemoryStore::new()), Vec::new()));
            }
            self.open_store(&q.name, true, false)
        };
        if queues.len() < 64 || threads == 1 {
            return queues.iter().map(open).collect();
        }
        let chunk = queues.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let parts: Vec<_> = queues
                .chunks(chunk)
                .map(|part| scope.spawn(move || part.iter().map(open).collect::<Vec<_>>()))
                .collect();
            parts.into_iter().flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
        })
    }

    /// Queue directories that no restored queue claims (a definition lost or removed, or a
    /// delete interrupted by a crash) are kept as they are and logged, never deleted.
    fn report_orphans(&self) {
        let Some(s) = &self.storage else { return };
        let Ok(entries) = std::fs::read_dir(s.queues_root()) else { return };
        let t = self.snapshot();
        for e in entries.flatten() {
            let path = e.path();
            if !queue_dirs::is_queue_dir(&path) {
                continue;
            }
            // A directory is claimed by the durable queue its name file names (a queue has one
            // directory: a new queue sets a leftover one aside). One read per directory.
            let holds = match queue_dirs::read_name(&path) {
                Ok(Some(n)) if t.queues.get(&n).is_some_and(|q| q.durable && q.exclusive_owner.is_none()) => continue,
                Ok(Some(n)) => n,
                _ => "(unknown: no name file, made by an older Warren)".to_string(),
            };
            tracing::warn!(
                vhost = %self.name, dir = %path.display(), queue = %holds,
                "queue directory without a definition kept (not deleted); declare the queue to set it aside under orphaned/, or remove it by hand"
            );
        }
    }

    fn no_exchange(&self, name: &str) -> AmqpError {
        AmqpError::not_found(format_args!("no exchange '{name}' in vhost '{}'", self.name))
    }

    fn no_queue(&self, name: &str) -> AmqpError {
        AmqpError::not_found(format_args!("no queue '{name}' in vhost '{}'", self.name))
    }

    fn locked(&self, name: &str) -> AmqpError {
        AmqpError::resource_locked(format_args!(
            "cannot obtain exclusive access to locked queue '{name}' in vhost '{}'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.",
            self.name
        ))
    }

    fn default_exchange_refused() -> AmqpError {
        AmqpError::access_refused("operation not permitted on the default exchange")
    }

    // ---- exchanges ----------------------------------------------------------------------

    pub fn declare_exchange(&self, d: &ExchangeDeclare) -> AmqpResult<()> {
        if d.passive {
            if d.name.is_empty() {
                return Err(Self::default_exchange_refused());
            }
            return match self.snapshot().exchanges.get(&d.name) {
                Some(_) => Ok(()),
                None => Err(self.no_exchange(&d.name)),
            };
        }
        let (kind, delayed, dedup) = self.exchange_type(d)?;
        if d.name.is_empty() {
            return Err(Self::default_exchange_refused());
        }
        self.mutate(|t, ch| {
            if let Some(x) = t.exchanges.get(&d.name) {
                return self.exchange_equivalent(x, kind, d);
            }
            if d.name.starts_with("amq.") {
                return Err(AmqpError::access_refused(format_args!(
                    "exchange name '{}' contains reserved prefix 'amq.*'",
                    d.name
                )));
            }
            if let Some(v) = d.arguments.inner().get("alternate-exchange")
                && !matches!(v, AMQPValue::LongString(_))
            {
                return Err(AmqpError::precondition(format_args!(
                    "invalid type '{}' for arg 'alternate-exchange' in exchange '{}' in vhost '{}'",
                    type_name(v),
                    d.name,
                    self.name
                )));
            }
            let mut x = Exchange::new(d.name.clone(), kind, d.durable, d.auto_delete, d.internal, d.arguments.clone());
            x.declared_type = d.kind.clone();
            x.delayed = delayed;
            x.dedup = dedup.map(|c| Arc::new(Mutex::new(c)));
            if x.alternate.is_none() {
                x.alternate = policy::alternate_exchange(None, &self.policies().for_exchange(&d.name));
            }
            if x.durable {
                ch.push(Change::PutExchange(exchange_def(&x)));
            }
            t.exchanges.insert(d.name.clone(), Arc::new(x));
            Ok(())
        })
    }

    /// The routing kind of a declared type, including the plugin-compatible types
    /// `x-delayed-message` (routes as its `x-delayed-type`) and `x-message-deduplication`
    /// (routes as fanout). An unknown type is a 503 connection error, as in RabbitMQ 3.x.
    fn exchange_type(&self, d: &ExchangeDeclare) -> AmqpResult<(ExchangeKind, bool, Option<DedupCache>)> {
        let args = d.arguments.inner();
        match d.kind.as_str() {
            "x-delayed-message" => {
                let inner_name = args.get("x-delayed-type").and_then(value_str);
                if inner_name.as_deref() == Some("x-delayed-message") {
                    return Err(AmqpError::precondition(
                        "Invalid argument, 'x-delayed-message' can't be used for 'x-delayed-type'",
                    ));
                }
                let inner = inner_name.and_then(|t| ExchangeKind::parse(&t));
                match inner {
                    Some(k) => Ok((k, true, None)),
                    None => Err(AmqpError::precondition(
                        "Invalid argument, 'x-delayed-type' must be an existing exchange type",
                    )),
                }
            }
            "x-message-deduplication" => {
                let positive = |key: &str| -> Option<Result<u64, ()>> {
                    let v = args.get(key)?;
                    let n = value_int(v).or_else(|| value_str(v).and_then(|s| s.trim().parse().ok()));
                    Some(n.filter(|n| *n > 0).map(|n| n as u64).ok_or(()))
                };
                let size = match positive("x-cache-size") {
                    Some(Ok(n)) => n as usize,
                    _ => {
                        return Err(AmqpError::precondition(
                            "Missing or invalid argument, 'x-cache-size' must be an integer greater than 0",
                        ));
                    }
                };
                let ttl = match positive("x-cache-ttl") {
                    None => None,
                    Some(Ok(ms)) => Some(Duration::from_millis(ms.min(crate::queue::args::MAX_TTL_MS as u64))),
                    Some(Err(())) => {
                        return Err(AmqpError::precondition(
                            "Invalid argument, 'x-cache-ttl' must be an integer greater than 0",
                        ));
                    }
                };
                Ok((ExchangeKind::Fanout, false, Some(DedupCache::new(size, ttl))))
            }
            other => match ExchangeKind::parse(other) {
                Some(k) => Ok((k, false, None)),
                None => {
                    let mut e = AmqpError::command_invalid(format_args!("invalid exchange type '{other}'"));
                    e.force_connection = true;
                    Err(e)
                }
            },
        }
    }

    fn exchange_equivalent(&self, x: &Exchange, kind: ExchangeKind, d: &ExchangeDeclare) -> AmqpResult<()> {
        let ineq = |arg: &str, got: &str, cur: &str| {
            AmqpError::precondition(format_args!(
                "inequivalent arg '{arg}' for exchange '{}' in vhost '{}': received '{got}' but current is '{cur}'",
                d.name, self.name
            ))
        };
        if x.kind != kind || x.declared_type != d.kind {
            return Err(ineq("type", &d.kind, &x.declared_type));
        }
        if x.durable != d.durable {
            return Err(ineq("durable", b(d.durable), b(x.durable)));
        }
        if x.auto_delete != d.auto_delete {
            return Err(ineq("auto_delete", b(d.auto_delete), b(x.auto_delete)));
        }
        if x.internal != d.internal {
            return Err(ineq("internal", b(d.internal), b(x.internal)));
        }
        self.args_equivalent("exchange", &d.name, &["alternate-exchange"], &d.arguments, &x.arguments)
    }

    pub fn delete_exchange(&self, name: &str, if_unused: bool) -> AmqpResult<()> {
        if name.is_empty() {
            return Err(Self::default_exchange_refused());
        }
        if name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format_args!(
                "deletion of system exchange '{name}' in vhost '{}' not allowed",
                self.name
            )));
        }
        self.mutate(|t, ch| {
            let Some(x) = t.exchanges.get(name) else { return Ok(()) };
            if if_unused && x.binding_count() > 0 {
                return Err(AmqpError::precondition(format_args!("exchange '{name}' in vhost '{}' in use", self.name)));
            }
            if x.durable {
                ch.push(Change::DeleteExchange(name.to_string()));
            }
            t.exchanges.remove(name);
            remove_bindings_to(t, ch, &Destination::Exchange(name.to_string()));
            Ok(())
        })
    }

    pub fn bind_exchange(&self, destination: &str, source: &str, key: &str, args: &FieldTable) -> AmqpResult<()> {
        if destination.is_empty() || source.is_empty() {
            return Err(Self::default_exchange_refused());
        }
        self.mutate(|t, ch| {
            for x in [source, destination] {
                if !t.exchanges.contains_key(x) {
                    return Err(self.no_exchange(x));
                }
            }
            add_binding(t, ch, source, Destination::Exchange(destination.into()), key, args)
        })
    }

    pub fn unbind_exchange(&self, destination: &str, source: &str, key: &str, args: &FieldTable) -> AmqpResult<()> {
        if destination.is_empty() || source.is_empty() {
            return Err(Self::default_exchange_refused());
        }
        self.mutate(|t, ch| {
            remove_binding(t, ch, source, &Destination::Exchange(destination.into()), key, args);
            Ok(())
        })
    }

    // ---- queues -------------------------------------------------------------------------

    /// Find a queue this connection may use (404 if missing, 405 if another's exclusive queue).
    pub fn queue(&self, name: &str, conn_id: u64) -> AmqpResult<Arc<QueueEntry>> {
        let q = self.snapshot().queues.get(name).cloned().ok_or_else(|| self.no_queue(name))?;
        match q.exclusive_owner {
            Some(owner) if owner != conn_id => Err(self.locked(name)),
            _ => Ok(q),
        }
    }

    /// Declare (or check) a queue; returns its entry and whether it was created now.
    pub fn declare_queue(&self, d: &QueueDeclare, conn_id: u64) -> AmqpResult<(Arc<QueueEntry>, bool)> {
        self.declare_queue_checked(d, conn_id, &|_| Ok(()))
    }

    /// [`Self::declare_queue`], with `may_configure` asked about the final name (a server-named
    /// queue's generated one) of a non-passive declare after the name checks, as RabbitMQ does.
    pub fn declare_queue_checked(
        &self,
        d: &QueueDeclare,
        conn_id: u64,
        may_configure: &dyn Fn(&str) -> AmqpResult<()>,
    ) -> AmqpResult<(Arc<QueueEntry>, bool)> {
        if d.passive {
            return self.queue(&d.name, conn_id).map(|q| (q, false));
        }
        let server_named = d.name.is_empty();
        let name = if server_named {
            names::queue_name()
        } else {
            if d.name.starts_with("amq.") {
                return Err(AmqpError::access_refused(format_args!(
                    "queue name '{}' contains reserved prefix 'amq.*'",
                    d.name
                )));
            }
            d.name.clone()
        };
        may_configure(&name)?;
        let default_type = self.default_queue_type();
        // The vhost's default queue type, for durable, non-exclusive queues declared without
        // one (exclusive and transient queues stay classic), written into their arguments.
        let with_type;
        let d = match default_type.as_deref() {
            Some(t)
                if t != "classic"
                    && d.durable
                    && !d.exclusive
                    && !d.auto_delete
                    && !server_named
                    && !d.arguments.inner().contains_key("x-queue-type") =>
            {
                let mut d2 = d.clone();
                d2.arguments.insert("x-queue-type".into(), AMQPValue::LongString(t.into()));
                with_type = d2;
                &with_type
            }
            _ => d,
        };
        let args =
            QueueArgs::parse(&d.arguments, &name, &self.name, d.durable, d.exclusive, d.auto_delete, server_named)?;
        self.mutate(|t, ch| {
            if let Some(q) = t.queues.get(&name) {
                if q.exclusive_owner.is_some_and(|o| o != conn_id) || q.exclusive_owner.is_some() != d.exclusive {
                    return Err(self.locked(&name));
                }
                self.queue_equivalent(q, &name, d)?;
                self.count(|c| &c.queue_declared);
                return Ok((q.clone(), false));
            }
            if let Some(max) = self.limits().max_queues
                && t.queues.len() as u64 >= max
            {
                return Err(AmqpError::precondition(format_args!(
                    "cannot declare queue '{name}': queue limit in vhost '{}' ({max}) is reached",
                    self.name
                )));
            }
            let entry = self.new_queue(d, &name, args, d.exclusive.then_some(conn_id), true)?;
            if let Some(owner) = entry.exclusive_owner {
                t.exclusive.entry(owner).or_default().push(name.clone());
            } else if entry.durable {
                ch.push(Change::PutQueue(queue_def(&entry)));
            }
            t.queues.insert(name.clone(), entry.clone());
            self.count(|c| &c.queue_declared);
            self.count(|c| &c.queue_created);
            Ok((entry, true))
        })
    }

    /// Start a queue task: durable queues of a vhost with storage get a segment store
    /// (`fresh`: a newly declared queue; a leftover directory for its name is set aside).
    fn new_queue(
        &self,
        d: &QueueDeclare,
        name: &str,
        args: QueueArgs,
        owner: Option<u64>,
        fresh: bool,
    ) -> AmqpResult<Arc<QueueEntry>> {
        if args.queue_type == QueueType::Stream {
            return self.start_stream(d, name, args, fresh);
        }
        let durable = d.durable && owner.is_none();
        let opened = self.open_store(name, durable, fresh)?;
        self.start_queue(d, name, args, owner, opened)
    }

    /// Open (or create) a stream's log in its queue directory and start its task.
    fn start_stream(&self, d: &QueueDeclare, name: &str, args: QueueArgs, fresh: bool) -> AmqpResult<Arc<QueueEntry>> {
        let fail = |e: std::io::Error| {
            tracing::error!(stream = %name, vhost = %self.name, error = %e, "cannot open the stream's log");
            AmqpError::internal()
        };
        let Some(s) = self.storage.as_ref() else {
            return Err(AmqpError::precondition(format_args!(
                "cannot declare stream '{name}' in vhost '{}': streams need a data directory",
                self.name
            )));
        };
        let effective = self.effective_args(name, &args, &d.arguments);
        let dir = s.durable_queue_dir(name, fresh).map_err(fail)?.join("stream");
        let (handle, stream) = crate::stream::queue::spawn(name, &self.name, effective, &dir, s.fsync).map_err(fail)?;
        Ok(Arc::new(QueueEntry {
            name: name.to_string(),
            durable: true,
            exclusive_owner: None,
            auto_delete: false,
            arguments: d.arguments.clone(),
            args,
            handle,
            stream: Some(stream),
        }))
    }

    /// The message store of a queue (its directory found or made, its messages recovered).
    fn open_store(&self, name: &str, durable: bool, fresh: bool) -> AmqpResult<(AnyStore, Vec<Recovered>)> {
        let Some(s) = self.storage.as_ref() else { return Ok((AnyStore::Memory(MemoryStore::new()), Vec::new())) };
        // Durable queues recover their persistent messages; the others use the disk only to
        // page bodies out of memory.
        let opened = if durable {
            s.durable_queue_dir(name, fresh)
                .map_err(StoreError::Io)
                .and_then(|dir| SegmentStore::open(&dir, s.segment_size))
        } else {
            SegmentStore::open_transient(&s.transient_queue_dir(), s.segment_size).map(|st| (st, Vec::new()))
        };
        let (store, recovered) = opened.map_err(|e| {
            tracing::error!(queue = %name, error = %e, "cannot open the queue's message store");
            AmqpError::internal()
        })?;
        Ok((AnyStore::Segment(Box::new(store)), recovered))
    }

    fn start_queue(
        &self,
        d: &QueueDeclare,
        name: &str,
        args: QueueArgs,
        owner: Option<u64>,
        (store, recovered): (AnyStore, Vec<Recovered>),
    ) -> AmqpResult<Arc<QueueEntry>> {
        let me = self.me.upgrade().ok_or_else(AmqpError::internal)?;
        let effective = self.effective_args(name, &args, &d.arguments);
        let handle = actor::spawn(name, &me, d.auto_delete, effective, store, recovered);
        Ok(Arc::new(QueueEntry {
            name: name.to_string(),
            durable: d.durable,
            exclusive_owner: owner,
            auto_delete: d.auto_delete,
            arguments: d.arguments.clone(),
            args,
            handle,
            stream: None,
        }))
    }

    fn queue_equivalent(&self, q: &QueueEntry, name: &str, d: &QueueDeclare) -> AmqpResult<()> {
        let ineq = |arg: &str, got: bool, cur: bool| {
            AmqpError::precondition(format_args!(
                "inequivalent arg '{arg}' for queue '{name}' in vhost '{}': received '{}' but current is '{}'",
                self.name,
                b(got),
                b(cur)
            ))
        };
        if q.durable != d.durable {
            return Err(ineq("durable", d.durable, q.durable));
        }
        if q.auto_delete != d.auto_delete {
            return Err(ineq("auto_delete", d.auto_delete, q.auto_delete));
        }
        let keys = if q.stream.is_some() { STREAM_EQUIVALENCE_ARGS } else { EQUIVALENCE_ARGS };
        self.args_equivalent("queue", name, keys, &d.arguments, &q.arguments)
    }

    /// Compare the listed arguments of a redeclare with the current ones (RabbitMQ's texts).
    fn args_equivalent(
        &self,
        what: &str,
        name: &str,
        keys: &[&str],
        got: &FieldTable,
        cur: &FieldTable,
    ) -> AmqpResult<()> {
        for key in keys {
            let norm = |t: &FieldTable| {
                t.inner().get(*key).cloned().filter(|v| {
                    // x-queue-type=classic is the same as no x-queue-type.
                    !(*key == "x-queue-type" && value_str(v).as_deref() == Some("classic"))
                })
            };
            let (g, c) = (norm(got), norm(cur));
            let same = match (&g, &c) {
                (None, None) => true,
                (Some(a), Some(b)) => match (value_int(a), value_int(b)) {
                    (Some(x), Some(y)) => x == y,
                    _ => a == b,
                },
                _ => false,
            };
            if same {
                continue;
            }
            let show = |v: &Option<AMQPValue>, exact: bool| match v {
                None => "none".to_string(),
                Some(v) if exact => format!("'{}'", value_display(v)),
                Some(v) => format!("the value '{}' of type '{}'", value_display(v), type_name(v)),
            };
            let both = g.is_some() && c.is_some();
            return Err(AmqpError::precondition(format_args!(
                "inequivalent arg '{key}' for {what} '{name}' in vhost '{}': received {} but current is {}",
                self.name,
                show(&g, both),
                show(&c, both)
            )));
        }
        Ok(())
    }

    pub fn bind_queue(
        &self,
        queue: &str,
        exchange: &str,
        key: &str,
        args: &FieldTable,
        conn_id: u64,
    ) -> AmqpResult<()> {
        if exchange.is_empty() {
            return Err(Self::default_exchange_refused());
        }
        self.mutate(|t, ch| {
            if !t.exchanges.contains_key(exchange) {
                return Err(self.no_exchange(exchange));
            }
            let q = t.queues.get(queue).ok_or_else(|| self.no_queue(queue))?;
            if q.exclusive_owner.is_some_and(|o| o != conn_id) {
                return Err(self.locked(queue));
            }
            add_binding(t, ch, exchange, Destination::Queue(queue.into()), key, args)
        })
    }

    pub fn unbind_queue(
        &self,
        queue: &str,
        exchange: &str,
        key: &str,
        args: &FieldTable,
        conn_id: u64,
    ) -> AmqpResult<()> {
        if exchange.is_empty() {
            return Err(Self::default_exchange_refused());
        }
        self.mutate(|t, ch| {
            if let Some(q) = t.queues.get(queue)
                && q.exclusive_owner.is_some_and(|o| o != conn_id)
            {
                return Err(self.locked(queue));
            }
            remove_binding(t, ch, exchange, &Destination::Queue(queue.into()), key, args);
            Ok(())
        })
    }

    /// `queue.delete`: the queue task checks if-unused/if-empty and reports the ready count.
    pub async fn delete_queue(&self, name: &str, if_unused: bool, if_empty: bool, conn_id: u64) -> AmqpResult<u32> {
        let q = match self.queue(name, conn_id) {
            Ok(q) => q,
            Err(e) if e.code == crate::error::ReplyCode::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let (reply, rx) = oneshot::channel();
        q.handle.send(QueueCmd::Delete { if_unused, if_empty, reply }).await;
        // A queue task that is already gone has nothing left to count.
        let n = rx.await.unwrap_or(Ok(0))?;
        self.forget_queue(name, &q.handle);
        Ok(n)
    }

    /// Delete every exclusive queue owned by a closing connection.
    pub async fn delete_exclusive_queues(&self, conn_id: u64) {
        let owned = self.snapshot().exclusive.get(&conn_id).cloned().unwrap_or_default();
        for name in owned {
            let _ = self.delete_queue(&name, false, false, conn_id).await;
        }
    }

    /// Remove a queue (that the given handle still names) and its bindings from the topology.
    pub fn forget_queue(&self, name: &str, handle: &QueueHandle) {
        let _ = self.mutate(|t, ch| {
            let Some(q) = t.queues.get(name).filter(|q| q.handle.tx.same_channel(&handle.tx)).cloned() else {
                return Ok(());
            };
            t.queues.remove(name);
            self.count(|c| &c.queue_deleted);
            if let Some(owner) = q.exclusive_owner {
                if let Some(names) = t.exclusive.get_mut(&owner) {
                    names.retain(|n| n != name);
                    if names.is_empty() {
                        t.exclusive.remove(&owner);
                    }
                }
            } else if q.durable {
                ch.push(Change::DeleteQueue(name.to_string()));
            }
            remove_bindings_to(t, ch, &Destination::Queue(name.to_string()));
            Ok(())
        });
        // Deletes are not followed by a reply that waits for the journal (a queue that
        // expired, an auto-delete queue's last consumer gone): make them durable here.
        self.sync_definitions_now();
    }
}

/// Whether a stored queue is a stream (by its `x-queue-type`, even if its other arguments
/// no longer pass).
fn is_stream_def(q: &QueueDef) -> bool {
    q.arguments.inner().get("x-queue-type").and_then(value_str).as_deref() == Some("stream")
}

/// The arguments a stream's redeclare is compared on (its own; RabbitMQ ignores the others).
const STREAM_EQUIVALENCE_ARGS: &[&str] = &[
    "x-queue-type",
    "x-max-length-bytes",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-initial-cluster-size",
    "x-queue-leader-locator",
    "x-stream-filter-size-bytes",
];

fn add_binding(
    t: &mut Topology,
    ch: &mut Vec<Change>,
    source: &str,
    dest: Destination,
    key: &str,
    args: &FieldTable,
) -> AmqpResult<()> {
    let Some(x) = t.exchanges.get(source) else { return Ok(()) };
    let x_match = if x.kind == ExchangeKind::Headers { parse_x_match(args)? } else { XMatch::All };
    let durable = x.durable && durable_destination(t, &dest);
    let binding = Binding::new(dest.clone(), key.to_string(), args.clone(), x_match);
    // Changed in place when this snapshot already owns it (a batch), copied once otherwise.
    let Some(x) = t.exchanges.get_mut(source) else { return Ok(()) };
    if Arc::make_mut(x).bind(binding) && durable {
        ch.push(Change::PutBinding(binding_def(source, &dest, key, args)));
    }
    Ok(())
}

/// Whether a binding to `dest` is durable (if its source is): a durable, non-exclusive queue,
/// or a durable exchange.
fn durable_destination(t: &Topology, dest: &Destination) -> bool {
    match dest {
        Destination::Queue(q) => t.queues.get(q).is_some_and(|q| q.durable && q.exclusive_owner.is_none()),
        Destination::Exchange(e) => t.exchanges.get(e).is_some_and(|x| x.durable),
    }
}

fn remove_binding(
    t: &mut Topology,
    ch: &mut Vec<Change>,
    source: &str,
    dest: &Destination,
    key: &str,
    args: &FieldTable,
) {
    let Some(x) = t.exchanges.get(source) else { return };
    if !x.binds_to(dest) {
        return;
    }
    let Some(x) = t.exchanges.get_mut(source) else { return };
    let x = Arc::make_mut(x);
    if x.unbind(dest, key, args) {
        if x.durable {
            ch.push(Change::DeleteBinding(binding_def(source, dest, key, args)));
        }
        if x.auto_delete && x.binding_count() == 0 {
            delete_auto_deleted(t, ch, source);
        }
    }
}

/// Drop every binding that leads to `dest`, then auto-delete exchanges left without bindings.
/// (The journal's delete of `dest` drops its durable bindings on replay.)
fn remove_bindings_to(t: &mut Topology, ch: &mut Vec<Change>, dest: &Destination) {
    let sources: Vec<String> = t.exchanges.values().filter(|x| x.binds_to(dest)).map(|x| x.name.clone()).collect();
    for s in sources {
        let Some(x) = t.exchanges.get_mut(&s) else { continue };
        let x = Arc::make_mut(x);
        x.unbind_all(dest);
        if x.auto_delete && x.binding_count() == 0 {
            delete_auto_deleted(t, ch, &s);
        }
    }
}

fn delete_auto_deleted(t: &mut Topology, ch: &mut Vec<Change>, name: &str) {
    if let Some(x) = t.exchanges.remove(name)
        && x.durable
    {
        ch.push(Change::DeleteExchange(name.to_string()));
    }
    remove_bindings_to(t, ch, &Destination::Exchange(name.to_string()));
}

fn exchange_def(x: &Exchange) -> ExchangeDef {
    ExchangeDef {
        name: x.name.clone(),
        kind: x.declared_type.clone(),
        auto_delete: x.auto_delete,
        internal: x.internal,
        arguments: x.arguments.clone(),
    }
}

fn queue_def(q: &QueueEntry) -> QueueDef {
    QueueDef { name: q.name.clone(), auto_delete: q.auto_delete, arguments: q.arguments.clone() }
}

fn binding_def(source: &str, dest: &Destination, key: &str, args: &FieldTable) -> BindingDef {
    let (destination, kind) = match dest {
        Destination::Queue(q) => (q, "queue"),
        Destination::Exchange(e) => (e, "exchange"),
    };
    BindingDef {
        source: source.to_string(),
        destination: destination.clone(),
        destination_type: kind.into(),
        routing_key: key.to_string(),
        arguments: args.clone(),
    }
}

/// The durable part of a topology: what must survive a restart (sorted by name).
fn durable_definitions(t: &Topology) -> Definitions {
    let mut d = Definitions::default();
    let mut exchanges: Vec<&Arc<Exchange>> =
        t.exchanges.values().filter(|x| x.durable && !PREDECLARED.iter().any(|(n, _, _)| *n == x.name)).collect();
    exchanges.sort_by(|a, b| a.name.cmp(&b.name));
    d.exchanges = exchanges.into_iter().map(|x| exchange_def(x)).collect();
    let mut queues: Vec<&Arc<QueueEntry>> =
        t.queues.values().filter(|q| q.durable && q.exclusive_owner.is_none()).collect();
    queues.sort_by(|a, b| a.name.cmp(&b.name));
    d.queues = queues.into_iter().map(|q| queue_def(q)).collect();
    let mut sources: Vec<&Arc<Exchange>> = t.exchanges.values().filter(|x| x.durable).collect();
    sources.sort_by(|a, b| a.name.cmp(&b.name));
    for x in sources {
        let mut bs: Vec<BindingDef> = x
            .bindings()
            .filter(|(dest, _, _)| durable_destination(t, dest))
            .map(|(dest, key, args)| binding_def(&x.name, dest, key, args))
            .collect();
        bs.sort_by(|a, b| {
            (&a.destination_type, &a.destination, &a.routing_key).cmp(&(
                &b.destination_type,
                &b.destination,
                &b.routing_key,
            ))
        });
        d.bindings.extend(bs);
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::methods::longstr;

    fn declare_x(v: &VHost, name: &str, kind: &str) -> AmqpResult<()> {
        v.declare_exchange(&ExchangeDeclare { name: name.into(), kind: kind.into(), ..Default::default() })
    }

    #[tokio::test]
    async fn e2e_routing_dedupes_and_alternate_exchange_catches_unroutable() {
        let v = VHost::new("/", None);
        declare_x(&v, "src", "fanout").unwrap();
        declare_x(&v, "mid", "direct").unwrap();
        let mut ae_args = FieldTable::default();
        ae_args.insert("alternate-exchange".into(), longstr("ae"));
        v.declare_exchange(&ExchangeDeclare {
            name: "main".into(),
            kind: "direct".into(),
            arguments: ae_args,
            ..Default::default()
        })
        .unwrap();
        declare_x(&v, "ae", "fanout").unwrap();
        for q in ["q1", "q2"] {
            v.declare_queue(&QueueDeclare { name: q.into(), ..Default::default() }, 1).unwrap();
        }
        v.bind_queue("q1", "src", "", &FieldTable::default(), 1).unwrap();
        v.bind_exchange("mid", "src", "", &FieldTable::default()).unwrap();
        v.bind_queue("q1", "mid", "k", &FieldTable::default(), 1).unwrap();
        let names = |qs: Vec<Arc<QueueEntry>>| qs.iter().map(|q| q.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(v.snapshot().route("src", "k", None)), ["q1"], "one copy over two paths");
        v.bind_queue("q2", "ae", "", &FieldTable::default(), 1).unwrap();
        assert_eq!(names(v.snapshot().route("main", "nope", None)), ["q2"]);
        assert_eq!(names(v.snapshot().route("", "q2", None)), ["q2"]);
        assert!(v.snapshot().route("", "missing", None).is_empty());
    }

    #[tokio::test]
    async fn redeclare_equivalence_texts() {
        let v = VHost::new("/", None);
        let mut args = FieldTable::default();
        args.insert("x-message-ttl".into(), AMQPValue::LongInt(1000));
        let d = QueueDeclare { name: "q".into(), arguments: args.clone(), ..Default::default() };
        v.declare_queue(&d, 1).unwrap();
        // Same value in another integer width is equivalent; unknown x- keys are ignored.
        let mut same = FieldTable::default();
        same.insert("x-message-ttl".into(), AMQPValue::LongLongInt(1000));
        same.insert("x-foo".into(), longstr("bar"));
        v.declare_queue(&QueueDeclare { arguments: same, ..d.clone() }, 1).unwrap();
        let e = v.declare_queue(&QueueDeclare { durable: true, ..d.clone() }, 1).unwrap_err();
        assert_eq!(
            e.text,
            "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'q' in vhost '/': received 'true' but current is 'false'"
        );
        let mut changed = FieldTable::default();
        changed.insert("x-message-ttl".into(), AMQPValue::LongInt(2000));
        let e = v.declare_queue(&QueueDeclare { arguments: changed, ..d.clone() }, 1).unwrap_err();
        assert_eq!(
            e.text,
            "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue 'q' in vhost '/': received '2000' but current is '1000'"
        );
        let e = v.declare_queue(&QueueDeclare { arguments: FieldTable::default(), ..d.clone() }, 1).unwrap_err();
        assert_eq!(
            e.text,
            "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue 'q' in vhost '/': received none but current is the value '1000' of type 'signedint'"
        );
        // Every argument Warren acts on is compared, the consumer timeout and deduplication too.
        for (key, first, second) in [
            ("x-consumer-timeout", AMQPValue::LongInt(5000), AMQPValue::LongInt(6000)),
            ("x-message-deduplication", AMQPValue::Boolean(true), AMQPValue::Boolean(false)),
        ] {
            let name = format!("q-{key}");
            let with = |v: AMQPValue| {
                let mut t = FieldTable::default();
                t.insert(key.into(), v);
                QueueDeclare { name: name.clone(), arguments: t, ..Default::default() }
            };
            v.declare_queue(&with(first.clone()), 1).unwrap();
            v.declare_queue(&with(first.clone()), 1).unwrap();
            let e = v.declare_queue(&with(second.clone()), 1).unwrap_err();
            assert_eq!(
                e.text,
                format!(
                    "PRECONDITION_FAILED - inequivalent arg '{key}' for queue '{name}' in vhost '/': received '{}' but current is '{}'",
                    value_display(&second),
                    value_display(&first)
                )
            );
        }
        let e = declare_x(&v, "amq.direct", "fanout").unwrap_err();
        assert_eq!(
            e.text,
            "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'amq.direct' in vhost '/': received 'fanout' but current is 'direct'"
        );
    }

    #[tokio::test]
    async fn auto_delete_exchange_goes_with_its_last_binding() {
        let v = VHost::new("/", None);
        v.declare_exchange(&ExchangeDeclare {
            name: "ad".into(),
            kind: "fanout".into(),
            auto_delete: true,
            ..Default::default()
        })
        .unwrap();
        v.declare_queue(&QueueDeclare { name: "q".into(), ..Default::default() }, 1).unwrap();
        v.bind_queue("q", "ad", "", &FieldTable::default(), 1).unwrap();
        assert!(v.snapshot().exchanges.contains_key("ad"));
        v.unbind_queue("q", "ad", "", &FieldTable::default(), 1).unwrap();
        assert!(!v.snapshot().exchanges.contains_key("ad"));
    }
}
