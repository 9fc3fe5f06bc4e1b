//! The status page in a real browser: Debian's headless Chromium, driven by
//! `tests/browser/status_page.mjs` (playwright-core), against a real
//! gateway in front of two real Chroma servers. What the page shows is
//! compared with `/status` read at the same time; then a server is killed
//! and the page, left open, must show it down and its lag growing.
//!
//! Needs `node`, `/usr/bin/chromium` (or `$CHROMIUM`) and
//! `npm ci --prefix tests/browser`; `.ci/run` installs all three. Missing
//! any of them fails the test, it is never skipped.
//!
//! With `CHROMA_HA_SCREENSHOT=PATH` the test also saves a screenshot of
//! the page with a server down (how docs/status-page.png is made).

mod fault_kit;
mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use fault_kit::workload::{Outcome, Workload, WorkloadSpec};
use fault_kit::{
    collections_url, instance, post_json, serial, status_now, wait_caught_up, Cluster, DATABASE,
};
use serde_json::{json, Value};
use support::workspace_root;

/// The browser script and its line protocol.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Browser {
    fn open(url: &str) -> Browser {
        let root = workspace_root();
        let dir = root.join("tests/browser");
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        assert!(
            PathBuf::from(&chromium).exists(),
            "{chromium} is missing: install Debian's chromium (apt-get install chromium), \
             as .ci/run does, or point CHROMIUM at one"
        );
        assert!(
            dir.join("node_modules/playwright-core").exists(),
            "tests/browser/node_modules is missing: run `npm ci --prefix tests/browser` \
             (.ci/run and scripts/test.sh do)"
        );
        let mut child = Command::new("node")
            .arg(dir.join("status_page.mjs"))
            .arg(url)
            .env("CHROMIUM", &chromium)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("node could not be started ({e}): install Node.js (apt-get install nodejs)")
            });
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        Browser {
            child,
            stdin,
            stdout,
        }
    }

    /// The next line the script prints, which must not be an error.
    fn read(&mut self) -> Value {
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .expect("read the browser script");
        assert!(
            n > 0,
            "the browser script ended early (its errors are above)"
        );
        let value: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the browser script printed {line:?}: {e}"));
        assert!(
            value.get("error").is_none(),
            "the browser script failed: {}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        value
    }

    fn ask(&mut self, command: &str) -> Value {
        writeln!(self.stdin, "{command}").expect("write to the browser script");
        self.stdin
            .flush()
            .expect("flush the browser script's stdin");
        self.read()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = writeln!(self.stdin, "quit");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn row<'a>(page: &'a Value, server: &str) -> &'a Value {
    page["rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["server"] == server))
        .unwrap_or_else(|| panic!("the page lists no row for {server}: {page}"))
}

fn chart_last(page: &Value, chart: &str, series: &str) -> f64 {
    page["charts"][chart]["series"][series]["last"]
        .as_f64()
        .unwrap_or_else(|| panic!("chart {chart} has no series {series}: {}", page["charts"]))
}

/// Adds `n` records to a fresh collection through the gateway.
fn add_records(gw: &str, name: &str, n: usize) {
    let created = post_json(&collections_url(gw, DATABASE), &json!({ "name": name }));
    assert_eq!(created.status, 200, "create {name}: {}", created.text());
    let id = created.json()["id"]
        .as_str()
        .expect("collection id")
        .to_string();
    for i in 0..n {
        let added = post_json(
            &format!("{}/{id}/add", collections_url(gw, DATABASE)),
            &json!({ "ids": [format!("r{i}")], "embeddings": [[i as f64, 1.0, 2.0]] }),
        );
        assert_eq!(added.status, 201, "add to {name}: {}", added.text());
    }
}

#[test]
fn the_status_page_charts_what_status_says_and_shows_a_killed_server_down_within_seconds() {
    let _serial = serial();
    let mut c = Cluster::start(&[]);
    let gw = c.gw();
    // A few seconds of traffic, so the rate charts have something to show.
    let w = Workload::start(&gw, WorkloadSpec::new("page"));
    w.wait_for_more_acks(40, Duration::from_secs(60));
    let result = w.stop();
    assert_eq!(
        result.count(Outcome::Failed) + result.count(Outcome::Unknown),
        0,
        "the workload saw failures: {}",
        result.describe()
    );
    wait_caught_up(&gw, Duration::from_secs(30));
    // Two samples after the last write: the charts' last points are at rest.
    std::thread::sleep(Duration::from_millis(2500));

    let mut browser = Browser::open(&gw);
    let loaded = browser.read();
    let page = &loaded["page"];
    let status = status_now(&gw);
    for server in ["primary", "replica"] {
        let shown = row(page, server);
        let actual = instance(&status, server);
        assert_eq!(shown["health"], "up", "{server}: {shown}");
        assert_eq!(shown["state"], actual["state"], "{server}");
        assert_eq!(shown["applied_lsn"], actual["applied_lsn"], "{server}");
        assert_eq!(shown["lag_entries"], 0, "{server}");
        assert_eq!(chart_last(page, "lag_entries", server), 0.0, "{server}");
        assert_eq!(chart_last(page, "lag_seconds", server), 0.0, "{server}");
    }
    for chart in ["lag_entries", "lag_seconds", "rates", "log_used"] {
        let samples = page["charts"][chart]["samples"].as_u64().unwrap_or(0);
        assert!(samples >= 3, "chart {chart} has {samples} samples: {page}");
    }
    let used = status["write_ahead_log"]["used_bytes"]
        .as_f64()
        .expect("used_bytes");
    assert_eq!(chart_last(page, "log_used", "used"), used, "log used");
    let rates = &page["charts"]["rates"]["series"];
    for series in ["writes", "reads", "replayed"] {
        assert!(
            rates[series]["points"].as_u64().unwrap_or(0) >= 3,
            "{series}: {rates}"
        );
    }
    println!(
        "PAGE loaded: {} refreshes, {} samples charted",
        page["refreshes"], page["charts"]["rates"]["samples"]
    );

    // The page stays open: it must notice by itself.
    let killed = Instant::now();
    c.replica.kill();
    let down = browser.ask("wait-down replica");
    let shown_after = killed.elapsed();
    println!(
        "PAGE shows the killed replica down {:.2} s after SIGKILL",
        shown_after.as_secs_f64()
    );
    assert!(
        shown_after < Duration::from_secs(10),
        "the page took {shown_after:?} to show the replica down"
    );
    assert_eq!(row(&down["page"], "primary")["health"], "up");

    // Writes go on through the primary; the replica's lag grows on the page.
    add_records(&gw, "page-while-down", 3);
    let behind = instance(&status_now(&gw), "replica")["lag_entries"]
        .as_u64()
        .expect("lag_entries");
    assert!(
        behind >= 4,
        "replica lag {behind} after a create and 3 adds"
    );
    let lag = browser.ask(&format!("wait-lag replica {behind}"));
    let page = &lag["page"];
    assert_eq!(chart_last(page, "lag_entries", "primary"), 0.0);
    assert!(chart_last(page, "lag_seconds", "replica") > 0.0, "{page}");
    let events = page["events"].as_array().expect("events");
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "server_down"
                && e["text"].as_str().unwrap_or("").contains("replica")),
        "no event says the replica went down: {events:?}"
    );
    if let Ok(path) = std::env::var("CHROMA_HA_SCREENSHOT") {
        browser.ask(&format!("screenshot {path}"));
        println!("PAGE screenshot saved to {path}");
    }
    let quit = browser.ask("quit");
    assert_eq!(
        quit["requests_elsewhere"],
        json!([]),
        "the page fetched from another origin"
    );
    assert_eq!(quit["console_errors"], json!([]), "the page logged errors");
}
