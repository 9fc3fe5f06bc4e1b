//! Regression tests of the fixes in "replication: the repeat rule …",
//! against real Chroma 1.5.9 servers behind a real `chroma-ha` gateway:
//!
//! - an error reading the decisions at start stops the start;
//! - a refusal is recorded even when the log is full;
//! - a server added after the log dropped history is marked incomplete;
//! - listings are served in one order;
//! - a record delete with `limit` is refused and not logged.
//!
//! The tests run one at a time ([`fault_kit::serial`]): each starts Chroma
//! servers, and the machine has few cores.

mod fault_kit;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fault_kit::{
    collections_url, databases_url, gateway_env, instance, lsn_of, post_json, request_json,
    status_now, wait_caught_up, wait_until, DATABASE, T, TENANT,
};
use serde_json::{json, Value};
use support::{chroma_ha_bin, free_port, http_get, ChromaServer, GatewayProcess, HttpResponse};

const ADMIN_TOKEN: &str = "regress-admin-token-0123456789";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A gateway in front of `primary` and `replicas`, its data in `data_dir`
/// (or its own `{dir}/data`), with [`gateway_env`]`(overrides)`.
fn gateway(
    primary: &str,
    replicas: &[&str],
    data_dir: Option<&Path>,
    overrides: &[(&str, &str)],
) -> GatewayProcess {
    GatewayProcess::start(
        &chroma_ha_bin(),
        &serve_args(primary, replicas, data_dir, "{listen}"),
        &gateway_env(overrides),
    )
}

fn serve_args(
    primary: &str,
    replicas: &[&str],
    data_dir: Option<&Path>,
    listen: &str,
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "serve".into(),
        "--listen".into(),
        listen.into(),
        "--primary".into(),
        primary.into(),
    ];
    for r in replicas {
        args.push("--replica".into());
        args.push((*r).into());
    }
    args.push("--data-dir".into());
    args.push(match data_dir {
        Some(d) => d.display().to_string(),
        None => "{dir}/data".into(),
    });
    args
}

/// A URL on a loopback port nothing listens on.
fn closed_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

/// Creates collection `name` (through a gateway or directly on a server)
/// and returns its id.
fn create_collection(base: &str, database: &str, name: &str) -> String {
    let r = post_json(&collections_url(base, database), &json!({ "name": name }));
    assert_eq!(r.status, 200, "create collection {name}: {}", r.text());
    r.json()["id"].as_str().expect("collection id").to_string()
}

/// The id of collection `name` on `base`.
fn collection_id(base: &str, name: &str) -> String {
    let r = request_json(
        "GET",
        &format!("{}/{name}", collections_url(base, DATABASE)),
        None,
    );
    assert_eq!(
        r.status,
        200,
        "get collection {name} on {base}: {}",
        r.text()
    );
    r.json()["id"].as_str().expect("collection id").to_string()
}

fn records_url(base: &str, collection: &str, what: &str) -> String {
    format!("{}/{collection}/{what}", collections_url(base, DATABASE))
}

/// `add` of one record with a `dim`-dimensional embedding and a document
/// of `doc_bytes` bytes.
fn add(base: &str, collection: &str, id: &str, dim: usize, doc_bytes: usize) -> HttpResponse {
    post_json(
        &records_url(base, collection, "add"),
        &add_body(id, dim, doc_bytes),
    )
}

fn add_body(id: &str, dim: usize, doc_bytes: usize) -> Value {
    json!({
        "ids": [id],
        "embeddings": [vec![0.5f32; dim]],
        "documents": ["d".repeat(doc_bytes)],
    })
}

