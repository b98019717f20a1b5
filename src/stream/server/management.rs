//! Streams and super streams as the stream protocol manages them: Create and Delete (through
//! the vhost's own queue declare and delete, so AMQP 0-9-1, definitions and policies see the
//! same streams), Metadata, StreamStats, and super streams: a durable direct exchange with
//! `x-super-stream: true` whose partitions are streams bound with `x-stream-partition-order`
//! (Route, Partitions, CreateSuperStream, DeleteSuperStream), as `rabbit_stream_manager` does.

use std::collections::BTreeMap;

use amq_protocol::types::{AMQPValue, FieldTable};
use bytestring::ByteString;
use tracing::{debug, info, warn};

use super::connection::Conn;
use crate::auth::permissions::Access;
use crate::broker::vhost::{ExchangeDeclare, QueueDeclare};
use crate::error::{AmqpError, ReplyCode};
use crate::exchange::Destination;
use crate::stream::protocol::encode::{self, Broker, NO_LEADER, StreamMetadata};
use crate::stream::protocol::frame::{ClientFrame, Properties};
use crate::stream::protocol::{code, key};

/// The binding argument holding a partition's place in its super stream.
const PARTITION_ORDER: &str = "x-stream-partition-order";

/// Execute a management command.
pub(super) async fn command(c: &mut Conn, f: ClientFrame) {
    use ClientFrame as F;
    match f {
        F::Create { correlation_id, stream, arguments } => {
            let r = create(c, &stream, &arguments).await;
            encode::simple_response(c.out.buf(), key::CREATE, correlation_id, r);
        }
        F::Delete { correlation_id, stream } => {
            let r = delete(c, &stream).await;
            encode::simple_response(c.out.buf(), key::DELETE, correlation_id, r);
        }
        F::Metadata { correlation_id, streams } => metadata(c, correlation_id, &streams),
        F::StreamStats { correlation_id, stream } => {
            let stats = c.readable_stream(&stream).map(|s| s.stats());
            let (r, entries) = match stats {
                Ok(s) => {
                    let committed = s.committed_chunk_id.map_or(-1, |id| id as i64);
                    let first = if committed < 0 { -1 } else { s.first_offset as i64 };
                    (code::OK, vec![("first_chunk_id", first), ("committed_chunk_id", committed)])
                }
                Err(r) => (r, Vec::new()),
            };
            encode::stream_stats_response(c.out.buf(), correlation_id, r, &entries);
        }
        F::Route { correlation_id, routing_key, super_stream } => {
            let (r, streams) = match super_stream_exchange(c, &super_stream) {
                Some(_) => {
                    let t = c.session().vhost.snapshot();
                    let routed = t.route(&super_stream, &routing_key, None);
                    let names: Vec<String> =
                        routed.iter().filter(|q| q.stream.is_some()).map(|q| q.name.clone()).collect();
                    (code::OK, names)
                }
                None => (code::STREAM_DOES_NOT_EXIST, Vec::new()),
            };
            let names: Vec<&str> = streams.iter().map(String::as_str).collect();
            encode::route_response(c.out.buf(), correlation_id, r, &names);
        }
        F::Partitions { correlation_id, super_stream } => {
            let (r, streams) = match partitions(c, &super_stream) {
                Some(p) => (code::OK, p),
                None => (code::STREAM_DOES_NOT_EXIST, Vec::new()),
            };
            let names: Vec<&str> = streams.iter().map(String::as_str).collect();
            encode::partitions_response(c.out.buf(), correlation_id, r, &names);
        }
        F::CreateSuperStream { correlation_id, name, partitions, binding_keys, arguments } => {
            let r = create_super_stream(c, &name, &partitions, &binding_keys, &arguments).await;
            encode::simple_response(c.out.buf(), key::CREATE_SUPER_STREAM, correlation_id, r);
        }
        F::DeleteSuperStream { correlation_id, name } => {
            let r = delete_super_stream(c, &name).await;
            encode::simple_response(c.out.buf(), key::DELETE_SUPER_STREAM, correlation_id, r);
        }
        // The state machine answers the handshake, heartbeats, Close and ExchangeCommandVersions
        // itself; the rest are the connection's own commands.
        _ => {}
    }
}

