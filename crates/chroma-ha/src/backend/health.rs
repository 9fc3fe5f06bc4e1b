//! Health of one server: a rise/fall state machine fed by active probes and
//! passive marks from live requests, plus an operator drain flag.
//!
//! # Rules
//!
//! - Start state is [`HealthState::Unknown`]; the probe loop probes at once.
//!   From `Unknown` one probe settles it: a success makes the server healthy,
//!   a failure unhealthy (no waiting `rise` intervals after a gateway start).
//! - Healthy → unhealthy after `fall` consecutive failures. Failures are
//!   failed probes and failed live requests ([`Health::mark_failure`]) alike.
//! - Unhealthy → healthy after `rise` consecutive successful *probes*. Live
//!   requests do not count toward rise (an unhealthy server gets no traffic),
//!   but an answered live request resets the failure count.
//! - Passive policy of [`Health::observe`]: an answer (any [`AttemptClass::Answer`])
//!   is a success; a connect failure marks the server down at once (the next
//!   request would fail the same way, and probes bring it back after `rise`
//!   successes); a timeout, reset or 502/503/504 counts one failure toward
//!   `fall` (one slow query must not take a server out).
//! - Passive marks never take the last routable server out while its last
//!   active probe passed ([`Health::observe_as`]), except a refused
//!   connection: a client whose requests break every server (a request
//!   that crashes Chroma's handler) cannot empty the rotation; only
//!   failing probes take that server out.
//! - Draining (operator flag) makes the state [`HealthState::Draining`] and
//!   the server unroutable whatever the probes say; probes go on meanwhile,
//!   so undraining returns to the probed state at once.
//!
//! Every change of the routable state is published on a
//! [`tokio::sync::watch`] channel ([`Health::subscribe`]) and, when the
//! server belongs to a [`Backends`](super::Backends) set, bumps the set's
//! change counter.

use std::fmt;
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use super::classify::{classify, AttemptClass};
use super::client::{TransportError, UpstreamResponse};
use crate::config::HealthConfig;

/// Routable state of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthState {
    /// Not probed yet; not routable.
    Unknown,
    /// Routable.
    Healthy,
    /// Failing; not routable.
    Unhealthy,
    /// Taken out by the operator; not routable whatever the probes say.
    Draining,
}

impl HealthState {
    /// Lower-case name for /status and logs (`unknown`, `healthy`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Unknown => "unknown",
            HealthState::Healthy => "healthy",
            HealthState::Unhealthy => "unhealthy",
            HealthState::Draining => "draining",
        }
    }

    /// Whether requests may be routed to a server in this state.
    pub fn is_healthy(self) -> bool {
        self == HealthState::Healthy
    }
}

impl fmt::Display for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Rise and fall thresholds, both at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Consecutive probe successes that make an unhealthy server healthy.
    pub rise: u32,
    /// Consecutive failures that make a healthy server unhealthy.
    pub fall: u32,
}

impl Thresholds {
    /// Thresholds with both values raised to at least 1.
    pub fn new(rise: u32, fall: u32) -> Self {
        Thresholds {
            rise: rise.max(1),
            fall: fall.max(1),
        }
    }

    /// The thresholds the configuration asks for.
    pub fn from_config(config: &HealthConfig) -> Self {
        Thresholds::new(config.rise_threshold, config.failure_threshold)
    }
}

/// A consistent copy of a server's health, for /status and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthSnapshot {
    /// Effective state.
    pub state: HealthState,
    /// `state == Healthy`.
    pub healthy: bool,
    /// Whether the operator drain flag is set.
    pub draining: bool,
    /// Failures (probes and requests) since the last success.
    pub consecutive_failures: u32,
    /// Successful probes since the last failure.
    pub consecutive_successes: u32,
    /// Unix time (seconds, fractional) of the last completed probe.
    pub last_health_check: Option<f64>,
    /// Live requests observed.
    pub total_requests: u64,
    /// Live requests that got an answer.
    pub successes: u64,
    /// `successes / total_requests`, 1.0 before any request.
    pub success_rate: f64,
    /// The reason of the last failure, if any.
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probed {
    Unknown,
    Up,
    Down,
}

#[derive(Debug)]
struct Inner {
    probed: Probed,
    draining: bool,
    consecutive_failures: u32,
    consecutive_successes: u32,
    last_check: Option<SystemTime>,
    total_requests: u64,
    successes: u64,
    last_error: Option<String>,
    /// Whether the last active probe succeeded.
    last_probe_ok: bool,
}

impl Inner {
    fn effective(&self) -> HealthState {
        if self.draining {
            return HealthState::Draining;
        }
        match self.probed {
            Probed::Unknown => HealthState::Unknown,
            Probed::Up => HealthState::Healthy,
            Probed::Down => HealthState::Unhealthy,
        }
    }

