//! A published message, shared by every queue it was routed to.
//!
//! Cloning an `Arc<Message>` is how fanout works: no body is ever copied. The body stays as the
//! body frames' [`Bytes`] slices of the publisher's read buffer, and the content header is kept
//! raw so deliveries forward the publisher's exact property bytes.

use std::sync::OnceLock;

use bytes::Bytes;
use bytestring::ByteString;

use crate::protocol::routing_key::RoutingKey;
use smallvec::SmallVec;

use crate::protocol::codec::ContentHeader;
use crate::protocol::encode::content_header_payload;
use crate::protocol::properties::{self, Summary};
use crate::protocol::{BasicProperties, CLASS_BASIC};

/// A body as the chunks (body frames) it arrived in; almost always one, held inline.
pub type Body = SmallVec<[Bytes; 1]>;

#[derive(Debug)]
pub struct Message {
    /// Exchange and routing key as published: slices of the publisher's read buffer.
    pub exchange: ByteString,
    pub routing_key: RoutingKey,
    /// Content-header payload as received (class, weight, body size, flags, properties).
    pub raw_header: Bytes,
    /// Body, as the chunks it arrived in.
    pub body: Body,
    pub body_size: u64,
    /// What the hot path reads of the properties (which are present, delivery mode, priority).
    pub summary: Summary,
    /// The properties, decoded from `raw_header` on first use (most messages never need them).
    decoded: OnceLock<Box<BasicProperties>>,
}

impl Message {
    /// A message from its publish method's names, its checked content header and its body.
    pub fn new(exchange: ByteString, routing_key: RoutingKey, header: ContentHeader, body: Body) -> Message {
        let decoded = OnceLock::new();
        if let Some(p) = header.decoded {
            let _ = decoded.set(p);
        }
        Message {
            exchange,
            routing_key,
            raw_header: header.raw,
            body,
            body_size: header.body_size,
            summary: header.summary,
            decoded,
        }
    }

    /// The same message in one allocation of its own, no longer sharing the publisher's read
    /// buffer. A connection that publishes a message or two and closes (a PHP request, a
    /// serverless function) would otherwise leave its whole read buffer (8 KiB) pinned by a
    /// ~100-byte message for as long as the message is queued. Bodies above `max_body` are
    /// left as they are (a large body fills its buffer).
    pub fn compacted(self, max_body: u64) -> Message {
        if self.body_size > max_body {
            return self;
        }
        let rk = self.routing_key.as_wire();
        let len = self.exchange.len() + rk.len() + self.raw_header.len() + self.body_size as usize;
        let mut buf = bytes::BytesMut::with_capacity(len);
        buf.extend_from_slice(self.exchange.as_bytes());
        buf.extend_from_slice(rk);
        buf.extend_from_slice(&self.raw_header);
        for chunk in &self.body {
            buf.extend_from_slice(chunk);
        }
        let buf = buf.freeze();
        let (x_end, rk_end) = (self.exchange.len(), self.exchange.len() + rk.len());
        let h_end = rk_end + self.raw_header.len();
        Message {
            // Was a ByteString: valid UTF-8.
            exchange: ByteString::try_from(buf.slice(..x_end)).unwrap_or_else(|_| self.exchange.clone()),
            routing_key: RoutingKey::from_wire(buf.slice(x_end..rk_end)),
            raw_header: buf.slice(rk_end..h_end),
            body: smallvec::smallvec![buf.slice(h_end..)],
            body_size: self.body_size,
            summary: self.summary,
            decoded: self.decoded,
        }
    }

    /// A message with these properties (its content header encoded from them).
    pub fn build(exchange: ByteString, routing_key: RoutingKey, properties: BasicProperties, body: Body) -> Message {
        let body_size = body.iter().map(|b| b.len() as u64).sum();
        Message {
            exchange,
            routing_key,
            raw_header: content_header_payload(CLASS_BASIC, body_size, &properties),
            body,
            body_size,
            summary: properties::summarize(&properties),
            decoded: OnceLock::from(Box::new(properties)),
        }
    }

    /// The message's properties (decoded on first use).
    pub fn properties(&self) -> &BasicProperties {
        self.decoded.get_or_init(|| {
            // The header was checked when the message was made, so this decodes.
            Box::new(properties::decode(&self.raw_header).unwrap_or_default())
        })
    }

    /// The `headers` table, if the message has one (decoding only then).
    pub fn headers(&self) -> Option<&amq_protocol::types::FieldTable> {
        if !self.summary.has(properties::HEADERS) {
            return None;
        }
        self.properties().headers().as_ref()
    }

    /// The `expiration` property, if set (decoding only then).
    pub fn expiration(&self) -> Option<&str> {
        if !self.summary.has(properties::EXPIRATION) {
            return None;
        }
        self.properties().expiration().as_ref().map(|e| e.as_str())
    }

    /// The `timestamp` property (seconds), if set (decoding only then).
    pub fn timestamp(&self) -> Option<u64> {
        if !self.summary.has(properties::TIMESTAMP) {
            return None;
        }
        *self.properties().timestamp()
    }

    /// Whether the publisher asked for persistence (delivery-mode 2).
    pub fn is_persistent(&self) -> bool {
        self.summary.delivery_mode == Some(2)
    }

