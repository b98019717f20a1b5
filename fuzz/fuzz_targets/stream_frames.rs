//! Fuzz target `stream_frames`: the property check `warren::fuzzing::stream_frames` (also replayed by `cargo test`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warren::fuzzing::stream_frames(data));
