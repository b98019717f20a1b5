//! Dead-lettering: the `x-death` bookkeeping RabbitMQ adds when a message leaves a queue by
//! rejection, expiry, overflow or a delivery limit, and the cycle rule that stops a message
//! from dead-lettering around a loop forever.
//!
//! Delivery to the target queues: a queue task never waits on another queue's mailbox (two
//! queues dead-lettering into each other would deadlock), so a dead letter whose target mailbox
//! is full goes to the source queue's [`Forwarder`]: one FIFO outbox and at most one task that
//! waits for room and hands the messages over, in order, batched per target. The outbox is
//! bounded ([`OUTBOX_MAX_MESSAGES`], [`OUTBOX_MAX_BYTES`]); past that, dead letters are dropped
//! with a warning — dead-lettering is at-most-once, as RabbitMQ's default for classic queues.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use amq_protocol::types::{AMQPValue, FieldArray, FieldTable};
use tokio::sync::mpsc;
use tracing::warn;

use crate::message::Message;
use crate::protocol::BasicProperties;
use crate::protocol::methods::{longstr, value_str};
use crate::queue::{Publish, QueueCmd, QueueHandle};

/// Dead letters one source queue may have waiting for full target mailboxes.
pub const OUTBOX_MAX_MESSAGES: usize = 100_000;
/// The same bound in body bytes.
pub const OUTBOX_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Messages handed to one target in one mailbox command.
const FORWARD_BATCH: usize = 256;

/// A source queue's dead letters waiting for room in their targets' mailboxes.
#[derive(Debug, Default)]
pub struct Forwarder {
    outbox: Arc<Mutex<Outbox>>,
}

#[derive(Debug, Default)]
struct Outbox {
    items: VecDeque<(QueueHandle, Arc<Message>)>,
    bytes: u64,
    /// A task is draining the outbox.
    running: bool,
    /// Dropped because the outbox was full (reported once per episode).
    dropped: u64,
}

impl Forwarder {
    /// Hand `msg` to `target` without waiting: straight into its mailbox when it has room and
    /// nothing is waiting before it, else into the outbox.
    pub fn send(&self, target: &QueueHandle, msg: Arc<Message>) {
        let mut o = self.outbox.lock().unwrap_or_else(|p| p.into_inner());
        if o.items.is_empty() {
            let cmd = QueueCmd::Publish(vec![Publish { msg, confirm: None }]);
            match target.tx.try_send(cmd) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => return,
                Err(mpsc::error::TrySendError::Full(QueueCmd::Publish(mut v))) => {
                    let Some(p) = v.pop() else { return };
                    return self.hold(&mut o, target, p.msg);
                }
                Err(mpsc::error::TrySendError::Full(_)) => return,
            }
        }
        self.hold(&mut o, target, msg);
    }

    /// Dead letters waiting in the outbox.
    pub fn waiting(&self) -> usize {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner()).items.len()
    }

    fn hold(&self, o: &mut Outbox, target: &QueueHandle, msg: Arc<Message>) {
        if o.items.len() >= OUTBOX_MAX_MESSAGES || o.bytes + msg.body_size > OUTBOX_MAX_BYTES {
            if o.dropped == 0 {
                warn!(target = %target.name, "dead-letter target queue is not keeping up; dead letters dropped");
            }
            o.dropped += 1;
            return;
        }
        o.bytes += msg.body_size;
        o.items.push_back((target.clone(), msg));
        if !o.running {
            o.running = true;
            tokio::spawn(drain(self.outbox.clone()));
        }
    }
}

/// The forwarding task: waits for room in each target's mailbox, in outbox order; ends when
/// the outbox is empty.
async fn drain(outbox: Arc<Mutex<Outbox>>) {
    loop {
        let (target, batch) = {
            let mut o = outbox.lock().unwrap_or_else(|p| p.into_inner());
            let Some((target, first)) = o.items.pop_front() else {
                o.running = false;
                o.dropped = 0;
                return;
            };
            let mut bytes = first.body_size;
            let mut batch = vec![Publish { msg: first, confirm: None }];
            while batch.len() < FORWARD_BATCH {
                match o.items.front() {
                    Some((t, _)) if t.tx.same_channel(&target.tx) => {
                        let (_, m) = o.items.pop_front().expect("front exists");
                        bytes += m.body_size;
                        batch.push(Publish { msg: m, confirm: None });
                    }
                    _ => break,
                }
            }
            o.bytes -= bytes;
            (target, batch)
        };
        // A deleted target's closed mailbox drops the batch, as a direct send would.
        let _ = target.tx.send(QueueCmd::Publish(batch)).await;
    }
}

