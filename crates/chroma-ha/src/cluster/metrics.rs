//! The cluster's metrics, registered next to the gateway's own.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use std::time::Duration;

/// Leadership, forwarding and holding, as Prometheus metrics.
#[derive(Debug, Clone)]
pub struct ClusterMetrics {
    leader_changes: IntCounter,
    is_leader: IntGauge,
    epoch: IntGauge,
    forwards: IntCounterVec,
    held: IntCounterVec,
    renew: Histogram,
    renew_failures: IntCounter,
    gate_held: IntCounter,
}

const NS: &str = "chroma_ha";

impl ClusterMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, String> {
        fn reg<M: prometheus::core::Collector + Clone + 'static>(
            r: &Registry,
            m: Result<M, prometheus::Error>,
        ) -> Result<M, String> {
            let m = m.map_err(|e| e.to_string())?;
            r.register(Box::new(m.clone())).map_err(|e| e.to_string())?;
            Ok(m)
        }
        let opts = |name: &str, help: &str| Opts::new(name, help).namespace(NS);
        let buckets = vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        ];
        Ok(ClusterMetrics {
            leader_changes: reg(
                registry,
                IntCounter::with_opts(opts(
                    "leader_changes_total",
                    "New leader terms this gateway saw begin (its own included)",
                )),
            )?,
            is_leader: reg(
                registry,
                IntGauge::with_opts(opts(
                    "is_leader",
                    "1 while this gateway leads the shared log and its core runs",
                )),
            )?,
            epoch: reg(
                registry,
                IntGauge::with_opts(opts("leader_epoch", "The leader's epoch as last seen")),
            )?,
            forwards: reg(
                registry,
                IntCounterVec::new(
                    opts(
                        "forwarded_requests_total",
                        "Requests a follower forwarded to the leader, by outcome",
                    ),
                    &["outcome"],
                ),
            )?,
            held: reg(
                registry,
                IntCounterVec::new(
                    opts(
                        "held_requests_total",
                        "Requests held while no leader was known, by outcome",
                    ),
                    &["outcome"],
                ),
            )?,
            renew: reg(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "lease_renew_duration_seconds",
                        "Duration of one claim or renewal of the leader lease",
                    )
                    .namespace(NS)
                    .buckets(buckets),
                ),
            )?,
            renew_failures: reg(
                registry,
                IntCounter::with_opts(opts(
                    "lease_renew_failures_total",
                    "Claims or renewals of the lease that PostgreSQL did not answer",
                )),
            )?,
            gate_held: reg(
                registry,
                IntCounter::with_opts(opts(
                    "lease_gate_held_total",
                    "Requests to Chroma that found this gateway without a valid lease and were held \
                     back (sent only once it leads again, or never)",
                )),
            )?,
        })
    }

    /// A new term began.
    pub fn leader_changed(&self, epoch: u64) {
        self.leader_changes.inc();
        self.epoch.set(epoch as i64);
    }

    /// Whether this gateway now leads with its core running.
    pub fn set_leading(&self, leading: bool) {
        self.is_leader.set(i64::from(leading));
    }

    /// One forward, `outcome` one of `answered`, `unreachable`, `failed`.
    pub fn forwarded(&self, outcome: &str) {
        self.forwards.with_label_values(&[outcome]).inc();
    }

    /// One held request, `outcome` one of `served`, `timed_out`.
    pub fn held(&self, outcome: &str) {
        self.held.with_label_values(&[outcome]).inc();
    }

    /// One claim answered after `took`.
    pub fn renewed(&self, took: Duration) {
        self.renew.observe(took.as_secs_f64());
    }

    /// One claim unanswered.
    pub fn renew_failed(&self) {
        self.renew_failures.inc();
    }

    /// The gate's held requests so far (the counter follows the total).
    pub fn set_gate_held(&self, total: u64) {
        let seen = self.gate_held.get();
        if total > seen {
            self.gate_held.inc_by(total - seen);
        }
    }
}
