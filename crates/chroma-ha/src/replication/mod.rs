//! Log-first replication: every write is an entry in the log, every server
//! applies the log in order through its own applier, and each entry is
//! decided by the server that executed it for its client.
//!
//! - [`record`]: what goes into the log (entries, decisions).
//! - [`ledger`]: decisions and executions under way; the crash rule.
//! - `applier`: one task per server, conflict-ordered parallel apply.
//! - [`idmap`]: logical ↔ physical collection ids, adoption by name.
//! - [`progress`]: per-server positions, for reads, executor choice, status.
//! - [`dead_letters`]: divergent entries an operator retries or skips.
//! - `gateway_ops` (this file): the [`Replicator`] that request handlers and
//!   the admin API call.

mod applier;
pub mod dead_letters;
pub mod idmap;
pub mod ledger;
pub mod progress;
pub mod record;
pub mod state_file;

use crate::backend::{AttemptClass, Backends, TransportError, UpstreamResponse};
use crate::chroma::{
    collection_info, collection_infos, rewrite_path_to_physical, rewrite_response_ids,
    CollectionRef, GatewayError, KnownRoute, Operation, PathRewrite, ResponseIds, Route, Scope,
};
use crate::config::{Config, FsyncPolicy, ReadConsistency};
use applier::Work;
use base64::Engine;
use bytes::Bytes;
use dead_letters::{DeadLetter, DeadLetters};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use idmap::IdMap;
use ledger::{EntryState, Ledger};
use progress::{now_ms, Progress, ProgressSnapshot};
use rand::Rng;
use record::{Entry, LogRecord, Refusal};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Settings the replication core uses, taken from [`Config`].
#[derive(Debug, Clone)]
pub struct ReplicationSettings {
    /// Non-conflicting entries applied at once per server.
    pub apply_window: usize,
    /// First retry delay.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_cap: Duration,
    /// Least time between replayed entries while catching up, if limited.
    pub replay_interval: Option<Duration>,
    /// Longest a client write waits for its answer.
    pub write_timeout: Duration,
    /// Share of reads sent to replicas among caught-up servers.
    pub replica_ratio: f64,
    /// Strong or eventual reads.
    pub consistency: ReadConsistency,
}

/// The gateway could not start its replication core.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The log could not be opened.
    #[error("opening the write-ahead log in {dir}: {source}")]
    Wal {
        /// The log directory.
        dir: String,
        /// Why.
        #[source]
        source: wal::WalError,
    },
    /// A state file could not be read.
    #[error(transparent)]
    State(#[from] state_file::StateFileError),
}

/// The replication core: log, ledger, appliers, id map, dead letters.
pub struct Replicator {
    wal: wal::Wal,
    backends: Arc<Backends>,
    ledger: Ledger,
    idmap: IdMap,
    dead_letters: DeadLetters,
    progress: Vec<Progress>,
    cursors: Vec<wal::Cursor>,
    paused: Vec<watch::Sender<bool>>,
    settings: ReplicationSettings,
    adopted: Mutex<HashSet<(String, String)>>,
    progress_tx: watch::Sender<u64>,
    fsync: &'static str,
    recovery: wal::Recovery,
    /// The last LSN written by an earlier run: entries up to here may be
    /// applied a second time on a server that is already past them.
    boot_lsn: u64,
    /// Where operator actions (pause, drain) are kept across restarts.
    operator_path: std::path::PathBuf,
}

/// Operator actions that outlive a restart: a server drained for
/// maintenance must not take traffic again because the gateway restarted.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct OperatorState {
    paused: Vec<String>,
    drained: Vec<String>,
}

impl std::fmt::Debug for Replicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicator").finish_non_exhaustive()
    }
}

/// The answer to a client request, and who gave it.
#[derive(Debug)]
pub struct Answer {
    /// The server that answered (index in priority order).
    pub server: usize,
    /// The LSN of the entry, for writes.
    pub lsn: Option<u64>,
    /// What to send back.
    pub response: UpstreamResponse,
}

