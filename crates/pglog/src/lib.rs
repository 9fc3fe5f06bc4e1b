//! # pglog — the chroma-ha log kept in PostgreSQL
//!
//! The same log as the `wal` crate's (it implements [`wal::Log`], and the
//! same test functions check both: `tests/conformance.rs`), kept in
//! PostgreSQL tables so that several processes on several machines can
//! share it. It knows nothing of HTTP or Chroma: records are opaque bytes
//! with a log sequence number (LSN).
//!
//! ## Guarantees
//!
//! - An append resolves with its LSN once its transaction has committed
//!   (durable as PostgreSQL's `synchronous_commit` makes it). Concurrent
//!   appends of one process share one transaction (group commit).
//! - LSNs are dense, increase from 1, and are in commit order across every
//!   process: a reader never sees LSN n+1 before n, so it never skips a row
//!   that commits late (see *Tables*).
//! - An append that fails before its commit was sent leaves nothing:
//!   [`wal::WalError::Unavailable`]. One whose commit was sent and not
//!   answered is looked up again by its batch id until its outcome is
//!   known. From the moment the answer is lost, every other append is
//!   refused at once (`Unavailable`) until it is known, so that no other
//!   append can be given those LSNs; the batch's own appenders wait for
//!   the answer up to `resolve_for`, then fail with
//!   [`wal::WalError::OutcomeUnknown`]. A batch that turns out to have
//!   landed after that is reported by [`PgLog::take_orphans`] (its records
//!   are in the log, and no caller holds their LSNs).
//! - Past `max_bytes` of payload held, appends fail with `LogFull`;
//!   `append_uncapped` is exempt.
//!
//! ## Tables (schema version 4)
//!
//! ```text
//! chroma_ha_schema       (version int)                  applied migrations
//! chroma_ha_log_head     (id = 1, last_lsn, first_lsn, bytes)
//! chroma_ha_log_entries  (lsn bigint primary key, batch bigint, payload bytea)
//! chroma_ha_log_cursors  (name text primary key, lsn bigint)
//! chroma_ha_leader       (id = 1, holder, address, epoch, expires_at, renewed_at,
//!                         term_started_at)
//! chroma_ha_state        (key text primary key, value bytea, epoch, updated_at)
//! chroma_ha_gateways     (name text primary key, address, role, epoch, started_at,
//!                         seen_at)                       informative registry
//! ```
//!
//! The leader lease and its fencing rules are in [`lease`].
//!
//! An append transaction locks the one head row (`SELECT … FOR UPDATE`),
//! takes the next LSNs from `last_lsn`, inserts its rows and moves
//! `last_lsn` and `bytes`, then commits; the row lock is held until commit.
//! So LSNs are handed out in commit order. A plain sequence would not do:
//! sequence values are taken before commit, and a reader could read LSN
//! n+1 while n is still uncommitted, and skip it. `batch` is a random id per
//! transaction, to find out after a lost answer whether the commit landed.
//!
//! A cursor commit deletes the entries every cursor has consumed and moves
//! `first_lsn`, in one transaction that also holds the head row, once at
//! least `delete_batch` entries (10,000) can go.
//!
//! Migrations are in the binary and run at [`PgLog::connect`], under an
//! advisory lock, so processes starting together apply each one once. A
//! process refuses a database whose schema is newer than it knows
//! ([`ConnectError::Schema`] with [`schema::SchemaError::TooNew`]).
//!
//! ## Layout of the crate
//!
//! - [`schema`]: the migrations and the version check.
//! - [`lease`]: the leader lease, epochs and fencing.
//! - [`gateways`]: the registry of processes sharing the log.
//! - [`log`]: [`PgLog`]: connect, append, cursors.
//! - `writer`: group commit, and settling commits whose answer was lost.
//! - [`state`]: shared state documents, replaced whole and fenced.
//! - [`import`]: filling an empty log with another log's records, LSNs kept.
//! - [`reader`]: [`PgReader`], in-order reads and tailing (by polling,
//!   woken at once by this process's own appends).
//! - [`testing`]: a throwaway PostgreSQL cluster for tests and benchmarks.

pub mod gateways;
pub mod import;
pub mod lease;
pub mod log;
pub mod reader;
pub mod schema;
pub mod state;
pub mod testing;
mod writer;

pub use gateways::{GatewayReport, GatewayRow};
pub use import::ImportError;
pub use lease::{Claim, LeaderInfo, Leadership};
pub use log::{CommitHook, ConnectError, PgLog, PgLogOptions, PgLogStats};
pub use reader::PgReader;
