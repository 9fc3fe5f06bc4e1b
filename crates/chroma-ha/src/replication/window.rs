//! An applier's window: the records it has read from the log and not yet
//! retired, and the two rules that decide when an entry may be sent.
//!
//! 1. **Order**: an entry may start only when no earlier unfinished entry of
//!    the window conflicts with it. Conflicting entries therefore reach a
//!    server in log order; others run in parallel.
//! 2. **Repeats**: an entry may start only when every earlier entry it
//!    conflicts with that this server has finished is *durably* recorded as
//!    finished ([`applied`](super::applied)). So after a crash, a server is
//!    never sent an entry again after it has applied a later entry that
//!    conflicts with it. When an entry waits for this rule alone, the window
//!    asks for a commit ([`Plan::wants_commit`]).
//!
//! A slot leaves the window from the front once it is finished and either
//! durably recorded or never sent. This type does no I/O; the applier task
//! drives it.
//!
//! Merged catch-up ([`Batcher`]): the entries one plan starts are pairwise
//! free of conflicts (each was checked against every earlier unfinished
//! entry, the ones started in the same plan included). A replay that may
//! start can therefore share the request of one started earlier in the same
//! plan without breaking either rule; it then needs no request slot of its
//! own. Every entry keeps its own slot and status: what is durable as
//! applied stays per entry.

use super::applied::AppliedState;
use crate::chroma::{KnownRoute, WriteFootprint};
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use super::record::Entry;
use crate::chroma::merge::MergePart;
use std::sync::OnceLock;

/// An entry to apply, with its route.
#[derive(Clone)]
pub(crate) struct Work {
    pub entry: Arc<Entry>,
    pub route: Option<KnownRoute>,
    /// The entry as a part of a merged request, read when first asked.
    merge: Arc<OnceLock<Option<MergePart>>>,
}

impl Work {
    /// The work of `entry` on `route`.
    pub fn new(entry: Arc<Entry>, route: Option<KnownRoute>) -> Self {
        Work {
            entry,
            route,
            merge: Arc::new(OnceLock::new()),
        }
    }

    /// The entry as a part a merged request can carry, if it is one (see
    /// [`crate::chroma::merge`]); parsed once, on first use.
    pub fn merge_part(&self) -> Option<&MergePart> {
        self.merge
            .get_or_init(|| {
                let route = self.route.as_ref()?;
                let e = &self.entry;
                MergePart::parse(
                    route.op,
                    &e.method,
                    &e.path,
                    e.content_type.as_deref(),
                    &e.body,
                )
            })
            .as_ref()
    }
}

/// Groups replays one plan starts into shared requests.
pub(crate) trait Batcher {
    /// Whether the replay `lsn`, which may start now, rides in a request
    /// this plan already started (it then takes no request slot and passes
    /// no gate).
    fn joins(&mut self, lsn: u64, work: &Work) -> bool;
    /// The replay `lsn` starts a request of its own.
    fn started(&mut self, lsn: u64, work: &Work);
}

/// No merging: every entry is a request of its own.
pub(crate) struct NoBatching;

impl Batcher for NoBatching {
    fn joins(&mut self, _: u64, _: &Work) -> bool {
        false
    }
    fn started(&mut self, _: u64, _: &Work) {}
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Waiting,
    Running,
    /// Finished. `sent`: the server may have applied it (so a repeat is
    /// possible after a crash); `durable`: recorded in the applied state.
    Done {
        sent: bool,
        durable: bool,
    },
}

struct Slot {
    lsn: u64,
    /// `None` for records that are not entries (decisions) or cannot be read.
    work: Option<Work>,
    footprint: Option<WriteFootprint>,
    status: Status,
}

/// What the ledger says a waiting slot's entry needs from this server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Nothing to send: refused, or not this server's to apply. Finished.
    Skip,
    /// Not yet (undecided elsewhere, or paused).
    Wait,
    /// Run it for its waiting client.
    Execute,
    /// Apply a committed entry.
    Replay,
}

/// An entry the applier should send now.
pub(crate) struct Start {
    pub lsn: u64,
    pub work: Work,
    pub executes: bool,
}

/// The outcome of [`Window::plan`].
#[derive(Default)]
pub(crate) struct Plan {
    /// Entries to send now (their slots are marked running).
    pub starts: Vec<Start>,
    /// Entries finished without sending (refused).
    pub skipped: Vec<u64>,
    /// Some entry waits only for earlier finished entries to be durably
    /// recorded: commit the applied state.
    pub wants_commit: bool,
}

