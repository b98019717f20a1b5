//! The connection handshake as a sans-IO state machine:
//! `start` → `start-ok` (PLAIN or AMQPLAIN) → `tune` → `tune-ok` → `open` → `open-ok`.
//!
//! [`Handshake::on_method`] consumes the state and returns the next one plus the methods to
//! send; it never touches a socket, so every rule (auth, loopback-only default user, tune-ok
//! limits, unknown vhost) is unit-tested below.

use amq_protocol::protocol::connection;
use amq_protocol::types::{AMQPValue, FieldTable, LongString};

use crate::config::Config;
use crate::error::AmqpError;
use crate::protocol::methods::{longstr, value_str};
use crate::protocol::{AMQPClass, FRAME_MIN_SIZE};

/// What the client and broker agreed on.
#[derive(Debug, Clone)]
pub struct Negotiated {
    pub user: String,
    /// The SASL mechanism the client logged in with.
    pub mechanism: String,
    pub vhost: String,
    pub channel_max: u16,
    pub frame_max: u32,
    /// Seconds; 0 = no heartbeats.
    pub heartbeat: u16,
    pub client: ClientCapabilities,
    pub client_properties: FieldTable,
}

/// The client capabilities the broker consults.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientCapabilities {
    pub consumer_cancel_notify: bool,
    pub connection_blocked: bool,
    pub authentication_failure_close: bool,
}

#[derive(Debug)]
pub enum Handshake {
    /// `start` sent, waiting for `start-ok`.
    AwaitStartOk,
    AwaitTuneOk {
        user: String,
        mechanism: String,
        client: ClientCapabilities,
        client_properties: FieldTable,
    },
    AwaitOpen {
        negotiated: Negotiated,
    },
}

/// How the handshake failed.
#[derive(Debug)]
pub enum HandshakeError {
    /// Answer with `connection.close` carrying this error, then close.
    Close(AmqpError),
    /// Close the socket without a frame (as RabbitMQ does for a failed login when the client
    /// did not ask for authentication_failure_close).
    Silent(String),
}

/// Result of one handshake step.
#[derive(Debug)]
pub enum Progress {
    /// The next state and the method to send, if any (nothing answers `tune-ok`).
    Continue(Handshake, Option<AMQPClass>),
    Done(Negotiated, AMQPClass),
}

/// Facts about the environment the handshake needs.
pub struct Context<'a> {
    pub config: &'a Config,
    pub users: &'a crate::auth::Users,
    pub peer_is_loopback: bool,
    pub vhost_exists: &'a (dyn Fn(&str) -> bool + Sync),
    /// The vhost's and the user's connection limits, checked at `connection.open` after the
    /// vhost and the permissions: (user, vhost) → the 530 to answer, if one is reached.
    pub open_limits: &'a (dyn Fn(&str, &str) -> Result<(), AmqpError> + Sync),
    /// Open connections on this node (for `connection_max`).
    pub node_connections: usize,
    /// The mechanisms offered in `connection.start`.
    pub mechanisms: &'a [&'a str],
    /// The user a verified TLS client certificate names (EXTERNAL).
    pub cert_login: Option<&'a str>,
}

/// The `connection.start` method this broker sends.
pub fn start_method(config: &Config, mechanisms: &[&str]) -> AMQPClass {
    let mut caps = FieldTable::default();
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "consumer_priorities",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
    ] {
        caps.insert(cap.into(), AMQPValue::Boolean(true));
    }
    let mut props = FieldTable::default();
    props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    props.insert("cluster_name".into(), longstr("warren@localhost"));
    props.insert("copyright".into(), longstr("Copyright (c) the Warren authors"));
    props.insert(
        "information".into(),
        longstr(&format!(
            "Warren {} — an AMQP 0-9-1 broker, https://github.com/warren-mq/warren",
            env!("CARGO_PKG_VERSION")
        )),
    );
    props.insert("platform".into(), longstr(&format!("Warren {} (Rust)", env!("CARGO_PKG_VERSION"))));
    props.insert("product".into(), longstr(&config.amqp.product));
    props.insert("version".into(), longstr(&config.amqp.product_version));
    AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
        version_major: 0,
        version_minor: 9,
        server_properties: props,
        mechanisms: LongString::from(mechanisms.join(" ").into_bytes()),
        locales: LongString::from(b"en_US".to_vec()),
    }))
}

