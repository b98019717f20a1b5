//! Durable message store: append-only segment files per queue.
//!
//! Layout of a queue directory: `NNNNNNNNNN.msgs` segments holding message records, each with
//! a sibling `NNNNNNNNNN.acks` listing the sequence numbers settled (and, with the top bit set,
//! delivered) out of that segment. Keeping a segment's acks beside it means a segment whose
//! messages are all settled is deleted together with its acks, in any order.
//!
//! A message record is `[u32 payload length][u32 CRC32C of payload][payload]`, the payload
//! being `u64 seq, u64 enqueued-at (ms since the epoch), u8 len + exchange, u8 len +
//! routing key, u32 len + raw content header, body`. Only persistent messages are written;
//! transient ones live in memory and are gone after a restart, as in RabbitMQ.
//!
//! In memory the store keeps, per message, a 24-byte slot: the message itself while the queue
//! holds less than [`MEMORY_BUDGET`] bytes of them, otherwise only where its record is; bodies
//! beyond the budget are read back (through the page cache) when delivered.
//!
//! Recovery verifies every CRC, cuts a torn tail, skips (and logs) a corrupt record, and never
//! panics on any file content. Writes are buffered and handed to the OS by [`flush`]; the
//! broker-wide persister ([`super::persister`]) fsyncs before confirms are released.
//!
//! [`flush`]: MessageStore::flush

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use bytestring::ByteString;
use tracing::{info, warn};

use super::{MessageStore, StoreError};
use crate::message::{Body, Message};
use crate::protocol::codec::parse_header;
use crate::protocol::routing_key::RoutingKey;

/// A closed segment is compacted when fewer than 1 in this many of its records are still live.
const COMPACT_RATIO: u32 = 4;
/// Compactions are at least this far apart (each scans the queue's index once).
const COMPACT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// Bodies at least this large are written to segment files without being copied first.
const LARGE_BODY: usize = 64 * 1024;
/// Bytes read from a segment at once when a body is read back.
const READ_AHEAD: usize = 256 * 1024;

#[derive(Debug, Default)]
struct ReadAhead {
    seg: u32,
    off: u64,
    /// Shared with the messages decoded from it: a record is a slice, not a copy.
    buf: Bytes,
}

/// Marks the enqueue stamp of a transient message paged out to disk (never recovered).
const PAGED_BIT: u64 = 1 << 63;
/// Marks a delivered (not settled) entry in an acks file.
const DELIVERED_BIT: u64 = 1 << 63;
/// Bytes of framing per message record (length and CRC).
const RECORD_HEADER: usize = 8;

/// A message recovered from disk.
#[derive(Debug)]
pub struct Recovered {
    pub seq: u64,
    /// Milliseconds since the epoch when it was enqueued (for TTLs across restarts).
    pub enqueued_at_ms: u64,
    /// It had been delivered before the restart.
    pub redelivered: bool,
}

#[derive(Debug)]
struct Segment {
    id: u32,
    /// Created on the first write (a queue that never writes has no files).
    file: Option<Arc<File>>,
    /// Bytes written to the file so far (flushed or buffered).
    size: u64,
}

#[derive(Debug, Default)]
struct SegmentInfo {
    /// Persistent messages of this segment not yet settled.
    live: u32,
    /// Message records in the file (settled or not).
    records: u32,
    acks: Option<Arc<File>>,
    /// Ack and delivery marks not yet written to the acks file.
    pending_marks: Vec<u8>,
}

/// Where a message record sits: segment id (0 = not on disk), offset and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Loc {
    seg: u32,
    off: u32,
    len: u32,
}

impl Loc {
    const NONE: Loc = Loc { seg: 0, off: 0, len: 0 };
}

/// One sequence number's message: in memory (and maybe on disk too), or only on disk.
#[derive(Debug)]
enum Slot {
    Gone,
    /// `out`: handed to a consumer and not yet settled (never paged out: it is about to go).
    Mem {
        msg: Arc<Message>,
        loc: Loc,
        out: bool,
    },
    Disk(Loc),
}

/// Bodies of persistent messages beyond this many bytes per queue are kept only on disk and
/// read back (through the page cache) when delivered.
///
/// Large enough that a queue whose consumers keep up never reads from disk; small enough that
/// a backlog of millions costs only its index in RAM.
pub const MEMORY_BUDGET: u64 = 8 * 1024 * 1024;
/// The budget while the queue has consumers: a backlog they are working through is likely to
/// be delivered soon, and writing it out only to read it back would cost more than it saves.
pub const MEMORY_BUDGET_CONSUMED: u64 = 64 * 1024 * 1024;

