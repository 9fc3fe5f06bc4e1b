//! The dead-letter list: entries the executor applied but a server refused
//! with a well-formed error (a divergence). An operator lists them, retries
//! one, or skips one (admin API).
//!
//! Durable in `DATA_DIR/dead_letters/`, one metadata file and one record
//! file per letter (see `files`), or, with the PostgreSQL log, as the same
//! two documents per letter in its database (see `shared`), so adding or
//! removing a letter writes only that letter. The metadata of every letter
//! is kept in memory; a letter's record bytes are read when needed. The list holds
//! at most `max` letters: [`DeadLetters::add`] refuses past that
//! ([`DeadLetterError::Full`]) rather than dropping anything.

mod files;
mod shared;
mod store;

use crate::chroma::WriteFootprint;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;
use store::LetterStore;
use tokio::sync::Notify;

pub use super::state_file::StateFileError;
use super::state_store::StateStore;

/// One divergent entry on one server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Its number in the list (stable, never reused).
    pub id: u64,
    /// The server that refused it.
    pub server: String,
    /// The entry's LSN.
    pub lsn: u64,
    /// HTTP method of the entry.
    pub method: String,
    /// Logical path of the entry.
    pub path: String,
    /// What the server answered: status.
    pub status: u16,
    /// What the server answered: body (lossy UTF-8).
    pub error: String,
    /// When it was added, Unix seconds.
    pub at: f64,
    /// Tries so far (1 = the applier's own).
    pub attempts: u32,
    /// Size of the entry's log record, kept in its own file so it can be
    /// retried after the log segment holding it is gone.
    #[serde(default)]
    pub record_bytes: u64,
}

impl DeadLetter {
    /// Whether the letter holds Chroma's own verdict on the entry (a
    /// well-formed refusal), not the gateway giving up on it (`GaveUp`) or
    /// a log record it could not read.
    pub fn is_chromas_refusal(&self) -> bool {
        self.status != 0 && !self.error.contains(r#""error":"GaveUp""#)
    }
}

/// Why a letter could not be added.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// The list holds `max` letters already.
    #[error(
        "the dead-letter list is full ({max} letters, replication.max_dead_letters): \
         retry or skip letters (/admin/dead-letters) or raise the limit"
    )]
    Full {
        /// The configured limit.
        max: usize,
    },
    /// Its files could not be written.
    #[error(transparent)]
    State(#[from] StateFileError),
}

#[derive(Debug)]
struct Indexed {
    letter: DeadLetter,
    footprint: Option<WriteFootprint>,
}

#[derive(Debug, Default)]
struct Index {
    /// Highest id ever given.
    next_id: u64,
    letters: BTreeMap<u64, Indexed>,
    per_server: HashMap<String, usize>,
}

impl Index {
    fn insert(&mut self, letter: DeadLetter, footprint: Option<WriteFootprint>) {
        self.next_id = self.next_id.max(letter.id);
        *self.per_server.entry(letter.server.clone()).or_default() += 1;
        self.letters
            .insert(letter.id, Indexed { letter, footprint });
    }
}

/// The durable, bounded list. Every change is durable when its call
/// returns; file I/O runs on blocking threads, and changes are made one at
/// a time.
#[derive(Debug)]
pub struct DeadLetters {
    store: LetterStore,
    max: usize,
    index: Mutex<Index>,
    writes: tokio::sync::Mutex<()>,
    room: Notify,
}

impl DeadLetters {
    /// Loads the letters of `DATA_DIR/dead_letters/`, first migrating an
    /// old `DATA_DIR/dead_letters.json` (which is then removed). Holds at
    /// most `max` letters (letters already stored beyond it are kept).
    pub async fn open(data_dir: &Path, max: usize) -> Result<Self, StateFileError> {
        Self::open_in(&StateStore::Files(data_dir.to_path_buf()), max).await
    }

