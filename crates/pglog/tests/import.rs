//! Importing another log's records into an empty log, LSNs kept.

use bytes::Bytes;
use pglog::testing::TestPostgres;
use pglog::{ImportError, PgLog, PgLogOptions};
use wal::{Log, LogRead};

async fn process(pg: &TestPostgres) -> PgLog {
    PgLog::connect(&pg.url("postgres"), PgLogOptions::default())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_records_keep_their_lsns_and_appends_go_on_after_them() {
    let pg = TestPostgres::start();
    let log = process(&pg).await;
    log.begin_import(41).await.unwrap();
    let records = vec![
        (41, Bytes::from_static(b"a")),
        (42, Bytes::from_static(b"b")),
    ];
    log.import(&records).await.unwrap();
    match log.import(&[(44, Bytes::from_static(b"gap"))]).await {
        Err(ImportError::Gap { expected, found }) => assert_eq!((expected, found), (43, 44)),
        other => panic!("expected a gap, got {other:?}"),
    }
    assert_eq!(log.append(Bytes::from_static(b"c")).await.unwrap(), 43);
    // Another process sees the same log.
    let other = process(&pg).await;
    assert_eq!((other.first_lsn(), other.last_lsn()), (41, 43));
    let mut reader = other.read_from(41);
    let mut got = Vec::new();
    while let Some(r) = reader.try_next().await.unwrap() {
        got.push((r.lsn, r.payload));
    }
    assert_eq!(
        got,
        vec![
            (41, Bytes::from_static(b"a")),
            (42, Bytes::from_static(b"b")),
            (43, Bytes::from_static(b"c"))
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_into_a_log_that_holds_anything_is_refused() {
    let pg = TestPostgres::start();
    let log = process(&pg).await;
    log.store_state("applied", b"{}").await.unwrap();
    match log.begin_import(1).await {
        Err(ImportError::NotEmpty(what)) => assert!(what.contains("1 state documents"), "{what}"),
        other => panic!("expected NotEmpty, got {other:?}"),
    }
    let pg2 = TestPostgres::start();
    let log2 = process(&pg2).await;
    log2.append(Bytes::from_static(b"x")).await.unwrap();
    match log2.begin_import(1).await {
        Err(ImportError::NotEmpty(what)) => assert!(what.contains("1 entries"), "{what}"),
        other => panic!("expected NotEmpty, got {other:?}"),
    }
}
