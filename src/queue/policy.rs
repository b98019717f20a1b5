//! Policies and operator policies (RabbitMQ's `set_policy` / `set_operator_policy`): settings
//! applied to the queues and exchanges whose names match a pattern, without touching the
//! applications that declare them.
//!
//! Resolution follows RabbitMQ's `rabbit_policy` and `rabbit_amqqueue_process`:
//! - of the policies of a vhost that match an entity (apply-to, then the regular expression,
//!   unanchored), the one with the highest priority applies, alone (never merged with other
//!   policies); the same for operator policies. Equal priorities: the first by name.
//! - the policy and the operator policy are merged key by key; a key set by both takes the
//!   lower value for `expires`, `message-ttl`, `max-length`, `max-length-bytes`,
//!   `delivery-limit` (and the memory limits), and the operator's for `overflow`.
//! - against the queue's own `x-` arguments: the lower value wins for those numeric limits and
//!   `consumer-timeout`; the argument wins for `overflow` and the dead-letter settings, and for
//!   an exchange's `alternate-exchange`.

use std::cmp::Reverse;

use amq_protocol::types::FieldTable;
use serde_json::{Map, Value};

use super::args::{MAX_TTL_MS, Overflow, QueueArgs, QueueType};

/// Which entities a policy applies to (`apply-to`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyTo {
    All,
    Queues,
    ClassicQueues,
    QuorumQueues,
    Streams,
    Exchanges,
}

