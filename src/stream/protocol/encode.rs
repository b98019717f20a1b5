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

#[cfg(test)]
mod tests {
    use super::super::client::Reader;
    use super::super::{ADVERTISED_VERSIONS, code};
    use super::*;

    fn built(f: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
        let mut b = BytesMut::new();
        f(&mut b);
        b.to_vec()
    }

    #[test]
    fn byte_vectors_from_the_spec() {
        // DeclarePublisherResponse: 0x8001, v1, correlation id 7, OK.
        assert_eq!(
            built(|b| simple_response(b, key::DECLARE_PUBLISHER, 7, code::OK)),
            [0, 0, 0, 10, 0x80, 0x01, 0, 1, 0, 0, 0, 7, 0, 1]
        );
        // The server's Tune: key 0x0014 without the response bit, 1 MiB, 60 s.
        assert_eq!(built(|b| tune(b, 1_048_576, 60)), [0, 0, 0, 12, 0, 0x14, 0, 1, 0, 0x10, 0, 0, 0, 0, 0, 60]);
        assert_eq!(built(heartbeat), [0, 0, 0, 4, 0, 0x17, 0, 1]);
        // Credit's error response: no correlation id; code, then subscription id.
        assert_eq!(
            built(|b| credit_response(b, code::SUBSCRIPTION_ID_DOES_NOT_EXIST, 3)),
            [0, 0, 0, 7, 0x80, 0x09, 0, 1, 0, 4, 3]
        );
        // PublishConfirm for ids 1 and 2.
        assert_eq!(
            built(|b| publish_confirm(b, 5, &[1, 2])),
            [0, 0, 0, 25, 0, 3, 0, 1, 5, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2]
        );
        // PublishError: id 9 with 0x12.
        assert_eq!(
            built(|b| publish_error(b, 5, &[(9, code::PUBLISHER_DOES_NOT_EXIST)])),
            [0, 0, 0, 19, 0, 4, 0, 1, 5, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0x12]
        );
        // MetadataUpdate(0x06, "s").
        assert_eq!(
            built(|b| metadata_update(b, code::STREAM_NOT_AVAILABLE, "s")),
            [0, 0, 0, 9, 0, 0x10, 0, 1, 0, 6, 0, 1, b's']
        );
        // A refused Open carries no property count.
        assert_eq!(
            built(|b| open_response(b, 3, code::VIRTUAL_HOST_ACCESS_FAILURE, &[])),
            [0, 0, 0, 10, 0x80, 0x15, 0, 1, 0, 0, 0, 3, 0, 0x0c]
        );
        // ConsumerUpdate to subscription 2, active.
        assert_eq!(built(|b| consumer_update(b, 4, 2, true)), [0, 0, 0, 10, 0, 0x1a, 0, 1, 0, 0, 0, 4, 2, 1]);
    }

