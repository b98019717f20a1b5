//! AMQP 0-9-1 framing for the load generator.
//!
//! Cold-path methods (handshake, declarations, close) are generated and parsed with
//! amq-protocol's types. The hot path avoids them: a whole published message (publish method,
//! content header, body frames) is rendered once into a template that is copied per message
//! with only the body's 8-byte timestamp patched; `basic.ack` frames are written by hand; and
//! `basic.deliver` / confirm `basic.ack` / `basic.nack` are read by hand, only for the fields
//! the tool needs. Frames are read in place from the connection's read buffer, never copied.

use amq_protocol::protocol::basic::{self, AMQPProperties};
use amq_protocol::protocol::{AMQPClass, connection};
use bytes::{BufMut, BytesMut};

use crate::error::Error;

// The wire constants are the broker's own (the same crate's library).
pub use warren::protocol::{
    FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, FRAME_OVERHEAD, PROTOCOL_HEADER,
};
/// The frame_max the tool asks for (RabbitMQ's default).
pub const CLIENT_FRAME_MAX: u32 = 131_072;

pub use warren::protocol::CLASS_BASIC;
pub const CONNECTION_CLOSE: (u16, u16) = (10, 50);
pub const CONNECTION_CLOSE_OK: (u16, u16) = (10, 51);
pub const BASIC_DELIVER: (u16, u16) = (60, 60);
pub const BASIC_ACK: (u16, u16) = (60, 80);
pub const BASIC_NACK: (u16, u16) = (60, 120);

/// One complete frame found at the front of a read buffer: its type, channel, and where its
/// payload lies (`7..7 + size`); the frame occupies `size + 8` octets.
#[derive(Debug, Clone, Copy)]
pub struct FrameRef {
    pub kind: u8,
    pub channel: u16,
    pub size: usize,
}

impl FrameRef {
    pub fn total(&self) -> usize {
        self.size + FRAME_OVERHEAD
    }
    pub fn payload<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[7..7 + self.size]
    }
}

/// Look at the front of `buf`: `Ok(None)` while the next frame is incomplete (after reserving
/// room for it), an error for a malformed one. The caller advances by `total()` when done.
pub fn peek_frame(buf: &mut BytesMut, frame_max: u32) -> Result<Option<FrameRef>, Error> {
    if buf.len() < 7 {
        return Ok(None);
    }
    if buf[..4] == PROTOCOL_HEADER[..4] {
        return Err(Error::Protocol("the broker answered with a protocol header: it does not speak AMQP 0-9-1".into()));
    }
    let kind = buf[0];
    let channel = u16::from_be_bytes([buf[1], buf[2]]);
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
    if size + FRAME_OVERHEAD > frame_max as usize {
        return Err(Error::Protocol(format!("frame of {size} octets exceeds the negotiated frame_max {frame_max}")));
    }
    let total = size + FRAME_OVERHEAD;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    if buf[total - 1] != FRAME_END {
        return Err(Error::Protocol(format!("frame end octet is {:#x}, not 0xce", buf[total - 1])));
    }
    if !matches!(kind, FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT) {
        return Err(Error::Protocol(format!("unknown frame type {kind}")));
    }
    Ok(Some(FrameRef { kind, channel, size }))
}

/// Class and method ids of a method frame payload.
pub fn method_id(payload: &[u8]) -> Result<(u16, u16), Error> {
    if payload.len() < 4 {
        return Err(Error::Protocol(format!("method frame of {} octets", payload.len())));
    }
    Ok((u16::from_be_bytes([payload[0], payload[1]]), u16::from_be_bytes([payload[2], payload[3]])))
}

/// Decode a method frame payload with amq-protocol (cold path).
pub fn parse_method(payload: &[u8]) -> Result<AMQPClass, Error> {
    match amq_protocol::protocol::parse_class(payload) {
        Ok((_, m)) => Ok(m),
        Err(_) => {
            let (c, m) = method_id(payload).unwrap_or((0, 0));
            Err(Error::Protocol(format!("cannot decode method {c}.{m} ({} octets)", payload.len())))
        }
    }
}

/// The error a broker-initiated close (connection or channel) stands for, if `m` is one.
pub fn close_error(channel: u16, m: &AMQPClass) -> Option<Error> {
    match m {
        AMQPClass::Connection(connection::AMQPMethod::Close(c)) => Some(Error::ConnectionClosed {
            code: c.reply_code,
            text: c.reply_text.to_string(),
            class_id: c.class_id,
            method_id: c.method_id,
        }),
        AMQPClass::Channel(amq_protocol::protocol::channel::AMQPMethod::Close(c)) => Some(Error::ChannelClosed {
            channel,
            code: c.reply_code,
            text: c.reply_text.to_string(),
            class_id: c.class_id,
            method_id: c.method_id,
        }),
        _ => None,
    }
}

fn begin(buf: &mut BytesMut, kind: u8, channel: u16) -> usize {
    buf.put_u8(kind);
    buf.put_u16(channel);
    let at = buf.len();
    buf.put_u32(0);
    at
}

