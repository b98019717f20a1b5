//! Fuzz target `frames`: the property check `warren::fuzzing::frames` (also replayed by `cargo test`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warren::fuzzing::frames(data));
