//! The ledger: the decision of every entry, and the executions under way.
//!
//! Rule for decisions (it is what makes a gateway crash safe):
//! - an entry is **committed** unless a decision record in the log says it
//!   was rejected or cancelled;
//! - a rejection or cancellation is appended durably *before* the client is
//!   told, so a write whose client was told it failed is never applied;
//! - entries logged by the running process are **undecided** until the
//!   executor's answer decides them (in memory: committed needs no record);
//! - at start, every entry of an earlier run without a decision record is
//!   committed: its client either got a 2xx, or got no answer at all (the
//!   gateway died first), and replaying a write is harmless (DESIGN.md,
//!   replay rules).

use super::record::Refusal;
use crate::backend::UpstreamResponse;
use crate::chroma::GatewayError;
use http::HeaderMap;
use std::collections::BTreeMap;
use std::sync::Mutex;
use tokio::sync::{oneshot, watch};

/// Where an entry stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryState {
    /// Apply it everywhere.
    Committed,
    /// Apply it nowhere (the executor refused it, or it reached no server).
    Refused(Refusal),
    /// Not decided yet; `executor` is the server that should run it first.
    Undecided {
        /// Index of the executing server, once assigned.
        executor: Option<usize>,
    },
}

/// The answer a waiting client gets.
pub type WriteResult = Result<(usize, UpstreamResponse), GatewayError>;

/// What the executing applier needs from the client's request.
#[derive(Debug, Default)]
pub struct Execution {
    /// The client's Authorization / X-Chroma-Token headers (never logged).
    pub credentials: HeaderMap,
}

#[derive(Debug)]
struct Live {
    state: EntryState,
    credentials: HeaderMap,
    waiter: Option<oneshot::Sender<WriteResult>>,
    /// The executor has sent it: it may not move to another server now.
    started: bool,
}

#[derive(Debug, Default)]
struct Inner {
    /// Every entry at or below this LSN is decided; committed unless in `refused`.
    decided_upto: u64,
    /// Refusals (kept until every applier is past them).
    refused: BTreeMap<u64, Refusal>,
    /// Entries above `decided_upto`, logged by this process.
    live: BTreeMap<u64, Live>,
}

/// Decisions and executions, shared by request handlers and appliers.
#[derive(Debug)]
pub struct Ledger {
    inner: Mutex<Inner>,
    changed: watch::Sender<u64>,
}