fn finish(buf: &mut BytesMut, size_at: usize) {
    let size = (buf.len() - size_at - 4) as u32;
    buf[size_at..size_at + 4].copy_from_slice(&size.to_be_bytes());
    buf.put_u8(FRAME_END);
}

/// Append a method frame generated by amq-protocol (the broker's own encoder).
pub fn put_method(buf: &mut BytesMut, channel: u16, m: &AMQPClass) {
    warren::protocol::encode::method(buf, channel, m);
}

/// Append a `basic.ack` (the consumer's hot path): the same frame the broker writes for a
/// publisher confirm, from the broker's hand-written encoder.
pub fn put_basic_ack(buf: &mut BytesMut, channel: u16, delivery_tag: u64, multiple: bool) {
    warren::protocol::encode::confirm(buf, channel, delivery_tag, multiple, true);
}

/// Append a `basic.publish` method frame, written by hand (used per message only with random
/// routing keys; otherwise the template below holds it).
pub fn put_publish(buf: &mut BytesMut, channel: u16, exchange: &str, routing_key: &str, mandatory: bool) {
    let at = begin(buf, FRAME_METHOD, channel);
    buf.put_u16(CLASS_BASIC);
    buf.put_u16(40);
    buf.put_u16(0);
    buf.put_u8(exchange.len() as u8);
    buf.put_slice(exchange.as_bytes());
    buf.put_u8(routing_key.len() as u8);
    buf.put_slice(routing_key.as_bytes());
    buf.put_u8(mandatory as u8);
    finish(buf, at);
}

/// The properties every published message carries.
pub fn properties(persistent: bool) -> AMQPProperties {
    AMQPProperties::default().with_delivery_mode(if persistent { 2 } else { 1 })
}

/// A message rendered once, copied per publish.
#[derive(Debug, Clone)]
pub struct MessageTemplate {
    /// Content header frame then the body frames (body zeroed).
    content: Vec<u8>,
    /// Where the first 8 body octets (the timestamp) are in `content`, if the body has 8.
    stamp_at: Option<usize>,
    /// The publish method frame for the fixed routing key (empty when keys vary per message).
    publish: Vec<u8>,
}

impl MessageTemplate {
    pub fn new(
        channel: u16,
        exchange: &str,
        routing_key: Option<&str>,
        body_size: usize,
        persistent: bool,
        frame_max: u32,
    ) -> Self {
        let mut publish = BytesMut::new();
        if let Some(rk) = routing_key {
            let m = AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: exchange.into(),
                routing_key: rk.into(),
                mandatory: false,
                immediate: false,
            }));
            put_method(&mut publish, channel, &m);
        }
        let props = cookie_factory::gen_simple(basic::gen_properties(&properties(persistent)), Vec::new())
            .expect("serialising into a Vec cannot fail");
        let mut content = BytesMut::with_capacity(body_size + 64 + body_size / 4096 * 8);
        let at = begin(&mut content, FRAME_HEADER, channel);
        content.put_u16(CLASS_BASIC);
        content.put_u16(0);
        content.put_u64(body_size as u64);
        content.put_slice(&props);
        finish(&mut content, at);
        let max = (frame_max as usize - FRAME_OVERHEAD).max(1);
        let mut stamp_at = None;
        let mut left = body_size;
        while left > 0 {
            let n = left.min(max);
            let at = begin(&mut content, FRAME_BODY, channel);
            if stamp_at.is_none() && n >= 8 {
                stamp_at = Some(content.len());
            }
            content.put_bytes(0, n);
            finish(&mut content, at);
            left -= n;
        }
        MessageTemplate { content: content.to_vec(), stamp_at, publish: publish.to_vec() }
    }

    /// Octets one message takes on the wire (with the fixed routing key).
    pub fn wire_len(&self) -> usize {
        self.publish.len() + self.content.len()
    }

    /// Append one message (fixed routing key) stamped with `stamp`.
    #[inline]
    pub fn put(&self, buf: &mut BytesMut, stamp: u64) {
        buf.extend_from_slice(&self.publish);
        self.put_content(buf, stamp);
    }

    /// For large messages: append the publish, the header and the body up to and including the
    /// timestamp, and return the rest of the message to write straight from the template.
    pub fn put_head(&self, buf: &mut BytesMut, stamp: u64) -> &[u8] {
        buf.extend_from_slice(&self.publish);
        let head = self.stamp_at.map_or(self.content.len(), |at| at + 8);
        let start = buf.len();
        buf.extend_from_slice(&self.content[..head]);
        if let Some(at) = self.stamp_at {
            buf[start + at..start + at + 8].copy_from_slice(&stamp.to_be_bytes());
        }
        &self.content[head..]
    }

    /// Append the content header and body frames only (after a hand-written publish).
    #[inline]
    pub fn put_content(&self, buf: &mut BytesMut, stamp: u64) {
        let start = buf.len();
        buf.extend_from_slice(&self.content);
        if let Some(at) = self.stamp_at {
            buf[start + at..start + at + 8].copy_from_slice(&stamp.to_be_bytes());
        }
    }
}

