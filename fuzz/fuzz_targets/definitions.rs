//! Fuzz target `definitions`: the property check `warren::fuzzing::definitions` (also replayed by `cargo test`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warren::fuzzing::definitions(data));
