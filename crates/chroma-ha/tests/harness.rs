//! Tests of the integration-test harness itself (tests/support) and of the
//! content check (`chroma_ha::check`) against real Chroma servers.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use chroma_ha::check::{
    compare_servers, discover_scopes, CheckOptions, CheckReport, DifferenceKind, Record,
    ServerReader, DEFAULT_DATABASE, DEFAULT_TENANT,
};
use serde_json::{json, Value};
use support::{
    assert_python_ok, block_on, http_get, http_request, python, python_script, python_summary,
    run_python, ChromaServer, GatewayProcess,
};

const T: Duration = Duration::from_secs(10);

fn api(server: &ChromaServer, path: &str) -> String {
    format!("{}/api/v2{path}", server.url())
}

fn coll_path(tenant: &str, db: &str) -> String {
    format!("/tenants/{tenant}/databases/{db}/collections")
}

/// POST JSON and return the parsed answer, asserting a 2xx status.
fn post(url: &str, body: Value) -> Value {
    let r = http_request("POST", url, Some(&body.to_string()), T).expect("POST");
    assert!(
        (200..300).contains(&r.status),
        "POST {url} -> {}: {}",
        r.status,
        r.text()
    );
    r.json()
}

/// Creates a collection in the default scope; returns its id.
fn create_collection(server: &ChromaServer, name: &str, metadata: Value) -> String {
    let c = post(
        &api(server, &coll_path(DEFAULT_TENANT, DEFAULT_DATABASE)),
        json!({"name": name, "metadata": metadata}),
    );
    c["id"].as_str().expect("collection id").to_string()
}

fn record_op(server: &ChromaServer, coll_id: &str, op: &str, body: Value) {
    post(
        &api(
            server,
            &format!(
                "{}/{coll_id}/{op}",
                coll_path(DEFAULT_TENANT, DEFAULT_DATABASE)
            ),
        ),
        body,
    );
}

/// Everything a server holds in the given scopes, keyed by
/// (tenant, database, collection name).
type Snapshot = BTreeMap<(String, String, String), (Value, BTreeMap<String, Record>)>;

fn snapshot(url: &str, scopes: &[(String, String)]) -> Snapshot {
    block_on(async {
        let r = ServerReader::new(url, None, &CheckOptions::default()).expect("reader");
        let mut out = Snapshot::new();
        for (t, d) in scopes {
            for c in r.list_collections(t, d).await.expect("list collections") {
                let recs = r.get_all_records(t, d, &c.id).await.expect("get records");
                out.insert((t.clone(), d.clone(), c.name.clone()), (c.metadata, recs));
            }
        }
        out
    })
}

fn compare(urls: &[String], scopes: &[(String, String)]) -> CheckReport {
    block_on(compare_servers(urls, scopes, &CheckOptions::default())).expect("compare_servers")
}

fn default_scope() -> Vec<(String, String)> {
    vec![(DEFAULT_TENANT.to_string(), DEFAULT_DATABASE.to_string())]
}

#[test]
fn chroma_server_runs_workload_and_survives_kill9() {
    let mut server = ChromaServer::start();
    assert!(server.heartbeat_ok(), "heartbeat after start");
    let hb = http_get(&server.heartbeat_url(), T).expect("heartbeat");
    assert_eq!(hb.status, 200);
    assert!(
        hb.text().contains("heartbeat"),
        "heartbeat body: {}",
        hb.text()
    );

    // The official client, driving the whole API with read-your-writes checks.
    let out = run_python(
        &python_script("client_workload.py"),
        &[&server.url(), "--seed", "7", "--prefix", "hk9"],
    );
    assert_python_ok("client_workload.py", &out);
    let summary = python_summary(&out);
    assert_eq!(summary["ok"], json!(true), "{summary}");
    assert!(
        summary["total_ops"].as_u64().unwrap_or(0) > 100,
        "{summary}"
    );

    let scopes = block_on(discover_scopes(
        &[server.url()],
        &[DEFAULT_TENANT.to_string(), "hk9-tenant".to_string()],
        &CheckOptions::default(),
    ))
    .expect("discover scopes");
    assert_eq!(
        scopes,
        vec![
            (DEFAULT_TENANT.to_string(), DEFAULT_DATABASE.to_string()),
            ("hk9-tenant".to_string(), "hk9-db".to_string()),
        ]
    );
    let before = snapshot(&server.url(), &scopes);
    assert_eq!(
        before.len(),
        2,
        "one collection per scope: {:?}",
        before.keys()
    );
    let records: usize = before.values().map(|(_, r)| r.len()).sum();
    assert!(records > 50, "records before kill: {records}");

    // SIGSTOP: a hung server (port open, no answer); SIGCONT brings it back.
    server.pause();
    assert!(!server.heartbeat_ok(), "a paused server must not answer");
    server.resume();
    assert!(server.heartbeat_ok(), "heartbeat after resume");

    // kill -9, then it must be really gone.
    let pid = server.pid().expect("pid");
    let port = server.port();
    server.kill();
    assert!(!server.is_running());
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} still exists after kill"
    );
    assert!(!server.heartbeat_ok(), "heartbeat answered after kill -9");

    // Restart on the same port and data dir: everything is still there.
    server.restart();
    assert_eq!(server.port(), port, "restart keeps the port");
    assert_ne!(server.pid(), Some(pid));
    assert!(server.heartbeat_ok());
    let after = snapshot(&server.url(), &scopes);
    assert_eq!(before, after, "content changed across kill -9 + restart");

    // And it still takes writes after the restart.
    let out = run_python(
        &python_script("client_workload.py"),
        &[
            &server.url(),
            "--seed",
            "8",
            "--prefix",
            "hk9",
            "--skip-tenant",
            "--clean-start",
        ],
    );
    assert_python_ok("client_workload.py after restart", &out);
}

