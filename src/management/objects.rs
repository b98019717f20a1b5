//! `/api/overview`, `/api/queues`, `/api/exchanges`, `/api/bindings`, `/api/connections`,
//! `/api/consumers`, `/api/health/checks/*` and `/api/aliveness-test`: the broker's objects
//! with RabbitMQ's field names (the shapes of a RabbitMQ 3.10.8 node's answers are kept in
//! `tests/fixtures/rabbitmq-3.10.8-management-shapes.json`). Queue depths come from each queue
//! task (`QueueCmd::Info`, which does not count as use for `x-expires`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::rates::{self, Key, Stats};
use super::{ApiError, ApiResult, Caller};
use crate::broker::Broker;
use crate::broker::connections::ConnectionInfo;
use crate::broker::vhost::{ExchangeDeclare, QueueDeclare, VHost};
use crate::definitions::{json_to_table, table_to_json};
use crate::queue::{QueueCmd, QueueEntry, QueueInfo};

type B = State<Arc<Broker>>;
type Params = Query<HashMap<String, String>>;

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/api/overview", get(overview))
        .route("/api/queues", get(|b: B, c: Caller, st: Stats, q: Params| queues(b, c, st, None, q)))
        .route(
            "/api/queues/{vhost}",
            get(|b: B, c: Caller, st: Stats, Path(v): Path<String>, q: Params| queues(b, c, st, Some(v), q)),
        )
        .route("/api/queues/{vhost}/{name}", get(queue).put(put_queue).delete(delete_queue))
        .route("/api/queues/{vhost}/{name}/contents", axum::routing::delete(purge_queue))
        .route("/api/queues/{vhost}/{name}/get", axum::routing::post(super::messages::get))
        .route("/api/queues/{vhost}/{name}/actions", axum::routing::post(queue_action))
        .route("/api/exchanges/{vhost}/{name}/publish", axum::routing::post(super::messages::publish))
        .route("/api/exchanges", get(|b: B, c: Caller, st: Stats, q: Params| exchanges(b, c, st, None, q)))
        .route(
            "/api/exchanges/{vhost}",
            get(|b: B, c: Caller, st: Stats, Path(v): Path<String>, q: Params| exchanges(b, c, st, Some(v), q)),
        )
        .route("/api/exchanges/{vhost}/{name}", get(exchange).put(put_exchange).delete(delete_exchange))
        .route("/api/bindings", get(|b: B, c: Caller| bindings(b, c, None)))
        .route("/api/bindings/{vhost}", get(|b: B, c: Caller, Path(v): Path<String>| bindings(b, c, Some(v))))
        .route("/api/connections", get(connections))
        .route("/api/connections/{name}", get(connection).delete(close_connection))
        .route("/api/channels", get(channels))
        .route("/api/connections/{name}/channels", get(connection_channels))
        .route("/api/consumers", get(|b: B, c: Caller| consumers(b, c, None)))
        .route("/api/consumers/{vhost}", get(|b: B, c: Caller, Path(v): Path<String>| consumers(b, c, Some(v))))
        .route("/api/nodes", get(|b: B, c: Caller| async move { Json(Value::Array(vec![node_json(&b, &c)])) }))
        .route("/api/nodes/{node}", get(node))
        .route("/api/extensions", get(|_c: Caller| async { Json(json!([])) }))
        .route("/api/health/checks/alarms", get(alarms))
        .route("/api/health/checks/local-alarms", get(alarms))
        .route("/api/health/checks/virtual-hosts", get(ok))
        .route("/api/health/checks/node-is-quorum-critical", get(ok))
        .route("/api/health/checks/ready-to-serve-clients", get(ok))
        .route("/api/health/checks/is-in-service", get(ok))
        .route("/api/health/checks/port-listener/{port}", get(port_listener))
        .route("/api/health/checks/protocol-listener/{protocol}", get(protocol_listener))
        .route("/api/aliveness-test/{vhost}", get(aliveness))
}

/// The node name Warren reports (one node).
pub(super) const NODE: &str = "warren@localhost";

fn vhost_of(b: &Broker, name: &str) -> ApiResult<Arc<VHost>> {
    b.vhost(name).ok_or_else(ApiError::not_found)
}

