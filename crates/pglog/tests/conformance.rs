//! One set of test functions for every log behind [`wal::Log`]: each
//! `check_*` function takes a way to open the log (again) and is run on the
//! file log (`wal::Wal`, in a temporary directory) and on the PostgreSQL
//! log (`pglog::PgLog`, in a throwaway cluster of the test's own). Then the
//! PostgreSQL log's own cases: several processes appending to one log, a
//! schema newer than the build, and PostgreSQL going away.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pglog::testing::TestPostgres;
use pglog::{PgLog, PgLogOptions};
use wal::{Log, LogRead, Wal, WalError, WalOptions};

/// Opens the log under test (again: the same log each time).
type Open<L> = Box<dyn Fn() -> Pin<Box<dyn Future<Output = L>>>>;

fn payload(i: usize) -> Bytes {
    Bytes::from(format!("record {i} {}", "x".repeat(i % 97)))
}

async fn next_within<R: LogRead>(reader: &mut R, what: &str) -> wal::Record {
    tokio::time::timeout(Duration::from_secs(10), reader.next())
        .await
        .unwrap_or_else(|_| panic!("no record within 10 s: {what}"))
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

async fn check_appends_get_dense_lsns_and_read_back_in_order<L: Log>(open: Open<L>) {
    let log = open().await;
    for i in 1..=50 {
        assert_eq!(log.append(payload(i)).await.unwrap(), i as u64);
    }
    assert_eq!(log.last_lsn(), 50);
    assert_eq!(log.first_lsn(), 1);
    let mut reader = log.read_from(1);
    for i in 1..=50 {
        let r = next_within(&mut reader, "reading back").await;
        assert_eq!((r.lsn, r.payload), (i as u64, payload(i)));
    }
    assert!(reader.try_next().await.unwrap().is_none());
    let mut middle = log.read_from(31);
    assert_eq!(next_within(&mut middle, "from 31").await.lsn, 31);
}

async fn check_a_reader_at_the_end_waits_for_new_records<L: Log>(open: Open<L>) {
    let log = Arc::new(open().await);
    log.append(payload(1)).await.unwrap();
    let mut reader = log.read_from(2);
    let writer = log.clone();
    let appended = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        writer.append(payload(2)).await.unwrap()
    });
    let r = next_within(&mut reader, "tailing").await;
    assert_eq!((r.lsn, r.payload), (2, payload(2)));
    assert_eq!(appended.await.unwrap(), 2);
}

async fn check_concurrent_appenders_get_every_lsn_once_and_a_reader_sees_them_in_order<L: Log>(
    open: Open<L>,
) {
    let log = Arc::new(open().await);
    let (tasks, each) = (32usize, 40usize);
    let reader_log = log.clone();
    let reading = tokio::spawn(async move {
        let mut reader = reader_log.read_from(1);
        let mut seen = Vec::new();
        while seen.len() < tasks * each {
            seen.push(next_within(&mut reader, "reading while appending").await);
        }
        seen
    });
    let mut appenders = Vec::new();
    for t in 0..tasks {
        let log = log.clone();
        appenders.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..each {
                let p = Bytes::from(format!("{t}/{i}"));
                got.push((log.append(p.clone()).await.unwrap(), p));
            }
            got
        }));
    }
    let mut acknowledged = Vec::new();
    for a in appenders {
        acknowledged.extend(a.await.unwrap());
    }
    let seen = reading.await.unwrap();
    let lsns: Vec<u64> = seen.iter().map(|r| r.lsn).collect();
    assert_eq!(lsns, (1..=(tasks * each) as u64).collect::<Vec<_>>());
    for (lsn, p) in acknowledged {
        assert_eq!(seen[lsn as usize - 1].payload, p, "LSN {lsn}");
    }
}

