//! Merged catch-up against in-process fake Chroma servers that record
//! every request: the merge rules (disjoint ids, an upsert after an add of
//! the same id, the server's max batch size) and a poisoned entry inside a
//! merged request, which alone is dead-lettered. The same against real
//! Chroma, with a mixed backlog, is in `merged_catch_up_chroma.rs`.

mod fake_kit;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use chroma_ha::backend::Backends;
use chroma_ha::config::{Config, FsyncPolicy};
use chroma_ha::replication::Replicator;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request a fake received: operation and ids, and whether it refused it.
#[derive(Debug, Clone)]
struct Seen {
    op: String,
    ids: Vec<String>,
    refused: bool,
}

/// A fake Chroma keeping one collection's documents by id with Chroma's
/// record semantics (add keeps the first record of an id, upsert replaces,
/// delete removes). It refuses (400, Chroma's body, nothing applied) any
/// request holding an id that starts with `poison-` or an id twice, as
/// Chroma refuses a batch with one bad record.
struct Fake {
    /// Whether it refuses `poison-` ids (only the replica does).
    refusing: bool,
    max_batch_size: u64,
    docs: Mutex<BTreeMap<String, String>>,
    seen: Mutex<Vec<Seen>>,
}

async fn record_write(
    State(fake): State<Arc<Fake>>,
    Path((_t, _d, _c, op)): Path<(String, String, String, String)>,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    let value: Value = serde_json::from_slice(&body).unwrap_or_default();
    let ids: Vec<String> = value["ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    let refused = fake.refusing && ids.iter().any(|id| id.starts_with("poison-"))
        || unique.len() != ids.len();
    fake.seen.lock().unwrap().push(Seen {
        op: op.clone(),
        ids: ids.clone(),
        refused,
    });
    if refused {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "InvalidArgumentError", "message": "bad record"})),
        );
    }
    let mut docs = fake.docs.lock().unwrap();
    for (i, id) in ids.iter().enumerate() {
        let doc = value["documents"][i]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match op.as_str() {
            "add" => {
                docs.entry(id.clone()).or_insert(doc);
            }
            "upsert" => {
                docs.insert(id.clone(), doc);
            }
            "delete" => {
                docs.remove(id);
            }
            _ => {}
        }
    }
    (StatusCode::CREATED, Json(json!({})))
}

async fn fake_chroma(max_batch_size: u64, refusing: bool) -> (String, Arc<Fake>) {
    let fake = Arc::new(Fake {
        refusing,
        max_batch_size,
        docs: Mutex::new(BTreeMap::new()),
        seen: Mutex::new(Vec::new()),
    });
    let app = Router::new()
        .route("/api/v2/heartbeat", get(fake_kit::heartbeat))
        .route(
            "/api/v2/pre-flight-checks",
            get(|State(fake): State<Arc<Fake>>| async move {
                Json(json!({"max_batch_size": fake.max_batch_size, "supports_base64_encoding": true}))
            }),
        )
        .route(
            "/api/v2/tenants/{t}/databases/{d}/collections/{c}/{op}",
            post(record_write),
        )
        .with_state(fake.clone());
    (fake_kit::serve(app).await, fake)
}

struct Cluster {
    rep: Arc<Replicator>,
    primary: Arc<Fake>,
    replica: Arc<Fake>,
    _dir: fake_kit::StateDir,
}

async fn cluster(max_batch_size: u64, merge: bool) -> Cluster {
    let dir = fake_kit::StateDir::new();
    let (primary_url, primary) = fake_chroma(max_batch_size, false).await;
    let (replica_url, replica) = fake_chroma(max_batch_size, true).await;
    let mut config = Config::with_servers(&primary_url, &[&replica_url]).unwrap();
    config.data_dir = dir.path().to_path_buf();
    config.wal.fsync = FsyncPolicy::Never;
    config.replication.retry_base = Duration::from_millis(5);
    config.replication.retry_cap = Duration::from_millis(50);
    config.replication.merge_catch_up = merge;
    let backends = Arc::new(Backends::new(&config).unwrap());
    for b in backends.all() {
        b.health().record_probe_success();
    }
    let rep = Replicator::start(&config, backends, None).await.unwrap();
    Cluster {
        rep,
        primary,
        replica,
        _dir: dir,
    }
}

const C1: &str = "0195d1e2-0000-4000-8000-000000000001";

