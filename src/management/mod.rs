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
mod https;
mod messages;
mod objects;
pub mod prometheus;
pub mod rates;
mod tenancy;
mod ui;

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

/// `t` as RabbitMQ writes times in the API: `2026-12-04T04:35:00.800+00:00` (UTC).
pub(crate) fn rfc3339_millis(t: std::time::SystemTime) -> String {
    let ms = t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let (days, rem) = ((ms / 86_400_000) as i64, ms % 86_400_000);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + (month <= 2) as i64;
    let (h, m, s, milli) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}+00:00")
}

/// The node's limits and free disk, for `/api/nodes` and Prometheus.
pub(crate) struct NodeResources {
    /// The memory high watermark (bytes).
    pub mem_limit: u64,
    /// Free bytes on the data directory's file system (0 if unknown).
    pub disk_free: u64,
    /// The open files limit (0 if unknown).
    pub fd_total: u64,
}

pub(crate) fn node_resources(b: &Broker) -> NodeResources {
    use crate::broker::alarm;
    // "Max open files  <soft>  <hard>  files" in /proc/self/limits.
    let fd_total = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            let line = l.lines().find(|l| l.starts_with("Max open files"))?.to_string();
            line["Max open files".len()..].split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0);
    NodeResources {
        mem_limit: alarm::memory_limit(&b.config),
        disk_free: alarm::free_bytes(&b.config.data_dir).unwrap_or(0),
        fd_total,
    }
}

/// Largest request body (a definitions import of a large node); bodies are read only after
/// the request authenticated.
const MAX_BODY: usize = 128 << 20;

/// The API's routes (`rates`: the message-rate sampler, see [`rates`]).
pub fn router(broker: Arc<Broker>, rates: Arc<rates::Rates>) -> Router {
    tenancy::routes()
        .merge(objects::routes())
        .merge(bindings::routes())
        .merge(ui::routes())
        // Unknown paths: RabbitMQ's 404 body.
        .fallback(|| async { ApiError::not_found() })
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

/// Serve the API until the broker shuts down, over HTTPS with `tls`.
pub async fn serve(listener: TcpListener, broker: Arc<Broker>, tls: Option<Arc<crate::tls::Tls>>) {
    use axum::serve::ListenerExt;
    let shutdown = broker.shutdown.clone();
    let rates = rates::Rates::start(&broker);
    let app = router(broker.clone(), rates).into_make_service_with_connect_info::<SocketAddr>();
    let stopped = async move { shutdown.cancelled().await };
    let served = match tls {
        None => axum::serve(listener, app).with_graceful_shutdown(stopped).await,
        Some(tls) => {
            let https = https::HttpsListener::start(listener, tls, &broker);
            // tap_io: axum gives ConnectInfo<SocketAddr> for tapped listeners.
            axum::serve(https.tap_io(|_| ()), app).with_graceful_shutdown(stopped).await
        }
    };
    if let Err(e) = served {
        tracing::error!(error = %e, "the management API stopped");
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn times_are_written_as_rabbitmq_writes_them() {
        let at = |ms| super::rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms));
        assert_eq!(at(1_796_364_825_123), "2026-12-04T06:13:45.123+00:00");
        assert_eq!(at(951_782_400_000), "2000-02-29T00:00:00.000+00:00");
        assert_eq!(at(0), "1970-01-01T00:00:00.000+00:00");
    }
}
