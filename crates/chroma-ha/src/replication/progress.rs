//! How far each server's applier has come, in memory: what it has read from
//! the log, what it has applied, and which entries it still holds. Reads
//! use it to pick servers that have applied every write they must see.

use crate::chroma::{Scope, WriteFootprint};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// What an applier is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplierState {
    /// Applying entries as they come.
    Running,
    /// Stopped by an operator.
    Paused,
    /// Its server is unhealthy; waiting for it.
    WaitingForServer,
}

impl ApplierState {
    /// The name used in /status.
    pub fn as_str(self) -> &'static str {
        match self {
            ApplierState::Running => "running",
            ApplierState::Paused => "paused",
            ApplierState::WaitingForServer => "waiting_for_server",
        }
    }
}

/// An entry the applier has read but not finished.
#[derive(Debug, Clone)]
pub struct Held {
    /// What it writes (`None`: not an entry the dialect knows; conflicts with all).
    pub footprint: Option<WriteFootprint>,
    /// When the gateway received it, ms since the epoch.
    pub received_at_ms: u64,
}

/// Counters and positions of one server's applier.
#[derive(Debug)]
pub struct Progress {
    inner: Mutex<ProgressInner>,
}

/// A copy of a server's progress.
#[derive(Debug, Clone)]
pub struct ProgressSnapshot {
    /// Every record up to here is applied or skipped.
    pub applied_upto: u64,
    /// The last record read from the log.
    pub fetched_upto: u64,
    /// Entries read and not finished.
    pub held: usize,
    /// Receive time (ms) of the oldest entry not finished, if any.
    pub oldest_held_ms: Option<u64>,
    /// What the applier is doing.
    pub state: ApplierState,
    /// Entries applied since start.
    pub applied_total: u64,
    /// Entries applied that another server executed (replays).
    pub replayed_total: u64,
    /// Transient failures retried since start.
    pub retries_total: u64,
    /// The last failure, if any.
    pub last_error: Option<String>,
}

#[derive(Debug)]
struct ProgressInner {
    snapshot: ProgressSnapshot,
    held: BTreeMap<u64, Held>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Progress {
    /// Progress of an applier starting after `cursor`.
    pub fn new(cursor: u64) -> Self {
        Progress {
            inner: Mutex::new(ProgressInner {
                snapshot: ProgressSnapshot {
                    applied_upto: cursor,
                    fetched_upto: cursor,
                    held: 0,
                    oldest_held_ms: None,
                    state: ApplierState::Running,
                    applied_total: 0,
                    replayed_total: 0,
                    retries_total: 0,
                    last_error: None,
                },
                held: BTreeMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ProgressInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the figures.
    pub fn snapshot(&self) -> ProgressSnapshot {
        let inner = self.lock();
        let mut s = inner.snapshot.clone();
        s.held = inner.held.len();
        s.oldest_held_ms = inner.held.values().map(|h| h.received_at_ms).min();
        s
    }

    /// The applier read record `lsn` (an entry it holds, or `None` for a
    /// record it finished at once).
    pub fn fetched(&self, lsn: u64, held: Option<Held>) {
        let mut inner = self.lock();
        inner.snapshot.fetched_upto = inner.snapshot.fetched_upto.max(lsn);
        if let Some(held) = held {
            inner.held.insert(lsn, held);
        }
    }

    /// The applier finished `lsn` (applied, skipped or dead-lettered).
    pub fn finished(&self, lsn: u64) {
        self.lock().held.remove(&lsn);
    }

    /// Every record up to `lsn` is finished.
    pub fn applied_upto(&self, lsn: u64) {
        let mut inner = self.lock();
        inner.snapshot.applied_upto = inner.snapshot.applied_upto.max(lsn);
    }

    /// Counts an applied entry.
    pub fn count_applied(&self, replayed: bool) {
        let mut inner = self.lock();
        inner.snapshot.applied_total += 1;
        if replayed {
            inner.snapshot.replayed_total += 1;
        }
    }

    /// Counts a retry after a transient failure.
    pub fn count_retry(&self, error: String) {
        let mut inner = self.lock();
        inner.snapshot.retries_total += 1;
        inner.snapshot.last_error = Some(error);
    }

    /// Sets what the applier is doing.
    pub fn set_state(&self, state: ApplierState) {
        self.lock().snapshot.state = state;
    }

    /// Whether this server has applied every entry up to `barrier` that
    /// overlaps `scope` (`None`: the read touches no data) and that
    /// `is_pending` says still matters (committed, not undecided).
    pub fn covers(
        &self,
        scope: Option<&Scope>,
        barrier: u64,
        is_pending: impl Fn(u64) -> bool,
    ) -> bool {
        let inner = self.lock();
        if inner.snapshot.fetched_upto < barrier {
            return false;
        }
        let Some(scope) = scope else {
            return true;
        };
        !inner.held.range(..=barrier).any(|(lsn, held)| {
            let overlaps = held
                .footprint
                .as_ref()
                .is_none_or(|f| f.scope.overlaps(scope));
            overlaps && is_pending(*lsn)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chroma::Keys;

    fn collection(id: &str) -> Scope {
        Scope::Collection {
            tenant: "t".into(),
            database: "d".into(),
            collection: id.into(),
        }
    }

    #[test]
    fn a_server_covers_a_read_once_overlapping_entries_are_applied() {
        let p = Progress::new(0);
        let a = collection("a");
        let b = collection("b");
        p.fetched(
            1,
            Some(Held {
                footprint: Some(WriteFootprint {
                    scope: a.clone(),
                    keys: Keys::All,
                }),
                received_at_ms: 5,
            }),
        );
        assert!(!p.covers(Some(&b), 2, |_| true), "not fetched up to 2");
        p.fetched(2, None);
        assert!(p.covers(Some(&b), 2, |_| true));
        assert!(!p.covers(Some(&a), 2, |_| true));
        assert!(
            p.covers(Some(&a), 2, |_| false),
            "undecided entries do not hold reads"
        );
        assert_eq!(p.snapshot().oldest_held_ms, Some(5));
        p.finished(1);
        assert!(p.covers(Some(&a), 2, |_| true));
    }
}
