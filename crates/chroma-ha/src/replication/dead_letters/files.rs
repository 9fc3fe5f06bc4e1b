//! The dead letters on disk, one letter per pair of files in
//! `DATA_DIR/dead_letters/`:
//!
//! ```text
//! 00000000000000000007.json     the letter's metadata (and its footprint)
//! 00000000000000000007.record   the entry's log record, raw bytes
//! next_id                       highest id ever given (written when the
//!                               highest letter is removed, so ids are never reused)
//! ```
//!
//! Every file is written atomically (temporary file, fsync, rename, fsync of
//! the directory). A letter exists when its `.json` file does: the record
//! is made durable first and removed last, so a crash leaves at worst an
//! orphan `.record` (or `.tmp`) file, which loading removes. Everything here
//! is blocking I/O: callers run it on a blocking thread.

use super::DeadLetter;
use crate::chroma::{Keys, Scope, WriteFootprint};
use crate::replication::record::{self, LogRecord};
use crate::replication::state_file::{self, StateFileError};
use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The directory under the data directory.
pub(super) const DIR: &str = "dead_letters";
/// The single-file list of earlier versions, migrated at start.
pub(super) const LEGACY_FILE: &str = "dead_letters.json";
const NEXT_ID: &str = "next_id";

/// A footprint as stored in a letter's metadata file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct StoredFootprint {
    scope: Scope,
    /// Record id hashes; `None` = every record (or everything in scope).
    ids: Option<Vec<u64>>,
}

impl From<&WriteFootprint> for StoredFootprint {
    fn from(f: &WriteFootprint) -> Self {
        let ids = match &f.keys {
            Keys::All => None,
            Keys::Ids(ids) => Some(ids.clone()),
        };
        StoredFootprint {
            scope: f.scope.clone(),
            ids,
        }
    }
}

impl From<StoredFootprint> for WriteFootprint {
    fn from(f: StoredFootprint) -> Self {
        // An empty id list would conflict with nothing: read it as all.
        let keys = match f.ids {
            Some(ids) if !ids.is_empty() => Keys::Ids(ids),
            _ => Keys::All,
        };
        WriteFootprint {
            scope: f.scope,
            keys,
        }
    }
}

/// A letter's metadata file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct StoredLetter {
    #[serde(flatten)]
    pub letter: DeadLetter,
    /// What the entry writes; `None`: unknown (overlaps everything).
    pub footprint: Option<StoredFootprint>,
}

/// What loading found.
#[derive(Debug, Default)]
pub(super) struct Loaded {
    pub next_id: u64,
    pub letters: Vec<(DeadLetter, Option<WriteFootprint>)>,
}

fn io(context: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StateFileError {
    let path = path.to_path_buf();
    move |source| StateFileError::Io {
        context,
        path,
        source,
    }
}

fn meta_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.json"))
}

fn record_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.record"))
}

fn sync_dir(dir: &Path) -> Result<(), StateFileError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing directory", dir))
}

/// Writes `bytes` to `path` via a temporary file (fsync, rename); the
/// caller syncs the directory.
fn write_replacing(path: &Path, bytes: &[u8]) -> Result<(), StateFileError> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp).map_err(io("creating", &tmp))?;
    file.write_all(bytes).map_err(io("writing", &tmp))?;
    file.sync_all().map_err(io("syncing", &tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io("renaming over", path))
}

fn meta_bytes(stored: &StoredLetter) -> Result<Vec<u8>, StateFileError> {
    serde_json::to_vec_pretty(stored).map_err(|source| StateFileError::Invalid {
        path: PathBuf::from(format!("dead letter {}", stored.letter.id)),
        source,
    })
}

/// Stores a new letter durably: record first, then metadata.
pub(super) fn store_new(
    dir: &Path,
    stored: &StoredLetter,
    record: &[u8],
) -> Result<(), StateFileError> {
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let id = stored.letter.id;
    write_replacing(&record_path(dir, id), record)?;
    sync_dir(dir)?;
    write_replacing(&meta_path(dir, id), &meta_bytes(stored)?)?;
    sync_dir(dir)
}

/// Replaces a letter's metadata.
pub(super) fn store_meta(dir: &Path, stored: &StoredLetter) -> Result<(), StateFileError> {
    write_replacing(&meta_path(dir, stored.letter.id), &meta_bytes(stored)?)?;
    sync_dir(dir)
}

/// Removes a letter: metadata first, then the record. `high_water`, if
/// given, is saved first so that the id is never given again.
pub(super) fn delete(dir: &Path, id: u64, high_water: Option<u64>) -> Result<(), StateFileError> {
    if let Some(next_id) = high_water {
        write_replacing(&dir.join(NEXT_ID), next_id.to_string().as_bytes())?;
    }
    let remove = |path: PathBuf| match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("removing", &path)(e)),
        _ => Ok(()),
    };
    remove(meta_path(dir, id))?;
    sync_dir(dir)?;
    remove(record_path(dir, id))?;
    sync_dir(dir)
}

/// Saves `next_id` as the highest id ever given.
pub(super) fn store_next_id(dir: &Path, next_id: u64) -> Result<(), StateFileError> {
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    write_replacing(&dir.join(NEXT_ID), next_id.to_string().as_bytes())?;
    sync_dir(dir)
}

/// A letter's record bytes.
pub(super) fn read_record(dir: &Path, id: u64) -> Result<Bytes, StateFileError> {
    let path = record_path(dir, id);
    std::fs::read(&path)
        .map(Bytes::from)
        .map_err(io("reading", &path))
}

