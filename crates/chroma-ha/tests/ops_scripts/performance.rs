//! `wal_performance_test.sh` briefly against a live gateway: the figures it
//! promises are printed, agree with each other, its JSON summary and the
//! gateway's count of writes, and the records it wrote are on both servers.

use std::time::Duration;

use serde_json::Value;

use crate::fault_kit::{
    collections_url, request_json, serial, status_now, wait_caught_up, Cluster, DATABASE,
};
use crate::ops_kit::{run_script, Run};
use crate::support::http_get;
use crate::{LONG, PATIENT};

/// Records per add request of the run.
const BATCH: u64 = 5;
/// Seconds of load.
const SECONDS: f64 = 4.0;
/// The script's own bound on the catch-up wait.
const CATCHUP: f64 = 120.0;

/// The OpenAPI template of an add, as the gateway labels its requests.
const ADD_ROUTE: &str =
    "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection_id}/add";

fn number(summary: &Value, key: &str, run: &Run) -> f64 {
    summary[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no number {key} in the summary:\n{}", run.describe()))
}

/// The four figures of a `  latency: p50 X ms  p95 Y ms  p99 Z ms  max M ms`
/// line, after checking its shape.
fn latencies(line: &str, run: &Run) -> [f64; 4] {
    let words: Vec<&str> = line.split_whitespace().collect();
    let shape = [
        "latency:", "p50", "", "ms", "p95", "", "ms", "p99", "", "ms", "max", "", "ms",
    ];
    assert_eq!(
        words.len(),
        shape.len(),
        "latency line {line:?}:\n{}",
        run.describe()
    );
    for (w, s) in words.iter().zip(shape) {
        assert!(
            s.is_empty() || *w == s,
            "latency line {line:?}:\n{}",
            run.describe()
        );
    }
    let at = |i: usize| -> f64 {
        words[i]
            .parse()
            .unwrap_or_else(|_| panic!("latency line {line:?}:\n{}", run.describe()))
    };
    [at(2), at(5), at(8), at(11)]
}

/// Latencies in increasing order, above zero and below two minutes, and
/// the JSON figures agree with the printed ones.
fn assert_latencies(printed: [f64; 4], summary: &Value, kind: &str, run: &Run) {
    assert!(
        printed[0] > 0.0 && printed.windows(2).all(|w| w[0] <= w[1]) && printed[3] < 120_000.0,
        "{kind} latencies {printed:?} not p50 <= p95 <= p99 <= max in (0, 120 s):\n{}",
        run.describe()
    );
    for (i, key) in ["p50", "p95", "p99", "max"].iter().enumerate() {
        let json = number(summary, &format!("{kind}_{key}_ms"), run);
        assert!(
            (json - printed[i]).abs() <= 0.051,
            "{kind} {key}: printed {} ms, JSON {json} ms",
            printed[i]
        );
    }
}

/// Requests the gateway counted for `route` answered with `status`.
fn counted(gw: &str, route: &str, status: &str) -> u64 {
    let metrics = http_get(&format!("{gw}/metrics"), Duration::from_secs(30))
        .expect("GET /metrics")
        .text();
    metrics
        .lines()
        .filter(|l| l.starts_with("chroma_ha_requests_total{"))
        .filter(|l| l.contains(&format!("route=\"{route}\"")))
        .filter(|l| l.contains(&format!("status=\"{status}\"")))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .map(|v| v as u64)
        .sum()
}

/// Records in the collection named `name` on one server, asked directly.
fn count_on(server: &str, name: &str) -> u64 {
    let base = collections_url(server, DATABASE);
    let r = request_json("GET", &format!("{base}/{name}"), None);
    assert_eq!(r.status, 200, "{name} on {server}: {}", r.text());
    let id = r.json()["id"].as_str().expect("collection id").to_string();
    let r = request_json("GET", &format!("{base}/{id}/count"), None);
    assert_eq!(r.status, 200, "count of {name} on {server}: {}", r.text());
    r.json().as_u64().expect("a count")
}

#[test]
fn the_performance_test_prints_plausible_figures_and_its_writes_reach_both_servers() {
    let _serial = serial();
    let c = Cluster::start(PATIENT);
    let gw = c.gw();
    let (batch, seconds, catchup) = (BATCH.to_string(), SECONDS.to_string(), CATCHUP.to_string());
    let run = run_script(
        "wal_performance_test.sh",
        &[
            "--url",
            &gw,
            "--writers",
            "2",
            "--readers",
            "1",
            "--seconds",
            &seconds,
            "--batch",
            &batch,
            "--dim",
            "8",
            "--catchup-timeout",
            &catchup,
            "--json",
            "--keep",
        ],
        &[],
        Duration::from_secs(SECONDS as u64 + CATCHUP as u64 + 300),
    );
    run.assert_code(0);
    let last = run.lines().last().copied().unwrap_or_default();
    let summary: Value = serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "last line is not the JSON summary ({e}):\n{}",
            run.describe()
        )
    });
    let name = summary["collection"]
        .as_str()
        .expect("collection")
        .to_string();

    // Counts and rates agree with each other.
    let writes = summary["write_requests"].as_u64().expect("write_requests");
    let records = summary["write_records"].as_u64().expect("write_records");
    let reads = summary["read_requests"].as_u64().expect("read_requests");
    let elapsed = number(&summary, "elapsed_s", &run);
    assert!(
        writes > 0 && reads > 0,
        "no writes or no reads:\n{}",
        run.describe()
    );
    assert_eq!(records, writes * BATCH, "records = requests x batch");
    assert_eq!(summary["write_errors"], 0, "{}", run.describe());
    assert_eq!(summary["read_errors"], 0, "{}", run.describe());
    assert!(
        (SECONDS..SECONDS + 120.0).contains(&elapsed),
        "elapsed {elapsed} s for {SECONDS} s of load"
    );
    let (wps, rps, recps) = (
        number(&summary, "writes_per_s", &run),
        number(&summary, "reads_per_s", &run),
        number(&summary, "records_per_s", &run),
    );
    assert!(
        (wps - writes as f64 / elapsed).abs() < 1e-6,
        "writes/s {wps}"
    );
    assert!((rps - reads as f64 / elapsed).abs() < 1e-6, "reads/s {rps}");
    assert!(
        (recps - wps * BATCH as f64).abs() < 1e-6,
        "records/s {recps}"
    );

    // The printed lines say the same.
    assert_eq!(
        run.line_starting("writes: "),
        format!(
            "writes: {writes} requests ({records} records) in {elapsed:.1} s = {wps:.1} req/s \
             ({recps:.0} records/s); errors 0"
        ),
        "{}",
        run.describe()
    );
    assert_eq!(
        run.line_starting("reads: "),
        format!("reads:  {reads} requests in {elapsed:.1} s = {rps:.1} req/s; errors 0"),
        "{}",
        run.describe()
    );
    let latency_lines: Vec<&str> = run
        .lines()
        .into_iter()
        .filter(|l| l.trim_start().starts_with("latency:"))
        .collect();
    assert_eq!(latency_lines.len(), 2, "{}", run.describe());
    assert_latencies(latencies(latency_lines[0], &run), &summary, "write", &run);
    assert_latencies(latencies(latency_lines[1], &run), &summary, "read", &run);
    let max_lag = summary["max_lag_entries"]
        .as_object()
        .expect("max_lag_entries");
    let lag_text: Vec<String> = ["primary", "replica"]
        .iter()
        .map(|s| {
            format!(
                "{s} {}",
                max_lag.get(*s).and_then(Value::as_u64).expect("a lag")
            )
        })
        .collect();
    assert_eq!(
        run.line_starting("largest lag seen"),
        format!("largest lag seen (entries): {}", lag_text.join(", ")),
        "{}",
        run.describe()
    );
    let target = summary["catchup_lsn"].as_u64().expect("catchup_lsn");
    let took = number(&summary, "catchup_s", &run);
    assert!((0.0..=CATCHUP).contains(&took), "catch-up took {took} s");
    assert_eq!(
        run.line_starting("catch-up: "),
        format!("catch-up: every server applied the log up to LSN {target} {took:.2} s after the last write"),
        "{}",
        run.describe()
    );
    run.line_starting(&format!("cleanup: collection {name} kept (--keep)"));

    // The gateway agrees: the log holds the target, both servers applied
    // it, and it answered as many adds as the script counted.
    let s = status_now(&gw);
    assert!(
        s["write_ahead_log"]["last_lsn"].as_u64() >= Some(target),
        "{s}"
    );
    for i in s["instances"].as_array().expect("instances") {
        assert!(i["applied_lsn"].as_u64() >= Some(target), "{s}");
    }
    assert_eq!(
        counted(&gw, ADD_ROUTE, "201"),
        writes,
        "adds the gateway answered 201"
    );

    // Every record written is on both servers.
    wait_caught_up(&gw, LONG);
    for server in c.server_urls() {
        assert_eq!(
            count_on(&server, &name),
            records,
            "records of {name} on {server}"
        );
    }
}
