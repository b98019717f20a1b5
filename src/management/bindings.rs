//! Bindings by their ends: `/api/bindings/{vhost}/e/{source}/{q|e}/{destination}` (list,
//! POST to bind), `…/{props}` (one, DELETE to unbind), `/api/exchanges/{vhost}/{name}/bindings/
//! {source|destination}` and `/api/queues/{vhost}/{name}/bindings`, with RabbitMQ's shapes and
//! status codes (what rabbitmqadmin's `declare binding` / `delete binding` use).
//!
//! A binding's `properties_key` names it in URLs: `~` for an empty routing key without
//! arguments, else the percent-encoded routing key, followed by `~` and a short hash of the
//! arguments when there are any. Clients read it from a listing and send it back; only its
//! layout follows RabbitMQ (whose hash is of the Erlang term and is not reproduced).

use std::sync::Arc;

use amq_protocol::types::FieldTable;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{ApiError, ApiResult, Caller};
use crate::auth::permissions::Access;
use crate::broker::Broker;
use crate::broker::vhost::VHost;
use crate::definitions::{json_to_table, table_to_json};
use crate::exchange::Destination;

type B = State<Arc<Broker>>;

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route(
            "/api/bindings/{vhost}/e/{source}/q/{destination}",
            get(|b: B, c: Caller, Path(p): Path<(String, String, String)>| between(b, c, p, Kind::Queue)).post(
                |b: B, c: Caller, Path(p): Path<(String, String, String)>, body: Option<Json<Value>>| {
                    bind(b, c, p, Kind::Queue, body)
                },
            ),
        )
        .route(
            "/api/bindings/{vhost}/e/{source}/e/{destination}",
            get(|b: B, c: Caller, Path(p): Path<(String, String, String)>| between(b, c, p, Kind::Exchange)).post(
                |b: B, c: Caller, Path(p): Path<(String, String, String)>, body: Option<Json<Value>>| {
                    bind(b, c, p, Kind::Exchange, body)
                },
            ),
        )
        .route(
            "/api/bindings/{vhost}/e/{source}/q/{destination}/{props}",
            get(|b: B, c: Caller, Path(p): Path<(String, String, String, String)>| one(b, c, p, Kind::Queue)).delete(
                |b: B, c: Caller, Path(p): Path<(String, String, String, String)>| unbind(b, c, p, Kind::Queue),
            ),
        )
        .route(
            "/api/bindings/{vhost}/e/{source}/e/{destination}/{props}",
            get(|b: B, c: Caller, Path(p): Path<(String, String, String, String)>| one(b, c, p, Kind::Exchange))
                .delete(|b: B, c: Caller, Path(p): Path<(String, String, String, String)>| {
                    unbind(b, c, p, Kind::Exchange)
                }),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/source",
            get(|b: B, c: Caller, Path(p): Path<(String, String)>| of_object(b, c, p, End::Source)),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/destination",
            get(|b: B, c: Caller, Path(p): Path<(String, String)>| {
                of_object(b, c, p, End::Destination(Kind::Exchange))
            }),
        )
        .route(
            "/api/queues/{vhost}/{name}/bindings",
            get(|b: B, c: Caller, Path(p): Path<(String, String)>| of_object(b, c, p, End::Destination(Kind::Queue))),
        )
}

/// What a binding leads to.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Queue,
    Exchange,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Queue => "queue",
            Kind::Exchange => "exchange",
        }
    }
}

/// Which end of its bindings an object is.
#[derive(Clone, Copy)]
enum End {
    Source,
    Destination(Kind),
}

