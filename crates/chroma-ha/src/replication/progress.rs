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
    /// Its server refused an entry and the dead-letter list is full: it
    /// holds that entry unfinished (and so stops moving on past it) until
    /// an operator retries or skips letters.
    DeadLettersFull,
}

impl ApplierState {
    /// The name used in /status.
    pub fn as_str(self) -> &'static str {
        match self {
            ApplierState::Running => "running",
            ApplierState::Paused => "paused",
            ApplierState::WaitingForServer => "waiting_for_server",
            ApplierState::DeadLettersFull => "dead_letters_full",
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
    /// While the applier is paused with nothing under way and everything
    /// it applied durably recorded: that applied state. The server's
    /// content is then exactly the log's effects up to it (what backups and
    /// rebuilds copy); `None` otherwise.
    pub paused_at: Option<super::applied::AppliedState>,
}

#[derive(Debug)]
struct ProgressInner {
    snapshot: ProgressSnapshot,
    held: BTreeMap<u64, Held>,
    /// Footprints of this server's open dead letters, by letter id: writes
    /// it refused, so it does not hold their data.
    dead: BTreeMap<u64, Option<WriteFootprint>>,
    /// Entries waiting for room on the full dead-letter list.
    blocked_on_dead_letters: usize,
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
                    paused_at: None,
                },
                held: BTreeMap::new(),
                dead: BTreeMap::new(),
                blocked_on_dead_letters: 0,
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
        if inner.blocked_on_dead_letters > 0 && s.state != ApplierState::Paused {
            s.state = ApplierState::DeadLettersFull;
        }
        s
    }

    /// Server refused the write of dead letter `id` (footprint `None`:
    /// unknown, overlaps everything): until [`Progress::release_dead_letter`],
    /// [`Progress::covers`] is false for every scope it overlaps.
    pub fn hold_dead_letter(&self, id: u64, footprint: Option<WriteFootprint>) {
        self.lock().dead.insert(id, footprint);
    }

    /// Dead letter `id` was retried successfully or skipped.
    pub fn release_dead_letter(&self, id: u64) {
        self.lock().dead.remove(&id);
    }

    /// Marks one entry as waiting for room on the full dead-letter list,
    /// until the returned guard is dropped; meanwhile the applier reports
    /// [`ApplierState::DeadLettersFull`].
    pub fn block_on_dead_letters(&self) -> DeadLettersBlocked<'_> {
        self.lock().blocked_on_dead_letters += 1;
        DeadLettersBlocked(self)
    }

    /// Whether the applier holds an entry until the full dead-letter list
    /// has room: such a server must not be chosen to execute writes.
    pub fn is_blocked_on_dead_letters(&self) -> bool {
        self.lock().blocked_on_dead_letters > 0
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

    /// Sets (or clears) the state a paused, quiescent applier stands at.
    pub fn set_paused_at(&self, state: Option<super::applied::AppliedState>) {
        let mut inner = self.lock();
        if inner.snapshot.paused_at != state {
            inner.snapshot.paused_at = state;
        }
    }

    /// Starts over after `cursor` (a new applier at a new position): the
    /// positions are set to it and no entry is held.
    pub fn reset(&self, cursor: u64) {
        let mut inner = self.lock();
        inner.snapshot.applied_upto = cursor;
        inner.snapshot.fetched_upto = cursor;
        inner.snapshot.paused_at = None;
        inner.held.clear();
        inner.dead.clear();
    }

    /// Sets what the applier is doing.
    pub fn set_state(&self, state: ApplierState) {
        self.lock().snapshot.state = state;
    }

    /// Whether this server has applied every entry up to `barrier` that
    /// overlaps `scope` (`None`: the read touches no data) and that
    /// `is_pending` says still matters (committed, not undecided), and
    /// has no open dead letter overlapping `scope` (a write it refused).
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
        let refused_here = inner
            .dead
            .values()
            .any(|f| f.as_ref().is_none_or(|f| f.scope.overlaps(scope)));
        if refused_here {
            return false;
        }
        !inner.held.range(..=barrier).any(|(lsn, held)| {
            let overlaps = held
                .footprint
                .as_ref()
                .is_none_or(|f| f.scope.overlaps(scope));
            overlaps && is_pending(*lsn)
        })
    }
}

/// An entry waiting for room on the dead-letter list (see
/// [`Progress::block_on_dead_letters`]); dropping it ends the wait.
#[derive(Debug)]
pub struct DeadLettersBlocked<'a>(&'a Progress);

impl Drop for DeadLettersBlocked<'_> {
    fn drop(&mut self) {
        let mut inner = self.0.lock();
        inner.blocked_on_dead_letters = inner.blocked_on_dead_letters.saturating_sub(1);
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

    #[test]
    fn a_dead_lettered_entry_keeps_its_server_from_covering_its_scope_until_released() {
        let p = Progress::new(0);
        let a = collection("a");
        let fp = WriteFootprint {
            scope: a.clone(),
            keys: Keys::Ids(vec![1]),
        };
        p.fetched(
            1,
            Some(Held {
                footprint: Some(fp.clone()),
                received_at_ms: 5,
            }),
        );
        // The applier dead-letters entry 1 and finishes it.
        p.hold_dead_letter(7, Some(fp));
        p.finished(1);
        p.applied_upto(1);
        assert!(!p.covers(Some(&a), 1, |_| true), "refused write of a");
        let database = Scope::Database {
            tenant: "t".into(),
            database: "d".into(),
        };
        assert!(!p.covers(Some(&database), 1, |_| true), "a is inside d");
        assert!(p.covers(Some(&collection("b")), 1, |_| true));
        assert!(p.covers(None, 1, |_| true), "reads of no data");
        p.release_dead_letter(7);
        assert!(p.covers(Some(&a), 1, |_| true), "retried or skipped");
        // A letter whose write the dialect does not know overlaps every scope.
        p.hold_dead_letter(8, None);
        assert!(!p.covers(Some(&collection("b")), 1, |_| true));
        p.release_dead_letter(8);
        assert!(p.covers(Some(&collection("b")), 1, |_| true));
    }

    #[test]
    fn an_applier_waiting_for_room_on_the_dead_letter_list_says_so() {
        let p = Progress::new(0);
        let first = p.block_on_dead_letters();
        let second = p.block_on_dead_letters();
        assert_eq!(p.snapshot().state, ApplierState::DeadLettersFull);
        drop(first);
        assert_eq!(p.snapshot().state, ApplierState::DeadLettersFull);
        p.set_state(ApplierState::Paused);
        assert_eq!(p.snapshot().state, ApplierState::Paused);
        p.set_state(ApplierState::Running);
        drop(second);
        assert_eq!(p.snapshot().state, ApplierState::Running);
    }
}
