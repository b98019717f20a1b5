//! Fuzz target `handshake`: the property check `warren::fuzzing::handshake` (also replayed by `cargo test`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warren::fuzzing::handshake(data));
