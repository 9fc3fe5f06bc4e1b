//! Dead letters against in-process fake Chroma servers: a full list stops
//! the refusing server instead of dropping letters, a refused write keeps
//! its server from serving strong reads of its scope, and a retry keeps
//! log order.

mod fake_kit;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use chroma_ha::backend::Backends;
use chroma_ha::chroma::{classify, Route};
use chroma_ha::config::{Config, FsyncPolicy};
use chroma_ha::http::metrics::Metrics;
use chroma_ha::http::AppState;
use chroma_ha::replication::dead_letters::{DeadLetter, DeadLetters};
use chroma_ha::replication::progress::ApplierState;
use chroma_ha::replication::Replicator;
use http::{HeaderMap, Method, StatusCode};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wal::Log as _;

/// A fake server. Writes of ids starting with `refuse-` get a Chroma 400
/// (if `refusing`); `refuse-once-` ids only the first time.
#[derive(Default)]
struct Fake {
    refusing: bool,
    seen: Mutex<HashSet<String>>,
    adds: Mutex<Vec<String>>,
}

async fn add(
    State(fake): State<Arc<Fake>>,
    Path((_t, _d, _c)): Path<(String, String, String)>,
    body: Bytes,
) -> (StatusCode, Json<serde_json::Value>) {
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let id = value["ids"][0].as_str().unwrap_or_default().to_string();
    fake.adds.lock().unwrap().push(id.clone());
    let first_time = fake.seen.lock().unwrap().insert(id.clone());
    let refuse = fake.refusing
        && (id.starts_with("refuse-once-") && first_time
            || id.starts_with("refuse-") && !id.starts_with("refuse-once-"));
    if refuse {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": "InvalidArgumentError", "message": "no"})),
        );
    }
    (StatusCode::CREATED, Json(serde_json::json!({})))
}

async fn read(Path((_t, _d, _c)): Path<(String, String, String)>) -> Json<serde_json::Value> {
    Json(serde_json::json!({"ids": []}))
}

async fn fake_chroma(refusing: bool) -> (String, Arc<Fake>) {
    let fake = Arc::new(Fake {
        refusing,
        ..Fake::default()
    });
    let app = Router::new()
        .route("/api/v2/heartbeat", get(fake_kit::heartbeat))
        .route(
            "/api/v2/tenants/{t}/databases/{d}/collections/{c}/add",
            post(add),
        )
        .route(
            "/api/v2/tenants/{t}/databases/{d}/collections/{c}/get",
            post(read),
        )
        .with_state(fake.clone());
    (fake_kit::serve(app).await, fake)
}

struct Cluster {
    rep: Arc<Replicator>,
    config: Config,
    replica: Arc<Fake>,
    _dir: fake_kit::StateDir,
}

async fn cluster(tune: impl FnOnce(&mut Config)) -> Cluster {
    cluster_in(fake_kit::StateDir::new(), tune).await
}

async fn cluster_in(dir: fake_kit::StateDir, tune: impl FnOnce(&mut Config)) -> Cluster {
    let (primary, _) = fake_chroma(false).await;
    let (replica_url, replica) = fake_chroma(true).await;
    let mut config = Config::with_servers(&primary, &[&replica_url]).unwrap();
    config.data_dir = dir.path().to_path_buf();
    config.wal.fsync = FsyncPolicy::Never;
    config.replication.retry_base = Duration::from_millis(5);
    config.replication.retry_cap = Duration::from_millis(50);
    tune(&mut config);
    let backends = Arc::new(Backends::new(&config).unwrap());
    for b in backends.all() {
        b.health().record_probe_success();
    }
    let rep = Replicator::start(&config, backends, None).await.unwrap();
    Cluster {
        rep,
        config,
        replica,
        _dir: dir,
    }
}

const C1: &str = "0195d1e2-0000-4000-8000-000000000001";
const C2: &str = "0195d1e2-0000-4000-8000-000000000002";

fn collection_path(collection: &str, op: &str) -> String {
    format!("/api/v2/tenants/t/databases/d/collections/{collection}/{op}")
}

