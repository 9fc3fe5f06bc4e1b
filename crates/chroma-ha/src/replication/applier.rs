//! One applier per server: the only code that sends logged writes to that
//! server. It reads the log from its durable applied state on, holds a
//! [`Window`] of records, and sends entries under the window's order and
//! repeat rules: conflicting entries in log order, others in parallel (up to
//! `apply_window`), and never an entry that conflicts with an earlier one
//! applied here but not yet durably recorded as applied. Entries it executes
//! for a client are decided by its server's answer; the others it applies
//! once committed, with the replay rules of the Chroma dialect.

use super::applied::AppliedState;
use super::ledger::EntryState;
use super::progress::{ApplierState, Held};
use super::record::{self, LogRecord, Refusal};
use super::window::{Role, Start, Window};
use super::Replicator;
use crate::backend::AttemptClass;
use crate::chroma::{classify, replay_outcome, GatewayError, ReplayOutcome, Route};
use rand::Rng;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

pub(crate) use super::window::Work;

/// How often the applied state is made durable while entries are applied
/// (sooner when a conflicting entry waits for it).
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);

/// How often the log's cursor (which only decides what the log may delete)
/// follows the durable applied state.
const LOG_CURSOR_INTERVAL: Duration = Duration::from_secs(1);

/// How a task left its slot.
enum TaskEnd {
    /// Finished; `sent`: the server may have applied it.
    Finished { sent: bool },
    /// Handed to another executor: wait for its decision.
    Requeue,
}

/// Decodes a log record into the work it holds and its footprint. A record
/// this binary cannot read (written by a newer version, or damaged) is not
/// skipped silently: it goes to the dead-letter list.
fn decode_work(
    rep: &Replicator,
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
            let work = Work {
                entry: Arc::new(entry),
                route,
            };
            (Some(work), footprint, Some(held))
        }
        Ok(LogRecord::Decision { .. }) => (None, None, None),
        Err(e) => {
            rep.dead_letter_unreadable(index, lsn, payload, &e.to_string());
            (None, None, None)
        }
    }
}

