//! The properties the fuzz targets (`fuzz/fuzz_targets/*.rs`, run by `make fuzz`) assert, one
//! function per target, each fed arbitrary bytes. They live in the library so that plain
//! `cargo test` replays every saved input (`fuzz/regressions/<target>/`, and the seeds recorded
//! from real clients in `fuzz/seeds/<target>/`) through exactly the same checks as the fuzzer.
//!
//! A check panics when a property fails; a parser that returns an error is fine as long as the
//! error is one the broker can answer (a known reply code, RabbitMQ's text shape, a close frame
//! that encodes).

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

use crate::channel::assembler::{Assembler, ContentBudget, Step};
use crate::config::Config;
use crate::connection::handshake::{Context, Handshake, HandshakeError, Progress};
use crate::error::{AmqpError, ReplyCode};
use crate::message::Message;
use crate::protocol::codec::{self, DecodeError, Frame, FrameCodec};
use crate::protocol::{AMQPClass, FRAME_MIN_SIZE, PROTOCOL_HEADER, encode, fields, methods, properties};
use amq_protocol::types::{AMQPValue, FieldTable};

/// Every target's name, as its directory under `fuzz/regressions/` and `fuzz/seeds/`.
pub const TARGETS: &[&str] = &[
    "frames",
    "publish",
    "methods",
    "fields",
    "properties",
    "handshake",
    "definitions",
    "stream_frames",
    "amqp10",
    "stream_log",
];

/// Run the named target's check on one input.
pub fn check(target: &str, data: &[u8]) {
    match target {
        "frames" => frames(data),
        "publish" => publish(data),
        "methods" => methods(data),
        "fields" => fields(data),
        "properties" => properties(data),
        "handshake" => handshake(data),
        "definitions" => definitions(data),
        "stream_frames" => stream_frames(data),
        "amqp10" => amqp10(data),
        "stream_log" => stream_log(data),
        other => panic!("no fuzz target {other}"),
    }
}

/// An error the broker sends back: its code is one of `allowed`, its text has RabbitMQ's
/// `"NAME - explanation"` shape within 255 bytes, and the close method carrying it encodes and
/// decodes back to the same code, text and ids.
pub fn assert_answerable(e: &AmqpError, allowed: &[ReplyCode]) {
    assert!(allowed.contains(&e.code), "reply code {:?} not among {allowed:?}: {e}", e.code);
    let name = e.code.name();
    assert!(
        e.text.starts_with(name) && (e.text.len() == name.len() || e.text[name.len()..].starts_with(" - ")),
        "reply text without its code name: {:?}",
        e.text
    );
    assert!(e.text.len() <= 255, "reply text over 255 bytes");
    let close = if e.closes_connection() { methods::connection_close(e) } else { methods::channel_close(e) };
    let mut buf = BytesMut::new();
    encode::method(&mut buf, 0, &close);
    let back = codec::parse_method(&buf[7..buf.len() - 1]).expect("a close method decodes");
    assert_eq!(back, close, "close method round trip");
}

/// Frame decoder. The input is a byte stream after the protocol header, decoded with
/// frame_max 4096 and 131072. Asserted: errors are 501/540 with an answerable text;
/// `Ok(None)` only when the next frame is not all there; a frame's bytes re-encode to exactly
/// the frame (methods: to a canonical encoding that decodes to the same method); decoding the
/// stream in small pieces gives the same frames and the same error as decoding it whole.
pub fn frames(data: &[u8]) {
    for frame_max in [FRAME_MIN_SIZE, 131072] {
        let whole = decode_stream(data, frame_max, data.len().max(1));
        let stride = data.len() % 13 + 1;
        let pieces = decode_stream(data, frame_max, stride);
        assert_eq!(whole, pieces, "frames differ when fed {stride} bytes at a time");
    }
}

