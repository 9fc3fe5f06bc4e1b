//! `dev-up.sh` with the tests' gateway binary (no release build) on free
//! ports and a temp data dir: it starts two Chroma servers and a gateway
//! that answers, the Python example and the commands it prints work, and
//! Ctrl-C (SIGINT to its process group, as a terminal sends it) stops every
//! process it started, frees the ports and exits 0. The gateway stopping on
//! its own is a stop too (exit 0); the gateway dying is a failure (exit 1);
//! either way nothing it started is left behind.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::fault_kit::{
    collections_url, request_json, serial, status, wait_caught_up, wait_until, DATABASE,
};
use crate::ops_kit::{alive, descendants, kill_all, port_open, start_script, Proc, Run, Started};
use crate::support::{
    assert_python_ok, chroma_ha_bin, free_port, http_get, inherited_gateway_env, python_command,
    workspace_root,
};
use crate::LONG;

/// How long dev-up may take to report ready (two Chroma starts and a
/// gateway, on a loaded machine).
const START: Duration = Duration::from_secs(300);

/// Kills, when dropped, whichever of the processes seen below dev-up are
/// still there (a failed test leaves nothing behind either).
struct Leftovers(Vec<Proc>);

impl Drop for Leftovers {
    fn drop(&mut self) {
        kill_all(&self.0);
    }
}

/// Three distinct free ports.
fn three_ports() -> [u16; 3] {
    let mut ports: Vec<u16> = Vec::new();
    while ports.len() < 3 {
        let p = free_port();
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    [ports[0], ports[1], ports[2]]
}

/// The text after `label` on the line holding it.
fn after<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.split_once(label).map(|(_, rest)| rest.trim()))
        .unwrap_or_else(|| panic!("no {label:?} in dev-up's output:\n{text}"))
}

/// Runs a command line dev-up printed, from the repository root, as an
/// operator would paste it; panics unless it exits 0.
fn run_printed(line: &str) -> String {
    let mut cmd = Command::new("bash");
    for var in inherited_gateway_env() {
        cmd.env_remove(var);
    }
    let out = cmd
        .arg("-c")
        .arg(line)
        .current_dir(workspace_root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {line}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{line} exited {}:\n{text}",
        out.status
    );
    text
}

/// A dev-up run that reported ready, and every process seen below it.
struct DevUp {
    dev: Started,
    seen: Leftovers,
    data: tempfile::TempDir,
    /// The gateway's, the primary's and the replica's ports.
    ports: [u16; 3],
}

