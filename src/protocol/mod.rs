//! The AMQP 0-9-1 wire format: frames in ([`codec`]) and frames out ([`encode`]).
//!
//! Method arguments are parsed and generated with amq-protocol's generated types (the cold
//! path). Body frames never go through them: the decoder hands out zero-copy [`bytes::Bytes`]
//! slices of the read buffer, and the raw content-header payload is kept so a message is
//! forwarded to consumers without re-encoding its properties.

pub mod codec;
pub mod encode;
pub mod fields;
pub mod methods;
pub mod properties;
pub mod routing_key;

pub use amq_protocol::protocol::{AMQPClass, BasicProperties};

/// Frame type octets (spec 4.2.3).
pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
pub const FRAME_HEARTBEAT: u8 = 8;
/// Every frame ends with this octet.
pub const FRAME_END: u8 = 0xCE;
/// Bytes of framing around a payload: 7 of header and the end octet.
pub const FRAME_OVERHEAD: usize = 8;
/// The smallest frame_max a peer may negotiate (RabbitMQ 3.x accepts 4096).
pub const FRAME_MIN_SIZE: u32 = 4096;
/// The protocol header a 0-9-1 client sends, and the one we answer a wrong header with.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// Class ids.
pub const CLASS_CONNECTION: u16 = 10;
pub const CLASS_CHANNEL: u16 = 20;
pub const CLASS_ACCESS: u16 = 30;
pub const CLASS_EXCHANGE: u16 = 40;
pub const CLASS_QUEUE: u16 = 50;
pub const CLASS_BASIC: u16 = 60;
pub const CLASS_CONFIRM: u16 = 85;
pub const CLASS_TX: u16 = 90;

/// Every (class, method) pair of AMQP 0-9-1 with RabbitMQ's extensions; used to tell an unknown
/// method (540) from a known one with undecodable arguments (501).
pub fn is_known_method(class_id: u16, method_id: u16) -> bool {
    let methods: &[u16] = match class_id {
        CLASS_CONNECTION => &[10, 11, 20, 21, 30, 31, 40, 41, 50, 51, 60, 61, 70, 71],
        CLASS_CHANNEL => &[10, 11, 20, 21, 40, 41],
        CLASS_ACCESS => &[10, 11],
        CLASS_EXCHANGE => &[10, 11, 20, 21, 30, 31, 40, 51],
        CLASS_QUEUE => &[10, 11, 20, 21, 30, 31, 40, 41, 50, 51],
        CLASS_BASIC => &[10, 11, 20, 21, 30, 31, 40, 50, 60, 70, 71, 72, 80, 90, 100, 110, 111, 120],
        CLASS_CONFIRM => &[10, 11],
        CLASS_TX => &[10, 11, 20, 21, 30, 31],
        _ => &[],
    };
    methods.contains(&method_id)
}
