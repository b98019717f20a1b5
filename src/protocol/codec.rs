//! Frame decoder: bytes from the socket → [`Frame`]s.
//!
//! A `tokio_util` [`Decoder`]: it checks that a whole frame is buffered, validates the header
//! (type, size against the negotiated frame_max, end octet), then parses. Incomplete input is
//! `Ok(None)`. Every malformed input becomes an [`AmqpError`] with RabbitMQ's code (501 frame
//! error, 540 for an unknown method); no byte sequence can make it panic.

use bytes::{Buf, Bytes, BytesMut};
use bytestring::ByteString;

use super::properties::Summary;
use super::routing_key::RoutingKey;
use tokio_util::codec::Decoder;

use super::{
    AMQPClass, BasicProperties, FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, FRAME_OVERHEAD,
    is_known_method,
};
use crate::error::AmqpError;

/// One decoded frame, kept small: a frame travels through several async layers, and moving a
/// few hundred bytes at each one cost more (profiled) than the work on it. So other methods
/// are boxed, and a content header stays undecoded until its channel takes it
/// ([`parse_header`]). `basic.publish`, the one method of the hot path, is read by hand
/// into [`BasicPublish`], whose names are slices of the read buffer: no allocation.
#[derive(Debug, Clone)]
pub enum Frame {
    Method { channel: u16, method: Box<AMQPClass> },
    Publish { channel: u16, method: BasicPublish },
    Header { channel: u16, payload: Bytes },
    Body { channel: u16, payload: Bytes },
    Heartbeat { channel: u16 },
}

impl Frame {
    pub fn channel(&self) -> u16 {
        match self {
            Frame::Method { channel, .. }
            | Frame::Publish { channel, .. }
            | Frame::Header { channel, .. }
            | Frame::Body { channel, .. }
            | Frame::Heartbeat { channel } => *channel,
        }
    }
}

/// `basic.publish`'s arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicPublish {
    pub exchange: ByteString,
    pub routing_key: RoutingKey,
    pub mandatory: bool,
    pub immediate: bool,
}

impl BasicPublish {
    /// The same method as amq-protocol's type (for the cold paths that take any method).
    pub fn to_class(&self) -> AMQPClass {
        use amq_protocol::protocol::basic;
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: (&*self.exchange).into(),
            routing_key: (&*self.routing_key).into(),
            mandatory: self.mandatory,
            immediate: self.immediate,
        }))
    }
}

/// A content header frame, checked, with its raw payload kept for forwarding. Its properties
/// are decoded only when checking them needed it (see [`super::properties`]).
#[derive(Debug, Clone)]
pub struct ContentHeader {
    pub channel: u16,
    pub class_id: u16,
    pub body_size: u64,
    pub summary: Summary,
    pub decoded: Option<Box<BasicProperties>>,
    /// The whole header payload (class, weight, body size, flags, properties) as received.
    pub raw: Bytes,
}

/// Why decoding stopped: a protocol fault to report, or the socket failed.
#[derive(Debug)]
pub enum DecodeError {
    Protocol(AmqpError),
    Io(std::io::Error),
}

impl From<std::io::Error> for DecodeError {
    fn from(e: std::io::Error) -> Self {
        DecodeError::Io(e)
    }
}

impl From<AmqpError> for DecodeError {
    fn from(e: AmqpError) -> Self {
        DecodeError::Protocol(e)
    }
}

/// Decoder of AMQP frames (after the 8-byte protocol header has been read).
#[derive(Debug)]
pub struct FrameCodec {
    /// Largest frame accepted, framing included (the negotiated frame_max).
    frame_max: u32,
}

impl FrameCodec {
    pub fn new(frame_max: u32) -> Self {
        FrameCodec { frame_max }
    }