/// Decode `data` fed `stride` bytes at a time; where each frame ended, its channel, and how
/// decoding ended (each frame's content is checked against its bytes on the way).
fn decode_stream(data: &[u8], frame_max: u32, stride: usize) -> (Vec<(usize, u16)>, Option<String>) {
    let mut codec = FrameCodec::new(frame_max);
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut consumed = 0;
    let mut out = Vec::new();
    loop {
        match codec.decode(&mut buf) {
            Ok(Some(frame)) => {
                let size = u32::from_be_bytes(data[consumed + 3..consumed + 7].try_into().unwrap()) as usize;
                let original = &data[consumed..consumed + size + 8];
                consumed += size + 8;
                assert_eq!(consumed, fed - buf.len(), "the decoder took exactly one frame");
                check_reencoding(&frame, original, frame_max);
                out.push((consumed, frame.channel()));
            }
            Ok(None) => {
                let rest = &data[consumed..fed];
                assert_eq!(rest.len(), buf.len());
                if rest.len() >= 7 {
                    let size = u32::from_be_bytes(rest[3..7].try_into().unwrap()) as usize;
                    assert!(rest.len() < size + 8, "a whole frame was buffered but not decoded");
                }
                if fed == data.len() {
                    return (out, None);
                }
                let more = stride.min(data.len() - fed);
                buf.extend_from_slice(&data[fed..fed + more]);
                fed += more;
            }
            Err(DecodeError::Io(e)) => panic!("I/O error from a byte buffer: {e}"),
            Err(DecodeError::Protocol(e)) => {
                assert_answerable(&e, &[ReplyCode::FrameError, ReplyCode::NotImplemented]);
                return (out, Some(e.text));
            }
        }
    }
}

fn check_reencoding(frame: &Frame, original: &[u8], frame_max: u32) {
    let mut buf = BytesMut::new();
    match frame {
        Frame::Header { channel, payload } => {
            encode::content(&mut buf, *channel, payload, &[], frame_max);
            assert_eq!(&buf[..], original, "header frame re-encoding");
        }
        Frame::Body { channel, payload } => {
            encode::body_frame(&mut buf, *channel, payload);
            assert_eq!(&buf[..], original, "body frame re-encoding");
        }
        Frame::Heartbeat { channel: 0 } if original.len() == 8 => {
            encode::heartbeat(&mut buf);
            assert_eq!(&buf[..], original, "heartbeat re-encoding");
        }
        Frame::Heartbeat { .. } => {}
        Frame::Publish { channel, method } => {
            // Names that are not UTF-8 go to amq-protocol's type as their lossy text (the
            // routing key keeps its bytes for the wire): the text survives, and all of it
            // when both were UTF-8. Lossy text past 255 bytes has no short-string form.
            if method.exchange.len() <= 255 && method.routing_key.len() <= 255 {
                encode::method(&mut buf, *channel, &method.to_class());
                match FrameCodec::new(u32::MAX).decode(&mut buf) {
                    Ok(Some(Frame::Publish { channel: c, method: m })) => {
                        assert_eq!(c, *channel);
                        assert_eq!((&m.exchange, &*m.routing_key), (&method.exchange, &*method.routing_key));
                        assert_eq!((m.mandatory, m.immediate), (method.mandatory, method.immediate));
                        if method.routing_key.as_wire() == method.routing_key.as_bytes() {
                            assert_eq!(&m, method, "basic.publish round trip");
                        }
                    }
                    other => panic!("re-encoded basic.publish decodes as {other:?}"),
                }
            }
        }
        Frame::Method { channel, method } => {
            let first = method_bytes(*channel, method);
            let mut again = BytesMut::from(&first[..]);
            match FrameCodec::new(u32::MAX).decode(&mut again) {
                Ok(Some(Frame::Method { channel: c, method: m })) => {
                    assert_eq!(c, *channel);
                    assert_eq!(method_bytes(c, &m), first, "method re-encoding is not stable");
                }
                other => panic!("re-encoded {method:?} decodes as {other:?}"),
            }
        }
    }
}

fn method_bytes(channel: u16, m: &AMQPClass) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode::method(&mut buf, channel, m);
    assert!(buf.len() > 8 + 3, "{m:?} encodes to an empty payload");
    buf.to_vec()
}

