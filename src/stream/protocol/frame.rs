//! The frames a client sends, typed, and their parser (nom, over one whole frame).
//!
//! [`parse`] takes one frame as [`codec`](super::codec) split it off (key, version, body; the
//! size prefix already gone) and returns a [`ClientFrame`] or a [`FrameError`]. It accepts the
//! versions the server advertises ([`super::ADVERTISED_VERSIONS`]) plus v1 of the handshake
//! commands, and nothing else: any other key or version is [`FrameError::Unknown`].
//!
//! Strings and message bodies are zero-copy slices of the frame's buffer. No byte sequence makes
//! it panic, and nothing is allocated on the strength of a length or count the frame cannot back:
//! each is checked against the bytes that remain first, and maps and arrays hold at most
//! [`MAX_ITEMS`] entries. Bytes left over after a command's fields make it malformed.

use bytes::Bytes;
use bytestring::ByteString;
use nom::bytes::complete::take;
use nom::error::{ErrorKind, ParseError};
use nom::number::complete::{be_i16, be_i32, be_i64, be_u8, be_u16, be_u32, be_u64};
use nom::{IResult, Parser};

use super::{RESPONSE_FLAG, code, key};

/// Most entries a map or an array in one frame may have (Metadata's streams, a super stream's
/// partitions, a subscription's properties): far above what clients send, and it caps what a
/// frame of [`super::DEFAULT_FRAME_MAX`] can make the broker allocate.
pub const MAX_ITEMS: usize = 16_384;

/// Key-value strings (PeerProperties, Create's arguments, Subscribe's properties, …), in the
/// order received.
pub type Properties = Vec<(ByteString, ByteString)>;

/// Where a subscription starts (Subscribe, ResolveOffsetSpec; ConsumerUpdate's answer): the
/// log's own offset spec, whose wire types are 1 first, 2 last, 3 next, 4 offset, 5 timestamp
/// (ms since the epoch).
pub use crate::stream::log::OffsetSpec;

impl OffsetSpec {
    /// The offset type on the wire.
    pub fn type_code(&self) -> u16 {
        match self {
            OffsetSpec::First => 1,
            OffsetSpec::Last => 2,
            OffsetSpec::Next => 3,
            OffsetSpec::Offset(_) => 4,
            OffsetSpec::Timestamp(_) => 5,
        }
    }
}

/// One message of a Publish frame, as the client encoded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishEntry {
    /// One message (an AMQP 1.0 encoded message, opaque here).
    Simple(Bytes),
    /// A client-side batch of `records` messages, compressed with `compression` (0 none,
    /// 1 gzip, 2 snappy, 3 lz4, 4 zstd); Publish v1 only.
    SubBatch { compression: u8, records: u16, uncompressed_size: u32, data: Bytes },
}

/// One entry of a Publish frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedMessage {
    pub publishing_id: u64,
    /// Publish v2's filter value: `None` when the client sent a null string (and always in v1).
    pub filter_value: Option<ByteString>,
    pub entry: PublishEntry,
}

/// Every frame a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    PeerProperties {
        correlation_id: u32,
        properties: Properties,
    },
    SaslHandshake {
        correlation_id: u32,
    },
    /// The SASL response; a null one arrives empty.
    SaslAuthenticate {
        correlation_id: u32,
        mechanism: ByteString,
        data: Bytes,
    },
    /// The client's answer to the server's Tune (sent as key 0x8014 by some clients and 0x0014
    /// by others; RabbitMQ takes both).
    Tune {
        frame_max: u32,
        heartbeat: u32,
    },
    Open {
        correlation_id: u32,
        vhost: ByteString,
    },
    Close {
        correlation_id: u32,
        code: u16,
        reason: ByteString,
    },
    /// The client's answer to a Close the server sent.
    CloseResponse {
        correlation_id: u32,
        code: u16,
    },
    Heartbeat,
    Create {
        correlation_id: u32,
        stream: ByteString,
        arguments: Properties,
    },
    Delete {
        correlation_id: u32,
        stream: ByteString,
    },
    Metadata {
        correlation_id: u32,
        streams: Vec<ByteString>,
    },
    /// `reference` is `None` when the client sent an empty (or null) one: no deduplication.
    DeclarePublisher {
        correlation_id: u32,
        publisher_id: u8,
        reference: Option<ByteString>,
        stream: ByteString,
    },
    /// `version` 1, or 2 when each message carries a filter value.
    Publish {
        version: u16,
        publisher_id: u8,
        messages: Vec<PublishedMessage>,
    },
    QueryPublisherSequence {
        correlation_id: u32,
        reference: ByteString,
        stream: ByteString,
    },
    DeletePublisher {
        correlation_id: u32,
        publisher_id: u8,
    },
    Subscribe {
        correlation_id: u32,
        subscription_id: u8,
        stream: ByteString,
        offset: OffsetSpec,
        /// Chunks the server may send before the client grants more.
        credit: u16,
        properties: Properties,
    },
    Credit {
        subscription_id: u8,
        credit: u16,
    },
    StoreOffset {
        reference: ByteString,
        stream: ByteString,
        offset: u64,
    },
    QueryOffset {
        correlation_id: u32,
        reference: ByteString,
        stream: ByteString,
    },
    Unsubscribe {
        correlation_id: u32,
        subscription_id: u8,
    },
    Route {
        correlation_id: u32,
        routing_key: ByteString,
        super_stream: ByteString,
    },
    Partitions {
        correlation_id: u32,
        super_stream: ByteString,
    },
    /// The client's answer (0x801a) to a ConsumerUpdate: where the newly active consumer starts
    /// (`None`: offset type 0, where the server would).
    ConsumerUpdateResponse {
        correlation_id: u32,
        code: u16,
        offset: Option<OffsetSpec>,
    },
    ExchangeCommandVersions {
        correlation_id: u32,
        versions: Vec<super::CommandVersion>,
    },
    StreamStats {
        correlation_id: u32,
        stream: ByteString,
    },
    CreateSuperStream {
        correlation_id: u32,
        name: ByteString,
        partitions: Vec<ByteString>,
        binding_keys: Vec<ByteString>,
        arguments: Properties,
    },
    DeleteSuperStream {
        correlation_id: u32,
        name: ByteString,
    },
    /// RabbitMQ 4.3's ResolveOffsetSpec (parsed, not advertised).
    ResolveOffsetSpec {
        correlation_id: u32,
        stream: ByteString,
        offset: OffsetSpec,
        properties: Properties,
    },
}

