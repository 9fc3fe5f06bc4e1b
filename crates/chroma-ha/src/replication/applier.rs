//! One applier per server: the only code that sends logged writes to that
//! server. It reads the log from its durable applied state on, holds a
//! [`Window`] of records, and sends entries under the window's order and
//! repeat rules: conflicting entries in log order, others in parallel (up to
//! `apply_window`), and never an entry that conflicts with an earlier one
//! applied here but not yet durably recorded as applied. Entries it executes
//! for a client are decided by its server's answer; the others it applies
//! once committed, with the replay rules of the Chroma dialect.

use super::applied::AppliedState;
use super::apply_entry::{execute, replay};
use super::apply_merged::replay_merged;
use super::ledger::EntryState;
use super::merge::{self, Limits, Merging};
use super::progress::{ApplierState, Held};
use super::record::{self, LogRecord};
use super::window::{NoBatching, Role, Start, Window};
use super::Replicator;
use crate::chroma::{classify, Route};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use wal::{Log as _, LogRead as _};

pub(crate) use super::window::Work;

/// How often the applied state is made durable while entries are applied
/// (sooner when a conflicting entry waits for it).
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);

/// How often the log's cursor (which only decides what the log may delete)
/// follows the durable applied state.
const LOG_CURSOR_INTERVAL: Duration = Duration::from_secs(1);

/// Panics of one entry's task before it is dead-lettered.
const MAX_PANICS: u32 = 3;

/// How a task left its slot.
pub(super) enum TaskEnd {
    /// Finished; `sent`: the server may have applied it.
    Finished { sent: bool },
    /// Handed to another executor: wait for its decision.
    Requeue,
}

/// Decodes a log record into the work it holds and its footprint. A record
/// this binary cannot read (written by a newer version, or damaged) is not
/// skipped silently: it goes to the dead-letter list.
fn decode_work(
    rep: &Arc<Replicator>,
    index: usize,
    lsn: u64,
    payload: &bytes::Bytes,
) -> (
    Option<Work>,
    Option<crate::chroma::WriteFootprint>,
    Option<Held>,
) {
    match record::decode(payload) {
        Ok(LogRecord::Entry(entry)) => {
            let route = match classify(&entry.method, entry.path_only()) {
                Route::Known(known) => Some(known),
                Route::Unknown(_) => None,
            };
            let footprint = route
                .as_ref()
                .and_then(|r| crate::chroma::footprint(r, &entry.body));
            let held = Held {
                footprint: footprint.clone(),
                received_at_ms: entry.received_at_ms,
            };
            let work = Work::new(Arc::new(entry), route);
            (Some(work), footprint, Some(held))
        }
        Ok(LogRecord::Decision { .. }) => (None, None, None),
        Err(e) => {
            // Stored in a task of its own: with the dead-letter list full,
            // waiting for room here would stop this whole applier.
            let (rep, payload, error) = (rep.clone(), payload.clone(), e.to_string());
            tokio::spawn(async move {
                rep.dead_letter_unreadable(index, lsn, &payload, &error)
                    .await
            });
            (None, None, None)
        }
    }
}

/// What the ledger says entry `lsn` needs from server `index`.
fn role_of(rep: &Replicator, index: usize, lsn: u64, paused: bool) -> Role {
    if rep.is_retrying(index) {
        // An operator's dead-letter retry is under way on this server:
        // nothing else may reach it until the retry is over.
        return Role::Wait;
    }
    match rep.ledger.state(lsn) {
        EntryState::Refused(_) => Role::Skip,
        // A paused applier replays nothing...
        EntryState::Committed if paused => Role::Wait,
        EntryState::Committed => Role::Replay,
        // (Writes it was to execute were handed on if another server can
        // take them; else it runs them.)
        EntryState::Undecided { executor } if executor == Some(index) => Role::Execute,
        EntryState::Undecided { .. } => Role::Wait,
    }
}