impl DevUp {
    /// Starts dev-up on free ports with a temp data dir and waits until it
    /// prints that it is ready.
    fn start() -> DevUp {
        let data = tempfile::Builder::new()
            .prefix("chroma-ha-test-devup-")
            .tempdir()
            .expect("temp data dir");
        let ports = three_ports();
        let [g, p, r] = ports.map(|port| port.to_string());
        let bin = chroma_ha_bin().display().to_string();
        let data_dir = data.path().display().to_string();
        let dev = start_script(
            "dev-up.sh",
            &[],
            &[
                ("CHROMA_HA_BIN", bin.as_str()),
                ("DATA_DIR", data_dir.as_str()),
                ("GATEWAY_PORT", g.as_str()),
                ("PRIMARY_PORT", p.as_str()),
                ("REPLICA_PORT", r.as_str()),
                ("RUST_LOG", "info"),
            ],
        );
        let mut up = DevUp {
            dev,
            seen: Leftovers(Vec::new()),
            data,
            ports,
        };
        let started = Instant::now();
        loop {
            up.note_descendants();
            if up.dev.stdout().contains("Press Ctrl-C to stop") {
                break;
            }
            if let Some(status) = up.dev.try_wait() {
                panic!(
                    "dev-up exited ({status}) before it was ready:\n{}\n{}",
                    up.dev.stdout(),
                    up.dev.stderr()
                );
            }
            assert!(
                started.elapsed() < START,
                "dev-up not ready within {START:?}:\n{}\n{}",
                up.dev.stdout(),
                up.dev.stderr()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!(
            "dev-up ready after {:.1} s",
            started.elapsed().as_secs_f64()
        );
        up
    }

    /// Adds the processes below dev-up now to those it must stop.
    fn note_descendants(&mut self) {
        for proc in descendants(self.dev.pid()) {
            if !self.seen.0.contains(&proc) {
                self.seen.0.push(proc);
            }
        }
    }

    /// The gateway process dev-up started.
    fn gateway(&self) -> Proc {
        self.seen
            .0
            .iter()
            .find(|p| p.cmdline.contains("chroma-ha") && p.cmdline.contains("serve"))
            .cloned()
            .unwrap_or_else(|| panic!("no gateway below dev-up: {:?}", self.seen.0))
    }

    /// Waits for dev-up to end, checks that it exited `code` and that it
    /// stopped everything it started, freed its ports and removed its pid
    /// file. Gives what it printed and the commands it ran.
    fn finish(mut self, code: i32) -> (Run, Vec<String>) {
        self.note_descendants();
        let DevUp {
            dev,
            seen,
            data,
            ports,
        } = self;
        let pid = dev.pid();
        let run = dev.finish(Duration::from_secs(120));
        run.assert_code(code);
        let left: Vec<&Proc> = seen.0.iter().filter(|p| alive(p)).collect();
        assert!(
            left.is_empty(),
            "dev-up (pid {pid}) left these behind: {left:?}\n{}",
            run.describe()
        );
        for port in ports {
            assert!(
                !port_open(port),
                "port {port} still open after dev-up stopped"
            );
        }
        assert!(
            !data.path().join("dev-up.pid").exists(),
            "dev-up.pid is left in {}",
            data.path().display()
        );
        let names = seen.0.iter().map(|p| p.cmdline.clone()).collect();
        (run, names)
    }
}

/// Sends `signal` to one process this test saw dev-up start.
fn signal(proc: &Proc, signal: i32) {
    assert!(alive(proc), "{proc:?} is gone already");
    // SAFETY: kill(2) on a PID checked by start time just before to be the
    // process dev-up started.
    unsafe {
        libc::kill(proc.pid as i32, signal);
    }
}

#[test]
fn dev_up_starts_a_deployment_that_answers_and_ctrl_c_stops_all_of_it() {
    let _serial = serial();
    let up = DevUp::start();
    let [gateway_port, primary_port, replica_port] = up.ports;
    let bin = chroma_ha_bin().display().to_string();
    let out = up.dev.stdout();

    // The addresses it prints are the ones asked for, and answer.
    let gw = format!("http://127.0.0.1:{gateway_port}");
    let primary = format!("http://127.0.0.1:{primary_port}");
    let replica = format!("http://127.0.0.1:{replica_port}");
    assert_eq!(after(&out, "Gateway (point your Chroma client here):"), gw);
    assert_eq!(after(&out, "Primary Chroma:"), primary);
    assert_eq!(after(&out, "Replica Chroma:"), replica);
    let ready = http_get(&format!("{gw}/ready"), Duration::from_secs(30)).expect("GET /ready");
    assert_eq!(ready.status, 200, "{}", ready.text());
    wait_until("the gateway sees both servers healthy", LONG, || {
        status(&gw).is_some_and(|s| s["healthy_instances"] == 2)
    });

    // Its Python example works, and the record reaches both servers.
    let example: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("Try it with the Python client"))
        .skip(1)
        .take_while(|l| !l.starts_with("Check it:"))
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(example.len(), 3, "the three-line example:\n{out}");
    let ran = python_command()
        .arg("-c")
        .arg(example.join("\n"))
        .output()
        .expect("run the example");
    assert_python_ok("dev-up's Python example", &ran);
    wait_caught_up(&gw, LONG);
    for server in [&primary, &replica] {
        let base = collections_url(server, DATABASE);
        let r = request_json("GET", &format!("{base}/demo"), None);
        assert_eq!(r.status, 200, "demo on {server}: {}", r.text());
        let id = r.json()["id"].as_str().expect("id").to_string();
        let n = request_json("GET", &format!("{base}/{id}/count"), None).json();
        assert_eq!(n, 1, "records of demo on {server}");
    }

    // The commands it prints work as printed.
    let status_cmd = after(&out, "Check it:");
    let check_cmd = out
        .lines()
        .skip_while(|l| !l.starts_with("Check it:"))
        .nth(1)
        .map(str::trim)
        .unwrap_or_default();
    // They name the binary it runs (relative to the root it runs in).
    let root = format!("{}/", workspace_root().display());
    let shown = bin.strip_prefix(&root).unwrap_or(&bin);
    assert_eq!(status_cmd, format!("CHROMA_HA_URL={gw} {shown} status"));
    assert_eq!(
        check_cmd,
        format!("{shown} check --server {primary} --server {replica}")
    );
    let status_out = run_printed(status_cmd);
    assert!(
        status_out.contains("primary") && status_out.contains("replica"),
        "{status_out}"
    );
    run_printed(check_cmd);

    // Ctrl-C: everything it started ends, its ports close, it exits 0.
    up.dev.signal_group(libc::SIGINT);
    let (run, names) = up.finish(0);
    assert!(run.stdout.contains("dev-up: stopped"), "{}", run.describe());
    assert!(
        names
            .iter()
            .any(|c| c.contains("chroma-ha") && c.contains("serve"))
            && names.iter().filter(|c| c.contains("chroma run")).count() == 2,
        "dev-up should have started a gateway and two Chroma servers: {names:?}"
    );
}

/// Ctrl-C reaches the gateway too, and the gateway may be gone before
/// dev-up's shell runs its trap (seen in CI: dev-up then reported "the
/// gateway exited (status 0)" and exited 1). Stopping the gateway alone
/// makes that order certain.
#[test]
fn dev_up_exits_0_when_the_gateway_stops_before_its_ctrl_c_trap_runs() {
    let _serial = serial();
    let up = DevUp::start();
    signal(&up.gateway(), libc::SIGINT);
    let (run, _) = up.finish(0);
    assert!(run.stdout.contains("dev-up: stopped"), "{}", run.describe());
}

#[test]
fn dev_up_exits_1_and_stops_the_servers_when_the_gateway_dies() {
    let _serial = serial();
    let up = DevUp::start();
    signal(&up.gateway(), libc::SIGKILL);
    let (run, _) = up.finish(1);
    assert!(
        run.stdout.contains("the gateway exited (status 137)"),
        "{}",
        run.describe()
    );
}
