//! A gateway with its log in PostgreSQL (a throwaway cluster of the test's
//! own), in front of two real Chroma servers, under the fault tests'
//! workload, while PostgreSQL itself fails (restarted under load, stopped
//! for 10 s) and while the gateway loses its machine (SIGKILL and its data
//! directory wiped: everything it needs is in PostgreSQL). Afterwards every
//! server is read directly: every acknowledged write present, nothing that
//! failed present, servers alike.

mod fault_kit;
mod support;

use std::time::{Duration, Instant};

use fault_kit::checks::{
    assert_no_dead_letters, assert_outage_writes_got_503, assert_unknown_only_at_kills, finish,
    in_flight_at_kills, UnknownBound, PROGRESS,
};
use fault_kit::workload::{Workload, WorkloadSpec};
use fault_kit::{serial, status_now, wait_until, Cluster};
use pglog::testing::TestPostgres;
use support::http_get;

/// Writes in flight when PostgreSQL goes away may end unknown (their
/// commit answer lost while it stays away longer than the lookup): at most
/// one per workload task (4 writers and a creator) per outage.
const IN_FLIGHT_AT_OUTAGE: UnknownBound = UnknownBound {
    floor: 5,
    fraction: 0.0,
};

fn gateway_on(pg: &TestPostgres) -> Cluster {
    Cluster::start(&[("CHROMA_HA_LOG_URL", &pg.url("postgres"))])
}

#[test]
fn postgres_restarted_under_load_loses_no_acknowledged_write() {
    let _serial = serial();
    let test = "postgres_restarted";
    let prefix = "pgr";
    let mut pg = TestPostgres::start();
    let c = gateway_on(&pg);
    assert_eq!(
        status_now(&c.gw())["write_ahead_log"]["kind"],
        "postgres",
        "the gateway runs on the PostgreSQL log"
    );
    let w = Workload::start(&c.gw(), WorkloadSpec::new(prefix));
    w.wait_for_more_acks(50, PROGRESS);
    pg.kill_server();
    std::thread::sleep(Duration::from_millis(500));
    pg.start_server();
    w.wait_for_more_acks(50, PROGRESS);
    let result = w.stop();
    finish(
        test,
        &c,
        &result,
        prefix,
        &[],
        None,
        IN_FLIGHT_AT_OUTAGE,
        "postgres_restarts=1",
    );
    assert_no_dead_letters(test, &c);
    // The append transactions are timed as the log's durability step.
    let metrics = http_get(&format!("{}/metrics", c.gw()), Duration::from_secs(5))
        .expect("GET /metrics")
        .text();
    let commits = metrics
        .lines()
        .find_map(|l| l.strip_prefix("chroma_ha_wal_fsync_duration_seconds_count "))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or(0);
    eprintln!("{test}: {commits} append transactions timed");
    assert!(commits > 0, "{test}: no append transaction was timed");
}

#[test]
fn postgres_stopped_for_10_s_writes_fail_fast_with_503_then_resume_by_themselves() {
    let _serial = serial();
    let test = "postgres_stopped_10s";
    let prefix = "pgs";
    let mut pg = TestPostgres::start();
    let c = gateway_on(&pg);
    let w = Workload::start(&c.gw(), WorkloadSpec::new(prefix));
    w.wait_for_more_acks(50, PROGRESS);
    pg.kill_server();
    let down = Instant::now();
    std::thread::sleep(Duration::from_secs(10));
    let up = Instant::now();
    pg.start_server();
    w.wait_for_more_acks(50, PROGRESS);
    let result = w.stop();
    let outage = assert_outage_writes_got_503(test, &result, down, up, Duration::from_secs(5));
    finish(
        test,
        &c,
        &result,
        prefix,
        &[],
        None,
        IN_FLIGHT_AT_OUTAGE,
        &outage,
    );
    assert_no_dead_letters(test, &c);
}

#[test]
fn a_gateway_that_loses_its_disk_three_times_resumes_from_postgresql_with_nothing_lost() {
    let _serial = serial();
    let test = "gateway_disk_lost_x3";
    let prefix = "pgd";
    let pg = TestPostgres::start();
    let mut c = gateway_on(&pg);
    let data = c.gateway.dir().join("data");
    let w = Workload::start(&c.gw(), WorkloadSpec::new(prefix));
    let mut kills = Vec::new();
    let mut lose_the_machine = |c: &mut Cluster, round: u32| {
        let before = Instant::now();
        c.gateway.kill();
        kills.push((before, Instant::now()));
        let kept: Vec<String> = std::fs::read_dir(&data)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            kept.iter().all(|f| ![
                "applied.json",
                "collections.json",
                "operator.json",
                "dead_letters"
            ]
            .contains(&f.as_str())),
            "{test}: the gateway kept state on its disk: {kept:?}"
        );
        std::fs::remove_dir_all(&data).expect("wipe the gateway's data directory");
        c.gateway.restart();
        let ready = format!("{}/ready", c.gw());
        wait_until("gateway ready", Duration::from_secs(20), || {
            http_get(&ready, Duration::from_secs(2)).is_ok_and(|r| r.status == 200)
        });
        eprintln!("{test}: round {round}: the gateway restarted on an empty data directory");
    };
    w.wait_for_more_acks(50, PROGRESS);
    lose_the_machine(&mut c, 1);
    // While the primary is down the replica executes: its collection ids
    // become logical ones, and only the id map in PostgreSQL links them.
    w.wait_for_more_acks(30, PROGRESS);
    c.primary.kill();
    w.wait_for_more_acks(30, PROGRESS);
    lose_the_machine(&mut c, 2);
    w.wait_for_more_acks(30, PROGRESS);
    c.primary.restart();
    // While the replica is down: its applied state, far behind, must come
    // back from PostgreSQL, not start over.
    w.wait_for_more_acks(30, PROGRESS);
    c.replica.kill();
    w.wait_for_more_acks(30, PROGRESS);
    lose_the_machine(&mut c, 3);
    c.replica.restart();
    wait_until("replica healthy", Duration::from_secs(30), || {
        status_now(&c.gw())["healthy_instances"] == 2
    });
    w.wait_for_more_acks(50, PROGRESS);
    let result = w.stop();
    finish(
        test,
        &c,
        &result,
        prefix,
        &[],
        None,
        in_flight_at_kills(3),
        "gateway_disk_losses=3",
    );
    assert_unknown_only_at_kills(test, &result, &kills);
    assert_no_dead_letters(test, &c);
}
