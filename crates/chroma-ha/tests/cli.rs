//! Tests of the `chroma-ha` binary as an operator uses it: `--help`, exit
//! codes and messages of `serve` on bad settings, `wal verify|inspect` on
//! real log directories, `status` against a stand-in gateway, and `check`
//! against two real Chroma servers.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{block_on, http_request, inherited_gateway_env, ChromaServer};

const BIN: &str = env!("CARGO_BIN_EXE_chroma-ha");
const T: Duration = Duration::from_secs(10);

/// Runs the binary with `args` and extra `env`, killing it (by its PID) if it
/// runs longer than `limit`.
fn run(args: &[&str], env: &[(&str, &str)], limit: Duration) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for name in inherited_gateway_env() {
        cmd.env_remove(name);
    }
    cmd.envs(env.iter().copied());
    let mut child = cmd.spawn().expect("spawn chroma-ha");
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("collect output");
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect output");
            panic!(
                "chroma-ha {args:?} still running after {limit:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        stdout(out),
        stderr(out)
    )
}

// ---------------------------------------------------------------- --help

#[test]
fn help_lists_every_command() {
    let out = run(&["--help"], &[], T);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let text = stdout(&out);
    for cmd in ["serve", "status", "check", "wal"] {
        assert!(text.contains(cmd), "--help does not mention {cmd}:\n{text}");
    }
    for sub in [
        &["serve", "--help"][..],
        &["status", "--help"],
        &["check", "--help"],
        &["wal", "inspect", "--help"],
        &["wal", "verify", "--help"],
    ] {
        let out = run(sub, &[], T);
        assert_eq!(code(&out), 0, "{sub:?}: {}", describe(&out));
    }
    let out = run(&["check", "--help"], &[], T);
    for flag in ["--server", "--tenant", "--database", "--header", "--json"] {
        assert!(stdout(&out).contains(flag), "check --help lacks {flag}");
    }
    let out = run(&["status", "--help"], &[], T);
    for flag in ["--url", "--json", "CHROMA_HA_URL"] {
        assert!(stdout(&out).contains(flag), "status --help lacks {flag}");
    }
}

#[test]
fn an_unknown_command_is_a_usage_error() {
    let out = run(&["frobnicate"], &[], T);
    assert_eq!(code(&out), 2, "{}", describe(&out));
}

// ---------------------------------------------------------------- serve

#[test]
fn serve_with_a_non_http_primary_exits_2_naming_the_setting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let out = run(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--primary",
            "ftp://x",
            "--data-dir",
            data.to_str().expect("utf-8 path"),
        ],
        &[],
        T,
    );
    assert_eq!(code(&out), 2, "{}", describe(&out));
    let err = stderr(&out);
    assert!(err.contains("--primary"), "{err}");
    assert!(err.contains("ftp://x"), "{err}");
}

#[test]
fn serve_with_a_bad_legacy_check_interval_exits_2_naming_the_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let out = run(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--primary",
            "http://127.0.0.1:9",
            "--data-dir",
            data.to_str().expect("utf-8 path"),
        ],
        &[("CHECK_INTERVAL", "abc")],
        T,
    );
    assert_eq!(code(&out), 2, "{}", describe(&out));
    let err = stderr(&out);
    assert!(err.contains("CHECK_INTERVAL"), "{err}");
    assert!(err.contains("abc"), "{err}");
}

#[test]
fn serve_without_a_primary_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let out = run(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().expect("utf-8 path"),
        ],
        &[],
        T,
    );
    assert_eq!(code(&out), 2, "{}", describe(&out));
    assert!(stderr(&out).contains("primary"), "{}", describe(&out));
}

// ---------------------------------------------------------------- wal

const SEGMENT_BYTES: u64 = 4096;

fn payload(i: u64) -> Vec<u8> {
    format!("record-{i}-{}", "x".repeat(100)).into_bytes()
}