#[derive(Debug)]
pub struct SegmentStore {
    dir: PathBuf,
    segment_size: u64,
    /// Slot `i` holds sequence number `base + i`.
    base: u64,
    slots: VecDeque<Slot>,
    live: usize,
    /// Bytes of message data held in memory, and how much of it is out with consumers.
    mem_bytes: u64,
    /// In-memory bytes beyond which bodies are kept on disk only.
    budget: u64,
    out_bytes: u64,
    current: Segment,
    /// Records not yet written to `current`.
    buf: Vec<u8>,
    /// Whether messages were appended since the last flush (they need an fsync).
    unsynced: bool,
    segments: BTreeMap<u32, SegmentInfo>,
    /// Persistent messages already marked delivered.
    delivered: HashSet<u64, foldhash::fast::RandomState>,
    /// Segments with marks waiting to be written.
    marked: Vec<u32>,
    /// Open segment files for reading bodies back.
    readers: RefCell<HashMap<u32, File>>,
    /// The last stretch of a segment read from disk.
    readahead: RefCell<ReadAhead>,
    /// Write every message, not only persistent ones (the delayed-message store).
    persist_all: bool,
    /// When the last compaction ran, and how far apart compactions must be.
    last_compaction: Option<std::time::Instant>,
    compact_interval: std::time::Duration,
    /// Whether the queue is durable: its persistent messages are written on arrival and come
    /// back after a restart. A non-durable queue's store only pages bodies out under memory
    /// pressure, and never recovers anything.
    durable: bool,
    /// What the next fsync round must cover besides the current segment.
    sync: SyncState,
}

/// Directory entries and acks files a power cut could still take away.
#[derive(Debug, Default)]
struct SyncState {
    /// The queue directory and its parents have been fsynced since this store was opened (a
    /// directory created by `create_dir_all` is only durable once its parent is synced).
    parents_synced: bool,
    /// Acks files written since the last sync handed out: their delivery marks go to disk with
    /// the next confirm round, so a message delivered before a later confirm comes back with
    /// redelivered=true even after a power cut.
    acks: Vec<Arc<File>>,
}

fn msgs_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:010}.msgs"))
}

fn acks_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:010}.acks"))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Sync `dir` and every directory above it: the entries that make `dir` reachable after a
/// power cut (the data directory's `vhosts/..../queues/<hash>` chain is made by
/// `create_dir_all`, which syncs none of them).
fn sync_dir_and_parents(dir: &Path) {
    for d in dir.ancestors() {
        if !d.as_os_str().is_empty() {
            sync_dir(d);
        }
    }
}

/// What a message held in memory costs: its bytes plus the `Message` itself and its small
/// allocations (routing key, body chunk list, the `Arc`).
fn mem_size(msg: &Message) -> u64 {
    msg.body_size + msg.raw_header.len() as u64 + std::mem::size_of::<Message>() as u64 + 96
}

impl SegmentStore {
    /// Open (or create) the store in `dir`, recovering what it holds. Returns the store and
    /// the recovered messages in sequence order (their bodies stay on disk).
    pub fn open(dir: &Path, segment_size: u64) -> Result<(SegmentStore, Vec<Recovered>), StoreError> {
        Self::open_with(dir, segment_size, true)
    }

