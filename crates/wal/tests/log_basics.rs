//! Appending, reading, rollover, cursors, deletion and the size cap.
mod common;

use common::*;
use std::sync::Arc;
use std::time::Duration;
use wal::{SyncPolicy, Wal, WalError, WalOptions};

#[tokio::test]
async fn appends_get_dense_lsns_from_one_and_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, recovery) = Wal::open(dir.path(), real_options(1 << 20)).unwrap();
    assert_eq!((recovery.first_lsn, recovery.last_lsn), (1, 0));
    for i in 1..=100 {
        assert_eq!(wal.append(payload(i)).await.unwrap(), i);
    }
    let records = read_range(&wal, 1, 100).await.unwrap();
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.lsn, i as u64 + 1);
        assert_eq!(r.payload.as_ref(), payload(r.lsn).as_slice());
    }
}

#[tokio::test]
async fn concurrent_appends_are_group_committed_with_dense_lsns() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), real_options(1 << 20)).unwrap();
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let wal = wal.clone();
            tokio::spawn(async move { wal.append(payload(i)).await.unwrap() })
        })
        .collect();
    let mut lsns = Vec::new();
    for t in tasks {
        lsns.push(t.await.unwrap());
    }
    lsns.sort();
    assert_eq!(lsns, (1..=64).collect::<Vec<_>>());
    assert!(
        wal.stats().fsyncs < 64,
        "64 concurrent appends took {} fsyncs",
        wal.stats().fsyncs
    );
}

fn regrouping_options(regroup_wait: Duration) -> WalOptions {
    WalOptions {
        regroup_wait,
        ..real_options(64 << 20)
    }
}

/// Appends `n` records concurrently and waits for every one.
async fn append_together(wal: &Wal, n: u64) {
    let group: Vec<_> = (0..n).map(|i| wal.append(payload(i))).collect();
    for lsn in futures::future::join_all(group).await {
        lsn.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appenders_acknowledged_together_share_the_next_fsync() {
    // 64 appenders start together and append again as soon as they are
    // acknowledged; they come back within microseconds, far inside the wait.
    const ROUNDS: u64 = 40;
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), regrouping_options(Duration::from_millis(500))).unwrap();
    let start = Arc::new(tokio::sync::Barrier::new(64));
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let (wal, start) = (wal.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                for _ in 0..ROUNDS {
                    wal.append(payload(i)).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(wal.stats().last_lsn, 64 * ROUNDS);
    // Without regrouping they split into two groups that take turns: about
    // twice as many fsyncs.
    let fsyncs = wal.stats().fsyncs;
    assert!(
        fsyncs <= ROUNDS + 8,
        "{ROUNDS} rounds of 64 appenders took {fsyncs} fsyncs"
    );
}

#[tokio::test]
async fn a_lone_appender_after_a_group_waits_to_regroup_once_at_most() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), regrouping_options(Duration::from_secs(2))).unwrap();
    append_together(&wal, 16).await;
    // Waiting the full 2 s on each of 20 appends would take 40 s.
    let lone = async {
        for i in 0..20 {
            wal.append(payload(i)).await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(15), lone)
        .await
        .expect("a lone appender kept waiting for the group");
}

#[tokio::test]
async fn a_refused_append_does_not_wait_to_regroup() {
    let dir = tempfile::tempdir().unwrap();
    let fs = wal::testing::FaultyFs::new();
    let options = WalOptions {
        regroup_wait: Duration::from_secs(2),
        ..common::options(Arc::new(fs.clone()), 64 << 20)
    };
    let (wal, _) = Wal::open(dir.path(), options).unwrap();
    append_together(&wal, 16).await;
    // Every sync fails, so the rollback cannot be made durable either: the
    // log is poisoned and refuses what comes next. The first append waits
    // for the group once (2 s); waiting on each of 6 would take 12 s.
    fs.set_fail_sync(true);
    let refused = async {
        for i in 0..6 {
            assert!(wal.append(payload(i)).await.is_err());
        }
    };
    tokio::time::timeout(Duration::from_secs(8), refused)
        .await
        .expect("failed and refused appends waited to regroup");
}