impl ClientFrame {
    /// The frame's key as sent (responses with the top bit set).
    pub fn key(&self) -> u16 {
        use ClientFrame::*;
        match self {
            PeerProperties { .. } => key::PEER_PROPERTIES,
            SaslHandshake { .. } => key::SASL_HANDSHAKE,
            SaslAuthenticate { .. } => key::SASL_AUTHENTICATE,
            Tune { .. } => key::TUNE_RESPONSE,
            Open { .. } => key::OPEN,
            Close { .. } => key::CLOSE,
            CloseResponse { .. } => key::CLOSE_RESPONSE,
            Heartbeat => key::HEARTBEAT,
            Create { .. } => key::CREATE,
            Delete { .. } => key::DELETE,
            Metadata { .. } => key::METADATA,
            DeclarePublisher { .. } => key::DECLARE_PUBLISHER,
            Publish { .. } => key::PUBLISH,
            QueryPublisherSequence { .. } => key::QUERY_PUBLISHER_SEQUENCE,
            DeletePublisher { .. } => key::DELETE_PUBLISHER,
            Subscribe { .. } => key::SUBSCRIBE,
            Credit { .. } => key::CREDIT,
            StoreOffset { .. } => key::STORE_OFFSET,
            QueryOffset { .. } => key::QUERY_OFFSET,
            Unsubscribe { .. } => key::UNSUBSCRIBE,
            Route { .. } => key::ROUTE,
            Partitions { .. } => key::PARTITIONS,
            ConsumerUpdateResponse { .. } => key::CONSUMER_UPDATE_RESPONSE,
            ExchangeCommandVersions { .. } => key::EXCHANGE_COMMAND_VERSIONS,
            StreamStats { .. } => key::STREAM_STATS,
            CreateSuperStream { .. } => key::CREATE_SUPER_STREAM,
            DeleteSuperStream { .. } => key::DELETE_SUPER_STREAM,
            ResolveOffsetSpec { .. } => key::RESOLVE_OFFSET_SPEC,
        }
    }
}

/// Why a frame was refused. Each maps to the response code RabbitMQ closes with
/// ([`FrameError::code`]); RabbitMQ treats a body it cannot parse as an unknown frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The size prefix is over the frame_max in force (sizes not counting the prefix).
    #[error("frame too large: {size} bytes, the limit is {max}")]
    TooLarge { size: u32, max: u32 },
    /// A key, or a version of it, that the server does not take from a client.
    #[error("unknown frame: key {key:#06x} version {version}")]
    Unknown { key: u16, version: u16 },
    /// A known command whose body does not parse.
    #[error("malformed frame: key {key:#06x} version {version}: {reason}")]
    Malformed { key: u16, version: u16, reason: &'static str },
}

impl FrameError {
    /// The response code this error closes the connection with.
    pub fn code(&self) -> u16 {
        match self {
            FrameError::TooLarge { .. } => code::FRAME_TOO_LARGE,
            FrameError::Unknown { .. } | FrameError::Malformed { .. } => code::UNKNOWN_FRAME,
        }
    }
}

/// Whether a client may send `version` of `key` (the response bit included in `key`).
pub fn accepts(key: u16, version: u16) -> bool {
    if key == key::PUBLISH {
        return version == 1 || version == 2;
    }
    if key & RESPONSE_FLAG != 0 {
        return version == 1 && matches!(key, key::TUNE_RESPONSE | key::CLOSE_RESPONSE | key::CONSUMER_UPDATE_RESPONSE);
    }
    version == 1
        && matches!(
            key,
            key::DECLARE_PUBLISHER..=key::DELETE_PUBLISHER
                | key::SUBSCRIBE
                | key::CREDIT..=key::METADATA
                | key::PEER_PROPERTIES..=key::PARTITIONS
                | key::EXCHANGE_COMMAND_VERSIONS..=key::RESOLVE_OFFSET_SPEC
        )
        && !matches!(key, key::PUBLISH_CONFIRM | key::PUBLISH_ERROR)
}

