//! Shared state documents against a real PostgreSQL: written whole, read
//! back by another process, and fenced once a later epoch has begun.

use std::time::Duration;

use pglog::testing::TestPostgres;
use pglog::{Claim, PgLog, PgLogOptions};
use wal::WalError;

const LEASE: Duration = Duration::from_millis(500);

async fn process(pg: &TestPostgres) -> PgLog {
    PgLog::connect(&pg.url("postgres"), PgLogOptions::default())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_written_by_one_process_is_read_whole_by_another() {
    let pg = TestPostgres::start();
    let (a, b) = (process(&pg).await, process(&pg).await);
    assert_eq!(b.load_state("applied").await.unwrap(), None);
    a.store_state("applied", b"{\"v\":1}").await.unwrap();
    a.store_state("applied", b"{\"v\":2}").await.unwrap();
    a.store_state("collections", b"[]").await.unwrap();
    assert_eq!(
        b.load_state("applied").await.unwrap().as_deref(),
        Some(&b"{\"v\":2}"[..])
    );
    assert_eq!(
        b.load_state("collections").await.unwrap().as_deref(),
        Some(&b"[]"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leaders_state_write_is_refused_and_leaves_its_successors_value() {
    let pg = TestPostgres::start();
    let (a, b) = (process(&pg).await, process(&pg).await);
    let Claim::Leader(first) = a.claim_lease("a", "a:1", LEASE).await.unwrap() else {
        panic!("a leads first");
    };
    a.fence(first.epoch);
    a.store_state("applied", b"a's").await.unwrap();
    tokio::time::sleep(LEASE + Duration::from_millis(200)).await;
    let Claim::Leader(second) = b.claim_lease("b", "b:1", LEASE).await.unwrap() else {
        panic!("b takes the expired lease");
    };
    b.fence(second.epoch);
    b.store_state("applied", b"b's").await.unwrap();
    match a.store_state("applied", b"a's again").await {
        Err(WalError::Fenced { held, current }) => {
            assert_eq!((held, current), (first.epoch, second.epoch))
        }
        other => panic!("expected Fenced, got {other:?}"),
    }
    assert_eq!(
        a.load_state("applied").await.unwrap().as_deref(),
        Some(&b"b's"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_are_listed_by_prefix_in_key_order_and_removed_one_by_one() {
    let pg = TestPostgres::start();
    let log = process(&pg).await;
    for key in ["letters/2", "letters/1", "letters_x", "other"] {
        log.store_state(key, key.as_bytes()).await.unwrap();
    }
    let keys = |v: Vec<(String, bytes::Bytes)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(
        keys(log.list_state("letters/").await.unwrap()),
        ["letters/1", "letters/2"],
        "LIKE wildcards in the prefix are taken literally"
    );
    assert_eq!(
        keys(log.list_state("letters_").await.unwrap()),
        ["letters_x"]
    );
    log.remove_state("letters/1").await.unwrap();
    log.remove_state("letters/1").await.unwrap();
    assert_eq!(
        keys(log.list_state("letters").await.unwrap()),
        ["letters/2", "letters_x"]
    );
}