fn unexpected(m: &AMQPClass, state: &str) -> HandshakeError {
    HandshakeError::Close(
        AmqpError::command_invalid(format_args!("unexpected method in connection state {state}"))
            .on(m.get_amqp_class_id(), m.get_amqp_method_id()),
    )
}

impl Handshake {
    pub fn on_method(self, m: &AMQPClass, cx: &Context<'_>) -> Result<Progress, HandshakeError> {
        use connection::AMQPMethod as C;
        match (self, m) {
            (Handshake::AwaitStartOk, AMQPClass::Connection(C::StartOk(ok))) => {
                let client = capabilities(&ok.client_properties);
                let mech = ok.mechanism.as_str();
                // RabbitMQ answers a mechanism it does not offer as an unknown one.
                let offered = cx.mechanisms.contains(&mech);
                let creds = match mech {
                    "PLAIN" if offered => parse_plain(ok.response.as_bytes()),
                    "AMQPLAIN" if offered => parse_amqplain(ok.response.as_bytes()),
                    // The response is ignored: the certificate names the user.
                    "EXTERNAL" if offered => cx.cert_login.map(|u| (u.to_string(), String::new())),
                    other => {
                        return Err(HandshakeError::Close(
                            AmqpError::command_invalid(format_args!("unknown authentication mechanism '{other}'"))
                                .on(10, 11),
                        ));
                    }
                };
                let login = match &creds {
                    Some((u, _)) if mech == "EXTERNAL" => {
                        cx.users.authenticate_external(u, cx.peer_is_loopback).map(|_| ())
                    }
                    Some((u, p)) => cx.users.authenticate(u, p, cx.peer_is_loopback).map(|_| ()),
                    None => Err(crate::auth::Refusal::UnknownUser),
                };
                if let Err(refusal) = login {
                    let who = creds.map(|c| c.0).unwrap_or_default();
                    // Logged with the peer (the connection's span), never the password.
                    tracing::warn!(user = %who, mechanism = mech, reason = refusal.reason(), "login refused");
                    if client.authentication_failure_close {
                        return Err(HandshakeError::Close(AmqpError::access_refused(format_args!(
                            "Login was refused using authentication mechanism {mech}. For details see the broker logfile."
                        ))));
                    }
                    return Err(HandshakeError::Silent(format!("login refused for user '{who}' ({mech})")));
                }
                let user = creds.map(|c| c.0).unwrap_or_default();
                let tune = AMQPClass::Connection(C::Tune(connection::Tune {
                    channel_max: cx.config.amqp.channel_max,
                    frame_max: cx.config.amqp.frame_max,
                    heartbeat: cx.config.amqp.heartbeat,
                }));
                Ok(Progress::Continue(
                    Handshake::AwaitTuneOk {
                        user,
                        mechanism: mech.to_string(),
                        client,
                        client_properties: ok.client_properties.clone(),
                    },
                    Some(tune),
                ))
            }
            (
                Handshake::AwaitTuneOk { user, mechanism, client, client_properties },
                AMQPClass::Connection(C::TuneOk(t)),
            ) => {
                let max_frame = cx.config.amqp.frame_max;
                let max_ch = cx.config.amqp.channel_max;
                // 0 means "no limit" from the client: the broker's own limit applies.
                let frame_max = if t.frame_max == 0 { max_frame } else { t.frame_max };
                let channel_max = if t.channel_max == 0 { max_ch } else { t.channel_max };
                let refuse = |what: &str, v: u64, rel: &str, lim: u64| {
                    HandshakeError::Close(AmqpError::not_allowed(format_args!(
                        "failed to negotiate connection parameters: negotiated {what} = {v} is {rel} than the {} allowed value ({lim})",
                        if rel == "higher" { "maximum" } else { "minimum" }
                    )))
                };
                if frame_max < FRAME_MIN_SIZE {
                    return Err(refuse("frame_max", frame_max as u64, "lower", FRAME_MIN_SIZE as u64));
                }
                if frame_max > max_frame {
                    return Err(refuse("frame_max", frame_max as u64, "higher", max_frame as u64));
                }
                if channel_max > max_ch {
                    return Err(refuse("channel_max", channel_max as u64, "higher", max_ch as u64));
                }
                let negotiated = Negotiated {
                    user,
                    mechanism,
                    vhost: String::new(),
                    channel_max,
                    frame_max,
                    heartbeat: t.heartbeat,
                    client,
                    client_properties,
                };
                Ok(Progress::Continue(Handshake::AwaitOpen { negotiated }, None))
            }
            (Handshake::AwaitOpen { mut negotiated }, AMQPClass::Connection(C::Open(o))) => {
                let vhost = o.virtual_host.as_str();
                let node_max = cx.config.amqp.connection_max;
                if node_max > 0 && cx.node_connections as u64 >= node_max {
                    return Err(HandshakeError::Close(
                        AmqpError::not_allowed(format_args!(
                            "connection refused: node connection limit ({node_max}) is reached"
                        ))
                        .on(10, 40),
                    ));
                }
                if !(cx.vhost_exists)(vhost) {
                    return Err(HandshakeError::Close(
                        AmqpError::not_allowed(format_args!("vhost {vhost} not found")).on(10, 40),
                    ));
                }
                if !cx.users.may_open(&negotiated.user, vhost) {
                    return Err(HandshakeError::Close(
                        AmqpError::not_allowed(format_args!(
                            "access to vhost '{vhost}' refused for user '{}'",
                            negotiated.user
                        ))
                        .on(10, 40),
                    ));
                }
                (cx.open_limits)(&negotiated.user, vhost).map_err(|e| HandshakeError::Close(e.on(10, 40)))?;
                negotiated.vhost = vhost.to_string();
                Ok(Progress::Done(negotiated, AMQPClass::Connection(C::OpenOk(connection::OpenOk {}))))
            }
            (Handshake::AwaitStartOk, m) => Err(unexpected(m, "starting")),
            (Handshake::AwaitTuneOk { .. }, m) => Err(unexpected(m, "tuning")),
            (Handshake::AwaitOpen { .. }, m) => Err(unexpected(m, "opening")),
        }
    }
}

