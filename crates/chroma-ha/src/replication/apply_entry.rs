//! How one entry is applied on one server: executed for its waiting
//! client (the answer decides the entry), or replayed once committed (the
//! dialect's replay rules classify the answer), with retries, and given up
//! after `give_up_after` of failures on a healthy server.

use super::applier::{TaskEnd, Work};
use super::progress::ApplierState;
use super::record::Refusal;
use super::Replicator;
use crate::backend::AttemptClass;
use crate::chroma::{replay_outcome, GatewayError, ReplayOutcome};
use rand::Rng;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(super) fn describe(
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
pub(super) async fn execute(
    rep: &Arc<Replicator>,
    index: usize,
    lsn: u64,
    work: &Work,
    credentials: http::HeaderMap,
) -> TaskEnd {
    let backend = &rep.backends.all()[index];
    let result = rep.send_entry(index, &work.entry, credentials).await;
    let class = rep.backends.observe(backend, &result);
    match (result, class) {
        (Ok(response), AttemptClass::Answer) if response.status.is_success() => {
            // A fresh answer (not "already done") is learned from itself.
            let response = match rep.learn(index, lsn, work, response, false).await {
                Ok(learned) | Err((_, learned)) => learned,
            };
            rep.progress[index].count_applied(false);
            let response = rep.to_client(index, work, response);
            // Committed and answered in one step: between the two, another
            // server's replay would take the client's answer.
            rep.ledger.commit_and_answer(lsn, Ok((index, response)));
            TaskEnd::Finished { sent: true }
        }
        (Ok(response), AttemptClass::Answer)
            if !crate::chroma::is_sqlite_busy(response.status, &response.body) =>
        {
            // Chroma's verdict: the write is refused, here and everywhere.
            match rep.record_refusal(lsn, Refusal::Rejected).await {
                Ok(()) => {
                    let response = rep.to_client(index, work, response);
                    rep.ledger.answer(lsn, Ok((index, response)));
                    TaskEnd::Finished { sent: true }
                }
                Err(e) => {
                    // Without a durable refusal a restart would commit it:
                    // commit it now, so every server applies it in order
                    // (and dead-letters it if it refuses too).
                    rep.ledger.answer(
                        lsn,
                        Err(GatewayError::gateway_timeout(format!(
                            "outcome unknown: Chroma refused the write at LSN {lsn} ({}), but \
                             the refusal could not be recorded ({e}); it counts as committed \
                             and every server will be sent it",
                            response.status
                        ))),
                    );
                    rep.ledger.commit(lsn);
                    replay(rep, index, lsn, work).await
                }
            }
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
                return match rep.record_refusal(lsn, Refusal::Cancelled).await {
                    Ok(()) => {
                        rep.ledger.answer(
                            lsn,
                            Err(GatewayError::service_unavailable(format!(
                                "no Chroma server could take the write (last: {error}); it was \
                                 not applied"
                            ))),
                        );
                        TaskEnd::Finished { sent: false }
                    }
                    Err(e) => {
                        // As a restart would: committed, applied when a
                        // server can take it (this one too: requeued).
                        rep.ledger.answer(
                            lsn,
                            Err(GatewayError::gateway_timeout(format!(
                                "outcome unknown: no Chroma server could take the write at LSN \
                                 {lsn} (last: {error}), and its cancellation could not be \
                                 recorded ({e}); it counts as committed and will be applied \
                                 when a server can take it"
                            ))),
                        );
                        rep.ledger.commit(lsn);
                        TaskEnd::Requeue
                    }
                };
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
pub(super) fn backoff(base: Duration, cap: Duration, attempt: u32) -> Duration {
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
pub(super) async fn replay(rep: &Arc<Replicator>, index: usize, lsn: u64, work: &Work) -> TaskEnd {
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
        rep.backends.observe(backend, &result);
        let outcome = match &result {
            Ok(response) => outcome_of(work, response),
            Err(_) => ReplayOutcome::Transient,
        };
        match (outcome, result) {
            (ReplayOutcome::Applied | ReplayOutcome::AlreadyDone, Ok(response)) => {
                let already = outcome == ReplayOutcome::AlreadyDone;
                let response = match rep.learn(index, lsn, work, response, already).await {
                    Ok(response) => response,
                    Err((why, _)) => {
                        progress.count_retry(why.clone());
                        let delay =
                            backoff(rep.settings.retry_base, rep.settings.retry_cap, attempt);
                        attempt = attempt.saturating_add(1);
                        tracing::warn!(server = backend.name(), lsn, reason = %why, ?delay, "trying the entry again");
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                };
                progress.count_applied(true);
                if rep.ledger.has_waiter(lsn) {
                    // A waiting client's execution ended in doubt. "Already
                    // done" cannot tell whether that attempt did it or the
                    // effect was there before (a delete of a database that
                    // never existed): Chroma's own answer is unknown.
                    let answer = if already {
                        Err(GatewayError::gateway_timeout(format!(
                            "outcome unknown: the write at LSN {lsn} ended in doubt on its \
                             first server, and server {} now answers {} (already done), which \
                             does not tell whether this request did it; it is committed and \
                             applied on every server",
                            backend.name(),
                            response.status
                        )))
                    } else {
                        Ok((index, rep.to_client(index, work, response)))
                    };
                    rep.ledger.answer(lsn, answer);
                }
                return TaskEnd::Finished { sent: true };
            }
            (ReplayOutcome::Divergent, Ok(response)) => {
                // A client still waiting here had its execution end in doubt:
                // the entry is committed, so this server's refusal alone is
                // not its answer. It gets one from a server that applies it,
                // from the last server to refuse it too, or the "logged,
                // outcome pending" timeout.
                rep.dead_letter(index, lsn, &work.entry, &response).await;
                rep.settle_if_refused_everywhere(index, lsn, work, response)
                    .await;
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
    gave_up_response(
        status,
        format!(
            "gave up after {attempts} tries over {:.0} s while the server was healthy; last: {error}",
            failing_for.as_secs_f64()
        ),
    )
}

/// A Chroma-style `GaveUp` error answer with `status`, for a dead letter
/// the gateway itself decided on.
pub(super) fn gave_up_response(
    status: http::StatusCode,
    message: String,
) -> crate::backend::UpstreamResponse {
    let error = GatewayError::new(status, "GaveUp", message);
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
