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
    pub log: LogConfig,
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
            log: LogConfig::default(),
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
    }

    #[test]
    fn invalid_values_are_refused_with_a_reason() {
        let cfg: Config = toml::from_str("[amqp]\nframe_max = 100").unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("frame_max"), "{err}");
        assert!(toml::from_str::<Config>("nonsense = 1").is_err());
    }
}
