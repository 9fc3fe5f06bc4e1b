//! The write path: choosing the executor, logging a client write and
//! waiting for its answer, sending an entry to a server, and recording
//! refusals.

use super::record::{Entry, Refusal};
use super::{progress::now_ms, record};
use super::{Answer, Replicator};
use crate::backend::{TransportError, UpstreamResponse};
use crate::chroma::GatewayError;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use std::sync::Arc;
use wal::Log as _;

impl Replicator {
    /// The server that should execute the next write: the first healthy,
    /// unpaused server in priority order that is caught up with the log,
    /// else the first healthy unpaused one; never `exclude`.
    pub fn choose_executor(&self, exclude: Option<usize>) -> Option<usize> {
        let candidates: Vec<usize> = self
            .backends
            .all()
            .iter()
            .enumerate()
            .filter(|(i, b)| {
                Some(*i) != exclude
                    && b.health().is_healthy()
                    && !self.is_paused(*i)
                    && !self.is_unusable(*i)
                    && !self.progress[*i].is_blocked_on_dead_letters()
            })
            .map(|(i, _)| i)
            .collect();
        candidates
            .iter()
            .copied()
            .find(|i| self.is_caught_up(*i))
            .or_else(|| candidates.first().copied())
    }

    /// Logs a client write and returns the executor's answer. Refused at
    /// once, and not logged, when no server is healthy (503) or the log is
    /// full (507). The work runs in its own task, so a client that goes
    /// away cannot leave an entry half-handled.
    pub async fn write(
        self: &Arc<Self>,
        method: Method,
        path_and_query: String,
        content_type: Option<String>,
        body: Bytes,
        credentials: HeaderMap,
    ) -> Result<Answer, GatewayError> {
        let rep = self.clone();
        let task = tokio::spawn(async move {
            rep.write_inner(method, path_and_query, content_type, body, credentials)
                .await
        });
        task.await
            .map_err(|e| GatewayError::internal(format!("write task failed: {e}")))?
    }

    pub(super) async fn write_inner(
        &self,
        method: Method,
        path: String,
        content_type: Option<String>,
        body: Bytes,
        credentials: HeaderMap,
    ) -> Result<Answer, GatewayError> {
        if let crate::chroma::Route::Known(route) =
            crate::chroma::classify(&method, path.split('?').next().unwrap_or_default())
        {
            if let Some(why) = crate::chroma::unreplicable(route.op, &body) {
                return Err(GatewayError::new(
                    http::StatusCode::BAD_REQUEST,
                    "InvalidArgumentError",
                    why,
                ));
            }
        }
        let Some(executor) = self.choose_executor(None) else {
            return Err(GatewayError::service_unavailable(
                "no Chroma server is healthy; the write was not accepted",
            ));
        };
        let entry = Entry {
            method,
            path,
            content_type,
            received_at_ms: now_ms(),
            body,
        };
        let lsn = match self.wal.append(entry.encode()).await {
            Ok(lsn) => lsn,
            Err(e) if e.is_out_of_space() => {
                return Err(GatewayError::log_full(format!(
                    "the write-ahead log has no room ({e}); the write was not accepted"
                )))
            }
            Err(e @ wal::WalError::OutcomeUnknown { .. }) => {
                return Err(GatewayError::gateway_timeout(format!(
                    "outcome unknown: the log's database did not say whether it took the write \
                     ({e}); if it did, the write is applied on every server"
                )))
            }
            Err(e) => {
                return Err(GatewayError::service_unavailable(format!(
                    "the write-ahead log cannot take writes ({e}); the write was not accepted"
                )))
            }
        };
        let answer = self.ledger.begin(lsn, executor, credentials);
        match tokio::time::timeout(self.settings.write_timeout, answer).await {
            Ok(Ok(Ok((server, response)))) => Ok(Answer {
                server,
                lsn: Some(lsn),
                response,
            }),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(GatewayError::internal(format!(
                "the write at LSN {lsn} lost its executor"
            ))),
            Err(_) => {
                self.ledger.abandon(lsn);
                Err(GatewayError::gateway_timeout(format!(
                    "the write is logged at LSN {lsn} but no server applied it within {:?}; \
                     it will be applied when a server can take it",
                    self.settings.write_timeout
                )))
            }
        }
    }

    /// Sends a logged entry to server `index` (path rewritten to its
    /// physical ids), with `extra` headers (the client's credentials when
    /// executing for it).
    pub(super) async fn send_entry(
        &self,
        index: usize,
        entry: &Entry,
        mut extra: HeaderMap,
    ) -> Result<UpstreamResponse, TransportError> {
        let path = self.physical_path(index, &entry.method, &entry.path).await;
        if let Some(ct) = entry
            .content_type
            .as_deref()
            .and_then(|ct| HeaderValue::from_str(ct).ok())
        {
            extra.insert(http::header::CONTENT_TYPE, ct);
        }
        self.backends.all()[index]
            .client()
            .send(entry.method.clone(), &path, extra, entry.body.clone())
            .await
    }

    /// Durably records that `lsn` is refused, then marks it so in memory.
    /// Decision records are exempt from the log's size cap, so a full log
    /// does not stop them. `Err` when the record could not be made durable:
    /// the entry is then *not* refused; the caller must treat it as a
    /// restarted gateway would (committed) and tell its client the outcome
    /// is unknown.
    pub(super) async fn record_refusal(&self, lsn: u64, refusal: Refusal) -> Result<(), String> {
        let logged = self
            .wal
            .append_uncapped(record::encode_decision(lsn, refusal))
            .await;
        match logged {
            Ok(decision_lsn) => {
                self.ledger.not_an_entry(decision_lsn);
                self.ledger.refuse(lsn, refusal);
                Ok(())
            }
            Err(e) => {
                tracing::error!(
                    lsn,
                    ?refusal,
                    error = %e,
                    "the refusal could not be logged: the write counts as committed and its \
                     client is told the outcome is unknown"
                );
                Err(e.to_string())
            }
        }
    }
}
