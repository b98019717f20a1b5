//! Every frame the server sends, written into a [`BytesMut`] (size prefix included).
//!
//! Layouts are PROTOCOL.adoc's, with RabbitMQ's choices where it is silent or differs:
//! a response without extra fields is key|0x8000, version 1, correlation id, code; an Open
//! response with no properties carries no count; a SaslAuthenticate challenge is written as a
//! string (i16 length), as `rabbit_stream_core` writes it; Tune goes out as a request (key
//! 0x0014, no correlation id); a Credit error response has no correlation id.
//!
//! Deliver is split in two so that a chunk read from the log goes out as it is:
//! [`deliver_header`] writes the frame up to the chunk, whose bytes the caller sends after it.

use bytes::{BufMut, Bytes, BytesMut};

use super::frame::OffsetSpec;
use super::{CommandVersion, RESPONSE_FLAG, key};

/// A broker in a Metadata response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Broker<'a> {
    pub reference: u16,
    pub host: &'a str,
    pub port: u32,
}

/// One stream's entry in a Metadata response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamMetadata<'a> {
    pub name: &'a str,
    pub code: u16,
    /// The leader's broker reference; 0xFFFF when the stream has none (RabbitMQ's -1).
    pub leader: u16,
    pub replicas: &'a [u16],
}

/// The leader reference of a stream that does not exist or has no leader.
pub const NO_LEADER: u16 = 0xFFFF;