/// `basic.publish` read by hand: the input is the arguments after the class and method ids.
/// Names may be any bytes (RabbitMQ takes them so); with non-UTF-8 bytes made `?`, it must
/// accept and refuse what amq-protocol's generated parser does (trailing bytes refused, as
/// [`codec::parse_method`] refuses them), read the same values, keep the routing key's bytes,
/// and its errors are 501 on 60/40.
pub fn publish(data: &[u8]) {
    let mut payload = vec![0, 60, 0, 40];
    payload.extend_from_slice(data);
    let mut sanitized = payload.clone();
    let mut names = Vec::new();
    let mut at = 6;
    for _ in 0..2 {
        let Some(&len) = sanitized.get(at) else { break };
        let Some(name) = sanitized.get_mut(at + 1..at + 1 + len as usize) else { break };
        names.push(name.to_vec());
        fields::sanitize_str(name);
        at += 1 + len as usize;
    }
    let payload = Bytes::from(payload);
    let by_hand = codec::parse_publish(&payload);
    let generated = match amq_protocol::protocol::parse_class(&sanitized[..]) {
        Ok(([], c)) => Ok(c),
        Ok((rest, _)) => Err(format!("{} bytes after the arguments", rest.len())),
        Err(e) => Err(e.to_string()),
    };
    match (&by_hand, &generated) {
        (Ok(p), Ok(AMQPClass::Basic(amq_protocol::protocol::basic::AMQPMethod::Publish(g)))) => {
            assert_eq!(p.routing_key.as_wire(), &names[1][..], "routing key bytes");
            assert_eq!(&*p.exchange, String::from_utf8_lossy(&names[0]), "exchange text");
            assert_eq!(
                (&*p.routing_key, p.mandatory, p.immediate),
                (&*String::from_utf8_lossy(&names[1]), g.mandatory, g.immediate)
            );
            if names.iter().all(|n| std::str::from_utf8(n).is_ok()) {
                assert_eq!((g.exchange.as_str(), g.routing_key.as_str()), (&*p.exchange, &*p.routing_key));
            }
        }
        (Err(e), Err(_)) => {
            assert_answerable(e, &[ReplyCode::FrameError]);
            assert_eq!((e.class_id, e.method_id), (60, 40));
        }
        _ => panic!("hand-read {by_hand:?} but amq-protocol {generated:?}"),
    }
}

/// Every (class, method) pair the broker knows.
const KNOWN_METHODS: &[(u16, u16)] = &[
    (10, 10),
    (10, 11),
    (10, 20),
    (10, 21),
    (10, 30),
    (10, 31),
    (10, 40),
    (10, 41),
    (10, 50),
    (10, 51),
    (10, 60),
    (10, 61),
    (10, 70),
    (10, 71),
    (20, 10),
    (20, 11),
    (20, 20),
    (20, 21),
    (20, 40),
    (20, 41),
    (30, 10),
    (30, 11),
    (40, 10),
    (40, 11),
    (40, 20),
    (40, 21),
    (40, 30),
    (40, 31),
    (40, 40),
    (40, 51),
    (50, 10),
    (50, 11),
    (50, 20),
    (50, 21),
    (50, 30),
    (50, 31),
    (50, 40),
    (50, 41),
    (50, 50),
    (50, 51),
    (60, 10),
    (60, 11),
    (60, 20),
    (60, 21),
    (60, 30),
    (60, 31),
    (60, 40),
    (60, 50),
    (60, 60),
    (60, 70),
    (60, 71),
    (60, 72),
    (60, 80),
    (60, 90),
    (60, 100),
    (60, 110),
    (60, 111),
    (60, 120),
    (85, 10),
    (85, 11),
    (90, 10),
    (90, 11),
    (90, 20),
    (90, 21),
    (90, 30),
    (90, 31),
];

/// Method arguments. The first byte picks a known method (its ids are put before the rest of
/// the input); past the list, the input is a whole method payload, ids included. Asserted: a
/// decoded method has the payload's ids, re-encodes to bytes that decode to the same method
/// (the encoding is stable), and carries no field table nested beyond [`fields::MAX_NESTING`];
/// errors are 501, or 540 exactly for unknown methods and basic.qos with a prefetch size.
pub fn methods(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else { return };
    let payload = match KNOWN_METHODS.get(pick as usize) {
        Some((c, m)) => [&c.to_be_bytes()[..], &m.to_be_bytes()[..], rest].concat(),
        None => rest.to_vec(),
    };
    let ids = (payload.len() >= 4)
        .then(|| (u16::from_be_bytes([payload[0], payload[1]]), u16::from_be_bytes([payload[2], payload[3]])));
    match codec::parse_method(&payload) {
        Ok(m) => {
            assert_eq!(Some((m.get_amqp_class_id(), m.get_amqp_method_id())), ids);
            let first = method_bytes(0, &m);
            let inner = &first[7..first.len() - 1];
            if let Some(at) = fields::method_table_offset(inner) {
                fields::check_table(&inner[at..]).expect("a decoded method's table re-encodes checkable");
            }
            let again = codec::parse_method(inner).expect("a re-encoded method decodes");
            assert_eq!(method_bytes(0, &again), first, "method re-encoding is not stable");
        }
        Err(e) => {
            let (class_id, method_id) = ids.unwrap_or_default();
            let qos_prefetch_size = (class_id, method_id) == (60, 10) && payload.get(4..8).is_some_and(|s| s != [0; 4]);
            if e.code == ReplyCode::NotImplemented {
                assert!(
                    !crate::protocol::is_known_method(class_id, method_id) || qos_prefetch_size,
                    "540 for a known method: {e}"
                );
            }
            assert_answerable(&e, &[ReplyCode::FrameError, ReplyCode::NotImplemented]);
            // RabbitMQ names a non-UTF-8 short string on no method in particular (0.0).
            if ids.is_some() && e.text != "FRAME_ERROR - Malformed UTF-8 in shortstr" {
                assert_eq!((e.class_id, e.method_id), (class_id, method_id), "error names the method");
            }
        }
    }
}

