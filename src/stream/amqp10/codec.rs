//! AMQP 1.0 type encoding (part 1, 1.6 "Encodings"): [`encode`] writes a [`Value`] in its
//! smallest encoding; [`Decoder`] reads any valid encoding of any type.
//!
//! The decoder reads what stream clients wrote, so it trusts nothing: every size and count is
//! checked against the bytes that remain before anything is allocated, compound values nest at
//! most [`MAX_DEPTH`] deep, the number of values one input may produce is bounded by its
//! length, and it never panics (a fuzz target, `amqp10`, holds it to that).

use bytes::Bytes;
use bytestring::ByteString;

use super::types::{Described, Value};

/// The deepest nesting of lists, maps, arrays and described values the decoder accepts. A
/// record of Warren's own nests a 0-9-1 header at most [`crate::protocol::fields::MAX_NESTING`]
/// levels below four containers (section, annotations map, Warren's annotation, its map).
pub const MAX_DEPTH: usize = crate::protocol::fields::MAX_NESTING + 32;

/// Format codes (part 1, 1.6).
pub mod code {
    pub const DESCRIBED: u8 = 0x00;
    pub const NULL: u8 = 0x40;
    pub const TRUE: u8 = 0x41;
    pub const FALSE: u8 = 0x42;
    pub const UINT0: u8 = 0x43;
    pub const ULONG0: u8 = 0x44;
    pub const LIST0: u8 = 0x45;
    pub const UBYTE: u8 = 0x50;
    pub const BYTE: u8 = 0x51;
    pub const SMALLUINT: u8 = 0x52;
    pub const SMALLULONG: u8 = 0x53;
    pub const SMALLINT: u8 = 0x54;
    pub const SMALLLONG: u8 = 0x55;
    pub const BOOLEAN: u8 = 0x56;
    pub const USHORT: u8 = 0x60;
    pub const SHORT: u8 = 0x61;
    pub const UINT: u8 = 0x70;
    pub const INT: u8 = 0x71;
    pub const FLOAT: u8 = 0x72;
    pub const CHAR: u8 = 0x73;
    pub const DECIMAL32: u8 = 0x74;
    pub const ULONG: u8 = 0x80;
    pub const LONG: u8 = 0x81;
    pub const DOUBLE: u8 = 0x82;
    pub const TIMESTAMP: u8 = 0x83;
    pub const DECIMAL64: u8 = 0x84;
    pub const DECIMAL128: u8 = 0x94;
    pub const UUID: u8 = 0x98;
    pub const VBIN8: u8 = 0xa0;
    pub const STR8: u8 = 0xa1;
    pub const SYM8: u8 = 0xa3;
    pub const VBIN32: u8 = 0xb0;
    pub const STR32: u8 = 0xb1;
    pub const SYM32: u8 = 0xb3;
    pub const LIST8: u8 = 0xc0;
    pub const MAP8: u8 = 0xc1;
    pub const LIST32: u8 = 0xd0;
    pub const MAP32: u8 = 0xd1;
    pub const ARRAY8: u8 = 0xe0;
    pub const ARRAY32: u8 = 0xf0;
}

/// Why bytes are not an AMQP 1.0 value (or message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ends inside a value.
    Truncated,
    /// A byte that is no format code where a constructor belongs.
    InvalidCode(u8),
    /// A string or symbol that is not UTF-8, or a char that is no Unicode scalar value.
    InvalidText,
    /// A boolean byte other than 0 and 1, a map with an odd count, a compound whose items do
    /// not fill its size exactly, or anything else the spec does not allow.
    Malformed(&'static str),
    /// Nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// More values than an input of that length may hold (zero-width array items).
    TooMany,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("AMQP 1.0 value truncated"),
            DecodeError::InvalidCode(c) => write!(f, "invalid AMQP 1.0 format code 0x{c:02x}"),
            DecodeError::InvalidText => f.write_str("AMQP 1.0 string, symbol or char is not valid Unicode"),
            DecodeError::Malformed(why) => write!(f, "malformed AMQP 1.0 value: {why}"),
            DecodeError::TooDeep => write!(f, "AMQP 1.0 value nested deeper than {MAX_DEPTH} levels"),
            DecodeError::TooMany => f.write_str("AMQP 1.0 value holds more items than its size allows"),
        }
    }
}

impl std::error::Error for DecodeError {}

// ---------------------------------------------------------------------------------------------
// Encoding

