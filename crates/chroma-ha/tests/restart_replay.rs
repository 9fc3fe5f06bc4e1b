//! Regression tests: a gateway restart must not re-send a *run* of entries
//! to a server that had already applied them.
//!
//! After a SIGKILL the gateway re-applies, on every server, the entries above
//! that server's durable cursor (saved every 100 ms). Repeating one entry is
//! harmless, but repeating a run is not when a later entry of the run changed
//! the state an earlier one depends on:
//!
//! - `DELETE …/collections/swapN`, then rename `swapN-new` to `swapN`: the
//!   repeated `DELETE swapN` deletes the renamed collection.
//! - `delete {"where": {"tag": "a"}}`, then `update y` to tag `a`: the
//!   repeated delete-by-where deletes `y`.
//! - `update z` while `z` does not exist (a no-op), then `add z`: the
//!   repeated update changes the new record (found by `tests/history.rs`).
//!
//! Each test runs several rounds of its sequence against two real Chroma
//! servers behind a real gateway: both writes acknowledged, the gateway
//! SIGKILLed at once after the second answer, restarted on the same data
//! directory, every server caught up, and then EVERY server read directly
//! (not through the gateway) for the expected content; at the end the
//! servers must be identical. The test goes through all its rounds and then
//! fails, naming every damaged round and server.
//!
//! `RESTART_REPLAY_ROUNDS` (default 6) sets the number of rounds:
//!
//! ```text
//! RESTART_REPLAY_ROUNDS=20 cargo test -p chroma-ha --test restart_replay -- --nocapture
//! ```

mod fault_kit;
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chroma_ha::check::{compare_servers, CheckOptions, ServerReader};
use fault_kit::{
    collections_url, lsn_of, post_json, request_json, serial, wait_applied, wait_caught_up,
    Cluster, DATABASE, TENANT,
};
use serde_json::{json, Value};
use support::{block_on, HttpResponse};

/// Bound of the catch-up waits.
const CATCH_UP: Duration = Duration::from_secs(60);

