//! Regression test, found by the history test (`tests/history.rs`) in a
//! run without faults: a write through the id of a deleted collection must
//! fail as it does on Chroma (404), not land in the collection that has
//! since taken the deleted one's name.
//!
//! The gateway rewrites a logical collection id to a server's physical id;
//! when it has no link for that server it resolves the id by the
//! collection's last known *name* (`Replicator::resolve`). A delete drops
//! only the link of the server that applied it, so while another server has
//! not applied the delete yet, the logical id survives, and a write through
//! it is resolved by name on the first server — to whatever collection now
//! has that name.
//!
//! The replica is paused (SIGSTOP) during the sequence so that it cannot
//! apply the delete: that makes the test deterministic. In the history test
//! the same happens whenever a replica lags a little.
//!
//! The second test: the same name-keyed id map makes a *lagging* server
//! apply a delete by name to the wrong logical collection (dead letters,
//! diverged servers), also seen in history runs without any fault.

mod fault_kit;
mod support;

use std::time::Duration;

use chroma_ha::check::{CheckOptions, ServerReader};
use fault_kit::{
    collections_url, lsn_of, post_json, request_json, serial, wait_applied, wait_caught_up,
    Cluster, DATABASE, TENANT,
};
use serde_json::{json, Value};
use support::block_on;

fn metadata_on(url: &str, name: &str) -> Option<Value> {
    block_on(async {
        let reader = ServerReader::new(url, None, &CheckOptions::default()).expect("reader");
        reader
            .list_collections(TENANT, DATABASE)
            .await
            .expect("list collections")
            .into_iter()
            .find(|c| c.name == name)
            .map(|c| c.metadata)
    })
}

#[test]
fn a_write_through_a_deleted_collections_id_does_not_reach_the_one_that_took_its_name() {
    let _serial = serial();
    let c = Cluster::start(&[]);
    let gw = c.gw();
    let colls = collections_url(&gw, DATABASE);
    let r = post_json(&colls, &json!({"name": "taken", "metadata": {"u": "old"}}));
    assert_eq!(r.status, 200, "{}", r.text());
    let old_id = r.json()["id"].as_str().expect("id").to_string();
    let r = post_json(
        &colls,
        &json!({"name": "other", "metadata": {"u": "other"}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let other_id = r.json()["id"].as_str().expect("id").to_string();
    wait_applied(&gw, lsn_of(&r), Duration::from_secs(30));

    c.replica.pause();
    let r = request_json("DELETE", &format!("{colls}/taken"), None);
    assert_eq!(r.status, 200, "delete: {}", r.text());
    let r = request_json(
        "PUT",
        &format!("{colls}/{other_id}"),
        Some(&json!({"new_name": "taken"})),
    );
    assert_eq!(r.status, 200, "rename: {}", r.text());
    let stale = request_json(
        "PUT",
        &format!("{colls}/{old_id}"),
        Some(&json!({"new_metadata": {"u": "written through a deleted id"}})),
    );
    c.replica.resume();
    wait_caught_up(&gw, Duration::from_secs(60));

    let found: Vec<(String, Option<Value>)> = c
        .server_urls()
        .into_iter()
        .map(|u| {
            let m = metadata_on(&u, "taken");
            (u, m)
        })
        .collect();
    eprintln!(
        "STALE-ID-SUMMARY write_through_deleted_id_status={} metadata_of_taken={found:?}",
        stale.status
    );
    assert_eq!(
        stale.status,
        404,
        "a write through the id of a deleted collection answered {} {} (Chroma answers 404)",
        stale.status,
        stale.text()
    );
    for (url, meta) in found {
        assert_eq!(
            meta,
            Some(json!({"u": "other"})),
            "{url}: the renamed collection was changed through the deleted one's id"
        );
    }
}

/// A lagging server must apply a delete by name to the collection that had
/// the name *at that point of the log*. The id map keeps only the current
/// names (`IdMap::forget` looks the name up there), so when a lagging
/// replica applies `DELETE old` after the primary already renamed another
/// collection to `old`, the replica may drop the link of the renamed one;
/// its later writes then find no physical id there, are dead-lettered, and
/// the servers diverge. Which collection loses its link depends on hash-map
/// order, so the test runs several rounds.
#[test]
fn a_lagging_server_applies_a_delete_by_name_to_the_collection_that_had_the_name() {
    let _serial = serial();
    let mut c = Cluster::start(&[]);
    let gw = c.gw();
    let colls = collections_url(&gw, DATABASE);
    let rounds = 6;
    for round in 0..rounds {
        let (old, new) = (format!("lag{round}"), format!("lag{round}-new"));
        let r = post_json(&colls, &json!({ "name": old }));
        assert_eq!(r.status, 200, "{}", r.text());
        let r = post_json(&colls, &json!({ "name": new }));
        assert_eq!(r.status, 200, "{}", r.text());
        let new_id = r.json()["id"].as_str().expect("id").to_string();
        wait_applied(&gw, lsn_of(&r), Duration::from_secs(30));

        c.replica.kill();
        let r = request_json("DELETE", &format!("{colls}/{old}"), None);
        assert_eq!(r.status, 200, "delete: {}", r.text());
        let r = request_json(
            "PUT",
            &format!("{colls}/{new_id}"),
            Some(&json!({ "new_name": old })),
        );
        assert_eq!(r.status, 200, "rename: {}", r.text());
        let r = post_json(
            &format!("{colls}/{new_id}/add"),
            &json!({"ids": ["x"], "embeddings": [[1.0, 2.0, 3.0]], "documents": ["doc-x"]}),
        );
        assert_eq!(r.status, 201, "add: {}", r.text());
        c.replica.restart();
        wait_caught_up(&gw, Duration::from_secs(60));
    }
    let dead = fault_kit::status_now(&gw)["write_ahead_log"]["dead_letters"].clone();
    let report = block_on(chroma_ha::check::compare_servers(
        &c.server_urls(),
        &[(TENANT.to_string(), DATABASE.to_string())],
        &CheckOptions::default(),
    ))
    .expect("compare_servers");
    eprintln!(
        "LAGGING-DELETE-SUMMARY rounds={rounds} dead_letters={dead} servers_identical={}",
        report.identical()
    );
    assert_eq!(
        dead,
        0,
        "dead letters after catch-up:\n{}",
        fault_kit::log_lines(&c.gateway, &["divergence"], 10).join("\n")
    );
    assert!(report.identical(), "servers differ:\n{report}");
}