/// Writes one record into `collection` through the primary; its LSN.
async fn write(rep: &Arc<Replicator>, collection: &str, id: &str) -> u64 {
    let body = format!(r#"{{"ids":["{id}"],"embeddings":[[1.0,2.0]]}}"#);
    let answer = rep
        .write(
            Method::POST,
            collection_path(collection, "add"),
            Some("application/json".into()),
            Bytes::from(body),
            HeaderMap::new(),
        )
        .await
        .unwrap();
    assert!(answer.response.status.is_success());
    answer.lsn.unwrap()
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_dead_letter_list_stops_the_refusing_server_at_the_entry_until_room_is_made() {
    let c = cluster(|config| config.replication.max_dead_letters = 1).await;
    let rep = &c.rep;
    write(rep, C1, "refuse-a").await;
    wait_until("the first dead letter", || rep.dead_letters().len() == 1).await;
    let second = write(rep, C2, "refuse-b").await;
    wait_until("the replica stops at the second refusal", || {
        rep.progress(1).state == ApplierState::DeadLettersFull
    })
    .await;
    // Later, unrelated entries do not let it move past the refused one.
    let third = write(rep, C1, "fine").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rep.dead_letters().len(), 1, "no letter dropped or added");
    assert!(
        rep.progress(1).applied_upto < second,
        "the replica moved past an entry it could not dead-letter"
    );
    assert!(rep.dead_letters().is_full());
    // /status and /metrics say so.
    let app = AppState::start(
        rep.clone(),
        Arc::new(c.config.clone()),
        Arc::new(Metrics::new().unwrap()),
        None,
    );
    let status = chroma_ha::http::status::collect(&app);
    assert!(status.dead_letters_full);
    assert_eq!(status.max_dead_letters, 1);
    let message = status.dead_letters_message.unwrap_or_default();
    assert!(message.contains("replica stopped"), "{message}");
    assert_eq!(status.instances[1].applier, "dead_letters_full");
    assert_eq!(status.instances[0].applier, "running");
    let metrics = String::from_utf8(app.metrics.render(&app)).unwrap();
    assert!(
        metrics.contains("chroma_ha_dead_letters_full 1")
            && metrics.contains("chroma_ha_server_stopped_by_dead_letters{server=\"replica\"} 1"),
        "{metrics}"
    );
    // The operator makes room: the held entry is dead-lettered, and it moves on.
    let first = rep.dead_letters().list()[0].id;
    assert!(rep.skip_dead_letter(first).await.unwrap().is_some());
    wait_until("the replica moves on", || {
        rep.progress(1).applied_upto >= third
    })
    .await;
    let letters = rep.dead_letters().list();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].lsn, second);
    assert_eq!(rep.progress(1).state, ApplierState::Running);
}

