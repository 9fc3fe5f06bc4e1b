//! `chroma-ha rebuild` with three real Chroma servers (primary, replica-1,
//! replica-2) behind a real gateway, under a concurrent workload (issue 10,
//! part 2):
//!
//! 1. an empty replica (its data directory deleted, restarted empty) is
//!    rebuilt from the other replica;
//! 2. a wiped primary is rebuilt from a replica;
//! 3. a rebuild interrupted by SIGKILL of its source, of the server being
//!    rebuilt and of the gateway is run again each time, and finishes;
//! 4. a rebuild the log cannot hold (it would fill before the copy ends) is
//!    refused at once and changes nothing.
//!
//! Each time the server is marked rebuilding before it comes back empty,
//! so no read reaches it; afterwards every server is checked directly:
//! every acknowledged write present, all servers identical
//! ([`fault_kit::checks::finish`]).

mod backup_kit;
mod fault_kit;
mod support;

use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fault_kit::checks::{finish, UnknownBound};
use fault_kit::workload::{Workload, WorkloadSpec};
use fault_kit::{
    admin_request, collections_url, gateway_env, instance, post_json, status, status_now,
    wait_until, Cluster, Deployment,
};
use serde_json::{json, Value};
use support::{chroma_ha_bin, ChromaServer, GatewayProcess};

const TOKEN: &str = "rebuild-test-token";

struct Three {
    servers: Vec<ChromaServer>,
    gateway: GatewayProcess,
}

impl Deployment for Three {
    fn gw(&self) -> String {
        self.gateway.url()
    }
    fn server_urls(&self) -> Vec<String> {
        self.servers.iter().map(ChromaServer::url).collect()
    }
    fn gateway_log(&self, needles: &[&str], max: usize) -> Vec<String> {
        fault_kit::log_lines(&self.gateway, needles, max)
    }
}

impl Three {
    fn start() -> Three {
        let servers = ChromaServer::start_many(3);
        let args: Vec<String> = [
            "serve",
            "--listen",
            "{listen}",
            "--primary",
            &servers[0].url(),
            "--replica",
            &servers[1].url(),
            "--replica",
            &servers[2].url(),
            "--data-dir",
            "{dir}/data",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let env = gateway_env(&[("CHROMA_HA_ADMIN_TOKEN", TOKEN)]);
        let gateway = GatewayProcess::start_clean(&chroma_ha_bin(), &args, &env);
        let three = Three { servers, gateway };
        let gw = three.gw();
        wait_until("three healthy servers", Duration::from_secs(30), || {
            status(&gw).is_some_and(|s| s["healthy_instances"] == 3)
        });
        three
    }

    /// Fills a collection of `n` × 100 records, so that a copy takes a while.
    fn fill(&self, n: usize) {
        let gw = self.gw();
        let r = post_json(
            &collections_url(&gw, "default_database"),
            &json!({"name": "bulk", "metadata": {"kind": "bulk"}}),
        );
        assert!(r.status / 100 == 2, "{}", r.text());
        let id = r.json()["id"].as_str().expect("id").to_string();
        for b in 0..n {
            let ids: Vec<String> = (0..100).map(|k| format!("bulk-{b}-{k}")).collect();
            let emb: Vec<Vec<f32>> = (0..100)
                .map(|k| (0..8).map(|d| ((b * 100 + k + d) as f32).cos()).collect())
                .collect();
            let docs: Vec<String> = (0..100).map(|k| format!("document {b} {k}")).collect();
            let metas: Vec<Value> = (0..100).map(|k| json!({"b": b, "k": k})).collect();
            let r = post_json(
                &format!("{}/{id}/add", collections_url(&gw, "default_database")),
                &json!({"ids": ids, "embeddings": emb, "documents": docs, "metadatas": metas}),
            );
            assert!(r.status / 100 == 2, "{}", r.text());
        }
    }

    /// Kills server `i`, deletes its data directory: it comes back empty
    /// at the next `restart`.
    fn wipe(&mut self, i: usize) {
        self.servers[i].kill();
        let dir = self.servers[i].data_dir();
        std::fs::remove_dir_all(&dir).expect("delete the data directory");
        std::fs::create_dir_all(&dir).expect("recreate it empty");
    }
}

fn spawn_rebuild(gw: &str, server: &str, from: &str, page_size: usize) -> Child {
    let page_size = page_size.to_string();
    backup_kit::spawn(&[
        "rebuild",
        server,
        "--from",
        from,
        "--gateway",
        gw,
        "--admin-token",
        TOKEN,
        "--page-size",
        &page_size,
        "--json",
    ])
}

fn finish_rebuild(child: Child) -> (bool, Value, String) {
    let out = child.wait_with_output().expect("rebuild output");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let view = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.success(), view, stderr)
}