/// Parse one frame (key, version and body; no size prefix).
pub fn parse(frame: &Bytes) -> Result<ClientFrame, FrameError> {
    let (k, version) = match frame.get(..4) {
        Some(h) => (u16::from_be_bytes([h[0], h[1]]), u16::from_be_bytes([h[2], h[3]])),
        None => {
            let k = frame.get(..2).map_or(0, |h| u16::from_be_bytes([h[0], h[1]]));
            return Err(FrameError::Malformed { key: k, version: 0, reason: "no key and version" });
        }
    };
    if !accepts(k, version) {
        return Err(FrameError::Unknown { key: k, version });
    }
    let cx = Ctx { frame };
    let body = &frame[4..];
    let parsed = match k {
        key::PEER_PROPERTIES => cx.peer_properties(body),
        key::SASL_HANDSHAKE => {
            correlated(body, |correlation_id, i| Ok((i, ClientFrame::SaslHandshake { correlation_id })))
        }
        key::SASL_AUTHENTICATE => cx.sasl_authenticate(body),
        key::TUNE | key::TUNE_RESPONSE => tune(body),
        key::OPEN => correlated(body, |correlation_id, i| {
            let (i, vhost) = cx.string(i)?;
            Ok((i, ClientFrame::Open { correlation_id, vhost }))
        }),
        key::CLOSE => correlated(body, |correlation_id, i| {
            let (i, code) = be_u16(i)?;
            let (i, reason) = cx.string(i)?;
            Ok((i, ClientFrame::Close { correlation_id, code, reason }))
        }),
        key::CLOSE_RESPONSE => correlated(body, |correlation_id, i| {
            let (i, code) = be_u16(i)?;
            Ok((i, ClientFrame::CloseResponse { correlation_id, code }))
        }),
        key::HEARTBEAT => Ok((body, ClientFrame::Heartbeat)),
        key::CREATE => correlated(body, |correlation_id, i| {
            let (i, stream) = cx.string(i)?;
            let (i, arguments) = cx.map(i)?;
            Ok((i, ClientFrame::Create { correlation_id, stream, arguments }))
        }),
        key::DELETE => cx.one_string(body, |correlation_id, stream| ClientFrame::Delete { correlation_id, stream }),
        key::METADATA => correlated(body, |correlation_id, i| {
            let (i, streams) = cx.strings(i)?;
            Ok((i, ClientFrame::Metadata { correlation_id, streams }))
        }),
        key::DECLARE_PUBLISHER => correlated(body, |correlation_id, i| {
            let (i, publisher_id) = be_u8(i)?;
            let (i, reference) = cx.opt_string(i)?;
            let (i, stream) = cx.string(i)?;
            let reference = reference.filter(|r| !r.is_empty());
            Ok((i, ClientFrame::DeclarePublisher { correlation_id, publisher_id, reference, stream }))
        }),
        key::PUBLISH => cx.publish(body, version),
        key::QUERY_PUBLISHER_SEQUENCE => cx.reference_and_stream(body, |correlation_id, reference, stream| {
            ClientFrame::QueryPublisherSequence { correlation_id, reference, stream }
        }),
        key::DELETE_PUBLISHER => correlated(body, |correlation_id, i| {
            let (i, publisher_id) = be_u8(i)?;
            Ok((i, ClientFrame::DeletePublisher { correlation_id, publisher_id }))
        }),
        key::SUBSCRIBE => cx.subscribe(body),
        key::CREDIT => {
            let r: R<'_, _> = (be_u8, be_u16).parse(body);
            r.map(|(i, (subscription_id, credit))| (i, ClientFrame::Credit { subscription_id, credit }))
        }
        key::STORE_OFFSET => cx.store_offset(body),
        key::QUERY_OFFSET => cx.reference_and_stream(body, |correlation_id, reference, stream| {
            ClientFrame::QueryOffset { correlation_id, reference, stream }
        }),
        key::UNSUBSCRIBE => correlated(body, |correlation_id, i| {
            let (i, subscription_id) = be_u8(i)?;
            Ok((i, ClientFrame::Unsubscribe { correlation_id, subscription_id }))
        }),
        key::ROUTE => cx.reference_and_stream(body, |correlation_id, routing_key, super_stream| ClientFrame::Route {
            correlation_id,
            routing_key,
            super_stream,
        }),
        key::PARTITIONS => {
            cx.one_string(body, |correlation_id, super_stream| ClientFrame::Partitions { correlation_id, super_stream })
        }
        key::CONSUMER_UPDATE_RESPONSE => correlated(body, |correlation_id, i| {
            let (i, code) = be_u16(i)?;
            // After types 0-3 RabbitMQ ignores what follows: rstream sends an 8-byte offset
            // with every type.
            let (i, offset) = match be_u16(i)? {
                (_, 0) => (&i[i.len()..], None),
                (_, 1..=3) => (&i[i.len()..], Some(offset_spec(i)?.1)),
                _ => offset_spec(i).map(|(i, o)| (i, Some(o)))?,
            };
            Ok((i, ClientFrame::ConsumerUpdateResponse { correlation_id, code, offset }))
        }),
        key::EXCHANGE_COMMAND_VERSIONS => correlated(body, |correlation_id, i| {
            let (mut i, n) = count(i, 6)?;
            let mut versions = Vec::with_capacity(n);
            for _ in 0..n {
                let (rest, (key, min, max)) = (be_u16, be_u16, be_u16).parse(i)?;
                versions.push(super::CommandVersion { key, min, max });
                i = rest;
            }
            Ok((i, ClientFrame::ExchangeCommandVersions { correlation_id, versions }))
        }),
        key::STREAM_STATS => {
            cx.one_string(body, |correlation_id, stream| ClientFrame::StreamStats { correlation_id, stream })
        }
        key::CREATE_SUPER_STREAM => correlated(body, |correlation_id, i| {
            let (i, name) = cx.string(i)?;
            let (i, partitions) = cx.strings(i)?;
            let (i, binding_keys) = cx.strings(i)?;
            let (i, arguments) = cx.map(i)?;
            Ok((i, ClientFrame::CreateSuperStream { correlation_id, name, partitions, binding_keys, arguments }))
        }),
        key::DELETE_SUPER_STREAM => {
            cx.one_string(body, |correlation_id, name| ClientFrame::DeleteSuperStream { correlation_id, name })
        }
        key::RESOLVE_OFFSET_SPEC => correlated(body, |correlation_id, i| {
            let (i, stream) = cx.string(i)?;
            let (i, offset) = offset_spec(i)?;
            let (i, properties) = cx.optional_map(i)?;
            Ok((i, ClientFrame::ResolveOffsetSpec { correlation_id, stream, offset, properties }))
        }),
        // `accepts` let through only the keys above.
        _ => return Err(FrameError::Unknown { key: k, version }),
    };
    match parsed {
        Ok(([], frame)) => Ok(frame),
        Ok(_) => Err(FrameError::Malformed { key: k, version, reason: "bytes after the last field" }),
        Err(nom::Err::Error(Bad(reason)) | nom::Err::Failure(Bad(reason))) => {
            Err(FrameError::Malformed { key: k, version, reason })
        }
        Err(nom::Err::Incomplete(_)) => Err(FrameError::Malformed { key: k, version, reason: "truncated" }),
    }
}

/// The parser's error: what was wrong, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bad(&'static str);

impl<I> ParseError<I> for Bad {
    fn from_error_kind(_: I, kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::Eof => Bad("truncated"),
            _ => Bad("invalid field"),
        }
    }

    fn append(_: I, _: ErrorKind, other: Self) -> Self {
        other
    }
}

