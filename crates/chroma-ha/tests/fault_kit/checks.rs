//! The checks every fault test ends with: catch-up, every server read
//! directly against the model, bounded unknown outcomes, no dead letters.

use std::time::{Duration, Instant};

use super::verify::{verify, Verification};
use super::workload::{Outcome, WorkloadResult};
use super::{status_now, summary_line, wait_caught_up, Deployment};

pub const CATCH_UP: Duration = Duration::from_secs(60);
/// Bound of every "the workload makes progress" wait.
pub const PROGRESS: Duration = Duration::from_secs(30);

/// How many of a test's writes may end without a verdict (timeout, broken
/// connection, 504, a 5xx other than 503/507): `floor`, or `fraction` of
/// the writes attempted if that is more. Each test's bound is a few times
/// what it was measured to produce (see the `unknown_writes=` figure of
/// its FAULT-SUMMARY line), so a gateway that answers writes with errors
/// that promise nothing fails the test even if it applies them.
#[derive(Debug, Clone, Copy)]
pub struct UnknownBound {
    /// Unknown outcomes allowed whatever the number of writes.
    pub floor: usize,
    /// Share of the writes that may end unknown.
    pub fraction: f64,
}

impl UnknownBound {
    /// How many of `attempted` writes may end unknown.
    pub fn allowed(self, attempted: usize) -> usize {
        self.floor
            .max((attempted as f64 * self.fraction).floor() as usize)
    }
}

/// Tests whose faults break no client connection to the gateway. Measured:
/// 0 unknown writes in each (of 100–330 attempted). A write can still get
/// a 504 if no server answers it within `request_timeout` + 5 s, so at most
/// one per workload task in flight at the fault (4 writers and a creator),
/// or 2 % of the writes.
pub const FEW_UNKNOWN: UnknownBound = UnknownBound {
    floor: 5,
    fraction: 0.02,
};

/// At most one write per workload task (4 writers and a creator) in flight
/// at each of `kills` gateway SIGKILLs.
pub const fn in_flight_at_kills(kills: usize) -> UnknownBound {
    UnknownBound {
        floor: 5 * kills,
        fraction: 0.0,
    }
}

/// How long after a kill a client may still send on a pooled connection
/// to the dead gateway before it has seen that connection close (the
/// request then fails mid-way, without a verdict).
const STALE_CONNECTION_GRACE: Duration = Duration::from_millis(200);

/// Asserts that every write without a verdict was in flight during one of
/// `kills` (from just before a SIGKILL of the gateway to just after it,
/// plus [`STALE_CONNECTION_GRACE`]): only the broken connection may leave a
/// client without a verdict.
pub fn assert_unknown_only_at_kills(
    test: &str,
    result: &WorkloadResult,
    kills: &[(Instant, Instant)],
) {
    let stray: Vec<String> = result
        .writes
        .iter()
        .filter(|w| w.outcome == Outcome::Unknown)
        .filter(|w| {
            !kills
                .iter()
                .any(|(a, b)| w.start <= *b + STALE_CONNECTION_GRACE && w.end >= *a)
        })
        .map(|w| {
            format!(
                "{} {} {} status={:?} err={:?} sent {:.3}s after the start",
                w.who,
                w.kind,
                w.collection,
                w.status,
                w.error,
                w.start.duration_since(result.started).as_secs_f64()
            )
        })
        .collect();
    assert!(
        stray.is_empty(),
        "{test}: writes got no verdict although no gateway kill broke their connection:\n{}",
        stray.join("\n")
    );
}

/// Stops nothing; waits for catch-up, checks every server, prints the
/// summary line, and asserts the invariants shared by all tests, among
/// them that the writes without a verdict are within `unknown`.
#[allow(clippy::too_many_arguments)]
pub fn finish(
    test: &str,
    cluster: &impl Deployment,
    result: &WorkloadResult,
    prefix: &str,
    extra_scopes: &[(&str, &str)],
    failover: Option<Duration>,
    unknown: UnknownBound,
    extra: &str,
) -> Verification {
    let gw = cluster.gw();
    let took = wait_caught_up(&gw, CATCH_UP);
    let v = verify(&cluster.server_urls(), &result.model, prefix, extra_scopes);
    let attempted = result.writes.len();
    let allowed = unknown.allowed(attempted);
    summary_line(
        test,
        result,
        &v,
        failover,
        &format!(
            "unknown_allowed={allowed} catch_up={:.3}s {extra}",
            took.as_secs_f64()
        ),
    );
    eprintln!("{test}: {}", result.describe());
    assert!(
        result.count(Outcome::Acked) > 0,
        "{test}: no write was acknowledged"
    );
    let unknown_writes = result.count(Outcome::Unknown);
    assert!(
        unknown_writes <= allowed,
        "{test}: {unknown_writes} of {attempted} writes got no verdict (allowed {allowed}); first ones:\n{}",
        result.sample(Outcome::Unknown, 10).join("\n")
    );
    assert_eq!(
        v.unknown.len(),
        unknown_writes,
        "{test}: every write without a verdict is in the model, to be resolved"
    );
    assert!(
        result.stale_reads.is_empty(),
        "{test}: reads through the gateway missed acknowledged writes:\n{}",
        result.stale_reads.join("\n")
    );
    v.assert_ok(test);
    v
}

/// Asserts that the gateway has no dead letters (replays of committed
/// entries after faults must never look like divergence).
pub fn assert_no_dead_letters(test: &str, cluster: &impl Deployment) {
    let s = status_now(&cluster.gw());
    assert_eq!(
        s["write_ahead_log"]["dead_letters"],
        0,
        "{test}: unexpected dead letters; gateway log:\n{}",
        cluster.gateway_log(&["divergence", "dead"], 20).join("\n")
    );
}

/// Checks the writes sent while PostgreSQL was away (from a second after
/// `down`, so none was mid-commit when it went, to `up`): there were some,
/// each got a 503 within `bound`, and writes were acknowledged again after
/// `up`. Returns the summary's `outage_writes=… slowest_503=…`.
pub fn assert_outage_writes_got_503(
    test: &str,
    result: &WorkloadResult,
    down: Instant,
    up: Instant,
    bound: Duration,
) -> String {
    let during = result.writes_started_in(down + Duration::from_secs(1), up);
    let slowest = during
        .iter()
        .filter(|w| w.outcome == Outcome::Failed)
        .map(|w| w.latency())
        .max()
        .unwrap_or_default();
    eprintln!(
        "{test}: {} writes sent while PostgreSQL was down, slowest failure {:.3}s, statuses {:?}",
        during.len(),
        slowest.as_secs_f64(),
        during
            .iter()
            .map(|w| w.status)
            .collect::<std::collections::BTreeSet<_>>()
    );
    assert!(
        !during.is_empty(),
        "{test}: no write was sent during the outage"
    );
    assert!(
        during
            .iter()
            .all(|w| w.outcome == Outcome::Failed && w.status == Some(503)),
        "{test}: every write during the outage gets a 503"
    );
    assert!(
        slowest < bound,
        "{test}: a write waited {slowest:?} for its 503 (bound {bound:?})"
    );
    let resumed = result
        .writes
        .iter()
        .any(|w| w.start > up && w.outcome == Outcome::Acked);
    assert!(
        resumed,
        "{test}: writes did not resume after PostgreSQL came back"
    );
    format!(
        "outage_writes={} slowest_503={:.3}s",
        during.len(),
        slowest.as_secs_f64()
    )
}
