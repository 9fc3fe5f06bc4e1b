//! End-to-end tests of the gateway with REAL Chroma servers (issue 3, "Tests
//! that must exist and pass"): every test starts its own Chroma servers and
//! its own `chroma-ha serve` on free loopback ports, drives it (the official
//! Python and JS clients, the Python writers of `tests/python`, or raw HTTP), waits
//! until every server has applied the whole log, and then compares the
//! servers DIRECTLY (never through the gateway) with
//! `chroma_ha::check::compare_servers`.
//!
//! Processes are only ever ended by their own PID (the harness's Drop).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Output;
use std::time::{Duration, Instant};

use chroma_ha::check::{
    compare_servers, discover_scopes, CheckOptions, CheckReport, DEFAULT_DATABASE, DEFAULT_TENANT,
};
use serde_json::{json, Value};
use support::{
    assert_python_ok, chroma_ha_bin, http_get, http_request, inherited_gateway_env, python_command,
    python_script, python_summary, require_js_client, run_node, run_python, ChromaServer,
    GatewayProcess, HttpResponse,
};

/// Timeout of one blocking HTTP request of the test itself.
const T: Duration = Duration::from_secs(20);
/// How long the servers get to apply the whole log before a test fails.
const CATCH_UP: Duration = Duration::from_secs(45);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build tokio runtime")
        .block_on(f)
}

/// The suite's topology: `CHROMA_HA_SUITE_THROUGH=follower` runs every
/// test through a gateway that follows another (both on a log in a
/// throwaway PostgreSQL), so every request is forwarded to the leader.
fn through_follower() -> bool {
    match std::env::var("CHROMA_HA_SUITE_THROUGH").ok().as_deref() {
        None | Some("") | Some("gateway") => false,
        Some("follower") => true,
        Some(other) => panic!("CHROMA_HA_SUITE_THROUGH is `gateway` or `follower`, not {other:?}"),
    }
}

/// The gateway a test talks to: one alone on its file log, or a follower
/// whose leader (and PostgreSQL) live as long as it does.
struct SuiteGateway {
    front: GatewayProcess,
    leader: Option<GatewayProcess>,
    pg: Option<pglog::testing::TestPostgres>,
}

impl std::ops::Deref for SuiteGateway {
    type Target = GatewayProcess;
    fn deref(&self) -> &GatewayProcess {
        &self.front
    }
}

impl std::ops::DerefMut for SuiteGateway {
    fn deref_mut(&mut self) -> &mut GatewayProcess {
        &mut self.front
    }
}

impl SuiteGateway {
    /// The gateway whose core runs: the leader, or the gateway alone.
    fn core(&self) -> &GatewayProcess {
        self.leader.as_ref().unwrap_or(&self.front)
    }

    /// Every stored byte string the gateways keep: the files under the
    /// data directory, or the log's records and state documents in
    /// PostgreSQL.
    fn stored_bytes(&self) -> Vec<(String, Vec<u8>)> {
        let Some(pg) = &self.pg else {
            let mut out = Vec::new();
            let mut stack = vec![self.front.dir().join("data")];
            while let Some(dir) = stack.pop() {
                for e in std::fs::read_dir(&dir).expect("read data dir") {
                    let path = e.expect("dir entry").path();
                    if path.is_dir() {
                        stack.push(path);
                    } else {
                        let bytes = std::fs::read(&path).expect("read data file");
                        out.push((path.display().to_string(), bytes));
                    }
                }
            }
            return out;
        };
        block_on(async {
            use wal::{Log, LogRead};
            let log = pglog::PgLog::connect(&pg.url("postgres"), Default::default())
                .await
                .expect("connect to the log");
            let mut out = Vec::new();
            let mut reader = log.read_from(log.first_lsn());
            while let Some(r) = reader.try_next().await.expect("read the log") {
                out.push((format!("log record {}", r.lsn), r.payload.to_vec()));
            }
            for (key, value) in log.list_state("").await.expect("list state") {
                out.push((format!("state {key}"), value.to_vec()));
            }
            out
        })
    }
}