type R<'a, T> = IResult<&'a [u8], T, Bad>;

fn bad<T>(reason: &'static str) -> Result<T, nom::Err<Bad>> {
    Err(nom::Err::Failure(Bad(reason)))
}

/// A request: the correlation id, then what `rest` parses.
fn correlated<'a>(i: &'a [u8], rest: impl FnOnce(u32, &'a [u8]) -> R<'a, ClientFrame>) -> R<'a, ClientFrame> {
    let (i, correlation_id) = be_u32(i)?;
    rest(correlation_id, i)
}

fn tune(i: &[u8]) -> R<'_, ClientFrame> {
    let (i, (frame_max, heartbeat)) = (be_u32, be_u32).parse(i)?;
    Ok((i, ClientFrame::Tune { frame_max, heartbeat }))
}

/// An array's count, checked against what remains (each item at least `min_item` bytes)
/// and against [`MAX_ITEMS`].
fn count(i: &[u8], min_item: usize) -> R<'_, usize> {
    let (rest, n) = messages_count(i, min_item)?;
    if n > MAX_ITEMS {
        return bad("too many entries");
    }
    Ok((rest, n))
}

/// Publish's message count: checked against what remains only (a frame of small messages
/// holds tens of thousands).
fn messages_count(i: &[u8], min_item: usize) -> R<'_, usize> {
    let (i, n) = be_i32(i)?;
    let Ok(n) = usize::try_from(n) else { return bad("negative count") };
    if n.saturating_mul(min_item) > i.len() {
        return bad("count beyond the frame");
    }
    Ok((i, n))
}

/// A string's bytes; `None` for the null string (length -1).
fn raw_string(i: &[u8]) -> R<'_, Option<&[u8]>> {
    let (i, len) = be_i16(i)?;
    match len {
        -1 => Ok((i, None)),
        n if n < 0 => bad("negative string length"),
        n => {
            let (i, s) = take(n as usize).parse(i)?;
            Ok((i, Some(s)))
        }
    }
}

fn offset_spec(i: &[u8]) -> R<'_, OffsetSpec> {
    let (i, kind) = be_u16(i)?;
    match kind {
        1 => Ok((i, OffsetSpec::First)),
        2 => Ok((i, OffsetSpec::Last)),
        3 => Ok((i, OffsetSpec::Next)),
        4 => be_u64(i).map(|(i, o)| (i, OffsetSpec::Offset(o))),
        5 => be_i64(i).map(|(i, t)| (i, OffsetSpec::Timestamp(t))),
        _ => bad("unknown offset type"),
    }
}

/// Parsing context: the frame's buffer, which strings and messages are slices of.
struct Ctx<'f> {
    frame: &'f Bytes,
}

