//! AMQP 1.0 messages: how every stream record is encoded.
//!
//! Stream clients (Java, Go, Rust, Python, Node, .NET) decode each record of a stream as an AMQP
//! 1.0 bare message, and RabbitMQ converts AMQP 0-9-1 publishes into that form on the way in and
//! back for AMQP 0-9-1 consumers. This module is that format, free of I/O:
//!
//! - [`types`]: the AMQP 1.0 values ([`Value`]);
//! - [`codec`]: their encoding ([`encode`]) and a bounded decoder that never panics ([`Decoder`]);
//! - [`message`]: the bare message's sections ([`Message`]), a whole record at a time;
//! - [`convert`]: AMQP 0-9-1 message ⇄ record as RabbitMQ does it ([`from_amqp091`],
//!   [`to_amqp091`]), and the `x-stream-filter-value` a publish carries ([`filter_value`]).

pub mod codec;
pub mod convert;
pub mod message;
pub mod types;

pub use codec::{DecodeError, Decoder, encode};
pub use convert::{Amqp091, filter_value, from_amqp091, from_message, to_amqp091, to_message};
pub use message::{BodySection, Header, Message, Properties};
pub use types::Value;