async fn reader_of(rep: &Replicator, collection: &str) -> usize {
    let path = collection_path(collection, "get");
    let route: Route = classify(&Method::POST, &path);
    rep.read(
        &route,
        Method::POST,
        &path,
        HeaderMap::new(),
        Bytes::from_static(br#"{"ids":["x"]}"#),
    )
    .await
    .unwrap()
    .server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_refused_a_write_serves_no_strong_read_of_its_collection_until_skipped() {
    let c = cluster(|config| config.reads.replica_ratio = 1.0).await;
    let rep = &c.rep;
    let lsn = write(rep, C1, "refuse-a").await;
    wait_until("the dead letter", || rep.dead_letters().len() == 1).await;
    wait_until("the replica finishes the entry", || {
        rep.progress(1).applied_upto >= lsn
    })
    .await;
    for _ in 0..10 {
        assert_eq!(
            reader_of(rep, C1).await,
            0,
            "the replica refused C1's write"
        );
        assert_eq!(reader_of(rep, C2).await, 1, "C2 is not affected");
    }
    let id = rep.dead_letters().list()[0].id;
    rep.skip_dead_letter(id).await.unwrap();
    assert_eq!(
        reader_of(rep, C1).await,
        1,
        "skipped: the replica qualifies"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_a_dead_letter_is_refused_once_its_server_applied_a_later_conflicting_entry() {
    let c = cluster(|_| {}).await;
    let rep = &c.rep;
    let refused = write(rep, C1, "refuse-once-k").await;
    wait_until("the dead letter", || rep.dead_letters().len() == 1).await;
    // The same record again: the replica accepts it this time.
    let later = write(rep, C1, "refuse-once-k").await;
    wait_until("the replica applies the later entry", || {
        rep.progress(1).applied_upto >= later
    })
    .await;
    let id = rep.dead_letters().list()[0].id;
    let sent_before = c.replica.adds.lock().unwrap().len();
    let err = rep.retry_dead_letter(id).await.unwrap_err();
    assert_eq!(err.status, StatusCode::CONFLICT, "{err:?}");
    assert!(
        err.message.contains(&format!("LSN {later}")) && err.message.contains(&refused.to_string()),
        "{}",
        err.message
    );
    assert_eq!(
        c.replica.adds.lock().unwrap().len(),
        sent_before,
        "nothing was sent"
    );
    assert_eq!(rep.dead_letters().len(), 1, "the letter stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_a_dead_letter_after_only_unrelated_entries_applies_it() {
    let c = cluster(|_| {}).await;
    let rep = &c.rep;
    write(rep, C1, "refuse-once-j").await;
    wait_until("the dead letter", || rep.dead_letters().len() == 1).await;
    let later = write(rep, C1, "other-record").await;
    let elsewhere = write(rep, C2, "refuse-once-j").await;
    wait_until("the replica applies the later entries", || {
        rep.progress(1).applied_upto >= later.max(elsewhere)
    })
    .await;
    let id = rep.dead_letters().list()[0].id;
    assert!(rep.retry_dead_letter(id).await.unwrap(), "applied");
    assert!(rep.dead_letters().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_a_dead_letter_is_refused_when_the_log_no_longer_proves_the_order() {
    let c = cluster(|config| config.wal.segment_bytes = 4096).await;
    let rep = &c.rep;
    let refused = write(rep, C1, "refuse-once-m").await;
    wait_until("the dead letter", || rep.dead_letters().len() == 1).await;
    let mut last = refused;
    let mut n = 0;
    while rep.wal().first_lsn() <= refused + 1 {
        last = write(rep, C2, &format!("filler-{n}")).await;
        n += 1;
        assert!(n < 2000, "the log never dropped its first segment");
        if n % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
    wait_until("the replica catches up", || {
        rep.progress(1).applied_upto >= last
    })
    .await;
    let id = rep.dead_letters().list()[0].id;
    let err = rep.retry_dead_letter(id).await.unwrap_err();
    assert_eq!(err.status, StatusCode::CONFLICT, "{err:?}");
    assert!(
        err.message.contains("cannot be proven") && err.message.contains("rebuild"),
        "{}",
        err.message
    );
    assert_eq!(rep.dead_letters().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_from_before_a_restart_still_keeps_its_server_from_strong_reads() {
    let dir = fake_kit::StateDir::new();
    {
        let path = collection_path(C1, "add");
        let body = br#"{"ids":["k"]}"#;
        let Route::Known(route) = classify(&Method::POST, &path) else {
            panic!("add is a known route");
        };
        let letters = DeadLetters::open(dir.path(), 10).await.unwrap();
        let letter = DeadLetter {
            id: 0,
            server: "replica".into(),
            lsn: 1,
            method: "POST".into(),
            path,
            status: 400,
            error: "{}".into(),
            at: 0.0,
            attempts: 1,
            record_bytes: 0,
        };
        let footprint = chroma_ha::chroma::footprint(&route, body);
        letters.add(letter, Bytes::new(), footprint).await.unwrap();
    }
    let c = cluster_in(dir, |config| config.reads.replica_ratio = 1.0).await;
    assert_eq!(c.rep.dead_letters().len(), 1);
    for _ in 0..10 {
        assert_eq!(
            reader_of(&c.rep, C1).await,
            0,
            "the replica refused C1's write"
        );
        assert_eq!(reader_of(&c.rep, C2).await, 1, "C2 is not affected");
    }
}
