use super::*;

/// A table with every field type the wire carries, including the values JSON cannot hold.
fn every_type() -> FieldTable {
    let mut inner = FieldTable::default();
    inner.insert("n".into(), AMQPValue::LongLongInt(i64::MIN));
    inner.insert("nan".into(), AMQPValue::Float(f32::from_bits(0xffc0_0001)));
    let mut t = FieldTable::default();
    let pairs: Vec<(&str, AMQPValue)> = vec![
        ("bool", AMQPValue::Boolean(true)),
        ("i8", AMQPValue::ShortShortInt(-128)),
        ("u8", AMQPValue::ShortShortUInt(255)),
        ("i16", AMQPValue::ShortInt(-32768)),
        ("u16", AMQPValue::ShortUInt(65535)),
        ("i32", AMQPValue::LongInt(i32::MIN)),
        ("u32", AMQPValue::LongUInt(u32::MAX)),
        ("i64", AMQPValue::LongLongInt(i64::MAX)),
        ("f32-nan", AMQPValue::Float(f32::NAN)),
        ("f32-inf", AMQPValue::Float(f32::INFINITY)),
        ("f32-neg-inf", AMQPValue::Float(f32::NEG_INFINITY)),
        ("f32-neg-zero", AMQPValue::Float(-0.0)),
        ("f64-nan-payload", AMQPValue::Double(f64::from_bits(0x7ff8_0000_dead_beef))),
        ("f64-neg-nan", AMQPValue::Double(f64::from_bits(0xfff8_0000_0000_0000))),
        ("f64-inf", AMQPValue::Double(f64::INFINITY)),
        ("f64-neg-inf", AMQPValue::Double(f64::NEG_INFINITY)),
        ("f64-tiny", AMQPValue::Double(f64::from_bits(1))),
        ("decimal", AMQPValue::DecimalValue(DecimalValue { scale: 255, value: u32::MAX })),
        ("timestamp", AMQPValue::Timestamp(u64::MAX)),
        ("longstr-utf8", AMQPValue::LongString("héllo".into())),
        ("longstr-binary", AMQPValue::LongString(vec![0xff, 0xfe, 0x00, 0x80, 0xc3].into())),
        ("bytes", AMQPValue::ByteArray(vec![0u8, 1, 0xff, 0x7f].into())),
        ("void", AMQPValue::Void),
        (
            "array",
            AMQPValue::FieldArray(
                vec![
                    AMQPValue::Void,
                    AMQPValue::Double(f64::NAN),
                    AMQPValue::FieldTable(inner.clone()),
                    AMQPValue::FieldArray(FieldArray::default()),
                ]
                .into(),
            ),
        ),
        ("table", AMQPValue::FieldTable(inner)),
        ("", AMQPValue::LongString("empty key".into())),
        ("ключ-é", AMQPValue::LongUInt(7)),
    ];
    for (k, v) in pairs {
        t.insert(k.into(), v);
    }
    t
}

/// A table nested `depth` levels deep (the outermost table is level 1), alternating tables
/// and arrays.
fn nested(depth: usize) -> FieldTable {
    let mut v = AMQPValue::Double(f64::NAN);
    for level in (2..=depth).rev() {
        v = if level % 2 == 0 {
            AMQPValue::FieldArray(vec![v].into())
        } else {
            let mut t = FieldTable::default();
            t.insert("k".into(), v);
            AMQPValue::FieldTable(t)
        };
    }
    let mut t = FieldTable::default();
    t.insert("x-deep".into(), v);
    t
}

fn bytes(t: &FieldTable) -> Vec<u8> {
    fields::encode_table(t)
}

