//! Streams: RabbitMQ's append-only stream queues and the native stream protocol (port 5552).

pub mod protocol;
