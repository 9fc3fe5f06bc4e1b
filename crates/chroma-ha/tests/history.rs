//! A randomized, seeded, model-based whole-system test in the spirit of
//! Jepsen: concurrent clients send a random mix over the whole write API
//! (and strong reads) through a real gateway in front of two real Chroma
//! servers, while the gateway, the primary and the replica are SIGKILLed at
//! random (seeded) moments and restarted. Every operation is recorded
//! (request, answer or connection error, `x-chroma-ha-lsn`, start and end).
//!
//! Afterwards the gateway is stopped and its log read: it orders every
//! write, refusal records say which were refused, and the writes whose
//! answer never came are found there by their (unique) request. The log is
//! replayed on an in-memory model of Chroma 1.5.9 (`history_kit/model.rs`),
//! and the checker (`history_kit/checker.rs`) requires: (a) every server's
//! content, read directly, equals the model's and the servers are
//! identical; (b) nothing a client was told failed is applied; (c) every
//! acknowledged write succeeds in the model at its LSN, every refused one
//! fails there; (d) every strong read matches the model at some LSN at or
//! after every write acknowledged before it started; (e) no server
//! refused a committed write (the gateway's dead letters). It prints a
//! `HISTORY-SUMMARY` line per run; on failure the seed and an account of
//! each violation.
//!
//! The whole file runs in CI, about 3 minutes on the 2-core VM:
//!
//! ```text
//! cargo test -p chroma-ha --test history -- --nocapture
//! ```
//!
//! Bugs it found, each kept as a deterministic regression test:
//! - a database delete whose execution ended in doubt, replayed and found
//!   already done, was answered 200 where Chroma says 404
//!   (`tests/in_doubt_answers.rs`);
//! - an entry in doubt that every server then refused stayed a dead letter
//!   on every server (`tests/in_doubt_answers.rs`);
//! - a collection created and deleted on one server before a lagging server
//!   applied its create lost its id mapping there, and a lagging server's
//!   database delete forgot collections created after it: replica 404s on
//!   every later write to them (unit tests in `replication/idmap.rs`);
//! - a copy found by a listing on a lagging server was linked to the newest
//!   collection of its name, not the oldest it had yet to link; and a
//!   collection adopted by name before its create was learned had no
//!   creating LSN, so a lagging server's delete of an earlier database
//!   marked it gone there: replica 404s again (unit tests in
//!   `replication/idmap.rs`, found with seeds 101 and 404);
//! - (on the PostgreSQL log) appends queued behind the lookup of a lost
//!   commit instead of being refused at once (`pglog/tests/lost_commit.rs`).
//!
//! It also taught the checker one Chroma behaviour: a read racing its
//! collection's delete may see the collection empty (`reads.rs`).
//!
//! The tests:
//! - `the_model_agrees_with_one_chroma_server_and_the_checker_catches_planted_faults`:
//!   one client straight against one Chroma server (no gateway) validates
//!   the model; the same history with a planted lost record, committed
//!   refusal and stale read must fail the checker;
//! - `a_fault_free_history_matches_the_model`: 4 clients through the
//!   gateway for 8 s, no faults;
//! - `histories_with_gateway_and_server_kills_match_the_model`: seeds 101,
//!   202, 303 × 7 crash rounds (21 rounds);
//! - `a_history_with_the_log_in_postgres_and_kills_matches_the_model`: seed
//!   404 × 7 crash rounds with the log and all state in PostgreSQL;
//! - `a_history_through_three_gateways_sharing_the_log_with_kills_matches_the_model`:
//!   seed 505 × 10 crash rounds, three gateways on one PostgreSQL log, each
//!   client sending to one of them, any gateway killed (leader or
//!   follower) as well as the servers.
//!
//! Long mode: one run with the given seed (`random` picks one and prints
//! it) and as many crash rounds as asked:
//!
//! ```text
//! HISTORY_SEED=random HISTORY_ROUNDS=100 cargo test -p chroma-ha --test history \
//!     histories_with -- --nocapture
//! ```
//!
//! `HISTORY_CLIENTS` (default 4) sets the number of concurrent clients;
//! `HISTORY_DUMP=/tmp/h` writes each run's log and operations to
//! `/tmp/h.<seed>` for diagnosis; `CHROMA_HA_KEEP_TEST_DIRS=1` keeps the
//! gateway's log and data. A failing run is repeated (as far as the timing
//! of a real system allows) with `HISTORY_SEED=<its seed>
//! HISTORY_ROUNDS=<its rounds>`.

