//! `chroma-ha status`: asks a running gateway for `GET /status` and prints a
//! readable summary (or the JSON itself with `--json`).
//!
//! Exit codes: 0 the gateway is ready, 1 it answered but is not ready, 2 it
//! cannot be reached or its answer cannot be understood.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use crate::tls::ClientTls;

/// Arguments of `chroma-ha status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Base URL of the gateway.
    #[arg(
        long,
        value_name = "URL",
        env = "CHROMA_HA_URL",
        default_value = "http://127.0.0.1:8000"
    )]
    pub url: String,
    /// Print the gateway's JSON as it is (pretty-printed) instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for the answer.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    pub timeout: f64,
    /// TLS for an https:// gateway URL.
    #[command(flatten)]
    pub tls: super::TlsArgs,
}

/// Runs `chroma-ha status`.
pub fn run(args: StatusArgs) -> ExitCode {
    let base = args.url.trim_end_matches('/').to_string();
    let url = format!("{base}/status");
    let timeout = if args.timeout.is_finite() && args.timeout > 0.0 {
        Duration::from_secs_f64(args.timeout.min(3600.0))
    } else {
        eprintln!("chroma-ha status: --timeout must be a positive number of seconds");
        return ExitCode::from(2);
    };
    let tls = match args.tls.client_tls() {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("chroma-ha status: {e}");
            return ExitCode::from(2);
        }
    };
    let status = match fetch_json(&url, timeout, &tls) {
        Ok(value) => value,
        Err(e) => {
            eprintln!("chroma-ha status: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(ready) = status.get("ready").and_then(Value::as_bool) else {
        eprintln!("chroma-ha status: {url} answered JSON without a boolean \"ready\" field");
        return ExitCode::from(2);
    };
    if args.json {
        match serde_json::to_string_pretty(&status) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("chroma-ha status: cannot print the answer: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        print!("{}", render(&base, &status));
    }
    if ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `GET url` and parse the body as JSON. Any status is accepted as long as
/// the body is JSON (a gateway that is not ready may say so with a 503).
fn fetch_json(url: &str, timeout: Duration, tls: &ClientTls) -> Result<Value, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let client = tls
            .apply(reqwest::Client::builder())
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let resp = client
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| format!("cannot reach the gateway: {}", describe_reqwest_error(&e)))?;
        let code = resp.status();
        let body = resp.bytes().await.map_err(|e| {
            format!(
                "cannot read the answer of GET {url}: {}",
                describe_reqwest_error(&e)
            )
        })?;
        serde_json::from_slice::<Value>(&body).map_err(|e| {
            let text = String::from_utf8_lossy(&body);
            let snippet: String = text.chars().take(200).collect();
            format!("GET {url} answered {code} with a body that is not JSON ({e}): {snippet}")
        })
    })
}

/// reqwest's Display hides the cause (e.g. "connection refused"); add it.
fn describe_reqwest_error(e: &reqwest::Error) -> String {
    let mut text = match crate::tls::explain_failure(e) {
        Some(tls) => format!("{tls}: {e}"),
        None => e.to_string(),
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let _ = write!(text, ": {s}");
        source = s.source();
    }
    text
}