/// What the ledger says entry `lsn` needs from server `index`.
fn role_of(rep: &Replicator, index: usize, lsn: u64, paused: bool) -> Role {
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
    running: JoinSet<(u64, TaskEnd)>,
    tasks: HashMap<tokio::task::Id, u64>,
    /// A commit of the applied state under way.
    committing: bool,
    commits: mpsc::UnboundedSender<(AppliedState, Result<(), String>)>,
    /// Where the log's cursor stands, and when it last moved.
    log_cursor: u64,
    log_cursor_at: Instant,
    /// Everything up to here is durably recorded as applied (the cursor of
    /// the last applied state made durable): the log's cursor follows it.
    durable_cursor: u64,
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
        log_cursor: rep.cursors[index].position(),
        durable_cursor: state.cursor,
        window: Window::new(state, capacity),
        running: JoinSet::new(),
        tasks: HashMap::new(),
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
    let mut tick = tokio::time::interval(COMMIT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
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
        if is_paused || !healthy {
            if let Some(next) = rep.choose_executor(Some(index)) {
                rep.ledger.hand_over(index, next);
            }
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
        tokio::select! {
            biased;
            Some((state, result)) = committed.recv() => a.committed(state, result).await,
            _ = tick.tick() => {
                if a.window.has_undurable() {
                    a.commit();
                } else {
                    // Nothing left to commit: the last commit may have come
                    // too soon after the previous cursor move, and no later
                    // one will move the log's cursor while the log is idle.
                    a.follow_log_cursor().await;
                }
            }
            Some(done) = a.running.join_next_with_id(), if !a.running.is_empty() => a.task_done(done),
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
            _ = tokio::time::sleep_until(a.next_dispatch.into()), if rate_limited => {}
        }
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

    /// Starts what may start; returns whether the replay rate limit held
    /// something back.
    fn dispatch(&mut self, paused: bool) -> bool {
        let rep = self.rep.clone();
        let index = self.index;
        let mut rate_limited = false;
        let catching_up = rep
            .wal
            .last_lsn()
            .saturating_sub(self.window.applied_upto())
            > rep.settings.apply_window as u64;
        let next_dispatch = &mut self.next_dispatch;
        let plan = self.window.plan(
            rep.settings.apply_window,
            |lsn| role_of(&rep, index, lsn, paused),
            |executes| {
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
            },
        );
        for lsn in plan.skipped {
            rep.progress[index].finished(lsn);
        }
        if plan.wants_commit {
            self.commit();
        }
        for start in plan.starts {
            self.spawn(start);
        }
        rate_limited
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
            (lsn, end)
        });
        self.tasks.insert(handle.id(), lsn);
    }

    fn task_done(
        &mut self,
        done: Result<(tokio::task::Id, (u64, TaskEnd)), tokio::task::JoinError>,
    ) {
        match done {
            Ok((id, (lsn, end))) => {
                self.tasks.remove(&id);
                match end {
                    TaskEnd::Finished { sent } => {
                        self.window.finish(lsn, sent);
                        self.rep.progress[self.index].finished(lsn);
                    }
                    TaskEnd::Requeue => self.window.requeue(lsn),
                }
                self.rep.progress_changed();
            }
            Err(e) => {
                // A panicking task is a bug; put its entry back so it is
                // retried. It may have reached the server: that is a
                // single repeat, as after a crash.
                tracing::error!(server = %self.name, error = %e, "apply task failed");
                if let Some(lsn) = self.tasks.remove(&e.id()) {
                    self.window.requeue(lsn);
                }
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

    async fn committed(&mut self, state: AppliedState, result: Result<(), String>) {
        self.committing = false;
        match result {
            Ok(()) => {
                self.window.committed(&state);
                self.durable_cursor = self.durable_cursor.max(state.cursor);
                self.follow_log_cursor().await;
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

    /// Moves the log's cursor to the durable applied state, at most once
    /// per `LOG_CURSOR_INTERVAL`. The log's cursor trails the applied
    /// state: it only decides which segments the log may delete.
    async fn follow_log_cursor(&mut self) {
        let due = self.log_cursor_at.elapsed() >= LOG_CURSOR_INTERVAL;
        if self.durable_cursor > self.log_cursor && due {
            let target = self.durable_cursor;
            match self.rep.cursors[self.index].commit(target).await {
                Ok(_) => self.log_cursor = target,
                Err(e) => {
                    tracing::error!(server = %self.name, error = %e, "saving the log cursor failed")
                }
            }
            self.log_cursor_at = Instant::now();
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

/// Runs an entry on the server that executes it for its client, with the
/// client's `credentials`.
async fn execute(
    rep: &Arc<Replicator>,
    index: usize,
    lsn: u64,
    work: &Work,
    credentials: http::HeaderMap,
) -> TaskEnd {
    let backend = &rep.backends.all()[index];
    let result = rep.send_entry(index, &work.entry, credentials).await;
    let class = backend.health().observe(&result);
    match (result, class) {
        (Ok(response), AttemptClass::Answer) if response.status.is_success() => {
            let response = rep.learn(index, lsn, work, response, false).await;
            rep.progress[index].count_applied(false);
            let response = rep.to_client(index, work, response);
            // Committed and answered in one step: between the two, another
            // server's replay would take the client's answer.
            rep.ledger.commit_and_answer(lsn, Ok((index, response)));
            TaskEnd::Finished { sent: true }
        }
        (Ok(response), AttemptClass::Answer) => {
            // Chroma's verdict: the write is refused, here and everywhere.
            let answer = match rep.record_refusal(lsn, Refusal::Rejected).await {
                Ok(()) => Ok((index, rep.to_client(index, work, response))),
                Err(e) => Err(GatewayError::gateway_timeout(format!(
                    "outcome unknown: Chroma refused the write at LSN {lsn} ({}), but the \
                     refusal could not be recorded ({e}); a restarted gateway may still apply it",
                    response.status
                ))),
            };
            rep.ledger.answer(lsn, answer);
            TaskEnd::Finished { sent: true }
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
                let answer = match rep.record_refusal(lsn, Refusal::Cancelled).await {
                    Ok(()) => GatewayError::service_unavailable(format!(
                        "no Chroma server could take the write (last: {error}); it was not applied"
                    )),
                    Err(e) => GatewayError::gateway_timeout(format!(
                        "outcome unknown: no Chroma server could take the write at LSN {lsn} \
                         (last: {error}), and its cancellation could not be recorded ({e}); \
                         a restarted gateway may still apply it"
                    )),
                };
                rep.ledger.answer(lsn, Err(answer));
                return TaskEnd::Finished { sent: false };
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

/// The least number of failed tries before an entry can be given up.
const MIN_TRIES_BEFORE_GIVING_UP: u32 = 5;

/// How a replayed entry's answer is read: the dialect's replay rules for
/// known routes; for a route the table does not know, 2xx is applied and
/// any well-formed error a divergence.
fn outcome_of(work: &Work, response: &crate::backend::UpstreamResponse) -> ReplayOutcome {
    match &work.route {
        Some(route) => replay_outcome(route.op, response.status, &response.body),
        None if response.status.is_success() => ReplayOutcome::Applied,
        None if crate::chroma::is_unwell(response.status, &response.body) => {
            ReplayOutcome::Transient
        }
        None => ReplayOutcome::Divergent,
    }
}

/// Applies a committed entry on a server that did not execute it (or
/// whose execution ended in doubt), until the server gives a verdict, or
/// until it has failed for `give_up_after` while the server was healthy:
/// then it is dead-lettered, so one entry cannot hold every later
/// conflicting write (and the log) forever.
async fn replay(rep: &Arc<Replicator>, index: usize, lsn: u64, work: &Work) -> TaskEnd {
    let backend = &rep.backends.all()[index];
    let progress = &rep.progress[index];
    let mut attempt = 0u32;
    let mut failing_for = Duration::ZERO;
    loop {
        if !backend.health().is_healthy() {
            progress.set_state(ApplierState::WaitingForServer);
            backend.health().wait_healthy().await;
        }
        let sent_at = Instant::now();
        let result = rep
            .send_entry(index, &work.entry, http::HeaderMap::new())
            .await;
        backend.health().observe(&result);
        let outcome = match &result {
            Ok(response) => outcome_of(work, response),
            Err(_) => ReplayOutcome::Transient,
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
                return TaskEnd::Finished { sent: true };
            }
            (ReplayOutcome::Divergent, Ok(response)) => {
                // A client still waiting here had its execution end in doubt:
                // the entry is committed, so this server's refusal is not its
                // answer. It gets one from a server that applies it, or the
                // "logged, outcome pending" timeout.
                rep.dead_letter(index, lsn, &work.entry, &response).await;
                return TaskEnd::Finished { sent: true };
            }
            (_, result) => {
                let error = describe(&result);
                progress.count_retry(error.clone());
                let delay = backoff(rep.settings.retry_base, rep.settings.retry_cap, attempt);
                attempt = attempt.saturating_add(1);
                if backend.health().is_healthy() {
                    failing_for += sent_at.elapsed() + delay;
                }
                if attempt >= MIN_TRIES_BEFORE_GIVING_UP
                    && failing_for >= rep.settings.give_up_after
                {
                    tracing::error!(
                        server = backend.name(),
                        lsn,
                        attempts = attempt,
                        %error,
                        "giving up on an entry that keeps failing; dead-lettered"
                    );
                    let response = gave_up(&result, attempt, failing_for, &error);
                    rep.dead_letter(index, lsn, &work.entry, &response).await;
                    return TaskEnd::Finished { sent: true };
                }
                tracing::debug!(server = backend.name(), lsn, %error, ?delay, "replay failed; retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// The answer a given-up entry is dead-lettered with: the server's last
/// status (503 if it never answered) and a Chroma-style error saying why.
fn gave_up(
    result: &Result<crate::backend::UpstreamResponse, crate::backend::TransportError>,
    attempts: u32,
    failing_for: Duration,
    error: &str,
) -> crate::backend::UpstreamResponse {
    let status = match result {
        Ok(r) => r.status,
        Err(_) => http::StatusCode::SERVICE_UNAVAILABLE,
    };
    let error = GatewayError::new(
        status,
        "GaveUp",
        format!(
            "gave up after {attempts} tries over {:.0} s while the server was healthy; last: {error}",
            failing_for.as_secs_f64()
        ),
    );
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    crate::backend::UpstreamResponse {
        status,
        headers,
        body: bytes::Bytes::from(error.body()),
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
