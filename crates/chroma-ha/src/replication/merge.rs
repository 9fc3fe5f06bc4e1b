//! Merged catch-up: while a server is behind, its applier sends committed
//! record writes of one collection that may start together as one request.
//!
//! Why it keeps the rules (docs/ARCHITECTURE.md, "Merged catch-up"):
//! - **Order and repeats.** Only entries that one plan of the
//!   [`Window`](super::window::Window) starts are grouped; each of them
//!   passed the order and repeat rules on its own, against every earlier
//!   unfinished entry, so no two of them conflict and none waits for a
//!   commit. Sending them in one request reorders nothing that conflicts.
//! - **Exactly once.** Every entry keeps its own slot: it is finished, and
//!   made durable as applied, per entry, only once the request that carried
//!   it succeeded. A crash before that repeats the entries, which for
//!   adds (first record kept), upserts and deletes by id with disjoint ids
//!   is what a repeat of each alone would do.
//! - **Per-entry effects.** Parts of one request have pairwise disjoint ids
//!   ([`Merging`] checks it, besides the footprints), the same fields and the
//!   same encoding ([`crate::chroma::merge`]): an add keeps each id's only
//!   record, no upsert of an id can be overtaken inside the request.
//! - **Errors per entry.** A merged request Chroma refuses is split in
//!   halves and each half sent again, down to single entries, which go
//!   through the ordinary replay path: only the entry Chroma refuses alone is
//!   dead-lettered (see [`super::apply_merged`]).
//! - Only replays merge: an entry executed for its client, or one whose
//!   client still waits for an answer, is always a request of its own.

use super::window::{Batcher, Work};
use super::Replicator;
use crate::backend::Backend;
use crate::chroma::merge::MergeKey;
use prometheus::core::Collector;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Records per merged request when the server's `max_batch_size` cannot be
/// read (Chroma 1.5.9 answers 5461).
pub(crate) const FALLBACK_MAX_BATCH: usize = 1000;

/// The longest an applier waits for its server's `max_batch_size`.
pub(crate) const MAX_BATCH_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// How soon a failed `max_batch_size` read is tried again.
pub(crate) const MAX_BATCH_RETRY: Duration = Duration::from_secs(60);

/// Reads `max_batch_size` from the server's `GET /api/v2/pre-flight-checks`.
pub(crate) async fn max_batch_size(backend: &Backend) -> Result<usize, String> {
    let response = backend
        .client()
        .send(
            http::Method::GET,
            "/api/v2/pre-flight-checks",
            http::HeaderMap::new(),
            bytes::Bytes::new(),
        )
        .await
        .map_err(|e| format!("GET /api/v2/pre-flight-checks: {e}"))?;
    if !response.status.is_success() {
        return Err(format!(
            "GET /api/v2/pre-flight-checks answered {}",
            response.status
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(&response.body)
        .map_err(|e| format!("GET /api/v2/pre-flight-checks: not JSON: {e}"))?;
    value
        .get("max_batch_size")
        .and_then(serde_json::Value::as_u64)
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| *n >= 1)
        .ok_or_else(|| "GET /api/v2/pre-flight-checks has no max_batch_size".to_string())
}

/// The limits of one merged request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Most records (ids) in one request: the server's `max_batch_size`.
    pub records: usize,
    /// Most body bytes: the gateway's own `max_body_bytes`, so a merged
    /// request is never larger than one a client may send.
    pub bytes: usize,
}

struct Group {
    lsns: Vec<u64>,
    records: usize,
    bytes: usize,
    ids: HashSet<String>,
}

/// The [`Batcher`] of a server catching up: replays of one [`MergeKey`]
/// with disjoint ids, within [`Limits`], share a request.
pub(crate) struct Merging<'a> {
    /// Whether a client still waits for the entry's answer.
    has_waiter: Box<dyn Fn(u64) -> bool + 'a>,
    limits: Limits,
    /// Entries that must go alone (their merged task panicked).
    alone: &'a HashSet<u64>,
    groups: Vec<Group>,
    /// The group each key's next part may join.
    open: HashMap<MergeKey, usize>,
}

impl<'a> Merging<'a> {
    /// A batcher for one plan of server entries of `rep`.
    pub fn new(rep: &'a Replicator, limits: Limits, alone: &'a HashSet<u64>) -> Self {
        Self::with_waiters(move |lsn| rep.ledger.has_waiter(lsn), limits, alone)
    }