async fn check_records_survive_a_reopen_and_consumed_ones_are_deleted<L: Log>(open: Open<L>) {
    {
        let log = open().await;
        for i in 1..=20 {
            log.append(payload(i)).await.unwrap();
        }
        log.commit_cursor("a", 12).await.unwrap();
        log.commit_cursor("b", 15).await.unwrap();
    }
    let log = open().await;
    assert_eq!(log.last_lsn(), 20);
    assert_eq!(log.cursors().get("a"), Some(&12));
    assert_eq!(log.cursors().get("b"), Some(&15));
    let mut reader = log.read_from(13);
    assert_eq!(
        next_within(&mut reader, "after reopen").await.payload,
        payload(13)
    );
    // Once every cursor is past them, records may go; the first LSN never
    // passes the lowest cursor + 1.
    log.commit_cursor("a", 20).await.unwrap();
    log.remove_cursor("b").await.unwrap();
    let first = log.first_lsn();
    assert!(first <= 21, "first LSN {first} past the lowest cursor + 1");
    assert!(!log.cursors().contains_key("b"));
    log.append(payload(21)).await.unwrap();
    let mut gone = log.read_from(1);
    if first > 1 {
        match gone.next().await {
            Err(WalError::Truncated { requested: 1, .. }) => {}
            other => panic!("reading a deleted record: {other:?}"),
        }
    }
}

async fn check_a_cursor_cannot_point_past_the_log<L: Log>(open: Open<L>) {
    let log = open().await;
    log.append(payload(1)).await.unwrap();
    match log.commit_cursor("c", 2).await {
        Err(WalError::CursorOutOfRange { lsn: 2, .. }) => {}
        other => panic!("cursor past the end: {other:?}"),
    }
    match log.commit_cursor("bad name!", 1).await {
        Err(WalError::InvalidCursorName(_)) => {}
        other => panic!("bad cursor name: {other:?}"),
    }
    log.commit_cursor("c", 1).await.unwrap();
}

async fn check_a_full_log_refuses_appends_but_not_uncapped_ones<L: Log>(open: Open<L>) {
    let log = open().await;
    let big = Bytes::from(vec![7u8; 16 << 10]);
    let mut refused = None;
    for _ in 0..64 {
        if let Err(e) = log.append(big.clone()).await {
            refused = Some(e);
            break;
        }
    }
    match refused {
        Some(WalError::LogFull { .. }) => {}
        other => panic!("expected LogFull within 1 MiB of appends: {other:?}"),
    }
    let last = log.last_lsn();
    assert_eq!(
        log.append_uncapped(Bytes::from_static(b"decision"))
            .await
            .unwrap(),
        last + 1
    );
}

// ---------------------------------------------------------------------------
// The two logs.

/// Options that make the file log hit its cap after a few hundred KiB.
fn file_log(dir: Arc<tempfile::TempDir>) -> Open<Wal> {
    Box::new(move || {
        let dir = dir.clone();
        Box::pin(async move {
            let options = WalOptions {
                segment_bytes: 64 << 10,
                max_bytes: 512 << 10,
                ..WalOptions::default()
            };
            Wal::open(dir.path().join("wal"), options).unwrap().0
        })
    })
}

fn pg_options() -> PgLogOptions {
    PgLogOptions {
        max_bytes: 512 << 10,
        poll_interval: Duration::from_millis(10),
        op_timeout: Duration::from_secs(3),
        resolve_for: Duration::from_secs(3),
        delete_batch: 1,
        ..PgLogOptions::default()
    }
}

fn pg_log(url: String) -> Open<PgLog> {
    Box::new(move || {
        let url = url.clone();
        Box::pin(async move { PgLog::connect(&url, pg_options()).await.unwrap() })
    })
}

/// Runs `check` on a file log and on a PostgreSQL log.
macro_rules! on_both_logs {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_the_file_log() {
                let dir = Arc::new(tempfile::tempdir().unwrap());
                super::$name(file_log(dir)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_the_postgres_log() {
                let pg = TestPostgres::start();
                super::$name(pg_log(pg.url("postgres"))).await;
            }
        }
    )*};
}

on_both_logs!(
    check_appends_get_dense_lsns_and_read_back_in_order,
    check_a_reader_at_the_end_waits_for_new_records,
    check_concurrent_appenders_get_every_lsn_once_and_a_reader_sees_them_in_order,
    check_records_survive_a_reopen_and_consumed_ones_are_deleted,
    check_a_cursor_cannot_point_past_the_log,
    check_a_full_log_refuses_appends_but_not_uncapped_ones,
);