/// The ids of `ids` that collection `collection` on `base` holds.
fn present(base: &str, collection: &str, ids: &[&str]) -> Vec<String> {
    let r = post_json(
        &records_url(base, collection, "get"),
        &json!({ "ids": ids, "include": [] }),
    );
    assert_eq!(r.status, 200, "get on {base}: {}", r.text());
    r.json()["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect()
}

fn count(base: &str, collection: &str) -> u64 {
    let r = request_json("GET", &records_url(base, collection, "count"), None);
    assert_eq!(r.status, 200, "count on {base}: {}", r.text());
    r.json().as_u64().expect("count")
}

fn wal_status(gw: &str) -> Value {
    status_now(gw)["write_ahead_log"].clone()
}

/// The LSN the cursor file `NAME.cursor` in `data/wal/cursors` holds.
fn cursor_lsn(data: &Path, name: &str) -> u64 {
    let bytes = std::fs::read(data.join("wal/cursors").join(format!("{name}.cursor")))
        .unwrap_or_else(|e| panic!("read cursor {name}: {e}"));
    u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"))
}

/// The log's segment files, in LSN order.
fn segments(data: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data.join("wal"))
        .expect("read wal dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

/// (LSN, offset, payload length) of every record of a segment file.
fn records_of(segment: &Path) -> Vec<(u64, usize, usize)> {
    let bytes = std::fs::read(segment).expect("read segment");
    let mut out = Vec::new();
    let mut off = 16;
    while off + 16 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(bytes[off + 4..off + 8].try_into().unwrap());
        if len == 0 && crc == 0 {
            break; // the preallocated zeros after the last record
        }
        let lsn = u64::from_le_bytes(bytes[off + 8..off + 16].try_into().unwrap());
        out.push((lsn, off, len));
        off += 16 + len;
    }
    out
}

/// Flips one byte in the middle of the payload of the record at `offset`
/// (so its CRC no longer matches).
fn corrupt_record(segment: &Path, offset: usize, len: usize) {
    let mut bytes = std::fs::read(segment).expect("read segment");
    bytes[offset + 16 + len / 2] ^= 0x5a;
    std::fs::write(segment, bytes).expect("write segment");
}

/// Runs `chroma-ha serve` with `args` and `env` and expects it to exit
/// (within 30 s) without serving; returns its exit status and output.
fn serve_expecting_exit(args: &[String], env: &[(String, String)]) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("serve.log");
    let out = std::fs::File::create(&log).expect("log file");
    let err = out.try_clone().expect("clone log file");
    let mut cmd = Command::new(chroma_ha_bin());
    for name in support::inherited_gateway_env() {
        cmd.env_remove(name);
    }
    let mut child = cmd
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn chroma-ha serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chroma-ha serve did not stop within 30 s; it started despite the damage:\n{}",
                support::log_tail(&log, 40)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    (status.code().unwrap_or(-1), text)
}

// ---------------------------------------------------------------------------
// 1. Decisions at start
// ---------------------------------------------------------------------------

#[test]
fn an_error_reading_the_decisions_at_start_stops_the_start_with_a_clear_message() {
    let _serial = fault_kit::serial();
    let primary = ChromaServer::start();
    // A replica that never answers: its cursor stays at 0, so every segment
    // is kept and the decisions are read from LSN 1 at start.
    let dead = closed_url();
    let env = [("CHROMA_HA_WAL_SEGMENT_BYTES", "16KiB")];
    let mut gw = gateway(&primary.url(), &[&dead], None, &env);
    let col = create_collection(&gw.url(), DATABASE, "decisions");
    for i in 0..40 {
        let r = add(&gw.url(), &col, &format!("r{i}"), 3, 1500);
        assert_eq!(r.status, 201, "add r{i}: {}", r.text());
    }
    assert!(gw.terminate(Duration::from_secs(10)), "gateway stopped");
    let data = gw.dir().join("data");
    let segs = segments(&data);
    assert!(segs.len() >= 3, "several segments: {segs:?}");
    // Corrupt a record in the middle of a sealed segment.
    let sealed = &segs[1];
    let records = records_of(sealed);
    let (_lsn, offset, len) = records[records.len() / 2];
    corrupt_record(sealed, offset, len);
    let file = sealed.file_name().unwrap().to_string_lossy().to_string();

    let args = serve_args(
        &primary.url(),
        &[&dead],
        Some(&data),
        &format!("127.0.0.1:{}", free_port()),
    );
    let env = gateway_env(&env);
    let (code, output) = serve_expecting_exit(&args, &env);
    assert_ne!(code, 0, "serve must fail:\n{output}");
    // (The LSN it names is where the failed read began, not the damaged
    // record's; the file and offset are exact.)
    for needle in [
        "reading the decisions in the write-ahead log failed at LSN",
        "corruption in",
        file.as_str(),
        &format!("at offset {offset}"),
        "the gateway does not start",
        "chroma-ha wal verify",
    ] {
        assert!(
            output.contains(needle),
            "the message names {needle:?}; output:\n{output}"
        );
    }
}