/// Field tables: what decodes re-encodes to a table that decodes to an equal one (floats
/// compared by their bits, so NaN equals itself), within the nesting limit; decoding agrees
/// with the iterative check about where the table ends.
pub fn fields(data: &[u8]) {
    let checked = fields::check_table(data);
    let Ok(table) = fields::decode_table(data) else { return };
    assert_eq!(checked, Ok(data.len()), "decoded a table the check refuses");
    assert!(fields::depth(&AMQPValue::FieldTable(table.clone())) <= fields::MAX_NESTING);
    let bytes = fields::encode_table(&table);
    let again = fields::decode_table(&bytes).expect("a re-encoded table decodes");
    assert!(same_table(&table, &again), "table round trip: {table:?} became {again:?}");
    assert_eq!(fields::encode_table(&again), bytes, "table encoding is not stable");
}

/// Field values equal, floats by their bits (NaN-aware).
pub fn same_value(a: &AMQPValue, b: &AMQPValue) -> bool {
    match (a, b) {
        (AMQPValue::Float(x), AMQPValue::Float(y)) => x.to_bits() == y.to_bits(),
        (AMQPValue::Double(x), AMQPValue::Double(y)) => x.to_bits() == y.to_bits(),
        (AMQPValue::FieldTable(x), AMQPValue::FieldTable(y)) => same_table(x, y),
        (AMQPValue::FieldArray(x), AMQPValue::FieldArray(y)) => {
            x.as_slice().len() == y.as_slice().len()
                && x.as_slice().iter().zip(y.as_slice()).all(|(a, b)| same_value(a, b))
        }
        _ => a == b,
    }
}

pub fn same_table(a: &FieldTable, b: &FieldTable) -> bool {
    a.inner().len() == b.inner().len()
        && a.inner().iter().zip(b.inner()).all(|((ka, va), (kb, vb))| ka == kb && same_value(va, vb))
}

/// Content headers: the input is a header frame's payload. Asserted: where the hand scan
/// accepts, the full decoder accepts and summarises the same; `parse_header` errors are 501 or
/// 541; an accepted header makes a message whose lazy decode yields the same properties as
/// decoding at once; decoded properties re-encode to a header that decodes to the same ones.
pub fn properties(data: &[u8]) {
    let raw = Bytes::copy_from_slice(data);
    let scanned = properties::scan(data);
    let decoded = properties::decode(data);
    if let Some(s) = scanned {
        let p = decoded.as_ref().expect("the scan accepts a header the decoder refuses");
        assert_eq!(properties::summarize(p), s, "scan and decoder disagree");
    }
    let header = match codec::parse_header(1, raw.clone()) {
        Ok(h) => h,
        Err(e) => {
            assert_answerable(&e, &[ReplyCode::FrameError, ReplyCode::InternalError]);
            return;
        }
    };
    let p = decoded.expect("parse_header accepted a header whose properties do not decode");
    assert_eq!(header.summary, properties::summarize(&p), "header summary");
    assert_eq!(header.raw, raw);
    assert_eq!(header.class_id, u16::from_be_bytes([data[0], data[1]]));
    assert_eq!(header.body_size, u64::from_be_bytes(data[4..12].try_into().unwrap()));
    if let Some(d) = &header.decoded {
        assert!(same_properties(d, &p), "parse_header's decode differs");
    }
    let message = Message::new("x".into(), "k".into(), header, Default::default());
    assert!(same_properties(message.properties(), &p), "lazy decode differs from decoding at once");
    assert_eq!(message.headers().is_some(), p.headers().is_some());
    assert_eq!(message.expiration(), p.expiration().as_ref().map(|e| e.as_str()));
    // Re-encoding the decoded properties gives a header that decodes to the same ones.
    let again = encode::content_header_payload(60, 0, &p);
    let q = properties::decode(&again).expect("re-encoded properties decode");
    assert!(same_properties(&p, &q), "properties round trip");
    if let Some(s) = properties::scan(&again) {
        assert_eq!(s, properties::summarize(&q));
    }
}

