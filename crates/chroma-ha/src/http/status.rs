//! `/health` (the process answers), `/ready` (the log is open and at least
//! one server is healthy) and `/status` (the JSON an operator and the ops
//! scripts read; it keeps the Python balancer's fields).

use super::AppState;
use crate::replication::progress::ApplierState;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;
use serde::Serialize;
use std::sync::Arc;

/// Liveness: always 200 while the process serves HTTP.
pub async fn health() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// Why the gateway is not ready, if it is not.
pub fn not_ready_reason(app: &AppState) -> Option<String> {
    if let Some(reason) = app.rep.wal().stats().poisoned {
        return Some(format!("the write-ahead log is unusable: {reason}"));
    }
    if app.rep.backends().healthy_count() == 0 {
        return Some("no Chroma server is healthy".into());
    }
    None
}

/// Readiness: 200 when writes can be taken, 503 with the reason otherwise.
pub async fn ready(State(app): State<Arc<AppState>>) -> Response {
    match not_ready_reason(&app) {
        None => Json(serde_json::json!({ "ready": true })).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "ready": false, "reason": reason })),
        )
            .into_response(),
    }
}

/// The log part of `/status`.
#[derive(Debug, Serialize)]
pub struct WalStatus {
    /// Where the log is kept: `file` (data_dir/wal) or `postgres`.
    pub kind: &'static str,
    /// The log's identity (the same for every gateway on it; backups
    /// record it).
    pub log_id: String,
    /// Most entries any server still has to apply.
    pub pending_writes: u64,
    /// Whether a healthy server is catching up (more than 4 × apply_window
    /// records behind).
    pub is_replaying: bool,
    /// Receive time (Unix seconds) of the oldest entry some server has not applied.
    pub oldest_pending: Option<f64>,
    /// Entries applied by servers that did not execute them.
    pub total_replayed: u64,
    /// Entries that went to the dead-letter list.
    pub failed_replays: u64,
    /// First LSN in the log.
    pub first_lsn: u64,
    /// Last durable LSN.
    pub last_lsn: u64,
    /// Bytes the log uses.
    pub used_bytes: u64,
    /// The cap on that.
    pub max_bytes: u64,
    /// Segment files.
    pub segments: usize,
    /// The fsync policy.
    pub fsync: &'static str,
    /// Dead letters now listed.
    pub dead_letters: usize,
    /// Entries logged and waiting for their executor's answer.
    pub undecided: usize,
}

/// One server in `/status`.
#[derive(Debug, Serialize)]
pub struct InstanceStatus {
    /// Server name.
    pub name: String,
    /// Base URL.
    pub url: String,
    /// `primary` or `replica`.
    pub role: &'static str,
    /// Whether requests may go to it.
    pub healthy: bool,
    /// `healthy`, `unhealthy`, `unknown` or `draining`.
    pub state: &'static str,
    /// Share of requests that got an answer, 0..1.
    pub success_rate: f64,
    /// Requests sent to it.
    pub total_requests: u64,
    /// Last probe, Unix seconds.
    pub last_health_check: Option<f64>,
    /// Every log record up to here is applied or skipped on it.
    pub applied_lsn: u64,
    /// Log records it has not applied yet.
    pub lag_entries: u64,
    /// Age of the oldest entry it has not applied, seconds.
    pub lag_seconds: f64,
    /// `running`, `paused`, `waiting_for_server`, or `dead_letters_full`
    /// (it refused an entry, the dead-letter list is full, and it holds
    /// that entry unfinished until room is made).
    pub applier: &'static str,
    /// Entries it applied that another server executed.
    pub replayed: u64,
    /// Transient failures retried.
    pub retries: u64,
    /// Its dead letters.
    pub dead_letters: usize,
    /// It joined after the log dropped part of its history and lacks
    /// writes nothing will replay: no reads, no executions, until an
    /// operator marks it complete.
    pub history_incomplete: bool,
    /// It is being rebuilt (or its rebuild was interrupted): no reads, no
    /// executions until a rebuild finishes.
    pub rebuilding: bool,
    /// The last error seen.
    pub last_error: Option<String>,
    /// While its applier is paused with nothing under way and all it
    /// applied durably recorded: the log position its content stands at
    /// (what `backup` and `rebuild` copy from). Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_at: Option<PausedAt>,
}

/// Where a paused, quiescent server's content stands in the log.
#[derive(Debug, Clone, Serialize)]
pub struct PausedAt {
    /// Every log record up to here is applied (or skipped) on it.
    pub lsn: u64,
    /// Entries above `lsn` it has applied too.
    pub applied_above: Vec<u64>,
}