/// Waits until the rebuild of `server` copies records, then returns.
fn wait_copying(gw: &str, server: &str) {
    wait_until(
        "the rebuild copies records",
        Duration::from_secs(60),
        || {
            status(gw).is_some_and(|s| {
                s["rebuild"]["server"] == server
                    && s["rebuild"]["phase"] == "copying"
                    && s["rebuild"]["records_done"].as_u64().unwrap_or(0) > 0
            })
        },
    );
}

fn assert_rebuilt(what: &str, ok: bool, view: &Value, stderr: &str) {
    assert!(ok, "{what}: rebuild failed: {stderr}");
    assert_eq!(view["phase"], "done", "{what}: {view}");
    assert_eq!(view["identical"], true, "{what}: {view}");
    eprintln!(
        "REBUILD-SUMMARY {what}: lsn={} records={} copy_seconds={:.2} total_seconds={:.2} check={}",
        view["lsn"],
        view["records_done"],
        view["copy_seconds"].as_f64().unwrap_or(0.0),
        view["seconds"].as_f64().unwrap_or(0.0),
        view["check"]
    );
}

const BOUND: UnknownBound = UnknownBound {
    floor: 10,
    fraction: 0.02,
};

fn spec(prefix: &str) -> WorkloadSpec {
    let mut spec = WorkloadSpec::new(prefix);
    spec.writers = 2;
    spec.readers = 1;
    spec.think = Duration::from_millis(50);
    spec
}

#[test]
fn rebuild_of_an_empty_replica_under_a_concurrent_workload() {
    let _serial = fault_kit::serial();
    let mut three = Three::start();
    three.fill(15);
    let gw = three.gw();
    let workload = Workload::start(&gw, spec("rb-empty"));
    std::thread::sleep(Duration::from_secs(1));
    three.wipe(2);
    let child = spawn_rebuild(&gw, "replica-2", "replica-1", 100);
    wait_until(
        "replica-2 marked rebuilding",
        Duration::from_secs(20),
        || status(&gw).is_some_and(|s| instance(&s, "replica-2")["rebuilding"] == true),
    );
    three.servers[2].restart();
    let (ok, view, stderr) = finish_rebuild(child);
    assert_rebuilt("empty replica", ok, &view, &stderr);
    assert_eq!(instance(&status_now(&gw), "replica-2")["rebuilding"], false);
    std::thread::sleep(Duration::from_secs(1));
    let result = workload.stop();
    finish(
        "rebuild_empty_replica",
        &three,
        &result,
        "rb-empty",
        &[],
        None,
        BOUND,
        "",
    );
}

#[test]
fn rebuild_of_a_wiped_primary_under_a_concurrent_workload() {
    let _serial = fault_kit::serial();
    let mut three = Three::start();
    three.fill(15);
    let gw = three.gw();
    let workload = Workload::start(&gw, spec("rb-primary"));
    std::thread::sleep(Duration::from_secs(1));
    three.wipe(0);
    let child = spawn_rebuild(&gw, "primary", "replica-1", 100);
    wait_until("primary marked rebuilding", Duration::from_secs(20), || {
        status(&gw).is_some_and(|s| instance(&s, "primary")["rebuilding"] == true)
    });
    three.servers[0].restart();
    let (ok, view, stderr) = finish_rebuild(child);
    assert_rebuilt("wiped primary", ok, &view, &stderr);
    std::thread::sleep(Duration::from_secs(1));
    let result = workload.stop();
    finish(
        "rebuild_wiped_primary",
        &three,
        &result,
        "rb-primary",
        &[],
        None,
        BOUND,
        "",
    );
}

