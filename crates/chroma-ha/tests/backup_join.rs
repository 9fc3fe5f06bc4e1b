//! A restored backup joins the gateway as one of its servers
//! (`chroma-ha restore --from DIR --join SERVER`, issue 10, part 3), with
//! real Chroma servers and a real gateway:
//!
//! 1. The replica is backed up under a concurrent workload, then dies and
//!    loses its data directory. While it is gone, every kind of write goes
//!    through the gateway, on collections in the backup and new ones with
//!    colliding names: a rename, a metadata change, update, upsert, delete
//!    by ids and by `where`, a collection delete and a create of the same
//!    name, a database delete and its re-creation. The backup restored with
//!    `--join replica` replays everything after its LSN: afterwards both
//!    servers, checked directly, hold every acknowledged write and are
//!    identical.
//! 2. A backup of another log, and a backup whose LSN the log no longer
//!    continues from, are refused before anything is written, with a
//!    message that says so and what to do; the server is left as it was.

mod backup_kit;
mod fault_kit;
mod support;

use std::time::Duration;

use backup_kit::{create, fill, identical, run, spawn, TOKEN};
use fault_kit::checks::{finish, UnknownBound};
use fault_kit::workload::{Workload, WorkloadSpec};
use fault_kit::{
    collections_url, databases_url, instance, post_json, request_json, status, status_now,
    wait_caught_up, wait_until, Cluster,
};
use serde_json::{json, Value};

/// Backs up `server` through the gateway into `dir`; the summary.
fn backup(gw: &str, server: &str, dir: &std::path::Path) -> Value {
    let out = run(&[
        "backup",
        "--to",
        dir.to_str().expect("path"),
        "--gateway",
        gw,
        "--admin-token",
        TOKEN,
        "--server",
        server,
        "--json",
    ]);
    assert!(
        out.status.success(),
        "backup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("backup JSON")
}

/// `chroma-ha restore --from DIR --join replica --replace`, waiting for it.
fn join(dir: &std::path::Path, gw: &str) -> std::process::Output {
    run(&[
        "restore",
        "--from",
        dir.to_str().expect("path"),
        "--join",
        "replica",
        "--replace",
        "--gateway",
        gw,
        "--admin-token",
        TOKEN,
    ])
}

/// Copies the files of snapshot directory `from` (and its `collections/`).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for sub in ["", "collections"] {
        std::fs::create_dir_all(to.join(sub)).expect("mkdir");
        for entry in std::fs::read_dir(from.join(sub))
            .expect("read dir")
            .flatten()
        {
            if entry.path().is_file() {
                std::fs::copy(entry.path(), to.join(sub).join(entry.file_name())).expect("copy");
            }
        }
    }
}

/// Sends a write through the gateway; it must be acknowledged.
fn write(method: &str, url: &str, body: Option<Value>) {
    let r = request_json(method, url, body.as_ref());
    assert!(
        r.status / 100 == 2,
        "{method} {url} {body:?}: {} {}",
        r.status,
        r.text()
    );
}

fn embeddings(n: usize, seed: f32) -> Vec<Vec<f32>> {
    (0..n)
        .map(|k| {
            (0..4)
                .map(|d| (seed + k as f32 * 0.1 + d as f32).sin())
                .collect()
        })
        .collect()
}