/// Starts `chroma-ha serve` in front of `servers[0]` (primary) and the others
/// (replicas), with `env` on top of a clean environment; through a follower
/// if the suite runs so ([`through_follower`]).
fn start_gateway(servers: &[ChromaServer], env: &[(&str, &str)]) -> SuiteGateway {
    if !through_follower() {
        return SuiteGateway {
            front: start_one_gateway(servers, env),
            leader: None,
            pg: None,
        };
    }
    let pg = pglog::testing::TestPostgres::start();
    let url = pg.url("postgres");
    let mut env: Vec<(&str, &str)> = env.to_vec();
    env.extend([
        ("CHROMA_HA_LOG_URL", url.as_str()),
        ("CHROMA_HA_LEASE_TIME", "2"),
        ("CHROMA_HA_LEASE_RENEW_INTERVAL", "0.5"),
    ]);
    let leader = start_one_gateway(servers, &env);
    let leads = |gw: &GatewayProcess| {
        http_get(&format!("{}/status", gw.url()), T)
            .is_ok_and(|r| r.json()["cluster"]["role"] == json!("leader"))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !leads(&leader) {
        assert!(Instant::now() < deadline, "the first gateway did not lead");
        std::thread::sleep(Duration::from_millis(100));
    }
    let front = start_one_gateway(servers, &env);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http_get(&format!("{}/ready", front.url()), T).is_ok_and(|r| r.status == 200) {
        assert!(Instant::now() < deadline, "the follower found no leader");
        std::thread::sleep(Duration::from_millis(100));
    }
    SuiteGateway {
        front,
        leader: Some(leader),
        pg: Some(pg),
    }
}

fn start_one_gateway(servers: &[ChromaServer], env: &[(&str, &str)]) -> GatewayProcess {
    let mut args: Vec<String> = vec![
        "serve".into(),
        "--listen".into(),
        "{listen}".into(),
        "--primary".into(),
        servers[0].url(),
    ];
    for r in &servers[1..] {
        args.push("--replica".into());
        args.push(r.url());
    }
    args.push("--data-dir".into());
    args.push("{dir}/data".into());
    // Blanked: an empty variable counts as unset.
    let mut vars: Vec<(String, String)> = inherited_gateway_env()
        .into_iter()
        .map(|name| (name, String::new()))
        .collect();
    vars.push(("RUST_LOG".into(), "info".into()));
    // Fast health checks so a fresh gateway sees its servers at once.
    vars.push(("CHROMA_HA_CHECK_INTERVAL".into(), "200ms".into()));
    for (k, v) in env {
        vars.push(((*k).into(), (*v).into()));
    }
    GatewayProcess::start(&chroma_ha_bin(), &args, &vars)
}

fn urls(servers: &[ChromaServer]) -> Vec<String> {
    servers.iter().map(ChromaServer::url).collect()
}

fn status(gw: &GatewayProcess) -> Value {
    let r = http_get(&format!("{}/status", gw.url()), T).expect("GET /status");
    assert_eq!(r.status, 200, "/status: {}", r.text());
    r.json()
}

/// Waits (bounded) until every server is healthy and has applied the whole
/// log (`lag_entries == 0` everywhere) and nothing waits for an executor.
/// Returns the last `/status`.
fn wait_caught_up(gw: &GatewayProcess) -> Value {
    let deadline = Instant::now() + CATCH_UP;
    loop {
        let s = status(gw);
        let instances = s["instances"].as_array().expect("instances").clone();
        let done = !instances.is_empty()
            && instances
                .iter()
                .all(|i| i["healthy"] == json!(true) && i["lag_entries"] == json!(0))
            && s["write_ahead_log"]["undecided"].as_u64().unwrap_or(0) == 0;
        if done {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "servers did not catch up within {CATCH_UP:?}; last /status:\n{}",
            serde_json::to_string_pretty(&s).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts that no entry went to the dead-letter list (a divergence).
fn assert_no_divergence(s: &Value) {
    assert_eq!(
        s["write_ahead_log"]["failed_replays"],
        json!(0),
        "dead letters: {}",
        serde_json::to_string_pretty(s).unwrap_or_default()
    );
    for i in s["instances"].as_array().expect("instances") {
        assert_eq!(i["dead_letters"], json!(0), "instance {i}");
    }
}

/// Waits until every server has applied the whole log (see
/// [`wait_caught_up`]) and checks that nothing diverged; returns `/status`.
fn settled(gw: &GatewayProcess) -> Value {
    let s = wait_caught_up(gw);
    assert_no_divergence(&s);
    s
}

fn scopes_of(urls: &[String], tenants: &[&str]) -> Vec<(String, String)> {
    let tenants: Vec<String> = tenants.iter().map(|t| t.to_string()).collect();
    block_on(discover_scopes(urls, &tenants, &CheckOptions::default())).expect("discover scopes")
}

fn compare(urls: &[String], scopes: &[(String, String)]) -> CheckReport {
    block_on(compare_servers(urls, scopes, &CheckOptions::default())).expect("compare_servers")
}

/// Compares the servers directly, scope by scope, and asserts they are
/// identical and that every server holds at least one record in each scope.
/// Returns one report per scope.
fn assert_identical(urls: &[String], scopes: &[(String, String)]) -> Vec<CheckReport> {
    let mut reports = Vec::new();
    for scope in scopes {
        let report = compare(urls, std::slice::from_ref(scope));
        assert!(
            report.identical(),
            "servers differ in {}/{}:\n{report}",
            scope.0,
            scope.1
        );
        eprintln!("compare {}/{}: {}", scope.0, scope.1, report.summary());
        reports.push(report);
    }
    let total: Vec<usize> = (0..urls.len())
        .map(|i| reports.iter().map(|r| r.records_per_server[i]).sum())
        .collect();
    assert!(
        total.iter().all(|n| *n > 0),
        "every server must hold records, got {total:?}"
    );
    reports
}

fn api(base: &str, path: &str) -> String {
    format!("{base}/api/v2{path}")
}

fn colls(tenant: &str, db: &str) -> String {
    format!("/tenants/{tenant}/databases/{db}/collections")
}

fn default_colls() -> String {
    colls(DEFAULT_TENANT, DEFAULT_DATABASE)
}

fn request(method: &str, url: &str, body: Option<&Value>) -> HttpResponse {
    let text = body.map(Value::to_string);
    http_request(method, url, text.as_deref(), T).unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// Sends and asserts a 2xx answer; returns it.
fn ok(method: &str, url: &str, body: Option<&Value>) -> HttpResponse {
    let r = request(method, url, body);
    assert!(
        (200..300).contains(&r.status),
        "{method} {url} -> {}: {}",
        r.status,
        r.text()
    );
    r
}

/// The physical id of a default-scope collection on one server (direct).
fn server_collection_id(server: &ChromaServer, name: &str) -> String {
    let c = ok(
        "GET",
        &api(&server.url(), &format!("{}/{name}", default_colls())),
        None,
    )
    .json();
    c["id"].as_str().expect("collection id").to_string()
}

fn emb(i: usize, salt: f64) -> Value {
    json!([i as f64, salt, (i % 7) as f64 * 0.5, 1.0])
}

/// Runs `python -c code args...` with the venv's interpreter.
fn python_inline(code: &str, args: &[&str]) -> Output {
    python_command()
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .expect("run python")
}

// ---------------------------------------------------------------------------
// 1 + 2: the official client through the gateway, servers identical after
// ---------------------------------------------------------------------------

fn client_workload_through_gateway(replicas: usize, prefix: &str, records: &str) {
    let servers = ChromaServer::start_many(1 + replicas);
    let gw = start_gateway(&servers, &[]);
    let out = run_python(
        &python_script("client_workload.py"),
        &[
            &gw.url(),
            "--seed",
            "31",
            "--prefix",
            prefix,
            "--records",
            records,
        ],
    );
    assert_python_ok("client_workload.py through the gateway", &out);
    let summary = python_summary(&out);
    assert_workload_converged(&gw, &servers, prefix, &summary);
}

/// After a client workload (Python or JS: both print the same summary)
/// ran with `prefix` through `gw`: the run succeeded, every server applied
/// the whole log without a dead letter, and the servers, compared directly,
/// are identical and hold exactly the collections and record counts the
/// client saw at the end of its run, in the default scope and in the
/// workload's own tenant and database.
fn assert_workload_converged(
    gw: &SuiteGateway,
    servers: &[ChromaServer],
    prefix: &str,
    summary: &Value,
) {
    assert_eq!(summary["ok"], json!(true), "{summary}");
    assert!(
        summary["total_ops"].as_u64().unwrap_or(0) > 100,
        "{summary}"
    );

    let s = settled(gw);
    assert_eq!(
        s["total_instances"],
        json!(servers.len()),
        "{}",
        serde_json::to_string_pretty(&s).unwrap_or_default()
    );
    let names: Vec<&str> = s["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert_eq!(names[0], "primary");

    let urls = urls(servers);
    let tenant = format!("{prefix}-tenant");
    let scopes = scopes_of(&urls, &[DEFAULT_TENANT, &tenant]);
    assert_eq!(
        scopes,
        vec![
            (DEFAULT_TENANT.to_string(), DEFAULT_DATABASE.to_string()),
            (tenant.clone(), format!("{prefix}-db")),
        ],
        "the scratch database must be gone and the new one present on every server"
    );
    let reports = assert_identical(&urls, &scopes);
    // Every server holds exactly what the client saw at the end of its run.
    let finals = summary["collections"].as_object().expect("collections");
    for (scope, report) in scopes.iter().zip(&reports) {
        let key = format!("{}/{}", scope.0, scope.1);
        let expected: BTreeMap<String, u64> = finals[&key]
            .as_object()
            .unwrap_or_else(|| panic!("summary lacks {key}: {summary}"))
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().expect("count")))
            .collect();
        let want_records: u64 = expected.values().sum();
        assert!(want_records > 0, "{summary}");
        assert_eq!(
            report.collections_per_server,
            vec![expected.len(); urls.len()],
            "{key}: {report}"
        );
        assert_eq!(
            report.records_per_server,
            vec![want_records as usize; urls.len()],
            "{key}: the client's final counts {expected:?} vs the servers: {report}"
        );
    }
    // Writes were logged and the replicas applied entries they did not execute.
    let wal = &s["write_ahead_log"];
    assert!(wal["last_lsn"].as_u64().unwrap_or(0) > 20, "{wal}");
    assert!(wal["total_replayed"].as_u64().unwrap_or(0) > 20, "{wal}");
}

#[test]
fn python_client_through_gateway_primary_and_replica_identical() {
    client_workload_through_gateway(1, "gwone", "40");
}

#[test]
fn python_client_through_gateway_two_replicas_identical() {
    client_workload_through_gateway(2, "gwtwo", "30");
}

/// The official JS client (npm `chromadb` 3.x, pinned in
/// `tests/js/package-lock.json`) over the whole collection and record API
/// through the gateway; then the servers, compared directly, are identical
/// and hold what the client saw. Needs Node.js and `npm ci --prefix
/// tests/js`: without them this test fails (it never skips).
#[test]
fn js_client_through_gateway_primary_and_replica_identical() {
    require_js_client();
    let prefix = "gwjs";
    let servers = ChromaServer::start_many(2);
    let gw = start_gateway(&servers, &[]);
    let out = run_node(
        "client_workload.mjs",
        &[
            &gw.url(),
            "--seed",
            "37",
            "--prefix",
            prefix,
            "--records",
            "40",
        ],
    );
    assert_python_ok(
        "node tests/js/client_workload.mjs through the gateway",
        &out,
    );
    let summary = python_summary(&out);
    assert!(
        summary["client"]
            .as_str()
            .is_some_and(|c| c.starts_with("chromadb-js 3.")),
        "{summary}"
    );
    for op in [
        "create_collection_conflict",
        "add_existing",
        "modify_conflict",
        "delete_where",
        "delete_where_document",
        "modify_configuration",
        "query",
        "peek",
        "get_collection_by_id",
    ] {
        assert!(
            summary["ops"][op].as_u64().unwrap_or(0) > 0,
            "{op}: {summary}"
        );
    }
    eprintln!(
        "JS workload: {} on node {}: {} operations, {} checks in {} s",
        summary["client"],
        summary["node"],
        summary["total_ops"],
        summary["checks"],
        summary["elapsed_s"]
    );
    assert_workload_converged(&gw, &servers, prefix, &summary);
}

// ---------------------------------------------------------------------------
// 3: collections that existed before the gateway are adopted
// ---------------------------------------------------------------------------

/// Creates a collection with `n` records directly on a server; returns its id.
fn seed_collection(server: &ChromaServer, tenant: &str, db: &str, name: &str, n: usize) -> String {
    let c = ok(
        "POST",
        &api(&server.url(), &colls(tenant, db)),
        Some(&json!({"name": name, "metadata": {"origin": "before-gateway"}})),
    )
    .json();
    let id = c["id"].as_str().expect("collection id").to_string();
    let ids: Vec<String> = (0..n).map(|i| format!("pre-{i}")).collect();
    let embs: Vec<Value> = (0..n).map(|i| emb(i, 0.25)).collect();
    let docs: Vec<String> = (0..n).map(|i| format!("pre document {i}")).collect();
    let metas: Vec<Value> = (0..n).map(|i| json!({"i": i, "pre": true})).collect();
    ok(
        "POST",
        &api(&server.url(), &format!("{}/{id}/add", colls(tenant, db))),
        Some(&json!({"ids": ids, "embeddings": embs, "documents": docs, "metadatas": metas})),
    );
    id
}

const ADOPT_CLIENT: &str = r#"
import json, sys
import chromadb
from chromadb.config import Settings
url, name, primary_id = sys.argv[1], sys.argv[2], sys.argv[3]
host, port = url.split("//")[1].split(":")
c = chromadb.HttpClient(host=host, port=int(port), settings=Settings(anonymized_telemetry=False))
col = c.get_collection(name, embedding_function=None)
assert str(col.id) == primary_id, f"client sees id {col.id}, primary has {primary_id}"
assert col.metadata == {"origin": "before-gateway"}, col.metadata
assert col.count() == 5, col.count()
listed = {x.name: str(x.id) for x in c.list_collections()}
assert listed.get(name) == primary_id, listed
col.add(ids=["py-1", "py-2"], embeddings=[[100.0, 1.0, 0.0, 1.0], [200.0, 1.0, 0.0, 1.0]],
        documents=["from python 1", "from python 2"], metadatas=[{"py": 1}, {"py": 2}])
assert col.count() == 7, col.count()
got = col.get(ids=["py-1", "pre-3"], include=["documents"])
assert sorted(got["ids"]) == ["pre-3", "py-1"], got
res = col.query(query_embeddings=[[200.0, 1.0, 0.0, 1.0]], n_results=1)
assert res["ids"][0] == ["py-2"], res
col.upsert(ids=["pre-0"], embeddings=[[0.0, 9.0, 0.0, 1.0]], documents=["pre 0 changed"])
assert col.get(ids=["pre-0"])["documents"] == ["pre 0 changed"]
print(json.dumps({"ok": True, "id": str(col.id), "count": col.count()}))
"#;

#[test]
fn collections_created_before_the_gateway_are_adopted() {
    let servers = ChromaServer::start_many(2);
    let (p, r) = (&servers[0], &servers[1]);
    // Default tenant: the same collection on both servers, ids differ.
    let p_id = seed_collection(p, DEFAULT_TENANT, DEFAULT_DATABASE, "adopt-me", 5);
    let r_id = seed_collection(r, DEFAULT_TENANT, DEFAULT_DATABASE, "adopt-me", 5);
    assert_ne!(p_id, r_id, "Chroma gives every server its own id");
    // Another tenant, which the gateway cannot list at start.
    for s in [p, r] {
        ok(
            "POST",
            &api(&s.url(), "/tenants"),
            Some(&json!({"name": "adopt-tenant"})),
        );
        ok(
            "POST",
            &api(&s.url(), "/tenants/adopt-tenant/databases"),
            Some(&json!({"name": "adopt-db"})),
        );
    }
    let p_other = seed_collection(p, "adopt-tenant", "adopt-db", "adopt-other", 3);
    let r_other = seed_collection(r, "adopt-tenant", "adopt-db", "adopt-other", 3);
    assert_ne!(p_other, r_other);

    // Reads go to the replica whenever it qualifies, so the replica's physical
    // ids are exercised too.
    let gw = start_gateway(&servers, &[("CHROMA_HA_READ_REPLICA_RATIO", "1.0")]);
    let g = gw.url();

    // Raw HTTP: get by name gives the primary's id.
    let c = ok(
        "GET",
        &api(&g, &format!("{}/adopt-me", default_colls())),
        None,
    );
    assert_eq!(c.json()["id"], json!(p_id), "{}", c.text());

    // The official client: get_collection, count, list, add, get, query, upsert.
    let out = python_inline(ADOPT_CLIENT, &[&g, "adopt-me", &p_id]);
    assert_python_ok("python client on an adopted collection", &out);
    let summary = python_summary(&out);
    assert_eq!(summary["count"], json!(7), "{summary}");

    // Reads through the gateway by the logical (= primary) id: once the
    // replica has applied everything, READ_REPLICA_RATIO=1.0 sends every read
    // to it, so this exercises the replica's own (different) id.
    wait_caught_up(&gw);
    for get in [
        format!("{}/{p_id}/count", default_colls()),
        format!("{}/adopt-me", default_colls()),
    ] {
        for _ in 0..5 {
            let r = ok("GET", &api(&g, &get), None);
            assert_eq!(
                r.header("x-chroma-ha-backend"),
                Some("replica"),
                "a caught-up replica serves the reads when READ_REPLICA_RATIO=1.0"
            );
            let v = r.json();
            if get.ends_with("count") {
                assert_eq!(v, json!(7), "count through the gateway");
            } else {
                assert_eq!(
                    v["id"],
                    json!(p_id),
                    "the replica's answer shows the logical id"
                );
            }
        }
    }

    // The other tenant: adopted on first reference.
    let path = colls("adopt-tenant", "adopt-db");
    let c = ok("GET", &api(&g, &format!("{path}/adopt-other")), None);
    assert_eq!(
        c.json()["id"],
        json!(p_other),
        "collection of another tenant: {}",
        c.text()
    );
    let w = ok(
        "POST",
        &api(&g, &format!("{path}/{p_other}/add")),
        Some(&json!({
            "ids": ["gw-1", "gw-2"],
            "embeddings": [emb(50, 0.5), emb(51, 0.5)],
            "documents": ["via gateway 1", "via gateway 2"],
        })),
    );
    assert!(w.header("x-chroma-ha-lsn").is_some(), "a write has an LSN");
    let n = ok("GET", &api(&g, &format!("{path}/{p_other}/count")), None);
    assert_eq!(n.json(), json!(5), "count in the other tenant");
    let q = ok(
        "POST",
        &api(&g, &format!("{path}/{p_other}/query")),
        Some(
            &json!({"query_embeddings": [emb(51, 0.5)], "n_results": 1, "include": ["documents"]}),
        ),
    )
    .json();
    assert_eq!(q["ids"], json!([["gw-2"]]), "{q}");
    let listed = ok("GET", &api(&g, &path), None).json();
    assert_eq!(listed[0]["id"], json!(p_other), "{listed}");

    settled(&gw);
    let urls = urls(&servers);
    let scopes = vec![
        (DEFAULT_TENANT.to_string(), DEFAULT_DATABASE.to_string()),
        ("adopt-tenant".to_string(), "adopt-db".to_string()),
    ];
    let reports = assert_identical(&urls, &scopes);
    assert_eq!(reports[0].records_per_server, vec![7, 7], "{}", reports[0]);
    assert_eq!(reports[1].records_per_server, vec![5, 5], "{}", reports[1]);
    // The replica applied the writes to ITS collection (its own id), not a
    // new one: still one collection per scope on each server.
    assert_eq!(reports[0].collections_per_server, vec![1, 1]);
    assert_eq!(reports[1].collections_per_server, vec![1, 1]);
    let direct = ok(
        "GET",
        &api(&r.url(), &format!("{}/{r_id}/count", default_colls())),
        None,
    );
    assert_eq!(direct.json(), json!(7), "the replica's own collection");
    let direct = ok(
        "GET",
        &api(&r.url(), &format!("{path}/{r_other}/count")),
        None,
    );
    assert_eq!(direct.json(), json!(5), "the replica's own collection");
}

// ---------------------------------------------------------------------------
// 4: concurrent writers
// ---------------------------------------------------------------------------

/// Runs `concurrent_writers.py run` against the gateway; returns the state
/// file path and the summary.
fn writers_run(gw: &str, dir: &std::path::Path, prefix: &str, collections: &str) -> Value {
    let state = dir.join(format!("{prefix}.json"));
    let out = run_python(
        &python_script("concurrent_writers.py"),
        &[
            "run",
            gw,
            "--out",
            state.to_str().expect("utf-8 path"),
            "--threads",
            "4",
            "--collections",
            collections,
            "--ops",
            "25",
            "--batch",
            "4",
            "--prefix",
            prefix,
            "--seed",
            "5",
            "--fail-on-error",
        ],
    );
    assert_python_ok(&format!("concurrent_writers.py run ({prefix})"), &out);
    python_summary(&out)
}

#[test]
fn concurrent_writers_one_and_several_collections_all_servers_identical() {
    let servers = ChromaServer::start_many(2);
    let gw = start_gateway(&servers, &[]);
    let dir = tempfile::tempdir().expect("temp dir");
    // Two writer processes at once: 4 threads on one collection, 4 threads
    // spread over three collections.
    let (g1, d1) = (gw.url(), dir.path().to_path_buf());
    let one = std::thread::spawn(move || writers_run(&g1, &d1, "cwone", "1"));
    let (g2, d2) = (gw.url(), dir.path().to_path_buf());
    let many = std::thread::spawn(move || writers_run(&g2, &d2, "cwmany", "3"));
    let one = one.join().expect("writers one");
    let many = many.join().expect("writers many");
    for s in [&one, &many] {
        assert_eq!(s["failed_ops"], json!(0), "{s}");
        assert_eq!(s["ops"], json!(100), "{s}");
        assert!(s["expected_records"].as_u64().unwrap_or(0) > 50, "{s}");
    }

    let st = wait_caught_up(&gw);
    assert_no_divergence(&st);
    // Every acknowledged write is on EVERY server, read directly.
    for server in &servers {
        for prefix in ["cwone", "cwmany"] {
            let state = dir.path().join(format!("{prefix}.json"));
            let out = run_python(
                &python_script("concurrent_writers.py"),
                &[
                    "verify",
                    &server.url(),
                    "--state",
                    state.to_str().expect("utf-8 path"),
                ],
            );
            assert_python_ok(
                &format!("concurrent_writers.py verify {prefix} on {}", server.url()),
                &out,
            );
            let v = python_summary(&out);
            assert_eq!(v["ok"], json!(true), "{v}");
            assert!(v["checked"].as_u64().unwrap_or(0) > 50, "{v}");
        }
    }
    let urls = urls(&servers);
    let reports = assert_identical(
        &urls,
        &[(DEFAULT_TENANT.to_string(), DEFAULT_DATABASE.to_string())],
    );
    assert_eq!(reports[0].collections_per_server, vec![4, 4]);
    let expected = one["expected_records"].as_u64().unwrap_or(0)
        + many["expected_records"].as_u64().unwrap_or(0);
    assert_eq!(
        reports[0].records_per_server,
        vec![expected as usize; 2],
        "{}",
        reports[0]
    );
}

/// Tasks that write the SAME ids concurrently (upserts, updates, deletes by
/// id and by `where`): conflicting writes must be applied in one order on
/// every server, so the servers end identical whatever that order was.
#[test]
fn concurrent_conflicting_writes_end_identical_on_every_server() {
    let servers = ChromaServer::start_many(3);
    let gw = start_gateway(&servers, &[]);
    let g = gw.url();
    let c = ok(
        "POST",
        &api(&g, &default_colls()),
        Some(&json!({"name": "hot-collection"})),
    )
    .json();
    let id = c["id"].as_str().expect("id").to_string();
    let base = api(&g, &format!("{}/{id}", default_colls()));
    let written = block_on(async move {
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .timeout(T)
            .build()
            .expect("reqwest client");
        let mut tasks = Vec::new();
        for t in 0..6usize {
            let client = client.clone();
            let base = base.clone();
            tasks.push(tokio::spawn(async move {
                let mut docs = Vec::new();
                for k in 0..25usize {
                    // Five hot ids shared by every task, plus own ids.
                    let hot = format!("hot-{}", (t + k) % 5);
                    let own = format!("own-{t}-{k}");
                    let doc = format!("task {t} step {k}");
                    let (op, body) = match k % 5 {
                        0..=2 => (
                            "upsert",
                            json!({
                                "ids": [hot, own],
                                "embeddings": [emb(t * 100 + k, 1.0), emb(t * 100 + k, 2.0)],
                                "documents": [doc, doc],
                                "metadatas": [{"t": t, "k": k}, {"t": t, "k": k}],
                            }),
                        ),
                        3 => (
                            "update",
                            json!({"ids": [hot], "documents": [doc], "metadatas": [{"t": t, "k": k, "u": true}]}),
                        ),
                        _ => {
                            if t % 2 == 0 {
                                ("delete", json!({"ids": [hot]}))
                            } else {
                                ("delete", json!({"where": {"t": t as i64}}))
                            }
                        }
                    };
                    docs.push(doc);
                    let r = client
                        .post(format!("{base}/{op}"))
                        .header("content-type", "application/json")
                        .body(body.to_string())
                        .send()
                        .await
                        .unwrap_or_else(|e| panic!("task {t} {op}: {e}"));
                    let status = r.status();
                    let lsn = r.headers().get("x-chroma-ha-lsn").cloned();
                    let text = r.text().await.unwrap_or_default();
                    assert!(status.is_success(), "task {t} {op} -> {status}: {text}");
                    assert!(lsn.is_some(), "task {t} {op}: no x-chroma-ha-lsn");
                }
                docs
            }));
        }
        let mut all = BTreeSet::new();
        for task in tasks {
            all.extend(task.await.expect("writer task"));
        }
        all
    });
    settled(&gw);
    let urls = urls(&servers);
    let reports = assert_identical(
        &urls,
        &[(DEFAULT_TENANT.to_string(), DEFAULT_DATABASE.to_string())],
    );
    assert_eq!(reports[0].collections_per_server, vec![1, 1, 1]);
    // Whatever is left holds documents that some task wrote.
    let pid = server_collection_id(&servers[0], "hot-collection");
    let got = ok(
        "POST",
        &api(&servers[0].url(), &format!("{}/{pid}/get", default_colls())),
        Some(&json!({"include": ["documents"]})),
    )
    .json();
    let docs = got["documents"].as_array().expect("documents");
    assert!(!docs.is_empty(), "{got}");
    for d in docs {
        let d = d.as_str().expect("document");
        assert!(written.contains(d), "unexpected document {d:?}");
    }
}

// ---------------------------------------------------------------------------
// 5: strong reads
// ---------------------------------------------------------------------------

#[derive(Default)]
struct ReadTally {
    by_backend: BTreeMap<String, usize>,
    reads: usize,
    failures: Vec<String>,
}

async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<&Value>,
) -> (u16, String, Option<String>, Option<String>) {
    let mut req = client.request(method.clone(), url);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let r = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = r.status().as_u16();
    let header = |n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let backend = header("x-chroma-ha-backend");
    let lsn = header("x-chroma-ha-lsn");
    let text = r.text().await.unwrap_or_default();
    (status, text, backend, lsn)
}

/// One client: `iterations` rounds of a write followed at once by reads that
/// must show it. Returns what the reads saw.
async fn strong_read_client(
    client: reqwest::Client,
    base: String,
    tag: usize,
    iterations: usize,
) -> ReadTally {
    let mut tally = ReadTally::default();
    let mut present: BTreeMap<String, String> = BTreeMap::new(); // id -> document
    let mut last_lsn = 0u64;
    for i in 0..iterations {
        // The write of this round: mostly adds, sometimes an update of an
        // older record or a delete.
        let (op, body, what) = if i % 10 == 7 && !present.is_empty() {
            let victim = present.keys().nth(i % present.len()).cloned().expect("id");
            let doc = format!("c{tag} updated at {i}");
            present.insert(victim.clone(), doc.clone());
            (
                "update",
                json!({"ids": [victim], "documents": [doc], "embeddings": [emb(i, tag as f64 + 0.5)]}),
                victim,
            )
        } else if i % 10 == 9 && !present.is_empty() {
            let victim = present.keys().next().cloned().expect("id");
            present.remove(&victim);
            ("delete", json!({"ids": [victim]}), victim)
        } else {
            let rid = format!("c{tag}-r{i}");
            let doc = format!("c{tag} doc {i}");
            present.insert(rid.clone(), doc.clone());
            (
                "add",
                json!({"ids": [rid], "embeddings": [emb(i, tag as f64)], "documents": [doc], "metadatas": [{"i": i}]}),
                rid,
            )
        };
        let (st, text, _, lsn) = send(
            &client,
            reqwest::Method::POST,
            &format!("{base}/{op}"),
            Some(&body),
        )
        .await;
        assert!(
            (200..300).contains(&st),
            "client {tag} round {i}: {op} -> {st}: {text}"
        );
        let lsn: u64 = lsn
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("client {tag} round {i}: {op} without x-chroma-ha-lsn"));
        assert!(lsn > last_lsn, "LSNs must increase: {lsn} after {last_lsn}");
        last_lsn = lsn;

        let mut note = |backend: Option<String>, ok: bool, detail: String| {
            tally.reads += 1;
            let b = backend.unwrap_or_else(|| "<none>".into());
            if !ok {
                tally.failures.push(format!(
                    "client {tag} round {i} after {op} {what} (lsn {lsn}), served by {b}: {detail}"
                ));
            }
            *tally.by_backend.entry(b).or_default() += 1;
        };

        // count
        let (st, text, backend, _) = send(
            &client,
            reqwest::Method::GET,
            &format!("{base}/count"),
            None,
        )
        .await;
        let want = present.len().to_string();
        note(
            backend,
            st == 200 && text.trim() == want,
            format!("count -> {st} {text}, expected {want}"),
        );

        // get by id
        let (st, text, backend, _) = send(
            &client,
            reqwest::Method::POST,
            &format!("{base}/get"),
            Some(&json!({"ids": [what], "include": ["documents"]})),
        )
        .await;
        let got: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let expected = match present.get(&what) {
            Some(doc) => json!({"ids": [what], "documents": [doc]}),
            None => json!({"ids": [], "documents": []}),
        };
        note(
            backend,
            st == 200 && got["ids"] == expected["ids"] && got["documents"] == expected["documents"],
            format!("get {what} -> {st} {text}, expected {expected}"),
        );

        // query: the written embedding's nearest neighbour is the record
        if op == "add" {
            let (st, text, backend, _) = send(
                &client,
                reqwest::Method::POST,
                &format!("{base}/query"),
                Some(&json!({"query_embeddings": [emb(i, tag as f64)], "n_results": 1, "include": ["documents"]})),
            )
            .await;
            let got: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            note(
                backend,
                st == 200 && got["ids"] == json!([[what]]),
                format!("query nearest to {what} -> {st} {text}"),
            );
        }
    }
    tally
}

#[test]
fn strong_reads_see_the_preceding_write_even_from_the_replica() {
    let servers = ChromaServer::start_many(2);
    let gw = start_gateway(&servers, &[("CHROMA_HA_READ_REPLICA_RATIO", "1.0")]);
    let g = gw.url();
    // Three clients, each on its own collection, plus overlapping in time.
    // Each collection's HNSW graph is complete (more neighbours than its
    // records), so "the nearest neighbour of a written embedding is its
    // record" holds exactly: Chroma's default index is approximate.
    let mut bases = Vec::new();
    for c in 0..3 {
        let r = ok(
            "POST",
            &api(&g, &default_colls()),
            Some(&json!({
                "name": format!("strong-{c}"),
                "configuration": {"hnsw": {"max_neighbors": 128, "ef_construction": 256, "ef_search": 256}},
            })),
        )
        .json();
        let id = r["id"].as_str().expect("id").to_string();
        bases.push(api(&g, &format!("{}/{id}", default_colls())));
    }
    let started = Instant::now();
    let tallies = block_on(async move {
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .timeout(T)
            .build()
            .expect("reqwest client");
        let tasks: Vec<_> = bases
            .into_iter()
            .enumerate()
            .map(|(tag, base)| tokio::spawn(strong_read_client(client.clone(), base, tag, 120)))
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("strong-read task"));
        }
        out
    });
    let mut by_backend = BTreeMap::<String, usize>::new();
    let mut reads = 0;
    let mut failures = Vec::new();
    for t in tallies {
        reads += t.reads;
        failures.extend(t.failures);
        for (b, n) in t.by_backend {
            *by_backend.entry(b).or_default() += n;
        }
    }
    eprintln!(
        "strong reads: {reads} reads in {:?}, served by {by_backend:?}",
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} of {reads} reads did not see the preceding write (served by {by_backend:?}); first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(15)].join("\n")
    );
    assert!(reads >= 700, "{reads}");
    assert!(
        by_backend.get("replica").copied().unwrap_or(0) > 0,
        "with READ_REPLICA_RATIO=1.0 some reads must be served by the replica: {by_backend:?}"
    );
    assert!(
        by_backend.keys().all(|b| b == "primary" || b == "replica"),
        "every read names its server: {by_backend:?}"
    );
    settled(&gw);
    // Idle and caught up. A listing's order differs between servers, so
    // every listing goes to the first healthy server in priority order.
    let listed = ok("GET", &api(&g, &default_colls()), None);
    assert_eq!(listed.header("x-chroma-ha-backend"), Some("primary"));
    for c in listed.json().as_array().expect("collections") {
        let id = c["id"].as_str().expect("id");
        let r = ok(
            "GET",
            &api(&g, &format!("{}/{id}/count", default_colls())),
            None,
        );
        assert_eq!(r.header("x-chroma-ha-backend"), Some("replica"));
        assert_eq!(r.json(), json!(84), "{c}");
    }
    assert_identical(
        &urls(&servers),
        &[(DEFAULT_TENANT.to_string(), DEFAULT_DATABASE.to_string())],
    );
}

