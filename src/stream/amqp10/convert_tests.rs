use amq_protocol::types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString};
use bytes::Bytes;

use super::*;
use crate::fuzzing::assert_same_amqp091;
use crate::stream::amqp10::message::{BodySection, Header, Message, Properties};
use crate::stream::amqp10::types::Value;

fn table(entries: Vec<(&str, AMQPValue)>) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert(k.into(), v);
    }
    t
}

fn long(s: &[u8]) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.to_vec()))
}

/// One value of every field type Warren supports, the ambiguous ones included.
fn every_type() -> Vec<(&'static str, AMQPValue)> {
    vec![
        ("t", AMQPValue::Boolean(true)),
        ("b", AMQPValue::ShortShortInt(-5)),
        ("B", AMQPValue::ShortShortUInt(250)),
        ("s", AMQPValue::ShortInt(-300)),
        ("u", AMQPValue::ShortUInt(60000)),
        ("I", AMQPValue::LongInt(-70000)),
        ("i", AMQPValue::LongUInt(4_000_000_000)),
        ("l", AMQPValue::LongLongInt(i64::MIN)),
        ("f", AMQPValue::Float(1.25)),
        ("d", AMQPValue::Double(f64::NAN)),
        ("D", AMQPValue::DecimalValue(DecimalValue { scale: 3, value: 5 })),
        ("D0", AMQPValue::DecimalValue(DecimalValue { scale: 0, value: u32::MAX })),
        ("S", long("héllo".as_bytes())),
        ("S-binary", long(&[0xff, 0x00, 0xc3])),
        ("S-nul", long(b"a\0b")),
        ("S-long", long("é".repeat(5000).as_bytes())),
        ("T", AMQPValue::Timestamp(1_700_000_000)),
        ("T-huge", AMQPValue::Timestamp(u64::MAX)),
        ("x", AMQPValue::ByteArray(ByteArray::from(vec![0, 1, 0xff]))),
        ("V", AMQPValue::Void),
    ]
}

fn nested() -> AMQPValue {
    let inner = table(every_type());
    AMQPValue::FieldArray(FieldArray::from(vec![
        AMQPValue::FieldTable(inner.clone()),
        AMQPValue::FieldArray(FieldArray::from(every_type().into_iter().map(|(_, v)| v).collect::<Vec<_>>())),
        AMQPValue::Void,
        AMQPValue::FieldTable(FieldTable::default()),
        AMQPValue::FieldArray(FieldArray::default()),
    ]))
}

fn all_properties(headers: FieldTable) -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("gzip".into())
        .with_headers(headers)
        .with_delivery_mode(2)
        .with_priority(7)
        .with_correlation_id("urn:uuid:0123abcd-4567-89ab-cdef-0123456789ab".into())
        .with_reply_to("amq.rabbitmq.reply-to".into())
        .with_expiration("60000".into())
        .with_message_id("m-1".into())
        .with_timestamp(1_700_000_000)
        .with_type("order.created".into())
        .with_user_id("guest".into())
        .with_app_id("shop".into())
        .with_cluster_id("c1".into())
}

