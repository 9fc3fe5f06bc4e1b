//! Model check: random sequences of append / concurrent append / read /
//! cursor commit / crash / failed append / reopen, run against the log on a
//! crash-simulating in-memory filesystem and against a plain `Vec` model.
//! Checked after every step: every record acknowledged under `Always`
//! survives, in order, with dense LSNs; an append that failed appears at
//! most once, and only as the last record (it may have reached the disk);
//! every cursor committed is there at exactly its committed position, and
//! no record a cursor still needs was deleted (first LSN <= smallest
//! cursor + 1; nothing at all is deleted while there is no cursor).
mod common;

use common::options;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use wal::testing::MemFs;
use wal::{Wal, WalError};

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<u8>),
    AppendConcurrent(Vec<Vec<u8>>),
    Read(u8),
    Commit(u8, u8),
    Crash(u64),
    FailedAppend(Vec<u8>, u64),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let bytes = || proptest::collection::vec(any::<u8>(), 0..96);
    prop_oneof![
        4 => bytes().prop_map(Op::Append),
        2 => proptest::collection::vec(bytes(), 2..8).prop_map(Op::AppendConcurrent),
        2 => any::<u8>().prop_map(Op::Read),
        2 => (0u8..2, any::<u8>()).prop_map(|(c, p)| Op::Commit(c, p)),
        1 => any::<u64>().prop_map(Op::Crash),
        1 => (bytes(), any::<u64>()).prop_map(|(b, s)| Op::FailedAppend(b, s)),
        1 => Just(Op::Reopen),
    ]
}

struct Harness {
    fs: MemFs,
    wal: Option<Wal>,
    /// Payloads by LSN - 1 (LSN 1 at index 0); the first `truncated`
    /// entries may have been deleted from the log.
    model: Vec<Vec<u8>>,
    /// Every cursor committed so far, at its committed position.
    cursors: BTreeMap<String, u64>,
}

const DIR: &str = "/log";
const SEGMENT: u64 = 512;

impl Harness {
    fn open(&mut self) {
        self.wal = None;
        let (wal, recovery) =
            Wal::open(DIR, options(Arc::new(self.fs.clone()), SEGMENT)).expect("open");
        assert!(recovery.last_lsn >= self.model.len() as u64);
        self.wal = Some(wal);
    }

    fn wal(&self) -> &Wal {
        self.wal.as_ref().expect("open")
    }

    /// Checks the whole retained log against the model.
    async fn check(&mut self) {
        let wal = self.wal().clone();
        let first = wal.first_lsn();
        let last = wal.last_lsn();
        assert!(first >= 1 && first <= self.model.len() as u64 + 1);
        assert_eq!(last, self.model.len() as u64, "durable records vs model");
        assert_eq!(wal.cursors(), self.cursors, "cursors vs model");
        match self.cursors.values().min() {
            Some(min) => assert!(
                first <= min + 1,
                "the log starts at {first}, but a cursor still needs {}",
                min + 1
            ),
            None => assert_eq!(first, 1, "records were deleted with no cursor"),
        }
        if last >= first {
            let records = common::read_range(&wal, first, last).await.expect("read");
            for r in records {
                assert_eq!(
                    r.payload.as_ref(),
                    self.model[(r.lsn - 1) as usize].as_slice()
                );
            }
        }
    }

    /// After a crash that may have kept an unacknowledged record: accept at
    /// most one extra record, equal to `maybe`.
    fn absorb_unacknowledged(&mut self, maybe: Option<&[u8]>) {
        let last = self.wal().last_lsn();
        let known = self.model.len() as u64;
        match (last - known, maybe) {
            (0, _) => {}
            (1, Some(payload)) => self.model.push(payload.to_vec()),
            (extra, _) => panic!("{extra} records appeared that were never acknowledged"),
        }
    }

    async fn run(&mut self, op: Op) {
        match op {
            Op::Append(payload) => {
                let lsn = self.wal().append(payload.clone()).await.expect("append");
                self.model.push(payload);
                assert_eq!(lsn, self.model.len() as u64);
            }
            Op::AppendConcurrent(payloads) => {
                let handles: Vec<_> = payloads
                    .into_iter()
                    .map(|p| {
                        let wal = self.wal().clone();
                        tokio::spawn(async move { (wal.append(p.clone()).await, p) })
                    })
                    .collect();
                let mut acked = Vec::new();
                for h in handles {
                    let (lsn, p) = h.await.expect("join");
                    acked.push((lsn.expect("append"), p));
                }
                acked.sort();
                for (lsn, p) in acked {
                    self.model.push(p);
                    assert_eq!(lsn, self.model.len() as u64, "LSNs are dense");
                }
            }
            Op::Read(at) => {
                let wal = self.wal().clone();
                let first = wal.first_lsn();
                let last = wal.last_lsn();
                if last >= first {
                    let from = first + u64::from(at) % (last - first + 1);
                    let records = common::read_range(&wal, from, last).await.expect("read");
                    assert_eq!(records[0].lsn, from);
                }
                if first > 1 {
                    assert!(matches!(
                        wal.read_from(first - 1).next().await,
                        Err(WalError::Truncated { .. })
                    ));
                }
            }
            Op::Commit(which, at) => {
                let wal = self.wal().clone();
                let name = format!("c{which}");
                let cursor = wal.cursor(&name).await.expect("cursor");
                let low = wal.first_lsn() - 1;
                let last = wal.last_lsn();
                let lsn = low + u64::from(at) % (last - low + 1);
                cursor.commit(lsn).await.expect("commit");
                assert_eq!(cursor.position(), lsn);
                self.cursors.insert(name, lsn);
            }
            Op::Crash(seed) => {
                self.wal = None;
                self.fs.crash(seed);
                self.open();
                self.absorb_unacknowledged(None);
            }
            Op::FailedAppend(payload, seed) => {
                self.fs.set_fail_sync(true);
                let result = self.wal().append(payload.clone()).await;
                self.fs.set_fail_sync(false);
                assert!(result.is_err(), "append with failing fsync succeeded");
                // A failed fsync poisons the log; the process restarts.
                self.wal = None;
                self.fs.crash(seed);
                self.open();
                self.absorb_unacknowledged(Some(&payload));
            }
            Op::Reopen => {
                self.open();
                self.absorb_unacknowledged(None);
            }
        }
        self.check().await;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn the_log_matches_the_model_through_crashes(ops in proptest::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let mut harness = Harness {
                fs: MemFs::new(),
                wal: None,
                model: Vec::new(),
                cursors: BTreeMap::new(),
            };
            harness.open();
            for op in ops {
                harness.run(op).await;
            }
            // Cursors survive a last reopen too.
            harness.open();
            harness.check().await;
        });
    }
}
