//! `queue.declare` of a stream (`x-queue-type: stream`): its arguments and flags, checked in
//! RabbitMQ 3.10's order with its texts (measured on 3.10.8; `../shared/reference/streams.md`
//! §2): a server-named stream is refused; the stream arguments are validated; arguments owned
//! by other queue types are refused (unknown `x-` arguments are ignored); then the flags
//! (auto-delete, exclusive, non-durable) and the segment size maximum. Where RabbitMQ 3.10
//! crashes the channel (541 for `x-max-age` values such as `h` or `""`), Warren answers the
//! 406 RabbitMQ gives for other bad intervals.

use std::time::Duration;

use amq_protocol::types::{AMQPValue, FieldTable};

use crate::error::{AmqpError, AmqpResult};
use crate::protocol::methods::{type_name, value_int, value_str};

/// The largest `x-stream-max-segment-size-bytes` RabbitMQ accepts.
pub const MAX_SEGMENT_SIZE: u64 = 3_000_000_000;
/// RabbitMQ's default segment size.
pub const DEFAULT_SEGMENT_SIZE: u64 = 500_000_000;

/// A stream's settings from its declare arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamArgs {
    /// `x-max-length-bytes`: retention by size (whole segments).
    pub max_length_bytes: Option<u64>,
    /// `x-max-age`: retention by age (whole segments).
    pub max_age: Option<Duration>,
    /// `x-stream-max-segment-size-bytes`.
    pub max_segment_size_bytes: Option<u64>,
    /// `x-initial-cluster-size` (accepted; one node).
    pub initial_cluster_size: Option<u64>,
    /// `x-queue-leader-locator` (accepted; one node).
    pub leader_locator: Option<String>,
    /// `x-stream-filter-size-bytes` (3.13): the bloom filter size per chunk, 16..=255.
    pub filter_size_bytes: Option<u8>,
}

/// Arguments of other queue types, refused for streams (RabbitMQ 3.10 no longer accepts the
/// dead-lettering, length and single-active-consumer ones 3.9 did).
const OTHER_TYPES: &[&str] = &[
    "x-message-ttl",
    "x-expires",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-overflow",
    "x-max-priority",
    "x-single-active-consumer",
    "x-queue-mode",
    "x-queue-version",
    "x-delivery-limit",
    "x-dead-letter-strategy",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-quorum-initial-group-size",
    "x-queue-master-locator",
];

/// RabbitMQ's interval syntax (`x-max-age`, and `x-stream-offset` intervals): digits then one
/// of `Y` (365 days), `M` (30 days), `D`, `h`, `m`, `s`, greater than zero.
pub fn parse_interval(s: &str) -> Option<Duration> {
    let unit = s.chars().last()?;
    let digits = &s[..s.len() - unit.len_utf8()];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let secs = match unit {
        'Y' => 365 * 86_400,
        'M' => 30 * 86_400,
        'D' => 86_400,
        'h' => 3_600,
        'm' => 60,
        's' => 1,
        _ => return None,
    };
    (n > 0).then(|| Duration::from_secs(n.saturating_mul(secs)))
}

