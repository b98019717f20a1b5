//! Queue arguments (`x-…` keys of `queue.declare`): parsed once at declare time, validated with
//! RabbitMQ's reply texts, and handed to the queue as plain settings.

use std::time::Duration;

use amq_protocol::types::{AMQPValue, FieldTable};

use crate::error::{AmqpError, AmqpResult};
use crate::protocol::methods::{type_name, value_int, value_str};

/// Ten years in milliseconds: RabbitMQ's ceiling for TTLs and expiries.
pub const MAX_TTL_MS: i64 = 315_360_000_000;

/// What happens when a publish would exceed `x-max-length` / `x-max-length-bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    #[default]
    DropHead,
    RejectPublish,
    RejectPublishDlx,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueType {
    #[default]
    Classic,
    Quorum,
    /// An append-only log read by offset ([`crate::stream`]).
    Stream,
}

impl QueueType {
    /// The name RabbitMQ shows (`x-queue-type`, the management API's `type`).
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
            QueueType::Stream => "stream",
        }
    }
}

/// Deduplication settings (`x-message-deduplication`), compatible with the
/// rabbitmq-message-deduplication plugin's queue-level mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueDedup;

/// A queue's validated arguments.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueArgs {
    pub message_ttl: Option<Duration>,
    pub expires: Option<Duration>,
    pub max_length: Option<u64>,
    pub max_length_bytes: Option<u64>,
    pub overflow: Overflow,
    pub dead_letter_exchange: Option<String>,
    pub dead_letter_routing_key: Option<String>,
    pub max_priority: Option<u8>,
    pub single_active_consumer: bool,
    pub queue_type: QueueType,
    /// Quorum queues: deliveries (first + redeliveries) before the message is dead-lettered.
    pub delivery_limit: Option<u64>,
    /// Per-queue consumer ack timeout; None = the broker default.
    pub consumer_timeout: Option<Duration>,
    pub deduplication: bool,
    /// A stream's settings (`queue_type` is `Stream`).
    pub stream: Option<Box<super::stream_args::StreamArgs>>,
}

