//! A schema-driven run against a real gateway in front of two real Chroma
//! servers: schemathesis (from PyPI) generates requests for every
//! operation of Chroma 1.5.9's OpenAPI spec (`reference/`), valid and
//! invalid, and records every exchange in a HAR file. The test then
//! checks, from that record, the servers and the log:
//!
//! - no 5xx made by the gateway itself: every 5xx carries
//!   `x-chroma-ha-backend` (Chroma's own answer, passed through), except a
//!   read that made every server drop its connection
//!   (`RequestFailedOnEveryServer`), which is checked to do the same when
//!   sent to a server directly;
//! - every error the gateway made itself is Chroma-shaped JSON
//!   (`{"error","message"}`);
//! - no panic: the gateway still runs and logged none;
//! - the servers are identical afterwards, read directly, in every tenant
//!   the run touched, and no dead letter was made;
//! - the log holds no write the client was told failed: every logged entry
//!   was answered with its LSN, and every one answered with a 4xx carries
//!   its refusal, so no server applies it (every one answered 2xx does not).
//!
//! `SCHEMATHESIS_MAX_EXAMPLES` (default 4 per operation) and
//! `SCHEMATHESIS_SEED` (default 1; `random` picks one and prints it) set
//! the run's size; a longer run:
//! `SCHEMATHESIS_MAX_EXAMPLES=60 SCHEMATHESIS_SEED=random cargo test -p
//! chroma-ha --test schema_driven -- --nocapture`.
//!
//! schemathesis comes from `<repo>/.venv-schemathesis` (made by
//! `scripts/test.sh`) or `$CHROMA_HA_SCHEMATHESIS`; missing, the test fails.

mod fault_kit;
mod history_kit;
mod support;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use chroma_ha::check::{compare_servers, discover_scopes, CheckOptions};
use fault_kit::{serial, status_now, wait_caught_up, Cluster};
use history_kit::sources::{read_log, LogAt};
use serde_json::Value;
use support::{block_on, http_request, workspace_root};

const SEGMENT_BYTES: u64 = 32 << 20;
const BACKEND_HEADER: &str = "x-chroma-ha-backend";
const LSN_HEADER: &str = "x-chroma-ha-lsn";

/// One request and its answer, as schemathesis recorded them.
#[derive(Debug)]
struct Exchange {
    method: String,
    url: String,
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

impl Exchange {
    fn lsn(&self) -> Option<u64> {
        self.headers.get(LSN_HEADER).and_then(|v| v.parse().ok())
    }

    fn answered_by_chroma(&self) -> bool {
        self.headers.contains_key(BACKEND_HEADER)
    }