/// Whether two footprints conflict; an unknown footprint conflicts with all.
fn conflicts(a: &Option<WriteFootprint>, b: &Option<WriteFootprint>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.conflicts(b),
        _ => true,
    }
}

/// The records an applier holds, in log order.
pub(crate) struct Window {
    slots: VecDeque<Slot>,
    /// Every record up to here has left the window.
    retired_upto: u64,
    /// The cursor of the last durable applied state.
    durable_upto: u64,
    /// Entries above the cursor the server had applied before a restart:
    /// finished, durably, without sending them again.
    applied_before: BTreeSet<u64>,
    capacity: usize,
}

impl Window {
    /// A window starting after the durable `state`, holding at most
    /// `capacity` records.
    pub fn new(state: AppliedState, capacity: usize) -> Self {
        Window {
            slots: VecDeque::new(),
            retired_upto: state.cursor,
            durable_upto: state.cursor,
            applied_before: state.above,
            capacity: capacity.max(1),
        }
    }

    /// The LSN the applier reads next.
    pub fn next_lsn(&self) -> u64 {
        self.slots.back().map_or(self.retired_upto, |s| s.lsn) + 1
    }

    /// The cursor of the last durable applied state.
    pub fn durable_upto(&self) -> u64 {
        self.durable_upto
    }

    /// Whether another record fits.
    pub fn has_room(&self) -> bool {
        self.slots.len() < self.capacity
    }

    /// Adds the next record. Returns `true` when it is finished already:
    /// not an entry, or applied on this server before a restart.
    pub fn push(
        &mut self,
        lsn: u64,
        work: Option<Work>,
        footprint: Option<WriteFootprint>,
    ) -> bool {
        let applied_before = self.applied_before.remove(&lsn);
        let status = if work.is_none() {
            Status::Done {
                sent: false,
                durable: false,
            }
        } else if applied_before {
            Status::Done {
                sent: true,
                durable: true,
            }
        } else {
            Status::Waiting
        };
        self.slots.push_back(Slot {
            lsn,
            work,
            footprint,
            status,
        });
        matches!(status, Status::Done { .. })
    }

    /// Entries that may start now under the order and repeat rules, with at
    /// most `max_running` running in all. `role` says what each waiting
    /// entry needs; `gate` may hold back a startable entry (rate limit;
    /// its argument says whether it would execute).
    #[cfg(test)]
    pub fn plan(
        &mut self,
        max_running: usize,
        role: impl FnMut(u64) -> Role,
        gate: impl FnMut(bool) -> bool,
    ) -> Plan {
        let running = self
            .slots
            .iter()
            .filter(|s| s.status == Status::Running)
            .count();
        self.plan_batched(max_running, running, role, gate, &mut NoBatching)
    }

    /// [`Window::plan`] with `running` requests under way (a merged request
    /// counts once) and `batcher` grouping the replays it starts: a replay
    /// the batcher lets join an earlier start of this plan starts even when
    /// `max_running` requests run, and without passing `gate`.
    pub fn plan_batched(
        &mut self,
        max_running: usize,
        mut running: usize,
        mut role: impl FnMut(u64) -> Role,
        mut gate: impl FnMut(bool) -> bool,
        batcher: &mut impl Batcher,
    ) -> Plan {
        let mut plan = Plan::default();
        let slots = self.slots.make_contiguous();
        for i in 0..slots.len() {
            if slots[i].status != Status::Waiting {
                continue;
            }
            let executes = match role(slots[i].lsn) {
                Role::Skip => {
                    slots[i].status = Status::Done {
                        sent: false,
                        durable: false,
                    };
                    plan.skipped.push(slots[i].lsn);
                    continue;
                }
                Role::Wait => continue,
                Role::Execute => true,
                Role::Replay => false,
            };
            let (earlier, rest) = slots.split_at_mut(i);
            let slot = &mut rest[0];
            let mut blocked = false;
            let mut undurable = false;
            for e in earlier.iter() {
                if !conflicts(&e.footprint, &slot.footprint) {
                    continue;
                }
                match e.status {
                    Status::Waiting | Status::Running => blocked = true,
                    Status::Done {
                        sent: true,
                        durable: false,
                    } => undurable = true,
                    Status::Done { .. } => {}
                }
                if blocked {
                    break;
                }
            }
            if blocked {
                continue;
            }
            if undurable {
                plan.wants_commit = true;
                continue;
            }
            let Some(work) = &slot.work else { continue };
            if !executes && batcher.joins(slot.lsn, work) {
                slot.status = Status::Running;
                plan.starts.push(Start {
                    lsn: slot.lsn,
                    work: work.clone(),
                    executes,
                });
                continue;
            }
            if running >= max_running || !gate(executes) {
                continue;
            }
            if !executes {
                batcher.started(slot.lsn, work);
            }
            slot.status = Status::Running;
            running += 1;
            plan.starts.push(Start {
                lsn: slot.lsn,
                work: work.clone(),
                executes,
            });
        }
        plan
    }

