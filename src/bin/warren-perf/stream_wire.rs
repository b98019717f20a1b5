//! The RabbitMQ stream protocol (port 5552) from a client's side, as far as the tool needs it:
//! frames in and out, and the messages inside them.
//!
//! Only commands RabbitMQ 3.9/3.10 know are used (PeerProperties, SaslHandshake,
//! SaslAuthenticate PLAIN, Tune, Open, Create, Delete, DeclarePublisher, Publish v1,
//! PublishConfirm, PublishError, Subscribe, Credit, Deliver v1, Close, Heartbeat,
//! MetadataUpdate), so the tool runs against RabbitMQ 3.10's stream plugin and against Warren.
//! The layouts are PROTOCOL.adoc's; the key and code numbers are the broker's own
//! (`warren::stream::protocol`), and a delivered chunk is checked (CRC, entry and record counts)
//! with the osiris chunk parser of `warren::stream::log::chunk`.
//!
//! A published message is what the stream clients send: an AMQP 1.0 message made of one `data`
//! section holding the body (whose first 8 octets carry the send time, as with AMQP 0-9-1).

use bytes::{BufMut, BytesMut};

use crate::error::{Error, Result};
pub use warren::stream::protocol::{RESPONSE_FLAG, code, key};

/// Bytes of the size prefix.
const SIZE_PREFIX: usize = 4;

/// A response's key.
pub const fn response(k: u16) -> u16 {
    k | RESPONSE_FLAG
}

/// The name of a response code, for error messages.
pub fn code_name(c: u16) -> &'static str {
    match c {
        code::OK => "ok",
        code::STREAM_DOES_NOT_EXIST => "stream does not exist",
        code::SUBSCRIPTION_ID_ALREADY_EXISTS => "subscription id already exists",
        code::SUBSCRIPTION_ID_DOES_NOT_EXIST => "subscription id does not exist",
        code::STREAM_ALREADY_EXISTS => "stream already exists",
        code::STREAM_NOT_AVAILABLE => "stream not available",
        code::SASL_MECHANISM_NOT_SUPPORTED => "SASL mechanism not supported",
        code::AUTHENTICATION_FAILURE => "authentication failure",
        code::SASL_AUTHENTICATION_FAILURE_LOOPBACK => "authentication failure (loopback only)",
        code::VIRTUAL_HOST_ACCESS_FAILURE => "virtual host access failure",
        code::UNKNOWN_FRAME => "unknown frame",
        code::FRAME_TOO_LARGE => "frame too large",
        code::INTERNAL_ERROR => "internal error",
        code::ACCESS_REFUSED => "access refused",
        code::PRECONDITION_FAILED => "precondition failed",
        code::PUBLISHER_DOES_NOT_EXIST => "publisher does not exist",
        _ => "unknown code",
    }
}

// ---------------------------------------------------------------------------------------------
// Writing.

/// Start a frame (size to be patched by [`end`]); returns where it starts.
pub fn begin(b: &mut BytesMut, key: u16) -> usize {
    let start = b.len();
    b.put_u32(0);
    b.put_u16(key);
    b.put_u16(1);
    start
}

/// Patch the size of the frame started at `start`.
pub fn end(b: &mut BytesMut, start: usize) {
    let size = (b.len() - start - SIZE_PREFIX) as u32;
    b[start..start + SIZE_PREFIX].copy_from_slice(&size.to_be_bytes());
}

pub fn put_str(b: &mut BytesMut, s: &str) {
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}

pub fn put_map(b: &mut BytesMut, m: &[(&str, &str)]) {
    b.put_i32(m.len() as i32);
    for (k, v) in m {
        put_str(b, k);
        put_str(b, v);
    }
}

/// Append a request: key, version 1, `correlation`, then what `body` writes.
pub fn put_request(b: &mut BytesMut, key: u16, correlation: u32, body: impl FnOnce(&mut BytesMut)) {
    let at = begin(b, key);
    b.put_u32(correlation);
    body(b);
    end(b, at);
}