/// RabbitMQ's `enforce_correct_name`: CR and LF removed; empty and `amq.*` refused.
fn correct_name(name: &str) -> Option<String> {
    let n: String = name.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    (!n.is_empty() && !n.starts_with("amq.")).then_some(n)
}

/// Create's string arguments as the AMQP queue arguments of a stream
/// (`rabbit_stream_manager:stream_queue_arguments` and its validation); unknown keys are
/// ignored. A refusal is 0x11 (RabbitMQ's listener crashes on a non-integer instead).
pub(super) fn stream_arguments<'a>(
    arguments: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<FieldTable, String> {
    let mut t = BTreeMap::new();
    t.insert("x-queue-type".into(), AMQPValue::LongString("stream".into()));
    let int = |k: &str, v: &str| v.parse::<i64>().map_err(|_| format!("{k} = {v:?} is not an integer"));
    for (k, v) in arguments {
        let (name, value) = match k {
            "max-length-bytes" => ("x-max-length-bytes", AMQPValue::LongLongInt(int(k, v)?)),
            "max-age" => ("x-max-age", AMQPValue::LongString(v.into())),
            "stream-max-segment-size-bytes" => ("x-stream-max-segment-size-bytes", AMQPValue::LongLongInt(int(k, v)?)),
            "initial-cluster-size" => match int(k, v)? {
                n if n <= 0 => return Err(format!("initial-cluster-size = {n} must be at least 1")),
                n => ("x-initial-cluster-size", AMQPValue::LongLongInt(n)),
            },
            "queue-leader-locator" => match v {
                "client-local" | "balanced" | "random" | "least-leaders" => {
                    ("x-queue-leader-locator", AMQPValue::LongString(v.into()))
                }
                _ => return Err(format!("queue-leader-locator = {v:?} is not a locator")),
            },
            "stream-filter-size-bytes" => match int(k, v)? {
                n @ 16..=255 => ("x-stream-filter-size-bytes", AMQPValue::LongLongInt(n)),
                n => return Err(format!("stream-filter-size-bytes = {n} is not within 16..255")),
            },
            _ => continue,
        };
        t.insert(name.into(), value);
    }
    Ok(t.into())
}

/// The response code for a refused declare or delete.
fn refusal(e: &AmqpError) -> u16 {
    match e.code {
        ReplyCode::PreconditionFailed | ReplyCode::ResourceLocked | ReplyCode::NotAllowed => code::PRECONDITION_FAILED,
        ReplyCode::AccessRefused => code::ACCESS_REFUSED,
        ReplyCode::NotFound => code::STREAM_DOES_NOT_EXIST,
        _ => code::INTERNAL_ERROR,
    }
}

/// Declare a stream through the vhost: 0x05 when it exists with the same arguments, 0x11 when
/// they differ or are refused.
fn declare_stream(c: &Conn, name: &str, arguments: FieldTable) -> u16 {
    let d = QueueDeclare { name: name.to_string(), durable: true, arguments, ..QueueDeclare::default() };
    match c.session().vhost.declare_queue(&d, c.id) {
        Ok((_, true)) => code::OK,
        Ok((_, false)) => code::STREAM_ALREADY_EXISTS,
        Err(e) => {
            info!(stream = name, error = %e.text, "stream not created");
            refusal(&e)
        }
    }
}

async fn create(c: &mut Conn, stream: &str, arguments: &Properties) -> u16 {
    let Some(name) = correct_name(stream) else { return code::PRECONDITION_FAILED };
    if !c.permitted(Access::Configure, "queue", &name) {
        return code::ACCESS_REFUSED;
    }
    let args = match stream_arguments(arguments.iter().map(|(k, v)| (&**k, &**v))) {
        Ok(a) => a,
        Err(why) => {
            info!(stream = %name, reason = %why, "stream not created");
            return code::PRECONDITION_FAILED;
        }
    };
    let r = declare_stream(c, &name, args);
    sync_definitions(c).await;
    if r == code::OK {
        debug!(stream = %name, "stream created");
    }
    r
}

