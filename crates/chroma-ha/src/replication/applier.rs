//! One applier per server: the only code that sends logged writes to that
//! server. It reads the log from its cursor on, holds a window of entries,
//! and applies them in log order where they conflict and in parallel (up to
//! `apply_window`) where they do not. Entries it executes for a client are
//! decided by its server's answer; the others it applies once committed,
//! with the replay rules of the Chroma dialect.

use super::ledger::EntryState;
use super::progress::{ApplierState, Held};
use super::record::{self, Entry, LogRecord, Refusal};
use super::Replicator;
use crate::backend::AttemptClass;
use crate::chroma::{
    classify, replay_outcome, GatewayError, KnownRoute, ReplayOutcome, Route, WriteFootprint,
};
use rand::Rng;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// How often the cursor is made durable while entries are applied.
const CURSOR_INTERVAL: Duration = Duration::from_millis(100);

enum Status {
    Waiting,
    Running,
    Done,
}

struct Slot {
    lsn: u64,
    /// `None` for records that are not entries (decisions) or that cannot
    /// be read: nothing to apply.
    work: Option<Work>,
    footprint: Option<WriteFootprint>,
    status: Status,
}

/// An entry to apply, with its route.
#[derive(Clone)]
pub(crate) struct Work {
    pub entry: Arc<Entry>,
    pub route: Option<KnownRoute>,
}

/// How a task left its slot.
enum TaskEnd {
    Finished,
    /// Handed to another executor: wait for its decision.
    Requeue,
}

fn conflicts(a: &Option<WriteFootprint>, b: &Option<WriteFootprint>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.conflicts(b),
        _ => true,
    }
}

/// Turns a log record into a window slot. A record this binary cannot read
/// (written by a newer version, or damaged) is not skipped silently: it
/// goes to the dead-letter list for an operator to look at.
async fn slot_for(
    rep: &Replicator,
    index: usize,
    lsn: u64,
    payload: &bytes::Bytes,
) -> (Slot, Option<Held>) {
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
            let slot = Slot {
                lsn,
                work: Some(Work {
                    entry: Arc::new(entry),
                    route,
                }),
                footprint,
                status: Status::Waiting,
            };
            (slot, Some(held))
        }
        Ok(LogRecord::Decision { .. }) => (Slot::nothing_to_apply(lsn), None),
        Err(e) => {
            rep.dead_letter_unreadable(index, lsn, payload, &e.to_string())
                .await;
            (Slot::nothing_to_apply(lsn), None)
        }
    }
}

impl Slot {
    /// A record that needs no work (a decision, or an unreadable record).
    fn nothing_to_apply(lsn: u64) -> Self {
        Slot {
            lsn,
            work: None,
            footprint: None,
            status: Status::Done,
        }
    }
}

