//! The dead letters as documents of the PostgreSQL log's database (see
//! `pglog::state`), so that any gateway that opens the log has them:
//!
//! ```text
//! dead_letter/00000000000000000007.json     the letter's metadata (and footprint)
//! dead_letter/00000000000000000007.record   the entry's log record, raw bytes
//! dead_letter/next_id                       highest id ever given
//! ```
//!
//! Each document is written in its own fenced transaction, in the same
//! order as the files (record before metadata on add, metadata before
//! record on remove), so a crash between two leaves at worst an orphan
//! record, which loading removes.

use super::files::{assemble, Loaded, StoredLetter};
use crate::replication::state_file::StateFileError;
use bytes::Bytes;
use pglog::PgLog;
use std::path::PathBuf;

const PREFIX: &str = "dead_letter/";
const NEXT_ID: &str = "dead_letter/next_id";
const KEY: &str = "dead letters";

fn meta_key(id: u64) -> String {
    format!("{PREFIX}{id:020}.json")
}

fn record_key(id: u64) -> String {
    format!("{PREFIX}{id:020}.record")
}

fn shared(source: wal::WalError) -> StateFileError {
    StateFileError::Shared { key: KEY, source }
}

fn invalid(what: String, source: serde_json::Error) -> StateFileError {
    StateFileError::Invalid {
        path: PathBuf::from(what),
        source,
    }
}

/// Stores a new letter: record first, then metadata.
pub(super) async fn store_new(
    log: &PgLog,
    stored: &StoredLetter,
    record: &[u8],
) -> Result<(), StateFileError> {
    let id = stored.letter.id;
    log.store_state(&record_key(id), record)
        .await
        .map_err(shared)?;
    store_meta(log, stored).await
}

/// Replaces a letter's metadata.
pub(super) async fn store_meta(log: &PgLog, stored: &StoredLetter) -> Result<(), StateFileError> {
    let id = stored.letter.id;
    let bytes = serde_json::to_vec(stored).map_err(|e| invalid(format!("dead letter {id}"), e))?;
    log.store_state(&meta_key(id), &bytes).await.map_err(shared)
}

/// Removes a letter: `high_water` first, then metadata, then record.
pub(super) async fn delete(
    log: &PgLog,
    id: u64,
    high_water: Option<u64>,
) -> Result<(), StateFileError> {
    if let Some(next_id) = high_water {
        store_next_id(log, next_id).await?;
    }
    log.remove_state(&meta_key(id)).await.map_err(shared)?;
    log.remove_state(&record_key(id)).await.map_err(shared)
}

/// Saves `next_id` as the highest id ever given.
pub(super) async fn store_next_id(log: &PgLog, next_id: u64) -> Result<(), StateFileError> {
    log.store_state(NEXT_ID, next_id.to_string().as_bytes())
        .await
        .map_err(shared)
}

/// A letter's record bytes.
pub(super) async fn read_record(log: &PgLog, id: u64) -> Result<Bytes, StateFileError> {
    log.load_state(&record_key(id))
        .await
        .map_err(shared)?
        .ok_or_else(|| StateFileError::Io {
            context: "reading",
            path: PathBuf::from(record_key(id)),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such record"),
        })
}

/// Every letter, oldest first; removes records whose letter was never
/// completed.
pub(super) async fn load(log: &PgLog) -> Result<Loaded, StateFileError> {
    let mut loaded = Loaded::default();
    let mut records = std::collections::HashSet::new();
    let mut stored = Vec::new();
    for (key, value) in log.list_state(PREFIX).await.map_err(shared)? {
        let name = &key[PREFIX.len()..];
        let id = name.split('.').next().and_then(|s| s.parse::<u64>().ok());
        match (id, name.rsplit('.').next()) {
            (Some(_), Some("json")) => {
                stored.push(serde_json::from_slice(&value).map_err(|e| invalid(key, e))?)
            }
            (Some(id), Some("record")) => {
                records.insert(id);
            }
            _ if key == NEXT_ID => {
                let text = String::from_utf8_lossy(&value);
                loaded.next_id = loaded.next_id.max(text.trim().parse().unwrap_or(0));
            }
            _ => tracing::warn!(%key, "unexpected document among the dead letters; ignored"),
        }
    }
    for orphan in assemble(&mut loaded, stored, records) {
        tracing::info!(
            id = orphan,
            "removing the record of a dead letter that was never completed"
        );
        log.remove_state(&record_key(orphan))
            .await
            .map_err(shared)?;
    }
    Ok(loaded)
}
