//! `amqp://user:pass@host:port/vhost` URIs (RabbitMQ's URI spec; no TLS, query ignored), and
//! the stream protocol's `rabbitmq-stream://user:pass@host:port/vhost` of the same shape.

use crate::error::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpUri {
    pub user: String,
    pub pass: String,
    pub host: String,
    pub port: u16,
    pub vhost: String,
}

fn decode(s: &str) -> Result<String, Error> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or_else(|| Error::Uri(format!("bad escape in {s:?}")))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| Error::Uri(format!("bad escape in {s:?}")))?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| Error::Uri(format!("{s:?} is not UTF-8 once decoded")))
}

impl AmqpUri {
    pub fn parse(uri: &str) -> Result<Self, Error> {
        Self::parse_scheme(uri, "amqp", 5672)
    }

    /// A stream-protocol URI: `rabbitmq-stream://user:pass@host:port/vhost` (port 5552 by default).
    pub fn parse_stream(uri: &str) -> Result<Self, Error> {
        Self::parse_scheme(uri, "rabbitmq-stream", warren::stream::protocol::DEFAULT_PORT)
    }

    fn parse_scheme(uri: &str, scheme: &str, default_port: u16) -> Result<Self, Error> {
        let rest = match uri.split_once("://") {
            Some((s, rest)) if s == scheme => rest,
            Some((s, _)) if s.strip_suffix('s') == Some(scheme) || s.strip_suffix("+tls") == Some(scheme) => {
                return Err(Error::Uri(format!("{s} (TLS) is not supported")));
            }
            _ => return Err(Error::Uri(format!("{uri:?} does not start with {scheme}://"))),
        };
        let rest = rest.split(['?', '#']).next().unwrap_or("");
        let (authority, path) = match rest.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (rest, None),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, pass) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((u, p)) => (decode(u)?, decode(p)?),
                None => (decode(u)?, String::new()),
            },
            None => ("guest".to_string(), "guest".to_string()),
        };
        let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
            let (h, after) = h.split_once(']').ok_or_else(|| Error::Uri("unclosed [".into()))?;
            (h.to_string(), after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        let port = match port {
            Some(p) => p.parse().map_err(|_| Error::Uri(format!("bad port {p:?}")))?,
            None => default_port,
        };
        let host = if host.is_empty() { "localhost".to_string() } else { decode(&host)? };
        let vhost = match path {
            None => "/".to_string(),
            Some(p) => decode(p)?,
        };
        Ok(AmqpUri { user, pass, host, port, vhost })
    }

    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_default_uri() {
        let u = AmqpUri::parse("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap();
        assert_eq!(
            u,
            AmqpUri {
                user: "guest".into(),
                pass: "guest".into(),
                host: "127.0.0.1".into(),
                port: 5672,
                vhost: "/".into()
            }
        );
    }

    #[test]
    fn defaults_and_escapes() {
        let u = AmqpUri::parse("amqp://localhost").unwrap();
        assert_eq!((u.user.as_str(), u.port, u.vhost.as_str()), ("guest", 5672, "/"));
        let u = AmqpUri::parse("amqp://a%40b:p%3Aw@[::1]:5999/prod?heartbeat=5").unwrap();
        assert_eq!((u.user.as_str(), u.pass.as_str(), u.host.as_str()), ("a@b", "p:w", "::1"));
        assert_eq!((u.port, u.vhost.as_str(), u.addr()), (5999, "prod", "[::1]:5999".to_string()));
        assert_eq!(AmqpUri::parse("amqp://h/").unwrap().vhost, "");
        assert!(AmqpUri::parse("amqps://h").is_err());
        assert!(AmqpUri::parse("http://h").is_err());
    }

    #[test]
    fn stream_uris() {
        let u = AmqpUri::parse_stream("rabbitmq-stream://guest:guest@127.0.0.1/%2f").unwrap();
        assert_eq!((u.port, u.vhost.as_str()), (5552, "/"));
        assert_eq!(AmqpUri::parse_stream("rabbitmq-stream://h:5698").unwrap().port, 5698);
        assert!(AmqpUri::parse_stream("amqp://h").is_err());
        assert!(AmqpUri::parse_stream("rabbitmq-stream+tls://h").is_err());
    }
}