impl StreamArgs {
    /// Check a stream declare as RabbitMQ does; the settings when it is acceptable.
    pub fn parse(
        args: &FieldTable,
        name: &str,
        vhost: &str,
        (durable, exclusive, auto_delete, server_named): (bool, bool, bool, bool),
    ) -> AmqpResult<StreamArgs> {
        if server_named {
            return Err(AmqpError::precondition("Cannot declare a server-named queue for type rabbit_stream_queue"));
        }
        let invalid = |key: &str, why: String| {
            AmqpError::precondition(format_args!("invalid arg '{key}' for queue '{name}' in vhost '{vhost}': {why}"))
        };
        let get = |key: &str| args.inner().get(key);
        // A non-negative integer of any AMQP integer type.
        let count = |key: &str| -> AmqpResult<Option<i64>> {
            match get(key) {
                None => Ok(None),
                Some(v) => match value_int(v) {
                    Some(n) if n < 0 => Err(invalid(key, format!("{{value_negative,{n}}}"))),
                    Some(n) => Ok(Some(n)),
                    None => Err(invalid(key, format!("\"expected integer, got {}\"", type_name(v)))),
                },
            }
        };
        let text = |key: &str| -> AmqpResult<Option<String>> {
            match get(key) {
                None => Ok(None),
                Some(v @ (AMQPValue::LongString(_) | AMQPValue::ShortString(_))) => Ok(value_str(v)),
                Some(v) => Err(invalid(key, format!("{{unacceptable_type,{}}}", type_name(v)))),
            }
        };
        let mut a =
            StreamArgs { max_length_bytes: count("x-max-length-bytes")?.map(|n| n as u64), ..Default::default() };
        if let Some(s) = text("x-max-age")? {
            a.max_age = Some(parse_interval(&s).ok_or_else(|| invalid("x-max-age", "invalid_max_age".into()))?);
        }
        let segment = count("x-stream-max-segment-size-bytes")?;
        if let Some(n) = count("x-initial-cluster-size")? {
            if n == 0 {
                return Err(invalid("x-initial-cluster-size", "{value_zero,0}".into()));
            }
            a.initial_cluster_size = Some(n as u64);
        }
        if let Some(s) = text("x-queue-leader-locator")? {
            if !["client-local", "balanced", "random", "least-leaders"].contains(&s.as_str()) {
                return Err(invalid("x-queue-leader-locator", "invalid_queue_locator_arg".into()));
            }
            a.leader_locator = Some(s);
        }
        if let Some(v) = get("x-stream-filter-size-bytes") {
            match value_int(v) {
                Some(n @ 16..=255) => a.filter_size_bytes = Some(n as u8),
                Some(_) => {
                    return Err(AmqpError::precondition("Invalid value for  x-stream-filter-size-bytes"));
                }
                None => return Err(AmqpError::precondition("Invalid type for x-stream-filter-size-bytes")),
            }
        }
        if let Some(key) = OTHER_TYPES.iter().find(|k| get(k).is_some()) {
            return Err(AmqpError::precondition(format_args!(
                "invalid arg '{key}' for queue '{name}' in vhost '{vhost}' of queue type rabbit_stream_queue"
            )));
        }
        let property = |p: &str| {
            AmqpError::precondition(format_args!("invalid property '{p}' for queue '{name}' in vhost '{vhost}'"))
        };
        if auto_delete {
            return Err(property("auto-delete"));
        }
        if exclusive {
            return Err(property("exclusive-owner"));
        }
        if !durable {
            return Err(property("non-durable"));
        }
        if let Some(n) = segment {
            if n as u64 > MAX_SEGMENT_SIZE {
                return Err(AmqpError::precondition("Exceeded max value for x-stream-max-segment-size-bytes"));
            }
            a.max_segment_size_bytes = Some(n as u64);
        }
        Ok(a)
    }
}

/// A stream consumer's `x-stream-offset` argument (RabbitMQ's `parse_offset_arg`): absent →
/// `next`; `first`, `last`, `next`; an integer of any AMQP integer type (an offset; below the
/// first means the first); an AMQP timestamp (seconds); an interval string (`1h`: that long
/// before `now_ms`). Anything else is refused with RabbitMQ's 406 text (where RabbitMQ 3.10
/// crashes the channel for some strings, `""` or `First`, Warren answers the same 406).
pub fn stream_offset(
    v: Option<&AMQPValue>,
    name: &str,
    vhost: &str,
    now_ms: i64,
) -> AmqpResult<crate::stream::log::OffsetSpec> {
    use crate::stream::log::OffsetSpec;
    let Some(v) = v else { return Ok(OffsetSpec::Next) };
    let refused = |what: String| {
        AmqpError::precondition(format_args!(
            "invalid arg 'x-stream-offset' for queue '{name}' in vhost '{vhost}': {{invalid_stream_offset_arg,{what}}}"
        ))
    };
    match v {
        AMQPValue::LongString(_) | AMQPValue::ShortString(_) => {
            let s = value_str(v).unwrap_or_default();
            match s.as_str() {
                "first" => Ok(OffsetSpec::First),
                "last" => Ok(OffsetSpec::Last),
                "next" => Ok(OffsetSpec::Next),
                other => match parse_interval(other) {
                    Some(d) => {
                        Ok(OffsetSpec::Timestamp(now_ms.saturating_sub(d.as_millis().min(i64::MAX as u128) as i64)))
                    }
                    None => Err(refused(format!("{{{},<<\"{other}\">>}}", type_name(v)))),
                },
            }
        }
        AMQPValue::Timestamp(t) => Ok(OffsetSpec::Timestamp((*t).min(i64::MAX as u64 / 1000) as i64 * 1000)),
        other => match value_int(other) {
            Some(n) => Ok(OffsetSpec::Offset(n.max(0) as u64)),
            None => {
                Err(refused(format!("{{{},{}}}", type_name(other), crate::protocol::methods::value_display(other))))
            }
        },
    }
}

