//! Fuzz target `amqp10`: the AMQP 1.0 stream record check `warren::fuzzing::amqp10` (also replayed by `cargo test`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warren::fuzzing::amqp10(data));