    /// A batcher for one plan; `has_waiter` says whether a client still
    /// waits for an entry's answer.
    pub fn with_waiters(
        has_waiter: impl Fn(u64) -> bool + 'a,
        limits: Limits,
        alone: &'a HashSet<u64>,
    ) -> Self {
        Merging {
            has_waiter: Box::new(has_waiter),
            limits,
            alone,
            groups: Vec::new(),
            open: HashMap::new(),
        }
    }

    /// The requests of the plan: the entries of each, in log order.
    pub fn into_groups(self) -> Vec<Vec<u64>> {
        self.groups.into_iter().map(|g| g.lsns).collect()
    }

    fn mergeable(&self, lsn: u64) -> bool {
        // A client still waiting for this entry gets its own answer.
        !self.alone.contains(&lsn) && !(self.has_waiter)(lsn)
    }
}

impl Batcher for Merging<'_> {
    fn joins(&mut self, lsn: u64, work: &Work) -> bool {
        if !self.mergeable(lsn) {
            return false;
        }
        let Some(part) = work.merge_part() else {
            return false;
        };
        let Some(&g) = self.open.get(part.key()) else {
            return false;
        };
        let group = &mut self.groups[g];
        let fits = group.records + part.ids().len() <= self.limits.records
            && group.bytes + part.body_len() <= self.limits.bytes;
        if !fits || part.ids().iter().any(|id| group.ids.contains(id)) {
            return false;
        }
        group.lsns.push(lsn);
        group.records += part.ids().len();
        group.bytes += part.body_len();
        group.ids.extend(part.ids().iter().cloned());
        true
    }

    fn started(&mut self, lsn: u64, work: &Work) {
        let index = self.groups.len();
        let part = work.merge_part().filter(|_| self.mergeable(lsn));
        let mut group = Group {
            lsns: vec![lsn],
            records: 0,
            bytes: 0,
            ids: HashSet::new(),
        };
        if let Some(part) = part {
            group.records = part.ids().len();
            group.bytes = part.body_len();
            group.ids.extend(part.ids().iter().cloned());
            self.open.insert(part.key().clone(), index);
        }
        self.groups.push(group);
    }
}

/// The merge metrics, per server.
#[derive(Debug, Clone)]
pub struct MergeMetrics {
    requests: IntCounterVec,
    entries: HistogramVec,
    splits: IntCounterVec,
}

impl MergeMetrics {
    /// Builds the metrics of `servers`, each at 0 (not registered: the
    /// gateway renders them with its own at each scrape).
    pub fn new<'a>(servers: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let opts = |name: &str, help: &str| Opts::new(name, help).namespace("chroma_ha");
        let buckets = vec![2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];
        let metrics = MergeMetrics {
            requests: IntCounterVec::new(
                opts(
                    "applier_merged_requests_total",
                    "Merged requests a catching-up server applied (each carried 2 or more entries)",
                ),
                &["server"],
            )
            .map_err(|e| e.to_string())?,
            entries: HistogramVec::new(
                HistogramOpts::new(
                    "applier_merged_entries",
                    "Entries per merged request a catching-up server applied",
                )
                .namespace("chroma_ha")
                .buckets(buckets),
                &["server"],
            )
            .map_err(|e| e.to_string())?,
            splits: IntCounterVec::new(
                opts(
                    "applier_merge_splits_total",
                    "Merged requests the server refused or kept failing, split in halves to \
                     find the entry at fault",
                ),
                &["server"],
            )
            .map_err(|e| e.to_string())?,
        };
        for server in servers {
            metrics.requests.with_label_values(&[server]);
            metrics.entries.with_label_values(&[server]);
            metrics.splits.with_label_values(&[server]);
        }
        Ok(metrics)
    }

    /// A merged request of `entries` entries was applied on `server`.
    pub fn applied(&self, server: &str, entries: usize) {
        self.requests.with_label_values(&[server]).inc();
        self.entries
            .with_label_values(&[server])
            .observe(entries as f64);
    }

    /// A merged request on `server` was split.
    pub fn split(&self, server: &str) {
        self.splits.with_label_values(&[server]).inc();
    }

    /// Merged requests applied on `server` so far.
    pub fn requests(&self, server: &str) -> u64 {
        self.requests.with_label_values(&[server]).get()
    }

    /// The metrics as Prometheus families, for rendering.
    pub fn families(&self) -> Vec<prometheus::proto::MetricFamily> {
        let mut out = self.requests.collect();
        out.extend(self.entries.collect());
        out.extend(self.splits.collect());
        // A family without samples would fail the whole text encoding.
        out.retain(|family| !family.get_metric().is_empty());
        out
    }
}

#[cfg(test)]
#[path = "merge_tests.rs"]
mod tests;
