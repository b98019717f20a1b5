//! Field tables and arrays from a peer, checked before anything recursive touches them.
//!
//! amq-protocol decodes, encodes, compares, prints and drops field values recursively, one
//! stack frame (or several) per nesting level. A frame of 128 KiB can nest an array some
//! 26,000 levels deep, enough to overflow a worker thread's stack and abort the whole broker.
//! So every encoded table a peer (or a file) hands the broker goes through [`check_table`]
//! first: an iterative walk, with a fixed-size stack, that checks the structure and refuses
//! nesting deeper than [`MAX_NESTING`]. What passes is then decoded by amq-protocol, and every
//! later walk over the value is bounded by the same depth.
//!
//! RabbitMQ has no such limit (Erlang's stacks grow on the heap; measured on 3.10.8, 100 levels
//! work everywhere and 20,000 in a `queue.bind` crash its VM); real clients nest a few levels
//! (`x-death` is four). A table beyond the limit is a connection error, 501 FRAME_ERROR, as
//! RabbitMQ answers any field table it cannot decode.

use amq_protocol::types::{AMQPValue, FieldTable};

/// The deepest nesting accepted: the outermost table counts as level 1, and each table or
/// array inside it one more.
pub const MAX_NESTING: usize = 128;

/// Stack size of the broker's runtime threads. amq-protocol's decoder takes up to ~16 KiB of
/// stack per nesting level in a debug build (~2 MiB at [`MAX_NESTING`], measured), more than
/// tokio's default 2 MiB leaves: the threads get this much (address space, touched only as
/// used), and a unit test checks every walk at the limit fits in half of it.
pub const THREAD_STACK: usize = 8 << 20;

/// Why an encoded field table was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldError {
    /// Lengths that run past their container, or an unknown value type.
    Malformed,
    /// Tables and arrays nested deeper than [`MAX_NESTING`].
    TooDeep,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldError::Malformed => f.write_str("malformed field table"),
            FieldError::TooDeep => write!(f, "field table nested deeper than {MAX_NESTING} levels"),
        }
    }
}

impl std::error::Error for FieldError {}

/// A container being walked: where it ends, and whether its entries have keys.
#[derive(Clone, Copy)]
struct Open {
    end: usize,
    table: bool,
}

/// Check one encoded field table (its u32 byte length, then its entries) at the start of
/// `bytes`, without recursion. Returns the bytes it spans.
pub fn check_table(bytes: &[u8]) -> Result<usize, FieldError> {
    walk(bytes, |_| {})
}

/// Replace the bytes outside ASCII in every key (at any depth) that is not UTF-8 with `?`,
/// in place: lengths and structure stay as they are. RabbitMQ takes keys as bytes; amq-protocol
/// needs UTF-8, so a decoded view of such a table is made from a sanitised copy.
pub fn sanitize_keys(bytes: &mut [u8]) -> Result<usize, FieldError> {
    let mut keys = Vec::new();
    let n = walk(bytes, |k| keys.push(k))?;
    for k in keys {
        sanitize_str(&mut bytes[k]);
    }
    Ok(n)
}

/// Make a string UTF-8 without changing its length (non-ASCII bytes become `?`), if it is not.
pub fn sanitize_str(s: &mut [u8]) {
    if std::str::from_utf8(s).is_err() {
        s.iter_mut().filter(|b| !b.is_ascii()).for_each(|b| *b = b'?');
    }
}

/// The walk behind [`check_table`]: reports where each key's bytes are.
fn walk(bytes: &[u8], mut on_key: impl FnMut(std::ops::Range<usize>)) -> Result<usize, FieldError> {
    let len = read_u32(bytes, 0, bytes.len())?;
    let end = 4usize.checked_add(len).filter(|e| *e <= bytes.len()).ok_or(FieldError::Malformed)?;
    let mut stack = [Open { end: 0, table: false }; MAX_NESTING];
    stack[0] = Open { end, table: true };
    let mut depth = 1;
    let mut at = 4;
    while depth > 0 {
        let top = stack[depth - 1];
        if at == top.end {
            depth -= 1;
            continue;
        }
        if top.table {
            let key_len = *bytes.get(at).filter(|_| at < top.end).ok_or(FieldError::Malformed)? as usize;
            let key = at + 1..within(at + 1 + key_len, top.end)?;
            at = key.end;
            on_key(key);
        }
        let kind = *bytes.get(at).filter(|_| at < top.end).ok_or(FieldError::Malformed)?;
        at += 1;
        let fixed = match kind {
            b'V' => 0,
            b't' | b'b' | b'B' => 1,
            b's' | b'U' | b'u' => 2,
            b'I' | b'i' | b'f' => 4,
            b'D' => 5,
            b'l' | b'L' | b'd' | b'T' => 8,
            b'S' | b'x' => 4 + read_u32(bytes, at, top.end)?,
            b'A' | b'F' => {
                let inner = read_u32(bytes, at, top.end)?;
                let end = within(at + 4 + inner, top.end)?;
                if depth == MAX_NESTING {
                    return Err(FieldError::TooDeep);
                }
                stack[depth] = Open { end, table: kind == b'F' };
                depth += 1;
                at += 4;
                continue;
            }
            _ => return Err(FieldError::Malformed),
        };
        at = within(at + fixed, top.end)?;
    }
    Ok(end)
}

