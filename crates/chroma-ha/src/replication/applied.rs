//! What each server has applied, durably: a cursor (every record up to it is
//! finished on that server) and the LSNs above it that the server has
//! applied too.
//!
//! This record is what makes the repeat rule hold across a crash. An applier
//! records an applied entry here *before* it sends a later entry that
//! conflicts with it, so after a restart a server is sent again only entries
//! that no later applied entry conflicts with: at most the last applied
//! entry of each conflict chain, whose single repeat is harmless
//! (docs/ARCHITECTURE.md, "Repeats").
//!
//! Stored as one document, `applied` (see [`state_store`]: with the file
//! log, `DATA_DIR/applied.json`, replaced atomically):
//!
//! ```text
//! {"version": 1, "servers": {"primary": {"cursor": 41, "applied": [43, 44]}}}
//! ```
//!
//! One committer task writes it. Requests from every applier that arrive
//! while a write is under way are merged into the next write (group commit),
//! so one write and its fsyncs cover every server with something pending.
//! The set above a cursor is bounded by the applier's window.

use super::state_file::StateFileError;
use super::state_store::{self, StateStore};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// The format version this binary writes and reads.
const VERSION: u32 = 1;
/// The document's name in the [`StateStore`].
pub(crate) const KEY: state_store::Key = "applied";

/// What one server has applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedState {
    /// Every record up to here is finished on the server.
    pub cursor: u64,
    /// Entries above `cursor` the server has applied (or answered) too.
    #[serde(rename = "applied")]
    pub above: BTreeSet<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct FileFormat {
    version: u32,
    servers: BTreeMap<String, AppliedState>,
}

/// Figures about the committer, for metrics.
#[derive(Debug, Default)]
pub struct AppliedStats {
    /// File writes made durable.
    pub commits: AtomicU64,
    /// Requests those writes covered (≥ commits: group commit).
    pub requests: AtomicU64,
    /// Total time spent writing, in microseconds.
    pub micros: AtomicU64,
    /// Writes that failed.
    pub failures: AtomicU64,
}

struct Request {
    server: String,
    state: AppliedState,
    done: oneshot::Sender<Result<(), String>>,
}

/// The durable applied record of every server, written by one committer
/// task with group commit.
#[derive(Debug, Clone)]
pub struct AppliedLog {
    tx: mpsc::UnboundedSender<Request>,
    stats: Arc<AppliedStats>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("server", &self.server)
            .finish()
    }
}

/// The file could not be read at start.
#[derive(Debug, thiserror::Error)]
pub enum AppliedLoadError {
    /// Reading or parsing failed.
    #[error(transparent)]
    File(#[from] StateFileError),
    /// Written by a newer version.
    #[error("{place} has format version {found}; this gateway reads version {VERSION}")]
    Version {
        /// Where it is kept.
        place: String,
        /// The version found.
        found: u32,
    },
}

impl AppliedLog {
    /// Reads the record from `store` (an empty one if it was never
    /// stored), keeps only the servers in `servers`, and starts the
    /// committer task.
    pub async fn open(
        store: StateStore,
        servers: &[String],
    ) -> Result<(AppliedLog, BTreeMap<String, AppliedState>), AppliedLoadError> {
        let mut file: FileFormat = store.load(KEY).await?.unwrap_or(FileFormat {
            version: VERSION,
            servers: BTreeMap::new(),
        });
        if file.version > VERSION {
            return Err(AppliedLoadError::Version {
                place: store.describe(KEY),
                found: file.version,
            });
        }
        file.version = VERSION;
        file.servers.retain(|name, _| servers.contains(name));
        let initial = file.servers.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(AppliedStats::default());
        tokio::spawn(commit_loop(store, file, rx, stats.clone()));
        Ok((AppliedLog { tx, stats }, initial))
    }

    /// Records durably that `server` has applied `state`. The answer comes
    /// once the record is on disk (or the write failed).
    pub fn record(
        &self,
        server: &str,
        state: AppliedState,
    ) -> oneshot::Receiver<Result<(), String>> {
        let (done, rx) = oneshot::channel();
        let request = Request {
            server: server.to_string(),
            state,
            done,
        };
        if let Err(mpsc::error::SendError(request)) = self.tx.send(request) {
            let _ = request
                .done
                .send(Err("the applied-state committer has stopped".into()));
        }
        rx
    }

    /// The committer's figures.
    pub fn stats(&self) -> &AppliedStats {
        &self.stats
    }
}

async fn commit_loop(
    store: StateStore,
    mut file: FileFormat,
    mut rx: mpsc::UnboundedReceiver<Request>,
    stats: Arc<AppliedStats>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        for request in &batch {
            file.servers
                .insert(request.server.clone(), request.state.clone());
        }
        let snapshot = FileFormat {
            version: VERSION,
            servers: file.servers.clone(),
        };
        let started = Instant::now();
        let result = store.store(KEY, snapshot).await.map_err(|e| e.to_string());
        stats
            .micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        stats.commits.fetch_add(1, Ordering::Relaxed);
        stats
            .requests
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        if result.is_err() {
            stats.failures.fetch_add(1, Ordering::Relaxed);
        }
        for request in batch {
            let _ = request.done.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_recorded_state_is_read_back_after_a_restart_and_unknown_servers_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::Files(dir.path().to_path_buf());
        let names = vec!["a".to_string(), "b".to_string()];
        let (log, initial) = AppliedLog::open(store.clone(), &names).await.unwrap();
        assert!(initial.is_empty());
        let a = AppliedState {
            cursor: 7,
            above: BTreeSet::from([9, 12]),
        };
        let b = AppliedState {
            cursor: 3,
            above: BTreeSet::new(),
        };
        let (ra, rb) = (log.record("a", a.clone()), log.record("b", b.clone()));
        ra.await.unwrap().unwrap();
        rb.await.unwrap().unwrap();
        assert!(log.stats().commits.load(Ordering::Relaxed) >= 1);
        let (_, again) = AppliedLog::open(store.clone(), &names).await.unwrap();
        assert_eq!(again.get("a"), Some(&a));
        assert_eq!(again.get("b"), Some(&b));
        let (_, only_a) = AppliedLog::open(store, &names[..1]).await.unwrap();
        assert_eq!(only_a.len(), 1);
    }

    #[tokio::test]
    async fn a_file_of_a_newer_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("applied.json");
        std::fs::write(&path, br#"{"version": 99, "servers": {}}"#).unwrap();
        let store = StateStore::Files(dir.path().to_path_buf());
        let err = AppliedLog::open(store, &[]).await.unwrap_err();
        assert!(err.to_string().contains("version 99"), "{err}");
    }
}