fn round_trip(exchange: &str, rk: &[u8], p: BasicProperties, body: &[&'static [u8]]) -> (Message, Amqp091) {
    let body: Vec<Bytes> = body.iter().map(|b| Bytes::from_static(b)).collect();
    let record = Bytes::from(from_amqp091(exchange, rk, &p, &body));
    let back = to_amqp091(&record, "stream-q").unwrap();
    let expected = Amqp091 {
        exchange: exchange.into(),
        routing_key: Bytes::copy_from_slice(rk),
        properties: p,
        body: body.into_iter().collect(),
    };
    assert_same_amqp091(&expected, &back);
    (Message::decode(&record).unwrap(), back)
}

#[test]
fn every_property_and_header_type_round_trips() {
    let mut headers = table(every_type());
    for (k, v) in every_type() {
        headers.insert(format!("x-{k}").as_str().into(), v);
    }
    headers.insert("x-nested".into(), nested());
    headers.insert("nested".into(), nested());
    headers.insert("table".into(), AMQPValue::FieldTable(table(every_type())));
    headers.insert("CC".into(), AMQPValue::FieldArray(FieldArray::from(vec![long(b"rk2"), long(b"rk3")])));
    headers.insert("BCC".into(), AMQPValue::FieldArray(FieldArray::from(vec![long(b"rk4")])));
    headers.insert("x-death".into(), nested());
    for reserved in ["x-exchange", "x-routing-key", "x-cc", "x-basic-type", "x-opt-warren-amqp091", "x-opt-deaths"] {
        headers.insert(reserved.into(), long(b"mine"));
    }
    round_trip("amq.topic", b"a.b", all_properties(headers), &[b"hello ", b"world"]);

    // Each property on its own, and none at all.
    let all = all_properties(FieldTable::default());
    let only: Vec<BasicProperties> = vec![
        BasicProperties::default(),
        BasicProperties::default().with_content_type(all.content_type().clone().unwrap()),
        BasicProperties::default().with_content_encoding(all.content_encoding().clone().unwrap()),
        BasicProperties::default().with_headers(FieldTable::default()),
        BasicProperties::default().with_delivery_mode(1),
        BasicProperties::default().with_delivery_mode(2),
        BasicProperties::default().with_delivery_mode(0),
        BasicProperties::default().with_delivery_mode(9),
        BasicProperties::default().with_priority(0),
        BasicProperties::default().with_priority(255),
        BasicProperties::default().with_correlation_id("c".into()),
        BasicProperties::default().with_reply_to("r".into()),
        BasicProperties::default().with_expiration("0".into()),
        BasicProperties::default().with_expiration("4294967295".into()),
        BasicProperties::default().with_expiration("4294967296".into()),
        BasicProperties::default().with_expiration("010".into()),
        BasicProperties::default().with_expiration("+5".into()),
        BasicProperties::default().with_message_id("urn:uuid:0123ABCD-4567-89ab-cdef-0123456789ab".into()),
        BasicProperties::default().with_message_id("urn:uuid:not-a-uuid".into()),
        BasicProperties::default().with_timestamp(0),
        BasicProperties::default().with_timestamp(u64::MAX),
        BasicProperties::default().with_type(AMQP10_TYPE.into()),
        BasicProperties::default().with_user_id("u".into()),
        BasicProperties::default().with_app_id("a".into()),
        BasicProperties::default().with_cluster_id("c".into()),
    ];
    for p in only {
        round_trip("", b"q", p, &[b"x"]);
    }
    // Empty body, non-UTF-8 routing key, a long exchange name.
    round_trip(&"e".repeat(255), &[0xff, 0xfe], BasicProperties::default(), &[]);
}

#[test]
fn the_record_is_what_rabbitmq_writes() {
    let headers = table(vec![
        ("str", long(b"v")),
        ("int", AMQPValue::LongInt(5)),
        ("ts", AMQPValue::Timestamp(10)),
        ("bytes", AMQPValue::ByteArray(ByteArray::from(vec![1]))),
        ("x-match", long(b"all")),
        ("x-list", AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::Boolean(true)]))),
        ("CC", AMQPValue::FieldArray(FieldArray::from(vec![long(b"other")]))),
        (FILTER_VALUE_HEADER, long(b"emea")),
    ]);
    let p = all_properties(headers).with_cluster_id("".into());
    let p = BasicProperties::default()
        .with_content_type(p.content_type().clone().unwrap())
        .with_content_encoding(p.content_encoding().clone().unwrap())
        .with_headers(p.headers().clone().unwrap())
        .with_delivery_mode(2)
        .with_priority(7)
        .with_correlation_id(p.correlation_id().clone().unwrap())
        .with_reply_to(p.reply_to().clone().unwrap())
        .with_expiration("60000".into())
        .with_message_id("m-1".into())
        .with_timestamp(1_700_000_000)
        .with_type("order.created".into())
        .with_user_id("guest".into())
        .with_app_id("shop".into());
    let (m, back) = round_trip("amq.direct", b"rk", p, &[b"body"]);
    assert_eq!(
        m.header,
        Some(Header { durable: Some(true), priority: Some(7), ttl: Some(60000), ..Header::default() })
    );
    assert_eq!(
        m.properties,
        Some(Properties {
            message_id: Some(Value::string("m-1")),
            user_id: Some(Bytes::from_static(b"guest")),
            reply_to: Some("amq.rabbitmq.reply-to".into()),
            correlation_id: Some(Value::Uuid([
                0x01, 0x23, 0xab, 0xcd, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab
            ])),
            content_type: Some("application/json".into()),
            content_encoding: Some("gzip".into()),
            creation_time: Some(1_700_000_000_000),
            group_id: Some("shop".into()),
            ..Properties::default()
        })
    );
    let ann = |k: &str| m.annotation(k).cloned();
    assert_eq!(ann("x-basic-type"), Some(Value::string("order.created")));
    assert_eq!(ann("x-exchange"), Some(Value::string("amq.direct")));
    assert_eq!(ann("x-routing-key"), Some(Value::string("rk")));
    assert_eq!(ann("x-match"), Some(Value::string("all")));
    assert_eq!(ann("x-list"), Some(Value::List(vec![Value::Bool(true)])));
    assert_eq!(ann("x-cc"), Some(Value::List(vec![Value::string("other")])));
    assert_eq!(ann(FILTER_VALUE_HEADER), Some(Value::string("emea")));
    // Nothing RabbitMQ would lose here: no annotation of Warren's.
    assert_eq!(ann(WARREN_ANNOTATION), None);
    assert_eq!(
        m.application_properties,
        Some(vec![
            (Value::string("bytes"), Value::Binary(Bytes::from_static(&[1]))),
            (Value::string("int"), Value::Int(5)),
            (Value::string("str"), Value::string("v")),
            (Value::string("ts"), Value::Timestamp(10_000)),
        ])
    );
    assert_eq!(m.body, vec![BodySection::Data(Bytes::from_static(b"body"))]);
    assert_eq!(filter_value(&back.properties), Some("emea"));
}