/// The vhosts a request covers: one, or all (sorted).
fn vhosts_of(b: &Broker, one: Option<String>) -> ApiResult<Vec<Arc<VHost>>> {
    match one {
        Some(v) => Ok(vec![vhost_of(b, &v)?]),
        None => Ok(b.vhosts_sorted()),
    }
}

/// A queue's JSON; `conns` is one snapshot of the connections for the whole request.
fn queue_json(conns: &[Arc<ConnectionInfo>], vhost: &VHost, q: &QueueEntry, i: &QueueInfo, st: &Stats) -> Value {
    let applied = vhost.policies().for_queue(&q.name, q.args.queue_type);
    let consumers = i.consumers.len();
    let owner = conns.iter().find(|c| Some(c.id) == q.exclusive_owner);
    let key = Key::Queue(vhost.name().into(), q.name.clone());
    let (ready, unacked) = (i.messages_ready as u64, i.messages_unacknowledged as u64);
    let bytes = i.message_bytes_ready + i.message_bytes_unacknowledged;
    let (paged, paged_bytes) = i.paged_out;
    let lengths = st.stats(&key, &rates::lengths(ready, unacked));
    let mut out = json!({
        "name": q.name, "vhost": vhost.name(), "durable": q.durable, "auto_delete": q.auto_delete,
        "exclusive": q.exclusive_owner.is_some(), "arguments": table_to_json(&q.arguments),
        "type": q.args.queue_type.as_str(),
        "state": "running", "node": NODE,
        "messages": i.messages_ready + i.messages_unacknowledged,
        "messages_ready": i.messages_ready,
        "messages_unacknowledged": i.messages_unacknowledged,
        "message_bytes": i.message_bytes_ready + i.message_bytes_unacknowledged,
        "message_bytes_ready": i.message_bytes_ready,
        "message_bytes_unacknowledged": i.message_bytes_unacknowledged,
        "consumers": consumers,
        "consumer_capacity": if consumers > 0 { 1.0 } else { 0.0 },
        "consumer_utilisation": if consumers > 0 { json!(1.0) } else { Value::Null },
        "consumer_details": consumer_details(conns, vhost, q, i),
        "single_active_consumer_tag": i.single_active_consumer_tag,
        "exclusive_consumer_tag": i.consumers.iter().find(|c| c.exclusive).map(|c| c.tag.to_string()),
        "owner_pid_details": owner.map(|c| json!({"name": c.name(), "peer_host": c.peer.ip().to_string(), "peer_port": c.peer.port()})),
        "policy": applied.policy, "operator_policy": applied.operator_policy,
        "effective_policy_definition": applied.definition,
        "message_stats": st.message_stats(&key, i.counters.into(), rates::QUEUE_MESSAGE_STATS),
        "messages_persistent": i.persistent.0, "message_bytes_persistent": i.persistent.1,
        "messages_paged_out": paged, "message_bytes_paged_out": paged_bytes,
        "messages_ram": (ready + unacked).saturating_sub(paged),
        "messages_ready_ram": ready.saturating_sub(paged), "messages_unacknowledged_ram": unacked,
        "message_bytes_ram": bytes.saturating_sub(paged_bytes),
        "head_message_timestamp": i.head_message_timestamp,
    });
    if let Value::Object(m) = &mut out {
        m.extend(lengths);
        if let Some(t) = i.idle_since {
            m.insert("idle_since".into(), super::rfc3339_millis(t).into());
        }
    }
    out
}

/// A queue's consumers as RabbitMQ lists them.
fn consumer_details(conns: &[Arc<ConnectionInfo>], vhost: &VHost, q: &QueueEntry, i: &QueueInfo) -> Vec<Value> {
    i.consumers
        .iter()
        .map(|c| {
            let conn = conns.iter().find(|x| x.id == c.conn_id);
            json!({
                "consumer_tag": &*c.tag, "ack_required": !c.no_ack, "exclusive": c.exclusive,
                "prefetch_count": c.prefetch, "active": true, "activity_status": "up", "arguments": {},
                "queue": {"name": q.name, "vhost": vhost.name()},
                "channel_details": {
                    "number": c.channel, "node": NODE,
                    "connection_name": conn.map(|x| x.name()),
                    "name": conn.map(|x| format!("{} ({})", x.name(), c.channel)),
                    "peer_host": conn.map(|x| x.peer.ip().to_string()), "peer_port": conn.map(|x| x.peer.port()),
                    "user": conn.map(|x| x.user.clone()),
                },
            })
        })
        .collect()
}