    fn success(&mut self, from_probe: bool, rise: u32) {
        self.consecutive_failures = 0;
        if !from_probe {
            return;
        }
        self.consecutive_successes = self.consecutive_successes.saturating_add(1);
        match self.probed {
            Probed::Unknown => self.probed = Probed::Up,
            Probed::Down if self.consecutive_successes >= rise => self.probed = Probed::Up,
            _ => {}
        }
    }

    fn failure(&mut self, reason: String, fall: u32) {
        self.consecutive_successes = 0;
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.last_error = Some(reason);
        match self.probed {
            Probed::Unknown => self.probed = Probed::Down,
            Probed::Up if self.consecutive_failures >= fall => self.probed = Probed::Down,
            _ => {}
        }
    }

    /// Whether a passive mark must leave the server routable: it is the
    /// last one (`sole`), and its active probe says it is up.
    fn kept_by_probe(&self, sole: bool) -> bool {
        sole && self.probed == Probed::Up && self.last_probe_ok && !self.draining
    }
}

/// Health of one server. Thread-safe; share it by reference or `Arc`.
pub struct Health {
    name: String,
    thresholds: Thresholds,
    inner: Mutex<Inner>,
    state_tx: watch::Sender<HealthState>,
    group: Option<watch::Sender<u64>>,
}

impl fmt::Debug for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Health")
            .field("name", &self.name)
            .field("thresholds", &self.thresholds)
            .field("state", &self.state())
            .finish()
    }
}

impl Health {
    /// A server in state `Unknown` with no history.
    pub fn new(name: impl Into<String>, thresholds: Thresholds) -> Self {
        Self::build(name.into(), thresholds, None)
    }

    /// Like [`Health::new`], and every state change also increments `group`
    /// (the change counter of a set of servers).
    pub fn with_group(
        name: impl Into<String>,
        thresholds: Thresholds,
        group: watch::Sender<u64>,
    ) -> Self {
        Self::build(name.into(), thresholds, Some(group))
    }

    fn build(name: String, thresholds: Thresholds, group: Option<watch::Sender<u64>>) -> Self {
        let (state_tx, _) = watch::channel(HealthState::Unknown);
        Health {
            name,
            thresholds: Thresholds::new(thresholds.rise, thresholds.fall),
            inner: Mutex::new(Inner {
                probed: Probed::Unknown,
                last_probe_ok: false,
                draining: false,
                consecutive_failures: 0,
                consecutive_successes: 0,
                last_check: None,
                total_requests: 0,
                successes: 0,
                last_error: None,
            }),
            state_tx,
            group,
        }
    }

