//! The bare message (AMQP 1.0 part 3, 3.2): the sections a stream record is made of.
//!
//! A record is the concatenation of the encoded sections, each a described value: `header`,
//! `delivery-annotations`, `message-annotations`, `properties`, `application-properties`, the
//! body (one or more `data`, one or more `amqp-sequence`, or one `amqp-value`) and `footer`.
//! [`Message::encode`] writes them in that order, leaving out absent sections; decoding
//! accepts them in any order (RabbitMQ does), with numeric or symbolic descriptors.

use bytes::Bytes;
use bytestring::ByteString;

use super::codec::{self, DecodeError, Decoder};
use super::types::{Map, Value, descriptor};

/// The `header` section. Absent fields take the spec's defaults (durable false, priority 4).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Header {
    pub durable: Option<bool>,
    pub priority: Option<u8>,
    /// Milliseconds.
    pub ttl: Option<u32>,
    pub first_acquirer: Option<bool>,
    pub delivery_count: Option<u32>,
}

/// The `properties` section.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Properties {
    /// A `message-id`: ulong, uuid, binary or string.
    pub message_id: Option<Value>,
    pub user_id: Option<Bytes>,
    pub to: Option<ByteString>,
    pub subject: Option<ByteString>,
    pub reply_to: Option<ByteString>,
    /// A `message-id` like [`Properties::message_id`].
    pub correlation_id: Option<Value>,
    /// A symbol.
    pub content_type: Option<ByteString>,
    /// A symbol.
    pub content_encoding: Option<ByteString>,
    /// Milliseconds since the epoch.
    pub absolute_expiry_time: Option<i64>,
    /// Milliseconds since the epoch.
    pub creation_time: Option<i64>,
    pub group_id: Option<ByteString>,
    pub group_sequence: Option<u32>,
    pub reply_to_group_id: Option<ByteString>,
}

/// One body section.
#[derive(Debug, Clone, PartialEq)]
pub enum BodySection {
    Data(Bytes),
    Sequence(Vec<Value>),
    Value(Value),
}

/// A bare message, as sections.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Message {
    pub header: Option<Header>,
    pub delivery_annotations: Option<Map>,
    pub message_annotations: Option<Map>,
    pub properties: Option<Properties>,
    pub application_properties: Option<Map>,
    pub body: Vec<BodySection>,
    pub footer: Option<Map>,
}

/// A decoded record, with where its body is.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub message: Message,
    /// The encoded body sections and any footer after them, as they are in the record, when
    /// they are its tail (nothing else follows the first body section): a body can be handed
    /// on encoded without encoding it again.
    pub raw_body: Option<Bytes>,
}

impl Message {
    /// The message with a single `data` section holding `body`.
    pub fn with_data(body: Bytes) -> Message {
        Message { body: vec![BodySection::Data(body)], ..Message::default() }
    }