impl ApplyTo {
    pub fn parse(s: &str) -> Result<ApplyTo, String> {
        Ok(match s {
            "all" => ApplyTo::All,
            "queues" => ApplyTo::Queues,
            "classic_queues" => ApplyTo::ClassicQueues,
            "quorum_queues" => ApplyTo::QuorumQueues,
            "streams" => ApplyTo::Streams,
            "exchanges" => ApplyTo::Exchanges,
            other => {
                return Err(format!(
                    "apply-to '{other}' unrecognised; should be one of: 'queues', 'classic_queues',  'quorum_queues', 'streams', 'exchanges', or 'all'"
                ));
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ApplyTo::All => "all",
            ApplyTo::Queues => "queues",
            ApplyTo::ClassicQueues => "classic_queues",
            ApplyTo::QuorumQueues => "quorum_queues",
            ApplyTo::Streams => "streams",
            ApplyTo::Exchanges => "exchanges",
        }
    }

    fn queue(self, t: QueueType) -> bool {
        match self {
            // RabbitMQ: `queues` covers every queue type, streams included.
            ApplyTo::All | ApplyTo::Queues => true,
            ApplyTo::ClassicQueues => t == QueueType::Classic,
            ApplyTo::QuorumQueues => t == QueueType::Quorum,
            ApplyTo::Streams => t == QueueType::Stream,
            ApplyTo::Exchanges => false,
        }
    }

    fn exchange(self) -> bool {
        matches!(self, ApplyTo::All | ApplyTo::Exchanges)
    }
}

/// One policy (or operator policy) of a vhost.
#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    pub pattern: String,
    regex: regex::Regex,
    pub apply_to: ApplyTo,
    pub priority: i64,
    pub definition: Map<String, Value>,
}

impl PartialEq for Policy {
    fn eq(&self, o: &Policy) -> bool {
        (&self.name, &self.pattern, self.apply_to, self.priority, &self.definition)
            == (&o.name, &o.pattern, o.apply_to, o.priority, &o.definition)
    }
}

type Check = fn(&Value) -> bool;

fn non_neg(v: &Value) -> bool {
    v.as_u64().is_some()
}
fn positive(v: &Value) -> bool {
    v.as_u64().is_some_and(|n| n >= 1)
}
fn ttl(v: &Value) -> bool {
    v.as_u64().is_some_and(|n| n <= MAX_TTL_MS as u64)
}
fn text(v: &Value) -> bool {
    v.is_string()
}
fn overflow(v: &Value) -> bool {
    matches!(v.as_str(), Some("drop-head" | "reject-publish" | "reject-publish-dlx"))
}
fn queue_mode(v: &Value) -> bool {
    matches!(v.as_str(), Some("default" | "lazy"))
}
fn queue_version(v: &Value) -> bool {
    matches!(v.as_u64(), Some(1 | 2))
}
fn dlx_strategy(v: &Value) -> bool {
    matches!(v.as_str(), Some("at-most-once" | "at-least-once"))
}
fn anything(_: &Value) -> bool {
    true
}

/// The keys a policy may set: name, validator, RabbitMQ's words for a bad value, and whether
/// an operator policy may set it too. Keys Warren accepts but has no use for (queue-mode,
/// queue-version, the in-memory limits, HA and stream settings) are validated and ignored.
const KEYS: &[(&str, Check, &str, bool)] = &[
    ("alternate-exchange", text, "is not a valid alternate exchange name", false),
    ("dead-letter-exchange", text, "is not a valid dead letter exchange name", false),
    ("dead-letter-routing-key", text, "is not a valid dead letter routing key", false),
    ("dead-letter-strategy", dlx_strategy, "is not a valid dead letter strategy", false),
    ("message-ttl", ttl, "is not a valid message TTL", true),
    ("expires", positive, "is not a valid queue expiry", true),
    ("max-length", non_neg, "is not a valid maximum length", true),
    ("max-length-bytes", non_neg, "is not a valid maximum length in bytes", true),
    ("max-in-memory-length", non_neg, "is not a valid maximum memory in length", true),
    ("max-in-memory-bytes", non_neg, "is not a valid maximum memory in bytes", true),
    ("overflow", overflow, "is not a valid overflow value", true),
    ("delivery-limit", non_neg, "is not a valid delivery limit", true),
    ("consumer-timeout", non_neg, "is not a valid consumer timeout", false),
    ("queue-mode", queue_mode, "is not a valid queue-mode value", false),
    ("queue-version", queue_version, "is not a valid queue version", true),
    ("max-age", text, "is not a valid max age", false),
    ("stream-max-segment-size-bytes", non_neg, "is not a valid segment size", false),
    ("queue-leader-locator", text, "is not a valid leader locator", false),
    ("initial-cluster-size", positive, "is not a valid cluster size", false),
    ("ha-mode", anything, "", false),
    ("ha-params", anything, "", false),
    ("ha-sync-mode", anything, "", false),
    ("ha-promote-on-shutdown", anything, "", false),
    ("ha-promote-on-failure", anything, "", false),
    ("ha-sync-batch-size", anything, "", false),
    ("queue-master-locator", anything, "", false),
];

impl Policy {
    /// Validate a policy as `rabbitmqctl set_policy` does (RabbitMQ's texts).
    pub fn new(
        name: &str,
        pattern: &str,
        apply_to: &str,
        priority: i64,
        definition: Map<String, Value>,
        operator: bool,
    ) -> Result<Policy, String> {
        let regex = regex::Regex::new(pattern)
            .map_err(|e| format!("pattern '{pattern}' is not a valid regular expression: {e}"))?;
        let apply_to = ApplyTo::parse(apply_to)?;
        if definition.is_empty() {
            return Err("no policy provided".into());
        }
        let mut unknown = Vec::new();
        for (k, v) in &definition {
            match KEYS.iter().find(|(key, ..)| key == k) {
                Some((_, _, _, false)) if operator => unknown.push((k, v)),
                Some((_, check, why, _)) if !check(v) => return Err(format!("{v} {why}")),
                Some(_) => {}
                None => unknown.push((k, v)),
            }
        }
        if !unknown.is_empty() {
            let list: Vec<String> = unknown.iter().map(|(k, v)| format!("{{<<\"{k}\">>,{v}}}")).collect();
            return Err(format!("[{}] are not recognised policy settings", list.join(",")));
        }
        Ok(Policy { name: name.into(), pattern: pattern.into(), regex, apply_to, priority, definition })
    }

