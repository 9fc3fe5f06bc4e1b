//! The read path: which servers may serve a read, balancing among them,
//! and requests the route table does not know.

use super::ledger::EntryState;
use super::progress::now_ms;
use super::{Answer, Replicator};
use crate::backend::{AttemptClass, TransportError, UpstreamResponse};
use crate::chroma::{GatewayError, Operation, Route, Scope};
use crate::config::ReadConsistency;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use rand::Rng;
use std::time::{Duration, Instant};
use wal::Log as _;

impl Replicator {
    /// Whether server `index` may serve a read of `scope` that must see
    /// every write acknowledged before `barrier`.
    pub(super) fn may_read(&self, index: usize, scope: Option<&Scope>, barrier: u64) -> bool {
        let backend = &self.backends.all()[index];
        if !backend.health().is_healthy() || self.is_unusable(index) {
            return false;
        }
        match self.settings.consistency {
            ReadConsistency::Strong => self.progress[index].covers(scope, barrier, |lsn| {
                matches!(self.ledger.state(lsn), EntryState::Committed)
            }),
            ReadConsistency::Eventual { max_staleness } => {
                let snapshot = self.progress[index].snapshot();
                let age_ms = snapshot
                    .oldest_held_ms
                    .map_or(0, |t| now_ms().saturating_sub(t));
                Duration::from_millis(age_ms) <= max_staleness
            }
        }
    }

    /// Picks a reader among `eligible` (priority order): a replica with
    /// probability `replica_ratio`, weighted by read weight.
    pub(super) fn pick_reader(&self, eligible: &[usize]) -> Option<usize> {
        let all = self.backends.all();
        let (replicas, primary): (Vec<usize>, Vec<usize>) =
            eligible.iter().partition(|i| !all[**i].is_primary());
        let mut rng = rand::rng();
        let use_replica = rng.random_bool(self.settings.replica_ratio.clamp(0.0, 1.0));
        let group = match (use_replica, replicas.is_empty(), primary.is_empty()) {
            (true, false, _) | (false, false, true) => replicas,
            (_, _, false) => primary,
            _ => return None,
        };
        let weights: Vec<f64> = group
            .iter()
            .map(|i| all[*i].config().read_weight.unwrap_or(1.0).max(0.0))
            .collect();
        let total: f64 = weights.iter().sum();
        if total <= 0.0 {
            return group.first().copied();
        }
        let mut x = rng.random_range(0.0..total);
        for (i, w) in group.iter().zip(weights) {
            if x < w {
                return Some(*i);
            }
            x -= w;
        }
        group.last().copied()
    }

