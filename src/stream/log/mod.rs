//! The stream log: one append-only log per stream, a directory of segment files with an index
//! per segment. Records are grouped in chunks in the osiris chunk format ([`chunk`]), whose
//! bytes on disk are exactly what a stream-protocol `Deliver` frame sends; Warren's own
//! per-chunk metadata (file position, length, type) lives in the index ([`index`]).
//!
//! ```text
//! DIR/00000000000000000000.segment   WSEG v1 header, then chunks back to back
//! DIR/00000000000000000000.index     WIDX v1 header, then a 40-byte record a chunk
//! DIR/00000000000000012345.segment   the next segment, named by its first chunk id
//! ```
//!
//! * [`StreamLog`] is the single writer (owned by one task): [`StreamLog::append`] writes a
//!   batch as one chunk (page cache only) and returns its offsets; [`StreamLog::flush`] writes
//!   the pending index records, optionally `fdatasync`s segment and index (group commit: one
//!   flush for many appends), and only then publishes the new committed chunk id. The same in
//!   three steps, for a sync on another thread while appends go on:
//!   [`StreamLog::prepare_sync`], [`PendingSync::sync`], [`StreamLog::publish`].
//! * [`Reader`]s see committed chunks only; they share nothing with the writer but the files
//!   and a `watch` of [`Committed`], and hold at most one chunk in memory.
//! * Tracking (writer deduplication, stored consumer offsets) lives in the log as in osiris
//!   ([`tracking`]): trailers of user chunks, delta chunks, and a snapshot chunk at the head of
//!   every segment, so it survives restarts and retention.
//! * Retention ([`segments_to_delete`]) drops whole old segments by size and age.
//! * Recovery (in [`StreamLog::open`], reported in a [`RecoveryReport`]):
//!   - the last segment: the index's valid prefix (record CRCs, contiguous ids and positions)
//!     is trusted down to a record whose chunk verifies (extent, header, data CRC, entry
//!     counts); the rest of the segment is scanned chunk by chunk; the first chunk that is
//!     torn, malformed, out of sequence or fails its CRC *and is not followed by a valid next
//!     chunk* is cut with everything after it (segment and index); a bad chunk followed by a
//!     valid one is kept and reported ([`RecoveryEvent::Damaged`]);
//!   - a last segment left with no chunk (a roll whose first chunk never reached the disk) is
//!     removed when an older segment exists, which becomes the active one again;
//!   - sealed segments are trusted when their index is whole and ends where the segment ends;
//!     otherwise the index is rebuilt from a scan, and bytes that do not scan are reported
//!     ([`RecoveryEvent::Unreadable`]) and left in place: a sealed segment is never cut or
//!     deleted by recovery;
//!   - index files without a segment and leftover temporary files are removed;
//!   - tracking is rebuilt from the active segment (snapshot, deltas, trailers);
//!   - every length read from disk is checked against the file's size before anything is
//!     allocated; any file content gives an error or a report, never a panic (fuzzed:
//!     `fuzz/fuzz_targets/stream_log.rs`).

pub mod bloom;
pub mod chunk;
pub mod crc;
pub mod index;
mod reader;
mod recovery;
mod retention;
pub mod tracking;

#[cfg(test)]
mod tests;

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;

pub use bloom::ChunkFilter;
pub use chunk::{ChunkBuilder, ChunkHeader, ChunkType, EntryData, EntryRef};
pub use index::{Damaged, IndexRecord};
use index::{FILE_HEADER, INDEX_MAGIC, SEGMENT_MAGIC};
pub use reader::{Chunk, ChunkLocation, OffsetSpec, Reader};
pub use recovery::{RecoveryEvent, RecoveryReport};
use recovery::{last_chunk_before, last_user_before, recover_last, recover_sealed, recover_tracking};
pub use retention::{Retention, segments_to_delete};
use tracking::Tracking;

