//! Test harness for integration and failure tests with REAL Chroma servers.
//!
//! Use it from a test crate with `mod support;`. It offers:
//!
//! - [`ChromaServer`]: a Chroma 1.5.9 server in its own temp dir on a free
//!   loopback port (`allow_reset: true`), with `kill()` (SIGKILL by PID),
//!   `restart()` on the same port and data, `pause()`/`resume()`
//!   (SIGSTOP/SIGCONT) to simulate a hung server.
//! - [`GatewayProcess`]: any HTTP service binary (normally the `chroma-ha`
//!   gateway) started on a free port and awaited on `GET /health`.
//! - [`python`], [`python_script`], [`run_python`]: the venv's Python and
//!   the scripts of `<workspace>/tests/python/`.
//! - [`node`], [`require_js_client`], [`run_node`]: Node.js and the JS client workloads of
//!   `<workspace>/tests/js/` (a missing Node.js or `node_modules` fails).
//! - [`http_get`] / [`http_request`]: a tiny blocking HTTP/1.1 client for
//!   probes and simple assertions, usable with or without a Tokio runtime.
//!
//! Everything is blocking (std only) so it works from `#[test]` and from
//! `#[tokio::test]` alike (starting a server blocks the calling thread for
//! about a second). Processes are only ever signalled by their own PID, and
//! everything listens on 127.0.0.1. Drop kills the process and removes its
//! temp dir, unless `CHROMA_HA_KEEP_TEST_DIRS=1` is set (then the dir is kept
//! and its path printed). When a test panics, Drop prints the tail of the
//! process log to stderr to help diagnose the failure.
//!
//! Environment overrides: `CHROMA_BIN` (chroma executable), `CHROMA_HA_PYTHON`
//! (python interpreter), `CHROMA_HA_NODE` (node executable).
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long [`ChromaServer::start`] waits for the heartbeat.
pub const CHROMA_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long [`GatewayProcess::start`] waits for `/health`.
pub const GATEWAY_START_TIMEOUT: Duration = Duration::from_secs(30);
/// How many log lines are shown when something fails.
const LOG_TAIL_LINES: usize = 60;

// ---------------------------------------------------------------------------
// Paths and small helpers
// ---------------------------------------------------------------------------

/// The workspace root (the directory holding the top `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or(manifest)
}

/// The `chroma` executable: `$CHROMA_BIN` or `<workspace>/.venv/bin/chroma`.
pub fn chroma_bin() -> PathBuf {
    std::env::var_os("CHROMA_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/chroma"))
}

/// The Python interpreter with `chromadb` installed: `$CHROMA_HA_PYTHON` or
/// `<workspace>/.venv/bin/python`.
pub fn python() -> PathBuf {
    std::env::var_os("CHROMA_HA_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"))
}

/// Path of a script in `<workspace>/tests/python/`.
pub fn python_script(name: &str) -> PathBuf {
    workspace_root().join("tests/python").join(name)
}

/// The venv's Python with telemetry off, output unbuffered, no bytecode
/// files written and stdin closed.
pub fn python_command() -> Command {
    let mut cmd = Command::new(python());
    cmd.env("ANONYMIZED_TELEMETRY", "False")
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null());
    cmd
}

/// Runs `python script args...` to completion and returns its output
/// (see [`python_command`]). Panics only if Python cannot be started.
pub fn run_python(script: &Path, args: &[&str]) -> Output {
    python_command()
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} {}: {e}",
                python().display(),
                script.display()
            )
        })
}

/// Panics with stdout and stderr unless the Python run exited with 0.
pub fn assert_python_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `tests/js/`, where the JS client workloads and their pinned npm
/// dependencies live.
pub fn js_dir() -> PathBuf {
    workspace_root().join("tests/js")
}

