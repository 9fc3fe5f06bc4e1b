//! Benchmark of `chroma-ha rebuild`'s copy against the floor: a plain paged
//! copy between the same two servers by a small script
//! (`tests/python/paged_copy.py`). Prints `REBUILD-BENCH` lines with
//! records/s and MiB/s of both. Ignored in the suite (it measures, it takes
//! a minute); run it with
//! `cargo test -p chroma-ha --release --test rebuild_bench -- --ignored --nocapture`.

mod fault_kit;
mod support;

use std::time::Duration;

use fault_kit::{collections_url, gateway_env, post_json, status, wait_caught_up, wait_until};
use serde_json::{json, Value};
use support::{chroma_ha_bin, ChromaServer, GatewayProcess};

const TOKEN: &str = "bench-token";
const COLLECTIONS: usize = 4;
const BATCHES: usize = 10;
const BATCH: usize = 250;
const DIM: usize = 384;

#[test]
#[ignore]
fn rebuild_copy_rate_against_a_plain_paged_copy() {
    let _serial = fault_kit::serial();
    let servers = ChromaServer::start_many(2);
    let args: Vec<String> = [
        "serve",
        "--listen",
        "{listen}",
        "--primary",
        &servers[0].url(),
        "--replica",
        &servers[1].url(),
        "--data-dir",
        "{dir}/data",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let gateway = GatewayProcess::start_clean(
        &chroma_ha_bin(),
        &args,
        &gateway_env(&[("CHROMA_HA_ADMIN_TOKEN", TOKEN)]),
    );
    let gw = gateway.url();
    wait_until("both healthy", Duration::from_secs(30), || {
        status(&gw).is_some_and(|s| s["healthy_instances"] == 2)
    });
    for c in 0..COLLECTIONS {
        let r = post_json(
            &collections_url(&gw, "default_database"),
            &json!({"name": format!("bench-{c}")}),
        );
        assert!(r.status / 100 == 2, "{}", r.text());
        let id = r.json()["id"].as_str().expect("id").to_string();
        for b in 0..BATCHES {
            let ids: Vec<String> = (0..BATCH).map(|k| format!("r-{b}-{k}")).collect();
            let emb: Vec<Vec<f32>> = (0..BATCH)
                .map(|k| {
                    (0..DIM)
                        .map(|d| (((b * BATCH + k) * 31 + d) as f32 * 0.001).sin())
                        .collect()
                })
                .collect();
            let docs: Vec<String> = (0..BATCH)
                .map(|k| format!("document number {k} of batch {b}"))
                .collect();
            let metas: Vec<Value> = (0..BATCH).map(|k| json!({"k": k, "b": b})).collect();
            let r = post_json(
                &format!("{}/{id}/add", collections_url(&gw, "default_database")),
                &json!({"ids": ids, "embeddings": emb, "documents": docs, "metadatas": metas}),
            );
            assert!(r.status / 100 == 2, "{}", r.text());
        }
    }
    wait_caught_up(&gw, Duration::from_secs(300));
    let records = COLLECTIONS * BATCHES * BATCH;

    // chroma-ha rebuild replica --from primary (replacing its content).
    let out = std::process::Command::new(chroma_ha_bin())
        .args([
            "rebuild",
            "replica",
            "--from",
            "primary",
            "--replace",
            "--gateway",
            &gw,
            "--admin-token",
            TOKEN,
            "--json",
        ])
        .env_remove("CHROMA_HA_URL")
        .env_remove("CHROMA_HA_ADMIN_TOKEN")
        .output()
        .expect("rebuild");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let view: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(view["records_done"], records);
    let secs = view["copy_seconds"].as_f64().expect("copy_seconds");
    let mib = view["bytes_done"].as_f64().expect("bytes") / 1048576.0;
    eprintln!(
        "REBUILD-BENCH rebuild: {records} records, {mib:.1} MiB in {secs:.2}s: {:.0} records/s, {:.2} MiB/s",
        records as f64 / secs,
        mib / secs
    );

    // A backup of the same content (the primary, read directly) and its
    // restore into the emptied replica.
    let dir = tempfile::tempdir().expect("tempdir");
    let snap = dir.path().join("snap");
    let out = std::process::Command::new(chroma_ha_bin())
        .args([
            "backup",
            "--to",
            snap.to_str().expect("path"),
            "--url",
            &servers[0].url(),
            "--json",
        ])
        .output()
        .expect("backup");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let backup: Value = serde_json::from_slice(&out.stdout).expect("json");
    let b_secs = backup["seconds"].as_f64().expect("seconds");
    let b_mib = backup["bytes"].as_f64().expect("bytes") / 1048576.0;
    eprintln!(
        "REBUILD-BENCH backup: {} records, {b_mib:.1} MiB of files in {b_secs:.2}s: {:.0} records/s, {:.2} MiB/s",
        backup["records"],
        backup["records"].as_f64().unwrap_or(0.0) / b_secs,
        b_mib / b_secs
    );
    let restore_target = ChromaServer::start();
    let out = std::process::Command::new(chroma_ha_bin())
        .args([
            "restore",
            "--from",
            snap.to_str().expect("path"),
            "--to",
            &restore_target.url(),
            "--json",
        ])
        .output()
        .expect("restore");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored: Value = serde_json::from_slice(&out.stdout).expect("json");
    let r_secs = restored["seconds"].as_f64().expect("seconds");
    eprintln!(
        "REBUILD-BENCH restore: {} records in {r_secs:.2}s: {:.0} records/s, {:.2} MiB/s",
        restored["records"],
        restored["records"].as_f64().unwrap_or(0.0) / r_secs,
        b_mib / r_secs
    );

    // The floor: the script, between the same two servers (the replica
    // emptied first, directly).
    for c in 0..COLLECTIONS {
        let r = fault_kit::request_json(
            "DELETE",
            &format!(
                "{}/bench-{c}",
                collections_url(&servers[1].url(), "default_database")
            ),
            None,
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let out = support::run_python(
        &support::python_script("paged_copy.py"),
        &[
            "--source",
            &servers[0].url(),
            "--target",
            &servers[1].url(),
            "--page-size",
            "1000",
        ],
    );
    support::assert_python_ok("paged_copy.py", &out);
    let script: Value = serde_json::from_slice(&out.stdout).expect("script json");
    eprintln!(
        "REBUILD-BENCH script: {} records, {:.1} MiB in {:.2}s: {:.0} records/s, {:.2} MiB/s",
        script["records"],
        script["bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
        script["seconds"].as_f64().unwrap_or(0.0),
        script["records_per_second"].as_f64().unwrap_or(0.0),
        script["mib_per_second"].as_f64().unwrap_or(0.0)
    );
    eprintln!(
        "REBUILD-BENCH ratio rebuild/script records/s: {:.2}",
        (records as f64 / secs) / script["records_per_second"].as_f64().unwrap_or(1.0)
    );
}
