//! `/api/vhosts` (+ `start`), `/api/users` (+ `bulk-delete`, `without-permissions`),
//! `/api/permissions`, `/api/topic-permissions`, `/api/policies`, `/api/operator-policies`,
//! `/api/vhost-limits`, `/api/user-limits`, `/api/parameters`, `/api/global-parameters`,
//! `/api/cluster-name`, `/api/definitions[/{vhost}]` and `/api/whoami`. Every change goes
//! through [`Broker::change`]: it is validated as a whole, saved, and in force when the response
//! is sent.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use super::objects::list;
use super::{ApiError, ApiResult, Caller};
use crate::broker::Broker;
use crate::config::{PermissionConfig, TopicPermissionConfig};
use crate::definitions::{Definitions, Limits, PolicyDef, UserDef, VHostDef};

type B = State<Arc<Broker>>;
/// RabbitMQ's list parameters (`sort`, `sort_reverse`, `columns`, `name`, `page`, ...).
type Params = Query<std::collections::HashMap<String, String>>;

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/api/whoami", get(whoami))
        .route("/api/definitions", get(export).post(import))
        .route("/api/definitions/{vhost}", get(export_vhost).post(import_vhost))
        .route("/api/vhosts", get(vhosts))
        .route("/api/vhosts/{vhost}", get(vhost).put(put_vhost).delete(delete_vhost))
        .route("/api/vhosts/{vhost}/start/{node}", post(start_vhost))
        .route("/api/users", get(users))
        .route("/api/users/without-permissions", get(users_without_permissions))
        .route("/api/users/bulk-delete", post(bulk_delete_users))
        .route("/api/parameters", get(|b: B, c: Caller| parameters(b, c, None, None)))
        .route(
            "/api/parameters/{component}",
            get(|b: B, c: Caller, Path(k): Path<String>| parameters(b, c, Some(k), None)),
        )
        .route(
            "/api/parameters/{component}/{vhost}",
            get(|b: B, c: Caller, Path((k, v)): Path<(String, String)>| parameters(b, c, Some(k), Some(v))),
        )
        .route("/api/parameters/{component}/{vhost}/{name}", get(parameter).put(put_parameter).delete(delete_parameter))
        .route("/api/global-parameters", get(global_parameters))
        .route(
            "/api/global-parameters/{name}",
            get(global_parameter).put(put_global_parameter).delete(delete_global_parameter),
        )
        .route("/api/cluster-name", get(cluster_name).put(put_cluster_name))
        .route("/api/users/{user}", get(user).put(put_user).delete(delete_user))
        .route("/api/permissions", get(permissions))
        .route(
            "/api/vhosts/{vhost}/permissions",
            get(|b: B, c: Caller, Path(v): Path<String>| permissions_of(b, c, v, true)),
        )
        .route(
            "/api/users/{user}/permissions",
            get(|b: B, c: Caller, Path(u): Path<String>| permissions_of(b, c, u, false)),
        )
        .route("/api/permissions/{vhost}/{user}", get(permission).put(put_permission).delete(delete_permission))
        .route("/api/topic-permissions", get(topic_permissions))
        .route(
            "/api/topic-permissions/{vhost}/{user}",
            get(topic_permission).put(put_topic_permission).delete(delete_topic_permission),
        )
        .route("/api/policies", get(|b: B, c: Caller| policies(b, c, None, false)))
        .route("/api/policies/{vhost}", get(|b: B, c: Caller, Path(v): Path<String>| policies(b, c, Some(v), false)))
        .route(
            "/api/policies/{vhost}/{name}",
            get(|b: B, c: Caller, p: Path<(String, String)>| policy(b, c, p, false))
                .put(|b: B, c: Caller, p: Path<(String, String)>, body: Json<Value>| put_policy(b, c, p, body, false))
                .delete(|b: B, c: Caller, p: Path<(String, String)>| delete_policy(b, c, p, false)),
        )
        .route("/api/operator-policies", get(|b: B, c: Caller| policies(b, c, None, true)))
        .route(
            "/api/operator-policies/{vhost}",
            get(|b: B, c: Caller, Path(v): Path<String>| policies(b, c, Some(v), true)),
        )
        .route(
            "/api/operator-policies/{vhost}/{name}",
            get(|b: B, c: Caller, p: Path<(String, String)>| policy(b, c, p, true))
                .put(|b: B, c: Caller, p: Path<(String, String)>, body: Json<Value>| put_policy(b, c, p, body, true))
                .delete(|b: B, c: Caller, p: Path<(String, String)>| delete_policy(b, c, p, true)),
        )
        .route("/api/vhost-limits", get(|b: B, c: Caller| get_limits(b, c, None, Owner::VHost)))
        .route(
            "/api/vhost-limits/{vhost}",
            get(|b: B, c: Caller, Path(v): Path<String>| get_limits(b, c, Some(v), Owner::VHost)),
        )
        .route(
            "/api/vhost-limits/{vhost}/{name}",
            put(|b: B, c: Caller, p: Path<(String, String)>, body: Json<Value>| put_limit(b, c, p, body, Owner::VHost))
                .delete(|b: B, c: Caller, p: Path<(String, String)>| delete_limit(b, c, p, Owner::VHost)),
        )
        .route("/api/user-limits", get(|b: B, c: Caller| get_limits(b, c, None, Owner::User)))
        .route(
            "/api/user-limits/{user}",
            get(|b: B, c: Caller, Path(u): Path<String>| get_limits(b, c, Some(u), Owner::User)),
        )
        .route(
            "/api/user-limits/{user}/{name}",
            put(|b: B, c: Caller, p: Path<(String, String)>, body: Json<Value>| put_limit(b, c, p, body, Owner::User))
                .delete(|b: B, c: Caller, p: Path<(String, String)>| delete_limit(b, c, p, Owner::User)),
        )
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// 201 for a new object, 204 for a changed one (RabbitMQ's answers to PUT).
fn created_or_updated(created: bool) -> Response {
    if created { StatusCode::CREATED.into_response() } else { no_content() }
}