/// The Node.js executable: `$CHROMA_HA_NODE` or `node` on `PATH`.
pub fn node() -> PathBuf {
    std::env::var_os("CHROMA_HA_NODE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("node"))
}

/// Panics — never skips — unless Node.js runs and `tests/js/node_modules`
/// holds the `chromadb` version `tests/js/package.json` pins; the message
/// says how to install them. Call it before starting servers to fail at
/// once.
pub fn require_js_client() {
    let dir = js_dir();
    let install = format!(
        "install Node.js >= 20 (Debian: apt-get install nodejs npm) and run `npm ci --prefix {}` \
         (.ci/run and scripts/test.sh do both)",
        dir.display()
    );
    let version = Command::new(node())
        .arg("--version")
        .stdin(Stdio::null())
        .output();
    match version {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`{} --version` failed ({}): {}; {install}",
            node().display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("cannot run `{}` ({e}); {install}", node().display()),
    }
    let client = dir.join("node_modules/chromadb/package.json");
    assert!(
        client.is_file(),
        "{} is missing: the JS client is not installed; {install}",
        client.display()
    );
    let version_in = |path: &Path, pointer: &str| -> String {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let v: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        v.pointer(pointer)
            .and_then(|x| x.as_str())
            .unwrap_or_else(|| panic!("{} has no {pointer}", path.display()))
            .to_string()
    };
    let pinned = version_in(&dir.join("package.json"), "/dependencies/chromadb");
    let installed = version_in(&client, "/version");
    assert_eq!(
        installed, pinned,
        "tests/js/node_modules holds chromadb {installed}, tests/js/package.json pins {pinned}; {install}"
    );
}

/// Runs `node tests/js/<script> args...` to completion (stdin closed,
/// working directory `tests/js`) and returns its output; first
/// [`require_js_client`].
pub fn run_node(script: &str, args: &[&str]) -> Output {
    require_js_client();
    let dir = js_dir();
    Command::new(node())
        .arg(dir.join(script))
        .args(args)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} {script}: {e}", node().display()))
}

/// The last line of a Python run's stdout parsed as JSON (the scripts of
/// `tests/python` print their summary there).
pub fn python_summary(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_else(|| {
            panic!(
                "python printed nothing; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("last stdout line is not JSON ({e}): {line}"))
}

/// A port that was free a moment ago: bind 127.0.0.1:0, read the port,
/// release it. Another process may take it in between; callers retry.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
    l.local_addr().expect("local_addr of probe listener").port()
}

/// The last `n` lines of a (log) file, or a note that it cannot be read.
pub fn log_tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(n);
            lines[start..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// The variables of this process's environment that the gateway would read
/// as settings. Tests remove or blank them, so that the environment they run
/// in cannot leak into the gateways they start.
pub fn inherited_gateway_env() -> Vec<String> {
    let read = chroma_ha::config::env_names();
    std::env::vars()
        .map(|(name, _)| name)
        .filter(|name| name.starts_with("CHROMA_HA_") || read.contains(&name.as_str()))
        .collect()
}

/// Runs `f` to completion on a fresh current-thread runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build tokio runtime")
        .block_on(f)
}

fn keep_dirs() -> bool {
    std::env::var("CHROMA_HA_KEEP_TEST_DIRS").is_ok_and(|v| !v.is_empty() && v != "0")
}

fn open_log(path: &Path, banner: &str) -> (File, File) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open log {}: {e}", path.display()));
    writeln!(f, "\n===== chroma-ha harness: {banner} =====").expect("write log banner");
    let g = f.try_clone().expect("clone log file handle");
    (f, g)
}

/// Sends signal `sig` (a name: `STOP`, `CONT`, `TERM`…) to `pid`.
pub fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap_or_else(|e| panic!("cannot run kill -{sig} {pid}: {e}"));
    assert!(st.success(), "kill -{sig} {pid} failed: {st}");
}

fn kill_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        // Child::kill sends SIGKILL to this child's PID only.
        let _ = c.kill();
        let _ = c.wait();
    }
}

// ---------------------------------------------------------------------------
// Tiny blocking HTTP client
// ---------------------------------------------------------------------------

/// A response of [`http_request`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers (lower-cased names).
    pub headers: Vec<(String, String)>,
    /// Body (de-chunked).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The body as (lossy) UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON (panics with the body if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// First header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one HTTP/1.1 request (`Connection: close`) to an `http://host:port`