/// Default segment size (RabbitMQ's `x-stream-max-segment-size-bytes` default).
pub const DEFAULT_MAX_SEGMENT_SIZE: u64 = 500_000_000;
/// Largest segment size RabbitMQ accepts.
pub const MAX_SEGMENT_SIZE_LIMIT: u64 = 3_000_000_000;
/// A segment is also rolled at this many chunks (osiris).
pub const DEFAULT_MAX_SEGMENT_CHUNKS: u64 = 256_000;

/// A clock in milliseconds since the Unix epoch (injected for tests).
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64))
}

/// How a log is kept.
#[derive(Clone)]
pub struct LogConfig {
    pub max_segment_size_bytes: u64,
    pub max_segment_chunks: u64,
    pub retention: Retention,
    /// Bloom filter bytes for chunks with filter values (16..=255).
    pub filter_size: u8,
    /// Written in every chunk header.
    pub epoch: u64,
    pub clock: Clock,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            max_segment_size_bytes: DEFAULT_MAX_SEGMENT_SIZE,
            max_segment_chunks: DEFAULT_MAX_SEGMENT_CHUNKS,
            retention: Retention::default(),
            filter_size: 16,
            epoch: 1,
            clock: system_clock(),
        }
    }
}

impl std::fmt::Debug for LogConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogConfig")
            .field("max_segment_size_bytes", &self.max_segment_size_bytes)
            .field("max_segment_chunks", &self.max_segment_chunks)
            .field("retention", &self.retention)
            .field("filter_size", &self.filter_size)
            .field("epoch", &self.epoch)
            .finish()
    }
}

/// What readers may see, published by [`StreamLog::flush`] (and by retention).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Committed {
    /// First offset still in the log (moves with retention).
    pub first_offset: u64,
    /// The offset after the last committed record.
    pub next_offset: u64,
    /// Id of the last committed chunk (any type): Deliver v2's `committedChunkId`.
    pub chunk_id: Option<u64>,
    /// Id of the last committed user chunk: where `last` starts.
    pub last_user_chunk_id: Option<u64>,
}

/// One message to append.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub entry: EntryData<'a>,
    /// Stream filtering value (`x-stream-filter-value`, Publish v2).
    pub filter: Option<&'a [u8]>,
    /// Writer reference and publishing id, for deduplication.
    pub dedup: Option<(&'a str, u64)>,
}

impl<'a> Message<'a> {
    pub fn simple(data: &'a [u8]) -> Message<'a> {
        Message { entry: EntryData::Simple(data), filter: None, dedup: None }
    }
}

/// What became of one message of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stored; the offset of its (first) record.
    Stored(u64),
    /// Its publishing id was not above its writer's last: dropped, to be confirmed anyway
    /// (with this batch's commit: whatever it duplicates was appended before, so it is
    /// committed by then).
    Duplicate,
}

/// What [`StreamLog::append`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The chunk written (None when every message was a duplicate).
    pub chunk_id: Option<u64>,
    /// Offsets `first..next` were given to this batch's records.
    pub first: u64,
    pub next: u64,
    pub outcomes: Vec<Outcome>,
}

/// One segment as the writer knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    pub first_id: u64,
    pub next_offset: u64,
    pub bytes: u64,
    pub chunks: u64,
    pub first_timestamp: Option<i64>,
    pub last_timestamp: Option<i64>,
}

impl SegmentInfo {
    fn empty(first_id: u64) -> SegmentInfo {
        SegmentInfo {
            first_id,
            next_offset: first_id,
            bytes: FILE_HEADER,
            chunks: 0,
            first_timestamp: None,
            last_timestamp: None,
        }
    }

    fn add(&mut self, r: &IndexRecord) {
        self.next_offset = r.next_offset();
        self.bytes = r.end();
        self.chunks += 1;
        self.first_timestamp.get_or_insert(r.timestamp);
        self.last_timestamp = Some(r.timestamp);
    }
}

