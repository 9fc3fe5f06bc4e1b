//! Merged catch-up against real Chroma: the replica is stopped, a mixed
//! backlog goes through the gateway (batch-1 adds, adds of ids that exist
//! already, upserts of existing and new ids, updates, deletes by id and by
//! filter, collection creates, renames, metadata updates and deletes, in two
//! collections), the replica is restarted. Afterwards the two servers,
//! read directly, hold the same content, nothing is dead-lettered, and the
//! replica's applier did merge (its merged-requests metric).

mod fault_kit;
mod support;

use std::time::Duration;

use chroma_ha::check::{compare_servers, CheckOptions};
use fault_kit::{
    collections_url, post_json, request_json, serial, wait_caught_up, Cluster, DATABASE, TENANT,
};
use serde_json::{json, Value};
use support::{block_on, http_get};

fn create(colls: &str, name: &str) -> String {
    let r = post_json(colls, &json!({"name": name, "metadata": {"n": name}}));
    assert_eq!(r.status, 200, "create {name}: {}", r.text());
    r.json()["id"].as_str().expect("id").to_string()
}

fn write(colls: &str, id: &str, op: &str, body: Value) {
    let r = post_json(&format!("{colls}/{id}/{op}"), &body);
    assert!(
        r.status == 200 || r.status == 201,
        "{op} {body}: {} {}",
        r.status,
        r.text()
    );
}

fn record(ids: &[String], doc: &str, i: usize) -> Value {
    json!({
        "ids": ids,
        "embeddings": ids.iter().map(|_| vec![i as f64 * 0.5, 1.0, -2.25]).collect::<Vec<_>>(),
        "documents": ids.iter().map(|id| format!("{doc} {id}")).collect::<Vec<_>>(),
        "metadatas": ids.iter().map(|_| json!({"i": i})).collect::<Vec<_>>(),
    })
}

/// The sum of a counter's samples over every label set in `/metrics`.
fn metric_sum(gw: &str, name: &str) -> f64 {
    let text = http_get(&format!("{gw}/metrics"), Duration::from_secs(10))
        .expect("GET /metrics")
        .text();
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn a_replica_catching_up_a_mixed_backlog_with_merging_ends_identical_to_the_primary() {
    let _serial = serial();
    let mut c = Cluster::start(&[("CHROMA_HA_MERGE_CATCH_UP", "true")]);
    let gw = c.gw();
    let colls = collections_url(&gw, DATABASE);
    let c1 = create(&colls, "merge-one");
    let c2 = create(&colls, "merge-two");
    write(&colls, &c1, "add", record(&["seed".into()], "seed", 0));
    wait_caught_up(&gw, Duration::from_secs(60));

    c.replica.kill();
    let mut renamed = false;
    for i in 0..240usize {
        let id = format!("r{i}");
        write(
            &colls,
            &c1,
            "add",
            record(std::slice::from_ref(&id), "add", i),
        );
        match i % 12 {
            // An add of an id that exists already: the first record stays.
            1 if i > 3 => write(
                &colls,
                &c1,
                "add",
                record(&[format!("r{}", i - 3)], "late add", i),
            ),
            // Upserts of an existing and a new id in one entry.
            2 => write(
                &colls,
                &c1,
                "upsert",
                record(&[format!("r{}", i / 2), format!("u{i}")], "upsert", i),
            ),
            // An update of an existing record.
            3 => write(
                &colls,
                &c1,
                "update",
                json!({"ids": [format!("r{}", i - 1)], "documents": ["updated"]}),
            ),
            // Deletes by id, then an add of a deleted id.
            4 => write(
                &colls,
                &c1,
                "delete",
                json!({"ids": [format!("r{}", i - 2)]}),
            ),
            5 => write(
                &colls,
                &c1,
                "add",
                record(&[format!("r{}", i - 3)], "re-added", i),
            ),
            // The other collection, and a delete by filter there.
            6 => write(
                &colls,
                &c2,
                "add",
                record(&[format!("x{i}"), format!("y{i}")], "two", i),
            ),
            7 => write(&colls, &c2, "delete", json!({"where": {"i": i - 1}})),
            // Collection operations between the record writes.
            8 => {
                let tmp = create(&colls, &format!("tmp{i}"));
                write(&colls, &tmp, "add", record(&["t".into()], "tmp", i));
            }
            9 => {
                let r = request_json("DELETE", &format!("{colls}/tmp{}", i - 1), None);
                assert_eq!(r.status, 200, "delete tmp: {}", r.text());
            }
            10 => {
                let body = if renamed {
                    json!({"new_metadata": {"round": i}})
                } else {
                    json!({"new_name": "merge-two-renamed"})
                };
                renamed = true;
                let r = request_json("PUT", &format!("{colls}/{c2}"), Some(&body));
                assert_eq!(r.status, 200, "update collection: {}", r.text());
            }
            _ => write(
                &colls,
                &c2,
                "upsert",
                record(&[format!("z{}", i % 5)], "z", i),
            ),
        }
    }
    c.replica.restart();
    wait_caught_up(&gw, Duration::from_secs(180));

    let dead = fault_kit::status_now(&gw)["write_ahead_log"]["dead_letters"].clone();
    assert_eq!(dead, 0, "dead letters after the catch-up");
    let report = block_on(compare_servers(
        &c.server_urls(),
        &[(TENANT.to_string(), DATABASE.to_string())],
        &CheckOptions::default(),
    ))
    .expect("compare_servers");
    let merged = metric_sum(&gw, "chroma_ha_applier_merged_requests_total");
    let entries = metric_sum(&gw, "chroma_ha_applier_merged_entries_sum");
    eprintln!(
        "MERGED-CATCH-UP-SUMMARY servers_identical={} records={:?} merged_requests={merged} \
         merged_entries={entries}",
        report.identical(),
        report.records_per_server
    );
    assert!(report.identical(), "servers differ:\n{report}");
    assert!(
        report.records_per_server[0] > 200,
        "{:?}",
        report.records_per_server
    );
    assert!(
        merged >= 1.0,
        "the replica's applier merged no request; its log:\n{}",
        fault_kit::log_lines(&c.gateway, &["merg", "max_batch", "WARN", "ERROR"], 30).join("\n")
    );
    assert!(
        entries >= 2.0 * merged,
        "a merged request carries 2 entries or more"
    );
}
