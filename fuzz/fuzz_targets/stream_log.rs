//! Fuzz target `stream_log`: the property check `warren::fuzzing::stream_log` (also replayed by `cargo test`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warren::fuzzing::stream_log(data));
