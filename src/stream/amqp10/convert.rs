//! AMQP 0-9-1 messages as AMQP 1.0 stream records, and back, as RabbitMQ converts them.
//!
//! Followed: RabbitMQ 3.13.7 `mc_amqpl:convert_to/3` and `convert_from/3`, `mc_amqp` (sections,
//! `protocol_state/2` adding `x-exchange`/`x-routing-key`) and `rabbit_stream_queue`
//! (`msg_to_iodata/1`, `binary_to_msg/2`: a record without those annotations is delivered with
//! exchange `""` and the stream's name as routing key); 4.x's `mc_amqpl` for concatenating
//! several `data` sections; 3.12's `rabbit_msg_record` (`x-basic-*` annotations, which 3.13
//! still reads) where a value has no other place.
//!
//! | AMQP 0-9-1 | AMQP 1.0 record | back |
//! |---|---|---|
//! | delivery-mode 2 / 1 | header `durable` true / false | 2 / 1 |
//! | delivery-mode other | message annotation `x-basic-delivery-mode` (ubyte) | the same |
//! | priority | header `priority` (ubyte) | the same |
//! | expiration (canonical integer ≤ u32) | header `ttl` (uint, ms) | its decimal text |
//! | expiration (other text) | annotation `x-basic-expiration` (string) | the same |
//! | content-type, content-encoding | properties, symbols | the same |
//! | message-id, correlation-id | properties: `urn:uuid:` + lowercase UUID → uuid, else string | urn string / string; from 1.0: ulong → decimal, binary or >255 bytes → header `x-message-id` / `x-correlation-id` |
//! | user-id | properties `user-id` (binary) | if UTF-8, ≤255 |
//! | reply-to | properties `reply-to` (string) | the same (≤255) |
//! | timestamp (s) | properties `creation-time` (ms) | ÷ 1000 |
//! | type | annotation `x-basic-type` (string) | the same; a body that is not `data` gives `amqp-1.0` |
//! | app-id | properties `group-id` | the same (≤255) |
//! | headers `x-…` | message annotations (symbol keys), any value | headers |
//! | header `CC` (array) | annotation `x-cc` (list) | `CC` |
//! | other headers, scalar | application-properties (string keys) | headers |
//! | exchange, routing key | annotations `x-exchange`, `x-routing-key` | exchange, routing key |
//! | body | one `data` section | the data sections concatenated |
//! | body with type `amqp-1.0` holding body sections | those sections, as they are | the encoded body sections (and footer), type `amqp-1.0` |
//!
//! Not carried, as in RabbitMQ: `type` goes in `x-basic-type`, not `subject` (3.13 leaves
//! `subject` unset); a 1.0 `to`, `subject`, `absolute-expiry-time`, `group-sequence`,
//! `reply-to-group-id`, `first-acquirer`, `delivery-count`, delivery annotations, message
//! annotations not named `x-…` and application properties with non-string keys do not reach
//! 0-9-1 consumers.
//!
//! Header values map type for type as `mc_amqpl:from_091/2`: t→boolean, b→byte, B→ubyte,
//! s→short, u→ushort, I→int, i→uint, l→long, f→float, d→double, T→timestamp (×1000), V→null,
//! S→string (binary when not UTF-8 or holding NUL), x→binary, A→list, F→map (symbol keys).
//! Back, binary gives `x` (as 3.10; 3.13 gives `S`), so a byte array round-trips. 1.0 values
//! 3.13 cannot convert (its channel fails) come as: decimal32/64/128 → `x` (their bytes),
//! char → `S`, uuid → `S` (8-4-4-4-12 text), ulong above `i64::MAX` → `S` (digits), a
//! timestamp before 1970 → `l` (seconds), a described value → the value it describes.
//!
//! Where RabbitMQ loses a value or its type, Warren keeps it in one message annotation of its
//! own, [`WARREN_ANNOTATION`] (an `x-opt-` key, which AMQP 1.0 receivers ignore when they do not
//! know it), written only when needed: a map with `headers` (headers 3.13 drops: arrays and
//! tables under non-`x-` names, and names RabbitMQ reserves such as `x-exchange`), `types`
//! (the 0-9-1 type where the 1.0 value alone would come back as another: `S` for a long string
//! that is not UTF-8 or holds NUL, held as binary; `D` for a decimal (3.13 fails on those),
//! held as its decimal text, e.g. `"1.50"`; `T` for a timestamp beyond
//! 1.0's range held as ulong seconds; nested as lists and maps for arrays and tables),
//! `cluster-id`, and `timestamp` (seconds, when ×1000 overflows). An empty `headers` map there
//! stands for an empty headers table.

