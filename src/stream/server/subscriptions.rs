//! A connection's subscriptions (Subscribe … Unsubscribe): each is a [`Reader`] over its
//! stream's files, credit counted in chunks, an optional chunk filter, and for a single active
//! consumer its group and whether it is the active one.
//!
//! Delivery is pull-driven by the connection: [`Subscriptions::next_chunk`] reads one whole
//! chunk for a subscription that has credit, and only when the connection's output has drained
//! (it asks). A subscription that has caught up gets a [`Subscriptions::wait_for_data`]
//! future that completes once a chunk past its position is committed (or the stream closes),
//! and is looked at again then. So a subscriber that does not read costs at most its credit in
//! chunks, and no more than the output watermark plus one chunk in memory.

use std::collections::HashMap;
use std::io;

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::sac::GroupKey;
use crate::stream::handle::StreamHandle;
use crate::stream::log::{ChunkFilter, OffsetSpec, Reader};
use crate::stream::protocol::encode;

/// What a subscription asked for in its properties.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Options {
    pub filter: Option<ChunkFilter>,
    /// `single-active-consumer=true` with its `name`.
    pub single_active: Option<String>,
    /// `super-stream`: the super stream the stream is a partition of.
    pub super_stream: Option<String>,
}

/// Why a subscription's properties are refused (0x11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct NoName;

impl Options {
    /// RabbitMQ's reading of the properties: `filter.*` values (any suffix), `match-unfiltered`
    /// exactly "true", `single-active-consumer` exactly "true" (then `name` is required),
    /// `super-stream`. Others are ignored.
    pub fn parse<'a>(properties: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Options, NoName> {
        let mut o = Options::default();
        let (mut values, mut match_unfiltered, mut sac, mut name) = (Vec::new(), false, false, None);
        for (k, v) in properties {
            match k {
                _ if k.starts_with("filter.") => values.push(v.as_bytes().to_vec()),
                "match-unfiltered" => match_unfiltered = v == "true",
                "single-active-consumer" => sac = v == "true",
                "name" => name = Some(v.to_string()),
                "super-stream" => o.super_stream = Some(v.to_string()),
                _ => {}
            }
        }
        if !values.is_empty() {
            o.filter = Some(ChunkFilter { values, match_unfiltered });
        }
        if sac {
            o.single_active = Some(name.ok_or(NoName)?);
        }
        Ok(o)
    }
}

/// A single-active-consumer subscription's place.
#[derive(Debug, Clone)]
pub(super) struct Sac {
    pub group: GroupKey,
    pub active: bool,
}

pub(super) struct Subscription {
    pub stream: StreamHandle,
    /// Where it asked to start (a newly active consumer without an answer starts here).
    pub offset: OffsetSpec,
    pub filter: Option<ChunkFilter>,
    /// Chunks it may still be sent.
    pub credit: u32,
    /// None while a single active consumer is inactive or waits for its ConsumerUpdate answer.
    pub reader: Option<Reader>,
    pub sac: Option<Sac>,
    /// Distinguishes this subscription from an earlier one under the same id.
    pub generation: u64,
    /// A wait for new data is pending.
    pub waiting: bool,
    /// Cancels `stop_token` when the subscription is dropped: ends its pending waits.
    _stop: DropGuard,
    stop_token: CancellationToken,
}

/// A subscription to add.
pub(super) struct New {
    pub stream: StreamHandle,
    pub offset: OffsetSpec,
    pub credit: u16,
    pub filter: Option<ChunkFilter>,
    pub reader: Option<Reader>,
    pub sac: Option<Sac>,
}

/// What woke the connection up for a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DataReady {
    pub subscription_id: u8,
    pub generation: u64,
    /// The stream's log went away (its stream is deleted or the broker stops).
    pub closed: bool,
}

/// A ConsumerUpdate the server sent and awaits the answer to.
#[derive(Debug, Clone)]
pub(super) struct PendingUpdate {
    pub subscription_id: u8,
    pub generation: u64,
    pub group: GroupKey,
    pub stepping_down: bool,
}

