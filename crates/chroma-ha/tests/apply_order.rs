//! The applier's scheduling against in-process fake Chroma servers (fast;
//! the real-server behaviour is proven in gateway.rs and faults.rs):
//! conflicting entries reach a server strictly in log order, disjoint ones
//! overlap, and a write whose executor cannot be reached goes to the next
//! server.

mod fake_kit;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use chroma_ha::backend::Backends;
use chroma_ha::config::{Config, FsyncPolicy};
use chroma_ha::replication::Replicator;
use http::{HeaderMap, Method};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One write as a fake server handled it.
#[derive(Clone, Debug)]
struct Call {
    /// First id of the batch.
    id: String,
    /// Its first document (distinct per write in the ordering test).
    doc: String,
    /// When it arrived.
    start: Instant,
    /// When it took effect (the answer was sent).
    end: Instant,
}

/// How long a gated write waits for the others (the fourth of four
/// disjoint writes was measured to arrive some 25 ms after the first).
const GATE_TIMEOUT: Duration = Duration::from_secs(3);

/// What a fake server saw and holds.
#[derive(Default)]
struct Seen {
    /// Every write, in the order it took effect (its answer was sent).
    calls: Mutex<Vec<Call>>,
    /// Documents of the writes, in the order they arrived.
    arrivals: Mutex<Vec<String>>,
    /// The record store: id -> document of the write that took effect last.
    records: Mutex<std::collections::HashMap<String, String>>,
    /// How long a write takes.
    delay: Duration,
    /// If set, the k-th write to arrive (from 0) takes `schedule[k]`
    /// instead (so writes sent to it at once finish in another order).
    schedule: Vec<Duration>,
    /// If set, every write waits until this many writes are in flight (or
    /// [`GATE_TIMEOUT`] passes) before it is answered.
    gate: Option<usize>,
    /// Writes in flight now, and the most ever at once.
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// While set, writes get a 503 that is not Chroma's (transient).
    refusing: std::sync::atomic::AtomicBool,
}

async fn add(
    State(seen): State<Arc<Seen>>,
    Path((_t, _d, _c)): Path<(String, String, String)>,
    body: Bytes,
) -> (http::StatusCode, Json<serde_json::Value>) {
    if seen.refusing.load(Ordering::SeqCst) {
        return (
            http::StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!("busy")),
        );
    }
    let start = Instant::now();
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let id = value["ids"][0].as_str().unwrap_or_default().to_string();
    let doc = value["documents"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let k = {
        let mut arrivals = seen.arrivals.lock().unwrap();
        arrivals.push(doc.clone());
        arrivals.len() - 1
    };
    let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    seen.max_in_flight.fetch_max(now, Ordering::SeqCst);
    if let Some(n) = seen.gate {
        let deadline = Instant::now() + GATE_TIMEOUT;
        while seen.max_in_flight.load(Ordering::SeqCst) < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    tokio::time::sleep(seen.schedule.get(k).copied().unwrap_or(seen.delay)).await;
    // Take effect and answer: one step, so `calls` is the order of effect.
    {
        let mut calls = seen.calls.lock().unwrap();
        seen.records.lock().unwrap().insert(id.clone(), doc.clone());
        seen.in_flight.fetch_sub(1, Ordering::SeqCst);
        calls.push(Call {
            id,
            doc,
            start,
            end: Instant::now(),
        });
    }
    (http::StatusCode::CREATED, Json(serde_json::json!({})))
}

async fn fake_chroma(delay: Duration) -> (String, Arc<Seen>) {
    fake_chroma_with(Seen {
        delay,
        ..Seen::default()
    })
    .await
}

async fn fake_chroma_with(seen: Seen) -> (String, Arc<Seen>) {
    let seen = Arc::new(seen);
    let app = Router::new()
        .route("/api/v2/heartbeat", get(fake_kit::heartbeat))
        .route(
            "/api/v2/tenants/{t}/databases/{d}/collections/{c}/add",
            post(add),
        )
        .with_state(seen.clone());
    (fake_kit::serve(app).await, seen)
}

async fn replicator(primary: &str, replica: &str, dir: &std::path::Path) -> Arc<Replicator> {
    replicator_with(primary, replica, dir, |_| {}).await
}

async fn replicator_with(
    primary: &str,
    replica: &str,
    dir: &std::path::Path,
    tune: impl FnOnce(&mut Config),
) -> Arc<Replicator> {
    let mut config = fake_kit::config_for(primary, replica, dir);
    tune(&mut config);
    fake_kit::start(&config).await
}

fn add_body(id: &str, doc: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"ids":["{id}"],"embeddings":[[1.0,2.0]],"documents":["{doc}"]}}"#
    ))
}

