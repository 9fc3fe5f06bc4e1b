use super::*;
use crate::chroma::{Keys, Scope};
use crate::replication::record::Entry;
use proptest::prelude::*;

fn work() -> Option<Work> {
    Some(Work::new(
        Arc::new(Entry {
            method: http::Method::POST,
            path: "/x".into(),
            content_type: None,
            received_at_ms: 0,
            body: bytes::Bytes::new(),
        }),
        None,
    ))
}

fn record_write(collection: &str, id: Option<u64>) -> Option<WriteFootprint> {
    Some(WriteFootprint {
        scope: Scope::Collection {
            tenant: "t".into(),
            database: "d".into(),
            collection: collection.into(),
        },
        keys: id.map_or(Keys::All, |id| Keys::Ids(vec![id])),
    })
}

fn database_write() -> Option<WriteFootprint> {
    Some(WriteFootprint {
        scope: Scope::Database {
            tenant: "t".into(),
            database: "d".into(),
        },
        keys: Keys::All,
    })
}

fn replay_all(w: &mut Window) -> Plan {
    w.plan(16, |_| Role::Replay, |_| true)
}

fn started(plan: &Plan) -> Vec<u64> {
    plan.starts.iter().map(|s| s.lsn).collect()
}

#[test]
fn writes_that_do_not_conflict_start_together_and_conflicting_ones_wait_in_log_order() {
    let mut w = Window::new(AppliedState::default(), 8);
    w.push(1, work(), record_write("a", Some(1)));
    w.push(2, work(), record_write("a", Some(2)));
    w.push(3, work(), record_write("a", Some(1)));
    assert_eq!(started(&replay_all(&mut w)), vec![1, 2]);
    assert!(started(&replay_all(&mut w)).is_empty(), "3 waits for 1");
}

#[test]
fn a_write_waits_until_the_conflicting_write_before_it_is_durably_recorded() {
    let mut w = Window::new(AppliedState::default(), 8);
    w.push(1, work(), record_write("a", None));
    w.push(2, work(), record_write("a", Some(1)));
    assert_eq!(started(&replay_all(&mut w)), vec![1]);
    w.finish(1, true);
    let plan = replay_all(&mut w);
    assert!(
        plan.starts.is_empty(),
        "2 may not start before 1 is durable"
    );
    assert!(plan.wants_commit);
    let state = w.state_to_commit();
    assert_eq!(state.cursor, 1);
    w.committed(&state);
    assert_eq!(started(&replay_all(&mut w)), vec![2]);
}

#[test]
fn a_write_after_an_unsent_refused_entry_needs_no_commit() {
    let mut w = Window::new(AppliedState::default(), 8);
    w.push(1, work(), database_write());
    w.push(2, work(), database_write());
    let plan = w.plan(
        16,
        |lsn| if lsn == 1 { Role::Skip } else { Role::Replay },
        |_| true,
    );
    assert_eq!(plan.skipped, vec![1]);
    assert_eq!(started(&plan), vec![2]);
    assert!(!plan.wants_commit);
}

#[test]
fn entries_applied_before_a_restart_are_not_sent_again() {
    let state = AppliedState {
        cursor: 1,
        above: BTreeSet::from([3]),
    };
    let mut w = Window::new(state, 8);
    assert_eq!(w.next_lsn(), 2);
    assert!(!w.push(2, work(), record_write("a", Some(1))));
    assert!(
        w.push(3, work(), record_write("a", Some(2))),
        "3 was applied"
    );
    assert_eq!(started(&replay_all(&mut w)), vec![2]);
    // 3 stays in the next commit until the cursor passes it.
    assert!(w.state_to_commit().above.contains(&3));
    w.finish(2, true);
    assert_eq!(w.applied_upto(), 3);
    let state = w.state_to_commit();
    assert_eq!((state.cursor, state.above.len()), (3, 0));
}

#[test]
fn a_finished_sent_entry_stays_in_the_window_until_it_is_durable() {
    let mut w = Window::new(AppliedState::default(), 2);
    w.push(1, work(), record_write("a", Some(1)));
    w.push(2, None, None);
    replay_all(&mut w);
    w.finish(1, true);
    assert!(!w.retire());
    assert!(w.full_waiting_for_commit());
    assert!(w.has_undurable());
    let state = w.state_to_commit();
    w.committed(&state);
    assert!(w.retire());
    assert!(!w.has_undurable());
    assert_eq!(w.next_lsn(), 3);
}

