//! Three gateways on one log in PostgreSQL (a throwaway cluster of the
//! test's own), in front of a real primary and replica, under the fault
//! tests' workload sent through all three gateways in turn. Each test
//! breaks something for real (SIGKILL, SIGSTOP, PostgreSQL stopped), then
//! reads every server directly: every acknowledged write present, nothing
//! that failed present, servers identical.

mod fault_kit;
mod support;

use std::time::{Duration, Instant};

use fault_kit::checks::{assert_no_dead_letters, finish, in_flight_at_kills, PROGRESS};
use fault_kit::trio::{Trio, LEASE};
use fault_kit::workload::{Workload, WorkloadSpec};
use fault_kit::{serial, wait_until};

/// Waits for the first write sent after `t` to be acknowledged; the time
/// from `t` to its answer.
fn first_ack_after(w: &Workload, t: Instant, what: &str) -> Duration {
    let mut took = None;
    wait_until(what, PROGRESS, || {
        took = w.first_ack_sent_after(t).map(|op| op.end.duration_since(t));
        took.is_some()
    });
    took.unwrap_or_default()
}

#[test]
fn the_leader_sigkilled_under_load_another_gateway_takes_over_and_no_acknowledged_write_is_lost() {
    let _serial = serial();
    let test = "leader_sigkilled";
    let prefix = "lk";
    let mut t = Trio::start();
    let w = Workload::start_through(&t.urls(), WorkloadSpec::new(prefix));
    w.wait_for_more_acks(50, PROGRESS);
    let old = t.leader().expect("a leader");
    let killed = Instant::now();
    t.gateways[old].kill();
    let others: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let takeover = t.time_to_first_write(&others, killed);
    let workload = first_ack_after(&w, killed, "a workload write acknowledged after the kill");
    let new = t.wait_leader(PROGRESS, Some(old));
    eprintln!(
        "{test}: gateway {old} (leader) killed; gateway {new} leads; takeover time {:.3}s \
         (first workload write acknowledged after {:.3}s; lease {LEASE:?})",
        takeover.as_secs_f64(),
        workload.as_secs_f64()
    );
    w.wait_for_more_acks(50, PROGRESS);
    let result = w.stop();
    finish(
        test,
        &t,
        &result,
        prefix,
        &[],
        Some(takeover),
        in_flight_at_kills(1),
        &format!("takeover={:.3}s", takeover.as_secs_f64()),
    );
    assert_no_dead_letters(test, &t);
}

#[test]
fn a_follower_sigkilled_under_load_changes_nothing_for_the_others_and_no_acknowledged_write_is_lost(
) {
    let _serial = serial();
    let test = "follower_sigkilled";
    let prefix = "fk";
    let mut t = Trio::start();
    let w = Workload::start_through(&t.urls(), WorkloadSpec::new(prefix));
    w.wait_for_more_acks(50, PROGRESS);
    let leader = t.leader().expect("a leader");
    let follower = (leader + 1) % 3;
    let killed = Instant::now();
    t.gateways[follower].kill();
    let next = first_ack_after(&w, killed, "a write acknowledged after the follower's kill");
    w.wait_for_more_acks(50, PROGRESS);
    assert_eq!(
        t.leader(),
        Some(leader),
        "{test}: the leader changed when a follower died"
    );
    let result = w.stop();
    finish(
        test,
        &t,
        &result,
        prefix,
        &[],
        Some(next),
        in_flight_at_kills(1),
        "",
    );
    assert_no_dead_letters(test, &t);
}

#[test]
fn the_leader_stopped_longer_than_its_lease_is_deposed_and_sends_nothing_once_it_runs_again() {
    let _serial = serial();
    let test = "leader_sigstopped";
    let prefix = "ls";
    let mut t = Trio::start();
    let w = Workload::start_through(&t.urls(), WorkloadSpec::new(prefix));
    w.wait_for_more_acks(50, PROGRESS);
    let old = t.leader().expect("a leader");
    let pid = t.gateways[old].pid().expect("the leader's pid");
    let stopped = Instant::now();
    support::signal(pid, "STOP");
    let others: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let takeover = t.time_to_first_write(&others, stopped);
    let new = t.wait_leader(PROGRESS, Some(old));
    std::thread::sleep((LEASE * 3).saturating_sub(stopped.elapsed()));
    let stopped_for = stopped.elapsed();
    support::signal(pid, "CONT");
    let exit = t.gateways[old].wait_exit(Duration::from_secs(10));
    eprintln!(
        "{test}: gateway {old} stopped {:.3}s (lease {LEASE:?}); a write went through gateway \
         {new} {:.3}s after the stop; the old leader exited with {exit:?}",
        stopped_for.as_secs_f64(),
        takeover.as_secs_f64()
    );
    assert!(
        exit.is_some_and(|s| !s.success()),
        "{test}: the deposed leader did not stop by itself: {exit:?}"
    );
    let log = t.gateways[old].log();
    let deposed = log
        .lines()
        .find(|l| l.contains("deposed"))
        .unwrap_or_else(|| panic!("{test}: the old leader's log does not say it was deposed"));
    eprintln!("{test}: the old leader's last word: {deposed}");
    w.wait_for_more_acks(50, PROGRESS);
    let result = w.stop();
    finish(
        test,
        &t,
        &result,
        prefix,
        &[],
        Some(takeover),
        in_flight_at_kills(2),
        &format!("stopped={:.3}s", stopped_for.as_secs_f64()),
    );
    assert_no_dead_letters(test, &t);
}

