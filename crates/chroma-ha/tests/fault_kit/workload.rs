//! A concurrent client workload that runs in the background while a test
//! kills things, and records the outcome of every write it sends.
//!
//! - Writers (`spec.writers` tasks) add / upsert / delete records with
//!   explicit embeddings in `spec.collections` collections. Each writer owns
//!   its ids (`<prefix>-w<writer>-<n>`), so the expected final content of an
//!   id depends only on that writer's own sequence of writes.
//! - A creator task (optional) creates new collections mid-load and writes
//!   into each one it was told exists, through the logical id the gateway
//!   returned (this exercises the id mapping across failovers).
//! - Readers (`spec.readers` tasks) count, get and query through the gateway.
//! - After every acknowledged add / upsert a writer sometimes reads its ids
//!   back through the gateway: a 2xx answer that does not show the write is a
//!   stale read (DESIGN.md guarantee 3, strong reads).
//!
//! Every write is classified (see [`Outcome`]) and folded into a [`Model`]:
//! for each id, the set of states it may be in. An acknowledged write fixes
//! the state, a failed one leaves it unchanged (so a failed write must never
//! be visible, not even as an overwrite), an unknown one adds its result to
//! the possibilities.
//!
//! Unknown writes are bounded, not just tolerated: the model keeps each one
//! ([`UnknownWrite`]) with the states its ids were in before and would be in
//! after it, and the writers never touch an id again once a write of it had
//! no verdict. So every unknown write stays observable: afterwards
//! [`super::verify`] resolves it on every server as applied or not applied
//! (the same everywhere, and all of its ids alike), and the tests bound how
//! many there may be.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::{collections_url, DATABASE};

/// What the client was told about a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: the write must be visible (until a later write changes it).
    Acked,
    /// The client was told it failed and the gateway's contract says it was
    /// not applied (4xx: refused by the executor, refusal logged; 503: not
    /// accepted or cancelled; 507: the log is full, nothing written), or the
    /// request never left the client (connection refused): the write must
    /// NEVER be visible.
    Failed,
    /// No verdict: a timeout, a broken connection, 504 (logged, outcome
    /// pending) or any other 5xx, which promises nothing. Either way, but
    /// the same on every server (resolved afterwards, see [`UnknownWrite`]).
    Unknown,
}

/// Classifies an HTTP status of the gateway's answer to a write.
pub fn classify_status(status: u16) -> Outcome {
    match status {
        200..=299 => Outcome::Acked,
        503 | 507 => Outcome::Failed,
        500..=599 => Outcome::Unknown,
        _ => Outcome::Failed,
    }
}

/// Classifies a transport error of a write.
pub fn classify_error(e: &reqwest::Error) -> Outcome {
    if e.is_connect() {
        // Not connected: the request was never sent.
        Outcome::Failed
    } else {
        Outcome::Unknown
    }
}

/// The content of one record as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Content {
    /// The document (unique per write and id).
    pub doc: String,
    /// The metadata object.
    pub meta: Value,
    /// The embedding.
    pub emb: Vec<f32>,
}

/// Must a collection exist?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Its creation was acknowledged.
    Must,
    /// Its creation was refused.
    MustNot,
    /// Its creation had no verdict.
    Maybe,
}

/// What one collection may hold.
#[derive(Debug, Clone)]
pub struct CollModel {
    /// Must it exist?
    pub presence: Presence,
    /// Every id ever written into it, with the states it may be in
    /// (`None` = absent).
    pub ids: BTreeMap<String, Vec<Option<Content>>>,
}

/// The record-level kinds of write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordOp {
    /// `…/add`: keeps an existing record.
    Add,
    /// `…/upsert`.
    Upsert,
    /// `…/delete` by ids.
    Delete,
}

impl RecordOp {
    /// The endpoint name.
    pub fn endpoint(self) -> &'static str {
        match self {
            RecordOp::Add => "add",
            RecordOp::Upsert => "upsert",
            RecordOp::Delete => "delete",
        }
    }
}

