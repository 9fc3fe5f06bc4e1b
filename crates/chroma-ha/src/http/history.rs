//! The gateway's recent past, for the status page (`GET /status/history`):
//! one sample a second of each server's lag, the request and replay rates
//! and the log's use, over the last [`WINDOW`]; and the last
//! [`MAX_EVENTS`] state changes (a server going down or up, an applier
//! stopping or resuming, the executor changing, a dead letter, the
//! gateway's role among several).
//!
//! Memory is bounded: at most [`MAX_SAMPLES`] samples and [`MAX_EVENTS`]
//! events are kept, whatever the uptime. Changes are found by comparing
//! consecutive samples, so a change undone within one sampling interval is
//! not listed (the counters in `/metrics` still count it).

use super::AppState;
use crate::replication::dead_letters::DeadLetter;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// How often a sample is taken.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// How far back the samples reach.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// The most samples kept: one per [`INTERVAL`] over [`WINDOW`].
pub const MAX_SAMPLES: usize = (WINDOW.as_secs() / INTERVAL.as_secs()) as usize;
/// The most state changes kept.
pub const MAX_EVENTS: usize = 100;
/// The most dead letters `/status/history` lists (the newest).
pub const MAX_LISTED_LETTERS: usize = 20;
/// Dead letters' errors are cut to this many characters in the listing.
const LETTER_ERROR_CHARS: usize = 300;

/// One server as one sample sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerReading {
    /// Its name.
    pub name: String,
    /// Whether requests may go to it.
    pub healthy: bool,
    /// Its health state (`healthy`, `unhealthy`, …).
    pub state: &'static str,
    /// Its applier's state (`running`, `paused`, …).
    pub applier: &'static str,
    /// Log records it has not applied.
    pub lag_entries: u64,
    /// Age of the oldest entry it has not applied, seconds.
    pub lag_seconds: f64,
    /// The last error seen on it.
    pub last_error: Option<String>,
}

/// Everything one sample reads from the gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// When, Unix seconds.
    pub at: f64,
    /// Client writes answered so far.
    pub writes_total: u64,
    /// Client reads answered so far.
    pub reads_total: u64,
    /// Entries applied by servers that did not execute them, so far.
    pub replayed_total: u64,
    /// Bytes the log uses.
    pub log_used_bytes: u64,
    /// The cap on that.
    pub log_max_bytes: u64,
    /// The server the next write would go to.
    pub executor: Option<String>,
    /// Whether the gateway takes writes.
    pub ready: bool,
    /// Every server, in configuration order.
    pub servers: Vec<ServerReading>,
    /// Dead letters newer than the ones already seen (by id).
    pub new_letters: Vec<DeadLetter>,
    /// This gateway's role among several, and the leader's name and epoch.
    pub cluster: Option<(String, Option<String>, u64)>,
}

/// One state change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// When it was seen, Unix seconds.
    pub at: f64,
    /// `gateway`, `server_down`, `server_up`, `applier`, `executor`,
    /// `dead_letter`, `ready` or `cluster`.
    pub kind: &'static str,
    /// What changed, in words.
    pub message: String,
}

/// One sample kept.
#[derive(Debug, Clone)]
struct Sample {
    at: f64,
    writes_per_second: f64,
    reads_per_second: f64,
    replayed_per_second: f64,
    log_used_bytes: u64,
    log_max_bytes: u64,
    /// Per server, in the order of [`History::servers`]: lag in entries
    /// and seconds, and health.
    servers: Vec<(u64, f64, bool)>,
}

#[derive(Debug, Default)]
struct Inner {
    servers: Vec<String>,
    samples: VecDeque<Sample>,
    events: VecDeque<Event>,
    last: Option<Reading>,
    newest_letter: Option<u64>,
}

