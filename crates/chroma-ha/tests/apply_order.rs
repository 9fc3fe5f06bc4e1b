//! The applier's scheduling against in-process fake Chroma servers (fast;
//! the real-server behaviour is proven in gateway.rs and faults.rs):
//! conflicting entries reach a server strictly in log order, disjoint ones
//! overlap, and a write whose executor cannot be reached goes to the next
//! server.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use chroma_ha::backend::Backends;
use chroma_ha::config::{Config, FsyncPolicy};
use chroma_ha::replication::Replicator;
use http::{HeaderMap, Method};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a fake server saw: (first id of the batch, start, end).
#[derive(Default)]
struct Seen {
    calls: Mutex<Vec<(String, Instant, Instant)>>,
    delay: Duration,
    /// While set, writes get a 503 that is not Chroma's (transient).
    refusing: std::sync::atomic::AtomicBool,
}

async fn heartbeat() -> Json<serde_json::Value> {
    Json(serde_json::json!({"nanosecond heartbeat": 1}))
}

async fn add(
    State(seen): State<Arc<Seen>>,
    Path((_t, _d, _c)): Path<(String, String, String)>,
    body: Bytes,
) -> (http::StatusCode, Json<serde_json::Value>) {
    if seen.refusing.load(std::sync::atomic::Ordering::SeqCst) {
        return (
            http::StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!("busy")),
        );
    }
    let start = Instant::now();
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let first = value["ids"][0].as_str().unwrap_or_default().to_string();
    tokio::time::sleep(seen.delay).await;
    seen.calls
        .lock()
        .unwrap()
        .push((first, start, Instant::now()));
    (http::StatusCode::CREATED, Json(serde_json::json!({})))
}

async fn fake_chroma(delay: Duration) -> (String, Arc<Seen>) {
    let seen = Arc::new(Seen {
        delay,
        ..Seen::default()
    });
    let app = Router::new()
        .route("/api/v2/heartbeat", get(heartbeat))
        .route(
            "/api/v2/tenants/{t}/databases/{d}/collections/{c}/add",
            post(add),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
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
    let mut config = Config::with_servers(primary, &[replica]).unwrap();
    config.data_dir = dir.to_path_buf();
    tune(&mut config);
    config.wal.fsync = FsyncPolicy::Never;
    config.health.check_interval = Duration::from_millis(50);
    let backends = Arc::new(Backends::new(&config).unwrap());
    std::mem::forget(backends.spawn_probes());
    let rep = Replicator::start(&config, backends.clone(), None)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while backends.healthy_count() < 2 {
        assert!(
            Instant::now() < deadline,
            "fake servers never became healthy"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rep
}

fn add_body(id: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"ids":["{id}"],"embeddings":[[1.0,2.0]],"documents":["d"]}}"#
    ))
}

const PATH: &str =
    "/api/v2/tenants/t/databases/d/collections/0195d1e2-0000-4000-8000-000000000001/add";

async fn write(rep: &Arc<Replicator>, id: &str) -> chroma_ha::replication::Answer {
    rep.write(
        Method::POST,
        PATH.to_string(),
        Some("application/json".into()),
        add_body(id),
        HeaderMap::new(),
    )
    .await
    .unwrap()
}

async fn wait_for(seen: &Seen, n: usize) -> Vec<(String, Instant, Instant)> {
    let deadline = Instant::now() + Duration::from_secs(10);
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
    let dir = tempfile::tempdir().unwrap();
    let (primary, _) = fake_chroma(Duration::ZERO).await;
    let (replica, seen) = fake_chroma(Duration::from_millis(150)).await;
    let rep = replicator(&primary, &replica, dir.path()).await;
    for _ in 0..3 {
        write(&rep, "same").await;
    }
    let calls = wait_for(&seen, 3).await;
    for pair in calls.windows(2) {
        assert!(
            pair[1].1 >= pair[0].2,
            "a conflicting entry started before the previous one finished"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_disjoint_records_are_applied_in_parallel() {
    let dir = tempfile::tempdir().unwrap();
    let (primary, _) = fake_chroma(Duration::ZERO).await;
    let (replica, seen) = fake_chroma(Duration::from_millis(300)).await;
    let rep = replicator(&primary, &replica, dir.path()).await;
    for id in ["a", "b", "c", "d"] {
        write(&rep, id).await;
    }
    let calls = wait_for(&seen, 4).await;
    let first_end = calls.iter().map(|c| c.2).min().unwrap();
    let last_start = calls.iter().map(|c| c.1).max().unwrap();
    assert!(
        last_start < first_end,
        "disjoint entries were serialized on the replica"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_goes_to_the_replica_when_the_primary_refuses_connections() {
    let dir = tempfile::tempdir().unwrap();
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
    assert_eq!(calls[0].0, "moved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovering_server_is_fed_no_faster_than_the_replay_rate_limit() {
    let dir = tempfile::tempdir().unwrap();
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
    seen.refusing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    for i in 0..60 {
        write(&rep, &format!("r{i}")).await;
    }
    let started = Instant::now();
    seen.refusing
        .store(false, std::sync::atomic::Ordering::SeqCst);
    wait_for(&seen, 60).await;
    let took = started.elapsed();
    // Past the apply window, at most 40 entries a second: the backlog of
    // 60 cannot drain in under about (60 - 4 × 4) / 40 s.
    assert!(
        took >= Duration::from_millis(900),
        "a backlog of 60 drained in {took:?} despite a limit of 40/s"
    );
}
