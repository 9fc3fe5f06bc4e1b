//! What opening and reading do with damaged bytes: a torn or corrupt tail of
//! the last segment is cut back and reported; anything else is an error.
mod common;

use common::*;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use wal::{Wal, WalError};

const SEGMENT: u64 = 4096;

/// Writes `n` records with small segments; returns the segment files.
async fn log_with(dir: &Path, n: u64) -> Vec<PathBuf> {
    let (wal, _) = Wal::open(dir, real_options(SEGMENT)).unwrap();
    for i in 1..=n {
        wal.append(payload(i)).await.unwrap();
    }
    drop(wal);
    segment_files(dir)
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x5a;
    std::fs::write(path, bytes).unwrap();
}

fn len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// Where the records of a one-segment log of `n` records end (segments are
/// preallocated, so the file itself is longer).
fn data_end(n: u64) -> u64 {
    16 + (1..=n).map(|i| 16 + payload(i).len() as u64).sum::<u64>()
}

#[tokio::test]
async fn truncated_last_record_is_repaired_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let files = log_with(dir.path(), 10).await;
    assert_eq!(files.len(), 1);
    let last = files.last().unwrap();
    let end = data_end(10);
    let file = OpenOptions::new().write(true).open(last).unwrap();
    file.set_len(end - 5).unwrap();
    drop(file);
    let (wal, recovery) = Wal::open(dir.path(), real_options(SEGMENT)).unwrap();
    let repair = recovery.tail_repair.expect("repair reported");
    assert_eq!(recovery.last_lsn, 9);
    assert_eq!(repair.surviving, Some((1, 9)));
    assert_eq!(repair.discarded_lsns, Some((10, 10)));
    assert_eq!(repair.discarded_bytes, data_end(9)..end - 5);
    assert_eq!(repair.valid_bytes, data_end(9));
    assert_eq!(repair.valid_bytes + repair.truncated_bytes, end - 5);
    assert_eq!(len(last), repair.valid_bytes, "the cut was made on disk");
    assert_eq!(wal.append(b"next".to_vec()).await.unwrap(), 10);
    let records = read_range(&wal, 1, 10).await.unwrap();
    assert_eq!(records[9].payload.as_ref(), b"next");
}

#[tokio::test]
async fn zero_filled_tail_is_where_the_log_resumes_not_a_repair() {
    let dir = tempfile::tempdir().unwrap();
    let files = log_with(dir.path(), 5).await;
    let last = files.last().unwrap();
    // Segments are preallocated with zeros; more zeros change nothing.
    let mut file = OpenOptions::new().append(true).open(last).unwrap();
    file.write_all(&[0u8; 300]).unwrap();
    drop(file);
    let (wal, recovery) = Wal::open(dir.path(), real_options(SEGMENT)).unwrap();
    assert_eq!(recovery.tail_repair, None);
    assert_eq!(wal.last_lsn(), 5);
    assert_eq!(wal.append(b"six".to_vec()).await.unwrap(), 6);
    drop(wal);
    let (wal, recovery) = Wal::open(dir.path(), real_options(SEGMENT)).unwrap();
    assert_eq!((recovery.last_lsn, recovery.tail_repair), (6, None));
    let records = read_range(&wal, 1, 6).await.unwrap();
    assert_eq!(records[5].payload.as_ref(), b"six");
    assert_eq!(records[4].payload.as_ref(), payload(5).as_slice());
}

#[tokio::test]
async fn a_torn_write_into_preallocated_space_is_cut_back() {
    let dir = tempfile::tempdir().unwrap();
    let files = log_with(dir.path(), 4).await;
    let last = files.last().unwrap();
    // Half of a record landed in the zeros: a crash mid-write.
    let mut frame = Vec::new();
    frame.extend_from_slice(&40u32.to_le_bytes());
    frame.extend_from_slice(&[0xAB; 12]);
    frame.extend_from_slice(b"half a payl");
    let file = OpenOptions::new().write(true).open(last).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &frame, data_end(4)).unwrap();
    drop(file);
    let (wal, recovery) = Wal::open(dir.path(), real_options(SEGMENT)).unwrap();
    let repair = recovery.tail_repair.expect("repair reported");
    assert_eq!(repair.valid_bytes, data_end(4));
    assert_eq!(wal.last_lsn(), 4);
    assert_eq!(wal.append(b"five".to_vec()).await.unwrap(), 5);
}

