//! Append throughput and latency of the PostgreSQL log against the file
//! log, in one run on one machine: 1, 16 and 64 concurrent appenders of
//! 4 KiB records, each for `PGLOG_BENCH_SECS` (default 3) seconds.
//!
//! ```text
//! cargo bench -p pglog --bench append
//! ```
//!
//! The file log runs with `fsync = always` in a temporary directory; the
//! PostgreSQL log in a throwaway cluster of its own (see
//! `pglog::testing`), `synchronous_commit = on`, over loopback TCP. Prints
//! one line per case, and for PostgreSQL how many records each commit held.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pglog::testing::TestPostgres;
use pglog::{PgLog, PgLogOptions};
use wal::{Log, Wal, WalOptions};

const RECORD: usize = 4096;

struct Figures {
    appends: usize,
    secs: f64,
    latencies: Vec<Duration>,
}

impl Figures {
    fn line(&self, name: &str, appenders: usize) -> String {
        let mut l = self.latencies.clone();
        l.sort();
        let pct = |p: f64| {
            l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        let rate = self.appends as f64 / self.secs;
        format!(
            "{name:>8} 4KiB x{appenders:<3} {rate:>9.0} appends/s {:>7.1} MiB/s  p50 {:>6.2} ms  p99 {:>6.2} ms",
            rate * RECORD as f64 / (1 << 20) as f64,
            pct(0.50),
            pct(0.99)
        )
    }
}

async fn run<L: Log>(log: Arc<L>, appenders: usize, secs: f64) -> Figures {
    let payload = Bytes::from(vec![0x5a; RECORD]);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..appenders {
        let (log, payload) = (log.clone(), payload.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                log.append(payload.clone()).await.expect("append");
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("appender"));
    }
    Figures {
        appends: latencies.len(),
        secs: start.elapsed().as_secs_f64(),
        latencies,
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let secs: f64 = std::env::var("PGLOG_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let pg = TestPostgres::start();
    for appenders in [1usize, 16, 64] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (file, _) = Wal::open(dir.path(), WalOptions::default()).expect("open the file log");
        let figures = run(Arc::new(file), appenders, secs).await;
        println!("{}", figures.line("file", appenders));

        let db = format!("bench{appenders}");
        pg.create_database(&db);
        let log = Arc::new(
            PgLog::connect(&pg.url(&db), PgLogOptions::default())
                .await
                .expect("connect to the PostgreSQL log"),
        );
        let figures = run(log.clone(), appenders, secs).await;
        let stats = log.stats();
        println!(
            "{}  ({:.1} records/commit, {:.2} ms/commit)",
            figures.line("postgres", appenders),
            stats.records as f64 / stats.commits.max(1) as f64,
            stats.commit_seconds * 1e3 / stats.commits.max(1) as f64
        );
    }
}
