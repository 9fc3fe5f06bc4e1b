//! Power loss in the middle of group commits, for every sync policy.
//!
//! Appenders run concurrently on the in-memory filesystem; after a seeded
//! number of filesystem changes the power goes off (`MemFs::cut_power_after`)
//! while appends are in flight: the image that survives is frozen at that
//! instant (unsynced bytes lost, in-order torn write-back) and every later
//! write or sync of the still-running log fails, so the writer never gets
//! to finish its batch cleanly. The surviving image is then reopened.
//!
//! - `always` and `batch`: every acknowledged record survives with its
//!   exact payload, and so does every committed cursor position.
//! - `never`: acknowledged records may be lost — any written since the last
//!   sync (records are synced only when their segment is sealed), from some
//!   point on to the end; what survives is a prefix of what was written,
//!   each record with its exact payload.
//!
//! Under every policy the log reopens and accepts appends. Rounds: 150 per
//! policy, `WAL_POWER_LOSS_ROUNDS` to change; the seed of a failing round
//! is in the message.
mod common;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use wal::testing::MemFs;
use wal::{SyncPolicy, Wal, WalError, WalOptions};

const DIR: &str = "/log";
const TASKS: u64 = 6;
const PER_TASK: u64 = 40;

fn options(fs: &MemFs, sync: SyncPolicy) -> WalOptions {
    WalOptions {
        sync,
        ..common::options(Arc::new(fs.clone()), 1024)
    }
}

