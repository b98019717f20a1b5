//! Fuzz target `publish`: the property check `warren::fuzzing::publish` (also replayed by `cargo test`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warren::fuzzing::publish(data));