/// The samples and events, shared by the sampler and the endpoint.
#[derive(Debug, Default)]
pub struct History {
    inner: Mutex<Inner>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// The id of the newest dead letter already recorded, if any.
    pub fn newest_letter(&self) -> Option<u64> {
        self.lock().newest_letter
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds one reading: a sample of rates (against the previous reading)
    /// and lags, and an event for each state change since the previous
    /// reading. The oldest sample and event go once the bounds are reached.
    pub fn record(&self, reading: Reading) {
        let mut inner = self.lock();
        let events = match &inner.last {
            None => vec![Event {
                at: reading.at,
                kind: "gateway",
                message: format!(
                    "sampling started: {} server(s), executor {}",
                    reading.servers.len(),
                    reading.executor.as_deref().unwrap_or("none")
                ),
            }],
            Some(last) => changes(last, &reading),
        };
        let rate = |now: u64, then: Option<u64>, dt: f64| match then {
            Some(then) if dt > 0.0 => now.saturating_sub(then) as f64 / dt,
            _ => 0.0,
        };
        let dt = inner.last.as_ref().map_or(0.0, |l| reading.at - l.at);
        let last = inner.last.as_ref();
        let sample = Sample {
            at: reading.at,
            writes_per_second: rate(reading.writes_total, last.map(|l| l.writes_total), dt),
            reads_per_second: rate(reading.reads_total, last.map(|l| l.reads_total), dt),
            replayed_per_second: rate(reading.replayed_total, last.map(|l| l.replayed_total), dt),
            log_used_bytes: reading.log_used_bytes,
            log_max_bytes: reading.log_max_bytes,
            servers: reading
                .servers
                .iter()
                .map(|s| (s.lag_entries, s.lag_seconds, s.healthy))
                .collect(),
        };
        inner.servers = reading.servers.iter().map(|s| s.name.clone()).collect();
        push_bounded(&mut inner.samples, sample, MAX_SAMPLES);
        for event in events {
            push_bounded(&mut inner.events, event, MAX_EVENTS);
        }
        if let Some(id) = reading.new_letters.iter().map(|l| l.id).max() {
            inner.newest_letter = Some(inner.newest_letter.map_or(id, |n| n.max(id)));
        }
        inner.last = Some(Reading {
            new_letters: Vec::new(),
            ..reading
        });
    }

    /// The samples (as columns) and the events, newest event first.
    pub fn view(&self) -> HistoryView {
        let inner = self.lock();
        let column = |f: &dyn Fn(&Sample) -> f64| inner.samples.iter().map(f).collect::<Vec<_>>();
        let per_server = |f: &dyn Fn(&(u64, f64, bool)) -> f64| {
            inner
                .servers
                .iter()
                .enumerate()
                .map(|(i, name)| SeriesView {
                    name: name.clone(),
                    values: inner
                        .samples
                        .iter()
                        .map(|s| s.servers.get(i).map_or(0.0, f))
                        .collect(),
                })
                .collect::<Vec<_>>()
        };
        HistoryView {
            interval_seconds: INTERVAL.as_secs_f64(),
            window_seconds: WINDOW.as_secs_f64(),
            at: column(&|s| s.at),
            writes_per_second: column(&|s| s.writes_per_second),
            reads_per_second: column(&|s| s.reads_per_second),
            replayed_per_second: column(&|s| s.replayed_per_second),
            log_used_bytes: column(&|s| s.log_used_bytes as f64),
            log_max_bytes: inner.samples.back().map_or(0, |s| s.log_max_bytes),
            lag_entries: per_server(&|s| s.0 as f64),
            lag_seconds: per_server(&|s| s.1),
            healthy: per_server(&|s| if s.2 { 1.0 } else { 0.0 }),
            events: inner.events.iter().rev().cloned().collect(),
            dead_letters: Vec::new(),
        }
    }
}

fn push_bounded<T>(queue: &mut VecDeque<T>, item: T, max: usize) {
    while queue.len() >= max {
        queue.pop_front();
    }
    queue.push_back(item);
}

/// The state changes from `last` to `now`.
fn changes(last: &Reading, now: &Reading) -> Vec<Event> {
    let at = now.at;
    let mut events = Vec::new();
    let mut event = |kind, message| events.push(Event { at, kind, message });
    if last.ready != now.ready {
        event(
            "ready",
            if now.ready {
                "the gateway is ready again".to_string()
            } else {
                "the gateway is not ready".to_string()
            },
        );
    }
    for server in &now.servers {
        let Some(before) = last.servers.iter().find(|s| s.name == server.name) else {
            continue;
        };
        if before.healthy != server.healthy || before.state != server.state {
            let detail = match (&server.last_error, server.healthy) {
                (Some(e), false) => format!(": {e}"),
                _ => String::new(),
            };
            event(
                if server.healthy {
                    "server_up"
                } else {
                    "server_down"
                },
                format!(
                    "{} is {} (was {}){detail}",
                    server.name, server.state, before.state
                ),
            );
        }
        if before.applier != server.applier {
            event(
                "applier",
                format!(
                    "{}'s applier is {} (was {})",
                    server.name, server.applier, before.applier
                ),
            );
        }
    }
    if last.executor != now.executor {
        let name = |e: &Option<String>| e.clone().unwrap_or_else(|| "none".into());
        event(
            "executor",
            format!(
                "the executor is {} (was {})",
                name(&now.executor),
                name(&last.executor)
            ),
        );
    }
    for letter in &now.new_letters {
        event(
            "dead_letter",
            format!(
                "dead letter #{} on {}: LSN {} {} {} got {}",
                letter.id, letter.server, letter.lsn, letter.method, letter.path, letter.status
            ),
        );
    }
    if last.cluster != now.cluster {
        if let Some((role, leader, epoch)) = &now.cluster {
            event(
                "cluster",
                format!(
                    "this gateway is {role}; leader {}, epoch {epoch}",
                    leader.as_deref().unwrap_or("unknown")
                ),
            );
        }
    }
    events
}

/// One line of a chart: a name and one value per sample.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesView {
    /// The server it belongs to.
    pub name: String,
    /// One value per sample, oldest first.
    pub values: Vec<f64>,
}

