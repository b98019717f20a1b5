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

/// Where a subscription starts (Subscribe, ResolveOffsetSpec; ConsumerUpdate's answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// 1: the first chunk in the stream.
    First,
    /// 2: the last chunk.
    Last,
    /// 3: what is written from now on.
    Next,
    /// 4: the chunk holding this offset.
    Offset(u64),
    /// 5: the first chunk written at or after this time (ms since the epoch).
    Timestamp(i64),
}

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
            Tune { .. } => key::TUNE | RESPONSE_FLAG,
            Open { .. } => key::OPEN,
            Close { .. } => key::CLOSE,
            CloseResponse { .. } => key::CLOSE | RESPONSE_FLAG,
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
            ConsumerUpdateResponse { .. } => key::CONSUMER_UPDATE | RESPONSE_FLAG,
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
    const RESPONSES: [u16; 3] = [key::TUNE, key::CLOSE, key::CONSUMER_UPDATE];
    if key == key::PUBLISH {
        return version == 1 || version == 2;
    }
    if key & RESPONSE_FLAG != 0 {
        return version == 1 && RESPONSES.contains(&(key & !RESPONSE_FLAG));
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
        key::TUNE | 0x8014 => tune(body),
        key::OPEN => correlated(body, |correlation_id, i| {
            let (i, vhost) = cx.string(i)?;
            Ok((i, ClientFrame::Open { correlation_id, vhost }))
        }),
        key::CLOSE => correlated(body, |correlation_id, i| {
            let (i, code) = be_u16(i)?;
            let (i, reason) = cx.string(i)?;
            Ok((i, ClientFrame::Close { correlation_id, code, reason }))
        }),
        0x8016 => correlated(body, |correlation_id, i| {
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
        0x801a => correlated(body, |correlation_id, i| {
            let (i, code) = be_u16(i)?;
            let (i, offset) = match be_u16(i)? {
                (rest, 0) => (rest, None),
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

/// An array's count, checked against what remains (each item at least `min_item` bytes).
fn count(i: &[u8], min_item: usize) -> R<'_, usize> {
    let (i, n) = be_i32(i)?;
    let Ok(n) = usize::try_from(n) else { return bad("negative count") };
    if n > MAX_ITEMS && min_item > 0 {
        return bad("too many entries");
    }
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
        let (mut i, n) = count(i, min_entry)?;
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
