//! A connection's publishers (DeclarePublisher … DeletePublisher): each is a stream, an optional
//! reference (the writer id that deduplicates its publishing ids across connections and
//! restarts) and the channel its stream answers on.
//!
//! Each publisher has its own channel for the stream's [`StreamEvent`]s, so outcomes of a
//! publisher that was deleted (or replaced under the same id) vanish with it, as RabbitMQ drops
//! confirms whose internal publisher id is no longer current.
//!
//! Flow control is RabbitMQ's connection-level publish credit: past [`UNCONFIRMED_MAX`]
//! messages sent and not yet confirmed the connection stops reading its socket, and reads again
//! once confirms brought the count down to [`UNCONFIRMED_RESUME`].

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::sync::mpsc;

use crate::stream::handle::{ConfirmTo, Record, StreamCmd, StreamEvent, StreamHandle, SubBatch};
use crate::stream::protocol::encode;
use crate::stream::protocol::frame::{PublishEntry, PublishedMessage};

/// Unconfirmed messages past which the connection stops reading (RabbitMQ's initial
/// `credits`, 50,000).
pub const UNCONFIRMED_MAX: usize = 50_000;
/// …and below which it reads again (RabbitMQ unblocks at 12,500 credits back).
pub const UNCONFIRMED_RESUME: usize = UNCONFIRMED_MAX - 12_500;

pub(super) struct Publisher {
    pub stream: StreamHandle,
    pub reference: Option<Arc<str>>,
    /// Messages sent to the stream and not yet confirmed or failed.
    outstanding: usize,
    events: mpsc::UnboundedSender<StreamEvent>,
    outcomes: mpsc::UnboundedReceiver<StreamEvent>,
}

/// Why a DeclarePublisher is refused (all 0x11 in RabbitMQ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Taken {
    Id,
    Reference,
}

#[derive(Default)]
pub(super) struct Publishers {
    by_id: HashMap<u8, Publisher>,
    unconfirmed: usize,
    blocked: bool,
}

impl Publishers {
    /// Whether `id`, or the (stream, reference) pair, is in use on this connection.
    pub fn taken(&self, id: u8, stream: &str, reference: Option<&str>) -> Option<Taken> {
        if self.by_id.contains_key(&id) {
            return Some(Taken::Id);
        }
        let same_ref = |p: &Publisher| p.reference.as_deref() == reference && &*p.stream.name == stream;
        (reference.is_some() && self.by_id.values().any(same_ref)).then_some(Taken::Reference)
    }

    pub fn declare(&mut self, id: u8, stream: StreamHandle, reference: Option<Arc<str>>) {
        let (events, outcomes) = mpsc::unbounded_channel();
        self.by_id.insert(id, Publisher { stream, reference, outstanding: 0, events, outcomes });
    }

