//! A routing key as published.
//!
//! RabbitMQ takes the routing key of `basic.publish` as bytes: one that is not UTF-8 is
//! accepted, routed (fanout, headers, topic wildcards) and delivered byte for byte (measured on
//! 3.10.8; its `queue.bind` and `queue.declare` refuse such names, so no binding key or queue
//! name ever equals one). Warren routes on a UTF-8 view and keeps the bytes, only when they
//! differ, for everything that goes back on the wire or to disk.

use std::ops::Deref;

use bytes::Bytes;
use bytestring::ByteString;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingKey {
    /// The key as text (non-UTF-8 sequences replaced), for routing and logs.
    text: ByteString,
    /// The bytes as published, when they are not UTF-8.
    bytes: Option<Box<[u8]>>,
}

impl RoutingKey {
    /// The key from its wire bytes (no copy when they are UTF-8).
    pub fn from_wire(raw: Bytes) -> RoutingKey {
        match text(raw) {
            Ok(text) => RoutingKey { text, bytes: None },
            Err(raw) => RoutingKey { text: lossy(&raw), bytes: Some(raw.to_vec().into_boxed_slice()) },
        }
    }

    /// The bytes to send or store: exactly as published.
    pub fn as_wire(&self) -> &[u8] {
        self.bytes.as_deref().unwrap_or(self.text.as_bytes())
    }
}

/// `raw` as text (sharing its buffer) when it is UTF-8, else `raw` back.
pub fn text(raw: Bytes) -> Result<ByteString, Bytes> {
    match std::str::from_utf8(&raw) {
        Ok(_) => Ok(ByteString::try_from(raw).unwrap_or_default()),
        Err(_) => Err(raw),
    }
}

/// `raw` as text, non-UTF-8 sequences replaced.
pub fn lossy(raw: &[u8]) -> ByteString {
    String::from_utf8_lossy(raw).into_owned().into()
}

impl Deref for RoutingKey {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}

impl From<&str> for RoutingKey {
    fn from(s: &str) -> RoutingKey {
        RoutingKey { text: s.into(), bytes: None }
    }
}

impl From<String> for RoutingKey {
    fn from(s: String) -> RoutingKey {
        RoutingKey { text: s.into(), bytes: None }
    }
}

impl std::fmt::Display for RoutingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_keys_are_shared_and_others_keep_their_bytes() {
        let k = RoutingKey::from_wire(Bytes::from_static(b"a.b"));
        assert_eq!((&*k, k.as_wire()), ("a.b", &b"a.b"[..]));
        let k = RoutingKey::from_wire(Bytes::from_static(b"k\xff.x"));
        assert_eq!(&*k, "k\u{FFFD}.x");
        assert_eq!(k.as_wire(), b"k\xff.x");
    }
}
