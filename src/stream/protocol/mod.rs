//! The RabbitMQ stream protocol (port 5552) as bytes in and bytes out, with no I/O.
//!
//! The wire format is PROTOCOL.adoc's (rabbitmq-server `deps/rabbitmq_stream/docs`), with the
//! details its reference server (`rabbit_stream_core`, `rabbit_stream_reader`) adds:
//!
//! * a frame is `u32 size` (not counting itself), `u16 key`, `u16 version`, then the body;
//!   requests carry a `u32` correlation id first, responses set the key's top bit and start
//!   with the correlation id and a `u16` response code;
//! * `string` is an `i16` length then UTF-8 (`-1`: null), `bytes` an `i32` length, an array an
//!   `i32` count then its items; all integers are big-endian.
//!
//! Layout:
//!
//! * [`codec`] splits a byte stream into frames, checking each size against the frame_max in
//!   force (a tokio [`Decoder`](tokio_util::codec::Decoder) too);
//! * [`frame`] parses one frame a client sends into a typed [`frame::ClientFrame`] (nom);
//! * [`encode`] writes every frame the server sends;
//! * [`state`] is the connection's handshake and close state machine (sans-IO, in the manner of
//!   quinn-proto and rustls): bytes and the time go in, events and bytes to send come out.

pub mod codec;
pub mod encode;
pub mod frame;
pub mod state;

#[cfg(test)]
mod client;

/// The stream protocol's default port.
pub const DEFAULT_PORT: u16 = 5552;
/// The largest frame the server proposes in Tune (RabbitMQ's `stream.frame_max` default).
pub const DEFAULT_FRAME_MAX: u32 = 1_048_576;
/// The heartbeat interval in seconds the server proposes in Tune (RabbitMQ's default).
pub const DEFAULT_HEARTBEAT: u32 = 60;
/// The frame-size ceiling before Open succeeds, whatever Tune said (RabbitMQ's
/// `stream.initial_frame_max`, PROTOCOL.adoc on main): an unauthenticated peer cannot make the
/// broker buffer a large frame.
pub const DEFAULT_INITIAL_FRAME_MAX: u32 = 8192;

/// The top bit of a key: set on responses.
pub const RESPONSE_FLAG: u16 = 0x8000;

/// Command keys (PROTOCOL.adoc "Commands").
pub mod key {
    pub const DECLARE_PUBLISHER: u16 = 0x0001;
    pub const PUBLISH: u16 = 0x0002;
    pub const PUBLISH_CONFIRM: u16 = 0x0003;
    pub const PUBLISH_ERROR: u16 = 0x0004;
    pub const QUERY_PUBLISHER_SEQUENCE: u16 = 0x0005;
    pub const DELETE_PUBLISHER: u16 = 0x0006;
    pub const SUBSCRIBE: u16 = 0x0007;
    pub const DELIVER: u16 = 0x0008;
    pub const CREDIT: u16 = 0x0009;
    pub const STORE_OFFSET: u16 = 0x000a;
    pub const QUERY_OFFSET: u16 = 0x000b;
    pub const UNSUBSCRIBE: u16 = 0x000c;
    pub const CREATE: u16 = 0x000d;
    pub const DELETE: u16 = 0x000e;
    pub const METADATA: u16 = 0x000f;
    pub const METADATA_UPDATE: u16 = 0x0010;
    pub const PEER_PROPERTIES: u16 = 0x0011;
    pub const SASL_HANDSHAKE: u16 = 0x0012;
    pub const SASL_AUTHENTICATE: u16 = 0x0013;
    pub const TUNE: u16 = 0x0014;
    pub const OPEN: u16 = 0x0015;
    pub const CLOSE: u16 = 0x0016;
    pub const HEARTBEAT: u16 = 0x0017;
    pub const ROUTE: u16 = 0x0018;
    pub const PARTITIONS: u16 = 0x0019;
    pub const CONSUMER_UPDATE: u16 = 0x001a;
    pub const EXCHANGE_COMMAND_VERSIONS: u16 = 0x001b;
    pub const STREAM_STATS: u16 = 0x001c;
    pub const CREATE_SUPER_STREAM: u16 = 0x001d;
    pub const DELETE_SUPER_STREAM: u16 = 0x001e;
    pub const RESOLVE_OFFSET_SPEC: u16 = 0x001f;
    /// The responses a client sends: to the server's Tune, Close and ConsumerUpdate.
    pub const TUNE_RESPONSE: u16 = TUNE | super::RESPONSE_FLAG;
    pub const CLOSE_RESPONSE: u16 = CLOSE | super::RESPONSE_FLAG;
    pub const CONSUMER_UPDATE_RESPONSE: u16 = CONSUMER_UPDATE | super::RESPONSE_FLAG;
}