#[test]
fn what_rabbitmq_would_lose_goes_in_warrens_annotation() {
    let headers = table(vec![
        ("tbl", AMQPValue::FieldTable(table(vec![("k", AMQPValue::Boolean(true))]))),
        ("dec", AMQPValue::DecimalValue(DecimalValue { scale: 2, value: 150 })),
        ("x-exchange", long(b"mine")),
        ("raw", long(&[0xff])),
    ]);
    let p = BasicProperties::default()
        .with_headers(headers)
        .with_delivery_mode(3)
        .with_expiration("010".into())
        .with_timestamp(u64::MAX)
        .with_cluster_id("c".into());
    let (m, _) = round_trip("x", b"rk", p, &[b""]);
    // No header: delivery mode 3 and the expiration text have RabbitMQ's x-basic-* fallbacks.
    assert_eq!(m.header, None);
    assert_eq!(m.annotation("x-basic-delivery-mode"), Some(&Value::Ubyte(3)));
    assert_eq!(m.annotation("x-basic-expiration"), Some(&Value::string("010")));
    assert_eq!(m.annotation("x-exchange"), Some(&Value::string("x")));
    // The decimal reads as its text for stream clients.
    assert_eq!(m.application_property("dec"), Some(&Value::string("1.50")));
    assert_eq!(m.application_property("raw"), Some(&Value::Binary(Bytes::from_static(&[0xff]))));
    let Some(Value::Map(w)) = m.annotation(WARREN_ANNOTATION) else { panic!("{m:?}") };
    let get = |k: &str| Value::lookup(w, k).cloned();
    assert_eq!(get("timestamp"), Some(Value::Ulong(u64::MAX)));
    assert_eq!(get("cluster-id"), Some(Value::string("c")));
    assert_eq!(
        get("headers"),
        Some(Value::Map(vec![
            (Value::string("tbl"), Value::Map(vec![(Value::symbol("k"), Value::Bool(true))])),
            (Value::string("x-exchange"), Value::string("mine")),
        ]))
    );
    assert_eq!(
        get("types"),
        Some(Value::Map(vec![(Value::string("dec"), Value::string("D")), (Value::string("raw"), Value::string("S"))]))
    );
}