/// One id of an [`UnknownWrite`] of records.
#[derive(Debug, Clone)]
pub struct UnknownId {
    /// The record id.
    pub id: String,
    /// The states it may have been in just before the write.
    pub before: Vec<Option<Content>>,
    /// The states it may be in if the write was applied.
    pub after: Vec<Option<Content>>,
    /// A later write that may have been applied touched it: its final
    /// state says nothing about this write.
    pub superseded: bool,
}

/// What a write without a verdict was.
#[derive(Debug, Clone)]
pub enum UnknownKind {
    /// A collection creation (the collection is `UnknownWrite::collection`).
    Create,
    /// A record write.
    Records {
        /// Add, upsert or delete.
        op: RecordOp,
        /// Its ids.
        ids: Vec<UnknownId>,
    },
}

/// A write whose client got no verdict, kept so that it can be resolved on
/// every server afterwards.
#[derive(Debug, Clone)]
pub struct UnknownWrite {
    /// The collection it wrote to (or created).
    pub collection: String,
    /// What it was.
    pub kind: UnknownKind,
}

impl UnknownWrite {
    /// A short description for messages.
    pub fn describe(&self) -> String {
        match &self.kind {
            UnknownKind::Create => format!("create {}", self.collection),
            UnknownKind::Records { op, ids } => format!(
                "{} {} ids {:?}",
                op.endpoint(),
                self.collection,
                ids.iter().map(|i| i.id.as_str()).collect::<Vec<_>>()
            ),
        }
    }
}

/// Everything every collection may hold after the workload.
#[derive(Debug, Clone, Default)]
pub struct Model {
    /// By collection name.
    pub colls: BTreeMap<String, CollModel>,
    /// Outcome of the write that produced each document.
    pub doc_outcome: HashMap<String, Outcome>,
    /// Every write without a verdict, in the order it was noted.
    pub unknown: Vec<UnknownWrite>,
    /// (collection, id) -> the index in `unknown` of the last unknown
    /// write of that id.
    last_unknown: HashMap<(String, String), usize>,
    /// (collection, id) of every id an unknown write touched: the writers
    /// leave them alone from then on, so the unknown write stays observable.
    frozen: HashSet<(String, String)>,
}

impl Model {
    /// Notes a collection creation.
    pub fn note_collection(&mut self, name: &str, outcome: Outcome) {
        let presence = match outcome {
            Outcome::Acked => Presence::Must,
            Outcome::Failed => Presence::MustNot,
            Outcome::Unknown => Presence::Maybe,
        };
        if outcome == Outcome::Unknown {
            self.unknown.push(UnknownWrite {
                collection: name.to_string(),
                kind: UnknownKind::Create,
            });
        }
        self.colls
            .entry(name.to_string())
            .and_modify(|c| c.presence = presence)
            .or_insert(CollModel {
                presence,
                ids: BTreeMap::new(),
            });
    }

    /// Folds a record write into the model.
    pub fn note_write(
        &mut self,
        collection: &str,
        op: RecordOp,
        ids: &[String],
        contents: &[Content],
        outcome: Outcome,
    ) {
        let coll = self
            .colls
            .get_mut(collection)
            .unwrap_or_else(|| panic!("write into unknown collection {collection}"));
        let mut unknown_ids = Vec::new();
        for (k, id) in ids.iter().enumerate() {
            let new = contents.get(k).cloned();
            if let Some(c) = &new {
                self.doc_outcome.insert(c.doc.clone(), outcome);
            }
            let key = (collection.to_string(), id.clone());
            if outcome != Outcome::Failed {
                if let Some(&i) = self.last_unknown.get(&key) {
                    if let UnknownKind::Records { ids, .. } = &mut self.unknown[i].kind {
                        for u in ids.iter_mut().filter(|u| &u.id == id) {
                            u.superseded = true;
                        }
                    }
                }
            }
            let states = coll.ids.entry(id.clone()).or_insert_with(|| vec![None]);
            let mut after: Vec<Option<Content>> = Vec::new();
            for s in states.iter() {
                let a = match op {
                    RecordOp::Add => s.clone().or_else(|| new.clone()),
                    RecordOp::Upsert => new.clone(),
                    RecordOp::Delete => None,
                };
                if !after.contains(&a) {
                    after.push(a);
                }
            }
            match outcome {
                Outcome::Acked => *states = after,
                Outcome::Failed => {}
                Outcome::Unknown => {
                    unknown_ids.push(UnknownId {
                        id: id.clone(),
                        before: states.clone(),
                        after: after.clone(),
                        superseded: false,
                    });
                    self.last_unknown.insert(key.clone(), self.unknown.len());
                    self.frozen.insert(key);
                    states.extend(after)
                }
            }
            let mut dedup: Vec<Option<Content>> = Vec::new();
            for s in states.drain(..) {
                if !dedup.contains(&s) {
                    dedup.push(s);
                }
            }
            *states = dedup;
        }
        if outcome == Outcome::Unknown {
            self.unknown.push(UnknownWrite {
                collection: collection.to_string(),
                kind: UnknownKind::Records {
                    op,
                    ids: unknown_ids,
                },
            });
        }
    }

