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
    let accepted = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let (accepted, stop, url) = (accepted.clone(), stop.clone(), add_url.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let embedding: Vec<f64> = (0..dim)
                        .map(|d| ((w * 7919 + i * 31 + d as u64) % 997) as f64 / 997.0)
                        .collect();
                    let body = json!({
                        "ids": [format!("w{w}-{i}")],
                        "embeddings": [embedding],
                        "documents": [format!("document {w} {i}")],
                    })
                    .to_string();
                    if let Ok(r) = http_request("POST", &url, Some(&body), Duration::from_secs(30))
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
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("writer thread");
    }
    let write_seconds = started.elapsed().as_secs_f64();
    let accepted = accepted.load(Ordering::Relaxed);

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
    assert!(
        runs.iter().all(|r| r.identical),
        "the servers differ after a catch-up"
    );
}
