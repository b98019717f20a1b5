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
    /// The directory of a durable queue: named by a hash of the queue name (names may hold
    /// any character and be longer than a file name may).
    pub fn queue_dir(&self, queue: &str) -> PathBuf {
        // FNV-1a, 64 bits: stable across builds and platforms.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in queue.as_bytes() {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.dir.join("queues").join(format!("{h:016x}"))
    }
}

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
}