// ---------------------------------------------------------------------------
// 6: bad input
// ---------------------------------------------------------------------------

fn assert_chroma_error(r: &HttpResponse, status: u16, what: &str) -> Value {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    let v: Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {}", r.text()));
    assert!(
        v["error"].as_str().is_some_and(|s| !s.is_empty())
            && v["message"].as_str().is_some_and(|s| !s.is_empty()),
        "{what}: not Chroma's {{error, message}}: {v}"
    );
    v
}

fn last_lsn(gw: &GatewayProcess) -> u64 {
    status(gw)["write_ahead_log"]["last_lsn"]
        .as_u64()
        .expect("last_lsn")
}

#[test]
fn bad_input_gets_chroma_errors_and_changes_nothing() {
    let servers = ChromaServer::start_many(2);
    let mut gw = start_gateway(&servers, &[("CHROMA_HA_MAX_BODY_BYTES", "1MiB")]);
    let g = gw.url();
    let c = ok(
        "POST",
        &api(&g, &default_colls()),
        Some(&json!({"name": "bad-input"})),
    )
    .json();
    let id = c["id"].as_str().expect("id").to_string();
    let base = api(&g, &format!("{}/{id}", default_colls()));
    ok(
        "POST",
        &format!("{base}/add"),
        Some(&json!({"ids": ["keep"], "embeddings": [emb(1, 1.0)], "documents": ["keep me"]})),
    );
    wait_caught_up(&gw);
    let lsn0 = last_lsn(&gw);

    // 1. A body over the limit: 413, nothing logged.
    let big_doc = "x".repeat(1_200_000);
    let big =
        json!({"ids": ["big"], "embeddings": [emb(2, 1.0)], "documents": [big_doc]}).to_string();
    assert!(big.len() > 1 << 20);
    let r = http_request("POST", &format!("{base}/add"), Some(&big), T).expect("big POST");
    let e = assert_chroma_error(&r, 413, "body over the limit");
    eprintln!("413 answer: {e}");
    assert_eq!(last_lsn(&gw), lsn0, "an oversized body must not be logged");
    // Chunked (no Content-Length) over the limit too, via reqwest's stream body.
    let status = block_on(async {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big
            .as_bytes()
            .chunks(64 * 1024)
            .map(|c| Ok(c.to_vec()))
            .collect();
        let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
        let r = reqwest::Client::new()
            .post(format!("{base}/add"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        match r {
            Ok(r) => {
                let st = r.status().as_u16();
                let text = r.text().await.unwrap_or_default();
                Some((st, text))
            }
            // The gateway may close the connection while the client still
            // sends; that is a refusal too.
            Err(_) => None,
        }
    });
    if let Some((st, text)) = status {
        assert_eq!(st, 413, "chunked body over the limit: {text}");
        let v: Value = serde_json::from_str(&text).expect("413 body is JSON");
        assert!(v["error"].is_string() && v["message"].is_string(), "{v}");
    }
    assert_eq!(last_lsn(&gw), lsn0, "an oversized body must not be logged");

    // 2. Malformed JSON to a write endpoint: Chroma's own 400, applied nowhere.
    let pid = server_collection_id(&servers[0], "bad-input");
    let direct = http_request(
        "POST",
        &api(&servers[0].url(), &format!("{}/{pid}/add", default_colls())),
        Some(r#"{"ids": ["m1"], "embeddings": [[1, 2"#),
        T,
    )
    .expect("direct malformed");
    let r = http_request(
        "POST",
        &format!("{base}/add"),
        Some(r#"{"ids": ["m1"], "embeddings": [[1, 2"#),
        T,
    )
    .expect("malformed POST");
    let e = assert_chroma_error(&r, 400, "malformed JSON");
    assert_eq!(
        r.status, direct.status,
        "the gateway answers what Chroma answers"
    );
    assert_eq!(e, direct.json(), "Chroma's own error body");
    assert!(r.header("x-chroma-ha-backend").is_some());
    // A body that is JSON but not a valid add (ids without embeddings of the
    // right kind), and a write to a collection that does not exist.
    let r = request(
        "POST",
        &format!("{base}/add"),
        Some(&json!({"ids": ["m2"], "embeddings": "nope"})),
    );
    assert!((400..500).contains(&r.status), "{} {}", r.status, r.text());
    let missing = api(
        &g,
        &format!(
            "{}/3f1b7c2e-1d2a-4c3b-9e8f-0a1b2c3d4e5f/add",
            default_colls()
        ),
    );
    let r = request(
        "POST",
        &missing,
        Some(&json!({"ids": ["m3"], "embeddings": [emb(3, 1.0)]})),
    );
    assert!((400..500).contains(&r.status), "{} {}", r.status, r.text());
    // An empty body, and a wrong method, answered as Chroma answers them.
    let r = http_request("POST", &format!("{base}/add"), None, T).expect("empty POST");
    let direct = http_request(
        "POST",
        &api(&servers[0].url(), &format!("{}/{pid}/add", default_colls())),
        None,
        T,
    )
    .expect("direct empty POST");
    assert!(
        (400..500).contains(&r.status),
        "empty body: {} {}",
        r.status,
        r.text()
    );
    assert_eq!(
        r.status,
        direct.status,
        "empty body: {} vs Chroma {}",
        r.text(),
        direct.text()
    );
    let r = http_get(&format!("{base}/add"), T).expect("GET add");
    let direct = http_get(
        &api(&servers[0].url(), &format!("{}/{pid}/add", default_colls())),
        T,
    )
    .expect("direct GET add");
    assert_eq!(
        r.status,
        direct.status,
        "GET …/add: {} vs Chroma {}",
        r.text(),
        direct.text()
    );
    let s = settled(&gw);
    let lsn1 = s["write_ahead_log"]["last_lsn"].as_u64().expect("lsn");
    eprintln!("refused writes moved the log from LSN {lsn0} to {lsn1}");
    // Four refused writes: at most an entry and a refusal record each.
    assert!(
        lsn1 <= lsn0 + 8,
        "refused writes may only add their own entries: {lsn0} -> {lsn1}"
    );
    for server in &servers {
        let sid = server_collection_id(server, "bad-input");
        let got = ok(
            "POST",
            &api(&server.url(), &format!("{}/{sid}/get", default_colls())),
            Some(&json!({"include": []})),
        )
        .json();
        assert_eq!(
            got["ids"],
            json!(["keep"]),
            "{}: nothing refused may be applied",
            server.url()
        );
    }

    // 3. Unknown /api/v2 paths: Chroma's 404 (passed through), no crash.
    for (method, path) in [
        ("GET", "/api/v2/no-such-endpoint"),
        ("POST", "/api/v2/no/such/endpoint"),
        ("DELETE", "/api/v2/tenants/default_tenant/whatever/else"),
    ] {
        let r = http_request(method, &format!("{g}{path}"), Some("{}"), T)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text());
    }
    // Odd but routable paths: the gateway answers what Chroma answers.
    for path in [
        "/api/v2/tenants/%ZZ/databases",
        "/api/v2/tenants/default_tenant/databases/x/collections",
        "/api/v2/tenants/default_tenant/databases/default_database/collections/%2F%2E%2E",
        "/api/v2/tenants/default_tenant/databases/default_database/collections/not-a-uuid/count",
    ] {
        let via = http_get(&format!("{g}{path}"), T).unwrap_or_else(|e| panic!("{path}: {e}"));
        let direct = http_get(&format!("{}{path}", servers[0].url()), T)
            .unwrap_or_else(|e| panic!("{path} direct: {e}"));
        assert_eq!(
            via.status,
            direct.status,
            "GET {path}: gateway {} vs Chroma {}",
            via.text(),
            direct.text()
        );
    }
    // 4. A path the gateway does not serve at all: its own JSON 404.
    let r = http_get(&format!("{g}/nonexistent"), T).expect("GET /nonexistent");
    assert_chroma_error(&r, 404, "GET /nonexistent");

    // Still alive, still taking writes that reach every server.
    assert!(gw.is_running(), "the gateway must not crash on bad input");
    ok(
        "POST",
        &format!("{base}/add"),
        Some(
            &json!({"ids": ["after"], "embeddings": [emb(9, 1.0)], "documents": ["after bad input"]}),
        ),
    );
    settled(&gw);
    let reports = assert_identical(
        &urls(&servers),
        &[(DEFAULT_TENANT.to_string(), DEFAULT_DATABASE.to_string())],
    );
    assert_eq!(reports[0].records_per_server, vec![2, 2], "{}", reports[0]);
    let log = gw.log();
    assert!(
        !log.contains("panicked"),
        "gateway log shows a panic:\n{log}"
    );
}

// ---------------------------------------------------------------------------
// 7: /health, /ready, /status, /metrics
// ---------------------------------------------------------------------------

#[test]
fn health_ready_status_and_metrics_carry_the_documented_fields() {
    let servers = ChromaServer::start_many(2);
    let gw = start_gateway(&servers, &[]);
    let g = gw.url();

    let h = http_get(&format!("{g}/health"), T).expect("/health");
    assert_eq!(h.status, 200, "{}", h.text());
    let r = http_get(&format!("{g}/ready"), T).expect("/ready");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["ready"], json!(true));

    // Some traffic: a write and reads.
    let c = ok(
        "POST",
        &api(&g, &default_colls()),
        Some(&json!({"name": "status-coll"})),
    );
    assert_eq!(c.header("x-chroma-ha-backend"), Some("primary"));
    assert!(c.header("x-chroma-ha-lsn").is_some());
    let id = c.json()["id"].as_str().expect("id").to_string();
    let base = api(&g, &format!("{}/{id}", default_colls()));
    for i in 0..5 {
        ok(
            "POST",
            &format!("{base}/add"),
            Some(&json!({"ids": [format!("s{i}")], "embeddings": [emb(i, 0.0)]})),
        );
        let n = ok("GET", &format!("{base}/count"), None);
        assert_eq!(n.json(), json!(i + 1));
        assert!(n.header("x-chroma-ha-backend").is_some());
        assert!(n.header("x-chroma-ha-lsn").is_none(), "reads carry no LSN");
    }
    let s = wait_caught_up(&gw);
    let pretty = serde_json::to_string_pretty(&s).unwrap_or_default();
    assert_eq!(s["healthy_instances"], json!(2), "{pretty}");
    assert_eq!(s["total_instances"], json!(2), "{pretty}");
    let wal = &s["write_ahead_log"];
    for field in [
        "kind",
        "log_id",
        "pending_writes",
        "is_replaying",
        "oldest_pending",
        "total_replayed",
        "failed_replays",
    ] {
        assert!(
            wal.get(field).is_some(),
            "write_ahead_log.{field} missing: {pretty}"
        );
    }
    assert_eq!(wal["pending_writes"], json!(0), "{pretty}");
    assert_eq!(wal["is_replaying"], json!(false), "{pretty}");
    assert!(wal["total_replayed"].as_u64().unwrap_or(0) >= 6, "{pretty}");
    assert_eq!(wal["failed_replays"], json!(0), "{pretty}");
    let last = wal["last_lsn"].as_u64().expect("last_lsn");
    assert!(last >= 6, "{pretty}");
    let instances = s["instances"].as_array().expect("instances");
    assert_eq!(instances.len(), 2);
    for (inst, name) in instances.iter().zip(["primary", "replica"]) {
        assert_eq!(inst["name"], json!(name), "{pretty}");
        assert_eq!(inst["healthy"], json!(true), "{pretty}");
        let rate = inst["success_rate"].as_f64().expect("success_rate");
        assert!((0.0..=1.0).contains(&rate), "{pretty}");
        assert!(inst["total_requests"].as_u64().is_some(), "{pretty}");
        assert!(
            inst["last_health_check"].as_f64().unwrap_or(0.0) > 1.6e9,
            "{pretty}"
        );
        assert_eq!(inst["applied_lsn"].as_u64(), Some(last), "{pretty}");
        assert_eq!(inst["lag_entries"], json!(0), "{pretty}");
        assert!(inst["lag_seconds"].as_f64().is_some(), "{pretty}");
        assert!(inst["applier"].as_str().is_some(), "{pretty}");
    }
    assert!(
        instances[0]["total_requests"].as_u64().unwrap_or(0) >= 6,
        "the primary executed the writes: {pretty}"
    );

    // Query strings pass through (the client's count?read_level=...).
    let n = ok(
        "GET",
        &format!("{base}/count?read_level=index_and_wal"),
        None,
    );
    assert_eq!(n.json(), json!(5));
    // Client credentials reach the executor but never the log on disk.
    let secret = "TOPSECRET-c0ffee-4711";
    block_on(async {
        let r = reqwest::Client::new()
            .post(format!("{base}/add"))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {secret}"))
            .header("x-chroma-token", secret)
            .body(json!({"ids": ["cred"], "embeddings": [emb(77, 0.0)]}).to_string())
            .send()
            .await
            .expect("write with credentials");
        assert_eq!(r.status().as_u16(), 201);
    });
    wait_caught_up(&gw);
    let stored = gw.stored_bytes();
    let files = stored.len();
    let mut body_seen = false;
    for (place, bytes) in &stored {
        let needle = br#"["cred"]"#;
        body_seen |= bytes.windows(needle.len()).any(|w| w == needle);
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{place} holds the client's credentials"
        );
    }
    assert!(files > 0, "the data dir holds the log");
    assert!(
        body_seen,
        "the entry's body is in the log (so the scan is real)"
    );

    // The leader's metrics: its core answered the requests.
    let m = http_get(&format!("{}/metrics", gw.core().url()), T).expect("/metrics");
    assert_eq!(m.status, 200);
    let text = m.text();
    for name in [
        "chroma_ha_requests_total",
        "chroma_ha_wal_fsync_duration_seconds",
        "chroma_ha_server_lag_entries",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "/metrics lacks {name}:\n{text}"
        );
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("chroma_ha_requests_total{") && l.contains("class=\"write\"")),
        "write requests are counted:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("chroma_ha_server_lag_entries{") && l.contains("replica")),
        "lag per server:\n{text}"
    );
}

