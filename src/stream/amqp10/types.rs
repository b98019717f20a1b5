//! The AMQP 1.0 type system (OASIS AMQP 1.0, part 1 "Types"): the values a stream record holds.
//!
//! One [`Value`] per AMQP 1.0 type, whatever width it was encoded with (`str8`/`str32`,
//! `smalluint`/`uint0`/`uint`, `list0`/`list8`/`list32`, …): the width is an encoding choice,
//! [`super::codec`] picks the smallest when encoding and accepts every one when decoding.
//! Binaries and strings share the record's buffer ([`Bytes`]/[`ByteString`]), so decoding a
//! record copies no body.

use bytes::Bytes;
use bytestring::ByteString;

/// A map's entries in their encoded order (AMQP maps are ordered and may repeat keys; lookups
/// take the first match, as RabbitMQ's do).
pub type Map = Vec<(Value, Value)>;

/// One AMQP 1.0 value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Ubyte(u8),
    Ushort(u16),
    Uint(u32),
    Ulong(u64),
    Byte(i8),
    Short(i16),
    Int(i32),
    Long(i64),
    Float(f32),
    Double(f64),
    /// IEEE 754-2008 decimal32/64/128 (BID or DPD is the peer's business): kept as the bytes.
    Decimal32([u8; 4]),
    Decimal64([u8; 8]),
    Decimal128([u8; 16]),
    Char(char),
    /// Milliseconds since the Unix epoch.
    Timestamp(i64),
    Uuid([u8; 16]),
    Binary(Bytes),
    String(ByteString),
    /// ASCII by the spec; accepted as any UTF-8, as RabbitMQ and the stream clients do.
    Symbol(ByteString),
    List(Vec<Value>),
    Map(Map),
    /// Items all of one type (an item's type is its [`Value`] variant; described items share
    /// one descriptor). An array whose items differ is encoded as a list.
    Array(Vec<Value>),
    Described(Box<Described>),
}

/// A described value: a descriptor (by convention a `ulong` code or a `symbol` name) and the
/// value it describes.
#[derive(Debug, Clone, PartialEq)]
pub struct Described {
    pub descriptor: Value,
    pub value: Value,
}

impl Value {
    /// A string value.
    pub fn string(s: &str) -> Value {
        Value::String(ByteString::from(s))
    }

    /// A symbol value.
    pub fn symbol(s: &str) -> Value {
        Value::Symbol(ByteString::from(s))
    }

    /// A described value.
    pub fn described(descriptor: Value, value: Value) -> Value {
        Value::Described(Box::new(Described { descriptor, value }))
    }

    /// The text of a string or a symbol.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) | Value::Symbol(s) => Some(s),
            _ => None,
        }
    }

    /// An integer of any AMQP integer type, if it fits an `i128` (they all do).
    pub fn as_integer(&self) -> Option<i128> {
        Some(match *self {
            Value::Ubyte(v) => v.into(),
            Value::Ushort(v) => v.into(),
            Value::Uint(v) => v.into(),
            Value::Ulong(v) => v.into(),
            Value::Byte(v) => v.into(),
            Value::Short(v) => v.into(),
            Value::Int(v) => v.into(),
            Value::Long(v) => v.into(),
            _ => return None,
        })
    }

    /// The value of the first entry of a map whose key is this string or symbol (keys of
    /// other types never match).
    pub fn lookup<'a>(map: &'a [(Value, Value)], key: &str) -> Option<&'a Value> {
        map.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v)
    }
}

/// Descriptor codes of the message sections (part 3, 3.2).
pub mod descriptor {
    pub const HEADER: u64 = 0x70;
    pub const DELIVERY_ANNOTATIONS: u64 = 0x71;
    pub const MESSAGE_ANNOTATIONS: u64 = 0x72;
    pub const PROPERTIES: u64 = 0x73;
    pub const APPLICATION_PROPERTIES: u64 = 0x74;
    pub const DATA: u64 = 0x75;
    pub const AMQP_SEQUENCE: u64 = 0x76;
    pub const AMQP_VALUE: u64 = 0x77;
    pub const FOOTER: u64 = 0x78;

    /// The symbolic descriptor a section may carry instead of its code.
    pub fn by_name(name: &str) -> Option<u64> {
        Some(match name {
            "amqp:header:list" => HEADER,
            "amqp:delivery-annotations:map" => DELIVERY_ANNOTATIONS,
            "amqp:message-annotations:map" => MESSAGE_ANNOTATIONS,
            "amqp:properties:list" => PROPERTIES,
            "amqp:application-properties:map" => APPLICATION_PROPERTIES,
            "amqp:data:binary" => DATA,
            "amqp:amqp-sequence:list" => AMQP_SEQUENCE,
            "amqp:amqp-value:*" => AMQP_VALUE,
            "amqp:footer:map" => FOOTER,
            _ => return None,
        })
    }
}