fn within(at: usize, end: usize) -> Result<usize, FieldError> {
    if at <= end { Ok(at) } else { Err(FieldError::Malformed) }
}

fn read_u32(bytes: &[u8], at: usize, end: usize) -> Result<usize, FieldError> {
    let b = bytes.get(at..at + 4).filter(|_| at + 4 <= end).ok_or(FieldError::Malformed)?;
    Ok(u32::from_be_bytes(b.try_into().expect("four bytes")) as usize)
}

/// Decode one encoded field table that must span all of `bytes`, after [`check_table`].
pub fn decode_table(bytes: &[u8]) -> Result<FieldTable, FieldError> {
    if check_table(bytes)? != bytes.len() {
        return Err(FieldError::Malformed);
    }
    match amq_protocol::types::parsing::parse_field_table(bytes) {
        Ok(([], t)) => Ok(t),
        _ => Err(FieldError::Malformed),
    }
}

/// Encode a field table (u32 byte length, then entries) as on the wire.
pub fn encode_table(t: &FieldTable) -> Vec<u8> {
    cookie_factory::gen_simple(amq_protocol::types::generation::gen_field_table(t), Vec::new()).unwrap_or_default()
}

/// How deeply a value nests (a scalar is 0, a table or array one more than its deepest entry),
/// computed without recursion.
pub fn depth(v: &AMQPValue) -> usize {
    let mut deepest = 0;
    let mut todo: Vec<(&AMQPValue, usize)> = vec![(v, 0)];
    while let Some((v, d)) = todo.pop() {
        match v {
            AMQPValue::FieldTable(t) => {
                deepest = deepest.max(d + 1);
                todo.extend(t.inner().values().map(|v| (v, d + 1)));
            }
            AMQPValue::FieldArray(a) => {
                deepest = deepest.max(d + 1);
                todo.extend(a.as_slice().iter().map(|v| (v, d + 1)));
            }
            _ => deepest = deepest.max(d),
        }
    }
    deepest
}

/// Where the one field table of a method's arguments starts, for the methods that carry one
/// (`payload` holds class and method ids first). `None`: no table, or the arguments before it
/// are truncated (the decoder refuses those anyway).
pub fn method_table_offset(payload: &[u8]) -> Option<usize> {
    use Arg::*;
    let ids = (
        u16::from_be_bytes([*payload.first()?, *payload.get(1)?]),
        u16::from_be_bytes(payload.get(2..4)?.try_into().ok()?),
    );
    let before: &[Arg] = METHOD_TABLES.iter().find(|(id, _)| *id == ids)?.1;
    let mut at = 4;
    for arg in before {
        at += match arg {
            Octet => 1,
            Short => 2,
            ShortStr => 1 + *payload.get(at)? as usize,
        };
    }
    (at <= payload.len()).then_some(at)
}

/// The arguments that come before a method's field table.
#[derive(Debug, Clone, Copy)]
enum Arg {
    /// One octet (also a run of up to eight bits).
    Octet,
    Short,
    ShortStr,
}