#[test]
fn a_corrupt_record_in_the_last_segment_that_a_cursor_has_passed_stops_the_start() {
    let _serial = fault_kit::serial();
    let primary = ChromaServer::start();
    let mut gw = gateway(&primary.url(), &[], None, &[]);
    let col = create_collection(&gw.url(), DATABASE, "lastseg");
    for i in 0..10 {
        let r = add(&gw.url(), &col, &format!("r{i}"), 3, 200);
        assert_eq!(r.status, 201, "add r{i}: {}", r.text());
    }
    let last = wal_status(&gw.url())["last_lsn"]
        .as_u64()
        .expect("last_lsn");
    let data = gw.dir().join("data");
    wait_until("the primary's cursor reaches the log's end", T, || {
        cursor_lsn(&data, "primary") >= last
    });
    assert!(gw.terminate(Duration::from_secs(10)), "gateway stopped");
    let segs = segments(&data);
    let tail = segs.last().expect("a segment");
    let records = records_of(tail);
    let cursor = cursor_lsn(&data, "primary");
    let &(lsn, offset, len) = records
        .iter()
        .find(|r| r.0 == cursor / 2 + 1)
        .expect("a record the cursor passed");
    assert!(lsn <= cursor);
    corrupt_record(tail, offset, len);

    let args = serve_args(
        &primary.url(),
        &[],
        Some(&data),
        &format!("127.0.0.1:{}", free_port()),
    );
    let (code, output) = serve_expecting_exit(&args, &gateway_env(&[]));
    assert_ne!(code, 0, "serve must fail:\n{output}");
    let file = tail.file_name().unwrap().to_string_lossy().to_string();
    for needle in [
        "opening the write-ahead log",
        "corruption in",
        file.as_str(),
        &format!("at offset {offset}"),
    ] {
        assert!(
            output.contains(needle),
            "the message names {needle:?}; output:\n{output}"
        );
    }
    // Nothing was cut: the damaged record is still there.
    assert_eq!(
        records_of(tail).len(),
        records.len(),
        "the log is unchanged"
    );
}

// ---------------------------------------------------------------------------
// 2. A refusal when the log is full
// ---------------------------------------------------------------------------