impl QueueArgs {
    /// Parse and validate; `name`/`vhost` only feed the error texts.
    pub fn parse(
        args: &FieldTable,
        name: &str,
        vhost: &str,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        server_named: bool,
    ) -> AmqpResult<QueueArgs> {
        let invalid = |key: &str, why: String| {
            AmqpError::precondition(format_args!("invalid arg '{key}' for queue '{name}' in vhost '{vhost}': {why}"))
        };
        let get = |key: &str| args.inner().get(key);
        let int = |key: &str| -> AmqpResult<Option<i64>> {
            match get(key) {
                None => Ok(None),
                Some(v) => match value_int(v) {
                    Some(i) => Ok(Some(i)),
                    None => Err(invalid(key, format!("\"expected integer, got {}\"", type_name(v)))),
                },
            }
        };
        let mut a = QueueArgs::default();

        // x-queue-type first: it decides which other arguments are allowed.
        if let Some(v) = get("x-queue-type") {
            let t = value_str(v).ok_or_else(|| invalid("x-queue-type", unacceptable(v)))?;
            a.queue_type = match t.as_str() {
                "classic" => QueueType::Classic,
                "quorum" => QueueType::Quorum,
                "stream" => {
                    // A stream knows only its own arguments (checked in RabbitMQ's order).
                    let stream = super::stream_args::StreamArgs::parse(
                        args,
                        name,
                        vhost,
                        (durable, exclusive, auto_delete, server_named),
                    )?;
                    a.queue_type = QueueType::Stream;
                    a.max_length_bytes = stream.max_length_bytes;
                    a.stream = Some(Box::new(stream));
                    return Ok(a);
                }
                other => return Err(invalid("x-queue-type", format!("\"unsupported queue type '{other}'\""))),
            };
        }
        if a.queue_type == QueueType::Quorum {
            let prop = |p: &str| {
                AmqpError::precondition(format_args!("invalid property '{p}' for queue '{name}' in vhost '{vhost}'"))
            };
            if server_named {
                return Err(AmqpError::precondition(
                    "Cannot declare a server-named queue for type rabbit_quorum_queue",
                ));
            }
            if !durable {
                return Err(prop("non-durable"));
            }
            if exclusive {
                return Err(prop("exclusive-owner"));
            }
            if auto_delete {
                return Err(prop("auto-delete"));
            }
        }
        let classic_only = |key: &str| {
            AmqpError::precondition(format_args!(
                "invalid arg '{key}' for queue '{name}' in vhost '{vhost}' of queue type rabbit_quorum_queue"
            ))
        };
        let quorum_only = |key: &str| {
            AmqpError::precondition(format_args!(
                "invalid arg '{key}' for queue '{name}' in vhost '{vhost}' of queue type rabbit_classic_queue"
            ))
        };

        if let Some(ms) = int("x-message-ttl")? {
            if ms < 0 {
                return Err(invalid("x-message-ttl", format!("{{value_negative,{ms}}}")));
            }
            if ms > MAX_TTL_MS {
                return Err(invalid("x-message-ttl", format!("{{value_too_large,{ms}}}")));
            }
            a.message_ttl = Some(Duration::from_millis(ms as u64));
        }
        if let Some(ms) = int("x-expires")? {
            if ms == 0 {
                return Err(invalid("x-expires", "{value_zero,0}".into()));
            }
            if ms < 0 {
                return Err(invalid("x-expires", format!("{{value_negative,{ms}}}")));
            }
            if ms > MAX_TTL_MS {
                return Err(invalid("x-expires", format!("{{value_too_large,{ms}}}")));
            }
            a.expires = Some(Duration::from_millis(ms as u64));
        }
        for key in ["x-max-length", "x-max-length-bytes"] {
            if let Some(n) = int(key)? {
                if n < 0 {
                    return Err(invalid(key, format!("{{value_negative,{n}}}")));
                }
                if key == "x-max-length" {
                    a.max_length = Some(n as u64);
                } else {
                    a.max_length_bytes = Some(n as u64);
                }
            }
        }
        if let Some(v) = get("x-overflow") {
            let Some(s) = (match v {
                AMQPValue::LongString(_) => value_str(v),
                _ => None,
            }) else {
                return Err(invalid("x-overflow", unacceptable(v)));
            };
            a.overflow = match s.as_str() {
                "drop-head" => Overflow::DropHead,
                "reject-publish" => Overflow::RejectPublish,
                "reject-publish-dlx" => Overflow::RejectPublishDlx,
                _ => return Err(invalid("x-overflow", "invalid_overflow".into())),
            };
        }
        if let Some(v) = get("x-dead-letter-exchange") {
            match v {
                AMQPValue::LongString(_) => a.dead_letter_exchange = value_str(v),
                other => {
                    return Err(AmqpError::precondition(format_args!(
                        "invalid type '{}' for arg 'x-dead-letter-exchange' in queue '{name}' in vhost '{vhost}'",
                        type_name(other)
                    )));
                }
            }
        }
        if let Some(v) = get("x-dead-letter-routing-key") {
            match v {
                AMQPValue::LongString(_) => a.dead_letter_routing_key = value_str(v),
                other => {
                    return Err(AmqpError::precondition(format_args!(
                        "invalid type '{}' for arg 'x-dead-letter-routing-key' in queue '{name}' in vhost '{vhost}'",
                        type_name(other)
                    )));
                }
            }
            if a.dead_letter_exchange.is_none() {
                return Err(invalid("x-dead-letter-routing-key", "routing_key_but_no_dlx_defined".into()));
            }
        }
        if let Some(p) = int("x-max-priority")? {
            if a.queue_type == QueueType::Quorum {
                return Err(classic_only("x-max-priority"));
            }
            if p < 0 {
                return Err(invalid("x-max-priority", format!("{{value_negative,{p}}}")));
            }
            if p > 255 {
                return Err(invalid("x-max-priority", format!("{{max_value_exceeded,{p}}}")));
            }
            a.max_priority = Some(p as u8);
        }
        if let Some(v) = get("x-single-active-consumer") {
            match v {
                AMQPValue::Boolean(b) => a.single_active_consumer = *b,
                other => {
                    return Err(invalid("x-single-active-consumer", unacceptable(other)));
                }
            }
        }
        if let Some(v) = get("x-queue-mode") {
            match value_str(v).ok_or_else(|| invalid("x-queue-mode", unacceptable(v)))?.as_str() {
                "default" | "lazy" => {}
                other => return Err(invalid("x-queue-mode", format!("\"unsupported queue mode '{other}'\""))),
            }
        }
        if let Some(n) = int("x-queue-version")?
            && !(1..=2).contains(&n)
        {
            return Err(invalid("x-queue-version", format!("\"unsupported queue version '{n}'\"")));
        }
        if let Some(n) = int("x-delivery-limit")? {
            if a.queue_type != QueueType::Quorum {
                return Err(quorum_only("x-delivery-limit"));
            }
            if n < 0 {
                return Err(invalid("x-delivery-limit", format!("{{value_negative,{n}}}")));
            }
            a.delivery_limit = Some(n as u64);
        }
        if let Some(v) = get("x-dead-letter-strategy") {
            if a.queue_type != QueueType::Quorum {
                return Err(quorum_only("x-dead-letter-strategy"));
            }
            // RabbitMQ 3.10's texts (measured): a string that names no strategy is
            // `invalid_dlx_strategy`; any other type is `{unacceptable_type,T}`.
            let AMQPValue::LongString(_) = v else {
                return Err(invalid("x-dead-letter-strategy", unacceptable(v)));
            };
            match value_str(v).as_deref() {
                Some("at-most-once") | Some("at-least-once") => {}
                _ => return Err(invalid("x-dead-letter-strategy", "invalid_dlx_strategy".into())),
            }
        }
        if let Some(ms) = int("x-consumer-timeout")? {
            if ms < 0 {
                return Err(invalid("x-consumer-timeout", format!("{{value_negative,{ms}}}")));
            }
            if ms > MAX_TTL_MS {
                return Err(invalid("x-consumer-timeout", format!("{{value_too_large,{ms}}}")));
            }
            a.consumer_timeout = Some(Duration::from_millis(ms as u64));
        }
        if let Some(v) = get("x-message-deduplication") {
            match v {
                AMQPValue::Boolean(b) => a.deduplication = *b,
                other => {
                    return Err(invalid("x-message-deduplication", unacceptable(other)));
                }
            }
        }
        Ok(a)
    }
}

