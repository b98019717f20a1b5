//! `/api/vhosts`, `/api/users`, `/api/permissions`, `/api/topic-permissions`,
//! `/api/policies`, `/api/operator-policies`, `/api/vhost-limits`, `/api/user-limits`,
//! `/api/definitions` and `/api/whoami`. Every change goes through [`Broker::change`]: it is
//! validated as a whole, saved, and in force when the response is sent.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use super::{ApiError, ApiResult, Caller};
use crate::broker::Broker;
use crate::config::{PermissionConfig, TopicPermissionConfig};
use crate::definitions::{Definitions, Limits, PolicyDef, UserDef, VHostDef};

type B = State<Arc<Broker>>;

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/api/whoami", get(whoami))
        .route("/api/definitions", get(export).post(import))
        .route("/api/vhosts", get(vhosts))
        .route("/api/vhosts/{vhost}", get(vhost).put(put_vhost).delete(delete_vhost))
        .route("/api/users", get(users))
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
    let errors = b.import_topologies(topologies);
    if !errors.is_empty() {
        return Err(ApiError::bad_request(errors.join("; ")));
    }
    Ok(no_content())
}

// ---- vhosts ---------------------------------------------------------------------------------

fn vhost_json(v: &VHostDef) -> Value {
    let dqt = v.default_queue_type.clone().unwrap_or_else(|| "undefined".into());
    json!({
        "name": v.name, "description": v.description, "tags": v.tags, "default_queue_type": dqt,
        "metadata": {"description": v.description, "tags": v.tags, "default_queue_type": dqt},
        "tracing": false,
    })
}

async fn vhosts(State(b): B, _c: Caller, st: super::rates::Stats) -> Json<Value> {
    let defs = b.definitions().vhosts.clone();
    let mut out = Vec::new();
    for v in &defs {
        out.push(super::objects::with_vhost_stats(&b, vhost_json(v), &st).await);
    }
    Json(Value::Array(out))
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

async fn users(State(b): B, c: Caller) -> ApiResult<Json<Value>> {
    c.administrator()?;
    Ok(Json(Value::Array(b.definitions().users.iter().map(user_json).collect())))
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

async fn permissions(State(b): B, c: Caller) -> ApiResult<Json<Value>> {
    c.administrator()?;
    Ok(Json(Value::Array(b.definitions().permissions.iter().map(permission_json).collect())))
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
    store(&b, created, |d| {
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
    let exists = b.definitions().policies.iter().any(|x| x.operator == operator && x.vhost == vhost && x.name == name);
    remove(&b, exists, |d| {
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