/// Why a message was dead-lettered (the `reason` field of `x-death`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeathReason {
    Rejected,
    Expired,
    Maxlen,
    DeliveryLimit,
}

impl DeathReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeathReason::Rejected => "rejected",
            DeathReason::Expired => "expired",
            DeathReason::Maxlen => "maxlen",
            DeathReason::DeliveryLimit => "delivery_limit",
        }
    }
}

/// The routing keys a message was published with: its routing key plus any `CC` keys.
pub fn routing_keys(msg: &Message) -> Vec<String> {
    let mut keys = vec![msg.routing_key.to_string()];
    if let Some(AMQPValue::FieldArray(cc)) = msg.headers().and_then(|h| h.inner().get("CC")) {
        keys.extend(cc.as_slice().iter().filter_map(value_str));
    }
    keys
}

/// Build the dead-lettered copy of `msg` leaving `queue` for `reason`, to be published to
/// `dlx` with `routing_key` (None = the original keys). Returns the message and the keys to
/// route it with.
pub fn dead_letter(
    msg: &Message,
    reason: DeathReason,
    queue: &str,
    dlx: &str,
    routing_key: Option<&str>,
) -> (Arc<Message>, Vec<String>) {
    let original_keys = routing_keys(msg);
    let mut props = msg.properties().clone();
    let mut headers = props.headers().clone().unwrap_or_default();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);

    let mut deaths: Vec<AMQPValue> = match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(a)) => a.as_slice().to_vec(),
        _ => Vec::new(),
    };
    let same = |v: &AMQPValue| match v {
        AMQPValue::FieldTable(t) => {
            t.inner().get("queue").and_then(value_str).as_deref() == Some(queue)
                && t.inner().get("reason").and_then(value_str).as_deref() == Some(reason.as_str())
        }
        _ => false,
    };
    let entry = match deaths.iter().position(same) {
        Some(i) => {
            let AMQPValue::FieldTable(mut t) = deaths.remove(i) else { unreachable!("matched a table") };
            let count = t.inner().get("count").and_then(crate::protocol::methods::value_int).unwrap_or(0);
            // The count may come from the client (any integer): it saturates, never wraps.
            t.insert("count".into(), AMQPValue::LongLongInt(count.saturating_add(1)));
            t
        }
        None => {
            let mut t = FieldTable::default();
            t.insert("count".into(), AMQPValue::LongLongInt(1));
            t.insert("reason".into(), longstr(reason.as_str()));
            t.insert("queue".into(), longstr(queue));
            t.insert("time".into(), AMQPValue::Timestamp(now));
            t.insert("exchange".into(), longstr(&msg.exchange));
            // The published key as it came (any bytes), then the CC keys.
            let published = AMQPValue::LongString(msg.routing_key.as_wire().to_vec().into());
            let keys: Vec<AMQPValue> =
                std::iter::once(published).chain(original_keys[1..].iter().map(|k| longstr(k))).collect();
            t.insert("routing-keys".into(), AMQPValue::FieldArray(FieldArray::from(keys)));
            if let Some(exp) = props.expiration() {
                t.insert("original-expiration".into(), longstr(exp.as_str()));
            }
            t
        }
    };
    deaths.insert(0, AMQPValue::FieldTable(entry));
    headers.insert("x-death".into(), AMQPValue::FieldArray(FieldArray::from(deaths)));
    for (k, v) in [("queue", queue), ("reason", reason.as_str()), ("exchange", &*msg.exchange)] {
        let first = format!("x-first-death-{k}");
        if !headers.contains_key(&first) {
            headers.insert(first.as_str().into(), longstr(v));
        }
        headers.insert(format!("x-last-death-{k}").as_str().into(), longstr(v));
    }
    if routing_key.is_some() {
        // With an explicit dead-letter routing key, CC no longer describes the routing.
        let mut t = FieldTable::default();
        for (k, v) in headers.inner() {
            if k.as_str() != "CC" {
                t.insert(k.clone(), v.clone());
            }
        }
        headers = t;
    }
    props = without_expiration(props).with_headers(headers);
    let keys = match routing_key {
        Some(k) => vec![k.to_string()],
        None => original_keys,
    };
    let mut out = msg.with_properties(props);
    out.exchange = dlx.into();
    if let Some(k) = routing_key {
        out.routing_key = k.into();
    }
    (Arc::new(out), keys)
}