/// The whole `/status` document.
#[derive(Debug, Serialize)]
pub struct Status {
    /// Always `chroma-ha`.
    pub service: &'static str,
    /// The gateway's version.
    pub version: &'static str,
    /// Same as `/ready`.
    pub ready: bool,
    /// Why not ready, if not.
    pub not_ready_reason: Option<String>,
    /// The server the next write would go to.
    pub executor: Option<String>,
    /// Servers that are healthy.
    pub healthy_instances: usize,
    /// Servers configured.
    pub total_instances: usize,
    /// Whether the dead-letter list is at `replication.max_dead_letters`:
    /// a server that refuses another entry stops at it.
    pub dead_letters_full: bool,
    /// The most dead letters kept.
    pub max_dead_letters: usize,
    /// What a full dead-letter list means now and what to do; `None` while
    /// there is room.
    pub dead_letters_message: Option<String>,
    /// The log.
    pub write_ahead_log: WalStatus,
    /// Every server, primary first.
    pub instances: Vec<InstanceStatus>,
    /// The current or last rebuild since the gateway started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebuild: Option<crate::rebuild::RebuildView>,
    /// The gateways sharing the log, when it is in PostgreSQL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::view::ClusterStatus>,
}

/// Builds the status document.
pub fn collect(app: &AppState) -> Status {
    let rep = &app.rep;
    let stats = rep.wal().stats();
    let now_ms = crate::replication::progress::now_ms();
    let mut instances = Vec::new();
    let mut oldest: Option<u64> = None;
    let mut pending = 0;
    let mut replaying = false;
    let mut replayed_total = 0;
    for (index, backend) in rep.backends().all().iter().enumerate() {
        let health = backend.health().snapshot();
        let progress = rep.progress(index);
        let lag_entries = rep.lag_entries(index);
        pending = pending.max(lag_entries);
        if let Some(t) = progress.oldest_held_ms {
            oldest = Some(oldest.map_or(t, |o| o.min(t)));
        }
        replaying |= health.healthy && !rep.is_caught_up(index);
        replayed_total += progress.replayed_total;
        instances.push(InstanceStatus {
            name: backend.name().to_string(),
            url: backend.config().url.clone(),
            role: if backend.is_primary() {
                "primary"
            } else {
                "replica"
            },
            healthy: health.healthy,
            state: health.state.as_str(),
            success_rate: health.success_rate,
            total_requests: health.total_requests,
            last_health_check: health.last_health_check,
            applied_lsn: progress.applied_upto,
            lag_entries,
            lag_seconds: progress
                .oldest_held_ms
                .map_or(0.0, |t| now_ms.saturating_sub(t) as f64 / 1000.0),
            applier: progress.state.as_str(),
            replayed: progress.replayed_total,
            retries: progress.retries_total,
            dead_letters: rep.dead_letters().count_for(backend.name()),
            history_incomplete: rep.is_incomplete(index),
            rebuilding: rep.is_rebuilding(index),
            last_error: progress.last_error.or(health.last_error),
            paused_at: progress.paused_at.map(|p| PausedAt {
                lsn: p.cursor,
                applied_above: p.above.into_iter().collect(),
            }),
        });
    }
    let not_ready_reason = not_ready_reason(app);
    let letters = rep.dead_letters();
    let dead_letters_full = letters.is_full();
    let stopped: Vec<&str> = instances
        .iter()
        .filter(|i| i.applier == ApplierState::DeadLettersFull.as_str())
        .map(|i| i.name.as_str())
        .collect();
    let dead_letters_message = (dead_letters_full || !stopped.is_empty()).then(|| {
        let state = format!(
            "the dead-letter list is full ({} of {} letters)",
            letters.len(),
            letters.max()
        );
        let effect = if stopped.is_empty() {
            "the next server to refuse an entry will stop at it".to_string()
        } else {
            format!(
                "{} stopped at a refused entry and will not move past it",
                stopped.join(", ")
            )
        };
        format!(
            "{state}: {effect}. Retry or skip dead letters (/admin/dead-letters) \
             or raise replication.max_dead_letters"
        )
    });
    Status {
        service: "chroma-ha",
        version: env!("CARGO_PKG_VERSION"),
        ready: not_ready_reason.is_none(),
        not_ready_reason,
        executor: rep
            .choose_executor(None)
            .map(|i| rep.backends().all()[i].name().to_string()),
        healthy_instances: rep.backends().healthy_count(),
        total_instances: rep.backends().all().len(),
        dead_letters_full,
        max_dead_letters: letters.max(),
        dead_letters_message,
        write_ahead_log: WalStatus {
            kind: rep.wal().kind(),
            log_id: rep.log_id().to_string(),
            pending_writes: pending,
            is_replaying: replaying,
            oldest_pending: oldest.map(|t| t as f64 / 1000.0),
            total_replayed: replayed_total,
            failed_replays: rep.dead_letters().len() as u64,
            first_lsn: stats.first_lsn,
            last_lsn: stats.last_lsn,
            used_bytes: stats.used_bytes,
            max_bytes: stats.max_bytes,
            segments: stats.segments,
            fsync: rep.fsync_policy(),
            dead_letters: rep.dead_letters().len(),
            undecided: rep.undecided(),
        },
        instances,
        rebuild: app.rebuilds.view(),
        cluster: app.cluster.as_deref().map(crate::cluster::view::collect),
    }
}

/// The status document as JSON.
pub async fn status(State(app): State<Arc<AppState>>) -> Response {
    Json(collect(&app)).into_response()
}