/// Renders the `/status` JSON as a human-readable summary (several lines,
/// ending with a newline). Missing fields are shown as `-`, never an error.
pub fn render(base: &str, status: &Value) -> String {
    let mut out = String::new();
    let ready = status
        .get("ready")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let service = status
        .get("service")
        .and_then(Value::as_str)
        .unwrap_or("chroma-ha");
    let version = status.get("version").and_then(Value::as_str).unwrap_or("?");
    let executor = status
        .get("executor")
        .and_then(Value::as_str)
        .unwrap_or("none");
    let _ = writeln!(
        out,
        "{service} {version} at {base}: {}",
        if ready { "READY" } else { "NOT READY" }
    );
    let _ = writeln!(
        out,
        "servers: {}/{} healthy; executor of writes: {executor}",
        num(status.get("healthy_instances")),
        num(status.get("total_instances")),
    );
    let _ = writeln!(out);

    let instances = status
        .get("instances")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let header = [
        "SERVER",
        "ROLE",
        "HEALTHY",
        "STATE",
        "APPLIER",
        "APPLIED LSN",
        "LAG",
        "LAG (s)",
        "DEAD",
        "URL",
    ];
    let mut rows: Vec<[String; 10]> = vec![header.map(str::to_string)];
    let mut errors = Vec::new();
    for inst in instances {
        let name = text(inst.get("name"));
        rows.push([
            name.clone(),
            text(inst.get("role")),
            match inst.get("healthy").and_then(Value::as_bool) {
                Some(true) => "yes".into(),
                Some(false) => "NO".into(),
                None => "-".into(),
            },
            text(inst.get("state")),
            text(inst.get("applier")),
            num(inst.get("applied_lsn")),
            num(inst.get("lag_entries")),
            seconds(inst.get("lag_seconds")),
            num(inst.get("dead_letters")),
            text(inst.get("url")),
        ]);
        if let Some(err) = inst.get("last_error").and_then(Value::as_str) {
            if !err.is_empty() {
                errors.push(format!("{name}: last error: {err}"));
            }
        }
    }
    if instances.is_empty() {
        let _ = writeln!(out, "(no servers listed)");
    } else {
        out.push_str(&table(&rows));
        for e in errors {
            let _ = writeln!(out, "  {e}");
        }
    }
    let _ = writeln!(out);
    if let Some(cluster) = status.get("cluster").filter(|c| c.is_object()) {
        out.push_str(&render_cluster(cluster));
        let _ = writeln!(out);
    }

    match status.get("write_ahead_log") {
        Some(log) if log.is_object() => {
            let used = log.get("used_bytes").and_then(Value::as_u64);
            let max = log.get("max_bytes").and_then(Value::as_u64);
            let usage = match (used, max) {
                (Some(u), Some(m)) if m > 0 => format!(
                    "{} used of {} ({:.1}%)",
                    bytes(u),
                    bytes(m),
                    u as f64 * 100.0 / m as f64
                ),
                (Some(u), _) => format!("{} used", bytes(u)),
                _ => "- used".into(),
            };
            if log.get("kind").and_then(Value::as_str) == Some("postgres") {
                let _ = writeln!(
                    out,
                    "log (PostgreSQL): LSN {}..{}, {usage}",
                    num(log.get("first_lsn")),
                    num(log.get("last_lsn")),
                );
            } else {
                let _ = writeln!(
                    out,
                    "log: LSN {}..{}, {} segment(s), {usage}, fsync {}",
                    num(log.get("first_lsn")),
                    num(log.get("last_lsn")),
                    num(log.get("segments")),
                    text(log.get("fsync")),
                );
            }
            let oldest = log
                .get("oldest_pending")
                .and_then(Value::as_f64)
                .map(|t| format!(", oldest pending since {}", age(t)))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "     {} pending write(s){oldest}; replaying: {}; replayed {}, failed replays {}; dead letters: {}",
                num(log.get("pending_writes")),
                match log.get("is_replaying").and_then(Value::as_bool) {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "-",
                },
                num(log.get("total_replayed")),
                num(log.get("failed_replays")),
                num(log.get("dead_letters")),
            );
        }
        _ => {
            let _ = writeln!(out, "log: (not reported)");
        }
    }
    if let Some(message) = status.get("dead_letters_message").and_then(Value::as_str) {
        let _ = writeln!(out, "DEAD LETTERS FULL: {message}");
    }
    if !ready {
        let reason = ["not_ready_reason", "reason"]
            .iter()
            .find_map(|k| status.get(*k).and_then(Value::as_str));
        if let Some(reason) = reason {
            let _ = writeln!(out, "not ready: {reason}");
        }
    }
    out
}

/// Rows as columns padded to their widest cell (the last one unpadded).
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths.iter()).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ");
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