#[tokio::test]
async fn segments_roll_over_and_reads_cross_them_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, _) = Wal::open(dir.path(), real_options(4096)).unwrap();
        for i in 1..=300 {
            wal.append(payload(i)).await.unwrap();
        }
    }
    let files = segment_files(dir.path());
    assert!(files.len() > 5, "only {} segments", files.len());
    let (wal, recovery) = Wal::open(dir.path(), real_options(4096)).unwrap();
    assert_eq!(recovery.last_lsn, 300);
    assert_eq!(recovery.tail_repair, None);
    let records = read_range(&wal, 1, 300).await.unwrap();
    assert!(records
        .iter()
        .all(|r| r.payload.as_ref() == payload(r.lsn).as_slice()));
    // Reading from the middle of a sealed segment.
    let records = read_range(&wal, 137, 140).await.unwrap();
    assert_eq!(records[0].lsn, 137);
    assert_eq!(wal.append(b"after".to_vec()).await.unwrap(), 301);
}

#[tokio::test]
async fn a_reader_tails_new_records() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), real_options(1 << 20)).unwrap();
    let mut reader = wal.read_from(1);
    let waiting = tokio::spawn(async move { reader.next().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished());
    wal.append(b"late".to_vec()).await.unwrap();
    let record = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.payload.as_ref(), b"late");
}

#[tokio::test]
async fn cursors_persist_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, _) = Wal::open(dir.path(), real_options(1 << 20)).unwrap();
        for i in 1..=10 {
            wal.append(payload(i)).await.unwrap();
        }
        let primary = wal.cursor("primary").await.unwrap();
        assert_eq!(primary.position(), 0);
        primary.commit(7).await.unwrap();
        wal.cursor("replica-1")
            .await
            .unwrap()
            .commit(3)
            .await
            .unwrap();
    }
    let (wal, _) = Wal::open(dir.path(), real_options(1 << 20)).unwrap();
    let cursors = wal.cursors();
    assert_eq!(cursors.get("primary"), Some(&7));
    assert_eq!(cursors.get("replica-1"), Some(&3));
    assert_eq!(wal.cursor("primary").await.unwrap().position(), 7);
}

#[tokio::test]
async fn a_cursor_cannot_pass_the_last_durable_record() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), real_options(1 << 20)).unwrap();
    wal.append(b"one".to_vec()).await.unwrap();
    let cursor = wal.cursor("a").await.unwrap();
    assert!(matches!(
        cursor.commit(2).await,
        Err(WalError::CursorOutOfRange { .. })
    ));
    assert!(matches!(
        wal.cursor("../etc").await,
        Err(WalError::InvalidCursorName(_))
    ));
}

#[tokio::test]
async fn segments_are_deleted_once_every_cursor_is_past_them() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), real_options(2048)).unwrap();
    let a = wal.cursor("a").await.unwrap();
    let b = wal.cursor("b").await.unwrap();
    for i in 1..=200 {
        wal.append(payload(i)).await.unwrap();
    }
    let before = segment_files(dir.path()).len();
    assert_eq!(a.commit(200).await.unwrap(), 0, "b still holds everything");
    assert_eq!(segment_files(dir.path()).len(), before);
    let deleted = b.commit(150).await.unwrap();
    assert!(deleted > 0);
    assert_eq!(segment_files(dir.path()).len(), before - deleted);
    let first = wal.first_lsn();
    assert!(first > 1 && first <= 151, "first retained LSN {first}");
    assert!(matches!(
        wal.read_from(1).next().await,
        Err(WalError::Truncated { requested: 1, .. })
    ));
    let records = read_range(&wal, 151, 200).await.unwrap();
    assert_eq!(records.len(), 50);
    // Nothing is lost across reopen either.
    drop((a, b, wal));
    let (wal, recovery) = Wal::open(dir.path(), real_options(2048)).unwrap();
    assert_eq!((recovery.first_lsn, recovery.last_lsn), (first, 200));
    assert_eq!(
        read_range(&wal, first, 200).await.unwrap().len() as u64,
        201 - first
    );
}

#[tokio::test]
async fn the_retain_floor_keeps_segments_cursors_have_passed() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), real_options(2048)).unwrap();
    for i in 1..=200 {
        wal.append(payload(i)).await.unwrap();
    }
    wal.set_retain_floor(Some(50)).await.unwrap();
    wal.cursor("only").await.unwrap().commit(200).await.unwrap();
    assert!(wal.first_lsn() <= 50);
    wal.set_retain_floor(None).await.unwrap();
    assert!(wal.first_lsn() > 50);
}