    /// Ids of `collection` that may currently be present and that no
    /// unknown write touched (those are left alone, see [`UnknownWrite`]).
    fn maybe_present(&self, collection: &str) -> Vec<String> {
        self.colls
            .get(collection)
            .map(|c| {
                c.ids
                    .iter()
                    .filter(|(_, s)| s.iter().any(Option::is_some))
                    .filter(|(id, _)| {
                        !self
                            .frozen
                            .contains(&(collection.to_string(), id.to_string()))
                    })
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// One write as the client saw it.
#[derive(Debug, Clone)]
pub struct WriteOp {
    /// `w<n>` for writers, `creator`, or a test's own label.
    pub who: String,
    /// `add`, `upsert`, `delete` or `create`.
    pub kind: &'static str,
    /// Collection name.
    pub collection: String,
    /// When it was sent.
    pub start: Instant,
    /// When the answer (or error) came.
    pub end: Instant,
    /// The verdict.
    pub outcome: Outcome,
    /// HTTP status, if an answer came.
    pub status: Option<u16>,
    /// `x-chroma-ha-backend`.
    pub backend: Option<String>,
    /// `x-chroma-ha-lsn`.
    pub lsn: Option<u64>,
    /// Error text (transport error or error body).
    pub error: Option<String>,
}

impl WriteOp {
    /// Latency.
    pub fn latency(&self) -> Duration {
        self.end.saturating_duration_since(self.start)
    }
}

/// One read as the client saw it.
#[derive(Debug, Clone)]
pub struct ReadOp {
    /// When it was sent.
    pub start: Instant,
    /// When the answer came.
    pub end: Instant,
    /// HTTP status, if an answer came.
    pub status: Option<u16>,
    /// `x-chroma-ha-backend`.
    pub backend: Option<String>,
    /// Error text.
    pub error: Option<String>,
}

impl ReadOp {
    /// Did it get a 2xx?
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Shape of a workload.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    /// Name prefix of collections and ids (unique per test).
    pub prefix: String,
    /// Writer tasks.
    pub writers: usize,
    /// Fixed collections the writers share.
    pub collections: usize,
    /// Reader tasks.
    pub readers: usize,
    /// Create collections mid-load.
    pub creator: bool,
    /// Ids per write.
    pub batch: usize,
    /// Embedding dimension.
    pub dim: usize,
    /// Pause between two operations of one task.
    pub think: Duration,
    /// Pause after a failed write.
    pub error_pause: Duration,
    /// Client timeout of one request.
    pub client_timeout: Duration,
    /// Seed of the random choices.
    pub seed: u64,
}

impl WorkloadSpec {
    /// A small default workload: 4 writers, 3 collections, 2 readers, a
    /// collection creator.
    pub fn new(prefix: &str) -> Self {
        WorkloadSpec {
            prefix: prefix.to_string(),
            writers: 4,
            collections: 3,
            readers: 2,
            creator: true,
            batch: 4,
            dim: 8,
            think: Duration::from_millis(30),
            error_pause: Duration::from_millis(50),
            client_timeout: Duration::from_secs(20),
            seed: 7,
        }
    }
}

struct Shared {
    /// The gateways, taken in turn by every request.
    gateways: Vec<String>,
    turn: std::sync::atomic::AtomicUsize,
    spec: WorkloadSpec,
    stop: AtomicBool,
    acked: AtomicU64,
    writes: Mutex<Vec<WriteOp>>,
    reads: Mutex<Vec<ReadOp>>,
    model: Mutex<Model>,
    stale_reads: Mutex<Vec<String>>,
    /// Logical ids of the fixed collections, by name.
    fixed: Vec<(String, String)>,
}

impl Shared {
    /// The gateway of the next request.
    fn gateway(&self) -> &str {
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        &self.gateways[turn % self.gateways.len()]
    }
}

/// What a finished workload saw.
#[derive(Debug)]
pub struct WorkloadResult {
    /// When it started.
    pub started: Instant,
    /// Every write, in completion order.
    pub writes: Vec<WriteOp>,
    /// Every read.
    pub reads: Vec<ReadOp>,
    /// What every collection may hold.
    pub model: Model,
    /// Reads that answered 2xx without an acknowledged write of the reader.
    pub stale_reads: Vec<String>,
}

impl WorkloadResult {
    /// Writes with this outcome.
    pub fn count(&self, outcome: Outcome) -> usize {
        self.writes.iter().filter(|w| w.outcome == outcome).count()
    }

    /// Writes sent in `[from, to)`.
    pub fn writes_started_in(&self, from: Instant, to: Instant) -> Vec<&WriteOp> {
        self.writes
            .iter()
            .filter(|w| w.start >= from && w.start < to)
            .collect()
    }

    /// Reads sent in `[from, to)`.
    pub fn reads_started_in(&self, from: Instant, to: Instant) -> Vec<&ReadOp> {
        self.reads
            .iter()
            .filter(|r| r.start >= from && r.start < to)
            .collect()
    }

    /// One line with the counts.
    pub fn describe(&self) -> String {
        let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
        for w in &self.writes {
            let k = match w.status {
                Some(s) => s.to_string(),
                None => "transport".into(),
            };
            *by_status.entry(k).or_default() += 1;
        }
        let reads_ok = self.reads.iter().filter(|r| r.ok()).count();
        format!(
            "writes: {} (acked {}, failed {}, unknown {}; by status {:?}), reads: {} ok / {} total, stale reads: {}",
            self.writes.len(),
            self.count(Outcome::Acked),
            self.count(Outcome::Failed),
            self.count(Outcome::Unknown),
            by_status,
            reads_ok,
            self.reads.len(),
            self.stale_reads.len()
        )
    }

    /// The first few writes with this outcome, for messages.
    pub fn sample(&self, outcome: Outcome, n: usize) -> Vec<String> {
        self.writes
            .iter()
            .filter(|w| w.outcome == outcome)
            .take(n)
            .map(|w| {
                format!(
                    "{} {} {} status={:?} backend={:?} lsn={:?} err={:?}",
                    w.who, w.kind, w.collection, w.status, w.backend, w.lsn, w.error
                )
            })
            .collect()
    }
}

/// A running workload.
pub struct Workload {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
    started: Instant,
}

fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .build()
        .expect("build reqwest client")
}

impl Workload {
    /// Creates the fixed collections through the gateway (each must be
    /// acknowledged) and starts the tasks on their own runtime thread.
    pub fn start(gateway: &str, spec: WorkloadSpec) -> Workload {
        Self::start_through(&[gateway.to_string()], spec)
    }

    /// Like [`start`](Self::start), with every request sent to the next
    /// of `gateways` in turn (the fixed collections through the first).
    pub fn start_through(gateways: &[String], spec: WorkloadSpec) -> Workload {
        let gateway = gateways[0].as_str();
        let mut model = Model::default();
        let mut fixed = Vec::new();
        for i in 0..spec.collections {
            let name = format!("{}-c{i}", spec.prefix);
            let r = super::post_json(
                &collections_url(gateway, DATABASE),
                &json!({"name": name, "metadata": {"purpose": "faults"}}),
            );
            assert!(
                r.status == 200,
                "creating {name} through the gateway: {} {}",
                r.status,
                r.text()
            );
            let id = r.json()["id"].as_str().expect("collection id").to_string();
            model.note_collection(&name, Outcome::Acked);
            fixed.push((name, id));
        }
        let shared = Arc::new(Shared {
            gateways: gateways.to_vec(),
            turn: Default::default(),
            spec,
            stop: AtomicBool::new(false),
            acked: AtomicU64::new(0),
            writes: Mutex::new(Vec::new()),
            reads: Mutex::new(Vec::new()),
            model: Mutex::new(model),
            stale_reads: Mutex::new(Vec::new()),
            fixed,
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fault-workload".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("workload runtime");
                rt.block_on(async move {
                    let mut tasks = tokio::task::JoinSet::new();
                    for w in 0..s.spec.writers {
                        tasks.spawn(writer(s.clone(), w));
                    }
                    for r in 0..s.spec.readers {
                        tasks.spawn(reader(s.clone(), r));
                    }
                    if s.spec.creator {
                        tasks.spawn(creator(s.clone()));
                    }
                    while let Some(res) = tasks.join_next().await {
                        if let Err(e) = res {
                            if e.is_panic() {
                                std::panic::resume_unwind(e.into_panic());
                            }
                        }
                    }
                });
            })
            .expect("spawn workload thread");
        Workload {
            shared,
            thread: Some(thread),
            started: Instant::now(),
        }
    }

    /// The fixed collections: (name, logical id).
    pub fn fixed(&self) -> Vec<(String, String)> {
        self.shared.fixed.clone()
    }

    /// The first write answered with `status`, if any yet.
    pub fn first_with_status(&self, status: u16) -> Option<WriteOp> {
        let w = self.shared.writes.lock().unwrap_or_else(|p| p.into_inner());
        w.iter().find(|w| w.status == Some(status)).cloned()
    }

    /// When it started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Acknowledged writes so far.
    pub fn acked(&self) -> u64 {
        self.shared.acked.load(Ordering::SeqCst)
    }

    /// Waits until `n` more writes are acknowledged (panics after `timeout`).
    pub fn wait_for_more_acks(&self, n: u64, timeout: Duration) {
        let target = self.acked() + n;
        let deadline = Instant::now() + timeout;
        while self.acked() < target {
            assert!(
                Instant::now() < deadline,
                "the workload did not get {n} more writes acknowledged within {timeout:?} \
                 (acked so far {}); last writes: {:?}\ngateway status: {}",
                self.acked(),
                self.recent_writes(8),
                super::status(&self.shared.gateways[0])
                    .map(|s| serde_json::to_string_pretty(&s).unwrap_or_default())
                    .unwrap_or_else(|| "<no answer>".into())
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last `n` writes, for messages.
    pub fn recent_writes(&self, n: usize) -> Vec<String> {
        let w = self.shared.writes.lock().unwrap_or_else(|p| p.into_inner());
        w.iter()
            .rev()
            .take(n)
            .map(|w| {
                format!(
                    "{} {} {} {:?} status={:?} err={:?}",
                    w.who, w.kind, w.collection, w.outcome, w.status, w.error
                )
            })
            .collect()
    }

    /// Completion time of the first acknowledged write that was SENT at or
    /// after `t` (None yet if there is none).
    pub fn first_ack_sent_after(&self, t: Instant) -> Option<WriteOp> {
        let w = self.shared.writes.lock().unwrap_or_else(|p| p.into_inner());
        w.iter()
            .filter(|w| w.outcome == Outcome::Acked && w.start >= t)
            .min_by_key(|w| w.end)
            .cloned()
    }

    /// Stops every task (each finishes its request in flight) and returns
    /// what they saw.
    pub fn stop(mut self) -> WorkloadResult {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            if let Err(panic) = t.join() {
                std::panic::resume_unwind(panic);
            }
        }
        let take = |m: &Mutex<Vec<WriteOp>>| {
            std::mem::take(&mut *m.lock().unwrap_or_else(|p| p.into_inner()))
        };
        WorkloadResult {
            started: self.started,
            writes: take(&self.shared.writes),
            reads: std::mem::take(
                &mut *self.shared.reads.lock().unwrap_or_else(|p| p.into_inner()),
            ),
            model: self
                .shared
                .model
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            stale_reads: std::mem::take(
                &mut *self
                    .shared
                    .stale_reads
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()),
            ),
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A sent request's result: status, headers of interest, body text.
struct Reply {
    status: u16,
    backend: Option<String>,
    lsn: Option<u64>,
    body: String,
}

async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<&Value>,
) -> Result<Reply, reqwest::Error> {
    let mut req = client.request(method, url);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let backend = header("x-chroma-ha-backend");
    let lsn = header("x-chroma-ha-lsn").and_then(|v| v.parse().ok());
    let body = resp.text().await?;
    Ok(Reply {
        status,
        backend,
        lsn,
        body,
    })
}

fn record_url(gateway: &str, coll_id: &str, endpoint: &str) -> String {
    format!(
        "{}/{coll_id}/{endpoint}",
        collections_url(gateway, DATABASE)
    )
}

fn make_content(rng: &mut StdRng, dim: usize, id: &str, who: &str, seq: u64) -> Content {
    Content {
        doc: format!("{id}@{who}s{seq}"),
        meta: json!({"who": who, "seq": seq, "kind": "fault"}),
        // Multiples of 1/64 are exact in f32 and in JSON.
        emb: (0..dim)
            .map(|_| rng.random_range(-64i32..=64) as f32 / 64.0)
            .collect(),
    }
}

fn record_body(ids: &[String], contents: &[Content]) -> Value {
    if contents.is_empty() {
        return json!({ "ids": ids });
    }
    json!({
        "ids": ids,
        "embeddings": contents.iter().map(|c| c.emb.clone()).collect::<Vec<_>>(),
        "documents": contents.iter().map(|c| c.doc.clone()).collect::<Vec<_>>(),
        "metadatas": contents.iter().map(|c| c.meta.clone()).collect::<Vec<_>>(),
    })
}

/// Sends one record write, records it, folds it into the model, and returns
/// its outcome.
#[allow(clippy::too_many_arguments)]
async fn do_write(
    s: &Shared,
    client: &reqwest::Client,
    who: &str,
    collection: &str,
    coll_id: &str,
    op: RecordOp,
    ids: &[String],
    contents: &[Content],
) -> Outcome {
    let url = record_url(s.gateway(), coll_id, op.endpoint());
    let body = record_body(ids, contents);
    let start = Instant::now();
    let result = send(client, reqwest::Method::POST, &url, Some(&body)).await;
    let end = Instant::now();
    let (outcome, status, backend, lsn, error) = match result {
        Ok(r) => {
            let outcome = classify_status(r.status);
            let error = (outcome != Outcome::Acked).then(|| r.body.chars().take(300).collect());
            (outcome, Some(r.status), r.backend, r.lsn, error)
        }
        Err(e) => (classify_error(&e), None, None, None, Some(format!("{e:?}"))),
    };
    // Model first, then the acked counter, so whoever sees the counter
    // move also finds the write in the model.
    s.model
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .note_write(collection, op, ids, contents, outcome);
    s.writes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(WriteOp {
            who: who.to_string(),
            kind: op.endpoint(),
            collection: collection.to_string(),
            start,
            end,
            outcome,
            status,
            backend,
            lsn,
            error,
        });
    if outcome == Outcome::Acked {
        s.acked.fetch_add(1, Ordering::SeqCst);
    }
    outcome
}

/// Reads `ids` back through the gateway after an acknowledged write of
/// `contents`; a 2xx answer must show exactly those documents.
async fn read_back(
    s: &Shared,
    client: &reqwest::Client,
    collection: &str,
    coll_id: &str,
    ids: &[String],
    contents: &[Content],
) {
    let url = record_url(s.gateway(), coll_id, "get");
    let body = json!({"ids": ids, "include": ["documents"]});
    let start = Instant::now();
    let result = send(client, reqwest::Method::POST, &url, Some(&body)).await;
    let end = Instant::now();
    let mut read = ReadOp {
        start,
        end,
        status: None,
        backend: None,
        error: None,
    };
    match result {
        Ok(r) => {
            read.status = Some(r.status);
            read.backend = r.backend.clone();
            if (200..300).contains(&r.status) {
                let v: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
                let got: HashMap<String, String> = v["ids"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(String::from))
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
                    .into_iter()
                    .zip(
                        v["documents"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default()
                            .into_iter()
                            .map(|d| d.as_str().unwrap_or_default().to_string()),
                    )
                    .collect();
                for (id, c) in ids.iter().zip(contents) {
                    if got.get(id) != Some(&c.doc) {
                        s.stale_reads
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(format!(
                            "{collection}/{id}: read from {:?} after the ack of {:?} returned {:?}",
                            r.backend,
                            c.doc,
                            got.get(id)
                        ));
                    }
                }
            } else {
                read.error = Some(r.body.chars().take(200).collect());
            }
        }
        Err(e) => read.error = Some(e.to_string()),
    }
    s.reads.lock().unwrap_or_else(|p| p.into_inner()).push(read);
}

async fn writer(s: Arc<Shared>, w: usize) {
    let client = http_client(s.spec.client_timeout);
    let mut rng = StdRng::seed_from_u64(s.spec.seed * 1000 + w as u64);
    let who = format!("w{w}");
    let mut next_id = 0u64;
    let mut seq = 0u64;
    let batch = s.spec.batch.max(2);
    while !s.stop.load(Ordering::SeqCst) {
        seq += 1;
        let (name, coll_id) = s.fixed[rng.random_range(0..s.fixed.len())].clone();
        let mine: Vec<String> = {
            let model = s.model.lock().unwrap_or_else(|p| p.into_inner());
            let prefix = format!("{}-{who}-", s.spec.prefix);
            model
                .maybe_present(&name)
                .into_iter()
                .filter(|id| id.starts_with(&prefix))
                .collect()
        };
        let mut fresh = |k: usize| -> Vec<String> {
            (0..k)
                .map(|_| {
                    next_id += 1;
                    format!("{}-{who}-{next_id}", s.spec.prefix)
                })
                .collect()
        };
        let r: f64 = rng.random();
        let (op, ids) = if r < 0.5 || mine.is_empty() {
            (RecordOp::Add, fresh(batch))
        } else if r < 0.8 {
            let k = (batch / 2).min(mine.len());
            let mut ids: Vec<String> = rand::seq::index::sample(&mut rng, mine.len(), k)
                .into_iter()
                .map(|i| mine[i].clone())
                .collect();
            ids.extend(fresh(batch - k));
            (RecordOp::Upsert, ids)
        } else {
            let k = (batch / 2).min(mine.len());
            let ids = rand::seq::index::sample(&mut rng, mine.len(), k)
                .into_iter()
                .map(|i| mine[i].clone())
                .collect();
            (RecordOp::Delete, ids)
        };
        let contents: Vec<Content> = if op == RecordOp::Delete {
            Vec::new()
        } else {
            ids.iter()
                .map(|id| make_content(&mut rng, s.spec.dim, id, &who, seq))
                .collect()
        };
        let outcome = do_write(&s, &client, &who, &name, &coll_id, op, &ids, &contents).await;
        match outcome {
            Outcome::Acked if op != RecordOp::Delete && rng.random_bool(0.3) => {
                read_back(&s, &client, &name, &coll_id, &ids, &contents).await;
            }
            Outcome::Acked => {}
            _ => tokio::time::sleep(s.spec.error_pause).await,
        }
        tokio::time::sleep(s.spec.think).await;
    }
}

async fn creator(s: Arc<Shared>) {
    let client = http_client(s.spec.client_timeout);
    let mut rng = StdRng::seed_from_u64(s.spec.seed * 1000 + 999);
    let who = "creator";
    let mut n = 0u64;
    let mut next_id = 0u64;
    while !s.stop.load(Ordering::SeqCst) {
        n += 1;
        let name = format!("{}-dyn{n}", s.spec.prefix);
        let url = collections_url(s.gateway(), DATABASE);
        let body = json!({"name": name, "metadata": {"purpose": "faults", "n": n}});
        let start = Instant::now();
        let result = send(&client, reqwest::Method::POST, &url, Some(&body)).await;
        let end = Instant::now();
        let (outcome, status, backend, lsn, error, id) = match result {
            Ok(r) => {
                let outcome = classify_status(r.status);
                let id = serde_json::from_str::<Value>(&r.body)
                    .ok()
                    .and_then(|v| v["id"].as_str().map(String::from));
                let error = (outcome != Outcome::Acked).then(|| r.body.chars().take(300).collect());
                (outcome, Some(r.status), r.backend, r.lsn, error, id)
            }
            Err(e) => (
                classify_error(&e),
                None,
                None,
                None,
                Some(format!("{e:?}")),
                None,
            ),
        };
        s.model
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .note_collection(&name, outcome);
        s.writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(WriteOp {
                who: who.to_string(),
                kind: "create",
                collection: name.clone(),
                start,
                end,
                outcome,
                status,
                backend,
                lsn,
                error,
            });
        if outcome == Outcome::Acked {
            s.acked.fetch_add(1, Ordering::SeqCst);
            let coll_id = id.expect("an acknowledged create returns the collection id");
            // Two adds into the new collection through its logical id.
            for round in 0..2 {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let ids: Vec<String> = (0..2)
                    .map(|_| {
                        next_id += 1;
                        format!("{}-cr-{next_id}", s.spec.prefix)
                    })
                    .collect();
                let contents: Vec<Content> = ids
                    .iter()
                    .map(|id| make_content(&mut rng, s.spec.dim, id, who, n * 10 + round))
                    .collect();
                let o = do_write(
                    &s,
                    &client,
                    who,
                    &name,
                    &coll_id,
                    RecordOp::Add,
                    &ids,
                    &contents,
                )
                .await;
                if o != Outcome::Acked {
                    tokio::time::sleep(s.spec.error_pause).await;
                }
                tokio::time::sleep(s.spec.think).await;
            }
        } else {
            tokio::time::sleep(s.spec.error_pause).await;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

async fn reader(s: Arc<Shared>, r: usize) {
    let client = http_client(s.spec.client_timeout);
    let mut rng = StdRng::seed_from_u64(s.spec.seed * 1000 + 500 + r as u64);
    while !s.stop.load(Ordering::SeqCst) {
        let (_, coll_id) = s.fixed[rng.random_range(0..s.fixed.len())].clone();
        let kind = rng.random_range(0..3);
        let (method, url, body) = match kind {
            0 => (
                reqwest::Method::GET,
                record_url(s.gateway(), &coll_id, "count"),
                None,
            ),
            1 => (
                reqwest::Method::POST,
                record_url(s.gateway(), &coll_id, "get"),
                Some(json!({"limit": 10, "include": ["documents", "metadatas"]})),
            ),
            _ => {
                let q: Vec<f32> = (0..s.spec.dim)
                    .map(|_| rng.random_range(-64i32..=64) as f32 / 64.0)
                    .collect();
                (
                    reqwest::Method::POST,
                    record_url(s.gateway(), &coll_id, "query"),
                    Some(
                        json!({"query_embeddings": [q], "n_results": 3, "include": ["documents", "distances"]}),
                    ),
                )
            }
        };
        let start = Instant::now();
        let result = send(&client, method, &url, body.as_ref()).await;
        let end = Instant::now();
        let read = match result {
            Ok(rep) => ReadOp {
                start,
                end,
                status: Some(rep.status),
                backend: rep.backend,
                error: (!(200..300).contains(&rep.status))
                    .then(|| rep.body.chars().take(200).collect()),
            },
            Err(e) => ReadOp {
                start,
                end,
                status: None,
                backend: None,
                error: Some(e.to_string()),
            },
        };
        let failed = !read.ok();
        s.reads.lock().unwrap_or_else(|p| p.into_inner()).push(read);
        if failed {
            tokio::time::sleep(s.spec.error_pause).await;
        }
        tokio::time::sleep(s.spec.think).await;
    }
}