    /// The encoded record.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_head(&mut out);
        encode_body(&self.body, &mut out);
        if let Some(f) = &self.footer {
            map_section(&mut out, descriptor::FOOTER, f);
        }
        out
    }

    /// The sections before the body (header to application-properties).
    pub fn encode_head(&self, out: &mut Vec<u8>) {
        if let Some(h) = &self.header {
            let fields = [
                h.durable.map(Value::Bool),
                h.priority.map(Value::Ubyte),
                h.ttl.map(Value::Uint),
                h.first_acquirer.map(Value::Bool),
                h.delivery_count.map(Value::Uint),
            ];
            section(out, descriptor::HEADER, &field_list(fields));
        }
        if let Some(m) = &self.delivery_annotations {
            map_section(out, descriptor::DELIVERY_ANNOTATIONS, m);
        }
        if let Some(m) = &self.message_annotations {
            map_section(out, descriptor::MESSAGE_ANNOTATIONS, m);
        }
        if let Some(p) = &self.properties {
            let s = |v: &Option<ByteString>| v.clone().map(Value::String);
            let sym = |v: &Option<ByteString>| v.clone().map(Value::Symbol);
            let fields = [
                p.message_id.clone(),
                p.user_id.clone().map(Value::Binary),
                s(&p.to),
                s(&p.subject),
                s(&p.reply_to),
                p.correlation_id.clone(),
                sym(&p.content_type),
                sym(&p.content_encoding),
                p.absolute_expiry_time.map(Value::Timestamp),
                p.creation_time.map(Value::Timestamp),
                s(&p.group_id),
                p.group_sequence.map(Value::Uint),
                s(&p.reply_to_group_id),
            ];
            section(out, descriptor::PROPERTIES, &field_list(fields));
        }
        if let Some(m) = &self.application_properties {
            map_section(out, descriptor::APPLICATION_PROPERTIES, m);
        }
    }

    /// A record's sections.
    pub fn decode(record: &Bytes) -> Result<Message, DecodeError> {
        Ok(Message::decode_parts(record)?.message)
    }

    /// A record's sections, and its encoded body when that is the record's tail.
    pub fn decode_parts(record: &Bytes) -> Result<Decoded, DecodeError> {
        let mut m = Message::default();
        let mut d = Decoder::new(record);
        let mut body_start = None;
        let mut clean_tail = true;
        while !d.is_empty() {
            let at = d.position();
            let Value::Described(s) = d.value()? else {
                return Err(DecodeError::Malformed("a section that is not a described value"));
            };
            let code = match &s.descriptor {
                Value::Ulong(c) => *c,
                Value::Symbol(name) => descriptor::by_name(name).unwrap_or(u64::MAX),
                _ => u64::MAX,
            };
            let is_body = matches!(code, descriptor::DATA | descriptor::AMQP_SEQUENCE | descriptor::AMQP_VALUE);
            if is_body && body_start.is_none() {
                body_start = Some(at);
            } else if body_start.is_some() && !is_body && code != descriptor::FOOTER {
                clean_tail = false;
            }
            match (code, s.value) {
                (descriptor::HEADER, v) => m.header = Some(header(v)?),
                (descriptor::DELIVERY_ANNOTATIONS, v) => m.delivery_annotations = Some(map(v)?),
                (descriptor::MESSAGE_ANNOTATIONS, v) => m.message_annotations = Some(map(v)?),
                (descriptor::PROPERTIES, v) => m.properties = Some(properties(v)?),
                (descriptor::APPLICATION_PROPERTIES, v) => m.application_properties = Some(map(v)?),
                (descriptor::DATA, Value::Binary(b)) => m.body.push(BodySection::Data(b)),
                (descriptor::AMQP_SEQUENCE, Value::List(items)) => m.body.push(BodySection::Sequence(items)),
                (descriptor::AMQP_VALUE, v) => m.body.push(BodySection::Value(v)),
                (descriptor::FOOTER, v) => m.footer = Some(map(v)?),
                (descriptor::DATA | descriptor::AMQP_SEQUENCE, _) => {
                    return Err(DecodeError::Malformed("a body section of the wrong type"));
                }
                _ => return Err(DecodeError::Malformed("an unknown section")),
            }
        }
        let raw_body = match body_start {
            Some(at) if clean_tail => Some(record.slice(at..)),
            _ => None,
        };
        Ok(Decoded { message: m, raw_body })
    }

    /// A message annotation by its (symbol) key.
    pub fn annotation(&self, key: &str) -> Option<&Value> {
        Value::lookup(self.message_annotations.as_deref()?, key)
    }

    /// An application property by its key.
    pub fn application_property(&self, key: &str) -> Option<&Value> {
        Value::lookup(self.application_properties.as_deref()?, key)
    }

    /// The stream filter value an AMQP 1.0 publisher sets (message annotation
    /// `x-stream-filter-value`, a string).
    pub fn filter_value(&self) -> Option<&str> {
        match self.annotation("x-stream-filter-value")? {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
}

/// Encode body sections.
pub fn encode_body(body: &[BodySection], out: &mut Vec<u8>) {
    for b in body {
        match b {
            BodySection::Data(bytes) => {
                // The data section's prefix, then the bytes, without copying them into a Value.
                descriptor_prefix(out, descriptor::DATA);
                match u8::try_from(bytes.len()) {
                    Ok(n) => out.extend_from_slice(&[codec::code::VBIN8, n]),
                    Err(_) => {
                        out.push(codec::code::VBIN32);
                        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
                    }
                }
                out.extend_from_slice(bytes);
            }
            BodySection::Sequence(items) => {
                descriptor_prefix(out, descriptor::AMQP_SEQUENCE);
                codec::encode_list(items, out);
            }
            BodySection::Value(v) => section(out, descriptor::AMQP_VALUE, v),
        }
    }
}

/// One section: its descriptor code and its value.
fn section(out: &mut Vec<u8>, code: u64, value: &Value) {
    descriptor_prefix(out, code);
    codec::encode(value, out);
}

/// A section's descriptor: a described value with a `smallulong` code.
fn descriptor_prefix(out: &mut Vec<u8>, code: u64) {
    out.extend_from_slice(&[codec::code::DESCRIBED, codec::code::SMALLULONG, code as u8]);
}

/// One section whose value is a map.
fn map_section(out: &mut Vec<u8>, code: u64, entries: &[(Value, Value)]) {
    descriptor_prefix(out, code);
    codec::encode_map(entries, out);
}

/// A composite's fields as a list: absent fields null, trailing ones left out.
fn field_list<const N: usize>(fields: [Option<Value>; N]) -> Value {
    let len = fields.iter().rposition(Option::is_some).map_or(0, |i| i + 1);
    Value::List(fields.into_iter().take(len).map(|f| f.unwrap_or(Value::Null)).collect())
}

fn map(v: Value) -> Result<Map, DecodeError> {
    match v {
        Value::Map(m) => Ok(m),
        Value::Null => Ok(Map::new()),
        _ => Err(DecodeError::Malformed("an annotations or properties section that is not a map")),
    }
}

fn fields(v: Value) -> Result<Vec<Value>, DecodeError> {
    match v {
        Value::List(items) => Ok(items),
        _ => Err(DecodeError::Malformed("a header or properties section that is not a list")),
    }
}

const WRONG_FIELD: DecodeError = DecodeError::Malformed("a header or properties field of the wrong type");

fn opt<T>(v: Option<Value>, f: impl FnOnce(Value) -> Option<T>) -> Result<Option<T>, DecodeError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => f(v).map(Some).ok_or(WRONG_FIELD),
    }
}