/// Read a short string at `at`, returning the offset after it.
fn skip_short_str(p: &[u8], at: usize) -> Option<usize> {
    let n = *p.get(at)? as usize;
    let end = at + 1 + n;
    (end <= p.len()).then_some(end)
}

/// `basic.deliver`: the delivery tag (arguments after the 4 id octets).
pub fn deliver_tag(payload: &[u8]) -> Result<u64, Error> {
    let at = skip_short_str(payload, 4).filter(|at| at + 8 <= payload.len());
    match at {
        Some(at) => Ok(u64::from_be_bytes(payload[at..at + 8].try_into().expect("8 octets"))),
        None => Err(Error::Protocol("truncated basic.deliver".into())),
    }
}

/// A confirm (`basic.ack` / `basic.nack` from the broker): delivery tag and `multiple`.
pub fn confirm_args(payload: &[u8]) -> Result<(u64, bool), Error> {
    if payload.len() < 13 {
        return Err(Error::Protocol("truncated confirm".into()));
    }
    Ok((u64::from_be_bytes(payload[4..12].try_into().expect("8 octets")), payload[12] & 1 == 1))
}

/// A content header's body size (checks the header decodes with amq-protocol).
pub fn content_body_size(payload: &[u8]) -> Result<u64, Error> {
    match amq_protocol::frame::parsing::parse_content_header(payload) {
        Ok((_, h)) => Ok(h.body_size),
        Err(_) => Err(Error::Protocol(format!("cannot decode a content header of {} octets", payload.len()))),
    }
}

/// The timestamp in a body's first 8 octets.
#[inline]
pub fn body_stamp(body: &[u8]) -> Option<u64> {
    body.get(..8).map(|b| u64::from_be_bytes(b.try_into().expect("8 octets")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(m: &AMQPClass) -> BytesMut {
        let mut b = BytesMut::new();
        put_method(&mut b, 1, m);
        b
    }

    #[test]
    fn hand_written_ack_matches_amq_protocol() {
        let m = AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack { delivery_tag: 77, multiple: true }));
        let mut b = BytesMut::new();
        put_basic_ack(&mut b, 1, 77, true);
        assert_eq!(b, encode(&m));
    }

    #[test]
    fn hand_written_publish_matches_amq_protocol() {
        let m = AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "ex".into(),
            routing_key: "a.b.c".into(),
            mandatory: false,
            immediate: false,
        }));
        let mut b = BytesMut::new();
        put_publish(&mut b, 1, "ex", "a.b.c", false);
        assert_eq!(b, encode(&m));
    }

    #[test]
    fn hand_parsers_read_what_amq_protocol_writes() {
        let d = AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
            consumer_tag: "ctag".into(),
            delivery_tag: 123456789,
            redelivered: true,
            exchange: "x".into(),
            routing_key: "rk".into(),
        }));
        let mut b = encode(&d);
        let f = peek_frame(&mut b, CLIENT_FRAME_MAX).unwrap().unwrap();
        let p = f.payload(&b);
        assert_eq!(method_id(p).unwrap(), BASIC_DELIVER);
        assert_eq!(deliver_tag(p).unwrap(), 123456789);

        let n =
            AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack { delivery_tag: 9, multiple: true, requeue: true }));
        let mut b = encode(&n);
        let f = peek_frame(&mut b, CLIENT_FRAME_MAX).unwrap().unwrap();
        assert_eq!(confirm_args(f.payload(&b)).unwrap(), (9, true));
    }

    #[test]
    fn template_splits_body_and_stamps_first_frame() {
        let t = MessageTemplate::new(1, "", Some("q"), 10_000, true, 4096);
        let mut b = BytesMut::new();
        t.put(&mut b, 0x0102030405060708);
        let mut frames = Vec::new();
        while let Some(f) = peek_frame(&mut b, 4096).unwrap() {
            frames.push((f.kind, f.payload(&b).to_vec()));
            let _ = b.split_to(f.total());
        }
        assert!(b.is_empty());
        let kinds: Vec<u8> = frames.iter().map(|f| f.0).collect();
        assert_eq!(kinds, [FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_BODY, FRAME_BODY]);
        assert_eq!(content_body_size(&frames[1].1).unwrap(), 10_000);
        let h = amq_protocol::frame::parsing::parse_content_header(&frames[1].1[..]).unwrap().1;
        assert_eq!(h.properties.delivery_mode(), &Some(2));
        assert_eq!(body_stamp(&frames[2].1), Some(0x0102030405060708));
        let body: usize = frames[2..].iter().map(|f| f.1.len()).sum();
        assert_eq!(body, 10_000);

        let mut head = BytesMut::new();
        let tail = t.put_head(&mut head, 0x0102030405060708).to_vec();
        head.extend_from_slice(&tail);
        let mut whole = BytesMut::new();
        t.put(&mut whole, 0x0102030405060708);
        assert_eq!(head, whole);
    }
}
