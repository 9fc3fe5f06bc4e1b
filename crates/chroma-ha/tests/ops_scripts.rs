//! The operations scripts, run against live deployments (real `chroma-ha`
//! in front of two real Chroma servers), checked for what they do and say,
//! not only their syntax:
//!
//! - `wal_health_check.sh` exits 0 with every server up, 1 with one down
//!   (or a warning threshold crossed), 2 with every server down, a critical
//!   threshold crossed or the gateway gone, and its lines name what it
//!   found with the figures of `/status`;
//! - `wal_monitor.sh` prints one line per interval with the figures of
//!   `/status`, and goes on when the gateway is gone;
//! - `wal_performance_test.sh` prints the figures it promises, consistent
//!   with each other and with the gateway's own count of writes, and its
//!   writes are on both servers;
//! - `dev-up.sh` starts two servers and a gateway that answers, its
//!   printed example and commands work, and Ctrl-C stops everything it
//!   started with exit status 0.
//!
//! The tests run one at a time (each starts its own servers) and poll with
//! generous deadlines: the machine may be loaded.

mod fault_kit;
mod ops_kit;
mod support;

use std::time::Duration;

use fault_kit::{
    collections_url, instance, lsn_of, post_json, serial, status, status_now, wait_caught_up,
    wait_until, Cluster, DATABASE,
};
use ops_kit::{run_script, Run};
use serde_json::{json, Value};

/// Deadline of each wait for the cluster to reach a state.
const LONG: Duration = Duration::from_secs(120);
/// Deadline of one short script run (health check, a few monitor lines).
const SCRIPT: Duration = Duration::from_secs(120);

/// Gateway settings of these tests on top of the fault tests' fast health
/// checks: a killed server is still out within a second (refused
/// connections fail at once), but a slow answer on a loaded machine takes
/// no server out of rotation and fails no request.
const PATIENT: &[(&str, &str)] = &[
    ("CHROMA_HA_PROBE_TIMEOUT", "10"),
    ("CHROMA_HA_REQUEST_TIMEOUT", "60"),
    ("CHROMA_HA_CONNECT_TIMEOUT", "5"),
];

/// Creates a collection through the gateway; its id.
fn create_collection(gw: &str, name: &str) -> String {
    let r = post_json(&collections_url(gw, DATABASE), &json!({ "name": name }));
    assert!(
        r.status == 200 || r.status == 201,
        "create {name}: {} {}",
        r.status,
        r.text()
    );
    r.json()["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {}", r.text()))
        .to_string()
}

/// Adds one record through the gateway; the LSN of the write.
fn add(gw: &str, collection: &str, id: &str) -> u64 {
    let r = post_json(
        &format!("{}/{collection}/add", collections_url(gw, DATABASE)),
        &json!({ "ids": [id], "embeddings": [[0.1, 0.2, 0.3]], "documents": [id] }),
    );
    assert_eq!(r.status, 201, "add {id}: {}", r.text());
    lsn_of(&r)
}

/// `wal_health_check.sh --url GW` with a 30 s curl timeout and `env`.
fn health(gw: &str, env: &[(&str, &str)]) -> Run {
    let mut all = vec![("TIMEOUT", "30")];
    all.extend_from_slice(env);
    run_script("wal_health_check.sh", &["--url", gw], &all, SCRIPT)
}

/// `wal_monitor.sh --url GW --count N --interval 0.5`.
fn monitor(gw: &str, count: u32) -> Run {
    let count = count.to_string();
    run_script(
        "wal_monitor.sh",
        &["--url", gw, "--count", &count, "--interval", "0.5"],
        &[],
        SCRIPT,
    )
}

/// The log's usage in percent of its cap as the scripts print it.
fn log_pct(s: &Value) -> String {
    let log = &s["write_ahead_log"];
    let used = log["used_bytes"].as_f64().expect("used_bytes");
    let cap = log["max_bytes"].as_f64().expect("max_bytes");
    format!("{:.1}%", used * 100.0 / cap)
}