/// Writes `n` records in one segment and commits the named cursors.
async fn log_with_cursors(dir: &Path, n: u64, cursors: &[(&str, u64)]) -> PathBuf {
    let (wal, _) = Wal::open(dir, real_options(SEGMENT)).unwrap();
    for i in 1..=n {
        wal.append(payload(i)).await.unwrap();
    }
    for (name, lsn) in cursors {
        wal.cursor(name).await.unwrap().commit(*lsn).await.unwrap();
    }
    drop(wal);
    let files = segment_files(dir);
    assert_eq!(files.len(), 1);
    files[0].clone()
}

/// An offset inside the payload of record 2 of a log written by `log_with`.
fn inside_record_2() -> u64 {
    data_end(1) + 16 + 4
}

#[tokio::test]
async fn flipped_byte_in_the_last_segment_cuts_the_tail_from_that_record() {
    let dir = tempfile::tempdir().unwrap();
    let files = log_with(dir.path(), 3).await;
    assert_eq!(files.len(), 1);
    // Damage the payload of record 2: no cursor vouches for it, so records 2
    // and 3 go (3 may be the unsynced end of a batch written back out of
    // order), record 1 stays, and the cut is reported.
    flip_byte(&files[0], inside_record_2());
    let (wal, recovery) = Wal::open(dir.path(), real_options(SEGMENT)).unwrap();
    let repair = recovery.tail_repair.expect("repair reported");
    assert_eq!(repair.surviving, Some((1, 1)));
    assert_eq!(repair.discarded_lsns, Some((2, 3)));
    assert_eq!(repair.discarded_bytes, data_end(1)..data_end(3));
    assert!(repair.reason.contains("CRC"), "{}", repair.reason);
    assert_eq!(wal.last_lsn(), 1);
}

#[tokio::test]
async fn a_corrupt_record_past_every_cursor_is_cut_and_the_discarded_range_reported() {
    let dir = tempfile::tempdir().unwrap();
    // "a" is exactly at the last good record, "b" further back.
    let segment = log_with_cursors(dir.path(), 6, &[("a", 1), ("b", 0)]).await;
    flip_byte(&segment, inside_record_2());
    let (wal, recovery) = Wal::open(dir.path(), real_options(SEGMENT)).unwrap();
    let repair = recovery.tail_repair.expect("repair reported");
    assert_eq!(repair.segment, segment);
    assert_eq!(repair.surviving, Some((1, 1)));
    assert_eq!(
        repair.discarded_lsns,
        Some((2, 6)),
        "intact 3..=6 are named"
    );
    assert_eq!(repair.discarded_bytes, data_end(1)..data_end(6));
    assert_eq!(repair.valid_bytes, data_end(1));
    assert_eq!(len(&segment), data_end(1), "the cut was made on disk");
    assert_eq!(wal.cursors().get("a"), Some(&1));
    assert_eq!(wal.append(b"new two".to_vec()).await.unwrap(), 2);
    let records = read_range(&wal, 1, 2).await.unwrap();
    assert_eq!(records[1].payload.as_ref(), b"new two");
}