use amq_protocol::types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString, ShortString};
use bytes::Bytes;
use bytestring::ByteString;

use super::codec::DecodeError;
use super::message::{BodySection, Header, Message, Properties, encode_body};
use super::types::{Map, Value};
use crate::protocol::BasicProperties;
use crate::protocol::fields::MAX_NESTING;

/// Warren's own message annotation: what RabbitMQ's conversion would lose.
pub const WARREN_ANNOTATION: &str = "x-opt-warren-amqp091";
/// The 0-9-1 `type` of a message whose body is AMQP 1.0 sections other than `data`.
pub const AMQP10_TYPE: &str = "amqp-1.0";
/// The header (3.13) whose value is a message's stream filter value.
pub const FILTER_VALUE_HEADER: &str = "x-stream-filter-value";

/// An AMQP 0-9-1 message read back from a record.
#[derive(Debug, Clone, PartialEq)]
pub struct Amqp091 {
    pub exchange: ByteString,
    /// The routing key's bytes (not always UTF-8: RabbitMQ takes bytes).
    pub routing_key: Bytes,
    pub properties: BasicProperties,
    /// The body as chunks of the record (one per `data` section).
    pub body: crate::message::Body,
}

/// The stream filter value of a message published over AMQP 0-9-1: its `x-stream-filter-value`
/// header when that is a UTF-8 string without NUL (RabbitMQ 3.13 `stream_message/2` takes only
/// a value `from_091` makes a 1.0 string).
pub fn filter_value(properties: &BasicProperties) -> Option<&str> {
    match properties.headers().as_ref()?.inner().get(FILTER_VALUE_HEADER)? {
        AMQPValue::LongString(s) => utf8_no_nul(s.as_bytes()),
        AMQPValue::ShortString(s) => utf8_no_nul(s.as_str().as_bytes()),
        _ => None,
    }
}

/// A broker message as a record (see [`from_amqp091`]).
pub fn from_message(m: &crate::message::Message) -> Vec<u8> {
    from_amqp091(&m.exchange, m.routing_key.as_wire(), m.properties(), &m.body)
}

/// A record as a broker message (see [`to_amqp091`]).
pub fn to_message(record: &Bytes, stream: &str) -> Result<crate::message::Message, DecodeError> {
    let m = to_amqp091(record, stream)?;
    let routing_key = crate::protocol::routing_key::RoutingKey::from_wire(m.routing_key);
    Ok(crate::message::Message::build(m.exchange, routing_key, m.properties, m.body))
}

