//! The management HTTP API (RabbitMQ's paths, JSON and status codes, measured on RabbitMQ
//! 3.10.8 with `rabbitmq_management`). This first part manages tenancy at runtime: virtual
//! hosts, users, permissions, topic permissions, policies, operator policies, vhost and user
//! limits, and definitions export/import. It sits above the broker and only calls its public
//! API ([`Broker::change`], [`Broker::definitions`]); nothing below imports it.
//!
//! Every request authenticates with HTTP Basic against the broker's users (the loopback rule
//! applies); reading needs one of the management tags, changing users, vhosts, permissions and
//! limits needs `administrator`, changing policies `policymaker` or `administrator`.

mod bindings;
mod messages;
mod objects;
pub mod prometheus;
pub mod rates;
mod tenancy;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::net::TcpListener;

use crate::broker::Broker;

/// An error answered as RabbitMQ does: a status and `{"error": …, "reason": …}`.
#[derive(Debug)]
pub struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) error: &'static str,
    pub(crate) reason: String,
}

impl ApiError {
    fn not_found() -> ApiError {
        ApiError { status: StatusCode::NOT_FOUND, error: "Object Not Found", reason: "Not Found".into() }
    }

    fn bad_request(reason: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::BAD_REQUEST, error: "bad_request", reason: reason.into() }
    }

    pub(crate) fn unauthorised(error: &'static str, reason: &str) -> ApiError {
        ApiError { status: StatusCode::UNAUTHORIZED, error, reason: reason.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(json!({"error": self.error, "reason": self.reason}))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, "Basic realm=\"RabbitMQ Management\"".parse().unwrap());
        }
        r
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The authenticated user of a request and its tags.
pub struct Caller {
    pub name: String,
    pub tags: Vec<String>,
}

impl Caller {
    fn has(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    /// `administrator`, else RabbitMQ's 401 "Not administrator user".
    pub fn administrator(&self) -> ApiResult<()> {
        if self.has("administrator") {
            return Ok(());
        }
        Err(ApiError::unauthorised("not_authorised", "Not administrator user"))
    }

    /// `policymaker` or `administrator`.
    pub fn policymaker(&self) -> ApiResult<()> {
        if self.has("administrator") || self.has("policymaker") {
            return Ok(());
        }
        Err(ApiError::unauthorised("not_authorised", "Not policymaker user"))
    }
}

impl FromRequestParts<Arc<Broker>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, broker: &Arc<Broker>) -> Result<Caller, ApiError> {
        let failed = || ApiError::unauthorised("not_authorized", "Login failed");
        let (user, pass) = basic_credentials(&parts.headers).ok_or_else(failed)?;
        let loopback =
            parts.extensions.get::<ConnectInfo<SocketAddr>>().is_some_and(|ConnectInfo(a)| a.ip().is_loopback());
        let users = broker.users();
        let u = match users.authenticate(&user, &pass, loopback) {
            Ok(u) => u,
            Err(refusal) => {
                tracing::warn!(user = %user, reason = refusal.reason(), "management API login refused");
                // As for AMQP logins: a failed attempt is answered after a delay.
                tokio::time::sleep(broker.config.auth.login_failure_delay()).await;
                return Err(failed());
            }
        };
        let tags = u.tags.clone();
        if !tags.iter().any(|t| ["administrator", "monitoring", "policymaker", "management"].contains(&t.as_str())) {
            return Err(ApiError::unauthorised("not_authorised", "Not management user"));
        }
        Ok(Caller { name: user, tags })
    }
}

fn basic_credentials(h: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine;
    let v = h.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic "))?;
    let raw = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// A boolean of a request body: JSON `true`/`false` or the strings `"true"`/`"false"` (what
/// rabbitmqadmin sends); absent is false, as RabbitMQ's default for `durable`, `auto_delete`
/// and `internal`.
pub(crate) fn body_flag(body: &serde_json::Value, key: &str) -> ApiResult<bool> {
    use serde_json::Value;
    match body.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s == "true" => Ok(true),
        Some(Value::String(s)) if s == "false" => Ok(false),
        Some(other) => Err(ApiError::bad_request(format!("not_boolean: {key} is {other}"))),
    }
}

/// This process's resident memory (bytes) and open file descriptors (Linux; 0 elsewhere).
pub(crate) fn process_usage() -> (u64, u64) {
    let rss = crate::broker::alarm::resident_bytes().unwrap_or(0);
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    (rss, fds)
}

/// Largest request body (a definitions import of a large node); bodies are read only after
/// the request authenticated.
const MAX_BODY: usize = 128 << 20;

/// The API's routes (`rates`: the message-rate sampler, see [`rates`]).
pub fn router(broker: Arc<Broker>, rates: Arc<rates::Rates>) -> Router {
    tenancy::routes()
        .merge(objects::routes())
        .merge(bindings::routes())
        .layer(axum::Extension(rates))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(broker)
}

/// Bind the management listener (`[management] listen` / `--http-listen`); None when off.
pub async fn bind(broker: &Broker) -> std::io::Result<Option<TcpListener>> {
    match broker.config.management.address() {
        Ok(Some(addr)) => TcpListener::bind(addr).await.map(Some),
        Ok(None) => Ok(None),
        Err(e) => Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)),
    }
}

/// Bind the Prometheus listener (`[prometheus] listen` / `--metrics-listen`); None when off.
pub async fn bind_metrics(broker: &Broker) -> std::io::Result<Option<TcpListener>> {
    match crate::config::listen_address("prometheus.listen", &broker.config.prometheus.listen) {
        Ok(Some(addr)) => TcpListener::bind(addr).await.map(Some),
        Ok(None) => Ok(None),
        Err(e) => Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)),
    }
}

/// Serve the API until the broker shuts down.
pub async fn serve(listener: TcpListener, broker: Arc<Broker>) {
    let shutdown = broker.shutdown.clone();
    let rates = rates::Rates::start(&broker);
    let app = router(broker, rates).into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await {
        tracing::error!(error = %e, "the management API stopped");
    }
}
