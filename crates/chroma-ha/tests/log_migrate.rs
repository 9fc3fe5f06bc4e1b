//! `chroma-ha log migrate`: a gateway on its file log, with a replica left
//! behind, is stopped (SIGKILL) and its log and state are copied into an
//! empty PostgreSQL log; a new gateway on an empty data directory and that
//! log resumes: the collection keeps its id, the replica gets the writes
//! it missed, new writes continue the LSNs. A second migration into the
//! now non-empty log is refused.

mod fault_kit;
mod support;

use std::process::Command;
use std::time::Duration;

use fault_kit::{
    collections_url, lsn_of, post_json, request_json, serial, start_gateway, status_now,
    wait_caught_up, Cluster, DATABASE,
};
use pglog::testing::TestPostgres;
use serde_json::{json, Value};
use support::chroma_ha_bin;

fn add(gw: &str, id: &str, from: usize, n: usize) -> u64 {
    let ids: Vec<String> = (from..from + n).map(|i| format!("r{i}")).collect();
    let embeddings: Vec<Vec<f32>> = (from..from + n).map(|i| vec![i as f32, 1.0]).collect();
    let url = format!("{}/{id}/add", collections_url(gw, DATABASE));
    let r = post_json(&url, &json!({"ids": ids, "embeddings": embeddings}));
    assert!(r.status < 300, "add: {} {}", r.status, r.text());
    lsn_of(&r)
}

/// The record count of collection `name` on a Chroma server, read directly.
fn count_on(server: &str, name: &str) -> u64 {
    let url = format!("{}/{name}", collections_url(server, DATABASE));
    let id = request_json("GET", &url, None).json()["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{name} on {server}"))
        .to_string();
    let url = format!("{}/{id}/count", collections_url(server, DATABASE));
    request_json("GET", &url, None).json().as_u64().unwrap()
}

fn migrate(from: &std::path::Path, to: &str) -> std::process::Output {
    let mut cmd = Command::new(chroma_ha_bin());
    for name in support::inherited_gateway_env() {
        cmd.env_remove(name);
    }
    cmd.args(["log", "migrate", "--json", "--from"])
        .arg(from)
        .env("CHROMA_HA_LOG_URL", to)
        .output()
        .expect("run chroma-ha log migrate")
}

#[test]
fn a_stopped_gateways_file_log_and_state_migrated_to_postgresql_are_resumed_by_a_new_gateway() {
    let _serial = serial();
    let pg = TestPostgres::start();
    let url = pg.url("postgres");
    let mut c = Cluster::start(&[]);
    let gw = c.gw();
    let created = post_json(&collections_url(&gw, DATABASE), &json!({"name": "mig"}));
    assert_eq!(created.status, 200, "{}", created.text());
    let id = created.json()["id"].as_str().unwrap().to_string();
    add(&gw, &id, 0, 20);
    wait_caught_up(&gw, Duration::from_secs(30));
    // The replica misses the next writes: its cursor stays behind.
    c.replica.kill();
    let mut last = 0;
    for batch in 0..4 {
        last = add(&gw, &id, 20 + batch * 5, 5);
    }
    let log_id = status_now(&gw)["write_ahead_log"]["log_id"].clone();
    assert!(log_id.is_string(), "{log_id}");
    c.gateway.kill();
    let data = c.gateway.dir().join("data");

    let out = migrate(&data, &url);
    assert!(
        out.status.success(),
        "migrate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    eprintln!("log_migrate: {report}");
    assert_eq!(report["last_lsn"], last, "every record copied");
    assert!(report["cursors"]["replica"].as_u64().unwrap() < last);
    let documents = report["documents"].to_string();
    assert!(
        documents.contains("applied")
            && documents.contains("collections")
            && documents.contains("log_identity"),
        "{documents}"
    );
    let again = migrate(&data, &url);
    assert!(
        !again.status.success(),
        "a second migration must be refused"
    );
    let why = String::from_utf8_lossy(&again.stderr);
    assert!(why.contains("not empty"), "{why}");
    assert!(!why.contains(&url), "the URL is a secret: {why}");

    c.replica.restart();
    c.gateway = start_gateway(
        &c.primary.url(),
        &c.replica.url(),
        &[("CHROMA_HA_LOG_URL", url.as_str())],
    );
    let gw = c.gw();
    c.wait_ready(Duration::from_secs(30));
    assert_eq!(status_now(&gw)["write_ahead_log"]["kind"], "postgres");
    assert_eq!(
        status_now(&gw)["write_ahead_log"]["log_id"],
        log_id,
        "the log keeps its identity"
    );
    let by_name = request_json(
        "GET",
        &format!("{}/mig", collections_url(&gw, DATABASE)),
        None,
    );
    assert_eq!(by_name.status, 200, "{}", by_name.text());
    assert_eq!(
        by_name.json()["id"],
        id.as_str(),
        "the collection keeps its id"
    );
    let next = add(&gw, &id, 40, 5);
    assert!(
        next > last,
        "LSNs go on after the migrated ones: {next} after {last}"
    );
    wait_caught_up(&gw, Duration::from_secs(30));
    assert_eq!(count_on(&c.primary.url(), "mig"), 45);
    assert_eq!(
        count_on(&c.replica.url(), "mig"),
        45,
        "the replica got the writes it missed before the migration"
    );
    assert_eq!(
        status_now(&gw)["dead_letters"]["count"]
            .as_u64()
            .unwrap_or(0),
        0
    );
}