#[test]
fn every_field_type_round_trips_bit_for_bit() {
    let t = every_type();
    let back = table_from_hex(&table_to_hex(&t)).unwrap();
    assert_eq!(bytes(&back), bytes(&t));
    let bits = |k: &str| match back.inner().get(k) {
        Some(AMQPValue::Double(d)) => d.to_bits(),
        Some(AMQPValue::Float(f)) => f.to_bits() as u64,
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(bits("f64-nan-payload"), 0x7ff8_0000_dead_beef);
    assert_eq!(bits("f64-neg-nan"), 0xfff8_0000_0000_0000);
    assert_eq!(bits("f32-nan"), f32::NAN.to_bits() as u64);
    assert_eq!(bits("f32-neg-zero"), (-0.0f32).to_bits() as u64);
    assert_eq!(
        back.inner().get("longstr-binary"),
        Some(&AMQPValue::LongString(vec![0xff, 0xfe, 0x00, 0x80, 0xc3].into()))
    );
    assert_eq!(back.inner().get("void"), Some(&AMQPValue::Void));
    assert_eq!(back.inner().len(), t.inner().len());
}

#[test]
fn whole_definitions_round_trip_through_the_file_text() {
    let d = Definitions {
        exchanges: vec![ExchangeDef {
            name: "x ü \"quoted\"".into(),
            kind: "x-delayed-message".into(),
            auto_delete: true,
            internal: false,
            arguments: every_type(),
        }],
        queues: vec![
            QueueDef { name: "q".into(), auto_delete: false, arguments: nested(fields::MAX_NESTING) },
            QueueDef { name: "empty".into(), auto_delete: true, arguments: FieldTable::default() },
        ],
        bindings: vec![BindingDef {
            source: "x ü \"quoted\"".into(),
            destination: "q".into(),
            destination_type: "queue".into(),
            routing_key: "a.#".into(),
            arguments: every_type(),
        }],
    };
    let text = render(&d);
    // Skimmable: names, types and flags are plain JSON.
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["version"], 2);
    assert_eq!(v["exchanges"][0]["type"], "x-delayed-message");
    assert_eq!(v["queues"][1]["arguments"], "00000000");
    let back = parse(&text).unwrap();
    assert_eq!(render(&back), text, "the same text again: every table came back byte for byte");
    assert_eq!(back.queues[0].name, "q");
    assert_eq!(bytes(&back.queues[0].arguments), bytes(&nested(fields::MAX_NESTING)));
}

#[test]
fn nesting_is_checked_at_the_limit() {
    assert!(table_from_hex(&table_to_hex(&nested(fields::MAX_NESTING))).is_ok());
    let e = table_from_hex(&table_to_hex(&nested(fields::MAX_NESTING + 1))).unwrap_err();
    assert!(e.contains("nested deeper"), "{e}");
}

#[test]
fn a_hostile_depth_is_refused_without_recursion() {
    // 200,000 nested arrays: a recursive decoder would overflow the stack.
    let depth = 200_000usize;
    let mut b = Vec::new();
    // Innermost: an empty array. Built from the inside out as [len][A][len][A]...
    let mut body: Vec<u8> = Vec::new();
    for _ in 0..depth {
        let mut outer = Vec::with_capacity(body.len() + 5);
        outer.push(b'A');
        outer.extend_from_slice(&(body.len() as u32).to_be_bytes());
        outer.extend_from_slice(&body);
        body = outer;
    }
    b.extend_from_slice(&((body.len() + 2) as u32).to_be_bytes());
    b.extend_from_slice(&[1, b'k']);
    b.extend_from_slice(&body);
    assert!(fields::check_table(&b).unwrap_err().to_string().contains("nested deeper"));
}

#[test]
fn malformed_tables_are_errors() {
    for hex in ["", "0", "zz", "00000001", "000000025600", "0000000201", "0000000300015a", "00000000ff"] {
        assert!(table_from_hex(hex).is_err(), "{hex} accepted");
    }
}