fn same_properties(a: &crate::protocol::BasicProperties, b: &crate::protocol::BasicProperties) -> bool {
    let headers = match (a.headers(), b.headers()) {
        (Some(x), Some(y)) => same_table(x, y),
        (x, y) => x.is_none() && y.is_none(),
    };
    headers && a.clone().with_headers(FieldTable::default()) == b.clone().with_headers(FieldTable::default())
}

/// The connection handshake, fed a client's byte stream from the protocol header on, as the
/// connection task drives it ([`crate::connection`]'s `run` and `handshake`): a wrong header
/// ends it; frames decode with frame_max 4096 until tune; channel-0 methods go to the
/// sans-IO [`Handshake`], heartbeats are skipped, anything else is 505. After `open-ok` the
/// rest is decoded with the negotiated frame_max and content frames go through each channel's
/// [`Assembler`]. Asserted: every refusal carries an answerable code; what is negotiated is
/// within the configured limits; assembled messages have the size their header declared.
pub fn handshake(data: &[u8]) {
    if data.len() < 8 || (&data[..8] != PROTOCOL_HEADER && &data[..8] != b"AMQP\x01\x01\x00\x09") {
        return;
    }
    let config = Config::default();
    static USERS: std::sync::OnceLock<crate::auth::Users> = std::sync::OnceLock::new();
    let users = USERS.get_or_init(|| crate::auth::Users::from_config(&Config::default().auth).expect("default users"));
    let cx = Context {
        config: &config,
        users,
        peer_is_loopback: true,
        vhost_exists: &|v| v == "/",
        open_limits: &|_, _| Ok(()),
        node_connections: 0,
        mechanisms: &["PLAIN", "AMQPLAIN"],
        cert_login: None,
    };
    let mut codec = FrameCodec::new(FRAME_MIN_SIZE);
    let mut buf = BytesMut::from(&data[8..]);
    let mut state = Handshake::AwaitStartOk;
    let hard = [
        ReplyCode::FrameError,
        ReplyCode::NotImplemented,
        ReplyCode::CommandInvalid,
        ReplyCode::AccessRefused,
        ReplyCode::NotAllowed,
        ReplyCode::UnexpectedFrame,
    ];
    let negotiated = loop {
        let frame = match codec.decode(&mut buf) {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(DecodeError::Protocol(e)) => return assert_answerable(&e, &hard),
            Err(DecodeError::Io(e)) => panic!("{e}"),
        };
        let method = match frame {
            Frame::Method { channel: 0, method } => method,
            Frame::Heartbeat { channel: 0 } => continue,
            _ => return,
        };
        match state.on_method(&method, &cx) {
            Ok(Progress::Continue(next, reply)) => {
                if let Some(r) = reply {
                    method_bytes(0, &r);
                }
                state = next;
            }
            Ok(Progress::Done(n, reply)) => {
                method_bytes(0, &reply);
                break n;
            }
            Err(HandshakeError::Close(e)) => {
                assert_answerable(&e, &hard);
                return;
            }
            Err(HandshakeError::Silent(_)) => return,
        }
    };
    assert!(negotiated.frame_max >= FRAME_MIN_SIZE && negotiated.frame_max <= config.amqp.frame_max);
    assert!(negotiated.channel_max <= config.amqp.channel_max);
    assert_eq!(negotiated.vhost, "/");
    codec.set_frame_max(negotiated.frame_max);
    // A small budget for unfinished bodies, so that refusing a body past it is reached too.
    let budget = ContentBudget::new(1 << 16);
    let mut channels: std::collections::HashMap<u16, Assembler> = Default::default();
    assemble(&mut codec, &mut buf, &mut channels, &budget);
    assert!(budget.held() <= 1 << 16, "unfinished bodies past the budget");
    drop(channels);
    assert_eq!(budget.held(), 0, "unfinished bodies still counted after their channels are gone");
}

