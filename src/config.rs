//! Broker configuration: every tunable in one place, loaded from TOML (`config/warren.toml`
//! documents each key and its default), then overridden by command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::BrokerError;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the AMQP listener binds to.
    pub listen: SocketAddr,
    /// Directory for durable data.
    pub data_dir: PathBuf,
    pub amqp: AmqpConfig,
    pub auth: AuthConfig,
    pub storage: StorageConfig,
    pub memory: MemoryConfig,
    pub log: LogConfig,
    pub tls: TlsConfig,
    /// Virtual hosts with their metadata and limits (`[[vhosts]]`; `auth.vhosts` names more).
    pub vhosts: Vec<VHostConfig>,
    /// Policies (`[[policies]]`, RabbitMQ's `set_policy`).
    pub policies: Vec<PolicyConfig>,
    /// Operator policies (`[[operator_policies]]`, RabbitMQ's `set_operator_policy`).
    pub operator_policies: Vec<PolicyConfig>,
    /// Per-user limits (`[[user_limits]]`, RabbitMQ's `set_user_limits`).
    pub user_limits: Vec<UserLimitConfig>,
    pub definitions: DefinitionsConfig,
    pub management: ManagementConfig,
    pub prometheus: PrometheusConfig,
    pub stream: StreamConfig,
    /// Publisher rate limits (`[[rate_limits]]`).
    pub rate_limits: Vec<RateLimitConfig>,
}

/// One `[[rate_limits]]` entry: for a vhost (all its publishers together) or a user (all its
/// connections together).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    pub vhost: Option<String>,
    pub user: Option<String>,
    pub messages_per_second: Option<f64>,
    pub bytes_per_second: Option<f64>,
}

/// `[management]`: the HTTP API (RabbitMQ's `management.tcp.*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ManagementConfig {
    /// Address of the HTTP API, RabbitMQ's 127.0.0.1:15672 by default; "" turns it off.
    pub listen: String,
    /// Serve it over HTTPS with `[tls]`'s certificate and settings.
    pub tls: bool,
}

impl Default for ManagementConfig {
    fn default() -> Self {
        ManagementConfig { listen: "127.0.0.1:15672".into(), tls: false }
    }
}

impl ManagementConfig {
    /// The address to bind; None when off.
    pub fn address(&self) -> Result<Option<SocketAddr>, String> {
        listen_address("management.listen", &self.listen)
    }
}

/// `[prometheus]`: RabbitMQ's `rabbitmq_prometheus` endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrometheusConfig {
    /// Address of `/metrics`, RabbitMQ's 127.0.0.1:15692 by default; "" turns it off.
    pub listen: String,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        PrometheusConfig { listen: "127.0.0.1:15692".into() }
    }
}

/// `[stream]`: RabbitMQ's native stream protocol listener (the `rabbitmq_stream` plugin's
/// `stream.*` settings). Off unless `listen` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamConfig {
    /// Address of the stream protocol listener (RabbitMQ's port is 5552); "" (default): off.
    pub listen: String,
    /// The host clients are told to connect to (Open's `advertised_host`, Metadata's
    /// brokers); default: the listen address, or this machine's host name when that is a
    /// wildcard address.
    pub advertised_host: Option<String>,
    /// The port clients are told to connect to; default: the bound port.
    pub advertised_port: Option<u16>,
    /// Address of the stream protocol over TLS (RabbitMQ's port is 5551), with `[tls]`'s
    /// certificate; "" (default): off.
    pub tls_listen: String,
    /// The port TLS clients are told to connect to; default: the TLS listener's bound port.
    pub advertised_tls_port: Option<u16>,
    /// Largest frame offered in Tune, bytes (RabbitMQ's `stream.frame_max`); 0: no limit.
    pub frame_max: u32,
    /// Heartbeat interval offered in Tune, seconds (RabbitMQ's `stream.heartbeat`); 0: none.
    pub heartbeat: u32,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            listen: String::new(),
            advertised_host: None,
            advertised_port: None,
            tls_listen: String::new(),
            advertised_tls_port: None,
            frame_max: crate::stream::protocol::DEFAULT_FRAME_MAX,
            heartbeat: crate::stream::protocol::DEFAULT_HEARTBEAT,
        }
    }
}

