//! Streams: RabbitMQ's append-only stream queues read by offset, and the native stream
//! protocol (port 5552): `log` (the append-only log: segments of osiris chunks, offsets,
//! tracking, retention, recovery), `amqp10` (records as AMQP 1.0 messages and the 0-9-1
//! conversion), `protocol` (the stream protocol's frames and connection state machine),
//! `queue` (a stream's task: the log's writer behind the queue interface), `consumer` (AMQP
//! 0-9-1 consumers as cursors over the files), `handle` (the native protocol's face), `server`
//! (the stream protocol's listener and connections).

pub mod amqp10;
pub mod consumer;
pub mod handle;
pub mod log;
pub mod protocol;
pub mod queue;
pub mod server;