/// The frames after the handshake, through each channel's content assembler, until the
/// stream ends or fails.
fn assemble(
    codec: &mut FrameCodec,
    buf: &mut BytesMut,
    channels: &mut std::collections::HashMap<u16, Assembler>,
    budget: &ContentBudget,
) {
    let codes = [
        ReplyCode::FrameError,
        ReplyCode::NotImplemented,
        ReplyCode::UnexpectedFrame,
        ReplyCode::InternalError,
        ReplyCode::PreconditionFailed,
    ];
    loop {
        let frame = match codec.decode(buf) {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(DecodeError::Protocol(e)) => return assert_answerable(&e, &codes),
            Err(DecodeError::Io(e)) => panic!("{e}"),
        };
        let assembler = channels.entry(frame.channel()).or_default();
        let step = match frame {
            Frame::Publish { method, .. } => assembler.check_method().map(|()| {
                assembler.start(method);
                Step::Pending
            }),
            Frame::Method { .. } => assembler.check_method().map(|()| Step::Pending),
            Frame::Header { channel, payload } => {
                codec::parse_header(channel, payload).and_then(|h| assembler.header(h))
            }
            Frame::Body { payload, .. } => assembler.body(payload, budget),
            Frame::Heartbeat { .. } => Ok(Step::Pending),
        };
        assert!(budget.held() <= 1 << 16, "unfinished bodies past the budget");
        match step {
            Ok(Step::Pending) => {}
            Ok(Step::Complete(content)) => {
                let size: usize = content.body.iter().map(|b| b.len()).sum();
                assert_eq!(size as u64, content.header.body_size, "assembled body size");
            }
            Err(e) => return assert_answerable(&e, &codes),
        }
    }
}

/// Definitions load ([`crate::store::definitions::parse`], any format version): what parses
/// holds tables within the nesting limit, renders (in the current format) to text that parses
/// to the same definitions (tables compared NaN-aware), and renders the same again.
pub fn definitions(data: &[u8]) {
    use crate::store::definitions::{parse, render};
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(defs) = parse(text) else { return };
    let tables = |d: &crate::store::definitions::Definitions| -> Vec<FieldTable> {
        let mut all: Vec<FieldTable> = d.exchanges.iter().map(|e| e.arguments.clone()).collect();
        all.extend(d.queues.iter().map(|q| q.arguments.clone()));
        all.extend(d.bindings.iter().map(|b| b.arguments.clone()));
        all
    };
    for t in tables(&defs) {
        assert!(fields::depth(&AMQPValue::FieldTable(t)) <= fields::MAX_NESTING, "loaded a table nested too deep");
    }
    let rendered = render(&defs);
    let again = parse(&rendered).expect("rendered definitions parse");
    let strip = |d: &crate::store::definitions::Definitions| {
        let mut d = d.clone();
        d.exchanges.iter_mut().for_each(|e| e.arguments = FieldTable::default());
        d.queues.iter_mut().for_each(|q| q.arguments = FieldTable::default());
        d.bindings.iter_mut().for_each(|b| b.arguments = FieldTable::default());
        d
    };
    assert_eq!(strip(&defs), strip(&again), "definitions round trip (names, flags)");
    let (a, b) = (tables(&defs), tables(&again));
    assert!(a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| same_table(x, y)), "arguments round trip");
    assert_eq!(render(&again), rendered, "rendering is not stable");
}

/// Stream-protocol frames (port 5552): the input is what a client sends. Asserted: splitting
/// and parsing it whole and in small pieces gives the same frames and ends with the same
/// error, which is 0x0d (unknown or malformed) or 0x0e (too large); a parsed frame carries the
/// key it came with; the connection state machine, fed the same bytes in pieces by a caller
/// that accepts every login and vhost, never panics, writes only whole frames, and says
/// nothing more once it has closed.
pub fn stream_frames(data: &[u8]) {
    for frame_max in [crate::stream::protocol::DEFAULT_INITIAL_FRAME_MAX, 1 << 20] {
        let whole = split_stream(data, frame_max, data.len().max(1));
        let stride = data.len() % 13 + 1;
        assert_eq!(whole, split_stream(data, frame_max, stride), "frames differ when fed {stride} bytes at a time");
    }
    drive_stream_connection(data);
}

type StreamFrames =
    (Vec<crate::stream::protocol::frame::ClientFrame>, Option<crate::stream::protocol::frame::FrameError>);

fn split_stream(data: &[u8], frame_max: u32, stride: usize) -> StreamFrames {
    use crate::stream::protocol::{RESPONSE_FLAG, code, codec::split_frame, frame, key};
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in data.chunks(stride) {
        buf.extend_from_slice(piece);
        loop {
            let raw = match split_frame(&mut buf, frame_max) {
                Ok(Some(raw)) => raw,
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            };
            match frame::parse(&raw) {
                Ok(f) => {
                    let wire_key = u16::from_be_bytes([raw[0], raw[1]]);
                    let tune = wire_key == key::TUNE && f.key() == key::TUNE | RESPONSE_FLAG;
                    assert!(f.key() == wire_key || tune, "{f:?} parsed from key {wire_key:#x}");
                    out.push(f);
                }
                Err(e) => {
                    assert!([code::UNKNOWN_FRAME, code::FRAME_TOO_LARGE].contains(&e.code()));
                    return (out, Some(e));
                }
            }
        }
    }
    (out, None)
}

