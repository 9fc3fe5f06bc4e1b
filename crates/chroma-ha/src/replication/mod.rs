//! Log-first replication: every write is an entry in the log, every server
//! applies the log in order through its own applier, and each entry is
//! decided by the server that executed it for its client.
//!
//! - [`record`]: what goes into the log (entries, decisions).
//! - [`ledger`]: decisions and executions under way; the crash rule.
//! - `applier`: one task per server, driving its [`window`](self) of entries.
//! - `window`: the order and repeat rules (no I/O).
//! - `apply_entry`: executing or replaying one entry on one server.
//! - [`applied`]: each server's durable applied state, group-committed.
//! - `write`: executor choice, the client write path, refusals.
//! - `read`: which servers may serve a read; unknown routes.
//! - `ids`: logical ↔ physical ids in paths and answers, adoption, learning.
//! - `adoption`: which (tenant, database) scopes are adopted on which server.
//! - `dead_letter_ops`: dead-lettering entries, an operator's retry and skip.
//! - [`idmap`]: logical ↔ physical collection ids, adoption by name.
//! - [`progress`]: per-server positions, for reads, executor choice, status.
//! - [`dead_letters`]: divergent entries an operator retries or skips.
//! - this file: the [`Replicator`] itself: start-up, state, operator flags.

mod adoption;
pub mod applied;
mod applier;
mod apply_entry;
mod apply_merged;
mod dead_letter_ops;
pub mod dead_letters;
pub(crate) mod identity;
pub mod idmap;
mod ids;
pub mod ledger;
pub mod log;
pub mod merge;
pub mod migrate;
pub mod progress;
mod read;
pub mod rebuild_ops;
pub mod record;
pub mod state_file;
pub mod state_store;
mod window;
mod write;

use crate::backend::{Backends, UpstreamResponse};
use crate::config::{Config, FsyncPolicy, ReadConsistency};
use dead_letters::DeadLetters;
use idmap::IdMap;
use ledger::Ledger;
pub use log::ReplicationLog;
use progress::{Progress, ProgressSnapshot};
use record::{LogRecord, Refusal};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use wal::{Log, LogRead};

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
    /// How long an entry may keep failing on a healthy server before it
    /// is dead-lettered.
    pub give_up_after: Duration,
    /// Whether a catching-up server gets record writes merged (see [`merge`]).
    pub merge_catch_up: bool,
    /// Most body bytes of one merged request.
    pub merge_max_bytes: usize,
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
    /// The servers' applied state could not be read.
    #[error(transparent)]
    Applied(#[from] applied::AppliedLoadError),
    /// The decisions in the log could not be read: starting would count
    /// writes whose clients were told they failed as committed.
    #[error(
        "reading the decisions in the write-ahead log failed at LSN {lsn}: {source}; \
         the gateway does not start, since it could not tell refused writes from \
         committed ones (check the log with `chroma-ha wal verify`)"
    )]
    Decisions {
        /// Where reading stopped.
        lsn: u64,
        /// Why.
        #[source]
        source: wal::WalError,
    },
    /// The merge metrics could not be built (a bug).
    #[error("building the merge metrics: {0}")]
    Metrics(String),
    /// The log in PostgreSQL could not be opened.
    #[error("opening the log in PostgreSQL: {0}")]
    PostgresLog(#[from] pglog::ConnectError),
    /// A log record this binary cannot decode (written by a newer version?).
    #[error(
        "the log record at LSN {lsn} cannot be read by this version ({error}): it may be a \
         decision written by a newer chroma-ha; start that version instead"
    )]
    UnreadableRecord {
        /// The record.
        lsn: u64,
        /// Why it cannot be read.
        error: String,
    },
}