// ---------------------------------------------------------------------------
// Collection lifecycle: the logical-id map across delete / recreate / rename /
// database recreate / reset, and a get_or_create race
// ---------------------------------------------------------------------------

/// GETs `url` `n` times through the gateway; every answer must be 200 with
/// `want` as JSON body. Returns how often each server answered.
fn reads_agree(url: &str, n: usize, want: &Value, backends: &mut BTreeMap<String, usize>) {
    for k in 0..n {
        let r = request("GET", url, None);
        let b = r.header("x-chroma-ha-backend").unwrap_or("?").to_string();
        assert_eq!(
            r.status,
            200,
            "read {k} of {url} served by {b}: {}",
            r.text()
        );
        assert_eq!(
            &r.json(),
            want,
            "read {k} of {url} served by {b}: {}",
            r.text()
        );
        *backends.entry(b).or_default() += 1;
    }
}

fn add_one(base: &str, rid: &str, i: usize) -> HttpResponse {
    request(
        "POST",
        &format!("{base}/add"),
        Some(
            &json!({"ids": [rid], "embeddings": [emb(i, 3.0)], "documents": [format!("doc {rid}")]}),
        ),
    )
}

#[test]
fn collection_lifecycle_keeps_ids_straight_on_every_server() {
    let servers = ChromaServer::start_many(2);
    let gw = start_gateway(&servers, &[("CHROMA_HA_READ_REPLICA_RATIO", "1.0")]);
    let g = gw.url();
    let urls = urls(&servers);
    let scope = vec![(DEFAULT_TENANT.to_string(), DEFAULT_DATABASE.to_string())];
    let coll_url = |id: &str| api(&g, &format!("{}/{id}", default_colls()));
    let create = |name: &str| -> String {
        ok(
            "POST",
            &api(&g, &default_colls()),
            Some(&json!({"name": name})),
        )
        .json()["id"]
            .as_str()
            .expect("id")
            .to_string()
    };
    let by_name = |name: &str| -> HttpResponse {
        request(
            "GET",
            &api(&g, &format!("{}/{name}", default_colls())),
            None,
        )
    };
    let mut backends = BTreeMap::<String, usize>::new();

    // 1. create, write, delete, create again under the same name.
    let id1 = create("life-a");
    assert_eq!(add_one(&coll_url(&id1), "r1", 1).status, 201);
    assert_eq!(add_one(&coll_url(&id1), "r2", 2).status, 201);
    ok(
        "DELETE",
        &api(&g, &format!("{}/life-a", default_colls())),
        None,
    );
    let r = by_name("life-a");
    assert_eq!(r.status, 404, "deleted collection: {}", r.text());
    let id2 = create("life-a");
    assert_ne!(id1, id2, "a new collection gets a new id");
    assert_eq!(add_one(&coll_url(&id2), "r3", 3).status, 201);
    reads_agree(
        &format!("{}/count", coll_url(&id2)),
        10,
        &json!(1),
        &mut backends,
    );
    // The old id is gone everywhere: reads and writes by it fail and a write
    // by it lands nowhere.
    let r = request("GET", &format!("{}/count", coll_url(&id1)), None);
    assert!(
        (400..500).contains(&r.status),
        "count by a deleted id: {} {}",
        r.status,
        r.text()
    );
    let r = add_one(&coll_url(&id1), "ghost", 4);
    assert!(
        (400..500).contains(&r.status),
        "add by a deleted id: {} {}",
        r.status,
        r.text()
    );
    settled(&gw);
    let rep = assert_identical(&urls, &scope);
    assert_eq!(rep[0].records_per_server, vec![1, 1], "{}", rep[0]);

    // 2. rename, then reuse the old name.
    ok(
        "PUT",
        &coll_url(&id2),
        Some(&json!({"new_name": "life-b", "new_metadata": {"renamed": true}})),
    );
    let id3 = create("life-a");
    assert!(id3 != id2 && id3 != id1);
    assert_eq!(add_one(&coll_url(&id3), "r4", 5).status, 201);
    assert_eq!(add_one(&coll_url(&id2), "r5", 6).status, 201);
    let b = by_name("life-b");
    assert_eq!(b.json()["id"], json!(id2), "{}", b.text());
    assert_eq!(
        b.json()["metadata"],
        json!({"renamed": true}),
        "{}",
        b.text()
    );
    assert_eq!(by_name("life-a").json()["id"], json!(id3));
    reads_agree(
        &format!("{}/count", coll_url(&id2)),
        5,
        &json!(2),
        &mut backends,
    );
    reads_agree(
        &format!("{}/count", coll_url(&id3)),
        5,
        &json!(1),
        &mut backends,
    );
    // Listing through the gateway shows logical ids only.
    let listed = ok("GET", &api(&g, &default_colls()), None).json();
    let mut seen: Vec<(String, String)> = listed
        .as_array()
        .expect("list")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or("").to_string(),
                c["id"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("life-a".to_string(), id3.clone()),
            ("life-b".to_string(), id2.clone())
        ]
    );

    // 3. a database deleted and created again, with the same collection name.
    let dbs = api(&g, &format!("/tenants/{DEFAULT_TENANT}/databases"));
    ok("POST", &dbs, Some(&json!({"name": "life-db"})));
    let dbc = api(&g, &colls(DEFAULT_TENANT, "life-db"));
    let old = ok("POST", &dbc, Some(&json!({"name": "inner"}))).json()["id"]
        .as_str()
        .expect("id")
        .to_string();
    assert_eq!(add_one(&format!("{dbc}/{old}"), "d1", 7).status, 201);
    ok("DELETE", &format!("{dbs}/life-db"), None);
    ok("POST", &dbs, Some(&json!({"name": "life-db"})));
    let new = ok("POST", &dbc, Some(&json!({"name": "inner"}))).json()["id"]
        .as_str()
        .expect("id")
        .to_string();
    assert_ne!(old, new);
    assert_eq!(add_one(&format!("{dbc}/{new}"), "d2", 8).status, 201);
    assert_eq!(add_one(&format!("{dbc}/{new}"), "d3", 9).status, 201);
    reads_agree(&format!("{dbc}/{new}/count"), 5, &json!(2), &mut backends);
    settled(&gw);
    let mut scopes = scope.clone();
    scopes.push((DEFAULT_TENANT.to_string(), "life-db".to_string()));
    let rep = assert_identical(&urls, &scopes);
    assert_eq!(rep[0].records_per_server, vec![3, 3], "{}", rep[0]);
    assert_eq!(rep[1].records_per_server, vec![2, 2], "{}", rep[1]);

    // 4. several clients race get_or_create on one new name: one collection,
    //    one id for everybody, on every server.
    let race: Vec<String> = {
        let handles: Vec<_> = (0..6)
            .map(|t| {
                let g = g.clone();
                std::thread::spawn(move || {
                    let c = ok(
                        "POST",
                        &api(&g, &default_colls()),
                        Some(&json!({"name": "race-coll", "get_or_create": true})),
                    )
                    .json();
                    let id = c["id"].as_str().expect("id").to_string();
                    let base = api(&g, &format!("{}/{id}", default_colls()));
                    let r = add_one(&base, &format!("race-{t}"), 20 + t);
                    assert_eq!(r.status, 201, "racer {t}: {}", r.text());
                    id
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("racer"))
            .collect()
    };
    assert!(race.iter().all(|id| *id == race[0]), "ids differ: {race:?}");
    reads_agree(
        &format!("{}/count", coll_url(&race[0])),
        5,
        &json!(6),
        &mut backends,
    );
    settled(&gw);
    let rep = assert_identical(&urls, &scope);
    assert_eq!(rep[0].collections_per_server, vec![3, 3], "{}", rep[0]);
    assert_eq!(rep[0].records_per_server, vec![9, 9], "{}", rep[0]);

    // 5. reset wipes every server; afterwards everything works as new.
    let r = ok("POST", &api(&g, "/reset"), None);
    assert!(
        r.header("x-chroma-ha-lsn").is_some(),
        "reset is a logged write"
    );
    settled(&gw);
    for url in &urls {
        let listed = ok("GET", &api(url, &default_colls()), None).json();
        assert_eq!(listed, json!([]), "{url} after reset");
    }
    let id4 = create("life-a");
    assert!(![&id1, &id2, &id3].contains(&&id4));
    assert_eq!(add_one(&coll_url(&id4), "after-reset", 30).status, 201);
    reads_agree(
        &format!("{}/count", coll_url(&id4)),
        10,
        &json!(1),
        &mut backends,
    );
    // An id from before the reset is gone.
    let r = request("GET", &format!("{}/count", coll_url(&id3)), None);
    assert!(
        (400..500).contains(&r.status),
        "count by a pre-reset id: {} {}",
        r.status,
        r.text()
    );
    settled(&gw);
    let rep = assert_identical(&urls, &scope);
    assert_eq!(rep[0].records_per_server, vec![1, 1], "{}", rep[0]);
    eprintln!("lifecycle reads served by {backends:?}");
    // Caught up and idle: with READ_REPLICA_RATIO=1.0 every read goes to the
    // replica, by the logical id and by name.
    let mut after = BTreeMap::<String, usize>::new();
    reads_agree(
        &format!("{}/count", coll_url(&id4)),
        5,
        &json!(1),
        &mut after,
    );
    // Listings keep one order: they go to the primary whatever the ratio.
    let listed = ok("GET", &api(&g, &default_colls()), None);
    assert_eq!(listed.header("x-chroma-ha-backend"), Some("primary"));
    assert_eq!(listed.json()[0]["id"], json!(id4), "{}", listed.text());
    assert_eq!(after.get("replica"), Some(&5), "{after:?}");
}