impl Ctx<'_> {
    /// `s` is always a slice of the frame, so `slice_ref` cannot panic.
    fn bytes(&self, s: &[u8]) -> Bytes {
        self.frame.slice_ref(s)
    }

    fn text(&self, s: &[u8]) -> Result<ByteString, nom::Err<Bad>> {
        ByteString::try_from(self.bytes(s)).or_else(|_| bad("string is not UTF-8"))
    }

    fn opt_string<'a>(&self, i: &'a [u8]) -> R<'a, Option<ByteString>> {
        let (i, s) = raw_string(i)?;
        Ok((i, s.map(|s| self.text(s)).transpose()?))
    }

    fn string<'a>(&self, i: &'a [u8]) -> R<'a, ByteString> {
        match self.opt_string(i)? {
            (i, Some(s)) => Ok((i, s)),
            (_, None) => bad("null string"),
        }
    }

    fn strings<'a>(&self, i: &'a [u8]) -> R<'a, Vec<ByteString>> {
        let (mut i, n) = count(i, 2)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let (rest, s) = self.string(i)?;
            out.push(s);
            i = rest;
        }
        Ok((i, out))
    }

    fn map<'a>(&self, i: &'a [u8]) -> R<'a, Properties> {
        let (mut i, n) = count(i, 4)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let (rest, k) = self.string(i)?;
            let (rest, v) = self.string(rest)?;
            out.push((k, v));
            i = rest;
        }
        Ok((i, out))
    }

    /// A map that may be left out altogether (Subscribe: RabbitMQ's own client sends none when
    /// there are no properties).
    fn optional_map<'a>(&self, i: &'a [u8]) -> R<'a, Properties> {
        if i.is_empty() { Ok((i, Vec::new())) } else { self.map(i) }
    }

    fn one_string<'a>(&self, i: &'a [u8], make: impl FnOnce(u32, ByteString) -> ClientFrame) -> R<'a, ClientFrame> {
        correlated(i, |correlation_id, i| {
            let (i, s) = self.string(i)?;
            Ok((i, make(correlation_id, s)))
        })
    }

    fn reference_and_stream<'a>(
        &self,
        i: &'a [u8],
        make: impl FnOnce(u32, ByteString, ByteString) -> ClientFrame,
    ) -> R<'a, ClientFrame> {
        correlated(i, |correlation_id, i| {
            let (i, a) = self.string(i)?;
            let (i, b) = self.string(i)?;
            Ok((i, make(correlation_id, a, b)))
        })
    }

    fn store_offset<'a>(&self, i: &'a [u8]) -> R<'a, ClientFrame> {
        let (i, reference) = self.string(i)?;
        let (i, stream) = self.string(i)?;
        let (i, offset) = be_u64(i)?;
        Ok((i, ClientFrame::StoreOffset { reference, stream, offset }))
    }

    fn peer_properties<'a>(&self, i: &'a [u8]) -> R<'a, ClientFrame> {
        correlated(i, |correlation_id, i| {
            let (i, properties) = self.map(i)?;
            Ok((i, ClientFrame::PeerProperties { correlation_id, properties }))
        })
    }

    fn sasl_authenticate<'a>(&self, i: &'a [u8]) -> R<'a, ClientFrame> {
        correlated(i, |correlation_id, i| {
            let (i, mechanism) = self.string(i)?;
            let (i, len) = be_i32(i)?;
            let (i, data) = match len {
                -1 => (i, Bytes::new()),
                n if n < 0 => return bad("negative length"),
                n => {
                    let (i, d) = take(n as usize).parse(i)?;
                    (i, self.bytes(d))
                }
            };
            Ok((i, ClientFrame::SaslAuthenticate { correlation_id, mechanism, data }))
        })
    }

    fn subscribe<'a>(&self, i: &'a [u8]) -> R<'a, ClientFrame> {
        correlated(i, |correlation_id, i| {
            let (i, subscription_id) = be_u8(i)?;
            let (i, stream) = self.string(i)?;
            let (i, offset) = offset_spec(i)?;
            let (i, credit) = be_u16(i)?;
            let (i, properties) = self.optional_map(i)?;
            Ok((i, ClientFrame::Subscribe { correlation_id, subscription_id, stream, offset, credit, properties }))
        })
    }

    /// Publish v1: `[publishing id u64, entry]`; v2: `[publishing id, filter value, entry]`.
    /// An entry is `0|size:31` + the message, or (v1) a sub-batch:
    /// `1|compression:3|reserved:4, records u16, uncompressed size u32, size u32, data`.
    fn publish<'a>(&self, i: &'a [u8], version: u16) -> R<'a, ClientFrame> {
        let (i, publisher_id) = be_u8(i)?;
        let min_entry = if version == 2 { 14 } else { 12 };
        let (mut i, n) = messages_count(i, min_entry)?;
        let mut messages = Vec::with_capacity(n);
        for _ in 0..n {
            let (rest, publishing_id) = be_u64(i)?;
            let (rest, filter_value) = if version == 2 { self.opt_string(rest)? } else { (rest, None) };
            let (_, flags) = be_u8(rest)?;
            let (rest, entry) = if flags & 0x80 == 0 {
                let (rest, size) = be_u32(rest)?;
                let (rest, m) = take(size as usize).parse(rest)?;
                (rest, PublishEntry::Simple(self.bytes(m)))
            } else if version == 1 {
                let (rest, (flags, records, uncompressed_size, size)) = (be_u8, be_u16, be_u32, be_u32).parse(rest)?;
                let (rest, data) = take(size as usize).parse(rest)?;
                let compression = (flags >> 4) & 0x07;
                (rest, PublishEntry::SubBatch { compression, records, uncompressed_size, data: self.bytes(data) })
            } else {
                return bad("sub-batch in Publish v2");
            };
            messages.push(PublishedMessage { publishing_id, filter_value, entry });
            i = rest;
        }
        Ok((i, ClientFrame::Publish { version, publisher_id, messages }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::client;
    use super::super::codec::split_frame;
    use super::*;
    use crate::stream::protocol::CommandVersion;
    use bytes::BytesMut;

    fn s(v: &str) -> ByteString {
        ByteString::from(v)
    }

    fn props(kv: &[(&str, &str)]) -> Properties {
        kv.iter().map(|(k, v)| (s(k), s(v))).collect()
    }

    /// One of every frame a client sends, with the edge values each may carry.
    pub(crate) fn samples() -> Vec<ClientFrame> {
        use ClientFrame as F;
        let msg = |id, f: Option<&str>, body: &'static [u8]| PublishedMessage {
            publishing_id: id,
            filter_value: f.map(s),
            entry: PublishEntry::Simple(Bytes::from_static(body)),
        };
        vec![
            F::PeerProperties {
                correlation_id: 1,
                properties: props(&[("product", "RabbitMQ"), ("connection_name", "")]),
            },
            F::SaslHandshake { correlation_id: 2 },
            F::SaslAuthenticate {
                correlation_id: 3,
                mechanism: s("PLAIN"),
                data: Bytes::from_static(b"\0guest\0guest"),
            },
            F::Tune { frame_max: 1_048_576, heartbeat: 60 },
            F::Open { correlation_id: 4, vhost: s("/") },
            F::Close { correlation_id: 5, code: 1, reason: s("bye") },
            F::CloseResponse { correlation_id: 6, code: 1 },
            F::Heartbeat,
            F::Create {
                correlation_id: 7,
                stream: s("s1"),
                arguments: props(&[("max-age", "1h"), ("max-length-bytes", "1000")]),
            },
            F::Delete { correlation_id: 8, stream: s("s1") },
            F::Metadata { correlation_id: 9, streams: vec![s("a"), s("b"), s("ü")] },
            F::Metadata { correlation_id: 9, streams: vec![] },
            F::DeclarePublisher { correlation_id: 10, publisher_id: 255, reference: Some(s("ref")), stream: s("s1") },
            F::DeclarePublisher { correlation_id: 10, publisher_id: 0, reference: None, stream: s("s1") },
            F::Publish {
                version: 1,
                publisher_id: 3,
                messages: vec![msg(1, None, b"hello"), msg(u64::MAX, None, b"")],
            },
            F::Publish {
                version: 1,
                publisher_id: 3,
                messages: vec![PublishedMessage {
                    publishing_id: 9,
                    filter_value: None,
                    entry: PublishEntry::SubBatch {
                        compression: 1,
                        records: 3,
                        uncompressed_size: 100,
                        data: Bytes::from_static(b"zzz"),
                    },
                }],
            },
            F::Publish { version: 1, publisher_id: 0, messages: vec![] },
            F::Publish {
                version: 2,
                publisher_id: 4,
                messages: vec![msg(1, Some("eu"), b"m1"), msg(2, None, b"m2"), msg(3, Some(""), b"m3")],
            },
            F::QueryPublisherSequence { correlation_id: 11, reference: s("ref"), stream: s("s1") },
            F::DeletePublisher { correlation_id: 12, publisher_id: 7 },
            F::Subscribe {
                correlation_id: 13,
                subscription_id: 1,
                stream: s("s1"),
                offset: OffsetSpec::First,
                credit: 10,
                properties: vec![],
            },
            F::Subscribe {
                correlation_id: 13,
                subscription_id: 2,
                stream: s("s1"),
                offset: OffsetSpec::Last,
                credit: 1,
                properties: props(&[("single-active-consumer", "true"), ("name", "app")]),
            },
            F::Subscribe {
                correlation_id: 13,
                subscription_id: 3,
                stream: s("s1"),
                offset: OffsetSpec::Next,
                credit: 0,
                properties: props(&[("filter.0", "eu"), ("match-unfiltered", "false")]),
            },
            F::Subscribe {
                correlation_id: 13,
                subscription_id: 4,
                stream: s("s1"),
                offset: OffsetSpec::Offset(u64::MAX),
                credit: u16::MAX,
                properties: vec![],
            },
            F::Subscribe {
                correlation_id: 13,
                subscription_id: 5,
                stream: s("s1"),
                offset: OffsetSpec::Timestamp(-1),
                credit: 5,
                properties: props(&[("super-stream", "invoices")]),
            },
            F::Credit { subscription_id: 1, credit: 65535 },
            F::StoreOffset { reference: s("app"), stream: s("s1"), offset: 42 },
            F::QueryOffset { correlation_id: 14, reference: s("app"), stream: s("s1") },
            F::Unsubscribe { correlation_id: 15, subscription_id: 1 },
            F::Route { correlation_id: 16, routing_key: s("k"), super_stream: s("invoices") },
            F::Partitions { correlation_id: 17, super_stream: s("invoices") },
            F::ConsumerUpdateResponse { correlation_id: 18, code: 1, offset: None },
            F::ConsumerUpdateResponse { correlation_id: 18, code: 1, offset: Some(OffsetSpec::Offset(7)) },
            F::ConsumerUpdateResponse {
                correlation_id: 18,
                code: 1,
                offset: Some(OffsetSpec::Timestamp(1_700_000_000_000)),
            },
            F::ExchangeCommandVersions { correlation_id: 19, versions: vec![] },
            F::ExchangeCommandVersions {
                correlation_id: 19,
                versions: vec![CommandVersion { key: 2, min: 1, max: 2 }, CommandVersion { key: 8, min: 1, max: 2 }],
            },
            F::StreamStats { correlation_id: 20, stream: s("s1") },
            F::CreateSuperStream {
                correlation_id: 21,
                name: s("invoices"),
                partitions: vec![s("invoices-0"), s("invoices-1")],
                binding_keys: vec![s("0"), s("1")],
                arguments: props(&[("max-age", "7D")]),
            },
            F::DeleteSuperStream { correlation_id: 22, name: s("invoices") },
            F::ResolveOffsetSpec { correlation_id: 23, stream: s("s1"), offset: OffsetSpec::Last, properties: vec![] },
        ]
    }

    fn parse_wire(wire: &[u8]) -> Result<ClientFrame, FrameError> {
        let mut buf = BytesMut::from(wire);
        let raw = split_frame(&mut buf, 0)?.expect("a whole frame");
        assert!(buf.is_empty(), "one frame exactly");
        parse(&raw)
    }

    #[test]
    fn every_client_frame_round_trips() {
        for f in samples() {
            let wire = client::encode(&f);
            assert_eq!(parse_wire(&wire), Ok(f.clone()), "{f:?}");
        }
    }

    #[test]
    fn every_truncation_is_malformed_never_a_panic() {
        for f in samples() {
            let wire = client::encode(&f);
            for cut in 4..wire.len() {
                let mut short = BytesMut::from(&wire[..cut]);
                let n = (cut - 4) as u32;
                short[..4].copy_from_slice(&n.to_be_bytes());
                match parse_wire(&short) {
                    Err(FrameError::Malformed { .. }) => {}
                    // Dropping a trailing optional map leaves a valid Subscribe/ResolveOffsetSpec,
                    // and a Publish cut before its messages count is still truncated.
                    Ok(ClientFrame::Subscribe { .. } | ClientFrame::ResolveOffsetSpec { .. }) => {}
                    other => panic!("{f:?} cut at {cut}: {other:?}"),
                }
            }
            // And one byte too many (which an answer to ConsumerUpdate without an offset may have).
            if let ClientFrame::ConsumerUpdateResponse { offset: None | Some(OffsetSpec::First), .. } = f {
                continue;
            }
            let mut long = BytesMut::from(&wire[..]);
            long.extend_from_slice(&[0]);
            let n = (long.len() - 4) as u32;
            long[..4].copy_from_slice(&n.to_be_bytes());
            assert!(matches!(parse_wire(&long), Err(FrameError::Malformed { .. })), "{f:?} with a byte more");
        }
    }

    #[test]
    fn hand_built_frames_from_the_spec() {
        // Tune as some clients send it (key 0x0014, no response bit), and as others (0x8014).
        for k in [0x0014u16, 0x8014] {
            let mut w = vec![0, 0, 0, 12];
            w.extend_from_slice(&k.to_be_bytes());
            w.extend_from_slice(&[0, 1, 0, 0x10, 0, 0, 0, 0, 0, 60]);
            assert_eq!(parse_wire(&w), Ok(ClientFrame::Tune { frame_max: 1_048_576, heartbeat: 60 }));
        }
        // Subscribe as RabbitMQ's own core writes it without properties: no map count at all.
        let w = [0, 0, 0, 19, 0, 7, 0, 1, 0, 0, 0, 9, 3, 0, 2, b's', b'1', 0, 4, 0, 0, 0, 0, 0, 0, 0, 5, 0, 10];
        let mut w = w.to_vec();
        w[3] = (w.len() - 4) as u8;
        assert_eq!(
            parse_wire(&w),
            Ok(ClientFrame::Subscribe {
                correlation_id: 9,
                subscription_id: 3,
                stream: s("s1"),
                offset: OffsetSpec::Offset(5),
                credit: 10,
                properties: vec![],
            })
        );
        // SaslAuthenticate with a null response (length -1).
        let w = [0, 0, 0, 19, 0, 0x13, 0, 1, 0, 0, 0, 1, 0, 5, b'P', b'L', b'A', b'I', b'N', 0xff, 0xff, 0xff, 0xff];
        assert_eq!(
            parse_wire(&w),
            Ok(ClientFrame::SaslAuthenticate { correlation_id: 1, mechanism: s("PLAIN"), data: Bytes::new() })
        );
        // Credit: subscription 1, 2 more chunks.
        assert_eq!(
            parse_wire(&[0, 0, 0, 7, 0, 9, 0, 1, 1, 0, 2]),
            Ok(ClientFrame::Credit { subscription_id: 1, credit: 2 })
        );
        // Heartbeat.
        assert_eq!(parse_wire(&[0, 0, 0, 4, 0, 0x17, 0, 1]), Ok(ClientFrame::Heartbeat));
    }

    /// Frames as rstream 1.1.1 (the Python stream client, PyPI) encodes them, its own encoder
    /// run offline: the bytes each of its calls sends.
    #[test]
    fn frames_encoded_by_rstream() {
        let hex = |h: &str| {
            (0..h.len()).step_by(2).map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap()).collect::<Vec<u8>>()
        };
        let cases: Vec<(&str, ClientFrame)> = vec![
            (
                "00000040001100010000000100000002000770726f64756374000f5261626269744d512053747265616d000f636f6e6e656374696f6e5f6e616d6500077273747265616d",
                ClientFrame::PeerProperties {
                    correlation_id: 1,
                    properties: props(&[("product", "RabbitMQ Stream"), ("connection_name", "rstream")]),
                },
            ),
            ("000000080012000100000002", ClientFrame::SaslHandshake { correlation_id: 2 }),
            (
                "0000001f00130001000000030005504c41494e0000000c006775657374006775657374",
                ClientFrame::SaslAuthenticate {
                    correlation_id: 3,
                    mechanism: s("PLAIN"),
                    data: Bytes::from_static(b"\0guest\0guest"),
                },
            ),
            // Its Tune answer goes out as key 0x0014.
            ("0000000c00140001001000000000003c", ClientFrame::Tune { frame_max: 1_048_576, heartbeat: 60 }),
            ("0000000b001500010000000400012f", ClientFrame::Open { correlation_id: 4, vhost: s("/") }),
            (
                "0000000f000100010000000500000000027331",
                ClientFrame::DeclarePublisher { correlation_id: 5, publisher_id: 0, reference: None, stream: s("s1") },
            ),
            (
                "0000001a00020001000000000100000000000000010000000568656c6c6f",
                ClientFrame::Publish {
                    version: 1,
                    publisher_id: 0,
                    messages: vec![PublishedMessage {
                        publishing_id: 1,
                        filter_value: None,
                        entry: PublishEntry::Simple(Bytes::from_static(b"hello")),
                    }],
                },
            ),
            (
                "0000001b000200020000000001000000000000000200026575000000026869",
                ClientFrame::Publish {
                    version: 2,
                    publisher_id: 0,
                    messages: vec![PublishedMessage {
                        publishing_id: 2,
                        filter_value: Some(s("eu")),
                        entry: PublishEntry::Simple(Bytes::from_static(b"hi")),
                    }],
                },
            ),
            (
                "00000046000700010000000601000273310004000000000000002a000a00000002001673696e676c652d6163746976652d636f6e73756d657200047472756500046e616d650003617070",
                ClientFrame::Subscribe {
                    correlation_id: 6,
                    subscription_id: 1,
                    stream: s("s1"),
                    offset: OffsetSpec::Offset(42),
                    credit: 10,
                    properties: props(&[("single-active-consumer", "true"), ("name", "app")]),
                },
            ),
            // Its ConsumerUpdate answer carries an offset even for "first".
            (
                "00000014801a000100000007000100010000000000000000",
                ClientFrame::ConsumerUpdateResponse { correlation_id: 7, code: 1, offset: Some(OffsetSpec::First) },
            ),
            (
                "00000012001b00010000000800000001000200010002",
                ClientFrame::ExchangeCommandVersions {
                    correlation_id: 8,
                    versions: vec![CommandVersion { key: 2, min: 1, max: 2 }],
                },
            ),
            ("0000000700090001010001", ClientFrame::Credit { subscription_id: 1, credit: 1 }),
            (
                "00000015000a0001000361707000027331000000000000002a",
                ClientFrame::StoreOffset { reference: s("app"), stream: s("s1"), offset: 42 },
            ),
        ];
        for (wire, expected) in cases {
            assert_eq!(parse_wire(&hex(wire)), Ok(expected), "{wire}");
        }
    }

    #[test]
    fn unknown_keys_and_versions() {
        let unknown = |k: u16, v: u16| {
            let mut w = vec![0, 0, 0, 8];
            w.extend_from_slice(&k.to_be_bytes());
            w.extend_from_slice(&v.to_be_bytes());
            w.extend_from_slice(&[0, 0, 0, 1]);
            assert_eq!(parse_wire(&w), Err(FrameError::Unknown { key: k, version: v }), "{k:#x} v{v}");
        };
        unknown(0x0077, 1);
        unknown(0x0007, 2); // Subscribe v2 does not exist
        unknown(0x0002, 3); // Publish v3
        unknown(0x0002, 0);
        unknown(0x0008, 1); // Deliver is the server's
        unknown(0x0003, 1); // PublishConfirm too
        unknown(0x0010, 1); // MetadataUpdate too
        unknown(0x001a, 1); // ConsumerUpdate: the client only answers it
        unknown(0x8001, 1); // no response to a request the server never sends
        unknown(0x0020, 1);
        assert_eq!(FrameError::Unknown { key: 0x77, version: 1 }.code(), code::UNKNOWN_FRAME);
        assert!(matches!(parse(&Bytes::from_static(&[0, 1])), Err(FrameError::Malformed { .. })));
        assert!(matches!(parse(&Bytes::new()), Err(FrameError::Malformed { .. })));
    }

    #[test]
    fn counts_and_strings_are_checked_before_allocating() {
        let frame = |body: &[u8], k: u16| {
            let mut w = Vec::new();
            w.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
            w.extend_from_slice(&k.to_be_bytes());
            w.extend_from_slice(&[0, 1]);
            w.extend_from_slice(body);
            parse_wire(&w)
        };
        let malformed = |r: Result<ClientFrame, FrameError>, why: &str| match r {
            Err(FrameError::Malformed { reason, .. }) => assert_eq!(reason, why),
            other => panic!("{other:?}"),
        };
        // Metadata claiming 2^31-1 streams in 0 bytes.
        malformed(frame(&[0, 0, 0, 1, 0, 0, 0, 100, 0, 1, b'a'], key::METADATA), "count beyond the frame");
        malformed(frame(&[0, 0, 0, 1, 0x7f, 0xff, 0xff, 0xff], key::METADATA), "count beyond the frame");
        malformed(frame(&[0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff], key::METADATA), "negative count");
        // A map with more entries than allowed, though the bytes are there.
        let mut big = vec![0, 0, 0, 1];
        big.extend_from_slice(&((MAX_ITEMS + 1) as u32).to_be_bytes());
        big.extend(std::iter::repeat_n(0u8, (MAX_ITEMS + 1) * 4));
        malformed(frame(&big, key::PEER_PROPERTIES), "too many entries");
        // Publish claiming a million messages in a few bytes.
        malformed(frame(&[1, 0, 0x0f, 0x42, 0x40, 0, 0], key::PUBLISH), "count beyond the frame");
        // A message whose size runs past the frame.
        let mut p = vec![1, 0, 0, 0, 1];
        p.extend_from_slice(&7u64.to_be_bytes());
        p.extend_from_slice(&[0x7f, 0xff, 0xff, 0xff, 1, 2]);
        malformed(frame(&p, key::PUBLISH), "truncated");
        // Strings: negative length, null where one is needed, not UTF-8.
        malformed(frame(&[0, 0, 0, 1, 0xff, 0xfe], key::OPEN), "negative string length");
        malformed(frame(&[0, 0, 0, 1, 0xff, 0xff], key::OPEN), "null string");
        malformed(frame(&[0, 0, 0, 1, 0, 2, 0xc3, 0x28], key::OPEN), "string is not UTF-8");
        malformed(frame(&[0, 0, 0, 1, 1, 0, 1, b's', 0, 9, 0, 1], key::SUBSCRIBE), "unknown offset type");
    }

    #[test]
    fn null_reference_and_filter_value() {
        // DeclarePublisher with a null reference: no deduplication, as with an empty one.
        let w = [0, 0, 0, 16, 0, 1, 0, 1, 0, 0, 0, 1, 4, 0xff, 0xff, 0, 2, b's', b'1'];
        let mut w = w.to_vec();
        w[3] = (w.len() - 4) as u8;
        assert_eq!(
            parse_wire(&w),
            Ok(ClientFrame::DeclarePublisher { correlation_id: 1, publisher_id: 4, reference: None, stream: s("s1") })
        );
        // A sub-batch is refused in Publish v2 (RabbitMQ takes none there either).
        let mut p = vec![0, 0, 0, 0, 0, 2, 0, 2, 1, 0, 0, 0, 1];
        p.extend_from_slice(&1u64.to_be_bytes());
        p.extend_from_slice(&[0xff, 0xff, 0x80, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0]);
        let n = (p.len() - 4) as u32;
        p[..4].copy_from_slice(&n.to_be_bytes());
        assert!(matches!(parse_wire(&p), Err(FrameError::Malformed { reason: "sub-batch in Publish v2", .. })));
    }

    #[test]
    fn publish_bodies_share_the_frame_buffer() {
        let f = ClientFrame::Publish {
            version: 1,
            publisher_id: 1,
            messages: vec![PublishedMessage {
                publishing_id: 1,
                filter_value: None,
                entry: PublishEntry::Simple(Bytes::from_static(b"payload")),
            }],
        };
        let wire = client::encode(&f);
        let raw = wire.slice(4..);
        let Ok(ClientFrame::Publish { messages, .. }) = parse(&raw) else { panic!() };
        let PublishEntry::Simple(body) = &messages[0].entry else { panic!() };
        let range = raw.as_ptr() as usize..raw.as_ptr() as usize + raw.len();
        assert!(range.contains(&(body.as_ptr() as usize)), "zero-copy body");
    }

    #[test]
    fn random_bytes_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        let valid: Vec<Bytes> = samples().iter().map(client::encode).collect();
        for round in 0..20_000 {
            let mut w = valid[round % valid.len()].to_vec();
            // Mutate a few bytes after the size prefix (and sometimes the key too).
            for _ in 0..rng.gen_range(1..4) {
                let at = rng.gen_range(4..w.len());
                w[at] = rng.r#gen();
            }
            let raw = Bytes::from(w[4..].to_vec());
            let _ = parse(&raw);
        }
    }
}

/// Writes `fuzz/seeds/stream_frames/` (run by hand: `cargo test --lib write_stream_fuzz_seeds
/// -- --ignored`): a whole session through the handshake with one of every frame after it,
/// and some single frames.
#[cfg(test)]
#[test]
#[ignore]
fn write_stream_fuzz_seeds() {
    use super::client::encode;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/stream_frames");
    std::fs::create_dir_all(&dir).unwrap();
    let all = tests::samples();
    let handshake = [&all[0], &all[1], &all[2], &all[3], &all[4]];
    let mut session = Vec::new();
    for f in handshake.iter().copied().chain(all[7..].iter()).chain([&all[5]]) {
        session.extend_from_slice(&encode(f));
    }
    std::fs::write(dir.join("session"), &session).unwrap();
    let singles = [
        ("publish-v1", 14),
        ("publish-v1-sub-batch", 15),
        ("publish-v2", 17),
        ("subscribe-sac", 21),
        ("create-super-stream", 37),
        ("exchange-command-versions", 35),
    ];
    for (name, i) in singles {
        std::fs::write(dir.join(name), encode(&all[i])).unwrap();
    }
}
