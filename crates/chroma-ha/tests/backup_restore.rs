//! `chroma-ha backup` and `restore` with real Chroma servers and a real
//! gateway (issue 10, part 3):
//!
//! 1. A backup through the gateway, taken while a writer keeps adding
//!    records one by one, is consistent at the LSN its manifest names (every
//!    add at or below it is in the snapshot, none above it unless listed as
//!    applied above it); restored into an empty server, it is identical to
//!    the source by the content check; the paused server is resumed.
//! 2. A corrupted collection file is refused before anything is restored,
//!    with an error naming the file; a snapshot without a manifest too.

mod backup_kit;
mod fault_kit;
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backup_kit::{create, fill, identical, run, TOKEN};
use fault_kit::{
    collections_url, instance, lsn_of, post_json, status_now, wait_caught_up, Cluster,
};
use serde_json::{json, Value};
use support::ChromaServer;

/// The record ids in a snapshot's collection file for collection `name`.
fn snapshot_ids(dir: &Path, name: &str) -> Vec<String> {
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest"))
            .expect("json");
    let entry = manifest["collections"]
        .as_array()
        .expect("collections")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no collection {name} in {manifest}"));
    let text =
        std::fs::read_to_string(dir.join(entry["file"].as_str().expect("file"))).expect("file");
    text.lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("line")["id"]
                .as_str()
                .expect("id")
                .to_string()
        })
        .collect()
}

#[test]
fn a_backup_under_writes_is_consistent_at_its_lsn_and_restores_identical() {
    let _serial = fault_kit::serial();
    let cluster = Cluster::start(&[("CHROMA_HA_ADMIN_TOKEN", TOKEN)]);
    let gw = cluster.gw();
    fill(&gw);
    let live = create(&gw, "default_database", json!({"name": "live"}));
    wait_caught_up(&gw, Duration::from_secs(60));

    // A writer adds one record at a time and notes each add's LSN.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (gw, stop) = (gw.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut acked: BTreeMap<u64, String> = BTreeMap::new();
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("live-{k}");
                let r = post_json(
                    &format!("{}/{live}/add", collections_url(&gw, "default_database")),
                    &json!({"ids": [id], "embeddings": [[k as f32, 1.0]]}),
                );
                if r.status / 100 == 2 {
                    acked.insert(lsn_of(&r), id);
                } else if k < 5 {
                    eprintln!("live add answered {} {}", r.status, r.text());
                }
                k += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            acked
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let dir = tempfile::tempdir().expect("tempdir");
    let snap = dir.path().join("snap");
    let out = run(&[
        "backup",
        "--to",
        snap.to_str().expect("path"),
        "--gateway",
        &gw,
        "--admin-token",
        TOKEN,
        "--server",
        "replica",
        "--page-size",
        "128",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "backup failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).expect("backup JSON");
    eprintln!("backup: {}", summary["message"]);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let acked = writer.join().expect("writer");
    let lsn = summary["lsn"].as_u64().expect("lsn");
    let above: Vec<u64> = summary["applied_above"]
        .as_array()
        .expect("above")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert!(
        acked.keys().any(|l| *l > lsn),
        "the writer kept writing after the snapshot's LSN {lsn}"
    );

    // Consistent at the LSN: every add up to it, none after it (but those
    // listed as applied above it).
    let ids: std::collections::BTreeSet<String> = snapshot_ids(&snap, "live").into_iter().collect();
    for (l, id) in &acked {
        let expected = *l <= lsn || above.contains(l);
        assert_eq!(
            ids.contains(id),
            expected,
            "record {id} (LSN {l}) vs snapshot LSN {lsn}, above {above:?}"
        );
    }
    // The replica was resumed and catches up.
    wait_caught_up(&gw, Duration::from_secs(60));
    assert_eq!(instance(&status_now(&gw), "replica")["applier"], "running");

    // Restored into an empty server: identical to a server holding the log
    // up to the LSN. The live collection is past it on the servers; compare
    // the rest, and the live one by ids.
    let target = ChromaServer::start();
    let out = run(&[
        "restore",
        "--from",
        snap.to_str().expect("path"),
        "--to",
        &target.url(),
        "--page-size",
        "100",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored: Value = serde_json::from_slice(&out.stdout).expect("restore JSON");
    assert_eq!(restored["records"], summary["records"]);
    let delete = fault_kit::request_json(
        "DELETE",
        &format!(
            "{}/live",
            collections_url(&cluster.primary.url(), "default_database")
        ),
        None,
    );
    assert_eq!(delete.status, 200, "{}", delete.text());
    let delete = fault_kit::request_json(
        "DELETE",
        &format!(
            "{}/live",
            collections_url(&target.url(), "default_database")
        ),
        None,
    );
    assert_eq!(delete.status, 200, "{}", delete.text());
    let report = identical(&cluster.primary.url(), &target.url());
    eprintln!("check: {}", report.summary());
    assert!(report.identical(), "restored server differs:\n{report}");
    assert!(report.records >= 602, "{}", report.summary());

    // Restoring again into the same server is refused: not empty.
    let out = run(&[
        "restore",
        "--from",
        snap.to_str().expect("path"),
        "--to",
        &target.url(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not empty"), "{err}");
}

#[test]
fn a_corrupted_backup_file_is_refused_naming_it() {
    let _serial = fault_kit::serial();
    let source = ChromaServer::start();
    let base = source.url();
    fill(&base);
    let dir = tempfile::tempdir().expect("tempdir");
    let snap = dir.path().join("snap");
    let out = run(&[
        "backup",
        "--to",
        snap.to_str().expect("path"),
        "--url",
        &base,
        "--json",
    ]);
    assert!(
        out.status.success(),
        "backup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(summary["lsn"].is_null());
    assert_eq!(summary["records"], 602);

    // Flip one byte in the middle of the first collection's file.
    let file = snap.join("collections/000001.jsonl");
    let mut bytes = std::fs::read(&file).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] = if bytes[mid] == b'1' { b'2' } else { b'1' };
    std::fs::write(&file, &bytes).expect("write");

    let target = ChromaServer::start();
    let out = run(&[
        "restore",
        "--from",
        snap.to_str().expect("path"),
        "--to",
        &target.url(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a corrupted backup must be refused"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("refusal: {err}");
    assert!(
        err.contains(&file.display().to_string()) && err.contains("corrupted"),
        "{err}"
    );
    // Nothing was restored.
    let listed = support::http_get(
        &collections_url(&target.url(), "default_database"),
        Duration::from_secs(10),
    )
    .expect("list");
    assert_eq!(listed.json(), json!([]));

    // A snapshot without its manifest (an unfinished backup) is refused too.
    std::fs::remove_file(snap.join("manifest.json")).expect("rm");
    let out = run(&[
        "restore",
        "--from",
        snap.to_str().expect("path"),
        "--to",
        &target.url(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("manifest.json"), "{err}");
}