const PATH: &str =
    "/api/v2/tenants/t/databases/d/collections/0195d1e2-0000-4000-8000-000000000001/add";

async fn write(rep: &Arc<Replicator>, id: &str) -> chroma_ha::replication::Answer {
    write_doc(rep, id, "d").await
}

async fn write_doc(rep: &Arc<Replicator>, id: &str, doc: &str) -> chroma_ha::replication::Answer {
    rep.write(
        Method::POST,
        PATH.to_string(),
        Some("application/json".into()),
        add_body(id, doc),
        HeaderMap::new(),
    )
    .await
    .unwrap()
}

async fn wait_for(seen: &Seen, n: usize) -> Vec<Call> {
    wait_for_within(seen, n, Duration::from_secs(10)).await
}

async fn wait_for_within(seen: &Seen, n: usize, timeout: Duration) -> Vec<Call> {
    let deadline = Instant::now() + timeout;
    loop {
        let calls = seen.calls.lock().unwrap().clone();
        if calls.len() >= n {
            return calls;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} calls arrived",
            calls.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_the_same_record_reach_a_replica_one_after_the_other_in_log_order() {
    let dir = fake_kit::StateDir::new();
    let (primary, primary_seen) = fake_chroma(Duration::ZERO).await;
    // The replica takes longer the earlier a write arrives: writes sent to
    // it together would take effect in reverse order, so only one at a
    // time, in log order, leaves the last write's value in place.
    let n = 4;
    let (replica, seen) = fake_chroma_with(Seen {
        schedule: (0..n)
            .map(|k| Duration::from_millis(100 * (n - k) as u64))
            .collect(),
        ..Seen::default()
    })
    .await;
    let rep = replicator(&primary, &replica, dir.path()).await;
    let mut log_order = Vec::new();
    for k in 0..n {
        let doc = format!("v{k}");
        let answer = write_doc(&rep, "same", &doc).await;
        assert_eq!(answer.server, 0, "the primary executes");
        log_order.push((answer.lsn.expect("a write has an LSN"), doc));
    }
    log_order.sort();
    let log_order: Vec<String> = log_order.into_iter().map(|(_, d)| d).collect();
    let calls = wait_for(&seen, n).await;
    let applied: Vec<String> = calls.iter().map(|c| c.doc.clone()).collect();
    let arrived = seen.arrivals.lock().unwrap().clone();
    eprintln!(
        "log order {log_order:?}; replica: arrived {arrived:?}, took effect {applied:?}, \
         at most {} at once, in {:?}",
        seen.max_in_flight.load(Ordering::SeqCst),
        calls[n - 1].end - calls[0].start
    );
    assert!(calls.iter().all(|c| c.id == "same"));
    assert_eq!(
        arrived, log_order,
        "the replica received them out of log order"
    );
    assert_eq!(
        applied, log_order,
        "they took effect on the replica out of log order"
    );
    assert_eq!(
        seen.max_in_flight.load(Ordering::SeqCst),
        1,
        "conflicting entries overlapped on the replica"
    );
    for pair in calls.windows(2) {
        assert!(
            pair[1].start >= pair[0].end,
            "a conflicting entry started before the previous one finished"
        );
    }
    assert_eq!(
        seen.records.lock().unwrap().get("same"),
        log_order.last(),
        "the replica holds the value of the last write in the log"
    );
    let on_primary: Vec<String> = primary_seen
        .calls
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.doc.clone())
        .collect();
    assert_eq!(
        on_primary, log_order,
        "the primary applied them in log order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_disjoint_records_are_applied_in_parallel() {
    let dir = fake_kit::StateDir::new();
    let (primary, _) = fake_chroma(Duration::ZERO).await;
    // The replica answers no write until four are in flight at once (or
    // GATE_TIMEOUT has passed): serialized entries would each wait it out.
    let (replica, seen) = fake_chroma_with(Seen {
        gate: Some(4),
        ..Seen::default()
    })
    .await;
    let rep = replicator(&primary, &replica, dir.path()).await;
    for id in ["a", "b", "c", "d"] {
        write(&rep, id).await;
    }
    let calls = wait_for_within(&seen, 4, GATE_TIMEOUT * 4 + Duration::from_secs(20)).await;
    let first_start = calls.iter().map(|c| c.start).min().unwrap();
    let last_start = calls.iter().map(|c| c.start).max().unwrap();
    let max = seen.max_in_flight.load(Ordering::SeqCst);
    eprintln!(
        "replica: at most {max} disjoint entries in flight at once; the fourth arrived {:?} after the first",
        last_start - first_start
    );
    assert_eq!(max, 4, "disjoint entries were serialized on the replica");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_goes_to_the_replica_when_the_primary_refuses_connections() {
    let dir = fake_kit::StateDir::new();
    let (replica, seen) = fake_chroma(Duration::ZERO).await;
    // The primary's port is closed, but the gateway still believes it
    // healthy (no probe has run): the primary is chosen, refuses the
    // connection, and the write moves to the replica before it is decided.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut config = Config::with_servers(&closed_url, &[&replica]).unwrap();
    config.data_dir = dir.path().to_path_buf();
    config.wal.fsync = FsyncPolicy::Never;
    let backends = Arc::new(Backends::new(&config).unwrap());
    for b in backends.all() {
        b.health().record_probe_success();
    }
    let rep = Replicator::start(&config, backends, None).await.unwrap();
    assert_eq!(rep.choose_executor(None), Some(0));
    let answer = write(&rep, "moved").await;
    assert_eq!(answer.server, 1, "the replica answered");
    assert!(answer.response.status.is_success());
    let calls = wait_for(&seen, 1).await;
    assert_eq!(calls[0].id, "moved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovering_server_is_fed_no_faster_than_the_replay_rate_limit() {
    let dir = fake_kit::StateDir::new();
    let (primary, _) = fake_chroma(Duration::ZERO).await;
    let (replica, seen) = fake_chroma(Duration::ZERO).await;
    let rep = replicator_with(&primary, &replica, dir.path(), |c| {
        c.replication.replay_rate_limit = std::num::NonZeroU32::new(40);
        c.replication.apply_window = 4;
        c.replication.retry_base = Duration::from_millis(5);
        c.replication.retry_cap = Duration::from_millis(20);
    })
    .await;
    // The replica refuses (transiently) while 60 writes go through the primary.
    seen.refusing.store(true, Ordering::SeqCst);
    for i in 0..60 {
        write(&rep, &format!("r{i}")).await;
    }
    let started = Instant::now();
    seen.refusing.store(false, Ordering::SeqCst);
    wait_for(&seen, 60).await;
    let took = started.elapsed();
    eprintln!("a backlog of 60 entries drained in {took:?} at a limit of 40/s");
    // A lower bound only (a loaded machine makes it slower, never faster).
    // Past the apply window, at most 40 entries a second: the backlog of
    // 60 cannot drain in under about (60 - 4 × 4) / 40 s.
    assert!(
        took >= Duration::from_millis(900),
        "a backlog of 60 drained in {took:?} despite a limit of 40/s"
    );
}
