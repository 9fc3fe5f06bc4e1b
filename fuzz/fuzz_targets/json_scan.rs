//! cargo-fuzz target: `chroma_ha::fuzzing::check_json_scan` on each input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chroma_ha::fuzzing::check_json_scan(data));