/// Every kind of write, on collections of the backup and new ones whose
/// names collide with them.
fn writes_after_the_backup(gw: &str, kept: &str, renamed: &str) {
    let colls = collections_url(gw, "default_database");
    write(
        "PUT",
        &format!("{colls}/{renamed}"),
        Some(json!({"new_name": "renamed-after", "new_metadata": {"renamed": true}})),
    );
    // A new collection takes the old name at once.
    let taker = create(gw, "default_database", json!({"name": "renamed"}));
    write(
        "POST",
        &format!("{colls}/{taker}/add"),
        Some(json!({"ids": ["t1", "t2"], "embeddings": embeddings(2, 9.0)})),
    );
    write(
        "PUT",
        &format!("{colls}/{kept}"),
        Some(json!({"new_metadata": {"phase": "after"}})),
    );
    write(
        "POST",
        &format!("{colls}/{kept}/update"),
        Some(
            json!({"ids": ["k0", "k1", "k2"], "metadatas": [{"k": 100}, {"k": 101}, {"k": 102}],
                    "documents": ["updated 0", "updated 1", "updated 2"]}),
        ),
    );
    write(
        "POST",
        &format!("{colls}/{kept}/upsert"),
        Some(
            json!({"ids": ["k3", "new-1"], "embeddings": embeddings(2, 3.0),
                    "metadatas": [{"k": 3, "upserted": true}, {"k": 200}]}),
        ),
    );
    write(
        "POST",
        &format!("{colls}/{kept}/delete"),
        Some(json!({"where": {"$and": [{"k": {"$gte": 30}}, {"k": {"$lt": 100}}]}})),
    );
    write(
        "POST",
        &format!("{colls}/{kept}/delete"),
        Some(json!({"ids": ["k4", "k5"]})),
    );
    // The collection "dropped" goes, and one of that name comes back.
    write("DELETE", &format!("{colls}/dropped"), None);
    let again = create(gw, "default_database", json!({"name": "dropped"}));
    write(
        "POST",
        &format!("{colls}/{again}/add"),
        Some(json!({"ids": ["d-new"], "embeddings": embeddings(1, 5.0)})),
    );
    // A whole database goes, and comes back with other content.
    write("DELETE", &format!("{}/second_db", databases_url(gw)), None);
    write(
        "POST",
        &databases_url(gw),
        Some(json!({"name": "second_db"})),
    );
    let small = create(gw, "second_db", json!({"name": "small"}));
    write(
        "POST",
        &format!("{}/{small}/add", collections_url(gw, "second_db")),
        Some(json!({"ids": ["s-after"], "embeddings": embeddings(1, 7.0)})),
    );
}

