//! Message storage behind a trait, one store per queue.
//!
//! The queue's [`crate::queue::state::QueueState`] keeps the order (which sequence numbers are
//! ready, which are out for delivery); the store keeps the messages themselves, keyed by the
//! queue's sequence number. [`memory::MemoryStore`] keeps them in RAM (vhosts without storage,
//! unit tests); [`segment::SegmentStore`] writes persistent messages of durable queues to
//! segment files and pages long backlogs out of memory, behind the same calls, without routing
//! or delivery changing. [`persister`] is the broker's one fsync loop (group commit).

pub mod definitions;
pub mod memory;
pub mod persister;
pub mod segment;
pub mod tenancy;

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use crate::message::Message;

/// Where and how a vhost keeps durable data.
#[derive(Debug, Clone)]
pub struct StorageSettings {
    /// The vhost's directory (definitions and queue segments).
    pub dir: PathBuf,
    /// Confirm persistent messages only after fsync (the safe default).
    pub fsync: bool,
    pub segment_size: u64,
    pub persister: persister::Persister,
}

impl StorageSettings {
    /// Where durable queues keep their segments: one directory each, see [`queue_dirs`].
    pub fn queues_root(&self) -> PathBuf {
        self.dir.join("queues")
    }

    /// Where non-durable queues page message bodies out of memory. Nothing there is ever
    /// recovered, so the vhost empties it at start; it never holds a durable queue's data.
    pub fn transient_root(&self) -> PathBuf {
        self.dir.join("transient")
    }

    /// Where leftover directories that a new queue would have reused are moved (never deleted).
    pub fn orphaned_root(&self) -> PathBuf {
        self.dir.join("orphaned")
    }

    /// The directory of the durable queue `name`, created (with its name file) if it has none.
    /// `fresh`: the queue is being declared now, so a directory still holding that name (or a
    /// nameless one from an older Warren at its place) is a leftover: it is moved to
    /// [`Self::orphaned_root`] with a warning, never deleted.
    pub fn durable_queue_dir(&self, name: &str, fresh: bool) -> std::io::Result<PathBuf> {
        self.durable_queue_dir_hashed(name, queue_dirs::hash(name), fresh)
    }

    /// [`Self::durable_queue_dir`] with the hash given (tests force collisions with it).
    fn durable_queue_dir_hashed(&self, name: &str, hash: u64, fresh: bool) -> std::io::Result<PathBuf> {
        let root = self.queues_root();
        match queue_dirs::probe(&root, hash, name)? {
            queue_dirs::Probe::Own(p) if !fresh => Ok(p),
            queue_dirs::Probe::Unnamed(p) if !fresh => {
                // A directory from before directories held their queue's name: this queue's.
                queue_dirs::write_name(&p, name)?;
                tracing::info!(queue = %name, dir = %p.display(), "queue directory from an older Warren adopted");
                Ok(p)
            }
            queue_dirs::Probe::Own(p) | queue_dirs::Probe::Unnamed(p) => {
                let to = queue_dirs::move_aside(&p, &self.orphaned_root())?;
                tracing::warn!(
                    queue = %name, from = %p.display(), to = %to.display(),
                    "a new queue found a leftover directory for its name; kept it aside, not deleted"
                );
                queue_dirs::create(&root, &p, name)?;
                Ok(p)
            }
            queue_dirs::Probe::Free { path, slot } => {
                queue_dirs::create(&root, &path, name)?;
                if slot > 0 {
                    queue_dirs::note_chain(&root, hash, slot)?;
                    tracing::info!(queue = %name, dir = %path.display(), "queue directory name collision; next free name used");
                }
                Ok(path)
            }
        }
    }

    /// The directory the durable queue `name` already has, if any (nothing is created).
    pub fn find_queue_dir(&self, name: &str) -> Option<PathBuf> {
        match queue_dirs::probe(&self.queues_root(), queue_dirs::hash(name), name).ok()? {
            queue_dirs::Probe::Own(p) => Some(p),
            _ => None,
        }
    }

    /// A new, unique directory for a non-durable queue's paging files.
    pub fn transient_queue_dir(&self) -> PathBuf {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.transient_root().join(format!("{}-{n}", std::process::id()))
    }
}

/// Durable queue directories: `queues/<hash>` where `<hash>` is the 64-bit FNV-1a hash of the
/// queue name in hex (names may hold any character and be longer than a file name may). Each
/// holds a `name` file with the exact queue name, written atomically when the directory is
/// made. Two names with the same hash get `<hash>`, `<hash>-1`, `<hash>-2`, ...; when that
/// happens a `<hash>.chain` file records the highest suffix used so far, so that a lookup
/// checks every directory of the chain even after one of them was removed.
pub mod queue_dirs {
    use std::fs;
    use std::io::ErrorKind;
    use std::path::{Path, PathBuf};