fn drive_stream_connection(data: &[u8]) {
    use crate::stream::protocol::codec::split_frame;
    use crate::stream::protocol::state::{AuthOutcome, Connection, Event, OpenOutcome};
    let t0 = tokio::time::Instant::now();
    let mut c = Connection::new(Default::default(), t0);
    let mut closed = false;
    let stride = data.len() % 7 + 1;
    for (i, piece) in data.chunks(stride).enumerate() {
        let now = t0 + std::time::Duration::from_millis(i as u64);
        c.handle_input(piece, now);
        c.handle_timeout(now);
        while let Some(event) = c.poll_event() {
            assert!(!closed, "an event after Closed: {event:?}");
            match event {
                Event::Authenticate { .. } => c.authenticate(AuthOutcome::Accepted, now),
                Event::Open { .. } => c.open(OpenOutcome::Allowed { properties: vec![] }, now),
                Event::Closed(_) => closed = true,
                Event::Command(_) | Event::Closing { .. } => {}
            }
        }
        if let Some(out) = c.poll_transmit() {
            let mut out = BytesMut::from(&out[..]);
            while split_frame(&mut out, 0).expect("no limit").is_some() {}
            assert!(out.is_empty(), "output ends inside a frame");
        }
        assert_eq!(closed, c.is_closed());
    }
}

/// AMQP 1.0 stream records (`crate::stream::amqp10`), the input read four ways, none of which
/// may panic: as one value and as a record (what decodes re-encodes to bytes that decode to the
/// same encoding); as a record delivered to an AMQP 0-9-1 consumer (its properties encode into a
/// content header, and writing that message to a stream and reading it back gives it exactly,
/// floats by their bits); and as a 0-9-1 content header, whose properties go through a record
/// and come back exactly.
pub fn amqp10(data: &[u8]) {
    use crate::stream::amqp10::{Message, codec, convert};
    let record = Bytes::copy_from_slice(data);
    if let Ok(v) = codec::decode(&record) {
        let bytes = Bytes::from(codec::to_vec(&v));
        let again = codec::decode(&bytes).expect("a re-encoded value decodes");
        assert_eq!(codec::to_vec(&again), bytes, "value encoding is not stable");
    }
    if let Ok(m) = Message::decode(&record) {
        let bytes = Bytes::from(m.encode());
        let again = Message::decode(&bytes).expect("a re-encoded record decodes");
        assert_eq!(again.encode(), bytes, "record encoding is not stable");
    }
    if let Ok(d) = convert::to_amqp091(&record, "s") {
        let size = d.body.iter().map(|b| b.len() as u64).sum();
        let raw = encode::content_header_payload(crate::protocol::CLASS_BASIC, size, &d.properties);
        properties::decode(&raw).expect("a delivered message's properties decode");
        let again = convert::from_amqp091(&d.exchange, &d.routing_key, &d.properties, &d.body);
        let back = convert::to_amqp091(&Bytes::from(again), "s").expect("a record Warren writes decodes");
        assert_same_amqp091(&d, &back);
    }
    if let Some(p) = properties::decode(data) {
        let body = [Bytes::from_static(b"body")];
        let rec = convert::from_amqp091("x", b"rk", &p, &body);
        let back = convert::to_amqp091(&Bytes::from(rec), "s").expect("a record Warren writes decodes");
        let expected = convert::Amqp091 {
            exchange: "x".into(),
            routing_key: Bytes::from_static(b"rk"),
            properties: p,
            body: body.into_iter().collect(),
        };
        assert_same_amqp091(&expected, &back);
    }
}

/// Two 0-9-1 messages are the same: names, body bytes, properties (headers NaN-aware).
pub fn assert_same_amqp091(a: &crate::stream::amqp10::Amqp091, b: &crate::stream::amqp10::Amqp091) {
    assert_eq!((&a.exchange, &a.routing_key), (&b.exchange, &b.routing_key));
    assert_eq!(a.body.concat(), b.body.concat(), "body");
    let strip = |p: &crate::protocol::BasicProperties| p.clone().with_headers(FieldTable::default());
    assert_eq!(strip(&a.properties), strip(&b.properties), "properties");
    let empty = FieldTable::default();
    let (ha, hb) = (a.properties.headers().as_ref(), b.properties.headers().as_ref());
    assert!(same_table(ha.unwrap_or(&empty), hb.unwrap_or(&empty)), "headers: {ha:?} became {hb:?}");
    assert_eq!(ha.is_some(), hb.is_some(), "headers present");
}