/// Writes `n` records into a fresh log at `dir` (4 KiB segments) and commits
/// cursor `primary` at `primary_at`; returns the segment files in order.
fn make_log(dir: &Path, n: u64, primary_at: u64) -> Vec<PathBuf> {
    block_on(async {
        let options = wal::WalOptions {
            sync: wal::SyncPolicy::Always,
            segment_bytes: SEGMENT_BYTES,
            ..wal::WalOptions::default()
        };
        let (log, _) = wal::Wal::open(dir, options).expect("open log");
        for i in 1..=n {
            assert_eq!(log.append(payload(i)).await.expect("append"), i);
        }
        let cursor = log.cursor("primary").await.expect("cursor");
        cursor.commit(primary_at).await.expect("commit cursor");
        drop(cursor);
        drop(log);
    });
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read log dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    files.sort();
    files
}

#[test]
fn wal_verify_on_a_fresh_log_exits_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = make_log(dir.path(), 100, 0);
    assert!(files.len() >= 2, "expected several segments: {files:?}");
    let out = run(
        &["wal", "verify", dir.path().to_str().expect("utf-8")],
        &[],
        T,
    );
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.contains("100 record(s)"), "{text}");
    assert!(text.contains("LSN 1..=100"), "{text}");
}

#[test]
fn wal_verify_with_a_flipped_byte_in_a_sealed_segment_exits_1_naming_file_and_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = make_log(dir.path(), 100, 0);
    assert!(files.len() >= 2, "expected several segments: {files:?}");
    let sealed = &files[0];
    // Segment header (16 bytes), then the first record: 16 bytes of frame
    // header and its payload. Damage a payload byte of that first record.
    let mut bytes = std::fs::read(sealed).expect("read segment");
    bytes[16 + 16 + 3] ^= 0x5a;
    std::fs::write(sealed, bytes).expect("write segment");

    let out = run(
        &["wal", "verify", dir.path().to_str().expect("utf-8")],
        &[],
        T,
    );
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let all = format!("{}{}", stdout(&out), stderr(&out));
    let name = sealed
        .file_name()
        .expect("file name")
        .to_string_lossy()
        .into_owned();
    assert!(all.contains(&name), "file {name} not named:\n{all}");
    assert!(
        all.contains("offset 16"),
        "offset of the record not given:\n{all}"
    );
}

#[test]
fn wal_inspect_json_lists_segments_and_cursors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = make_log(dir.path(), 100, 42);
    let out = run(
        &[
            "wal",
            "inspect",
            "--json",
            dir.path().to_str().expect("utf-8"),
        ],
        &[],
        T,
    );
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let v: Value = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", describe(&out)));
    let segments = v["segments"].as_array().expect("segments array");
    assert_eq!(segments.len(), files.len(), "{v:#}");
    // Segments entirely below the cursor may already be deleted; what is
    // left is listed with the first LSN its name carries, and ends at 100.
    for (seg, file) in segments.iter().zip(&files) {
        let name = file.file_name().expect("name").to_string_lossy();
        let first: u64 = name.trim_end_matches(".wal").parse().expect("LSN name");
        assert_eq!(seg["file"], json!(name), "{v:#}");
        assert_eq!(seg["first_lsn"], json!(first), "{v:#}");
    }
    assert!(
        segments[0]["first_lsn"].as_u64().expect("first_lsn") <= 43,
        "records after the cursor must be kept: {v:#}"
    );
    assert_eq!(
        segments.last().expect("a segment")["last_lsn"],
        json!(100),
        "{v:#}"
    );
    assert!(
        segments.iter().all(|s| s["bytes"].as_u64().is_some()),
        "{v:#}"
    );
    assert_eq!(v["cursors"]["primary"], json!(42), "{v:#}");
    let total: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).expect("metadata").len())
        .sum();
    assert_eq!(v["total_bytes"], json!(total), "{v:#}");

    // The table form names the same things.
    let out = run(
        &["wal", "inspect", dir.path().to_str().expect("utf-8")],
        &[],
        T,
    );
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert!(
        stdout(&out).contains("cursor primary"),
        "{}",
        describe(&out)
    );
}

#[test]
fn wal_verify_of_a_missing_directory_is_an_error_not_a_success() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope");
    let out = run(&["wal", "verify", missing.to_str().expect("utf-8")], &[], T);
    assert_ne!(code(&out), 0, "{}", describe(&out));
}

