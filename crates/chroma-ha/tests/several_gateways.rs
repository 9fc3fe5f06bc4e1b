//! Three gateways on one log in PostgreSQL (a throwaway cluster of the
//! test's own), in front of a real primary and replica, under the fault
//! tests' workload sent through all three gateways in turn. Each test
//! breaks something for real (SIGKILL, SIGSTOP, SIGTERM, PostgreSQL
//! stopped), then reads every server directly: every acknowledged write
//! present, nothing that failed present, servers identical. Each prints a
//! `FAULT-SUMMARY` line, with the takeover time where a leader went away:
//! from the fault to the first write acknowledged through a surviving
//! gateway.

mod fault_kit;
mod support;

use std::time::{Duration, Instant};

use fault_kit::checks::{
    assert_no_dead_letters, assert_outage_writes_got_503, finish, in_flight_at_kills, UnknownBound,
    PROGRESS,
};
use fault_kit::trio::{Trio, LEASE};
use fault_kit::workload::{Workload, WorkloadResult, WorkloadSpec};
use fault_kit::{serial, wait_until};

/// A check of the finished workload; returns figures for the summary.
type ResultCheck = Box<dyn FnOnce(&WorkloadResult) -> String>;

/// What a fault reports back to [`under_load`].
#[derive(Default)]
struct Fault {
    /// From the fault to the first write acknowledged after it.
    takeover: Option<Duration>,
    /// Extra `key=value` figures for the summary line.
    extra: String,
    /// Checks of the finished workload, before the shared ones.
    check: Option<ResultCheck>,
}

/// Starts the three gateways and the workload through all of them, waits
/// for 50 acknowledged writes, runs `fault`, waits for 50 more, then runs
/// every check (`unknown`: writes allowed to end without a verdict).
fn under_load(
    test: &str,
    prefix: &str,
    unknown: UnknownBound,
    fault: impl FnOnce(&mut Trio, &Workload) -> Fault,
) {
    let _serial = serial();
    let mut t = Trio::start();
    let w = Workload::start_through(&t.urls(), WorkloadSpec::new(prefix));
    w.wait_for_more_acks(50, PROGRESS);
    let outcome = fault(&mut t, &w);
    w.wait_for_more_acks(50, PROGRESS);
    let result = w.stop();
    let mut extra = outcome.extra;
    if let Some(check) = outcome.check {
        extra = format!("{extra} {}", check(&result));
    }
    if let Some(takeover) = outcome.takeover {
        extra = format!("{extra} takeover={:.3}s", takeover.as_secs_f64());
    }
    finish(
        test,
        &t,
        &result,
        prefix,
        &[],
        outcome.takeover,
        unknown,
        extra.trim(),
    );
    assert_no_dead_letters(test, &t);
}

/// The gateways other than `i`.
fn all_but(i: usize) -> Vec<usize> {
    (0..3).filter(|&g| g != i).collect()
}

/// Waits for the first workload write sent after `t` to be acknowledged;
/// the time from `t` to its answer.
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
    let test = "leader_sigkilled";
    under_load(test, "lk", in_flight_at_kills(1), |t, w| {
        let old = t.leader().expect("a leader");
        let killed = Instant::now();
        t.gateways[old].kill();
        let takeover = t.time_to_first_write(&all_but(old), killed);
        let workload = first_ack_after(w, killed, "a workload write acknowledged after the kill");
        let new = t.wait_leader(PROGRESS, Some(old));
        eprintln!(
            "{test}: gateway {old} (leader) killed; gateway {new} leads; takeover time {:.3}s \
             (first workload write acknowledged after {:.3}s; lease {LEASE:?})",
            takeover.as_secs_f64(),
            workload.as_secs_f64()
        );
        Fault {
            takeover: Some(takeover),
            ..Fault::default()
        }
    });
}

#[test]
fn a_follower_sigkilled_under_load_changes_nothing_for_the_others_and_no_acknowledged_write_is_lost(
) {
    let test = "follower_sigkilled";
    under_load(test, "fk", in_flight_at_kills(1), |t, w| {
        let leader = t.leader().expect("a leader");
        let follower = (leader + 1) % 3;
        let killed = Instant::now();
        t.gateways[follower].kill();
        let next = first_ack_after(w, killed, "a write acknowledged after the follower's kill");
        w.wait_for_more_acks(20, PROGRESS);
        assert_eq!(
            t.leader(),
            Some(leader),
            "{test}: the leader changed when a follower died"
        );
        Fault {
            extra: format!("next_ack={:.3}s", next.as_secs_f64()),
            ..Fault::default()
        }
    });
}

