//! `deploy/grafana/chroma-ha.json`: an importable dashboard (schema 39, the
//! data source an input), every panel with a PromQL query that promtool
//! parses, every metric it names exported by the gateway's source and shown
//! on a live gateway's `/metrics`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use pglog::testing::TestPostgres;
use serde_json::Value;

use super::{assert_exported, metric_names, promtool};
use crate::fault_kit::trio::LEASE_ENV;
use crate::fault_kit::{start_gateway, status, wait_until};
use crate::support::{free_port, http_get, GatewayProcess};

/// The data source every query names: the input the import asks for.
const DATA_SOURCE: &str = "${DS_PROMETHEUS}";

fn dashboard() -> Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/chroma-ha.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every panel, those inside collapsed rows included; rows themselves not.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        if p["type"] == "row" {
            out.extend(p["panels"].as_array().into_iter().flatten());
        } else {
            out.push(p);
        }
    }
    out
}

/// Every query expression: the panels' and the template variables'.
fn expressions(d: &Value) -> Vec<String> {
    let mut out: Vec<String> = panels(d)
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str().map(String::from))
        .collect();
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if let Some(q) = v["query"]["query"].as_str().or(v["query"].as_str()) {
            out.push(q.to_string());
        }
    }
    out
}

/// The full names (`chroma_ha_...`) of the metrics the dashboard queries.
fn dashboard_metrics(d: &Value) -> Vec<String> {
    let text = expressions(d).join("\n");
    metric_names(&text)
        .into_iter()
        .map(|n| format!("chroma_ha_{n}"))
        .collect()
}

#[test]
fn the_dashboard_is_importable_json_with_a_query_in_every_panel() {
    let d = dashboard();
    let schema = d["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    assert!(
        d["title"].is_string() && d["uid"].is_string(),
        "title and uid"
    );
    let inputs = d["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs.iter().any(|i| i["name"] == "DS_PROMETHEUS"
            && i["type"] == "datasource"
            && i["pluginId"] == "prometheus"),
        "a DS_PROMETHEUS data source input: {inputs:?}"
    );
    let panels = panels(&d);
    assert!(panels.len() >= 15, "{} panels", panels.len());
    let mut ids = BTreeSet::new();
    for p in &panels {
        let title = p["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "panel id repeats: {title}"
        );
        let pos = &p["gridPos"];
        let (x, w) = (pos["x"].as_u64().expect("x"), pos["w"].as_u64().expect("w"));
        assert!(
            x + w <= 24 && pos["h"].as_u64() > Some(0),
            "{title}: gridPos {pos}"
        );
        assert_eq!(p["datasource"]["uid"], DATA_SOURCE, "{title}: data source");
        let targets = p["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        assert!(!targets.is_empty(), "panel {title} has no query");
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(expr.contains("chroma_ha_"), "{title}: query {t}");
            assert_eq!(t["datasource"]["uid"], DATA_SOURCE, "{title}: {t}");
            assert!(t["refId"].is_string(), "{title}: no refId in {t}");
        }
    }
    for v in d["templating"]["list"].as_array().expect("templating") {
        assert_eq!(v["datasource"]["uid"], DATA_SOURCE, "variable {v}");
    }
}

#[test]
fn the_dashboard_shows_what_operators_need_with_metrics_the_gateway_exports() {
    let d = dashboard();
    let metrics = dashboard_metrics(&d);
    for wanted in [
        "chroma_ha_server_healthy",
        "chroma_ha_server_lag_entries",
        "chroma_ha_server_lag_seconds",
        "chroma_ha_requests_total",
        "chroma_ha_applier_applied_total",
        "chroma_ha_wal_used_bytes",
        "chroma_ha_wal_max_bytes",
        "chroma_ha_dead_letters",
        "chroma_ha_wal_fsync_duration_seconds_bucket",
        "chroma_ha_undecided_entries",
        "chroma_ha_is_leader",
        "chroma_ha_leader_epoch",
        "chroma_ha_lease_renew_failures_total",
        "chroma_ha_forwarded_requests_total",
    ] {
        assert!(
            metrics.iter().any(|m| m == wanted),
            "the dashboard does not show {wanted}"
        );
    }
    let text = expressions(&d).join("\n");
    assert_exported(&metric_names(&text), "chroma-ha.json");
}