mod fault_kit;
mod history_kit;
mod support;

use std::time::{Duration, Instant};

use fault_kit::trio::Trio;
use fault_kit::{serial, wait_caught_up, Cluster, Deployment};
use history_kit::checker::{check, Report};
use history_kit::sources::{read_log, read_server, LogAt, Logged};
use history_kit::workload::Clients;
use history_kit::OpResult;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::ChromaServer;

/// The gateway's log segments: large enough that nothing is truncated.
const SEGMENT: &str = "32MiB";
const SEGMENT_BYTES: u64 = 32 << 20;
/// Seeds and rounds of CI mode.
const CI_SEEDS: [u64; 3] = [101, 202, 303];
const CI_ROUNDS: usize = 7;
/// Crash rounds of the three-gateway history in CI.
const THREE_GATEWAY_ROUNDS: usize = 10;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `HISTORY_SEED`: a number, or `random` (one is picked and printed);
/// `None` when unset (CI mode).
fn history_seed() -> Option<u64> {
    let s = std::env::var("HISTORY_SEED")
        .ok()
        .filter(|s| !s.is_empty())?;
    let seed = if s == "random" {
        rand::rng().random_range(1..1_000_000)
    } else {
        s.parse().expect("HISTORY_SEED is a number or `random`")
    };
    eprintln!("HISTORY_SEED={seed}");
    Some(seed)
}

/// One run: what happened and what the checker found.
struct Run {
    seed: u64,
    rounds: usize,
    report: Report,
    faults: Vec<String>,
    /// The gateway's dead letters at the end.
    dead: Vec<String>,
    took: Duration,
}