/// RabbitMQ's list parameters: `name` (+ `use_regex`), `sort` (+ `sort_reverse`), `columns`,
/// and `page`/`page_size` (then the paged envelope).
pub(super) fn list(mut items: Vec<Value>, p: &HashMap<String, String>) -> ApiResult<Value> {
    let total = items.len();
    if let Some(name) = p.get("name").filter(|n| !n.is_empty()) {
        if p.get("use_regex").is_some_and(|v| v == "true") {
            let re = regex::Regex::new(name).map_err(|e| ApiError::bad_request(format!("invalid regex: {e}")))?;
            items.retain(|i| i["name"].as_str().is_some_and(|n| re.is_match(n)));
        } else {
            items.retain(|i| i["name"].as_str().is_some_and(|n| n.contains(name.as_str())));
        }
    }
    if let Some(key) = p.get("sort").filter(|k| !k.is_empty()) {
        let get = |v: &Value| key.split('.').fold(v.clone(), |v, k| v.get(k).cloned().unwrap_or(Value::Null));
        items.sort_by(|a, b| {
            let (x, y) = (get(a), get(b));
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => x.total_cmp(&y),
                _ => x.to_string().cmp(&y.to_string()),
            }
        });
        if p.get("sort_reverse").is_some_and(|v| v == "true") {
            items.reverse();
        }
    }
    if let Some(cols) = p.get("columns") {
        let cols: Vec<&str> = cols.split(',').collect();
        for i in items.iter_mut() {
            if let Value::Object(m) = i {
                m.retain(|k, _| cols.contains(&k.as_str()));
            }
        }
    }
    let Some(page) = p.get("page") else { return Ok(Value::Array(items)) };
    let page: usize = page
        .parse()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| ApiError::bad_request("page must be a positive integer"))?;
    let size: usize = p
        .get("page_size")
        .map_or(Ok(100), |s| s.parse())
        .ok()
        .filter(|n| (1..=500).contains(n))
        .ok_or_else(|| ApiError::bad_request("page_size must be between 1 and 500"))?;
    let filtered = items.len();
    let page_count = filtered.div_ceil(size).max(1);
    if page > page_count {
        return Err(ApiError::bad_request("page out of range"));
    }
    let items: Vec<Value> = items.into_iter().skip((page - 1) * size).take(size).collect();
    Ok(json!({
        "filtered_count": filtered, "item_count": items.len(), "items": items,
        "page": page, "page_count": page_count, "page_size": size, "total_count": total,
    }))
}

async fn queues(State(b): B, _c: Caller, st: Stats, vhost: Option<String>, Query(p): Params) -> ApiResult<Json<Value>> {
    let conns = b.connections.snapshot();
    let mut out = Vec::new();
    for v in vhosts_of(&b, vhost)? {
        let t = v.snapshot();
        let mut qs: Vec<&Arc<QueueEntry>> = t.queues.values().collect();
        qs.sort_by(|a, b| a.name.cmp(&b.name));
        for q in qs {
            if let Some(i) = q.handle.info().await {
                out.push(queue_json(&conns, &v, q, &i, &st));
            }
        }
    }
    Ok(Json(list(out, &p)?))
}

async fn queue(
    State(b): B,
    _c: Caller,
    st: Stats,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let v = vhost_of(&b, &vhost)?;
    let t = v.snapshot();
    let q = t.queues.get(&name).cloned().ok_or_else(ApiError::not_found)?;
    let i = q.handle.info().await.ok_or_else(ApiError::not_found)?;
    let mut out = queue_json(&b.connections.snapshot(), &v, &q, &i, &st);
    // The one-queue view adds its bindings' counterpart lists (RabbitMQ's `incoming`,
    // `deliveries`: per-exchange and per-channel flows, not kept by Warren).
    if let Value::Object(m) = &mut out {
        m.insert("incoming".into(), json!([]));
        m.insert("deliveries".into(), json!([]));
    }
    Ok(Json(out))
}