/// The properties without `expiration` (dead-lettered copies never expire again by it).
fn without_expiration(p: BasicProperties) -> BasicProperties {
    if p.expiration().is_none() {
        return p;
    }
    let mut q = BasicProperties::default();
    if let Some(v) = p.content_type() {
        q = q.with_content_type(v.clone());
    }
    if let Some(v) = p.content_encoding() {
        q = q.with_content_encoding(v.clone());
    }
    if let Some(v) = p.headers() {
        q = q.with_headers(v.clone());
    }
    if let Some(v) = p.delivery_mode() {
        q = q.with_delivery_mode(*v);
    }
    if let Some(v) = p.priority() {
        q = q.with_priority(*v);
    }
    if let Some(v) = p.correlation_id() {
        q = q.with_correlation_id(v.clone());
    }
    if let Some(v) = p.reply_to() {
        q = q.with_reply_to(v.clone());
    }
    if let Some(v) = p.message_id() {
        q = q.with_message_id(v.clone());
    }
    if let Some(v) = p.timestamp() {
        q = q.with_timestamp(*v);
    }
    if let Some(v) = p.kind() {
        q = q.with_type(v.clone());
    }
    if let Some(v) = p.user_id() {
        q = q.with_user_id(v.clone());
    }
    if let Some(v) = p.app_id() {
        q = q.with_app_id(v.clone());
    }
    if let Some(v) = p.cluster_id() {
        q = q.with_cluster_id(v.clone());
    }
    q
}