    /// A store for a non-durable queue: it uses the disk only to page message bodies out of
    /// memory. `dir` must be new or empty (the vhost gives each such queue a directory of its
    /// own in an area it empties at start): nothing in it is ever removed here, so a wrong
    /// directory is an error rather than lost data.
    pub fn open_transient(dir: &Path, segment_size: u64) -> Result<SegmentStore, StoreError> {
        if fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) {
            return Err(StoreError::Io(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} is not empty; a non-durable queue only pages into a new directory", dir.display()),
            )));
        }
        Ok(Self::open_with(dir, segment_size, false)?.0)
    }

    /// The directory is created with the first segment file, not here (most queues never
    /// write one: 100,000 idle queues cost no directories).
    fn open_with(dir: &Path, segment_size: u64, durable: bool) -> Result<(SegmentStore, Vec<Recovered>), StoreError> {
        let started = std::time::Instant::now();
        let entries = match fs::read_dir(dir) {
            Ok(entries) => Some(entries),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        let mut ids: Vec<u32> = entries
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".msgs")).and_then(|n| n.parse().ok()))
            .filter(|id| *id > 0)
            .collect();
        ids.sort_unstable();
        let mut found: Vec<(Recovered, Loc)> = Vec::new();
        let mut segments = BTreeMap::new();
        let (mut skipped, mut bytes) = (0usize, 0u64);
        for &id in &ids {
            let (acked, delivered) = read_acks(&acks_path(dir, id));
            let path = msgs_path(dir, id);
            let mut data = Vec::new();
            File::open(&path)?.read_to_end(&mut data)?;
            bytes += data.len() as u64;
            let (records, valid_len, bad) = scan_segment(&data);
            skipped += bad;
            if valid_len < data.len() {
                warn!(segment = %path.display(), kept = valid_len, dropped = data.len() - valid_len, "cutting a torn segment tail");
                if let Ok(f) = OpenOptions::new().write(true).open(&path) {
                    let _ = f.set_len(valid_len as u64);
                }
            }
            let mut live = 0;
            let records_total = records.len() as u32;
            for (seq, enqueued_at_ms, off, len) in records {
                if acked.contains(&seq) || enqueued_at_ms & PAGED_BIT != 0 {
                    // Settled, or a transient message paged out before the restart: gone.
                    continue;
                }
                live += 1;
                let redelivered = delivered.contains(&seq);
                found.push((Recovered { seq, enqueued_at_ms, redelivered }, Loc { seg: id, off, len }));
            }
            if live == 0 {
                let _ = fs::remove_file(&path);
                let _ = fs::remove_file(acks_path(dir, id));
            } else {
                segments.insert(id, SegmentInfo { live, records: records_total, ..Default::default() });
            }
        }
        found.sort_by_key(|(r, _)| r.seq);
        found.dedup_by_key(|(r, _)| r.seq);
        let next_id = ids.last().map_or(1, |i| i + 1);
        let current = Segment { id: next_id, file: None, size: 0 };
        let mut store = SegmentStore {
            dir: dir.to_path_buf(),
            segment_size,
            base: found.first().map_or(0, |(r, _)| r.seq),
            slots: VecDeque::with_capacity(found.len()),
            live: 0,
            mem_bytes: 0,
            budget: MEMORY_BUDGET,
            out_bytes: 0,
            current,
            buf: Vec::new(),
            unsynced: false,
            segments,
            // Marks read back stay known, so compacting their segment keeps them.
            delivered: found.iter().filter(|(r, _)| r.redelivered).map(|(r, _)| r.seq).collect(),
            marked: Vec::new(),
            readers: RefCell::new(HashMap::new()),
            readahead: RefCell::new(ReadAhead::default()),
            persist_all: false,
            durable,
            last_compaction: None,
            compact_interval: COMPACT_INTERVAL,
            sync: SyncState::default(),
        };
        let mut recovered = Vec::with_capacity(found.len());
        for (r, loc) in found {
            store.put(r.seq, Slot::Disk(loc))?;
            recovered.push(r);
        }
        if !recovered.is_empty() || skipped > 0 {
            info!(
                dir = %dir.display(),
                messages = recovered.len(),
                mb = format!("{:.1}", bytes as f64 / 1_048_576.0),
                skipped_corrupt = skipped,
                seconds = format!("{:.3}", started.elapsed().as_secs_f64()),
                "queue recovered"
            );
        }
        Ok((store, recovered))
    }

    /// Allow compactions this close together (tests use zero).
    pub fn set_compact_interval(&mut self, d: std::time::Duration) {
        self.compact_interval = d;
    }

    /// Write every appended message, whatever its delivery mode.
    pub fn persist_all(&mut self) {
        self.persist_all = true;
    }

    /// The current segment's file, created on first use.
    fn current_file(&mut self) -> Result<Arc<File>, StoreError> {
        if let Some(f) = &self.current.file {
            return Ok(f.clone());
        }
        fs::create_dir_all(&self.dir)?;
        let file =
            OpenOptions::new().create(true).read(true).append(true).open(msgs_path(&self.dir, self.current.id))?;
        if self.durable {
            // The new file's directory entry (and, the first time, the directories above it)
            // must be durable before anything in it is confirmed.
            if std::mem::replace(&mut self.sync.parents_synced, true) {
                sync_dir(&self.dir);
            } else {
                // The name file was written unsynced when the directory was made.
                if let Ok(f) = File::open(self.dir.join(super::queue_dirs::NAME_FILE)) {
                    let _ = f.sync_all();
                }
                sync_dir_and_parents(&self.dir);
            }
        }
        let file = Arc::new(file);
        self.current.file = Some(file.clone());
        Ok(file)
    }

    fn put(&mut self, seq: u64, slot: Slot) -> Result<(), StoreError> {
        if self.slots.is_empty() {
            self.base = seq;
        }
        let next = self.base + self.slots.len() as u64;
        if seq < next {
            return Err(StoreError::OutOfOrder(seq));
        }
        for _ in next..seq {
            self.slots.push_back(Slot::Gone);
        }
        self.slots.push_back(slot);
        self.live += 1;
        Ok(())
    }

    fn index(&self, seq: u64) -> Option<usize> {
        seq.checked_sub(self.base).map(|i| i as usize).filter(|i| *i < self.slots.len())
    }

    fn loc(&self, seq: u64) -> Loc {
        match self.index(seq).map(|i| &self.slots[i]) {
            Some(Slot::Mem { loc, .. }) | Some(Slot::Disk(loc)) => *loc,
            _ => Loc::NONE,
        }
    }

    /// Start a new segment when the current one is full (the old one is synced first).
    fn roll_if_full(&mut self) -> Result<(), StoreError> {
        if self.current.size < self.segment_size {
            return Ok(());
        }
        self.write_buf()?;
        if self.durable {
            self.current_file()?.sync_data()?;
        }
        let old = self.current.id;
        self.current = Segment { id: old + 1, file: None, size: 0 };
        if self.segments.get(&old).is_none_or(|s| s.live == 0) {
            self.delete_segment(old);
        }
        Ok(())
    }

    fn delete_segment(&mut self, id: u32) {
        self.segments.remove(&id);
        self.readers.borrow_mut().remove(&id);
        let _ = fs::remove_file(msgs_path(&self.dir, id));
        let _ = fs::remove_file(acks_path(&self.dir, id));
    }

    fn write_buf(&mut self) -> Result<(), StoreError> {
        if !self.buf.is_empty() {
            let file = self.current_file()?;
            (&*file).write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Note an ack or delivery mark for a message of segment `id` (written at the next flush;
    /// marks are never fsynced: losing one only means an extra redelivery after a crash).
    fn mark(&mut self, id: u32, value: u64) {
        let Some(info) = self.segments.get_mut(&id) else { return };
        if info.pending_marks.is_empty() {
            self.marked.push(id);
        }
        info.pending_marks.extend_from_slice(&value.to_le_bytes());
    }

    fn write_marks(&mut self) {
        for id in std::mem::take(&mut self.marked) {
            let Some(info) = self.segments.get_mut(&id) else { continue };
            if info.acks.is_none() {
                info.acks = OpenOptions::new().create(true).append(true).open(acks_path(&self.dir, id)).ok().map(|f| {
                    // A power cut can leave a torn last entry: cut it, or every mark appended
                    // after it would be read shifted by a few bytes (garbage).
                    let len = f.metadata().map_or(0, |m| m.len());
                    if len % 8 != 0 {
                        let _ = f.set_len(len - len % 8);
                    }
                    Arc::new(f)
                });
                if self.durable && info.acks.is_some() {
                    // Marks in a file whose name a power cut can take away would be no marks.
                    sync_dir(&self.dir);
                }
            }
            let marks = std::mem::take(&mut info.pending_marks);
            if let Some(f) = info.acks.as_ref() {
                if let Err(e) = (&**f).write_all(&marks) {
                    warn!(segment = id, error = %e, "cannot record acks; those messages may come back after a restart");
                } else if self.durable && !self.sync.acks.iter().any(|a| Arc::ptr_eq(a, f)) {
                    self.sync.acks.push(f.clone());
                }
            }
        }
    }

    /// Keep only the budget's worth of message data in memory: the newest messages already on
    /// disk give up their in-memory copy (the head, delivered next, stays in memory).
    fn evict(&mut self) {
        // Choose the newest in-memory messages until enough is freed...
        let mut victims = Vec::new();
        let mut excess = self.mem_bytes.saturating_sub(self.out_bytes).saturating_sub(self.budget);
        let mut i = self.slots.len();
        while excess > 0 && i > 0 {
            i -= 1;
            if let Slot::Mem { msg, out: false, .. } = &self.slots[i] {
                excess = excess.saturating_sub(mem_size(msg));
                victims.push(i);
            }
        }
        // ...and page them out oldest first, so that records lie on disk in delivery order
        // and reading them back streams through the read-ahead buffer.
        for &i in victims.iter().rev() {
            let Slot::Mem { msg, loc, .. } = &self.slots[i] else { continue };
            let (msg, mut loc) = (msg.clone(), *loc);
            if loc.seg == 0 {
                // Not on disk yet (transient): page it out, marked so that a restart drops it.
                if self.roll_if_full().is_err() {
                    return;
                }
                match self.write_record(self.base + i as u64, now_ms() | PAGED_BIT, &msg) {
                    Ok(l) => loc = l,
                    Err(_) => return,
                }
            }
            self.mem_bytes -= mem_size(&msg);
            self.slots[i] = Slot::Disk(loc);
        }
    }

    /// Append a record to the current segment (through the buffer, or for a large body
    /// straight to the file without copying it); returns where it is.
    fn write_record(&mut self, seq: u64, stamp: u64, msg: &Message) -> Result<Loc, StoreError> {
        let start = self.buf.len();
        if msg.body_size as usize >= LARGE_BODY {
            self.write_buf()?;
            let mut meta = Vec::new();
            encode_meta(&mut meta, seq, stamp, msg);
            let file = self.current_file()?;
            let mut f = &*file;
            f.write_all(&meta)?;
            for chunk in &msg.body {
                f.write_all(chunk)?;
            }
            let len = (meta.len() as u64 + msg.body_size) as u32;
            let loc = Loc { seg: self.current.id, off: self.current.size as u32, len };
            self.current.size += len as u64;
            let info = self.segments.entry(self.current.id).or_default();
            info.live += 1;
            info.records += 1;
            return Ok(loc);
        }
        encode_record(&mut self.buf, seq, stamp, msg);
        let len = (self.buf.len() - start) as u32;
        let loc = Loc { seg: self.current.id, off: self.current.size as u32, len };
        self.current.size += len as u64;
        let info = self.segments.entry(self.current.id).or_default();
        info.live += 1;
        info.records += 1;
        Ok(loc)
    }

    /// Compaction: a closed segment whose messages are mostly settled (a long backlog with a
    /// few old messages held back, e.g. unacked or low priority) is rewritten with only its live
    /// records, so the disk use follows the live data instead of growing without bound. The new
    /// file replaces the old one atomically (write, fsync, rename); its acks file is dropped,
    /// since it only refers to records no longer in the file. One segment per flush at most.
    fn compact_one(&mut self) {
        // A compaction scans the queue's index: at most one per COMPACT_INTERVAL.
        if self.last_compaction.is_some_and(|t| t.elapsed() < self.compact_interval) {
            return;
        }
        let current = self.current.id;
        // The oldest segment is the one consumers are draining: it goes away by itself.
        let oldest = self.segments.keys().next().copied();
        let Some(id) = self
            .segments
            .iter()
            .find(|(id, s)| {
                **id != current
                    && Some(**id) != oldest
                    && s.records >= 4
                    && s.live > 0
                    && s.live * COMPACT_RATIO < s.records
            })
            .map(|(id, _)| *id)
        else {
            return;
        };
        self.last_compaction = Some(std::time::Instant::now());
        if let Err(e) = self.compact(id) {
            warn!(segment = id, error = %e, "segment compaction failed; the segment stays as it is");
            // Do not retry this segment on every flush.
            if let Some(info) = self.segments.get_mut(&id) {
                info.records = info.live;
            }
        }
    }

    fn compact(&mut self, id: u32) -> Result<(), StoreError> {
        use std::os::unix::fs::FileExt;
        let old = File::open(msgs_path(&self.dir, id))?;
        let tmp = self.dir.join(format!("{id:010}.msgs.compact"));
        let mut out = Vec::new();
        let mut moved: Vec<(usize, Loc)> = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            let loc = match slot {
                Slot::Mem { loc, .. } | Slot::Disk(loc) if loc.seg == id => *loc,
                _ => continue,
            };
            let mut rec = vec![0u8; loc.len as usize];
            old.read_exact_at(&mut rec, loc.off as u64)?;
            moved.push((i, Loc { seg: id, off: out.len() as u32, len: loc.len }));
            out.extend_from_slice(&rec);
        }
        let mut f = File::create(&tmp)?;
        f.write_all(&out)?;
        f.sync_data()?;
        fs::rename(&tmp, msgs_path(&self.dir, id))?;
        sync_dir(&self.dir);
        let _ = fs::remove_file(acks_path(&self.dir, id));
        self.readers.borrow_mut().remove(&id);
        // The file under this id changed: whatever was read ahead from it is stale.
        *self.readahead.borrow_mut() = ReadAhead::default();
        for (i, loc) in &moved {
            match &mut self.slots[*i] {
                Slot::Mem { loc: l, .. } | Slot::Disk(l) => *l = *loc,
                Slot::Gone => {}
            }
        }
        let info = self.segments.entry(id).or_default();
        info.records = moved.len() as u32;
        info.live = moved.len() as u32;
        info.acks = None;
        info.pending_marks.clear();
        // Delivered marks of the moved messages went with the old acks file: write them again.
        let seqs: Vec<u64> =
            moved.iter().map(|(i, _)| self.base + *i as u64).filter(|s| self.delivered.contains(s)).collect();
        for seq in seqs {
            self.mark(id, seq | DELIVERED_BIT);
        }
        info!(segment = id, live = moved.len(), bytes = out.len(), "segment compacted");
        Ok(())
    }

    /// Read a message record back from its segment.
    fn load(&self, loc: Loc) -> Option<Arc<Message>> {
        use std::os::unix::fs::FileExt;
        let mut readers = self.readers.borrow_mut();
        let f = match readers.entry(loc.seg) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(File::open(msgs_path(&self.dir, loc.seg)).ok()?),
        };
        let (start, end) = (loc.off as u64, loc.off as u64 + loc.len as u64);
        if loc.len as usize > READ_AHEAD / 2 {
            // A large record: read it into its own buffer, which the body then points into.
            let mut rec = vec![0u8; loc.len as usize];
            f.read_exact_at(&mut rec, start).ok()?;
            let rec = Bytes::from(rec);
            return Self::check_and_decode(&rec, loc);
        }
        let mut ra = self.readahead.borrow_mut();
        if !(ra.seg == loc.seg && ra.off <= start && end <= ra.off + ra.buf.len() as u64) {
            // Read this record and what follows it (usually the next messages to deliver) into
            // a fresh buffer: the messages of the previous one may still be in use.
            let mut buf = vec![0u8; (loc.len as usize).max(READ_AHEAD)];
            let mut got = 0;
            while got < buf.len() {
                match f.read_at(&mut buf[got..], start + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(_) => return None,
                }
            }
            if got < loc.len as usize {
                return None;
            }
            buf.truncate(got);
            *ra = ReadAhead { seg: loc.seg, off: start, buf: Bytes::from(buf) };
        }
        let rec = ra.buf.slice((start - ra.off) as usize..(end - ra.off) as usize);
        Self::check_and_decode(&rec, loc)
    }

    fn check_and_decode(rec: &Bytes, loc: Loc) -> Option<Arc<Message>> {
        let payload = rec.slice(RECORD_HEADER.min(rec.len())..);
        let crc = u32::from_le_bytes(rec.get(4..8)?.try_into().ok()?);
        if crc32c::crc32c(&payload) != crc {
            warn!(segment = loc.seg, offset = loc.off, "message record damaged since recovery");
            return None;
        }
        decode_payload(&payload).map(|(_, m)| m)
    }
}