/// The caller's permission check in a vhost, as for an AMQP client (403 → 401 here, as the API
/// answers a refused operation with `not_authorised`).
pub(super) fn permitted(
    b: &Broker,
    c: &Caller,
    vhost: &str,
    access: crate::auth::permissions::Access,
    kind: &str,
    name: &str,
) -> ApiResult<()> {
    let perm = b
        .users()
        .permission(&c.name, vhost)
        .ok_or_else(|| ApiError::unauthorised("not_authorised", "Not authorised to access virtual host"))?;
    perm.check(access, kind, name).map_err(|e| ApiError::unauthorised("not_authorised", &e.text))
}

/// The vhost, after checking the caller's configure permission on `kind` `name` there.
fn configurable(b: &Broker, c: &Caller, vhost: &str, kind: &str, name: &str) -> ApiResult<Arc<VHost>> {
    let v = vhost_of(b, vhost)?;
    permitted(b, c, vhost, crate::auth::permissions::Access::Configure, kind, name)?;
    Ok(v)
}

fn amqp_error(e: crate::error::AmqpError) -> ApiError {
    if e.code == crate::error::ReplyCode::NotFound {
        return ApiError::not_found();
    }
    ApiError::bad_request(e.text)
}

async fn put_queue(
    State(b): B,
    c: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Option<Json<Value>>,
) -> ApiResult<Response> {
    let v = configurable(&b, &c, &vhost, "queue", &name)?;
    let body = body.map(|Json(v)| v).unwrap_or(Value::Null);
    let arguments = body.get("arguments").and_then(Value::as_object).map(json_to_table).unwrap_or_default();
    let d = QueueDeclare {
        name: name.clone(),
        passive: false,
        durable: super::body_flag(&body, "durable")?,
        exclusive: false,
        auto_delete: super::body_flag(&body, "auto_delete")?,
        arguments,
    };
    let (_, created) = v.declare_queue(&d, 0).map_err(amqp_error)?;
    v.sync_definitions(v.definitions_written()).await;
    Ok(if created { StatusCode::CREATED } else { StatusCode::NO_CONTENT }.into_response())
}