/// What one group commit must make durable: see [`StreamLog::prepare_sync`].
#[derive(Debug)]
pub struct PendingSync {
    files: Vec<File>,
    dir: Option<PathBuf>,
    state: Committed,
}

impl PendingSync {
    /// `fdatasync` every file written since the last sync, then the directory after a roll.
    pub fn sync(&self) -> io::Result<()> {
        for f in &self.files {
            f.sync_data()?;
        }
        if let Some(d) = &self.dir {
            File::open(d)?.sync_all()?;
        }
        Ok(())
    }

    /// The state that is committed once synced.
    pub fn state(&self) -> Committed {
        self.state
    }
}

struct Active {
    seg: File,
    idx: File,
    idx_len: u64,
    pending_index: Vec<u8>,
}

/// The single writer of one stream's log.
pub struct StreamLog {
    dir: PathBuf,
    config: LogConfig,
    segments: Vec<SegmentInfo>,
    active: Active,
    builder: ChunkBuilder,
    trailer: Vec<u8>,
    tracking: Tracking,
    last_timestamp: i64,
    /// Written (maybe not yet committed) state.
    written: Committed,
    committed: watch::Sender<Committed>,
    unsynced: Vec<(File, File)>,
    dir_dirty: bool,
}

/// A reader over the log in `dir`, from the writer's `committed` watch
/// ([`StreamLog::reader_source`]): readers live in their own tasks and never touch the writer.
pub fn open_reader(dir: &Path, committed: watch::Receiver<Committed>, spec: OffsetSpec) -> io::Result<Reader> {
    Reader::open(dir, committed, spec)
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.segment"))
}

fn index_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.index"))
}

fn parse_name(name: &str, ext: &str) -> Option<u64> {
    let stem = name.strip_suffix(ext)?;
    (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit())).then(|| stem.parse().ok()).flatten()
}

