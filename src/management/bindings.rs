//! `/api/bindings/{vhost}/e/{source}/{q|e}/{destination}[/{props}]`: list, create (POST) and
//! delete one binding between an exchange and a queue or exchange, as RabbitMQ's
//! `rabbit_mgmt_wm_bindings` / `rabbit_mgmt_wm_binding`. A binding is named by its
//! properties key ([`properties_key`]): the quoted routing key, plus `~` and a hash of the
//! arguments when it has any.

use std::sync::Arc;

use amq_protocol::types::FieldTable;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use serde_json::{Value, json};
use sha2::Digest;

use super::objects::permitted;
use super::{ApiError, ApiResult, Caller};
use crate::auth::permissions::Access;
use crate::broker::Broker;
use crate::broker::vhost::VHost;
use crate::definitions::{json_to_table, table_to_json};
use crate::exchange::{Destination, ExchangeKind};

type B = State<Arc<Broker>>;

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/api/bindings/{vhost}/e/{source}/{dtype}/{destination}", get(list).post(create))
        .route("/api/bindings/{vhost}/e/{source}/{dtype}/{destination}/{props}", get(one).delete(remove))
}

/// RabbitMQ's `quote_plus`: everything but letters, digits and `-_.` percent-encoded, space as
/// `+`; `~` is encoded too, as RabbitMQ does for properties keys.
fn quote_plus(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A binding's name in the API (RabbitMQ's `pack_binding_props`): `~` for an empty key without
/// arguments, the quoted key without arguments, else the quoted key, `~` and a short hash of the
/// arguments (RabbitMQ hashes with Erlang's phash2; clients treat it as opaque).
pub(super) fn properties_key(key: &str, args: &FieldTable) -> String {
    if args.inner().is_empty() {
        return if key.is_empty() { "~".into() } else { quote_plus(key) };
    }
    let digest = sha2::Sha256::digest(table_to_json(args).to_string().as_bytes());
    format!("{}~{}", quote_plus(key), base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..4]))
}

/// The path's destination: `q` for a queue, `e` for an exchange (404 otherwise, as RabbitMQ).
fn destination(dtype: &str, name: String) -> ApiResult<Destination> {
    match dtype {
        "q" => Ok(Destination::Queue(name)),
        "e" => Ok(Destination::Exchange(name)),
        _ => Err(ApiError::not_found()),
    }
}

/// An AMQP error of a bind/unbind as the API answers it, keeping the AMQP text as the reason.
fn refused(e: crate::error::AmqpError) -> ApiError {
    let (status, error) = match e.code {
        crate::error::ReplyCode::NotFound => (StatusCode::NOT_FOUND, "not_found"),
        crate::error::ReplyCode::AccessRefused => (StatusCode::UNAUTHORIZED, "not_authorised"),
        _ => (StatusCode::BAD_REQUEST, "bad_request"),
    };
    ApiError { status, error, reason: e.text }
}

/// The bindings from `source` to `dest` in `v` as the API lists them (none when either does
/// not exist, as RabbitMQ).
fn between(v: &VHost, source: &str, dest: &Destination) -> Vec<Value> {
    let t = v.snapshot();
    let Some(x) = t.exchanges.get(source) else { return Vec::new() };
    let (name, kind) = match dest {
        Destination::Queue(q) => (q, "queue"),
        Destination::Exchange(e) => (e, "exchange"),
    };
    let mut found: Vec<(&str, &FieldTable)> =
        x.bindings().filter(|(d, _, _)| *d == dest).map(|(_, k, a)| (k, a)).collect();
    found.sort_by(|a, b| a.0.cmp(b.0));
    found
        .into_iter()
        .map(|(key, args)| {
            json!({"source": source, "vhost": v.name(), "destination": name, "destination_type": kind,
                "routing_key": key, "arguments": table_to_json(args), "properties_key": properties_key(key, args)})
        })
        .collect()
}

async fn list(
    State(b): B,
    _c: Caller,
    Path((vhost, source, dtype, dest)): Path<(String, String, String, String)>,
) -> ApiResult<Json<Value>> {
    let v = b.vhost(&vhost).ok_or_else(ApiError::not_found)?;
    Ok(Json(Value::Array(between(&v, &source, &destination(&dtype, dest)?))))
}

