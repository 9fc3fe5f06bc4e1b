//! I/O faults injected through the filesystem trait reach every waiter, and
//! the log stays consistent: nothing of a failed append is ever read back.
mod common;

use common::*;
use std::sync::Arc;
use wal::testing::FaultyFs;
use wal::{Wal, WalError};

#[tokio::test]
async fn fsync_failure_reaches_every_waiter_and_the_log_reopens_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultyFs::new();
    let (wal, _) = Wal::open(dir.path(), options(Arc::new(fs.clone()), 1 << 20)).unwrap();
    for i in 1..=5 {
        wal.append(payload(i)).await.unwrap();
    }
    fs.set_fail_sync(true);
    let waiters: Vec<_> = (0..16)
        .map(|i| {
            let wal = wal.clone();
            tokio::spawn(async move { wal.append(format!("doomed-{i}").into_bytes()).await })
        })
        .collect();
    for w in waiters {
        match w.await.unwrap() {
            Err(WalError::Io { context, .. }) => assert!(context.contains("fsync"), "{context}"),
            // The disk keeps failing, so the rollback cannot be made durable.
            Err(WalError::Poisoned(reason)) => assert!(reason.contains("fsync"), "{reason}"),
            other => panic!("expected an fsync error, got {other:?}"),
        }
    }
    assert_eq!(wal.last_lsn(), 5);
    fs.set_fail_sync(false);
    drop(wal);
    let (wal, recovery) = Wal::open(dir.path(), options(Arc::new(fs), 1 << 20)).unwrap();
    assert_eq!(recovery.last_lsn, 5, "no failed append survives");
    assert_eq!(wal.append(b"after".to_vec()).await.unwrap(), 6);
    let records = read_range(&wal, 1, 6).await.unwrap();
    assert_eq!(records[5].payload.as_ref(), b"after");
    assert!(records.iter().all(|r| !r.payload.starts_with(b"doomed")));
}

#[tokio::test]
async fn a_transient_fsync_failure_fails_its_batch_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultyFs::new();
    let (wal, _) = Wal::open(dir.path(), options(Arc::new(fs.clone()), 1 << 20)).unwrap();
    wal.append(payload(1)).await.unwrap();
    fs.fail_next_syncs(1);
    assert!(matches!(
        wal.append(b"doomed".to_vec()).await,
        Err(WalError::Io { .. })
    ));
    // The rollback succeeded, so the same handle goes on, reusing LSN 2.
    assert_eq!(wal.append(b"after".to_vec()).await.unwrap(), 2);
    let records = read_range(&wal, 1, 2).await.unwrap();
    assert_eq!(records[1].payload.as_ref(), b"after");
    drop(wal);
    assert_eq!(wal::verify(dir.path()).unwrap().lsn_range, Some((1, 2)));
}

#[tokio::test]
async fn enospc_mid_write_fails_the_batch_and_leaves_no_partial_record() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultyFs::new();
    let (wal, _) = Wal::open(dir.path(), options(Arc::new(fs.clone()), 1 << 20)).unwrap();
    wal.append(payload(1)).await.unwrap();
    fs.set_space_left(Some(100));
    let err = wal.append(vec![9u8; 4000]).await.unwrap_err();
    assert!(err.is_out_of_space(), "{err}");
    fs.set_space_left(None);
    assert_eq!(wal.append(b"room again".to_vec()).await.unwrap(), 2);
    drop(wal);
    let report = wal::verify(dir.path()).unwrap();
    assert_eq!(report.torn_tail, None);
    assert_eq!(report.lsn_range, Some((1, 2)));
}

#[tokio::test]
async fn when_the_rollback_fails_too_the_log_refuses_appends_until_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let fs = wal::testing::MemFs::new();
    let (wal, _) = Wal::open("/log", options(Arc::new(fs.clone()), 1 << 20)).unwrap();
    wal.append(payload(1)).await.unwrap();
    fs.set_fail_sync(true);
    assert!(wal.append(payload(2)).await.is_err());
    fs.set_fail_sync(false);
    assert!(matches!(
        wal.append(payload(3)).await,
        Err(WalError::Poisoned(_))
    ));
    assert!(wal.stats().poisoned.is_some());
    drop(wal);
    drop(dir);
    let (wal, recovery) = Wal::open("/log", options(Arc::new(fs), 1 << 20)).unwrap();
    assert_eq!(recovery.last_lsn, 1);
    assert_eq!(wal.append(payload(2)).await.unwrap(), 2);
}