/// RabbitMQ's cycle rule: dead-lettering into `target` is a cycle (and the message is dropped
/// for that queue) if, reading `x-death` newest first, `target` appears before any rejection.
pub fn is_cycle(msg: &Message, target: &str) -> bool {
    let Some(AMQPValue::FieldArray(deaths)) = msg.headers().and_then(|h| h.inner().get("x-death")) else {
        return false;
    };
    for d in deaths.as_slice() {
        let AMQPValue::FieldTable(t) = d else { continue };
        if t.inner().get("reason").and_then(value_str).as_deref() == Some("rejected") {
            return false;
        }
        if t.inner().get("queue").and_then(value_str).as_deref() == Some(target) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn msg(expiration: Option<&str>, cc: bool) -> Message {
        let mut props = BasicProperties::default();
        if let Some(e) = expiration {
            props = props.with_expiration(e.into());
        }
        if cc {
            let mut h = FieldTable::default();
            h.insert("CC".into(), AMQPValue::FieldArray(FieldArray::from(vec![longstr("cc1")])));
            props = props.with_headers(h);
        }
        Message::build("ex".into(), "rk".into(), props, [Bytes::from_static(b"abc")].into_iter().collect())
    }

    fn deaths(m: &Message) -> Vec<FieldTable> {
        match m.headers().unwrap().inner().get("x-death") {
            Some(AMQPValue::FieldArray(a)) => a
                .as_slice()
                .iter()
                .map(|v| match v {
                    AMQPValue::FieldTable(t) => t.clone(),
                    _ => panic!(),
                })
                .collect(),
            _ => panic!("no x-death"),
        }
    }

    #[test]
    fn first_death_records_everything_and_moves_expiration() {
        let (d, keys) = dead_letter(&msg(Some("5000"), true), DeathReason::Expired, "q1", "dlx", None);
        assert_eq!(keys, ["rk", "cc1"]);
        assert_eq!(d.exchange, "dlx");
        assert!(d.properties().expiration().is_none());
        let x = deaths(&d);
        assert_eq!(x.len(), 1);
        let t = x[0].inner();
        assert_eq!(t.get("count"), Some(&AMQPValue::LongLongInt(1)));
        assert_eq!(t.get("reason").and_then(value_str).as_deref(), Some("expired"));
        assert_eq!(t.get("queue").and_then(value_str).as_deref(), Some("q1"));
        assert_eq!(t.get("exchange").and_then(value_str).as_deref(), Some("ex"));
        assert_eq!(t.get("original-expiration").and_then(value_str).as_deref(), Some("5000"));
        assert!(matches!(t.get("time"), Some(AMQPValue::Timestamp(_))));
        let h = d.properties().headers().clone().unwrap();
        assert_eq!(h.inner().get("x-first-death-queue").and_then(value_str).as_deref(), Some("q1"));
        // The raw header forwarded to consumers is the re-encoded one.
        let parsed = amq_protocol::frame::parsing::parse_content_header(&d.raw_header[..]).unwrap().1;
        assert_eq!(&parsed.properties, d.properties());
    }

    #[test]
    fn repeat_death_counts_and_moves_to_front_and_cycles_are_detected() {
        let (d1, _) = dead_letter(&msg(None, false), DeathReason::Rejected, "a", "dlx", Some("k"));
        let (d2, _) = dead_letter(&d1, DeathReason::Expired, "b", "dlx", None);
        let (d3, _) = dead_letter(&d2, DeathReason::Rejected, "a", "dlx", None);
        let x = deaths(&d3);
        assert_eq!(x.len(), 2);
        assert_eq!(x[0].inner().get("queue").and_then(value_str).as_deref(), Some("a"));
        assert_eq!(x[0].inner().get("count"), Some(&AMQPValue::LongLongInt(2)));
        // Expired from b, newest first: b appears before any rejection → cycle into b.
        assert!(is_cycle(&d2, "b"));
        // ... but a rejection happened before a: not a cycle into a.
        assert!(!is_cycle(&d2, "a"));
        assert!(!is_cycle(&msg(None, false), "a"));
    }

    #[tokio::test]
    async fn a_full_target_mailbox_holds_dead_letters_in_order_without_a_task_each() {
        let (tx, mut rx) = mpsc::channel(1);
        let (ctl, _ctl_rx) = mpsc::unbounded_channel();
        let target =
            QueueHandle { name: "t".into(), tx, ctl, admission: Default::default(), activity: Default::default() };
        let f = Forwarder::default();
        let n = 5000;
        for i in 0..n {
            let m = Message::build(
                "".into(),
                format!("{i}").as_str().into(),
                BasicProperties::default(),
                [Bytes::from_static(b"x")].into_iter().collect(),
            );
            f.send(&target, Arc::new(m));
        }
        // One went straight into the mailbox; the rest wait in one outbox, in order.
        assert!(f.waiting() >= n - 2, "waiting: {}", f.waiting());
        let mut got = Vec::new();
        while got.len() < n {
            let Some(QueueCmd::Publish(batch)) = rx.recv().await else { panic!("mailbox closed") };
            assert!(batch.len() <= FORWARD_BATCH);
            got.extend(batch.into_iter().map(|p| p.msg.routing_key.to_string()));
        }
        let expected: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        assert_eq!(got, expected, "every dead letter arrives, in order");
        assert_eq!(f.waiting(), 0);
    }

    #[tokio::test]
    async fn the_outbox_is_bounded() {
        let (tx, _rx) = mpsc::channel(1);
        let (ctl, _ctl_rx) = mpsc::unbounded_channel();
        let target =
            QueueHandle { name: "t".into(), tx, ctl, admission: Default::default(), activity: Default::default() };
        let f = Forwarder::default();
        let body = Bytes::from(vec![0u8; 1024 * 1024]);
        for _ in 0..(OUTBOX_MAX_BYTES / body.len() as u64 + 10) {
            let m =
                Message::build("".into(), "k".into(), BasicProperties::default(), [body.clone()].into_iter().collect());
            f.send(&target, Arc::new(m));
        }
        let o = f.outbox.lock().unwrap();
        assert!(o.bytes <= OUTBOX_MAX_BYTES, "{} bytes held", o.bytes);
        assert!(o.dropped > 0);
    }

    #[test]
    fn a_client_supplied_count_at_the_maximum_saturates() {
        let mut death = FieldTable::default();
        death.insert("count".into(), AMQPValue::LongLongInt(i64::MAX));
        death.insert("queue".into(), longstr("q"));
        death.insert("reason".into(), longstr("rejected"));
        let mut h = FieldTable::default();
        h.insert("x-death".into(), AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])));
        let m = Message::build(
            "ex".into(),
            "rk".into(),
            BasicProperties::default().with_headers(h),
            [Bytes::from_static(b"abc")].into_iter().collect(),
        );
        let (d, _) = dead_letter(&m, DeathReason::Rejected, "q", "dlx", None);
        assert_eq!(deaths(&d)[0].inner().get("count"), Some(&AMQPValue::LongLongInt(i64::MAX)));
    }
}