#[test]
fn same_writes_compare_identical() {
    let a = ChromaServer::start();
    let b = ChromaServer::start();
    for s in [&a, &b] {
        let out = run_python(
            &python_script("client_workload.py"),
            &[
                &s.url(),
                "--seed",
                "11",
                "--prefix",
                "same",
                "--records",
                "40",
            ],
        );
        assert_python_ok("client_workload.py", &out);
    }
    let urls = vec![a.url(), b.url()];
    let scopes = block_on(discover_scopes(
        &urls,
        &[DEFAULT_TENANT.to_string(), "same-tenant".to_string()],
        &CheckOptions::default(),
    ))
    .expect("discover scopes");
    assert_eq!(scopes.len(), 2, "{scopes:?}");
    let report = compare(&urls, &scopes);
    assert!(report.identical(), "expected identical:\n{report}");
    assert_eq!(report.collections, 2, "{report}");
    assert!(report.records > 40, "{report}");
    assert_eq!(report.records_per_server[0], report.records_per_server[1]);
    assert!(
        report.summary().starts_with("IDENTICAL"),
        "{}",
        report.summary()
    );
}

#[test]
fn compare_reports_each_difference() {
    let mut servers = ChromaServer::start_many(2);
    let b = servers.pop().expect("server b");
    let a = servers.pop().expect("server a");
    assert_ne!(a.port(), b.port());
    let emb = |x: f64| json!([x, 0.5, -0.25, 1.0]);
    let mut ids = BTreeMap::new();
    for s in [&a, &b] {
        let id = create_collection(s, "diffcol", json!({"owner": "test", "n": 1}));
        record_op(
            s,
            &id,
            "add",
            json!({
                "ids": ["r1", "r2", "r3"],
                "embeddings": [emb(0.1), emb(0.2), emb(0.3)],
                "documents": ["one", "two", "three"],
                "metadatas": [{"k": 1}, {"k": 2}, {"k": 3.5}],
            }),
        );
        let same = create_collection(s, "samecol", json!({"owner": "test"}));
        record_op(
            s,
            &same,
            "add",
            json!({"ids": ["x"], "embeddings": [emb(9.0)], "documents": ["x"]}),
        );
        ids.insert(s.port(), id);
    }
    // Sanity: identical so far.
    let urls = vec![a.url(), b.url()];
    let report = compare(&urls, &default_scope());
    assert!(report.identical(), "{report}");
    assert_eq!((report.collections, report.records), (2, 4), "{report}");

    // Now diverge server B.
    let bid = &ids[&b.port()];
    record_op(
        &b,
        bid,
        "add",
        json!({"ids": ["extra-1"], "embeddings": [emb(0.9)], "documents": ["extra"]}),
    );
    record_op(
        &b,
        bid,
        "update",
        json!({"ids": ["r2"], "documents": ["TWO"]}),
    );
    record_op(
        &b,
        bid,
        "update",
        json!({"ids": ["r3"], "metadatas": [{"k": 4}]}),
    );
    record_op(
        &b,
        bid,
        "update",
        json!({"ids": ["r1"], "embeddings": [emb(0.1001)]}),
    );
    create_collection(&b, "onlyonb", json!({"x": 1}));

    let report = compare(&urls, &default_scope());
    let text = report.to_string();
    assert!(!report.identical(), "{text}");
    let kinds: Vec<(Option<&str>, Option<&str>, DifferenceKind)> = report
        .differences
        .iter()
        .map(|d| (d.collection.as_deref(), d.record_id.as_deref(), d.kind))
        .collect();
    for expected in [
        (
            Some("diffcol"),
            Some("extra-1"),
            DifferenceKind::MissingRecord,
        ),
        (Some("diffcol"), Some("r2"), DifferenceKind::Document),
        (Some("diffcol"), Some("r3"), DifferenceKind::Metadata),
        (Some("diffcol"), Some("r1"), DifferenceKind::Embedding),
        (Some("onlyonb"), None, DifferenceKind::MissingCollection),
    ] {
        assert!(
            kinds.contains(&expected),
            "missing {expected:?} in:\n{text}"
        );
    }
    assert!(
        !report.mentions("samecol", None),
        "samecol is identical:\n{text}"
    );
    assert!(report.mentions("diffcol", Some("extra-1")));
    // The human-readable lines name the collection and the id.
    let lines = report.difference_lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("diffcol") && l.contains("extra-1") && l.contains(&b.url())),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("'r2'") && l.contains("\"two\"") && l.contains("\"TWO\"")),
        "{lines:#?}"
    );

    // Collection metadata and a database that exists on one server only.
    post(
        &api(&a, &format!("/tenants/{DEFAULT_TENANT}/databases")),
        json!({"name": "onlyona"}),
    );
    let r = http_request(
        "PUT",
        &api(
            &b,
            &format!(
                "{}/{}",
                coll_path(DEFAULT_TENANT, DEFAULT_DATABASE),
                ids[&b.port()]
            ),
        ),
        Some(&json!({"new_metadata": {"owner": "someone-else"}}).to_string()),
        T,
    )
    .expect("PUT collection");
    assert_eq!(r.status, 200, "{}", r.text());
    let mut scopes = default_scope();
    scopes.push((DEFAULT_TENANT.to_string(), "onlyona".to_string()));
    let report = compare(&urls, &scopes);
    let text = report.to_string();
    assert!(
        report
            .differences
            .iter()
            .any(|d| d.kind == DifferenceKind::CollectionMetadata
                && d.collection.as_deref() == Some("diffcol")
                && d.detail.contains("someone-else")),
        "{text}"
    );
    assert!(
        report
            .differences
            .iter()
            .any(|d| d.kind == DifferenceKind::MissingDatabase
                && d.database == "onlyona"
                && d.server == 1),
        "{text}"
    );

    // Tiny pages (collections and records) find exactly the same.
    let paged = block_on(compare_servers(
        &urls,
        &scopes,
        &CheckOptions {
            page_size: 2,
            ..CheckOptions::default()
        },
    ))
    .expect("compare with page_size 2");
    assert_eq!(paged.difference_lines(), report.difference_lines());
    assert_eq!(
        (paged.collections, paged.records),
        (report.collections, report.records)
    );
    assert_eq!(paged.collections_per_server, vec![2, 3]);
    assert_eq!(paged.records_per_server, vec![4, 5]);

    // The difference cap is honoured and counted.
    let opts = CheckOptions {
        max_differences: 2,
        ..CheckOptions::default()
    };
    let capped = block_on(compare_servers(&urls, &scopes, &opts)).expect("compare");
    assert_eq!(capped.differences.len(), 2);
    assert_eq!(capped.difference_count(), report.difference_count());
    assert!(!capped.identical());

    // An unreachable server is an error, not a difference.
    let port = b.port();
    drop(b);
    let err = block_on(compare_servers(
        &[a.url(), format!("http://127.0.0.1:{port}")],
        &default_scope(),
        &CheckOptions {
            request_timeout: Duration::from_secs(5),
            ..CheckOptions::default()
        },
    ))
    .expect_err("a dead server must be an error");
    assert!(err.to_string().contains(&port.to_string()), "{err}");
}

