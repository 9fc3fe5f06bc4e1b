//! Where the gateway keeps its state documents (what each server applied,
//! the collection id map, the operator's pause/drain flags): next to the
//! log. With the file log, JSON files in the data directory, replaced
//! atomically ([`state_file`]); with the PostgreSQL log, rows of the log's
//! database, replaced whole and fenced by the leader's epoch
//! ([`pglog::state`]). So a gateway that opens a PostgreSQL log on a fresh
//! machine, with an empty data directory, resumes from the same state.
//!
//! Either way a stored document is read back whole (the old value or the
//! new one, never a mix), and a store that returned `Ok` survives a crash.

use serde::{de::DeserializeOwned, Serialize};
use std::path::PathBuf;

use super::log::ReplicationLog;
use super::state_file::{self, StateFileError};

/// A state document's name: `applied`, `collections`, `operator`.
pub type Key = &'static str;

/// The gateway's state documents (see the module documentation).
#[derive(Debug, Clone)]
pub enum StateStore {
    /// `DIR/<key>.json` files.
    Files(PathBuf),
    /// Rows of the PostgreSQL log's `chroma_ha_state` table.
    Postgres(pglog::PgLog),
}

impl StateStore {
    /// The store that goes with `log`: files in `data_dir` for the file
    /// log, the log's own database for the PostgreSQL log.
    pub fn for_log(log: &ReplicationLog, data_dir: &std::path::Path) -> StateStore {
        match log {
            ReplicationLog::File(_) => StateStore::Files(data_dir.to_path_buf()),
            ReplicationLog::Postgres(log) => StateStore::Postgres(log.clone()),
        }
    }

    /// Where document `key` lives, for messages.
    pub fn describe(&self, key: Key) -> String {
        match self {
            StateStore::Files(dir) => self.path(dir, key).display().to_string(),
            StateStore::Postgres(_) => format!("the log database's state `{key}`"),
        }
    }

    fn path(&self, dir: &std::path::Path, key: Key) -> PathBuf {
        dir.join(format!("{key}.json"))
    }

    /// Reads document `key`; `Ok(None)` if it was never stored.
    pub async fn load<T: DeserializeOwned + Send + 'static>(
        &self,
        key: Key,
    ) -> Result<Option<T>, StateFileError> {
        match self {
            StateStore::Files(dir) => {
                let path = self.path(dir, key);
                let p = path.clone();
                state_file::on_blocking_thread("reading", &path, move || state_file::load(&p)).await
            }
            StateStore::Postgres(log) => {
                let Some(bytes) = log
                    .load_state(key)
                    .await
                    .map_err(|source| shared(key, source))?
                else {
                    return Ok(None);
                };
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| StateFileError::Invalid {
                        path: PathBuf::from(self.describe(key)),
                        source,
                    })
            }
        }
    }

    /// Replaces document `key` with `value`, durably.
    pub async fn store<T: Serialize + Send + 'static>(
        &self,
        key: Key,
        value: T,
    ) -> Result<(), StateFileError> {
        match self {
            StateStore::Files(dir) => {
                let path = self.path(dir, key);
                let p = path.clone();
                state_file::on_blocking_thread("writing", &path, move || {
                    state_file::store(&p, &value)
                })
                .await
            }
            StateStore::Postgres(log) => {
                let bytes =
                    serde_json::to_vec(&value).map_err(|source| StateFileError::Invalid {
                        path: PathBuf::from(self.describe(key)),
                        source,
                    })?;
                log.store_state(key, &bytes)
                    .await
                    .map_err(|source| shared(key, source))
            }
        }
    }
}

fn shared(key: Key, source: wal::WalError) -> StateFileError {
    StateFileError::Shared { key, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stored_document_loads_back_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::Files(dir.path().to_path_buf());
        assert_eq!(store.load::<Vec<u32>>("applied").await.unwrap(), None);
        store.store("applied", vec![1u32, 2]).await.unwrap();
        assert_eq!(
            store.load::<Vec<u32>>("applied").await.unwrap(),
            Some(vec![1, 2])
        );
        assert!(dir.path().join("applied.json").exists());
    }
}
