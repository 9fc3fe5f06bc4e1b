//! Shared pieces of the fault tests (`tests/faults.rs`): a cluster of two
//! real Chroma servers behind a real `chroma-ha` gateway, a background
//! workload that records every write's outcome ([`workload`]), the
//! per-server zero-loss check ([`verify`]) and small blocking helpers.
#![allow(dead_code)]

pub mod checks;
pub mod trio;
pub mod verify;
pub mod workload;

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{
    chroma_ha_bin, http_get, http_request, ChromaServer, GatewayProcess, HttpResponse,
};

/// Chroma's default tenant.
pub const TENANT: &str = "default_tenant";
/// Chroma's default database.
pub const DATABASE: &str = "default_database";
/// Timeout of the blocking helper requests.
pub const T: Duration = Duration::from_secs(15);

/// The fault tests kill processes and measure latencies: they run one at a
/// time (on a 2-core machine two of them at once would measure each other).
static SERIAL: Mutex<()> = Mutex::new(());

/// Takes the lock that runs the fault tests one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Gateway settings of the fault tests: fast health checks, short timeouts.
pub const BASE_ENV: &[(&str, &str)] = &[
    ("CHROMA_HA_LOG_LEVEL", "info"),
    ("CHROMA_HA_CHECK_INTERVAL", "0.2"),
    ("CHROMA_HA_FAILURE_THRESHOLD", "2"),
    ("CHROMA_HA_RISE_THRESHOLD", "2"),
    ("CHROMA_HA_PROBE_TIMEOUT", "0.5"),
    ("CHROMA_HA_REQUEST_TIMEOUT", "3"),
    ("CHROMA_HA_CONNECT_TIMEOUT", "1"),
    ("CHROMA_HA_RETRY_BASE", "0.05"),
    ("CHROMA_HA_RETRY_CAP", "0.5"),
];

/// The gateway's environment: [`BASE_ENV`] with `overrides` on top.
pub fn gateway_env(overrides: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![("RUST_LOG".into(), "info".into())];
    for (k, v) in BASE_ENV.iter().chain(overrides) {
        env.retain(|(name, _)| name != k);
        env.push((k.to_string(), v.to_string()));
    }
    env
}

