//! cargo-fuzz target: `chroma_ha::fuzzing::check_config` on each input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chroma_ha::fuzzing::check_config(data));