/// One step of the model test.
#[derive(Debug, Clone)]
enum Step {
    /// Plan and send what may start.
    Start,
    /// The running entry at this position (mod count) finishes.
    Finish(usize),
    /// The applied state is committed.
    Commit,
    /// The applied state is committed but the gateway dies before it
    /// learns so (the file is on disk).
    CommitThenCrash,
    /// The gateway dies.
    Crash,
    /// The running entry at this position goes back to waiting without
    /// having reached the server (its execution was handed on).
    Requeue(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => Just(Step::Start),
        4 => (0usize..8).prop_map(Step::Finish),
        1 => Just(Step::Commit),
        1 => Just(Step::CommitThenCrash),
        1 => Just(Step::Crash),
        1 => (0usize..8).prop_map(Step::Requeue),
    ]
}

fn footprint_of(code: u8) -> Option<WriteFootprint> {
    match code % 6 {
        0 => database_write(),
        1 => record_write("a", None),
        2 | 3 => record_write("a", Some(u64::from(code % 3))),
        4 => record_write("b", Some(1)),
        _ => None,
    }
}

proptest! {
    /// Across any interleaving of sends, finishes, commits and crashes, a
    /// server is never sent an entry after it was sent a later entry that
    /// conflicts with it, and every entry is sent in the end.
    #[test]
    fn a_server_is_never_sent_an_entry_after_a_later_conflicting_one(
        codes in prop::collection::vec(any::<u8>(), 1..24),
        refused in prop::collection::btree_set(1u64..24, 0..4),
        steps in prop::collection::vec(step(), 0..120),
        capacity in 2usize..8,
    ) {
        let footprints: Vec<Option<WriteFootprint>> = codes.iter().map(|c| footprint_of(*c)).collect();
        let n = footprints.len() as u64;
        let mut durable = AppliedState::default();
        let mut w = Window::new(durable.clone(), capacity);
        let mut running: Vec<u64> = Vec::new();
        let mut sent: Vec<u64> = Vec::new();
        let fill = |w: &mut Window| {
            w.retire();
            while w.has_room() && w.next_lsn() <= n {
                let lsn = w.next_lsn();
                w.push(lsn, work(), footprints[(lsn - 1) as usize].clone());
            }
        };
        let finish_all = steps.len();
        let tail = std::iter::repeat_n([Step::Start, Step::Finish(0), Step::Commit], 4 * codes.len() + 8).flatten();
        for (i, step) in steps.into_iter().chain(tail).enumerate() {
            fill(&mut w);
            match step {
                Step::Start => {
                    let role = |lsn: u64| if refused.contains(&lsn) { Role::Skip } else { Role::Replay };
                    for s in w.plan(16, role, |_| true).starts {
                        running.push(s.lsn);
                        sent.push(s.lsn);
                    }
                }
                Step::Finish(k) if !running.is_empty() => {
                    let lsn = running.remove(if i >= finish_all { 0 } else { k % running.len() });
                    w.finish(lsn, true);
                }
                Step::Finish(_) => {}
                Step::Requeue(k) if !running.is_empty() && i < finish_all => {
                    let lsn = running.remove(k % running.len());
                    w.requeue(lsn);
                    if let Some(at) = sent.iter().rposition(|s| *s == lsn) {
                        sent.remove(at);
                    }
                }
                Step::Requeue(_) => {}
                Step::Commit | Step::CommitThenCrash => {
                    let state = w.state_to_commit();
                    w.committed(&state);
                    durable = state;
                    if matches!(step, Step::CommitThenCrash) {
                        running.clear();
                        w = Window::new(durable.clone(), capacity);
                    }
                }
                Step::Crash => {
                    running.clear();
                    w = Window::new(durable.clone(), capacity);
                }
            }
        }
        for (j, &e) in sent.iter().enumerate() {
            for &f in &sent[..j] {
                let later_conflicting = f > e && super::conflicts(&footprints[(f - 1) as usize], &footprints[(e - 1) as usize]);
                prop_assert!(!later_conflicting, "{e} sent after {f}; sends: {sent:?}");
            }
        }
        for lsn in (1..=n).filter(|l| !refused.contains(l)) {
            prop_assert!(sent.contains(&lsn), "{lsn} never sent; sends: {sent:?}");
        }
        for lsn in &refused {
            prop_assert!(!sent.contains(lsn), "refused {lsn} was sent");
        }
    }
}

#[test]
fn an_applied_lsn_that_turns_out_not_to_be_an_entry_is_not_kept_in_the_applied_state() {
    let state = AppliedState {
        cursor: 0,
        above: BTreeSet::from([1]),
    };
    let mut w = Window::new(state, 8);
    assert!(w.push(1, None, None));
    assert!(w.state_to_commit().above.is_empty());
}
