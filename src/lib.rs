//! # Warren: an AMQP 0-9-1 message broker
//!
//! A drop-in replacement for RabbitMQ: existing client libraries connect unchanged.
//!
//! ## Layout, following a message
//!
//! ```text
//! socket ─► protocol::codec      bytes → frames (nom/amq-protocol for methods, zero-copy bodies)
//!        ─► connection           one task per connection: handshake, heartbeats, channels
//!             channel            per-channel state: content assembly, confirms, unacked tags
//!        ─► broker::topology     routing snapshot: exchange → bindings → queues (no locks)
//!             exchange           direct / fanout / topic / headers matching
//!        ─► queue::actor         one task per queue owning queue::state (ready, unacked, consumers)
//!             store            the queue's messages, behind the MessageStore trait: segment files
//!                              (durable messages; paging for long backlogs) and one group-commit
//!                              fsync loop for the broker (store::persister)
//!           stream::queue        or, for `x-queue-type: stream`, the writer of an append-only
//!                                log (stream::log) behind the same QueueHandle; its consumers
//!                                are cursors over the files (stream::consumer)
//!        ─► connection (inbox)   deliveries and confirms come back to the consumer's connection
//!        ─► connection::writer   each turn's frames in one vectored write: inline when the socket
//!                                takes them, else by the connection's writer task
//! ```
//!
//! Only the downstream direction (connection → queue) ever waits, on a bounded queue mailbox:
//! that is how a slow queue slows its publishers. Everything flowing back (deliveries,
//! confirms, cancels) goes through unbounded inboxes whose size is bounded by prefetch and the
//! writer watermark, so a queue never waits on a consumer.
//!
//! The protocol rules live in pure, I/O-free pieces tested without sockets:
//! [`protocol::codec`], [`protocol::properties`], [`connection::handshake`], [`connection::heartbeat`],
//! [`channel::assembler`], [`channel::confirms`], [`channel::unacked`], [`queue::state`],
//! [`exchange::topic`], [`exchange::headers`], [`queue::policy`].
//!
//! Beside the pipeline: [`tls`] (amqps), [`auth`] (users, hashes, permissions),
//! [`definitions`] (RabbitMQ's definitions format: the broker's users, vhosts, permissions,
//! policies and limits, changed through `Broker::change` and saved by [`store::tenancy`]), and
//! [`management`] (the HTTP API, above the broker: it only calls its public API), and the
//! native stream protocol in [`stream`] (its frames and sans-IO connection state machine in
//! `stream::protocol`, served on its own port beside the AMQP listener).

pub mod auth;
pub mod broker;
pub mod channel;
pub mod config;
pub mod connection;
pub mod definitions;
pub mod error;
pub mod exchange;
#[doc(hidden)]
pub mod fuzzing;
pub mod management;
pub mod message;
pub mod protocol;
pub mod queue;
pub mod server;
pub mod stats;
pub mod store;
pub mod stream;
#[cfg(test)]
mod test_dir;
pub mod tls;