    fn matches_queue(&self, name: &str, t: QueueType) -> bool {
        self.apply_to.queue(t) && self.regex.is_match(name)
    }

    fn matches_exchange(&self, name: &str) -> bool {
        self.apply_to.exchange() && self.regex.is_match(name)
    }
}

/// The policies and operator policies of one vhost.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policies {
    pub policies: Vec<Policy>,
    pub operator: Vec<Policy>,
}

/// What applies to one entity: the policy and operator policy chosen, and their merged
/// definition.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    pub policy: Option<String>,
    pub operator_policy: Option<String>,
    pub definition: Map<String, Value>,
}

/// The highest-priority match (equal priorities: the first by name).
fn best(list: &[Policy], m: impl Fn(&Policy) -> bool) -> Option<&Policy> {
    list.iter().filter(|p| m(p)).min_by_key(|p| (Reverse(p.priority), p.name.clone()))
}

/// Keys for which policy and operator policy, or policy and argument, resolve to the lower.
const LOWER_WINS: &[&str] = &[
    "expires",
    "message-ttl",
    "max-length",
    "max-length-bytes",
    "max-in-memory-length",
    "max-in-memory-bytes",
    "delivery-limit",
    "consumer-timeout",
];

fn merge(policy: Option<&Policy>, op: Option<&Policy>) -> Applied {
    let mut definition = policy.map(|p| p.definition.clone()).unwrap_or_default();
    if let Some(op) = op {
        for (k, ov) in &op.definition {
            let v = match (definition.get(k), LOWER_WINS.contains(&k.as_str())) {
                (Some(pv), true) => match (pv.as_u64(), ov.as_u64()) {
                    (Some(a), Some(b)) => Value::from(a.min(b)),
                    _ => ov.clone(),
                },
                _ => ov.clone(),
            };
            definition.insert(k.clone(), v);
        }
    }
    Applied { policy: policy.map(|p| p.name.clone()), operator_policy: op.map(|p| p.name.clone()), definition }
}

impl Policies {
    pub fn for_queue(&self, name: &str, t: QueueType) -> Applied {
        merge(best(&self.policies, |p| p.matches_queue(name, t)), best(&self.operator, |p| p.matches_queue(name, t)))
    }

    pub fn for_exchange(&self, name: &str) -> Applied {
        merge(best(&self.policies, |p| p.matches_exchange(name)), best(&self.operator, |p| p.matches_exchange(name)))
    }

    /// Add or replace a policy (by name).
    pub fn put(&mut self, p: Policy, operator: bool) {
        let list = if operator { &mut self.operator } else { &mut self.policies };
        list.retain(|x| x.name != p.name);
        list.push(p);
    }

    /// Remove a policy; whether it existed.
    pub fn remove(&mut self, name: &str, operator: bool) -> bool {
        let list = if operator { &mut self.operator } else { &mut self.policies };
        let before = list.len();
        list.retain(|x| x.name != name);
        list.len() != before
    }
}

