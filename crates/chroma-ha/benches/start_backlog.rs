//! Start-up time of the replication core with a large backlog: a log of
//! about 1 GiB of 4 KiB `add` entries that no server has applied (every
//! cursor at 0), so `Replicator::start` reads every record for refusals.
//!
//! `cargo bench -p chroma-ha --bench start_backlog`
//!
//! - `START_BACKLOG_BYTES`: log size to build (default 1 GiB; e.g. `256MiB`);
//! - `START_BACKLOG_DIR`: where to build it (default: Cargo's target tmp dir).
//!
//! Prints the time of a *cold* start (segments evicted from the page cache
//! with `posix_fadvise(DONTNEED)` after an fsync; only this log's files are
//! touched) and of a *warm* start right after it, with the scan rate. The
//! servers are closed loopback ports: nothing is applied, no probe runs.
//! The log is deleted at the end.

use bytes::Bytes;
use chroma_ha::backend::Backends;
use chroma_ha::config::{Config, FsyncPolicy};
use chroma_ha::replication::record::Entry;
use chroma_ha::replication::Replicator;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wal::Log as _;

const MIB: f64 = 1024.0 * 1024.0;
const BODY_BYTES: usize = 4096;

fn backlog_bytes() -> u64 {
    let Ok(text) = std::env::var("START_BACKLOG_BYTES") else {
        return 1 << 30;
    };
    let t = text.trim().to_ascii_lowercase();
    let (num, mult) = if let Some(n) = t.strip_suffix("gib") {
        (n, 1u64 << 30)
    } else if let Some(n) = t.strip_suffix("mib") {
        (n, 1 << 20)
    } else {
        (t.as_str(), 1)
    };
    num.trim().parse::<u64>().expect("START_BACKLOG_BYTES") * mult
}

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("START_BACKLOG_DIR") {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")),
    }
    .expect("temporary directory for the benchmark")
}

/// A 4 KiB `add` body: one record with a 128-dimensional embedding and a
/// document filling the rest.
fn add_body(i: u64) -> Bytes {
    let embedding = vec!["0.125"; 128].join(",");
    let head = format!(r#"{{"ids":["id-{i}"],"embeddings":[[{embedding}]],"documents":[""#);
    let tail = r#""]}"#;
    let fill = BODY_BYTES.saturating_sub(head.len() + tail.len());
    Bytes::from(format!("{head}{}{tail}", "x".repeat(fill)))
}

/// Builds the log: `target` bytes of entries, appended with the wal crate
/// (no fsync per record), then every segment fsynced.
fn build_log(wal_dir: &Path, target: u64) -> (u64, u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let options = wal::WalOptions {
            sync: wal::SyncPolicy::Never,
            segment_bytes: 64 << 20,
            ..wal::WalOptions::default()
        };
        let (log, _) = wal::Wal::open(wal_dir, options).expect("open log");
        let path = "/api/v2/tenants/default_tenant/databases/default_database/collections/\
                    0195d1e2-0000-4000-8000-000000000001/add";
        let mut bytes = 0u64;
        let mut n = 0u64;
        while bytes < target {
            let batch: Vec<Bytes> = (0..512)
                .map(|k| {
                    Entry {
                        method: http::Method::POST,
                        path: path.to_string(),
                        content_type: Some("application/json".into()),
                        received_at_ms: 1_764_000_000_000 + n + k,
                        body: add_body(n + k),
                    }
                    .encode()
                })
                .collect();
            bytes += batch.iter().map(|p| p.len() as u64 + 16).sum::<u64>();
            n += batch.len() as u64;
            let appends = batch.into_iter().map(|p| log.append(p));
            for r in futures::future::join_all(appends).await {
                r.expect("append");
            }
        }
        assert_eq!(log.last_lsn(), n);
        (n, bytes)
    })
}

fn segments(wal_dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(wal_dir)
        .expect("read log dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

/// fsyncs this log's segments and drops them from the page cache.
fn evict(wal_dir: &Path) {
    use std::os::fd::AsRawFd;
    for path in segments(wal_dir) {
        let file = std::fs::File::open(&path).expect("open segment");
        file.sync_all().expect("fsync segment");
        // SAFETY: a valid open descriptor; offset 0 and length 0 mean the
        // whole file.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0, "posix_fadvise on {}", path.display());
    }
}

fn closed_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    format!("http://{}", l.local_addr().expect("addr"))
}

/// Times `Replicator::start` on `data_dir`: open, cursors, applied state,
/// the refusal scan from LSN 1. The runtime is dropped afterwards, which
/// ends the appliers and releases the log.
fn time_start(data_dir: &Path, servers: &(String, String)) -> (Duration, u64) {
    let mut config = Config::with_servers(&servers.0, &[servers.1.as_str()]).expect("config");
    config.data_dir = data_dir.to_path_buf();
    config.wal.fsync = FsyncPolicy::Never;
    config.wal.segment_bytes = 64 << 20;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let result = rt.block_on(async {
        let backends = Arc::new(Backends::new(&config).expect("backends"));
        let started = Instant::now();
        let rep = Replicator::start(&config, backends, None)
            .await
            .expect("start");
        let took = started.elapsed();
        (took, rep.wal().last_lsn())
    });
    rt.shutdown_timeout(Duration::from_secs(5));
    result
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not:
    // build a gigabyte only when asked to measure.
    if !std::env::args().any(|a| a == "--bench") {
        println!("start_backlog: run with `cargo bench -p chroma-ha --bench start_backlog`");
        return;
    }
    let target = backlog_bytes();
    let dir = bench_dir();
    let data = dir.path().join("data");
    let wal_dir = data.join("wal");
    std::fs::create_dir_all(&wal_dir).expect("create log dir");

    let built = Instant::now();
    let (entries, bytes) = build_log(&wal_dir, target);
    let build_time = built.elapsed();
    let on_disk: u64 = segments(&wal_dir)
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    println!(
        "built a log of {entries} entries of {BODY_BYTES} B bodies: {:.0} MiB of records, \
         {:.0} MiB in {} segment files, in {:.1} s",
        bytes as f64 / MIB,
        on_disk as f64 / MIB,
        segments(&wal_dir).len(),
        build_time.as_secs_f64()
    );

    let servers = (closed_url(), closed_url());
    evict(&wal_dir);
    for run in ["cold (segments evicted from the page cache)", "warm"] {
        let (took, last) = time_start(&data, &servers);
        assert_eq!(last, entries, "the whole log was recovered");
        let secs = took.as_secs_f64();
        println!(
            "Replicator::start, {run}: {secs:.3} s for {entries} entries ({:.0} MiB): \
             {:.0} MiB/s, {:.0} entries/s",
            bytes as f64 / MIB,
            bytes as f64 / MIB / secs,
            entries as f64 / secs
        );
    }
    drop(dir);
}
