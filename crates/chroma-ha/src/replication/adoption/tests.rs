//! Adoption against in-process fake Chroma servers that count listings.

use super::*;
use crate::backend::Backends;
use crate::config::{Config, FsyncPolicy};
use crate::replication::Replicator;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A fake server: databases named `missing…` answer 404 (unless `exists`
/// is set); others hold one collection named after the server.
struct Fake {
    name: &'static str,
    listings: AtomicUsize,
    exists: AtomicBool,
}

async fn heartbeat() -> Json<serde_json::Value> {
    Json(serde_json::json!({"nanosecond heartbeat": 1}))
}

async fn list(
    State(fake): State<Arc<Fake>>,
    Path((tenant, database)): Path<(String, String)>,
) -> (http::StatusCode, Json<serde_json::Value>) {
    fake.listings.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    if database.starts_with("missing") && !fake.exists.load(Ordering::SeqCst) {
        return (
            http::StatusCode::NOT_FOUND,
            Json(serde_json::json!({"error": "NotFoundError", "message": "no database"})),
        );
    }
    let id = format!(
        "0195d1e2-0000-4000-8000-00000000000{}",
        fake.name.len() % 10
    );
    (
        http::StatusCode::OK,
        Json(serde_json::json!([{
            "id": id, "name": "shared", "tenant": tenant, "database": database,
            "metadata": null, "configuration_json": {}, "dimension": null,
        }])),
    )
}

async fn fake_chroma(name: &'static str) -> (String, Arc<Fake>) {
    let fake = Arc::new(Fake {
        name,
        listings: AtomicUsize::new(0),
        exists: AtomicBool::new(false),
    });
    let app = Router::new()
        .route("/api/v2/heartbeat", get(heartbeat))
        .route("/api/v2/tenants/{t}/databases/{d}/collections", get(list))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, fake)
}

/// A gateway core over a fake primary and replica; only the servers in
/// `healthy` are healthy (the others were never probed).
async fn setup(healthy: &[usize]) -> (Arc<Replicator>, Arc<Fake>, Arc<Fake>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (primary_url, primary) = fake_chroma("primary").await;
    let (replica_url, replica) = fake_chroma("replica").await;
    let mut config = Config::with_servers(&primary_url, &[&replica_url]).unwrap();
    config.data_dir = dir.path().to_path_buf();
    config.wal.fsync = FsyncPolicy::Never;
    let backends = Arc::new(Backends::new(&config).unwrap());
    for index in healthy {
        backends.all()[*index].health().record_probe_success();
    }
    let rep = Replicator::start(&config, backends, None).await.unwrap();
    (rep, primary, replica, dir)
}

fn listings(fake: &Fake) -> usize {
    fake.listings.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_requests_for_a_scope_list_each_server_once_and_all_wait_for_it() {
    let (rep, primary, replica, _dir) = setup(&[0, 1]).await;
    let calls = (0..8).map(|_| {
        let rep = rep.clone();
        tokio::spawn(async move {
            rep.ensure_adopted("t", "d").await;
            // Every caller returns only once the scope is adopted.
            rep.idmap().len()
        })
    });
    for known in futures::future::join_all(calls).await {
        assert_eq!(known.unwrap(), 1, "returned before the adoption finished");
    }
    assert_eq!((listings(&primary), listings(&replica)), (1, 1));
    rep.ensure_adopted("t", "d").await;
    assert_eq!((listings(&primary), listings(&replica)), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_server_causes_no_listing_per_request_and_is_adopted_once_healthy() {
    let (rep, primary, replica, _dir) = setup(&[0]).await;
    for _ in 0..10 {
        rep.ensure_adopted("t", "d").await;
    }
    assert_eq!(listings(&primary), 1, "the primary is listed once");
    assert_eq!(listings(&replica), 0, "the unhealthy replica is not listed");
    rep.backends().all()[1].health().record_probe_success();
    for _ in 0..5 {
        rep.ensure_adopted("t", "d").await;
    }
    assert_eq!(
        listings(&replica),
        1,
        "listed once it is healthy, then not again"
    );
    assert_eq!(listings(&primary), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_no_server_has_is_not_remembered() {
    let (rep, primary, replica, _dir) = setup(&[0, 1]).await;
    rep.ensure_adopted("t", "missing-db").await;
    assert!(!rep.adopted.contains("t", "missing-db"));
    assert_eq!(rep.adopted.len(), 0);
    assert_eq!((listings(&primary), listings(&replica)), (1, 1));
    // Created later (behind the gateway's back): its next reference adopts it.
    primary.exists.store(true, Ordering::SeqCst);
    replica.exists.store(true, Ordering::SeqCst);
    rep.ensure_adopted("t", "missing-db").await;
    assert_eq!((listings(&primary), listings(&replica)), (2, 2));
    assert!(rep.adopted.contains("t", "missing-db"));
    assert_eq!(rep.idmap().len(), 1);
}

#[tokio::test]
async fn the_set_of_adopted_scopes_stays_within_its_cap_and_evicts_the_least_recently_used() {
    let adoptions = Adoptions::new(3);
    let listed = Mutex::new(Vec::new());
    let adopt = |database: &'static str| {
        let listed = &listed;
        let adoptions = &adoptions;
        async move {
            adoptions
                .ensure(
                    "t",
                    database,
                    1,
                    |_| true,
                    |_| async move {
                        listed.lock().unwrap().push(database);
                        Listing::Listed
                    },
                )
                .await
        }
    };
    for database in ["a", "b", "c"] {
        assert!(adopt(database).await);
    }
    assert!(
        !adopt("a").await,
        "a is adopted already (and now recently used)"
    );
    assert!(adopt("d").await);
    assert_eq!(adoptions.len(), 3, "the cap holds");
    assert!(
        !adoptions.contains("t", "b"),
        "b was the least recently used"
    );
    assert!(!adopt("a").await, "a was kept");
    assert!(adopt("b").await, "an evicted scope is listed again");
    assert_eq!(adoptions.len(), 3);
    assert_eq!(*listed.lock().unwrap(), ["a", "b", "c", "d", "b"]);
    adoptions.clear();
    assert_eq!(adoptions.len(), 0);
}
