//! A real crash test: a child process appends with `Always` and prints every
//! acknowledged LSN; it is SIGKILLed at a random moment, and the log must
//! hold every printed LSN with its exact payload and accept new appends.
//! Rounds: 50 by default, `WAL_CRASH_ROUNDS` to change.
mod common;

use rand::Rng;
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;
use wal::{SyncPolicy, Wal, WalOptions};

fn acknowledged(output: &[u8]) -> Vec<(u64, String)> {
    let text = String::from_utf8_lossy(output);
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    complete
        .lines()
        .map(|line| {
            let (lsn, payload) = line.split_once(' ').expect("LSN PAYLOAD");
            (lsn.parse().expect("LSN"), payload.to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_no_acknowledged_record() {
    let rounds: u64 = std::env::var("WAL_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(50);
    let dir = tempfile::tempdir().unwrap();
    let mut acked: BTreeMap<u64, String> = BTreeMap::new();
    let mut rng = rand::rng();
    let mut repairs = 0;
    for round in 0..rounds {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wal-crash-child"))
            .arg(dir.path())
            .arg(round.to_string())
            .arg("8")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let mut stdout = child.stdout.take().expect("stdout");
        let reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stdout.read_to_end(&mut buf);
            buf
        });
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..200))).await;
        child.kill().expect("SIGKILL the child");
        let status = child.wait().expect("reap the child");
        // Any other death (a panic, an exit after a failed append) would
        // test something else than a crash at a random moment.
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "round {round}: the child must die by SIGKILL, not {status}"
        );
        let output = reader.join().expect("reader thread");
        let printed = acknowledged(&output);
        for (lsn, payload) in printed {
            assert!(
                acked.insert(lsn, payload).is_none(),
                "LSN {lsn} acknowledged twice"
            );
        }

        let options = WalOptions {
            sync: SyncPolicy::Always,
            segment_bytes: 64 * 1024,
            ..WalOptions::default()
        };
        let (wal, recovery) = Wal::open(dir.path(), options).expect("reopen after SIGKILL");
        repairs += u32::from(recovery.tail_repair.is_some());
        let last = wal.last_lsn();
        if let Some((&max, _)) = acked.last_key_value() {
            assert!(
                last >= max,
                "round {round}: log ends at {last}, {max} was acknowledged"
            );
        }
        let records = common::read_range(&wal, 1, last).await.expect("read back");
        for record in &records {
            if let Some(payload) = acked.get(&record.lsn) {
                assert_eq!(
                    record.payload.as_ref(),
                    payload.as_bytes(),
                    "round {round}: LSN {} has the wrong payload",
                    record.lsn
                );
            }
        }
        let lsn = wal
            .append(format!("parent-{round}"))
            .await
            .expect("append after crash");
        assert_eq!(lsn, last + 1);
        acked.insert(lsn, format!("parent-{round}"));
    }
    assert!(
        acked.len() as u64 > rounds * 2,
        "the children acknowledged too little"
    );
    eprintln!(
        "crash test: {rounds} SIGKILL rounds, {} acknowledged records verified, {repairs} tail repairs",
        acked.len()
    );
}
