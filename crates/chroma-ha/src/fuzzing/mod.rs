//! Fuzz harnesses of the decoders that read bytes from disk and from
//! clients (built for tests and with the `fuzzing` feature; the cargo-fuzz
//! targets in `fuzz/` call them, and `cargo test` runs them over the
//! committed corpus in `fuzz/corpus/<target>/` plus seeded mutations).
//!
//! Each `check_*` takes arbitrary bytes and panics when the decoder breaks
//! one of its properties; not panicking is only the first of them.
//!
//! - [`check_log_record`]: log record payloads (`replication::record`).
//! - [`check_json_scan`]: the span scanner the id rewriting relies on.
//! - [`check_route`]: method + path → operation (`chroma::routes`).
//! - [`check_config`]: TOML text and environment values → `Config`.

mod config;
mod json;
mod record;
mod route;

pub use config::check_config;
pub use json::check_json_scan;
pub use record::check_log_record;
pub use route::check_route;

#[cfg(test)]
mod tests;