impl StreamConfig {
    /// The address to bind; None when off.
    pub fn address(&self) -> Result<Option<SocketAddr>, String> {
        listen_address("stream.listen", &self.listen)
    }

    /// The TLS listener's address; None when off.
    pub fn tls_address(&self) -> Result<Option<SocketAddr>, String> {
        listen_address("stream.tls_listen", &self.tls_listen)
    }
}

/// A listener address from the config: "" = off.
pub fn listen_address(key: &str, value: &str) -> Result<Option<SocketAddr>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|e| format!("{key} = {value:?}: {e} (use ADDR:PORT, e.g. 127.0.0.1:15672, or \"\" to turn it off)"))
}

/// `[definitions]`: a RabbitMQ definitions file loaded at every start (RabbitMQ's
/// `definitions.import_backend = local_filesystem` / `load_definitions`).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct DefinitionsConfig {
    pub import_file: Option<PathBuf>,
}

/// One `[[vhosts]]` entry.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct VHostConfig {
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
    /// "classic" or "quorum": the type of durable queues declared without `x-queue-type`.
    pub default_queue_type: Option<String>,
    /// RabbitMQ's vhost limits (`max-connections`, `max-queues`); unset = no limit.
    pub max_connections: Option<u64>,
    pub max_queues: Option<u64>,
}

/// One `[[policies]]` / `[[operator_policies]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    #[serde(default = "default_vhost")]
    pub vhost: String,
    pub name: String,
    pub pattern: String,
    #[serde(default = "apply_to_all", rename = "apply-to", alias = "apply_to")]
    pub apply_to: String,
    #[serde(default)]
    pub priority: i64,
    /// The policy's keys, as `rabbitmqctl set_policy` takes them (`max-length = 1000`, ...).
    pub definition: toml::Table,
}

fn default_vhost() -> String {
    "/".into()
}

fn apply_to_all() -> String {
    "all".into()
}

/// One `[[user_limits]]` entry.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct UserLimitConfig {
    pub user: String,
    pub max_connections: Option<u64>,
    pub max_channels: Option<u64>,
}

/// The amqps listener (`[tls]`, RabbitMQ's `listeners.ssl` and `ssl_options`): off unless
/// `listen` is set.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Address of the amqps listener (RabbitMQ's default port is 5671); none: no TLS.
    pub listen: Option<SocketAddr>,
    /// The server's certificate chain (PEM).
    pub certfile: Option<PathBuf>,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub keyfile: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates are verified against.
    pub cacertfile: Option<PathBuf>,
    /// Ask clients for a certificate and verify it against `cacertfile`
    /// (RabbitMQ's `ssl_options.verify = verify_peer`).
    pub verify_peer: bool,
    /// With `verify_peer`: refuse clients that send no certificate.
    pub fail_if_no_peer_cert: bool,
    /// TLS versions offered: "tlsv1.3" and/or "tlsv1.2" (default both).
    pub versions: Vec<String>,
}

/// The memory alarm (RabbitMQ's `vm_memory_high_watermark`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    /// Fraction of the machine's RAM (or of the cgroup memory limit) the broker's resident
    /// memory may reach before publishers are blocked (RabbitMQ's
    /// `vm_memory_high_watermark.relative`). 0 disables the memory alarm.
    pub high_watermark: f64,
    /// An absolute watermark instead (RabbitMQ's `vm_memory_high_watermark.absolute`): bytes as
    /// an integer, or a string with a unit ("512MiB", "2GB"). Takes precedence when set.
    pub high_watermark_absolute: Option<ByteSize>,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig { high_watermark: 0.4, high_watermark_absolute: None }
    }
}