async fn one(
    State(b): B,
    _c: Caller,
    Path((vhost, source, dtype, dest, props)): Path<(String, String, String, String, String)>,
) -> ApiResult<Json<Value>> {
    let v = b.vhost(&vhost).ok_or_else(ApiError::not_found)?;
    let all = between(&v, &source, &destination(&dtype, dest)?);
    all.into_iter().find(|x| x["properties_key"] == props.as_str()).map(Json).ok_or_else(ApiError::not_found)
}

/// Write on the destination, read on the source, and the topic read permission of the key on
/// a topic exchange: what `queue.bind`/`exchange.bind` check.
fn may_bind(b: &Broker, c: &Caller, v: &VHost, source: &str, dest: &Destination, key: &str) -> ApiResult<()> {
    match dest {
        Destination::Queue(q) => permitted(b, c, v.name(), Access::Write, "queue", q)?,
        Destination::Exchange(e) => permitted(b, c, v.name(), Access::Write, "exchange", e)?,
    }
    permitted(b, c, v.name(), Access::Read, "exchange", source)?;
    let topic = v.snapshot().exchanges.get(source).is_some_and(|x| x.kind == ExchangeKind::Topic);
    if topic && let Some(perm) = b.users().permission(&c.name, v.name()) {
        perm.check_topic(Access::Read, source, key).map_err(refused)?;
    }
    Ok(())
}

/// Bind or unbind `dest` to `source` with `key` and `args`.
fn apply(v: &VHost, bind: bool, source: &str, dest: &Destination, key: &str, args: &FieldTable) -> ApiResult<()> {
    match (dest, bind) {
        (Destination::Queue(q), true) => v.bind_queue(q, source, key, args, 0),
        (Destination::Queue(q), false) => v.unbind_queue(q, source, key, args, 0),
        (Destination::Exchange(e), true) => v.bind_exchange(e, source, key, args),
        (Destination::Exchange(e), false) => v.unbind_exchange(e, source, key, args),
    }
    .map_err(refused)
}

/// POST: create the binding (body: `routing_key`, `arguments`); 201 with the new binding's
/// location relative to the request path, as RabbitMQ.
async fn create(
    State(b): B,
    c: Caller,
    Path((vhost, source, dtype, dest)): Path<(String, String, String, String)>,
    body: Option<Json<Value>>,
) -> ApiResult<Response> {
    let v = b.vhost(&vhost).ok_or_else(ApiError::not_found)?;
    let body = body.map(|Json(v)| v).unwrap_or(Value::Null);
    let key = body.get("routing_key").and_then(Value::as_str).unwrap_or_default();
    let args = body.get("arguments").and_then(Value::as_object).map(json_to_table).unwrap_or_default();
    let to = destination(&dtype, dest.clone())?;
    may_bind(&b, &c, &v, &source, &to, key)?;
    apply(&v, true, &source, &to, key, &args)?;
    v.sync_definitions(v.definitions_written()).await;
    let location = format!("{}/{}", quote_plus(&dest), quote_plus(&properties_key(key, &args)));
    Ok((StatusCode::CREATED, [(header::LOCATION, location)]).into_response())
}

/// DELETE: remove the binding named by its properties key (404 if there is none).
async fn remove(
    State(b): B,
    c: Caller,
    Path((vhost, source, dtype, dest, props)): Path<(String, String, String, String, String)>,
) -> ApiResult<Response> {
    let v = b.vhost(&vhost).ok_or_else(ApiError::not_found)?;
    let to = destination(&dtype, dest)?;
    let found = {
        let t = v.snapshot();
        let x = t.exchanges.get(&source).ok_or_else(ApiError::not_found)?;
        x.bindings()
            .find(|(d, k, a)| *d == &to && properties_key(k, a) == props)
            .map(|(_, k, a)| (k.to_string(), a.clone()))
    };
    let (key, args) = found.ok_or_else(ApiError::not_found)?;
    may_bind(&b, &c, &v, &source, &to, &key)?;
    apply(&v, false, &source, &to, &key, &args)?;
    v.sync_definitions(v.definitions_written()).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}