#[test]
fn the_first_format_still_loads() {
    // What the first format wrote: serde's own form of the tables (a NaN became null).
    let mut t = every_type();
    for k in [
        "f32-nan",
        "f32-inf",
        "f32-neg-inf",
        "f64-nan-payload",
        "f64-neg-nan",
        "f64-inf",
        "f64-neg-inf",
        "array",
        "table",
    ] {
        t.inner().get(k).expect("present");
        let mut m = t.inner().clone();
        m.remove(k);
        t = m.into();
    }
    let args = serde_json::to_value(&t).unwrap();
    let text = serde_json::to_string_pretty(&serde_json::json!({
        "exchanges": [{"name": "dx", "type": "direct", "auto_delete": false, "internal": false, "arguments": args}],
        "queues": [{"name": "dq", "auto_delete": false, "arguments": args}],
        "bindings": [{"source": "dx", "destination": "dq", "destination_type": "queue", "routing_key": "k", "arguments": {}}],
    }))
    .unwrap();
    let d = parse(&text).unwrap();
    assert_eq!(d.exchanges[0].kind, "direct");
    assert_eq!(bytes(&d.exchanges[0].arguments), bytes(&t));
    assert_eq!(bytes(&d.queues[0].arguments), bytes(&t));
    assert_eq!(d.bindings[0].routing_key, "k");

    // The reproduction: a NaN written as null comes back (as NaN), nested values too.
    let nan = r#"{"exchanges":[],"bindings":[],"queues":[{"name":"q","auto_delete":false,"arguments":
        {"x-foo":{"Double":null},"x-bar":{"FieldArray":[{"Float":null},"Void",{"Timestamp":5}]},
         "x-t":{"FieldTable":{"s":{"ShortString":"hi"},"d":{"DecimalValue":{"scale":2,"value":314}}}}}}]}"#;
    let d = parse(nan).unwrap();
    let a = &d.queues[0].arguments;
    assert!(matches!(a.inner().get("x-foo"), Some(AMQPValue::Double(f)) if f.is_nan()));
    let Some(AMQPValue::FieldArray(arr)) = a.inner().get("x-bar") else { panic!() };
    assert!(matches!(arr.as_slice()[0], AMQPValue::Float(f) if f.is_nan()));
    assert_eq!(arr.as_slice()[1], AMQPValue::Void);
    assert_eq!(arr.as_slice()[2], AMQPValue::Timestamp(5));
    // The new file encodes everything it read.
    assert!(parse(&render(&d)).is_ok());
}

use crate::test_dir::TestDir as Dir;

#[test]
fn an_unreadable_file_is_an_error_that_says_how_to_recover_and_is_left_alone() {
    let d = Dir::created("bad");
    let path = d.0.join("definitions.json");
    let good = render(&Definitions {
        queues: vec![QueueDef { name: "q".into(), auto_delete: false, arguments: every_type() }],
        ..Default::default()
    });
    let bad_cases: Vec<Vec<u8>> = vec![
        good.as_bytes()[..good.len() / 2].to_vec(),
        b"\x00\x01garbage\xff".to_vec(),
        Vec::new(),
        good.replace("\"version\": 2", "\"version\": 3").into_bytes(),
        good.replacen("\"arguments\": \"", "\"arguments\": \"zz", 1).into_bytes(),
    ];
    for bad in bad_cases {
        fs::write(&path, &bad).unwrap();
        let e = DefinitionsFile::new(&d.0).load().unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        let msg = e.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("move it aside"), "{msg}");
        assert!(msg.contains("kept"), "{msg}");
        assert_eq!(fs::read(&path).unwrap(), bad, "the file is left as it was");
        assert_eq!(fs::read_dir(&d.0).unwrap().count(), 1, "nothing renamed or added");
    }
    // No file at all: a fresh vhost.
    fs::remove_file(&path).unwrap();
    assert_eq!(DefinitionsFile::new(&d.0).load().unwrap(), Definitions::default());
}

#[test]
fn saving_the_same_definitions_twice_writes_once_even_with_nan() {
    let d = Dir::created("same");
    let defs = Definitions {
        queues: vec![QueueDef { name: "q".into(), auto_delete: false, arguments: every_type() }],
        ..Default::default()
    };
    let mut f = DefinitionsFile::new(&d.0);
    f.save(&defs).unwrap();
    let path = d.0.join("definitions.json");
    fs::write(&path, "sentinel").unwrap();
    f.save(&defs).unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), "sentinel", "unchanged definitions are not rewritten");
    fs::write(&path, render(&defs)).unwrap();
    let mut g = DefinitionsFile::new(&d.0);
    let loaded = g.load().unwrap();
    assert_eq!(render(&loaded), render(&defs));
}