/// Wait until the topology change is in the definitions journal on disk.
async fn sync_definitions(c: &Conn) {
    let v = &c.session().vhost;
    v.sync_definitions(v.definitions_written()).await;
}

/// Delete a stream through the vhost (0x02 if there is no stream of that name).
async fn delete_stream(c: &Conn, name: &str) -> u16 {
    let vhost = c.session().vhost.clone();
    match vhost.queue(name, c.id) {
        Ok(q) if q.stream.is_some() => {}
        _ => return code::STREAM_DOES_NOT_EXIST,
    }
    match vhost.delete_queue(name, false, false, c.id).await {
        Ok(_) => code::OK,
        Err(e) => refusal(&e),
    }
}

async fn delete(c: &mut Conn, stream: &str) -> u16 {
    if !c.permitted(Access::Configure, "queue", stream) {
        return code::ACCESS_REFUSED;
    }
    let r = delete_stream(c, stream).await;
    sync_definitions(c).await;
    if r == code::OK {
        debug!(stream, "stream deleted");
    }
    r
}

/// Metadata: the one broker (when any stream asked for exists) and each stream's entry.
fn metadata(c: &mut Conn, correlation_id: u32, streams: &[ByteString]) {
    let found: Vec<bool> = streams.iter().map(|s| c.stream(s).is_ok()).collect();
    let entries: Vec<StreamMetadata> = streams
        .iter()
        .zip(&found)
        .map(|(s, ok)| match ok {
            true => StreamMetadata { name: s, code: code::OK, leader: 0, replicas: &[] },
            false => StreamMetadata { name: s, code: code::STREAM_DOES_NOT_EXIST, leader: NO_LEADER, replicas: &[] },
        })
        .collect();
    let host = c.server.advertised_host.clone();
    let broker = Broker { reference: 0, host: &host, port: c.advertised_port() as u32 };
    let brokers: &[Broker] = if found.contains(&true) { &[broker] } else { &[] };
    encode::metadata_response(c.out.buf(), correlation_id, brokers, &entries);
}

/// The exchange of a super stream, if it exists.
fn super_stream_exchange(c: &Conn, name: &str) -> Option<std::sync::Arc<crate::exchange::Exchange>> {
    c.session().vhost.snapshot().exchanges.get(name).cloned()
}

/// The order argument of a binding, as an integer.
fn order_of(args: &FieldTable) -> Option<i64> {
    args.inner().get(PARTITION_ORDER).and_then(crate::protocol::methods::value_int)
}