async fn delete_queue(
    State(b): B,
    c: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(p): Params,
) -> ApiResult<Response> {
    let v = configurable(&b, &c, &vhost, "queue", &name)?;
    if v.snapshot().queues.get(&name).is_none() {
        return Err(ApiError::not_found());
    }
    let flag = |k: &str| p.get(k).is_some_and(|v| v == "true");
    v.delete_queue(&name, flag("if-unused"), flag("if-empty"), 0).await.map_err(amqp_error)?;
    v.sync_definitions(v.definitions_written()).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST …/actions` with `{"action": "sync" | "cancel_sync"}`: mirror synchronisation, which a
/// single node has nothing to do for (204, as RabbitMQ answers for an unmirrored queue).
async fn queue_action(
    State(b): B,
    c: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Option<Json<Value>>,
) -> ApiResult<Response> {
    let v = vhost_of(&b, &vhost)?;
    permitted(&b, &c, &vhost, crate::auth::permissions::Access::Configure, "queue", &name)?;
    if v.snapshot().queues.get(&name).is_none() {
        return Err(ApiError::not_found());
    }
    match body.as_ref().and_then(|Json(b)| b.get("action")).and_then(Value::as_str) {
        Some("sync" | "cancel_sync") => Ok(StatusCode::NO_CONTENT.into_response()),
        other => Err(ApiError::bad_request(format!("unknown action {}", other.unwrap_or("(none)")))),
    }
}

async fn purge_queue(State(b): B, c: Caller, Path((vhost, name)): Path<(String, String)>) -> ApiResult<Response> {
    let v = vhost_of(&b, &vhost)?;
    permitted(&b, &c, &vhost, crate::auth::permissions::Access::Read, "queue", &name)?;
    let q = v.snapshot().queues.get(&name).cloned().ok_or_else(ApiError::not_found)?;
    let (reply, rx) = oneshot::channel();
    q.handle.send(QueueCmd::Purge { reply }).await;
    let _ = rx.await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn exchange_json(v: &VHost, x: &crate::exchange::Exchange, st: &Stats) -> Value {
    json!({
        "name": x.name, "vhost": v.name(), "type": x.declared_type, "durable": x.durable,
        "auto_delete": x.auto_delete, "internal": x.internal, "arguments": table_to_json(&x.arguments),
        "user_who_performed_action": "", "message_stats": exchange_stats(v, &x.name, st),
        "incoming": [], "outgoing": [],
    })
}

/// An exchange's `publish_in`/`publish_out` (RabbitMQ omits `message_stats` content for an
/// exchange nothing was published to).
fn exchange_stats(v: &VHost, name: &str, st: &Stats) -> Value {
    let (i, o) = v.exchange_counts.get(name);
    if (i, o) == (0, 0) {
        return json!({});
    }
    let key = Key::Exchange(v.name().into(), name.into());
    Value::Object(st.stats(&key, &[("publish_in", i), ("publish_out", o)]))
}

async fn exchanges(
    State(b): B,
    _c: Caller,
    st: Stats,
    vhost: Option<String>,
    Query(p): Params,
) -> ApiResult<Json<Value>> {
    let mut out = Vec::new();
    for v in vhosts_of(&b, vhost)? {
        let t = v.snapshot();
        let mut xs: Vec<_> = t.exchanges.values().collect();
        xs.sort_by(|a, b| a.name.cmp(&b.name));
        // The default exchange is listed by RabbitMQ as "".
        out.push(json!({"name": "", "vhost": v.name(), "type": "direct", "durable": true, "auto_delete": false,
            "internal": false, "arguments": {}, "user_who_performed_action": "rmq-internal",
            "message_stats": exchange_stats(&v, "", &st)}));
        out.extend(xs.into_iter().map(|x| exchange_json(&v, x, &st)));
    }
    Ok(Json(list(out, &p)?))
}

async fn exchange(
    State(b): B,
    _c: Caller,
    st: Stats,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let v = vhost_of(&b, &vhost)?;
    let x = v.snapshot().exchanges.get(&name).cloned().ok_or_else(ApiError::not_found)?;
    Ok(Json(exchange_json(&v, &x, &st)))
}

async fn put_exchange(
    State(b): B,
    c: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> ApiResult<Response> {
    let v = configurable(&b, &c, &vhost, "exchange", &name)?;
    let existed = v.snapshot().exchanges.get(&name).is_some();
    let d = ExchangeDeclare {
        name: name.clone(),
        kind: body.get("type").and_then(Value::as_str).unwrap_or("direct").to_string(),
        passive: false,
        durable: super::body_flag(&body, "durable")?,
        auto_delete: super::body_flag(&body, "auto_delete")?,
        internal: super::body_flag(&body, "internal")?,
        arguments: body.get("arguments").and_then(Value::as_object).map(json_to_table).unwrap_or_default(),
    };
    v.declare_exchange(&d).map_err(amqp_error)?;
    v.sync_definitions(v.definitions_written()).await;
    Ok(if existed { StatusCode::NO_CONTENT } else { StatusCode::CREATED }.into_response())
}

async fn delete_exchange(
    State(b): B,
    c: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(p): Params,
) -> ApiResult<Response> {
    let v = configurable(&b, &c, &vhost, "exchange", &name)?;
    if v.snapshot().exchanges.get(&name).is_none() {
        return Err(ApiError::not_found());
    }
    v.delete_exchange(&name, p.get("if-unused").is_some_and(|v| v == "true")).map_err(amqp_error)?;
    v.sync_definitions(v.definitions_written()).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn bindings(State(b): B, _c: Caller, vhost: Option<String>) -> ApiResult<Json<Value>> {
    let mut out = Vec::new();
    for v in vhosts_of(&b, vhost)? {
        out.extend(super::bindings::of_vhost(&v));
    }
    Ok(Json(Value::Array(out)))
}

fn connection_json(c: &ConnectionInfo, st: &Stats) -> Value {
    let d = &c.details;
    let [recv_oct, recv_cnt, send_oct, send_cnt] = d.octets.get();
    let octets = st.stats(&Key::Connection(c.id), &[("recv_oct", recv_oct), ("send_oct", send_oct)]);
    let mut out = json!({
        "name": c.name(), "node": NODE, "user": c.user, "vhost": c.vhost, "state": c.state().as_str(),
        "type": "network", "protocol": d.protocol.unwrap_or("AMQP 0-9-1"), "channels": c.channels(),
        "host": d.local.map(|l| l.ip().to_string()), "port": d.local.map(|l| l.port()),
        "peer_host": c.peer.ip().to_string(), "peer_port": c.peer.port(),
        "channel_max": d.channel_max, "frame_max": d.frame_max, "timeout": d.heartbeat,
        "client_properties": table_to_json(&d.client_properties), "auth_mechanism": d.auth_mechanism,
        "ssl": d.tls, "connected_at": d.connected_at, "user_who_performed_action": c.user,
        "recv_cnt": recv_cnt, "send_cnt": send_cnt, "send_pend": 0,
    });
    if let Value::Object(m) = &mut out {
        m.extend(octets);
    }
    out
}

/// The connections the caller may see (all for administrator and monitoring, else its own),
/// oldest first.
fn visible_connections(b: &Broker, c: &Caller) -> Vec<Arc<ConnectionInfo>> {
    let all = c.tags.iter().any(|t| t == "administrator" || t == "monitoring");
    let mut list: Vec<_> = b.connections.snapshot().into_iter().filter(|x| all || x.user == c.name).collect();
    list.sort_by_key(|x| x.id);
    list
}

/// The connection with RabbitMQ's name `name` (404 otherwise).
fn connection_named(b: &Broker, name: &str) -> ApiResult<Arc<ConnectionInfo>> {
    b.connections.snapshot().into_iter().find(|x| x.name() == name).ok_or_else(ApiError::not_found)
}

async fn connections(State(b): B, c: Caller, st: Stats, Query(p): Params) -> ApiResult<Json<Value>> {
    let all = visible_connections(&b, &c).iter().map(|x| connection_json(x, &st)).collect();
    Ok(Json(list(all, &p)?))
}

async fn connection(State(b): B, _c: Caller, st: Stats, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    let found = connection_named(&b, &name)?;
    Ok(Json(connection_json(&found, &st)))
}

/// Close a connection: 320 with `X-Reason` (RabbitMQ's default: "Closed via management plugin").
async fn close_connection(State(b): B, c: Caller, Path(name): Path<String>, h: HeaderMap) -> ApiResult<Response> {
    let found = connection_named(&b, &name)?;
    if found.user != c.name {
        c.administrator()?;
    }
    let reason = h.get("x-reason").and_then(|v| v.to_str().ok()).unwrap_or("Closed via management plugin");
    found.force_close(reason);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn channels_of(c: &ConnectionInfo, st: &Stats) -> Vec<Value> {
    let name = c.name();
    c.channels_summary()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|ch| {
            json!({
                "name": format!("{name} ({})", ch.number), "number": ch.number, "node": NODE,
                "user": c.user, "vhost": c.vhost, "state": "running",
                "connection_details": {"name": name, "peer_host": c.peer.ip().to_string(), "peer_port": c.peer.port()},
                "consumer_count": ch.consumer_count, "prefetch_count": ch.prefetch_count,
                "global_prefetch_count": ch.global_prefetch_count,
                "messages_unacknowledged": ch.messages_unacknowledged, "messages_unconfirmed": ch.messages_unconfirmed,
                "messages_uncommitted": 0, "acks_uncommitted": 0, "confirm": ch.confirm,
                "transactional": ch.transactional, "user_who_performed_action": c.user,
                "message_stats": st.message_stats(&Key::Channel(c.id, ch.number), ch.counters.into(),
                    rates::CHANNEL_MESSAGE_STATS),
            })
        })
        .collect()
}

async fn channels(State(b): B, c: Caller, st: Stats, Query(p): Params) -> ApiResult<Json<Value>> {
    let mut out = Vec::new();
    for x in visible_connections(&b, &c) {
        out.extend(channels_of(&x, &st).await);
    }
    Ok(Json(list(out, &p)?))
}

async fn connection_channels(State(b): B, _c: Caller, st: Stats, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    let found = connection_named(&b, &name)?;
    Ok(Json(Value::Array(channels_of(&found, &st).await)))
}

async fn consumers(State(b): B, _c: Caller, vhost: Option<String>) -> ApiResult<Json<Value>> {
    let conns = b.connections.snapshot();
    let mut out = Vec::new();
    for v in vhosts_of(&b, vhost)? {
        let t = v.snapshot();
        let mut qs: Vec<&Arc<QueueEntry>> = t.queues.values().collect();
        qs.sort_by(|a, b| a.name.cmp(&b.name));
        for q in qs {
            if let Some(i) = q.handle.info().await {
                out.extend(consumer_details(&conns, &v, q, &i));
            }
        }
    }
    Ok(Json(Value::Array(out)))
}

/// A vhost's queues' (ready, unacknowledged, consumers), asked of each queue task.
async fn queue_totals(v: &VHost) -> (u64, u64, u64) {
    let mut totals = (0, 0, 0);
    for q in v.snapshot().queues.values() {
        if let Some(i) = q.handle.info().await {
            totals.0 += i.messages_ready as u64;
            totals.1 += i.messages_unacknowledged as u64;
            totals.2 += i.consumers.len() as u64;
        }
    }
    totals
}

async fn overview(State(b): B, _c: Caller, st: Stats) -> Json<Value> {
    let (mut queues, mut exchanges, mut consumers) = (0u64, 0u64, 0u64);
    let (mut ready, mut unacked) = (0u64, 0u64);
    for v in vhosts_of(&b, None).unwrap_or_default() {
        let t = v.snapshot();
        exchanges += t.exchanges.len() as u64 + 1;
        queues += t.queues.len() as u64;
        let (r, u, c) = queue_totals(&v).await;
        (ready, unacked, consumers) = (ready + r, unacked + u, consumers + c);
    }
    let conns = b.connections.snapshot();
    let channels: usize = conns.iter().map(|c| c.channels()).sum();
    let listeners: Vec<Value> = b
        .listeners()
        .iter()
        .map(|(p, a)| json!({"node": NODE, "protocol": p, "ip_address": a.ip().to_string(), "port": a.port()}))
        .collect();
    let types = ["direct", "fanout", "headers", "topic", "x-delayed-message", "x-message-deduplication"];
    let c = b.counters.snapshot();
    let churn = [
        ("connection_created", c.connection_created),
        ("connection_closed", c.connection_closed),
        ("channel_created", c.channel_created),
        ("channel_closed", c.channel_closed),
        ("queue_declared", c.queue_declared),
        ("queue_created", c.queue_created),
        ("queue_deleted", c.queue_deleted),
    ];
    Json(json!({
        "management_version": b.config.amqp.product_version, "rabbitmq_version": b.config.amqp.product_version,
        "product_name": b.config.amqp.product, "product_version": b.config.amqp.product_version,
        "cluster_name": super::tenancy::cluster_name_of(&b), "node": NODE, "erlang_version": "none (Warren)", "erlang_full_version": "none (Warren)",
        "rates_mode": "basic", "disable_stats": false, "enable_queue_totals": true,
        "release_series_support_status": "supported",
        "object_totals": {"connections": conns.len(), "channels": channels, "consumers": consumers,
            "exchanges": exchanges, "queues": queues},
        "queue_totals": st.stats(&Key::Node,
            &rates::lengths(ready, unacked)),
        "message_stats": st.message_stats(&Key::Node, b.counters.snapshot(), rates::CHANNEL_MESSAGE_STATS),
        "churn_rates": st.stats(&Key::Node, &churn), "contexts": [], "statistics_db_event_queue": 0,
        "sample_retention_policies": {"global": [600, 3600, 28800, 86400], "basic": [600, 3600], "detailed": [600]},
        "listeners": listeners,
        "exchange_types": types.iter().map(|t| json!({"name": t, "description": "", "enabled": true})).collect::<Vec<_>>(),
    }))
}

/// A vhost's JSON with its statistics added: depths, `message_stats`, and its connections'
/// octets (of those open now).
pub(super) async fn with_vhost_stats(b: &Broker, mut json: Value, st: &Stats) -> Value {
    let Some(v) = json["name"].as_str().and_then(|n| b.vhost(n)) else { return json };
    let (ready, unacked, _) = queue_totals(&v).await;
    let (recv, send) = rates::vhost_octets(&b.connections.snapshot(), v.name());
    let key = Key::VHost(v.name().into());
    if let Value::Object(m) = &mut json {
        m.extend(st.stats(&key, &rates::lengths(ready, unacked)));
        m.extend(st.stats(&key, &[("recv_oct", recv), ("send_oct", send)]));
        m.insert("message_stats".into(), st.message_stats(&key, v.counters.snapshot(), rates::CHANNEL_MESSAGE_STATS));
        m.insert("cluster_state".into(), json!({NODE: "running"}));
    }
    json
}

/// The one node, with what Warren knows of it (RabbitMQ's `/api/nodes` fields).
fn node_json(b: &Broker, _c: &Caller) -> Value {
    let (rss, fds) = super::process_usage();
    let n = super::node_resources(b);
    let types: Vec<Value> =
        ["direct", "fanout", "headers", "topic"].iter().map(|t| json!({"name": t, "enabled": true})).collect();
    let alarms = b.disk_alarm.mask();
    json!({
        "name": NODE, "type": "disc", "running": true, "uptime": b.started.elapsed().as_millis() as u64,
        "mem_used": rss, "mem_limit": n.mem_limit, "mem_alarm": alarms & crate::broker::alarm::MEMORY != 0,
        "disk_free": n.disk_free, "disk_free_limit": b.config.storage.disk_free_limit,
        "disk_free_alarm": alarms & crate::broker::alarm::DISK != 0,
        "fd_used": fds, "fd_total": n.fd_total, "sockets_used": b.connections.snapshot().len(),
        "processors": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "rates_mode": "basic", "partitions": [], "os_pid": std::process::id().to_string(),
        "auth_mechanisms": b.config.auth.mechanisms.iter().map(|m| json!({"name": m, "enabled": true})).collect::<Vec<_>>(),
        "exchange_types": types,
    })
}

async fn node(State(b): B, c: Caller, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    if name != NODE {
        return Err(ApiError::not_found());
    }
    Ok(Json(node_json(&b, &c)))
}

fn ok_status() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

fn failed(reason: impl Into<String>) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "failed", "reason": reason.into()}))).into_response()
}

async fn ok(_c: Caller) -> Response {
    ok_status()
}

async fn alarms(State(b): B, _c: Caller) -> Response {
    if b.disk_alarm.is_raised() {
        return failed("resource alarm(s) in effect");
    }
    ok_status()
}

async fn port_listener(State(b): B, _c: Caller, Path(port): Path<u16>) -> Response {
    if b.listeners().iter().any(|(_, a)| a.port() == port) {
        return ok_status();
    }
    failed(format!("No active listener on port {port}"))
}

async fn protocol_listener(State(b): B, _c: Caller, Path(proto): Path<String>) -> Response {
    let wanted = match proto.as_str() {
        "amqp" | "amqp091" | "amqp0-9-1" | "amqp0.9.1" => "amqp",
        "amqps" | "amqp/ssl" => "amqp/ssl",
        "http" | "management" => "http",
        other => other,
    };
    if b.listeners().iter().any(|(p, _)| *p == wanted) {
        return ok_status();
    }
    failed(format!("No active listener for protocol {proto}"))
}

/// RabbitMQ 3.x's aliveness test: declare `aliveness-test`, publish to it and get it back.
async fn aliveness(State(b): B, _c: Caller, Path(vhost): Path<String>) -> ApiResult<Response> {
    let v = vhost_of(&b, &vhost)?;
    let d = QueueDeclare { name: "aliveness-test".into(), durable: false, ..Default::default() };
    let (q, _) = v.declare_queue(&d, 0).map_err(amqp_error)?;
    let body: crate::message::Body = smallvec::smallvec![bytes::Bytes::from_static(b"test_message")];
    let msg = crate::message::Message::build("".into(), "aliveness-test".into(), Default::default(), body);
    q.handle.send(QueueCmd::Publish(vec![crate::queue::Publish { msg: Arc::new(msg), confirm: None }])).await;
    let (reply, rx) = oneshot::channel();
    q.handle.send(QueueCmd::Get { reply, no_ack: true }).await;
    match rx.await.ok().flatten() {
        Some(_) => Ok(ok_status()),
        None => Ok(failed("aliveness test failed")),
    }
}