/// A message as a stream client writes it (the Rust client: a header with every field, data).
fn client_record(body: Vec<BodySection>) -> Bytes {
    let m = Message {
        header: Some(Header {
            durable: Some(false),
            priority: Some(4),
            ttl: None,
            first_acquirer: Some(false),
            delivery_count: Some(0),
        }),
        message_annotations: Some(vec![
            (Value::symbol("x-opt-foo"), Value::Long(1)),
            (Value::symbol("not-x"), Value::Long(1)),
            (Value::Ulong(3), Value::Long(1)),
            (Value::symbol("x-opt-rabbitmq-received-time"), Value::Timestamp(1_700_000_000_999)),
        ]),
        properties: Some(Properties {
            message_id: Some(Value::Uuid([0xab; 16])),
            user_id: Some(Bytes::from_static(b"guest")),
            to: Some("/exchanges/x".into()),
            subject: Some("subj".into()),
            reply_to: Some("replies".into()),
            correlation_id: Some(Value::Ulong(77)),
            content_type: Some("text/plain".into()),
            content_encoding: None,
            absolute_expiry_time: Some(5),
            creation_time: Some(1_700_000_000_999),
            group_id: Some("grp".into()),
            group_sequence: Some(1),
            reply_to_group_id: None,
        }),
        application_properties: Some(vec![
            (Value::string("s"), Value::string("v")),
            (Value::string("sym"), Value::symbol("v")),
            (Value::string("bin"), Value::Binary(Bytes::from_static(b"\x01"))),
            (Value::string("l"), Value::Long(-1)),
            (Value::string("ul"), Value::Ulong(u64::MAX)),
            (Value::string("ub"), Value::Ubyte(1)),
            (Value::string("b"), Value::Bool(false)),
            (Value::string("n"), Value::Null),
            (Value::string("c"), Value::Char('é')),
            (Value::string("u"), Value::Uuid([0x11; 16])),
            (Value::string("ts"), Value::Timestamp(-1500)),
            (Value::string("d"), Value::Decimal32([1, 2, 3, 4])),
            (Value::symbol("symbol-key"), Value::Null),
            (Value::string(&"k".repeat(256)), Value::Null),
        ]),
        body,
        ..Message::default()
    };
    Bytes::from(m.encode())
}

#[test]
fn a_stream_client_message_reaches_a_091_consumer_as_rabbitmq_delivers_it() {
    let rec = client_record(vec![
        BodySection::Data(Bytes::from_static(b"he")),
        BodySection::Data(Bytes::from_static(b"llo")),
    ]);
    let d = to_amqp091(&rec, "events").unwrap();
    assert_eq!(d.exchange, "");
    assert_eq!(d.routing_key, "events");
    assert_eq!(d.body.concat(), b"hello");
    let p = &d.properties;
    assert_eq!(*p.delivery_mode(), Some(1));
    assert_eq!(*p.priority(), Some(4));
    assert_eq!(p.message_id().as_ref().unwrap().as_str(), "urn:uuid:abababab-abab-abab-abab-abababababab");
    assert_eq!(p.correlation_id().as_ref().unwrap().as_str(), "77");
    assert_eq!(p.user_id().as_ref().unwrap().as_str(), "guest");
    assert_eq!(p.reply_to().as_ref().unwrap().as_str(), "replies");
    assert_eq!(p.content_type().as_ref().unwrap().as_str(), "text/plain");
    assert_eq!(*p.timestamp(), Some(1_700_000_000));
    assert_eq!(p.app_id().as_ref().unwrap().as_str(), "grp");
    assert_eq!(*p.kind(), None);
    assert_eq!(*p.expiration(), None);
    let h = p.headers().as_ref().unwrap().inner();
    let get = |k: &str| h.get(k).cloned();
    assert_eq!(get("s"), Some(long(b"v")));
    assert_eq!(get("sym"), Some(long(b"v")));
    assert_eq!(get("bin"), Some(AMQPValue::ByteArray(ByteArray::from(vec![1]))));
    assert_eq!(get("l"), Some(AMQPValue::LongLongInt(-1)));
    assert_eq!(get("ul"), Some(long(u64::MAX.to_string().as_bytes())));
    assert_eq!(get("ub"), Some(AMQPValue::ShortShortUInt(1)));
    assert_eq!(get("b"), Some(AMQPValue::Boolean(false)));
    assert_eq!(get("n"), Some(AMQPValue::Void));
    assert_eq!(get("c"), Some(long("é".as_bytes())));
    assert_eq!(get("u"), Some(long(b"11111111-1111-1111-1111-111111111111")));
    assert_eq!(get("ts"), Some(AMQPValue::LongLongInt(-2)));
    assert_eq!(get("d"), Some(AMQPValue::ByteArray(ByteArray::from(vec![1, 2, 3, 4]))));
    assert_eq!(get("x-opt-foo"), Some(AMQPValue::LongLongInt(1)));
    assert_eq!(get("timestamp_in_ms"), Some(AMQPValue::LongLongInt(1_700_000_000_999)));
    // Symbol keys, keys over 255 bytes and annotations RabbitMQ does not map are left out.
    assert_eq!(h.len(), 14, "{h:?}");

    // Read back as a broker message.
    let m = to_message(&rec, "events").unwrap();
    assert_eq!(m.routing_key.as_wire(), b"events");
    assert_eq!(m.body_bytes(), "hello");
    assert!(!m.is_persistent());
}