#[test]
fn a_refusal_is_recorded_even_when_the_log_is_full() {
    let _serial = fault_kit::serial();
    let mut servers = ChromaServer::start_many(2);
    let replica = servers.pop().expect("two servers");
    let primary = servers.pop().expect("two servers");
    // A third server that never answers keeps its cursor at 0, so no
    // segment is ever deleted and the log's size only grows by appends.
    let dead = closed_url();
    // The collection exists on both servers (adopted by name), but only
    // the primary holds a record, so only the primary has a dimension (3):
    // an add of a 5-dimensional embedding is refused there and would
    // succeed on the replica if the refusal were lost.
    let p_col = create_collection(&primary.url(), DATABASE, "capped");
    let r_col = create_collection(&replica.url(), DATABASE, "capped");
    assert_eq!(add(&primary.url(), &p_col, "p0", 3, 10).status, 201);

    let seg = [("CHROMA_HA_WAL_SEGMENT_BYTES", "4KiB")];
    let servers = [replica.url(), dead.clone()];
    let replicas: Vec<&str> = servers.iter().map(String::as_str).collect();
    let mut gw = gateway(&primary.url(), &replicas, None, &seg);
    let data = gw.dir().join("data");
    // Fill the log past one segment (the cap must be at least that).
    let filler = create_collection(&gw.url(), DATABASE, "filler");
    let mut last = 0;
    for i in 0..6 {
        let r = add(&gw.url(), &filler, &format!("f{i}"), 3, 1000);
        assert_eq!(r.status, 201, "add f{i}: {}", r.text());
        last = lsn_of(&r);
    }
    wait_server_applied(&gw.url(), 1, last);
    let logical = collection_id(&gw.url(), "capped");
    let start = wal_status(&gw.url())["used_bytes"]
        .as_u64()
        .expect("used_bytes");
    assert!(gw.terminate(Duration::from_secs(10)), "gateway stopped");

    // The bad write's entry, as the gateway will log it (same method,
    // path, content type; a receive time of the same width).
    let path = format!("/api/v2/tenants/{TENANT}/databases/{DATABASE}/collections/{logical}/add");
    let body = add_body("bad", 5, 10).to_string();
    let entry = chroma_ha::replication::record::Entry {
        method: http::Method::POST,
        path: path.clone(),
        content_type: Some("application/json".into()),
        received_at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
        body: body.clone().into(),
    };
    let entry_bytes = 16 + entry.encode().len() as u64;
    let decision_bytes = 16
        + chroma_ha::replication::record::encode_decision(
            1,
            chroma_ha::replication::record::Refusal::Rejected,
        )
        .len() as u64;
    // Restart with a cap that leaves room for the entry and not for its
    // decision record (27 bytes); the middle of the gap absorbs a few bytes
    // of difference in the entry's encoding.
    let cap = start + entry_bytes + decision_bytes / 2;
    let cap_s = cap.to_string();
    let env = [
        ("CHROMA_HA_WAL_SEGMENT_BYTES", "4KiB"),
        ("CHROMA_HA_WAL_MAX_BYTES", cap_s.as_str()),
    ];
    let mut gw = gateway(&primary.url(), &replicas, Some(&data), &env);
    wait_until("primary and replica healthy", T, || {
        status_now(&gw.url())["healthy_instances"] == 2
    });
    let wal = wal_status(&gw.url());
    assert_eq!(wal["max_bytes"], cap, "the cap is in force: {wal}");
    assert_eq!(wal["used_bytes"], start, "the log is as it was: {wal}");

    let url = format!("{}{path}", gw.url());
    let r = support::http_request("POST", &url, Some(&body), T).expect("bad add");
    assert_eq!(
        r.status,
        400,
        "the client gets Chroma's refusal, not an unknown outcome: {} {}",
        r.status,
        r.text()
    );
    assert_eq!(r.json()["error"], "InvalidArgumentError", "{}", r.text());
    let lsn = lsn_of(&r);
    let wal = wal_status(&gw.url());
    assert!(
        wal["used_bytes"].as_u64().unwrap() > cap,
        "the decision record went past the cap: {wal}"
    );
    assert_eq!(
        wal["last_lsn"],
        lsn + 1,
        "the entry and its decision: {wal}"
    );
    // An ordinary write is refused while the log is over its cap.
    let r = add(&gw.url(), &filler, "after", 3, 10);
    assert_eq!(r.status, 507, "log full: {}", r.text());

    // After a crash the refusal still holds: no server gets the record.
    gw.kill();
    gw.restart();
    wait_server_applied(&gw.url(), 0, lsn + 1);
    wait_server_applied(&gw.url(), 1, lsn + 1);
    let s = status_now(&gw.url());
    assert_eq!(s["write_ahead_log"]["dead_letters"], 0, "{s}");
    assert_eq!(
        present(&primary.url(), &p_col, &["bad"]),
        Vec::<String>::new()
    );
    assert_eq!(
        present(&replica.url(), &r_col, &["bad"]),
        Vec::<String>::new(),
        "the refused record reached the replica"
    );
    assert_eq!(count(&replica.url(), &r_col), 0);
}

/// Waits until server number `index` of `/status` has applied up to `lsn`.
fn wait_server_applied(gw: &str, index: usize, lsn: u64) {
    wait_until(
        &format!("server {index} applied LSN {lsn}"),
        Duration::from_secs(30),
        || {
            fault_kit::status(gw).is_some_and(|s| {
                s["instances"][index]["applied_lsn"]
                    .as_u64()
                    .is_some_and(|a| a >= lsn)
            })
        },
    );
}

