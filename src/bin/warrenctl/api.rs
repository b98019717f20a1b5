//! The management API client: blocking HTTP with Basic auth, paths built from percent-encoded
//! names, and every failure turned into a [`Failure`] with rabbitmqctl's exit code.

use std::time::Duration;

use base64::Engine;
use serde_json::Value;

/// Exit codes (BSD sysexits, as rabbitmqctl uses them).
pub mod exit {
    pub const USAGE: i32 = 64;
    pub const DATA: i32 = 65;
    pub const UNAVAILABLE: i32 = 69;
    pub const SOFTWARE: i32 = 70;
    pub const CANT_CREATE: i32 = 73;
    pub const TEMP_FAIL: i32 = 75;
    pub const NO_PERM: i32 = 77;
}

/// Why a command failed: the message for standard error and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
    /// The HTTP status when the API answered with an error (0 otherwise).
    pub status: u16,
}

impl Failure {
    pub fn new(code: i32, message: impl Into<String>) -> Failure {
        Failure { code, message: message.into(), status: 0 }
    }

    /// Bad input from the user (65).
    pub fn data(message: impl Into<String>) -> Failure {
        Failure::new(exit::DATA, message)
    }
}

pub type Result<T> = std::result::Result<T, Failure>;

/// One path segment: every byte but RFC 3986's unreserved characters percent-encoded, so `/`
/// in a vhost is `%2F`. `.` and `..` alone would be removed by URL normalisation, and an empty
/// name addresses nothing: those are refused.
pub fn segment(name: &str) -> Result<String> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(Failure::data(format!("the name '{name}' cannot be addressed through the HTTP API")));
    }
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    Ok(out)
}

/// `template` with each `{}` replaced by the next name, encoded by [`segment`]:
/// `path("/api/queues/{}/{}", &["/", "q"])` is `/api/queues/%2F/q`.
pub fn path(template: &str, names: &[&str]) -> Result<String> {
    let mut parts = template.split("{}");
    let mut out = parts.next().unwrap_or_default().to_string();
    for (part, name) in parts.zip(names) {
        out.push_str(&segment(name)?);
        out.push_str(part);
    }
    Ok(out)
}

pub struct Api {
    base: String,
    authorization: String,
    agent: ureq::Agent,
}

impl Api {
    pub fn new(url: &str, user: &str, password: &str, timeout: Duration) -> Api {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Api {
            base: url.trim_end_matches('/').to_string(),
            authorization: format!("Basic {token}"),
            agent: ureq::AgentBuilder::new().timeout(timeout).redirects(0).build(),
        }
    }

    /// Send a request; the JSON answer (Null when empty) of a 2xx, else a [`Failure`].
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>, headers: &[(&str, &str)]) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.request(method, &url).set("authorization", &self.authorization);
        for (k, v) in headers {
            req = req.set(k, v);
        }
        let res = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        let res = match res {
            Ok(r) => r,
            Err(ureq::Error::Status(status, r)) => return Err(refusal(method, path, status, r)),
            Err(ureq::Error::Transport(t)) => {
                let code = match t.kind() {
                    ureq::ErrorKind::InvalidUrl | ureq::ErrorKind::UnknownScheme => exit::USAGE,
                    _ => exit::UNAVAILABLE,
                };
                return Err(Failure::new(code, format!("cannot reach the management API: {t}")));
            }
        };
        let text = res
            .into_string()
            .map_err(|e| Failure::new(exit::UNAVAILABLE, format!("{method} {path}: reading the answer: {e}")))?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text)
            .map_err(|e| Failure::new(exit::SOFTWARE, format!("{method} {path}: the answer is not JSON: {e}")))
    }

    pub fn get(&self, path: &str) -> Result<Value> {
        self.request("GET", path, None, &[])
    }

    pub fn put(&self, path: &str, body: &Value) -> Result<Value> {
        self.request("PUT", path, Some(body), &[])
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.request("POST", path, Some(body), &[])
    }

    pub fn delete(&self, path: &str) -> Result<Value> {
        self.request("DELETE", path, None, &[])
    }
}

/// A non-2xx answer: the API's `reason` (RabbitMQ's `{"error": …, "reason": …}`) and the exit
/// code for its status.
fn refusal(method: &str, path: &str, status: u16, r: ureq::Response) -> Failure {
    let body: Value = r.into_string().ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(Value::Null);
    let reason = ["reason", "error"]
        .iter()
        .find_map(|k| body.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()))
        .unwrap_or("no reason given");
    // One line (RabbitMQ's validation reasons span several).
    let reason: Vec<&str> = reason.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let reason = reason.join(": ");
    let code = match status {
        400 | 404 | 409 => exit::DATA,
        401 | 403 => exit::NO_PERM,
        502..=504 => exit::UNAVAILABLE,
        _ => exit::SOFTWARE,
    };
    Failure { code, message: format!("{reason} ({status} on {method} {path})"), status }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_percent_encoded_segments() {
        assert_eq!(path("/api/queues/{}/{}", &["/", "a b/c?d#e%f"]).unwrap(), "/api/queues/%2F/a%20b%2Fc%3Fd%23e%25f");
        assert_eq!(path("/api/vhosts/{}", &["ünï.x-y_z~"]).unwrap(), "/api/vhosts/%C3%BCn%C3%AF.x-y_z~");
        assert_eq!(path("/api/bindings/{}/e/{}/q/{}", &["v", "x", "q"]).unwrap(), "/api/bindings/v/e/x/q/q");
        for bad in ["", ".", ".."] {
            assert_eq!(segment(bad).unwrap_err().code, exit::DATA);
        }
        assert_eq!(segment("...").unwrap(), "...");
    }
}
