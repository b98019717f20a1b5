//! Fuzz target `properties`: the property check `warren::fuzzing::properties` (also replayed by `cargo test`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warren::fuzzing::properties(data));
