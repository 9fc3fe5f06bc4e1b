//! Dead letters: putting a divergent or unreadable entry on the list
//! (waiting for room when it is full), and an operator's retry and skip.

use super::applier::Work;
use super::dead_letters::{DeadLetter, DeadLetterError};
use super::ledger::EntryState;
use super::progress::now_ms;
use super::record::{self, Entry, LogRecord};
use super::Replicator;
use crate::backend::UpstreamResponse;
use crate::chroma::{GatewayError, Route, WriteFootprint};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use wal::{Log as _, LogRead as _};

/// The footprint of a logged entry (`None`: unknown, overlaps everything).
fn footprint_of(entry: &Entry) -> Option<WriteFootprint> {
    match crate::chroma::classify(&entry.method, entry.path_only()) {
        Route::Known(route) => crate::chroma::footprint(&route, &entry.body),
        Route::Unknown(_) => None,
    }
}

fn conflicts(a: &Option<WriteFootprint>, b: &Option<WriteFootprint>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.conflicts(b),
        _ => true,
    }
}

fn out_of_order(message: String) -> GatewayError {
    GatewayError::new(StatusCode::CONFLICT, "DeadLetterOrderError", message)
}

impl Replicator {
    /// Puts an entry that server `index` refused on the dead-letter list.
    /// Returns once the letter is stored: while the list is full (or its
    /// files cannot be written) it waits and tries again with backoff, so
    /// the entry stays unfinished and the applier does not move past it;
    /// meanwhile the server reports [`super::progress::ApplierState::DeadLettersFull`].
    pub(super) async fn dead_letter(
        &self,
        index: usize,
        lsn: u64,
        entry: &Entry,
        response: &UpstreamResponse,
    ) {
        let backend = &self.backends.all()[index];
        let letter = DeadLetter {
            id: 0,
            server: backend.name().to_string(),
            lsn,
            method: entry.method.to_string(),
            path: entry.path.clone(),
            status: response.status.as_u16(),
            error: String::from_utf8_lossy(&response.body).into_owned(),
            at: now_ms() as f64 / 1000.0,
            attempts: 1,
            record_bytes: 0,
        };
        tracing::error!(
            server = backend.name(),
            lsn,
            status = letter.status,
            error = %letter.error,
            "divergence: a server refused an entry the executor applied; dead-lettered"
        );
        self.store_dead_letter(index, letter, entry.encode(), footprint_of(entry))
            .await;
    }

    /// Puts a log record no code of this version can read on the
    /// dead-letter list of server `index` (waiting for room like
    /// [`Replicator::dead_letter`]).
    pub(super) async fn dead_letter_unreadable(
        &self,
        index: usize,
        lsn: u64,
        payload: &Bytes,
        error: &str,
    ) {
        let server = self.backends.all()[index].name().to_string();
        tracing::error!(%server, lsn, %error, "a log record cannot be read; dead-lettered");
        let letter = DeadLetter {
            id: 0,
            server,
            lsn,
            method: String::new(),
            path: String::new(),
            status: 0,
            error: format!("unreadable log record: {error}"),
            at: now_ms() as f64 / 1000.0,
            attempts: 1,
            record_bytes: 0,
        };
        self.store_dead_letter(index, letter, payload.clone(), None)
            .await;
    }

