//! Fuzz target `methods`: the property check `warren::fuzzing::methods` (also replayed by `cargo test`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warren::fuzzing::methods(data));
