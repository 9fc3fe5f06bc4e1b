//! # chroma-ha — a high-availability gateway for ChromaDB
//!
//! Clients speak Chroma's HTTP API (v2) to the gateway as if it were a
//! Chroma server. Every write is appended to a durable log first
//! ([`wal`]), executed by the first healthy server, and applied by one
//! applier per server, in log order, on every other server. Reads go to a
//! server that has applied every write they must see.
//!
//! ## Layout
//!
//! - [`chroma`]: the dialect, pure code — route table of every Chroma 1.5.9
//!   operation, scopes and conflicts, collection-id rewriting, replay rules,
//!   which record writes merge into one request, Chroma-style errors.
//! - [`replication`]: the core — log records and decisions (the ledger),
//!   the appliers (and their merged catch-up), the logical ↔ physical id
//!   map, per-server progress, dead letters; [`replication::Replicator`] is
//!   what request handlers call.
//! - [`backend`]: one HTTP client per server, attempt classification
//!   (answer vs transient), health probes with rise/fall thresholds.
//! - [`http`]: the front — the proxy on `/api/…`, `/health`, `/ready`,
//!   `/status`, `/metrics`, `/admin/…` and the status page.
//! - [`config`]: every setting, from defaults, TOML, the Python balancer's
//!   environment names, `CHROMA_HA_*` and flags.
//! - [`cluster`]: several gateways on one log in PostgreSQL — the lease
//!   loop, the roles, forwarding to the leader.
//! - [`gateway`]: wires it together and serves until Ctrl-C / SIGTERM.
//! - [`check`]: compares servers' content directly (`chroma-ha check`).
//! - [`copy`]: copies servers' content in pages, to another server or a
//!   snapshot directory (`backup`, `restore`, `rebuild`).
//! - [`rebuild`]: fills a server from another while the gateway serves, and
//!   lets a restored backup join through the same last step.
//! - [`cli`]: the command line; `main.rs` only calls [`cli::main`].
//! - [`telemetry`] sets up logging.
//! - [`tls`]: rustls configurations from PEM files — outgoing clients'
//!   roots and client certificate, the TLS listener and its reloads.
//! - `fuzzing` (tests and the `fuzzing` feature): fuzz harnesses of the
//!   decoders of bytes from disk and clients, run by `fuzz/` and `cargo test`.
//!
//! docs/ARCHITECTURE.md explains the design and where it departs from
//! DESIGN.md; docs/OPERATIONS.md is the operations guide and runbook.

pub mod backend;
pub mod check;
pub mod chroma;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod copy;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod gateway;
pub mod http;
pub mod rebuild;
pub mod replication;
pub mod telemetry;
pub mod tls;