#[test]
fn bodies_other_than_data_reach_091_consumers_encoded() {
    let value = BodySection::Value(Value::List(vec![Value::string("a"), Value::Int(1)]));
    let footer = vec![(Value::symbol("x-f"), Value::Null)];
    let m = Message { body: vec![value.clone()], footer: Some(footer.clone()), ..Message::default() };
    let rec = Bytes::from(m.encode());
    let d = to_amqp091(&rec, "s").unwrap();
    assert_eq!(d.properties.kind().as_ref().unwrap().as_str(), AMQP10_TYPE);
    // The body is the encoded sections, footer included (4.x), as they are in the record.
    assert_eq!(d.body.concat(), rec.to_vec());
    // Published again over 0-9-1 with that type, the sections are stored as they were.
    let again = Bytes::from(from_amqp091("", b"s", &d.properties, &d.body));
    let back = Message::decode(&again).unwrap();
    assert_eq!((back.body, back.footer), (vec![value.clone()], Some(footer)));
    assert_same_amqp091(&d, &to_amqp091(&again, "s").unwrap());
    // An amqp-sequence, and no body section at all (3.13: empty body, type amqp-1.0).
    let m = Message { body: vec![BodySection::Sequence(vec![Value::Null])], ..Message::default() };
    let d = to_amqp091(&Bytes::from(m.encode()), "s").unwrap();
    assert_eq!(d.body.concat(), m.encode());
    let d = to_amqp091(&Bytes::new(), "s").unwrap();
    assert!(d.body.is_empty());
    assert_eq!(d.properties.kind().as_ref().unwrap().as_str(), AMQP10_TYPE);
    // A body typed amqp-1.0 that is not body sections stays a data section.
    let p = BasicProperties::default().with_type(AMQP10_TYPE.into());
    let rec = Bytes::from(from_amqp091("", b"s", &p, &[Bytes::from_static(b"not amqp")]));
    assert_eq!(Message::decode(&rec).unwrap().body, vec![BodySection::Data(Bytes::from_static(b"not amqp"))]);
}

#[test]
fn message_ids_follow_rabbitmq() {
    let rec = |id: Value, corr: Value| {
        let m = Message {
            properties: Some(Properties { message_id: Some(id), correlation_id: Some(corr), ..Properties::default() }),
            ..Message::with_data(Bytes::new())
        };
        to_amqp091(&Bytes::from(m.encode()), "s").unwrap().properties
    };
    let p = rec(Value::Binary(Bytes::from_static(b"\x01\x02")), Value::string(&"c".repeat(300)));
    assert_eq!(*p.message_id(), None);
    assert_eq!(*p.correlation_id(), None);
    let h = p.headers().as_ref().unwrap().inner();
    assert_eq!(h.get("x-message-id"), Some(&AMQPValue::ByteArray(ByteArray::from(vec![1, 2]))));
    assert_eq!(h.get("x-correlation-id"), Some(&long("c".repeat(300).as_bytes())));
    // Only RabbitMQ's own lowercase urn form becomes a uuid (so it comes back as it was).
    assert_eq!(
        message_id("urn:uuid:0123abcd-4567-89ab-cdef-0123456789ab"),
        Value::Uuid([0x01, 0x23, 0xab, 0xcd, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab])
    );
    for s in ["urn:uuid:0123ABCD-4567-89ab-cdef-0123456789ab", "urn:uuid:0123abcd04567-89ab-cdef-0123456789ab", "x"] {
        assert_eq!(message_id(s), Value::string(s));
    }
}

#[test]
fn decimals_read_as_their_text() {
    for (scale, value, text) in
        [(0, 7, "7"), (2, 150, "1.50"), (3, 5, "0.005"), (1, 0, "0.0"), (10, u32::MAX, "0.4294967295")]
    {
        let d = DecimalValue { scale, value };
        assert_eq!(decimal_text(&d), text);
        assert_eq!(parse_decimal(text), Some(d));
    }
    let d = DecimalValue { scale: 255, value: 1 };
    assert_eq!(parse_decimal(&decimal_text(&d)), Some(d));
    for bad in ["", ".", "1.", "+1", "-1", "01", "1.5.5", "4294967296", "a"] {
        assert_eq!(parse_decimal(bad), None, "{bad}");
    }
}