    async fn store_dead_letter(
        &self,
        index: usize,
        letter: DeadLetter,
        record: Bytes,
        footprint: Option<WriteFootprint>,
    ) {
        let progress = &self.progress[index];
        let mut blocked = None;
        let mut attempt = 0u32;
        loop {
            let room = self.dead_letters.room_made();
            tokio::pin!(room);
            room.as_mut().enable();
            let error = match self
                .dead_letters
                .add(letter.clone(), record.clone(), footprint.clone())
                .await
            {
                Ok(id) => {
                    progress.hold_dead_letter(id, footprint);
                    self.progress_changed();
                    return;
                }
                Err(e @ DeadLetterError::Full { .. }) => {
                    if blocked.is_none() {
                        tracing::error!(
                            server = %letter.server,
                            lsn = letter.lsn,
                            error = %e,
                            "the dead-letter list is full: this server stops at the entry until room is made"
                        );
                        blocked = Some(progress.block_on_dead_letters());
                        self.progress_changed();
                    }
                    e.to_string()
                }
                Err(e) => {
                    tracing::error!(server = %letter.server, lsn = letter.lsn, error = %e, "saving a dead letter failed; retrying");
                    e.to_string()
                }
            };
            progress.count_retry(format!(
                "entry {} could not be dead-lettered: {error}",
                letter.lsn
            ));
            let base = self.settings.retry_base.as_secs_f64().max(0.001);
            let delay = Duration::from_secs_f64(
                (base * 2f64.powi(attempt.min(30) as i32))
                    .min(self.settings.retry_cap.as_secs_f64()),
            );
            attempt = attempt.saturating_add(1);
            tokio::select! {
                _ = room => {}
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Settles committed entry `lsn` when every server has refused it with
    /// Chroma's own verdict (an entry whose execution ended in doubt, or
    /// was cut short by a crash, then turned out to be refused): no server
    /// applied it, so they agree. The refusal is logged (a restart then
    /// skips it too), the letters are closed, and a client still waiting
    /// gets Chroma's answer from server `index`. Otherwise nothing changes.
    pub(super) async fn settle_if_refused_everywhere(
        &self,
        index: usize,
        lsn: u64,
        work: &Work,
        response: UpstreamResponse,
    ) {
        let letters: Vec<DeadLetter> = self
            .dead_letters
            .list()
            .into_iter()
            .filter(|l| l.lsn == lsn)
            .collect();
        let everywhere = self.backends.all().iter().all(|b| {
            letters
                .iter()
                .any(|l| l.server == b.name() && l.is_chromas_refusal())
        });
        if !everywhere {
            return;
        }
        if let Err(e) = self.record_refusal(lsn, record::Refusal::Rejected).await {
            tracing::error!(lsn, error = %e, "every server refused an entry, but the refusal could not be logged; its dead letters stay open");
            return;
        }
        for letter in &letters {
            if let Err(e) = self.skip_dead_letter(letter.id).await {
                tracing::error!(lsn, id = letter.id, error = %e, "closing a dead letter of an entry refused everywhere failed");
            }
        }
        tracing::warn!(
            lsn,
            status = response.status.as_u16(),
            "every server refused a committed entry (its outcome was in doubt): no server \
             applied it; recorded as refused and its dead letters closed"
        );
        if self.ledger.has_waiter(lsn) {
            let response = self.to_client(index, work, response);
            self.ledger.answer(lsn, Ok((index, response)));
        }
    }

    /// At start: every open dead letter keeps its server from serving
    /// strong reads of the letter's scope.
    pub(super) fn restore_dead_letter_holds(&self) {
        for (index, backend) in self.backends.all().iter().enumerate() {
            for (id, _, footprint) in self.dead_letters.open_for(backend.name()) {
                self.progress[index].hold_dead_letter(id, footprint);
            }
        }
    }

    fn letter_server(&self, letter: &DeadLetter) -> Option<usize> {
        self.backends
            .all()
            .iter()
            .position(|b| b.name() == letter.server)
    }

    /// Removes a dead letter without applying it (the operator repaired
    /// its server by hand). `Ok(None)` if there is no such letter.
    pub async fn skip_dead_letter(&self, id: u64) -> Result<Option<DeadLetter>, GatewayError> {
        let removed = self
            .dead_letters
            .remove(id)
            .await
            .map_err(|e| GatewayError::internal(format!("skipping dead letter {id}: {e}")))?;
        if let Some(letter) = &removed {
            if let Some(index) = self.letter_server(letter) {
                self.progress[index].release_dead_letter(id);
                self.progress_changed();
            }
        }
        Ok(removed)
    }

    /// The first entry after dead letter `id` (at `lsn`, footprint
    /// `footprint`) that conflicts with it and that server `index` has or
    /// may have applied: every entry it has read from the log, except
    /// refused ones and its own other dead letters. An error when the log
    /// no longer holds those entries, so the order cannot be proven.
    async fn later_conflict(
        &self,
        index: usize,
        id: u64,
        lsn: u64,
        footprint: &Option<WriteFootprint>,
    ) -> Result<Option<u64>, GatewayError> {
        let snapshot = self.progress[index].snapshot();
        // Entries past `applied_upto` that the applier has read may be
        // applied already (the window runs them in parallel).
        let upto = snapshot.applied_upto.max(snapshot.fetched_upto);
        if upto <= lsn {
            return Ok(None);
        }
        let server = &self.backends.all()[index];
        let cannot_prove = |why: String| {
            out_of_order(format!(
                "dead letter {id} (LSN {lsn}) cannot be retried: {why}, so it cannot be proven \
                 that {} has applied no later entry that conflicts with it. Skip it (after \
                 repairing the server by hand) or rebuild the server from another one",
                server.name()
            ))
        };
        let not_applied_here: HashSet<u64> = self
            .dead_letters
            .open_for(server.name())
            .into_iter()
            .map(|(_, lsn, _)| lsn)
            .collect();
        let mut refused = HashSet::new();
        let mut candidates = Vec::new();
        let mut reader = self.wal.read_from(lsn + 1);
        let mut expected = lsn + 1;
        while expected <= upto {
            let rec = match reader.try_next().await {
                Ok(Some(rec)) => rec,
                Ok(None) => break,
                Err(e) => {
                    return Err(cannot_prove(format!(
                        "the log no longer holds LSN {expected} ({e})"
                    )))
                }
            };
            if rec.lsn != expected {
                return Err(cannot_prove(format!(
                    "the log no longer holds LSN {expected}"
                )));
            }
            expected += 1;
            match record::decode(&rec.payload) {
                Ok(LogRecord::Entry(entry)) => {
                    if conflicts(footprint, &footprint_of(&entry)) {
                        candidates.push(rec.lsn);
                    }
                }
                Ok(LogRecord::Decision { lsn, .. }) => {
                    refused.insert(lsn);
                }
                // Unreadable: never applied anywhere.
                Err(_) => {}
            }
        }
        Ok(candidates.into_iter().find(|c| {
            !refused.contains(c)
                && !not_applied_here.contains(c)
                && !matches!(self.ledger.state(*c), EntryState::Refused(_))
        }))
    }

    /// Applies a dead letter again on its server. `Ok(true)` and removed
    /// when the server now accepts it; `Ok(false)` when it still refuses.
    /// Refused (409) without sending anything when the server has already
    /// applied a later entry that conflicts with it, or when the log no
    /// longer holds the entries needed to tell.
    pub async fn retry_dead_letter(&self, id: u64) -> Result<bool, GatewayError> {
        let letter = self
            .dead_letters
            .get(id)
            .ok_or_else(|| GatewayError::not_found(format!("no dead letter {id}")))?;
        let index = self.letter_server(&letter).ok_or_else(|| {
            GatewayError::not_found(format!("server {} is not configured", letter.server))
        })?;
        let bytes = self
            .dead_letters
            .record(id)
            .await
            .map_err(|e| GatewayError::internal(format!("dead letter {id} is damaged: {e}")))?;
        let Ok(LogRecord::Entry(entry)) = record::decode(&bytes) else {
            return Err(GatewayError::internal(format!(
                "dead letter {id} is not an entry"
            )));
        };
        // Nothing else reaches the server while the retry runs: its
        // applier starts nothing new, and what it already read is covered
        // by the order check below.
        if self.retrying[index]
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(out_of_order(format!(
                "another dead-letter retry on {} is under way; try again when it is done",
                letter.server
            )));
        }
        let _retrying = RetryGuard(&self.retrying[index]);
        let footprint = footprint_of(&entry);
        if let Some(later) = self
            .later_conflict(index, id, letter.lsn, &footprint)
            .await?
        {
            return Err(out_of_order(format!(
                "dead letter {id} (LSN {}) cannot be retried on {}: it has already applied \
                 LSN {later}, a later entry that conflicts with it, and applying LSN {} now \
                 would break log order. Repair the server by hand and skip the letter, or \
                 rebuild the server from another one",
                letter.lsn, letter.server, letter.lsn
            )));
        }
        let route = match crate::chroma::classify(&entry.method, entry.path_only()) {
            Route::Known(k) => Some(k),
            Route::Unknown(_) => None,
        };
        let work = Work::new(Arc::new(entry), route);
        let result = self.send_entry(index, &work.entry, HeaderMap::new()).await;
        let response = result.map_err(|e| GatewayError::service_unavailable(e.to_string()))?;
        let outcome = match &work.route {
            Some(r) => crate::chroma::replay_outcome(r.op, response.status, &response.body),
            None if response.status.is_success() => crate::chroma::ReplayOutcome::Applied,
            None => crate::chroma::ReplayOutcome::Divergent,
        };
        match outcome {
            crate::chroma::ReplayOutcome::Applied | crate::chroma::ReplayOutcome::AlreadyDone => {
                let already = outcome == crate::chroma::ReplayOutcome::AlreadyDone;
                self.learn(index, letter.lsn, &work, response, already)
                    .await
                    .map_err(|(why, _)| GatewayError::service_unavailable(why))?;
                self.dead_letters
                    .remove(id)
                    .await
                    .map_err(|e| GatewayError::internal(e.to_string()))?;
                self.progress[index].release_dead_letter(id);
                self.progress_changed();
                Ok(true)
            }
            _ => {
                self.dead_letters
                    .record_attempt(
                        id,
                        response.status.as_u16(),
                        String::from_utf8_lossy(&response.body).into_owned(),
                    )
                    .await
                    .map_err(|e| GatewayError::internal(e.to_string()))?;
                Ok(false)
            }
        }
    }
}

/// Ends a server's retry window when the retry returns, however it returns.
struct RetryGuard<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for RetryGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}