fn wal_options(
    config: &Config,
    on_fsync: Option<Arc<dyn Fn(Duration) + Send + Sync>>,
) -> (wal::WalOptions, &'static str) {
    let (sync, name) = match config.wal.fsync {
        FsyncPolicy::Always => (wal::SyncPolicy::Always, "always"),
        FsyncPolicy::Batch { interval } => (wal::SyncPolicy::Batch { interval }, "batch"),
        FsyncPolicy::Never => (wal::SyncPolicy::Never, "never"),
    };
    let options = wal::WalOptions {
        sync,
        segment_bytes: config.wal.segment_bytes,
        max_bytes: config.wal.max_bytes,
        max_record_bytes: config.max_body_bytes + 64 * 1024,
        on_fsync,
        ..wal::WalOptions::default()
    };
    (options, name)
}

/// Reads the refusals recorded after `from` (the lowest cursor).
async fn refusals_since(log: &wal::Wal, from: u64) -> BTreeMap<u64, Refusal> {
    let mut refused = BTreeMap::new();
    let mut reader = log.read_from(from.max(log.first_lsn()));
    loop {
        match reader.try_next().await {
            Ok(Some(rec)) => {
                if let Ok(LogRecord::Decision { lsn, refusal }) = record::decode(&rec.payload) {
                    refused.insert(lsn, refusal);
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::error!(error = %e, "reading decisions at start failed; the rest count as committed");
                break;
            }
        }
    }
    refused
}

impl Replicator {
    /// Opens the log and state in `config.data_dir`, recovers the ledger
    /// (entries of earlier runs without a refusal are committed), and starts
    /// one applier per server. Must be called inside a Tokio runtime.
    pub async fn start(
        config: &Config,
        backends: Arc<Backends>,
        on_fsync: Option<Arc<dyn Fn(Duration) + Send + Sync>>,
    ) -> Result<Arc<Replicator>, StartError> {
        let wal_dir = config.data_dir.join("wal");
        let wal_err = |source| StartError::Wal {
            dir: wal_dir.display().to_string(),
            source,
        };
        let (options, fsync) = wal_options(config, on_fsync);
        let (log, recovery) = wal::Wal::open(&wal_dir, options).map_err(wal_err)?;
        if let Some(repair) = &recovery.tail_repair {
            tracing::warn!(?repair, "the log's torn tail was repaired at start");
        }
        // A cursor of a server no longer configured would hold every
        // segment forever: drop it (its server cannot be replayed anyway).
        for name in log.cursors().keys() {
            if !backends.all().iter().any(|b| b.name() == name) {
                tracing::warn!(
                    server = %name,
                    "removing the log cursor of a server that is no longer configured"
                );
                log.remove_cursor(name).await.map_err(wal_err)?;
            }
        }
        let mut cursors = Vec::new();
        for backend in backends.all() {
            cursors.push(log.cursor(backend.name()).await.map_err(wal_err)?);
        }
        let lowest = cursors.iter().map(|c| c.position()).min().unwrap_or(0);
        let refused = refusals_since(&log, lowest + 1).await;
        let boot_lsn = log.last_lsn();
        let names: Vec<String> = backends
            .all()
            .iter()
            .map(|b| b.name().to_string())
            .collect();
        let idmap = IdMap::load(config.data_dir.join("collections.json"), names)?;
        let dead_letters = DeadLetters::load(config.data_dir.join("dead_letters.json"))?;
        let settings = ReplicationSettings {
            apply_window: config.replication.apply_window.max(1),
            retry_base: config.replication.retry_base,
            retry_cap: config.replication.retry_cap,
            replay_interval: config
                .replication
                .replay_rate_limit
                .map(|r| Duration::from_secs_f64(1.0 / f64::from(r.get()))),
            write_timeout: config.request_timeout + Duration::from_secs(5),
            replica_ratio: config.reads.replica_ratio,
            consistency: config.reads.consistency,
        };
        tracing::info!(
            first_lsn = recovery.first_lsn,
            last_lsn = recovery.last_lsn,
            refusals = refused.len(),
            collections = idmap.len(),
            "replication state recovered"
        );
        let replicator = Arc::new(Replicator {
            progress: cursors
                .iter()
                .map(|c| Progress::new(c.position()))
                .collect(),
            paused: cursors.iter().map(|_| watch::channel(false).0).collect(),
            wal: log,
            backends,
            ledger: Ledger::new(boot_lsn, refused),
            idmap,
            dead_letters,
            cursors,
            settings,
            adopted: Mutex::new(HashSet::new()),
            progress_tx: watch::channel(0).0,
            fsync,
            recovery,
            boot_lsn,
            operator_path: config.data_dir.join("operator.json"),
        });
        let operator: OperatorState =
            state_file::load(&replicator.operator_path)?.unwrap_or_default();
        for (index, backend) in replicator.backends.all().iter().enumerate() {
            if operator.paused.iter().any(|n| n == backend.name()) {
                tracing::warn!(
                    server = backend.name(),
                    "applier paused by an operator before the restart"
                );
                replicator.paused[index].send_replace(true);
            }
            if operator.drained.iter().any(|n| n == backend.name()) {
                tracing::warn!(
                    server = backend.name(),
                    "server drained by an operator before the restart"
                );
                backend.health().set_draining(true);
            }
        }
        for index in 0..replicator.backends.all().len() {
            tokio::spawn(applier::run(replicator.clone(), index));
        }
        tokio::spawn(maintain(replicator.clone()));
        Ok(replicator)
    }

    /// The log.
    pub fn wal(&self) -> &wal::Wal {
        &self.wal
    }

    /// The servers.
    pub fn backends(&self) -> &Arc<Backends> {
        &self.backends
    }

    /// What opening the log found.
    pub fn recovery(&self) -> &wal::Recovery {
        &self.recovery
    }

    /// The fsync policy's name.
    pub fn fsync_policy(&self) -> &'static str {
        self.fsync
    }

    /// The dead-letter list.
    pub fn dead_letters(&self) -> &DeadLetters {
        &self.dead_letters
    }

    /// The logical ↔ physical id map.
    pub fn idmap(&self) -> &IdMap {
        &self.idmap
    }

    /// Progress of server `index`.
    pub fn progress(&self, index: usize) -> ProgressSnapshot {
        self.progress[index].snapshot()
    }

    /// Whether server `index`'s applier is paused by an operator.
    pub fn is_paused(&self, index: usize) -> bool {
        *self.paused[index].borrow()
    }

    /// Pauses or resumes server `index`'s applier; kept across restarts.
    pub fn set_paused(&self, index: usize, paused: bool) -> Result<(), state_file::StateFileError> {
        self.paused[index].send_replace(paused);
        self.save_operator_state()
    }

    /// Drains server `index` (no traffic, for maintenance) or brings it
    /// back; kept across restarts.
    pub fn set_draining(
        &self,
        index: usize,
        draining: bool,
    ) -> Result<(), state_file::StateFileError> {
        self.backends.all()[index].health().set_draining(draining);
        self.save_operator_state()
    }

    fn save_operator_state(&self) -> Result<(), state_file::StateFileError> {
        let all = self.backends.all();
        let state = OperatorState {
            paused: (0..all.len())
                .filter(|i| self.is_paused(*i))
                .map(|i| all[i].name().to_string())
                .collect(),
            drained: all
                .iter()
                .filter(|b| b.health().is_draining())
                .map(|b| b.name().to_string())
                .collect(),
        };
        state_file::store(&self.operator_path, &state)
    }

    /// Entries logged and not yet decided.
    pub fn undecided(&self) -> usize {
        self.ledger.undecided()
    }

    fn progress_changed(&self) {
        self.progress_tx.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Records behind the log's end on server `index`.
    pub fn lag_entries(&self, index: usize) -> u64 {
        self.wal
            .last_lsn()
            .saturating_sub(self.progress[index].snapshot().applied_upto)
    }

    /// Whether server `index` is within `4 × apply_window` records of the
    /// log's end: close enough to execute writes without making them wait
    /// behind a replay backlog.
    pub fn is_caught_up(&self, index: usize) -> bool {
        self.lag_entries(index) <= (self.settings.apply_window as u64) * 4
    }

    /// The server that should execute the next write: the first healthy,
    /// unpaused server in priority order that is caught up with the log,
    /// else the first healthy unpaused one; never `exclude`.
    pub fn choose_executor(&self, exclude: Option<usize>) -> Option<usize> {
        let candidates: Vec<usize> = self
            .backends
            .all()
            .iter()
            .enumerate()
            .filter(|(i, b)| Some(*i) != exclude && b.health().is_healthy() && !self.is_paused(*i))
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

    async fn write_inner(
        &self,
        method: Method,
        path: String,
        content_type: Option<String>,
        body: Bytes,
        credentials: HeaderMap,
    ) -> Result<Answer, GatewayError> {
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

    /// Whether server `index` may serve a read of `scope` that must see
    /// every write acknowledged before `barrier`.
    fn may_read(&self, index: usize, scope: Option<&Scope>, barrier: u64) -> bool {
        let backend = &self.backends.all()[index];
        if !backend.health().is_healthy() {
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
    fn pick_reader(&self, eligible: &[usize]) -> Option<usize> {
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
        let pages = reads_a_page(route, path_and_query, &body);
        let barrier = self.wal.last_lsn();
        let deadline = Instant::now() + self.settings.write_timeout;
        let mut failed: Vec<usize> = Vec::new();
        let mut changes = self.progress_tx.subscribe();
        let mut last_error = String::from("no server is healthy");
        let n = self.backends.all().len();
        loop {
            let eligible: Vec<usize> = (0..n)
                .filter(|i| !failed.contains(i) && self.may_read(*i, scope.as_ref(), barrier))
                .collect();
            let pick = if pages {
                eligible.first().copied()
            } else {
                self.pick_reader(&eligible)
            };
            let Some(index) = pick else {
                let healthy_left = (0..n)
                    .any(|i| !failed.contains(&i) && self.backends.all()[i].health().is_healthy());
                if !healthy_left {
                    return Err(GatewayError::service_unavailable(format!(
                        "no Chroma server can serve the read: {last_error}"
                    )));
                }
                if Instant::now() >= deadline {
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
            match (backend.health().observe(&result), result) {
                (AttemptClass::Answer, Ok(response)) => {
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
                    failed.push(index);
                }
            }
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

    /// The request path with the logical collection id replaced by server
    /// `index`'s physical id (resolved by name if not yet known).
    async fn physical_path(&self, index: usize, method: &Method, path: &str) -> String {
        let rewrite =
            |p: &str| rewrite_path_to_physical(method, p, |l| self.idmap.physical(l, index));
        match rewrite(path) {
            PathRewrite::NoCollectionId => path.to_string(),
            PathRewrite::Rewritten(p) => p,
            PathRewrite::Unmapped { logical } => {
                if self.resolve(index, &logical).await.is_some() {
                    if let PathRewrite::Rewritten(p) = rewrite(path) {
                        return p;
                    }
                }
                path.to_string()
            }
        }
    }

    /// Finds `logical`'s physical id on server `index` by the collection's
    /// name, and remembers it.
    async fn resolve(&self, index: usize, logical: &str) -> Option<String> {
        let entry = self.idmap.get(logical)?;
        let response = self
            .get_by_name(index, &entry.tenant, &entry.database, &entry.name)
            .await?;
        let info = collection_info(&response.body)?;
        self.idmap.link(index, logical, &info.id);
        self.persist_idmap().await;
        Some(info.id)
    }

    async fn get_by_name(
        &self,
        index: usize,
        tenant: &str,
        database: &str,
        name: &str,
    ) -> Option<UpstreamResponse> {
        use crate::chroma::segment::encode;
        let path = format!(
            "/api/v2/tenants/{}/databases/{}/collections/{}",
            encode(tenant),
            encode(database),
            encode(name)
        );
        let backend = &self.backends.all()[index];
        match backend
            .client()
            .send(Method::GET, &path, HeaderMap::new(), Bytes::new())
            .await
        {
            Ok(r) if r.status.is_success() => Some(r),
            _ => None,
        }
    }

    async fn persist_idmap(&self) {
        if let Err(e) = self.idmap.persist().await {
            tracing::error!(error = %e, "saving the collection id map failed");
        }
    }

    /// Sends a logged entry to server `index` (path rewritten to its
    /// physical ids), with `extra` headers (the client's credentials when
    /// executing for it).
    async fn send_entry(
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

    /// Updates the id map after server `index` applied `work` (or found it
    /// already done), and returns the answer to give a client: for "already
    /// done" answers, the answer the write would have had.
    async fn learn(
        &self,
        index: usize,
        lsn: u64,
        work: &Work,
        response: UpstreamResponse,
        already_done: bool,
    ) -> UpstreamResponse {
        let Some(route) = &work.route else {
            return response;
        };
        let tenant = route.tenant.as_deref().unwrap_or_default();
        let database = route.database.as_deref().unwrap_or_default();
        let response = match route.op {
            Operation::CreateCollection | Operation::ForkCollection => {
                let found = if already_done {
                    let name = serde_json::from_slice::<serde_json::Value>(&work.entry.body)
                        .ok()
                        .and_then(|v| v.get("name").and_then(|n| n.as_str()).map(String::from));
                    match name {
                        Some(name) => self.get_by_name(index, tenant, database, &name).await,
                        None => None,
                    }
                } else {
                    Some(response.clone())
                };
                match found {
                    Some(found) => {
                        if let Some(info) = collection_info(&found.body) {
                            self.idmap
                                .learn_created(lsn, index, tenant, database, &info.name, &info.id);
                        }
                        found
                    }
                    None => response,
                }
            }
            Operation::DeleteCollection => {
                if let Some(CollectionRef::Name(name)) = &route.collection {
                    self.idmap.forget(index, tenant, database, name);
                }
                ok_if(already_done, response)
            }
            Operation::DeleteDatabase => {
                self.idmap.forget_database(index, tenant, database);
                ok_if(already_done, response)
            }
            Operation::CreateDatabase | Operation::CreateTenant => ok_if(already_done, response),
            Operation::UpdateCollection => {
                let new_name = serde_json::from_slice::<serde_json::Value>(&work.entry.body)
                    .ok()
                    .and_then(|v| v.get("new_name").and_then(|n| n.as_str()).map(String::from));
                if let (Some(name), Some(logical)) = (new_name, route.collection_id()) {
                    self.idmap.rename(logical, &name);
                }
                response
            }
            Operation::Reset => {
                self.idmap.forget_server(index);
                self.adopted
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clear();
                response
            }
            _ => response,
        };
        self.persist_idmap().await;
        response
    }

    /// Rewrites physical ids in a response of `work` for its client.
    fn to_client(&self, index: usize, work: &Work, response: UpstreamResponse) -> UpstreamResponse {
        match &work.route {
            Some(route) => self.rewrite_for_client(index, route.op, response),
            None => response,
        }
    }

    fn rewrite_for_client(
        &self,
        index: usize,
        op: Operation,
        mut response: UpstreamResponse,
    ) -> UpstreamResponse {
        if response.status.is_success() {
            if let Some(body) =
                rewrite_response_ids(op, &response.body, |p| self.idmap.logical(p, index))
            {
                response.body = Bytes::from(body);
            }
        }
        response
    }

    /// Links collections a read returned that the map does not know yet.
    async fn adopt_from_response(
        &self,
        index: usize,
        route: &KnownRoute,
        response: &UpstreamResponse,
    ) {
        if !response.status.is_success() {
            return;
        }
        let infos = match route.op.response_ids() {
            ResponseIds::Collection => collection_info(&response.body).map(|i| vec![i]),
            ResponseIds::CollectionList => collection_infos(&response.body),
            _ => None,
        };
        let mut changed = false;
        for info in infos.unwrap_or_default() {
            if self.idmap.logical(&info.id, index).is_some() {
                continue;
            }
            let tenant = info
                .tenant
                .clone()
                .or_else(|| route.tenant.clone())
                .unwrap_or_default();
            let database = info
                .database
                .clone()
                .or_else(|| route.database.clone())
                .unwrap_or_default();
            self.ensure_adopted(&tenant, &database).await;
            if self.idmap.logical(&info.id, index).is_none() {
                self.idmap
                    .adopt(index, &tenant, &database, &info.name, &info.id);
                changed = true;
            }
        }
        if changed {
            self.persist_idmap().await;
        }
    }

    /// Once per (tenant, database) and run: lists the collections of every
    /// healthy server (primary first) and links them by name, so logical
    /// ids of collections made before the gateway are the primary's ids.
    pub async fn ensure_adopted(&self, tenant: &str, database: &str) {
        let key = (tenant.to_string(), database.to_string());
        if !self
            .adopted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone())
        {
            return;
        }
        use crate::chroma::segment::encode;
        let mut complete = true;
        for (index, backend) in self.backends.all().iter().enumerate() {
            if !backend.health().is_healthy() {
                complete = false;
                continue;
            }
            let mut offset = 0usize;
            loop {
                let path = format!(
                    "/api/v2/tenants/{}/databases/{}/collections?limit=1000&offset={offset}",
                    encode(tenant),
                    encode(database)
                );
                let page = match backend
                    .client()
                    .send(Method::GET, &path, HeaderMap::new(), Bytes::new())
                    .await
                {
                    Ok(r) if r.status.is_success() => collection_infos(&r.body).unwrap_or_default(),
                    Ok(r) if r.status == StatusCode::NOT_FOUND => break,
                    _ => {
                        complete = false;
                        break;
                    }
                };
                for info in &page {
                    self.idmap
                        .adopt(index, tenant, database, &info.name, &info.id);
                }
                if page.len() < 1000 {
                    break;
                }
                offset += page.len();
            }
        }
        if !complete {
            // Try again on the next reference, when more servers may be up.
            self.adopted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        }
        self.persist_idmap().await;
    }

    /// Durably records that `lsn` is refused, then marks it so in memory.
    async fn record_refusal(&self, lsn: u64, refusal: Refusal) {
        match self.wal.append(record::encode_decision(lsn, refusal)).await {
            Ok(decision_lsn) => self.ledger.not_an_entry(decision_lsn),
            Err(e) => tracing::error!(
                lsn,
                ?refusal,
                error = %e,
                "the refusal could not be logged; a restart would replay this write"
            ),
        }
        self.ledger.refuse(lsn, refusal);
    }

    /// Puts an entry that server `index` refused on the dead-letter list.
    async fn dead_letter(
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
    fn dead_letter_unreadable(&self, index: usize, lsn: u64, payload: &Bytes, error: &str) {
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

/// Whether the read asks for a page (`limit`/`offset`) of records or
/// collections. Servers store records in the order they applied them, and
/// non-conflicting writes are applied in parallel, so that order differs
/// between servers: the pages of one listing must all come from the same
/// server. Such reads go to the first qualifying server in priority order.
fn reads_a_page(route: &Route, path_and_query: &str, body: &[u8]) -> bool {
    match route.operation() {
        Some(Operation::CollectionGet) => serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .is_some_and(|v| {
                ["limit", "offset"]
                    .iter()
                    .any(|k| v.get(*k).is_some_and(|x| !x.is_null()))
            }),
        Some(Operation::ListCollections | Operation::ListDatabases) => path_and_query
            .split_once('?')
            .is_some_and(|(_, q)| q.contains("limit=") || q.contains("offset=")),
        _ => false,
    }
}

fn ok_if(already_done: bool, response: UpstreamResponse) -> UpstreamResponse {
    if !already_done {
        return response;
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    UpstreamResponse {
        status: StatusCode::OK,
        headers,
        body: Bytes::from_static(b"{}"),
    }
}

fn describe_failure(result: &Result<UpstreamResponse, TransportError>) -> String {
    match result {
        Ok(r) => format!("a server answered {}", r.status),
        Err(e) => e.to_string(),
    }
}

/// Forgets refusals every applier is past.
async fn maintain(rep: Arc<Replicator>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let lowest = (0..rep.progress.len())
            .map(|i| rep.progress[i].snapshot().applied_upto)
            .min()
            .unwrap_or(0);
        rep.ledger.forget_below(lowest + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chroma::classify;

    #[test]
    fn paged_listings_are_recognised() {
        let get = classify(
            &Method::POST,
            "/api/v2/tenants/t/databases/d/collections/0195d1e2-0000-4000-8000-000000000001/get",
        );
        assert!(reads_a_page(&get, "/x", br#"{"limit":10,"offset":20}"#));
        assert!(reads_a_page(&get, "/x", br#"{"offset":5}"#));
        assert!(!reads_a_page(
            &get,
            "/x",
            br#"{"ids":["a"],"limit":null,"offset":null}"#
        ));
        assert!(!reads_a_page(&get, "/x", b"not json"));
        let list = classify(&Method::GET, "/api/v2/tenants/t/databases/d/collections");
        assert!(reads_a_page(
            &list,
            "/api/v2/tenants/t/databases/d/collections?limit=2&offset=2",
            b""
        ));
        assert!(!reads_a_page(
            &list,
            "/api/v2/tenants/t/databases/d/collections",
            b""
        ));
    }
}