    /// Apply a newly negotiated frame_max.
    pub fn set_frame_max(&mut self, frame_max: u32) {
        self.frame_max = frame_max;
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = DecodeError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        if src.len() < 7 {
            return Ok(None);
        }
        let frame_type = src[0];
        let channel = u16::from_be_bytes([src[1], src[2]]);
        let size = u32::from_be_bytes([src[3], src[4], src[5], src[6]]) as usize;
        // As RabbitMQ 3.10 (measured): a payload of up to frame_max bytes passes, though the text
        // names frame_max minus the framing as the limit.
        let limit = (self.frame_max as usize).saturating_sub(FRAME_OVERHEAD);
        if size > self.frame_max as usize {
            return Err(AmqpError::frame_error(format_args!(
                "type {frame_type}, all octets = <<>>: {{frame_too_large,{size},{limit}}}"
            ))
            .into());
        }
        let total = size + FRAME_OVERHEAD;
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        let mut frame = src.split_to(total);
        let end = frame[total - 1];
        frame.advance(7);
        frame.truncate(size);
        let payload = frame.freeze();
        if end != FRAME_END {
            return Err(AmqpError::frame_error(format_args!(
                "type {frame_type}, all octets = {}: {{invalid_frame_end_marker,{end}}}",
                octets(&payload)
            ))
            .into());
        }
        let frame = match frame_type {
            FRAME_METHOD if payload.starts_with(&BASIC_PUBLISH_ID) => {
                Frame::Publish { channel, method: parse_publish(&payload)? }
            }
            FRAME_METHOD => Frame::Method { channel, method: Box::new(parse_method(&payload)?) },
            FRAME_HEADER => Frame::Header { channel, payload },
            FRAME_BODY => Frame::Body { channel, payload },
            FRAME_HEARTBEAT if payload.is_empty() => Frame::Heartbeat { channel },
            other => {
                return Err(AmqpError::frame_error(format_args!(
                    "type {other}, all octets = {}: unknown_frame",
                    octets(&payload)
                ))
                .into());
            }
        };
        Ok(Some(frame))
    }
}

/// Parse a method frame payload.
pub fn parse_method(payload: &[u8]) -> Result<AMQPClass, AmqpError> {
    if payload.len() < 4 {
        return Err(AmqpError::frame_error(format_args!("cannot decode {}", octets(payload))));
    }
    let class_id = u16::from_be_bytes([payload[0], payload[1]]);
    let method_id = u16::from_be_bytes([payload[2], payload[3]]);
    if !is_known_method(class_id, method_id) {
        return Err(AmqpError::not_implemented(format_args!("unknown method {{{class_id},{method_id}}}"))
            .on(class_id, method_id));
    }
    // basic.qos: amq-protocol parses but drops prefetch-size, which RabbitMQ refuses when set.
    if (class_id, method_id) == (super::CLASS_BASIC, 10) && payload.len() >= 8 {
        let prefetch_size = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
        if prefetch_size != 0 {
            return Err(
                AmqpError::not_implemented(format_args!("prefetch_size!=0 ({prefetch_size})")).on(class_id, method_id)
            );
        }
    }
    // The one field table some methods carry is checked (iteratively, depth-bounded) before
    // amq-protocol's recursive decoder sees it.
    let cannot_decode =
        || AmqpError::frame_error(format_args!("cannot decode {}", octets(&payload[4..]))).on(class_id, method_id);
    if let Some(at) = super::fields::method_table_offset(payload) {
        match super::fields::check_table(&payload[at..]) {
            Ok(_) => {}
            Err(e @ super::fields::FieldError::TooDeep) => {
                return Err(AmqpError::frame_error(format_args!("cannot decode {}: {e}", octets(&payload[4..])))
                    .on(class_id, method_id));
            }
            Err(super::fields::FieldError::Malformed) => return Err(cannot_decode()),
        }
    }
    match amq_protocol::protocol::parse_class(payload) {
        // Bytes left after the arguments are refused, as RabbitMQ refuses them.
        Ok(([], class)) => Ok(class),
        Ok(_) => Err(cannot_decode()),
        // amq-protocol's only mapped-result parser is the UTF-8 check of short strings:
        // RabbitMQ names it, on no method in particular.
        Err(e) if e.to_string().contains("MapRes") => Err(AmqpError::frame_error("Malformed UTF-8 in shortstr")),
        Err(_) => Err(cannot_decode()),
    }
}

/// The class and method octets of `basic.publish` (60, 40).
const BASIC_PUBLISH_ID: [u8; 4] = [0, 60, 0, 40];