#[tokio::test]
async fn appends_past_max_bytes_fail_at_once_and_resume_after_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions {
        max_bytes: 8 * 1024,
        ..real_options(2048)
    };
    let (wal, _) = Wal::open(dir.path(), options).unwrap();
    let cursor = wal.cursor("c").await.unwrap();
    let mut last = 0;
    let full = loop {
        match wal.append(vec![7u8; 200]).await {
            Ok(lsn) => last = lsn,
            Err(e) => break e,
        }
    };
    assert!(matches!(full, WalError::LogFull { .. }), "{full}");
    assert!(full.is_out_of_space());
    assert!(wal.stats().used_bytes <= 8 * 1024);
    // Still readable, nothing corrupted.
    assert_eq!(read_range(&wal, 1, last).await.unwrap().len() as u64, last);
    cursor.commit(last).await.unwrap();
    assert_eq!(wal.append(vec![8u8; 200]).await.unwrap(), last + 1);
}

#[tokio::test]
async fn at_the_cap_an_uncapped_append_gets_in_and_survives_a_crash_where_append_is_refused() {
    let fs = wal::testing::MemFs::new();
    let options = || WalOptions {
        max_bytes: 4 * 1024,
        ..common::options(Arc::new(fs.clone()), 1024)
    };
    let (wal, _) = Wal::open("/log", options()).unwrap();
    let mut last = 0;
    let full = loop {
        assert!(
            last < 1000,
            "4 KiB held {last} records: the cap never applied"
        );
        match wal.append(payload(last + 1)).await {
            Ok(lsn) => last = lsn,
            Err(e) => break e,
        }
    };
    assert!(matches!(full, WalError::LogFull { .. }), "{full}");
    let decision = wal.append_uncapped(b"decision".to_vec()).await.unwrap();
    assert_eq!(decision, last + 1);
    let stats = wal.stats();
    assert!(stats.used_bytes > stats.max_bytes, "{stats:?}");
    // The cap still holds for ordinary appends.
    assert!(matches!(
        wal.append(b"ordinary".to_vec()).await,
        Err(WalError::LogFull { .. })
    ));
    // Power loss keeps only what was fsynced: every acknowledged record,
    // the uncapped one included.
    drop(wal);
    fs.crash(7);
    let (wal, recovery) = Wal::open("/log", options()).unwrap();
    assert_eq!(recovery.last_lsn, decision);
    let records = read_range(&wal, 1, decision).await.unwrap();
    for r in &records[..records.len() - 1] {
        assert_eq!(r.payload.as_ref(), payload(r.lsn).as_slice());
    }
    assert_eq!(records[records.len() - 1].payload.as_ref(), b"decision");
}

#[tokio::test]
async fn a_record_over_the_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions {
        max_record_bytes: 100,
        ..real_options(4096)
    };
    let (wal, _) = Wal::open(dir.path(), options).unwrap();
    assert!(matches!(
        wal.append(vec![0u8; 101]).await,
        Err(WalError::RecordTooLarge {
            size: 101,
            max: 100
        })
    ));
    assert_eq!(wal.append(vec![0u8; 100]).await.unwrap(), 1);
}

#[tokio::test]
async fn batch_policy_acknowledges_after_the_interval_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions {
        sync: SyncPolicy::Batch {
            interval: Duration::from_millis(20),
        },
        ..real_options(1 << 20)
    };
    let (wal, _) = Wal::open(dir.path(), options).unwrap();
    wal.append(b"warm".to_vec()).await.unwrap();
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let wal = wal.clone();
            tokio::spawn(async move { wal.append(payload(i)).await })
        })
        .collect();
    for h in handles {
        h.await.unwrap().unwrap();
    }
    // 21 records, but at most a few fsyncs: they were batched.
    assert!(wal.stats().fsyncs <= 3, "fsyncs: {}", wal.stats().fsyncs);
    assert_eq!(wal.last_lsn(), 21);
}

#[tokio::test]
async fn a_second_process_cannot_open_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (_wal, _) = Wal::open(dir.path(), real_options(4096)).unwrap();
    assert!(matches!(
        Wal::open(dir.path(), real_options(4096)),
        Err(WalError::Locked(_))
    ));
}