/// URL and reads the whole response. `body` is sent as JSON when given.
pub fn http_request(
    method: &str,
    url: &str,
    body: Option<&str>,
    timeout: Duration,
) -> io::Result<HttpResponse> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "only http:// URLs"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr: SocketAddr = hostport
        .replace("localhost", "127.0.0.1")
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{hostport}: {e}")))?;
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n");
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        ));
    } else {
        req.push_str("Content-Length: 0\r\n\r\n");
    }
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw)
}

/// `GET url` with [`http_request`].
pub fn http_get(url: &str, timeout: Duration) -> io::Result<HttpResponse> {
    http_request("GET", url, None, timeout)
}

fn parse_response(raw: &[u8]) -> io::Result<HttpResponse> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("empty response"))?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n")?;
        let size_str = String::from_utf8_lossy(&b[..nl]);
        let size = usize::from_str_radix(size_str.split(';').next()?.trim(), 16).ok()?;
        b = &b[nl + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// Outcome of waiting for a process to answer.
enum WaitOutcome {
    Ready,
    Exited(String),
    TimedOut,
}

fn wait_until_ok(child: &mut Child, timeout: Duration, ok: &dyn Fn() -> bool) -> WaitOutcome {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return WaitOutcome::Exited(st.to_string());
        }
        if ok() {
            // Make sure it is OUR process that answered (not another
            // test's server that grabbed the same port).
            std::thread::sleep(Duration::from_millis(50));
            if let Ok(Some(st)) = child.try_wait() {
                return WaitOutcome::Exited(st.to_string());
            }
            return WaitOutcome::Ready;
        }
        if Instant::now() >= deadline {
            return WaitOutcome::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Keeps `child` in `slot` and waits until `url` answers 200. `Err(true)`
/// means it exited because its port was taken; `Err(false)` that it exited
/// for another reason, or did not come up in time (it is then killed).
fn await_ready(
    slot: &mut Option<Child>,
    child: Child,
    url: &str,
    timeout: Duration,
    log: &Path,
    what: &str,
) -> Result<(), bool> {
    await_ready_by(slot, child, timeout, log, what, &|| {
        http_get(url, Duration::from_secs(2)).is_ok_and(|r| r.status == 200)
    })
}

/// [`await_ready`] with its own readiness test `ok`.
fn await_ready_by(
    slot: &mut Option<Child>,
    child: Child,
    timeout: Duration,
    log: &Path,
    what: &str,
    ok: &dyn Fn() -> bool,
) -> Result<(), bool> {
    match wait_until_ok(slot.insert(child), timeout, ok) {
        WaitOutcome::Ready => Ok(()),
        WaitOutcome::Exited(st) => {
            *slot = None;
            let conflict = port_conflict(log);
            let cause = if conflict { ": port in use" } else { "" };
            eprintln!("{what} exited during start ({st}){cause}");
            Err(conflict)
        }
        WaitOutcome::TimedOut => {
            kill_child(slot);
            Err(false)
        }
    }
}

fn port_conflict(log: &Path) -> bool {
    let tail = log_tail(log, 30);
    tail.contains("AddrInUse") || tail.contains("Address already in use")
}

// ---------------------------------------------------------------------------
// ChromaServer
// ---------------------------------------------------------------------------

/// A real Chroma server process owned by a test.
pub struct ChromaServer {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    port: u16,
    child: Option<Child>,
    starts: u32,
}

impl ChromaServer {
    /// Starts a fresh Chroma in a new temp dir on a free port and waits (up
    /// to 60 s) for its heartbeat. Panics with the log tail on failure.
    pub fn start() -> ChromaServer {
        let dir = tempfile::Builder::new()
            .prefix("chroma-ha-test-chroma-")
            .tempdir()
            .expect("create temp dir for chroma");
        let root = dir.path().to_path_buf();
        std::fs::create_dir_all(root.join("data")).expect("create chroma data dir");
        let mut server = ChromaServer {
            dir: Some(dir),
            root,
            port: 0,
            child: None,
            starts: 0,
        };
        for attempt in 1..=5 {
            server.port = free_port();
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(conflict) if conflict && attempt < 5 => continue,
                Err(_) => break,
            }
        }
        panic!(
            "chroma did not start (port {}); log {}:\n{}",
            server.port,
            server.log_path().display(),
            log_tail(&server.log_path(), LOG_TAIL_LINES)
        );
    }

    /// Starts `n` servers in parallel (each as [`ChromaServer::start`]).
    pub fn start_many(n: usize) -> Vec<ChromaServer> {
        let handles: Vec<_> = (0..n)
            .map(|_| std::thread::spawn(ChromaServer::start))
            .collect();
        handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(s) => s,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    }

    /// Writes the YAML config, spawns chroma and waits for the heartbeat.
    /// `Err(true)` means the port was taken.
    fn spawn_and_wait(&mut self) -> Result<(), bool> {
        let cfg = format!(
            "port: {}\nlisten_address: 127.0.0.1\npersist_path: \"{}\"\nallow_reset: true\n",
            self.port,
            self.data_dir().display()
        );
        std::fs::write(self.config_path(), cfg).expect("write chroma config");
        self.starts += 1;
        let (out, err) = open_log(
            &self.log_path(),
            &format!("start #{} on port {}", self.starts, self.port),
        );
        let child = Command::new(chroma_bin())
            .arg("run")
            .arg(self.config_path())
            .current_dir(&self.root)
            .env("ANONYMIZED_TELEMETRY", "False")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", chroma_bin().display()));
        let (url, log) = (self.heartbeat_url(), self.log_path());
        let what = format!("chroma on port {}", self.port);
        await_ready(
            &mut self.child,
            child,
            &url,
            CHROMA_START_TIMEOUT,
            &log,
            &what,
        )
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `…/api/v2/heartbeat` URL.
    pub fn heartbeat_url(&self) -> String {
        format!("{}/api/v2/heartbeat", self.url())
    }

    /// The persist directory.
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The YAML config file.
    pub fn config_path(&self) -> PathBuf {
        self.root.join("chroma.yaml")
    }

    /// The log file (stdout + stderr of every start).
    pub fn log_path(&self) -> PathBuf {
        self.root.join("chroma.log")
    }

    /// PID of the running process, if any.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Is the process still alive (not exited, not killed)?
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Does the heartbeat answer 200 right now?
    pub fn heartbeat_ok(&self) -> bool {
        http_get(&self.heartbeat_url(), Duration::from_secs(2)).is_ok_and(|r| r.status == 200)
    }

    /// SIGKILL the server (by its PID) and reap it. No-op if not running.
    pub fn kill(&mut self) {
        if let Some(c) = self.child.as_mut() {
            // Resume first in case it was paused, so the kill is immediate.
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(c.id().to_string())
                .stderr(Stdio::null())
                .status();
        }
        kill_child(&mut self.child);
    }

    /// SIGSTOP the server: it keeps its port but answers nothing (a hung
    /// server). Undo with [`ChromaServer::resume`].
    pub fn pause(&self) {
        let pid = self.pid().expect("pause: chroma is not running");
        signal(pid, "STOP");
    }

    /// SIGCONT a paused server.
    pub fn resume(&self) {
        let pid = self.pid().expect("resume: chroma is not running");
        signal(pid, "CONT");
    }

    /// Starts the server again on the same port and data dir (kills it first
    /// if still running). Retries for up to ~20 s while the port is busy.
    /// Panics with the log tail on failure.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(true) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(250));
                }
                Err(_) => panic!(
                    "chroma did not restart on port {}; log {}:\n{}",
                    self.port,
                    self.log_path().display(),
                    log_tail(&self.log_path(), LOG_TAIL_LINES)
                ),
            }
        }
    }
}

