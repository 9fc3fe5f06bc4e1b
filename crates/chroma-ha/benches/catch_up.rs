//! Catch-up ratio of a replica, with merged catch-up on and off in one run
//! (docs/OPERATIONS.md, "Merged catch-up"):
//!
//! `cargo bench -p chroma-ha --bench catch_up`
//!
//! For each setting of `replication.merge_catch_up` (on, then off), on two
//! fresh real Chroma servers behind a fresh gateway (the release binary):
//! the replica is stopped (SIGKILL); writers send batch-1 adds of one
//! record through the gateway for a while; the replica is restarted, and
//! the time until it has applied the whole backlog, counting its start, is
//! measured. Printed: the accept rate (adds/s the gateway acknowledged
//! while the replica was down), the backlog, the replay rate (backlog over
//! catch-up time, counting the replica's start; also its start alone and
//! the rate after it) and the **catch-up ratio**, replay rate over accept rate;
//! with the merge metrics of the run. Afterwards the two servers are
//! compared directly (they must be identical).
//!
//! Then catch-up under a steady load (merging on): the direct capacity of
//! one Chroma server alone is measured with the same writers; the replica
//! is stopped while writers offer half that rate through the gateway, and
//! restarted while they go on. Printed: the capacity, the rate offered and
//! accepted, the backlog, the replica's lag every second, and how long it
//! took to be caught up (lag within a second of the load) while the load
//! went on.
//!
//! - `CATCH_UP_SECONDS`: how long the writers run (default 20);
//! - `CATCH_UP_WRITERS`: how many (default 4);
//! - `CATCH_UP_DIM`: the embeddings' dimension (default 64).
//!
//! Needs `.venv` with chromadb 1.5.9 (as the tests). Everything runs on
//! 127.0.0.1 with free ports in temporary directories removed at the end.

#[path = "../tests/fault_kit/mod.rs"]
mod fault_kit;
#[path = "../tests/support/mod.rs"]
mod support;

use chroma_ha::check::{compare_servers, CheckOptions};
use fault_kit::{collections_url, post_json, wait_caught_up, Cluster, DATABASE, TENANT};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{block_on, http_get, http_request};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// What one run measured.
struct Run {
    merging: bool,
    accepted: u64,
    write_seconds: f64,
    catch_up_seconds: f64,
    /// Of which the replica's own start (until its heartbeat answers).
    start_seconds: f64,
    merged_requests: f64,
    merged_entries: f64,
    identical: bool,
}

impl Run {
    fn accept_rate(&self) -> f64 {
        self.accepted as f64 / self.write_seconds
    }
    fn replay_rate(&self) -> f64 {
        self.accepted as f64 / self.catch_up_seconds
    }
    /// Entries per second once the replica answers.
    fn replay_rate_after_start(&self) -> f64 {
        self.accepted as f64 / (self.catch_up_seconds - self.start_seconds).max(1e-3)
    }
    fn ratio(&self) -> f64 {
        self.replay_rate() / self.accept_rate()
    }
}

/// The sum of a metric's samples over every label set in `/metrics`.
fn metric_sum(gw: &str, name: &str) -> f64 {
    let Ok(response) = http_get(&format!("{gw}/metrics"), Duration::from_secs(10)) else {
        return f64::NAN;
    };
    response
        .text()
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Writers sending batch-1 adds of one record to `url`, as fast as they
/// are answered, or paced to `rate` adds/s in all.
struct Load {
    accepted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    started: Instant,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(url: &str, writers: u64, dim: usize, rate: Option<f64>) -> Load {
        let accepted = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        // Each writer's interval between two sends when paced.
        let interval = rate.map(|r| Duration::from_secs_f64(writers as f64 / r.max(0.1)));
        let threads = (0..writers)
            .map(|w| {
                let (accepted, stop, url) = (accepted.clone(), stop.clone(), url.to_string());
                std::thread::spawn(move || {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(interval) = interval {
                            let due = started + interval.mul_f64(i as f64);
                            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                                std::thread::sleep(wait);
                            }
                        }
                        let embedding: Vec<f64> = (0..dim)
                            .map(|d| ((w * 7919 + i * 31 + d as u64) % 997) as f64 / 997.0)
                            .collect();
                        let body = json!({
                            "ids": [format!("w{w}-{i}")],
                            "embeddings": [embedding],
                            "documents": [format!("document {w} {i}")],
                        })
                        .to_string();
                        if let Ok(r) =
                            http_request("POST", &url, Some(&body), Duration::from_secs(30))
                        {
                            if r.status == 201 || r.status == 200 {
                                accepted.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        i += 1;
                    }
                })
            })
            .collect();
        Load {
            accepted,
            stop,
            started,
            threads,
        }
    }

    fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Stops the writers; what they got accepted and in how long.
    fn stop(self) -> (u64, f64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("writer thread");
        }
        (
            self.accepted.load(Ordering::Relaxed),
            self.started.elapsed().as_secs_f64(),
        )
    }
}

