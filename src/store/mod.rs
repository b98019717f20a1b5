//! Message storage behind a trait, one store per queue.
//!
//! The queue's [`crate::queue::state::QueueState`] keeps the order (which sequence numbers are
//! ready, which are out for delivery); the store keeps the messages themselves, keyed by the
//! queue's sequence number. [`memory::MemoryStore`] keeps them in RAM; a disk store appends
//! persistent messages to segment files behind the same four calls, without routing or
//! delivery changing.

pub mod memory;

use std::sync::Arc;

use crate::message::Message;

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
}
