//! A stream queue's task: the single writer of its [`StreamLog`], behind the same
//! [`QueueHandle`] as every queue (AMQP 0-9-1 publishes, consumes, acks, delete, stats) and a
//! [`StreamHandle`] for the native protocol (publishers with deduplication, offset tracking).
//!
//! Writes are group-committed: every publish taken in one round becomes one chunk (at most
//! [`CHUNK_RECORDS`] records or [`CHUNK_BYTES`] of data), the files are `fdatasync`ed off
//! the task while the next round is appended, and only then are the chunks made visible to
//! readers and the confirms sent. Consumers are their own tasks, cursors over the files
//! ([`super::consumer`]); the queue only hands them credit back when their deliveries are acked.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use super::consumer::{self, Credit, Stop};
use super::handle::{self, Record, StreamCmd, StreamEvent, StreamHandle};
use super::log::{ChunkFilter, EntryData, LogConfig, OffsetSpec, PendingSync, Retention, StreamLog};
use super::protocol::code;
use crate::error::{AmqpError, AmqpResult};
use crate::queue::args::QueueArgs;
use crate::queue::{ConnEvent, ConsumerSpec, MAILBOX_CAPACITY, Publish, QueueCmd, QueueHandle, QueueInfo, QueueStats};
use crate::store::persister::{self, PendingConfirms};

/// Commands taken per round from each mailbox.
const BATCH: usize = 256;
/// A chunk holds at most this many records…
pub const CHUNK_RECORDS: usize = 8192;
/// …or this much data (a Deliver frame is a chunk: with its headers it fits the stream
/// protocol's default frame_max of 1 MiB, unless one record alone is larger).
pub const CHUNK_BYTES: usize = 1024 * 1024 - 4096;
/// How often `x-max-age` is looked at while nothing is written (osiris ≥ 1.4 does the same).
const AGE_CHECK_MAX: Duration = Duration::from_secs(60);

/// The log settings a stream's arguments (with policies applied) ask for.
pub fn log_config(args: &QueueArgs) -> LogConfig {
    let mut c = LogConfig::default();
    if let Some(s) = &args.stream {
        if let Some(n) = s.max_segment_size_bytes {
            c.max_segment_size_bytes = n;
        }
        if let Some(f) = s.filter_size_bytes {
            c.filter_size = f;
        }
        c.retention = retention(args);
    }
    c
}

fn retention(args: &QueueArgs) -> Retention {
    let s = args.stream.as_deref();
    Retention { max_bytes: s.and_then(|s| s.max_length_bytes), max_age: s.and_then(|s| s.max_age) }
}

/// Open the stream's log in `dir` and start its task. `fsync`: confirm only after
/// `fdatasync` (`storage.fsync`, the default); without it chunks are made visible and
/// confirmed once written (RabbitMQ's streams never fsync).
pub fn spawn(
    name: &str,
    vhost: &str,
    args: QueueArgs,
    dir: &Path,
    fsync: bool,
) -> io::Result<(QueueHandle, StreamHandle)> {
    let (log, _report) = StreamLog::open(dir, log_config(&args))?;
    let (tx, rx) = mpsc::channel(MAILBOX_CAPACITY);
    let (ctl, ctl_rx) = mpsc::unbounded_channel();
    let (native_tx, native_rx) = mpsc::channel(handle::MAILBOX_CAPACITY);
    let name_arc: Arc<str> = name.into();
    let queue =
        QueueHandle { name: name_arc.clone(), tx, ctl, admission: Default::default(), activity: Default::default() };
    let deleted = CancellationToken::new();
    let stream = StreamHandle::new(name_arc.clone(), log.reader_source(), native_tx, deleted.clone());
    let now = Instant::now();
    let task = StreamQueue {
        name: name_arc,
        vhost: vhost.to_string(),
        log,
        args,
        me: queue.tx.downgrade(),
        ctl: queue.ctl.clone(),
        admission: queue.admission.clone(),
        activity: queue.activity.clone(),
        consumers: HashMap::new(),
        next_key: 0,
        batch: Vec::new(),
        batch_bytes: 0,
        sources: Vec::new(),
        waiting: Confirms::default(),
        dirty: false,
        syncing: None,
        fsync,
        counters: Default::default(),
        delivered: Arc::new(AtomicU64::new(0)),
        active_at: now,
        deleted,
    };
    tokio::spawn(task.run(rx, ctl_rx, native_rx));
    Ok((queue, stream))
}