#[test]
fn the_leader_stopped_longer_than_its_lease_is_deposed_and_sends_nothing_once_it_runs_again() {
    let test = "leader_sigstopped";
    under_load(test, "ls", in_flight_at_kills(2), |t, _| {
        let old = t.leader().expect("a leader");
        let pid = t.gateways[old].pid().expect("the leader's pid");
        let stopped = Instant::now();
        support::signal(pid, "STOP");
        let takeover = t.time_to_first_write(&all_but(old), stopped);
        let new = t.wait_leader(PROGRESS, Some(old));
        std::thread::sleep((LEASE * 3).saturating_sub(stopped.elapsed()));
        let stopped_for = stopped.elapsed();
        support::signal(pid, "CONT");
        let exit = t.gateways[old].wait_exit(Duration::from_secs(10));
        eprintln!(
            "{test}: gateway {old} stopped {:.3}s (lease {LEASE:?}); a write went through \
             gateway {new} {:.3}s after the stop; the old leader exited with {exit:?}",
            stopped_for.as_secs_f64(),
            takeover.as_secs_f64()
        );
        assert!(
            exit.is_some_and(|s| !s.success()),
            "{test}: the deposed leader did not stop by itself: {exit:?}"
        );
        // Its own account: every request to Chroma it tried once it ran
        // again found its gate closed (the servers' content, checked
        // next, shows nothing of it landed).
        let log = t.gateways[old].log();
        let deposed = log
            .lines()
            .find(|l| l.contains("deposed"))
            .unwrap_or_else(|| panic!("{test}: the old leader's log does not say it was deposed"));
        eprintln!("{test}: the old leader's last word: {deposed}");
        let fenced = log
            .lines()
            .filter(|l| l.contains("but epoch") && !l.contains("deposed"))
            .count();
        eprintln!("{test}: lines of its log naming a write refused by its epoch: {fenced}");
        Fault {
            takeover: Some(takeover),
            extra: format!("stopped={:.3}s", stopped_for.as_secs_f64()),
            ..Fault::default()
        }
    });
}

#[test]
fn the_leader_stopped_cleanly_hands_the_lease_over_and_no_acknowledged_write_is_lost() {
    let test = "leader_sigterm";
    under_load(test, "lt", in_flight_at_kills(1), |t, _| {
        let old = t.leader().expect("a leader");
        let stopping = Instant::now();
        assert!(
            t.gateways[old].terminate(Duration::from_secs(30)),
            "{test}: the leader did not stop on SIGTERM"
        );
        let handover = t.time_to_first_write(&all_but(old), stopping);
        let new = t.wait_leader(PROGRESS, Some(old));
        assert!(
            t.gateways[new].log().contains("wait=0ns"),
            "{test}: the next leader waited out a lease the last one had released"
        );
        eprintln!(
            "{test}: gateway {old} (leader) stopped by SIGTERM; gateway {new} leads; first \
             write through the others {:.3}s after the signal",
            handover.as_secs_f64()
        );
        Fault {
            takeover: Some(handover),
            ..Fault::default()
        }
    });
}

#[test]
fn postgres_restarted_under_load_behind_three_gateways_loses_no_acknowledged_write() {
    under_load(
        "trio_postgres_restarted",
        "tpr",
        in_flight_at_kills(1),
        |t, _| {
            t.pg.kill_server();
            std::thread::sleep(Duration::from_millis(500));
            t.pg.start_server();
            Fault {
                extra: "postgres_restarts=1".into(),
                ..Fault::default()
            }
        },
    );
}

#[test]
fn postgres_stopped_for_10_s_behind_three_gateways_writes_get_a_bounded_503_then_resume() {
    let test = "trio_postgres_stopped_10s";
    under_load(test, "tps", in_flight_at_kills(1), |t, _| {
        t.pg.kill_server();
        let down = Instant::now();
        std::thread::sleep(Duration::from_secs(10));
        let up = Instant::now();
        t.pg.start_server();
        Fault {
            // Bounded by the hold for a leader (15 s) at worst.
            check: Some(Box::new(move |result| {
                assert_outage_writes_got_503(test, result, down, up, Duration::from_secs(16))
            })),
            ..Fault::default()
        }
    });
}

#[test]
fn the_leader_and_the_primary_sigkilled_together_the_replica_takes_the_writes_and_the_primary_catches_up(
) {
    let test = "leader_and_primary_sigkilled";
    under_load(test, "lpk", in_flight_at_kills(1), |t, w| {
        let old = t.leader().expect("a leader");
        let killed = Instant::now();
        t.gateways[old].kill();
        t.primary.kill();
        let takeover = t.time_to_first_write(&all_but(old), killed);
        w.wait_for_more_acks(30, PROGRESS);
        t.primary.restart();
        let new = t.wait_leader(PROGRESS, Some(old));
        eprintln!(
            "{test}: gateway {old} and the primary killed; gateway {new} leads; first write \
             acknowledged {:.3}s after the kills",
            takeover.as_secs_f64()
        );
        Fault {
            takeover: Some(takeover),
            ..Fault::default()
        }
    });
}