impl MessageStore for SegmentStore {
    fn append(&mut self, seq: u64, msg: &Arc<Message>) -> Result<(), StoreError> {
        let mut loc = Loc::NONE;
        if self.durable && (self.persist_all || msg.is_persistent()) {
            self.roll_if_full()?;
            loc = self.write_record(seq, now_ms(), msg)?;
            self.unsynced = true;
        }
        self.mem_bytes += mem_size(msg);
        self.put(seq, Slot::Mem { msg: msg.clone(), loc, out: false })
    }

    fn read(&self, seq: u64) -> Option<Arc<Message>> {
        match &self.slots[self.index(seq)?] {
            Slot::Mem { msg, .. } => Some(msg.clone()),
            Slot::Disk(loc) => self.load(*loc),
            Slot::Gone => None,
        }
    }

    fn remove(&mut self, seq: u64) {
        let Some(i) = self.index(seq) else { return };
        let loc = match std::mem::replace(&mut self.slots[i], Slot::Gone) {
            Slot::Gone => return,
            Slot::Mem { msg, loc, out } => {
                self.mem_bytes -= mem_size(&msg);
                if out {
                    self.out_bytes -= mem_size(&msg);
                }
                loc
            }
            Slot::Disk(loc) => loc,
        };
        self.live -= 1;
        while let Some(Slot::Gone) = self.slots.front() {
            self.slots.pop_front();
            self.base += 1;
        }
        self.delivered.remove(&seq);
        if loc.seg == 0 {
            return;
        }
        self.mark(loc.seg, seq);
        let done = self.segments.get_mut(&loc.seg).map(|s| {
            s.live = s.live.saturating_sub(1);
            s.live == 0
        });
        if done == Some(true) && loc.seg != self.current.id {
            self.delete_segment(loc.seg);
        }
    }

