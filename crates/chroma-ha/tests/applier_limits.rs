//! The applier's give-up rule against in-process fake Chroma servers: an
//! entry that keeps failing transiently on a healthy server is
//! dead-lettered after `replication.give_up_after` (and at least 5 tries),
//! writes that do not conflict with it keep moving meanwhile, a later
//! conflicting write is applied once it is given up, and time the server
//! spends unhealthy does not count toward the limit.

mod fake_kit;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use chroma_ha::config::Config;
use chroma_ha::replication::Replicator;
use http::{HeaderMap, Method};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use wal::Log as _;

/// One add a fake server got: collection, first id, first document, when,
/// and the status it answered.
#[derive(Debug, Clone)]
struct Call {
    collection: String,
    id: String,
    doc: String,
    at: SystemTime,
    instant: Instant,
    status: u16,
}

/// A fake server: answers every add with 201, except (when `poisonous`)
/// an add whose document is `"poison"`, which gets a 500 whose body is not
/// Chroma's error JSON: transient, forever.
#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<Call>>,
    poisonous: bool,
    /// Bytes of metadata padding in the collections it creates.
    pad: usize,
    /// Collections created, for their ids.
    created: std::sync::atomic::AtomicU64,
    /// Distinguishes the ids of different fakes.
    tag: u64,
}

