//! Fuzz target `fields`: the property check `warren::fuzzing::fields` (also replayed by `cargo test`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warren::fuzzing::fields(data));
