//! Streams (issue 13): RabbitMQ-compatible stream queues.
//!
//! * [`log`]: the append-only log a stream lives in (segments, chunks, indexes, tracking,
//!   retention, recovery); storage only.

pub mod log;