/// Append `PeerProperties(properties)`.
pub fn put_peer_properties(b: &mut BytesMut, correlation: u32, properties: &[(&str, &str)]) {
    put_request(b, key::PEER_PROPERTIES, correlation, |b| put_map(b, properties));
}

/// Append `SaslHandshake`.
pub fn put_sasl_handshake(b: &mut BytesMut, correlation: u32) {
    put_request(b, key::SASL_HANDSHAKE, correlation, |_| {});
}

/// Append `SaslAuthenticate(PLAIN, \0user\0pass)`.
pub fn put_sasl_plain(b: &mut BytesMut, correlation: u32, user: &str, pass: &str) {
    put_request(b, key::SASL_AUTHENTICATE, correlation, |b| {
        put_str(b, "PLAIN");
        b.put_i32((user.len() + pass.len() + 2) as i32);
        b.put_u8(0);
        b.put_slice(user.as_bytes());
        b.put_u8(0);
        b.put_slice(pass.as_bytes());
    });
}

/// Append the client's answer to the server's Tune.
pub fn put_tune_response(b: &mut BytesMut, frame_max: u32, heartbeat: u32) {
    let at = begin(b, key::TUNE_RESPONSE);
    b.put_u32(frame_max);
    b.put_u32(heartbeat);
    end(b, at);
}

/// Append `Open(vhost)`.
pub fn put_open(b: &mut BytesMut, correlation: u32, vhost: &str) {
    put_request(b, key::OPEN, correlation, |b| put_str(b, vhost));
}

/// Append `Create(stream)` with no arguments (the broker's defaults).
pub fn put_create(b: &mut BytesMut, correlation: u32, stream: &str) {
    put_request(b, key::CREATE, correlation, |b| {
        put_str(b, stream);
        put_map(b, &[]);
    });
}

/// Append `Delete(stream)`.
pub fn put_delete(b: &mut BytesMut, correlation: u32, stream: &str) {
    put_request(b, key::DELETE, correlation, |b| put_str(b, stream));
}

/// Append `DeclarePublisher(publisher, no reference, stream)`.
pub fn put_declare_publisher(b: &mut BytesMut, correlation: u32, publisher: u8, stream: &str) {
    put_request(b, key::DECLARE_PUBLISHER, correlation, |b| {
        b.put_u8(publisher);
        put_str(b, "");
        put_str(b, stream);
    });
}

/// Append `Close(OK, "warren-perf done")`.
pub fn put_close(b: &mut BytesMut, correlation: u32) {
    put_request(b, key::CLOSE, correlation, |b| {
        b.put_u16(code::OK);
        put_str(b, "warren-perf done");
    });
}

/// Append a Publish v1 frame of `n` messages from `tpl`, publishing ids `first..first + n`.
pub fn put_publish(b: &mut BytesMut, publisher: u8, tpl: &MessageTemplate, first: u64, n: u64, stamp: u64) {
    let at = begin(b, key::PUBLISH);
    b.put_u8(publisher);
    b.put_i32(n as i32);
    for id in first..first + n {
        tpl.put(b, id, stamp);
    }
    end(b, at);
}

/// Append `Subscribe(subscription, stream, offset, credit)` with no properties.
pub fn put_subscribe(
    b: &mut BytesMut,
    correlation: u32,
    subscription: u8,
    stream: &str,
    offset: StreamOffset,
    credit: u16,
) {
    put_request(b, key::SUBSCRIBE, correlation, |b| {
        b.put_u8(subscription);
        put_str(b, stream);
        offset.put(b);
        b.put_u16(credit);
        put_map(b, &[]);
    });
}

/// Append `Unsubscribe(subscription)`.
pub fn put_unsubscribe(b: &mut BytesMut, correlation: u32, subscription: u8) {
    put_request(b, key::UNSUBSCRIBE, correlation, |b| b.put_u8(subscription));
}