#[test]
fn the_filter_value_is_a_utf8_string_header() {
    let with = |v: AMQPValue| BasicProperties::default().with_headers(table(vec![(FILTER_VALUE_HEADER, v)]));
    assert_eq!(filter_value(&with(long(b"emea"))), Some("emea"));
    assert_eq!(filter_value(&with(long(b"a\0"))), None);
    assert_eq!(filter_value(&with(long(&[0xff]))), None);
    assert_eq!(filter_value(&with(AMQPValue::LongInt(1))), None);
    assert_eq!(filter_value(&BasicProperties::default()), None);
    let m = Message {
        message_annotations: Some(vec![(Value::symbol(FILTER_VALUE_HEADER), Value::string("apac"))]),
        ..Message::default()
    };
    assert_eq!(m.filter_value(), Some("apac"));
}

#[test]
fn headers_nested_to_warrens_limit_round_trip_and_deeper_ones_are_dropped() {
    // The headers table is level 1: a value nested MAX_NESTING - 1 more levels is the deepest
    // a publish may carry.
    let deep = |levels: usize| {
        let mut v = AMQPValue::Void;
        for i in 0..levels {
            v = if i % 2 == 0 {
                AMQPValue::FieldArray(FieldArray::from(vec![v, AMQPValue::ByteArray(ByteArray::from(vec![1]))]))
            } else {
                AMQPValue::FieldTable(table(vec![
                    ("k", v),
                    ("d", AMQPValue::DecimalValue(DecimalValue { scale: 1, value: 1 })),
                ]))
            };
        }
        v
    };
    let headers = table(vec![("x-deep", deep(MAX_NESTING - 1)), ("deep", deep(MAX_NESTING - 1))]);
    let p = BasicProperties::default().with_headers(headers);
    round_trip("", b"q", p, &[b"b"]);
    // A record nesting application data deeper than a 0-9-1 table may: the value is dropped.
    let mut v = Value::Null;
    for _ in 0..MAX_NESTING {
        v = Value::List(vec![v]);
    }
    let m = Message {
        message_annotations: Some(vec![(Value::symbol("x-deep"), v), (Value::symbol("x-ok"), Value::Null)]),
        ..Message::with_data(Bytes::new())
    };
    let d = to_amqp091(&Bytes::from(m.encode()), "s").unwrap();
    let h = d.properties.headers().as_ref().unwrap();
    assert!(!h.contains_key("x-deep") && h.contains_key("x-ok"), "{h:?}");
}

#[test]
fn broker_messages_convert() {
    let m = crate::message::Message::build(
        "ex".into(),
        "rk".into(),
        all_properties(table(every_type())),
        smallvec::smallvec![Bytes::from_static(b"a"), Bytes::from_static(b"b")],
    );
    let rec = Bytes::from(from_message(&m));
    let back = to_message(&rec, "s").unwrap();
    assert_eq!((back.exchange.as_ref(), back.routing_key.as_wire()), ("ex", &b"rk"[..]));
    assert_eq!(back.body_bytes(), "ab");
    assert!(back.is_persistent());
    let h = back.headers().unwrap();
    assert!(crate::fuzzing::same_table(h, m.headers().unwrap()));
    assert_eq!(
        back.properties().clone().with_headers(FieldTable::default()),
        m.properties().clone().with_headers(FieldTable::default())
    );
}

#[test]
fn garbage_records_never_panic() {
    // Every truncation and single-byte change of a rich record, through the fuzz check.
    let rec = client_record(vec![BodySection::Value(Value::Array(vec![Value::Uint(1); 3]))]);
    for cut in 0..rec.len() {
        crate::fuzzing::amqp10(&rec[..cut]);
    }
    let mut x: u32 = 12345;
    for i in 0..rec.len() * 8 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let mut r = rec.to_vec();
        r[i % rec.len()] = (x >> 16) as u8;
        crate::fuzzing::amqp10(&r);
    }
}

fn unhex(parts: &[&str]) -> Bytes {
    let h: String = parts.concat();
    Bytes::from((0..h.len()).step_by(2).map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap()).collect::<Vec<_>>())
}