/// The applier's own state besides its window.
struct Applier {
    rep: Arc<Replicator>,
    index: usize,
    name: String,
    window: Window,
    /// Running tasks; each sends one request (or a merged one, split if
    /// need be) and returns how each of its entries ended.
    running: JoinSet<Vec<(u64, TaskEnd)>>,
    /// Running tasks: their entries, and whether they execute them.
    tasks: HashMap<tokio::task::Id, (Vec<u64>, bool)>,
    /// Entries sent alone from now on (a merged task carrying them panicked).
    alone: HashSet<u64>,
    /// The server's `max_batch_size`, once read; when the next read is due
    /// after a failed one.
    max_batch: Option<usize>,
    max_batch_next_read: Instant,
    /// Entries whose task panicked, and how often.
    panics: HashMap<u64, u32>,
    /// A commit of the applied state under way.
    committing: bool,
    commits: mpsc::UnboundedSender<(AppliedState, Result<(), String>)>,
    /// Where the log's cursor stands, and when it last moved.
    log_cursor: u64,
    log_cursor_at: Instant,
    next_dispatch: Instant,
    /// No commit is tried before this (after a failed one).
    commit_not_before: Instant,
    /// The applied position last reported to progress.
    reported: u64,
}

/// Runs the applier of server `index`, starting after `state`, until the
/// gateway stops.
pub(crate) async fn run(rep: Arc<Replicator>, index: usize, state: AppliedState) {
    let backend = rep.backends.all()[index].clone();
    let progress = &rep.progress[index];
    let capacity = rep.settings.apply_window.max(1) * 8;
    let (commits, mut committed) = mpsc::unbounded_channel();
    let mut a = Applier {
        rep: rep.clone(),
        index,
        name: backend.name().to_string(),
        log_cursor: rep.wal.cursors().get(backend.name()).copied().unwrap_or(0),
        window: Window::new(state, capacity),
        running: JoinSet::new(),
        tasks: HashMap::new(),
        alone: HashSet::new(),
        max_batch: None,
        max_batch_next_read: Instant::now(),
        panics: HashMap::new(),
        committing: false,
        commits,
        log_cursor_at: Instant::now(),
        next_dispatch: Instant::now(),
        commit_not_before: Instant::now(),
        reported: 0,
    };
    let mut reader = rep.wal.read_from(a.window.next_lsn());
    let mut ledger_changes = rep.ledger.subscribe();
    let mut paused = rep.paused[index].subscribe();
    let mut stop = rep.applier_stops[index].subscribe();
    let mut tick = tokio::time::interval(COMMIT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Asked to stop (to start again at a new position): once nothing
        // it started is under way.
        if *stop.borrow_and_update() && a.running.is_empty() && !a.committing {
            break;
        }
        let is_paused = *paused.borrow_and_update();
        let healthy = backend.health().is_healthy();
        progress.set_state(if is_paused {
            ApplierState::Paused
        } else if !healthy {
            ApplierState::WaitingForServer
        } else {
            ApplierState::Running
        });
        // A paused applier, or one whose server is down, hands every write
        // it was to execute and has not sent yet to another server, in its
        // window or not: a write queued here (behind a conflicting entry in
        // doubt, or past the window) would otherwise wait for this server to
        // come back, and every later conflicting write with it.
        if is_paused || !healthy || progress.is_blocked_on_dead_letters() {
            if let Some(next) = rep.choose_executor(Some(index)) {
                rep.ledger.hand_over(index, next);
            }
        }
        if rep.settings.merge_catch_up
            && rep.settings.replay_interval.is_none()
            && healthy
            && !is_paused
            && a.catching_up()
        {
            a.read_max_batch(&backend).await;
        }
        let rate_limited = a.dispatch(is_paused);
        a.window.retire();
        let applied = a.window.applied_upto();
        if applied > a.reported {
            a.reported = applied;
            progress.applied_upto(applied);
            rep.progress_changed();
        }
        if a.window.full_waiting_for_commit() {
            a.commit();
        }
        let quiescent =
            is_paused && a.running.is_empty() && !a.committing && !a.window.has_undurable();
        progress.set_paused_at(quiescent.then(|| a.window.state_to_commit()));
        tokio::select! {
            biased;
            Some((state, result)) = committed.recv() => a.committed(state, result).await,
            _ = tick.tick() => {
                if a.window.has_undurable() {
                    a.commit();
                }
                // Also while the log is idle: the last commit may have come
                // too soon after the previous cursor move.
                a.follow_with_log_cursor().await;
            }
            Some(done) = a.running.join_next_with_id(), if !a.running.is_empty() => a.task_done(done).await,
            record = reader.next(), if a.window.has_room() => {
                match record {
                    Ok(record) => {
                        a.take(record.lsn, &record.payload);
                        // Take whatever else is already durable without waiting.
                        while a.window.has_room() {
                            match reader.try_next().await {
                                Ok(Some(record)) => a.take(record.lsn, &record.payload),
                                Ok(None) => break,
                                Err(e) => {
                                    tracing::error!(server = %a.name, error = %e, "reading the log failed");
                                    break;
                                }
                            }
                        }
                    }
                    Err(wal::WalError::Closed) => break,
                    Err(e) => {
                        progress.count_retry(format!("reading the log: {e}"));
                        tracing::error!(server = %a.name, error = %e, "reading the log failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            _ = ledger_changes.changed() => {}
            _ = paused.changed() => {}
            _ = stop.changed() => {}
            _ = tokio::time::sleep_until(a.next_dispatch.into()), if rate_limited => {}
        }
    }
    // The log is closing (the gateway stops): record what was applied, so
    // a restart sends none of it again.
    let finish = async {
        if a.committing {
            if let Some((state, result)) = committed.recv().await {
                a.committed(state, result).await;
            }
        }
        if a.window.has_undurable() {
            let state = a.window.state_to_commit();
            if let Ok(Ok(())) = rep.applied.record(&a.name, state).await {
                tracing::debug!(server = %a.name, "applied state recorded at shutdown");
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(2), finish)
        .await
        .is_err()
    {
        tracing::warn!(server = %a.name, "recording the applied state at shutdown timed out");
    }
}

impl Applier {
    /// Adds a record read from the log to the window.
    fn take(&mut self, lsn: u64, payload: &bytes::Bytes) {
        let progress = &self.rep.progress[self.index];
        let (work, footprint, held) = decode_work(&self.rep, self.index, lsn, payload);
        progress.fetched(lsn, held);
        if self.window.push(lsn, work, footprint) {
            progress.finished(lsn);
        }
    }

    /// Whether the server is behind: more than `apply_window` entries.
    fn catching_up(&self) -> bool {
        self.rep
            .wal
            .last_lsn()
            .saturating_sub(self.window.applied_upto())
            > self.rep.settings.apply_window as u64
    }

    /// Reads the server's `max_batch_size` for merged requests, once (again
    /// a while after a failed read; meanwhile [`merge::FALLBACK_MAX_BATCH`]).
    async fn read_max_batch(&mut self, backend: &crate::backend::Backend) {
        if self.max_batch.is_some() || Instant::now() < self.max_batch_next_read {
            return;
        }
        // Bounded: the applier's loop (commits, executions) waits meanwhile.
        let read = tokio::time::timeout(
            merge::MAX_BATCH_READ_TIMEOUT,
            merge::max_batch_size(backend),
        )
        .await
        .unwrap_or_else(|_| Err("GET /api/v2/pre-flight-checks timed out".to_string()));
        match read {
            Ok(n) => {
                tracing::info!(server = %self.name, max_batch_size = n, "merging replays while catching up");
                self.max_batch = Some(n);
            }
            Err(e) => {
                tracing::warn!(
                    server = %self.name,
                    error = %e,
                    fallback = merge::FALLBACK_MAX_BATCH,
                    "reading max_batch_size failed; merged requests use the fallback"
                );
                self.max_batch_next_read = Instant::now() + merge::MAX_BATCH_RETRY;
            }
        }
    }

    /// Starts what may start; returns whether the replay rate limit held
    /// something back.
    fn dispatch(&mut self, paused: bool) -> bool {
        let rep = self.rep.clone();
        let index = self.index;
        let mut rate_limited = false;
        let catching_up = self.catching_up();
        // A replay rate limit counts entries: with one, nothing merges (a
        // limited catch-up is no faster than the limit anyway).
        let merging =
            rep.settings.merge_catch_up && catching_up && rep.settings.replay_interval.is_none();
        let limits = Limits {
            records: self.max_batch.unwrap_or(merge::FALLBACK_MAX_BATCH),
            bytes: rep.settings.merge_max_bytes,
        };
        let running = self.running.len();
        let next_dispatch = &mut self.next_dispatch;
        let role = |lsn| role_of(&rep, index, lsn, paused);
        let gate = |executes| {
            let Some(interval) = rep.settings.replay_interval else {
                return true;
            };
            if executes || !catching_up {
                return true;
            }
            let now = Instant::now();
            if now < *next_dispatch {
                rate_limited = true;
                return false;
            }
            *next_dispatch = now + interval;
            true
        };
        let window = &mut self.window;
        let apply_window = rep.settings.apply_window;
        let (plan, groups) = if merging {
            let mut batcher = Merging::new(&rep, limits, &self.alone);
            let plan = window.plan_batched(apply_window, running, role, gate, &mut batcher);
            (plan, batcher.into_groups())
        } else {
            let plan = window.plan_batched(apply_window, running, role, gate, &mut NoBatching);
            (plan, Vec::new())
        };
        for lsn in plan.skipped {
            rep.progress[index].finished(lsn);
        }
        if plan.wants_commit {
            self.commit();
        }
        // Starts the batcher grouped go as one task each; the rest alone.
        let mut starts: HashMap<u64, Start> = plan.starts.into_iter().map(|s| (s.lsn, s)).collect();
        for group in groups {
            let members: Vec<Start> = group.iter().filter_map(|lsn| starts.remove(lsn)).collect();
            if members.len() > 1 {
                self.spawn_merged(members);
            } else {
                members.into_iter().for_each(|s| self.spawn(s));
            }
        }
        let mut rest: Vec<Start> = starts.into_values().collect();
        rest.sort_by_key(|s| s.lsn);
        for start in rest {
            self.spawn(start);
        }
        rate_limited
    }

    /// Starts one task sending the replays `members` as merged requests.
    fn spawn_merged(&mut self, members: Vec<Start>) {
        let rep = self.rep.clone();
        let index = self.index;
        let lsns: Vec<u64> = members.iter().map(|s| s.lsn).collect();
        let members: Vec<(u64, Work)> = members.into_iter().map(|s| (s.lsn, s.work)).collect();
        let handle = self
            .running
            .spawn(async move { replay_merged(&rep, index, members).await });
        self.tasks.insert(handle.id(), (lsns, false));
    }

    fn spawn(
        &mut self,
        Start {
            lsn,
            work,
            executes,
        }: Start,
    ) {
        let rep = self.rep.clone();
        let index = self.index;
        // Claiming the execution and starting it are one step: once
        // claimed, the entry cannot be handed to another server.
        let credentials = if executes {
            match rep.ledger.claim_execution(lsn, index) {
                Some(execution) => Some(execution.credentials),
                None => {
                    self.window.requeue(lsn);
                    return;
                }
            }
        } else {
            None
        };
        let handle = self.running.spawn(async move {
            let end = match credentials {
                Some(credentials) => execute(&rep, index, lsn, &work, credentials).await,
                None => replay(&rep, index, lsn, &work).await,
            };
            vec![(lsn, end)]
        });
        self.tasks.insert(handle.id(), (vec![lsn], executes));
    }

    async fn task_done(
        &mut self,
        done: Result<(tokio::task::Id, Vec<(u64, TaskEnd)>), tokio::task::JoinError>,
    ) {
        match done {
            Ok((id, ends)) => {
                self.tasks.remove(&id);
                for (lsn, end) in ends {
                    match end {
                        TaskEnd::Finished { sent } => {
                            self.window.finish(lsn, sent);
                            self.rep.progress[self.index].finished(lsn);
                            self.panics.remove(&lsn);
                            self.alone.remove(&lsn);
                        }
                        TaskEnd::Requeue => self.window.requeue(lsn),
                    }
                }
                self.rep.progress_changed();
            }
            Err(e) => {
                // A panicking task is a bug. It may have reached the server:
                // an execution is committed (as when it ends in doubt) and
                // replayed; a replay is tried again, a single repeat as after
                // a crash. An entry whose task keeps panicking is
                // dead-lettered, so it cannot hold its conflict chain forever.
                tracing::error!(server = %self.name, error = %e, "apply task failed");
                let Some((lsns, executes)) = self.tasks.remove(&e.id()) else {
                    return;
                };
                let lsn = match lsns[..] {
                    [lsn] => lsn,
                    _ => {
                        // A merged task: its entries are sent alone from now
                        // on (a repeat, as after a crash), where a panic is
                        // counted per entry.
                        for lsn in lsns {
                            self.alone.insert(lsn);
                            self.window.requeue(lsn);
                        }
                        return;
                    }
                };
                if executes {
                    self.rep.ledger.commit(lsn);
                }
                let panics = self.panics.entry(lsn).or_insert(0);
                *panics += 1;
                if *panics < MAX_PANICS {
                    self.window.requeue(lsn);
                    return;
                }
                self.panics.remove(&lsn);
                if let Some(work) = self.window.work(lsn) {
                    let response = super::apply_entry::gave_up_response(
                        http::StatusCode::INTERNAL_SERVER_ERROR,
                        format!("its apply task panicked {MAX_PANICS} times: {e}"),
                    );
                    self.rep
                        .dead_letter(self.index, lsn, &work.entry, &response)
                        .await;
                }
                self.window.finish(lsn, true);
                self.rep.progress[self.index].finished(lsn);
            }
        }
    }

    /// Starts making the window's applied state durable, unless a commit
    /// is under way (its completion triggers the next one if needed).
    fn commit(&mut self) {
        if self.committing || Instant::now() < self.commit_not_before {
            return;
        }
        self.committing = true;
        let state = self.window.state_to_commit();
        let done = self.rep.applied.record(&self.name, state.clone());
        let tx = self.commits.clone();
        tokio::spawn(async move {
            let result = done
                .await
                .unwrap_or_else(|_| Err("the applied-state committer stopped".into()));
            let _ = tx.send((state, result));
        });
    }

    /// Moves the log's cursor to the durable applied position, at most once
    /// every [`LOG_CURSOR_INTERVAL`]. It trails the applied state: it only
    /// decides which segments the log may delete.
    async fn follow_with_log_cursor(&mut self) {
        let durable = self.window.durable_upto();
        if durable <= self.log_cursor || self.log_cursor_at.elapsed() < LOG_CURSOR_INTERVAL {
            return;
        }
        match self.rep.wal.commit_cursor(&self.name, durable).await {
            Ok(_) => self.log_cursor = durable,
            Err(e) => {
                tracing::error!(server = %self.name, error = %e, "saving the log cursor failed")
            }
        }
        self.log_cursor_at = Instant::now();
    }

    async fn committed(&mut self, state: AppliedState, result: Result<(), String>) {
        self.committing = false;
        match result {
            Ok(()) => {
                self.window.committed(&state);
                self.follow_with_log_cursor().await;
            }
            Err(e) => {
                self.rep.progress[self.index]
                    .count_retry(format!("recording applied entries: {e}"));
                tracing::error!(server = %self.name, error = %e, "recording applied entries failed; conflicting entries wait");
                // Do not spin: a tick after this tries again.
                self.commit_not_before = Instant::now() + Duration::from_secs(1);
            }
        }
    }
}