/// Append `value` in its smallest encoding.
pub fn encode(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.push(code::NULL),
        Value::Bool(b) => out.push(if *b { code::TRUE } else { code::FALSE }),
        Value::Uint(0) => out.push(code::UINT0),
        &Value::Uint(v) if v <= 0xff => out.extend_from_slice(&[code::SMALLUINT, v as u8]),
        Value::Ulong(0) => out.push(code::ULONG0),
        &Value::Ulong(v) if v <= 0xff => out.extend_from_slice(&[code::SMALLULONG, v as u8]),
        &Value::Int(v) if i8::try_from(v).is_ok() => out.extend_from_slice(&[code::SMALLINT, v as u8]),
        &Value::Long(v) if i8::try_from(v).is_ok() => out.extend_from_slice(&[code::SMALLLONG, v as u8]),
        Value::List(items) if items.is_empty() => out.push(code::LIST0),
        Value::Binary(b) => variable(out, code::VBIN8, code::VBIN32, b),
        Value::String(s) => variable(out, code::STR8, code::STR32, s.as_bytes()),
        Value::Symbol(s) => variable(out, code::SYM8, code::SYM32, s.as_bytes()),
        Value::List(items) => encode_list(items, out),
        Value::Map(entries) => encode_map(entries, out),
        Value::Array(items) => match element_type(items) {
            Some(ty) => sized(out, Some((code::ARRAY8, code::ARRAY32)), items.len(), |out| array_body(&ty, items, out)),
            // Items of different types cannot share a constructor.
            None => encode(&Value::List(items.clone()), out),
        },
        Value::Described(d) => {
            out.push(code::DESCRIBED);
            encode(&d.descriptor, out);
            encode(&d.value, out);
        }
        fixed => {
            out.push(fixed_code(fixed).unwrap_or(code::NULL));
            fixed_payload(fixed, out);
        }
    }
}

/// Append a list of these items (as [`Value::List`] would be).
pub fn encode_list(items: &[Value], out: &mut Vec<u8>) {
    if items.is_empty() {
        return out.push(code::LIST0);
    }
    sized(out, Some((code::LIST8, code::LIST32)), items.len(), |out| items.iter().for_each(|v| encode(v, out)))
}

/// Append a map of these entries (as [`Value::Map`] would be).
pub fn encode_map(entries: &[(Value, Value)], out: &mut Vec<u8>) {
    sized(out, Some((code::MAP8, code::MAP32)), entries.len() * 2, |out| {
        for (k, v) in entries {
            encode(k, out);
            encode(v, out);
        }
    })
}

/// A value's encoding as bytes of its own.
pub fn to_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode(value, &mut out);
    out
}

/// The full-width code of a fixed-width value (the one arrays use).
fn fixed_code(v: &Value) -> Option<u8> {
    Some(match v {
        Value::Null => code::NULL,
        Value::Bool(_) => code::BOOLEAN,
        Value::Ubyte(_) => code::UBYTE,
        Value::Ushort(_) => code::USHORT,
        Value::Uint(_) => code::UINT,
        Value::Ulong(_) => code::ULONG,
        Value::Byte(_) => code::BYTE,
        Value::Short(_) => code::SHORT,
        Value::Int(_) => code::INT,
        Value::Long(_) => code::LONG,
        Value::Float(_) => code::FLOAT,
        Value::Double(_) => code::DOUBLE,
        Value::Decimal32(_) => code::DECIMAL32,
        Value::Decimal64(_) => code::DECIMAL64,
        Value::Decimal128(_) => code::DECIMAL128,
        Value::Char(_) => code::CHAR,
        Value::Timestamp(_) => code::TIMESTAMP,
        Value::Uuid(_) => code::UUID,
        _ => return None,
    })
}

/// The payload of a fixed-width value, in its full-width code's layout.
fn fixed_payload(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Bool(b) => out.push(*b as u8),
        Value::Ubyte(x) => out.push(*x),
        Value::Byte(x) => out.push(*x as u8),
        Value::Ushort(x) => out.extend_from_slice(&x.to_be_bytes()),
        Value::Short(x) => out.extend_from_slice(&x.to_be_bytes()),
        Value::Uint(x) => out.extend_from_slice(&x.to_be_bytes()),
        Value::Int(x) => out.extend_from_slice(&x.to_be_bytes()),
        Value::Ulong(x) => out.extend_from_slice(&x.to_be_bytes()),
        Value::Long(x) | Value::Timestamp(x) => out.extend_from_slice(&x.to_be_bytes()),
        Value::Float(x) => out.extend_from_slice(&x.to_bits().to_be_bytes()),
        Value::Double(x) => out.extend_from_slice(&x.to_bits().to_be_bytes()),
        Value::Decimal32(b) => out.extend_from_slice(b),
        Value::Decimal64(b) => out.extend_from_slice(b),
        Value::Decimal128(b) | Value::Uuid(b) => out.extend_from_slice(b),
        Value::Char(c) => out.extend_from_slice(&(*c as u32).to_be_bytes()),
        _ => {}
    }
}