impl Drop for ChromaServer {
    fn drop(&mut self) {
        kill_child(&mut self.child);
        if std::thread::panicking() {
            eprintln!(
                "--- chroma {} log tail ({}) ---\n{}",
                self.url(),
                self.log_path().display(),
                log_tail(&self.log_path(), 30)
            );
        }
        if keep_dirs() {
            if let Some(d) = self.dir.take() {
                eprintln!("keeping chroma test dir {}", d.keep().display());
            }
        }
    }
}

// ---------------------------------------------------------------------------
// GatewayProcess
// ---------------------------------------------------------------------------

/// Path of the `chroma-ha` binary built by Cargo for integration tests.
pub fn chroma_ha_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_chroma-ha"))
}

/// A service process (normally the `chroma-ha` gateway) owned by a test.
///
/// Its arguments may contain placeholders, replaced at every (re)start:
/// `{listen}` → `127.0.0.1:PORT`, `{port}` → `PORT`, `{url}` →
/// `http://127.0.0.1:PORT`, `{dir}` → the process's own temp dir (which
/// survives restarts, e.g. for a WAL data dir). If no argument mentions
/// `{listen}`, `{port}` or `{url}`, then `--listen 127.0.0.1:PORT` is appended.
pub struct GatewayProcess {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    bin: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Variables of the test's environment the process does not inherit.
    env_remove: Vec<String>,
    port: u16,
    child: Option<Child>,
    starts: u32,
    /// Readiness test given the port, instead of `GET {url}/health` (e.g. a
    /// gateway that serves TLS only).
    ready: Option<ReadyCheck>,
}