/// A stand-in "gateway": Python's http.server answering 200 on /health.
const FAKE_GATEWAY: &str = r#"
import sys, http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 200 if self.path == "/health" else 404
        body = sys.argv[2].encode()
        self.send_response(code); self.send_header("content-length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

#[test]
fn gateway_process_start_kill_restart() {
    let args: Vec<String> = vec![
        "-c".into(),
        FAKE_GATEWAY.into(),
        "{port}".into(),
        "{dir}".into(),
    ];
    let mut gw = GatewayProcess::start(&python(), &args, &[]);
    let r = http_get(&gw.health_url(), T).expect("health");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), gw.dir().display().to_string(), "{{dir}} expanded");
    let port = gw.port();
    let pid = gw.pid().expect("pid");
    gw.kill();
    assert!(!gw.is_running());
    assert!(http_get(&gw.health_url(), Duration::from_secs(2)).is_err());
    gw.restart();
    assert_eq!(gw.port(), port);
    assert_ne!(gw.pid(), Some(pid));
    assert_eq!(http_get(&gw.health_url(), T).expect("health").status, 200);
    assert!(gw.terminate(Duration::from_secs(5)), "exits on SIGTERM");
    assert!(gw.log().contains("start #2"), "log has both starts");
}

#[test]
#[should_panic(expected = "boom: cannot start")]
fn gateway_process_that_exits_fails_fast_with_log() {
    let args: Vec<String> = vec![
        "-c".into(),
        "import sys; print('boom: cannot start'); sys.exit(3)".into(),
        "{port}".into(),
    ];
    let _gw = GatewayProcess::start(&python(), &args, &[]);
}
