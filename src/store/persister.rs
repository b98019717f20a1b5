//! The durability loop: one for the whole broker (group commit).
//!
//! Queue tasks write persistent messages to their segment files without waiting, then hand
//! the persister the file to sync and the confirms that depend on it. The persister thread
//! takes everything that has accumulated, fsyncs each distinct file once (fdatasync), and only
//! then releases the confirms. While one round syncs, the next round's requests pile up, so
//! the number of fsyncs per second stays bounded however many messages and queues there are.

use std::fs::File;
use std::sync::Arc;
use std::sync::mpsc;

use tracing::error;

use crate::queue::{ConnEvent, ConnInbox};

/// Confirms for one (connection, channel), released after the sync.
#[derive(Debug)]
pub struct PendingConfirms {
    pub inbox: ConnInbox,
    pub channel: u16,
    pub seqs: Vec<u64>,
}

/// One queue's request: sync `files` (its current segment, and acks files with new delivery
/// marks), then confirm.
#[derive(Debug)]
pub struct SyncRequest {
    pub files: Vec<Arc<File>>,
    pub confirms: Vec<PendingConfirms>,
}

/// Handle to the persister thread.
#[derive(Debug, Clone)]
pub struct Persister {
    tx: mpsc::Sender<SyncRequest>,
}

impl Persister {
    /// Start the persister thread.
    pub fn start() -> Persister {
        let (tx, rx) = mpsc::channel::<SyncRequest>();
        let spawned = std::thread::Builder::new().name("warren-persister".into()).spawn(move || run(rx));
        if let Err(e) = spawned {
            error!(error = %e, "cannot start the persister thread; durable confirms will not be sent");
        }
        Persister { tx }
    }

    /// Queue a sync; the confirms go out once the file is on disk.
    pub fn submit(&self, req: SyncRequest) {
        if let Err(mpsc::SendError(req)) = self.tx.send(req) {
            // No persister: never confirm what is not known to be on disk.
            release(req.confirms, false);
        }
    }
}

fn run(rx: mpsc::Receiver<SyncRequest>) {
    while let Ok(first) = rx.recv() {
        let mut round = vec![first];
        round.extend(rx.try_iter());
        let mut files: Vec<Arc<File>> = Vec::new();
        for file in round.iter().flat_map(|r| &r.files) {
            if !files.iter().any(|f| Arc::ptr_eq(f, file)) {
                files.push(file.clone());
            }
        }
        let mut failed = false;
        for f in &files {
            if let Err(e) = f.sync_data() {
                error!(error = %e, "fdatasync failed: publishers get nacks for the affected messages");
                failed = true;
            }
        }
        for r in round {
            release(r.confirms, !failed);
        }
    }
}

/// Send a sync round's confirms (`ack`) or nacks to their channels.
pub fn release(confirms: Vec<PendingConfirms>, ack: bool) {
    for c in confirms {
        let _ = c.inbox.send(ConnEvent::Confirms { channel: c.channel, seqs: c.seqs, ack });
    }
}