/// A readiness test of a gateway on a port ([`GatewayProcess::start_clean_ready`]).
pub type ReadyCheck = std::sync::Arc<dyn Fn(u16) -> bool + Send + Sync>;

impl GatewayProcess {
    /// Like [`GatewayProcess::start_clean`], awaited until `ready(port)`
    /// holds instead of on `GET /health` over plain HTTP.
    pub fn start_clean_ready(
        bin: &Path,
        args: &[String],
        env: &[(String, String)],
        ready: ReadyCheck,
    ) -> GatewayProcess {
        Self::start_inner(bin, args, env, inherited_gateway_env(), Some(ready))
    }

    /// Like [`GatewayProcess::start`], for a `chroma-ha` gateway, in a clean
    /// environment for its settings: no variable of the test's environment
    /// that the gateway would read as a setting ([`inherited_gateway_env`]:
    /// every `CHROMA_HA_*` and the Python balancer's legacy names) reaches
    /// it; only `env` (and the small-segment default) does.
    pub fn start_clean(bin: &Path, args: &[String], env: &[(String, String)]) -> GatewayProcess {
        let remove = inherited_gateway_env();
        Self::start_inner(bin, args, env, remove, None)
    }

    /// Spawns `bin args...` (placeholders expanded, see the type doc) with
    /// extra `env`, logs to a file in its temp dir, and waits up to 30 s for
    /// `GET {url}/health` to answer 200. Panics with the log tail on failure.
    pub fn start(bin: &Path, args: &[String], env: &[(String, String)]) -> GatewayProcess {
        Self::start_inner(bin, args, env, Vec::new(), None)
    }

    fn start_inner(
        bin: &Path,
        args: &[String],
        env: &[(String, String)],
        env_remove: Vec<String>,
        ready: Option<ReadyCheck>,
    ) -> GatewayProcess {
        let dir = tempfile::Builder::new()
            .prefix("chroma-ha-test-gw-")
            .tempdir()
            .expect("create temp dir for gateway");
        let root = dir.path().to_path_buf();
        let mut args = args.to_vec();
        let templated = args
            .iter()
            .any(|a| a.contains("{listen}") || a.contains("{port}") || a.contains("{url}"));
        if !templated {
            args.push("--listen".into());
            args.push("{listen}".into());
        }
        let mut gw = GatewayProcess {
            dir: Some(dir),
            root,
            bin: bin.to_path_buf(),
            args,
            // Small log segments: each gateway preallocates two of them, and
            // tests start many gateways at once. `env` may override it.
            env: [(
                "CHROMA_HA_WAL_SEGMENT_BYTES".to_string(),
                "4MiB".to_string(),
            )]
            .into_iter()
            .chain(env.iter().cloned())
            .collect(),
            env_remove,
            port: 0,
            child: None,
            starts: 0,
            ready,
        };
        for attempt in 1..=5 {
            gw.port = free_port();
            match gw.spawn_and_wait() {
                Ok(()) => return gw,
                Err(conflict) if conflict && attempt < 5 => continue,
                Err(_) => break,
            }
        }
        panic!(
            "{} did not become healthy on port {}; log {}:\n{}",
            gw.bin.display(),
            gw.port,
            gw.log_path().display(),
            log_tail(&gw.log_path(), LOG_TAIL_LINES)
        );
    }

