//! Where the letters are kept: files in `DATA_DIR/dead_letters/` (see
//! `files`) with the file log, documents of the log's PostgreSQL database
//! with the PostgreSQL log (see `shared`). The same rules either way: a
//! letter's record is stored before its metadata and removed after it, a
//! removed highest id is saved first so it is never given again, and what
//! a crash left half written is cleaned up at load.

use super::files::{self, Loaded, StoredLetter};
use super::shared;
use crate::replication::state_file::{on_blocking_thread, StateFileError};
use crate::replication::state_store::StateStore;
use bytes::Bytes;
use std::path::PathBuf;

/// The letters' storage.
#[derive(Debug)]
pub(super) enum LetterStore {
    /// `DATA_DIR/dead_letters/`.
    Files {
        /// The data directory (where an old `dead_letters.json` may be).
        data_dir: PathBuf,
        /// `DATA_DIR/dead_letters`.
        dir: PathBuf,
    },
    /// The log's database.
    Postgres(pglog::PgLog),
}

impl LetterStore {
    /// The letters' storage that goes with `state`.
    pub(super) fn for_state(state: &StateStore) -> LetterStore {
        match state {
            StateStore::Files(data_dir) => LetterStore::Files {
                data_dir: data_dir.clone(),
                dir: data_dir.join(files::DIR),
            },
            StateStore::Postgres(log) => LetterStore::Postgres(log.clone()),
        }
    }

    /// Every letter, after cleaning up what a crash left half written.
    pub(super) async fn load(&self) -> Result<Loaded, StateFileError> {
        match self {
            LetterStore::Files { data_dir, dir } => {
                let root = data_dir.clone();
                on_blocking_thread("loading dead letters in", dir, move || files::load(&root)).await
            }
            LetterStore::Postgres(log) => shared::load(log).await,
        }
    }

    /// Stores a new letter durably: record first, then metadata.
    pub(super) async fn store_new(
        &self,
        stored: StoredLetter,
        record: Bytes,
    ) -> Result<(), StateFileError> {
        match self {
            LetterStore::Files { dir, .. } => {
                let d = dir.clone();
                on_blocking_thread("storing a dead letter in", dir, move || {
                    files::store_new(&d, &stored, &record)
                })
                .await
            }
            LetterStore::Postgres(log) => shared::store_new(log, &stored, &record).await,
        }
    }

    /// Replaces a letter's metadata.
    pub(super) async fn store_meta(&self, stored: StoredLetter) -> Result<(), StateFileError> {
        match self {
            LetterStore::Files { dir, .. } => {
                let d = dir.clone();
                on_blocking_thread("storing a dead letter in", dir, move || {
                    files::store_meta(&d, &stored)
                })
                .await
            }
            LetterStore::Postgres(log) => shared::store_meta(log, &stored).await,
        }
    }

    /// Removes letter `id`; saves `high_water` first if given.
    pub(super) async fn delete(
        &self,
        id: u64,
        high_water: Option<u64>,
    ) -> Result<(), StateFileError> {
        match self {
            LetterStore::Files { dir, .. } => {
                let d = dir.clone();
                on_blocking_thread("removing a dead letter in", dir, move || {
                    files::delete(&d, id, high_water)
                })
                .await
            }
            LetterStore::Postgres(log) => shared::delete(log, id, high_water).await,
        }
    }

    /// Saves `next_id` as the highest id ever given.
    pub(super) async fn store_next_id(&self, next_id: u64) -> Result<(), StateFileError> {
        match self {
            LetterStore::Files { dir, .. } => {
                let d = dir.clone();
                on_blocking_thread("storing a dead letter id in", dir, move || {
                    files::store_next_id(&d, next_id)
                })
                .await
            }
            LetterStore::Postgres(log) => shared::store_next_id(log, next_id).await,
        }
    }

    /// Letter `id`'s record bytes.
    pub(super) async fn read_record(&self, id: u64) -> Result<Bytes, StateFileError> {
        match self {
            LetterStore::Files { dir, .. } => {
                let d = dir.clone();
                on_blocking_thread("reading a dead letter in", dir, move || {
                    files::read_record(&d, id)
                })
                .await
            }
            LetterStore::Postgres(log) => shared::read_record(log, id).await,
        }
    }
}