#[test]
fn postgres_restarted_under_load_behind_three_gateways_loses_no_acknowledged_write() {
    let _serial = serial();
    let test = "trio_postgres_restarted";
    let prefix = "tpr";
    let mut t = Trio::start();
    let w = Workload::start_through(&t.urls(), WorkloadSpec::new(prefix));
    w.wait_for_more_acks(50, PROGRESS);
    t.pg.kill_server();
    std::thread::sleep(Duration::from_millis(500));
    t.pg.start_server();
    w.wait_for_more_acks(50, PROGRESS);
    let result = w.stop();
    finish(
        test,
        &t,
        &result,
        prefix,
        &[],
        None,
        in_flight_at_kills(1),
        "postgres_restarts=1",
    );
    assert_no_dead_letters(test, &t);
}

#[test]
fn postgres_stopped_for_10_s_behind_three_gateways_writes_get_a_bounded_503_then_resume() {
    let _serial = serial();
    let test = "trio_postgres_stopped_10s";
    let prefix = "tps";
    let mut t = Trio::start();
    let w = Workload::start_through(&t.urls(), WorkloadSpec::new(prefix));
    w.wait_for_more_acks(50, PROGRESS);
    t.pg.kill_server();
    let down = Instant::now();
    std::thread::sleep(Duration::from_secs(10));
    let up = Instant::now();
    t.pg.start_server();
    w.wait_for_more_acks(50, PROGRESS);
    let result = w.stop();
    let during = result.writes_started_in(down + Duration::from_secs(1), up);
    let failed: Vec<_> = during
        .iter()
        .filter(|w| w.outcome == fault_kit::workload::Outcome::Failed)
        .collect();
    let slowest = failed.iter().map(|w| w.latency()).max().unwrap_or_default();
    eprintln!(
        "{test}: {} writes sent while PostgreSQL was down, {} failed, slowest failure {:.3}s, \
         statuses {:?}",
        during.len(),
        failed.len(),
        slowest.as_secs_f64(),
        during
            .iter()
            .map(|w| w.status)
            .collect::<std::collections::BTreeSet<_>>()
    );
    assert!(
        !during.is_empty(),
        "{test}: no write was sent during the outage"
    );
    assert!(
        during
            .iter()
            .all(|w| w.outcome == fault_kit::workload::Outcome::Failed && w.status == Some(503)),
        "{test}: every write during the outage gets a 503"
    );
    assert!(
        slowest < Duration::from_secs(16),
        "{test}: a write waited {slowest:?} for its 503"
    );
    finish(
        test,
        &t,
        &result,
        prefix,
        &[],
        None,
        in_flight_at_kills(1),
        &format!(
            "outage_writes={} slowest_503={:.3}s",
            during.len(),
            slowest.as_secs_f64()
        ),
    );
    assert_no_dead_letters(test, &t);
}

#[test]
fn the_leader_and_the_primary_sigkilled_together_the_replica_takes_the_writes_and_the_primary_catches_up(
) {
    let _serial = serial();
    let test = "leader_and_primary_sigkilled";
    let prefix = "lpk";
    let mut t = Trio::start();
    let w = Workload::start_through(&t.urls(), WorkloadSpec::new(prefix));
    w.wait_for_more_acks(50, PROGRESS);
    let old = t.leader().expect("a leader");
    let killed = Instant::now();
    t.gateways[old].kill();
    t.primary.kill();
    let takeover = first_ack_after(&w, killed, "a write acknowledged after both kills");
    w.wait_for_more_acks(30, PROGRESS);
    t.primary.restart();
    let new = t.wait_leader(PROGRESS, Some(old));
    eprintln!(
        "{test}: gateway {old} and the primary killed; gateway {new} leads; first write \
         acknowledged {:.3}s after the kills",
        takeover.as_secs_f64()
    );
    w.wait_for_more_acks(30, PROGRESS);
    let result = w.stop();
    finish(
        test,
        &t,
        &result,
        prefix,
        &[],
        Some(takeover),
        in_flight_at_kills(1),
        &format!("takeover={:.3}s", takeover.as_secs_f64()),
    );
    assert_no_dead_letters(test, &t);
}

#[test]
fn the_leader_stopped_cleanly_hands_the_lease_over_and_no_acknowledged_write_is_lost() {
    let _serial = serial();
    let test = "leader_sigterm";
    let prefix = "lt";
    let mut t = Trio::start();
    let w = Workload::start_through(&t.urls(), WorkloadSpec::new(prefix));
    w.wait_for_more_acks(50, PROGRESS);
    let old = t.leader().expect("a leader");
    let others: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let stopping = Instant::now();
    assert!(
        t.gateways[old].terminate(Duration::from_secs(30)),
        "{test}: the leader did not stop on SIGTERM"
    );
    let handover = t.time_to_first_write(&others, stopping);
    let new = t.wait_leader(PROGRESS, Some(old));
    let log = t.gateways[new].log();
    assert!(
        log.contains("wait=0ns"),
        "{test}: the next leader waited out a lease the last one had released"
    );
    eprintln!(
        "{test}: gateway {old} (leader) stopped by SIGTERM; gateway {new} leads; first write \
         through the others {:.3}s after the signal",
        handover.as_secs_f64()
    );
    w.wait_for_more_acks(50, PROGRESS);
    let result = w.stop();
    finish(
        test,
        &t,
        &result,
        prefix,
        &[],
        Some(handover),
        in_flight_at_kills(1),
        &format!("handover={:.3}s", handover.as_secs_f64()),
    );
    assert_no_dead_letters(test, &t);
}
