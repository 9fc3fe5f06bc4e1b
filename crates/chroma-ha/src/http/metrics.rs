//! Prometheus metrics at `/metrics`. Request metrics are recorded as
//! requests pass; log and replication figures are read from the core when
//! scraped.

use super::AppState;
use crate::chroma::Class;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Every metric of the gateway.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    unknown_routes: IntCounterVec,
    fsync: Histogram,
    wal_appends: IntCounter,
    wal_append_errors: IntCounter,
    wal_used: IntGauge,
    wal_max: IntGauge,
    wal_first: IntGauge,
    wal_last: IntGauge,
    wal_segments: IntGauge,
    undecided: IntGauge,
    healthy: IntGaugeVec,
    applied_lsn: IntGaugeVec,
    lag_entries: IntGaugeVec,
    lag_seconds: GaugeVec,
    retries: IntCounterVec,
    applied: IntCounterVec,
    dead_letters: IntGaugeVec,
    history_incomplete: IntGaugeVec,
    applied_commits: IntCounter,
    applied_commit_requests: IntCounter,
    applied_commit_seconds: prometheus::Counter,
    applied_commit_failures: IntCounter,
    dead_letters_full: IntGauge,
    stopped_by_dead_letters: IntGaugeVec,
    /// Last values of counters read from the core, to add only the growth.
    seen: Mutex<HashMap<String, u64>>,
    /// Client requests answered, by class (read, write, passthrough).
    answered: [AtomicU64; 3],
}

const NS: &str = "chroma_ha";

fn class_index(class: Class) -> usize {
    match class {
        Class::Read => 0,
        Class::Write => 1,
        Class::Passthrough => 2,
    }
}

fn class_label(class: Class) -> &'static str {
    match class {
        Class::Read => "read",
        Class::Write => "write",
        Class::Passthrough => "passthrough",
    }
}