/// A binding's `properties_key` (see the module's comment).
pub(super) fn properties_key(key: &str, args: &FieldTable) -> String {
    use base64::Engine;
    use md5::Digest;
    let mut out = String::new();
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if args.inner().is_empty() {
        return if out.is_empty() { "~".into() } else { out };
    }
    let digest = md5::Md5::digest(table_to_json(args).to_string().as_bytes());
    format!("{out}~{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..4]))
}

fn binding_json(vhost: &str, source: &str, d: &Destination, key: &str, args: &FieldTable) -> Value {
    let (name, kind) = match d {
        Destination::Queue(q) => (q.as_str(), "queue"),
        Destination::Exchange(e) => (e.as_str(), "exchange"),
    };
    json!({"source": source, "vhost": vhost, "destination": name, "destination_type": kind,
        "routing_key": key, "arguments": table_to_json(args), "properties_key": properties_key(key, args)})
}

/// Every binding of a vhost as RabbitMQ lists them: first each queue's implicit binding to the
/// default exchange, then each exchange's bindings (by source, destination, routing key).
pub(super) fn of_vhost(v: &VHost) -> Vec<Value> {
    let t = v.snapshot();
    let mut out = Vec::new();
    let mut qs: Vec<&String> = t.queues.keys().collect();
    qs.sort();
    for q in qs {
        out.push(binding_json(v.name(), "", &Destination::Queue(q.clone()), q, &FieldTable::default()));
    }
    let mut xs: Vec<_> = t.exchanges.values().collect();
    xs.sort_by(|a, b| a.name.cmp(&b.name));
    for x in xs {
        let mut bs: Vec<_> = x.bindings().collect();
        bs.sort_by(|a, b| {
            let named = |d: &Destination| match d {
                Destination::Queue(q) => (q.clone(), 0),
                Destination::Exchange(e) => (e.clone(), 1),
            };
            (named(a.0), a.1).cmp(&(named(b.0), b.1))
        });
        out.extend(bs.into_iter().map(|(d, k, a)| binding_json(v.name(), &x.name, d, k, a)));
    }
    out
}

fn vhost_of(b: &Broker, name: &str) -> ApiResult<Arc<VHost>> {
    b.vhost(name).ok_or_else(ApiError::not_found)
}

fn is_to(bind: &Value, destination: &str, kind: Kind) -> bool {
    bind["destination"] == destination && bind["destination_type"] == kind.name()
}

/// The bindings from `source` to `destination` (RabbitMQ answers `[]` when either is missing).
async fn between(
    State(b): B,
    _c: Caller,
    (vhost, source, destination): (String, String, String),
    kind: Kind,
) -> ApiResult<Json<Value>> {
    let v = vhost_of(&b, &vhost)?;
    let list = of_vhost(&v).into_iter().filter(|x| x["source"] == source.as_str() && is_to(x, &destination, kind));
    Ok(Json(Value::Array(list.collect())))
}

async fn one(
    State(b): B,
    _c: Caller,
    (vhost, source, destination, props): (String, String, String, String),
    kind: Kind,
) -> ApiResult<Json<Value>> {
    let v = vhost_of(&b, &vhost)?;
    of_vhost(&v)
        .into_iter()
        .find(|x| {
            x["source"] == source.as_str() && is_to(x, &destination, kind) && x["properties_key"] == props.as_str()
        })
        .map(Json)
        .ok_or_else(ApiError::not_found)
}

/// The AMQP error of a bind or unbind as the API answers it: 404 `not_found` with the text
/// after the code's name, else 400.
fn refused(e: crate::error::AmqpError) -> ApiError {
    let text = e.text.split_once(" - ").map_or(e.text.as_str(), |(_, t)| t).to_string();
    if e.code == crate::error::ReplyCode::NotFound {
        return ApiError { status: StatusCode::NOT_FOUND, error: "not_found", reason: text };
    }
    ApiError::bad_request(text)
}

/// The permission checks of `queue.bind` / `exchange.bind`: write on the destination, read on
/// the source.
fn may_bind(b: &Broker, c: &Caller, vhost: &str, source: &str, destination: &str, kind: Kind) -> ApiResult<()> {
    super::objects::permitted(b, c, vhost, Access::Write, kind.name(), destination)?;
    super::objects::permitted(b, c, vhost, Access::Read, "exchange", source)
}

async fn bind(
    State(b): B,
    c: Caller,
    (vhost, source, destination): (String, String, String),
    kind: Kind,
    body: Option<Json<Value>>,
) -> ApiResult<Response> {
    let v = vhost_of(&b, &vhost)?;
    may_bind(&b, &c, &vhost, &source, &destination, kind)?;
    let body = body.map(|Json(v)| v).unwrap_or(Value::Null);
    let key = body.get("routing_key").and_then(Value::as_str).unwrap_or_default();
    let args = match body.get("arguments") {
        None | Some(Value::Null) => FieldTable::default(),
        Some(Value::Object(m)) => json_to_table(m),
        Some(_) => return Err(ApiError::bad_request("arguments must be an object")),
    };
    match kind {
        Kind::Queue => v.bind_queue(&destination, &source, key, &args, 0),
        Kind::Exchange => v.bind_exchange(&destination, &source, key, &args),
    }
    .map_err(refused)?;
    v.sync_definitions(v.definitions_written()).await;
    let location = format!("{}/{}", encode(&destination), encode(&properties_key(key, &args)));
    Ok((StatusCode::CREATED, [(header::LOCATION, location)]).into_response())
}

/// Percent-encode a path segment.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn unbind(
    State(b): B,
    c: Caller,
    (vhost, source, destination, props): (String, String, String, String),
    kind: Kind,
) -> ApiResult<Response> {
    let v = vhost_of(&b, &vhost)?;
    may_bind(&b, &c, &vhost, &source, &destination, kind)?;
    let t = v.snapshot();
    let x = t.exchanges.get(&source).ok_or_else(ApiError::not_found)?;
    let wanted = match kind {
        Kind::Queue => Destination::Queue(destination.clone()),
        Kind::Exchange => Destination::Exchange(destination.clone()),
    };
    let (key, args) = x
        .bindings()
        .find(|(d, k, a)| **d == wanted && properties_key(k, a) == props)
        .map(|(_, k, a)| (k.to_string(), a.clone()))
        .ok_or_else(ApiError::not_found)?;
    match kind {
        Kind::Queue => v.unbind_queue(&destination, &source, &key, &args, 0),
        Kind::Exchange => v.unbind_exchange(&destination, &source, &key, &args),
    }
    .map_err(refused)?;
    v.sync_definitions(v.definitions_written()).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The bindings an exchange is the source of, or an exchange or queue the destination of
/// (404 when it does not exist).
async fn of_object(State(b): B, _c: Caller, (vhost, name): (String, String), end: End) -> ApiResult<Json<Value>> {
    let v = vhost_of(&b, &vhost)?;
    let t = v.snapshot();
    let exists = match end {
        End::Source | End::Destination(Kind::Exchange) => t.exchanges.contains_key(&name),
        End::Destination(Kind::Queue) => t.queues.contains_key(&name),
    };
    if !exists {
        return Err(ApiError::not_found());
    }
    let list = of_vhost(&v).into_iter().filter(|x| match end {
        End::Source => x["source"] == name.as_str(),
        End::Destination(kind) => is_to(x, &name, kind),
    });
    Ok(Json(Value::Array(list.collect())))
}
