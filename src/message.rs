//! A published message, shared by every queue it was routed to.
//!
//! Cloning an `Arc<Message>` is how fanout works: no body is ever copied. The body stays as the
//! body frames' [`Bytes`] slices of the publisher's read buffer, and the content header is kept
//! raw so deliveries forward the publisher's exact property bytes.

use bytes::Bytes;

use crate::protocol::BasicProperties;

#[derive(Debug)]
pub struct Message {
    pub exchange: String,
    pub routing_key: String,
    pub properties: BasicProperties,
    /// Content-header payload as received (class, weight, body size, flags, properties).
    pub raw_header: Bytes,
    /// Body, as the chunks it arrived in.
    pub body: Vec<Bytes>,
    pub body_size: u64,
}

impl Message {
    /// Whether the publisher asked for persistence (delivery-mode 2).
    pub fn is_persistent(&self) -> bool {
        self.properties.delivery_mode() == &Some(2)
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
