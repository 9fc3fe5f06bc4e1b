//! Running the operations scripts of `scripts/` from a test: each run is
//! bounded in time, its output kept whole, and a run that overstays its
//! time is killed with every process it started (it runs in a process
//! group of its own, which is signalled by its id). Also: the processes a
//! script started ([`descendants`]), so that a test can tell whether any of
//! them outlived it.
#![allow(dead_code)]

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::support::{inherited_gateway_env, python, workspace_root};

/// Settings the scripts read from the environment; a run gets only those
/// the test gives it.
pub const SCRIPT_ENV: &[&str] = &[
    "CHROMA_HA_URL",
    "WARN_LAG_ENTRIES",
    "CRIT_LAG_ENTRIES",
    "WARN_LAG_SECONDS",
    "CRIT_LAG_SECONDS",
    "WARN_WAL_PCT",
    "CRIT_WAL_PCT",
    "TIMEOUT",
    "DATA_DIR",
    "GATEWAY_PORT",
    "PRIMARY_PORT",
    "REPLICA_PORT",
    "CHROMA_HA_BIN",
];

/// `<workspace>/scripts/NAME`.
pub fn script(name: &str) -> PathBuf {
    workspace_root().join("scripts").join(name)
}

/// How a script run ended and what it printed.
#[derive(Debug)]
pub struct Run {
    /// The command line, for messages.
    pub what: String,
    /// The exit code (`None`: ended by a signal).
    pub code: Option<i32>,
    /// Everything on stdout.
    pub stdout: String,
    /// Everything on stderr.
    pub stderr: String,
}

impl Run {
    /// The non-empty lines of stdout.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }

    /// The command, its exit code and its output, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "{} exited {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.what, self.code, self.stdout, self.stderr
        )
    }

    /// Panics with [`describe`](Self::describe) unless it exited `code`.
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "{}", self.describe());
        self
    }

    /// The first stdout line starting with `prefix`; panics if none does.
    pub fn line_starting(&self, prefix: &str) -> &str {
        self.lines()
            .into_iter()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starts with {prefix:?}:\n{}", self.describe()))
    }
}

/// A script started in a process group of its own, with stdout and stderr
/// in files of a temp dir. Dropping it kills the group.
pub struct Started {
    child: Option<Child>,
    dir: tempfile::TempDir,
    what: String,
}

/// Starts `bash scripts/NAME args...` from the workspace root, with stdin
/// closed, `env` set, and none of [`SCRIPT_ENV`] nor of the gateway's
/// settings ([`inherited_gateway_env`]) inherited; Python is the tests'
/// ([`python`]). Panics only if bash cannot be started.
pub fn start_script(name: &str, args: &[&str], env: &[(&str, &str)]) -> Started {
    let dir = tempfile::Builder::new()
        .prefix("chroma-ha-test-script-")
        .tempdir()
        .expect("create temp dir for script output");
    let out = File::create(dir.path().join("stdout")).expect("create stdout file");
    let err = File::create(dir.path().join("stderr")).expect("create stderr file");
    let mut cmd = Command::new("bash");
    cmd.arg(script(name)).args(args);
    for var in SCRIPT_ENV {
        cmd.env_remove(var);
    }
    for var in inherited_gateway_env() {
        cmd.env_remove(var);
    }
    let child = cmd
        .env("CHROMA_HA_PYTHON", python())
        .env("ANONYMIZED_TELEMETRY", "False")
        .envs(env.iter().copied())
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run bash {name}: {e}"));
    Started {
        child: Some(child),
        dir,
        what: format!("scripts/{name} {}", args.join(" ")),
    }
}

impl Started {
    /// The script's PID, which is also its process group's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// What it printed on stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout")).unwrap_or_default()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    /// Its exit status, if it has ended.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Sends `signal` to its whole process group, as a terminal does for
    /// Ctrl-C (`libc::SIGINT`).
    pub fn signal_group(&self, signal: i32) {
        if let Some(child) = &self.child {
            signal_group(child.id(), signal);
        }
    }

    /// Waits up to `timeout` for it to end. On time: how it ended and what
    /// it printed. Past it: the group is killed and the test panics with
    /// the output so far.
    pub fn finish(mut self, timeout: Duration) -> Run {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                self.child = None;
                return Run {
                    what: self.what.clone(),
                    code: status.code(),
                    stdout: self.stdout(),
                    stderr: self.stderr(),
                };
            }
            if Instant::now() >= deadline {
                let (out, err) = (self.stdout(), self.stderr());
                self.kill();
                panic!(
                    "{} did not end within {timeout:?}\n--- stdout ---\n{out}--- stderr ---\n{err}",
                    self.what
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal_group(child.id(), libc::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// kill(2) of the process group `pgid`, one this test created with its
/// script (whose PID is the group's id) and has not reaped yet.
fn signal_group(pgid: u32, signal: i32) {
    // SAFETY: a plain system call on an id; no memory is involved.
    unsafe {
        libc::kill(-(pgid as i32), signal);
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `bash scripts/NAME args...` ([`start_script`]) to its end, at most
/// `timeout`.
pub fn run_script(name: &str, args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Run {
    start_script(name, args, env).finish(timeout)
}

/// One process, told apart from a later one with the same PID by its
/// start time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    /// Its PID.
    pub pid: u32,
    /// Field 22 of `/proc/PID/stat` (start time in clock ticks since boot).
    pub start: u64,
    /// Its command line, for messages.
    pub cmdline: String,
}

fn stat_of(pid: u32) -> Option<(u32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; it ends at the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): ppid is field 4, starttime field 22.
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((ppid, start))
}

fn cmdline_of(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .replace('\0', " ")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// Every process below `root` (children, their children, ...) right now.
pub fn descendants(root: u32) -> Vec<Proc> {
    let mut parent_of = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some((ppid, start)) = stat_of(pid) {
                parent_of.push((pid, ppid, start));
            }
        }
    }
    let mut found: Vec<Proc> = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &(pid, ppid, start) in &parent_of {
            if ppid == parent && !found.iter().any(|p| p.pid == pid) {
                found.push(Proc {
                    pid,
                    start,
                    cmdline: cmdline_of(pid),
                });
                frontier.push(pid);
            }
        }
    }
    found
}

/// Is this very process (same PID, same start time) still there (a zombie
/// counts as gone)?
pub fn alive(p: &Proc) -> bool {
    let state = std::fs::read_to_string(format!("/proc/{}/stat", p.pid))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .and_then(|i| s.get(i + 2..i + 3))
                .map(str::to_string)
        });
    state.is_some_and(|s| s != "Z") && stat_of(p.pid).is_some_and(|(_, start)| start == p.start)
}

/// SIGKILLs each of `procs` that is still the process it was.
pub fn kill_all(procs: &[Proc]) {
    for p in procs {
        if alive(p) {
            // SAFETY: kill(2) on a PID this test saw started below its own
            // script, checked by start time just before.
            unsafe {
                libc::kill(p.pid as i32, libc::SIGKILL);
            }
        }
    }
}

/// Is something accepting connections on 127.0.0.1:`port`?
pub fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    )
    .is_ok()
}

/// The text of `path`, or empty.
pub fn read_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