    /// Serves a read from a server that has applied every write the read
    /// must see (strong mode), or that is within the staleness bound
    /// (eventual). While no server qualifies it waits (bounded by the write
    /// timeout), and never serves a read from a server that does not: a
    /// stale answer would break the read guarantee, a 503 does not. A
    /// server that fails the read is skipped for the next try.
    pub async fn read(
        &self,
        route: &Route,
        method: Method,
        path_and_query: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Answer, GatewayError> {
        let scope = route.scope();
        let ordered = needs_one_order(route, &body);
        // An ordered read waits this long for the first healthy server in
        // priority order to qualify before it takes the next one.
        let prefer_until = Instant::now() + ORDERED_READ_PREFERENCE;
        let barrier = self.wal.last_lsn();
        let deadline = Instant::now() + self.settings.write_timeout;
        let mut failed: Vec<usize> = Vec::new();
        // Failures a request could cause, counted against their servers
        // only once it is clear the request was not the cause.
        let mut suspects: Vec<(usize, FailureKind, String)> = Vec::new();
        let mut changes = self.progress_tx.subscribe();
        let mut last_error = String::from("no server is healthy");
        let n = self.backends.all().len();
        loop {
            let eligible: Vec<usize> = (0..n)
                .filter(|i| !failed.contains(i) && self.may_read(*i, scope.as_ref(), barrier))
                .collect();
            let pick = if ordered {
                let first_healthy = (0..n).find(|i| {
                    !failed.contains(i)
                        && self.backends.all()[*i].health().is_healthy()
                        && !self.is_unusable(*i)
                });
                match (eligible.first().copied(), first_healthy) {
                    (Some(e), Some(f)) if e != f && Instant::now() < prefer_until => None,
                    (pick, _) => pick,
                }
            } else {
                self.pick_reader(&eligible)
            };
            let Some(index) = pick else {
                let healthy_left = (0..n)
                    .any(|i| !failed.contains(&i) && self.backends.all()[i].health().is_healthy());
                if !healthy_left {
                    if let Some(error) = failed_everywhere(&suspects, &last_error) {
                        return Err(error);
                    }
                    self.count_failures(&mut suspects);
                    return Err(GatewayError::service_unavailable(format!(
                        "no Chroma server can serve the read: {last_error}"
                    )));
                }
                if Instant::now() >= deadline {
                    self.count_failures(&mut suspects);
                    return Err(GatewayError::service_unavailable(format!(
                        "no healthy Chroma server has applied the writes this read must see \
                         (log LSN {barrier}) within {:?}",
                        self.settings.write_timeout
                    )));
                }
                // Progress wakes us; health changes are caught by the short poll.
                let _ = tokio::time::timeout(Duration::from_millis(50), changes.changed()).await;
                continue;
            };
            let backend = &self.backends.all()[index];
            let path = self.physical_path(index, &method, path_and_query).await;
            let result = backend
                .client()
                .send(method.clone(), &path, headers.clone(), body.clone())
                .await;
            match (crate::backend::classify(&result), result) {
                (AttemptClass::Answer, Ok(response)) => {
                    backend.health().mark_success();
                    // Another server answered: the earlier failures were
                    // those servers', not the request's.
                    self.count_failures(&mut suspects);
                    let response = match route {
                        Route::Known(known) => {
                            self.adopt_from_response(index, known, &response).await;
                            self.rewrite_for_client(index, known.op, response)
                        }
                        Route::Unknown(_) => response,
                    };
                    return Ok(Answer {
                        server: index,
                        lsn: None,
                        response,
                    });
                }
                (_, result) => {
                    last_error = describe_failure(&result);
                    match failure_kind(&result) {
                        // Refused connections (and a closed gate) say
                        // nothing about the request: marked at once.
                        None => {
                            self.backends.observe(backend, &result);
                        }
                        Some(kind) => suspects.push((index, kind, last_error.clone())),
                    }
                    failed.push(index);
                }
            }
        }
    }

    /// Counts the failures of a read against the servers they happened on.
    fn count_failures(&self, suspects: &mut Vec<(usize, FailureKind, String)>) {
        for (index, _, reason) in suspects.drain(..) {
            self.backends
                .mark_failure(&self.backends.all()[index], &reason);
        }
    }

    /// Sends a request the route table does not know to the executor,
    /// unlogged and unchanged.
    pub async fn passthrough(
        &self,
        method: Method,
        path_and_query: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Answer, GatewayError> {
        let Some(index) = self.choose_executor(None) else {
            return Err(GatewayError::service_unavailable(
                "no Chroma server is healthy",
            ));
        };
        let backend = &self.backends.all()[index];
        let result = backend
            .client()
            .send(method, path_and_query, headers, body)
            .await;
        match result {
            Ok(mut response) => {
                // An unknown route gets Chroma's router answer (404/405 with
                // an empty body): an answer, not a sign of an unwell server.
                backend.health().mark_success();
                if !response.status.is_success()
                    && !crate::chroma::is_chroma_error_body(&response.body)
                {
                    let error = GatewayError::new(
                        response.status,
                        if response.status == StatusCode::NOT_FOUND { "NotFoundError" } else { "ChromaError" },
                        format!(
                            "{path_and_query}: Chroma answered {} (not a route of the Chroma 1.5.9 API)",
                            response.status
                        ),
                    );
                    response.body = Bytes::from(error.body());
                    response.headers.insert(
                        http::header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                }
                Ok(Answer {
                    server: index,
                    lsn: None,
                    response,
                })
            }
            Err(e) => {
                backend.health().mark_failure(&e.to_string());
                Err(GatewayError::new(
                    StatusCode::BAD_GATEWAY,
                    "BadGateway",
                    e.to_string(),
                ))
            }
        }
    }
}

/// How long an ordered read waits for its preferred server to qualify.
const ORDERED_READ_PREFERENCE: Duration = Duration::from_secs(1);

/// Whether the read's answer is in an order that differs between servers:
/// a listing of collections or databases (paged or not), or a page
/// (`limit`/`offset`) of records. Servers store records and collections in
/// the order they applied them, and non-conflicting writes are applied in
/// parallel, so that order differs between servers. Such reads go to the
/// first healthy server in priority order (waiting briefly for it to
/// qualify), so a client sees one order across calls and pages.
fn needs_one_order(route: &Route, body: &[u8]) -> bool {
    match route.operation() {
        Some(Operation::CollectionGet) => serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .is_some_and(|v| {
                ["limit", "offset"]
                    .iter()
                    .any(|k| v.get(*k).is_some_and(|x| !x.is_null()))
            }),
        Some(Operation::ListCollections | Operation::ListDatabases) => true,
        _ => false,
    }
}

/// How an attempt failed, when the request itself could be the cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailureKind {
    /// The server closed or reset the connection without answering.
    Broken,
    /// No answer in time.
    Timeout,
    /// An answer that is not Chroma's (a proxy's 502, say).
    Status(u16),
}

impl FailureKind {
    fn describe(self) -> String {
        match self {
            FailureKind::Broken => "closed the connection without answering".into(),
            FailureKind::Timeout => "did not answer in time".into(),
            FailureKind::Status(s) => format!("answered {s} without a Chroma error"),
        }
    }
}

/// The kind of a failed attempt the request could have caused; `None` for
/// those it cannot (a refused connection, a request never sent).
fn failure_kind(result: &Result<UpstreamResponse, TransportError>) -> Option<FailureKind> {
    match result {
        Ok(r) => Some(FailureKind::Status(r.status.as_u16())),
        Err(TransportError::Broken { .. }) => Some(FailureKind::Broken),
        Err(TransportError::Timeout { .. }) => Some(FailureKind::Timeout),
        Err(_) => None,
    }
}

/// When more than one server failed a read and all in the same way, the
/// request is the cause (one that crashes Chroma's handler, say): the
/// client gets a 502 saying so, and no server is marked for it.
fn failed_everywhere(
    suspects: &[(usize, FailureKind, String)],
    last_error: &str,
) -> Option<GatewayError> {
    let (_, kind, _) = suspects.first()?;
    let same = suspects.len() >= 2 && suspects.iter().all(|(_, k, _)| k == kind);
    same.then(|| {
        GatewayError::new(
            StatusCode::BAD_GATEWAY,
            "RequestFailedOnEveryServer",
            format!(
                "every Chroma server tried ({}) {} for this request ({last_error}): the request \
                 is the cause, so no server was taken out of rotation",
                suspects.len(),
                kind.describe()
            ),
        )
    })
}

fn describe_failure(result: &Result<UpstreamResponse, TransportError>) -> String {
    match result {
        Ok(r) => format!("a server answered {}", r.status),
        Err(e) => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chroma::classify;

    #[test]
    fn pages_of_records_and_every_listing_are_served_in_one_order() {
        let get = classify(
            &Method::POST,
            "/api/v2/tenants/t/databases/d/collections/0195d1e2-0000-4000-8000-000000000001/get",
        );
        assert!(needs_one_order(&get, br#"{"limit":10,"offset":20}"#));
        assert!(needs_one_order(&get, br#"{"offset":5}"#));
        assert!(!needs_one_order(
            &get,
            br#"{"ids":["a"],"limit":null,"offset":null}"#
        ));
        assert!(!needs_one_order(&get, b"not json"));
        let list = classify(&Method::GET, "/api/v2/tenants/t/databases/d/collections");
        assert!(needs_one_order(&list, b""), "paged or not");
        let databases = classify(&Method::GET, "/api/v2/tenants/t/databases");
        assert!(needs_one_order(&databases, b""));
        let count = classify(
            &Method::GET,
            "/api/v2/tenants/t/databases/d/collections/0195d1e2-0000-4000-8000-000000000001/count",
        );
        assert!(!needs_one_order(&count, b""));
    }

    #[test]
    fn a_read_that_fails_the_same_way_on_two_servers_is_the_requests_failure_and_one_server_or_mixed_failures_are_not(
    ) {
        let broken = |i| (i, FailureKind::Broken, "closed".to_string());
        let e =
            failed_everywhere(&[broken(0), broken(1)], "closed").expect("the request's failure");
        assert_eq!(e.status, StatusCode::BAD_GATEWAY);
        assert!(String::from_utf8_lossy(&e.body()).contains("RequestFailedOnEveryServer"));
        assert!(
            failed_everywhere(&[broken(0)], "closed").is_none(),
            "one server says nothing"
        );
        let timeout = (1, FailureKind::Timeout, "slow".to_string());
        assert!(failed_everywhere(&[broken(0), timeout], "slow").is_none());
        assert!(failed_everywhere(&[], "none").is_none());
    }
}