    fn len(&self) -> usize {
        self.live
    }

    fn delivered(&mut self, seq: u64) {
        if let Some(i) = self.index(seq)
            && let Slot::Mem { msg, out: out @ false, .. } = &mut self.slots[i]
        {
            *out = true;
            self.out_bytes += mem_size(msg);
        }
        let loc = self.loc(seq);
        if loc.seg != 0 && self.delivered.insert(seq) {
            self.mark(loc.seg, seq | DELIVERED_BIT);
        }
    }

    fn is_durable(&self) -> bool {
        self.durable
    }

    fn set_consumed(&mut self, consumed: bool) {
        self.budget = if consumed { MEMORY_BUDGET_CONSUMED } else { MEMORY_BUDGET };
    }

    /// A walk over the index (for the management API's 5 s samples, not the message path);
    /// bytes are the records' sizes on disk.
    fn paged_out(&self) -> (u64, u64) {
        self.slots.iter().fold((0, 0), |(n, b), s| match s {
            Slot::Disk(loc) => (n + 1, b + loc.len as u64),
            _ => (n, b),
        })
    }

    fn flush(&mut self) -> Result<Option<Vec<Arc<File>>>, StoreError> {
        self.write_buf()?;
        self.write_marks();
        if self.mem_bytes - self.out_bytes > self.budget {
            self.evict();
            self.write_buf()?;
        }
        self.compact_one();
        if !std::mem::take(&mut self.unsynced) {
            // No new message: the acks files wait for the next round that confirms one.
            return Ok(None);
        }
        let mut files = Vec::with_capacity(1 + self.sync.acks.len());
        files.push(self.current_file()?);
        files.append(&mut self.sync.acks);
        Ok(Some(files))
    }

