//! Online rebuild of a server (`chroma-ha rebuild SERVER --from SOURCE`,
//! `POST /admin/servers/SERVER/rebuild?from=SOURCE`): fills an empty or
//! wiped server from another while the gateway keeps serving.
//!
//! The steps ([`job`]): mark SERVER "rebuilding" durably and pause its
//! applier (from then on it serves no reads and executes no writes, across
//! restarts, until a rebuild finishes); wait for SERVER to be healthy; wait
//! for SOURCE to catch up, pause it and wait until it stands still at a
//! known applied state X; delete what SERVER holds in the tenants copied;
//! copy every database, collection and record from SOURCE to SERVER with
//! [`crate::copy`]; compare both with the content check while both still
//! stand at X; link SERVER's collection ids to the logical ids; restart
//! SERVER's applier at X (its log cursor too); clear the mark and resume
//! both appliers. SERVER then replays what the log took after X.
//!
//! Only one rebuild runs at a time. Its progress is in `/status`
//! (`rebuild`). An interruption (either server dying, the gateway dying)
//! leaves SERVER marked: running `rebuild` again starts it over.
//!
//! A restored backup joins through the same last step ([`join`]).

mod job;
pub mod join;
mod room;

pub use job::{start, RebuildRequest};
pub use room::log_room_verdict;

use crate::copy::CopyProgress;
use serde::Serialize;
use std::sync::{Arc, Mutex};

/// What a rebuild does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Marking the server and pausing its applier.
    Starting,
    /// Waiting for the server to be healthy.
    WaitingForServer,
    /// Waiting for the source to catch up and stand still.
    PausingSource,
    /// Deleting what the server held.
    Clearing,
    /// Copying.
    Copying,
    /// Comparing both servers.
    Checking,
    /// Linking ids and setting the server's position.
    Linking,
    /// Finished: both appliers run again.
    Done,
    /// Stopped by an error; the server stays marked rebuilding.
    Failed,
}

/// The state of the current (or last) rebuild, shown in `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct RebuildView {
    /// The server being rebuilt.
    pub server: String,
    /// The server copied from.
    pub source: String,
    /// What it does now.
    pub phase: Phase,
    /// The log position the copy stands at, once known.
    pub lsn: Option<u64>,
    /// Collections copied.
    pub collections_done: u64,
    /// Collections to copy.
    pub collections_total: u64,
    /// Records copied.
    pub records_done: u64,
    /// Records to copy.
    pub records_total: u64,
    /// Bytes of records copied.
    pub bytes_done: u64,
    /// Seconds since it started (or that it took).
    pub seconds: f64,
    /// Seconds the copy itself took, once done.
    pub copy_seconds: Option<f64>,
    /// Why it failed.
    pub error: Option<String>,
    /// The content check's verdict, once run.
    pub identical: Option<bool>,
    /// The content check's summary, once run.
    pub check: Option<String>,
}

#[derive(Debug)]
struct Current {
    server: String,
    source: String,
    phase: Phase,
    lsn: Option<u64>,
    started: std::time::Instant,
    finished: Option<std::time::Instant>,
    copy_seconds: Option<f64>,
    error: Option<String>,
    identical: Option<bool>,
    check: Option<String>,
    progress: Arc<CopyProgress>,
}

impl Current {
    fn is_running(&self) -> bool {
        !matches!(self.phase, Phase::Done | Phase::Failed)
    }
}

/// The gateway's rebuild slot: at most one rebuild at a time.
#[derive(Debug, Default)]
pub struct Rebuilds {
    current: Mutex<Option<Current>>,
}

impl Rebuilds {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Current>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current or last rebuild, if any since the gateway started.
    pub fn view(&self) -> Option<RebuildView> {
        let guard = self.lock();
        let c = guard.as_ref()?;
        let (cd, ct, rd, rt, bytes) = c.progress.figures();
        let end = c.finished.unwrap_or_else(std::time::Instant::now);
        Some(RebuildView {
            server: c.server.clone(),
            source: c.source.clone(),
            phase: c.phase,
            lsn: c.lsn,
            collections_done: cd,
            collections_total: ct,
            records_done: rd,
            records_total: rt,
            bytes_done: bytes,
            seconds: end.duration_since(c.started).as_secs_f64(),
            copy_seconds: c.copy_seconds,
            error: c.error.clone(),
            identical: c.identical,
            check: c.check.clone(),
        })
    }

    /// The server a rebuild runs for now and its source, if one runs.
    pub fn running(&self) -> Option<(String, String)> {
        self.lock()
            .as_ref()
            .filter(|c| c.is_running())
            .map(|c| (c.server.clone(), c.source.clone()))
    }

    /// Takes the slot for a rebuild of `server` from `source`; `Err` with
    /// the running one's server if one runs.
    fn begin(&self, server: &str, source: &str) -> Result<Arc<CopyProgress>, String> {
        let mut guard = self.lock();
        if let Some(c) = guard.as_ref().filter(|c| c.is_running()) {
            return Err(c.server.clone());
        }
        let progress = Arc::new(CopyProgress::default());
        *guard = Some(Current {
            server: server.to_string(),
            source: source.to_string(),
            phase: Phase::Starting,
            lsn: None,
            started: std::time::Instant::now(),
            finished: None,
            copy_seconds: None,
            error: None,
            identical: None,
            check: None,
            progress: progress.clone(),
        });
        Ok(progress)
    }

    fn update(&self, f: impl FnOnce(&mut Current)) {
        if let Some(c) = self.lock().as_mut() {
            f(c);
            if !c.is_running() && c.finished.is_none() {
                c.finished = Some(std::time::Instant::now());
            }
        }
    }
}