#[test]
fn a_rebuild_interrupted_by_sigkill_of_source_server_and_gateway_is_resumed() {
    let _serial = fault_kit::serial();
    let mut three = Three::start();
    three.fill(20);
    let gw = three.gw();
    let workload = Workload::start(&gw, spec("rb-kill"));
    std::thread::sleep(Duration::from_secs(1));
    three.wipe(2);
    let started = Instant::now();

    // 1. The source dies mid-copy: the rebuild fails, replica-2 stays marked.
    let child = spawn_rebuild(&gw, "replica-2", "replica-1", 20);
    wait_until(
        "replica-2 marked rebuilding",
        Duration::from_secs(20),
        || status(&gw).is_some_and(|s| instance(&s, "replica-2")["rebuilding"] == true),
    );
    three.servers[2].restart();
    wait_copying(&gw, "replica-2");
    three.servers[1].kill();
    let (ok, _, stderr) = finish_rebuild(child);
    assert!(!ok, "a rebuild whose source died must fail: {stderr}");
    eprintln!("source killed: {stderr}");
    assert_eq!(instance(&status_now(&gw), "replica-2")["rebuilding"], true);
    three.servers[1].restart();
    wait_until("replica-1 healthy again", Duration::from_secs(30), || {
        status(&gw).is_some_and(|s| instance(&s, "replica-1")["healthy"] == true)
    });

    // 2. The server being rebuilt dies mid-copy.
    let child = spawn_rebuild(&gw, "replica-2", "replica-1", 20);
    wait_copying(&gw, "replica-2");
    three.servers[2].kill();
    let (ok, _, stderr) = finish_rebuild(child);
    assert!(!ok, "a rebuild whose server died must fail: {stderr}");
    eprintln!("server killed: {stderr}");
    assert_eq!(instance(&status_now(&gw), "replica-2")["rebuilding"], true);
    three.servers[2].restart();

    // 3. The gateway dies mid-copy: after its restart replica-2 is still
    // marked, and its source replays again.
    let child = spawn_rebuild(&gw, "replica-2", "replica-1", 20);
    wait_copying(&gw, "replica-2");
    three.gateway.kill();
    let (ok, _, stderr) = finish_rebuild(child);
    assert!(!ok, "a rebuild whose gateway died must fail: {stderr}");
    eprintln!("gateway killed: {stderr}");
    three.gateway.restart();
    let s = status_now(&gw);
    assert_eq!(instance(&s, "replica-2")["rebuilding"], true, "{s}");
    assert_eq!(instance(&s, "replica-1")["applier"], "running", "{s}");
    assert_ne!(s["executor"], "replica-2");

    // 4. Run again: it finishes.
    let child = spawn_rebuild(&gw, "replica-2", "replica-1", 100);
    let (ok, view, stderr) = finish_rebuild(child);
    assert_rebuilt("after three interruptions", ok, &view, &stderr);
    eprintln!(
        "interrupted rebuild finished {:.1}s after the first start",
        started.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(1));
    let result = workload.stop();
    finish(
        "rebuild_interrupted",
        &three,
        &result,
        "rb-kill",
        &[],
        None,
        UnknownBound {
            floor: 15,
            fraction: 0.03,
        },
        "",
    );
}

#[test]
fn a_rebuild_the_log_cannot_hold_is_refused_at_once_and_changes_nothing() {
    let _serial = fault_kit::serial();
    // A 4 MiB log, filled at about 1 MiB/s by big documents while the
    // rebuild is asked for.
    let cluster = Cluster::start(&[
        ("CHROMA_HA_ADMIN_TOKEN", TOKEN),
        ("CHROMA_HA_WAL_MAX_BYTES", "4194304"),
        ("CHROMA_HA_WAL_SEGMENT_BYTES", "65536"),
    ]);
    let gw = cluster.gw();
    let r = post_json(
        &collections_url(&gw, "default_database"),
        &json!({"name": "busy"}),
    );
    assert!(r.status / 100 == 2, "{}", r.text());
    let add = format!(
        "{}/{}/add",
        collections_url(&gw, "default_database"),
        r.json()["id"].as_str().expect("id")
    );
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, add) = (stop.clone(), add.clone());
        std::thread::spawn(move || {
            let doc = "d".repeat(50_000);
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = post_json(
                    &add,
                    &json!({"ids": [format!("big-{k}")], "embeddings": [[k as f32, 1.0]],
                            "documents": [doc]}),
                );
                assert!(r.status / 100 == 2, "{} {}", r.status, r.text());
                k += 1;
                std::thread::sleep(Duration::from_millis(40));
            }
            k
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    // At 1 record/s the copy of what the primary holds takes longer than
    // the log lasts.
    let url =
        format!("{gw}/admin/servers/replica/rebuild?from=primary&expected_records_per_second=1");
    let r = admin_request("POST", &url, Some(TOKEN));
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().expect("writer");
    assert_eq!(r.status, 507, "{}", r.text());
    let body = r.json();
    assert_eq!(body["error"], "InsufficientLogRoom", "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("the log cannot hold what arrives during the copy")
            && message.contains("MiB free")
            && message.contains("wal.max_bytes"),
        "{message}"
    );
    // Nothing changed: no rebuild ran, the replica serves and replays.
    let s = status_now(&gw);
    assert!(s["rebuild"].is_null(), "{s}");
    assert_eq!(instance(&s, "replica")["rebuilding"], false, "{s}");
    assert_eq!(instance(&s, "replica")["applier"], "running", "{s}");
    assert_eq!(instance(&s, "primary")["applier"], "running", "{s}");
    fault_kit::wait_caught_up(&gw, Duration::from_secs(60));
    let count =
        support::http_get(&add.replace("/add", "/count"), Duration::from_secs(10)).expect("count");
    assert_eq!(count.json(), json!(written), "every write went through");
}
