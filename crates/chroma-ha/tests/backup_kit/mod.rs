//! Helpers of the backup, restore and join tests: collections made through
//! a gateway, the `chroma-ha` command, the content check of two servers.
#![allow(dead_code)]

use std::process::{Child, Command, Output, Stdio};

use serde_json::{json, Value};

use crate::fault_kit::{collections_url, post_json};
use crate::support::chroma_ha_bin;

/// The gateway's admin token in these tests.
pub const TOKEN: &str = "backup-test-token";

/// Creates a collection through the gateway; returns its id.
pub fn create(gw: &str, db: &str, body: Value) -> String {
    let r = post_json(&collections_url(gw, db), &body);
    assert!(
        r.status / 100 == 2,
        "create {body}: {} {}",
        r.status,
        r.text()
    );
    r.json()["id"].as_str().expect("id").to_string()
}

/// Starts `chroma-ha ARGS` with none of its settings from the environment,
/// its output piped.
pub fn spawn(args: &[&str]) -> Child {
    Command::new(chroma_ha_bin())
        .args(args)
        .env_remove("CHROMA_HA_URL")
        .env_remove("CHROMA_HA_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chroma-ha")
}

/// Runs `chroma-ha ARGS` like [`spawn`] and waits for it.
pub fn run(args: &[&str]) -> Output {
    spawn(args).wait_with_output().expect("run chroma-ha")
}

/// The content check of servers `a` and `b` over the default tenant.
pub fn identical(a: &str, b: &str) -> chroma_ha::check::CheckReport {
    crate::support::block_on(async {
        let urls = vec![a.to_string(), b.to_string()];
        let opts = chroma_ha::check::CheckOptions::default();
        let scopes =
            chroma_ha::check::discover_scopes(&urls, &["default_tenant".to_string()], &opts)
                .await
                .expect("scopes");
        chroma_ha::check::compare_servers(&urls, &scopes, &opts)
            .await
            .expect("check")
    })
}

/// Fills the cluster with varied content: two databases, collections with
/// metadata and configuration, records with and without documents,
/// metadatas and uris, more records than a page.
pub fn fill(gw: &str) {
    let r = post_json(
        &format!("{gw}/api/v2/tenants/default_tenant/databases"),
        &json!({"name": "second_db"}),
    );
    assert!(r.status / 100 == 2, "{} {}", r.status, r.text());
    let big = create(
        gw,
        "default_database",
        json!({"name": "big", "metadata": {"owner": "test", "n": 3, "f": 0.5},
               "configuration": {"hnsw": {"space": "cosine", "ef_construction": 120}}}),
    );
    for batch in 0..6 {
        let ids: Vec<String> = (0..100).map(|k| format!("b{batch}-{k}")).collect();
        let embeddings: Vec<Vec<f32>> = (0..100)
            .map(|k| {
                (0..16)
                    .map(|d| ((batch * 100 + k) as f32 * 0.37 + d as f32).sin())
                    .collect()
            })
            .collect();
        let documents: Vec<Value> = (0..100)
            .map(|k| {
                if k % 3 == 0 {
                    Value::Null
                } else {
                    json!(format!("doc {batch} {k} ünïcode"))
                }
            })
            .collect();
        let metadatas: Vec<Value> = (0..100)
            .map(|k| {
                if k % 4 == 0 {
                    Value::Null
                } else {
                    json!({"k": k, "batch": batch, "x": k as f64 / 7.0, "ok": k % 2 == 0})
                }
            })
            .collect();
        let uris: Vec<Value> = (0..100)
            .map(|k| {
                if k % 5 == 0 {
                    json!(format!("s3://b/{k}"))
                } else {
                    Value::Null
                }
            })
            .collect();
        let r = post_json(
            &format!("{}/{big}/add", collections_url(gw, "default_database")),
            &json!({"ids": ids, "embeddings": embeddings, "documents": documents,
                    "metadatas": metadatas, "uris": uris}),
        );
        assert!(r.status / 100 == 2, "{} {}", r.status, r.text());
    }
    let small = create(gw, "second_db", json!({"name": "small"}));
    let r = post_json(
        &format!("{}/{small}/add", collections_url(gw, "second_db")),
        &json!({"ids": ["s1", "s2"], "embeddings": [[1.0, 2.0], [3.0, 4.5]]}),
    );
    assert!(r.status / 100 == 2, "{} {}", r.status, r.text());
    create(
        gw,
        "second_db",
        json!({"name": "empty-one", "metadata": {"empty": true}}),
    );
}
