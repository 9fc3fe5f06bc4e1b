//! The log the replication core runs on: the file log in `data_dir/wal`
//! (the default) or the log in PostgreSQL (`log.url`). Both behind
//! [`wal::Log`], so the core has one code path; what only one of them has
//! (the file log's segments and fsyncs, its tail repair) is reached through
//! [`ReplicationLog::file`].

use std::collections::BTreeMap;

use bytes::Bytes;
use wal::{Log, LogRead, Record, Result, WalStats};

/// The replication core's log.
#[derive(Clone)]
pub enum ReplicationLog {
    /// Files in one directory, locked by this process.
    File(wal::Wal),
    /// Tables in a PostgreSQL database.
    Postgres(pglog::PgLog),
}

/// A reader of either log.
pub enum ReplicationReader {
    /// Of the file log.
    File(wal::LogReader),
    /// Of the PostgreSQL log.
    Postgres(pglog::PgReader),
}

impl ReplicationLog {
    /// The file log, if that is the one in use.
    pub fn file(&self) -> Option<&wal::Wal> {
        match self {
            ReplicationLog::File(log) => Some(log),
            ReplicationLog::Postgres(_) => None,
        }
    }

    /// `"file"` or `"postgres"`.
    pub fn kind(&self) -> &'static str {
        match self {
            ReplicationLog::File(_) => "file",
            ReplicationLog::Postgres(_) => "postgres",
        }
    }

    /// Size and activity figures. For the PostgreSQL log: LSNs, this
    /// process's appends, the bytes held as of its last commit, and its
    /// append transactions in place of fsyncs; it has no segments.
    pub fn stats(&self) -> WalStats {
        match self {
            ReplicationLog::File(log) => log.stats(),
            ReplicationLog::Postgres(log) => {
                let s = log.stats();
                WalStats {
                    first_lsn: log.first_lsn(),
                    last_lsn: log.last_lsn(),
                    segments: 0,
                    used_bytes: s.bytes_held,
                    max_bytes: s.max_bytes,
                    appends: s.records,
                    append_bytes: s.payload_bytes,
                    fsyncs: s.commits,
                    append_errors: s.errors,
                    poisoned: None,
                }
            }
        }
    }
}

impl Log for ReplicationLog {
    type Reader = ReplicationReader;

    async fn append(&self, payload: Bytes) -> Result<u64> {
        match self {
            ReplicationLog::File(log) => Log::append(log, payload).await,
            ReplicationLog::Postgres(log) => log.append(payload).await,
        }
    }

    async fn append_uncapped(&self, payload: Bytes) -> Result<u64> {
        match self {
            ReplicationLog::File(log) => Log::append_uncapped(log, payload).await,
            ReplicationLog::Postgres(log) => log.append_uncapped(payload).await,
        }
    }

    fn read_from(&self, lsn: u64) -> ReplicationReader {
        match self {
            ReplicationLog::File(log) => ReplicationReader::File(log.read_from(lsn)),
            ReplicationLog::Postgres(log) => ReplicationReader::Postgres(log.read_from(lsn)),
        }
    }

    fn first_lsn(&self) -> u64 {
        match self {
            ReplicationLog::File(log) => log.first_lsn(),
            ReplicationLog::Postgres(log) => log.first_lsn(),
        }
    }

    fn last_lsn(&self) -> u64 {
        match self {
            ReplicationLog::File(log) => log.last_lsn(),
            ReplicationLog::Postgres(log) => log.last_lsn(),
        }
    }

    fn cursors(&self) -> BTreeMap<String, u64> {
        match self {
            ReplicationLog::File(log) => log.cursors(),
            ReplicationLog::Postgres(log) => log.cursors(),
        }
    }

    async fn commit_cursor(&self, name: &str, lsn: u64) -> Result<()> {
        match self {
            ReplicationLog::File(log) => log.commit_cursor(name, lsn).await,
            ReplicationLog::Postgres(log) => log.commit_cursor(name, lsn).await,
        }
    }

    async fn remove_cursor(&self, name: &str) -> Result<()> {
        match self {
            ReplicationLog::File(log) => Log::remove_cursor(log, name).await,
            ReplicationLog::Postgres(log) => log.remove_cursor(name).await,
        }
    }
}

impl LogRead for ReplicationReader {
    fn next_lsn(&self) -> u64 {
        match self {
            ReplicationReader::File(r) => r.next_lsn(),
            ReplicationReader::Postgres(r) => r.next_lsn(),
        }
    }

    async fn next(&mut self) -> Result<Record> {
        match self {
            ReplicationReader::File(r) => LogRead::next(r).await,
            ReplicationReader::Postgres(r) => r.next().await,
        }
    }

    async fn try_next(&mut self) -> Result<Option<Record>> {
        match self {
            ReplicationReader::File(r) => LogRead::try_next(r).await,
            ReplicationReader::Postgres(r) => r.try_next().await,
        }
    }
}
