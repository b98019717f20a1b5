//! `POST /api/exchanges/{vhost}/{name}/publish` and `POST /api/queues/{vhost}/{name}/get`
//! (what rabbitmqadmin's `publish` and `get` use), with RabbitMQ's bodies: properties as JSON,
//! payloads as a string or base64, `{"routed": …}` after a publish, and the get's ack modes.

use std::sync::Arc;

use amq_protocol::protocol::BasicProperties;
use axum::Json;
use axum::extract::{Path, State};
use base64::Engine;
use serde_json::{Map, Value, json};
use tokio::sync::oneshot;

use super::{ApiError, ApiResult, Caller};
use crate::auth::permissions::Access;
use crate::broker::Broker;
use crate::definitions::{json_to_table, table_to_json};
use crate::queue::{Outcome, Publish, QueueCmd};

type B = State<Arc<Broker>>;

/// Message properties from the API's JSON.
fn properties(p: &Map<String, Value>) -> BasicProperties {
    let s = |k: &str| p.get(k).and_then(Value::as_str).map(|v| v.into());
    let n = |k: &str| p.get(k).and_then(Value::as_u64);
    let mut props = BasicProperties::default();
    if let Some(v) = s("content_type") {
        props = props.with_content_type(v);
    }
    if let Some(v) = s("content_encoding") {
        props = props.with_content_encoding(v);
    }
    if let Some(h) = p.get("headers").and_then(Value::as_object) {
        props = props.with_headers(json_to_table(h));
    }
    if let Some(v) = n("delivery_mode") {
        props = props.with_delivery_mode(v.min(255) as u8);
    }
    if let Some(v) = n("priority") {
        props = props.with_priority(v.min(255) as u8);
    }
    for (key, set) in [
        ("correlation_id", BasicProperties::with_correlation_id as fn(BasicProperties, _) -> BasicProperties),
        ("reply_to", BasicProperties::with_reply_to),
        ("expiration", BasicProperties::with_expiration),
        ("message_id", BasicProperties::with_message_id),
        ("type", BasicProperties::with_type),
        ("user_id", BasicProperties::with_user_id),
        ("app_id", BasicProperties::with_app_id),
    ] {
        if let Some(v) = s(key) {
            props = set(props, v);
        }
    }
    if let Some(v) = n("timestamp") {
        props = props.with_timestamp(v);
    }
    props
}

/// The API's JSON of message properties (only those present, as RabbitMQ).
fn properties_json(p: &BasicProperties) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            m.insert(k.into(), v);
        }
    };
    put("content_type", p.content_type().as_ref().map(|v| v.as_str().into()));
    put("content_encoding", p.content_encoding().as_ref().map(|v| v.as_str().into()));
    put("headers", p.headers().as_ref().map(table_to_json));
    put("delivery_mode", p.delivery_mode().map(Value::from));
    put("priority", p.priority().map(Value::from));
    put("correlation_id", p.correlation_id().as_ref().map(|v| v.as_str().into()));
    put("reply_to", p.reply_to().as_ref().map(|v| v.as_str().into()));
    put("expiration", p.expiration().as_ref().map(|v| v.as_str().into()));
    put("message_id", p.message_id().as_ref().map(|v| v.as_str().into()));
    put("timestamp", p.timestamp().map(Value::from));
    put("type", p.kind().as_ref().map(|v| v.as_str().into()));
    put("user_id", p.user_id().as_ref().map(|v| v.as_str().into()));
    put("app_id", p.app_id().as_ref().map(|v| v.as_str().into()));
    Value::Object(m)
}

