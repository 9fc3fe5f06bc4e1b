//! The container files, as far as they can be checked without a Docker
//! engine (none here, nor on CI):
//!
//! - both compose files pass `docker-compose config` (Debian's
//!   `docker-compose` package, which `.ci/run` installs; `docker compose`
//!   when the plugin is there), which needs no engine: their services, the
//!   build context and Dockerfile they name, the files they mount, and the
//!   required PostgreSQL password;
//! - `deploy/Dockerfile`, never built here: the files it copies exist in
//!   the build context, it builds and runs the binary the workspace
//!   builds, `.dockerignore` keeps the big directories out, and its
//!   health check is a command the binary accepts;
//! - every `CHROMA_HA_*` variable the three files set is one the gateway
//!   reads.
//!
//! Without a compose tool the compose tests fail, they do not skip.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{chroma_ha_bin, free_port, workspace_root};

fn deploy() -> PathBuf {
    workspace_root().join("deploy")
}

/// `docker compose` if the plugin answers, else `docker-compose`.
fn compose_command() -> Command {
    let plugin = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if plugin {
        let mut c = Command::new("docker");
        c.arg("compose");
        c
    } else {
        Command::new("docker-compose")
    }
}

/// `compose -f FILE config ARGS` with `env`; (success, stdout + stderr).
fn compose_config(file: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = compose_command();
    for var in [
        "POSTGRES_PASSWORD",
        "CHROMA_HA_ADMIN_TOKEN",
        "COMPOSE_FILE",
        "COMPOSE_PROJECT_NAME",
    ] {
        cmd.env_remove(var);
    }
    let out = cmd
        .arg("-f")
        .arg(file)
        .arg("config")
        .args(args)
        .envs(env.iter().copied())
        .current_dir(workspace_root())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run docker-compose ({e}): install Debian's `docker-compose` package")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The values of `key: value` lines of compose's normalized output.
fn yaml_values<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix(':'))
        .map(str::trim)
        .collect()
}

/// Checks a normalized compose file: its services, a build of
/// deploy/Dockerfile from the repository root for every gateway, and that
/// every file it mounts from the host exists. The normalized text and the
/// number of host files mounted.
fn assert_compose(file: &Path, env: &[(&str, &str)], services: &[&str]) -> (String, usize) {
    let (ok, text) = compose_config(file, &[], env);
    assert!(ok, "{} does not validate:\n{text}", file.display());
    let (ok, listed) = compose_config(file, &["--services"], env);
    assert!(ok, "{listed}");
    let mut got: Vec<&str> = listed
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    got.sort_unstable();
    let mut want = services.to_vec();
    want.sort_unstable();
    assert_eq!(got, want, "services of {}", file.display());
    let root = workspace_root().canonicalize().expect("root");
    let contexts = yaml_values(&text, "context");
    assert!(!contexts.is_empty(), "no build in {}", file.display());
    for c in contexts {
        assert_eq!(
            Path::new(c).canonicalize().ok(),
            Some(root.clone()),
            "build context {c}"
        );
    }
    for d in yaml_values(&text, "dockerfile") {
        assert!(
            root.join(d).is_file(),
            "{} builds {d}, which is missing",
            file.display()
        );
    }
    // Bind mounts: `- /host/path:/container/path[:mode]` under volumes
    // (docker-compose 1.x), `source: /host/path` (the compose plugin).
    let mut mounts = 0;
    for host in yaml_values(&text, "source")
        .into_iter()
        .filter(|h| h.starts_with('/'))
    {
        assert!(
            Path::new(host).exists(),
            "{} mounts {host}, which is missing",
            file.display()
        );
        mounts += 1;
    }
    for line in text.lines().map(str::trim) {
        let Some(mount) = line.strip_prefix("- /") else {
            continue;
        };
        if let Some((host, inside)) = mount.split_once(':') {
            if inside.starts_with('/') {
                let host = format!("/{host}");
                assert!(
                    Path::new(&host).exists(),
                    "{} mounts {host}, which is missing",
                    file.display()
                );
                mounts += 1;
            }
        }
    }
    eprintln!(
        "{}: {mounts} host file(s) mounted, all present",
        file.display()
    );
    (text, mounts)
}

#[test]
fn the_one_gateway_compose_file_validates() {
    let (text, _) = assert_compose(
        &deploy().join("docker-compose.yml"),
        &[],
        &["chroma-primary", "chroma-replica", "gateway"],
    );
    assert!(
        text.contains("CHROMA_HA_PRIMARY: http://chroma-primary:8000"),
        "{text}"
    );
}

#[test]
fn the_several_gateways_compose_file_validates_and_needs_a_password() {
    let file = deploy().join("several-gateways/docker-compose.yml");
    let (text, mounts) = assert_compose(
        &file,
        &[("POSTGRES_PASSWORD", "pw-for-the-test")],
        &[
            "postgres",
            "chroma-primary",
            "chroma-replica",
            "gateway-a",
            "gateway-b",
            "gateway-c",
            "load-balancer",
        ],
    );
    assert_eq!(mounts, 4, "three gateways' chroma-ha.toml and haproxy.cfg");
    let urls = yaml_values(&text, "CHROMA_HA_LOG_URL");
    assert_eq!(urls.len(), 3, "every gateway has the log URL:\n{text}");
    assert!(
        urls.iter()
            .all(|u| u.contains(":pw-for-the-test@postgres:5432/")),
        "{urls:?}"
    );
    let (ok, refused) = compose_config(&file, &[], &[]);
    assert!(
        !ok && refused.contains("set POSTGRES_PASSWORD"),
        "without a password:\n{refused}"
    );
}

