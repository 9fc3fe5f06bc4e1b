//! The deployment files that can be checked here:
//!
//! - the Prometheus alert rules (`deploy/prometheus/alerts.yml`) pass
//!   `promtool check rules`, their unit tests on synthetic series
//!   (`alerts_test.yml`) pass `promtool test rules`, and every metric they
//!   name is one the gateway exports;
//! - the Grafana dashboard (`deploy/grafana/chroma-ha.json`, in
//!   [`dashboard`]) is importable JSON whose every panel has a query, whose
//!   queries parse as PromQL and name only metrics the gateway exports, and
//!   a live gateway's `/metrics` shows every one of them.
//!
//! `promtool` comes from Debian's `prometheus` package (`.ci/run` installs
//! it); without it these tests fail, they do not skip.

mod fault_kit;
mod support;

use std::path::PathBuf;
use std::process::Command;

fn prometheus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus")
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(prometheus_dir())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}): install Debian's `prometheus` package")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {}:\n{text}", args.join(" "));
    eprintln!("promtool {}:\n{text}", args.join(" "));
    text
}

#[test]
fn the_alert_rules_pass_promtool_check() {
    let text = promtool(&["check", "rules", "alerts.yml"]);
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn the_alert_rules_fire_as_their_unit_tests_say_on_synthetic_series() {
    let text = promtool(&["test", "rules", "alerts_test.yml"]);
    assert!(text.contains("SUCCESS"), "{text}");
}

/// The metrics source of the gateway (its own and the cluster's).
fn metrics_source() -> String {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    ["http/metrics.rs", "cluster/metrics.rs"]
        .iter()
        .map(|f| std::fs::read_to_string(src.join(f)).unwrap())
        .collect()
}

/// The `chroma_ha_*` metric names `text` mentions, without the prefix,
/// sorted and without repeats.
fn metric_names(text: &str) -> Vec<&str> {
    let mut names: Vec<&str> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter_map(|w| w.strip_prefix("chroma_ha_"))
        .filter(|w| !w.is_empty())
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// Panics unless every name (a histogram's `_bucket`, `_count` and `_sum`
/// series counted as the histogram) is a metric the gateway defines.
fn assert_exported(names: &[&str], file: &str) {
    let defined = metrics_source();
    for name in names {
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        assert!(
            defined.contains(&format!("\"{base}\"")),
            "{file} names chroma_ha_{name}, which the gateway does not export"
        );
    }
}

#[test]
fn every_metric_the_alert_rules_name_is_one_the_gateway_exports() {
    let rules = std::fs::read_to_string(prometheus_dir().join("alerts.yml")).unwrap();
    let names = metric_names(&rules);
    assert!(names.len() >= 10, "the rules name {names:?}");
    assert_exported(&names, "alerts.yml");
}

#[path = "deploy_files/dashboard.rs"]
mod dashboard;

#[path = "deploy_files/systemd.rs"]
mod systemd;

#[path = "deploy_files/containers.rs"]
mod containers;