    fn describe(&self) -> String {
        let body: String = self.body.chars().take(300).collect();
        format!("{} {} -> {} {body}", self.method, self.url, self.status)
    }
}

fn schemathesis() -> PathBuf {
    let path = std::env::var("CHROMA_HA_SCHEMATHESIS").map_or_else(
        |_| workspace_root().join(".venv-schemathesis/bin/schemathesis"),
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "{} is missing: run scripts/test.sh (it makes .venv-schemathesis), or \
         python3 -m venv .venv-schemathesis && .venv-schemathesis/bin/pip install schemathesis==4.32.5",
        path.display()
    );
    path
}

fn read_har(path: &std::path::Path) -> Vec<Exchange> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read schemathesis's HAR {}: {e}", path.display()));
    let har: Value = serde_json::from_str(&text).expect("the HAR file is JSON");
    har["log"]["entries"]
        .as_array()
        .expect("HAR entries")
        .iter()
        .map(|e| {
            let response = &e["response"];
            Exchange {
                method: e["request"]["method"].as_str().unwrap_or("").to_string(),
                url: e["request"]["url"].as_str().unwrap_or("").to_string(),
                status: response["status"].as_u64().unwrap_or(0) as u16,
                headers: response["headers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|h| {
                        (
                            h["name"].as_str().unwrap_or("").to_ascii_lowercase(),
                            h["value"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect(),
                body: response["content"]["text"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            }
        })
        .collect()
}

/// The tenants a run's URLs name (percent-decoded), with Chroma's default.
fn tenants_touched(exchanges: &[Exchange]) -> Vec<String> {
    let mut tenants = BTreeSet::from(["default_tenant".to_string()]);
    for x in exchanges {
        if let Some(rest) = x.url.split("/api/v2/tenants/").nth(1) {
            let raw = rest.split(['/', '?']).next().unwrap_or("");
            if let Ok(name) = urlencoding_decode(raw) {
                if !name.is_empty() {
                    tenants.insert(name);
                }
            }
        }
    }
    tenants.into_iter().collect()
}

fn urlencoding_decode(raw: &str) -> Result<String, std::string::FromUtf8Error> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
}

#[test]
fn a_schema_driven_run_gets_no_error_of_the_gateways_own_making_and_leaves_the_servers_identical() {
    let _serial = serial();
    let tool = schemathesis();
    let max_examples = std::env::var("SCHEMATHESIS_MAX_EXAMPLES").unwrap_or_else(|_| "4".into());
    let seed = match std::env::var("SCHEMATHESIS_SEED").as_deref() {
        Ok("random") => rand::random::<u32>().to_string(),
        Ok(seed) => seed.to_string(),
        Err(_) => "1".into(),
    };
    let segment = SEGMENT_BYTES.to_string();
    let mut c = Cluster::start(&[("CHROMA_HA_WAL_SEGMENT_BYTES", segment.as_str())]);
    let gw = c.gw();
    let har = c.gateway.dir().join("schemathesis.har");
    let spec = workspace_root().join("reference/chroma-1.5.9-openapi.json");
    let started = std::time::Instant::now();
    let run = Command::new(&tool)
        .arg("run")
        .arg(&spec)
        .args([
            "--url",
            &gw,
            "--max-examples",
            &max_examples,
            "--seed",
            &seed,
        ])
        .args(["--workers", "1", "--request-timeout", "30"])
        .args(["--generation-database", "none", "--no-color"])
        // Every property is checked below, from the record of the run;
        // schemathesis's own checks judge Chroma's conformance to its spec.
        .args(["--exclude-checks", "all", "--report", "har"])
        .arg("--report-har-path")
        .arg(&har)
        .env("SCHEMATHESIS_HOOKS", "")
        // Its cache of past failures (.schemathesis/) goes with the run.
        .current_dir(c.gateway.dir())
        .output()
        .expect("run schemathesis");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let exchanges = read_har(&har);
    assert!(
        exchanges.len() > 100,
        "schemathesis recorded only {} exchanges; it said:\n{stdout}\n{}",
        exchanges.len(),
        String::from_utf8_lossy(&run.stderr)
    );

    // No 5xx of the gateway's own making; its own errors are Chroma-shaped.
    let mut own_5xx = Vec::new();
    let mut misshapen = Vec::new();
    let mut crashing_reads = BTreeSet::new();
    for x in exchanges
        .iter()
        .filter(|x| x.status >= 400 && !x.answered_by_chroma())
    {
        let body: Value = serde_json::from_str(&x.body).unwrap_or(Value::Null);
        if !(body["error"].is_string() && body["message"].is_string()) {
            misshapen.push(x.describe());
        }
        if x.status >= 500 {
            if x.method == "GET" && body["error"] == "RequestFailedOnEveryServer" {
                crashing_reads.insert(x.url.clone());
            } else {
                own_5xx.push(x.describe());
            }
        }
    }
    assert_eq!(own_5xx, Vec::<String>::new(), "5xx made by the gateway");
    assert_eq!(
        misshapen,
        Vec::<String>::new(),
        "gateway errors not Chroma-shaped"
    );
    // A read the gateway called the request's failure fails on a server too.
    for url in &crashing_reads {
        let direct = url.replacen(&gw, &c.primary.url(), 1);
        let answer = http_request("GET", &direct, None, Duration::from_secs(20));
        assert!(
            answer.as_ref().map_or(true, |r| r.status >= 500),
            "{direct} answers {:?} directly, but the gateway said every server failed it",
            answer.map(|r| (r.status, r.text()))
        );
    }

    // No panic.
    assert!(
        c.gateway.is_running(),
        "the gateway exited:\n{}",
        c.gateway.log()
    );
    let log = c.gateway.log();
    assert!(!log.contains("panicked"), "the gateway panicked:\n{log}");

    // The servers, read directly: identical in every tenant the run named.
    wait_caught_up(&gw, Duration::from_secs(60));
    let status = status_now(&gw);
    assert_eq!(status["write_ahead_log"]["dead_letters"], 0, "{status}");
    let urls = c.server_urls();
    let tenants = tenants_touched(&exchanges);
    let opts = CheckOptions::default();
    let report = block_on(async {
        let scopes = discover_scopes(&urls, &tenants, &opts).await?;
        compare_servers(&urls, &scopes, &opts).await
    })
    .expect("compare the servers");
    assert!(
        report.identical(),
        "the servers differ after the run:\n{}",
        report.difference_lines().join("\n")
    );

    // The log: every entry answered with its LSN, refused iff told failed.
    assert!(
        c.gateway.terminate(Duration::from_secs(20)),
        "stop the gateway"
    );
    let logged = read_log(LogAt::File(
        &c.gateway.dir().join("data/wal"),
        SEGMENT_BYTES,
    ));
    let answers: HashMap<u64, &Exchange> = exchanges
        .iter()
        .filter_map(|x| x.lsn().map(|lsn| (lsn, x)))
        .collect();
    let mut unanswered = Vec::new();
    let mut wrong = Vec::new();
    let (mut refused, mut applied) = (0, 0);
    for entry in &logged {
        let Some(x) = answers.get(&entry.lsn) else {
            unanswered.push(format!("LSN {} {} {}", entry.lsn, entry.method, entry.path));
            continue;
        };
        let told_failed = (400..500).contains(&x.status);
        let told_done = (200..300).contains(&x.status);
        match (&entry.refused, told_failed, told_done) {
            (Some(_), true, _) => refused += 1,
            (None, _, true) => applied += 1,
            _ => wrong.push(format!(
                "LSN {} refused={:?}: {}",
                entry.lsn,
                entry.refused,
                x.describe()
            )),
        }
    }
    assert_eq!(
        unanswered,
        Vec::<String>::new(),
        "logged entries no client was answered for"
    );
    assert_eq!(
        wrong,
        Vec::<String>::new(),
        "logged entries whose refusal disagrees with the answer"
    );
    let own_errors = exchanges
        .iter()
        .filter(|x| x.status >= 400 && !x.answered_by_chroma())
        .count();
    println!(
        "SCHEMA-DRIVEN seed={seed} max_examples={max_examples}: {} exchanges in {:.1} s, \
         {} answered by Chroma, {own_errors} errors of the gateway's own (all Chroma-shaped, no 5xx), \
         {} read(s) every server dropped; log: {} entries, {applied} applied, {refused} refused; \
         servers identical over {} tenant(s)",
        exchanges.len(),
        took.as_secs_f64(),
        exchanges.iter().filter(|x| x.answered_by_chroma()).count(),
        crashing_reads.len(),
        logged.len(),
        tenants.len(),
    );
}