// ---------------------------------------------------------------- status

/// A stand-in gateway: answers every request with `status` and `body`
/// (JSON), until the test ends. Returns its base URL.
fn fake_gateway(status: u16, body: Value) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake gateway");
    let url = format!(
        "http://{}",
        listener.local_addr().expect("fake gateway address")
    );
    std::thread::spawn(move || {
        let body = body.to_string();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let reply = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    url
}

fn status_body(ready: bool) -> Value {
    json!({
        "service": "chroma-ha", "version": "0.1.0", "ready": ready,
        "executor": if ready { json!("primary") } else { Value::Null },
        "healthy_instances": if ready { 2 } else { 0 }, "total_instances": 2,
        "write_ahead_log": {
            "pending_writes": 0, "is_replaying": false, "oldest_pending": null,
            "total_replayed": 0, "failed_replays": 0, "first_lsn": 1, "last_lsn": 17,
            "used_bytes": 4096, "max_bytes": 10737418240u64, "segments": 1,
            "fsync": "always", "dead_letters": 0
        },
        "instances": [
            {"name": "primary", "url": "http://127.0.0.1:8001", "role": "primary",
             "healthy": ready, "state": if ready { "healthy" } else { "unhealthy" },
             "success_rate": 1.0, "total_requests": 5, "last_health_check": null,
             "applied_lsn": 17, "lag_entries": 0, "lag_seconds": 0.0,
             "applier": "running", "dead_letters": 0, "last_error": null},
            {"name": "replica", "url": "http://127.0.0.1:8002", "role": "replica",
             "healthy": ready, "state": if ready { "healthy" } else { "unhealthy" },
             "success_rate": 1.0, "total_requests": 5, "last_health_check": null,
             "applied_lsn": 12, "lag_entries": 5, "lag_seconds": 1.5,
             "applier": "running", "dead_letters": 0, "last_error": null}
        ]
    })
}

#[test]
fn status_of_a_ready_gateway_exits_0_and_summarizes() {
    let url = fake_gateway(200, status_body(true));
    let out = run(&["status", "--url", &url], &[], T);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.contains("READY"), "{text}");
    assert!(text.contains("2/2 healthy"), "{text}");
    let replica = text
        .lines()
        .find(|l| l.starts_with("replica"))
        .unwrap_or_else(|| panic!("no replica row:\n{text}"));
    assert!(
        replica.contains("12") && replica.contains('5') && replica.contains("1.5"),
        "{replica}"
    );
    assert!(text.contains("log: LSN 1..17"), "{text}");

    // --json prints the gateway's JSON; the URL may come from CHROMA_HA_URL.
    let out = run(&["status", "--json"], &[("CHROMA_HA_URL", &url)], T);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).expect("JSON output");
    assert_eq!(v, status_body(true));
}

#[test]
fn status_of_a_gateway_that_is_not_ready_exits_1() {
    let url = fake_gateway(503, status_body(false));
    let out = run(&["status", "--url", &url], &[], T);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    assert!(stdout(&out).contains("NOT READY"), "{}", describe(&out));
}

#[test]
fn status_of_an_unreachable_gateway_exits_2() {
    // A port that was free a moment ago: nothing listens there.
    let port = support::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let out = run(&["status", "--url", &url, "--timeout", "3"], &[], T);
    assert_eq!(code(&out), 2, "{}", describe(&out));
    assert!(stderr(&out).contains("cannot reach"), "{}", describe(&out));
}

#[test]
fn status_of_something_that_is_not_a_gateway_exits_2() {
    let url = fake_gateway(200, json!({"nanosecond heartbeat": 1}));
    let out = run(&["status", "--url", &url], &[], T);
    assert_eq!(code(&out), 2, "{}", describe(&out));
}

// ---------------------------------------------------------------- check

fn coll_url(server: &ChromaServer) -> String {
    format!(
        "{}/api/v2/tenants/default_tenant/databases/default_database/collections",
        server.url()
    )
}

