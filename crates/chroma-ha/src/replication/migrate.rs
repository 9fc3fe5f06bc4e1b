//! Moving a stopped gateway's log and state from its data directory to
//! PostgreSQL (`chroma-ha log migrate --from DATA_DIR --to postgres://…`).
//!
//! Copies, in this order: every record the file log holds (entries and
//! refusal records, LSNs kept), every server's log cursor, the state
//! documents (applied state, collection id map, operator flags, the log's
//! identity) and the dead letters with their records. A gateway started on the same servers
//! with `log.url` set to the target then resumes exactly where the old one
//! stopped.
//!
//! - The source must not be in use: opening the file log takes its lock,
//!   so a running gateway makes the migration fail at once.
//! - The target must be empty (no entry, cursor or state document), so a
//!   second run, or a run against a live log, changes nothing.
//! - The source is left in place (opening it does what a gateway start
//!   does: it may repair a torn tail). If the migration stops part-way,
//!   drop the target database's `chroma_ha_*` tables (or make a new
//!   database) and run it again.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use wal::Log;

use super::dead_letters::DeadLetters;
use super::state_file::StateFileError;
use super::state_store::{Key, StateStore};

/// The state documents a gateway keeps besides its log and dead letters.
const DOCUMENTS: [Key; 4] = [
    super::applied::KEY,
    super::idmap::KEY,
    super::OPERATOR_KEY,
    super::identity::KEY,
];
/// Records per import transaction.
const BATCH: usize = 1_000;

/// What was copied.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MigrateReport {
    /// The first LSN the file log held (`last_lsn + 1` when empty).
    pub first_lsn: u64,
    /// Its last LSN.
    pub last_lsn: u64,
    /// Records copied.
    pub records: u64,
    /// Log cursors copied, by server name.
    pub cursors: std::collections::BTreeMap<String, u64>,
    /// State documents copied.
    pub documents: Vec<String>,
    /// Dead letters copied.
    pub dead_letters: usize,
}

/// Why a migration failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The file log could not be opened (in use, missing, corrupt).
    #[error("opening the file log in {dir}: {source}")]
    Source {
        /// Its directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: wal::WalError,
    },
    /// The task opening the file log failed.
    #[error("opening the file log: {0}")]
    Task(String),
    /// The source's data directory has no log.
    #[error("{0} holds no write-ahead log (expected a `wal` directory there)")]
    NoLog(PathBuf),
    /// PostgreSQL could not be reached or its schema is newer.
    #[error(transparent)]
    Connect(#[from] pglog::ConnectError),
    /// The target refused the import (not empty), or it failed.
    #[error(transparent)]
    Import(#[from] pglog::ImportError),
    /// Reading the file log, or copying a cursor, failed.
    #[error("copying the log: {0}")]
    Log(#[from] wal::WalError),
    /// A state document or dead letter could not be read or written.
    #[error(transparent)]
    State(#[from] StateFileError),
}

/// Copies the gateway state in `data_dir` into the empty PostgreSQL log at
/// `url` (see the module documentation).
pub async fn to_postgres(data_dir: &Path, url: &str) -> Result<MigrateReport, MigrateError> {
    let dir = data_dir.join("wal");
    if !dir.is_dir() {
        return Err(MigrateError::NoLog(data_dir.to_path_buf()));
    }
    let source = {
        let opened = dir.clone();
        tokio::task::spawn_blocking(move || wal::Wal::open(&opened, wal::WalOptions::default()))
            .await
            .map_err(|e| MigrateError::Task(e.to_string()))?
            .map_err(|source| MigrateError::Source {
                dir: dir.clone(),
                source,
            })?
            .0
    };
    let options = pglog::PgLogOptions {
        max_record_bytes: usize::MAX,
        ..pglog::PgLogOptions::default()
    };
    let target = pglog::PgLog::connect(url, options).await?;
    let (first_lsn, last_lsn) = (source.first_lsn(), source.last_lsn());
    target.begin_import(first_lsn).await?;
    let mut reader = source.read_from(first_lsn);
    let mut batch: Vec<(u64, Bytes)> = Vec::with_capacity(BATCH);
    let mut records = 0u64;
    while let Some(record) = reader.try_next().await? {
        if record.lsn > last_lsn {
            break;
        }
        batch.push((record.lsn, record.payload));
        if batch.len() == BATCH {
            target.import(&batch).await?;
            records += batch.len() as u64;
            batch.clear();
        }
    }
    target.import(&batch).await?;
    records += batch.len() as u64;
    let cursors = source.cursors();
    for (name, lsn) in &cursors {
        target.commit_cursor(name, *lsn).await?;
    }
    let from = StateStore::Files(data_dir.to_path_buf());
    let to = StateStore::Postgres(target.clone());
    let mut documents = Vec::new();
    for key in DOCUMENTS {
        if let Some(value) = from.load::<serde_json::Value>(key).await? {
            to.store(key, value).await?;
            documents.push(key.to_string());
        }
    }
    let letters = DeadLetters::open(data_dir, usize::MAX).await?;
    let dead_letters = letters.copy_into(&to).await?;
    Ok(MigrateReport {
        first_lsn,
        last_lsn,
        records,
        cursors,
        documents,
        dead_letters,
    })
}