/// The health check's summary line for status `s`.
fn health_summary(verdict: &str, gw: &str, s: &Value) -> String {
    let instances = s["instances"].as_array().expect("instances");
    let healthy = instances.iter().filter(|i| i["healthy"] == true).count();
    format!(
        "{verdict}: {gw} ready={} servers {healthy}/{} healthy, executor {}, last LSN {}, \
         log {} of cap, dead letters {}",
        s["ready"],
        instances.len(),
        s["executor"].as_str().unwrap_or("none"),
        s["write_ahead_log"]["last_lsn"],
        log_pct(s),
        s["write_ahead_log"]["dead_letters"],
    )
}

/// The health check printed `findings` (in this order) and then the
/// summary for `s`, nothing else.
fn assert_health_lines(run: &Run, findings: &[&str], verdict: &str, gw: &str, s: &Value) {
    let lines = run.lines();
    let summary = health_summary(verdict, gw, s);
    assert_eq!(lines.len(), findings.len() + 1, "{}", run.describe());
    for (line, finding) in lines.iter().zip(findings) {
        assert!(
            line.starts_with(finding),
            "expected a line starting {finding:?}:\n{}",
            run.describe()
        );
    }
    assert_eq!(lines[findings.len()], summary, "{}", run.describe());
}

/// One token of an expected monitor line.
enum Tok {
    Exact(String),
    /// `ENTRIES/SECONDSs)`: entries exactly, seconds at least this (the
    /// age grows between the status read and the monitor's).
    Lag(u64, f64),
}

/// Checks one monitor data line against status `s` (read just before,
/// in a state that holds still apart from lag ages).
fn assert_monitor_line(line: &str, s: &Value, run: &Run) {
    let instances = s["instances"].as_array().expect("instances");
    let healthy = instances.iter().filter(|i| i["healthy"] == true).count();
    let log = &s["write_ahead_log"];
    let mut want = vec![
        Tok::Exact("healthy".into()),
        Tok::Exact(format!("{healthy}/{}", instances.len())),
        Tok::Exact("exec".into()),
        Tok::Exact(s["executor"].as_str().unwrap_or("none").into()),
        Tok::Exact("last_lsn".into()),
        Tok::Exact(log["last_lsn"].to_string()),
    ];
    for i in instances {
        let mark = if i["healthy"] == true { "" } else { "!" };
        want.push(Tok::Exact(format!(
            "{mark}{}={}(lag",
            i["name"].as_str().expect("name"),
            i["applied_lsn"]
        )));
        want.push(Tok::Lag(
            i["lag_entries"].as_u64().expect("lag_entries"),
            i["lag_seconds"].as_f64().expect("lag_seconds"),
        ));
    }
    want.push(Tok::Exact("log".into()));
    want.push(Tok::Exact(log_pct(s)));
    want.push(Tok::Exact("dead".into()));
    want.push(Tok::Exact(log["dead_letters"].to_string()));
    if s["ready"] != true {
        want.push(Tok::Exact("NOT".into()));
        want.push(Tok::Exact("READY".into()));
    }
    let got: Vec<&str> = line.split_whitespace().collect();
    let time = got.first().copied().unwrap_or_default();
    let ctx = || format!("line {line:?}\nstatus {s}\n{}", run.describe());
    assert!(
        time.len() == 8 && time.chars().filter(|c| *c == ':').count() == 2,
        "no HH:MM:SS first: {}",
        ctx()
    );
    assert_eq!(got.len() - 1, want.len(), "{}", ctx());
    for (tok, want) in got[1..].iter().zip(&want) {
        match want {
            Tok::Exact(w) => assert_eq!(tok, w, "{}", ctx()),
            Tok::Lag(entries, min_seconds) => {
                let (e, rest) = tok.split_once('/').unwrap_or_else(|| panic!("{}", ctx()));
                let secs: f64 = rest
                    .strip_suffix("s)")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("lag seconds in {tok}: {}", ctx()));
                assert_eq!(e, entries.to_string(), "lag entries: {}", ctx());
                assert!(
                    secs + 0.05 >= *min_seconds && (*min_seconds > 0.0 || secs == 0.0),
                    "lag seconds {secs} vs {min_seconds} in /status: {}",
                    ctx()
                );
            }
        }
    }
}