pub async fn publish(
    State(b): B,
    c: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> ApiResult<Json<Value>> {
    let v = b.vhost(&vhost).ok_or_else(ApiError::not_found)?;
    let exchange = if name == "amq.default" { String::new() } else { name };
    super::objects::permitted(&b, &c, &vhost, Access::Write, "exchange", &exchange)?;
    let t = v.snapshot();
    if !exchange.is_empty() && t.exchanges.get(&exchange).is_none() {
        return Err(ApiError::not_found());
    }
    let key = body.get("routing_key").and_then(Value::as_str).unwrap_or_default().to_string();
    let payload =
        body.get("payload").and_then(Value::as_str).ok_or_else(|| ApiError::bad_request("payload not found"))?;
    let bytes = match body.get("payload_encoding").and_then(Value::as_str).unwrap_or("string") {
        "string" => payload.as_bytes().to_vec(),
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(payload)
            .map_err(|e| ApiError::bad_request(format!("payload is not base64: {e}")))?,
        other => return Err(ApiError::bad_request(format!("unknown payload_encoding '{other}' (string or base64)"))),
    };
    if bytes.len() as u64 > b.config.amqp.max_message_size {
        return Err(ApiError::bad_request("payload larger than amqp.max_message_size"));
    }
    let props = properties(body.get("properties").and_then(Value::as_object).unwrap_or(&Map::new()));
    let headers = props.headers().clone();
    let body: crate::message::Body = smallvec::smallvec![bytes::Bytes::from(bytes)];
    let msg = Arc::new(crate::message::Message::build(exchange.as_str().into(), key.as_str().into(), props, body));
    let queues = t.route(&exchange, &key, headers.as_ref());
    for q in &queues {
        q.handle.send(QueueCmd::Publish(vec![Publish { msg: msg.clone(), confirm: None }])).await;
    }
    Ok(Json(json!({"routed": !queues.is_empty()})))
}

/// A number of the request: JSON or a string of digits (rabbitmqadmin sends `"count": "1"`).
fn number(body: &Value, key: &str) -> Option<u64> {
    let v = body.get(key)?;
    v.as_u64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

pub async fn get(
    State(b): B,
    c: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> ApiResult<Json<Value>> {
    let v = b.vhost(&vhost).ok_or_else(ApiError::not_found)?;
    super::objects::permitted(&b, &c, &vhost, Access::Read, "queue", &name)?;
    let q = v.snapshot().queues.get(&name).cloned().ok_or_else(|| ApiError {
        status: axum::http::StatusCode::NOT_FOUND,
        error: "not_found",
        reason: format!("NOT_FOUND - no queue '{name}' in vhost '{vhost}'"),
    })?;
    let count = number(&body, "count").unwrap_or(1).min(10_000);
    let outcome = match body.get("ackmode").and_then(Value::as_str).unwrap_or("ack_requeue_true") {
        "ack_requeue_true" | "reject_requeue_true" => Outcome::Requeue,
        "ack_requeue_false" => Outcome::Ack,
        "reject_requeue_false" => Outcome::Reject,
        other => return Err(ApiError::bad_request(format!("unknown ackmode '{other}'"))),
    };
    let base64_only = body.get("encoding").and_then(Value::as_str) == Some("base64");
    let truncate = number(&body, "truncate").map(|n| n as usize);
    let (mut out, mut seqs) = (Vec::new(), Vec::new());
    for _ in 0..count {
        let (reply, rx) = oneshot::channel();
        q.handle.send(QueueCmd::Get { reply, no_ack: false }).await;
        let Some(r) = rx.await.ok().flatten() else { break };
        seqs.push(r.seq);
        let data = r.msg.body_bytes();
        let shown = &data[..truncate.map_or(data.len(), |t| t.min(data.len()))];
        let (payload, encoding) = match (base64_only, std::str::from_utf8(shown)) {
            (false, Ok(s)) => (s.to_string(), "string"),
            _ => (base64::engine::general_purpose::STANDARD.encode(shown), "base64"),
        };
        out.push(json!({
            "payload_bytes": data.len(), "redelivered": r.redelivered, "exchange": &*r.msg.exchange,
            "routing_key": &*r.msg.routing_key, "message_count": r.remaining,
            "properties": properties_json(r.msg.properties()), "payload": payload, "payload_encoding": encoding,
        }));
    }
    if !seqs.is_empty() {
        q.handle.send(QueueCmd::Settle { seqs, outcome }).await;
    }
    Ok(Json(Value::Array(out)))
}