async fn change(b: &Broker, edit: impl FnOnce(&mut Definitions) -> Result<(), String>) -> ApiResult<()> {
    b.change(edit).await.map_err(ApiError::bad_request)
}

fn body_str(body: &Value, key: &str) -> Option<String> {
    body.get(key).and_then(Value::as_str).map(String::from)
}

/// Tags: a comma-separated string (RabbitMQ's API) or a list.
fn body_tags(body: &Value) -> Vec<String> {
    match body.get("tags") {
        Some(Value::String(s)) => s.split(',').map(str::trim).filter(|t| !t.is_empty()).map(String::from).collect(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(String::from).collect(),
        _ => Vec::new(),
    }
}

/// A PUT: `edit` creates or changes the object; 201 if it is new, else 204.
async fn store(b: &Broker, created: bool, edit: impl FnOnce(&mut Definitions)) -> ApiResult<Response> {
    change(b, |d| {
        edit(d);
        Ok(())
    })
    .await?;
    Ok(created_or_updated(created))
}

/// A DELETE: 404 unless the object exists, else `edit` removes it (204).
async fn remove(b: &Broker, exists: bool, edit: impl FnOnce(&mut Definitions)) -> ApiResult<Response> {
    if !exists {
        return Err(ApiError::not_found());
    }
    change(b, |d| {
        edit(d);
        Ok(())
    })
    .await?;
    Ok(no_content())
}

async fn whoami(c: Caller) -> Json<Value> {
    Json(json!({"name": c.name, "tags": c.tags}))
}

async fn export(State(b): B, c: Caller) -> ApiResult<Json<Value>> {
    c.administrator()?;
    Ok(Json(b.export_definitions()))
}

async fn import(State(b): B, c: Caller, body: String) -> ApiResult<Response> {
    c.administrator()?;
    let d = Definitions::parse(&body).map_err(ApiError::bad_request)?;
    let topologies = crate::definitions::parse_topologies(&body).map_err(ApiError::bad_request)?;
    change(&b, |cur| {
        cur.upsert(d);
        Ok(())
    })
    .await?;
    import_topologies(&b, topologies)
}

fn import_topologies(b: &Broker, topologies: crate::definitions::Topologies) -> ApiResult<Response> {
    let errors = b.import_topologies(topologies);
    if !errors.is_empty() {
        return Err(ApiError::bad_request(errors.join("; ")));
    }
    Ok(no_content())
}

/// The sections of a per-vhost definitions file (RabbitMQ's `/api/definitions/{vhost}`).
const VHOST_SECTIONS: [&str; 5] = ["parameters", "policies", "queues", "exchanges", "bindings"];

/// `GET /api/definitions/{vhost}`: that vhost's parameters and policies, and its queues,
/// exchanges and bindings without their `vhost` fields (RabbitMQ's per-vhost layout).
async fn export_vhost(State(b): B, c: Caller, Path(vhost): Path<String>) -> ApiResult<Json<Value>> {
    c.administrator()?;
    if b.definitions().vhost(&vhost).is_none() {
        return Err(ApiError::bad_request("vhost_not_found"));
    }
    let all = b.export_definitions();
    let mut out = Map::new();
    out.insert("rabbit_version".into(), all["rabbit_version"].clone());
    for section in VHOST_SECTIONS {
        let keep_vhost = matches!(section, "parameters" | "policies");
        let entries = all[section].as_array().into_iter().flatten().filter(|e| e["vhost"] == vhost.as_str());
        let entries = entries
            .map(|e| {
                let mut e = e.clone();
                if let (false, Some(m)) = (keep_vhost, e.as_object_mut()) {
                    m.remove("vhost");
                }
                e
            })
            .collect();
        out.insert(section.into(), Value::Array(entries));
    }
    Ok(Json(Value::Object(out)))
}

/// `POST /api/definitions/{vhost}`: the per-vhost sections of a definitions file, all put in
/// this vhost whatever vhost they name; users, vhosts and permissions in it are ignored.
async fn import_vhost(State(b): B, c: Caller, Path(vhost): Path<String>, body: String) -> ApiResult<Response> {
    c.administrator()?;
    if b.definitions().vhost(&vhost).is_none() {
        return Err(ApiError { status: StatusCode::NOT_FOUND, error: "not_found", reason: "vhost_not_found".into() });
    }
    let Ok(Value::Object(top)) = serde_json::from_str::<Value>(&body) else {
        return Err(ApiError::bad_request("failed_to_parse_json"));
    };
    let mut file = Map::new();
    for section in VHOST_SECTIONS {
        let mut entries = top.get(section).and_then(Value::as_array).cloned().unwrap_or_default();
        for e in entries.iter_mut().filter_map(Value::as_object_mut) {
            e.insert("vhost".into(), vhost.as_str().into());
        }
        file.insert(section.into(), Value::Array(entries));
    }
    let text = Value::Object(file).to_string();
    let parsed = Definitions::parse(&text).map_err(ApiError::bad_request)?;
    let topologies = crate::definitions::parse_topologies(&text).map_err(ApiError::bad_request)?;
    change(&b, |d| {
        // Limits come as a vhost-limits parameter: they change the vhost's limits, nothing else.
        if let (Some(new), Some(v)) = (parsed.vhost(&vhost), d.vhosts.iter_mut().find(|v| v.name == vhost)) {
            v.limits = new.limits;
        }
        for p in parsed.policies {
            d.put_policy(p);
        }
        Ok(())
    })
    .await?;
    import_topologies(&b, topologies)
}

// ---- vhosts ---------------------------------------------------------------------------------

fn vhost_json(v: &VHostDef) -> Value {
    let dqt = v.default_queue_type.clone().unwrap_or_else(|| "undefined".into());
    json!({
        "name": v.name, "description": v.description, "tags": v.tags, "default_queue_type": dqt,
        "metadata": {"description": v.description, "tags": v.tags, "default_queue_type": dqt},
        "tracing": false, "cluster_state": {super::objects::NODE: "running"},
    })
}

async fn vhosts(State(b): B, _c: Caller, st: super::rates::Stats, Query(p): Params) -> ApiResult<Json<Value>> {
    let defs = b.definitions().vhosts.clone();
    let mut out = Vec::new();
    for v in &defs {
        out.push(super::objects::with_vhost_stats(&b, vhost_json(v), &st).await);
    }
    Ok(Json(list(out, &p)?))
}

async fn vhost(State(b): B, _c: Caller, st: super::rates::Stats, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    let v = b.definitions().vhost(&name).map(vhost_json).ok_or_else(ApiError::not_found)?;
    Ok(Json(super::objects::with_vhost_stats(&b, v, &st).await))
}

async fn put_vhost(State(b): B, c: Caller, Path(name): Path<String>, body: Option<Json<Value>>) -> ApiResult<Response> {
    c.administrator()?;
    let body = body.map(|Json(v)| v).unwrap_or(Value::Null);
    let dqt = body_str(&body, "default_queue_type").filter(|t| t != "undefined");
    if let Some(t) = &dqt
        && t != "classic"
        && t != "quorum"
    {
        return Err(ApiError::bad_request(format!("unsupported default queue type '{t}' (classic or quorum)")));
    }
    let created = b.definitions().vhost(&name).is_none();
    store(&b, created, |d| {
        let limits = d.vhost(&name).map(|v| v.limits).unwrap_or_default();
        d.put_vhost(VHostDef {
            name: name.clone(),
            description: body_str(&body, "description").unwrap_or_default(),
            tags: body_tags(&body),
            default_queue_type: dqt,
            limits,
        });
        // The user who creates a vhost gets full permissions on it (as the management UI does).
        if created && !d.permissions.iter().any(|p| p.user == c.name && p.vhost == name) {
            d.put_permission(PermissionConfig {
                user: c.name.clone(),
                vhost: name.clone(),
                configure: ".*".into(),
                write: ".*".into(),
                read: ".*".into(),
            });
        }
    })
    .await
}

async fn delete_vhost(State(b): B, c: Caller, Path(name): Path<String>) -> ApiResult<Response> {
    c.administrator()?;
    remove(&b, b.definitions().vhost(&name).is_some(), |d| {
        d.remove_vhost(&name);
    })
    .await
}

// ---- users ----------------------------------------------------------------------------------

fn user_json(u: &UserDef) -> Value {
    json!({
        "name": u.name, "password_hash": u.password_hash.clone().unwrap_or_default(),
        "hashing_algorithm": u.hashing_algorithm, "tags": u.tags, "limits": u.limits.to_map(),
    })
}

async fn users(State(b): B, c: Caller, Query(p): Params) -> ApiResult<Json<Value>> {
    c.administrator()?;
    Ok(Json(list(b.definitions().users.iter().map(user_json).collect(), &p)?))
}

async fn user(State(b): B, c: Caller, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    c.administrator()?;
    b.definitions().user(&name).map(|u| Json(user_json(u))).ok_or_else(ApiError::not_found)
}

async fn put_user(State(b): B, c: Caller, Path(name): Path<String>, Json(body): Json<Value>) -> ApiResult<Response> {
    use crate::auth::hashing::{HashingAlgorithm, PasswordHash};
    c.administrator()?;
    let algorithm_name =
        body_str(&body, "hashing_algorithm").unwrap_or_else(|| "rabbit_password_hashing_sha256".to_string());
    let algorithm = HashingAlgorithm::parse(&algorithm_name)
        .ok_or_else(|| ApiError::bad_request(format!("unknown hashing algorithm '{algorithm_name}'")))?;
    let password_hash = match (body_str(&body, "password"), body.get("password_hash")) {
        (Some(p), _) => Some(PasswordHash::generate(algorithm, &p).encode()),
        (None, Some(Value::String(h))) if h.is_empty() => None,
        (None, Some(Value::String(h))) => Some(h.clone()),
        _ => return Err(ApiError::bad_request("password or password_hash must be set")),
    };
    let created = b.definitions().user(&name).is_none();
    store(&b, created, |d| {
        let limits = d.user(&name).map(|u| u.limits).unwrap_or_default();
        d.put_user(UserDef {
            name: name.clone(),
            password_hash,
            hashing_algorithm: algorithm_name,
            tags: body_tags(&body),
            limits,
        });
    })
    .await
}

async fn delete_user(State(b): B, c: Caller, Path(name): Path<String>) -> ApiResult<Response> {
    c.administrator()?;
    remove(&b, b.definitions().user(&name).is_some(), |d| {
        d.remove_user(&name);
    })
    .await
}

// ---- permissions ----------------------------------------------------------------------------

fn permission_json(p: &PermissionConfig) -> Value {
    json!({"user": p.user, "vhost": p.vhost, "configure": p.configure, "write": p.write, "read": p.read})
}

async fn permissions(State(b): B, c: Caller, Query(p): Params) -> ApiResult<Json<Value>> {
    c.administrator()?;
    Ok(Json(list(b.definitions().permissions.iter().map(permission_json).collect(), &p)?))
}

/// The permissions in one vhost (`by_vhost`) or of one user; 404 when it does not exist.
async fn permissions_of(State(b): B, c: Caller, name: String, by_vhost: bool) -> ApiResult<Json<Value>> {
    c.administrator()?;
    let d = b.definitions();
    let exists = if by_vhost { d.vhost(&name).is_some() } else { d.user(&name).is_some() };
    if !exists {
        return Err(ApiError::not_found());
    }
    let list = d
        .permissions
        .iter()
        .filter(|p| if by_vhost { p.vhost == name } else { p.user == name })
        .map(permission_json)
        .collect();
    Ok(Json(Value::Array(list)))
}

async fn permission(State(b): B, c: Caller, Path((vhost, user)): Path<(String, String)>) -> ApiResult<Json<Value>> {
    c.administrator()?;
    let d = b.definitions();
    d.permissions
        .iter()
        .find(|p| p.vhost == vhost && p.user == user)
        .map(|p| Json(permission_json(p)))
        .ok_or_else(ApiError::not_found)
}

/// The vhost and the user must exist (404 otherwise).
fn both_exist(b: &Broker, vhost: &str, user: &str) -> ApiResult<()> {
    let d = b.definitions();
    if d.vhost(vhost).is_none() || d.user(user).is_none() {
        return Err(ApiError::not_found());
    }
    Ok(())
}

async fn put_permission(
    State(b): B,
    c: Caller,
    Path((vhost, user)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> ApiResult<Response> {
    c.administrator()?;
    both_exist(&b, &vhost, &user)?;
    let field = |k: &str| body_str(&body, k).ok_or_else(|| ApiError::bad_request(format!("{k} must be set")));
    let p = PermissionConfig {
        user: user.clone(),
        vhost: vhost.clone(),
        configure: field("configure")?,
        write: field("write")?,
        read: field("read")?,
    };
    let created = !b.definitions().permissions.iter().any(|x| x.vhost == vhost && x.user == user);
    store(&b, created, |d| {
        d.put_permission(p);
    })
    .await
}

async fn delete_permission(State(b): B, c: Caller, Path((vhost, user)): Path<(String, String)>) -> ApiResult<Response> {
    c.administrator()?;
    let exists = b.definitions().permissions.iter().any(|x| x.vhost == vhost && x.user == user);
    remove(&b, exists, |d| {
        d.permissions.retain(|x| !(x.vhost == vhost && x.user == user));
        d.topic_permissions.retain(|x| !(x.vhost == vhost && x.user == user));
    })
    .await
}

fn topic_json(p: &TopicPermissionConfig) -> Value {
    json!({"user": p.user, "vhost": p.vhost, "exchange": p.exchange, "write": p.write, "read": p.read})
}

async fn topic_permissions(State(b): B, c: Caller) -> ApiResult<Json<Value>> {
    c.administrator()?;
    Ok(Json(Value::Array(b.definitions().topic_permissions.iter().map(topic_json).collect())))
}

async fn topic_permission(
    State(b): B,
    c: Caller,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    c.administrator()?;
    let d = b.definitions();
    let list: Vec<Value> =
        d.topic_permissions.iter().filter(|p| p.vhost == vhost && p.user == user).map(topic_json).collect();
    if list.is_empty() {
        return Err(ApiError::not_found());
    }
    Ok(Json(Value::Array(list)))
}

async fn put_topic_permission(
    State(b): B,
    c: Caller,
    Path((vhost, user)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> ApiResult<Response> {
    c.administrator()?;
    both_exist(&b, &vhost, &user)?;
    let field = |k: &str| body_str(&body, k).ok_or_else(|| ApiError::bad_request(format!("{k} must be set")));
    let t = TopicPermissionConfig {
        user: user.clone(),
        vhost: vhost.clone(),
        exchange: field("exchange")?,
        write: field("write")?,
        read: field("read")?,
    };
    let created = !b
        .definitions()
        .topic_permissions
        .iter()
        .any(|x| (&x.vhost, &x.user, &x.exchange) == (&vhost, &user, &t.exchange));
    store(&b, created, |d| {
        d.put_topic_permission(t);
    })
    .await
}

async fn delete_topic_permission(
    State(b): B,
    c: Caller,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult<Response> {
    c.administrator()?;
    let exists = b.definitions().topic_permissions.iter().any(|x| x.vhost == vhost && x.user == user);
    remove(&b, exists, |d| {
        d.topic_permissions.retain(|x| !(x.vhost == vhost && x.user == user));
    })
    .await
}

// ---- policies -------------------------------------------------------------------------------

fn policy_json(p: &PolicyDef) -> Value {
    json!({
        "vhost": p.vhost, "name": p.name, "pattern": p.pattern, "apply-to": p.apply_to,
        "definition": p.definition, "priority": p.priority,
    })
}

async fn policies(State(b): B, _c: Caller, vhost: Option<String>, operator: bool) -> ApiResult<Json<Value>> {
    let d = b.definitions();
    if let Some(v) = &vhost
        && d.vhost(v).is_none()
    {
        return Err(ApiError::not_found());
    }
    let list = d
        .policies
        .iter()
        .filter(|p| p.operator == operator && vhost.as_ref().is_none_or(|v| &p.vhost == v))
        .map(policy_json)
        .collect();
    Ok(Json(Value::Array(list)))
}

async fn policy(
    State(b): B,
    _c: Caller,
    Path((vhost, name)): Path<(String, String)>,
    operator: bool,
) -> ApiResult<Json<Value>> {
    let d = b.definitions();
    d.policies
        .iter()
        .find(|p| p.operator == operator && p.vhost == vhost && p.name == name)
        .map(|p| Json(policy_json(p)))
        .ok_or_else(ApiError::not_found)
}

async fn put_policy(
    State(b): B,
    c: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Json(body): Json<Value>,
    operator: bool,
) -> ApiResult<Response> {
    if operator {
        c.administrator()?;
    } else {
        c.policymaker()?;
    }
    write_policy(&b, vhost, name, body, operator).await
}

/// Create or replace a policy (the caller's tags already checked).
async fn write_policy(b: &Broker, vhost: String, name: String, body: Value, operator: bool) -> ApiResult<Response> {
    if b.definitions().vhost(&vhost).is_none() {
        return Err(ApiError::not_found());
    }
    let invalid = |e: String| ApiError::bad_request(format!("Validation failed\n\n{e}\n"));
    let wrapped = json!({"vhost": vhost, "name": name, "pattern": body.get("pattern"), "apply-to": body.get("apply-to"),
        "definition": body.get("definition"), "priority": body.get("priority")});
    let parsed = Definitions::parse(&json!({"policies": [wrapped]}).to_string()).map_err(invalid)?;
    let mut p = parsed.policies.into_iter().next().ok_or_else(|| invalid("no policy provided".into()))?;
    p.operator = operator;
    // Validated alone first, for RabbitMQ's message without a prefix.
    crate::queue::policy::Policy::new(&p.name, &p.pattern, &p.apply_to, p.priority, p.definition.clone(), operator)
        .map_err(invalid)?;
    let created =
        !b.definitions().policies.iter().any(|x| x.operator == operator && x.vhost == vhost && x.name == name);
    store(b, created, |d| {
        d.put_policy(p);
    })
    .await
}

async fn delete_policy(
    State(b): B,
    c: Caller,
    Path((vhost, name)): Path<(String, String)>,
    operator: bool,
) -> ApiResult<Response> {
    if operator {
        c.administrator()?;
    } else {
        c.policymaker()?;
    }
    drop_policy(&b, vhost, name, operator).await
}

/// Delete a policy (the caller's tags already checked): 404 unless it exists.
async fn drop_policy(b: &Broker, vhost: String, name: String, operator: bool) -> ApiResult<Response> {
    let exists = b.definitions().policies.iter().any(|x| x.operator == operator && x.vhost == vhost && x.name == name);
    remove(b, exists, |d| {
        d.policies.retain(|x| !(x.operator == operator && x.vhost == vhost && x.name == name));
    })
    .await
}

// ---- limits ---------------------------------------------------------------------------------

fn limit_value(body: &Value) -> ApiResult<Option<u64>> {
    match body.get("value").and_then(Value::as_i64) {
        Some(n) if n < 0 => Ok(None),
        Some(n) => Ok(Some(n as u64)),
        None => Err(ApiError::bad_request("value must be an integer")),
    }
}

/// Whose limits: a vhost's or a user's.
#[derive(Clone, Copy)]
enum Owner {
    VHost,
    User,
}

impl Owner {
    fn key(self) -> &'static str {
        match self {
            Owner::VHost => "vhost",
            Owner::User => "user",
        }
    }

    /// Every (owner name, its limits as JSON) of `d`.
    fn all(self, d: &Definitions) -> Vec<(String, Map<String, Value>)> {
        match self {
            Owner::VHost => d.vhosts.iter().map(|v| (v.name.clone(), v.limits.to_map())).collect(),
            Owner::User => d.users.iter().map(|u| (u.name.clone(), u.limits.to_map())).collect(),
        }
    }

    fn limits_of<'a>(self, d: &'a mut Definitions, name: &str) -> Option<&'a mut dyn Limits> {
        match self {
            Owner::VHost => d.vhosts.iter_mut().find(|v| v.name == name).map(|v| &mut v.limits as &mut dyn Limits),
            Owner::User => d.users.iter_mut().find(|u| u.name == name).map(|u| &mut u.limits as &mut dyn Limits),
        }
    }
}

/// `GET /api/{vhost,user}-limits[/{name}]`: owners with at least one limit set.
async fn limits(b: &Broker, owner: Owner, name: Option<String>) -> ApiResult<Json<Value>> {
    let all = owner.all(&b.definitions());
    if let Some(n) = &name
        && !all.iter().any(|(o, _)| o == n)
    {
        return Err(ApiError::not_found());
    }
    let list = all
        .into_iter()
        .filter(|(o, m)| !m.is_empty() && name.as_ref().is_none_or(|n| n == o))
        .map(|(o, m)| json!({owner.key(): o, "value": m}))
        .collect();
    Ok(Json(Value::Array(list)))
}

/// Set (`Some`) or clear (`None`) one limit.
async fn set_limit(b: &Broker, owner: Owner, name: &str, key: &str, value: Option<u64>) -> ApiResult<()> {
    let mut probe = b.definitions();
    let Some(l) = owner.limits_of(&mut probe, name) else { return Err(ApiError::not_found()) };
    if l.slot(key).is_none() {
        return Err(ApiError::bad_request(format!("unknown limit '{key}'")));
    }
    change(b, |d| {
        let slot = owner.limits_of(d, name).and_then(|l| l.slot(key)).ok_or("it is gone")?;
        *slot = value;
        Ok(())
    })
    .await
}

async fn get_limits(State(b): B, c: Caller, name: Option<String>, owner: Owner) -> ApiResult<Json<Value>> {
    if matches!(owner, Owner::User) {
        c.administrator()?;
    }
    limits(&b, owner, name).await
}

async fn put_limit(
    State(b): B,
    c: Caller,
    Path((name, key)): Path<(String, String)>,
    Json(body): Json<Value>,
    owner: Owner,
) -> ApiResult<Response> {
    c.administrator()?;
    set_limit(&b, owner, &name, &key, limit_value(&body)?).await?;
    Ok(no_content())
}

async fn delete_limit(
    State(b): B,
    c: Caller,
    Path((name, key)): Path<(String, String)>,
    owner: Owner,
) -> ApiResult<Response> {
    c.administrator()?;
    set_limit(&b, owner, &name, &key, None).await?;
    Ok(no_content())
}

// ---- vhost start, users without permissions, bulk delete --------------------------------------

/// `POST /api/vhosts/{vhost}/start/{node}`: Warren's vhosts always run, so this only checks
/// the names (RabbitMQ's 400 texts for an unknown node or vhost).
async fn start_vhost(State(b): B, c: Caller, Path((vhost, node)): Path<(String, String)>) -> ApiResult<Response> {
    c.administrator()?;
    if node != super::objects::NODE {
        return Err(ApiError::bad_request(format!("Request to node {node} failed with nodedown")));
    }
    if b.definitions().vhost(&vhost).is_none() {
        return Err(ApiError::bad_request(format!(
            "Request to node {node} failed with {{no_such_vhost,<<\"{vhost}\">>}}"
        )));
    }
    Ok(no_content())
}

async fn users_without_permissions(State(b): B, c: Caller) -> ApiResult<Json<Value>> {
    c.administrator()?;
    let d = b.definitions();
    let list = d.users.iter().filter(|u| !d.permissions.iter().any(|p| p.user == u.name)).map(user_json).collect();
    Ok(Json(Value::Array(list)))
}

/// `POST /api/users/bulk-delete` with `{"users": [...]}`: deletes them in order; at the first
/// user that does not exist it stops (those before it stay deleted) and answers 400
/// `["no_such_user", name]`, as RabbitMQ.
async fn bulk_delete_users(State(b): B, c: Caller, body: String) -> ApiResult<Response> {
    c.administrator()?;
    let body: Value = serde_json::from_str(&body).map_err(|_| ApiError::bad_request("not_json"))?;
    let names = match body.get("users") {
        None => return Err(ApiError::bad_request("[{key_missing,users}]")),
        Some(Value::Array(a)) => a.iter().map(|n| n.as_str().map(String::from)).collect::<Option<Vec<_>>>(),
        Some(_) => None,
    }
    .ok_or_else(|| ApiError::bad_request("users must be a list of names"))?;
    let mut missing = None;
    change(&b, |d| {
        for n in &names {
            if !d.remove_user(n) {
                missing = Some(n.clone());
                break;
            }
        }
        Ok(())
    })
    .await?;
    match missing {
        Some(n) => Ok((StatusCode::BAD_REQUEST, Json(json!({"error": "bad_request", "reason": ["no_such_user", n]})))
            .into_response()),
        None => Ok(no_content()),
    }
}

// ---- runtime parameters -----------------------------------------------------------------------

/// The runtime parameters Warren has, as RabbitMQ lists them: each vhost's limits
/// (`vhost-limits`), operator policies (`operator_policy`) and policies (`policy`, listed only
/// when asked for by component). Other components (federation, shovel) are unknown here, as on
/// a RabbitMQ without those plugins.
fn parameter_list(d: &Definitions) -> Vec<(&'static str, Value)> {
    let mut out = Vec::new();
    for v in d.vhosts.iter().filter(|v| !v.limits.to_map().is_empty()) {
        let p = json!({"value": v.limits.to_map(), "vhost": v.name, "component": "vhost-limits", "name": "limits"});
        out.push(("vhost-limits", p));
    }
    for p in &d.policies {
        let mut value = policy_json(p);
        if let Some(m) = value.as_object_mut() {
            m.remove("vhost");
            m.remove("name");
        }
        let component = if p.operator { "operator_policy" } else { "policy" };
        out.push((component, json!({"value": value, "vhost": p.vhost, "component": component, "name": p.name})));
    }
    out
}

async fn parameters(
    State(b): B,
    c: Caller,
    component: Option<String>,
    vhost: Option<String>,
) -> ApiResult<Json<Value>> {
    c.policymaker()?;
    let d = b.definitions();
    if let Some(v) = &vhost
        && d.vhost(v).is_none()
    {
        return Err(ApiError::not_found());
    }
    let list = parameter_list(&d)
        .into_iter()
        .filter(|(k, p)| match &component {
            Some(c) => k == c && vhost.as_ref().is_none_or(|v| p["vhost"] == v.as_str()),
            None => *k != "policy",
        })
        .map(|(_, p)| p)
        .collect();
    Ok(Json(Value::Array(list)))
}

async fn parameter(
    State(b): B,
    c: Caller,
    Path((component, vhost, name)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    c.policymaker()?;
    parameter_list(&b.definitions())
        .into_iter()
        .find(|(k, p)| *k == component && p["vhost"] == vhost.as_str() && p["name"] == name.as_str())
        .map(|(_, p)| Json(p))
        .ok_or_else(ApiError::not_found)
}

fn validation_failed(why: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("Validation failed\n\n{why}\n"))
}

async fn put_parameter(
    b: B,
    c: Caller,
    Path((component, vhost, name)): Path<(String, String, String)>,
    Json(body): Json<Value>,
) -> ApiResult<Response> {
    c.policymaker()?;
    if b.definitions().vhost(&vhost).is_none() {
        return Err(ApiError { status: StatusCode::NOT_FOUND, error: "not_found", reason: "vhost_not_found".into() });
    }
    let value = body.get("value").cloned().ok_or_else(|| ApiError::bad_request("[{key_missing,value}]"))?;
    match component.as_str() {
        "vhost-limits" => {
            let obj = value.as_object().ok_or_else(|| validation_failed("limits must be an object"))?;
            let mut limits = crate::definitions::VHostLimits::default();
            for (k, v) in obj {
                let n = v.as_i64().ok_or_else(|| validation_failed(format!("{k}: {v} is not an integer")))?;
                let slot =
                    limits.slot(k).ok_or_else(|| validation_failed(format!("Unrecognised terms {k} in limits")))?;
                *slot = u64::try_from(n).ok();
            }
            let created = b.definitions().vhost(&vhost).is_some_and(|v| v.limits.to_map().is_empty());
            change(&b, |d| {
                let v = d.vhosts.iter_mut().find(|v| v.name == vhost).ok_or("the vhost is gone")?;
                v.limits = limits;
                Ok(())
            })
            .await?;
            Ok(created_or_updated(created))
        }
        "operator_policy" => {
            if value.get("priority").is_none() {
                return Err(validation_failed(format!("Key \"priority\" not found in {name}")));
            }
            write_policy(&b, vhost, name, value, true).await
        }
        "policy" => Err(ApiError::bad_request("policies may not be set using this method")),
        other => Err(validation_failed(format!("component {other} not found"))),
    }
}

async fn delete_parameter(
    b: B,
    c: Caller,
    Path((component, vhost, name)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    c.policymaker()?;
    match component.as_str() {
        "vhost-limits" if name == "limits" => {
            let exists = b.definitions().vhost(&vhost).is_some_and(|v| !v.limits.to_map().is_empty());
            remove(&b, exists, |d| {
                if let Some(v) = d.vhosts.iter_mut().find(|v| v.name == vhost) {
                    v.limits = Default::default();
                }
            })
            .await
        }
        "operator_policy" => drop_policy(&b, vhost, name, true).await,
        "policy" => Err(ApiError::bad_request("policies may not be set using this method")),
        _ => Err(ApiError::not_found()),
    }
}

// ---- global parameters and the cluster name ---------------------------------------------------

async fn global_parameters(State(b): B, c: Caller) -> ApiResult<Json<Value>> {
    c.policymaker()?;
    let d = b.definitions();
    Ok(Json(Value::Array(d.global_parameters.iter().map(|(n, v)| json!({"name": n, "value": v})).collect())))
}

async fn global_parameter(State(b): B, c: Caller, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    c.policymaker()?;
    let d = b.definitions();
    let value = d.global_parameter(&name).ok_or_else(ApiError::not_found)?;
    Ok(Json(json!({"value": value, "name": name})))
}

async fn put_global_parameter(
    State(b): B,
    c: Caller,
    Path(name): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult<Response> {
    c.policymaker()?;
    let value = body.get("value").cloned().ok_or_else(|| ApiError::bad_request("[{key_missing,value}]"))?;
    let created = b.definitions().global_parameter(&name).is_none();
    store(&b, created, |d| d.put_global_parameter(&name, value)).await
}

async fn delete_global_parameter(State(b): B, c: Caller, Path(name): Path<String>) -> ApiResult<Response> {
    c.policymaker()?;
    remove(&b, b.definitions().global_parameter(&name).is_some(), |d| {
        d.global_parameters.retain(|(n, _)| *n != name);
    })
    .await
}

/// The cluster name: the `cluster_name` global parameter, else the node's name (RabbitMQ's
/// default).
pub(super) fn cluster_name_of(b: &Broker) -> String {
    match b.definitions().global_parameter("cluster_name") {
        Some(Value::String(s)) => s.clone(),
        _ => super::objects::NODE.to_string(),
    }
}

async fn cluster_name(State(b): B, _c: Caller) -> Json<Value> {
    Json(json!({"name": cluster_name_of(&b)}))
}

async fn put_cluster_name(State(b): B, c: Caller, Json(body): Json<Value>) -> ApiResult<Response> {
    c.administrator()?;
    let name = body_str(&body, "name").ok_or_else(|| ApiError::bad_request("[{key_missing,name}]"))?;
    change(&b, |d| {
        d.put_global_parameter("cluster_name", Value::String(name));
        Ok(())
    })
    .await?;
    Ok(no_content())
}