/// The replication core: log, ledger, appliers, id map, dead letters.
pub struct Replicator {
    wal: ReplicationLog,
    backends: Arc<Backends>,
    ledger: Ledger,
    idmap: IdMap,
    dead_letters: DeadLetters,
    progress: Vec<Progress>,
    paused: Vec<watch::Sender<bool>>,
    settings: ReplicationSettings,
    adopted: adoption::Adoptions,
    progress_tx: watch::Sender<u64>,
    fsync: &'static str,
    recovery: wal::Recovery,
    /// What each server has applied, durably.
    applied: applied::AppliedLog,
    /// Servers configured after the log had already dropped part of its
    /// history: they lack writes nothing will replay to them.
    incomplete: Vec<std::sync::atomic::AtomicBool>,
    /// A dead-letter retry is under way on the server: its applier starts
    /// nothing meanwhile.
    retrying: Vec<std::sync::atomic::AtomicBool>,
    /// Where the state documents are kept: the operator's actions (pause,
    /// drain) across restarts, and the id map and applied state.
    state: state_store::StateStore,
    /// Merged requests of catching-up servers.
    merge_metrics: merge::MergeMetrics,
    /// Servers being rebuilt (see [`rebuild_ops`]).
    rebuilding: Vec<std::sync::Mutex<Option<rebuild_ops::RebuildMark>>>,
    /// Asks a server's applier to stop (to restart it at a new position).
    applier_stops: Vec<watch::Sender<bool>>,
    /// Each server's applier task.
    appliers: Vec<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
    /// The log's identity (see [`identity`]).
    log_id: String,
}

/// The operator state's document name in the [`state_store::StateStore`].
pub(crate) const OPERATOR_KEY: state_store::Key = "operator";

/// Operator actions that outlive a restart: a server drained for
/// maintenance must not take traffic again because the gateway restarted.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct OperatorState {
    paused: Vec<String>,
    drained: Vec<String>,
    /// Servers whose history the log did not hold when they joined, until
    /// an operator marks them complete.
    #[serde(default)]
    incomplete: Vec<String>,
    /// Servers being rebuilt, and from which server.
    #[serde(default)]
    rebuilding: BTreeMap<String, rebuild_ops::RebuildMark>,
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
        max_record_bytes: max_record_bytes(config),
        on_fsync,
        ..wal::WalOptions::default()
    };
    (options, name)
}

/// The largest log record: the largest request body plus room for the
/// entry's method, path and headers.
fn max_record_bytes(config: &Config) -> usize {
    config.max_body_bytes + 64 * 1024
}

/// Where the log is, for messages: its directory, or the PostgreSQL
/// server and database (never the password).
fn describe_log(config: &Config) -> String {
    match &config.log_url {
        None => config.data_dir.join("wal").display().to_string(),
        Some(url) => match url.expose().parse::<tokio_postgres::Config>() {
            Ok(c) => format!(
                "PostgreSQL database {:?} on {:?}",
                c.get_dbname().unwrap_or_default(),
                c.get_hosts()
            ),
            Err(_) => "PostgreSQL".into(),
        },
    }
}

/// Opens the configured log: the file log in `data_dir/wal`, or the log in
/// PostgreSQL at `log.url` (migrated to this build's schema). Returns it
/// with what opening found and the name of its durability policy.
async fn open_log(
    config: &Config,
    on_fsync: Option<Arc<dyn Fn(Duration) + Send + Sync>>,
) -> Result<(ReplicationLog, wal::Recovery, &'static str), StartError> {
    let Some(url) = &config.log_url else {
        let dir = config.data_dir.join("wal");
        let (options, fsync) = wal_options(config, on_fsync);
        let (log, recovery) = wal::Wal::open(&dir, options).map_err(|source| StartError::Wal {
            dir: dir.display().to_string(),
            source,
        })?;
        if let Some(repair) = &recovery.tail_repair {
            tracing::warn!(?repair, "the log's torn tail was repaired at start");
        }
        return Ok((ReplicationLog::File(log), recovery, fsync));
    };
    let options = pglog::PgLogOptions {
        max_bytes: config.wal.max_bytes,
        max_record_bytes: max_record_bytes(config),
        op_timeout: config.connect_timeout.max(Duration::from_secs(1)),
        // A write whose commit answer was lost waits for the lookup no
        // longer than for a server to apply it.
        resolve_for: write_timeout(config),
        // Its append transaction is the PostgreSQL log's durability step:
        // timed like the file log's fsyncs.
        on_commit: on_fsync.map(pglog::CommitHook),
        ..pglog::PgLogOptions::default()
    };
    let log = pglog::PgLog::connect(url.expose(), options).await?;
    let recovery = wal::Recovery {
        segments: 0,
        first_lsn: log.first_lsn(),
        last_lsn: log.last_lsn(),
        tail_repair: None,
    };
    tracing::info!(log = %describe_log(config), "the log is kept in PostgreSQL");
    Ok((ReplicationLog::Postgres(log), recovery, "postgres"))
}