    #[test]
    fn responses_with_content_read_back() {
        let w = built(|b| peer_properties_response(b, 1, code::OK, &[("product", "RabbitMQ"), ("version", "3.13.7")]));
        let mut r = Reader(&w);
        assert_eq!(r.header(), (0x8011, 1));
        assert_eq!((r.u32(), r.u16()), (1, code::OK));
        assert_eq!(r.map(), [("product".into(), "RabbitMQ".into()), ("version".into(), "3.13.7".into())]);

        let w = built(|b| sasl_handshake_response(b, 2, code::OK, &["PLAIN", "AMQPLAIN"]));
        let mut r = Reader(&w);
        assert_eq!(r.header(), (0x8012, 1));
        assert_eq!((r.u32(), r.u16(), r.strings()), (2, code::OK, vec!["PLAIN".into(), "AMQPLAIN".into()]));

        let w = built(|b| sasl_authenticate_response(b, 3, code::SASL_CHALLENGE, b"nonce"));
        let mut r = Reader(&w);
        assert_eq!(r.header(), (0x8013, 1));
        assert_eq!((r.u32(), r.u16(), r.string()), (3, code::SASL_CHALLENGE, "nonce".into()));
        assert_eq!(built(|b| sasl_authenticate_response(b, 3, code::OK, b"")).len(), 14);

        let w =
            built(|b| open_response(b, 4, code::OK, &[("advertised_host", "localhost"), ("advertised_port", "5552")]));
        let mut r = Reader(&w);
        assert_eq!(r.header(), (0x8015, 1));
        assert_eq!((r.u32(), r.u16()), (4, code::OK));
        assert_eq!(r.map().len(), 2);

        let w = built(|b| close(b, 1, code::UNKNOWN_FRAME, "unknown frame"));
        let mut r = Reader(&w);
        assert_eq!(r.header(), (0x0016, 1));
        assert_eq!((r.u32(), r.u16(), r.string()), (1, code::UNKNOWN_FRAME, "unknown frame".into()));

        let brokers = [Broker { reference: 0, host: "localhost", port: 5552 }];
        let streams = [
            StreamMetadata { name: "s1", code: code::OK, leader: 0, replicas: &[] },
            StreamMetadata { name: "nope", code: code::STREAM_DOES_NOT_EXIST, leader: NO_LEADER, replicas: &[] },
            StreamMetadata { name: "r", code: code::OK, leader: 0, replicas: &[1, 2] },
        ];
        let w = built(|b| metadata_response(b, 5, &brokers, &streams));
        let mut r = Reader(&w);
        assert_eq!(r.header(), (0x800f, 1));
        assert_eq!(r.u32(), 5);
        assert_eq!(r.u32(), 1);
        assert_eq!((r.u16(), r.string(), r.u32()), (0, "localhost".into(), 5552));
        assert_eq!(r.u32(), 3);
        assert_eq!((r.string(), r.u16(), r.u16(), r.u32()), ("s1".into(), 1, 0, 0));
        assert_eq!((r.string(), r.u16(), r.u16(), r.u32()), ("nope".into(), 2, 0xffff, 0));
        assert_eq!((r.string(), r.u16(), r.u16(), r.u32(), r.u16(), r.u16()), ("r".into(), 1, 0, 2, 1, 2));
        assert!(r.rest().is_empty());

        let w = built(|b| query_publisher_sequence_response(b, 6, code::OK, 42));
        let mut r = Reader(&w);
        assert_eq!(r.header(), (0x8005, 1));
        assert_eq!((r.u32(), r.u16(), r.u64()), (6, code::OK, 42));
        let w = built(|b| query_offset_response(b, 7, code::NO_OFFSET, 0));
        let mut r = Reader(&w);
        assert_eq!(r.header(), (0x800b, 1));
        assert_eq!((r.u32(), r.u16(), r.u64()), (7, code::NO_OFFSET, 0));

        for (k, f) in [(0x8018, route_response as fn(&mut BytesMut, u32, u16, &[&str])), (0x8019, partitions_response)]
        {
            let w = built(|b| f(b, 8, code::OK, &["p-0", "p-1"]));
            let mut r = Reader(&w);
            assert_eq!(r.header(), (k, 1));
            assert_eq!((r.u32(), r.u16(), r.strings()), (8, code::OK, vec!["p-0".into(), "p-1".into()]));
        }

        let w = built(|b| stream_stats_response(b, 9, code::OK, &[("first_chunk_id", 0), ("committed_chunk_id", -1)]));
        let mut r = Reader(&w);
        assert_eq!(r.header(), (0x801c, 1));
        assert_eq!((r.u32(), r.u16(), r.u32()), (9, code::OK, 2));
        assert_eq!((r.string(), r.u64()), ("first_chunk_id".into(), 0));
        assert_eq!((r.string(), r.u64() as i64), ("committed_chunk_id".into(), -1));

        let w = built(|b| exchange_command_versions_response(b, 10, code::OK, ADVERTISED_VERSIONS));
        let mut r = Reader(&w);
        assert_eq!(r.header(), (0x801b, 1));
        assert_eq!((r.u32(), r.u16(), r.u32() as usize), (10, code::OK, ADVERTISED_VERSIONS.len()));
        assert_eq!((r.u16(), r.u16(), r.u16()), (1, 1, 1));
        assert_eq!((r.u16(), r.u16(), r.u16()), (2, 1, 2));

        let w = built(|b| resolve_offset_spec_response(b, 11, code::OK, 99));
        let mut r = Reader(&w);
        assert_eq!(r.header(), (0x801f, 1));
        assert_eq!((r.u32(), r.u16(), r.u16(), r.u64()), (11, code::OK, 4, 99));
    }

    #[test]
    fn deliver_sends_the_chunk_as_it_is() {
        let chunk = Bytes::from_static(b"\x50\x00osiris chunk bytes");
        let [head, body] = deliver(3, None, chunk.clone());
        assert_eq!(&head[..], [0, 0, 0, 5 + chunk.len() as u8, 0, 8, 0, 1, 3]);
        assert_eq!(body.as_ptr(), chunk.as_ptr(), "not copied");
        let [head, _] = deliver(3, Some(7), chunk.clone());
        let mut whole = head.to_vec();
        whole.extend_from_slice(&chunk);
        let mut r = Reader(&whole);
        assert_eq!(r.header(), (0x0008, 2));
        assert_eq!((r.u8(), r.u64()), (3, 7));
        assert_eq!(r.rest(), &chunk[..]);
    }

    #[test]
    fn overlong_strings_are_cut_not_a_panic() {
        let long = "é".repeat(20_000); // 40,000 bytes
        let w = built(|b| metadata_update(b, 6, &long));
        let mut r = Reader(&w);
        r.header();
        r.u16();
        let s = r.string();
        assert!(s.len() <= i16::MAX as usize && long.starts_with(&s));
    }
}