/// A size in bytes, written as an integer or as a string with a unit: k/kB/M/MB/G/GB are powers
/// of 1000, KiB/MiB/GiB powers of 1024 (RabbitMQ's notation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn bytes(self) -> u64 {
        self.0
    }

    pub fn parse(s: &str) -> Result<ByteSize, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size (e.g. 536870912, \"512MiB\", \"2GB\")"))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "k" | "K" | "kB" | "KB" => 1000,
            "KiB" | "Ki" => 1 << 10,
            "M" | "MB" => 1_000_000,
            "MiB" | "Mi" => 1 << 20,
            "G" | "GB" => 1_000_000_000,
            "GiB" | "Gi" => 1 << 30,
            "T" | "TB" => 1_000_000_000_000,
            "TiB" | "Ti" => 1 << 40,
            other => return Err(format!("unknown size unit {other:?} in {s:?}")),
        };
        n.checked_mul(mult).map(ByteSize).ok_or_else(|| format!("{s:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Text(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Confirm persistent messages only once they are fsynced (group commit). `false` confirms
    /// after the write reaches the OS: faster, but a machine crash can lose confirmed messages.
    pub fsync: bool,
    /// Size at which a queue's segment file is closed and a new one started, bytes.
    pub segment_size: u64,
    /// Below this many free bytes on the data directory's file system, publishers are blocked.
    pub disk_free_limit: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig { fsync: true, segment_size: 8 * 1024 * 1024, disk_free_limit: 50_000_000 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpConfig {
    /// Largest frame the broker accepts and offers in connection.tune (bytes, framing included).
    pub frame_max: u32,
    /// Most channels a connection may have open; offered in connection.tune.
    pub channel_max: u16,
    /// Heartbeat interval offered in connection.tune, seconds (0 disables).
    pub heartbeat: u16,
    /// Largest message body accepted, bytes.
    pub max_message_size: u64,
    /// `product` in server-properties. Clients (kombu/Celery) choose RabbitMQ's prefetch
    /// semantics from it, which Warren implements.
    pub product: String,
    /// `version` in server-properties (a RabbitMQ 3.x version: the semantics Warren follows).
    pub product_version: String,
    /// Seconds a new connection has to complete the handshake.
    pub handshake_timeout: u64,
    /// Milliseconds a consumer may hold a delivery unacknowledged before its channel is closed
    /// with 406 (RabbitMQ's `consumer_timeout`); 0 disables. Queues override it with
    /// `x-consumer-timeout`.
    pub consumer_timeout: u64,
    /// Most messages one transaction (`tx.select`) may hold before `tx.commit`; one more closes
    /// the channel with 406 PRECONDITION_FAILED. 0 = no count limit.
    pub transaction_max_messages: u64,
    /// Most body bytes one transaction may hold before `tx.commit`, likewise. 0 = no limit.
    pub transaction_max_bytes: u64,
    /// Most bytes of partially received message bodies one connection may hold across all its
    /// channels; a body frame past it closes its channel with 406 PRECONDITION_FAILED.
    pub max_content_in_progress: u64,
    /// Publisher flow control: a queue with working consumers and more than this many ready
    /// messages admits publishes only as fast as it delivers; publishers beyond that wait (their
    /// sockets are not read; connection state `flow`). 0 turns the message threshold off.
    pub flow_backlog_messages: u32,
    /// The same threshold in bytes of ready messages. 0 turns it off.
    pub flow_backlog_bytes: u64,
    /// Most open connections on this node (RabbitMQ's `connection_max`); 0 = no limit.
    pub connection_max: u64,
    /// Most consumers on one channel (RabbitMQ's `consumer_max_per_channel`); 0 = no limit.
    pub consumer_max_per_channel: u64,
}

impl AmqpConfig {
    pub fn consumer_timeout_duration(&self) -> Option<std::time::Duration> {
        (self.consumer_timeout > 0).then(|| std::time::Duration::from_millis(self.consumer_timeout))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub default_user: String,
    pub default_pass: String,
    /// The default user may only connect from loopback addresses (as RabbitMQ's `guest`).
    pub default_user_loopback_only: bool,
    /// Virtual hosts that exist at start.
    pub vhosts: Vec<String>,
    /// More users (`[[auth.users]]`).
    pub users: Vec<UserConfig>,
    /// A RabbitMQ definitions file to take users (with their password hashes) and virtual
    /// hosts from at start (RabbitMQ's `load_definitions`).
    pub definitions: Option<PathBuf>,
    /// Which user may do what in which vhost (`[[auth.permissions]]`). The default user may
    /// do anything in every vhost of `vhosts`; any other user only what is listed here (or in
    /// the definitions file) for it.
    pub permissions: Vec<PermissionConfig>,
    /// Users that may only connect from loopback addresses (RabbitMQ's `loopback_users`), in
    /// addition to the default user (`default_user_loopback_only`) and users with
    /// `loopback_only = true`.
    pub loopback_users: Vec<String>,
    /// Topic permissions (`[[auth.topic_permissions]]`): patterns on the routing keys a user
    /// may publish with (write) and bind with (read) on a topic exchange.
    pub topic_permissions: Vec<TopicPermissionConfig>,
    /// A failed login (or an unknown mechanism) is answered after this many milliseconds.
    pub login_failure_delay_ms: u64,
    /// SASL mechanisms offered (RabbitMQ's `auth_mechanisms`): PLAIN, AMQPLAIN, EXTERNAL.
    /// EXTERNAL is offered only on TLS connections whose client sent a verified certificate.
    pub mechanisms: Vec<String>,
    /// Which part of a client certificate names the user for EXTERNAL
    /// (RabbitMQ's `ssl_cert_login_from`): "common_name" (default),
    /// "subject_alternative_name" (the first DNS name or e-mail) or "distinguished_name".
    pub ssl_cert_login_from: String,
}

impl AuthConfig {
    pub fn login_failure_delay(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.login_failure_delay_ms)
    }
}

/// One `[[auth.permissions]]` entry: RabbitMQ's configure / write / read patterns of a user
/// in a vhost (see [`crate::auth::permissions`]).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PermissionConfig {
    pub user: String,
    pub vhost: String,
    #[serde(default = "match_all")]
    pub configure: String,
    #[serde(default = "match_all")]
    pub write: String,
    #[serde(default = "match_all")]
    pub read: String,
}

/// One `[[auth.topic_permissions]]` entry (RabbitMQ's `set_topic_permissions`). `{username}`
/// and `{vhost}` in a pattern stand for the user's name and the vhost.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TopicPermissionConfig {
    pub user: String,
    pub vhost: String,
    pub exchange: String,
    #[serde(default = "match_all")]
    pub write: String,
    #[serde(default = "match_all")]
    pub read: String,
}

fn match_all() -> String {
    ".*".into()
}

/// One `[[auth.users]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// A RabbitMQ-format hash (base64 of a 4-byte salt and the digest), e.g. from a RabbitMQ
    /// definitions export.
    pub password_hash: Option<String>,
    /// Or a plain password, hashed when the config is read.
    pub password: Option<String>,
    /// `rabbit_password_hashing_sha256` (default), `_sha512` or `_md5`.
    pub hashing_algorithm: String,
    /// RabbitMQ's tags: administrator, monitoring, management, policymaker, impersonator.
    pub tags: Vec<String>,
    /// Only from loopback addresses.
    pub loopback_only: bool,
}