/// A response's correlation id and code; a code other than OK is an error naming `what`.
pub fn expect_ok(body: Reader<'_>, what: &str) -> Result<u32> {
    let mut r = body;
    let (correlation, c) = (r.u32()?, r.u16()?);
    if c != code::OK {
        return Err(refused(what, c));
    }
    Ok(correlation)
}

/// A request the broker answered with code `c`.
pub fn refused(what: &str, c: u16) -> Error {
    Error::Protocol(format!("{what} refused: {c:#04x} ({})", code_name(c)))
}

/// `Credit(subscription, n)`: `n` more chunks.
pub fn put_credit(b: &mut BytesMut, subscription: u8, n: u16) {
    let at = begin(b, key::CREDIT);
    b.put_u8(subscription);
    b.put_u16(n);
    end(b, at);
}

/// Where a subscription starts (Subscribe's OffsetSpecification).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamOffset {
    First,
    Last,
    Next,
    Offset(u64),
}

impl StreamOffset {
    pub fn parse(s: &str) -> Result<StreamOffset> {
        Ok(match s {
            "first" => StreamOffset::First,
            "last" => StreamOffset::Last,
            "next" => StreamOffset::Next,
            n => StreamOffset::Offset(
                n.parse().map_err(|_| Error::Usage(format!("--stream-offset {n:?}: first, last, next or a number")))?,
            ),
        })
    }

    pub fn put(self, b: &mut BytesMut) {
        match self {
            StreamOffset::First => b.put_u16(1),
            StreamOffset::Last => b.put_u16(2),
            StreamOffset::Next => b.put_u16(3),
            StreamOffset::Offset(o) => {
                b.put_u16(4);
                b.put_u64(o);
            }
        }
    }

    /// The lowest offset a consumer counts (records before it in the first chunk are skipped).
    pub fn floor(self) -> u64 {
        if let StreamOffset::Offset(o) = self { o } else { 0 }
    }

    /// The same start as `x-stream-offset` for an AMQP 0-9-1 consumer.
    pub fn amqp_argument(self) -> amq_protocol_types::AMQPValue {
        use amq_protocol_types::AMQPValue;
        match self {
            StreamOffset::First => AMQPValue::LongString("first".into()),
            StreamOffset::Last => AMQPValue::LongString("last".into()),
            StreamOffset::Next => AMQPValue::LongString("next".into()),
            StreamOffset::Offset(o) => AMQPValue::LongLongInt(o as i64),
        }
    }
}

/// A message as stream clients publish it: an AMQP 1.0 `data` section holding a body of
/// `size` octets whose first 8 carry the send time.
#[derive(Debug, Clone)]
pub struct MessageTemplate {
    bytes: Vec<u8>,
    /// Where the body starts.
    body_at: usize,
}

impl MessageTemplate {
    pub fn new(size: usize) -> MessageTemplate {
        let mut bytes = vec![0x00, 0x53, 0x75];
        if size <= u8::MAX as usize {
            bytes.extend_from_slice(&[0xa0, size as u8]);
        } else {
            bytes.push(0xb0);
            bytes.extend_from_slice(&(size as u32).to_be_bytes());
        }
        let body_at = bytes.len();
        bytes.extend((0..size).map(|i| b'a' + (i % 26) as u8));
        MessageTemplate { bytes, body_at }
    }

    /// Octets one message takes in a Publish frame (publishing id, length, message).
    pub fn wire_len(&self) -> usize {
        8 + 4 + self.bytes.len()
    }

    /// Append one published message (publishing id, length, message) stamped with `stamp`.
    #[inline]
    pub fn put(&self, b: &mut BytesMut, publishing_id: u64, stamp: u64) {
        b.put_u64(publishing_id);
        b.put_u32(self.bytes.len() as u32);
        let at = b.len() + self.body_at;
        b.put_slice(&self.bytes);
        let stamp = stamp.to_be_bytes();
        let n = (self.bytes.len() - self.body_at).min(8);
        b[at..at + n].copy_from_slice(&stamp[..n]);
    }
}