/// Waits until `n` servers are healthy.
fn wait_healthy(gw: &str, n: usize) {
    wait_until(
        &format!("{n} servers healthy"),
        Duration::from_secs(30),
        || fault_kit::status(gw).is_some_and(|s| s["healthy_instances"] == n),
    );
}

// ---------------------------------------------------------------------------
// 4. Servers that join late
// ---------------------------------------------------------------------------

fn metrics(gw: &str) -> String {
    http_get(&format!("{gw}/metrics"), T)
        .expect("metrics")
        .text()
}

fn admin(gw: &str, path: &str) -> HttpResponse {
    fault_kit::admin_request("POST", &format!("{gw}/admin/{path}"), Some(ADMIN_TOKEN))
}

fn history_incomplete(gw: &str, name: &str) -> bool {
    instance(&status_now(gw), name)["history_incomplete"]
        .as_bool()
        .expect("history_incomplete")
}

fn backend_of(r: &HttpResponse) -> String {
    r.header("x-chroma-ha-backend")
        .unwrap_or_else(|| panic!("no x-chroma-ha-backend: {} {}", r.status, r.text()))
        .to_string()
}

#[test]
fn a_server_added_after_the_log_dropped_part_of_its_history_is_reported_never_silently_treated_as_complete(
) {
    let _serial = fault_kit::serial();
    let primary = ChromaServer::start();
    let env = [
        ("CHROMA_HA_WAL_SEGMENT_BYTES", "4KiB"),
        ("CHROMA_HA_ADMIN_TOKEN", ADMIN_TOKEN),
        // Reads would go to the replica whenever it qualifies.
        ("CHROMA_HA_READ_REPLICA_RATIO", "1"),
    ];
    let mut first = gateway(&primary.url(), &[], None, &env);
    let data = first.dir().join("data");
    let col = create_collection(&first.url(), DATABASE, "history");
    for i in 0..16 {
        let r = add(&first.url(), &col, &format!("h{i}"), 3, 1000);
        assert_eq!(r.status, 201, "add h{i}: {}", r.text());
    }
    wait_until("the first segment is deleted", T, || {
        wal_status(&first.url())["first_lsn"].as_u64().unwrap_or(0) > 1
    });
    assert!(first.terminate(Duration::from_secs(10)), "gateway stopped");

    // A new, empty replica joins.
    let replica = ChromaServer::start();
    let mut gw = gateway(&primary.url(), &[&replica.url()], Some(&data), &env);
    let s = status_now(&gw.url());
    let name = s["instances"][1]["name"]
        .as_str()
        .expect("name")
        .to_string();
    assert!(s["write_ahead_log"]["first_lsn"].as_u64().unwrap() > 1);
    assert!(history_incomplete(&gw.url(), &name), "marked: {s}");
    assert!(instance(&s, "primary")["history_incomplete"] == false);
    let m = metrics(&gw.url());
    assert!(
        m.contains(&format!(
            "chroma_ha_server_history_incomplete{{server=\"{name}\"}} 1"
        )),
        "metric; got:\n{m}"
    );
    assert!(
        gw.log()
            .contains("joined after the log dropped part of its history"),
        "a warning is logged"
    );
    wait_caught_up(&gw.url(), Duration::from_secs(30));

    // It serves no reads...
    for _ in 0..30 {
        let r = request_json("GET", &records_url(&gw.url(), &col, "count"), None);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            backend_of(&r),
            "primary",
            "a read went to the incomplete server"
        );
    }
    // ...and executes nothing, even when it is the only healthy server.
    assert_eq!(admin(&gw.url(), "servers/primary/drain").status, 200);
    assert_eq!(status_now(&gw.url())["executor"], Value::Null);
    let r = add(&gw.url(), &col, "while-drained", 3, 10);
    assert_eq!(r.status, 503, "no executor: {}", r.text());
    let r = request_json("GET", &records_url(&gw.url(), &col, "count"), None);
    assert_eq!(r.status, 503, "no reader: {}", r.text());
    assert_eq!(admin(&gw.url(), "servers/primary/undrain").status, 200);
    wait_until("primary healthy again", T, || {
        instance(&status_now(&gw.url()), "primary")["healthy"] == true
    });

    // The mark survives a restart (it is in operator.json).
    gw.terminate(Duration::from_secs(10));
    gw.restart();
    assert!(
        history_incomplete(&gw.url(), &name),
        "still marked after a restart"
    );

    // An operator marks it complete; that survives a restart too.
    let r = admin(&gw.url(), &format!("servers/{name}/complete"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["history_incomplete"], false);
    assert!(!history_incomplete(&gw.url(), &name));
    assert!(metrics(&gw.url()).contains(&format!(
        "chroma_ha_server_history_incomplete{{server=\"{name}\"}} 0"
    )));
    gw.terminate(Duration::from_secs(10));
    gw.restart();
    assert!(!history_incomplete(&gw.url(), &name), "cleared for good");
    wait_caught_up(&gw.url(), Duration::from_secs(30));
    // Now it may execute (the primary drained). (This test never filled
    // it, so it still lacks the collection of the dropped history: the
    // write is a new collection.)
    assert_eq!(admin(&gw.url(), "servers/primary/drain").status, 200);
    assert_eq!(status_now(&gw.url())["executor"], name.as_str());
    let r = post_json(
        &collections_url(&gw.url(), DATABASE),
        &json!({ "name": "after-complete" }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(backend_of(&r), name);
    drop(first);
}

#[test]
fn a_server_added_while_the_log_still_holds_everything_is_not_marked_incomplete() {
    let _serial = fault_kit::serial();
    let primary = ChromaServer::start();
    let mut first = gateway(&primary.url(), &[], None, &[]);
    let data = first.dir().join("data");
    let col = create_collection(&first.url(), DATABASE, "complete");
    for i in 0..5 {
        assert_eq!(
            add(&first.url(), &col, &format!("c{i}"), 3, 100).status,
            201
        );
    }
    assert_eq!(wal_status(&first.url())["first_lsn"], 1);
    assert!(first.terminate(Duration::from_secs(10)), "gateway stopped");

    let replica = ChromaServer::start();
    let gw = gateway(&primary.url(), &[&replica.url()], Some(&data), &[]);
    let s = status_now(&gw.url());
    let name = s["instances"][1]["name"]
        .as_str()
        .expect("name")
        .to_string();
    assert!(!history_incomplete(&gw.url(), &name), "not marked: {s}");
    assert!(metrics(&gw.url()).contains(&format!(
        "chroma_ha_server_history_incomplete{{server=\"{name}\"}} 0"
    )));
    // The log brings it up to date.
    wait_caught_up(&gw.url(), Duration::from_secs(30));
    let r_col = collection_id(&replica.url(), "complete");
    assert_eq!(count(&replica.url(), &r_col), 5);
    drop(first);
}

// ---------------------------------------------------------------------------
// 5. Listings
// ---------------------------------------------------------------------------

fn names(listing: &Value) -> Vec<String> {
    listing
        .as_array()
        .unwrap_or_else(|| panic!("a listing: {listing}"))
        .iter()
        .map(|c| format!("{}:{}", c["name"].as_str().unwrap_or(""), c["id"]))
        .collect()
}

fn get_json(url: &str) -> Value {
    let r = request_json("GET", url, None);
    assert_eq!(r.status, 200, "GET {url}: {}", r.text());
    r.json()
}

#[test]
fn listings_of_collections_and_databases_agree_in_one_order_paged_or_not() {
    let _serial = fault_kit::serial();
    let mut servers = ChromaServer::start_many(2);
    let replica = servers.pop().expect("two servers");
    let primary = servers.pop().expect("two servers");
    let names_in = |base: &str| -> Vec<String> {
        get_json(&collections_url(base, DATABASE))
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    // The same collections and databases on both servers, created in
    // opposite orders (each server gives them its own ids).
    let cols: Vec<String> = (0..8).map(|i| format!("list{i}")).collect();
    let dbs: Vec<String> = (0..4).map(|i| format!("db{i}")).collect();
    for c in &cols {
        create_collection(&primary.url(), DATABASE, c);
    }
    for c in cols.iter().rev() {
        create_collection(&replica.url(), DATABASE, c);
    }
    for (server, order) in [
        (&primary, dbs.clone()),
        (&replica, dbs.iter().rev().cloned().collect()),
    ] {
        for d in order {
            let r = post_json(&databases_url(&server.url()), &json!({ "name": d }));
            assert_eq!(r.status, 200, "create database {d}: {}", r.text());
        }
    }
    assert_ne!(
        names_in(&primary.url()),
        names_in(&replica.url()),
        "the servers list the collections in different orders"
    );

    let gw = gateway(&primary.url(), &[&replica.url()], None, &[]);
    let g = gw.url();
    wait_healthy(&g, 2);
    let list_url = collections_url(&g, DATABASE);
    let first = get_json(&list_url);
    let unpaged = names(&first);
    assert_eq!(unpaged.len(), cols.len(), "{first}");
    let databases = get_json(&databases_url(&g));
    assert_eq!(databases.as_array().unwrap().len(), dbs.len() + 1);
    for round in 0..20 {
        assert_eq!(
            names(&get_json(&list_url)),
            unpaged,
            "round {round}: an unpaged listing in another order"
        );
        let mut paged = Vec::new();
        for offset in (0..cols.len()).step_by(3) {
            let page = get_json(&format!("{list_url}?limit=3&offset={offset}"));
            paged.extend(names(&page));
        }
        assert_eq!(
            paged, unpaged,
            "round {round}: the pages differ from the listing"
        );
        assert_eq!(
            get_json(&databases_url(&g)),
            databases,
            "round {round}: another database listing"
        );
        let page = get_json(&format!("{}?limit=2&offset=1", databases_url(&g)));
        assert_eq!(
            page.as_array().unwrap()[..],
            databases.as_array().unwrap()[1..3],
            "round {round}: a page of databases"
        );
    }
}

// ---------------------------------------------------------------------------
// 6. Delete with limit
// ---------------------------------------------------------------------------

#[test]
fn a_record_delete_with_limit_is_refused_with_a_clear_400_and_nothing_is_logged() {
    let _serial = fault_kit::serial();
    let mut servers = ChromaServer::start_many(2);
    let replica = servers.pop().expect("two servers");
    let primary = servers.pop().expect("two servers");
    let gw = gateway(&primary.url(), &[&replica.url()], None, &[]);
    let g = gw.url();
    let col = create_collection(&g, DATABASE, "limited");
    for i in 0..4 {
        let r = post_json(
            &records_url(&g, &col, "add"),
            &json!({
                "ids": [format!("k{i}")],
                "embeddings": [[0.1, 0.2, 0.3]],
                "metadatas": [{ "kind": "x" }],
            }),
        );
        assert_eq!(r.status, 201, "{}", r.text());
    }
    wait_caught_up(&g, Duration::from_secs(30));
    let before = wal_status(&g)["last_lsn"].clone();

    for body in [
        json!({ "where": { "kind": "x" }, "limit": 1 }),
        json!({ "ids": ["k0", "k1"], "limit": 1 }),
        json!({ "where": { "kind": "x" }, "limit": 2, "offset": 0 }),
    ] {
        let r = post_json(&records_url(&g, &col, "delete"), &body);
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        let e = r.json();
        assert_eq!(e["error"], "InvalidArgumentError", "{}", r.text());
        assert!(
            e["message"].as_str().unwrap_or("").contains("limit"),
            "the message says why: {e}"
        );
        assert!(r.header("x-chroma-ha-lsn").is_none(), "not logged: {body}");
    }
    assert_eq!(wal_status(&g)["last_lsn"], before, "the log is unchanged");
    for (server, name) in [(&primary, "primary"), (&replica, "replica")] {
        let id = collection_id(&server.url(), "limited");
        assert_eq!(count(&server.url(), &id), 4, "{name} unchanged");
    }
    // A delete without limit still works.
    let r = post_json(
        &records_url(&g, &col, "delete"),
        &json!({ "where": { "kind": "x" }, "limit": null }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("x-chroma-ha-lsn").is_some());
}