fn capabilities(props: &FieldTable) -> ClientCapabilities {
    let caps = match props.inner().get("capabilities") {
        Some(AMQPValue::FieldTable(t)) => t.clone(),
        _ => FieldTable::default(),
    };
    let on = |k: &str| matches!(caps.inner().get(k), Some(AMQPValue::Boolean(true)));
    ClientCapabilities {
        consumer_cancel_notify: on("consumer_cancel_notify"),
        connection_blocked: on("connection.blocked"),
        authentication_failure_close: on("authentication_failure_close"),
    }
}

/// PLAIN: `authzid \0 user \0 password`; an authzid must be empty or equal the user.
pub(crate) fn parse_plain(resp: &[u8]) -> Option<(String, String)> {
    let mut parts = resp.split(|b| *b == 0);
    let authz = parts.next()?;
    let user = std::str::from_utf8(parts.next()?).ok()?.to_string();
    let pass = std::str::from_utf8(parts.next()?).ok()?.to_string();
    if parts.next().is_some() || !(authz.is_empty() || authz == user.as_bytes()) {
        return None;
    }
    Some((user, pass))
}

/// AMQPLAIN: a field table *without* its 4-byte length prefix, keys LOGIN and PASSWORD.
pub(crate) fn parse_amqplain(resp: &[u8]) -> Option<(String, String)> {
    let mut framed = Vec::with_capacity(resp.len() + 4);
    framed.extend_from_slice(&(resp.len() as u32).to_be_bytes());
    framed.extend_from_slice(resp);
    let table = crate::protocol::fields::decode_table(&framed).ok()?;
    let get = |k: &str| table.inner().get(k).and_then(value_str);
    Some((get("LOGIN")?, get("PASSWORD")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx(config: &Config, loopback: bool) -> Context<'_> {
        let users = Box::leak(Box::new(crate::auth::Users::from_config(&config.auth).unwrap()));
        Context {
            config,
            users,
            peer_is_loopback: loopback,
            vhost_exists: &|v| v == "/",
            open_limits: &|_, _| Ok(()),
            node_connections: 0,
            mechanisms: &["PLAIN", "AMQPLAIN"],
            cert_login: None,
        }
    }

    fn start_ok(mechanism: &str, response: &[u8], failure_close: bool) -> AMQPClass {
        let mut caps = FieldTable::default();
        caps.insert("authentication_failure_close".into(), AMQPValue::Boolean(failure_close));
        let mut props = FieldTable::default();
        props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
        AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: props,
            mechanism: mechanism.into(),
            response: LongString::from(response.to_vec()),
            locale: "en_US".into(),
        }))
    }

    fn tune_ok(channel_max: u16, frame_max: u32, heartbeat: u16) -> AMQPClass {
        AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk { channel_max, frame_max, heartbeat }))
    }

    fn open(vhost: &str) -> AMQPClass {
        AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open { virtual_host: vhost.into() }))
    }

    fn amqplain(user: &str, pass: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in [("LOGIN", user), ("PASSWORD", pass)] {
            out.push(k.len() as u8);
            out.extend_from_slice(k.as_bytes());
            out.push(b'S');
            out.extend_from_slice(&(v.len() as u32).to_be_bytes());
            out.extend_from_slice(v.as_bytes());
        }
        out
    }

    fn run(steps: &[AMQPClass], config: &Config, loopback: bool) -> Result<Negotiated, HandshakeError> {
        let mut hs = Handshake::AwaitStartOk;
        for m in steps {
            match hs.on_method(m, &cx(config, loopback))? {
                Progress::Continue(next, _) => hs = next,
                Progress::Done(n, _) => return Ok(n),
            }
        }
        panic!("handshake did not finish")
    }

    #[test]
    fn plain_and_amqplain_logins_negotiate_what_the_client_picked() {
        let c = Config::default();
        let n =
            run(&[start_ok("PLAIN", b"\0guest\0guest", false), tune_ok(100, 8192, 5), open("/")], &c, true).unwrap();
        assert_eq!((n.channel_max, n.frame_max, n.heartbeat, n.vhost.as_str()), (100, 8192, 5, "/"));
        let n = run(&[start_ok("AMQPLAIN", &amqplain("guest", "guest"), false), tune_ok(0, 0, 0), open("/")], &c, true)
            .unwrap();
        assert_eq!((n.channel_max, n.frame_max, n.heartbeat), (2047, 131072, 0));
    }

    #[test]
    fn bad_login_closes_with_403_only_if_the_client_asked() {
        let c = Config::default();
        match run(&[start_ok("PLAIN", b"\0guest\0nope", true)], &c, true) {
            Err(HandshakeError::Close(e)) => assert_eq!(
                e.text,
                "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile."
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(run(&[start_ok("PLAIN", b"\0guest\0nope", false)], &c, true), Err(HandshakeError::Silent(_))));
        // The default user may only come from loopback.
        assert!(matches!(run(&[start_ok("PLAIN", b"\0guest\0guest", true)], &c, false), Err(HandshakeError::Close(_))));
        assert!(run(&[start_ok("AMQPLAIN", b"\x05LOGIN", true)], &c, true).is_err(), "truncated table");
    }

    #[test]
    fn tune_ok_limits_and_unknown_vhost() {
        let c = Config::default();
        let so = start_ok("PLAIN", b"\0guest\0guest", true);
        match run(&[so.clone(), tune_ok(10, 1000, 0)], &c, true) {
            Err(HandshakeError::Close(e)) => {
                assert_eq!(e.code.code(), 530);
                assert!(
                    e.text.contains("frame_max = 1000 is lower than the minimum allowed value (4096)"),
                    "{}",
                    e.text
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(run(&[so.clone(), tune_ok(10, 200_000, 0)], &c, true).is_err());
        match run(&[so, tune_ok(10, 4096, 0), open("nope")], &c, true) {
            Err(HandshakeError::Close(e)) => assert_eq!(e.text, "NOT_ALLOWED - vhost nope not found"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn start_advertises_configured_product_and_only_working_capabilities() {
        let mut c = Config::default();
        c.amqp.product = "Warren".into();
        let AMQPClass::Connection(connection::AMQPMethod::Start(s)) = start_method(&c, &["PLAIN", "AMQPLAIN"]) else {
            panic!()
        };
        let props = s.server_properties.inner();
        assert_eq!(props.get("product").and_then(value_str).as_deref(), Some("Warren"));
        let Some(AMQPValue::FieldTable(caps)) = props.get("capabilities") else { panic!() };
        assert!(caps.contains_key("publisher_confirms") && caps.contains_key("direct_reply_to"));
        assert!(caps.contains_key("connection.blocked"));
    }
}
