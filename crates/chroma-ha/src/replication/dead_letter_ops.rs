//! Dead letters: putting a divergent or unreadable entry on the list, and
//! an operator's retry.

use super::applier::Work;
use super::dead_letters::DeadLetter;
use super::progress::now_ms;
use super::record::{self, Entry, LogRecord};
use super::Replicator;
use crate::backend::UpstreamResponse;
use crate::chroma::{GatewayError, Route};
use base64::Engine;
use bytes::Bytes;
use http::HeaderMap;
use std::sync::Arc;

impl Replicator {
    /// Puts an entry that server `index` refused on the dead-letter list.
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
            record: base64::engine::general_purpose::STANDARD.encode(entry.encode()),
        };
        tracing::error!(
            server = backend.name(),
            lsn,
            status = letter.status,
            error = %letter.error,
            "divergence: a server refused an entry the executor applied; dead-lettered"
        );
        if let Err(e) = self.dead_letters.add(letter) {
            tracing::error!(error = %e, "saving the dead-letter list failed");
        }
    }

    /// Puts a log record no code of this version can read on the
    /// dead-letter list of server `index`.
    pub(super) fn dead_letter_unreadable(
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
            record: base64::engine::general_purpose::STANDARD.encode(payload),
        };
        if let Err(e) = self.dead_letters.add(letter) {
            tracing::error!(error = %e, "saving the dead-letter list failed");
        }
    }

    /// Applies a dead letter again on its server. `Ok(true)` and removed
    /// when the server now accepts it; `Ok(false)` when it still refuses.
    pub async fn retry_dead_letter(&self, id: u64) -> Result<bool, GatewayError> {
        let letter = self
            .dead_letters
            .get(id)
            .ok_or_else(|| GatewayError::not_found(format!("no dead letter {id}")))?;
        let index = self
            .backends
            .all()
            .iter()
            .position(|b| b.name() == letter.server)
            .ok_or_else(|| {
                GatewayError::not_found(format!("server {} is not configured", letter.server))
            })?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&letter.record)
            .map_err(|e| GatewayError::internal(format!("dead letter {id} is damaged: {e}")))?;
        let Ok(LogRecord::Entry(entry)) = record::decode(&Bytes::from(bytes)) else {
            return Err(GatewayError::internal(format!(
                "dead letter {id} is not an entry"
            )));
        };
        let route = match crate::chroma::classify(&entry.method, entry.path_only()) {
            Route::Known(k) => Some(k),
            Route::Unknown(_) => None,
        };
        let work = Work {
            entry: Arc::new(entry),
            route,
        };
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
                    .await;
                self.dead_letters
                    .remove(id)
                    .map_err(|e| GatewayError::internal(e.to_string()))?;
                Ok(true)
            }
            _ => {
                self.dead_letters
                    .record_attempt(
                        id,
                        response.status.as_u16(),
                        String::from_utf8_lossy(&response.body).into_owned(),
                    )
                    .map_err(|e| GatewayError::internal(e.to_string()))?;
                Ok(false)
            }
        }
    }
}