/// RabbitMQ's reason for an argument of the wrong type: `{unacceptable_type,signedint}`.
fn unacceptable(v: &AMQPValue) -> String {
    format!("{{unacceptable_type,{}}}", type_name(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::methods::longstr;

    fn parse(pairs: &[(&str, AMQPValue)]) -> AmqpResult<QueueArgs> {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), v.clone());
        }
        QueueArgs::parse(&t, "q", "/", false, false, false, false)
    }

    fn text(pairs: &[(&str, AMQPValue)]) -> String {
        parse(pairs).unwrap_err().text
    }

    #[test]
    fn valid_arguments_become_settings() {
        let a = parse(&[
            ("x-message-ttl", AMQPValue::LongInt(1000)),
            ("x-max-length", AMQPValue::ShortShortUInt(3)),
            ("x-overflow", longstr("reject-publish")),
            ("x-dead-letter-exchange", longstr("dlx")),
            ("x-dead-letter-routing-key", longstr("dead")),
            ("x-max-priority", AMQPValue::LongLongInt(10)),
            ("x-single-active-consumer", AMQPValue::Boolean(true)),
            ("x-queue-mode", longstr("lazy")),
            ("x-foo", longstr("ignored")),
        ])
        .unwrap();
        assert_eq!(a.message_ttl, Some(Duration::from_millis(1000)));
        assert_eq!(a.max_length, Some(3));
        assert_eq!(a.overflow, Overflow::RejectPublish);
        assert_eq!(a.dead_letter_routing_key.as_deref(), Some("dead"));
        assert_eq!(a.max_priority, Some(10));
        assert!(a.single_active_consumer);
    }

    #[test]
    fn rabbitmq_validation_texts() {
        let p = "PRECONDITION_FAILED - invalid arg";
        assert_eq!(
            text(&[("x-message-ttl", AMQPValue::LongInt(-1))]),
            format!("{p} 'x-message-ttl' for queue 'q' in vhost '/': {{value_negative,-1}}")
        );
        assert_eq!(
            text(&[("x-message-ttl", longstr("1"))]),
            format!("{p} 'x-message-ttl' for queue 'q' in vhost '/': \"expected integer, got longstr\"")
        );
        assert_eq!(
            text(&[("x-expires", AMQPValue::LongInt(0))]),
            format!("{p} 'x-expires' for queue 'q' in vhost '/': {{value_zero,0}}")
        );
        assert_eq!(
            text(&[("x-max-priority", AMQPValue::LongInt(256))]),
            format!("{p} 'x-max-priority' for queue 'q' in vhost '/': {{max_value_exceeded,256}}")
        );
        assert_eq!(
            text(&[("x-overflow", longstr("nope"))]),
            format!("{p} 'x-overflow' for queue 'q' in vhost '/': invalid_overflow")
        );
        assert_eq!(
            text(&[("x-dead-letter-routing-key", longstr("k"))]),
            format!("{p} 'x-dead-letter-routing-key' for queue 'q' in vhost '/': routing_key_but_no_dlx_defined")
        );
        assert_eq!(
            text(&[("x-dead-letter-exchange", AMQPValue::LongInt(1))]),
            "PRECONDITION_FAILED - invalid type 'signedint' for arg 'x-dead-letter-exchange' in queue 'q' in vhost '/'"
        );
        assert_eq!(
            text(&[("x-single-active-consumer", AMQPValue::LongInt(1))]),
            format!("{p} 'x-single-active-consumer' for queue 'q' in vhost '/': {{unacceptable_type,signedint}}")
        );
        assert_eq!(
            text(&[("x-queue-type", longstr("bogus"))]),
            format!("{p} 'x-queue-type' for queue 'q' in vhost '/': \"unsupported queue type 'bogus'\"")
        );
        assert_eq!(
            text(&[("x-delivery-limit", AMQPValue::LongInt(3))]),
            format!("{p} 'x-delivery-limit' for queue 'q' in vhost '/' of queue type rabbit_classic_queue")
        );
        assert_eq!(
            text(&[("x-queue-type", longstr("quorum"))]),
            "PRECONDITION_FAILED - invalid property 'non-durable' for queue 'q' in vhost '/'"
        );
        assert!(text(&[("x-queue-type", longstr("stream"))]).contains("invalid property 'non-durable'"));
        let mut t = FieldTable::default();
        t.insert("x-queue-type".into(), longstr("stream"));
        let stream = QueueArgs::parse(&t, "q", "/", true, false, false, false).expect("a durable stream");
        assert_eq!(stream.queue_type, QueueType::Stream);
        assert_eq!(stream.stream.as_deref(), Some(&super::super::stream_args::StreamArgs::default()));
        // Measured on RabbitMQ 3.10.8: a non-string type or mode names the value's type.
        assert_eq!(
            text(&[("x-queue-type", AMQPValue::LongInt(5))]),
            format!("{p} 'x-queue-type' for queue 'q' in vhost '/': {{unacceptable_type,signedint}}")
        );
        assert_eq!(
            text(&[("x-queue-type", AMQPValue::Boolean(true))]),
            format!("{p} 'x-queue-type' for queue 'q' in vhost '/': {{unacceptable_type,bool}}")
        );
        assert_eq!(
            text(&[("x-queue-mode", AMQPValue::LongInt(5))]),
            format!("{p} 'x-queue-mode' for queue 'q' in vhost '/': {{unacceptable_type,signedint}}")
        );
    }
}