/// A binary, string or symbol: one-byte length when it fits.
fn variable(out: &mut Vec<u8>, code8: u8, code32: u8, bytes: &[u8]) {
    match u8::try_from(bytes.len()) {
        Ok(n) => out.extend_from_slice(&[code8, n]),
        Err(_) => {
            out.push(code32);
            out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        }
    }
    out.extend_from_slice(bytes);
}

/// A compound (list, map, array): `body` writes the content, then the size and count go in
/// front, one byte each when both fit (`codes` = the 8- and 32-bit codes), else four. With
/// `codes` `None` only the 32-bit payload is written (an array item, whose code is the
/// array's).
fn sized(out: &mut Vec<u8>, codes: Option<(u8, u8)>, count: usize, body: impl FnOnce(&mut Vec<u8>)) {
    const ROOM: usize = 9;
    let start = out.len();
    out.extend_from_slice(&[0; ROOM]);
    body(out);
    let content = out.len() - start - ROOM;
    let header: Vec<u8> = match codes {
        Some((c8, _)) if content < 0xff && count <= 0xff => vec![c8, content as u8 + 1, count as u8],
        _ => {
            let mut h = Vec::with_capacity(ROOM);
            if let Some((_, c32)) = codes {
                h.push(c32);
            }
            h.extend_from_slice(&((content + 4) as u32).to_be_bytes());
            h.extend_from_slice(&(count as u32).to_be_bytes());
            h
        }
    };
    out.copy_within(start + ROOM.., start + header.len());
    out.truncate(start + header.len() + content);
    out[start..start + header.len()].copy_from_slice(&header);
}

/// The element constructor of an array: an optional descriptor and a primitive code.
struct ElementType<'a> {
    descriptor: Option<&'a Value>,
    code: u8,
}

/// The constructor all `items` share, `None` when they differ.
fn element_type(items: &[Value]) -> Option<ElementType<'_>> {
    // The code an item would take on its own, and whether a 32-bit length widens it.
    fn code_of(v: &Value) -> u8 {
        let pick = |n: usize, c8: u8, c32: u8| if n > 0xff { c32 } else { c8 };
        match v {
            Value::Binary(b) => pick(b.len(), code::VBIN8, code::VBIN32),
            Value::String(s) => pick(s.len(), code::STR8, code::STR32),
            Value::Symbol(s) => pick(s.len(), code::SYM8, code::SYM32),
            Value::List(_) => code::LIST32,
            Value::Map(_) => code::MAP32,
            // An array whose items differ goes as a list.
            Value::Array(items) if element_type(items).is_none() => code::LIST32,
            Value::Array(_) => code::ARRAY32,
            other => fixed_code(other).unwrap_or(code::NULL),
        }
    }
    fn widen(c: u8) -> u8 {
        match c {
            code::VBIN8 => code::VBIN32,
            code::STR8 => code::STR32,
            code::SYM8 => code::SYM32,
            c => c,
        }
    }
    // An item's descriptor (described items) and the code of what it describes.
    fn split(v: &Value) -> Option<(Option<&Value>, u8)> {
        match v {
            Value::Described(d) if matches!(d.value, Value::Described(_)) => None,
            Value::Described(d) => Some((Some(&d.descriptor), code_of(&d.value))),
            other => Some((None, code_of(other))),
        }
    }
    let Some(first) = items.first() else {
        return Some(ElementType { descriptor: None, code: code::NULL });
    };
    let (descriptor, mut c) = split(first)?;
    for item in &items[1..] {
        let (d, ic) = split(item)?;
        if d != descriptor || widen(ic) != widen(c) {
            return None;
        }
        if ic != c {
            c = widen(c);
        }
    }
    Some(ElementType { descriptor, code: c })
}

/// An array's content: its element constructor, then each item's payload.
fn array_body(ty: &ElementType<'_>, items: &[Value], out: &mut Vec<u8>) {
    if let Some(d) = ty.descriptor {
        out.push(code::DESCRIBED);
        encode(d, out);
    }
    out.push(ty.code);
    for item in items {
        let v = match item {
            Value::Described(d) => &d.value,
            v => v,
        };
        element_payload(ty.code, v, out);
    }
}