/// Records encoded by another AMQP 1.0 implementation (Apache Qpid Proton 0.40, Python): every
/// header field, every properties field (uuid id, ulong correlation id, both times), annotations
/// with a list and a map, application properties of every simple type, and a data body; and an
/// array body with an array annotation (array32 of str32).
#[test]
fn records_from_another_implementation_decode_and_convert() {
    let rec = unhex(&[
        "005370c00c05415007700000ea60415202005372d10000003d00000006a307782d6f70742d61a10176a306782d6c6973",
        "74d00000000c000000035501a10374776f40a305782d6d6170d10000000800000002a3016b41005373c0630d98012345",
        "6789abcdef0123456789abcdefa0056775657374a107746f2d61646472a1047375626aa1057265706c79532aa30a7465",
        "78742f706c61696ea3057574662d38830000018bcfe6f094830000018bcfe568faa1036772705205a104726772700053",
        "74d10000009900000022a10173a103737472a1016954fba1016c810000010000000000a102756250c8a102757360ea60",
        "a102756970ee6b2800a1016251ffa102736861fed4a10166723fc00000a10164824002000000000000a104626f6f6c42",
        "a1016e40a10362696ea0020001a10373796da3027379a1027473830000018bcfe5687ba1017598000000000000000000",
        "00000000000001a10163730000007a005375a00568656c6c6f",
    ]);
    let m = Message::decode(&rec).unwrap();
    let expected_header = Header {
        durable: Some(true),
        priority: Some(7),
        ttl: Some(60000),
        first_acquirer: Some(true),
        delivery_count: Some(2),
    };
    assert_eq!(m.header, Some(expected_header));
    let p = m.properties.clone().unwrap();
    assert_eq!(p.correlation_id, Some(Value::Ulong(42)));
    assert_eq!((p.absolute_expiry_time, p.creation_time), (Some(1_700_000_100_500), Some(1_700_000_000_250)));
    assert_eq!((p.to.as_deref(), p.subject.as_deref(), p.group_sequence), (Some("to-addr"), Some("subj"), Some(5)));
    assert_eq!(m.application_property("c"), Some(&Value::Char('z')));
    assert_eq!(m.annotation("x-list"), Some(&Value::List(vec![Value::Long(1), Value::string("two"), Value::Null])));
    assert_eq!(m.body, vec![BodySection::Data(Bytes::from_static(b"hello"))]);
    // Warren's encoding of it decodes to the same sections.
    assert_eq!(Message::decode(&Bytes::from(m.encode())).unwrap(), m);
    let d = to_amqp091(&rec, "s").unwrap();
    let p = &d.properties;
    assert_eq!((*p.delivery_mode(), *p.priority(), *p.timestamp()), (Some(2), Some(7), Some(1_700_000_000)));
    assert_eq!(p.message_id().as_ref().unwrap().as_str(), "urn:uuid:01234567-89ab-cdef-0123-456789abcdef");
    assert_eq!(p.expiration().as_ref().unwrap().as_str(), "60000");
    let h = p.headers().as_ref().unwrap().inner();
    assert_eq!(h.get("ts"), Some(&AMQPValue::Timestamp(1_700_000_000)));
    assert_eq!(h.get("x-map"), Some(&AMQPValue::FieldTable(table(vec![("k", AMQPValue::Boolean(true))]))));
    assert_eq!(h.len(), 20);

    let rec = unhex(&[
        "00537045005372d10000001f00000002a305782d617272f00000000f00000002b1000000016100000001620053734500",
        "5377f0000000110000000371000000010000000200000003",
    ]);
    let m = Message::decode(&rec).unwrap();
    assert_eq!(m.annotation("x-arr"), Some(&Value::Array(vec![Value::string("a"), Value::string("b")])));
    assert_eq!(m.body, vec![BodySection::Value(Value::Array(vec![Value::Int(1), Value::Int(2), Value::Int(3)]))]);
    let d = to_amqp091(&rec, "s").unwrap();
    assert_eq!(d.body.concat(), &rec[rec.len() - 25..]);
    assert_eq!(
        d.properties.headers().as_ref().unwrap().inner().get("x-arr"),
        Some(&AMQPValue::FieldArray(FieldArray::from(vec![long(b"a"), long(b"b")])))
    );
}