impl Ledger {
    /// A ledger for a log whose records up to `boot_lsn` were written by an
    /// earlier run, with the refusals found in those records.
    pub fn new(boot_lsn: u64, refused: BTreeMap<u64, Refusal>) -> Self {
        let (changed, _) = watch::channel(0);
        Ledger {
            inner: Mutex::new(Inner {
                decided_upto: boot_lsn,
                refused,
                live: BTreeMap::new(),
            }),
            changed,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// A receiver that sees every change of the ledger.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The state of the entry at `lsn`.
    pub fn state(&self, lsn: u64) -> EntryState {
        let inner = self.lock();
        if let Some(refusal) = inner.refused.get(&lsn) {
            return EntryState::Refused(*refusal);
        }
        if lsn <= inner.decided_upto {
            return EntryState::Committed;
        }
        inner
            .live
            .get(&lsn)
            .map_or(EntryState::Undecided { executor: None }, |l| l.state)
    }

    /// Registers a just-logged entry: `executor` runs it with the client's
    /// `credentials`; the result goes to the returned receiver.
    pub fn begin(
        &self,
        lsn: u64,
        executor: usize,
        credentials: HeaderMap,
    ) -> oneshot::Receiver<WriteResult> {
        let (tx, rx) = oneshot::channel();
        self.lock().live.insert(
            lsn,
            Live {
                state: EntryState::Undecided {
                    executor: Some(executor),
                },
                credentials,
                waiter: Some(tx),
                started: false,
            },
        );
        self.bump();
        rx
    }

    /// Records that `lsn` is not an entry (a decision record), so the
    /// decided watermark can pass it.
    pub fn not_an_entry(&self, lsn: u64) {
        self.decided_without_waiter(lsn);
    }

    /// Records that `lsn` holds a committed entry no request of this
    /// process waits for: its append was reported "outcome unknown" and
    /// turned out to be committed. It is applied everywhere, as after a
    /// restart.
    pub fn committed_orphan(&self, lsn: u64) {
        self.decided_without_waiter(lsn);
        self.bump();
    }

    fn decided_without_waiter(&self, lsn: u64) {
        let mut inner = self.lock();
        if lsn > inner.decided_upto {
            inner.live.insert(
                lsn,
                Live {
                    state: EntryState::Committed,
                    credentials: HeaderMap::new(),
                    waiter: None,
                    started: false,
                },
            );
            advance(&mut inner);
        }
    }

    /// Claims `lsn` for execution on server `index` and returns the
    /// client's credentials for it, if it is undecided, assigned to `index`
    /// and not claimed yet. Once claimed it cannot be handed to another
    /// server, so claiming and starting are one step: an entry is never
    /// executed on two servers.
    pub fn claim_execution(&self, lsn: u64, index: usize) -> Option<Execution> {
        let mut inner = self.lock();
        let live = inner.live.get_mut(&lsn)?;
        let assigned = live.state
            == EntryState::Undecided {
                executor: Some(index),
            };
        if !assigned || live.started {
            return None;
        }
        live.started = true;
        Some(Execution {
            credentials: live.credentials.clone(),
        })
    }

    /// Hands an undecided entry to another executor (its execution did not
    /// reach its server).
    pub fn reassign(&self, lsn: u64, executor: usize) {
        if let Some(live) = self.lock().live.get_mut(&lsn) {
            if matches!(live.state, EntryState::Undecided { .. }) {
                live.state = EntryState::Undecided {
                    executor: Some(executor),
                };
                live.started = false;
            }
        }
        self.bump();
    }

    /// Hands every undecided entry assigned to `from` that it has not sent
    /// yet to `to` (its server is down or paused). Returns how many moved.
    pub fn hand_over(&self, from: usize, to: usize) -> usize {
        let mut moved = 0;
        for live in self.lock().live.values_mut() {
            if live.state
                == (EntryState::Undecided {
                    executor: Some(from),
                })
                && !live.started
            {
                live.state = EntryState::Undecided { executor: Some(to) };
                moved += 1;
            }
        }
        if moved > 0 {
            self.bump();
        }
        moved
    }

    /// Marks the entry committed (in memory; no record is needed). The
    /// waiting client, if any, is left waiting for `answer`.
    pub fn commit(&self, lsn: u64) {
        {
            let mut inner = self.lock();
            if let Some(live) = inner.live.get_mut(&lsn) {
                live.state = EntryState::Committed;
                live.credentials = HeaderMap::new();
            }
            advance(&mut inner);
        }
        self.bump();
    }

    /// Marks the entry committed and gives its waiting client (if any)
    /// `result`, in one step: no other server's replay of the entry can
    /// see it committed while its client still waits, and answer in the
    /// executor's place. The state is committed before the client gets
    /// the answer, so a read it sends next waits for the entry.
    pub fn commit_and_answer(&self, lsn: u64, result: WriteResult) {
        let waiter = {
            let mut inner = self.lock();
            let waiter = inner.live.get_mut(&lsn).and_then(|live| {
                live.state = EntryState::Committed;
                live.credentials = HeaderMap::new();
                live.waiter.take()
            });
            advance(&mut inner);
            waiter
        };
        self.bump();
        if let Some(waiter) = waiter {
            let _ = waiter.send(result);
        }
    }

    /// Marks the entry refused. The caller must have made the decision
    /// record durable first.
    pub fn refuse(&self, lsn: u64, refusal: Refusal) {
        {
            let mut inner = self.lock();
            inner.refused.insert(lsn, refusal);
            if let Some(live) = inner.live.get_mut(&lsn) {
                live.state = EntryState::Refused(refusal);
                live.credentials = HeaderMap::new();
            }
            advance(&mut inner);
        }
        self.bump();
    }

    /// Gives the waiting client (if any is still waiting) its answer.
    pub fn answer(&self, lsn: u64, result: WriteResult) {
        let waiter = {
            let mut inner = self.lock();
            let waiter = inner.live.get_mut(&lsn).and_then(|l| l.waiter.take());
            advance(&mut inner);
            waiter
        };
        if let Some(waiter) = waiter {
            let _ = waiter.send(result);
        }
    }

    /// Stops waiting for the entry's answer (the client gave up); the entry
    /// itself goes on as decided.
    pub fn abandon(&self, lsn: u64) {
        let mut inner = self.lock();
        if let Some(live) = inner.live.get_mut(&lsn) {
            live.waiter = None;
        }
        advance(&mut inner);
    }

    /// Whether a client still waits for the entry's answer.
    pub fn has_waiter(&self, lsn: u64) -> bool {
        self.lock()
            .live
            .get(&lsn)
            .is_some_and(|l| l.waiter.as_ref().is_some_and(|w| !w.is_closed()))
    }

    /// Forgets refusals below `lsn` (every applier is past them).
    pub fn forget_below(&self, lsn: u64) {
        let mut inner = self.lock();
        inner.refused = inner.refused.split_off(&lsn);
    }

    /// Entries logged by this process that are still undecided.
    pub fn undecided(&self) -> usize {
        self.lock()
            .live
            .values()
            .filter(|l| matches!(l.state, EntryState::Undecided { .. }))
            .count()
    }
}

/// Moves `decided_upto` over decided entries whose clients have their answer.
fn advance(inner: &mut Inner) {
    loop {
        let next = inner.decided_upto + 1;
        match inner.live.get(&next) {
            Some(l) if !matches!(l.state, EntryState::Undecided { .. }) && l.waiter.is_none() => {
                inner.live.remove(&next);
                inner.decided_upto = next;
            }
            _ => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_of_an_earlier_run_are_committed_unless_refused() {
        let refused = BTreeMap::from([(3, Refusal::Rejected)]);
        let ledger = Ledger::new(5, refused);
        assert_eq!(ledger.state(2), EntryState::Committed);
        assert_eq!(ledger.state(3), EntryState::Refused(Refusal::Rejected));
        assert_eq!(ledger.state(6), EntryState::Undecided { executor: None });
    }

    #[test]
    fn a_live_entry_is_undecided_until_decided() {
        let ledger = Ledger::new(0, BTreeMap::new());
        let mut rx = ledger.begin(1, 0, HeaderMap::new());
        assert_eq!(ledger.state(1), EntryState::Undecided { executor: Some(0) });
        assert_eq!(ledger.hand_over(0, 1), 1);
        assert_eq!(ledger.hand_over(0, 1), 0);
        assert!(ledger.claim_execution(1, 0).is_none(), "handed to 1");
        assert!(ledger.claim_execution(1, 1).is_some());
        assert!(ledger.claim_execution(1, 1).is_none(), "claimed once");
        assert_eq!(
            ledger.hand_over(1, 0),
            0,
            "a sent entry stays with its executor"
        );
        assert_eq!(ledger.state(1), EntryState::Undecided { executor: Some(1) });
        ledger.commit(1);
        assert_eq!(ledger.state(1), EntryState::Committed);
        ledger.answer(1, Err(GatewayError::internal("x")));
        assert!(rx.try_recv().is_ok());
        assert_eq!(ledger.state(1), EntryState::Committed);
        // The entry left the live map: the watermark moved over it.
        assert_eq!(ledger.lock().decided_upto, 1);
    }

    #[test]
    fn a_refusal_outlives_the_watermark() {
        let ledger = Ledger::new(0, BTreeMap::new());
        let _rx = ledger.begin(1, 0, HeaderMap::new());
        ledger.refuse(1, Refusal::Cancelled);
        ledger.answer(1, Err(GatewayError::internal("x")));
        assert_eq!(ledger.state(1), EntryState::Refused(Refusal::Cancelled));
        ledger.forget_below(2);
        assert_eq!(ledger.state(1), EntryState::Committed);
    }

    #[test]
    fn decision_records_do_not_hold_the_watermark() {
        let ledger = Ledger::new(0, BTreeMap::new());
        let _a = ledger.begin(1, 0, HeaderMap::new());
        ledger.refuse(1, Refusal::Rejected);
        ledger.not_an_entry(2);
        ledger.answer(1, Err(GatewayError::internal("x")));
        let _c = ledger.begin(3, 0, HeaderMap::new());
        ledger.commit(3);
        ledger.answer(3, Err(GatewayError::internal("x")));
        assert_eq!(ledger.lock().decided_upto, 3);
        assert!(ledger.lock().live.is_empty());
    }

    #[test]
    fn an_orphaned_entry_counts_as_committed_wakes_the_appliers_and_lets_the_watermark_pass() {
        let ledger = Ledger::new(0, BTreeMap::new());
        let mut changes = ledger.subscribe();
        changes.borrow_and_update();
        assert_eq!(ledger.state(1), EntryState::Undecided { executor: None });
        ledger.committed_orphan(1);
        assert!(
            changes.has_changed().unwrap(),
            "appliers waiting on it wake up"
        );
        assert_eq!(ledger.state(1), EntryState::Committed);
        assert_eq!(ledger.lock().decided_upto, 1);
    }

    #[test]
    fn an_undecided_entry_holds_the_watermark() {
        let ledger = Ledger::new(0, BTreeMap::new());
        let _a = ledger.begin(1, 0, HeaderMap::new());
        let _b = ledger.begin(2, 0, HeaderMap::new());
        ledger.commit(2);
        ledger.answer(2, Err(GatewayError::internal("x")));
        assert_eq!(ledger.state(1), EntryState::Undecided { executor: Some(0) });
        assert_eq!(ledger.state(2), EntryState::Committed);
        ledger.commit(1);
        ledger.answer(1, Err(GatewayError::internal("x")));
        assert_eq!(ledger.lock().decided_upto, 2);
    }
}
