//! `deploy/chroma-ha.service`: `systemd-analyze verify` finds nothing to
//! say about it (with `ExecStart` pointing at the built binary, the one
//! change from the file: verify needs the binary to exist), and its
//! `ExecStart` command line starts a gateway that SIGTERM stops with 0 and
//! that an invalid configuration stops with the exit status 2 the unit
//! does not restart on. systemd is not PID 1 here; `systemd-analyze` comes
//! from Debian's `systemd` package (`.ci/run` installs it). Without it the
//! test fails, it does not skip.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::{chroma_ha_bin, free_port, http_get, inherited_gateway_env, GatewayProcess};

/// Where the unit expects the binary.
const INSTALLED_BIN: &str = "/usr/local/bin/chroma-ha";

fn unit_text() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/chroma-ha.service");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The values of `Key=` lines.
fn values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

/// The unit as `systemd-analyze verify` gets it: in a temp dir under its own
/// name, the binary path replaced by the built binary's.
fn unit_for_verify(dir: &Path) -> PathBuf {
    let text = unit_text();
    assert!(
        text.contains(INSTALLED_BIN),
        "the unit runs {INSTALLED_BIN}"
    );
    let path = dir.join("chroma-ha.service");
    let bin = chroma_ha_bin().display().to_string();
    std::fs::write(&path, text.replace(INSTALLED_BIN, &bin)).expect("write the unit");
    path
}

#[test]
fn systemd_analyze_verify_finds_nothing_wrong_with_the_unit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let unit = unit_for_verify(dir.path());
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run systemd-analyze ({e}): install Debian's `systemd` package")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("systemd-analyze verify {}:\n{text}", unit.display());
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{text}"
    );
    // verify exits 0 on unknown keys and bad values, but names the unit.
    let about_it: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("chroma-ha.service") || l.contains(&*dir.path().to_string_lossy()))
        .collect();
    assert!(
        about_it.is_empty(),
        "systemd-analyze verify on the unit:\n{}",
        about_it.join("\n")
    );
}

/// ExecStart's arguments with the installed paths replaced: the binary by
/// the built one, the config file and the data dir by `config` and `data`.
fn exec_start(config: &Path, data: &Path) -> Vec<String> {
    let unit = unit_text();
    let exec = values(&unit, "ExecStart");
    assert_eq!(exec.len(), 1, "one ExecStart: {exec:?}");
    let mut words = exec[0].split_whitespace();
    assert_eq!(words.next(), Some(INSTALLED_BIN));
    words
        .map(|w| match w {
            "/etc/chroma-ha/chroma-ha.toml" => config.display().to_string(),
            "/var/lib/chroma-ha" => data.display().to_string(),
            other => other.to_string(),
        })
        .collect()
}

#[test]
fn the_units_command_line_serves_stops_on_sigterm_and_exits_2_on_a_bad_config() {
    let unit = unit_text();
    let state = values(&unit, "StateDirectory");
    assert_eq!(
        state,
        ["chroma-ha"],
        "the data dir is /var/lib/<StateDirectory>"
    );
    assert_eq!(values(&unit, "KillSignal"), ["SIGTERM"]);
    assert_eq!(values(&unit, "RestartPreventExitStatus"), ["2"]);

    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("chroma-ha.toml");
    let data = dir.path().join("state");
    std::fs::create_dir_all(&data).expect("data dir");
    let down = free_port();
    std::fs::write(&config, format!("primary = \"http://127.0.0.1:{down}\"\n"))
        .expect("write config");
    let args = exec_start(&config, &data);
    assert!(
        args.iter().any(|a| *a == data.display().to_string()),
        "{args:?}"
    );
    let mut gw = GatewayProcess::start_clean(&chroma_ha_bin(), &args, &[]);
    let health = http_get(&gw.health_url(), Duration::from_secs(30)).expect("GET /health");
    assert_eq!(health.status, 200);
    assert!(
        data.join("wal").exists(),
        "the log is in the data dir given by ExecStart"
    );
    let pid = gw.pid().expect("pid");
    crate::support::signal(pid, "TERM");
    let status = gw
        .wait_exit(Duration::from_secs(30))
        .expect("SIGTERM stops it within TimeoutStopSec=30");
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");

    // An invalid setting: exit 2, which the unit does not restart on.
    std::fs::write(
        &config,
        "primary = \"http://127.0.0.1:1\"\nno_such_key = 1\n",
    )
    .expect("write bad config");
    let mut cmd = Command::new(chroma_ha_bin());
    for var in inherited_gateway_env() {
        cmd.env_remove(var);
    }
    let out = cmd
        .args(exec_start(&config, &data))
        .output()
        .expect("run chroma-ha");
    assert_eq!(
        out.status.code(),
        Some(2),
        "a bad config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