/// Parse a `basic.publish` payload (class and method ids included): reserved short, exchange
/// and routing key as short strings, then the flag bits. The strings share the payload's
/// buffer. As RabbitMQ, any bytes are accepted: a routing key keeps them (see
/// [`RoutingKey`]); an exchange name that is not UTF-8 is looked up as text (and not found).
pub fn parse_publish(payload: &Bytes) -> Result<BasicPublish, AmqpError> {
    let malformed = || {
        AmqpError::frame_error(format_args!("cannot decode {}", octets(payload.get(4..).unwrap_or_default())))
            .on(super::CLASS_BASIC, 40)
    };
    let short_str = |at: usize| -> Result<(Bytes, usize), AmqpError> {
        let len = *payload.get(at).ok_or_else(malformed)? as usize;
        let end = at + 1 + len;
        if end > payload.len() {
            return Err(malformed());
        }
        Ok((payload.slice(at + 1..end), end))
    };
    let (exchange, at) = short_str(6)?;
    let exchange = super::routing_key::text(exchange).unwrap_or_else(|raw| super::routing_key::lossy(&raw));
    let (routing_key, at) = short_str(at)?;
    let routing_key = RoutingKey::from_wire(routing_key);
    let bits = *payload.get(at).ok_or_else(malformed)?;
    // Bytes after the arguments are refused, as parse_method (and RabbitMQ) refuses them.
    if at + 1 != payload.len() {
        return Err(malformed());
    }
    Ok(BasicPublish { exchange, routing_key, mandatory: bits & 1 != 0, immediate: bits & 2 != 0 })
}

/// Parse a content header payload, keeping the raw bytes. As RabbitMQ 3.10 answers (measured):
/// a payload too short for its fixed fields is a frame error; properties that cannot be
/// decoded are 541 INTERNAL_ERROR (its channel process crashes decoding them); property
/// strings that are not UTF-8 are accepted and forwarded as they are.
pub fn parse_header(channel: u16, raw: Bytes) -> Result<ContentHeader, AmqpError> {
    let fixed = |raw: &Bytes| {
        let class_id = u16::from_be_bytes([raw[0], raw[1]]);
        let body_size = u64::from_be_bytes(raw[4..12].try_into().expect("14 bytes or more"));
        (class_id, body_size)
    };
    if let Some(summary) = super::properties::scan(&raw) {
        let (class_id, body_size) = fixed(&raw);
        return Ok(ContentHeader { channel, class_id, body_size, summary, decoded: None, raw });
    }
    if raw.len() < 14 {
        return Err(AmqpError::frame_error(format_args!(
            "type {FRAME_HEADER}, all octets = {}: unknown_frame",
            octets(&raw)
        )));
    }
    let properties = match super::properties::decode_checked(&raw) {
        Ok(p) => p,
        Err(e @ super::fields::FieldError::TooDeep) => {
            return Err(AmqpError::frame_error(format_args!("cannot decode content header {}: {e}", octets(&raw))));
        }
        Err(super::fields::FieldError::Malformed) => return Err(AmqpError::internal()),
    };
    let (class_id, body_size) = fixed(&raw);
    Ok(ContentHeader {
        channel,
        class_id,
        body_size,
        summary: super::properties::summarize(&properties),
        decoded: Some(Box::new(properties)),
        raw,
    })
}

