//! What a client is told when its write's execution ends in doubt (Chroma
//! answers 500 "database is locked") and the replays that settle it find
//! the effect already there, apply it, or are refused by every server.
//! Against in-process fake Chroma servers, so the in-doubt answer comes
//! every time; the history test (`tests/history.rs`) found both bugs
//! against real Chroma.

mod fake_kit;

use axum::extract::{Path, State};
use axum::routing::{delete, get};
use axum::Router;
use bytes::Bytes;
use chroma_ha::replication::record::{decode, LogRecord, Refusal};
use chroma_ha::replication::Replicator;
use http::{HeaderMap, Method, StatusCode};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wal::{Log as _, LogRead as _};

/// What a fake server answers a database delete after its first
/// "database is locked".
#[derive(Clone, Copy)]
enum Then {
    /// 200: the database existed.
    Deleted,
    /// 404: there was no such database.
    NotFound,
    /// 400: a Chroma refusal (what a rename into a taken name gets).
    Refused,
}

/// A fake server whose database deletes answer "database is locked" on the
/// first call, then as `then` says.
struct Fake {
    then: Then,
    deletes: AtomicU32,
}

async fn delete_database(
    State(fake): State<Arc<Fake>>,
    Path((_t, d)): Path<(String, String)>,
) -> (StatusCode, String) {
    let n = fake.deletes.fetch_add(1, Ordering::SeqCst);
    if n == 0 {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"error":"InternalError","message":"Database error: error returned from database: (code: 5) database is locked"}"#.into(),
        );
    }
    match fake.then {
        Then::Deleted => (StatusCode::OK, "{}".into()),
        Then::NotFound => (
            StatusCode::NOT_FOUND,
            format!(r#"{{"error":"NotFoundError","message":"Database [{d}] not found"}}"#),
        ),
        Then::Refused => (
            StatusCode::BAD_REQUEST,
            r#"{"error":"InvalidArgumentError","message":"refused"}"#.into(),
        ),
    }
}

async fn fake_chroma(then: Then) -> (String, Arc<Fake>) {
    let fake = Arc::new(Fake {
        then,
        deletes: AtomicU32::new(0),
    });
    let app = Router::new()
        .route("/api/v2/heartbeat", get(fake_kit::heartbeat))
        .route("/api/v2/tenants/{t}/databases/{d}", delete(delete_database))
        .with_state(fake.clone());
    (fake_kit::serve(app).await, fake)
}

async fn replicator(primary: &str, replica: &str, dir: &std::path::Path) -> Arc<Replicator> {
    let mut config = fake_kit::config_for(primary, replica, dir);
    config.health.failure_threshold = 1_000_000;
    config.replication.retry_base = Duration::from_millis(10);
    config.replication.retry_cap = Duration::from_millis(40);
    fake_kit::start(&config).await
}

/// Deletes database `hdb1` through the gateway once both fakes answer as
/// `then` says: the status and body the client gets, and the replicator
/// once both servers have been sent it twice.
async fn delete_hdb1(then: Then) -> (StatusCode, String, Arc<Replicator>, fake_kit::StateDir) {
    let dir = fake_kit::StateDir::new();
    let (primary, p) = fake_chroma(then).await;
    let (replica, r) = fake_chroma(then).await;
    let rep = replicator(&primary, &replica, dir.path()).await;
    let answer = rep
        .write(
            Method::DELETE,
            "/api/v2/tenants/default_tenant/databases/hdb1".into(),
            None,
            Bytes::new(),
            HeaderMap::new(),
        )
        .await;
    let (status, body) = match answer {
        Ok(a) => (
            a.response.status,
            String::from_utf8_lossy(&a.response.body).into_owned(),
        ),
        Err(e) => (e.status, String::from_utf8_lossy(&e.body()).into_owned()),
    };
    // Both servers settle it (the entry is committed either way).
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.deletes.load(Ordering::SeqCst) < 2 || r.deletes.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "the delete was never replayed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (status, body, rep, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_that_ended_in_doubt_and_then_found_nothing_to_delete_is_answered_outcome_unknown_not_success(
) {
    let (status, body, _, _) = delete_hdb1(Then::NotFound).await;
    assert_eq!(
        status,
        StatusCode::GATEWAY_TIMEOUT,
        "Chroma would have answered 404 had the first attempt not been in doubt, so a 200 \
         is a lie; got {status} {body}"
    );
    assert!(body.contains("outcome unknown"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_that_ended_in_doubt_and_then_applied_is_answered_with_the_servers_success() {
    let (status, body, _, _) = delete_hdb1(Then::Deleted).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_in_doubt_that_every_server_refuses_is_recorded_as_refused_and_leaves_no_dead_letters(
) {
    let (status, body, rep, _dir) = delete_hdb1(Then::Refused).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "no server applied it: the client gets Chroma's refusal; got {status} {body}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !rep.dead_letters().is_empty() {
        assert!(
            Instant::now() < deadline,
            "dead letters left open: {:?}",
            rep.dead_letters().list()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The refusal is durable in the log, so a restart skips the entry too.
    let mut reader = rep.wal().read_from(1);
    let mut decisions = Vec::new();
    while let Ok(Some(rec)) = tokio::time::timeout(Duration::from_millis(500), reader.try_next())
        .await
        .unwrap_or(Ok(None))
    {
        if let Ok(LogRecord::Decision { lsn, refusal }) = decode(&rec.payload) {
            decisions.push((lsn, refusal));
        }
    }
    assert_eq!(decisions, vec![(1, Refusal::Rejected)]);
}