    fn destroy(&mut self) {
        self.buf.clear();
        self.segments.clear();
        self.slots.clear();
        self.readers.borrow_mut().clear();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A record's framing and everything but the body, with the length and CRC of the whole
/// payload (body included) filled in.
fn encode_meta(buf: &mut Vec<u8>, seq: u64, enqueued_at_ms: u64, msg: &Message) {
    buf.extend_from_slice(&[0; RECORD_HEADER]);
    put_fields(buf, seq, enqueued_at_ms, msg);
    let mut crc = crc32c::crc32c(&buf[RECORD_HEADER..]);
    for chunk in &msg.body {
        crc = crc32c::crc32c_append(crc, chunk);
    }
    let len = (buf.len() - RECORD_HEADER) as u32 + msg.body_size as u32;
    buf[0..4].copy_from_slice(&len.to_le_bytes());
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// A record's payload up to the body: sequence number, enqueue stamp, exchange and routing key
/// (short strings), and the raw content header (length-prefixed).
fn put_fields(buf: &mut Vec<u8>, seq: u64, enqueued_at_ms: u64, msg: &Message) {
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&enqueued_at_ms.to_le_bytes());
    for s in [msg.exchange.as_bytes(), msg.routing_key.as_wire()] {
        let b = &s[..s.len().min(255)];
        buf.push(b.len() as u8);
        buf.extend_from_slice(b);
    }
    buf.extend_from_slice(&(msg.raw_header.len() as u32).to_le_bytes());
    buf.extend_from_slice(&msg.raw_header);
}

fn encode_record(buf: &mut Vec<u8>, seq: u64, enqueued_at_ms: u64, msg: &Message) {
    let start = buf.len();
    buf.extend_from_slice(&[0; RECORD_HEADER]);
    put_fields(buf, seq, enqueued_at_ms, msg);
    for chunk in &msg.body {
        buf.extend_from_slice(chunk);
    }
    let payload = &buf[start + RECORD_HEADER..];
    let len = payload.len() as u32;
    let crc = crc32c::crc32c(payload);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A valid record found by a scan: (seq, enqueued-at ms, offset, length).
type Found = (u64, u64, u32, u32);

/// Scan a segment: (seq, enqueued-at, offset, length) of each valid record, the length of the
/// valid prefix (anything after it is a torn tail), and how many corrupt records were skipped.
fn scan_segment(data: &[u8]) -> (Vec<Found>, usize, usize) {
    let mut out = Vec::new();
    let (mut pos, mut bad) = (0usize, 0usize);
    while pos + RECORD_HEADER <= data.len() {
        let len = u32::from_le_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]) as usize;
        let crc = u32::from_le_bytes([data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]]);
        let Some(end) = (pos + RECORD_HEADER).checked_add(len).filter(|e| *e <= data.len()) else {
            break; // torn tail (or a corrupt length: nothing after it can be trusted)
        };
        let payload = &data[pos + RECORD_HEADER..end];
        if payload.len() >= 16
            && crc32c::crc32c(payload) == crc
            && decode_payload(&Bytes::copy_from_slice(payload)).is_some()
        {
            let seq = u64::from_le_bytes(payload[0..8].try_into().unwrap_or([0; 8]));
            let at = u64::from_le_bytes(payload[8..16].try_into().unwrap_or([0; 8]));
            out.push((seq, at, pos as u32, (end - pos) as u32));
        } else {
            bad += 1;
            warn!(offset = pos, "skipping a corrupt message record");
        }
        pos = end;
    }
    (out, pos, bad)
}

