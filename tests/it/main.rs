//! One integration-test binary (keeps link time down): every module talks to a real `warren`
//! process over a loopback socket.

mod common;
mod raw;

mod basic;
mod confirms;
mod connection;
mod exchanges;
mod protocol_errors;
mod queues;