/// Builds a metric and registers it; names are fixed, so failure is a bug
/// caught by the tests.
macro_rules! register {
    ($registry:expr, $metric:expr) => {{
        let metric = $metric.map_err(|e| e.to_string())?;
        $registry
            .register(Box::new(metric.clone()))
            .map_err(|e| e.to_string())?;
        metric
    }};
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, String> {
        let r = Registry::new();
        let opts = |name: &str, help: &str| Opts::new(name, help).namespace(NS);
        let buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let hopts = |name: &str, help: &str| {
            HistogramOpts::new(name, help)
                .namespace(NS)
                .buckets(buckets.clone())
        };
        Ok(Metrics {
            requests: register!(
                r,
                IntCounterVec::new(
                    opts(
                        "requests_total",
                        "Client requests by route template, class, answering server and status"
                    ),
                    &["route", "class", "server", "status"]
                )
            ),
            latency: register!(
                r,
                HistogramVec::new(
                    hopts(
                        "request_duration_seconds",
                        "Client request latency by route class and server"
                    ),
                    &["class", "server"]
                )
            ),
            unknown_routes: register!(
                r,
                IntCounterVec::new(
                    opts(
                        "unknown_routes_total",
                        "Requests to paths the route table does not know, passed through unlogged"
                    ),
                    &["shape"]
                )
            ),
            fsync: register!(
                r,
                Histogram::with_opts(hopts(
                    "wal_fsync_duration_seconds",
                    "Duration of the log's durability step: an fsync of the file log, an append \
                     transaction of the PostgreSQL log"
                ))
            ),
            wal_appends: register!(
                r,
                IntCounter::with_opts(opts("wal_appends_total", "Records made durable in the log"))
            ),
            wal_append_errors: register!(
                r,
                IntCounter::with_opts(opts("wal_append_errors_total", "Log appends that failed"))
            ),
            wal_used: register!(
                r,
                IntGauge::with_opts(opts("wal_used_bytes", "Bytes the log uses"))
            ),
            wal_max: register!(
                r,
                IntGauge::with_opts(opts("wal_max_bytes", "The log's size cap"))
            ),
            wal_first: register!(
                r,
                IntGauge::with_opts(opts("wal_first_lsn", "First LSN held"))
            ),
            wal_last: register!(
                r,
                IntGauge::with_opts(opts("wal_last_lsn", "Last durable LSN"))
            ),
            wal_segments: register!(
                r,
                IntGauge::with_opts(opts("wal_segments", "Segment files"))
            ),
            undecided: register!(
                r,
                IntGauge::with_opts(opts(
                    "undecided_entries",
                    "Entries waiting for their executor"
                ))
            ),
            healthy: register!(
                r,
                IntGaugeVec::new(
                    opts("server_healthy", "1 if the server takes requests"),
                    &["server"]
                )
            ),
            applied_lsn: register!(
                r,
                IntGaugeVec::new(
                    opts(
                        "server_applied_lsn",
                        "Every record up to this LSN is applied on the server"
                    ),
                    &["server"]
                )
            ),
            lag_entries: register!(
                r,
                IntGaugeVec::new(
                    opts(
                        "server_lag_entries",
                        "Log records the server has not applied"
                    ),
                    &["server"]
                )
            ),
            lag_seconds: register!(
                r,
                GaugeVec::new(
                    opts(
                        "server_lag_seconds",
                        "Age of the oldest entry the server has not applied"
                    ),
                    &["server"]
                )
            ),
            retries: register!(
                r,
                IntCounterVec::new(
                    opts(
                        "applier_retries_total",
                        "Transient failures retried by the server's applier"
                    ),
                    &["server"]
                )
            ),
            applied: register!(
                r,
                IntCounterVec::new(
                    opts(
                        "applier_applied_total",
                        "Entries applied by the server's applier"
                    ),
                    &["server"]
                )
            ),
            dead_letters: register!(
                r,
                IntGaugeVec::new(
                    opts("dead_letters", "Dead letters of the server"),
                    &["server"]
                )
            ),
            history_incomplete: register!(
                r,
                IntGaugeVec::new(
                    opts(
                        "server_history_incomplete",
                        "1 if the server joined after the log dropped part of its history"
                    ),
                    &["server"]
                )
            ),
            dead_letters_full: register!(
                r,
                IntGauge::with_opts(opts(
                    "dead_letters_full",
                    "1 when the dead-letter list is at replication.max_dead_letters"
                ))
            ),
            stopped_by_dead_letters: register!(
                r,
                IntGaugeVec::new(
                    opts(
                        "server_stopped_by_dead_letters",
                        "1 while the server's applier holds a refused entry because the dead-letter list is full"
                    ),
                    &["server"]
                )
            ),
            applied_commits: register!(
                r,
                IntCounter::with_opts(opts(
                    "applied_state_commits_total",
                    "Durable writes of the servers' applied state"
                ))
            ),
            applied_commit_requests: register!(
                r,
                IntCounter::with_opts(opts(
                    "applied_state_requests_total",
                    "Appliers' requests those writes covered (group commit)"
                ))
            ),
            applied_commit_seconds: register!(
                r,
                prometheus::Counter::with_opts(opts(
                    "applied_state_commit_seconds_total",
                    "Time spent making the applied state durable"
                ))
            ),
            applied_commit_failures: register!(
                r,
                IntCounter::with_opts(opts(
                    "applied_state_commit_failures_total",
                    "Writes of the applied state that failed"
                ))
            ),
            registry: r,
            seen: Mutex::new(HashMap::new()),
            answered: Default::default(),
        })
    }

    /// Records one client request.
    pub fn request(&self, route: &str, class: Class, server: &str, status: u16, took: Duration) {
        self.answered[class_index(class)].fetch_add(1, Ordering::Relaxed);
        let class = class_label(class);
        self.requests
            .with_label_values(&[route, class, server, &status.to_string()])
            .inc();
        self.latency
            .with_label_values(&[class, server])
            .observe(took.as_secs_f64());
    }

    /// Client requests of `class` answered since the start (any status).
    pub fn answered(&self, class: Class) -> u64 {
        self.answered[class_index(class)].load(Ordering::Relaxed)
    }

    /// Counts a request to an unknown route shape.
    pub fn unknown_route(&self, shape: &str) {
        self.unknown_routes.with_label_values(&[shape]).inc();
    }

    /// Records one log fsync.
    pub fn observe_fsync(&self, took: Duration) {
        self.fsync.observe(took.as_secs_f64());
    }

    /// Adds to `counter` what `total` grew since the last scrape.
    fn advance(&self, key: String, total: u64, counter: &IntCounter) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let last = seen.entry(key).or_insert(0);
        if total > *last {
            counter.inc_by(total - *last);
            *last = total;
        }
    }

    /// Reads the core's figures and renders everything as Prometheus text.
    pub fn render(&self, app: &AppState) -> Vec<u8> {
        let rep = &app.rep;
        let stats = rep.wal().stats();
        self.advance("wal_appends".into(), stats.appends, &self.wal_appends);
        self.advance(
            "wal_append_errors".into(),
            stats.append_errors,
            &self.wal_append_errors,
        );
        self.wal_used.set(stats.used_bytes as i64);
        self.wal_max
            .set(stats.max_bytes.min(i64::MAX as u64) as i64);
        self.wal_first.set(stats.first_lsn as i64);
        self.wal_last.set(stats.last_lsn as i64);
        self.wal_segments.set(stats.segments as i64);
        self.undecided.set(rep.undecided() as i64);
        let applied = rep.applied().stats();
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        self.advance(
            "applied_commits".into(),
            load(&applied.commits),
            &self.applied_commits,
        );
        self.advance(
            "applied_requests".into(),
            load(&applied.requests),
            &self.applied_commit_requests,
        );
        self.advance(
            "applied_failures".into(),
            load(&applied.failures),
            &self.applied_commit_failures,
        );
        let micros = load(&applied.micros) as f64 / 1e6;
        let grown = micros - self.applied_commit_seconds.get();
        if grown > 0.0 {
            self.applied_commit_seconds.inc_by(grown);
        }
        let now_ms = crate::replication::progress::now_ms();
        for (index, backend) in rep.backends().all().iter().enumerate() {
            let name = backend.name();
            let progress = rep.progress(index);
            self.healthy
                .with_label_values(&[name])
                .set(i64::from(backend.health().is_healthy()));
            self.applied_lsn
                .with_label_values(&[name])
                .set(progress.applied_upto as i64);
            self.lag_entries
                .with_label_values(&[name])
                .set(rep.lag_entries(index) as i64);
            self.lag_seconds.with_label_values(&[name]).set(
                progress
                    .oldest_held_ms
                    .map_or(0.0, |t| now_ms.saturating_sub(t) as f64 / 1000.0),
            );
            self.advance(
                format!("retries/{name}"),
                progress.retries_total,
                &self.retries.with_label_values(&[name]),
            );
            self.advance(
                format!("applied/{name}"),
                progress.applied_total,
                &self.applied.with_label_values(&[name]),
            );
            self.dead_letters
                .with_label_values(&[name])
                .set(rep.dead_letters().count_for(name) as i64);
            self.history_incomplete
                .with_label_values(&[name])
                .set(i64::from(rep.is_incomplete(index)));
            self.stopped_by_dead_letters
                .with_label_values(&[name])
                .set(i64::from(
                    progress.state == crate::replication::progress::ApplierState::DeadLettersFull,
                ));
        }
        self.dead_letters_full
            .set(i64::from(rep.dead_letters().is_full()));
        self.encode_with(rep.merge_metrics().families())
    }

    /// The registry, for metrics kept elsewhere (the cluster's).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Renders what is recorded as Prometheus text, without reading the
    /// replication core (a follower has none running).
    pub fn encode(&self) -> Vec<u8> {
        self.encode_with(Vec::new())
    }

    /// Renders what is recorded plus `extra` families (kept by the core).
    fn encode_with(&self, extra: Vec<prometheus::proto::MetricFamily>) -> Vec<u8> {
        let mut families = self.registry.gather();
        families.extend(extra);
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// `GET /metrics`.
pub async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(&app),
    )
        .into_response()
}