/// A queue's settings with a policy applied over its declared arguments (`declared`, parsed
/// from `arguments`).
pub fn queue_args(declared: &QueueArgs, arguments: &FieldTable, applied: &Applied) -> QueueArgs {
    if let Some(stream) = &declared.stream {
        return stream_args(declared, stream, applied);
    }
    let mut a = declared.clone();
    let d = &applied.definition;
    let num = |k: &str| d.get(k).and_then(Value::as_u64);
    let text = |k: &str| d.get(k).and_then(Value::as_str).map(String::from);
    let has_arg = |k: &str| arguments.inner().contains_key(k);
    let lower = |arg: Option<u64>, pol: Option<u64>| match (arg, pol) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    };
    let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_millis() as u64);
    let dur = |n: Option<u64>| n.map(std::time::Duration::from_millis);
    a.message_ttl = dur(lower(ms(declared.message_ttl), num("message-ttl")));
    a.expires = dur(lower(ms(declared.expires), num("expires")));
    a.consumer_timeout = dur(lower(ms(declared.consumer_timeout), num("consumer-timeout")));
    a.max_length = lower(declared.max_length, num("max-length"));
    a.max_length_bytes = lower(declared.max_length_bytes, num("max-length-bytes"));
    if declared.queue_type == QueueType::Quorum {
        a.delivery_limit = lower(declared.delivery_limit, num("delivery-limit"));
    }
    if !has_arg("x-overflow")
        && let Some(o) = text("overflow")
    {
        a.overflow = match o.as_str() {
            "reject-publish" => Overflow::RejectPublish,
            "reject-publish-dlx" => Overflow::RejectPublishDlx,
            _ => Overflow::DropHead,
        };
    }
    if !has_arg("x-dead-letter-exchange") {
        a.dead_letter_exchange = text("dead-letter-exchange");
    }
    if !has_arg("x-dead-letter-routing-key") {
        a.dead_letter_routing_key = declared.dead_letter_routing_key.clone().or(text("dead-letter-routing-key"));
    }
    a
}

/// A stream's settings under a policy: RabbitMQ's streams take the policy's value over the
/// argument (`policy_precedence`), for the retention and segment keys; the other keys do not
/// apply to streams.
fn stream_args(declared: &QueueArgs, stream: &super::stream_args::StreamArgs, applied: &Applied) -> QueueArgs {
    let d = &applied.definition;
    let num = |k: &str| d.get(k).and_then(Value::as_u64);
    let mut s = stream.clone();
    if let Some(n) = num("max-length-bytes") {
        s.max_length_bytes = Some(n);
    }
    if let Some(age) = d.get("max-age").and_then(Value::as_str).and_then(super::stream_args::parse_interval) {
        s.max_age = Some(age);
    }
    if let Some(n) = num("stream-max-segment-size-bytes") {
        s.max_segment_size_bytes = Some(n.min(super::stream_args::MAX_SEGMENT_SIZE));
    }
    if let Some(n @ 16..=255) = num("stream-filter-size-bytes") {
        s.filter_size_bytes = Some(n as u8);
    }
    QueueArgs { max_length_bytes: s.max_length_bytes, stream: Some(Box::new(s)), ..declared.clone() }
}