fn post(url: &str, body: Value) -> Value {
    let r = http_request("POST", url, Some(&body.to_string()), T).expect("POST");
    assert!(
        (200..300).contains(&r.status),
        "POST {url} -> {}: {}",
        r.status,
        r.text()
    );
    r.json()
}

/// Creates collection `name` on `server` and adds `records` to it (explicit
/// embeddings).
fn seed(server: &ChromaServer, name: &str, records: &[(&str, [f32; 3], &str)]) -> String {
    let c = post(
        &coll_url(server),
        json!({"name": name, "metadata": {"purpose": "cli test"}}),
    );
    let id = c["id"].as_str().expect("collection id").to_string();
    add(server, &id, records);
    id
}

fn add(server: &ChromaServer, id: &str, records: &[(&str, [f32; 3], &str)]) {
    post(
        &format!("{}/{id}/add", coll_url(server)),
        json!({
            "ids": records.iter().map(|r| r.0).collect::<Vec<_>>(),
            "embeddings": records.iter().map(|r| r.1.to_vec()).collect::<Vec<_>>(),
            "documents": records.iter().map(|r| r.2).collect::<Vec<_>>(),
            "metadatas": records.iter().map(|r| json!({"doc": r.2})).collect::<Vec<_>>(),
        }),
    );
}

#[test]
fn check_exits_0_for_identical_servers_and_1_after_a_direct_write_to_one() {
    let servers = ChromaServer::start_many(2);
    let (a, b) = (&servers[0], &servers[1]);
    let records = [
        ("r1", [0.1, 0.2, 0.3], "first"),
        ("r2", [0.4, 0.5, 0.6], "second"),
    ];
    seed(a, "books", &records);
    let id_b = seed(b, "books", &records);
    let (ua, ub) = (a.url(), b.url());
    let limit = Duration::from_secs(60);

    let out = run(&["check", "--server", &ua, "--server", &ub], &[], limit);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert!(stdout(&out).starts_with("IDENTICAL"), "{}", describe(&out));

    // A record written to one server only (behind any gateway's back).
    add(b, &id_b, &[("r3", [0.7, 0.8, 0.9], "third")]);
    let out = run(
        &[
            "check",
            "--server",
            &ua,
            "--server",
            &ub,
            "--tenant",
            "default_tenant",
        ],
        &[],
        limit,
    );
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.starts_with("DIFFERENT"), "{text}");
    assert!(
        text.contains("books") && text.contains("r3"),
        "the difference is not named:\n{text}"
    );

    // The same as JSON, limited to one database.
    let out = run(
        &[
            "check",
            "--server",
            &ua,
            "--server",
            &ub,
            "--database",
            "default_database",
            "--json",
        ],
        &[],
        limit,
    );
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let v: Value = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", describe(&out)));
    assert_eq!(v["identical"], json!(false), "{v:#}");
    let diffs = v["differences"].as_array().expect("differences");
    assert!(
        diffs
            .iter()
            .any(|d| d["collection"] == json!("books") && d["record_id"] == json!("r3")),
        "{v:#}"
    );
}

#[test]
fn check_with_an_unreachable_server_exits_2() {
    let port = support::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let out = run(
        &[
            "check",
            "--server",
            &url,
            "--server",
            &url,
            "--timeout",
            "3",
        ],
        &[],
        T,
    );
    assert_eq!(code(&out), 2, "{}", describe(&out));
    assert!(!stderr(&out).is_empty(), "{}", describe(&out));
}

#[test]
fn check_needs_two_servers_and_well_formed_headers() {
    let out = run(&["check", "--server", "http://127.0.0.1:9"], &[], T);
    assert_eq!(code(&out), 2, "{}", describe(&out));
    assert!(stderr(&out).contains("at least two"), "{}", describe(&out));
    let out = run(
        &[
            "check",
            "--server",
            "http://127.0.0.1:9",
            "--server",
            "http://127.0.0.1:9",
            "--header",
            "no colon here",
        ],
        &[],
        T,
    );
    assert_eq!(code(&out), 2, "{}", describe(&out));
    assert!(stderr(&out).contains("Name: value"), "{}", describe(&out));
}