fn rounds() -> u64 {
    std::env::var("WAL_POWER_LOSS_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(150)
}

/// What the running log told its callers before and after the power cut.
struct Outcome {
    /// Acknowledged appends: LSN to payload.
    acked: BTreeMap<u64, Vec<u8>>,
    /// Every payload submitted, acknowledged or not (all distinct).
    submitted: HashMap<Vec<u8>, ()>,
    /// The last position a cursor commit was acknowledged at, if any, and
    /// the position of a commit that failed after it (which may have taken
    /// effect: only the deletion of consumed segments may have failed).
    cursor: Option<(u64, Option<u64>)>,
    /// Whether the power went off while appends were still running.
    mid_flight: bool,
}

/// Opens a log on `fs`, arms a power cut after a seeded number of changes,
/// and appends from `TASKS` tasks until each has failed or written
/// `PER_TASK` records; with `commit_cursor`, a further task keeps moving a
/// cursor to the last durable record. Returns the surviving image.
async fn append_through_power_cut(
    fs: &MemFs,
    sync: SyncPolicy,
    seed: u64,
    commit_cursor: bool,
) -> (MemFs, Outcome) {
    let (wal, _) = Wal::open(DIR, options(fs, sync)).expect("open a fresh log");
    let mut rng = StdRng::seed_from_u64(seed);
    fs.cut_power_after(rng.random_range(0..300), seed);
    let appenders: Vec<_> = (0..TASKS)
        .map(|task| {
            let wal = wal.clone();
            let pad = rng.random_range(0..90u64);
            tokio::spawn(async move {
                let mut results = Vec::new();
                for i in 0..PER_TASK {
                    let padding = "p".repeat(((i * 31 + pad) % 90) as usize);
                    let payload = format!("{seed}-{task}-{i}-{padding}").into_bytes();
                    let result = wal.append(payload.clone()).await;
                    let failed = result.is_err();
                    results.push((payload, result));
                    if failed {
                        break;
                    }
                }
                results
            })
        })
        .collect();
    let committer = commit_cursor.then(|| {
        let wal = wal.clone();
        tokio::spawn(async move {
            let cursor = wal.cursor("reader").await.ok()?;
            let mut committed = cursor.position();
            loop {
                let lsn = wal.last_lsn();
                if cursor.commit(lsn).await.is_err() {
                    return Some((committed, Some(lsn)));
                }
                committed = lsn;
                if lsn >= TASKS * PER_TASK {
                    return Some((committed, None));
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        })
    });
    let mut outcome = Outcome {
        acked: BTreeMap::new(),
        submitted: HashMap::new(),
        cursor: None,
        mid_flight: false,
    };
    for appender in appenders {
        for (payload, result) in appender.await.expect("appender task") {
            outcome.submitted.insert(payload.clone(), ());
            match result {
                Ok(lsn) => {
                    let earlier = outcome.acked.insert(lsn, payload);
                    assert!(
                        earlier.is_none(),
                        "seed {seed}: LSN {lsn} acknowledged twice"
                    );
                }
                Err(e) => assert!(
                    matches!(e, WalError::Io { .. } | WalError::Poisoned(_)),
                    "seed {seed}: an append failed with {e}, not an I/O error"
                ),
            }
        }
    }
    if let Some(committer) = committer {
        outcome.cursor = committer.await.expect("cursor task");
    }
    outcome.mid_flight = fs.after_power_cut().is_some();
    // If everything got in first, the power goes off now, log still open.
    let survivor = fs.cut_power(seed);
    drop(wal);
    (survivor, outcome)
}

/// Reopens the surviving image and checks it against what was acknowledged;
/// `all_acked_survive` is false under `never`. Returns the last LSN and how
/// many records survived that were never acknowledged (written, but the
/// power went off before their commit finished).
async fn check_survivor(
    survivor: &MemFs,
    sync: SyncPolicy,
    seed: u64,
    outcome: &Outcome,
    all_acked_survive: bool,
) -> (u64, u64) {
    let (wal, recovery) = Wal::open(DIR, options(survivor, sync))
        .unwrap_or_else(|e| panic!("seed {seed}: reopening after power loss failed: {e}"));
    let last = wal.last_lsn();
    assert_eq!(recovery.last_lsn, last);
    if all_acked_survive {
        if let Some((&max, _)) = outcome.acked.last_key_value() {
            assert!(
                last >= max,
                "seed {seed}: log ends at {last}, {max} was acknowledged"
            );
        }
    }
    // Records before `first` were consumed by the cursor and deleted.
    let first = wal.first_lsn();
    let records = common::read_range(&wal, first, last)
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: reading back failed: {e}"));
    // Dense up to `last`: a prefix of what the log was given.
    let mut seen = HashMap::new();
    let mut unacked = 0;
    for record in &records {
        let payload = record.payload.to_vec();
        match outcome.acked.get(&record.lsn) {
            Some(acked) => assert_eq!(
                &payload, acked,
                "seed {seed}: LSN {} has the wrong payload",
                record.lsn
            ),
            // Written, and not acknowledged: the power went off first.
            None => {
                assert!(
                    outcome.submitted.contains_key(&payload),
                    "seed {seed}: LSN {} holds bytes never appended",
                    record.lsn
                );
                unacked += 1;
            }
        }
        assert!(
            seen.insert(payload, record.lsn).is_none(),
            "seed {seed}: LSN {} repeats a record",
            record.lsn
        );
    }
    if let Some((committed, failed)) = outcome.cursor {
        let position = wal.cursors().get("reader").copied();
        assert!(
            position == Some(committed) || (position.is_some() && position == failed),
            "seed {seed}: cursor at {position:?}, committed at {committed} (then failed at {failed:?})"
        );
        let position = position.unwrap_or(committed);
        assert!(wal.first_lsn() <= position + 1, "seed {seed}: retention");
    }
    let next = wal
        .append(b"after the power came back".to_vec())
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: append after power loss failed: {e}"));
    assert_eq!(next, last + 1, "seed {seed}");
    drop(wal);
    // Under `never` an append is durable only once its segment is sealed,
    // so only a clean reopen (no power loss) must keep it.
    if all_acked_survive {
        survivor.crash(seed);
    }
    let (wal, _) = Wal::open(DIR, options(survivor, sync)).expect("reopen");
    let back = common::read_range(&wal, next, next).await.expect("read");
    assert_eq!(back[0].payload.as_ref(), b"after the power came back");
    (last, unacked)
}

async fn power_loss_rounds(sync: SyncPolicy, all_acked_survive: bool) {
    let base: u64 = rand::rng().random();
    let rounds = rounds();
    let mut mid_flight = 0;
    let mut lost_acked = 0;
    let mut unacked_survivors = 0;
    for round in 0..rounds {
        let seed = base.wrapping_add(round);
        let fs = MemFs::new();
        let (survivor, outcome) =
            append_through_power_cut(&fs, sync, seed, all_acked_survive).await;
        let (last, unacked) =
            check_survivor(&survivor, sync, seed, &outcome, all_acked_survive).await;
        unacked_survivors += unacked;
        mid_flight += u64::from(outcome.mid_flight);
        lost_acked += u64::from(outcome.acked.keys().any(|lsn| *lsn > last));
    }
    assert!(
        mid_flight * 2 >= rounds,
        "only {mid_flight} of {rounds} power cuts landed while appends ran"
    );
    // With fsyncs, a record that survived without its acknowledgement shows
    // a cut between a batch's write and the end of its commit.
    if all_acked_survive && rounds >= 100 {
        assert!(
            unacked_survivors > 0,
            "no power cut landed inside a group commit in {rounds} rounds"
        );
    }
    eprintln!(
        "{sync:?}: {rounds} power cuts, {mid_flight} mid-flight, {lost_acked} lost acknowledged \
         records, {unacked_survivors} unacknowledged records survived"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_always_power_loss_mid_group_commit_keeps_every_acknowledged_record() {
    power_loss_rounds(SyncPolicy::Always, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_batch_power_loss_mid_group_commit_keeps_every_acknowledged_record() {
    let sync = SyncPolicy::Batch {
        interval: Duration::from_millis(1),
    };
    power_loss_rounds(sync, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_never_power_loss_keeps_a_prefix_with_exact_payloads_and_the_log_reopens() {
    power_loss_rounds(SyncPolicy::Never, false).await;
}

#[tokio::test]
async fn under_never_a_cursor_past_what_survived_power_loss_makes_open_refuse() {
    // Three records, never fsynced, and a cursor (durable) that consumed all
    // three: whenever power loss keeps fewer, reopening must refuse rather
    // than hand LSNs the consumer has passed to new records.
    let mut refused = 0;
    for seed in 0..64 {
        let fs = MemFs::new();
        let (wal, _) = Wal::open(DIR, options(&fs, SyncPolicy::Never)).unwrap();
        for i in 1..=3u64 {
            wal.append(common::payload(i)).await.unwrap();
        }
        wal.cursor("reader").await.unwrap().commit(3).await.unwrap();
        let survivor = fs.cut_power(seed);
        drop(wal);
        match Wal::open(DIR, options(&survivor, SyncPolicy::Never)) {
            Ok((wal, _)) => assert_eq!(wal.last_lsn(), 3, "seed {seed}: opened short"),
            Err(WalError::Corruption { file, reason, .. }) => {
                assert!(file.ends_with("00000000000000000001.wal"), "{file:?}");
                assert!(reason.contains("\"reader\""), "{reason}");
                refused += 1;
            }
            Err(e) => panic!("seed {seed}: {e}"),
        }
    }
    assert!(refused > 0, "no seed lost a record the cursor had consumed");
}