/// The outcome of trying to deliver one chunk.
pub(super) enum Next {
    /// A Deliver frame was written.
    Delivered,
    /// Nothing to do now: no credit, no reader, or already waiting.
    Idle,
    /// Caught up: run this until data arrives.
    Wait(BoxFuture<'static, DataReady>),
    Failed(io::Error),
}

#[derive(Default)]
pub(super) struct Subscriptions {
    by_id: HashMap<u8, Subscription>,
    generations: u64,
    /// ConsumerUpdate requests by correlation id (at most one per subscription).
    pub pending_updates: HashMap<u32, PendingUpdate>,
}

impl Subscriptions {
    pub fn contains(&self, id: u8) -> bool {
        self.by_id.contains_key(&id)
    }

    pub fn get(&self, id: u8) -> Option<&Subscription> {
        self.by_id.get(&id)
    }

    pub fn get_mut(&mut self, id: u8) -> Option<&mut Subscription> {
        self.by_id.get_mut(&id)
    }

    pub fn ids(&self) -> Vec<u8> {
        let mut ids: Vec<u8> = self.by_id.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Whether any subscription reads a stream of this name.
    pub fn uses(&self, stream: &str) -> bool {
        self.by_id.values().any(|s| &*s.stream.name == stream)
    }

    pub fn insert(&mut self, id: u8, new: New) -> u64 {
        self.generations += 1;
        let stop_token = CancellationToken::new();
        let s = Subscription {
            stream: new.stream,
            offset: new.offset,
            filter: new.filter,
            credit: new.credit as u32,
            reader: new.reader,
            sac: new.sac,
            generation: self.generations,
            waiting: false,
            _stop: stop_token.clone().drop_guard(),
            stop_token,
        };
        self.by_id.insert(id, s);
        self.generations
    }

    pub fn remove(&mut self, id: u8) -> Option<Subscription> {
        let s = self.by_id.remove(&id)?;
        self.pending_updates.retain(|_, p| p.subscription_id != id);
        Some(s)
    }

    /// Take out the subscriptions of a deleted stream of this name.
    pub fn remove_deleted(&mut self, stream: &str) -> Vec<(u8, Subscription)> {
        let gone: Vec<u8> = self
            .by_id
            .iter()
            .filter(|(_, s)| &*s.stream.name == stream && s.stream.deleted.is_cancelled())
            .map(|(id, _)| *id)
            .collect();
        gone.into_iter().filter_map(|id| Some((id, self.remove(id)?))).collect()
    }

    pub fn drain(&mut self) -> Vec<(u8, Subscription)> {
        self.pending_updates.clear();
        self.by_id.drain().collect()
    }

    /// Remember a ConsumerUpdate sent (replacing an unanswered one of the same subscription).
    pub fn update_sent(&mut self, correlation_id: u32, pending: PendingUpdate) {
        self.pending_updates.retain(|_, p| p.subscription_id != pending.subscription_id);
        self.pending_updates.insert(correlation_id, pending);
    }

    /// Deliver the next chunk of subscription `id` (if it has credit and a reader) into `out`.
    pub fn next_chunk(&mut self, id: u8, out: &mut Output, deliver_v2: bool) -> Next {
        let Some(s) = self.by_id.get_mut(&id) else { return Next::Idle };
        if s.credit == 0 || s.waiting || s.stream.deleted.is_cancelled() {
            return Next::Idle;
        }
        let Some(reader) = s.reader.as_mut() else { return Next::Idle };
        match crate::broker::blocking(|| reader.read_chunk()) {
            Ok(Some(chunk)) => {
                let (header, data) = chunk.deliver_parts();
                let committed = deliver_v2.then(|| reader.committed().chunk_id.unwrap_or(chunk.header.chunk_id));
                encode::deliver_header(out.buf(), id, committed, header.len() + data.len());
                out.push(header);
                out.push(data);
                s.credit -= 1;
                Next::Delivered
            }
            Ok(None) => {
                s.waiting = true;
                let next = reader.next_offset();
                let mut committed = s.stream.committed_watch();
                let stop = s.stop_token.clone();
                let generation = s.generation;
                Next::Wait(Box::pin(async move {
                    tokio::select! {
                        r = committed.wait_for(|c| c.chunk_id.is_some_and(|c| c >= next)) => {
                            DataReady { subscription_id: id, generation, closed: r.is_err() }
                        }
                        // Gone: the generation no longer matches.
                        _ = stop.cancelled() => DataReady { subscription_id: id, generation: 0, closed: true },
                    }
                }))
            }
            Err(e) => Next::Failed(e),
        }
    }

    /// Data may have arrived for a waiting subscription: whether it is still the one that
    /// waited (then it may be read again).
    pub fn data_ready(&mut self, r: DataReady) -> bool {
        match self.by_id.get_mut(&r.subscription_id) {
            Some(s) if s.generation == r.generation => {
                s.waiting = false;
                if r.closed {
                    // The log is gone: nothing more will come (its deletion is handled apart).
                    s.reader = None;
                }
                !r.closed
            }
            _ => false,
        }
    }
}

/// A connection's output of one turn: small frames built in a buffer, chunk bytes kept as the
/// `Bytes` they were read into.
#[derive(Default)]
pub(super) struct Output {
    buf: BytesMut,
    segments: Vec<Bytes>,
    segment_bytes: usize,
}

impl Output {
    /// Where to write the next frame.
    pub fn buf(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Append bytes after everything written so far, without copying them.
    pub fn push(&mut self, b: Bytes) {
        self.seal();
        self.segment_bytes += b.len();
        self.segments.push(b);
    }

    fn seal(&mut self) {
        if !self.buf.is_empty() {
            let b = self.buf.split().freeze();
            self.segment_bytes += b.len();
            self.segments.push(b);
        }
    }

    pub fn len(&self) -> usize {
        self.segment_bytes + self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Everything written, in order.
    pub fn take(&mut self) -> Vec<Bytes> {
        self.seal();
        self.segment_bytes = 0;
        std::mem::take(&mut self.segments)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(kv: &[(&str, &str)]) -> Result<Options, NoName> {
        Options::parse(kv.iter().copied())
    }

    #[test]
    fn properties_as_rabbitmq_reads_them() {
        assert_eq!(parse(&[]).unwrap(), Options::default());
        let o = parse(&[("filter.0", "eu"), ("filter.x", "us"), ("match-unfiltered", "true")]).unwrap();
        assert_eq!(
            o.filter,
            Some(ChunkFilter { values: vec![b"eu".to_vec(), b"us".to_vec()], match_unfiltered: true })
        );
        let o = parse(&[("filter.0", "eu"), ("match-unfiltered", "TRUE")]).unwrap();
        assert!(!o.filter.unwrap().match_unfiltered, "only \"true\" counts");
        assert_eq!(parse(&[("match-unfiltered", "true")]).unwrap().filter, None, "no values: no filter");
        let o = parse(&[("single-active-consumer", "true"), ("name", "app"), ("super-stream", "inv")]).unwrap();
        assert_eq!((o.single_active.as_deref(), o.super_stream.as_deref()), (Some("app"), Some("inv")));
        assert_eq!(parse(&[("single-active-consumer", "true")]), Err(NoName));
        assert_eq!(parse(&[("single-active-consumer", "false")]).unwrap().single_active, None);
    }

    #[test]
    fn output_keeps_order_without_copying_chunks() {
        let mut o = Output::default();
        o.buf().extend_from_slice(b"ab");
        let chunk = Bytes::from_static(b"chunk");
        o.push(chunk.clone());
        o.buf().extend_from_slice(b"cd");
        assert_eq!(o.len(), 9);
        let parts = o.take();
        assert_eq!(parts.iter().map(|b| &b[..]).collect::<Vec<_>>(), [&b"ab"[..], b"chunk", b"cd"]);
        assert_eq!(parts[1].as_ptr(), chunk.as_ptr());
        assert!(o.is_empty());
    }
}