/// One line per dead letter of a `dead_letters.json` or admin listing.
/// The dead letters a stopped gateway left in `data`: one metadata file per
/// letter in `dead_letters/` (each `{"letter": {...}, ...}`).
fn stored_dead_letters(data: &std::path::Path) -> serde_json::Value {
    let mut letters = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(data.join("dead_letters"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    paths.sort();
    for path in paths
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
    {
        if let Some(v) = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        {
            letters.push(v.get("letter").cloned().unwrap_or(v));
        }
    }
    serde_json::Value::Array(letters)
}

fn dead_letter_lines(v: &serde_json::Value) -> Vec<String> {
    let items = v
        .as_array()
        .or_else(|| v["dead_letters"].as_array())
        .cloned()
        .unwrap_or_default();
    items
        .iter()
        .map(|d| {
            format!(
                "dead letter: server {} LSN {} {} {} -> {} {}",
                d["server"].as_str().unwrap_or("?"),
                d["lsn"],
                d["method"].as_str().unwrap_or("?"),
                history_kit::short_path(d["path"].as_str().unwrap_or("?")),
                d["status"],
                history_kit::clip(&d["error"].to_string(), 160)
            )
        })
        .collect()
}

impl Run {
    fn summary(&self) -> String {
        let r = &self.report;
        format!(
            "HISTORY-SUMMARY seed={} rounds={} ops={} writes={} acked={} failed={} (not_sent={}) \
             unknown={} reads={} reads_checked={} log_entries={} refused={} transient_refusals={} \
             violations={} dead_letters={} took={:.1}s faults=[{}]",
            self.seed,
            self.rounds,
            r.acked + r.failed + r.unknown + r.reads,
            r.acked + r.failed + r.unknown,
            r.acked,
            r.failed,
            r.not_sent,
            r.unknown,
            r.reads,
            r.reads_checked,
            r.entries,
            r.refused,
            r.transient_refusals,
            r.violations.len(),
            self.dead.len(),
            self.took.as_secs_f64(),
            self.faults.join(" ")
        )
    }

    fn account(&self) -> String {
        let shown: Vec<&String> = self.report.violations.iter().take(12).collect();
        format!(
            "history with seed {} ({} rounds; rerun with HISTORY_SEED={} HISTORY_ROUNDS={}) \
             found {} violation(s); faults: {}\n{}{}",
            self.seed,
            self.rounds,
            self.seed,
            self.rounds,
            self.report.violations.len(),
            self.faults.join(", "),
            shown.iter().map(|v| format!("- {v}\n")).collect::<String>(),
            if self.report.violations.len() > shown.len() {
                format!(
                    "... and {} more\n",
                    self.report.violations.len() - shown.len()
                )
            } else {
                String::new()
            }
        )
    }
}

fn sleep_ms(rng: &mut StdRng, lo: u64, hi: u64) {
    std::thread::sleep(Duration::from_millis(rng.random_range(lo..hi)));
}

/// The gateways of a history: one, or three sharing a log in PostgreSQL.
enum Gateways {
    One(Cluster),
    Three(Trio),
}

/// The admin token of the histories' gateways.
const ADMIN_TOKEN: &str = "history-admin";

impl Gateways {
    /// A gateway that answers `/status` with the servers.
    fn gw(&self) -> String {
        match self {
            Gateways::One(c) => c.gw(),
            Gateways::Three(t) => Deployment::gw(t),
        }
    }

    /// Where the clients send: every gateway.
    fn client_urls(&self) -> Vec<String> {
        match self {
            Gateways::One(c) => vec![c.gw()],
            Gateways::Three(t) => t.urls(),
        }
    }

    fn server_urls(&self) -> Vec<String> {
        match self {
            Gateways::One(c) => c.server_urls(),
            Gateways::Three(t) => Deployment::server_urls(t),
        }
    }

    fn primary(&mut self) -> &mut ChromaServer {
        match self {
            Gateways::One(c) => &mut c.primary,
            Gateways::Three(t) => &mut t.primary,
        }
    }

    fn replica(&mut self) -> &mut ChromaServer {
        match self {
            Gateways::One(c) => &mut c.replica,
            Gateways::Three(t) => &mut t.replica,
        }
    }

    /// SIGKILLs a gateway (of three, one picked by `rng`); its name.
    fn kill_gateway(&mut self, rng: &mut StdRng) -> usize {
        match self {
            Gateways::One(c) => {
                c.gateway.kill();
                0
            }
            Gateways::Three(t) => {
                let i = rng.random_range(0..t.gateways.len());
                t.gateways[i].kill();
                i
            }
        }
    }

    fn restart_gateway(&mut self, i: usize) {
        match self {
            Gateways::One(c) => c.gateway.restart(),
            Gateways::Three(t) => t.gateways[i].restart(),
        }
    }

    /// Stops every gateway; whether all stopped cleanly.
    fn terminate(&mut self) -> bool {
        match self {
            Gateways::One(c) => c.gateway.terminate(Duration::from_secs(10)),
            Gateways::Three(t) => {
                let mut all = true;
                for g in &mut t.gateways {
                    all &= g.terminate(Duration::from_secs(10));
                }
                all
            }
        }
    }
}

/// One crash round: a random pause, then one of the faults.
fn fault(c: &mut Gateways, rng: &mut StdRng, t0: Instant) -> String {
    sleep_ms(rng, 300, 1200);
    let at = t0.elapsed().as_secs_f64();
    let gateway = |c: &mut Gateways, rng: &mut StdRng| -> String {
        let i = c.kill_gateway(rng);
        sleep_ms(rng, 0, 300);
        c.restart_gateway(i);
        match c {
            Gateways::One(_) => "gateway".to_string(),
            Gateways::Three(_) => format!("gateway{i}"),
        }
    };
    let what = match rng.random_range(0..10u32) {
        0..=3 => gateway(c, rng),
        4..=5 => {
            c.primary().kill();
            sleep_ms(rng, 200, 1500);
            c.primary().restart();
            "primary".to_string()
        }
        6..=7 => {
            c.replica().kill();
            sleep_ms(rng, 200, 1500);
            c.replica().restart();
            "replica".to_string()
        }
        8 => {
            c.primary().kill();
            sleep_ms(rng, 100, 600);
            let g = gateway(c, rng);
            sleep_ms(rng, 100, 600);
            c.primary().restart();
            format!("primary+{g}")
        }
        _ => {
            c.replica().kill();
            sleep_ms(rng, 100, 600);
            let g = gateway(c, rng);
            sleep_ms(rng, 100, 600);
            c.replica().restart();
            format!("replica+{g}")
        }
    };
    format!("{what}@{at:.1}s")
}

/// Where a history's log is: the file log, PostgreSQL behind one gateway,
/// or PostgreSQL shared by three.
#[derive(Clone, Copy)]
enum Setup<'a> {
    FileLog,
    Postgres(&'a str),
    ThreeGateways,
}

/// The dead letters a gateway lists at `/admin/dead-letters`.
fn listed_dead_letters(gw: &str) -> serde_json::Value {
    let r = fault_kit::admin_request(
        "GET",
        &format!("{gw}/admin/dead-letters"),
        Some(ADMIN_TOKEN),
    );
    assert_eq!(r.status, 200, "listing dead letters: {}", r.text());
    r.json()
}

/// Runs one history: `rounds` crash rounds (or, with none, `calm` of
/// fault-free load), then catch-up, the servers' content, the log, the check.
fn run(seed: u64, rounds: usize, calm: Duration, setup: Setup) -> Run {
    let t0 = Instant::now();
    let mut env = vec![
        ("CHROMA_HA_WAL_SEGMENT_BYTES", SEGMENT),
        ("CHROMA_HA_ADMIN_TOKEN", ADMIN_TOKEN),
        // Every id-map decision in the gateway's log, to diagnose a failure.
        (
            "RUST_LOG",
            "info,chroma_ha::replication::idmap=debug,chroma_ha::replication::ids=debug",
        ),
    ];
    let mut c = match setup {
        Setup::FileLog => Gateways::One(Cluster::start(&env)),
        Setup::Postgres(url) => {
            env.push(("CHROMA_HA_LOG_URL", url));
            Gateways::One(Cluster::start(&env))
        }
        Setup::ThreeGateways => Gateways::Three(Trio::start_with(&env)),
    };
    let log_url = match (&setup, &c) {
        (Setup::Postgres(url), _) => Some(url.to_string()),
        (_, Gateways::Three(t)) => Some(t.pg.url("postgres")),
        _ => None,
    };
    let clients = Clients::start_through(&c.client_urls(), env_usize("HISTORY_CLIENTS", 4), seed);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut faults = Vec::new();
    std::thread::sleep(Duration::from_millis(800));
    for _ in 0..rounds {
        faults.push(fault(&mut c, &mut rng, t0));
    }
    std::thread::sleep(if rounds == 0 {
        calm
    } else {
        Duration::from_millis(800)
    });
    let ops = clients.stop();
    let gw = c.gw();
    let catch_up = wait_caught_up(&gw, Duration::from_secs(120));
    let servers: Vec<(String, _)> = c
        .server_urls()
        .into_iter()
        .map(|u| {
            let content = read_server(&u);
            (u, content)
        })
        .collect();
    // Dead letters are not a violation by themselves (the content check
    // sees their effect), but they explain many: list them.
    let dead = dead_letter_lines(&listed_dead_letters(&gw));
    let stopped = c.terminate();
    if let Gateways::One(one) = &c {
        if log_url.is_none() {
            let stored = dead_letter_lines(&stored_dead_letters(&one.gateway.dir().join("data")));
            assert_eq!(
                stored.len(),
                dead.len(),
                "the gateway listed {} dead letters, its data directory holds {}",
                dead.len(),
                stored.len()
            );
        }
    }
    let log = match (&log_url, &c) {
        (Some(url), _) => read_log(LogAt::Postgres(url)),
        (None, Gateways::One(one)) => read_log(LogAt::File(
            &one.gateway.dir().join("data/wal"),
            SEGMENT_BYTES,
        )),
        (None, Gateways::Three(_)) => unreachable!("three gateways share a PostgreSQL log"),
    };
    let mut report = check(&ops, &log, &servers, &seed.to_string());
    if !dead.is_empty() {
        // A dead letter is a committed write that a server refused: it is
        // not applied there (DESIGN.md guarantee 1), even if later writes
        // happened to hide the difference.
        report.violations.insert(
            0,
            format!(
                "(e) {} dead letter(s): committed writes a server refused and skipped, e.g.\n{}",
                dead.len(),
                dead.iter()
                    .take(4)
                    .map(|d| format!("    {d}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        );
    }
    let run = Run {
        seed,
        rounds,
        report,
        faults,
        dead,
        took: t0.elapsed(),
    };
    eprintln!(
        "{} catch_up={:.1}s gateways_stopped_cleanly={stopped}",
        run.summary(),
        catch_up.as_secs_f64()
    );
    run
}

/// Validates the model itself: one client against one Chroma server, no
/// gateway. The client's own order is the log; Chroma's answers decide
/// which entries count as refused. Then validates the checker: the same
/// history with a planted fault must fail.
#[test]
fn the_model_agrees_with_one_chroma_server_and_the_checker_catches_planted_faults() {
    let _serial = serial();
    let server = ChromaServer::start();
    let clients = Clients::start(&server.url(), 1, 5);
    std::thread::sleep(Duration::from_secs(6));
    let mut ops = clients.stop();
    ops.sort_by_key(|o| o.seq);
    let mut log = Vec::new();
    for o in ops.iter_mut().filter(|o| o.read.is_none()) {
        let refused = (!matches!(o.verdict(), history_kit::Verdict::Acked))
            .then_some(chroma_ha::replication::record::Refusal::Rejected);
        let lsn = log.len() as u64 + 1;
        if let OpResult::Answer { lsn: l, .. } = &mut o.result {
            *l = Some(lsn);
        }
        log.push(Logged {
            lsn,
            method: o.method.clone(),
            path: o.path.clone(),
            body: o.body.clone().unwrap_or_default(),
            refused,
        });
    }
    let content = read_server(&server.url());
    let report = check(&ops, &log, &[(server.url(), content.clone())], "direct");
    let run = Run {
        seed: 5,
        rounds: 0,
        report,
        faults: Vec::new(),
        dead: Vec::new(),
        took: Duration::ZERO,
    };
    eprintln!("{} (one Chroma server, no gateway)", run.summary());
    assert!(run.report.acked > 0, "nothing was acknowledged");
    assert!(run.report.violations.is_empty(), "{}", run.account());
    checker_catches_planted_violations(&server.url(), &ops, &log, &content);
}

/// The checker itself: a valid history with one planted fault each must
/// give a violation of the matching kind.
fn checker_catches_planted_violations(
    url: &str,
    ops: &[history_kit::Op],
    log: &[Logged],
    content: &history_kit::sources::Content,
) {
    let found =
        |ops: &[history_kit::Op], log: &[Logged], content: &history_kit::sources::Content| {
            check(ops, log, &[(url.to_string(), content.clone())], "planted").violations
        };
    let kinds = |v: &[String]| v.iter().map(|v| v[..3].to_string()).collect::<Vec<_>>();
    // (b): a refused write committed after all.
    let mut committed = log.to_vec();
    let e = committed
        .iter_mut()
        .find(|e| e.refused.is_some())
        .expect("a refused write");
    e.refused = None;
    let v = found(ops, &committed, content);
    assert!(
        kinds(&v).contains(&"(b)".to_string()),
        "planted (b) not found: {v:?}"
    );
    // (a): a record lost on the server.
    let mut lost = content.clone();
    let recs = lost
        .values_mut()
        .flat_map(|colls| colls.values_mut())
        .map(|(_, recs)| recs)
        .find(|recs| !recs.is_empty())
        .expect("a collection with records");
    let rid = recs.keys().next().cloned().expect("a record");
    recs.remove(&rid);
    let v = found(ops, log, &lost);
    assert!(
        kinds(&v).contains(&"(a)".to_string()),
        "planted (a) not found: {v:?}"
    );
    // (d): a get that saw nothing although it had found records.
    let mut stale = ops.to_vec();
    let read = stale
        .iter_mut()
        .find(|o| {
            matches!(o.read, Some(history_kit::ReadKind::Get { .. }))
                && matches!(&o.result, OpResult::Answer { status: 200, body, .. }
                    if body.contains("\"documents\":[\""))
        })
        .expect("a get that found records");
    if let OpResult::Answer { body, .. } = &mut read.result {
        *body = r#"{"ids":[],"documents":[],"metadatas":[]}"#.to_string();
    }
    let v = found(&stale, log, content);
    assert!(
        kinds(&v).contains(&"(d)".to_string()),
        "planted (d) not found: {v:?}"
    );
    eprintln!("the checker found each planted violation: (a) lost record, (b) refused write committed, (d) stale read");
}

#[test]
fn a_fault_free_history_matches_the_model() {
    let _serial = serial();
    let run = run(1, 0, Duration::from_secs(8), Setup::FileLog);
    assert!(run.report.acked > 0, "nothing was acknowledged");
    assert!(run.report.violations.is_empty(), "{}", run.account());
}

#[test]
fn histories_with_gateway_and_server_kills_match_the_model() {
    let _serial = serial();
    let runs: Vec<(u64, usize)> = match history_seed() {
        None => CI_SEEDS.iter().map(|s| (*s, CI_ROUNDS)).collect(),
        Some(seed) => vec![(seed, env_usize("HISTORY_ROUNDS", 30))],
    };
    let mut failed = Vec::new();
    for (seed, rounds) in runs {
        let run = run(seed, rounds, Duration::ZERO, Setup::FileLog);
        assert!(
            run.report.acked > 0,
            "seed {seed}: nothing was acknowledged"
        );
        if !run.report.violations.is_empty() {
            eprintln!("{}", run.account());
            failed.push(run.account());
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// The same history with the gateway's log in PostgreSQL (a throwaway
/// cluster of the test's own): one seed, 7 crash rounds of the gateway and
/// both servers.
#[test]
fn a_history_with_the_log_in_postgres_and_kills_matches_the_model() {
    let _serial = serial();
    let pg = pglog::testing::TestPostgres::start();
    let url = pg.url("postgres");
    let run = run(404, CI_ROUNDS, Duration::ZERO, Setup::Postgres(&url));
    assert!(run.report.acked > 0, "nothing was acknowledged");
    assert!(run.report.violations.is_empty(), "{}", run.account());
}

/// Three gateways sharing the log in PostgreSQL, each client sending to one
/// of them, with kills of any gateway (leader or follower) and of both
/// servers: seed 505 × 10 crash rounds.
#[test]
fn a_history_through_three_gateways_sharing_the_log_with_kills_matches_the_model() {
    let _serial = serial();
    let rounds = env_usize("HISTORY_ROUNDS", THREE_GATEWAY_ROUNDS);
    let seed = history_seed().unwrap_or(505);
    let run = run(seed, rounds, Duration::ZERO, Setup::ThreeGateways);
    assert!(run.report.acked > 0, "nothing was acknowledged");
    assert!(run.report.violations.is_empty(), "{}", run.account());
}