fn boolean(v: Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(b),
        _ => None,
    }
}

fn uint(v: Value) -> Option<u32> {
    match v {
        Value::Uint(n) => Some(n),
        _ => None,
    }
}

fn text(v: Value) -> Option<ByteString> {
    match v {
        Value::String(s) | Value::Symbol(s) => Some(s),
        _ => None,
    }
}

fn timestamp(v: Value) -> Option<i64> {
    match v {
        Value::Timestamp(t) => Some(t),
        _ => None,
    }
}

fn message_id(v: Value) -> Option<Value> {
    matches!(v, Value::Ulong(_) | Value::Uuid(_) | Value::Binary(_) | Value::String(_)).then_some(v)
}

fn header(v: Value) -> Result<Header, DecodeError> {
    let mut f = fields(v)?.into_iter();
    Ok(Header {
        durable: opt(f.next(), boolean)?,
        priority: opt(f.next(), |v| match v {
            Value::Ubyte(p) => Some(p),
            _ => None,
        })?,
        ttl: opt(f.next(), uint)?,
        first_acquirer: opt(f.next(), boolean)?,
        delivery_count: opt(f.next(), uint)?,
    })
}

fn properties(v: Value) -> Result<Properties, DecodeError> {
    let mut f = fields(v)?.into_iter();
    Ok(Properties {
        message_id: opt(f.next(), message_id)?,
        user_id: opt(f.next(), |v| match v {
            Value::Binary(b) => Some(b),
            _ => None,
        })?,
        to: opt(f.next(), text)?,
        subject: opt(f.next(), text)?,
        reply_to: opt(f.next(), text)?,
        correlation_id: opt(f.next(), message_id)?,
        content_type: opt(f.next(), text)?,
        content_encoding: opt(f.next(), text)?,
        absolute_expiry_time: opt(f.next(), timestamp)?,
        creation_time: opt(f.next(), timestamp)?,
        group_id: opt(f.next(), text)?,
        group_sequence: opt(f.next(), uint)?,
        reply_to_group_id: opt(f.next(), text)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message written out by hand from the spec (part 3, 3.2; part 1, 1.6).
    const HAND: &[u8] = &[
        // header: described(smallulong 0x70, list8 size 2 count 1 [true])
        0x00, 0x53, 0x70, 0xc0, 0x02, 0x01, 0x41, // message-annotations: map8 {sym "x-k": smalluint 7}
        0x00, 0x53, 0x72, 0xc1, 0x08, 0x02, 0xa3, 0x03, b'x', b'-', b'k', 0x52, 0x07,
        // properties: list8 [str8 "m1", null ×5, sym8 "text/plain"]
        0x00, 0x53, 0x73, 0xc0, 0x16, 0x07, 0xa1, 0x02, b'm', b'1', 0x40, 0x40, 0x40, 0x40, 0x40, 0xa3, 0x0a, b't',
        b'e', b'x', b't', b'/', b'p', b'l', b'a', b'i', b'n',
        // application-properties: map8 {str8 "k": smallint 1}
        0x00, 0x53, 0x74, 0xc1, 0x06, 0x02, 0xa1, 0x01, b'k', 0x54, 0x01, // data: vbin8 "hello"
        0x00, 0x53, 0x75, 0xa0, 0x05, b'h', b'e', b'l', b'l', b'o',
    ];

    fn hand() -> Message {
        Message {
            header: Some(Header { durable: Some(true), ..Header::default() }),
            message_annotations: Some(vec![(Value::symbol("x-k"), Value::Uint(7))]),
            properties: Some(Properties {
                message_id: Some(Value::string("m1")),
                content_type: Some("text/plain".into()),
                ..Properties::default()
            }),
            application_properties: Some(vec![(Value::string("k"), Value::Int(1))]),
            body: vec![BodySection::Data(Bytes::from_static(b"hello"))],
            ..Message::default()
        }
    }

    #[test]
    fn a_hand_written_record_decodes_and_encodes_byte_for_byte() {
        let d = Message::decode_parts(&Bytes::from_static(HAND)).unwrap();
        assert_eq!(d.message, hand());
        assert_eq!(d.raw_body.as_deref(), Some(&HAND[HAND.len() - 10..]));
        assert_eq!(hand().encode(), HAND);
        assert_eq!(d.message.annotation("x-k"), Some(&Value::Uint(7)));
        assert_eq!(d.message.application_property("k"), Some(&Value::Int(1)));
    }

    #[test]
    fn every_section_and_field_round_trips() {
        let m = Message {
            header: Some(Header {
                durable: Some(false),
                priority: Some(9),
                ttl: Some(60_000),
                first_acquirer: Some(true),
                delivery_count: Some(3),
            }),
            delivery_annotations: Some(vec![(Value::symbol("x-d"), Value::Null)]),
            message_annotations: Some(vec![(Value::Ulong(5), Value::List(vec![Value::Long(-1)]))]),
            properties: Some(Properties {
                message_id: Some(Value::Uuid([9; 16])),
                user_id: Some(Bytes::from_static(b"guest")),
                to: Some("/queues/q".into()),
                subject: Some("s".into()),
                reply_to: Some("r".into()),
                correlation_id: Some(Value::Ulong(42)),
                content_type: Some("application/json".into()),
                content_encoding: Some("gzip".into()),
                absolute_expiry_time: Some(-5),
                creation_time: Some(1_700_000_000_123),
                group_id: Some("g".into()),
                group_sequence: Some(7),
                reply_to_group_id: Some("rg".into()),
            }),
            application_properties: Some(vec![(Value::string("a"), Value::Binary(Bytes::from_static(b"\0")))]),
            body: vec![
                BodySection::Sequence(vec![Value::Bool(true)]),
                BodySection::Sequence(vec![]),
                BodySection::Value(Value::Map(vec![])),
            ],
            footer: Some(vec![(Value::symbol("x-f"), Value::Timestamp(0))]),
        };
        let bytes = Bytes::from(m.encode());
        let d = Message::decode_parts(&bytes).unwrap();
        assert_eq!(d.message, m);
        // Several data sections, an empty body, a large data section (vbin32).
        for body in [
            vec![BodySection::Data(Bytes::from_static(b"a")), BodySection::Data(Bytes::new())],
            vec![],
            vec![BodySection::Data(Bytes::from(vec![7; 70_000]))],
        ] {
            let m = Message { body, ..Message::default() };
            assert_eq!(Message::decode(&Bytes::from(m.encode())).unwrap(), m);
        }
        // A body decodes without copying: the data is a slice of the record.
        let rec = Bytes::from(Message::with_data(Bytes::from(vec![1; 1000])).encode());
        let Some(BodySection::Data(b)) = Message::decode(&rec).unwrap().body.pop() else { panic!() };
        assert_eq!(b.as_ptr(), rec[rec.len() - 1000..].as_ptr());
    }

    #[test]
    fn decoding_is_lenient_where_rabbitmq_is() {
        // Symbolic descriptors, sections out of order, a header in list32 with every field
        // null (as some encoders write it).
        let mut rec = Vec::new();
        rec.extend_from_slice(&[0x00, 0xa3, 16]);
        rec.extend_from_slice(b"amqp:data:binary");
        rec.extend_from_slice(&[0xa0, 0x01, b'z']);
        rec.extend_from_slice(&[0x00, 0x53, 0x70, 0xd0, 0, 0, 0, 9, 0, 0, 0, 5, 0x40, 0x40, 0x40, 0x40, 0x40]);
        let d = Message::decode_parts(&Bytes::from(rec)).unwrap();
        assert_eq!(d.message.body, vec![BodySection::Data(Bytes::from_static(b"z"))]);
        assert_eq!(d.message.header, Some(Header::default()));
        // A header section after the body: the body is not the record's tail.
        assert_eq!(d.raw_body, None);
    }

    #[test]
    fn malformed_records_are_refused() {
        for bad in [
            &[0x40][..],                                       // not a described value
            &[0x00, 0x53, 0x7f, 0x40],                         // unknown section
            &[0x00, 0x53, 0x75, 0xa1, 0x01, b'a'],             // data that is not binary
            &[0x00, 0x53, 0x70, 0xc0, 0x02, 0x01, 0x50],       // header field truncated
            &[0x00, 0x53, 0x70, 0xc0, 0x03, 0x01, 0x50, 0x01], // durable as a ubyte
            &[0x00, 0x53, 0x72, 0xc0, 0x01, 0x00],             // annotations as a list
            &[0x00, 0x53, 0x73, 0x45, 0x00],                   // trailing garbage
        ] {
            assert!(Message::decode(&Bytes::copy_from_slice(bad)).is_err(), "{bad:02x?}");
        }
    }
}
