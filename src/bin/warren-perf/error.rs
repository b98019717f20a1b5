//! Everything that makes a run fail (and the tool exit non-zero).

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bad URI: {0}")]
    Uri(String),
    #[error("bad arguments: {0}")]
    Usage(String),
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the broker closed the TCP connection{0}")]
    Eof(&'static str),
    #[error("the broker closed the connection: {code} {text} (class {class_id}, method {method_id})")]
    ConnectionClosed { code: u16, text: String, class_id: u16, method_id: u16 },
    #[error("the broker closed channel {channel}: {code} {text} (class {class_id}, method {method_id})")]
    ChannelClosed { channel: u16, code: u16, text: String, class_id: u16, method_id: u16 },
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("unexpected frame: {0}")]
    Unexpected(String),
    #[error("timed out {0}")]
    Timeout(String),
}

pub type Result<T> = std::result::Result<T, Error>;