/// Sends one record write through the gateway's core (the primary
/// executes it); the write must be accepted.
async fn write(rep: &Arc<Replicator>, op: &str, ids: &[&str], doc: &str) -> u64 {
    let body = if op == "delete" {
        json!({ "ids": ids })
    } else {
        json!({
            "ids": ids,
            "embeddings": ids.iter().map(|_| vec![1.0, 2.0]).collect::<Vec<_>>(),
            "documents": ids.iter().map(|_| doc).collect::<Vec<_>>(),
        })
    };
    let answer = rep
        .write(
            Method::POST,
            format!("/api/v2/tenants/t/databases/d/collections/{C1}/{op}"),
            Some("application/json".into()),
            Bytes::from(body.to_string()),
            HeaderMap::new(),
        )
        .await
        .expect("the write is answered");
    assert!(answer.response.status.is_success(), "{op} {ids:?}");
    answer.lsn.expect("logged")
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Pauses the replica, runs `backlog`, resumes it and waits until it has
/// applied everything.
async fn catch_up_after<F, Fut>(c: &Cluster, backlog: F)
where
    F: FnOnce(Arc<Replicator>) -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    c.rep.set_paused(1, true).await.unwrap();
    let last = backlog(c.rep.clone()).await;
    c.rep.set_paused(1, false).await.unwrap();
    let rep = c.rep.clone();
    wait_until("the replica catches up", move || {
        rep.progress(1).applied_upto >= last
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_entry_inside_a_merged_request_alone_is_dead_lettered() {
    let c = cluster(8, true).await;
    catch_up_after(&c, |rep| async move {
        let mut last = 0;
        for i in 0..60 {
            let id = if i == 21 {
                "poison-21".to_string()
            } else {
                format!("r{i}")
            };
            last = write(&rep, "add", &[&id], &format!("doc {i}")).await;
        }
        last
    })
    .await;
    let letters = c.rep.dead_letters().list();
    assert_eq!(letters.len(), 1, "one dead letter: {letters:?}");
    assert_eq!(letters[0].server, "replica");
    let seen = c.replica.seen.lock().unwrap().clone();
    let refused_alone = seen
        .iter()
        .filter(|s| s.refused && s.ids == ["poison-21"])
        .count();
    assert!(
        refused_alone >= 1,
        "the poisoned entry was tried alone: {seen:?}"
    );
    // Every other entry is applied, each record once, and nothing refused
    // was half-applied.
    let replica_docs = c.replica.docs.lock().unwrap().clone();
    let mut expected = c.primary.docs.lock().unwrap().clone();
    expected.remove("poison-21");
    assert_eq!(replica_docs, expected);
    let applied: Vec<&Seen> = seen.iter().filter(|s| !s.refused).collect();
    let applied_ids: usize = applied.iter().map(|s| s.ids.len()).sum();
    assert_eq!(
        applied_ids, 59,
        "each good record sent in one applied request"
    );
    // Merged requests happened, within the server's max_batch_size.
    assert!(applied.iter().any(|s| s.ids.len() > 1), "{seen:?}");
    assert!(seen.iter().all(|s| s.ids.len() <= 8), "{seen:?}");
    assert!(c.rep.merge_metrics().requests("replica") > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colliding_ids_are_never_merged_and_per_entry_effects_stay() {
    let c = cluster(1000, true).await;
    catch_up_after(&c, |rep| async move {
        for i in 0..30 {
            write(&rep, "add", &[&format!("a{i}")], "first").await;
        }
        // Duplicate ids across entries: the first record of an id is kept.
        write(&rep, "add", &["a3"], "second").await;
        write(&rep, "add", &["dup", "x1"], "first").await;
        write(&rep, "add", &["dup"], "second").await;
        // An upsert after an add of the same id wins; a later upsert wins
        // over an earlier one.
        write(&rep, "upsert", &["a5"], "upserted").await;
        write(&rep, "upsert", &["u"], "v1").await;
        write(&rep, "upsert", &["u", "w"], "v2").await;
        write(&rep, "upsert", &["u"], "v3").await;
        // A delete, an add of the deleted id, more deletes by id.
        write(&rep, "delete", &["a7", "a8"], "").await;
        write(&rep, "add", &["a7"], "again").await;
        write(&rep, "delete", &["a9"], "").await;
        let mut last = 0;
        for i in 30..60 {
            last = write(&rep, "upsert", &[&format!("a{i}")], "late").await;
        }
        last
    })
    .await;
    let replica_docs = c.replica.docs.lock().unwrap().clone();
    let primary_docs = c.primary.docs.lock().unwrap().clone();
    assert_eq!(replica_docs, primary_docs);
    assert_eq!(replica_docs["a3"], "first");
    assert_eq!(replica_docs["dup"], "first");
    assert_eq!(replica_docs["a5"], "upserted");
    assert_eq!(replica_docs["u"], "v3");
    assert_eq!(replica_docs["a7"], "again");
    assert!(!replica_docs.contains_key("a8") && !replica_docs.contains_key("a9"));
    let seen = c.replica.seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|s| !s.refused),
        "no request with an id twice: {seen:?}"
    );
    assert!(c.rep.dead_letters().list().is_empty());
    assert!(seen.iter().any(|s| s.ids.len() > 1), "{seen:?}");
    assert!(c.rep.merge_metrics().requests("replica") > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_requests_stay_within_max_batch_size_and_the_setting_turns_merging_off() {
    for (merge, max_batch) in [(true, 5u64), (false, 1000)] {
        let c = cluster(max_batch, merge).await;
        catch_up_after(&c, |rep| async move {
            let mut last = 0;
            for i in 0..40 {
                // Two records per entry: a request holds at most two entries.
                last = write(&rep, "add", &[&format!("a{i}"), &format!("b{i}")], "d").await;
            }
            last
        })
        .await;
        let seen = c.replica.seen.lock().unwrap().clone();
        assert!(seen.iter().all(|s| s.op == "add"), "{seen:?}");
        let largest = seen.iter().map(|s| s.ids.len()).max().unwrap_or(0);
        if merge {
            assert_eq!(largest, 4, "at most 5 records, whole entries: {seen:?}");
            assert!(c.rep.merge_metrics().requests("replica") > 0);
        } else {
            assert_eq!(largest, 2, "merging off: one entry per request");
            assert_eq!(seen.len(), 40);
            assert_eq!(c.rep.merge_metrics().requests("replica"), 0);
        }
        assert_eq!(
            *c.replica.docs.lock().unwrap(),
            *c.primary.docs.lock().unwrap()
        );
    }
}