/// The `cluster` part: this gateway, the leader and its lease, and every
/// gateway sharing the log.
fn render_cluster(cluster: &Value) -> String {
    let mut out = String::new();
    let leader = cluster.get("leader").filter(|l| l.is_object());
    let _ = writeln!(
        out,
        "this gateway: {} ({}) is {}",
        text(cluster.get("name")),
        text(cluster.get("address")),
        text(cluster.get("role")),
    );
    match leader {
        Some(l) => {
            let _ = writeln!(
                out,
                "leader: {} at {}, epoch {}; term began {}s ago; renewed {}s ago; lease runs {}s more",
                text(l.get("name")),
                text(l.get("address")),
                num(l.get("epoch")),
                seconds(l.get("term_age_seconds")),
                seconds(l.get("last_renewal_seconds_ago")),
                seconds(l.get("lease_expires_in_seconds")),
            );
        }
        None => {
            let _ = writeln!(out, "leader: none known");
        }
    }
    if let Some(e) = cluster.get("postgres_error").and_then(Value::as_str) {
        let _ = writeln!(out, "PostgreSQL: {e}");
    }
    let gateways = cluster
        .get("gateways")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut rows = vec![[
        "GATEWAY",
        "ROLE",
        "EPOCH",
        "SEEN (s ago)",
        "UP (s)",
        "ADDRESS",
    ]
    .map(str::to_string)];
    for g in gateways {
        let alive = g.get("alive").and_then(Value::as_bool) == Some(true);
        rows.push([
            text(g.get("name")),
            if alive {
                text(g.get("role"))
            } else {
                format!("GONE (was {})", text(g.get("role")))
            },
            num(g.get("epoch")),
            seconds(g.get("seen_seconds_ago")),
            seconds(g.get("started_seconds_ago")),
            text(g.get("address")),
        ]);
    }
    out.push_str(&table(&rows));
    out
}

/// A JSON string, or `-`.
fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    }
}

/// A JSON number (as written), or `-`.
fn num(v: Option<&Value>) -> String {
    match v {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => "-".into(),
    }
}

/// Seconds with one decimal, or `-`.
fn seconds(v: Option<&Value>) -> String {
    v.and_then(Value::as_f64)
        .map_or_else(|| "-".into(), |s| format!("{s:.1}"))
}

