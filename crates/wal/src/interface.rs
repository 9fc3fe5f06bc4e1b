//! The log interface: what a consumer of the log (chroma-ha's replication
//! core) needs, whichever store keeps the log. [`Wal`] (this crate, files on
//! one disk) implements it, and so does `pglog::PgLog` (a table in
//! PostgreSQL that several processes share). Both give the same guarantees,
//! checked by one set of test functions run on each
//! (`crates/pglog/tests/conformance.rs`):
//!
//! - an append resolves with its LSN only once the record is durable;
//!   LSNs are dense, increase from 1, and follow the order in which appends
//!   became durable, so a reader never sees LSN n+1 before n;
//! - a reader yields every record from its start in LSN order, each with
//!   its exact payload, and then waits for new ones (tailing);
//! - a named cursor is a durable position ("everything up to here is
//!   consumed"); records are deleted only once every cursor is past them.

use std::collections::BTreeMap;
use std::future::Future;

use bytes::Bytes;

use crate::{Record, Result, Wal};

/// A durable, ordered log of opaque records shared by its readers.
pub trait Log: Send + Sync + 'static {
    /// The reader [`Log::read_from`] gives.
    type Reader: LogRead;

    /// Appends a record; resolves with its LSN once it is durable. Fails
    /// with `LogFull` past the log's cap, and nothing is written then.
    fn append(&self, payload: Bytes) -> impl Future<Output = Result<u64>> + Send;

    /// Appends like [`Log::append`], exempt from the cap (for small, rare
    /// records that must get in when the log is full).
    fn append_uncapped(&self, payload: Bytes) -> impl Future<Output = Result<u64>> + Send;

    /// A reader from `lsn` on (1 or below: from the first record).
    fn read_from(&self, lsn: u64) -> Self::Reader;

    /// The first LSN still held (1 for a log never truncated; last + 1 for
    /// a log whose every record was deleted).
    fn first_lsn(&self) -> u64;

    /// The last durable LSN this process knows of; 0 if the log never held
    /// a record.
    fn last_lsn(&self) -> u64;

    /// Every cursor and its position.
    fn cursors(&self) -> BTreeMap<String, u64>;

    /// Durably moves (or creates) cursor `name` to `lsn`, which must lie
    /// between the first LSN held minus one and the last durable LSN. On
    /// return it survives a crash; records every cursor has consumed may
    /// then be deleted.
    fn commit_cursor(&self, name: &str, lsn: u64) -> impl Future<Output = Result<()>> + Send;

    /// Removes cursor `name` durably, so it no longer holds records back.
    fn remove_cursor(&self, name: &str) -> impl Future<Output = Result<()>> + Send;
}

/// Yields a log's records in LSN order, then waits for new ones.
pub trait LogRead: Send + 'static {
    /// The LSN of the record the next call returns.
    fn next_lsn(&self) -> u64;

    /// The next record, waiting for it at the end of the log. `Truncated`
    /// if it was deleted; after an error the same record is tried again.
    fn next(&mut self) -> impl Future<Output = Result<Record>> + Send;

    /// The next record if one is durable now, without waiting for new ones.
    fn try_next(&mut self) -> impl Future<Output = Result<Option<Record>>> + Send;
}

impl Log for Wal {
    type Reader = crate::LogReader;

    async fn append(&self, payload: Bytes) -> Result<u64> {
        Wal::append(self, payload).await
    }

    async fn append_uncapped(&self, payload: Bytes) -> Result<u64> {
        Wal::append_uncapped(self, payload).await
    }

    fn read_from(&self, lsn: u64) -> Self::Reader {
        Wal::read_from(self, lsn)
    }

    fn first_lsn(&self) -> u64 {
        Wal::first_lsn(self)
    }

    fn last_lsn(&self) -> u64 {
        Wal::last_lsn(self)
    }

    fn cursors(&self) -> BTreeMap<String, u64> {
        Wal::cursors(self)
    }

    async fn commit_cursor(&self, name: &str, lsn: u64) -> Result<()> {
        self.cursor(name).await?.commit(lsn).await.map(|_| ())
    }

    async fn remove_cursor(&self, name: &str) -> Result<()> {
        Wal::remove_cursor(self, name).await
    }
}

impl LogRead for crate::LogReader {
    fn next_lsn(&self) -> u64 {
        crate::LogReader::next_lsn(self)
    }

    async fn next(&mut self) -> Result<Record> {
        crate::LogReader::next(self).await
    }

    async fn try_next(&mut self) -> Result<Option<Record>> {
        crate::LogReader::try_next(self).await
    }
}