    fn slot_mut(&mut self, lsn: u64) -> Option<&mut Slot> {
        let first = self.slots.front()?.lsn;
        let index = usize::try_from(lsn.checked_sub(first)?).ok()?;
        self.slots.get_mut(index).filter(|s| s.lsn == lsn)
    }

    /// The work of the entry at `lsn`, if the window holds it.
    pub fn work(&mut self, lsn: u64) -> Option<Work> {
        self.slot_mut(lsn).and_then(|s| s.work.clone())
    }

    /// A running entry finished; `sent`: it reached (or may have reached)
    /// the server.
    pub fn finish(&mut self, lsn: u64, sent: bool) {
        if let Some(slot) = self.slot_mut(lsn) {
            slot.status = Status::Done {
                sent,
                durable: false,
            };
        }
    }

    /// A running entry goes back to waiting (handed to another executor,
    /// or its task failed).
    pub fn requeue(&mut self, lsn: u64) {
        if let Some(slot) = self.slot_mut(lsn) {
            if slot.status == Status::Running {
                slot.status = Status::Waiting;
            }
        }
    }

    /// Every record up to here is finished (durably or not).
    pub fn applied_upto(&self) -> u64 {
        let mut upto = self.retired_upto;
        for slot in &self.slots {
            if !matches!(slot.status, Status::Done { .. }) {
                break;
            }
            upto = slot.lsn;
        }
        upto
    }

    /// Whether the applied state has moved on since the last commit.
    pub fn has_undurable(&self) -> bool {
        self.applied_upto() > self.durable_upto
            || self.slots.iter().any(|s| {
                s.status
                    == Status::Done {
                        sent: true,
                        durable: false,
                    }
            })
    }

    /// Whether the window is full and its front waits only for a commit.
    pub fn full_waiting_for_commit(&self) -> bool {
        !self.has_room()
            && self.slots.front().is_some_and(|s| {
                s.status
                    == Status::Done {
                        sent: true,
                        durable: false,
                    }
            })
    }

    /// The applied state to make durable now.
    pub fn state_to_commit(&self) -> AppliedState {
        let cursor = self.applied_upto();
        let mut above: BTreeSet<u64> = self
            .slots
            .iter()
            .filter(|s| s.lsn > cursor && matches!(s.status, Status::Done { sent: true, .. }))
            .map(|s| s.lsn)
            .collect();
        // Entries applied before a restart that the window has not reached yet.
        above.extend(self.applied_before.range(cursor + 1..).copied());
        AppliedState { cursor, above }
    }

    /// `state` (from [`Window::state_to_commit`]) is durable now.
    pub fn committed(&mut self, state: &AppliedState) {
        self.durable_upto = self.durable_upto.max(state.cursor);
        for slot in self.slots.iter_mut() {
            if slot.lsn <= state.cursor || state.above.contains(&slot.lsn) {
                if let Status::Done { sent, .. } = slot.status {
                    slot.status = Status::Done {
                        sent,
                        durable: true,
                    };
                }
            }
        }
    }

    /// Removes finished slots from the front that need nothing more: durably
    /// recorded, or never sent. Returns whether any left.
    pub fn retire(&mut self) -> bool {
        let mut moved = false;
        while let Some(front) = self.slots.front() {
            let done_with = match front.status {
                Status::Done { sent, durable } => {
                    durable || !sent || front.lsn <= self.durable_upto
                }
                _ => false,
            };
            if !done_with {
                break;
            }
            self.retired_upto = front.lsn;
            self.slots.pop_front();
            moved = true;
        }
        moved
    }
}

#[cfg(test)]
#[path = "window_tests.rs"]
mod tests;