/// One array item's payload under the array's `code`.
fn element_payload(c: u8, v: &Value, out: &mut Vec<u8>) {
    let var = |out: &mut Vec<u8>, bytes: &[u8]| {
        if matches!(c, code::VBIN8 | code::STR8 | code::SYM8) {
            out.push(bytes.len() as u8);
        } else {
            out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        }
        out.extend_from_slice(bytes);
    };
    match v {
        Value::Binary(b) => var(out, b),
        Value::String(s) | Value::Symbol(s) => var(out, s.as_bytes()),
        Value::List(items) | Value::Array(items) if c == code::LIST32 => {
            sized(out, None, items.len(), |out| items.iter().for_each(|v| encode(v, out)))
        }
        Value::Map(entries) => sized(out, None, entries.len() * 2, |out| {
            for (k, v) in entries {
                encode(k, out);
                encode(v, out);
            }
        }),
        Value::Array(items) => {
            if let Some(ty) = element_type(items) {
                sized(out, None, items.len(), |out| array_body(&ty, items, out))
            }
        }
        fixed => fixed_payload(fixed, out),
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// Reads values from a buffer, zero-copy for binaries and strings.
pub struct Decoder<'a> {
    buf: &'a Bytes,
    pos: usize,
    /// How many more values this input may produce.
    budget: usize,
}

impl<'a> Decoder<'a> {
    /// A decoder at the start of `buf`.
    pub fn new(buf: &'a Bytes) -> Decoder<'a> {
        Decoder { buf, pos: 0, budget: buf.len() + 1024 }
    }

    /// Where the next value starts.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// The bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The next value.
    pub fn value(&mut self) -> Result<Value, DecodeError> {
        self.value_at(0)
    }

    /// The next byte, without reading it.
    pub fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn value_at(&mut self, depth: usize) -> Result<Value, DecodeError> {
        let c = self.byte()?;
        self.payload(c, depth)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let buf: &'a Bytes = self.buf;
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let s = buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn slice(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        let start = self.pos;
        self.take(n)?;
        Ok(self.buf.slice(start..start + n))
    }

    fn text(&mut self, n: usize) -> Result<ByteString, DecodeError> {
        ByteString::try_from(self.slice(n)?).map_err(|_| DecodeError::InvalidText)
    }

    fn spend(&mut self) -> Result<(), DecodeError> {
        self.budget = self.budget.checked_sub(1).ok_or(DecodeError::TooMany)?;
        Ok(())
    }

    /// The value of format code `c`, its constructor already read.
    fn payload(&mut self, c: u8, depth: usize) -> Result<Value, DecodeError> {
        self.spend()?;
        Ok(match c {
            code::NULL => Value::Null,
            code::TRUE => Value::Bool(true),
            code::FALSE => Value::Bool(false),
            code::BOOLEAN => match self.byte()? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                _ => return Err(DecodeError::Malformed("boolean byte other than 0 or 1")),
            },
            code::UBYTE => Value::Ubyte(self.byte()?),
            code::BYTE => Value::Byte(self.byte()? as i8),
            code::USHORT => Value::Ushort(u16::from_be_bytes(self.array()?)),
            code::SHORT => Value::Short(i16::from_be_bytes(self.array()?)),
            code::UINT => Value::Uint(self.u32()?),
            code::SMALLUINT => Value::Uint(self.byte()?.into()),
            code::UINT0 => Value::Uint(0),
            code::INT => Value::Int(i32::from_be_bytes(self.array()?)),
            code::SMALLINT => Value::Int((self.byte()? as i8).into()),
            code::ULONG => Value::Ulong(u64::from_be_bytes(self.array()?)),
            code::SMALLULONG => Value::Ulong(self.byte()?.into()),
            code::ULONG0 => Value::Ulong(0),
            code::LONG => Value::Long(i64::from_be_bytes(self.array()?)),
            code::SMALLLONG => Value::Long((self.byte()? as i8).into()),
            code::FLOAT => Value::Float(f32::from_bits(self.u32()?)),
            code::DOUBLE => Value::Double(f64::from_bits(u64::from_be_bytes(self.array()?))),
            code::DECIMAL32 => Value::Decimal32(self.array()?),
            code::DECIMAL64 => Value::Decimal64(self.array()?),
            code::DECIMAL128 => Value::Decimal128(self.array()?),
            code::CHAR => Value::Char(char::from_u32(self.u32()?).ok_or(DecodeError::InvalidText)?),
            code::TIMESTAMP => Value::Timestamp(i64::from_be_bytes(self.array()?)),
            code::UUID => Value::Uuid(self.array()?),
            code::VBIN8 | code::STR8 | code::SYM8 | code::VBIN32 | code::STR32 | code::SYM32 => {
                let n = if c & 0xf0 == 0xa0 { self.byte()? as usize } else { self.u32()? as usize };
                match c & 0x0f {
                    0x0 => Value::Binary(self.slice(n)?),
                    0x1 => Value::String(self.text(n)?),
                    _ => Value::Symbol(self.text(n)?),
                }
            }
            code::LIST0 => Value::List(Vec::new()),
            code::LIST8 | code::LIST32 | code::MAP8 | code::MAP32 | code::ARRAY8 | code::ARRAY32 => {
                if depth >= MAX_DEPTH {
                    return Err(DecodeError::TooDeep);
                }
                self.compound(c, depth + 1)?
            }
            code::DESCRIBED => {
                if depth >= MAX_DEPTH {
                    return Err(DecodeError::TooDeep);
                }
                let descriptor = self.value_at(depth + 1)?;
                let value = self.value_at(depth + 1)?;
                Value::Described(Box::new(Described { descriptor, value }))
            }
            other => return Err(DecodeError::InvalidCode(other)),
        })
    }

    /// A list, map or array: its size and count, then its items, which must fill the size.
    fn compound(&mut self, c: u8, depth: usize) -> Result<Value, DecodeError> {
        let narrow = matches!(c, code::LIST8 | code::MAP8 | code::ARRAY8);
        let (size, count) = if narrow {
            let size = self.byte()? as usize;
            if size < 1 {
                return Err(DecodeError::Malformed("compound size smaller than its count"));
            }
            (size - 1, self.take(1).map(|b| b[0] as usize).map_err(|_| DecodeError::Truncated)?)
        } else {
            let size = self.u32()? as usize;
            if size < 4 {
                return Err(DecodeError::Malformed("compound size smaller than its count"));
            }
            (size - 4, self.u32()? as usize)
        };
        if size > self.remaining() {
            return Err(DecodeError::Truncated);
        }
        let end = self.pos + size;
        // Every list or map item takes a byte at least; array items are charged to the budget.
        let cap = count.min(size).min(self.budget);
        let value = match c {
            code::LIST8 | code::LIST32 => {
                if count > size {
                    return Err(DecodeError::Malformed("list count larger than its size"));
                }
                let mut items = Vec::with_capacity(cap);
                for _ in 0..count {
                    items.push(self.value_at(depth)?);
                }
                Value::List(items)
            }
            code::MAP8 | code::MAP32 => {
                if count % 2 != 0 {
                    return Err(DecodeError::Malformed("map with an odd count"));
                }
                if count > size {
                    return Err(DecodeError::Malformed("map count larger than its size"));
                }
                let mut entries = Vec::with_capacity(cap / 2);
                for _ in 0..count / 2 {
                    let k = self.value_at(depth)?;
                    let v = self.value_at(depth)?;
                    entries.push((k, v));
                }
                Value::Map(entries)
            }
            _ => {
                if size == 0 {
                    return Err(DecodeError::Malformed("array without a constructor"));
                }
                let (descriptor, ec) = match self.byte()? {
                    code::DESCRIBED => (Some(self.value_at(depth)?), self.byte()?),
                    ec => (None, ec),
                };
                if count > self.budget {
                    return Err(DecodeError::TooMany);
                }
                if self.pos > end {
                    return Err(DecodeError::Malformed("array constructor larger than its size"));
                }
                let mut items = Vec::with_capacity(cap);
                for _ in 0..count {
                    if ec == code::DESCRIBED {
                        return Err(DecodeError::Malformed("array element constructor nested twice"));
                    }
                    let v = self.payload(ec, depth)?;
                    items.push(match &descriptor {
                        Some(d) => Value::described(d.clone(), v),
                        None => v,
                    });
                    if self.pos > end {
                        return Err(DecodeError::Malformed("array items larger than its size"));
                    }
                }
                Value::Array(items)
            }
        };
        if self.pos != end {
            return Err(DecodeError::Malformed("compound items do not fill its size"));
        }
        Ok(value)
    }
}

/// One value that spans all of `buf`.
pub fn decode(buf: &Bytes) -> Result<Value, DecodeError> {
    let mut d = Decoder::new(buf);
    let v = d.value()?;
    if !d.is_empty() {
        return Err(DecodeError::Malformed("bytes after the value"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(v: &Value) -> Vec<u8> {
        let bytes = to_vec(v);
        let back = decode(&Bytes::from(bytes.clone())).unwrap_or_else(|e| panic!("{v:?} → {bytes:02x?}: {e}"));
        assert_eq!(&back, v, "round trip of {bytes:02x?}");
        bytes
    }

    fn dec(bytes: &[u8]) -> Result<Value, DecodeError> {
        decode(&Bytes::copy_from_slice(bytes))
    }

    fn s(n: usize) -> String {
        "a".repeat(n)
    }

    #[test]
    fn every_type_round_trips_in_its_smallest_encoding() {
        let cases: Vec<(Value, Vec<u8>)> = vec![
            (Value::Null, vec![0x40]),
            (Value::Bool(true), vec![0x41]),
            (Value::Bool(false), vec![0x42]),
            (Value::Ubyte(0xfe), vec![0x50, 0xfe]),
            (Value::Ushort(0x1234), vec![0x60, 0x12, 0x34]),
            (Value::Uint(0), vec![0x43]),
            (Value::Uint(255), vec![0x52, 0xff]),
            (Value::Uint(256), vec![0x70, 0, 0, 1, 0]),
            (Value::Uint(u32::MAX), vec![0x70, 0xff, 0xff, 0xff, 0xff]),
            (Value::Ulong(0), vec![0x44]),
            (Value::Ulong(255), vec![0x53, 0xff]),
            (Value::Ulong(256), vec![0x80, 0, 0, 0, 0, 0, 0, 1, 0]),
            (Value::Byte(-2), vec![0x51, 0xfe]),
            (Value::Short(-2), vec![0x61, 0xff, 0xfe]),
            (Value::Int(-128), vec![0x54, 0x80]),
            (Value::Int(127), vec![0x54, 0x7f]),
            (Value::Int(128), vec![0x71, 0, 0, 0, 0x80]),
            (Value::Int(-129), vec![0x71, 0xff, 0xff, 0xff, 0x7f]),
            (Value::Long(-128), vec![0x55, 0x80]),
            (Value::Long(128), vec![0x81, 0, 0, 0, 0, 0, 0, 0, 0x80]),
            (Value::Long(i64::MIN), vec![0x81, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            (Value::Float(1.5), vec![0x72, 0x3f, 0xc0, 0, 0]),
            (Value::Double(-2.0), vec![0x82, 0xc0, 0, 0, 0, 0, 0, 0, 0]),
            (Value::Decimal32([1, 2, 3, 4]), vec![0x74, 1, 2, 3, 4]),
            (Value::Decimal64([1; 8]), [&[0x84][..], &[1; 8]].concat()),
            (Value::Decimal128([2; 16]), [&[0x94][..], &[2; 16]].concat()),
            (Value::Char('é'), vec![0x73, 0, 0, 0, 0xe9]),
            (Value::Timestamp(1_700_000_000_000), [&[0x83][..], &1_700_000_000_000i64.to_be_bytes()].concat()),
            (Value::Uuid([7; 16]), [&[0x98][..], &[7; 16]].concat()),
            (Value::Binary(Bytes::from_static(b"ab")), vec![0xa0, 2, b'a', b'b']),
            (Value::string("ab"), vec![0xa1, 2, b'a', b'b']),
            (Value::symbol("ab"), vec![0xa3, 2, b'a', b'b']),
            (Value::List(vec![]), vec![0x45]),
            (Value::List(vec![Value::Null, Value::Uint(1)]), vec![0xc0, 4, 2, 0x40, 0x52, 1]),
            (Value::Map(vec![(Value::symbol("k"), Value::Bool(true))]), vec![0xc1, 5, 2, 0xa3, 1, b'k', 0x41]),
            (Value::Map(vec![]), vec![0xc1, 1, 0]),
            (Value::Array(vec![Value::Uint(1), Value::Uint(2)]), vec![0xe0, 10, 2, 0x70, 0, 0, 0, 1, 0, 0, 0, 2]),
            (Value::Array(vec![Value::Bool(true), Value::Bool(false)]), vec![0xe0, 4, 2, 0x56, 1, 0]),
            (
                Value::Array(vec![Value::symbol("a"), Value::symbol("bc")]),
                vec![0xe0, 7, 2, 0xa3, 1, b'a', 2, b'b', b'c'],
            ),
            (Value::Array(vec![]), vec![0xe0, 2, 0, 0x40]),
            (
                Value::described(Value::Ulong(0x75), Value::Binary(Bytes::from_static(b"x"))),
                vec![0x00, 0x53, 0x75, 0xa0, 1, b'x'],
            ),
            (Value::described(Value::symbol("d"), Value::Null), vec![0x00, 0xa3, 1, b'd', 0x40]),
        ];
        for (v, bytes) in cases {
            assert_eq!(rt(&v), bytes, "{v:?}");
        }
        // NaN keeps its bits (compared as bytes: NaN != NaN).
        let nan = to_vec(&Value::Double(f64::NAN));
        assert_eq!(to_vec(&dec(&nan).unwrap()), nan);
    }

    #[test]
    fn widths_switch_at_their_boundaries() {
        for (n, code) in [(0, 0xa1), (255, 0xa1), (256, 0xb1), (70_000, 0xb1)] {
            assert_eq!(rt(&Value::string(&s(n)))[0], code, "{n}");
            assert_eq!(rt(&Value::symbol(&s(n)))[0], code + 2, "{n}");
            assert_eq!(rt(&Value::Binary(Bytes::from(s(n))))[0], code - 1, "{n}");
        }
        // A list's one-byte size counts the count byte too: 254 bytes of items fit, 255 do not.
        let list_of = |content: usize| Value::List(vec![Value::Binary(Bytes::from(s(content - 2)))]);
        assert_eq!(rt(&list_of(254))[..3], [0xc0, 255, 1]);
        assert_eq!(rt(&list_of(255))[..9], [0xd0, 0, 0, 1, 3, 0, 0, 0, 1]);
        // 255 items fit a one-byte count, 256 do not.
        assert_eq!(rt(&Value::List(vec![Value::Null; 255]))[..2], [0xd0, 0, 0, 1, 3][..2]);
        assert_eq!(rt(&Value::List(vec![Value::Null; 200]))[..3], [0xc0, 201, 200]);
        assert_eq!(rt(&Value::List(vec![Value::Null; 256]))[..9], [0xd0, 0, 0, 1, 4, 0, 0, 1, 0]);
        let map_of = |n: usize| Value::Map((0..n).map(|i| (Value::Uint(i as u32), Value::Null)).collect());
        assert_eq!(rt(&map_of(40))[0], 0xc1);
        assert_eq!(rt(&map_of(200))[0], 0xd1);
        let arr = |n: usize| Value::Array(vec![Value::Ulong(1); n]);
        assert_eq!(rt(&arr(30))[0], 0xe0);
        assert_eq!(rt(&arr(32))[0], 0xf0);
        // Variable-width items widen the whole array once one needs four length bytes.
        let mixed = Value::Array(vec![Value::string("a"), Value::string(&s(300))]);
        assert_eq!(rt(&mixed)[..10], [0xf0, 0, 0, 1, 0x3a, 0, 0, 0, 2, 0xb1]);
        // Arrays of compounds, of arrays, and of described values.
        rt(&Value::Array(vec![Value::List(vec![Value::Uint(1)]), Value::List(vec![])]));
        rt(&Value::Array(vec![Value::Map(vec![(Value::Null, Value::Null)]), Value::Map(vec![])]));
        rt(&Value::Array(vec![Value::Array(vec![Value::Int(1)]), Value::Array(vec![Value::string("x")])]));
        rt(&Value::Array(vec![
            Value::described(Value::Ulong(9), Value::Uint(1)),
            Value::described(Value::Ulong(9), Value::Uint(2)),
        ]));
        // Items of different types cannot share a constructor: encoded as a list.
        let odd = Value::Array(vec![Value::Uint(1), Value::string("x")]);
        assert_eq!(dec(&to_vec(&odd)).unwrap(), Value::List(vec![Value::Uint(1), Value::string("x")]));
    }

    #[test]
    fn every_encoding_of_a_value_decodes() {
        let cases: Vec<(Vec<u8>, Value)> = vec![
            (vec![0x56, 1], Value::Bool(true)),
            (vec![0x56, 0], Value::Bool(false)),
            (vec![0x70, 0, 0, 0, 5], Value::Uint(5)),
            (vec![0x52, 5], Value::Uint(5)),
            (vec![0x80, 0, 0, 0, 0, 0, 0, 0, 5], Value::Ulong(5)),
            (vec![0x71, 0xff, 0xff, 0xff, 0xff], Value::Int(-1)),
            (vec![0x81, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], Value::Long(-1)),
            (vec![0xb1, 0, 0, 0, 1, b'a'], Value::string("a")),
            (vec![0xb3, 0, 0, 0, 1, b'a'], Value::symbol("a")),
            (vec![0xb0, 0, 0, 0, 0], Value::Binary(Bytes::new())),
            (vec![0xc0, 1, 0], Value::List(vec![])),
            (vec![0xd0, 0, 0, 0, 4, 0, 0, 0, 0], Value::List(vec![])),
            (vec![0xd0, 0, 0, 0, 5, 0, 0, 0, 1, 0x40], Value::List(vec![Value::Null])),
            (vec![0xd1, 0, 0, 0, 4, 0, 0, 0, 0], Value::Map(vec![])),
            (vec![0xf0, 0, 0, 0, 9, 0, 0, 0, 2, 0x50, 1, 2, 0, 0], Value::Null),
            (vec![0xe0, 2, 2, 0x43], Value::Array(vec![Value::Uint(0), Value::Uint(0)])),
            (vec![0xe0, 4, 2, 0x52, 1, 2], Value::Array(vec![Value::Uint(1), Value::Uint(2)])),
            (
                vec![0xe0, 7, 2, 0x00, 0x53, 0x09, 0x52, 1, 2],
                Value::Array(vec![
                    Value::described(Value::Ulong(9), Value::Uint(1)),
                    Value::described(Value::Ulong(9), Value::Uint(2)),
                ]),
            ),
        ];
        for (bytes, v) in cases {
            if v == Value::Null {
                // The array32 case above has two stray bytes: its size says 9, its items take 7.
                assert!(dec(&bytes).is_err());
                continue;
            }
            assert_eq!(dec(&bytes), Ok(v), "{bytes:02x?}");
        }
    }

    #[test]
    fn malformed_input_is_refused() {
        let bad: Vec<(&[u8], DecodeError)> = vec![
            (&[], DecodeError::Truncated),
            (&[0x01], DecodeError::InvalidCode(0x01)),
            (&[0x56, 2], DecodeError::Malformed("boolean byte other than 0 or 1")),
            (&[0x70, 0, 0], DecodeError::Truncated),
            (&[0xa1, 3, b'a'], DecodeError::Truncated),
            (&[0xa1, 1, 0xff], DecodeError::InvalidText),
            (&[0xa3, 2, 0xc3, 0x28], DecodeError::InvalidText),
            (&[0x73, 0, 0, 0xd8, 0], DecodeError::InvalidText),
            (&[0x73, 0, 0x11, 0, 0], DecodeError::InvalidText),
            (&[0xb1, 0xff, 0xff, 0xff, 0xff, b'a'], DecodeError::Truncated),
            (&[0xc0, 0], DecodeError::Malformed("compound size smaller than its count")),
            (&[0xc0, 2, 1], DecodeError::Truncated),
            (&[0xc0, 2, 2, 0x40], DecodeError::Malformed("list count larger than its size")),
            (&[0xc0, 3, 1, 0x40, 0x40], DecodeError::Malformed("compound items do not fill its size")),
            (&[0xc1, 2, 1, 0x40], DecodeError::Malformed("map with an odd count")),
            (&[0xd0, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff], DecodeError::Malformed("list count larger than its size")),
            (&[0xd0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1], DecodeError::Truncated),
            (&[0xe0, 1, 0], DecodeError::Malformed("array without a constructor")),
            (&[0xe0, 2, 1, 0x70], DecodeError::Truncated),
            (&[0xe0, 3, 1, 0x00, 0x53], DecodeError::Truncated),
            (&[0x40, 0x40], DecodeError::Malformed("bytes after the value")),
        ];
        for (bytes, e) in bad {
            assert_eq!(dec(bytes), Err(e), "{bytes:02x?}");
        }
        // Four billion zero-width items in a dozen bytes: refused before anything is allocated.
        assert_eq!(dec(&[0xf0, 0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0x40]), Err(DecodeError::TooMany));
        // Every prefix of a valid encoding is refused, none panics.
        let big = Value::Map(vec![
            (Value::symbol("k"), Value::List(vec![Value::Array(vec![Value::Uint(7); 3]), Value::string(&s(300))])),
            (Value::Ulong(1), Value::described(Value::Ulong(2), Value::Uuid([1; 16]))),
        ]);
        let bytes = to_vec(&big);
        for cut in 0..bytes.len() {
            assert!(dec(&bytes[..cut]).is_err(), "prefix {cut}");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let nest = |n: usize, open: &[u8]| {
            let mut b = Vec::new();
            for _ in 0..n {
                b.extend_from_slice(open);
            }
            b.push(0x40);
            b
        };
        // Described values nest without a size to check: the depth limit stops them.
        assert_eq!(dec(&nest(MAX_DEPTH, &[0x00, 0x40])), Ok(dec(&nest(MAX_DEPTH, &[0x00, 0x40])).unwrap()));
        assert_eq!(dec(&nest(MAX_DEPTH + 1, &[0x00, 0x40])), Err(DecodeError::TooDeep));
        assert_eq!(dec(&nest(100_000, &[0x00, 0x40])), Err(DecodeError::TooDeep));
        // Lists nested by the thousand (sizes that lie) are refused at the limit too.
        let mut deep = Vec::new();
        for _ in 0..10_000 {
            deep.extend_from_slice(&[0xd0, 0, 0, 0, 5, 0, 0, 0, 1]);
        }
        assert!(dec(&deep).is_err());
        let mut v = Value::Null;
        for _ in 0..MAX_DEPTH {
            v = Value::List(vec![v]);
        }
        rt(&v);
        assert_eq!(dec(&to_vec(&Value::List(vec![v]))), Err(DecodeError::TooDeep));
    }

    /// Noise and mutated encodings (seeded, reproducible): decoding never panics, and what
    /// decodes re-encodes to bytes that decode to the same value.
    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let template = to_vec(&Value::Map(vec![
            (Value::symbol("x-opt"), Value::List(vec![Value::Array(vec![Value::Long(5); 4]), Value::Char('z')])),
            (
                Value::string("k"),
                Value::described(Value::symbol("d"), Value::Map(vec![(Value::Null, Value::Bool(true))])),
            ),
        ]));
        let codes: Vec<u8> = vec![0x00, 0x40, 0x45, 0x53, 0xa0, 0xa1, 0xb0, 0xc0, 0xc1, 0xd0, 0xd1, 0xe0, 0xf0, 0xff];
        for i in 0..20_000 {
            let input: Vec<u8> = if i % 2 == 0 {
                let n = (next() % 64) as usize;
                (0..n)
                    .map(|_| if next() % 3 == 0 { codes[(next() % codes.len() as u64) as usize] } else { next() as u8 })
                    .collect()
            } else {
                let mut t = template.clone();
                for _ in 0..1 + next() % 4 {
                    let at = (next() % t.len() as u64) as usize;
                    t[at] = next() as u8;
                }
                t
            };
            crate::fuzzing::amqp10(&input);
        }
    }
}