/// Stream log recovery ([`crate::stream::log::index::scan`]): the input is a segment file.
/// Asserted: the scan keeps a run of contiguous chunks from the file header on, each one
/// whole inside the input and (unless reported damaged) passing its CRC and entry checks;
/// where it stops is where the last kept chunk ends; scanning just the kept bytes again finds
/// the same chunks and nothing to cut (but a damaged last chunk, then the tail); their index records round-trip through the index
/// parser; tracking sections and bloom filters of kept chunks are read without panicking.
pub fn stream_log(data: &[u8]) {
    use crate::stream::log::{ChunkFilter, chunk, index, tracking::Tracking};
    let start = (index::FILE_HEADER as usize).min(data.len());
    let scan = index::scan(data, start as u64, None);
    assert!(scan.end as usize <= data.len() && scan.end as usize >= start);
    assert_eq!(scan.stopped.is_none(), scan.end as usize == data.len(), "stops only before the end");
    let mut pos = start as u64;
    let mut tracking = Tracking::default();
    for (i, r) in scan.records.iter().enumerate() {
        assert_eq!(r.pos, pos, "chunks are contiguous");
        if i > 0 {
            assert_eq!(r.chunk_id, scan.records[i - 1].next_offset(), "chunk ids are contiguous");
        }
        let bytes = &data[r.pos as usize..r.end() as usize];
        let damaged = scan.damaged.iter().any(|d| d.pos == r.pos);
        match chunk::parse_chunk(bytes) {
            Ok(v) => {
                assert!(!damaged, "a damaged chunk checks");
                assert_eq!(index::IndexRecord::of(&v.header, r.pos), *r);
                let _ = tracking.apply(v.trailer);
                for e in chunk::entries(v.data).flatten() {
                    if let chunk::EntryRef::Simple(b) = e {
                        let _ = tracking.apply(b);
                    }
                }
                ChunkFilter { values: vec![b"eu".to_vec(), Vec::new()], match_unfiltered: true }.may_match(v.bloom);
            }
            Err(e) => assert!(damaged, "a kept chunk fails its check: {e}"),
        }
        pos = r.end();
    }
    assert_eq!(pos, scan.end);
    // A damaged chunk is kept only when a chunk follows it: cut after it, it is the tail.
    let again = index::scan(&data[..scan.end as usize], start as u64, None);
    let mut kept = scan.records.clone();
    if kept.last().is_some_and(|r| scan.damaged.iter().any(|d| d.pos == r.pos)) {
        let last = kept.pop().expect("a last record");
        assert_eq!((again.end, again.stopped.as_ref().map(|s| s.0)), (last.pos, Some(last.pos)), "rescan");
    } else {
        assert_eq!((again.end, &again.stopped), (scan.end, &None), "rescan");
    }
    assert_eq!(again.records, kept, "rescan");
    let mut idx = index::INDEX_MAGIC.to_vec();
    scan.records.iter().for_each(|r| idx.extend_from_slice(&r.encode()));
    let first = scan.records.first().map(|r| r.chunk_id);
    let parsed = index::parse_index(&idx, first);
    if start == 8 {
        assert_eq!(parsed, scan.records, "index round trip");
    }
    let _ = index::parse_index(data, None);
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every saved fuzz input (crashes found, and the seeds recorded from real clients) goes
    /// through its target's check.
    #[test]
    fn fuzz_regressions_and_seeds_replay() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut replayed = 0;
        for target in super::TARGETS {
            for kind in ["regressions", "seeds"] {
                let dir = root.join(kind).join(target);
                let Ok(entries) = std::fs::read_dir(&dir) else { continue };
                let mut paths: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
                paths.sort();
                for path in paths {
                    let data = std::fs::read(&path).unwrap();
                    let outcome = std::panic::catch_unwind(|| super::check(target, &data));
                    assert!(outcome.is_ok(), "{} fails its check", path.display());
                    replayed += 1;
                }
            }
        }
        assert!(replayed > 0, "no saved fuzz inputs found under {}", root.display());
    }
}