/// First chunk ids of the segments in `dir`, ascending.
pub fn segment_ids(dir: &Path) -> io::Result<Vec<u64>> {
    let mut ids = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        if let Some(id) = e.file_name().to_str().and_then(|n| parse_name(n, ".segment")) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn file_len(f: &File) -> io::Result<u64> {
    Ok(f.metadata()?.len())
}

impl StreamLog {
    /// Open (or create) the log in `dir`, recovering what a crash left.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> io::Result<(StreamLog, RecoveryReport)> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir)?;
        let mut report = RecoveryReport::default();
        let mut ids = segment_ids(&dir)?;
        for e in fs::read_dir(&dir)? {
            let name = e?.file_name();
            let Some(name) = name.to_str() else { continue };
            let orphan = parse_name(name, ".index").is_some_and(|id| ids.binary_search(&id).is_err());
            if orphan || name.ends_with(".index.tmp") {
                let path = dir.join(name);
                fs::remove_file(&path)?;
                report.events.push(RecoveryEvent::Removed { path });
            }
        }
        // The last segment: cut its torn tail; drop it when nothing is left and it is not alone.
        let mut last_records;
        loop {
            let Some(&id) = ids.last() else {
                create_segment(&dir, 0)?;
                ids.push(0);
                last_records = Vec::new();
                break;
            };
            last_records = recover_last(&dir, id, &mut report)?;
            if last_records.is_empty() && ids.len() > 1 {
                for path in [segment_path(&dir, id), index_path(&dir, id)] {
                    fs::remove_file(&path)?;
                    report.events.push(RecoveryEvent::Removed { path });
                }
                ids.pop();
                continue;
            }
            break;
        }
        let mut segments = Vec::with_capacity(ids.len());
        for &id in &ids[..ids.len() - 1] {
            if let Some(info) = recover_sealed(&dir, id, &mut report)? {
                segments.push(info);
            }
        }
        let last_id = *ids.last().expect("at least one segment");
        let mut last = SegmentInfo::empty(last_id);
        last_records.iter().for_each(|r| last.add(r));
        segments.push(last);
        for ev in &report.events {
            match ev {
                // What every crash mid-write leaves (an index behind its segment, an unused
                // file): repaired, nothing lost.
                RecoveryEvent::IndexRebuilt { .. } | RecoveryEvent::Removed { .. } => {
                    tracing::info!(dir = %dir.display(), "stream log recovery: {ev:?}")
                }
                _ => tracing::warn!(dir = %dir.display(), "stream log recovery: {ev:?}"),
            }
        }

        let seg = OpenOptions::new().read(true).write(true).open(segment_path(&dir, last_id))?;
        let idx = OpenOptions::new().read(true).write(true).open(index_path(&dir, last_id))?;
        let idx_len = file_len(&idx)?;
        let tracking = recover_tracking(&seg, &last_records)?;
        let last_user_chunk_id = match last_records.iter().rev().find(|r| r.chunk_type == ChunkType::User) {
            Some(r) => Some(r.chunk_id),
            None => last_user_before(&dir, &segments)?,
        };
        let next_offset = last.next_offset;
        let first_offset = segments.first().map_or(next_offset, |s| s.first_id);
        let chunk_id = last_records.last().map(|r| r.chunk_id).or_else(|| last_chunk_before(&dir, &segments));
        let written = Committed { first_offset, next_offset, chunk_id, last_user_chunk_id };
        let last_timestamp = segments.iter().rev().find_map(|s| s.last_timestamp).unwrap_or(i64::MIN);
        let log = StreamLog {
            builder: ChunkBuilder::new(config.filter_size),
            dir,
            config,
            segments,
            active: Active { seg, idx, idx_len, pending_index: Vec::new() },
            trailer: Vec::new(),
            tracking,
            last_timestamp,
            written,
            committed: watch::Sender::new(written),
            unsynced: Vec::new(),
            // Recovery may have created, renamed or removed files: the first sync covers them.
            dir_dirty: true,
        };
        Ok((log, report))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Segments, oldest first.
    pub fn segments(&self) -> &[SegmentInfo] {
        &self.segments
    }

    /// The committed state readers see.
    pub fn committed(&self) -> Committed {
        *self.committed.borrow()
    }

    /// A receiver of the committed state, to wait for new data.
    pub fn subscribe(&self) -> watch::Receiver<Committed> {
        self.committed.subscribe()
    }

    /// The offset the next record gets.
    pub fn next_offset(&self) -> u64 {
        self.written.next_offset
    }

    pub fn first_offset(&self) -> u64 {
        self.written.first_offset
    }

    /// Bytes of all segment files.
    pub fn total_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// A reader at `spec`, over committed chunks.
    pub fn reader(&self, spec: OffsetSpec) -> io::Result<Reader> {
        Reader::open(&self.dir, self.subscribe(), spec)
    }

    /// The last publishing id stored for a writer reference (QueryPublisherSequence).
    /// What a reader needs to be opened away from the writer (see [`open_reader`]).
    pub fn reader_source(&self) -> (PathBuf, watch::Receiver<Committed>) {
        (self.dir.clone(), self.committed.subscribe())
    }

    pub fn last_publishing_id(&self, writer: &str) -> Option<u64> {
        self.tracking.writers.get(writer).map(|w| w.seq)
    }

    /// The offset stored for a consumer reference (QueryOffset).
    pub fn query_offset(&self, reference: &str) -> Option<u64> {
        self.tracking.offsets.get(reference).copied()
    }

    pub fn tracking(&self) -> &Tracking {
        &self.tracking
    }

    pub fn set_retention(&mut self, retention: Retention) -> io::Result<usize> {
        self.config.retention = retention;
        self.evaluate_retention()
    }

    /// Append a batch as one user chunk. Messages whose publishing id is not above their
    /// writer's last are dropped ([`Outcome::Duplicate`]). Written to the page cache; readers
    /// see it after [`StreamLog::flush`].
    pub fn append(&mut self, batch: &[Message<'_>]) -> io::Result<Appended> {
        self.maybe_roll()?;
        let first = self.written.next_offset;
        self.builder.reset();
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut seen: Vec<(&str, u64)> = Vec::new();
        for m in batch {
            if let Some((w, id)) = m.dedup {
                if w.len() > tracking::MAX_REFERENCE {
                    return Err(io::Error::new(io::ErrorKind::InvalidInput, "writer reference over 255 bytes"));
                }
                let last = match seen.iter().find(|(s, _)| *s == w) {
                    Some((_, l)) => Some(*l),
                    None => self.last_publishing_id(w),
                };
                if last.is_some_and(|l| id <= l) {
                    outcomes.push(Outcome::Duplicate);
                    continue;
                }
                match seen.iter_mut().find(|(s, _)| *s == w) {
                    Some(s) => s.1 = id,
                    None => seen.push((w, id)),
                }
            }
            outcomes.push(Outcome::Stored(first + self.builder.records() as u64));
            self.builder.push(m.entry, m.filter).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        }
        if self.builder.entries() == 0 {
            return Ok(Appended { chunk_id: None, first, next: first, outcomes });
        }
        self.trailer.clear();
        for (w, id) in &seen {
            tracking::encode_sequence(&mut self.trailer, w, first, *id);
        }
        self.write_built(ChunkType::User)?;
        for (w, id) in &seen {
            self.tracking.set_writer(w, first, *id);
        }
        Ok(Appended { chunk_id: Some(first), first, next: self.written.next_offset, outcomes })
    }

    /// Store a consumer's offset (StoreOffset): a tracking delta chunk. Durable and visible
    /// to [`StreamLog::query_offset`] at once; on disk with the next flush.
    pub fn store_offset(&mut self, reference: &str, offset: u64) -> io::Result<u64> {
        if reference.len() > tracking::MAX_REFERENCE {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "reference over 255 bytes"));
        }
        self.maybe_roll()?;
        let mut body = Vec::with_capacity(reference.len() + 10);
        tracking::encode_offset(&mut body, reference, offset);
        let id = self.write_tracking_chunk(ChunkType::TrackingDelta, &body)?;
        self.tracking.offsets.insert(reference.to_owned(), offset);
        Ok(id)
    }

    fn write_tracking_chunk(&mut self, t: ChunkType, body: &[u8]) -> io::Result<u64> {
        self.builder.reset();
        self.builder.push(EntryData::Simple(body), None).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        self.trailer.clear();
        let id = self.written.next_offset;
        self.write_built(t)?;
        Ok(id)
    }

    fn write_built(&mut self, t: ChunkType) -> io::Result<()> {
        let id = self.written.next_offset;
        let now = (self.config.clock)().max(self.last_timestamp);
        let (h, bytes) = self.builder.finish(t, now, self.config.epoch, id, &self.trailer);
        let last = self.segments.last_mut().expect("an active segment");
        let pos = last.bytes;
        if let Err(e) = self.active.seg.write_all_at(bytes, pos) {
            let _ = self.active.seg.set_len(pos);
            return Err(e);
        }
        let r = IndexRecord::of(&h, pos);
        self.active.pending_index.extend_from_slice(&r.encode());
        last.add(&r);
        self.last_timestamp = now;
        self.written.next_offset = h.next_offset();
        self.written.chunk_id = Some(id);
        if t == ChunkType::User {
            self.written.last_user_chunk_id = Some(id);
        }
        Ok(())
    }

    fn maybe_roll(&mut self) -> io::Result<()> {
        let last = self.segments.last().expect("an active segment");
        if last.chunks == 0
            || (last.bytes < self.config.max_segment_size_bytes && last.chunks < self.config.max_segment_chunks)
        {
            return Ok(());
        }
        self.write_pending_index()?;
        let id = self.written.next_offset;
        let (seg, idx) = create_segment(&self.dir, id)?;
        let old =
            std::mem::replace(&mut self.active, Active { seg, idx, idx_len: FILE_HEADER, pending_index: Vec::new() });
        self.unsynced.push((old.seg, old.idx));
        self.dir_dirty = true;
        self.segments.push(SegmentInfo::empty(id));
        if !self.tracking.is_empty() {
            let mut body = Vec::new();
            self.tracking.encode_snapshot(&mut body);
            self.write_tracking_chunk(ChunkType::TrackingSnapshot, &body)?;
        }
        self.evaluate_retention()?;
        Ok(())
    }

    fn write_pending_index(&mut self) -> io::Result<()> {
        if !self.active.pending_index.is_empty() {
            self.active.idx.write_all_at(&self.active.pending_index, self.active.idx_len)?;
            self.active.idx_len += self.active.pending_index.len() as u64;
            self.active.pending_index.clear();
        }
        Ok(())
    }

    /// Make everything appended so far visible to readers; with `sync`, durable first
    /// (`fdatasync` of every segment and index written since the last sync, and of the
    /// directory after a roll). Returns the new committed state. The same as
    /// [`StreamLog::prepare_sync`], [`PendingSync::sync`] (when `sync`), [`StreamLog::publish`].
    pub fn flush(&mut self, sync: bool) -> io::Result<Committed> {
        let pending = self.prepare_sync()?;
        if sync {
            pending.sync()?;
        }
        Ok(self.publish(&pending))
    }

    /// The first half of a group commit: write the pending index records and take what must
    /// be synced for everything appended so far. [`PendingSync::sync`] may then run on any
    /// thread (a blocking pool) while appends go on; [`StreamLog::publish`] afterwards. A
    /// failed sync leaves the log's durability unknown: stop using it (reopen to recover).
    pub fn prepare_sync(&mut self) -> io::Result<PendingSync> {
        self.write_pending_index()?;
        let mut files = Vec::with_capacity(2 + 2 * self.unsynced.len());
        for (s, i) in self.unsynced.drain(..) {
            files.push(s);
            files.push(i);
        }
        files.push(self.active.seg.try_clone()?);
        files.push(self.active.idx.try_clone()?);
        let dir = std::mem::take(&mut self.dir_dirty).then(|| self.dir.clone());
        Ok(PendingSync { files, dir, state: self.written })
    }

    /// Publish what a [`PendingSync`] covered as committed (never moves backwards). Returns
    /// the committed state.
    pub fn publish(&mut self, done: &PendingSync) -> Committed {
        let first_offset = self.written.first_offset;
        self.committed.send_if_modified(|c| {
            let mut new = done.state;
            new.first_offset = first_offset;
            if new.next_offset < c.next_offset {
                new = Committed { first_offset, ..*c };
            }
            let changed = *c != new;
            *c = new;
            changed
        });
        *self.committed.borrow()
    }

    /// Apply retention now (also done at every segment roll); returns the number of segments
    /// deleted. The first offset moves; readers in a deleted segment continue from it.
    pub fn evaluate_retention(&mut self) -> io::Result<usize> {
        let now = (self.config.clock)();
        let committed_next = self.committed.borrow().next_offset;
        let n = segments_to_delete(&self.segments, &self.config.retention, now, committed_next);
        for s in &self.segments[..n] {
            for path in [segment_path(&self.dir, s.first_id), index_path(&self.dir, s.first_id)] {
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        if n > 0 {
            self.segments.drain(..n);
            self.dir_dirty = true;
            let first = self.segments[0].first_id;
            self.written.first_offset = first;
            self.committed.send_modify(|c| c.first_offset = first);
        }
        Ok(n)
    }
}

fn create_segment(dir: &Path, id: u64) -> io::Result<(File, File)> {
    let open = |p: PathBuf| OpenOptions::new().read(true).write(true).create(true).truncate(true).open(p);
    let seg = open(segment_path(dir, id))?;
    seg.write_all_at(SEGMENT_MAGIC, 0)?;
    let idx = open(index_path(dir, id))?;
    idx.write_all_at(INDEX_MAGIC, 0)?;
    Ok((seg, idx))
}