    /// Loads the letters kept with `state` (see the module documentation);
    /// holds at most `max` letters.
    pub async fn open_in(state: &StateStore, max: usize) -> Result<Self, StateFileError> {
        let store = LetterStore::for_state(state);
        let loaded = store.load().await?;
        let mut index = Index {
            next_id: loaded.next_id,
            ..Index::default()
        };
        for (letter, footprint) in loaded.letters {
            index.insert(letter, footprint);
        }
        if index.letters.len() >= max {
            tracing::warn!(
                letters = index.letters.len(),
                max,
                "the dead-letter list is full: servers will stop at divergent entries"
            );
        }
        Ok(DeadLetters {
            store,
            max: max.max(1),
            index: Mutex::new(index),
            writes: tokio::sync::Mutex::new(()),
            room: Notify::new(),
        })
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a letter (its `id` is assigned here) with its log record and
    /// footprint, and returns its id. A letter for the same server and LSN
    /// is not added twice: the existing one counts another attempt. Fails
    /// with [`DeadLetterError::Full`] when the list is at its limit.
    pub async fn add(
        &self,
        mut letter: DeadLetter,
        record: Bytes,
        footprint: Option<WriteFootprint>,
    ) -> Result<u64, DeadLetterError> {
        let _one_at_a_time = self.writes.lock().await;
        let existing = self
            .index()
            .letters
            .values()
            .find(|d| d.letter.server == letter.server && d.letter.lsn == letter.lsn)
            .map(|d| d.letter.id);
        if let Some(id) = existing {
            self.store_attempt(id, letter.status, letter.error).await?;
            return Ok(id);
        }
        {
            let index = self.index();
            if index.letters.len() >= self.max {
                return Err(DeadLetterError::Full { max: self.max });
            }
            letter.id = index.next_id + 1;
        }
        letter.record_bytes = record.len() as u64;
        let stored = files::StoredLetter {
            letter: letter.clone(),
            footprint: footprint.as_ref().map(files::StoredFootprint::from),
        };
        self.store.store_new(stored, record).await?;
        let id = letter.id;
        self.index().insert(letter, footprint);
        Ok(id)
    }

    /// Every dead letter, oldest first.
    pub fn list(&self) -> Vec<DeadLetter> {
        self.index()
            .letters
            .values()
            .map(|d| d.letter.clone())
            .collect()
    }

    /// The dead letters whose id is above `id` (all of them for `None`),
    /// oldest first, without copying the others.
    pub fn newer_than(&self, id: Option<u64>) -> Vec<DeadLetter> {
        let from = id.map_or(0, |id| id.saturating_add(1));
        self.index()
            .letters
            .range(from..)
            .map(|(_, d)| d.letter.clone())
            .collect()
    }

    /// Every dead letter with its record bytes (`None` if its record file
    /// cannot be read), oldest first.
    pub async fn list_with_records(&self) -> Vec<(DeadLetter, Option<Bytes>)> {
        let letters = self.list();
        let mut out = Vec::with_capacity(letters.len());
        for letter in letters {
            let record = self.store.read_record(letter.id).await.ok();
            out.push((letter, record));
        }
        out
    }

    /// One dead letter.
    pub fn get(&self, id: u64) -> Option<DeadLetter> {
        self.index().letters.get(&id).map(|d| d.letter.clone())
    }

    /// What dead letter `id`'s entry writes (`Some(None)`: unknown, overlaps
    /// everything; `None`: no such letter).
    pub fn footprint(&self, id: u64) -> Option<Option<WriteFootprint>> {
        self.index().letters.get(&id).map(|d| d.footprint.clone())
    }

    /// The open letters of `server`: (id, LSN, footprint).
    pub fn open_for(&self, server: &str) -> Vec<(u64, u64, Option<WriteFootprint>)> {
        self.index()
            .letters
            .values()
            .filter(|d| d.letter.server == server)
            .map(|d| (d.letter.id, d.letter.lsn, d.footprint.clone()))
            .collect()
    }

    /// Dead letter `id`'s log record, read from its file.
    pub async fn record(&self, id: u64) -> Result<Bytes, StateFileError> {
        self.store.read_record(id).await
    }

    /// Removes a dead letter (resolved or skipped) from disk and the list.
    pub async fn remove(&self, id: u64) -> Result<Option<DeadLetter>, StateFileError> {
        let _one_at_a_time = self.writes.lock().await;
        let high_water = {
            let index = self.index();
            if !index.letters.contains_key(&id) {
                return Ok(None);
            }
            // Removing the highest letter: keep its id from being reused.
            let highest = index.letters.keys().next_back().copied();
            (highest == Some(id)).then_some(index.next_id)
        };
        self.store.delete(id, high_water).await?;
        let removed = {
            let mut index = self.index();
            let removed = index.letters.remove(&id);
            if let Some(d) = &removed {
                if let Some(n) = index.per_server.get_mut(&d.letter.server) {
                    *n = n.saturating_sub(1);
                }
            }
            removed
        };
        self.room.notify_waiters();
        Ok(removed.map(|d| d.letter))
    }

    /// Records another failed try of a dead letter.
    pub async fn record_attempt(
        &self,
        id: u64,
        status: u16,
        error: String,
    ) -> Result<(), StateFileError> {
        let _one_at_a_time = self.writes.lock().await;
        self.store_attempt(id, status, error).await
    }

    async fn store_attempt(
        &self,
        id: u64,
        status: u16,
        error: String,
    ) -> Result<(), StateFileError> {
        let stored = {
            let index = self.index();
            let Some(d) = index.letters.get(&id) else {
                return Ok(());
            };
            let mut letter = d.letter.clone();
            letter.attempts = letter.attempts.saturating_add(1);
            letter.status = status;
            letter.error = error;
            files::StoredLetter {
                letter,
                footprint: d.footprint.as_ref().map(files::StoredFootprint::from),
            }
        };
        let letter = stored.letter.clone();
        self.store.store_meta(stored).await?;
        if let Some(d) = self.index().letters.get_mut(&id) {
            d.letter = letter;
        }
        Ok(())
    }

    /// Writes every letter (same id, record and footprint) and the highest
    /// id given into `target`, an empty store (`chroma-ha log migrate`).
    /// Returns how many letters were copied.
    pub async fn copy_into(&self, target: &StateStore) -> Result<usize, StateFileError> {
        let target = LetterStore::for_state(target);
        let letters: Vec<(DeadLetter, Option<WriteFootprint>)> = self
            .index()
            .letters
            .values()
            .map(|d| (d.letter.clone(), d.footprint.clone()))
            .collect();
        for (letter, footprint) in &letters {
            let record = self.store.read_record(letter.id).await?;
            let stored = files::StoredLetter {
                letter: letter.clone(),
                footprint: footprint.as_ref().map(files::StoredFootprint::from),
            };
            target.store_new(stored, record).await?;
        }
        let next_id = self.index().next_id;
        if next_id > 0 {
            target.store_next_id(next_id).await?;
        }
        Ok(letters.len())
    }

    /// Resolves when a letter is removed (room may have been made). Create
    /// it before trying [`DeadLetters::add`] so no removal is missed.
    pub fn room_made(&self) -> tokio::sync::futures::Notified<'_> {
        self.room.notified()
    }

    /// How many dead letters a server has.
    pub fn count_for(&self, server: &str) -> usize {
        self.index().per_server.get(server).copied().unwrap_or(0)
    }

    /// How many dead letters there are.
    pub fn len(&self) -> usize {
        self.index().letters.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most letters the list holds.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Whether the list is at its limit (the next divergence will stop
    /// its server's applier).
    pub fn is_full(&self) -> bool {
        self.len() >= self.max
    }
}

#[cfg(test)]
mod tests;