/// How long a client's write waits for its outcome: a server's answer
/// plus some slack for the log and the queue ahead of it.
fn write_timeout(config: &Config) -> Duration {
    config.request_timeout + Duration::from_secs(5)
}

/// Reads the refusals recorded after `from` (the lowest cursor). An error
/// stops the start: the entries after it would otherwise count as committed.
async fn refusals_since(
    log: &ReplicationLog,
    from: u64,
) -> Result<BTreeMap<u64, Refusal>, StartError> {
    let mut refused = BTreeMap::new();
    let mut reader = log.read_from(from.max(log.first_lsn()));
    loop {
        let lsn = reader.next_lsn();
        match reader.try_next().await {
            Ok(Some(rec)) => match record::decode(&rec.payload) {
                Ok(LogRecord::Decision { lsn, refusal }) => {
                    refused.insert(lsn, refusal);
                }
                Ok(LogRecord::Entry(_)) => {}
                // A record this binary cannot read may be a decision of a
                // newer version: counting its entry as committed could apply
                // a write whose client was told it failed.
                Err(e) => {
                    return Err(StartError::UnreadableRecord {
                        lsn: rec.lsn,
                        error: e.to_string(),
                    })
                }
            },
            Ok(None) => return Ok(refused),
            Err(source) => return Err(StartError::Decisions { lsn, source }),
        }
    }
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
        Self::start_fenced(config, backends, on_fsync, 0).await
    }

    /// Like [`start`](Self::start), as the leader of term `epoch` of a
    /// shared log: every write to the log, from the first, is refused once
    /// a later term has begun. `0`: not fenced (the file log, or a single
    /// gateway on PostgreSQL).
    pub async fn start_fenced(
        config: &Config,
        backends: Arc<Backends>,
        on_fsync: Option<Arc<dyn Fn(Duration) + Send + Sync>>,
        epoch: u64,
    ) -> Result<Arc<Replicator>, StartError> {
        let (log, recovery, fsync) = open_log(config, on_fsync).await?;
        if let ReplicationLog::Postgres(log) = &log {
            log.fence(epoch);
        }
        let wal_err = |source| StartError::Wal {
            dir: describe_log(config),
            source,
        };
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
        let names: Vec<String> = backends
            .all()
            .iter()
            .map(|b| b.name().to_string())
            .collect();
        let state = state_store::StateStore::for_log(&log, &config.data_dir);
        let (applied, mut states) = applied::AppliedLog::open(state.clone(), &names).await?;
        let known = log.cursors();
        let mut cursors = Vec::new();
        let mut joined_late = Vec::new();
        for backend in backends.all() {
            // A server without a cursor gets one just before the first
            // record held, so the log keeps what it has yet to apply.
            let position = match known.get(backend.name()) {
                Some(position) => *position,
                None => {
                    let start = log.first_lsn() - 1;
                    log.commit_cursor(backend.name(), start)
                        .await
                        .map_err(wal_err)?;
                    start
                }
            };
            cursors.push(position);
        }
        // Where each applier starts: its durable applied state. The log's
        // cursor trails it (it is moved after the state is durable), so it
        // is only the start for a server with no applied state yet. A
        // server whose position is before the oldest record the log holds
        // (new, or removed and added back after the log moved on) lacks
        // writes nothing can replay to it: it is marked incomplete.
        let starts: Vec<applied::AppliedState> = backends
            .all()
            .iter()
            .zip(&cursors)
            .map(|(backend, &position)| {
                let mut state = states.remove(backend.name()).unwrap_or_default();
                let before = known
                    .get(backend.name())
                    .copied()
                    .unwrap_or(0)
                    .max(state.cursor);
                if before + 1 < log.first_lsn() {
                    joined_late.push(backend.name().to_string());
                }
                if state.cursor < position {
                    state.cursor = position;
                    let floor = state.cursor;
                    state.above.retain(|lsn| *lsn > floor);
                }
                state
            })
            .collect();
        let lowest = starts.iter().map(|s| s.cursor).min().unwrap_or(0);
        let refused = refusals_since(&log, lowest + 1).await?;
        let boot_lsn = log.last_lsn();
        let idmap = IdMap::load(state.clone(), names).await?;
        let log_id = identity::load_or_create(&state).await?;
        let dead_letters =
            DeadLetters::open_in(&state, config.replication.max_dead_letters).await?;
        let settings = ReplicationSettings {
            apply_window: config.replication.apply_window.max(1),
            retry_base: config.replication.retry_base,
            retry_cap: config.replication.retry_cap,
            replay_interval: config
                .replication
                .replay_rate_limit
                .map(|r| Duration::from_secs_f64(1.0 / f64::from(r.get()))),
            write_timeout: write_timeout(config),
            replica_ratio: config.reads.replica_ratio,
            consistency: config.reads.consistency,
            give_up_after: config.replication.give_up_after,
            merge_catch_up: config.replication.merge_catch_up,
            merge_max_bytes: config.max_body_bytes.max(1),
        };
        tracing::info!(
            first_lsn = recovery.first_lsn,
            last_lsn = recovery.last_lsn,
            refusals = refused.len(),
            collections = idmap.len(),
            "replication state recovered"
        );
        let backends_for_metrics = backends.clone();
        let backends_for_metrics = backends_for_metrics.all();
        let replicator = Arc::new(Replicator {
            progress: starts.iter().map(|s| Progress::new(s.cursor)).collect(),
            incomplete: cursors
                .iter()
                .map(|_| std::sync::atomic::AtomicBool::new(false))
                .collect(),
            retrying: cursors
                .iter()
                .map(|_| std::sync::atomic::AtomicBool::new(false))
                .collect(),
            paused: cursors.iter().map(|_| watch::channel(false).0).collect(),
            rebuilding: cursors
                .iter()
                .map(|_| std::sync::Mutex::new(None))
                .collect(),
            applier_stops: cursors.iter().map(|_| watch::channel(false).0).collect(),
            appliers: cursors
                .iter()
                .map(|_| std::sync::Mutex::new(None))
                .collect(),
            wal: log,
            log_id,
            backends,
            ledger: Ledger::new(boot_lsn, refused),
            idmap,
            dead_letters,
            settings,
            adopted: adoption::Adoptions::new(adoption::MAX_ADOPTED_SCOPES),
            progress_tx: watch::channel(0).0,
            fsync,
            recovery,
            applied,
            state,
            merge_metrics: merge::MergeMetrics::new(backends_for_metrics.iter().map(|b| b.name()))
                .map_err(StartError::Metrics)?,
        });
        let operator: OperatorState = replicator
            .state
            .load(OPERATOR_KEY)
            .await?
            .unwrap_or_default();
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
            let late = joined_late.iter().any(|n| n == backend.name());
            if late || operator.incomplete.iter().any(|n| n == backend.name()) {
                tracing::warn!(
                    server = backend.name(),
                    first_lsn = replicator.wal.first_lsn(),
                    "this server joined after the log dropped part of its history: it lacks \
                     writes that cannot be replayed to it; it serves no reads and executes no \
                     writes until it is filled from another server and marked complete \
                     (POST /admin/servers/NAME/complete)"
                );
                replicator.incomplete[index].store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let mut interrupted = false;
        for (name, mark) in &operator.rebuilding {
            let Some(index) = replicator
                .backends
                .all()
                .iter()
                .position(|b| b.name() == name)
            else {
                continue;
            };
            tracing::warn!(
                server = %name,
                source = %mark.source,
                "a rebuild of this server was interrupted: it serves no reads and executes no \
                 writes until `chroma-ha rebuild {name} --from {}` is run again",
                mark.source
            );
            let mut mark = mark.clone();
            if mark.source_paused {
                // The rebuild that paused its source is gone: let the
                // source replay again.
                if let Some(source) = replicator
                    .backends
                    .all()
                    .iter()
                    .position(|b| b.name() == mark.source)
                {
                    replicator.paused[source].send_replace(false);
                }
                mark.source_paused = false;
                interrupted = true;
            }
            *replicator.rebuilding[index]
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(mark);
        }
        if !joined_late.is_empty() || interrupted {
            replicator.save_operator_state().await?;
        }
        replicator.restore_dead_letter_holds();
        for (index, start) in starts.into_iter().enumerate() {
            let handle = tokio::spawn(applier::run(replicator.clone(), index, start));
            *replicator.appliers[index]
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(handle);
        }
        tokio::spawn(maintain(replicator.clone()));
        if let ReplicationLog::Postgres(log) = &replicator.wal {
            if let Some(mut orphans) = log.take_orphans() {
                let rep = replicator.clone();
                tokio::spawn(async move {
                    while let Some(lsns) = orphans.recv().await {
                        for lsn in lsns {
                            rep.ledger.committed_orphan(lsn);
                        }
                    }
                });
            }
        }
        Ok(replicator)
    }

    /// From now on, fences the shared log's writes with `epoch` (the
    /// leader took the lease again in a new term; see
    /// [`crate::cluster`]). Nothing for the file log.
    pub fn fence(&self, epoch: u64) {
        if let ReplicationLog::Postgres(log) = &self.wal {
            log.fence(epoch);
        }
    }

    /// The log.
    pub fn wal(&self) -> &ReplicationLog {
        &self.wal
    }

    /// The log's identity: the same for every gateway on one log, and
    /// across restarts and `log migrate`.
    pub fn log_id(&self) -> &str {
        &self.log_id
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

    /// The merge metrics of catching-up servers ([`merge`]).
    pub fn merge_metrics(&self) -> &merge::MergeMetrics {
        &self.merge_metrics
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
    pub async fn set_paused(
        &self,
        index: usize,
        paused: bool,
    ) -> Result<(), state_file::StateFileError> {
        self.paused[index].send_replace(paused);
        self.save_operator_state().await
    }

    /// Whether server `index` joined after the log dropped part of its
    /// history and has not been marked complete by an operator.
    pub fn is_incomplete(&self, index: usize) -> bool {
        self.incomplete[index].load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether a dead-letter retry is under way on server `index`.
    pub(crate) fn is_retrying(&self, index: usize) -> bool {
        self.retrying[index].load(std::sync::atomic::Ordering::Acquire)
    }

    /// Marks server `index` complete (an operator filled it from another
    /// server), or incomplete again; kept across restarts.
    pub async fn set_incomplete(
        &self,
        index: usize,
        incomplete: bool,
    ) -> Result<(), state_file::StateFileError> {
        self.incomplete[index].store(incomplete, std::sync::atomic::Ordering::Relaxed);
        self.progress_changed();
        self.save_operator_state().await
    }

    /// The durable applied state's committer (figures for metrics).
    pub fn applied(&self) -> &applied::AppliedLog {
        &self.applied
    }

    /// Drains server `index` (no traffic, for maintenance) or brings it
    /// back; kept across restarts.
    pub async fn set_draining(
        &self,
        index: usize,
        draining: bool,
    ) -> Result<(), state_file::StateFileError> {
        self.backends.all()[index].health().set_draining(draining);
        self.save_operator_state().await
    }

    async fn save_operator_state(&self) -> Result<(), state_file::StateFileError> {
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
            incomplete: (0..all.len())
                .filter(|i| self.is_incomplete(*i))
                .map(|i| all[i].name().to_string())
                .collect(),
            rebuilding: (0..all.len())
                .filter_map(|i| Some((all[i].name().to_string(), self.rebuild_mark(i)?)))
                .collect(),
        };
        self.state.store(OPERATOR_KEY, state).await
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