    /// The server's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The thresholds in force.
    pub fn thresholds(&self) -> Thresholds {
        self.thresholds
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent counters (every
        // update is a few plain assignments), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `f` and publishes the effective state if it changed. The
    /// publication happens under the lock so subscribers see changes in order.
    fn update(&self, f: impl FnOnce(&mut Inner)) {
        let mut inner = self.lock();
        let before = inner.effective();
        f(&mut inner);
        let after = inner.effective();
        if before != after {
            match after {
                HealthState::Healthy => {
                    tracing::info!(server = %self.name, from = %before, "server is healthy")
                }
                _ => tracing::warn!(
                    server = %self.name,
                    from = %before,
                    to = %after,
                    reason = inner.last_error.as_deref().unwrap_or(""),
                    "server is not routable"
                ),
            }
            self.state_tx.send_replace(after);
            if let Some(group) = &self.group {
                group.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    }

    /// Current effective state.
    pub fn state(&self) -> HealthState {
        *self.state_tx.borrow()
    }

    /// Whether requests may be routed to this server now.
    pub fn is_healthy(&self) -> bool {
        self.state().is_healthy()
    }

    /// Whether the operator drain flag is set.
    pub fn is_draining(&self) -> bool {
        self.lock().draining
    }

    /// A receiver that sees every change of the effective state; its
    /// current value is the current state.
    pub fn subscribe(&self) -> watch::Receiver<HealthState> {
        self.state_tx.subscribe()
    }

    /// Resolves once the server is healthy (at once if it already is).
    pub async fn wait_healthy(&self) {
        let mut rx = self.subscribe();
        // The sender lives in `self`, which outlives this call: the wait can
        // only end by the predicate holding.
        let _ = rx.wait_for(|s| s.is_healthy()).await;
    }

    /// Records a successful heartbeat probe.
    pub fn record_probe_success(&self) {
        let rise = self.thresholds.rise;
        self.update(|i| {
            i.last_check = Some(SystemTime::now());
            i.last_probe_ok = true;
            i.success(true, rise);
        });
    }

    /// Records a failed heartbeat probe with its reason.
    pub fn record_probe_failure(&self, reason: &str) {
        let fall = self.thresholds.fall;
        self.update(|i| {
            i.last_check = Some(SystemTime::now());
            i.last_probe_ok = false;
            i.failure(format!("probe: {reason}"), fall);
        });
    }

    /// Records a live request that got an answer: counts it, and resets the
    /// consecutive-failure count (does not count toward rise).
    pub fn mark_success(&self) {
        let rise = self.thresholds.rise;
        self.update(|i| {
            i.total_requests += 1;
            i.successes += 1;
            i.success(false, rise);
        });
    }

    /// Records a live request that failed transiently: counts it, and counts
    /// one failure toward `fall`.
    pub fn mark_failure(&self, reason: &str) {
        self.passive_failure(reason, false, false);
    }

    /// Like [`mark_failure`](Self::mark_failure), for a server that is the
    /// only routable one (`sole`): counted, but it stays routable while its
    /// last probe passed.
    pub fn mark_failure_as(&self, reason: &str, sole: bool) {
        self.passive_failure(reason, false, sole);
    }

    /// Records a live request that proved the server down: counts it and
    /// makes the server unhealthy at once; `rise` successful probes bring it
    /// back.
    pub fn mark_down(&self, reason: &str) {
        self.passive_failure(reason, true, false);
    }

    /// A failed live request: `down` takes the server out at once, else it
    /// counts toward `fall`; with `sole` (no other server is routable) a
    /// server whose last probe passed stays routable whatever live
    /// requests say: only its probes take it out then, so no client's
    /// requests can empty the rotation.
    fn passive_failure(&self, reason: &str, down: bool, sole: bool) {
        let fall = self.thresholds.fall;
        self.update(|i| {
            i.total_requests += 1;
            let keep = i.kept_by_probe(sole);
            let was = i.probed;
            i.failure(reason.to_string(), fall);
            if down && !keep {
                i.probed = Probed::Down;
            }
            if keep {
                i.probed = was;
            }
        });
    }

    /// Records the outcome of a live request by the passive policy in the
    /// module docs, and returns its class.
    pub fn observe(&self, result: &Result<UpstreamResponse, TransportError>) -> AttemptClass {
        self.observe_as(result, false)
    }

    /// Like [`observe`](Self::observe), for a server that is the only
    /// routable one (`sole`): a failure a request could cause (a broken
    /// connection, a timeout, an answer that is not Chroma's) is counted,
    /// but does not take it out while its active probe passes. A refused
    /// connection still does.
    pub fn observe_as(
        &self,
        result: &Result<UpstreamResponse, TransportError>,
        sole: bool,
    ) -> AttemptClass {
        let class = classify(result);
        match (class, result) {
            (AttemptClass::Answer, _) => self.mark_success(),
            (_, Err(TransportError::NotLeading { .. })) => {}
            // No request can make a server refuse connections: that one is
            // down, sole or not.
            (_, Err(e @ TransportError::Connect { .. })) => {
                self.passive_failure(&e.to_string(), true, false)
            }
            (_, Err(e)) => self.passive_failure(&e.to_string(), false, sole),
            (_, Ok(r)) => self.passive_failure(
                &format!("answered {} without Chroma error JSON", r.status),
                false,
                sole,
            ),
        }
        class
    }

    /// Sets or clears the operator drain flag.
    pub fn set_draining(&self, draining: bool) {
        self.update(|i| {
            i.draining = draining;
            if draining {
                i.last_error = Some("drained by operator".to_string());
            }
        });
    }

    /// A consistent copy of the counters and state.
    pub fn snapshot(&self) -> HealthSnapshot {
        let i = self.lock();
        let state = i.effective();
        HealthSnapshot {
            state,
            healthy: state.is_healthy(),
            draining: i.draining,
            consecutive_failures: i.consecutive_failures,
            consecutive_successes: i.consecutive_successes,
            last_health_check: i
                .last_check
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs_f64()),
            total_requests: i.total_requests,
            successes: i.successes,
            success_rate: if i.total_requests == 0 {
                1.0
            } else {
                i.successes as f64 / i.total_requests as f64
            },
            last_error: i.last_error.clone(),
        }
    }

    /// Live requests that got an answer / live requests; 1.0 before any.
    pub fn success_rate(&self) -> f64 {
        self.snapshot().success_rate
    }

    /// Unix time (seconds) of the last completed probe, if any.
    pub fn last_health_check(&self) -> Option<f64> {
        self.snapshot().last_health_check
    }

    /// Failures since the last success.
    pub fn consecutive_failures(&self) -> u32 {
        self.lock().consecutive_failures
    }
}

#[cfg(test)]
mod tests;
