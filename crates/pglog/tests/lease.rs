//! The leader lease against a real PostgreSQL (a throwaway cluster per
//! test): who leads, epochs, expiry by PostgreSQL's clock, release, and
//! fencing of a deposed leader's writes.

use std::time::{Duration, Instant};

use bytes::Bytes;
use pglog::testing::TestPostgres;
use pglog::{Claim, Leadership, PgLog, PgLogOptions};
use wal::{Log, WalError};

const LEASE: Duration = Duration::from_millis(600);

async fn process(pg: &TestPostgres) -> PgLog {
    PgLog::connect(&pg.url("postgres"), PgLogOptions::default())
        .await
        .unwrap()
}

fn leads(claim: Claim) -> Leadership {
    match claim {
        Claim::Leader(l) => l,
        Claim::Follower(info) => panic!("expected to lead; {info:?} leads"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_claimant_leads_and_the_others_learn_its_address() {
    let pg = TestPostgres::start();
    let (a, b) = (process(&pg).await, process(&pg).await);
    let before = Instant::now();
    let term = leads(a.claim_lease("a", "10.0.0.1:8000", LEASE).await.unwrap());
    let after = Instant::now();
    assert_eq!((term.epoch, term.new_term), (1, true));
    assert!(term.predecessor_stopped, "no one held the lease before");
    assert!(
        before + LEASE <= term.valid_until && term.valid_until <= after + LEASE,
        "a holder may act until its claim was sent + the lease time"
    );
    match b.claim_lease("b", "10.0.0.2:8000", LEASE).await.unwrap() {
        Claim::Follower(info) => {
            assert_eq!(info.holder.as_deref(), Some("a"));
            assert_eq!(info.address.as_deref(), Some("10.0.0.1:8000"));
            assert_eq!(info.epoch, 1);
            assert!(info.expires_in.is_some_and(|d| d <= LEASE), "{info:?}");
        }
        Claim::Leader(l) => panic!("two leaders: {l:?}"),
    }
    // Renewing keeps the term.
    let again = leads(a.claim_lease("a", "10.0.0.1:8000", LEASE).await.unwrap());
    assert_eq!((again.epoch, again.new_term), (1, false));
    assert!(again.valid_until > term.valid_until);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_left_unrenewed_expires_and_the_next_claimant_begins_a_higher_epoch() {
    let pg = TestPostgres::start();
    let (a, b) = (process(&pg).await, process(&pg).await);
    leads(a.claim_lease("a", "a:1", LEASE).await.unwrap());
    tokio::time::sleep(LEASE + Duration::from_millis(200)).await;
    let term = leads(b.claim_lease("b", "b:1", LEASE).await.unwrap());
    assert_eq!((term.epoch, term.new_term), (2, true));
    // The old holder, back (as after SIGSTOP and SIGCONT), follows.
    match a.claim_lease("a", "a:1", LEASE).await.unwrap() {
        Claim::Follower(info) => assert_eq!((info.holder.as_deref(), info.epoch), (Some("b"), 2)),
        Claim::Leader(l) => panic!("the deposed leader took the lease back: {l:?}"),
    }
    // A holder whose own lease ran out starts a new term, not the old one.
    tokio::time::sleep(LEASE + Duration::from_millis(200)).await;
    let back = leads(b.claim_lease("b", "b:1", LEASE).await.unwrap());
    assert_eq!((back.epoch, back.new_term), (3, true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_lease_is_taken_at_once_by_the_next_claimant_with_nothing_to_wait_out() {
    let pg = TestPostgres::start();
    let (a, b) = (process(&pg).await, process(&pg).await);
    let term = leads(
        a.claim_lease("a", "a:1", Duration::from_secs(60))
            .await
            .unwrap(),
    );
    // Releasing someone else's term does nothing.
    b.release_lease("b", term.epoch).await.unwrap();
    assert!(matches!(
        b.claim_lease("b", "b:1", LEASE).await.unwrap(),
        Claim::Follower(_)
    ));
    a.release_lease("a", term.epoch).await.unwrap();
    let next = leads(b.claim_lease("b", "b:1", LEASE).await.unwrap());
    assert_eq!(next.epoch, 2);
    assert!(next.predecessor_stopped, "the term before ended by release");
    let info = a.leader().await.unwrap();
    assert_eq!((info.holder.as_deref(), info.epoch), (Some("b"), 2));
    // A term that merely ran out is not a released one.
    tokio::time::sleep(LEASE + Duration::from_millis(200)).await;
    let third = leads(a.claim_lease("a", "a:1", LEASE).await.unwrap());
    assert_eq!((third.epoch, third.predecessor_stopped), (3, false));
    let renewed = leads(a.claim_lease("a", "a:1", LEASE).await.unwrap());
    assert_eq!(
        (renewed.new_term, renewed.predecessor_stopped),
        (false, false)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leaders_appends_and_cursor_commits_are_refused_and_its_successors_are_not() {
    let pg = TestPostgres::start();
    let (a, b) = (process(&pg).await, process(&pg).await);
    for i in 0..3 {
        a.append(Bytes::from(format!("r{i}"))).await.unwrap();
    }
    let old = leads(a.claim_lease("a", "a:1", LEASE).await.unwrap());
    a.fence(old.epoch);
    a.commit_cursor("primary", 1).await.unwrap();
    tokio::time::sleep(LEASE + Duration::from_millis(200)).await;
    let new = leads(b.claim_lease("b", "b:1", LEASE).await.unwrap());
    b.fence(new.epoch);
    match a.commit_cursor("primary", 2).await {
        Err(WalError::Fenced {
            held: 1,
            current: 2,
        }) => {}
        other => panic!("a deposed leader moved a cursor: {other:?}"),
    }
    match a.remove_cursor("primary").await {
        Err(WalError::Fenced { .. }) => {}
        other => panic!("a deposed leader removed a cursor: {other:?}"),
    }
    match a.append(Bytes::from_static(b"late")).await {
        Err(WalError::Fenced { .. }) => {}
        other => panic!("a deposed leader appended: {other:?}"),
    }
    b.commit_cursor("primary", 3).await.unwrap();
    assert_eq!(b.append(Bytes::from_static(b"r3")).await.unwrap(), 4);
    let reopened = process(&pg).await;
    assert_eq!(reopened.cursors().get("primary"), Some(&3));
    assert_eq!(reopened.last_lsn(), 4, "the refused append left nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_eight_processes_claiming_at_the_same_moment_exactly_one_leads_and_the_others_name_it() {
    let pg = TestPostgres::start();
    let mut processes = Vec::new();
    for _ in 0..8 {
        processes.push(process(&pg).await);
    }
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(processes.len()));
    // Spawned all at once (collected), so every claim waits at the barrier.
    let claims: Vec<_> = processes
        .into_iter()
        .enumerate()
        .map(|(i, log)| {
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                let name = format!("g{i}");
                (
                    name.clone(),
                    log.claim_lease(&name, &name, LEASE).await.unwrap(),
                )
            })
        })
        .collect();
    let mut leaders = Vec::new();
    let mut named = Vec::new();
    for claim in claims {
        match claim.await.unwrap() {
            (name, Claim::Leader(l)) => leaders.push((name, l.epoch)),
            (_, Claim::Follower(info)) => named.push(info.holder),
        }
    }
    assert_eq!(leaders.len(), 1, "exactly one leads: {leaders:?}");
    let (leader, epoch) = &leaders[0];
    assert_eq!(*epoch, 1);
    assert!(
        named.iter().all(|h| h.as_deref() == Some(leader.as_str())),
        "every follower names {leader}: {named:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_sees_the_others_in_the_registry_with_their_roles_and_the_terms_age() {
    let pg = TestPostgres::start();
    let (a, b) = (process(&pg).await, process(&pg).await);
    let term = leads(a.claim_lease("a", "http://a:1", LEASE).await.unwrap());
    for (log, name, role, first) in [(&a, "a", "leader", true), (&b, "b", "follower", true)] {
        let report = pglog::GatewayReport {
            name,
            address: &format!("http://{name}:1"),
            role,
            epoch: term.epoch,
            first,
        };
        log.report_gateway(&report).await.unwrap();
    }
    let report = pglog::GatewayReport {
        name: "b",
        address: "http://b:2",
        role: "follower",
        epoch: term.epoch,
        first: false,
    };
    b.report_gateway(&report).await.unwrap();
    let rows = a.gateways().await.unwrap();
    let seen: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.name.as_str(),
                r.address.as_str(),
                r.role.as_str(),
                r.epoch,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("a", "http://a:1", "leader", 1),
            ("b", "http://b:2", "follower", 1)
        ]
    );
    assert!(rows.iter().all(|r| r.seen_ago < Duration::from_secs(5)));
    let info = b.leader().await.unwrap();
    assert!(info
        .term_age
        .is_some_and(|age| age < Duration::from_secs(5)));
}
