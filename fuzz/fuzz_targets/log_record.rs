//! cargo-fuzz target: `chroma_ha::fuzzing::check_log_record` on each input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chroma_ha::fuzzing::check_log_record(data));