// ---------------------------------------------------------------------------------------------
// Reading.

/// The length (size prefix included) of the whole frame at the front of `buf`, or None while
/// it is incomplete (room is reserved for it). A frame over `max` octets is an error.
pub fn peek(buf: &mut BytesMut, max: u32) -> Result<Option<usize>> {
    let Some(p) = buf.get(..SIZE_PREFIX) else { return Ok(None) };
    let size = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
    if size < 4 {
        return Err(Error::Protocol(format!("stream frame of {size} octets has no key and version")));
    }
    if max != 0 && size > max {
        return Err(Error::Protocol(format!("stream frame of {size} octets exceeds the frame_max {max}")));
    }
    let total = SIZE_PREFIX + size as usize;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    Ok(Some(total))
}

/// One frame: its key, version and what follows them.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub key: u16,
    pub version: u16,
    pub body: Reader<'a>,
}

impl<'a> Frame<'a> {
    /// The frame occupying `buf[..total]` (from [`peek`]).
    pub fn at(buf: &'a [u8], total: usize) -> Frame<'a> {
        let f = &buf[SIZE_PREFIX..total];
        Frame {
            key: u16::from_be_bytes([f[0], f[1]]),
            version: u16::from_be_bytes([f[2], f[3]]),
            body: Reader(&f[4..]),
        }
    }

    /// A frame a client cannot go on after: the server closing, or a stream going away.
    pub fn fatal(&self) -> Option<Error> {
        let mut r = self.body;
        match self.key {
            key::CLOSE => {
                let (_, c, reason) = (r.u32().ok()?, r.u16().ok()?, r.str().ok()?);
                Some(Error::Protocol(format!(
                    "the broker closed the stream connection: {c:#04x} ({}) {reason}",
                    code_name(c)
                )))
            }
            key::METADATA_UPDATE => {
                let (c, stream) = (r.u16().ok()?, r.str().ok()?);
                Some(Error::Protocol(format!("stream {stream:?} went away (metadata update {c:#04x})")))
            }
            k if k == response(key::CREDIT) => {
                let c = r.u16().ok()?;
                Some(Error::Protocol(format!("credit refused: {c:#04x} ({})", code_name(c))))
            }
            _ => None,
        }
    }
}

/// Big-endian fields from a frame body; running short is a protocol error.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(Error::Protocol("truncated stream frame".into()));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().expect("2 octets")))
    }
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4 octets")))
    }
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8 octets")))
    }
    pub fn str(&mut self) -> Result<String> {
        let n = self.u16()? as i16;
        if n < 0 {
            return Ok(String::new());
        }
        Ok(String::from_utf8_lossy(self.take(n as usize)?).into_owned())
    }
    /// An array's element count.
    pub fn count(&mut self) -> Result<usize> {
        let n = self.u32()? as i32;
        usize::try_from(n).map_err(|_| Error::Protocol(format!("negative array length {n}")))
    }
    pub fn rest(&self) -> &'a [u8] {
        self.0
    }
}