/// Runs the applier of server `index` until the gateway stops.
pub(crate) async fn run(rep: Arc<Replicator>, index: usize) {
    let backend = rep.backends.all()[index].clone();
    let name = backend.name().to_string();
    let cursor = rep.cursors[index].clone();
    let progress = &rep.progress[index];
    let mut committed = cursor.position();
    let mut applied = committed;
    let mut reader = rep.wal.read_from(committed + 1);
    let mut window: VecDeque<Slot> = VecDeque::new();
    let mut running: JoinSet<(u64, TaskEnd)> = JoinSet::new();
    let mut tasks: HashMap<tokio::task::Id, u64> = HashMap::new();
    let mut ledger_changes = rep.ledger.subscribe();
    let mut paused = rep.paused[index].subscribe();
    let mut tick = tokio::time::interval(CURSOR_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let capacity = rep.settings.apply_window.max(1) * 8;
    let mut next_dispatch = Instant::now();
    loop {
        // Start what may start.
        let is_paused = *paused.borrow_and_update();
        progress.set_state(if is_paused {
            ApplierState::Paused
        } else if !backend.health().is_healthy() {
            ApplierState::WaitingForServer
        } else {
            ApplierState::Running
        });
        // A paused applier, or one whose server is down, hands every write
        // it was to execute and has not sent yet to another server, in its
        // window or not: a write queued here (behind a conflicting entry in
        // doubt, or past the window) would otherwise wait for this server to
        // come back, and every later conflicting write with it.
        if is_paused || !backend.health().is_healthy() {
            if let Some(next) = rep.choose_executor(Some(index)) {
                rep.ledger.hand_over(index, next);
            }
        }
        let mut rate_limited = false;
        {
            let mut unfinished: Vec<&Option<WriteFootprint>> = Vec::new();
            let mut starts: Vec<(u64, Work, bool)> = Vec::new();
            let mut running_count = running.len();
            for slot in window.iter_mut() {
                if matches!(slot.status, Status::Done) {
                    continue;
                }
                if matches!(slot.status, Status::Waiting) {
                    let state = rep.ledger.state(slot.lsn);
                    let role = match state {
                        EntryState::Refused(_) => {
                            slot.status = Status::Done;
                            progress.finished(slot.lsn);
                            continue;
                        }
                        // A paused applier replays nothing...
                        EntryState::Committed if is_paused => None,
                        EntryState::Committed => Some(false),
                        // (Writes it was to execute were handed on above if
                        // another server can take them; else it runs them.)
                        EntryState::Undecided { executor } if executor == Some(index) => Some(true),
                        EntryState::Undecided { .. } => None,
                    };
                    let blocked = unfinished.iter().any(|f| conflicts(f, &slot.footprint));
                    if let (Some(executes), false) = (role, blocked) {
                        let catching_up = !executes
                            && rep.wal.last_lsn().saturating_sub(applied)
                                > rep.settings.apply_window as u64;
                        if catching_up && rep.settings.replay_interval.is_some() {
                            if Instant::now() < next_dispatch {
                                rate_limited = true;
                                unfinished.push(&slot.footprint);
                                continue;
                            }
                            if let Some(interval) = rep.settings.replay_interval {
                                next_dispatch = Instant::now() + interval;
                            }
                        }
                        if running_count < rep.settings.apply_window {
                            if let Some(work) = &slot.work {
                                slot.status = Status::Running;
                                running_count += 1;
                                starts.push((slot.lsn, work.clone(), executes));
                            }
                        }
                    }
                }
                unfinished.push(&slot.footprint);
            }
            for (lsn, work, executes) in starts {
                let rep = rep.clone();
                let handle = running.spawn(async move {
                    let end = if executes {
                        execute(&rep, index, lsn, &work).await
                    } else {
                        replay(&rep, index, lsn, &work).await
                    };
                    (lsn, end)
                });
                tasks.insert(handle.id(), lsn);
            }
        }
        // Retire finished slots from the front.
        let mut moved = false;
        while matches!(window.front().map(|s| &s.status), Some(Status::Done)) {
            if let Some(slot) = window.pop_front() {
                applied = slot.lsn;
                moved = true;
            }
        }
        if moved {
            progress.applied_upto(applied);
            rep.progress_changed();
        }

        let want_more = window.len() < capacity;
        tokio::select! {
            biased;
            _ = tick.tick() => {
                if applied > committed {
                    match cursor.commit(applied).await {
                        Ok(_) => committed = applied,
                        Err(e) => tracing::error!(server = %name, error = %e, "saving the cursor failed"),
                    }
                }
            }
            Some(done) = running.join_next_with_id(), if !running.is_empty() => {
                match done {
                    Ok((id, (lsn, end))) => {
                        tasks.remove(&id);
                        if let Some(slot) = window.iter_mut().find(|s| s.lsn == lsn) {
                            match end {
                                TaskEnd::Finished => {
                                    slot.status = Status::Done;
                                    progress.finished(lsn);
                                }
                                TaskEnd::Requeue => slot.status = Status::Waiting,
                            }
                        }
                        rep.progress_changed();
                    }
                    Err(e) => {
                        // A panicking task is a bug; put its entry back so it is retried.
                        tracing::error!(server = %name, error = %e, "apply task failed");
                        if let Some(lsn) = tasks.remove(&e.id()) {
                            if let Some(slot) = window.iter_mut().find(|s| s.lsn == lsn) {
                                slot.status = Status::Waiting;
                            }
                        }
                    }
                }
            }
            record = reader.next(), if want_more => {
                match record {
                    Ok(record) => {
                        let (slot, held) = slot_for(&rep, index, record.lsn, &record.payload).await;
                        progress.fetched(record.lsn, held);
                        window.push_back(slot);
                        // Take whatever else is already durable without waiting.
                        while window.len() < capacity {
                            match reader.try_next().await {
                                Ok(Some(record)) => {
                                    let (slot, held) = slot_for(&rep, index, record.lsn, &record.payload).await;
                                    progress.fetched(record.lsn, held);
                                    window.push_back(slot);
                                }
                                Ok(None) => break,
                                Err(e) => {
                                    tracing::error!(server = %name, error = %e, "reading the log failed");
                                    break;
                                }
                            }
                        }
                    }
                    Err(wal::WalError::Closed) => break,
                    Err(e) => {
                        progress.count_retry(format!("reading the log: {e}"));
                        tracing::error!(server = %name, error = %e, "reading the log failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            _ = ledger_changes.changed() => {}
            _ = paused.changed() => {}
            _ = tokio::time::sleep_until(next_dispatch.into()), if rate_limited => {}
        }
    }
}

fn describe(
    result: &Result<crate::backend::UpstreamResponse, crate::backend::TransportError>,
) -> String {
    match result {
        Ok(r) => format!(
            "answered {} {}",
            r.status,
            String::from_utf8_lossy(&r.body[..r.body.len().min(200)])
        ),
        Err(e) => e.to_string(),
    }
}

/// Runs an entry on the server that executes it for its client.
async fn execute(rep: &Arc<Replicator>, index: usize, lsn: u64, work: &Work) -> TaskEnd {
    let backend = &rep.backends.all()[index];
    let credentials = rep.ledger.start_execution(lsn).credentials;
    let result = rep.send_entry(index, &work.entry, credentials).await;
    let class = backend.health().observe(&result);
    match (result, class) {
        (Ok(response), AttemptClass::Answer) if response.status.is_success() => {
            let response = rep.learn(index, lsn, work, response, false).await;
            rep.ledger.commit(lsn);
            rep.progress[index].count_applied(false);
            let response = rep.to_client(index, work, response);
            rep.ledger.answer(lsn, Ok((index, response)));
            TaskEnd::Finished
        }
        (Ok(response), AttemptClass::Answer) => {
            // Chroma's verdict: the write is refused, here and everywhere.
            rep.record_refusal(lsn, Refusal::Rejected).await;
            let response = rep.to_client(index, work, response);
            rep.ledger.answer(lsn, Ok((index, response)));
            TaskEnd::Finished
        }
        (result, _) => {
            let reached = match &result {
                Ok(_) => true,
                Err(e) => e.may_have_reached_server(),
            };
            let error = describe(&result);
            rep.progress[index].count_retry(error.clone());
            tracing::warn!(server = backend.name(), lsn, %error, reached, "executor failed a write");
            if !reached {
                if let Some(next) = rep.choose_executor(Some(index)) {
                    rep.ledger.reassign(lsn, next);
                    return TaskEnd::Requeue;
                }
                rep.record_refusal(lsn, Refusal::Cancelled).await;
                rep.ledger.answer(
                    lsn,
                    Err(GatewayError::service_unavailable(format!(
                        "no Chroma server could take the write (last: {error}); it was not applied"
                    ))),
                );
                return TaskEnd::Finished;
            }
            // It may have been applied: it is committed now, and every
            // server (this one too) applies it idempotently. The first
            // server that does answers the client.
            rep.ledger.commit(lsn);
            replay(rep, index, lsn, work).await
        }
    }
}

/// Backoff before retry `attempt` (0-based): exponential with full jitter.
fn backoff(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let ceiling = (base.as_secs_f64() * 2f64.powi(attempt.min(30) as i32)).min(cap.as_secs_f64());
    Duration::from_secs_f64(rand::rng().random_range(0.0..=ceiling.max(0.001)))
}

/// Applies a committed entry on a server that did not execute it (or
/// whose execution ended in doubt), until the server gives a verdict.
async fn replay(rep: &Arc<Replicator>, index: usize, lsn: u64, work: &Work) -> TaskEnd {
    let backend = &rep.backends.all()[index];
    let progress = &rep.progress[index];
    let mut attempt = 0u32;
    loop {
        if !backend.health().is_healthy() {
            progress.set_state(ApplierState::WaitingForServer);
            backend.health().wait_healthy().await;
        }
        let result = rep
            .send_entry(index, &work.entry, http::HeaderMap::new())
            .await;
        backend.health().observe(&result);
        let outcome = match (&result, &work.route) {
            // Re-applied after a gateway restart on a server that was already
            // past this entry: a collection a later entry deleted is gone.
            (Ok(r), Some(route))
                if lsn <= rep.boot_lsn
                    && r.status == http::StatusCode::NOT_FOUND
                    && route.collection_id().is_some()
                    && replay_outcome(route.op, r.status, &r.body) == ReplayOutcome::Divergent =>
            {
                tracing::info!(
                    server = backend.name(),
                    lsn,
                    "entry of an earlier run found its collection gone; taken as done"
                );
                ReplayOutcome::AlreadyDone
            }
            (Ok(r), Some(route)) => replay_outcome(route.op, r.status, &r.body),
            (Ok(r), None) if r.status.is_success() => ReplayOutcome::Applied,
            (Ok(r), None) if crate::chroma::is_unwell(r.status, &r.body) => {
                ReplayOutcome::Transient
            }
            (Ok(_), None) => ReplayOutcome::Divergent,
            (Err(_), _) => ReplayOutcome::Transient,
        };
        match (outcome, result) {
            (ReplayOutcome::Applied | ReplayOutcome::AlreadyDone, Ok(response)) => {
                let already = outcome == ReplayOutcome::AlreadyDone;
                let response = rep.learn(index, lsn, work, response, already).await;
                progress.count_applied(true);
                if rep.ledger.has_waiter(lsn) {
                    let response = rep.to_client(index, work, response);
                    rep.ledger.answer(lsn, Ok((index, response)));
                }
                return TaskEnd::Finished;
            }
            (ReplayOutcome::Divergent, Ok(response)) => {
                // A client still waiting here had its execution end in doubt:
                // the entry is committed, so this server's refusal is not its
                // answer. It gets one from a server that applies it, or the
                // "logged, outcome pending" timeout.
                rep.dead_letter(index, lsn, &work.entry, &response).await;
                return TaskEnd::Finished;
            }
            (_, result) => {
                let error = describe(&result);
                progress.count_retry(error.clone());
                let delay = backoff(rep.settings.retry_base, rep.settings.retry_cap, attempt);
                tracing::debug!(server = backend.name(), lsn, %error, ?delay, "replay failed; retrying");
                attempt = attempt.saturating_add(1);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_stays_under_the_cap() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(10);
        for attempt in 0..40 {
            let ceiling = (0.1 * 2f64.powi(attempt.min(30) as i32)).min(10.0);
            let delays: Vec<Duration> = (0..50).map(|_| backoff(base, cap, attempt)).collect();
            assert!(delays.iter().all(|d| d.as_secs_f64() <= ceiling + 1e-9));
            assert!(delays.iter().all(|d| *d <= cap));
            // Full jitter: not all the same.
            assert!(delays.iter().any(|d| *d != delays[0]), "attempt {attempt}");
        }
    }
}