/// A dead letter as the status page lists it: no record, the error cut short.
#[derive(Debug, Clone, Serialize)]
pub struct LetterView {
    /// Its number in the list.
    pub id: u64,
    /// The server that refused it.
    pub server: String,
    /// The entry's LSN.
    pub lsn: u64,
    /// The entry's method and logical path.
    pub request: String,
    /// What the server answered: status, 0 if none.
    pub status: u16,
    /// What the server answered, at most 300 characters.
    pub error: String,
    /// When it was added, Unix seconds.
    pub at: f64,
    /// Tries so far.
    pub attempts: u32,
}

impl From<&DeadLetter> for LetterView {
    fn from(letter: &DeadLetter) -> Self {
        let mut error: String = letter.error.chars().take(LETTER_ERROR_CHARS).collect();
        if error.len() < letter.error.len() {
            error.push('…');
        }
        LetterView {
            id: letter.id,
            server: letter.server.clone(),
            lsn: letter.lsn,
            request: format!("{} {}", letter.method, letter.path),
            status: letter.status,
            error,
            at: letter.at,
            attempts: letter.attempts,
        }
    }
}

/// The document of `GET /status/history`: columns of samples, oldest
/// first, every column as long as `at`.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryView {
    /// Seconds between samples.
    pub interval_seconds: f64,
    /// How far back samples are kept, seconds.
    pub window_seconds: f64,
    /// Sample times, Unix seconds.
    pub at: Vec<f64>,
    /// Client writes answered per second.
    pub writes_per_second: Vec<f64>,
    /// Client reads answered per second.
    pub reads_per_second: Vec<f64>,
    /// Entries replayed per second, all servers together.
    pub replayed_per_second: Vec<f64>,
    /// Bytes the log used.
    pub log_used_bytes: Vec<f64>,
    /// The log's cap at the last sample.
    pub log_max_bytes: u64,
    /// Per server: log records not applied.
    pub lag_entries: Vec<SeriesView>,
    /// Per server: age of the oldest entry not applied, seconds.
    pub lag_seconds: Vec<SeriesView>,
    /// Per server: 1 while healthy, 0 otherwise.
    pub healthy: Vec<SeriesView>,
    /// The last state changes, newest first.
    pub events: Vec<Event>,
    /// The newest dead letters (at most 20), newest first.
    pub dead_letters: Vec<LetterView>,
}

/// Reads what one sample needs from the running gateway.
fn read(app: &AppState) -> Reading {
    let status = super::status::collect(app);
    let new_letters = app
        .rep
        .dead_letters()
        .newer_than(app.history.newest_letter());
    Reading {
        at: crate::replication::progress::now_ms() as f64 / 1000.0,
        writes_total: app.metrics.answered(crate::chroma::Class::Write),
        reads_total: app.metrics.answered(crate::chroma::Class::Read),
        replayed_total: status.write_ahead_log.total_replayed,
        log_used_bytes: status.write_ahead_log.used_bytes,
        log_max_bytes: status.write_ahead_log.max_bytes,
        executor: status.executor,
        ready: status.ready,
        servers: status
            .instances
            .into_iter()
            .map(|i| ServerReading {
                name: i.name,
                healthy: i.healthy,
                state: i.state,
                applier: i.applier,
                lag_entries: i.lag_entries,
                lag_seconds: i.lag_seconds,
                last_error: i.last_error,
            })
            .collect(),
        new_letters,
        cluster: status.cluster.map(|c| {
            let (leader, epoch) = c.leader.map_or((None, 0), |l| (l.name, l.epoch));
            (c.role.to_string(), leader, epoch)
        }),
    }
}

/// Samples `app` every [`INTERVAL`] until the gateway it belongs to is gone.
pub fn spawn_sampler(app: Weak<AppState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let Some(app) = app.upgrade() else { break };
            let reading = read(&app);
            app.history.record(reading);
        }
    })
}

/// `GET /status/history`.
pub async fn history(State(app): State<Arc<AppState>>) -> Response {
    let mut view = app.history.view();
    let mut letters = app.rep.dead_letters().list();
    letters.sort_by_key(|l| std::cmp::Reverse(l.id));
    view.dead_letters = letters
        .iter()
        .take(MAX_LISTED_LETTERS)
        .map(LetterView::from)
        .collect();
    Json(view).into_response()
}

#[cfg(test)]
mod tests;