// ---------------------------------------------------------------------------
// The PostgreSQL log's own cases.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_processes_appending_to_one_log_get_gap_free_lsns_and_no_reader_skips_a_late_commit(
) {
    let pg = TestPostgres::start();
    let url = pg.url("postgres");
    // Each `PgLog` is what one gateway process would hold: its own pool
    // and its own writer, so their transactions race for the head row.
    let (processes, tasks, each) = (4usize, 8usize, 25usize);
    let total = processes * tasks * each;
    let mut logs = Vec::new();
    for _ in 0..processes {
        logs.push(Arc::new(PgLog::connect(&url, pg_options()).await.unwrap()));
    }
    // A reader in another "process" follows along while they append.
    let follower = Arc::new(PgLog::connect(&url, pg_options()).await.unwrap());
    let reading = tokio::spawn(async move {
        let mut reader = follower.read_from(1);
        let mut lsns = Vec::new();
        while lsns.len() < total {
            lsns.push(
                next_within(&mut reader, "following other processes")
                    .await
                    .lsn,
            );
        }
        lsns
    });
    let mut appenders = Vec::new();
    for (p, log) in logs.iter().enumerate() {
        for t in 0..tasks {
            let log = log.clone();
            appenders.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for i in 0..each {
                    let body = Bytes::from(format!("{p}/{t}/{i}"));
                    got.push(log.append(body).await.unwrap());
                }
                got
            }));
        }
    }
    let mut acknowledged = BTreeSet::new();
    for a in appenders {
        for lsn in a.await.unwrap() {
            assert!(acknowledged.insert(lsn), "LSN {lsn} given twice");
        }
    }
    assert_eq!(
        acknowledged,
        (1..=total as u64).collect::<BTreeSet<_>>(),
        "LSNs are gap-free across processes"
    );
    let seen = reading.await.unwrap();
    assert_eq!(
        seen,
        (1..=total as u64).collect::<Vec<_>>(),
        "the reader saw every LSN once, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_refuses_a_log_whose_schema_is_newer_than_it_knows() {
    let pg = TestPostgres::start();
    let url = pg.url("postgres");
    drop(PgLog::connect(&url, pg_options()).await.unwrap());
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .execute("INSERT INTO chroma_ha_schema VALUES (999)", &[])
        .await
        .unwrap();
    match PgLog::connect(&url, pg_options()).await {
        Err(e @ pglog::ConnectError::Schema(_)) => {
            let text = e.to_string();
            assert!(text.contains("999") && text.contains("newer"), "{text}");
        }
        Err(e) => panic!("wrong refusal: {e}"),
        Ok(_) => panic!("connected to a newer schema"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgres_is_down_appends_fail_within_a_bounded_time_and_resume_when_it_returns() {
    let mut pg = TestPostgres::start();
    let url = pg.url("postgres");
    let log = PgLog::connect(&url, pg_options()).await.unwrap();
    assert_eq!(log.append(payload(1)).await.unwrap(), 1);
    pg.kill_server();
    let t = Instant::now();
    let down = log.append(payload(2)).await;
    let took = t.elapsed();
    eprintln!("append with PostgreSQL down failed after {took:?}: {down:?}");
    match down {
        Err(WalError::Unavailable { .. }) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(took < Duration::from_secs(10), "took {took:?}");
    pg.start_server();
    let deadline = Instant::now() + Duration::from_secs(20);
    let lsn = loop {
        match log.append(payload(2)).await {
            Ok(lsn) => break lsn,
            Err(e) if Instant::now() < deadline => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("PostgreSQL is back but appends still fail: {e}"),
        }
    };
    assert_eq!(lsn, 2, "the failed append left no trace");
    let mut reader = log.read_from(1);
    assert_eq!(next_within(&mut reader, "after").await.payload, payload(1));
    assert_eq!(next_within(&mut reader, "after").await.payload, payload(2));
}