/// The body of an AMQP 1.0 message: its `data` section (sections before it are skipped:
/// header, annotations, properties, application properties, as a broker converting an AMQP
/// 0-9-1 message writes them). None when there is no data section or it cannot be read.
pub fn message_body(mut m: &[u8]) -> Option<&[u8]> {
    loop {
        // A section: 0x00, a small-ulong descriptor (0x53 code) or a ulong (0x80 u64), a value.
        if *m.first()? != 0x00 {
            return None;
        }
        let (descriptor, rest) = match *m.get(1)? {
            0x53 => (*m.get(2)? as u64, m.get(3..)?),
            0x80 => (u64::from_be_bytes(m.get(2..10)?.try_into().ok()?), m.get(10..)?),
            _ => return None,
        };
        // The value's constructor: binary, list or map with a 1- or 4-octet size, or list0/null.
        let (len, head) = match *rest.first()? {
            0xa0 | 0xc0 | 0xc1 => (*rest.get(1)? as usize, 2),
            0xb0 | 0xd0 | 0xd1 => (u32::from_be_bytes(rest.get(1..5)?.try_into().ok()?) as usize, 5),
            0x40 | 0x45 => (0, 1),
            _ => return None,
        };
        let value = rest.get(head..head + len)?;
        if descriptor == 0x75 {
            return matches!(rest[0], 0xa0 | 0xb0).then_some(value);
        }
        m = &rest[head + len..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_sized_and_read_back() {
        let mut b = BytesMut::new();
        put_credit(&mut b, 3, 1);
        assert_eq!(&b[..], &[0, 0, 0, 7, 0, 9, 0, 1, 3, 0, 1]);
        let total = peek(&mut b, 0).unwrap().unwrap();
        assert_eq!(total, 11);
        let mut f = Frame::at(&b, total);
        assert_eq!((f.key, f.version), (key::CREDIT, 1));
        assert_eq!((f.body.u8().unwrap(), f.body.u16().unwrap()), (3, 1));
        assert!(f.body.u8().is_err());
        let mut part = BytesMut::from(&b[..6]);
        assert!(peek(&mut part, 0).unwrap().is_none());
        assert!(peek(&mut b, 6).is_err());
    }

    #[test]
    fn published_messages_are_amqp10_data_sections_with_a_stamp() {
        let t = MessageTemplate::new(16);
        let mut b = BytesMut::new();
        t.put(&mut b, 7, 0x0102_0304_0506_0708);
        assert_eq!(b.len(), t.wire_len());
        assert_eq!(&b[..8], &7u64.to_be_bytes());
        assert_eq!(&b[8..12], &21u32.to_be_bytes());
        let body = message_body(&b[12..]).unwrap();
        assert_eq!(body.len(), 16);
        assert_eq!(&body[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        let big = MessageTemplate::new(300);
        let mut b = BytesMut::new();
        big.put(&mut b, 1, 9);
        assert_eq!(message_body(&b[12..]).unwrap().len(), 300);
        // Short bodies keep what fits of the stamp.
        let mut b = BytesMut::new();
        MessageTemplate::new(3).put(&mut b, 1, u64::MAX);
        assert_eq!(message_body(&b[12..]).unwrap(), &[0xff, 0xff, 0xff]);
    }

    #[test]
    fn the_body_is_found_after_other_sections() {
        // header (list8 of 1 item), message annotations (map8), properties (list0), data.
        let m = [
            0x00, 0x53, 0x70, 0xc0, 0x02, 0x01, 0x41, //
            0x00, 0x53, 0x72, 0xc1, 0x01, 0x00, //
            0x00, 0x53, 0x73, 0x45, //
            0x00, 0x53, 0x75, 0xa0, 0x02, b'h', b'i',
        ];
        assert_eq!(message_body(&m), Some(&b"hi"[..]));
        assert_eq!(message_body(&m[..m.len() - 1]), None);
        assert_eq!(message_body(&[0x00, 0x53, 0x77, 0xa1, 0x01, b'x']), None, "amqp-value is not a data section");
    }

    /// Every frame the tool sends, as Warren's own parser reads it.
    #[test]
    fn warren_parses_what_the_tool_sends() {
        use bytes::Bytes;
        use warren::stream::protocol::frame::{ClientFrame as F, OffsetSpec, PublishEntry, parse};
        let parsed = |enc: &dyn Fn(&mut BytesMut)| {
            let mut b = BytesMut::new();
            enc(&mut b);
            let total = peek(&mut b, 0).unwrap().expect("a whole frame");
            assert_eq!(total, b.len(), "one frame, its size right");
            parse(&Bytes::copy_from_slice(&b[4..])).unwrap()
        };
        let s = |v: &str| bytestring::ByteString::from(v.to_string());
        assert_eq!(
            parsed(&|b| put_peer_properties(b, 1, &[("product", "warren-perf")])),
            F::PeerProperties { correlation_id: 1, properties: vec![(s("product"), s("warren-perf"))] }
        );
        assert_eq!(parsed(&|b| put_sasl_handshake(b, 2)), F::SaslHandshake { correlation_id: 2 });
        assert_eq!(
            parsed(&|b| put_sasl_plain(b, 3, "guest", "pw")),
            F::SaslAuthenticate { correlation_id: 3, mechanism: s("PLAIN"), data: Bytes::from_static(b"\0guest\0pw") }
        );
        assert_eq!(parsed(&|b| put_tune_response(b, 1 << 20, 0)), F::Tune { frame_max: 1 << 20, heartbeat: 0 });
        assert_eq!(parsed(&|b| put_open(b, 4, "/")), F::Open { correlation_id: 4, vhost: s("/") });
        assert_eq!(
            parsed(&|b| put_create(b, 5, "st")),
            F::Create { correlation_id: 5, stream: s("st"), arguments: vec![] }
        );
        assert_eq!(parsed(&|b| put_delete(b, 6, "st")), F::Delete { correlation_id: 6, stream: s("st") });
        assert_eq!(
            parsed(&|b| put_declare_publisher(b, 7, 0, "st")),
            F::DeclarePublisher { correlation_id: 7, publisher_id: 0, reference: None, stream: s("st") }
        );
        for (offset, spec) in [
            (StreamOffset::First, OffsetSpec::First),
            (StreamOffset::Next, OffsetSpec::Next),
            (StreamOffset::Offset(9), OffsetSpec::Offset(9)),
        ] {
            assert_eq!(
                parsed(&|b| put_subscribe(b, 8, 0, "st", offset, 10)),
                F::Subscribe {
                    correlation_id: 8,
                    subscription_id: 0,
                    stream: s("st"),
                    offset: spec,
                    credit: 10,
                    properties: vec![]
                }
            );
        }
        assert_eq!(parsed(&|b| put_credit(b, 0, 1)), F::Credit { subscription_id: 0, credit: 1 });
        assert_eq!(parsed(&|b| put_unsubscribe(b, 9, 0)), F::Unsubscribe { correlation_id: 9, subscription_id: 0 });
        assert_eq!(
            parsed(&|b| put_close(b, 10)),
            F::Close { correlation_id: 10, code: code::OK, reason: s("warren-perf done") }
        );
        let tpl = MessageTemplate::new(16);
        let F::Publish { version, publisher_id, messages } = parsed(&|b| put_publish(b, 0, &tpl, 11, 3, 42)) else {
            panic!("not a Publish")
        };
        assert_eq!((version, publisher_id, messages.len()), (1, 0, 3));
        for (m, id) in messages.iter().zip(11..) {
            assert_eq!((m.publishing_id, &m.filter_value), (id, &None));
            let PublishEntry::Simple(data) = &m.entry else { panic!("not a simple entry") };
            assert_eq!(&message_body(data).unwrap()[..8], &42u64.to_be_bytes());
        }
    }

    #[test]
    fn offsets() {
        assert_eq!(StreamOffset::parse("first").unwrap(), StreamOffset::First);
        assert_eq!(StreamOffset::parse("42").unwrap(), StreamOffset::Offset(42));
        assert!(StreamOffset::parse("x").is_err());
        let mut b = BytesMut::new();
        StreamOffset::Offset(5).put(&mut b);
        assert_eq!(&b[..], &[0, 4, 0, 0, 0, 0, 0, 0, 0, 5]);
    }
}