/// The footprint of a logged entry's record (`None`: not an entry the
/// dialect knows; overlaps everything).
pub(super) fn footprint_of(record_bytes: &Bytes) -> Option<WriteFootprint> {
    let Ok(LogRecord::Entry(entry)) = record::decode(record_bytes) else {
        return None;
    };
    match crate::chroma::classify(&entry.method, entry.path_only()) {
        crate::chroma::Route::Known(route) => crate::chroma::footprint(&route, &entry.body),
        crate::chroma::Route::Unknown(_) => None,
    }
}

/// The list of earlier versions: one JSON file with a base64 copy of
/// every record.
#[derive(Debug, Deserialize)]
struct LegacyFile {
    next_id: u64,
    dead_letters: Vec<LegacyLetter>,
}

#[derive(Debug, Deserialize)]
struct LegacyLetter {
    #[serde(flatten)]
    letter: DeadLetter,
    record: String,
}

/// Moves the letters of `DATA_DIR/dead_letters.json` into the directory,
/// then removes the file. Safe to run again after a crash part-way: the
/// same ids are written again.
fn migrate(data_dir: &Path, dir: &Path) -> Result<(), StateFileError> {
    let legacy_path = data_dir.join(LEGACY_FILE);
    let Some(legacy) = state_file::load::<LegacyFile>(&legacy_path)? else {
        return Ok(());
    };
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let count = legacy.dead_letters.len();
    let mut highest = legacy.next_id;
    for old in legacy.dead_letters {
        let record = match base64::engine::general_purpose::STANDARD.decode(&old.record) {
            Ok(bytes) => Bytes::from(bytes),
            Err(e) => {
                tracing::error!(id = old.letter.id, error = %e, "a migrated dead letter's record is not valid base64; kept without it");
                Bytes::new()
            }
        };
        let mut letter = old.letter;
        letter.record_bytes = record.len() as u64;
        highest = highest.max(letter.id);
        let stored = StoredLetter {
            footprint: footprint_of(&record).as_ref().map(StoredFootprint::from),
            letter,
        };
        store_new(dir, &stored, &record)?;
    }
    write_replacing(&dir.join(NEXT_ID), highest.to_string().as_bytes())?;
    sync_dir(dir)?;
    std::fs::remove_file(&legacy_path).map_err(io("removing", &legacy_path))?;
    sync_dir(data_dir)?;
    tracing::info!(
        letters = count,
        from = %legacy_path.display(),
        to = %dir.display(),
        "dead letters migrated to one file per letter"
    );
    Ok(())
}

/// Loads every letter of `DATA_DIR/dead_letters/` (after migrating an old
/// `dead_letters.json`), removing what a crash left half written.
pub(super) fn load(data_dir: &Path) -> Result<Loaded, StateFileError> {
    let dir = data_dir.join(DIR);
    migrate(data_dir, &dir)?;
    let mut loaded = Loaded::default();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(loaded),
        Err(e) => return Err(io("listing", &dir)(e)),
    };
    let mut records = std::collections::HashSet::new();
    let mut metas = Vec::new();
    for entry in entries {
        let path = entry.map_err(io("listing", &dir))?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let id = name.split('.').next().and_then(|s| s.parse::<u64>().ok());
        match (id, path.extension().and_then(|e| e.to_str())) {
            (Some(id), Some("json")) => metas.push((id, path)),
            (Some(id), Some("record")) => {
                records.insert(id);
            }
            (_, Some("tmp")) => {
                std::fs::remove_file(&path).map_err(io("removing", &path))?;
            }
            _ if name == NEXT_ID => {
                let text = std::fs::read_to_string(&path).map_err(io("reading", &path))?;
                loaded.next_id = loaded.next_id.max(text.trim().parse().unwrap_or(0));
            }
            _ => {
                tracing::warn!(file = %path.display(), "unexpected file among the dead letters; ignored")
            }
        }
    }
    let mut stored = Vec::with_capacity(metas.len());
    for (_, path) in metas {
        stored.extend(state_file::load::<StoredLetter>(&path)?);
    }
    for orphan in assemble(&mut loaded, stored, records) {
        let path = record_path(&dir, orphan);
        tracing::info!(file = %path.display(), "removing the record of a dead letter that was never completed");
        std::fs::remove_file(&path).map_err(io("removing", &path))?;
    }
    Ok(loaded)
}

/// Adds the `stored` letters to `loaded`, oldest first, taking each one's
/// record from `records`; returns the records no letter claimed (a crash
/// between storing a record and its metadata left them: to be removed).
/// Shared by both stores.
pub(super) fn assemble(
    loaded: &mut Loaded,
    stored: Vec<StoredLetter>,
    mut records: std::collections::HashSet<u64>,
) -> Vec<u64> {
    for letter in stored {
        if !records.remove(&letter.letter.id) {
            tracing::error!(
                id = letter.letter.id,
                "dead letter without its record; kept, but it cannot be retried"
            );
        }
        loaded.next_id = loaded.next_id.max(letter.letter.id);
        loaded
            .letters
            .push((letter.letter, letter.footprint.map(WriteFootprint::from)));
    }
    loaded.letters.sort_by_key(|(l, _)| l.id);
    let mut orphans: Vec<u64> = records.into_iter().collect();
    orphans.sort_unstable();
    orphans
}