#[test]
fn every_dashboard_query_parses_as_promql() {
    // Each query becomes a recording rule, with Grafana's variables given
    // values, for `promtool check rules` to parse.
    let d = dashboard();
    let exprs: Vec<String> = panels(&d)
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str())
        .map(|e| {
            e.replace("$__rate_interval", "5m")
                .replace("$instance", ".*")
                .replace("$server", ".*")
        })
        .collect();
    assert!(
        exprs.iter().all(|e| !e.contains('$')),
        "a variable left: {exprs:?}"
    );
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let quoted = serde_json::to_string(e).expect("quote");
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {quoted}\n"
        ));
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("dashboard_rules.yml");
    std::fs::write(&file, rules).expect("write rules");
    let text = promtool(&["check", "rules", &file.display().to_string()]);
    assert!(
        text.contains(&format!("{} rules found", exprs.len())),
        "{text}"
    );
}

/// The sample names on a `/metrics` page.
fn sample_names(page: &str) -> BTreeSet<String> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next().map(String::from))
        .collect()
}

fn scrape(gw: &GatewayProcess, into: &mut BTreeSet<String>) {
    let r =
        http_get(&format!("{}/metrics", gw.url()), Duration::from_secs(30)).expect("GET /metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    into.extend(sample_names(&r.text()));
}

fn role(gw: &GatewayProcess) -> Option<String> {
    status(&gw.url()).and_then(|s| s["cluster"]["role"].as_str().map(String::from))
}

#[test]
fn every_metric_the_dashboard_names_is_on_live_gateways_metrics_pages() {
    // Two gateways on one log in PostgreSQL, in front of two servers that
    // are down (the figures per server are there all the same): the leader
    // has the log's and the servers' metrics, the follower forwards, and
    // when the leader dies the follower holds a request, then leads.
    let pg = TestPostgres::start();
    let url = pg.url("postgres");
    let mut env: Vec<(&str, &str)> = LEASE_ENV.to_vec();
    env.push(("CHROMA_HA_LOG_URL", &url));
    let down = [free_port(), free_port()].map(|p| format!("http://127.0.0.1:{p}"));
    let mut gateways: Vec<GatewayProcess> = (0..2)
        .map(|_| start_gateway(&down[0], &down[1], &env))
        .collect();
    let long = Duration::from_secs(120);
    let mut leader = 0;
    wait_until("one gateway leads, the other follows", long, || {
        let roles: Vec<Option<String>> = gateways.iter().map(role).collect();
        leader = roles
            .iter()
            .position(|r| r.as_deref() == Some("leader"))
            .unwrap_or(0);
        roles.iter().any(|r| r.as_deref() == Some("leader"))
            && roles.iter().any(|r| r.as_deref() == Some("follower"))
    });
    let follower = 1 - leader;
    let (l, f) = (gateways[leader].url(), gateways[follower].url());
    // A request forwarded, one to a route the gateway does not know.
    http_get(&format!("{f}/api/v2/heartbeat"), long).expect("heartbeat through the follower");
    http_get(&format!("{l}/api/v2/not-a-chroma-route"), long).expect("an unknown route");
    let mut seen = BTreeSet::new();
    scrape(&gateways[leader], &mut seen);
    scrape(&gateways[follower], &mut seen);
    // The leader dies: a request to the follower is held until it leads.
    gateways[leader].kill();
    let held = std::thread::spawn(move || http_get(&format!("{f}/api/v2/heartbeat"), long));
    wait_until("the follower leads", long, || {
        role(&gateways[follower]).as_deref() == Some("leader")
    });
    held.join()
        .expect("held request thread")
        .expect("the held request is answered");
    scrape(&gateways[follower], &mut seen);

    let missing: Vec<String> = dashboard_metrics(&dashboard())
        .into_iter()
        .filter(|m| !seen.contains(m))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics no live gateway showed: {missing:?}\nshown: {seen:?}"
    );
}