    /// Starts the `chroma-ha` gateway: `serve --listen {listen} --primary P
    /// [--replica R]... --data-dir {dir}/data` plus `extra_args`, in a
    /// clean environment for its settings ([`GatewayProcess::start_clean`]).
    pub fn start_chroma_ha(
        primary: &str,
        replicas: &[&str],
        extra_args: &[&str],
    ) -> GatewayProcess {
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--listen".into(),
            "{listen}".into(),
            "--primary".into(),
            primary.into(),
        ];
        for r in replicas {
            args.push("--replica".into());
            args.push((*r).into());
        }
        args.push("--data-dir".into());
        args.push("{dir}/data".into());
        args.extend(extra_args.iter().map(|s| s.to_string()));
        let env = vec![("RUST_LOG".to_string(), "info".to_string())];
        Self::start_clean(&chroma_ha_bin(), &args, &env)
    }

    fn expanded_args(&self) -> Vec<String> {
        self.args
            .iter()
            .map(|a| {
                a.replace("{listen}", &format!("127.0.0.1:{}", self.port))
                    .replace("{url}", &self.url())
                    .replace("{port}", &self.port.to_string())
                    .replace("{dir}", &self.root.display().to_string())
            })
            .collect()
    }

    fn spawn_and_wait(&mut self) -> Result<(), bool> {
        self.starts += 1;
        let args = self.expanded_args();
        let (out, err) = open_log(
            &self.log_path(),
            &format!(
                "start #{}: {} {}",
                self.starts,
                self.bin.display(),
                args.join(" ")
            ),
        );
        let mut cmd = Command::new(&self.bin);
        for name in &self.env_remove {
            cmd.env_remove(name);
        }
        let child = cmd
            .args(&args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", self.bin.display()));
        let (url, log) = (self.health_url(), self.log_path());
        let what = format!("{} on port {}", self.bin.display(), self.port);
        match self.ready.clone() {
            Some(ready) => {
                let port = self.port;
                await_ready_by(
                    &mut self.child,
                    child,
                    GATEWAY_START_TIMEOUT,
                    &log,
                    &what,
                    &move || ready(port),
                )
            }
            None => await_ready(
                &mut self.child,
                child,
                &url,
                GATEWAY_START_TIMEOUT,
                &log,
                &what,
            ),
        }
    }

    /// Base URL, e.g. `http://127.0.0.1:41235`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `{url}/health`.
    pub fn health_url(&self) -> String {
        format!("{}/health", self.url())
    }

    /// The process's temp dir (`{dir}` in the arguments); survives restarts.
    pub fn dir(&self) -> PathBuf {
        self.root.clone()
    }

    /// The log file (stdout + stderr of every start).
    pub fn log_path(&self) -> PathBuf {
        self.root.join("process.log")
    }

    /// The current log contents.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// PID of the running process, if any.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Is the process still alive?
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL the process (by its PID) and reap it. No-op if not running.
    pub fn kill(&mut self) {
        kill_child(&mut self.child);
    }

    /// Waits up to `timeout` for the process to exit by itself; its exit
    /// status if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return Some(status);
                }
            } else {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGTERM the process and wait up to `timeout` for it to exit; SIGKILL
    /// after that. Returns true if it exited on its own.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let Some(pid) = self.pid() else { return true };
        signal(pid, "TERM");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    self.child = None;
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        false
    }

    /// Starts it again with the same arguments, port and dir (kills it first
    /// if still running). Retries for up to ~20 s while the port is busy.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(true) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(250));
                }
                Err(_) => panic!(
                    "{} did not restart on port {}; log {}:\n{}",
                    self.bin.display(),
                    self.port,
                    self.log_path().display(),
                    log_tail(&self.log_path(), LOG_TAIL_LINES)
                ),
            }
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        kill_child(&mut self.child);
        if std::thread::panicking() {
            eprintln!(
                "--- gateway {} log tail ({}) ---\n{}",
                self.url(),
                self.log_path().display(),
                log_tail(&self.log_path(), 40)
            );
        }
        if keep_dirs() {
            if let Some(d) = self.dir.take() {
                eprintln!("keeping gateway test dir {}", d.keep().display());
            }
        }
    }
}
