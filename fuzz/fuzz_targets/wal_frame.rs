//! cargo-fuzz target: `wal::fuzzing::check_wal_frame` on each input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wal::fuzzing::check_wal_frame(data));