/// Starts a gateway in front of `primary` and `replica` with
/// [`gateway_env`]`(overrides)` and nothing else of chroma-ha's settings
/// from the test's environment ([`GatewayProcess::start_clean`]); its log
/// and data survive restarts.
pub fn start_gateway(primary: &str, replica: &str, overrides: &[(&str, &str)]) -> GatewayProcess {
    let args: Vec<String> = [
        "serve",
        "--listen",
        "{listen}",
        "--primary",
        primary,
        "--replica",
        replica,
        "--data-dir",
        "{dir}/data",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    GatewayProcess::start_clean(&chroma_ha_bin(), &args, &gateway_env(overrides))
}

/// Two real Chroma servers (primary, replica) behind a real gateway.
pub struct Cluster {
    /// The primary (priority 0).
    pub primary: ChromaServer,
    /// The replica.
    pub replica: ChromaServer,
    /// The gateway.
    pub gateway: GatewayProcess,
}

impl Cluster {
    /// Starts both servers (in parallel) and the gateway.
    pub fn start(overrides: &[(&str, &str)]) -> Cluster {
        let mut servers = ChromaServer::start_many(2);
        let replica = servers.pop().expect("two servers");
        let primary = servers.pop().expect("two servers");
        let gateway = start_gateway(&primary.url(), &replica.url(), overrides);
        let cluster = Cluster {
            primary,
            replica,
            gateway,
        };
        cluster.wait_ready(Duration::from_secs(20));
        cluster
    }

    /// The gateway's base URL.
    pub fn gw(&self) -> String {
        self.gateway.url()
    }

    /// Both servers' URLs, primary first.
    pub fn server_urls(&self) -> Vec<String> {
        vec![self.primary.url(), self.replica.url()]
    }

    /// Waits until `/ready` answers 200 and both servers are healthy.
    pub fn wait_ready(&self, timeout: Duration) {
        let gw = self.gw();
        wait_until("gateway ready with both servers healthy", timeout, || {
            status(&gw)
                .map(|s| s["ready"] == Value::Bool(true) && s["healthy_instances"] == 2)
                .unwrap_or(false)
        });
    }
}

/// What the shared checks need of a test's deployment.
pub trait Deployment {
    /// The base URL of a gateway that answers `/status` for the servers.
    fn gw(&self) -> String;
    /// Every server's URL, primary first.
    fn server_urls(&self) -> Vec<String>;
    /// Lines of the gateways' logs holding one of `needles`, at most `max`.
    fn gateway_log(&self, needles: &[&str], max: usize) -> Vec<String>;
}

impl Deployment for Cluster {
    fn gw(&self) -> String {
        Cluster::gw(self)
    }

    fn server_urls(&self) -> Vec<String> {
        Cluster::server_urls(self)
    }

    fn gateway_log(&self, needles: &[&str], max: usize) -> Vec<String> {
        log_lines(&self.gateway, needles, max)
    }
}

/// `{base}/api/v2/tenants/default_tenant/databases/{db}/collections`.
pub fn collections_url(base: &str, database: &str) -> String {
    format!("{base}/api/v2/tenants/{TENANT}/databases/{database}/collections")
}

/// `{base}/api/v2/tenants/default_tenant/databases`.
pub fn databases_url(base: &str) -> String {
    format!("{base}/api/v2/tenants/{TENANT}/databases")
}

/// A blocking request with a JSON body; panics only if the connection fails.
pub fn request_json(method: &str, url: &str, body: Option<&Value>) -> HttpResponse {
    let text = body.map(Value::to_string);
    http_request(method, url, text.as_deref(), T).unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// `POST url` with a JSON body.
pub fn post_json(url: &str, body: &Value) -> HttpResponse {
    request_json("POST", url, Some(body))
}

/// A request with `Authorization: Bearer <token>` (or no Authorization
/// header when `token` is `None`).
pub fn admin_request(method: &str, url: &str, token: Option<&str>) -> HttpResponse {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (hostport, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    raw_request(hostport, &req)
}

/// Sends raw request bytes and parses the answer.
fn raw_request(hostport: &str, req: &str) -> HttpResponse {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(hostport.replace("localhost", "127.0.0.1"))
        .unwrap_or_else(|e| panic!("connect {hostport}: {e}"));
    s.set_read_timeout(Some(T)).expect("read timeout");
    s.write_all(req.as_bytes()).expect("send request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    parse_plain_response(&raw)
}

fn parse_plain_response(raw: &[u8]) -> HttpResponse {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let mut body = raw[end + 4..].to_vec();
    if chunked {
        let mut out = Vec::new();
        let mut b = &body[..];
        while let Some(nl) = b.windows(2).position(|w| w == b"\r\n") {
            let size =
                usize::from_str_radix(String::from_utf8_lossy(&b[..nl]).trim(), 16).unwrap_or(0);
            b = &b[nl + 2..];
            if size == 0 || b.len() < size {
                break;
            }
            out.extend_from_slice(&b[..size]);
            b = &b[(size + 2).min(b.len())..];
        }
        body = out;
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

/// The gateway's `/status` document, if it answers.
pub fn status(gw: &str) -> Option<Value> {
    let r = http_get(&format!("{gw}/status"), Duration::from_secs(5)).ok()?;
    (r.status == 200).then(|| serde_json::from_slice(&r.body).ok())?
}

/// The gateway's `/status`, panicking if it does not answer.
pub fn status_now(gw: &str) -> Value {
    status(gw).unwrap_or_else(|| panic!("{gw}/status does not answer"))
}

/// The status entry of the server named `name`.
pub fn instance<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["instances"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["name"] == name))
        .unwrap_or_else(|| panic!("no instance {name} in status {status}"))
}

/// Polls `f` every 50 ms until it is true; panics after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if f() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until every server is healthy, its applier running, its
/// `lag_entries` 0, and nothing is undecided; panics with the last status
/// after `timeout`. Returns how long it took.
pub fn wait_caught_up(gw: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    let mut last = Value::Null;
    loop {
        if let Some(s) = status(gw) {
            let done = s["instances"].as_array().is_some_and(|a| {
                a.iter().all(|i| {
                    i["healthy"] == Value::Bool(true)
                        && i["lag_entries"] == 0
                        && i["applier"] == "running"
                })
            }) && s["write_ahead_log"]["undecided"] == 0;
            if done {
                return start.elapsed();
            }
            last = s;
        }
        assert!(
            start.elapsed() < timeout,
            "servers did not catch up within {timeout:?}; last status:\n{}",
            serde_json::to_string_pretty(&last).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until every server has applied the log up to `lsn` (usable while
/// a workload runs, unlike [`wait_caught_up`]).
pub fn wait_applied(gw: &str, lsn: u64, timeout: Duration) {
    let mut last = Value::Null;
    let start = Instant::now();
    loop {
        if let Some(s) = status(gw) {
            let done = s["instances"].as_array().is_some_and(|a| {
                a.iter()
                    .all(|i| i["applied_lsn"].as_u64().is_some_and(|x| x >= lsn))
            });
            if done {
                return;
            }
            last = s;
        }
        assert!(
            start.elapsed() < timeout,
            "servers did not apply LSN {lsn} within {timeout:?}; last status:\n{}",
            serde_json::to_string_pretty(&last).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `x-chroma-ha-lsn` of a write's answer.
pub fn lsn_of(r: &HttpResponse) -> u64 {
    r.header("x-chroma-ha-lsn")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no x-chroma-ha-lsn in the answer {} {}", r.status, r.text()))
}

/// Lines of the gateway log that contain any of `needles`, for reports.
pub fn log_lines(gw: &GatewayProcess, needles: &[&str], max: usize) -> Vec<String> {
    gw.log()
        .lines()
        .filter(|l| needles.iter().any(|n| l.contains(n)))
        .take(max)
        .map(String::from)
        .collect()
}

/// The one-line per-test summary that goes into the closing note.
pub fn summary_line(
    test: &str,
    result: &workload::WorkloadResult,
    check: &verify::Verification,
    failover: Option<Duration>,
    extra: &str,
) {
    eprintln!(
        "FAULT-SUMMARY test={test} attempted_writes={} acknowledged_writes={} failed_writes={} unknown_writes={} \
         unknown_applied={} unknown_not_applied={} unknown_unresolved={} \
         writes_lost={} failed_writes_present={} servers_identical={} failover_window={} reads_ok={}/{} {extra}",
        result.writes.len(),
        result.count(workload::Outcome::Acked),
        result.count(workload::Outcome::Failed),
        result.count(workload::Outcome::Unknown),
        check.unknown_applied(),
        check.unknown_not_applied(),
        check.unresolved().len(),
        check.lost(),
        check.phantoms(),
        if check.identical { "yes" } else { "no" },
        failover.map_or_else(|| "n/a".to_string(), |d| format!("{:.3}s", d.as_secs_f64())),
        result.reads.iter().filter(|r| r.ok()).count(),
        result.reads.len(),
    );
}