    pub fn get(&self, id: u8) -> Option<&Publisher> {
        self.by_id.get(&id)
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Whether any publisher writes to a stream of this name.
    pub fn uses(&self, stream: &str) -> bool {
        self.by_id.values().any(|p| &*p.stream.name == stream)
    }

    pub fn remove(&mut self, id: u8) -> Option<Publisher> {
        let p = self.by_id.remove(&id)?;
        self.settled(p.outstanding);
        Some(p)
    }

    /// Drop the publishers of a deleted stream of this name; whether there were any.
    pub fn remove_deleted(&mut self, stream: &str) -> bool {
        let gone: Vec<u8> = self
            .by_id
            .iter()
            .filter(|(_, p)| &*p.stream.name == stream && p.stream.deleted.is_cancelled())
            .map(|(id, _)| *id)
            .collect();
        for id in &gone {
            self.remove(*id);
        }
        !gone.is_empty()
    }

    /// Whether the connection should stop reading its socket for now.
    pub fn blocked(&mut self) -> bool {
        if self.blocked && self.unconfirmed <= UNCONFIRMED_RESUME {
            self.blocked = false;
        } else if !self.blocked && self.unconfirmed >= UNCONFIRMED_MAX {
            self.blocked = true;
        }
        self.blocked
    }

    fn settled(&mut self, n: usize) {
        self.unconfirmed = self.unconfirmed.saturating_sub(n);
    }

    /// The Publish command for these messages of publisher `id` (counted as unconfirmed until
    /// their outcome comes back). `None` when there is no such publisher or nothing to send.
    /// A sub-batch entry (a client-side batch, compressed or not) is stored as it came, one
    /// entry under one publishing id.
    pub fn prepare(&mut self, id: u8, messages: Vec<PublishedMessage>) -> Option<(StreamHandle, StreamCmd)> {
        let p = self.by_id.get_mut(&id)?;
        let records: Vec<Record> = messages
            .into_iter()
            .map(|m| {
                let filter = m.filter_value.map(|f| f.into_bytes()).filter(|f| !f.is_empty());
                let (data, sub_batch) = match m.entry {
                    PublishEntry::Simple(data) => (data, None),
                    PublishEntry::SubBatch { compression, records, uncompressed_size, data } => {
                        (data, Some(SubBatch { compression, records, uncompressed_len: uncompressed_size }))
                    }
                };
                Record { publishing_id: m.publishing_id, data, filter, sub_batch }
            })
            .collect();
        if records.is_empty() {
            return None;
        }
        p.outstanding += records.len();
        self.unconfirmed += records.len();
        let confirm = ConfirmTo { events: p.events.clone(), publisher_id: id };
        let cmd = StreamCmd::Publish { reference: p.reference.clone(), records, confirm };
        Some((p.stream.clone(), cmd))
    }

    /// The next outcome any publisher's stream reported.
    pub fn poll_outcome(&mut self, cx: &mut Context<'_>) -> Poll<StreamEvent> {
        for p in self.by_id.values_mut() {
            if let Poll::Ready(Some(e)) = p.outcomes.poll_recv(cx) {
                return Poll::Ready(e);
            }
        }
        Poll::Pending
    }

    /// An outcome that is already there, if any.
    pub fn try_outcome(&mut self) -> Option<StreamEvent> {
        self.by_id.values_mut().find_map(|p| p.outcomes.try_recv().ok())
    }

    /// Answer an outcome: PublishConfirm or PublishError frames no larger than the client's
    /// `frame_max`, and the messages are settled.
    pub fn on_outcome(&mut self, e: StreamEvent, out: &mut BytesMut, frame_max: u32) {
        let (id, n) = match &e {
            StreamEvent::Confirmed { publisher_id, publishing_ids } => {
                for ids in publishing_ids.chunks(per_frame(frame_max, 8)) {
                    encode::publish_confirm(out, *publisher_id, ids);
                }
                (*publisher_id, publishing_ids.len())
            }
            StreamEvent::Failed { publisher_id, publishing_ids, code } => {
                for ids in publishing_ids.chunks(per_frame(frame_max, 10)) {
                    let errors: Vec<(u64, u16)> = ids.iter().map(|id| (*id, *code)).collect();
                    encode::publish_error(out, *publisher_id, &errors);
                }
                (*publisher_id, publishing_ids.len())
            }
        };
        if let Some(p) = self.by_id.get_mut(&id) {
            p.outstanding = p.outstanding.saturating_sub(n);
        }
        self.settled(n);
    }

    /// The stream refused a Publish outright (it was deleted meanwhile): settle its messages.
    pub fn unsent(&mut self, id: u8, n: usize) {
        if let Some(p) = self.by_id.get_mut(&id) {
            p.outstanding = p.outstanding.saturating_sub(n);
        }
        self.settled(n);
    }
}

/// How many items of `size` bytes fit in one frame under `frame_max` (0: no limit, 1 MiB
/// frames then) after a PublishConfirm's or PublishError's fixed fields.
fn per_frame(frame_max: u32, size: usize) -> usize {
    let room = if frame_max == 0 { 1 << 20 } else { frame_max as usize };
    (room.saturating_sub(16) / size).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_blocks_and_resumes_with_hysteresis() {
        let mut p = Publishers { unconfirmed: UNCONFIRMED_MAX - 1, ..Default::default() };
        assert!(!p.blocked());
        p.unconfirmed = UNCONFIRMED_MAX;
        assert!(p.blocked());
        p.unconfirmed = UNCONFIRMED_RESUME + 1;
        assert!(p.blocked(), "still blocked until enough confirms came back");
        p.unconfirmed = UNCONFIRMED_RESUME;
        assert!(!p.blocked());
    }

    #[test]
    fn confirms_are_split_to_fit_the_frame_limit() {
        let mut p = Publishers::default();
        let mut out = BytesMut::new();
        let ids: Vec<u64> = (0..1000).collect();
        p.on_outcome(StreamEvent::Confirmed { publisher_id: 1, publishing_ids: ids }, &mut out, 4096);
        let mut frames = 0;
        let mut confirmed = 0;
        while !out.is_empty() {
            let size = u32::from_be_bytes(out[..4].try_into().unwrap()) as usize;
            assert!(size <= 4096, "a frame of {size} bytes");
            confirmed += u32::from_be_bytes(out[9..13].try_into().unwrap());
            let _ = out.split_to(4 + size);
            frames += 1;
        }
        assert_eq!((confirmed, frames), (1000, 2));
    }
}