    pub const NAME_FILE: &str = "name";

    /// FNV-1a, 64 bits: stable across builds and platforms.
    pub fn hash(queue: &str) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in queue.as_bytes() {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    }

    fn slot_path(root: &Path, hash: u64, slot: usize) -> PathBuf {
        if slot == 0 { root.join(format!("{hash:016x}")) } else { root.join(format!("{hash:016x}-{slot}")) }
    }

    fn chain_path(root: &Path, hash: u64) -> PathBuf {
        root.join(format!("{hash:016x}.chain"))
    }

    /// What a lookup of one queue name found.
    #[derive(Debug, PartialEq, Eq)]
    pub enum Probe {
        /// The directory holding this name.
        Own(PathBuf),
        /// No directory holds this name; the first slot of its hash is one without a name file
        /// (made by an older Warren, which named directories by the hash alone).
        Unnamed(PathBuf),
        /// No directory holds this name; this is the first free one (`slot` 0 = no collision).
        Free { path: PathBuf, slot: usize },
    }

    /// The queue name recorded in a directory (None: no name file; Err: no directory).
    pub fn read_name(dir: &Path) -> std::io::Result<Option<String>> {
        match fs::read(dir.join(NAME_FILE)) {
            Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                if dir.is_dir() {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Find the directory of `name` among the directories of `hash`.
    pub fn probe(root: &Path, hash: u64, name: &str) -> std::io::Result<Probe> {
        let last = match fs::read_to_string(chain_path(root, hash)) {
            Ok(s) => s.trim().parse::<usize>().map_err(|e| {
                std::io::Error::new(ErrorKind::InvalidData, format!("{}: {e}", chain_path(root, hash).display()))
            })?,
            Err(e) if e.kind() == ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        let mut free = None;
        let mut unnamed = None;
        for slot in 0..=last {
            let p = slot_path(root, hash, slot);
            match read_name(&p) {
                Ok(Some(n)) if n == name => return Ok(Probe::Own(p)),
                Ok(Some(_)) => {}
                Ok(None) if slot == 0 => unnamed = Some(p),
                // A nameless directory past the first slot was never made by Warren: skip it.
                Ok(None) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    free.get_or_insert((p, slot));
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(p) = unnamed {
            return Ok(Probe::Unnamed(p));
        }
        let (path, slot) = free.unwrap_or_else(|| (slot_path(root, hash, last + 1), last + 1));
        Ok(Probe::Free { path, slot })
    }

    fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
        super::write_atomically(path, data)
    }

    /// Record `name` in `dir` (atomically).
    pub fn write_name(dir: &Path, name: &str) -> std::io::Result<()> {
        write_atomically(&dir.join(NAME_FILE), name.as_bytes())
    }

    /// Make `dir` (which must not exist) holding `name`: built under a temporary name and
    /// renamed into place, so that a directory at a queue's place always has its name file.
    ///
    /// Nothing is synced here: a queue's directory matters once it holds messages, and the
    /// segment store syncs the name file and the directories above before it confirms the
    /// first one (declaring 100,000 queues must not cost 400,000 fsyncs). A power cut before
    /// that leaves at worst an empty or unnamed directory, which is adopted or reported,
    /// never trusted for data.
    pub fn create(root: &Path, dir: &Path, name: &str) -> std::io::Result<()> {
        fs::create_dir_all(root)?;
        let file = dir.file_name().and_then(|f| f.to_str()).unwrap_or("q");
        let tmp = root.join(format!(".new-{file}"));
        let _ = fs::remove_dir_all(&tmp); // an interrupted creation: only ever a name file
        fs::create_dir(&tmp)?;
        fs::write(tmp.join(NAME_FILE), name.as_bytes())?;
        fs::rename(&tmp, dir)?;
        Ok(())
    }

    /// Remember that the chain of `hash` reaches `slot`.
    pub fn note_chain(root: &Path, hash: u64, slot: usize) -> std::io::Result<()> {
        let path = chain_path(root, hash);
        let last = fs::read_to_string(&path).ok().and_then(|s| s.trim().parse::<usize>().ok()).unwrap_or(0);
        if slot > last { write_atomically(&path, slot.to_string().as_bytes()) } else { Ok(()) }
    }

    /// Move `dir` into `orphaned` under a name not used yet; returns where it went.
    pub fn move_aside(dir: &Path, orphaned: &Path) -> std::io::Result<PathBuf> {
        fs::create_dir_all(orphaned)?;
        let base = dir.file_name().and_then(|f| f.to_str()).unwrap_or("queue").to_string();
        let stamp =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        for n in 0.. {
            let to = orphaned.join(if n == 0 { format!("{base}-{stamp}") } else { format!("{base}-{stamp}-{n}") });
            if !to.exists() {
                fs::rename(dir, &to)?;
                super::sync_dir(orphaned);
                if let Some(parent) = dir.parent() {
                    super::sync_dir(parent);
                }
                return Ok(to);
            }
        }
        unreachable!("some name is free")
    }

    /// Whether `path` (in the queues directory) is a queue directory rather than a chain
    /// record or a creation in progress.
    pub fn is_queue_dir(path: &Path) -> bool {
        path.is_dir() && !path.file_name().and_then(|f| f.to_str()).is_some_and(|f| f.starts_with('.'))
    }
}

/// Replace `path` with `data` atomically and durably: a temporary file, fsync, rename, fsync
/// of the directory. A crash leaves the old contents or the new, never a mix.
pub fn write_atomically(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir);
    }
    Ok(())
}

fn sync_dir(dir: &std::path::Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests;

/// Why a store could not take or give a message.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("sequence number {0} is not after the last stored one")]
    OutOfOrder(u64),
}

pub trait MessageStore: Send + 'static {
    /// Keep `msg` under `seq`; sequence numbers only grow.
    fn append(&mut self, seq: u64, msg: &Arc<Message>) -> Result<(), StoreError>;
    /// The message stored under `seq`, for delivery.
    fn read(&self, seq: u64) -> Option<Arc<Message>>;
    /// Forget the message under `seq` (acknowledged, purged, or dropped).
    fn remove(&mut self, seq: u64);
    /// Messages currently stored.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The message under `seq` was handed to a consumer (so it is redelivered after a restart).
    fn delivered(&mut self, _seq: u64) {}
    /// Whether persistent messages appended here survive a restart once synced.
    fn is_durable(&self) -> bool {
        false
    }
    /// Hand buffered writes to the operating system. Returns the files to fsync before the
    /// messages appended since the last flush may be confirmed (None: nothing to sync): the
    /// segment written to, and the acks files whose delivery marks should go to disk with it.
    fn flush(&mut self) -> Result<Option<Vec<Arc<File>>>, StoreError> {
        Ok(None)
    }
    /// The queue is deleted: remove whatever the store keeps on disk.
    fn destroy(&mut self) {}
    /// Whether the queue has consumers (a store may keep more in memory then).
    fn set_consumed(&mut self, _consumed: bool) {}
    /// Messages kept only on disk (not in memory), and their body bytes.
    fn paged_out(&self) -> (u64, u64) {
        (0, 0)
    }
}

/// The store a queue uses: in memory, or segment files for durable queues.
#[derive(Debug)]
pub enum AnyStore {
    Memory(memory::MemoryStore),
    Segment(Box<segment::SegmentStore>),
}

impl MessageStore for AnyStore {
    fn append(&mut self, seq: u64, msg: &Arc<Message>) -> Result<(), StoreError> {
        match self {
            AnyStore::Memory(s) => s.append(seq, msg),
            AnyStore::Segment(s) => s.append(seq, msg),
        }
    }
    fn read(&self, seq: u64) -> Option<Arc<Message>> {
        match self {
            AnyStore::Memory(s) => s.read(seq),
            AnyStore::Segment(s) => s.read(seq),
        }
    }
    fn remove(&mut self, seq: u64) {
        match self {
            AnyStore::Memory(s) => s.remove(seq),
            AnyStore::Segment(s) => s.remove(seq),
        }
    }
    fn len(&self) -> usize {
        match self {
            AnyStore::Memory(s) => s.len(),
            AnyStore::Segment(s) => s.len(),
        }
    }
    fn delivered(&mut self, seq: u64) {
        if let AnyStore::Segment(s) = self {
            s.delivered(seq)
        }
    }
    fn is_durable(&self) -> bool {
        match self {
            AnyStore::Memory(_) => false,
            AnyStore::Segment(s) => s.is_durable(),
        }
    }
    fn flush(&mut self) -> Result<Option<Vec<Arc<File>>>, StoreError> {
        match self {
            AnyStore::Memory(_) => Ok(None),
            AnyStore::Segment(s) => s.flush(),
        }
    }
    fn destroy(&mut self) {
        if let AnyStore::Segment(s) = self {
            s.destroy()
        }
    }
    fn set_consumed(&mut self, consumed: bool) {
        if let AnyStore::Segment(s) = self {
            s.set_consumed(consumed)
        }
    }
    fn paged_out(&self) -> (u64, u64) {
        match self {
            AnyStore::Memory(_) => (0, 0),
            AnyStore::Segment(s) => s.paged_out(),
        }
    }
}