/// Response codes (PROTOCOL.adoc "Response Codes").
pub mod code {
    pub const OK: u16 = 0x01;
    pub const STREAM_DOES_NOT_EXIST: u16 = 0x02;
    pub const SUBSCRIPTION_ID_ALREADY_EXISTS: u16 = 0x03;
    pub const SUBSCRIPTION_ID_DOES_NOT_EXIST: u16 = 0x04;
    pub const STREAM_ALREADY_EXISTS: u16 = 0x05;
    pub const STREAM_NOT_AVAILABLE: u16 = 0x06;
    pub const SASL_MECHANISM_NOT_SUPPORTED: u16 = 0x07;
    pub const AUTHENTICATION_FAILURE: u16 = 0x08;
    pub const SASL_ERROR: u16 = 0x09;
    pub const SASL_CHALLENGE: u16 = 0x0a;
    pub const SASL_AUTHENTICATION_FAILURE_LOOPBACK: u16 = 0x0b;
    pub const VIRTUAL_HOST_ACCESS_FAILURE: u16 = 0x0c;
    pub const UNKNOWN_FRAME: u16 = 0x0d;
    pub const FRAME_TOO_LARGE: u16 = 0x0e;
    pub const INTERNAL_ERROR: u16 = 0x0f;
    pub const ACCESS_REFUSED: u16 = 0x10;
    pub const PRECONDITION_FAILED: u16 = 0x11;
    pub const PUBLISHER_DOES_NOT_EXIST: u16 = 0x12;
    pub const NO_OFFSET: u16 = 0x13;
    /// A re-authentication (SaslAuthenticate on an open connection) with another mechanism.
    pub const SASL_CANNOT_CHANGE_MECHANISM: u16 = 0x14;
    /// A re-authentication as another user.
    pub const SASL_CANNOT_CHANGE_USERNAME: u16 = 0x15;
}

/// One command's supported versions, as ExchangeCommandVersions carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandVersion {
    pub key: u16,
    pub min: u16,
    pub max: u16,
}

const fn v(key: u16, min: u16, max: u16) -> CommandVersion {
    CommandVersion { key, min, max }
}

/// What the server advertises in its ExchangeCommandVersions response: RabbitMQ 3.13's
/// `rabbit_stream_utils:command_versions/0` (v3.13.7) with the `stream_filtering` feature flag
/// on, in its order. Publish goes up to v2 (a filter value per message); clients such as the
/// Rust one turn filtering on when they see it. Keep the order: rstream (Python) reads the
/// entry for key `k` at index `k - 1`, which holds for keys 1 and 2 only in this order.
pub const ADVERTISED_VERSIONS: &[CommandVersion] = &[
    v(key::DECLARE_PUBLISHER, 1, 1),
    v(key::PUBLISH, 1, 2),
    v(key::QUERY_PUBLISHER_SEQUENCE, 1, 1),
    v(key::DELETE_PUBLISHER, 1, 1),
    v(key::SUBSCRIBE, 1, 1),
    v(key::CREDIT, 1, 1),
    v(key::STORE_OFFSET, 1, 1),
    v(key::QUERY_OFFSET, 1, 1),
    v(key::UNSUBSCRIBE, 1, 1),
    v(key::CREATE, 1, 1),
    v(key::DELETE, 1, 1),
    v(key::METADATA, 1, 1),
    v(key::CLOSE, 1, 1),
    v(key::HEARTBEAT, 1, 1),
    v(key::ROUTE, 1, 1),
    v(key::PARTITIONS, 1, 1),
    v(key::STREAM_STATS, 1, 1),
    v(key::CREATE_SUPER_STREAM, 1, 1),
    v(key::DELETE_SUPER_STREAM, 1, 1),
];
