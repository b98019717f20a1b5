//! Streams: append-only logs read by offset (RabbitMQ's stream queues).

pub mod amqp10;
