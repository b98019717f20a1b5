//! One integration-test binary (keeps link time down): every module talks to a real `warren`
//! process over a loopback socket.

mod common;
mod raw;

// Core protocol (lapin).
mod basic;
mod confirms;
mod connection;
mod exchanges;
mod queues;

// Protocol errors and fuzzing (raw sockets).
mod protocol_errors;

// Hostile and careless peers against a live witness connection (raw sockets + lapin).
mod hostile;

// Durability: restarts, kill -9, damaged files (Warren processes only).
mod durability;
mod metadata;
mod power_loss;

// Queue semantics (lapin).
mod consumers;
mod dead_letter;
mod dedup;
mod delayed;
mod flow;
mod length_limits;
mod management;
mod memory;
mod permissions;
mod priorities;
mod queue_types;
mod rpc;
mod stream_protocol;
mod streams;
mod tenancy;
mod tls;
mod transactions;
mod ttl;
mod warrenctl;