    /// A copy with other properties: the content header is re-encoded, the body shared.
    pub fn with_properties(&self, properties: BasicProperties) -> Message {
        Message {
            exchange: self.exchange.clone(),
            routing_key: self.routing_key.clone(),
            raw_header: content_header_payload(CLASS_BASIC, self.body_size, &properties),
            summary: properties::summarize(&properties),
            decoded: OnceLock::from(Box::new(properties)),
            body: self.body.clone(),
            body_size: self.body_size,
        }
    }

    /// A copy with one header set (used for `x-delivery-count` on quorum redeliveries).
    pub fn with_header(&self, key: &str, value: amq_protocol::types::AMQPValue) -> Message {
        let mut headers = self.properties().headers().clone().unwrap_or_default();
        headers.insert(key.into(), value);
        self.with_properties(self.properties().clone().with_headers(headers))
    }

    /// The body as one contiguous buffer (copies only when it arrived in several frames).
    pub fn body_bytes(&self) -> Bytes {
        match self.body.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => {
                let mut v = Vec::with_capacity(self.body_size as usize);
                for b in many {
                    v.extend_from_slice(b);
                }
                Bytes::from(v)
            }
        }
    }
}

/// The `expiration` property: a non-negative integer string of milliseconds, with RabbitMQ's
/// accept/reject set and reply texts (406 on anything else).
pub fn parse_expiration(s: &str) -> crate::error::AmqpResult<u64> {
    use crate::error::AmqpError;
    let invalid = |why: String| AmqpError::precondition(format_args!("invalid expiration '{s}': {why}"));
    let body = s.strip_prefix('+').unwrap_or(s);
    let (neg, digits_part) = match body.strip_prefix('-') {
        Some(rest) if !s.starts_with('+') => (true, rest),
        _ => (false, body),
    };
    let digits: String = digits_part.chars().take_while(|c| c.is_ascii_digit()).collect();
    if digits.is_empty() {
        return Err(invalid("no_integer".into()));
    }
    let rest = &digits_part[digits.len()..];
    if !rest.is_empty() {
        return Err(invalid(format!("{{leftover_string,\"{rest}\"}}")));
    }
    let value: u128 = digits.parse().unwrap_or(u128::MAX);
    if neg && value > 0 {
        return Err(invalid(format!("{{value_negative,-{value}}}")));
    }
    // Ten years in milliseconds, RabbitMQ's upper bound.
    const MAX: u128 = 315_360_000_000;
    if value > MAX {
        // RabbitMQ formats the reason with Erlang's `~p`, which wraps a term that would pass
        // column 80 after the tuple's first element, indented to the term's column.
        let column = "invalid expiration '".len() + s.len() + "': ".len();
        let one_line = format!("{{value_too_large,{value}}}");
        if column + one_line.len() > 80 {
            return Err(invalid(format!("{{value_too_large,\n{}{value}}}", " ".repeat(column + 1))));
        }
        return Err(invalid(one_line));
    }
    Ok(value as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compacted_keeps_the_message_and_drops_the_shared_buffer() {
        // A message whose parts are slices of one big "read buffer".
        let read_buf = Bytes::from(vec![b'x'; 8192]);
        let props = BasicProperties::default().with_priority(3);
        let make = || {
            Message::build(
                ByteString::from("amq.direct"),
                RoutingKey::from_wire(Bytes::from_static(b"rk")),
                props.clone(),
                smallvec::smallvec![read_buf.slice(100..150), read_buf.slice(200..210)],
            )
        };
        let built = make();
        let c = make().compacted(4096);
        assert_eq!(c.exchange, built.exchange);
        assert_eq!(c.routing_key.as_wire(), built.routing_key.as_wire());
        assert_eq!(c.raw_header, built.raw_header);
        assert_eq!(c.body_bytes(), built.body_bytes());
        assert_eq!(c.body_size, 60);
        assert_eq!(c.properties().priority(), &Some(3));
        // One allocation of its own: the body no longer points into the read buffer.
        let range = read_buf.as_ptr() as usize..read_buf.as_ptr() as usize + read_buf.len();
        assert!(c.body.iter().all(|b| !range.contains(&(b.as_ptr() as usize))));
        // Large bodies are left alone.
        let big = make().compacted(10);
        assert_eq!(big.body.len(), 2);
        assert!(range.contains(&(big.body[0].as_ptr() as usize)));
    }

    #[test]
    fn expiration_accepts_and_rejects_as_rabbitmq() {
        for (s, v) in [("60000", 60000), ("0", 0), ("+10", 10), ("010", 10)] {
            assert_eq!(parse_expiration(s).unwrap(), v, "{s}");
        }
        let text = |s: &str| parse_expiration(s).unwrap_err().text;
        assert_eq!(text(""), "PRECONDITION_FAILED - invalid expiration '': no_integer");
        assert_eq!(text("abc"), "PRECONDITION_FAILED - invalid expiration 'abc': no_integer");
        assert_eq!(text(" 10"), "PRECONDITION_FAILED - invalid expiration ' 10': no_integer");
        assert_eq!(text("1.5"), "PRECONDITION_FAILED - invalid expiration '1.5': {leftover_string,\".5\"}");
        assert_eq!(text("-1"), "PRECONDITION_FAILED - invalid expiration '-1': {value_negative,-1}");
        assert!(text("99999999999999999999").contains("value_too_large"));
    }
}