/// Confirms owed once the writes before them are on disk.
#[derive(Debug, Default)]
struct Confirms {
    amqp: Vec<PendingConfirms>,
    native: Vec<(handle::ConfirmTo, Vec<u64>)>,
}

impl Confirms {
    fn is_empty(&self) -> bool {
        self.amqp.is_empty() && self.native.is_empty()
    }

    fn amqp(&mut self, c: crate::queue::ConfirmTo) {
        match self.amqp.last_mut() {
            Some(l) if l.channel == c.channel && l.inbox.same_channel(&c.inbox) => l.seqs.push(c.seq),
            _ => self.amqp.push(PendingConfirms { inbox: c.inbox, channel: c.channel, seqs: vec![c.seq] }),
        }
    }

    fn native(&mut self, to: &handle::ConfirmTo, id: u64) {
        match self.native.last_mut() {
            Some((l, ids)) if l.publisher_id == to.publisher_id && l.events.same_channel(&to.events) => ids.push(id),
            _ => self.native.push((to.clone(), vec![id])),
        }
    }

    fn release(self, ok: bool) {
        persister::release(self.amqp, ok);
        for (to, publishing_ids) in self.native {
            let ev = if ok {
                StreamEvent::Confirmed { publisher_id: to.publisher_id, publishing_ids }
            } else {
                StreamEvent::Failed { publisher_id: to.publisher_id, publishing_ids, code: code::INTERNAL_ERROR }
            };
            let _ = to.events.send(ev);
        }
    }
}

/// Who published records of this round: an AMQP 0-9-1 message (its own confirm), or a
/// stream-protocol Publish frame (one per frame, shared by its records).
enum Source {
    Amqp(Option<crate::queue::ConfirmTo>),
    Native { confirm: handle::ConfirmTo, reference: Option<Arc<str>> },
}

/// A record waiting for this round's chunk.
struct Pending {
    data: Bytes,
    /// A stream-protocol sub-batch entry rather than one message.
    sub_batch: Option<handle::SubBatch>,
    filter: Option<Bytes>,
    publishing_id: u64,
    /// Index in `StreamQueue::sources`.
    source: u32,
}

/// One AMQP 0-9-1 consumer: its task's credit and how to stop it.
struct Consumer {
    spec: ConsumerSpec,
    credit: Arc<Credit>,
    stop: oneshot::Sender<Stop>,
}

impl Consumer {
    /// Tell its task to end (it says what it must to the client after its last delivery).
    fn stop(self, why: Stop) {
        let _ = self.stop.send(why);
    }
}

/// The sync in flight: the confirms it releases.
struct Syncing {
    done: oneshot::Receiver<(PendingSync, io::Result<()>)>,
    confirms: Confirms,
}

struct StreamQueue {
    name: Arc<str>,
    vhost: String,
    log: StreamLog,
    args: QueueArgs,
    /// Our mailbox, weakly (consumers get strong handles for their deliveries' acks).
    me: mpsc::WeakSender<QueueCmd>,
    ctl: mpsc::UnboundedSender<QueueCmd>,
    admission: Arc<crate::queue::admission::Admission>,
    activity: Arc<AtomicU64>,
    consumers: HashMap<u32, Consumer>,
    next_key: u32,
    /// This round's records (appended before anything that must see them, and at its end).
    batch: Vec<Pending>,
    batch_bytes: usize,
    /// The publishers of `batch` (the last one may still be adding records).
    sources: Vec<Source>,
    /// Confirms of what was appended since the sync in flight began.
    waiting: Confirms,
    /// Appended or tracked since the last sync began.
    dirty: bool,
    syncing: Option<Syncing>,
    /// `storage.fsync`.
    fsync: bool,
    counters: crate::stats::LocalCounters,
    /// Deliveries made by the consumer tasks.
    delivered: Arc<AtomicU64>,
    active_at: Instant,
    deleted: CancellationToken,
}