/// Bytes in binary units.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// How long ago a unix timestamp (seconds) was, e.g. `12.3s ago`.
fn age(unix_seconds: f64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let ago = (now - unix_seconds).max(0.0);
    format!("{ago:.1}s ago")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({
            "service": "chroma-ha", "version": "0.1.0", "ready": true,
            "executor": "primary", "healthy_instances": 1, "total_instances": 2,
            "write_ahead_log": {
                "pending_writes": 3, "is_replaying": true, "oldest_pending": null,
                "total_replayed": 10, "failed_replays": 0, "first_lsn": 1,
                "last_lsn": 42, "used_bytes": 2048, "max_bytes": 10737418240u64,
                "segments": 1, "fsync": "always", "dead_letters": 1
            },
            "instances": [
                {"name": "primary", "url": "http://127.0.0.1:8001", "role": "primary",
                 "healthy": true, "state": "healthy", "applied_lsn": 42,
                 "lag_entries": 0, "lag_seconds": 0.0, "applier": "running",
                 "dead_letters": 0, "last_error": null},
                {"name": "replica", "url": "http://127.0.0.1:8002", "role": "replica",
                 "healthy": false, "state": "unhealthy", "applied_lsn": 39,
                 "lag_entries": 3, "lag_seconds": 2.25, "applier": "waiting_for_server",
                 "dead_letters": 1, "last_error": "connection refused"}
            ]
        })
    }

    #[test]
    fn summary_shows_servers_lag_and_log() {
        let text = render("http://gw", &sample());
        assert!(
            text.starts_with("chroma-ha 0.1.0 at http://gw: READY"),
            "{text}"
        );
        assert!(
            text.contains("1/2 healthy; executor of writes: primary"),
            "{text}"
        );
        let replica = text
            .lines()
            .find(|l| l.starts_with("replica"))
            .expect("replica row");
        for part in ["NO", "unhealthy", "39", "3", "2.2", "waiting_for_server"] {
            assert!(replica.contains(part), "{part} missing in {replica:?}");
        }
        assert!(
            text.contains("replica: last error: connection refused"),
            "{text}"
        );
        assert!(
            text.contains("log: LSN 1..42, 1 segment(s), 2.0 KiB used of 10.0 GiB"),
            "{text}"
        );
        assert!(text.contains("dead letters: 1"), "{text}");
        assert!(!text.contains("DEAD LETTERS FULL"), "{text}");
    }

    #[test]
    fn a_log_in_postgresql_is_named_and_shown_without_segments_or_fsync() {
        let mut status = sample();
        status["write_ahead_log"]["kind"] = json!("postgres");
        status["write_ahead_log"]["segments"] = json!(0);
        status["write_ahead_log"]["fsync"] = json!("postgres");
        let text = render("http://gw", &status);
        assert!(
            text.contains("log (PostgreSQL): LSN 1..42, 2.0 KiB used of 10.0 GiB"),
            "{text}"
        );
        assert!(!text.contains("segment(s)"), "{text}");
    }

    #[test]
    fn gateways_sharing_the_log_are_listed_with_the_leader_and_its_lease() {
        let mut status = sample();
        status["cluster"] = json!({
            "name": "gw-b", "address": "http://b:8000", "role": "follower",
            "lease_time_seconds": 5.0,
            "leader": {"name": "gw-a", "address": "http://a:8000", "epoch": 7,
                       "lease_expires_in_seconds": 4.2, "last_renewal_seconds_ago": 0.8,
                       "term_age_seconds": 31.0},
            "gateways": [
                {"name": "gw-a", "address": "http://a:8000", "role": "leader", "epoch": 7,
                 "seen_seconds_ago": 0.5, "started_seconds_ago": 60.0, "alive": true},
                {"name": "gw-c", "address": "http://c:8000", "role": "follower", "epoch": 6,
                 "seen_seconds_ago": 40.0, "started_seconds_ago": 90.0, "alive": false}
            ]
        });
        let text = render("http://gw", &status);
        assert!(
            text.contains("this gateway: gw-b (http://b:8000) is follower"),
            "{text}"
        );
        assert!(
            text.contains("leader: gw-a at http://a:8000, epoch 7; term began 31.0s ago; renewed 0.8s ago; lease runs 4.2s more"),
            "{text}"
        );
        let a = text
            .lines()
            .find(|l| l.starts_with("gw-a"))
            .expect("gw-a row");
        assert!(a.contains("leader") && a.contains("http://a:8000"), "{a}");
        let c = text
            .lines()
            .find(|l| l.starts_with("gw-c"))
            .expect("gw-c row");
        assert!(c.contains("GONE (was follower)"), "{c}");
    }

    #[test]
    fn a_full_dead_letter_list_is_shown_with_its_message() {
        let mut status = sample();
        status["dead_letters_full"] = json!(true);
        status["dead_letters_message"] = json!("the dead-letter list is full (1 of 1 letters)");
        let text = render("http://gw", &status);
        assert!(
            text.contains("DEAD LETTERS FULL: the dead-letter list is full (1 of 1 letters)"),
            "{text}"
        );
    }

    #[test]
    fn missing_fields_are_dashes_not_errors() {
        let text = render(
            "http://gw",
            &json!({"ready": false, "not_ready_reason": "no server"}),
        );
        assert!(text.contains("NOT READY"), "{text}");
        assert!(
            text.contains("servers: -/- healthy; executor of writes: none"),
            "{text}"
        );
        assert!(text.contains("(no servers listed)"), "{text}");
        assert!(text.contains("log: (not reported)"), "{text}");
        assert!(text.contains("not ready: no server"), "{text}");
    }

    #[test]
    fn byte_sizes_use_binary_units() {
        assert_eq!(bytes(16), "16 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(10 * 1024 * 1024 * 1024), "10.0 GiB");
    }
}