/// The record RabbitMQ writes to a stream for an AMQP 0-9-1 publish.
pub fn from_amqp091(exchange: &str, routing_key: &[u8], p: &BasicProperties, body: &[Bytes]) -> Vec<u8> {
    let mut ma = Map::new();
    let mut ap = Map::new();
    let mut kept = Map::new();
    let mut types = Map::new();
    let mut warren = Map::new();

    let mut header = Header { priority: *p.priority(), ..Header::default() };
    match *p.delivery_mode() {
        None => {}
        Some(2) => header.durable = Some(true),
        Some(1) => header.durable = Some(false),
        Some(other) => ma.push((Value::symbol("x-basic-delivery-mode"), Value::Ubyte(other))),
    }
    if let Some(e) = p.expiration() {
        match e.as_str().parse::<u32>() {
            Ok(ms) if ms.to_string() == e.as_str() => header.ttl = Some(ms),
            _ => ma.push((Value::symbol("x-basic-expiration"), Value::string(e.as_str()))),
        }
    }
    if let Some(t) = p.kind() {
        ma.push((Value::symbol("x-basic-type"), Value::string(t.as_str())));
    }

    for (k, v) in p.headers().as_ref().map(|h| h.inner().iter()).into_iter().flatten() {
        let key = k.as_str();
        let (value, shape) = to_10(v);
        if let Some(shape) = shape {
            types.push((Value::string(key), shape));
        }
        let complex = matches!(v, AMQPValue::FieldArray(_) | AMQPValue::FieldTable(_));
        if reserved(key) {
            kept.push((Value::string(key), value));
        } else if key.starts_with("x-") {
            ma.push((Value::symbol(key), value));
        } else if key == "CC" && matches!(v, AMQPValue::FieldArray(_)) {
            ma.push((Value::symbol("x-cc"), value));
        } else if complex {
            // Application properties hold only simple values (3.13 drops these).
            kept.push((Value::string(key), value));
        } else {
            ap.push((Value::string(key), value));
        }
    }
    ma.push((Value::symbol("x-exchange"), Value::string(exchange)));
    let rk = match std::str::from_utf8(routing_key) {
        Ok(s) => Value::string(s),
        Err(_) => Value::Binary(Bytes::copy_from_slice(routing_key)),
    };
    ma.push((Value::symbol("x-routing-key"), rk));

    let mut props = Properties {
        message_id: p.message_id().as_ref().map(|s| message_id(s.as_str())),
        user_id: p.user_id().as_ref().map(|s| Bytes::copy_from_slice(s.as_str().as_bytes())),
        reply_to: p.reply_to().as_ref().map(|s| ByteString::from(s.as_str())),
        correlation_id: p.correlation_id().as_ref().map(|s| message_id(s.as_str())),
        content_type: p.content_type().as_ref().map(|s| ByteString::from(s.as_str())),
        content_encoding: p.content_encoding().as_ref().map(|s| ByteString::from(s.as_str())),
        group_id: p.app_id().as_ref().map(|s| ByteString::from(s.as_str())),
        ..Properties::default()
    };
    if let Some(ts) = *p.timestamp() {
        match i64::try_from(ts).ok().and_then(|s| s.checked_mul(1000)) {
            Some(ms) => props.creation_time = Some(ms),
            None => warren.push((Value::symbol("timestamp"), Value::Ulong(ts))),
        }
    }
    if let Some(c) = p.cluster_id() {
        warren.push((Value::symbol("cluster-id"), Value::string(c.as_str())));
    }
    // An empty headers table has no entry to show it: it is an empty `headers` map here.
    let empty_table = p.headers().as_ref().is_some_and(|h| h.inner().is_empty());
    if !kept.is_empty() || empty_table {
        warren.push((Value::symbol("headers"), Value::Map(kept)));
    }
    if !types.is_empty() {
        warren.push((Value::symbol("types"), Value::Map(types)));
    }
    if !warren.is_empty() {
        ma.push((Value::symbol(WARREN_ANNOTATION), Value::Map(warren)));
    }

    let head = Message {
        header: (header != Header::default()).then_some(header),
        message_annotations: Some(ma),
        properties: (props != Properties::default()).then_some(props),
        application_properties: (!ap.is_empty()).then_some(ap),
        ..Message::default()
    };
    let size: usize = body.iter().map(|b| b.len()).sum();
    let mut out = Vec::with_capacity(size + 128);
    head.encode_head(&mut out);
    let joined = || match body {
        [one] => one.clone(),
        many => Bytes::from(many.concat()),
    };
    // A body that is AMQP 1.0 sections (a 1.0 message delivered to a 0-9-1 client, published
    // again) is stored as those sections, as 3.13 does; exactly its bytes.
    if p.kind().as_ref().is_some_and(|t| t.as_str() == AMQP10_TYPE) {
        let b = joined();
        if is_encoded_body(&b) {
            out.extend_from_slice(&b);
            return out;
        }
    }
    encode_body(&[BodySection::Data(joined())], &mut out);
    out
}