/// The monitor printed its two header lines and `count` data lines, each
/// matching status `s`.
fn assert_monitor(run: &Run, count: usize, s: &Value) {
    run.assert_code(0);
    let lines = run.lines();
    assert_eq!(lines.len(), count + 2, "{}", run.describe());
    assert!(lines[0].starts_with("monitoring "), "{}", run.describe());
    assert!(lines[1].starts_with("columns: "), "{}", run.describe());
    for line in &lines[2..] {
        assert_monitor_line(line, s, run);
    }
}

/// The stable figures of a status (what must not move while a script runs
/// in a state without writes): LSNs, lags in entries, health.
fn still(s: &Value) -> Value {
    let instances: Vec<Value> = s["instances"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| json!([i["name"], i["healthy"], i["applied_lsn"], i["lag_entries"]]))
                .collect()
        })
        .unwrap_or_default();
    json!([
        s["ready"],
        s["executor"],
        s["write_ahead_log"]["last_lsn"],
        instances
    ])
}

/// Status now, asserting the stable figures are those of `before`.
fn assert_still(gw: &str, before: &Value) {
    let now = status_now(gw);
    assert_eq!(
        still(&now),
        still(before),
        "the state moved during a script run"
    );
}

#[test]
fn health_check_and_monitor_report_what_status_says_as_servers_go_down() {
    let _serial = serial();
    // A small log cap, so that its usage is a figure to check.
    let mut settings = PATIENT.to_vec();
    settings.extend([
        ("CHROMA_HA_WAL_SEGMENT_BYTES", "1MiB"),
        ("CHROMA_HA_WAL_MAX_BYTES", "2MiB"),
    ]);
    let mut c = Cluster::start(&settings);
    let gw = c.gw();
    let coll = create_collection(&gw, "ops-health");
    for i in 0..3 {
        add(&gw, &coll, &format!("up-{i}"));
    }
    wait_caught_up(&gw, LONG);

    // Every server up: 0, one line.
    let s = status_now(&gw);
    let run = health(&gw, &[]);
    run.assert_code(0);
    assert_health_lines(&run, &[], "OK", &gw, &s);
    assert_monitor(&monitor(&gw, 2), 2, &s);
    // The log-usage thresholds, with the small cap named in MiB.
    let pct = log_pct(&s);
    let run = health(&gw, &[("WARN_WAL_PCT", "0.001")]);
    run.assert_code(1);
    let warning = format!("WARNING: log uses {pct} of its 2.0 MiB cap (warning above 0.001%)");
    assert_health_lines(&run, &[&warning], "DEGRADED", &gw, &s);
    let run = health(&gw, &[("CRIT_WAL_PCT", "0.001")]);
    run.assert_code(2);
    let critical = format!(
        "CRITICAL: log uses {pct} of its 2.0 MiB cap (critical above 0.001%; writes get 507 at 100%)"
    );
    assert_health_lines(&run, &[&critical], "CRITICAL", &gw, &s);
    assert_still(&gw, &s);

    // The replica down with writes it misses: 1, naming it.
    c.replica.kill();
    wait_until("the replica counts as unhealthy", LONG, || {
        status(&gw).is_some_and(|s| instance(&s, "replica")["healthy"] == false)
    });
    let mut last = 0;
    for i in 0..3 {
        last = add(&gw, &coll, &format!("down-{i}"));
    }
    wait_until(
        "the primary applied every write and the replica's oldest miss is 1.5 s old",
        LONG,
        || {
            status(&gw).is_some_and(|s| {
                instance(&s, "primary")["applied_lsn"].as_u64() >= Some(last)
                    && instance(&s, "replica")["lag_seconds"].as_f64() > Some(1.5)
            })
        },
    );
    let s = status_now(&gw);
    let replica = instance(&s, "replica");
    let lag = replica["lag_entries"].as_u64().expect("lag_entries");
    assert!(lag >= 3, "the replica misses the 3 writes: {s}");
    let run = health(&gw, &[]);
    run.assert_code(1);
    assert_health_lines(
        &run,
        &["WARNING: server replica is unhealthy (state unhealthy)"],
        "DEGRADED",
        &gw,
        &s,
    );
    assert_monitor(&monitor(&gw, 1), 1, &s);

    // Its lag against the thresholds, in entries and in seconds.
    let below = (lag - 1).to_string();
    let run = health(&gw, &[("WARN_LAG_ENTRIES", &below)]);
    run.assert_code(1);
    let lags = format!("WARNING: server replica lags {lag} entries (warning above {below})");
    assert_health_lines(
        &run,
        &["WARNING: server replica is unhealthy", &lags],
        "DEGRADED",
        &gw,
        &s,
    );
    let run = health(&gw, &[("CRIT_LAG_ENTRIES", &below)]);
    run.assert_code(2);
    let lags = format!("CRITICAL: server replica lags {lag} entries (critical above {below})");
    assert_health_lines(
        &run,
        &[&lags, "WARNING: server replica is unhealthy"],
        "CRITICAL",
        &gw,
        &s,
    );
    let run = health(&gw, &[("CRIT_LAG_SECONDS", "1")]);
    run.assert_code(2);
    let line = run.line_starting("CRITICAL: server replica lags ");
    let secs: f64 = line
        .strip_prefix("CRITICAL: server replica lags ")
        .and_then(|r| r.strip_suffix(" s (critical above 1 s)"))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("lag seconds in {line:?}"));
    let at_least = replica["lag_seconds"].as_f64().expect("lag_seconds");
    assert!(
        secs + 0.05 >= at_least,
        "{secs} s < {at_least} s of /status"
    );
    assert_still(&gw, &s);

    // Every server down: 2, not ready.
    c.primary.kill();
    wait_until("no server is healthy", LONG, || {
        status(&gw).is_some_and(|s| s["healthy_instances"] == 0)
    });
    let s = status_now(&gw);
    let reason = s["not_ready_reason"]
        .as_str()
        .expect("a reason")
        .to_string();
    let run = health(&gw, &[]);
    run.assert_code(2);
    let not_ready = format!("CRITICAL: gateway is not ready: {reason}");
    assert_health_lines(
        &run,
        &[
            &not_ready,
            "CRITICAL: no server is healthy (0/2)",
            "WARNING: server primary is unhealthy",
            "WARNING: server replica is unhealthy",
        ],
        "CRITICAL",
        &gw,
        &s,
    );
    assert_monitor(&monitor(&gw, 1), 1, &s);
    assert_still(&gw, &s);

    // The gateway gone: 2, and the monitor goes on.
    c.gateway.kill();
    let run = health(&gw, &[]);
    run.assert_code(2);
    assert_eq!(run.lines().len(), 1, "{}", run.describe());
    run.line_starting(&format!("CRITICAL: gateway unreachable at {gw} ("));
    let run = monitor(&gw, 2);
    run.assert_code(0);
    assert_eq!(run.lines().len(), 4, "{}", run.describe());
    for line in &run.lines()[2..] {
        assert!(
            line.contains("  gateway unreachable: "),
            "{}",
            run.describe()
        );
    }
}

#[test]
fn the_scripts_refuse_bad_arguments_with_status_2() {
    let gw = "http://127.0.0.1:9";
    let run = run_script(
        "wal_health_check.sh",
        &["--url", gw],
        &[("WARN_LAG_ENTRIES", "many")],
        SCRIPT,
    );
    run.assert_code(2);
    assert!(
        run.stderr.contains("WARN_LAG_ENTRIES must be a number"),
        "{}",
        run.describe()
    );
    let run = run_script("wal_monitor.sh", &["--interval", "0"], &[], SCRIPT);
    run.assert_code(2);
    assert!(
        run.stderr.contains("--interval must be a positive number"),
        "{}",
        run.describe()
    );
    let run = run_script("wal_performance_test.sh", &["--writers", "0"], &[], SCRIPT);
    run.assert_code(2);
    assert!(
        run.stderr.contains("--writers must be a whole number >= 1"),
        "{}",
        run.describe()
    );
}

#[path = "ops_scripts/performance.rs"]
mod performance;

#[path = "ops_scripts/dev_up.rs"]
mod dev_up;