fn rounds() -> usize {
    std::env::var("RESTART_REPLAY_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6)
}

fn assert_2xx(what: &str, r: &HttpResponse) {
    assert!(
        (200..300).contains(&r.status),
        "{what}: {} {}",
        r.status,
        r.text()
    );
}

/// A server's collections of the default database: name -> id.
fn collections_on(url: &str) -> BTreeMap<String, String> {
    block_on(async {
        let reader = ServerReader::new(url, None, &CheckOptions::default()).expect("reader");
        reader
            .list_collections(TENANT, DATABASE)
            .await
            .unwrap_or_else(|e| panic!("listing collections on {url}: {e}"))
            .into_iter()
            .map(|c| (c.name, c.id))
            .collect()
    })
}

/// A server's records of one collection (by its id there): id -> (document,
/// metadata).
fn records_on(url: &str, id: &str) -> BTreeMap<String, (Option<String>, Value)> {
    block_on(async {
        let reader = ServerReader::new(url, None, &CheckOptions::default()).expect("reader");
        reader
            .get_all_records(TENANT, DATABASE, id)
            .await
            .unwrap_or_else(|e| panic!("reading collection {id} on {url}: {e}"))
            .into_iter()
            .map(|(k, r)| (k, (r.document, r.metadata)))
            .collect()
    })
}

/// Fails unless the servers are identical in the default database.
fn assert_identical(c: &Cluster, test: &str) {
    let report = block_on(compare_servers(
        &c.server_urls(),
        &[(TENANT.to_string(), DATABASE.to_string())],
        &CheckOptions::default(),
    ))
    .expect("compare_servers");
    assert!(report.identical(), "{test}: servers differ:\n{report}");
}

/// SIGKILLs the gateway (the caller does so right after an answer),
/// restarts it on the same data dir and waits until every server has applied
/// the whole log. Returns the time from the answer to the kill.
fn kill_restart_catch_up(c: &mut Cluster, answered: Instant) -> Duration {
    c.gateway.kill();
    let to_kill = answered.elapsed();
    c.gateway.restart();
    wait_caught_up(&c.gw(), CATCH_UP);
    to_kill
}

/// Lets every server apply up to `lsn` and the appliers save their cursors
/// past it (they do so every 100 ms), so that only what follows is replayed.
fn settle(c: &Cluster, lsn: u64) {
    wait_applied(&c.gw(), lsn, CATCH_UP);
    std::thread::sleep(Duration::from_millis(300));
}

fn finish(test: &str, c: &Cluster, damaged: &[String], rounds: usize, kill_delays: &[Duration]) {
    let worst = kill_delays.iter().max().copied().unwrap_or_default();
    eprintln!(
        "REPLAY-SUMMARY test={test} rounds={rounds} damaged_rounds={} answer_to_sigkill_max={:.1}ms",
        damaged
            .iter()
            .map(|d| d.split(':').next().unwrap_or_default())
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        worst.as_secs_f64() * 1e3
    );
    assert!(
        damaged.is_empty(),
        "{test}: content damaged after a gateway restart:\n{}",
        damaged.join("\n")
    );
    assert_identical(c, test);
}

#[test]
fn a_collection_renamed_into_a_deleted_name_survives_a_gateway_kill() {
    let _serial = serial();
    let test = "rename_into_deleted_name";
    let mut c = Cluster::start(&[]);
    let gw = c.gw();
    let n = rounds();
    let mut damaged = Vec::new();
    let mut delays = Vec::new();
    for round in 0..n {
        let old = format!("swap{round}");
        let new = format!("swap{round}-new");
        let r = post_json(&collections_url(&gw, DATABASE), &json!({ "name": old }));
        assert_2xx("create old", &r);
        let r = post_json(&collections_url(&gw, DATABASE), &json!({ "name": new }));
        assert_2xx("create new", &r);
        let new_id = r.json()["id"].as_str().expect("id").to_string();
        let r = post_json(
            &format!("{}/{new_id}/add", collections_url(&gw, DATABASE)),
            &json!({"ids": ["marker"], "embeddings": [[1.0, 2.0, 3.0]],
                    "documents": [format!("new-{round}")], "metadatas": [{"tag": "new"}]}),
        );
        assert_2xx("add marker", &r);
        settle(&c, lsn_of(&r));

        let r = request_json(
            "DELETE",
            &format!("{}/{old}", collections_url(&gw, DATABASE)),
            None,
        );
        assert_2xx("delete old", &r);
        let r = request_json(
            "PUT",
            &format!("{}/{new_id}", collections_url(&gw, DATABASE)),
            Some(&json!({ "new_name": old })),
        );
        assert_2xx("rename new to old", &r);
        delays.push(kill_restart_catch_up(&mut c, Instant::now()));

        for url in c.server_urls() {
            let colls = collections_on(&url);
            let Some(id) = colls.get(&old) else {
                damaged.push(format!("round {round}: {url}: collection {old} is gone"));
                continue;
            };
            if colls.contains_key(&new) {
                damaged.push(format!("round {round}: {url}: {new} still exists"));
            }
            let records = records_on(&url, id);
            let want = (Some(format!("new-{round}")), json!({"tag": "new"}));
            if records.len() != 1 || records.get("marker") != Some(&want) {
                damaged.push(format!(
                    "round {round}: {url}: {old} holds {records:?}, expected only marker {want:?}"
                ));
            }
        }
    }
    finish(test, &c, &damaged, n, &delays);
}

#[test]
fn a_record_retagged_after_a_delete_by_where_survives_a_gateway_kill() {
    let _serial = serial();
    let test = "retag_after_delete_where";
    let mut c = Cluster::start(&[]);
    let gw = c.gw();
    let n = rounds();
    let mut damaged = Vec::new();
    let mut delays = Vec::new();
    for round in 0..n {
        let name = format!("retag{round}");
        let r = post_json(&collections_url(&gw, DATABASE), &json!({ "name": name }));
        assert_2xx("create", &r);
        let id = r.json()["id"].as_str().expect("id").to_string();
        let base = format!("{}/{id}", collections_url(&gw, DATABASE));
        let r = post_json(
            &format!("{base}/add"),
            &json!({"ids": ["x", "y"], "embeddings": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
                    "documents": ["doc-x", "doc-y"],
                    "metadatas": [{"tag": "a"}, {"tag": "b"}]}),
        );
        assert_2xx("add x, y", &r);
        settle(&c, lsn_of(&r));

        let r = post_json(&format!("{base}/delete"), &json!({"where": {"tag": "a"}}));
        assert_2xx("delete where tag a", &r);
        let r = post_json(
            &format!("{base}/update"),
            &json!({"ids": ["y"], "metadatas": [{"tag": "a"}]}),
        );
        assert_2xx("update y to tag a", &r);
        delays.push(kill_restart_catch_up(&mut c, Instant::now()));

        for url in c.server_urls() {
            let colls = collections_on(&url);
            let Some(sid) = colls.get(&name) else {
                damaged.push(format!("round {round}: {url}: collection {name} is gone"));
                continue;
            };
            let records = records_on(&url, sid);
            let want: BTreeMap<String, (Option<String>, Value)> = [(
                "y".to_string(),
                (Some("doc-y".to_string()), json!({"tag": "a"})),
            )]
            .into();
            if records != want {
                let found = if records.contains_key("y") {
                    format!("{records:?}")
                } else {
                    format!("record y is gone ({records:?})")
                };
                damaged.push(format!(
                    "round {round}: {url}: {name}: {found}, expected {want:?}"
                ));
            }
        }
    }
    finish(test, &c, &damaged, n, &delays);
}

#[test]
fn a_record_added_after_an_update_of_its_missing_id_survives_a_gateway_kill() {
    let _serial = serial();
    let test = "add_after_update_of_missing_id";
    let mut c = Cluster::start(&[]);
    let gw = c.gw();
    let n = rounds();
    let mut damaged = Vec::new();
    let mut delays = Vec::new();
    for round in 0..n {
        let name = format!("late{round}");
        let r = post_json(&collections_url(&gw, DATABASE), &json!({ "name": name }));
        assert_2xx("create", &r);
        let id = r.json()["id"].as_str().expect("id").to_string();
        let base = format!("{}/{id}", collections_url(&gw, DATABASE));
        settle(&c, lsn_of(&r));

        let r = post_json(
            &format!("{base}/update"),
            &json!({"ids": ["z"], "metadatas": [{"tag": "update-of-missing"}]}),
        );
        assert_2xx("update of a missing z", &r);
        let r = post_json(
            &format!("{base}/add"),
            &json!({"ids": ["z"], "embeddings": [[1.0, 1.0, 1.0]],
                    "documents": ["doc-z"], "metadatas": [{"tag": "added"}]}),
        );
        assert_2xx("add z", &r);
        delays.push(kill_restart_catch_up(&mut c, Instant::now()));

        for url in c.server_urls() {
            let colls = collections_on(&url);
            let Some(sid) = colls.get(&name) else {
                damaged.push(format!("round {round}: {url}: collection {name} is gone"));
                continue;
            };
            let records = records_on(&url, sid);
            let want: BTreeMap<String, (Option<String>, Value)> = [(
                "z".to_string(),
                (Some("doc-z".to_string()), json!({"tag": "added"})),
            )]
            .into();
            if records != want {
                damaged.push(format!(
                    "round {round}: {url}: {name}: {records:?}, expected {want:?}"
                ));
            }
        }
    }
    finish(test, &c, &damaged, n, &delays);
}