/// Decode a record's payload; the header and body are slices of `p` (no copy).
fn decode_payload(p: &Bytes) -> Option<(Recovered, Arc<Message>)> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<std::ops::Range<usize>> {
        let r = at..at.checked_add(n)?;
        p.get(r.clone())?;
        at = r.end;
        Some(r)
    };
    let u64_at = |r: std::ops::Range<usize>| u64::from_le_bytes(p[r].try_into().unwrap_or([0; 8]));
    let seq = u64_at(take(8)?);
    let enqueued_at_ms = u64_at(take(8)?);
    let n = p[take(1)?][0] as usize;
    let exchange = short_str(p.slice(take(n)?));
    let n = p[take(1)?][0] as usize;
    let routing_key = RoutingKey::from_wire(p.slice(take(n)?));
    let n = u32::from_le_bytes(p[take(4)?].try_into().ok()?) as usize;
    let raw = p.slice(take(n)?);
    let body = p.slice(at..);
    let header = parse_header(0, raw).ok()?;
    if header.body_size != body.len() as u64 {
        return None;
    }
    let body = if body.is_empty() { Body::new() } else { Body::from_buf([body]) };
    let msg = Message::new(exchange, routing_key, header, body);
    Some((Recovered { seq, enqueued_at_ms, redelivered: false }, Arc::new(msg)))
}

/// A stored exchange name, sharing the record's buffer (written from valid UTF-8).
fn short_str(b: Bytes) -> ByteString {
    crate::protocol::routing_key::text(b).unwrap_or_else(|b| crate::protocol::routing_key::lossy(&b))
}

/// Read an acks file: settled sequence numbers and delivered ones (a torn last entry is ignored).
fn read_acks(path: &Path) -> (HashSet<u64>, HashSet<u64>) {
    let mut acked = HashSet::new();
    let mut delivered = HashSet::new();
    let mut data = Vec::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_end(&mut data);
    }
    for chunk in data.chunks_exact(8) {
        let v = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        if v & DELIVERED_BIT != 0 {
            delivered.insert(v & !DELIVERED_BIT);
        } else {
            acked.insert(v);
        }
    }
    (acked, delivered)
}

#[cfg(test)]
mod tests;