/// Whether `b` is body sections (and a footer) with at least one that is not `data`.
fn is_encoded_body(b: &Bytes) -> bool {
    match Message::decode_parts(b) {
        Ok(d) => {
            let m = &d.message;
            d.raw_body.as_ref().is_some_and(|r| r.len() == b.len())
                && m.body.iter().any(|s| !matches!(s, BodySection::Data(_)))
        }
        Err(_) => false,
    }
}

/// The AMQP 0-9-1 message RabbitMQ delivers for a record of stream `stream`.
pub fn to_amqp091(record: &Bytes, stream: &str) -> Result<Amqp091, DecodeError> {
    let decoded = Message::decode_parts(record)?;
    let m = decoded.message;
    let ma: &[(Value, Value)] = m.message_annotations.as_deref().unwrap_or(&[]);
    let warren: &[(Value, Value)] = match Value::lookup(ma, WARREN_ANNOTATION) {
        Some(Value::Map(w)) => w,
        _ => &[],
    };
    let types: &[(Value, Value)] = match Value::lookup(warren, "types") {
        Some(Value::Map(t)) => t,
        _ => &[],
    };
    let shape = |key: &str| Value::lookup(types, key);

    let exchange = match Value::lookup(ma, "x-exchange").and_then(Value::as_str) {
        Some(x) if x.len() <= 255 => ByteString::from(x),
        _ => ByteString::new(),
    };
    let routing_key = match Value::lookup(ma, "x-routing-key") {
        Some(Value::String(s)) if s.len() <= 255 => s.as_bytes().clone(),
        Some(Value::Binary(b)) if b.len() <= 255 => b.clone(),
        _ => Bytes::copy_from_slice(stream.as_bytes()),
    };

    // The body: data sections concatenated (4.x), anything else encoded with type amqp-1.0.
    let data_only = !m.body.is_empty() && m.body.iter().all(|s| matches!(s, BodySection::Data(_)));
    let mut body = crate::message::Body::new();
    let kind = if data_only {
        for s in &m.body {
            if let BodySection::Data(b) = s
                && !b.is_empty()
            {
                body.push(b.clone());
            }
        }
        Value::lookup(ma, "x-basic-type").and_then(Value::as_str).and_then(short)
    } else {
        let raw = decoded.raw_body.unwrap_or_else(|| {
            let mut out = Vec::new();
            encode_body(&m.body, &mut out);
            if let Some(f) = &m.footer {
                let tail = Message { footer: Some(f.clone()), ..Message::default() };
                out.extend_from_slice(&tail.encode());
            }
            Bytes::from(out)
        });
        if !raw.is_empty() {
            body.push(raw);
        }
        short(AMQP10_TYPE)
    };

    let mut headers = FieldTable::default();
    for (k, v) in m.application_properties.as_deref().unwrap_or(&[]) {
        if let Value::String(k) = k
            && let Some(key) = short(k)
            && let Some(v) = to_091(v, shape(k), 2)
        {
            headers.insert(key, v);
        }
    }
    for (k, v) in ma {
        let Value::Symbol(k) = k else { continue };
        let (name, value) = match (&**k, v) {
            ("x-cc", v) => ("CC", to_091(v, shape("CC"), 2)),
            ("x-opt-rabbitmq-received-time", Value::Timestamp(ms)) => {
                ("timestamp_in_ms", Some(AMQPValue::LongLongInt(*ms)))
            }
            (k, _) if reserved(k) || !k.starts_with("x-") => continue,
            (k, v) => (k, to_091(v, shape(k), 2)),
        };
        if let (Some(key), Some(value)) = (short(name), value) {
            headers.insert(key, value);
        }
    }
    let kept = match Value::lookup(warren, "headers") {
        Some(Value::Map(kept)) => Some(kept),
        _ => None,
    };
    if let Some(kept) = kept {
        for (k, v) in kept {
            if let Some(k) = k.as_str()
                && let Some(key) = short(k)
                && let Some(v) = to_091(v, shape(k), 2)
            {
                headers.insert(key, v);
            }
        }
    }

    let mut p = BasicProperties::default();
    let h = m.header.unwrap_or_default();
    let annotation_u8 = |key: &str| Value::lookup(ma, key)?.as_integer().and_then(|n| u8::try_from(n).ok());
    let delivery_mode = match h.durable {
        Some(true) => Some(2),
        Some(false) => Some(1),
        None => annotation_u8("x-basic-delivery-mode"),
    };
    if let Some(d) = delivery_mode {
        p = p.with_delivery_mode(d);
    }
    if let Some(pr) = h.priority.or_else(|| annotation_u8("x-basic-priority")) {
        p = p.with_priority(pr);
    }
    let expiration = match h.ttl {
        Some(ms) => short(&ms.to_string()),
        None => Value::lookup(ma, "x-basic-expiration").and_then(Value::as_str).and_then(short),
    };
    if let Some(e) = expiration {
        p = p.with_expiration(e);
    }
    if let Some(k) = kind {
        p = p.with_type(k);
    }
    let props = m.properties.unwrap_or_default();
    if let Some(id) = props.message_id.as_ref().and_then(|v| message_id_091(v, "x-message-id", &mut headers)) {
        p = p.with_message_id(id);
    }
    if let Some(id) = props.correlation_id.as_ref().and_then(|v| message_id_091(v, "x-correlation-id", &mut headers)) {
        p = p.with_correlation_id(id);
    }
    // RabbitMQ also drops a user-id holding NUL; no publish can carry one past its user-id
    // check, so Warren keeps what it wrote.
    if let Some(u) = props.user_id.as_deref().and_then(|b| std::str::from_utf8(b).ok()).and_then(short) {
        p = p.with_user_id(u);
    }
    if let Some(r) = props.reply_to.as_deref().and_then(short) {
        p = p.with_reply_to(r);
    }
    if let Some(c) = props.content_type.as_deref().and_then(short) {
        p = p.with_content_type(c);
    }
    if let Some(c) = props.content_encoding.as_deref().and_then(short) {
        p = p.with_content_encoding(c);
    }
    let timestamp = match props.creation_time {
        Some(ms) if ms >= 0 => Some(ms as u64 / 1000),
        _ => match Value::lookup(warren, "timestamp") {
            Some(Value::Ulong(s)) => Some(*s),
            _ => None,
        },
    };
    if let Some(t) = timestamp {
        p = p.with_timestamp(t);
    }
    if let Some(a) = props.group_id.as_deref().and_then(short) {
        p = p.with_app_id(a);
    }
    if let Some(c) = Value::lookup(warren, "cluster-id").and_then(Value::as_str).and_then(short) {
        p = p.with_cluster_id(c);
    }
    if !headers.inner().is_empty() || kept.is_some() {
        p = p.with_headers(headers);
    }
    Ok(Amqp091 { exchange, routing_key, properties: p, body })
}