#[test]
fn a_restored_backup_joins_as_a_wiped_replica_and_replays_every_later_write() {
    let _serial = fault_kit::serial();
    let mut cluster = Cluster::start(&[("CHROMA_HA_ADMIN_TOKEN", TOKEN)]);
    let gw = cluster.gw();
    fill(&gw);
    let kept = create(&gw, "default_database", json!({"name": "kept"}));
    let ids: Vec<String> = (0..50).map(|k| format!("k{k}")).collect();
    let metas: Vec<Value> = (0..50).map(|k| json!({"k": k})).collect();
    write(
        "POST",
        &format!("{}/{kept}/add", collections_url(&gw, "default_database")),
        Some(json!({"ids": ids, "embeddings": embeddings(50, 1.0), "metadatas": metas})),
    );
    let renamed = create(&gw, "default_database", json!({"name": "renamed"}));
    write(
        "POST",
        &format!("{}/{renamed}/add", collections_url(&gw, "default_database")),
        Some(json!({"ids": ["r1"], "embeddings": embeddings(1, 2.0)})),
    );
    create(&gw, "default_database", json!({"name": "dropped"}));
    wait_caught_up(&gw, Duration::from_secs(60));

    let mut spec = WorkloadSpec::new("join");
    spec.writers = 2;
    spec.readers = 1;
    spec.think = Duration::from_millis(40);
    let workload = Workload::start(&gw, spec);
    std::thread::sleep(Duration::from_secs(1));
    let dir = tempfile::tempdir().expect("tempdir");
    let snap = dir.path().join("snap");
    let summary = backup(&gw, "replica", &snap);
    let lsn = summary["lsn"].as_u64().expect("lsn");
    eprintln!("backup: {}", summary["message"]);
    // The manifest names each collection's logical id: the id clients use.
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(snap.join("manifest.json")).expect("manifest"))
            .expect("JSON");
    let logical = |name: &str| -> Value {
        manifest["collections"]
            .as_array()
            .expect("collections")
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["logical_id"].clone())
            .unwrap_or(Value::Null)
    };
    assert_eq!(logical("kept"), json!(kept), "{manifest}");
    assert_eq!(logical("renamed"), json!(renamed), "{manifest}");
    assert_eq!(
        manifest["source"]["log_id"],
        status_now(&gw)["write_ahead_log"]["log_id"],
        "the manifest names the log its LSN belongs to"
    );

    // The replica dies and loses its data directory.
    cluster.replica.kill();
    let data = cluster.replica.data_dir();
    std::fs::remove_dir_all(&data).expect("delete the data directory");
    std::fs::create_dir_all(&data).expect("recreate it empty");
    writes_after_the_backup(&gw, &kept, &renamed);

    // The restore is prepared while the replica is still down: it is
    // marked before it comes back empty, so no read reaches it.
    let child = spawn(&[
        "restore",
        "--from",
        snap.to_str().expect("path"),
        "--join",
        "replica",
        "--replace",
        "--gateway",
        &gw,
        "--admin-token",
        TOKEN,
        "--page-size",
        "100",
        "--json",
    ]);
    wait_until("replica marked rebuilding", Duration::from_secs(20), || {
        status(&gw).is_some_and(|s| instance(&s, "replica")["rebuilding"] == true)
    });
    cluster.replica.restart();
    let out = child.wait_with_output().expect("restore output");
    assert!(
        out.status.success(),
        "restore --join failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored: Value = serde_json::from_slice(&out.stdout).expect("restore JSON");
    eprintln!("restore: {}", restored["message"]);
    assert_eq!(restored["joined"]["joined"], true, "{restored}");
    assert_eq!(restored["joined"]["lsn"], lsn, "{restored}");
    assert!(
        restored["joined"]["log_records_after"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{restored}"
    );
    let s = status_now(&gw);
    assert_eq!(instance(&s, "replica")["rebuilding"], false, "{s}");

    std::thread::sleep(Duration::from_secs(1));
    let result = workload.stop();
    finish(
        "restore_join",
        &cluster,
        &result,
        "join",
        &[("default_tenant", "second_db")],
        None,
        UnknownBound {
            floor: 10,
            fraction: 0.02,
        },
        "",
    );
    let report = identical(&cluster.primary.url(), &cluster.replica.url());
    eprintln!("check: {}", report.summary());
    assert!(report.identical(), "the joined replica differs:\n{report}");
    assert_eq!(instance(&status_now(&gw), "replica")["applier"], "running");
}

#[test]
fn a_backup_of_another_log_or_one_the_log_no_longer_continues_from_is_refused_before_anything_is_written(
) {
    let _serial = fault_kit::serial();
    // Small segments: the log drops what every server has applied soon.
    let cluster = Cluster::start(&[
        ("CHROMA_HA_ADMIN_TOKEN", TOKEN),
        ("CHROMA_HA_WAL_SEGMENT_BYTES", "4096"),
    ]);
    let gw = cluster.gw();
    let id = create(&gw, "default_database", json!({"name": "moving"}));
    let add = format!("{}/{id}/add", collections_url(&gw, "default_database"));
    write(
        "POST",
        &add,
        Some(json!({"ids": ["a0"], "embeddings": embeddings(1, 0.0)})),
    );
    wait_caught_up(&gw, Duration::from_secs(60));
    let dir = tempfile::tempdir().expect("tempdir");
    let snap = dir.path().join("snap");
    let lsn = backup(&gw, "replica", &snap)["lsn"].as_u64().expect("lsn");
    // A backup of another log (its identity changed) is refused too.
    let foreign = dir.path().join("foreign");
    copy_dir(&snap, &foreign);
    let manifest_path = foreign.join("manifest.json");
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).expect("manifest")).expect("JSON");
    manifest["source"]["log_id"] = json!("00000000-0000-4000-8000-000000000000");
    std::fs::write(&manifest_path, manifest.to_string()).expect("write the manifest");
    let out = join(&foreign, &gw);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a foreign backup must be refused"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("taken through another log") && err.contains("chroma-ha rebuild replica"),
        "{err}"
    );
    let page = "x".repeat(1500);
    for k in 1..60 {
        let r = post_json(
            &add,
            &json!({"ids": [format!("a{k}")], "embeddings": embeddings(1, k as f32),
                    "documents": [page]}),
        );
        assert!(r.status / 100 == 2, "{}", r.text());
    }
    wait_caught_up(&gw, Duration::from_secs(60));
    wait_until(
        "the log drops the records after the backup",
        Duration::from_secs(30),
        || {
            status(&gw)
                .is_some_and(|s| s["write_ahead_log"]["first_lsn"].as_u64().unwrap_or(0) > lsn + 1)
        },
    );

    let out = join(&snap, &gw);
    assert_eq!(out.status.code(), Some(1), "the join must be refused");
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("refusal: {err}");
    assert!(
        err.contains(&format!(
            "no longer holds what follows the backup's LSN {lsn}"
        )) && err.contains("chroma-ha rebuild replica"),
        "{err}"
    );
    // Nothing changed: the replica serves, holds everything, replays.
    let s = status_now(&gw);
    assert_eq!(instance(&s, "replica")["rebuilding"], false, "{s}");
    assert_eq!(instance(&s, "replica")["applier"], "running", "{s}");
    let report = identical(&cluster.primary.url(), &cluster.replica.url());
    assert!(report.identical(), "{report}");
    assert!(report.records >= 60, "{}", report.summary());
}