impl Fake {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

async fn add(
    State(fake): State<Arc<Fake>>,
    Path((_t, _d, collection)): Path<(String, String, String)>,
    body: Bytes,
) -> (http::StatusCode, String) {
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let id = value["ids"][0].as_str().unwrap_or_default().to_string();
    let doc = value["documents"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let poisoned = fake.poisonous && doc == "poison";
    let status = if poisoned {
        http::StatusCode::INTERNAL_SERVER_ERROR
    } else {
        http::StatusCode::CREATED
    };
    fake.calls.lock().unwrap().push(Call {
        collection,
        id,
        doc,
        at: SystemTime::now(),
        instant: Instant::now(),
        status: status.as_u16(),
    });
    let body = if poisoned {
        "upstream trouble, try later".to_string()
    } else {
        "{}".to_string()
    };
    (status, body)
}

async fn create_collection(
    State(fake): State<Arc<Fake>>,
    Path((tenant, database)): Path<(String, String)>,
    body: Bytes,
) -> (http::StatusCode, Json<serde_json::Value>) {
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let n = fake
        .created
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let id = format!("0195d1e2-0000-4000-{:04x}-{n:012x}", 0x8000 + fake.tag);
    let collection = serde_json::json!({
        "id": id,
        "name": value["name"],
        "metadata": { "pad": "p".repeat(fake.pad) },
        "configuration_json": {},
        "dimension": null,
        "tenant": tenant,
        "database": database,
        "log_position": 0,
        "version": 0,
    });
    (http::StatusCode::OK, Json(collection))
}

async fn fake_chroma(poisonous: bool) -> (String, Arc<Fake>) {
    fake_chroma_with(Fake {
        poisonous,
        ..Fake::default()
    })
    .await
}

async fn fake_chroma_with(fake: Fake) -> (String, Arc<Fake>) {
    let fake = Arc::new(fake);
    let app = Router::new()
        .route("/api/v2/heartbeat", get(fake_kit::heartbeat))
        .route(
            "/api/v2/tenants/{t}/databases/{d}/collections",
            post(create_collection),
        )
        .route(
            "/api/v2/tenants/{t}/databases/{d}/collections/{c}/add",
            post(add),
        )
        .with_state(fake.clone());
    (fake_kit::serve(app).await, fake)
}

const GIVE_UP_AFTER: Duration = Duration::from_millis(1500);
const RETRY_CAP: Duration = Duration::from_millis(40);

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
    // The 500s must not make the replica unhealthy: the give-up clock only
    // runs while the server is healthy.
    config.health.failure_threshold = 1_000_000;
    config.replication.give_up_after = GIVE_UP_AFTER;
    config.replication.retry_base = Duration::from_millis(10);
    config.replication.retry_cap = RETRY_CAP;
    tune(&mut config);
    fake_kit::start(&config).await
}

const COL_A: &str = "0195d1e2-0000-4000-8000-00000000000a";
const COL_B: &str = "0195d1e2-0000-4000-8000-00000000000b";

async fn write(rep: &Arc<Replicator>, collection: &str, id: &str, doc: &str) -> u64 {
    let path = format!("/api/v2/tenants/t/databases/d/collections/{collection}/add");
    let body = format!(r#"{{"ids":["{id}"],"embeddings":[[1.0,2.0]],"documents":["{doc}"]}}"#);
    let answer = rep
        .write(
            Method::POST,
            path,
            Some("application/json".into()),
            Bytes::from(body),
            HeaderMap::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        answer.server,
        0,
        "the primary executes; answer {:?}, health {:?}",
        answer.response.status,
        rep.backends()
            .all()
            .iter()
            .map(|b| b.health().snapshot())
            .collect::<Vec<_>>()
    );
    assert!(answer.response.status.is_success());
    answer.lsn.expect("a logged write")
}

async fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn applied(calls: &[Call], collection: &str, id: &str, doc: &str) -> Option<Call> {
    calls
        .iter()
        .find(|c| c.collection == collection && c.id == id && c.doc == doc && c.status == 201)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_that_keeps_failing_on_a_healthy_server_is_dead_lettered_after_give_up_after_while_other_writes_keep_moving(
) {
    let dir = fake_kit::StateDir::new();
    let (primary, _) = fake_chroma(false).await;
    let (replica, seen) = fake_chroma(true).await;
    let rep = replicator(&primary, &replica, dir.path()).await;

    let poison = write(&rep, COL_A, "stuck", "poison").await;
    // Writes that do not conflict with it: another record, another collection.
    write(&rep, COL_A, "other", "fine").await;
    write(&rep, COL_B, "stuck", "fine").await;
    // A write that conflicts with it: the same record.
    let after = write(&rep, COL_A, "stuck", "fine").await;
    assert!(after > poison);

    let moved = wait_until(
        "the non-conflicting writes on the replica",
        GIVE_UP_AFTER * 4,
        || {
            let calls = seen.calls();
            Some((
                applied(&calls, COL_A, "other", "fine")?,
                applied(&calls, COL_B, "stuck", "fine")?,
            ))
        },
    )
    .await;
    let letter = wait_until("a dead letter", GIVE_UP_AFTER * 10, || {
        rep.dead_letters().list().into_iter().next()
    })
    .await;
    let held = wait_until(
        "the conflicting write on the replica",
        GIVE_UP_AFTER * 4,
        || applied(&seen.calls(), COL_A, "stuck", "fine"),
    )
    .await;

    assert_eq!(letter.server, rep.backends().all()[1].name(), "{letter:?}");
    assert_eq!(letter.lsn, poison, "{letter:?}");
    assert!(letter.error.contains("GaveUp"), "{letter:?}");
    assert_eq!(letter.status, 500, "the server's last status: {letter:?}");
    let calls = seen.calls();
    let tries: Vec<&Call> = calls.iter().filter(|c| c.doc == "poison").collect();
    assert!(tries.len() >= 5, "at least 5 tries, got {}", tries.len());
    let first = tries[0].instant;
    let last = tries.last().unwrap().instant;
    assert!(
        last.duration_since(first) + RETRY_CAP >= GIVE_UP_AFTER,
        "given up after only {:?} of failures",
        last.duration_since(first)
    );
    assert_eq!(rep.dead_letters().list().len(), 1, "one dead letter");
    // The other writes were applied while the entry was still being tried...
    let letter_at = SystemTime::UNIX_EPOCH + Duration::from_secs_f64(letter.at);
    for c in [&moved.0, &moved.1] {
        assert!(
            c.instant < last,
            "{c:?} waited for the failing entry to be given up"
        );
    }
    // ...and the conflicting one only after it was given up.
    assert!(
        held.instant > last && held.at + Duration::from_millis(50) >= letter_at,
        "the conflicting write reached the replica before the failing entry was given up"
    );
    assert!(
        calls.iter().all(|c| c.doc != "poison" || c.status == 500),
        "the poison never succeeded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_a_server_spends_unhealthy_does_not_count_toward_giving_up() {
    let dir = fake_kit::StateDir::new();
    let (primary, _) = fake_chroma(false).await;
    let (replica, seen) = fake_chroma(true).await;
    let rep = replicator(&primary, &replica, dir.path()).await;

    let poison = write(&rep, COL_A, "stuck", "poison").await;
    // A few quick failures while healthy, then the server is out of
    // service (drained) for twice the limit.
    let first = wait_until("five tries", Duration::from_secs(10), || {
        let calls = seen.calls();
        let tries: Vec<&Call> = calls.iter().filter(|c| c.doc == "poison").collect();
        (tries.len() >= 5).then(|| tries[0].instant)
    })
    .await;
    rep.set_draining(1, true).await.unwrap();
    let drained_at = Instant::now();
    let failing_before = drained_at.duration_since(first);
    assert!(
        failing_before < GIVE_UP_AFTER / 2,
        "setup: the drain came too late ({failing_before:?})"
    );
    tokio::time::sleep(GIVE_UP_AFTER * 2).await;
    assert!(
        rep.dead_letters().list().is_empty(),
        "given up while the server was out of service"
    );
    rep.set_draining(1, false).await.unwrap();
    let back_at = Instant::now();
    let letter = wait_until("a dead letter", GIVE_UP_AFTER * 10, || {
        rep.dead_letters().list().into_iter().next()
    })
    .await;
    let after_back = back_at.elapsed();
    assert_eq!(letter.lsn, poison);
    // The give-up clock counts only healthy time: what it had before the
    // drain (at most `failing_before` plus one counted delay), and what
    // it needs after (less one delay counted before it is slept).
    let needed_after = GIVE_UP_AFTER
        .saturating_sub(failing_before)
        .saturating_sub(RETRY_CAP * 2);
    assert!(
        after_back >= needed_after,
        "given up {after_back:?} after the server came back; with {failing_before:?} \
         of failures before it went out of service, at least {needed_after:?} were needed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_servers_log_cursor_catches_up_with_what_it_applied_once_the_log_is_idle() {
    let dir = fake_kit::StateDir::new();
    let (primary, _) = fake_chroma(false).await;
    let (replica, _) = fake_chroma(false).await;
    let rep = replicator_with(&primary, &replica, dir.path(), |c| {
        c.wal.segment_bytes = 4096;
    })
    .await;
    // One write, then a pause, so that the log cursors move at the next
    // commit; then a quick burst, whose last commits come less than the
    // cursor interval (1 s) after that move. Then the log is idle.
    write(&rep, COL_A, "first", "fine").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let doc = "x".repeat(1000);
    for i in 0..24 {
        write(&rep, COL_A, &format!("burst{i}"), &doc).await;
    }
    let last = rep.wal().last_lsn();
    let cursors = wait_until(
        "the log cursors at the log's end",
        Duration::from_secs(15),
        || {
            let cursors = rep.wal().cursors();
            cursors.values().all(|c| *c >= last).then_some(cursors)
        },
    )
    .await;
    assert_eq!(cursors.len(), 2, "{cursors:?}");
    assert!(
        rep.wal().first_lsn() > 1,
        "the applied segments were deleted (first LSN {})",
        rep.wal().first_lsn()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_is_answered_by_its_executor_even_when_another_server_applies_it_first() {
    let dir = fake_kit::StateDir::new();
    // The executor's answers are large (4 MiB of metadata), so rewriting
    // them for the client takes a while; the replica's are small and quick.
    let (primary, _) = fake_chroma_with(Fake {
        pad: 4 << 20,
        tag: 1,
        ..Fake::default()
    })
    .await;
    let (replica, _) = fake_chroma_with(Fake {
        tag: 2,
        ..Fake::default()
    })
    .await;
    let rep = replicator(&primary, &replica, dir.path()).await;
    for i in 0..5 {
        let answer = rep
            .write(
                Method::POST,
                "/api/v2/tenants/t/databases/d/collections".to_string(),
                Some("application/json".into()),
                Bytes::from(format!(r#"{{"name":"answered{i}"}}"#)),
                HeaderMap::new(),
            )
            .await
            .unwrap();
        assert!(answer.response.status.is_success());
        assert_eq!(
            answer.server, 0,
            "create {i}: the client got the replica's answer, not its executor's"
        );
        let body: serde_json::Value = serde_json::from_slice(&answer.response.body).unwrap();
        assert_eq!(
            body["metadata"]["pad"].as_str().map(str::len),
            Some(4 << 20)
        );
    }
}
