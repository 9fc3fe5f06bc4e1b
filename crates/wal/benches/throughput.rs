//! Append throughput of the log next to the raw limits of the same disk,
//! measured in the same run. `cargo bench -p wal --bench throughput`
//! (set WAL_BENCH_DIR to measure another disk; WAL_BENCH_SECS per case).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};
use wal::{SyncPolicy, Wal, WalOptions};

const MIB: f64 = 1024.0 * 1024.0;

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("WAL_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")),
    }
    .expect("temporary directory for the benchmark")
}

fn case_duration() -> Duration {
    let secs = std::env::var("WAL_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(1.5);
    Duration::from_secs_f64(secs)
}

/// fdatasync'd 4 KiB appends per second from one thread.
fn raw_fdatasync_rate(dir: &Path, duration: Duration) -> f64 {
    let path = dir.join("raw-sync");
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("raw file");
    let block = vec![0x5au8; 4096];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < duration {
        file.write_all(&block).expect("raw write");
        file.sync_data().expect("raw fdatasync");
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(path);
    rate
}

/// Sequential write MiB/s: 1 MiB writes, one fdatasync at the end.
fn raw_sequential(dir: &Path, bytes: usize) -> f64 {
    let path = dir.join("raw-seq");
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("raw file");
    let chunk = vec![0xa5u8; 1 << 20];
    let start = Instant::now();
    for _ in 0..bytes / chunk.len() {
        file.write_all(&chunk).expect("raw write");
    }
    file.sync_data().expect("raw fdatasync");
    let rate = bytes as f64 / MIB / start.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(path);
    rate
}

/// A ceiling for a write-then-fdatasync log with 64 appenders of 4 KiB
/// under `always`: all 256 KiB in one write and one fdatasync, over a
/// preallocated file (as the log's segments are), from one thread with
/// nothing else running. MiB/s.
fn raw_group_commit_ceiling(dir: &Path, duration: Duration) -> f64 {
    const SPAN: u64 = 64 << 20;
    let path = dir.join("raw-group");
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .expect("raw file");
    let zeros = vec![0u8; 1 << 20];
    for chunk in 0..SPAN / zeros.len() as u64 {
        file.write_all_at(&zeros, chunk * zeros.len() as u64)
            .expect("raw preallocation");
    }
    file.sync_data().expect("raw fdatasync");
    let batch = vec![0x5au8; 64 * 4096];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < duration {
        let offset = (n * batch.len() as u64) % SPAN;
        file.write_all_at(&batch, offset).expect("raw write");
        file.sync_data().expect("raw fdatasync");
        n += 1;
    }
    let rate = n as f64 * batch.len() as f64 / MIB / start.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(path);
    rate
}

struct Outcome {
    appends_per_sec: f64,
    mib_per_sec: f64,
    records_per_fsync: f64,
}

async fn run_case(size: usize, writers: usize, sync: SyncPolicy, duration: Duration) -> Outcome {
    let dir = bench_dir();
    let options = WalOptions {
        sync,
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open(dir.path(), options).expect("open log");
    let payload = bytes::Bytes::from(vec![0x42u8; size]);
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let wal = wal.clone();
            let payload = payload.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    wal.append(payload.clone()).await.expect("append");
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("writer task");
    }
    let secs = start.elapsed().as_secs_f64();
    let stats = wal.stats();
    Outcome {
        appends_per_sec: total as f64 / secs,
        mib_per_sec: total as f64 * size as f64 / MIB / secs,
        records_per_fsync: stats.appends as f64 / stats.fsyncs.max(1) as f64,
    }
}

async fn open_time_of_large_log(bytes: u64) -> (Duration, u64) {
    let dir = bench_dir();
    let options = || WalOptions {
        sync: SyncPolicy::Never,
        ..WalOptions::default()
    };
    {
        let (wal, _) = Wal::open(dir.path(), options()).expect("open log");
        let payload = bytes::Bytes::from(vec![7u8; 64 * 1024]);
        let mut written = 0;
        let mut handles = Vec::new();
        while written < bytes {
            handles.push(wal.append(payload.clone()));
            if handles.len() == 64 {
                for h in futures::future::join_all(handles.drain(..)).await {
                    h.expect("append");
                }
            }
            written += payload.len() as u64;
        }
        for h in futures::future::join_all(handles).await {
            h.expect("append");
        }
    }
    let start = Instant::now();
    let (wal, recovery) = Wal::open(dir.path(), options()).expect("reopen log");
    let elapsed = start.elapsed();
    drop(wal);
    (elapsed, recovery.segments as u64)
}

fn label(size: usize) -> String {
    if size >= 1024 {
        format!("{}KiB", size / 1024)
    } else {
        format!("{size}B")
    }
}

fn main() {
    // `cargo bench` passes `--bench`; accept and ignore libtest-style flags.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let duration = case_duration();
    let dir = bench_dir();
    let raw_sync = raw_fdatasync_rate(dir.path(), duration);
    let raw_seq = raw_sequential(dir.path(), 512 << 20);
    let raw_group = raw_group_commit_ceiling(dir.path(), duration);
    println!(
        "raw disk: fdatasync'd 4KiB appends {raw_sync:.0}/s; sequential write {raw_seq:.0} MiB/s; \
         256KiB write+fdatasync loop {raw_group:.0} MiB/s"
    );
    println!();
    println!(
        "{:<8} {:>7} {:>8} {:>12} {:>10} {:>12}",
        "record", "writers", "policy", "appends/s", "MiB/s", "recs/fsync"
    );
    let policies = [
        ("always", SyncPolicy::Always),
        (
            "batch",
            SyncPolicy::Batch {
                interval: Duration::from_millis(2),
            },
        ),
    ];
    let mut headline = 0.0;
    let mut single_always_4k = 0.0;
    let only: Option<String> = std::env::var("WAL_BENCH_ONLY").ok();
    for size in [256usize, 4096, 65536] {
        for writers in [1usize, 16, 64] {
            if only
                .as_deref()
                .is_some_and(|o| o != format!("{}x{writers}", label(size)))
            {
                continue;
            }
            for (name, policy) in policies {
                let out = runtime.block_on(run_case(size, writers, policy, duration));
                println!(
                    "{:<8} {:>7} {:>8} {:>12.0} {:>10.1} {:>12.1}",
                    label(size),
                    writers,
                    name,
                    out.appends_per_sec,
                    out.mib_per_sec,
                    out.records_per_fsync
                );
                if size == 4096 && writers == 64 && name == "always" {
                    headline = out.mib_per_sec;
                }
                if size == 4096 && writers == 1 && name == "always" {
                    single_always_4k = out.appends_per_sec;
                }
            }
        }
    }
    let (open, segments) = runtime.block_on(open_time_of_large_log(1 << 30));
    println!();
    println!(
        "open of a 1 GiB log ({segments} segments): {:.1} ms",
        open.as_secs_f64() * 1000.0
    );
    println!(
        "one appender, 4KiB always: {single_always_4k:.0}/s = {:.2} of raw fdatasync rate {raw_sync:.0}/s",
        single_always_4k / raw_sync
    );
    println!(
        "4KiB x64 always: {headline:.1} MiB/s = {:.2} of the 256KiB write+fdatasync loop {raw_group:.0} MiB/s",
        headline / raw_group
    );
    println!(
        "wal: 4KiB x64 always {headline:.1} MiB/s; raw sequential {raw_seq:.1} MiB/s; ratio {:.2}",
        headline / raw_seq
    );
}