fn dockerfile() -> String {
    std::fs::read_to_string(deploy().join("Dockerfile")).expect("read deploy/Dockerfile")
}

#[test]
fn the_dockerfile_copies_files_that_exist_and_runs_the_binary_the_workspace_builds() {
    let text = dockerfile();
    let root = workspace_root();
    let mut copied = 0;
    for line in text.lines().filter(|l| l.starts_with("COPY ")) {
        let words: Vec<&str> = line.split_whitespace().skip(1).collect();
        if words.iter().any(|w| w.starts_with("--from=")) {
            continue;
        }
        // COPY src... dest: every source is relative to the context (the root).
        for src in &words[..words.len() - 1] {
            assert!(
                root.join(src).exists(),
                "the Dockerfile copies {src}, which is missing"
            );
            copied += 1;
        }
    }
    assert!(
        copied >= 3,
        "COPY of Cargo.toml, Cargo.lock and crates/:\n{text}"
    );
    let bin = chroma_ha_bin();
    let name = bin
        .file_name()
        .and_then(|n| n.to_str())
        .expect("binary name");
    assert!(
        text.contains("cargo build --release --locked -p chroma-ha"),
        "the build step"
    );
    assert!(
        text.contains(&format!("target/release/{name} /usr/local/bin/{name}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("ENTRYPOINT [\"{name}\"]")),
        "the entry point runs {name}"
    );
    let ignore = std::fs::read_to_string(root.join(".dockerignore")).expect(".dockerignore");
    for dir in ["target/", ".venv/", "data/"] {
        assert!(
            ignore.lines().any(|l| l.trim() == dir),
            ".dockerignore lacks {dir}"
        );
    }
    // Every workspace member is inside what it copies (cargo needs them
    // all, even for -p), and no source reads a file from outside crates/.
    let manifest: toml::Value = std::fs::read_to_string(root.join("Cargo.toml"))
        .expect("read Cargo.toml")
        .parse()
        .expect("Cargo.toml is TOML");
    let members = manifest["workspace"]["members"]
        .as_array()
        .expect("members");
    for m in members {
        let m = m.as_str().expect("a member path");
        assert!(
            m.starts_with("crates/"),
            "workspace member {m} is not copied"
        );
        assert_no_include_outside(&root.join(m).join("src"));
    }
    // --locked: the lock file is up to date with the manifests. Only this
    // platform's packages: the others (Windows crates) were never
    // downloaded on a fresh machine, and --offline cannot fetch them.
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(rustc)
        .arg("-vV")
        .output()
        .expect("run rustc -vV");
    let version = String::from_utf8_lossy(&version.stdout);
    let host = version
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--locked",
            "--offline",
            "--filter-platform",
            host,
            "--format-version",
            "1",
        ])
        .current_dir(&root)
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata --locked: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// No `include_str!`/`include_bytes!` under `dir` (a crate's `src/`,
/// where files sit three or more levels below the root) reaches above
/// crates/.
fn assert_no_include_outside(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("read a source dir").flatten() {
        let path = entry.path();
        if path.is_dir() && path.file_name().is_some_and(|n| n != "target") {
            assert_no_include_outside(&path);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for line in text
                .lines()
                .filter(|l| l.contains("include_str!(") || l.contains("include_bytes!("))
            {
                assert!(
                    !line.contains("../../../"),
                    "{} includes a file outside crates/, which the image does not copy: {line}",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn the_dockerfile_health_check_is_a_command_the_binary_accepts() {
    let text = dockerfile();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("CMD [\"chroma-ha\", \"status\""))
        .expect("HEALTHCHECK ... CMD [\"chroma-ha\", \"status\", ...]");
    let args: Vec<String> = serde_json::from_str(line.trim_start().trim_start_matches("CMD "))
        .expect("the health check command is a JSON list");
    // Against a port where nothing answers: 2, "the gateway does not answer".
    let url = format!("http://127.0.0.1:{}", free_port());
    let args: Vec<String> = args[1..]
        .iter()
        .map(|a| {
            if a == "http://127.0.0.1:8000" {
                url.clone()
            } else {
                a.clone()
            }
        })
        .collect();
    let out = Command::new(chroma_ha_bin())
        .args(&args)
        .output()
        .expect("run chroma-ha status");
    assert_eq!(
        out.status.code(),
        Some(2),
        "chroma-ha {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_chroma_ha_variable_the_container_files_set_is_a_setting() {
    let known = chroma_ha::config::env_names();
    let files = [
        "Dockerfile",
        "docker-compose.yml",
        "several-gateways/docker-compose.yml",
    ];
    let mut checked = 0;
    for f in files {
        let text = std::fs::read_to_string(deploy().join(f)).expect("read a deploy file");
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("CHROMA_HA_") {
                assert!(
                    known.contains(&word),
                    "deploy/{f} sets {word}, which the gateway does not read"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 10, "{checked} variables");
}