impl Default for UserConfig {
    fn default() -> Self {
        UserConfig {
            name: String::new(),
            password_hash: None,
            password: None,
            hashing_algorithm: "rabbit_password_hashing_sha256".into(),
            tags: Vec::new(),
            loopback_only: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// tracing filter, e.g. "info" or "warren=debug" (overridden by RUST_LOG).
    pub level: String,
    /// "text" or "json".
    pub format: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 5672)),
            data_dir: PathBuf::from("./data"),
            amqp: AmqpConfig::default(),
            auth: AuthConfig::default(),
            storage: StorageConfig::default(),
            memory: MemoryConfig::default(),
            log: LogConfig::default(),
            tls: TlsConfig::default(),
            vhosts: Vec::new(),
            policies: Vec::new(),
            operator_policies: Vec::new(),
            user_limits: Vec::new(),
            definitions: DefinitionsConfig::default(),
            management: ManagementConfig::default(),
            prometheus: PrometheusConfig::default(),
            stream: StreamConfig::default(),
            rate_limits: Vec::new(),
        }
    }
}

impl Default for AmqpConfig {
    fn default() -> Self {
        AmqpConfig {
            frame_max: 131_072,
            channel_max: 2047,
            heartbeat: 60,
            max_message_size: 134_217_728,
            product: "RabbitMQ".into(),
            product_version: "3.13.7".into(),
            handshake_timeout: 10,
            consumer_timeout: 1_800_000,
            transaction_max_messages: 100_000,
            transaction_max_bytes: 268_435_456,
            max_content_in_progress: 268_435_456,
            flow_backlog_messages: crate::queue::admission::HIGH_MESSAGES,
            flow_backlog_bytes: crate::queue::admission::HIGH_BYTES,
            connection_max: 0,
            consumer_max_per_channel: 0,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            default_user: "guest".into(),
            default_pass: "guest".into(),
            default_user_loopback_only: true,
            vhosts: vec!["/".into()],
            users: Vec::new(),
            definitions: None,
            permissions: Vec::new(),
            topic_permissions: Vec::new(),
            loopback_users: Vec::new(),
            login_failure_delay_ms: 1000,
            mechanisms: vec!["PLAIN".into(), "AMQPLAIN".into()],
            ssl_cert_login_from: "common_name".into(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "info".into(), format: "text".into() }
    }
}

impl Config {
    /// Read a TOML file; missing keys keep their defaults.
    pub fn load(path: &Path) -> Result<Config, BrokerError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| BrokerError::Config(format!("cannot read {}: {e}", path.display())))?;
        let cfg: Config = toml::from_str(&text).map_err(|e| BrokerError::Config(format!("{}: {e}", path.display())))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reject settings no client could work with.
    pub fn validate(&self) -> Result<(), BrokerError> {
        if self.amqp.frame_max < crate::protocol::FRAME_MIN_SIZE {
            return Err(BrokerError::Config(format!(
                "amqp.frame_max = {} is below the AMQP minimum of 4096",
                self.amqp.frame_max
            )));
        }
        if self.amqp.channel_max == 0 {
            return Err(BrokerError::Config("amqp.channel_max must be at least 1".into()));
        }
        if self.amqp.max_message_size > 536_870_912 {
            return Err(BrokerError::Config("amqp.max_message_size may not exceed 512 MiB (536870912)".into()));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(BrokerError::Config(format!("log.format = {:?}: use \"text\" or \"json\"", self.log.format)));
        }
        if self.amqp.consumer_timeout > crate::queue::args::MAX_TTL_MS as u64 {
            return Err(BrokerError::Config("amqp.consumer_timeout may not exceed ten years (315360000000 ms)".into()));
        }
        if !(4096..=1 << 30).contains(&self.storage.segment_size) {
            return Err(BrokerError::Config("storage.segment_size must be between 4096 bytes and 1 GiB".into()));
        }
        if !(0.0..=1.0).contains(&self.memory.high_watermark) {
            return Err(BrokerError::Config(format!(
                "memory.high_watermark = {} must be a fraction of RAM between 0 and 1",
                self.memory.high_watermark
            )));
        }
        if self.amqp.max_content_in_progress < self.amqp.max_message_size {
            return Err(BrokerError::Config(
                "amqp.max_content_in_progress must be at least amqp.max_message_size".into(),
            ));
        }
        if let Some(m) = self.auth.mechanisms.iter().find(|m| !["PLAIN", "AMQPLAIN", "EXTERNAL"].contains(&m.as_str()))
        {
            return Err(BrokerError::Config(format!(
                "auth.mechanisms: unknown mechanism {m:?} (use PLAIN, AMQPLAIN and/or EXTERNAL)"
            )));
        }
        if !["common_name", "subject_alternative_name", "distinguished_name"]
            .contains(&self.auth.ssl_cert_login_from.as_str())
        {
            return Err(BrokerError::Config(format!(
                "auth.ssl_cert_login_from = {:?}: use \"common_name\", \"subject_alternative_name\" or \"distinguished_name\"",
                self.auth.ssl_cert_login_from
            )));
        }
        if let Some(v) = self.tls.versions.iter().find(|v| !["tlsv1.2", "tlsv1.3"].contains(&v.as_str())) {
            return Err(BrokerError::Config(format!(
                "tls.versions: {v:?} is not offered (use \"tlsv1.2\" and/or \"tlsv1.3\")"
            )));
        }
        if self.tls.listen.is_some() && (self.tls.certfile.is_none() || self.tls.keyfile.is_none()) {
            return Err(BrokerError::Config("tls.listen is set: tls.certfile and tls.keyfile are needed too".into()));
        }
        if self.tls.verify_peer && self.tls.cacertfile.is_none() {
            return Err(BrokerError::Config(
                "tls.verify_peer needs tls.cacertfile (the CA that signs client certificates)".into(),
            ));
        }
        self.management.address().map_err(BrokerError::Config)?;
        listen_address("prometheus.listen", &self.prometheus.listen).map_err(BrokerError::Config)?;
        self.stream.address().map_err(BrokerError::Config)?;
        self.stream.tls_address().map_err(BrokerError::Config)?;
        if self.stream.frame_max != 0 && self.stream.frame_max < crate::stream::protocol::DEFAULT_INITIAL_FRAME_MAX {
            return Err(BrokerError::Config(format!(
                "stream.frame_max = {} is below 8192 (0: no limit)",
                self.stream.frame_max
            )));
        }
        if self.auth.vhosts.is_empty() {
            return Err(BrokerError::Config("auth.vhosts must name at least one vhost".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_file_parses_to_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/warren.toml");
        let cfg = Config::load(&path).expect("config/warren.toml must parse");
        let d = Config::default();
        assert_eq!(cfg.listen, d.listen);
        assert_eq!(cfg.data_dir, d.data_dir);
        assert_eq!(cfg.amqp.frame_max, d.amqp.frame_max);
        assert_eq!(cfg.amqp.channel_max, d.amqp.channel_max);
        assert_eq!(cfg.amqp.heartbeat, d.amqp.heartbeat);
        assert_eq!(cfg.amqp.max_message_size, d.amqp.max_message_size);
        assert_eq!(cfg.amqp.product, d.amqp.product);
        assert_eq!(cfg.amqp.product_version, d.amqp.product_version);
        assert_eq!(cfg.amqp.consumer_timeout, d.amqp.consumer_timeout);
        assert_eq!(cfg.auth.default_user, d.auth.default_user);
        assert_eq!(cfg.log.level, d.log.level);
        assert_eq!(cfg.storage.fsync, d.storage.fsync);
        assert_eq!(cfg.storage.segment_size, d.storage.segment_size);
        assert_eq!(cfg.storage.disk_free_limit, d.storage.disk_free_limit);
        assert_eq!(cfg.memory.high_watermark, d.memory.high_watermark);
        assert_eq!(cfg.memory.high_watermark_absolute, d.memory.high_watermark_absolute);
        assert_eq!(cfg.amqp.transaction_max_messages, d.amqp.transaction_max_messages);
        assert_eq!(cfg.amqp.transaction_max_bytes, d.amqp.transaction_max_bytes);
        assert_eq!(cfg.amqp.max_content_in_progress, d.amqp.max_content_in_progress);
        assert_eq!(cfg.stream.listen, d.stream.listen);
        assert_eq!((cfg.stream.frame_max, cfg.stream.heartbeat), (d.stream.frame_max, d.stream.heartbeat));
        assert_eq!((&cfg.stream.advertised_host, cfg.stream.advertised_port), (&None, None));
    }

    #[test]
    fn sizes_take_integers_and_rabbitmq_units() {
        let cfg: Config = toml::from_str("[memory]\nhigh_watermark_absolute = \"512MiB\"").unwrap();
        assert_eq!(cfg.memory.high_watermark_absolute, Some(ByteSize(512 << 20)));
        let cfg: Config = toml::from_str("[memory]\nhigh_watermark_absolute = 1000").unwrap();
        assert_eq!(cfg.memory.high_watermark_absolute, Some(ByteSize(1000)));
        assert_eq!(ByteSize::parse("2GB"), Ok(ByteSize(2_000_000_000)));
        assert!(ByteSize::parse("2 parsecs").is_err());
        assert!(toml::from_str::<Config>("[memory]\nhigh_watermark_absolute = \"lots\"").is_err());
        let cfg: Config = toml::from_str("[memory]\nhigh_watermark = 1.5").unwrap();
        assert!(cfg.validate().unwrap_err().to_string().contains("high_watermark"));
    }

    #[test]
    fn invalid_values_are_refused_with_a_reason() {
        let cfg: Config = toml::from_str("[amqp]\nframe_max = 100").unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("frame_max"), "{err}");
        assert!(toml::from_str::<Config>("nonsense = 1").is_err());
    }
}