impl StreamQueue {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<QueueCmd>,
        mut ctl_rx: mpsc::UnboundedReceiver<QueueCmd>,
        mut native_rx: mpsc::Receiver<StreamCmd>,
    ) {
        let mut ctl_buf = Vec::new();
        let mut age_check = Instant::now() + self.age_check_every();
        loop {
            let syncing = self.syncing.is_some();
            tokio::select! {
                biased;
                r = async { (&mut self.syncing.as_mut().expect("guarded").done).await }, if syncing => {
                    self.synced(r.ok());
                }
                _ = ctl_rx.recv_many(&mut ctl_buf, BATCH) => {
                    for cmd in ctl_buf.drain(..) {
                        self.on_cmd(cmd);
                    }
                }
                cmd = rx.recv() => match cmd {
                    Some(cmd) => {
                        self.on_cmd(cmd);
                        for _ in 1..BATCH {
                            match rx.try_recv() {
                                Ok(cmd) => self.on_cmd(cmd),
                                Err(_) => break,
                            }
                        }
                    }
                    None => break,
                },
                cmd = native_rx.recv() => if let Some(cmd) = cmd {
                    self.on_native(cmd);
                    for _ in 1..BATCH {
                        match native_rx.try_recv() {
                            Ok(cmd) => self.on_native(cmd),
                            Err(_) => break,
                        }
                    }
                },
                _ = tokio::time::sleep_until(age_check) => {
                    age_check = Instant::now() + self.age_check_every();
                    if self.args.stream.as_ref().is_some_and(|s| s.max_age.is_some()) && !self.deleted.is_cancelled() {
                        self.apply_retention();
                    }
                }
            }
            if !self.deleted.is_cancelled() {
                self.append_batch();
                self.maybe_sync();
            }
            self.activity.fetch_add(1, Ordering::Relaxed);
        }
        // Every handle is gone: stop what still runs.
        for (_, c) in self.consumers.drain() {
            c.stop(Stop::Closed);
        }
    }

    fn age_check_every(&self) -> Duration {
        let age = self.args.stream.as_ref().and_then(|s| s.max_age).unwrap_or(AGE_CHECK_MAX);
        (age / 4).clamp(Duration::from_secs(1), AGE_CHECK_MAX)
    }

    fn apply_retention(&mut self) {
        if let Err(e) = self.log.evaluate_retention() {
            warn!(stream = %self.name, vhost = %self.vhost, error = %e, "stream retention failed");
        }
    }

    fn gone(&self) -> AmqpError {
        AmqpError::not_found(format_args!("no queue '{}' in vhost '{}'", self.name, self.vhost))
    }

    fn on_cmd(&mut self, cmd: QueueCmd) {
        self.active_at = Instant::now();
        match cmd {
            QueueCmd::Publish(items) => self.publish_amqp(items),
            QueueCmd::Consume { reply, .. } => {
                // The channel sends `ConsumeStream` for streams; this is a bug, not a client's.
                let _ = reply.send(Err(AmqpError::internal()));
            }
            QueueCmd::ConsumeStream { spec, offset, filter, reply } => {
                let _ = reply.send(self.consume(spec, offset, filter));
            }
            QueueCmd::Cancel { conn_id, channel, tag, reply } => {
                let key = self
                    .consumers
                    .iter()
                    .find(|(_, c)| c.spec.conn_id == conn_id && c.spec.channel == channel && c.spec.tag == tag)
                    .map(|(k, _)| *k);
                match key.and_then(|k| self.consumers.remove(&k)) {
                    Some(c) => c.stop(Stop::Cancel(reply)),
                    None => {
                        if let Some(inbox) = reply {
                            let _ = inbox.send(ConnEvent::CancelOk { channel, consumer_tag: tag });
                        }
                    }
                }
            }
            QueueCmd::Settle { seqs, .. } => self.settle(&seqs),
            QueueCmd::ChannelClosed { conn_id, channel, .. } => {
                let closed = |_: &u32, c: &mut Consumer| c.spec.conn_id == conn_id && c.spec.channel == channel;
                for (_, c) in self.consumers.extract_if(closed) {
                    c.stop(Stop::Closed);
                }
            }
            // Refused by the channel before it asks (RabbitMQ's 540s); nothing to take here.
            QueueCmd::Get { reply, .. } => {
                let _ = reply.send(None);
            }
            QueueCmd::Purge { reply } => {
                let _ = reply.send(0);
            }
            QueueCmd::Stats { reply } => {
                let stats = (!self.deleted.is_cancelled()).then(|| QueueStats { messages: self.count(), consumers: 0 });
                let _ = reply.send(stats);
            }
            QueueCmd::Sync { reply } => {
                self.append_batch();
                let _ = reply.send(());
            }
            QueueCmd::Info { reply } => {
                let _ = reply.send(self.info());
            }
            QueueCmd::SetArgs(args) => {
                self.args = *args;
                if let Err(e) = self.log.set_retention(retention(&self.args)) {
                    warn!(stream = %self.name, vhost = %self.vhost, error = %e, "stream retention failed");
                }
            }
            QueueCmd::Delete { reply, .. } => {
                // Streams are deleted whatever their consumers and messages (if-unused and
                // if-empty are not looked at), and report 0 messages, as RabbitMQ.
                self.delete();
                let _ = reply.send(Ok(0));
            }
            QueueCmd::Resume => {}
        }
    }

    /// Messages in the stream (committed offsets still kept), as declare-ok reports them.
    fn count(&self) -> u32 {
        let c = self.log.committed();
        c.next_offset.saturating_sub(c.first_offset).min(u32::MAX as u64) as u32
    }

    fn info(&self) -> Option<QueueInfo> {
        if self.deleted.is_cancelled() {
            return None;
        }
        let idle = Instant::now().saturating_duration_since(self.active_at);
        let mut counters = self.counters;
        counters.deliver = self.delivered.load(Ordering::Relaxed);
        let bytes = self.log.total_bytes();
        Some(QueueInfo {
            messages_ready: self.count(),
            messages_unacknowledged: 0,
            message_bytes_ready: bytes,
            message_bytes_unacknowledged: 0,
            consumers: self.consumers.values().map(|c| c.spec.clone()).collect(),
            effective: self.args.clone(),
            single_active_consumer_tag: None,
            counters,
            persistent: (self.count() as u64, bytes),
            paged_out: (self.count() as u64, bytes),
            head_message_timestamp: None,
            idle_since: (idle >= crate::queue::IDLE_AFTER).then(|| std::time::SystemTime::now() - idle),
        })
    }

    fn publish_amqp(&mut self, items: Vec<Publish>) {
        for p in items {
            if self.deleted.is_cancelled() {
                if let Some(c) = p.confirm {
                    // Routed before the delete: confirmed as a publish to a deleted queue is.
                    let _ = c.inbox.send(ConnEvent::Confirms { channel: c.channel, seqs: vec![c.seq], ack: true });
                }
                continue;
            }
            self.counters.publish += 1;
            let data = Bytes::from(super::amqp10::convert::from_message(&p.msg));
            let filter =
                super::amqp10::convert::filter_value(p.msg.properties()).map(|v| Bytes::copy_from_slice(v.as_bytes()));
            self.sources.push(Source::Amqp(p.confirm));
            self.push(data, None, filter, 0);
        }
    }

    fn on_native(&mut self, cmd: StreamCmd) {
        self.active_at = Instant::now();
        if self.deleted.is_cancelled() {
            if let StreamCmd::Publish { records, confirm, .. } = cmd {
                let ids = records.iter().map(|r| r.publishing_id).collect();
                let _ = confirm.events.send(StreamEvent::Failed {
                    publisher_id: confirm.publisher_id,
                    publishing_ids: ids,
                    code: code::STREAM_NOT_AVAILABLE,
                });
            }
            return;
        }
        match cmd {
            StreamCmd::Publish { reference, records, confirm } => {
                self.counters.publish += records.len() as u64;
                self.sources.push(Source::Native { confirm, reference });
                for Record { publishing_id, data, filter, sub_batch } in records {
                    self.push(data, sub_batch, filter, publishing_id);
                }
            }
            StreamCmd::StoreOffset { reference, offset } => {
                self.append_batch();
                match self.log.store_offset(&reference, offset) {
                    Ok(_) => self.dirty = true,
                    Err(e) => warn!(stream = %self.name, error = %e, "cannot store a consumer offset"),
                }
            }
            StreamCmd::QueryOffset { reference, reply } => {
                let _ = reply.send(self.log.query_offset(&reference));
            }
            StreamCmd::QueryPublisherSequence { reference, reply } => {
                self.append_batch();
                let _ = reply.send(self.log.last_publishing_id(&reference).unwrap_or(0));
            }
        }
    }

    /// Add a record of the last source to this round's chunk (writing the chunk first when
    /// it is full).
    fn push(&mut self, data: Bytes, sub_batch: Option<handle::SubBatch>, filter: Option<Bytes>, publishing_id: u64) {
        if self.batch.len() >= CHUNK_RECORDS || (self.batch_bytes + data.len() > CHUNK_BYTES && !self.batch.is_empty())
        {
            self.append_batch();
        }
        self.batch_bytes += data.len();
        let source = self.sources.len() as u32 - 1;
        self.batch.push(Pending { data, sub_batch, filter, publishing_id, source });
    }

    /// Write this round's records as one chunk; their confirms wait for the next sync.
    fn append_batch(&mut self) {
        if self.batch.is_empty() {
            // Only called between commands then: no source is still adding records.
            self.sources.clear();
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        let sources = &self.sources;
        let messages: Vec<super::log::Message<'_>> = batch
            .iter()
            .map(|p| super::log::Message {
                entry: match p.sub_batch {
                    None => EntryData::Simple(&p.data),
                    Some(b) => EntryData::SubBatch {
                        compression: b.compression,
                        records: b.records,
                        uncompressed_len: b.uncompressed_len,
                        data: &p.data,
                    },
                },
                filter: p.filter.as_deref(),
                dedup: match &sources[p.source as usize] {
                    Source::Native { reference: Some(r), .. } => Some((&**r, p.publishing_id)),
                    _ => None,
                },
            })
            .collect();
        let written = self.log.append(&messages);
        drop(messages);
        let ok = match written {
            Ok(_) => {
                self.dirty = true;
                true
            }
            Err(e) => {
                error!(stream = %self.name, vhost = %self.vhost, error = %e, "cannot append to the stream; publishes nacked");
                false
            }
        };
        let mut failed = Confirms::default();
        let to = if ok { &mut self.waiting } else { &mut failed };
        for p in &batch {
            match &mut self.sources[p.source as usize] {
                Source::Amqp(c) => {
                    if let Some(c) = c.take() {
                        to.amqp(c);
                    }
                }
                Source::Native { confirm, .. } => to.native(confirm, p.publishing_id),
            }
        }
        // The last source may have more records to come (a frame larger than a chunk).
        let last = self.sources.pop();
        self.sources.clear();
        self.sources.extend(last);
        failed.release(false);
    }

    /// Start a group commit of what was written since the last one (one at a time).
    fn maybe_sync(&mut self) {
        if self.syncing.is_some() || (!self.dirty && self.waiting.is_empty()) {
            return;
        }
        let confirms = std::mem::take(&mut self.waiting);
        self.dirty = false;
        if !self.fsync {
            let ok = match self.log.flush(false) {
                Ok(_) => true,
                Err(e) => {
                    error!(stream = %self.name, vhost = %self.vhost, error = %e, "stream flush failed; publishes nacked");
                    false
                }
            };
            self.release(confirms, ok);
            return;
        }
        let pending = match self.log.prepare_sync() {
            Ok(p) => p,
            Err(e) => {
                error!(stream = %self.name, vhost = %self.vhost, error = %e, "stream sync failed; publishes nacked");
                self.release(confirms, false);
                return;
            }
        };
        let (tx, done) = oneshot::channel();
        tokio::task::spawn_blocking(move || {
            let r = pending.sync();
            let _ = tx.send((pending, r));
        });
        self.syncing = Some(Syncing { done, confirms });
    }

    fn synced(&mut self, r: Option<(PendingSync, io::Result<()>)>) {
        let Some(s) = self.syncing.take() else { return };
        let ok = match r {
            Some((pending, Ok(()))) => {
                self.log.publish(&pending);
                true
            }
            Some((_, Err(e))) => {
                error!(stream = %self.name, vhost = %self.vhost, error = %e, "stream fsync failed; publishes nacked");
                false
            }
            None => false,
        };
        self.release(s.confirms, ok);
        self.maybe_sync();
    }

    /// Send confirms (acks counted for the statistics) or nacks.
    fn release(&mut self, confirms: Confirms, ok: bool) {
        if ok {
            self.counters.confirm += confirms.amqp.iter().map(|c| c.seqs.len() as u64).sum::<u64>();
        }
        confirms.release(ok);
    }

    fn consume(&mut self, spec: ConsumerSpec, offset: OffsetSpec, filter: Option<ChunkFilter>) -> AmqpResult<()> {
        if self.deleted.is_cancelled() {
            return Err(self.gone());
        }
        // The stream's own handle, carried by each delivery for its ack.
        let handle = QueueHandle {
            name: self.name.clone(),
            tx: self.me.upgrade().ok_or_else(|| self.gone())?,
            ctl: self.ctl.clone(),
            admission: self.admission.clone(),
            activity: self.activity.clone(),
        };
        let (dir, committed) = self.log.reader_source();
        let mut reader = super::log::open_reader(&dir, committed, offset).map_err(|e| {
            error!(stream = %self.name, error = %e, "cannot open a stream reader");
            AmqpError::internal()
        })?;
        reader.set_filter(filter);
        // An integer offset past the end still skips every record below it (RabbitMQ).
        let start = match offset {
            OffsetSpec::Offset(n) => n.max(reader.start_offset()),
            _ => reader.start_offset(),
        };
        let key = self.next_key;
        self.next_key = self.next_key.wrapping_add(1) & consumer::MAX_KEY;
        let credit = Arc::new(Credit::new(spec.prefetch as i64));
        let (stop_tx, stop) = oneshot::channel();
        consumer::spawn(consumer::Consumer {
            reader,
            start,
            stream: self.name.clone(),
            spec: spec.clone(),
            key,
            credit: credit.clone(),
            stop,
            queue: handle,
            delivered: self.delivered.clone(),
        });
        debug!(stream = %self.name, tag = %spec.tag, ?offset, "stream consumer attached");
        self.consumers.insert(key, Consumer { spec, credit, stop: stop_tx });
        Ok(())
    }

    /// Acked deliveries give their consumer credit back (nacks and rejects too: a stream
    /// requeues nothing, as RabbitMQ 3.13).
    fn settle(&mut self, seqs: &[u64]) {
        let mut last: Option<(u32, i64)> = None;
        for &seq in seqs {
            let key = consumer::key_of(seq);
            match &mut last {
                Some((k, n)) if *k == key => *n += 1,
                _ => {
                    if let Some((k, n)) = last.take() {
                        self.give_credit(k, n);
                    }
                    last = Some((key, 1));
                }
            }
        }
        if let Some((k, n)) = last {
            self.give_credit(k, n);
        }
        self.counters.ack += seqs.len() as u64;
    }

    fn give_credit(&self, key: u32, n: i64) {
        if let Some(c) = self.consumers.get(&key) {
            c.credit.add(n);
        }
    }

    fn delete(&mut self) {
        if self.deleted.is_cancelled() {
            return;
        }
        self.deleted.cancel();
        for (_, c) in self.consumers.drain() {
            c.stop(Stop::Deleted);
        }
        self.batch.clear();
        self.sources.clear();
        std::mem::take(&mut self.waiting).release(true);
        let dir = self.log.dir().to_path_buf();
        // The queue's directory (the log is in a subdirectory of it).
        let root = dir.parent().map(Path::to_path_buf).unwrap_or(dir);
        if let Err(e) = crate::broker::blocking(|| std::fs::remove_dir_all(&root))
            && e.kind() != io::ErrorKind::NotFound
        {
            warn!(stream = %self.name, dir = %root.display(), error = %e, "cannot remove the deleted stream's files");
        }
        debug!(stream = %self.name, vhost = %self.vhost, "stream deleted");
    }
}