/// Every 0-9-1 method with a field-table argument, and what precedes that table.
const METHOD_TABLES: &[((u16, u16), &[Arg])] = {
    use Arg::*;
    &[
        ((10, 10), &[Octet, Octet]),                               // connection.start
        ((10, 11), &[]),                                           // connection.start-ok
        ((40, 10), &[Short, ShortStr, ShortStr, Octet]),           // exchange.declare
        ((40, 30), &[Short, ShortStr, ShortStr, ShortStr, Octet]), // exchange.bind
        ((40, 40), &[Short, ShortStr, ShortStr, ShortStr, Octet]), // exchange.unbind
        ((50, 10), &[Short, ShortStr, Octet]),                     // queue.declare
        ((50, 20), &[Short, ShortStr, ShortStr, ShortStr, Octet]), // queue.bind
        ((50, 50), &[Short, ShortStr, ShortStr, ShortStr]),        // queue.unbind
        ((60, 20), &[Short, ShortStr, ShortStr, Octet]),           // basic.consume
    ]
};

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::{ByteArray, DecimalValue, FieldArray, LongString};

    /// An encoded table holding arrays nested `levels` deep (the table itself is one more).
    fn nested_arrays(levels: usize) -> Vec<u8> {
        // Innermost first: an empty array is `A` + 0u32.
        let mut value = vec![b'A', 0, 0, 0, 0];
        for _ in 1..levels {
            let mut outer = vec![b'A'];
            outer.extend_from_slice(&(value.len() as u32).to_be_bytes());
            outer.extend_from_slice(&value);
            value = outer;
        }
        let mut entries = vec![1, b'k'];
        entries.extend_from_slice(&value);
        let mut t = (entries.len() as u32).to_be_bytes().to_vec();
        t.extend_from_slice(&entries);
        t
    }

    fn every_type() -> FieldTable {
        let mut inner = FieldTable::default();
        inner.insert("n".into(), AMQPValue::Double(f64::NAN));
        let mut t = FieldTable::default();
        let values = [
            AMQPValue::Boolean(true),
            AMQPValue::ShortShortInt(-5),
            AMQPValue::ShortShortUInt(250),
            AMQPValue::ShortInt(-300),
            AMQPValue::ShortUInt(60000),
            AMQPValue::LongInt(-70000),
            AMQPValue::LongUInt(4_000_000_000),
            AMQPValue::LongLongInt(i64::MIN),
            AMQPValue::Float(f32::INFINITY),
            AMQPValue::Double(f64::NEG_INFINITY),
            AMQPValue::DecimalValue(DecimalValue { scale: 2, value: 12345 }),
            AMQPValue::LongString(LongString::from(vec![0xFF, 0, 0xC3])),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::Void, AMQPValue::FieldTable(inner.clone())])),
            AMQPValue::Timestamp(1_700_000_000),
            AMQPValue::FieldTable(inner),
            AMQPValue::ByteArray(ByteArray::from(vec![1, 2, 3])),
            AMQPValue::Void,
        ];
        for (i, v) in values.into_iter().enumerate() {
            t.insert(format!("k{i}").into(), v);
        }
        t
    }

    #[test]
    fn every_type_passes_the_check_and_round_trips_bit_exact() {
        let t = every_type();
        let bytes = encode_table(&t);
        assert_eq!(check_table(&bytes), Ok(bytes.len()));
        let back = decode_table(&bytes).unwrap();
        // NaN != NaN, so compare encodings: they are bit-exact.
        assert_eq!(encode_table(&back), bytes);
        assert_eq!(depth(&AMQPValue::FieldTable(back)), 3);
    }

    #[test]
    fn nesting_at_the_limit_passes_and_one_more_is_too_deep() {
        let ok = nested_arrays(MAX_NESTING - 1);
        assert_eq!(check_table(&ok), Ok(ok.len()));
        let t = decode_table(&ok).unwrap();
        assert_eq!(depth(&AMQPValue::FieldTable(t)), MAX_NESTING);
        assert_eq!(check_table(&nested_arrays(MAX_NESTING)), Err(FieldError::TooDeep));
    }

    #[test]
    fn every_recursive_walk_at_the_limit_fits_a_small_stack() {
        // amq-protocol decodes, clones, compares, prints, encodes and drops recursively: at the
        // limit all of it fits in half of a runtime thread's stack, in a debug build too.
        let bytes = nested_arrays(MAX_NESTING - 1);
        let r = std::thread::Builder::new()
            .stack_size(THREAD_STACK / 2)
            .spawn(move || {
                let t = decode_table(&bytes).unwrap();
                let copy = t.clone();
                assert_eq!(copy, t);
                assert!(format!("{t:?}").len() > MAX_NESTING);
                assert_eq!(encode_table(&copy), bytes);
                depth(&AMQPValue::FieldTable(t))
            })
            .unwrap()
            .join();
        assert_eq!(r.unwrap(), MAX_NESTING);
    }

    #[test]
    fn twenty_thousand_levels_are_refused_without_recursion() {
        // On a small stack: a recursive walk would overflow it long before the end.
        let bytes = nested_arrays(20_000);
        let r = std::thread::Builder::new().stack_size(64 * 1024).spawn(move || check_table(&bytes)).unwrap().join();
        assert_eq!(r.unwrap(), Err(FieldError::TooDeep));
    }

    #[test]
    fn depth_is_computed_without_recursion() {
        let mut v = AMQPValue::Void;
        for _ in 0..10 {
            v = AMQPValue::FieldArray(FieldArray::from(vec![v]));
        }
        assert_eq!(depth(&v), 10);
        assert_eq!(depth(&AMQPValue::LongInt(1)), 0);
    }

    #[test]
    fn every_truncation_and_lying_length_is_malformed_never_a_panic() {
        let bytes = encode_table(&every_type());
        for cut in 0..bytes.len() {
            // A cut changes nothing in the length prefix, so the table runs past the end.
            assert_eq!(check_table(&bytes[..cut]), Err(FieldError::Malformed), "cut {cut}");
        }
        // Every single-byte change is either accepted consistently with the decoder or refused.
        for i in 0..bytes.len() {
            for b in [0u8, 0x41, 0x46, 0x53, 0x7F, 0xFF] {
                let mut m = bytes.clone();
                m[i] = b;
                if let Ok(n) = check_table(&m) {
                    assert!(n <= m.len());
                    // What passes the check decodes (or fails) without overflowing anything.
                    let _ = decode_table(&m[..n]);
                }
            }
        }
        assert_eq!(check_table(&[0, 0, 0, 2, 1, b'k']), Err(FieldError::Malformed));
        assert_eq!(check_table(&[0, 0, 0, 3, 1, b'k', b'?']), Err(FieldError::Malformed));
        assert_eq!(check_table(&[0, 0, 0, 0]), Ok(4));
    }

    #[test]
    fn method_table_offsets_match_amq_protocol_encodings() {
        use crate::protocol::AMQPClass;
        use amq_protocol::protocol::{basic, connection, exchange, queue};
        let mut args = FieldTable::default();
        args.insert("x".into(), AMQPValue::LongInt(7));
        let methods = [
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: args.clone(),
                mechanism: "PLAIN".into(),
                response: "".into(),
                locale: "en_US".into(),
            })),
            AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
                version_major: 0,
                version_minor: 9,
                server_properties: args.clone(),
                mechanisms: "PLAIN".into(),
                locales: "en_US".into(),
            })),
            AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
                exchange: "ex".into(),
                kind: "direct".into(),
                arguments: args.clone(),
                ..Default::default()
            })),
            AMQPClass::Exchange(exchange::AMQPMethod::Bind(exchange::Bind {
                destination: "d".into(),
                source: "src".into(),
                routing_key: "rk".into(),
                arguments: args.clone(),
                ..Default::default()
            })),
            AMQPClass::Exchange(exchange::AMQPMethod::Unbind(exchange::Unbind {
                destination: "d".into(),
                source: "src".into(),
                routing_key: "rk".into(),
                arguments: args.clone(),
                ..Default::default()
            })),
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: "q".into(),
                arguments: args.clone(),
                ..Default::default()
            })),
            AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
                queue: "q".into(),
                exchange: "e".into(),
                routing_key: "k".into(),
                arguments: args.clone(),
                ..Default::default()
            })),
            AMQPClass::Queue(queue::AMQPMethod::Unbind(queue::Unbind {
                queue: "q".into(),
                exchange: "e".into(),
                routing_key: "k".into(),
                arguments: args.clone(),
            })),
            AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                queue: "q".into(),
                consumer_tag: "ctag".into(),
                arguments: args.clone(),
                ..Default::default()
            })),
        ];
        let table = encode_table(&args);
        assert_eq!(methods.len(), METHOD_TABLES.len());
        for m in &methods {
            let payload = cookie_factory::gen_simple(amq_protocol::protocol::gen_class(m), Vec::new()).unwrap();
            let at = method_table_offset(&payload).unwrap_or_else(|| panic!("no table found in {m:?}"));
            assert_eq!(&payload[at..at + table.len()], &table[..], "{m:?}");
        }
        // A method without a table, and a truncated one.
        assert_eq!(method_table_offset(&[0, 60, 0, 10, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(method_table_offset(&[0, 50, 0, 10, 0, 0, 9]), None);
    }
}