/// Erlang-style rendering of (at most the first 32) octets, as RabbitMQ prints them with `~p`:
/// a binary of printable ASCII as a string (`<<"abc">>`), any other as numbers.
pub fn octets(bytes: &[u8]) -> String {
    if !bytes.is_empty() && bytes.len() <= 64 && bytes.iter().all(|b| (0x20..0x7F).contains(b)) {
        let text: String = bytes
            .iter()
            .flat_map(|&b| match b {
                b'"' | b'\\' => vec!['\\', b as char],
                _ => vec![b as char],
            })
            .collect();
        return format!("<<\"{text}\">>");
    }
    let shown = &bytes[..bytes.len().min(32)];
    let parts: Vec<String> = shown.iter().map(|b| b.to_string()).collect();
    let ellipsis = if bytes.len() > shown.len() { ",..." } else { "" };
    format!("<<{}{}>>", parts.join(","), ellipsis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ReplyCode;
    use crate::protocol::encode;

    fn decode_all(codec: &mut FrameCodec, bytes: &[u8]) -> Result<Vec<Frame>, DecodeError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(f) = codec.decode(&mut buf)? {
            out.push(f);
        }
        Ok(out)
    }

    fn protocol_error(r: Result<Vec<Frame>, DecodeError>) -> AmqpError {
        match r {
            Err(DecodeError::Protocol(e)) => e,
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }

    #[test]
    fn method_round_trip() {
        use amq_protocol::protocol::queue;
        let m = AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "tasks".into(),
            durable: true,
            ..Default::default()
        }));
        let mut buf = BytesMut::new();
        encode::method(&mut buf, 3, &m);
        let frames = decode_all(&mut FrameCodec::new(131072), &buf).unwrap();
        match &frames[..] {
            [Frame::Method { channel: 3, method }] => assert_eq!(**method, m),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn content_round_trip_keeps_raw_header_and_splits_body() {
        let props = BasicProperties::default().with_priority(7).with_content_type("text/plain".into());
        let raw = encode::content_header_payload(60, 10_000, &props);
        let body = Bytes::from(vec![42u8; 10_000]);
        let mut buf = BytesMut::new();
        encode::content(&mut buf, 1, &raw, std::slice::from_ref(&body), 4096);
        let frames = decode_all(&mut FrameCodec::new(4096), &buf).unwrap();
        let Frame::Header { channel: 1, payload } = &frames[0] else { panic!("expected header") };
        let h = parse_header(1, payload.clone()).unwrap();
        assert_eq!(h.body_size, 10_000);
        assert_eq!(h.summary.priority, Some(7));
        assert_eq!(h.raw, raw);
        let mut got = Vec::new();
        for f in &frames[1..] {
            let Frame::Body { payload, .. } = f else { panic!("expected body") };
            assert!(payload.len() <= 4096 - 8);
            got.extend_from_slice(payload);
        }
        assert_eq!(frames.len(), 1 + 3);
        assert_eq!(got, body);
    }

    #[test]
    fn truncated_input_is_incomplete_not_error() {
        let mut full = BytesMut::new();
        encode::heartbeat(&mut full);
        encode::body_frame(&mut full, 1, b"hello");
        for cut in 0..full.len() {
            let mut codec = FrameCodec::new(131072);
            let mut buf = BytesMut::from(&full[..cut]);
            let mut n = 0;
            while let Some(_f) = codec.decode(&mut buf).unwrap() {
                n += 1;
            }
            assert!(n <= 1, "cut {cut}");
        }
    }

    #[test]
    fn wrong_frame_end_is_501() {
        let e = protocol_error(decode_all(&mut FrameCodec::new(131072), &[1, 0, 0, 0, 0, 0, 4, 0, 60, 0, 10, 0]));
        assert_eq!(e.code, ReplyCode::FrameError);
        assert_eq!(e.text, "FRAME_ERROR - type 1, all octets = <<0,60,0,10>>: {invalid_frame_end_marker,0}");
    }

    #[test]
    fn a_payload_of_frame_max_bytes_passes_as_in_rabbitmq() {
        let mut bytes = vec![3, 0, 1, 0, 0, 0x10, 0];
        bytes.extend_from_slice(&[b'x'; 4096]);
        bytes.push(0xCE);
        let frames = decode_all(&mut FrameCodec::new(4096), &bytes).unwrap();
        assert!(matches!(&frames[..], [Frame::Body { payload, .. }] if payload.len() == 4096));
        let e = protocol_error(decode_all(&mut FrameCodec::new(4096), &[3, 0, 1, 0, 0, 0x10, 1]));
        assert_eq!(e.text, "FRAME_ERROR - type 3, all octets = <<>>: {frame_too_large,4097,4088}");
    }

    #[test]
    fn trailing_argument_bytes_and_non_utf8_names_are_refused_as_rabbitmq_refuses_them() {
        // queue.declare "", flags, empty table, then junk.
        let mut p = vec![0, 50, 0, 10, 0, 0, 0, 8, 0, 0, 0, 0];
        assert!(parse_method(&p).is_ok());
        p.extend_from_slice(b"junk");
        let e = parse_method(&p).unwrap_err();
        assert_eq!((e.code, e.class_id, e.method_id), (ReplyCode::FrameError, 50, 10));
        assert!(e.text.starts_with("FRAME_ERROR - cannot decode <<0,0,0,8,"), "{}", e.text);
        let p = [0, 50, 0, 10, 0, 0, 2, b'q', 0xFF, 8, 0, 0, 0, 0];
        let e = parse_method(&p).unwrap_err();
        assert_eq!((e.text.as_str(), e.class_id, e.method_id), ("FRAME_ERROR - Malformed UTF-8 in shortstr", 0, 0));
    }

    #[test]
    fn oversized_frame_is_501_before_the_payload_arrives() {
        let e = protocol_error(decode_all(&mut FrameCodec::new(131072), &[3, 0, 1, 0, 2, 0, 1]));
        assert_eq!(e.code, ReplyCode::FrameError);
        assert_eq!(e.text, "FRAME_ERROR - type 3, all octets = <<>>: {frame_too_large,131073,131064}");
    }

    #[test]
    fn unknown_frame_type_is_501() {
        let e =
            protocol_error(decode_all(&mut FrameCodec::new(131072), &[9, 0, 0, 0, 0, 0, 3, b'a', b'b', b'c', 0xCE]));
        assert_eq!(e.text, "FRAME_ERROR - type 9, all octets = <<\"abc\">>: unknown_frame");
        let e = protocol_error(decode_all(&mut FrameCodec::new(131072), &[9, 0, 0, 0, 0, 0, 2, 0, 0xFF, 0xCE]));
        assert_eq!(e.text, "FRAME_ERROR - type 9, all octets = <<0,255>>: unknown_frame");
        // A heartbeat carries nothing (RabbitMQ 3.10.8 answers one with a payload so).
        let e =
            protocol_error(decode_all(&mut FrameCodec::new(131072), &[8, 0, 0, 0, 0, 0, 3, b'a', b'b', b'c', 0xCE]));
        assert_eq!(e.text, "FRAME_ERROR - type 8, all octets = <<\"abc\">>: unknown_frame");
    }

    #[test]
    fn unknown_method_is_540_and_truncated_args_are_501() {
        let e = protocol_error(decode_all(&mut FrameCodec::new(131072), &[1, 0, 1, 0, 0, 0, 4, 0, 99, 0, 10, 0xCE]));
        assert_eq!(e.code, ReplyCode::NotImplemented);
        assert_eq!((e.class_id, e.method_id), (99, 10));
        // queue.declare whose queue-name length (5) runs past the end of the payload.
        let e = protocol_error(decode_all(
            &mut FrameCodec::new(131072),
            &[1, 0, 1, 0, 0, 0, 9, 0, 50, 0, 10, 0, 0, 5, b'a', b'b', 0xCE],
        ));
        assert_eq!(e.code, ReplyCode::FrameError);
        assert_eq!((e.class_id, e.method_id), (50, 10));
        assert_eq!(e.text, "FRAME_ERROR - cannot decode <<0,0,5,97,98>>");
    }

    /// Noise and mutated valid frames (seeded, reproducible) through the fuzz target's checks
    /// (`crate::fuzzing::frames`): every error is 501/540 with RabbitMQ's text shape and a close
    /// frame that encodes; `Ok(None)` only while a frame is incomplete; every decoded frame
    /// re-encodes to its own bytes (methods: stably); feeding the bytes in pieces changes nothing.
    /// Also: every truncation of the valid stream decodes its whole frames and then waits.
    #[test]
    fn seeded_random_bytes_decode_or_fail_with_a_reply_code() {
        // xorshift64*, fixed seed: reproducible; mixes pure noise with mutated valid frames.
        let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            s.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        let mut valid = BytesMut::new();
        let mut headers = amq_protocol::types::FieldTable::default();
        headers.insert("k".into(), amq_protocol::types::AMQPValue::LongInt(7));
        let props = BasicProperties::default().with_headers(headers).with_priority(3);
        encode::method(
            &mut valid,
            1,
            &AMQPClass::Basic(amq_protocol::protocol::basic::AMQPMethod::Publish(Default::default())),
        );
        let raw = encode::content_header_payload(60, 3, &props);
        encode::content(&mut valid, 1, &raw, &[Bytes::from_static(b"abc")], 4096);
        encode::method(
            &mut valid,
            1,
            &AMQPClass::Queue(amq_protocol::protocol::queue::AMQPMethod::Declare(Default::default())),
        );
        encode::heartbeat(&mut valid);
        let whole = decode_all(&mut FrameCodec::new(4096), &valid).unwrap().len();
        assert_eq!(whole, 5);
        let mut ends = Vec::new();
        let mut at = 0;
        while at < valid.len() {
            at += 8 + u32::from_be_bytes(valid[at + 3..at + 7].try_into().unwrap()) as usize;
            ends.push(at);
        }
        for cut in 0..valid.len() {
            let frames = decode_all(&mut FrameCodec::new(4096), &valid[..cut]).expect("a truncation is not an error");
            assert_eq!(frames.len(), ends.iter().filter(|e| **e <= cut).count(), "cut {cut}");
        }
        let (mut errors, mut decoded) = (0, 0);
        for round in 0..20_000 {
            let mut input = if round % 2 == 0 {
                let len = (next() % 64) as usize;
                (0..len).map(|_| next() as u8).collect::<Vec<u8>>()
            } else {
                valid.to_vec()
            };
            let flips = 1 + next() % 4;
            for _ in 0..flips {
                if input.is_empty() {
                    break;
                }
                let i = (next() as usize) % input.len();
                input[i] = next() as u8;
            }
            crate::fuzzing::frames(&input);
            match decode_all(&mut FrameCodec::new(4096), &input) {
                Ok(frames) => decoded += frames.len(),
                Err(_) => errors += 1,
            }
        }
        // The mutations reach both outcomes: frames that still decode, and refusals.
        assert!(decoded > 10_000 && errors > 5_000, "decoded {decoded} frames, {errors} errors");
    }

    #[test]
    fn publish_is_read_by_hand_like_amq_protocol_reads_it() {
        use amq_protocol::protocol::basic;
        for (exchange, routing_key, mandatory, immediate) in [
            ("", "q", false, false),
            ("amq.topic", "a.b.c", true, false),
            ("x", "", true, true),
            ("é", "ü", false, true),
        ] {
            let m = AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: exchange.into(),
                routing_key: routing_key.into(),
                mandatory,
                immediate,
            }));
            let mut buf = BytesMut::new();
            encode::method(&mut buf, 7, &m);
            let frames = decode_all(&mut FrameCodec::new(131072), &buf).unwrap();
            let [Frame::Publish { channel: 7, method }] = &frames[..] else { panic!("unexpected {frames:?}") };
            assert_eq!(&*method.exchange, exchange);
            assert_eq!(&*method.routing_key, routing_key);
            assert_eq!((method.mandatory, method.immediate), (mandatory, immediate));
            assert_eq!(method.to_class(), m);
            // Every truncation of the arguments is a frame error, never a panic.
            let payload = Bytes::copy_from_slice(&buf[7..buf.len() - 1]);
            for cut in 4..payload.len() {
                let e = parse_publish(&payload.slice(..cut)).unwrap_err();
                assert_eq!((e.code, e.class_id, e.method_id), (ReplyCode::FrameError, 60, 40), "cut at {cut}");
            }
        }
        // Names that are not UTF-8 are taken as RabbitMQ takes them (amq-protocol refuses them):
        // the exchange looked up as text, the routing key kept byte for byte.
        let odd = Bytes::from_static(&[0, 60, 0, 40, 0, 0, 1, 0xFF, 2, b'q', 0xFE, 0]);
        assert!(parse_method(&odd).is_err());
        let p = parse_publish(&odd).unwrap();
        assert_eq!(&*p.exchange, "\u{FFFD}");
        assert_eq!(&*p.routing_key, "q\u{FFFD}");
        assert_eq!(p.routing_key.as_wire(), b"q\xFE");
    }
}