/// An exchange's alternate exchange: its argument, else the policy's.
pub fn alternate_exchange(declared: Option<&str>, applied: &Applied) -> Option<String> {
    declared
        .map(String::from)
        .or_else(|| applied.definition.get("alternate-exchange").and_then(Value::as_str).map(String::from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pol(name: &str, pattern: &str, priority: i64, def: Value, op: bool) -> Policy {
        Policy::new(name, pattern, "queues", priority, def.as_object().unwrap().clone(), op).unwrap()
    }

    #[test]
    fn validation_uses_rabbitmq_texts() {
        let def = |v: Value| v.as_object().unwrap().clone();
        let e = Policy::new("p", ".*", "all", 0, def(json!({"max-length": -1})), false).unwrap_err();
        assert_eq!(e, "-1 is not a valid maximum length");
        let e = Policy::new("p", ".*", "all", 0, def(json!({"foo": "bar"})), false).unwrap_err();
        assert_eq!(e, r#"[{<<"foo">>,"bar"}] are not recognised policy settings"#);
        let e = Policy::new("p", ".*", "all", 0, def(json!({"dead-letter-exchange": "x"})), true).unwrap_err();
        assert!(e.contains("not recognised"), "operator policies take only limits: {e}");
        let e = Policy::new("p", ".*", "nowhere", 0, def(json!({"max-length": 1})), false).unwrap_err();
        assert!(e.starts_with("apply-to 'nowhere' unrecognised"), "{e}");
        assert_eq!(Policy::new("p", ".*", "all", 0, Map::new(), false).unwrap_err(), "no policy provided");
        assert!(Policy::new("p", "(", "all", 0, def(json!({"max-length": 1})), false).is_err());
        assert!(Policy::new("p", ".*", "all", 0, def(json!({"expires": 0})), false).is_err());
        assert!(Policy::new("p", ".*", "all", 0, def(json!({"ha-mode": "all", "queue-mode": "lazy"})), false).is_ok());
    }

    #[test]
    fn one_policy_applies_the_highest_priority_and_operator_limits_take_the_lower() {
        let mut ps = Policies::default();
        ps.put(pol("low", "^q", 1, json!({"max-length": 10, "dead-letter-exchange": "dlx"}), false), false);
        ps.put(pol("high", "^q", 5, json!({"max-length": 100, "message-ttl": 1000}), false), false);
        ps.put(pol("other", "^x", 9, json!({"max-length": 1}), false), false);
        ps.put(pol("cap", ".*", 0, json!({"max-length": 50, "overflow": "reject-publish"}), true), true);
        let a = ps.for_queue("q1", QueueType::Classic);
        assert_eq!((a.policy.as_deref(), a.operator_policy.as_deref()), (Some("high"), Some("cap")));
        // Never merged with the lower-priority policy: no dead-letter-exchange.
        assert_eq!(a.definition.get("dead-letter-exchange"), None);
        assert_eq!(a.definition["max-length"], json!(50));
        assert_eq!(a.definition["message-ttl"], json!(1000));
        assert_eq!(a.definition["overflow"], json!("reject-publish"));
        // Applying to exchanges only: no queue matches.
        let mut ex = Policies::default();
        ex.put(
            Policy::new(
                "ae",
                ".*",
                "exchanges",
                0,
                json!({"alternate-exchange": "ae"}).as_object().unwrap().clone(),
                false,
            )
            .unwrap(),
            false,
        );
        assert_eq!(ex.for_queue("q", QueueType::Classic).policy, None);
        assert_eq!(alternate_exchange(None, &ex.for_exchange("x")).as_deref(), Some("ae"));
        assert_eq!(alternate_exchange(Some("mine"), &ex.for_exchange("x")).as_deref(), Some("mine"));
    }

    #[test]
    fn arguments_win_for_dead_lettering_and_overflow_the_lower_limit_wins() {
        let mut args = FieldTable::default();
        args.insert("x-max-length".into(), amq_protocol::types::AMQPValue::LongInt(5));
        args.insert("x-dead-letter-exchange".into(), crate::protocol::methods::longstr("mine"));
        let declared = QueueArgs::parse(&args, "q", "/", true, false, false, false).unwrap();
        let mut ps = Policies::default();
        ps.put(
            pol("p", ".*", 0, json!({"max-length": 3, "dead-letter-exchange": "theirs", "overflow": "reject-publish", "message-ttl": 60000}), false),
            false,
        );
        let a = queue_args(&declared, &args, &ps.for_queue("q", QueueType::Classic));
        assert_eq!(a.max_length, Some(3), "lower of argument 5 and policy 3");
        assert_eq!(a.dead_letter_exchange.as_deref(), Some("mine"), "the argument wins");
        assert_eq!(a.overflow, Overflow::RejectPublish, "no x-overflow argument: the policy's");
        assert_eq!(a.message_ttl, Some(std::time::Duration::from_secs(60)));
        ps.put(pol("p", ".*", 0, json!({"max-length": 50}), false), false);
        let a = queue_args(&declared, &args, &ps.for_queue("q", QueueType::Classic));
        assert_eq!(a.max_length, Some(5), "lower: the argument");
        assert_eq!(a.overflow, Overflow::DropHead);
        assert_eq!(a.message_ttl, None, "cleared with the policy");
    }
}