/// What a `basic.consume` on a stream asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConsume {
    pub offset: crate::stream::log::OffsetSpec,
    pub filter: Option<crate::stream::log::ChunkFilter>,
}

/// Check a `basic.consume` on the stream `name` as RabbitMQ does, in its order
/// (`rabbit_stream_queue:consume/3`): a consumer prefetch is required (406), automatic acks are
/// not supported (540), nor a global prefetch beside the consumer's (540), nor the consumer
/// arguments of other queue types (406); then `x-stream-offset` and, as RabbitMQ 3.13,
/// `x-stream-filter` (a string or a list of strings) with `x-stream-match-unfiltered`.
pub fn consume(
    args: &FieldTable,
    no_ack: bool,
    prefetch: u32,
    global_prefetch: u32,
    name: &str,
    vhost: &str,
    now_ms: i64,
) -> AmqpResult<StreamConsume> {
    let queue = format!("queue '{name}' in vhost '{vhost}'");
    if prefetch == 0 {
        return Err(AmqpError::precondition(format_args!("consumer prefetch count is not set for '{queue}'")));
    }
    if no_ack {
        return Err(AmqpError::not_implemented(format_args!(
            "automatic acknowledgement not supported by stream queues {queue}"
        )));
    }
    if global_prefetch > 0 {
        return Err(AmqpError::not_implemented(format_args!("{queue} does not support global qos")));
    }
    let get = |key: &str| args.inner().get(key);
    if let Some(key) = ["x-priority", "x-cancel-on-ha-failover"].into_iter().find(|k| get(k).is_some()) {
        return Err(AmqpError::precondition(format_args!(
            "invalid arg '{key}' for {queue} of queue type rabbit_stream_queue"
        )));
    }
    let offset = stream_offset(get("x-stream-offset"), name, vhost, now_ms)?;
    let text = |v: &AMQPValue| match v {
        AMQPValue::LongString(_) | AMQPValue::ShortString(_) => value_str(v).map(String::into_bytes),
        _ => None,
    };
    let values: Option<Vec<Vec<u8>>> = match get("x-stream-filter") {
        None => None,
        Some(AMQPValue::FieldArray(a)) => Some(a.as_slice().iter().filter_map(text).collect()),
        Some(v) => Some(text(v).into_iter().collect()),
    };
    let match_unfiltered = matches!(get("x-stream-match-unfiltered"), Some(AMQPValue::Boolean(true)));
    let filter = values.map(|values| crate::stream::log::ChunkFilter { values, match_unfiltered });
    Ok(StreamConsume { offset, filter })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::methods::longstr;

    const DURABLE: (bool, bool, bool, bool) = (true, false, false, false);

    fn parse_with(pairs: &[(&str, AMQPValue)], flags: (bool, bool, bool, bool)) -> AmqpResult<StreamArgs> {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), v.clone());
        }
        StreamArgs::parse(&t, "s", "/", flags)
    }

    fn refusal(pairs: &[(&str, AMQPValue)]) -> String {
        let e = parse_with(pairs, DURABLE).unwrap_err();
        assert_eq!(e.code, crate::error::ReplyCode::PreconditionFailed);
        e.text.strip_prefix("PRECONDITION_FAILED - ").expect("the reply text's prefix").to_string()
    }

    #[test]
    fn valid_arguments_become_settings() {
        let a = parse_with(
            &[
                ("x-max-length-bytes", AMQPValue::LongLongInt(1 << 40)),
                ("x-max-age", longstr("7D")),
                ("x-stream-max-segment-size-bytes", AMQPValue::LongUInt(0)),
                ("x-initial-cluster-size", AMQPValue::ShortShortUInt(3)),
                ("x-queue-leader-locator", longstr("balanced")),
                ("x-stream-filter-size-bytes", AMQPValue::ShortShortUInt(32)),
                ("x-foo", longstr("ignored")),
            ],
            DURABLE,
        )
        .unwrap();
        assert_eq!(a.max_length_bytes, Some(1 << 40));
        assert_eq!(a.max_age, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(
            (a.max_segment_size_bytes, a.initial_cluster_size, a.filter_size_bytes),
            (Some(0), Some(3), Some(32))
        );
        assert_eq!(a.leader_locator.as_deref(), Some("balanced"));
    }

    #[test]
    fn intervals_follow_rabbitmqs_units() {
        let secs = |s: &str| parse_interval(s).map(|d| d.as_secs());
        assert_eq!(
            [secs("1Y"), secs("2M"), secs("3D"), secs("4h"), secs("5m"), secs("6s")],
            [Some(365 * 86_400), Some(60 * 86_400), Some(3 * 86_400), Some(4 * 3600), Some(300), Some(6)]
        );
        for bad in ["0s", "1A", "1d", "10 s", "1.5h", "h", "", "-1h", "s1", "1hh", "٣h"] {
            assert_eq!(parse_interval(bad), None, "{bad:?}");
        }
        assert!(parse_interval("99999999999999999999Y").is_none(), "too large a number is refused, not wrapped");
    }

    #[test]
    fn bad_values_get_rabbitmqs_texts() {
        let q = "for queue 's' in vhost '/'";
        for (pairs, want) in [
            (
                vec![("x-max-length-bytes", AMQPValue::LongInt(-1))],
                format!("invalid arg 'x-max-length-bytes' {q}: {{value_negative,-1}}"),
            ),
            (
                vec![("x-max-length-bytes", longstr("5"))],
                format!("invalid arg 'x-max-length-bytes' {q}: \"expected integer, got longstr\""),
            ),
            (vec![("x-max-age", longstr("1A"))], format!("invalid arg 'x-max-age' {q}: invalid_max_age")),
            (vec![("x-max-age", longstr("h"))], format!("invalid arg 'x-max-age' {q}: invalid_max_age")),
            (
                vec![("x-max-age", AMQPValue::ShortShortInt(60))],
                format!("invalid arg 'x-max-age' {q}: {{unacceptable_type,byte}}"),
            ),
            (
                vec![("x-initial-cluster-size", AMQPValue::LongInt(0))],
                format!("invalid arg 'x-initial-cluster-size' {q}: {{value_zero,0}}"),
            ),
            (
                vec![("x-initial-cluster-size", AMQPValue::LongInt(-2))],
                format!("invalid arg 'x-initial-cluster-size' {q}: {{value_negative,-2}}"),
            ),
            (
                vec![("x-queue-leader-locator", longstr("nope"))],
                format!("invalid arg 'x-queue-leader-locator' {q}: invalid_queue_locator_arg"),
            ),
            (
                vec![("x-stream-max-segment-size-bytes", AMQPValue::LongLongInt(3_000_000_001))],
                "Exceeded max value for x-stream-max-segment-size-bytes".to_string(),
            ),
            (
                vec![("x-stream-filter-size-bytes", AMQPValue::ShortShortUInt(15))],
                "Invalid value for  x-stream-filter-size-bytes".to_string(),
            ),
            (
                vec![("x-message-ttl", AMQPValue::LongInt(-5))],
                format!("invalid arg 'x-message-ttl' {q} of queue type rabbit_stream_queue"),
            ),
            (
                vec![("x-single-active-consumer", AMQPValue::Boolean(true))],
                format!("invalid arg 'x-single-active-consumer' {q} of queue type rabbit_stream_queue"),
            ),
        ] {
            assert_eq!(refusal(&pairs), want);
        }
    }

    #[test]
    fn stream_offsets_follow_rabbitmqs_parse_offset_arg() {
        use crate::stream::log::OffsetSpec;
        let now = 10_000_000;
        let spec = |v: AMQPValue| stream_offset(Some(&v), "s", "/", now);
        assert_eq!(stream_offset(None, "s", "/", now).unwrap(), OffsetSpec::Next);
        assert_eq!(spec(longstr("first")).unwrap(), OffsetSpec::First);
        assert_eq!(spec(longstr("last")).unwrap(), OffsetSpec::Last);
        assert_eq!(spec(longstr("next")).unwrap(), OffsetSpec::Next);
        assert_eq!(spec(AMQPValue::LongLongInt(5)).unwrap(), OffsetSpec::Offset(5));
        assert_eq!(spec(AMQPValue::ShortShortUInt(2)).unwrap(), OffsetSpec::Offset(2));
        assert_eq!(spec(AMQPValue::LongInt(-1)).unwrap(), OffsetSpec::Offset(0), "below first: the first");
        assert_eq!(spec(AMQPValue::Timestamp(1_700_000_000)).unwrap(), OffsetSpec::Timestamp(1_700_000_000_000));
        assert_eq!(spec(longstr("30s")).unwrap(), OffsetSpec::Timestamp(now - 30_000));
        let text = spec(longstr("1A")).unwrap_err().text;
        assert_eq!(
            text,
            "PRECONDITION_FAILED - invalid arg 'x-stream-offset' for queue 's' in vhost '/': {invalid_stream_offset_arg,{longstr,<<\"1A\">>}}"
        );
        for bad in [longstr("First"), longstr(""), longstr("-5s"), AMQPValue::Boolean(true), AMQPValue::Double(1.5)] {
            let e = spec(bad).unwrap_err();
            assert_eq!(e.code, crate::error::ReplyCode::PreconditionFailed);
            assert!(e.text.contains("invalid_stream_offset_arg"), "{}", e.text);
        }
    }

    #[test]
    fn flags_are_checked_after_the_arguments_in_rabbitmqs_order() {
        let q = "for queue 's' in vhost '/'";
        let text = |flags| parse_with(&[], flags).unwrap_err().text.replacen("PRECONDITION_FAILED - ", "", 1);
        assert_eq!(
            text((false, true, true, false)),
            format!("invalid property 'auto-delete' {q}"),
            "auto-delete first"
        );
        assert_eq!(text((true, true, false, false)), format!("invalid property 'exclusive-owner' {q}"));
        assert_eq!(text((false, false, false, false)), format!("invalid property 'non-durable' {q}"));
        assert_eq!(
            text((true, false, false, true)),
            "Cannot declare a server-named queue for type rabbit_stream_queue"
        );
        // A bad argument is reported before a bad flag.
        let e = parse_with(&[("x-max-age", longstr("0s"))], (false, false, false, false)).unwrap_err().text;
        assert!(e.contains("invalid_max_age"), "{e}");
    }

    fn consume_with(
        pairs: &[(&str, AMQPValue)],
        no_ack: bool,
        prefetch: u32,
        global: u32,
    ) -> AmqpResult<StreamConsume> {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), v.clone());
        }
        consume(&t, no_ack, prefetch, global, "s", "/", 1_000_000)
    }

    #[test]
    fn consume_checks_come_in_rabbitmqs_order() {
        use crate::error::ReplyCode;
        let code = |r: AmqpResult<StreamConsume>| r.unwrap_err().code;
        // No prefetch is reported first, even with no-ack and a global prefetch.
        assert_eq!(code(consume_with(&[], true, 0, 5)), ReplyCode::PreconditionFailed);
        assert_eq!(code(consume_with(&[], true, 10, 5)), ReplyCode::NotImplemented);
        let e = consume_with(&[("x-priority", AMQPValue::LongInt(1))], false, 10, 5).unwrap_err();
        assert_eq!((e.code, e.text.contains("global qos")), (ReplyCode::NotImplemented, true));
        let e = consume_with(&[("x-priority", AMQPValue::LongInt(1))], false, 10, 0).unwrap_err();
        assert_eq!(e.code, ReplyCode::PreconditionFailed);
        assert!(
            e.text.ends_with("invalid arg 'x-priority' for queue 's' in vhost '/' of queue type rabbit_stream_queue")
        );
    }

    #[test]
    fn consume_reads_offset_and_filter() {
        use crate::stream::log::{ChunkFilter, OffsetSpec};
        let c = consume_with(&[], false, 1, 0).unwrap();
        assert_eq!(c, StreamConsume { offset: OffsetSpec::Next, filter: None });
        let list = AMQPValue::FieldArray(vec![longstr("a"), AMQPValue::LongInt(3), longstr("b")].into());
        let c = consume_with(
            &[
                ("x-stream-offset", longstr("first")),
                ("x-stream-filter", list),
                ("x-stream-match-unfiltered", AMQPValue::Boolean(true)),
            ],
            false,
            1,
            0,
        )
        .unwrap();
        let want = ChunkFilter { values: vec![b"a".to_vec(), b"b".to_vec()], match_unfiltered: true };
        assert_eq!(c, StreamConsume { offset: OffsetSpec::First, filter: Some(want) });
        let c = consume_with(&[("x-stream-filter", longstr("one"))], false, 1, 0).unwrap();
        assert_eq!(c.filter, Some(ChunkFilter { values: vec![b"one".to_vec()], match_unfiltered: false }));
        // An interval: that long before now.
        let c = consume_with(&[("x-stream-offset", longstr("10s"))], false, 1, 0).unwrap();
        assert_eq!(c.offset, OffsetSpec::Timestamp(1_000_000 - 10_000));
    }
}
