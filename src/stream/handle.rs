//! A stream as the native stream protocol uses it: the writer's mailbox for publishes and
//! offset tracking, and readers opened straight on the files. The same stream task serves
//! AMQP 0-9-1 through the ordinary [`crate::queue::QueueHandle`]; this handle is its second
//! face (held in the queue's registry entry).

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::log::{self, Committed, OffsetSpec, Reader};

/// Publish commands a stream's native mailbox holds before publishers wait (a command is one
/// Publish frame, up to the 1 MiB frame_max: at most 64 MiB waiting per stream).
pub const MAILBOX_CAPACITY: usize = 64;

/// One entry from a stream-protocol publisher: a message, or a client-side batch of them.
#[derive(Debug, Clone)]
pub struct Record {
    pub publishing_id: u64,
    /// The message as the client encoded it (AMQP 1.0 sections), stored as it is; for a
    /// sub-batch, its (maybe compressed) records.
    pub data: Bytes,
    /// Publish v2's filter value.
    pub filter: Option<Bytes>,
    /// Set when `data` is a sub-batch entry (Publish v1), stored as one entry of that many
    /// records under one publishing id, as osiris does.
    pub sub_batch: Option<SubBatch>,
}

/// A sub-batch entry's header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubBatch {
    /// 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd (the server never decompresses).
    pub compression: u8,
    pub records: u16,
    pub uncompressed_len: u32,
}

/// What a stream tells a native-protocol connection.
#[derive(Debug)]
pub enum StreamEvent {
    /// These publishing ids are on disk (or were duplicates of ones that are).
    Confirmed { publisher_id: u8, publishing_ids: Vec<u64> },
    /// These could not be written (code: the protocol's response code).
    Failed { publisher_id: u8, publishing_ids: Vec<u64>, code: u16 },
}

/// Where a publish's outcome goes.
#[derive(Debug, Clone)]
pub struct ConfirmTo {
    pub events: mpsc::UnboundedSender<StreamEvent>,
    pub publisher_id: u8,
}

/// A stream's counters for `StreamStats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub first_offset: u64,
    pub committed_offset: Option<u64>,
    pub committed_chunk_id: Option<u64>,
}

#[derive(Debug)]
pub enum StreamCmd {
    Publish {
        /// The publisher's reference: messages are deduplicated by (reference, publishing id).
        reference: Option<Arc<str>>,
        records: Vec<Record>,
        confirm: ConfirmTo,
    },
    /// Fire and forget, as the protocol's StoreOffset.
    StoreOffset {
        reference: String,
        offset: u64,
    },
    QueryOffset {
        reference: String,
        reply: oneshot::Sender<Option<u64>>,
    },
    /// The last publishing id stored for a reference (0 when none).
    QueryPublisherSequence {
        reference: String,
        reply: oneshot::Sender<u64>,
    },
}

/// The native face of one stream.
#[derive(Debug, Clone)]
pub struct StreamHandle {
    pub name: Arc<str>,
    dir: PathBuf,
    committed: watch::Receiver<Committed>,
    tx: mpsc::Sender<StreamCmd>,
    /// Cancelled when the stream is deleted (MetadataUpdate to its users).
    pub deleted: CancellationToken,
}

/// The stream was deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

impl StreamHandle {
    pub(super) fn new(
        name: Arc<str>,
        (dir, committed): (PathBuf, watch::Receiver<Committed>),
        tx: mpsc::Sender<StreamCmd>,
        deleted: CancellationToken,
    ) -> StreamHandle {
        StreamHandle { name, dir, committed, tx, deleted }
    }

    /// A cursor over the stream's committed chunks, from `spec`.
    pub fn reader(&self, spec: OffsetSpec) -> io::Result<Reader> {
        log::open_reader(&self.dir, self.committed.clone(), spec)
    }

    pub fn committed(&self) -> Committed {
        *self.committed.borrow()
    }

    /// The committed state as it changes (a reader that caught up waits on it for more).
    pub fn committed_watch(&self) -> watch::Receiver<Committed> {
        self.committed.clone()
    }

    pub fn stats(&self) -> Stats {
        let c = self.committed();
        Stats {
            first_offset: c.first_offset,
            committed_offset: c.next_offset.checked_sub(1).filter(|_| c.chunk_id.is_some()),
            committed_chunk_id: c.chunk_id,
        }
    }

    /// Hand a command to the stream, waiting for room in its mailbox (backpressure).
    pub async fn send(&self, cmd: StreamCmd) -> Result<(), Gone> {
        if self.deleted.is_cancelled() {
            return Err(Gone);
        }
        self.tx.send(cmd).await.map_err(|_| Gone)
    }

    pub async fn query_offset(&self, reference: &str) -> Result<Option<u64>, Gone> {
        let (reply, rx) = oneshot::channel();
        self.send(StreamCmd::QueryOffset { reference: reference.to_string(), reply }).await?;
        rx.await.map_err(|_| Gone)
    }

    pub async fn query_publisher_sequence(&self, reference: &str) -> Result<u64, Gone> {
        let (reply, rx) = oneshot::channel();
        self.send(StreamCmd::QueryPublisherSequence { reference: reference.to_string(), reply }).await?;
        rx.await.map_err(|_| Gone)
    }
}