/// Header names a record gives a meaning of its own as message annotations: 0-9-1 headers of
/// these names are kept in Warren's annotation, and such annotations never become headers.
fn reserved(key: &str) -> bool {
    matches!(key, "x-exchange" | "x-routing-key" | "x-cc" | "x-opt-rabbitmq-received-time" | "x-opt-deaths")
        || key.starts_with("x-basic-")
        || key.starts_with("x-opt-warren-")
}

fn short(s: &str) -> Option<ShortString> {
    ShortString::try_new(s).ok()
}

fn utf8_no_nul(b: &[u8]) -> Option<&str> {
    std::str::from_utf8(b).ok().filter(|s| !s.contains('\0'))
}

/// A 0-9-1 message or correlation id as 1.0: a `urn:uuid:` string in RabbitMQ's own (lowercase)
/// form as a uuid, anything else as a string.
fn message_id(s: &str) -> Value {
    match parse_urn_uuid(s) {
        Some(u) => Value::Uuid(u),
        None => Value::string(s),
    }
}

fn parse_urn_uuid(s: &str) -> Option<[u8; 16]> {
    let hex = s.strip_prefix("urn:uuid:")?;
    let b = hex.as_bytes();
    if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
        return None;
    }
    let digits: Vec<u8> = b.iter().copied().filter(|&c| c != b'-').collect();
    if digits.len() != 32 || !digits.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut u = [0; 16];
    for (i, pair) in digits.chunks(2).enumerate() {
        u[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(u)
}

fn uuid_text(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// A 1.0 message or correlation id as 0-9-1 (3.13 `message_id/3`): the property, or a header
/// `key` when it has no short-string form.
fn message_id_091(v: &Value, key: &str, headers: &mut FieldTable) -> Option<ShortString> {
    match v {
        Value::Uuid(u) => short(&format!("urn:uuid:{}", uuid_text(u))),
        Value::Ulong(n) => short(&n.to_string()),
        Value::Binary(b) => {
            headers.insert(key.into(), AMQPValue::ByteArray(ByteArray::from(b.to_vec())));
            None
        }
        Value::String(s) | Value::Symbol(s) => short(s).or_else(|| {
            headers.insert(key.into(), AMQPValue::LongString(LongString::from(s.as_bytes().to_vec())));
            None
        }),
        _ => None,
    }
}

/// A decimal's text: its digits with `scale` of them after the point ("1.50", "0.05", "7").
fn decimal_text(d: &DecimalValue) -> String {
    let scale = d.scale as usize;
    let digits = d.value.to_string();
    if scale == 0 {
        return digits;
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{int}.{frac}")
}

/// The decimal whose [`decimal_text`] is `s`.
fn parse_decimal(s: &str) -> Option<DecimalValue> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let scale = u8::try_from(frac.len()).ok()?;
    let value = format!("{int}{frac}").parse::<u32>().ok()?;
    let d = DecimalValue { scale, value };
    (decimal_text(&d) == s).then_some(d)
}

/// A header value as 1.0 (`mc_amqpl:from_091/2`), and its type shape when the value alone would
/// come back as another 0-9-1 type.
fn to_10(v: &AMQPValue) -> (Value, Option<Value>) {
    let v10 = match v {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(x) => Value::Byte(*x),
        AMQPValue::ShortShortUInt(x) => Value::Ubyte(*x),
        AMQPValue::ShortInt(x) => Value::Short(*x),
        AMQPValue::ShortUInt(x) => Value::Ushort(*x),
        AMQPValue::LongInt(x) => Value::Int(*x),
        AMQPValue::LongUInt(x) => Value::Uint(*x),
        AMQPValue::LongLongInt(x) => Value::Long(*x),
        AMQPValue::Float(x) => Value::Float(*x),
        AMQPValue::Double(x) => Value::Double(*x),
        AMQPValue::DecimalValue(d) => return (Value::string(&decimal_text(d)), Some(Value::string("D"))),
        AMQPValue::ShortString(s) => Value::string(s.as_str()),
        AMQPValue::LongString(s) => match utf8_no_nul(s.as_bytes()) {
            Some(text) => Value::string(text),
            None => return (Value::Binary(Bytes::copy_from_slice(s.as_bytes())), Some(Value::string("S"))),
        },
        AMQPValue::Timestamp(t) => match i64::try_from(*t).ok().and_then(|s| s.checked_mul(1000)) {
            Some(ms) => Value::Timestamp(ms),
            None => return (Value::Ulong(*t), Some(Value::string("T"))),
        },
        AMQPValue::ByteArray(b) => Value::Binary(Bytes::copy_from_slice(b.as_slice())),
        AMQPValue::Void => Value::Null,
        AMQPValue::FieldArray(a) => {
            let (items, shapes): (Vec<Value>, Vec<Option<Value>>) = a.as_slice().iter().map(to_10).unzip();
            let shape = shapes
                .iter()
                .any(Option::is_some)
                .then(|| Value::List(shapes.into_iter().map(|s| s.unwrap_or(Value::Null)).collect()));
            return (Value::List(items), shape);
        }
        AMQPValue::FieldTable(t) => {
            let mut entries = Map::new();
            let mut shapes = Map::new();
            for (k, v) in t.inner() {
                let (v10, s) = to_10(v);
                if let Some(s) = s {
                    shapes.push((Value::symbol(k.as_str()), s));
                }
                entries.push((Value::symbol(k.as_str()), v10));
            }
            return (Value::Map(entries), (!shapes.is_empty()).then_some(Value::Map(shapes)));
        }
    };
    (v10, None)
}

/// A 1.0 value as a header value (`mc_amqpl:to_091/2`, plus the types 3.13 cannot convert),
/// at nesting `level` (the headers table is level 1); `None` when it nests deeper than a field
/// table may (the header is left out).
fn to_091(v: &Value, shape: Option<&Value>, level: usize) -> Option<AMQPValue> {
    let bytes = |b: &[u8]| LongString::from(b.to_vec());
    match (shape.and_then(Value::as_str), v) {
        (Some("S"), Value::Binary(b)) => return Some(AMQPValue::LongString(bytes(b))),
        (Some("D"), Value::String(s)) => {
            if let Some(d) = parse_decimal(s) {
                return Some(AMQPValue::DecimalValue(d));
            }
        }
        (Some("T"), Value::Ulong(n)) => return Some(AMQPValue::Timestamp(*n)),
        _ => {}
    }
    let nested = |i: usize| -> Option<&Value> {
        match shape? {
            Value::List(s) => s.get(i),
            _ => None,
        }
    };
    Some(match v {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Ubyte(x) => AMQPValue::ShortShortUInt(*x),
        Value::Ushort(x) => AMQPValue::ShortUInt(*x),
        Value::Uint(x) => AMQPValue::LongUInt(*x),
        Value::Ulong(x) => match i64::try_from(*x) {
            Ok(n) => AMQPValue::LongLongInt(n),
            Err(_) => AMQPValue::LongString(bytes(x.to_string().as_bytes())),
        },
        Value::Byte(x) => AMQPValue::ShortShortInt(*x),
        Value::Short(x) => AMQPValue::ShortInt(*x),
        Value::Int(x) => AMQPValue::LongInt(*x),
        Value::Long(x) => AMQPValue::LongLongInt(*x),
        Value::Float(x) => AMQPValue::Float(*x),
        Value::Double(x) => AMQPValue::Double(*x),
        Value::Decimal32(b) => AMQPValue::ByteArray(ByteArray::from(b.to_vec())),
        Value::Decimal64(b) => AMQPValue::ByteArray(ByteArray::from(b.to_vec())),
        Value::Decimal128(b) => AMQPValue::ByteArray(ByteArray::from(b.to_vec())),
        Value::Char(c) => AMQPValue::LongString(bytes(c.to_string().as_bytes())),
        Value::Timestamp(ms) if *ms >= 0 => AMQPValue::Timestamp(*ms as u64 / 1000),
        Value::Timestamp(ms) => AMQPValue::LongLongInt(ms.div_euclid(1000)),
        Value::Uuid(u) => AMQPValue::LongString(bytes(uuid_text(u).as_bytes())),
        Value::Binary(b) => AMQPValue::ByteArray(ByteArray::from(b.to_vec())),
        Value::String(s) | Value::Symbol(s) => AMQPValue::LongString(bytes(s.as_bytes())),
        Value::List(items) | Value::Array(items) => {
            if level > MAX_NESTING {
                return None;
            }
            let items = items.iter().enumerate().map(|(i, v)| to_091(v, nested(i), level + 1));
            AMQPValue::FieldArray(FieldArray::from(items.collect::<Option<Vec<_>>>()?))
        }
        Value::Map(entries) => {
            if level > MAX_NESTING {
                return None;
            }
            let shapes: &[(Value, Value)] = match shape {
                Some(Value::Map(s)) => s,
                _ => &[],
            };
            let mut t = FieldTable::default();
            for (k, v) in entries {
                // Keys a field table cannot have are left out.
                if let Some(k) = k.as_str()
                    && let Some(key) = short(k)
                {
                    t.insert(key, to_091(v, Value::lookup(shapes, k), level + 1)?);
                }
            }
            AMQPValue::FieldTable(t)
        }
        Value::Described(d) => return to_091(&d.value, shape, level),
    })
}

#[cfg(test)]
#[path = "convert_tests.rs"]
mod tests;