#[tokio::test]
async fn a_corrupt_record_a_cursor_has_consumed_refuses_open_naming_file_and_offset() {
    // A cursor at the bad record, or past it: either way its consumer read
    // record 2, so it was durable, and cutting would be silent loss.
    for position in [2, 3] {
        let dir = tempfile::tempdir().unwrap();
        let segment = log_with_cursors(dir.path(), 3, &[("a", 1), ("b", position)]).await;
        flip_byte(&segment, inside_record_2());
        let before = std::fs::read(&segment).unwrap();
        match Wal::open(dir.path(), real_options(SEGMENT)) {
            Err(WalError::Corruption {
                file,
                offset,
                reason,
            }) => {
                assert_eq!(file, segment);
                assert_eq!(offset, data_end(1), "the bad record's offset");
                assert!(reason.contains("\"b\""), "names the cursor: {reason}");
                assert!(reason.contains("CRC"), "says what is wrong: {reason}");
            }
            other => panic!("cursor at {position}: expected corruption, got {other:?}"),
        }
        assert_eq!(std::fs::read(&segment).unwrap(), before, "nothing was cut");
        // verify agrees with open.
        match wal::verify(dir.path()) {
            Err(WalError::Corruption { file, offset, .. }) => {
                assert_eq!((file, offset), (segment.clone(), data_end(1)));
            }
            other => panic!("expected corruption from verify, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_torn_last_record_a_cursor_has_consumed_refuses_open() {
    let dir = tempfile::tempdir().unwrap();
    let segment = log_with_cursors(dir.path(), 10, &[("a", 10)]).await;
    let file = OpenOptions::new().write(true).open(&segment).unwrap();
    file.set_len(data_end(10) - 5).unwrap();
    drop(file);
    match Wal::open(dir.path(), real_options(SEGMENT)) {
        Err(WalError::Corruption { file, offset, .. }) => {
            assert_eq!((file, offset), (segment.clone(), data_end(9)));
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    assert_eq!(len(&segment), data_end(10) - 5, "nothing was cut");
}

#[tokio::test]
async fn records_a_cursor_has_consumed_that_read_as_zeros_refuse_open() {
    // Zeros after the last record are normally preallocated space; with a
    // cursor past them they are lost records, and the log must not hand
    // their LSNs to new ones.
    let dir = tempfile::tempdir().unwrap();
    let segment = log_with_cursors(dir.path(), 3, &[("a", 3)]).await;
    let file = OpenOptions::new().write(true).open(&segment).unwrap();
    let zeros = vec![0u8; (data_end(3) - data_end(1)) as usize];
    std::os::unix::fs::FileExt::write_all_at(&file, &zeros, data_end(1)).unwrap();
    drop(file);
    match Wal::open(dir.path(), real_options(SEGMENT)) {
        Err(WalError::Corruption { file, offset, .. }) => {
            assert_eq!((file, offset), (segment, data_end(1)));
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[tokio::test]
async fn flipped_byte_in_sealed_segment_is_a_corruption_error() {
    let dir = tempfile::tempdir().unwrap();
    let files = log_with(dir.path(), 200).await;
    assert!(files.len() >= 3);
    let sealed = &files[1];
    flip_byte(sealed, 100);
    // Opening does not read sealed segments, so it succeeds...
    let (wal, recovery) = Wal::open(dir.path(), real_options(SEGMENT)).unwrap();
    assert_eq!(recovery.tail_repair, None);
    assert_eq!(recovery.last_lsn, 200);
    // ...and reading through the damage names the file and offset.
    match read_range(&wal, 1, 200).await {
        Err(WalError::Corruption { file, offset, .. }) => {
            assert_eq!(&file, sealed);
            assert!(offset <= 100, "offset {offset}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    // verify reports it too, with the same file.
    match wal::verify(dir.path()) {
        Err(WalError::Corruption { file, .. }) => assert_eq!(&file, sealed),
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[tokio::test]
async fn a_missing_sealed_segment_is_a_gap_not_silence() {
    let dir = tempfile::tempdir().unwrap();
    let files = log_with(dir.path(), 200).await;
    std::fs::remove_file(&files[1]).unwrap();
    assert!(matches!(
        wal::verify(dir.path()),
        Err(WalError::Corruption { .. })
    ));
    let (wal, _) = Wal::open(dir.path(), real_options(SEGMENT)).unwrap();
    assert!(matches!(
        read_range(&wal, 1, 200).await,
        Err(WalError::Corruption { .. })
    ));
}

#[tokio::test]
async fn torn_segment_header_is_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let files = log_with(dir.path(), 200).await;
    let last = files.last().unwrap();
    let file = OpenOptions::new().write(true).open(last).unwrap();
    file.set_len(7).unwrap();
    drop(file);
    let first_of_last = wal_first_lsn(last);
    let (wal, recovery) = Wal::open(dir.path(), real_options(SEGMENT)).unwrap();
    assert!(recovery.tail_repair.is_some());
    assert_eq!(recovery.last_lsn, first_of_last - 1);
    assert_eq!(wal.append(b"x".to_vec()).await.unwrap(), first_of_last);
}

#[tokio::test]
async fn a_torn_segment_header_under_a_cursor_that_consumed_its_records_refuses_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, _) = Wal::open(dir.path(), real_options(SEGMENT)).unwrap();
        for i in 1..=200 {
            wal.append(payload(i)).await.unwrap();
        }
        wal.cursor("a").await.unwrap().commit(200).await.unwrap();
    }
    let files = segment_files(dir.path());
    let last = files.last().unwrap();
    assert!(wal_first_lsn(last) <= 200, "the last segment holds records");
    let file = OpenOptions::new().write(true).open(last).unwrap();
    file.set_len(7).unwrap();
    drop(file);
    match Wal::open(dir.path(), real_options(SEGMENT)) {
        Err(WalError::Corruption { file, offset, .. }) => {
            assert_eq!((&file, offset), (last, 0));
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    assert_eq!(len(last), 7, "nothing was rewritten");
}

fn wal_first_lsn(path: &Path) -> u64 {
    path.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn bad_magic_in_the_last_segment_is_corruption_not_repair() {
    let dir = tempfile::tempdir().unwrap();
    let files = log_with(dir.path(), 3).await;
    flip_byte(&files[0], 0);
    assert!(matches!(
        Wal::open(dir.path(), real_options(SEGMENT)),
        Err(WalError::Corruption { offset: 0, .. })
    ));
}

#[tokio::test]
async fn verify_reports_a_torn_tail_without_failing_and_without_changing_it() {
    let dir = tempfile::tempdir().unwrap();
    let files = log_with(dir.path(), 10).await;
    let last = files.last().unwrap();
    let mut file = OpenOptions::new().append(true).open(last).unwrap();
    file.write_all(&[1, 2, 3]).unwrap();
    drop(file);
    let before = len(last);
    let report = wal::verify(dir.path()).unwrap();
    assert_eq!(report.records, 10);
    assert_eq!(report.lsn_range, Some((1, 10)));
    assert!(report.torn_tail.is_some());
    assert_eq!(len(last), before);
}

#[tokio::test]
async fn inspect_lists_segments_ranges_and_cursors() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, _) = Wal::open(dir.path(), real_options(SEGMENT)).unwrap();
        for i in 1..=120 {
            wal.append(payload(i)).await.unwrap();
        }
        wal.cursor("primary")
            .await
            .unwrap()
            .commit(5)
            .await
            .unwrap();
    }
    let report = wal::inspect(dir.path()).unwrap();
    assert_eq!(report.cursors.get("primary"), Some(&5));
    assert_eq!(report.segments[0].first_lsn, 1);
    assert_eq!(report.segments.last().unwrap().last_lsn, Some(120));
    for pair in report.segments.windows(2) {
        assert_eq!(pair[0].last_lsn, Some(pair[1].first_lsn - 1));
    }
    assert_eq!(
        report.total_bytes,
        report.segments.iter().map(|s| s.bytes).sum::<u64>()
    );
}

#[tokio::test]
async fn records_over_a_lowered_record_limit_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, _) = Wal::open(dir.path(), real_options(1 << 20)).unwrap();
        for i in 1..=3u8 {
            wal.append(vec![i; 50_000]).await.unwrap();
        }
    }
    let lowered = wal::WalOptions {
        max_record_bytes: 1024,
        ..real_options(1 << 20)
    };
    let (wal, recovery) = Wal::open(dir.path(), lowered).unwrap();
    assert_eq!(recovery.tail_repair, None, "valid records are not damage");
    assert_eq!(recovery.last_lsn, 3);
    let records = read_range(&wal, 1, 3).await.unwrap();
    assert_eq!(records[2].payload.len(), 50_000);
    // The lowered limit applies to new appends only.
    assert!(matches!(
        wal.append(vec![0u8; 2048]).await,
        Err(WalError::RecordTooLarge { .. })
    ));
}

#[tokio::test]
async fn a_huge_corrupt_length_is_a_torn_tail_not_an_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let files = log_with(dir.path(), 2).await;
    let last = files.last().unwrap();
    let mut frame = Vec::new();
    frame.extend_from_slice(&u32::MAX.to_le_bytes());
    frame.extend_from_slice(&[7u8; 12]);
    let file = OpenOptions::new().write(true).open(last).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &frame, data_end(2)).unwrap();
    drop(file);
    let report = wal::verify(dir.path()).unwrap();
    assert!(report.torn_tail.is_some());
    let (wal, recovery) = Wal::open(dir.path(), real_options(SEGMENT)).unwrap();
    assert!(recovery.tail_repair.is_some());
    assert_eq!(wal.last_lsn(), 2);
}