/// A super stream's partitions: the streams its exchange is bound to, by their order argument
/// (bindings without one last), as `rabbit_stream_utils:sort_partitions`. None when there is
/// no such exchange.
fn partitions(c: &Conn, super_stream: &str) -> Option<Vec<String>> {
    let x = super_stream_exchange(c, super_stream)?;
    let t = c.session().vhost.snapshot();
    let mut bound: Vec<(Option<i64>, String)> = x
        .bindings()
        .filter_map(|(d, _, args)| match d {
            Destination::Queue(q) if t.queues.get(q).is_some_and(|e| e.stream.is_some()) => {
                Some((order_of(args), q.clone()))
            }
            _ => None,
        })
        .collect();
    bound.sort_by_key(|(o, _)| (o.is_none(), o.unwrap_or(0)));
    let mut names: Vec<String> = Vec::with_capacity(bound.len());
    for (_, n) in bound {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    Some(names)
}

/// A stream's index among the partitions of `super_stream` (for single active consumers):
/// its binding's order argument, else the number after its last `-`; -1 when it is not a
/// partition (`rabbit_stream_manager:partition_index`).
pub(super) fn partition_index(c: &Conn, super_stream: Option<&str>, stream: &str) -> i64 {
    let Some(x) = super_stream.and_then(|s| super_stream_exchange(c, s)) else { return -1 };
    let mut bindings = x.bindings().filter(|(d, _, _)| matches!(d, Destination::Queue(q) if q == stream));
    let Some((_, _, args)) = bindings.next() else { return -1 };
    if let Some(o) = order_of(args) {
        return o;
    }
    stream.rsplit_once('-').and_then(|(_, n)| n.parse().ok()).unwrap_or(-1)
}

/// The permissions super stream management needs (`check_super_stream_management_permitted`):
/// configure on the exchange and every partition, read on the exchange, write on every
/// partition.
fn super_stream_permitted(c: &mut Conn, name: &str, partitions: &[String]) -> bool {
    c.permitted(Access::Configure, "exchange", name)
        && partitions.iter().all(|p| c.permitted(Access::Configure, "queue", p))
        && c.permitted(Access::Read, "exchange", name)
        && partitions.iter().all(|p| c.permitted(Access::Write, "queue", p))
}

async fn create_super_stream(
    c: &mut Conn,
    name: &str,
    partitions: &[ByteString],
    binding_keys: &[ByteString],
    arguments: &Properties,
) -> u16 {
    let Some(name) = correct_name(name) else { return code::PRECONDITION_FAILED };
    let parts: Vec<String> = partitions.iter().map(|p| p.to_string()).collect();
    if !super_stream_permitted(c, &name, &parts) {
        return code::ACCESS_REFUSED;
    }
    let r = build_super_stream(c, &name, &parts, binding_keys, arguments).await;
    sync_definitions(c).await;
    if r == code::OK {
        debug!(super_stream = %name, partitions = parts.len(), "super stream created");
    }
    r
}

/// Validate, then declare the exchange, the partitions and the bindings; on a failure undo
/// what was made (as `rabbit_stream_manager` rolls back).
async fn build_super_stream(
    c: &mut Conn,
    name: &str,
    parts: &[String],
    binding_keys: &[ByteString],
    arguments: &Properties,
) -> u16 {
    if parts.len() != binding_keys.len() {
        info!(super_stream = name, "super stream refused: partitions and binding keys differ in number");
        return code::PRECONDITION_FAILED;
    }
    let mut seen = std::collections::HashSet::new();
    if parts.iter().any(|p| correct_name(p).as_deref() != Some(p.as_str()) || !seen.insert(p)) {
        info!(super_stream = name, "super stream refused: a partition name is invalid or repeated");
        return code::PRECONDITION_FAILED;
    }
    let vhost = c.session().vhost.clone();
    if let Some(max) = vhost.limits().max_queues
        && vhost.snapshot().queues.len() as u64 + parts.len() as u64 > max
    {
        info!(super_stream = name, "super stream refused: the vhost's queue limit would be exceeded");
        return code::PRECONDITION_FAILED;
    }
    let t = vhost.snapshot();
    if t.exchanges.get(name).is_some() || parts.iter().any(|p| t.queues.get(p).is_some()) {
        return code::STREAM_ALREADY_EXISTS;
    }
    // Partitions are placed "balanced" unless the arguments say otherwise.
    let mut args: Vec<(&str, &str)> = arguments.iter().map(|(k, v)| (&**k, &**v)).collect();
    if !args.iter().any(|(k, _)| *k == "queue-leader-locator") {
        args.push(("queue-leader-locator", "balanced"));
    }
    let stream_args = match stream_arguments(args) {
        Ok(a) => a,
        Err(why) => {
            info!(super_stream = name, reason = %why, "super stream refused");
            return code::PRECONDITION_FAILED;
        }
    };
    let mut x_args = BTreeMap::new();
    x_args.insert("x-super-stream".into(), AMQPValue::Boolean(true));
    let x = ExchangeDeclare {
        name: name.to_string(),
        kind: "direct".into(),
        durable: true,
        arguments: x_args.into(),
        ..ExchangeDeclare::default()
    };
    if let Err(e) = vhost.declare_exchange(&x) {
        info!(super_stream = name, error = %e.text, "super stream exchange not declared");
        return refusal(&e);
    }
    let mut made: Vec<&str> = Vec::new();
    let mut failed = None;
    for (order, (p, k)) in parts.iter().zip(binding_keys).enumerate() {
        let r = declare_stream(c, p, stream_args.clone());
        if r != code::OK {
            failed = Some(r);
            break;
        }
        made.push(p);
        let mut b = BTreeMap::new();
        b.insert(PARTITION_ORDER.into(), AMQPValue::LongLongInt(order as i64));
        if let Err(e) = vhost.bind_queue(p, name, k, &b.into(), c.id) {
            warn!(super_stream = name, partition = %p, error = %e.text, "cannot bind a partition");
            failed = Some(code::INTERNAL_ERROR);
            break;
        }
    }
    let Some(r) = failed else { return code::OK };
    // Undo: the streams made and the exchange.
    for p in made {
        let _ = vhost.delete_queue(p, false, false, c.id).await;
    }
    let _ = vhost.delete_exchange(name, false);
    r
}

async fn delete_super_stream(c: &mut Conn, name: &str) -> u16 {
    let parts = partitions(c, name).unwrap_or_default();
    if !super_stream_permitted(c, name, &parts) {
        return code::ACCESS_REFUSED;
    }
    if super_stream_exchange(c, name).is_none() {
        return code::STREAM_DOES_NOT_EXIST;
    }
    let vhost = c.session().vhost.clone();
    if let Err(e) = vhost.delete_exchange(name, false) {
        warn!(super_stream = name, error = %e.text, "cannot delete the super stream exchange");
    }
    for p in &parts {
        if delete_stream(c, p).await != code::OK {
            warn!(super_stream = name, partition = %p, "cannot delete a partition");
        }
    }
    sync_definitions(c).await;
    debug!(super_stream = name, partitions = parts.len(), "super stream deleted");
    code::OK
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(kv: &[(&str, &str)]) -> Result<FieldTable, String> {
        stream_arguments(kv.iter().copied())
    }

    #[test]
    fn create_arguments_become_the_amqp_ones() {
        let t = args(&[
            ("max-length-bytes", "1000"),
            ("max-age", "1h"),
            ("stream-max-segment-size-bytes", "500"),
            ("initial-cluster-size", "3"),
            ("queue-leader-locator", "client-local"),
            ("stream-filter-size-bytes", "32"),
            ("x-foo", "ignored"),
        ])
        .unwrap();
        let t = t.inner();
        assert_eq!(t.get("x-queue-type"), Some(&AMQPValue::LongString("stream".into())));
        assert_eq!(t.get("x-max-length-bytes"), Some(&AMQPValue::LongLongInt(1000)));
        assert_eq!(t.get("x-max-age"), Some(&AMQPValue::LongString("1h".into())));
        assert_eq!(t.get("x-stream-max-segment-size-bytes"), Some(&AMQPValue::LongLongInt(500)));
        assert_eq!(t.get("x-initial-cluster-size"), Some(&AMQPValue::LongLongInt(3)));
        assert_eq!(t.get("x-stream-filter-size-bytes"), Some(&AMQPValue::LongLongInt(32)));
        assert_eq!(t.len(), 7, "x-foo is not passed on");
    }

    #[test]
    fn create_arguments_refused_as_rabbitmq_validates_them() {
        for bad in [
            ("initial-cluster-size", "0"),
            ("initial-cluster-size", "-1"),
            ("queue-leader-locator", "nope"),
            ("stream-filter-size-bytes", "15"),
            ("stream-filter-size-bytes", "256"),
            ("max-length-bytes", "abc"),
            ("stream-max-segment-size-bytes", "1.5"),
        ] {
            assert!(args(&[bad]).is_err(), "{bad:?}");
        }
        assert!(args(&[("queue-leader-locator", "least-leaders")]).is_ok());
    }

    #[test]
    fn names_as_enforce_correct_name() {
        assert_eq!(correct_name("a\r\nb").as_deref(), Some("ab"));
        assert_eq!(correct_name(""), None);
        assert_eq!(correct_name("\n"), None);
        assert_eq!(correct_name("amq.s"), None);
        assert_eq!(correct_name("s.amq").as_deref(), Some("s.amq"));
    }
}