fn run(merging: bool, seconds: u64, writers: u64, dim: usize) -> Run {
    let setting = if merging { "true" } else { "false" };
    let mut c = Cluster::start(&[
        ("CHROMA_HA_MERGE_CATCH_UP", setting),
        ("CHROMA_HA_LOG_LEVEL", "warn"),
        // As shipped, not the fault tests' short timeouts.
        ("CHROMA_HA_REQUEST_TIMEOUT", "30"),
    ]);
    let gw = c.gw();
    let colls = collections_url(&gw, DATABASE);
    let r = post_json(&colls, &json!({"name": "catch-up"}));
    assert_eq!(r.status, 200, "create: {}", r.text());
    let id = r.json()["id"].as_str().expect("collection id").to_string();
    let add_url = format!("{colls}/{id}/add");
    wait_caught_up(&gw, Duration::from_secs(60));

    c.replica.kill();
    let load = Load::start(&add_url, writers, dim, None);
    std::thread::sleep(Duration::from_secs(seconds));
    let (accepted, write_seconds) = load.stop();

    let restarted = Instant::now();
    c.replica.restart();
    let start_seconds = restarted.elapsed().as_secs_f64();
    wait_caught_up(&gw, Duration::from_secs(1800));
    let catch_up_seconds = restarted.elapsed().as_secs_f64();

    let merged_requests = metric_sum(&gw, "chroma_ha_applier_merged_requests_total");
    let merged_entries = metric_sum(&gw, "chroma_ha_applier_merged_entries_sum");
    let report = block_on(compare_servers(
        &c.server_urls(),
        &[(TENANT.to_string(), DATABASE.to_string())],
        &CheckOptions::default(),
    ))
    .expect("compare the servers");
    Run {
        merging,
        accepted,
        write_seconds,
        catch_up_seconds,
        start_seconds,
        merged_requests,
        merged_entries,
        identical: report.identical(),
    }
}

/// What the steady-load run measured.
struct Steady {
    direct_capacity: f64,
    offered: f64,
    accepted_rate: f64,
    backlog: u64,
    catch_up_seconds: Option<f64>,
    lag_samples: Vec<(f64, u64)>,
    identical: bool,
}

/// The replica's `lag_entries` in `/status`.
fn replica_lag(gw: &str) -> Option<u64> {
    let s: serde_json::Value = http_get(&format!("{gw}/status"), Duration::from_secs(10))
        .ok()?
        .json();
    s["instances"]
        .as_array()?
        .iter()
        .find(|i| i["name"] == "replica")?["lag_entries"]
        .as_u64()
}