/// Write one frame: the size prefix, key, version and what `body` writes.
fn frame(buf: &mut BytesMut, key: u16, version: u16, body: impl FnOnce(&mut BytesMut)) {
    let start = buf.len();
    buf.put_u32(0);
    buf.put_u16(key);
    buf.put_u16(version);
    body(buf);
    let size = (buf.len() - start - 4) as u32;
    buf[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

/// A response frame: key|0x8000, version 1, correlation id, code, then what `rest` writes.
fn response(buf: &mut BytesMut, key: u16, correlation_id: u32, code: u16, rest: impl FnOnce(&mut BytesMut)) {
    frame(buf, key | RESPONSE_FLAG, 1, |b| {
        b.put_u32(correlation_id);
        b.put_u16(code);
        rest(b);
    });
}

/// A string: i16 length, then the bytes. Longer than 32,767 bytes cannot be said; such a
/// string is cut at the last character boundary that fits.
fn put_str(buf: &mut BytesMut, s: &str) {
    let mut end = s.len().min(i16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    buf.put_i16(end as i16);
    buf.put_slice(&s.as_bytes()[..end]);
}

fn put_count(buf: &mut BytesMut, n: usize) {
    buf.put_i32(i32::try_from(n).unwrap_or(i32::MAX));
}

fn put_map(buf: &mut BytesMut, map: &[(&str, &str)]) {
    put_count(buf, map.len());
    for (k, v) in map {
        put_str(buf, k);
        put_str(buf, v);
    }
}

fn put_strings(buf: &mut BytesMut, items: &[&str]) {
    put_count(buf, items.len());
    for s in items {
        put_str(buf, s);
    }
}

/// A response carrying only its code (DeclarePublisher, DeletePublisher, Subscribe,
/// Unsubscribe, Create, Delete, Close, CreateSuperStream, DeleteSuperStream; SaslAuthenticate
/// without a challenge). `key` is the request's key.
pub fn simple_response(buf: &mut BytesMut, key: u16, correlation_id: u32, code: u16) {
    response(buf, key, correlation_id, code, |_| {});
}

pub fn peer_properties_response(buf: &mut BytesMut, correlation_id: u32, code: u16, properties: &[(&str, &str)]) {
    response(buf, key::PEER_PROPERTIES, correlation_id, code, |b| put_map(b, properties));
}

pub fn sasl_handshake_response(buf: &mut BytesMut, correlation_id: u32, code: u16, mechanisms: &[&str]) {
    response(buf, key::SASL_HANDSHAKE, correlation_id, code, |b| put_strings(b, mechanisms));
}

/// SaslAuthenticate's response; a non-empty `challenge` follows the code (as a string, the way
/// RabbitMQ writes it, at most 32,767 bytes).
pub fn sasl_authenticate_response(buf: &mut BytesMut, correlation_id: u32, code: u16, challenge: &[u8]) {
    response(buf, key::SASL_AUTHENTICATE, correlation_id, code, |b| {
        if !challenge.is_empty() {
            let challenge = &challenge[..challenge.len().min(i16::MAX as usize)];
            b.put_i16(challenge.len() as i16);
            b.put_slice(challenge);
        }
    });
}

/// The server's Tune (frame_max in bytes, heartbeat in seconds; 0: none).
pub fn tune(buf: &mut BytesMut, frame_max: u32, heartbeat: u32) {
    frame(buf, key::TUNE, 1, |b| {
        b.put_u32(frame_max);
        b.put_u32(heartbeat);
    });
}

/// Open's response; with no properties (a refusal) the map is left out, as RabbitMQ does.
pub fn open_response(buf: &mut BytesMut, correlation_id: u32, code: u16, properties: &[(&str, &str)]) {
    response(buf, key::OPEN, correlation_id, code, |b| {
        if !properties.is_empty() {
            put_map(b, properties);
        }
    });
}

/// A Close request from the server (the client answers with a CloseResponse).
pub fn close(buf: &mut BytesMut, correlation_id: u32, code: u16, reason: &str) {
    frame(buf, key::CLOSE, 1, |b| {
        b.put_u32(correlation_id);
        b.put_u16(code);
        put_str(b, reason);
    });
}

pub fn heartbeat(buf: &mut BytesMut) {
    frame(buf, key::HEARTBEAT, 1, |_| {});
}

/// Metadata's response: brokers, then one entry per stream asked for. It has no response code
/// of its own: each stream entry carries one.
pub fn metadata_response(buf: &mut BytesMut, correlation_id: u32, brokers: &[Broker], streams: &[StreamMetadata]) {
    frame(buf, key::METADATA | RESPONSE_FLAG, 1, |b| {
        b.put_u32(correlation_id);
        put_count(b, brokers.len());
        for broker in brokers {
            b.put_u16(broker.reference);
            put_str(b, broker.host);
            b.put_u32(broker.port);
        }
        put_count(b, streams.len());
        for s in streams {
            put_str(b, s.name);
            b.put_u16(s.code);
            b.put_u16(s.leader);
            put_count(b, s.replicas.len());
            for r in s.replicas {
                b.put_u16(*r);
            }
        }
    });
}

/// Tells the client something changed for a stream it uses (0x06: the stream is gone).
pub fn metadata_update(buf: &mut BytesMut, code: u16, stream: &str) {
    frame(buf, key::METADATA_UPDATE, 1, |b| {
        b.put_u16(code);
        put_str(b, stream);
    });
}

pub fn query_publisher_sequence_response(buf: &mut BytesMut, correlation_id: u32, code: u16, sequence: u64) {
    response(buf, key::QUERY_PUBLISHER_SEQUENCE, correlation_id, code, |b| b.put_u64(sequence));
}

pub fn query_offset_response(buf: &mut BytesMut, correlation_id: u32, code: u16, offset: u64) {
    response(buf, key::QUERY_OFFSET, correlation_id, code, |b| b.put_u64(offset));
}

/// Route's response: the streams the routing key leads to.
pub fn route_response(buf: &mut BytesMut, correlation_id: u32, code: u16, streams: &[&str]) {
    response(buf, key::ROUTE, correlation_id, code, |b| put_strings(b, streams));
}

/// Partitions' response: the super stream's partitions, in order.
pub fn partitions_response(buf: &mut BytesMut, correlation_id: u32, code: u16, streams: &[&str]) {
    response(buf, key::PARTITIONS, correlation_id, code, |b| put_strings(b, streams));
}

pub fn stream_stats_response(buf: &mut BytesMut, correlation_id: u32, code: u16, stats: &[(&str, i64)]) {
    response(buf, key::STREAM_STATS, correlation_id, code, |b| {
        put_count(b, stats.len());
        for (k, v) in stats {
            put_str(b, k);
            b.put_i64(*v);
        }
    });
}

pub fn exchange_command_versions_response(
    buf: &mut BytesMut,
    correlation_id: u32,
    code: u16,
    versions: &[CommandVersion],
) {
    response(buf, key::EXCHANGE_COMMAND_VERSIONS, correlation_id, code, |b| {
        put_count(b, versions.len());
        for v in versions {
            b.put_u16(v.key);
            b.put_u16(v.min);
            b.put_u16(v.max);
        }
    });
}

/// ResolveOffsetSpec's response: always an offset (type 4).
pub fn resolve_offset_spec_response(buf: &mut BytesMut, correlation_id: u32, code: u16, offset: u64) {
    response(buf, key::RESOLVE_OFFSET_SPEC, correlation_id, code, |b| {
        b.put_u16(OffsetSpec::Offset(offset).type_code());
        b.put_u64(offset);
    });
}

pub fn publish_confirm(buf: &mut BytesMut, publisher_id: u8, publishing_ids: &[u64]) {
    frame(buf, key::PUBLISH_CONFIRM, 1, |b| {
        b.put_u8(publisher_id);
        put_count(b, publishing_ids.len());
        for id in publishing_ids {
            b.put_u64(*id);
        }
    });
}

/// PublishError: each publishing id with its code.
pub fn publish_error(buf: &mut BytesMut, publisher_id: u8, errors: &[(u64, u16)]) {
    frame(buf, key::PUBLISH_ERROR, 1, |b| {
        b.put_u8(publisher_id);
        put_count(b, errors.len());
        for (id, code) in errors {
            b.put_u64(*id);
            b.put_u16(*code);
        }
    });
}

/// The Deliver frame up to its chunk, for a chunk of `chunk_len` bytes sent right after it:
/// v1 without a committed chunk id, v2 with one (to clients that said they take Deliver v2).
pub fn deliver_header(buf: &mut BytesMut, subscription_id: u8, committed_chunk_id: Option<u64>, chunk_len: usize) {
    let version = if committed_chunk_id.is_some() { 2 } else { 1 };
    let header = 4 + 1 + if committed_chunk_id.is_some() { 8 } else { 0 };
    buf.put_u32((header + chunk_len) as u32);
    buf.put_u16(key::DELIVER);
    buf.put_u16(version);
    buf.put_u8(subscription_id);
    if let Some(id) = committed_chunk_id {
        buf.put_u64(id);
    }
}

/// A whole Deliver frame as two buffers to write in order: its header, then the chunk as it
/// is (an osiris chunk, header and all, e.g. as read from the log).
pub fn deliver(subscription_id: u8, committed_chunk_id: Option<u64>, chunk: Bytes) -> [Bytes; 2] {
    let mut header = BytesMut::with_capacity(17);
    deliver_header(&mut header, subscription_id, committed_chunk_id, chunk.len());
    [header.freeze(), chunk]
}

/// ConsumerUpdate, server to client: a single-active-consumer subscription became active (or
/// not); the client answers with the offset to start from.
pub fn consumer_update(buf: &mut BytesMut, correlation_id: u32, subscription_id: u8, active: bool) {
    frame(buf, key::CONSUMER_UPDATE, 1, |b| {
        b.put_u32(correlation_id);
        b.put_u8(subscription_id);
        b.put_u8(active as u8);
    });
}

/// Credit's response (0x8009), sent only when the credit could not be applied: no correlation
/// id, the code, then the subscription id.
pub fn credit_response(buf: &mut BytesMut, code: u16, subscription_id: u8) {
    frame(buf, key::CREDIT | RESPONSE_FLAG, 1, |b| {
        b.put_u16(code);
        b.put_u8(subscription_id);
    });
}