/// Catch-up under a steady load of half the direct capacity: the capacity
/// is measured on a fresh Chroma server alone (`writers` unpaced writers,
/// batch-1 adds, for `seconds`); then, merging on, the replica is stopped
/// while writers offer half that rate through the gateway, and restarted
/// while they go on. Caught up: its lag at most a second of the load.
fn steady(seconds: u64, writers: u64, dim: usize) -> Steady {
    let direct_capacity = {
        let alone = support::ChromaServer::start();
        let colls = collections_url(&alone.url(), DATABASE);
        let r = post_json(&colls, &json!({"name": "capacity"}));
        assert_eq!(r.status, 200, "create: {}", r.text());
        let id = r.json()["id"].as_str().expect("collection id").to_string();
        let load = Load::start(&format!("{colls}/{id}/add"), writers, dim, None);
        std::thread::sleep(Duration::from_secs(seconds));
        let (accepted, secs) = load.stop();
        accepted as f64 / secs
    };
    let offered = direct_capacity / 2.0;
    let mut c = Cluster::start(&[
        ("CHROMA_HA_MERGE_CATCH_UP", "true"),
        ("CHROMA_HA_LOG_LEVEL", "warn"),
        ("CHROMA_HA_REQUEST_TIMEOUT", "30"),
    ]);
    let gw = c.gw();
    let colls = collections_url(&gw, DATABASE);
    let r = post_json(&colls, &json!({"name": "steady"}));
    assert_eq!(r.status, 200, "create: {}", r.text());
    let id = r.json()["id"].as_str().expect("collection id").to_string();
    wait_caught_up(&gw, Duration::from_secs(60));
    c.replica.kill();
    let load = Load::start(&format!("{colls}/{id}/add"), writers, dim, Some(offered));
    std::thread::sleep(Duration::from_secs(seconds));
    let backlog = load.accepted();
    let restarted = Instant::now();
    c.replica.restart();
    let threshold = offered.ceil() as u64;
    let mut lag_samples = Vec::new();
    let mut catch_up_seconds = None;
    let deadline = restarted + Duration::from_secs(seconds * 10);
    while Instant::now() < deadline {
        let lag = replica_lag(&gw).unwrap_or(u64::MAX);
        let at = restarted.elapsed().as_secs_f64();
        if lag_samples.last().is_none_or(|(t, _)| at - t >= 1.0) {
            lag_samples.push((at, lag));
        }
        if lag <= threshold {
            catch_up_seconds = Some(at);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (accepted, secs) = load.stop();
    wait_caught_up(&gw, Duration::from_secs(1800));
    let report = block_on(compare_servers(
        &c.server_urls(),
        &[(TENANT.to_string(), DATABASE.to_string())],
        &CheckOptions::default(),
    ))
    .expect("compare the servers");
    Steady {
        direct_capacity,
        offered,
        accepted_rate: accepted as f64 / secs,
        backlog,
        catch_up_seconds,
        lag_samples,
        identical: report.identical(),
    }
}

fn print_steady(s: &Steady) {
    println!(
        "steady load: direct capacity {:.1} adds/s (one Chroma server alone); offered {:.1} adds/s \
         through the gateway, accepted {:.1} adds/s; backlog at the replica's restart {}",
        s.direct_capacity, s.offered, s.accepted_rate, s.backlog
    );
    let lags: Vec<String> = s
        .lag_samples
        .iter()
        .map(|(t, lag)| format!("{t:.0}s:{lag}"))
        .collect();
    println!("replica lag after its restart: {}", lags.join(" "));
    match s.catch_up_seconds {
        Some(t) => println!(
            "STEADY-SUMMARY caught_up=yes seconds={t:.1} net_drain={:.1}/s backlog={} \
             load={:.1}/s identical={}",
            s.backlog as f64 / t.max(1e-3),
            s.backlog,
            s.accepted_rate,
            s.identical
        ),
        None => println!(
            "STEADY-SUMMARY caught_up=no backlog={} load={:.1}/s identical={}",
            s.backlog, s.accepted_rate, s.identical
        ),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter that is not ours skips the run.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if args.iter().any(|a| !"catch_up".contains(a.as_str())) {
        return;
    }
    let seconds = env_number("CATCH_UP_SECONDS", 20);
    let writers = env_number("CATCH_UP_WRITERS", 4);
    let dim = env_number("CATCH_UP_DIM", 64) as usize;
    println!(
        "catch-up benchmark: replica stopped; {writers} writers sending batch-1 adds (dim {dim}) \
         through the gateway for {seconds} s; replica restarted"
    );
    let runs: Vec<Run> = [true, false]
        .into_iter()
        .map(|merging| run(merging, seconds, writers, dim))
        .collect();
    println!(
        "{:<8} {:>9} {:>11} {:>9} {:>7} {:>10} {:>12} {:>11} {:>7} {:>8} {:>12} {:>9}",
        "merging",
        "backlog",
        "accept/s",
        "catch-up",
        "start",
        "replay/s",
        "after-start",
        "ratio",
        "merged",
        "entries",
        "per-request",
        "identical"
    );
    for r in &runs {
        println!(
            "{:<8} {:>9} {:>11.1} {:>8.1}s {:>6.1}s {:>10.1} {:>12.1} {:>10.2}x {:>7} {:>8} {:>12.1} {:>9}",
            if r.merging { "on" } else { "off" },
            r.accepted,
            r.accept_rate(),
            r.catch_up_seconds,
            r.start_seconds,
            r.replay_rate(),
            r.replay_rate_after_start(),
            r.ratio(),
            r.merged_requests,
            r.merged_entries,
            if r.merged_requests > 0.0 {
                r.merged_entries / r.merged_requests
            } else {
                0.0
            },
            r.identical
        );
    }
    if let [on, off] = &runs[..] {
        println!(
            "CATCH-UP-SUMMARY ratio_merging_on={:.2} ratio_merging_off={:.2} speed-up={:.2}x",
            on.ratio(),
            off.ratio(),
            on.replay_rate() / off.replay_rate()
        );
    }
    let steady = steady(seconds, writers, dim);
    print_steady(&steady);
    assert!(
        runs.iter().all(|r| r.identical) && steady.identical,
        "the servers differ after a catch-up"
    );
}
