//! The merge rules at the window: which replays one plan groups.

use super::*;
use crate::chroma::{classify, footprint, Route};
use crate::replication::applied::AppliedState;
use crate::replication::record::Entry;
use crate::replication::window::{Role, Window};
use serde_json::json;
use std::sync::Arc;

const C1: &str = "0195d1e2-0000-4000-8000-000000000001";
const C2: &str = "0195d1e2-0000-4000-8000-000000000002";

fn entry(
    collection: &str,
    op: &str,
    body: serde_json::Value,
) -> (Work, Option<crate::chroma::WriteFootprint>) {
    let path = format!("/api/v2/tenants/t/databases/d/collections/{collection}/{op}");
    let route = match classify(&http::Method::POST, &path) {
        Route::Known(k) => k,
        Route::Unknown(_) => panic!("a known route: {path}"),
    };
    let body = bytes::Bytes::from(body.to_string());
    let fp = footprint(&route, &body);
    let entry = Entry {
        method: http::Method::POST,
        path,
        content_type: Some("application/json".into()),
        received_at_ms: 0,
        body,
    };
    (Work::new(Arc::new(entry), Some(route)), fp)
}

fn add(collection: &str, ids: &[&str]) -> (Work, Option<crate::chroma::WriteFootprint>) {
    record(collection, "add", ids)
}

fn record(
    collection: &str,
    op: &str,
    ids: &[&str],
) -> (Work, Option<crate::chroma::WriteFootprint>) {
    let embeddings: Vec<Vec<f64>> = ids.iter().map(|_| vec![1.0, 2.0]).collect();
    entry(
        collection,
        op,
        json!({"ids": ids, "embeddings": embeddings}),
    )
}

fn window(entries: Vec<(Work, Option<crate::chroma::WriteFootprint>)>) -> Window {
    let mut w = Window::new(AppliedState::default(), 1024);
    for (i, (work, fp)) in entries.into_iter().enumerate() {
        assert!(!w.push(i as u64 + 1, Some(work), fp));
    }
    w
}

const LIMITS: Limits = Limits {
    records: 1000,
    bytes: 1 << 20,
};

/// One plan with merging: the requests it starts, each its entries' LSNs.
fn plan(w: &mut Window, max_running: usize, limits: Limits, waiting: &[u64]) -> Vec<Vec<u64>> {
    plan_with_roles(w, max_running, limits, waiting, |_| Role::Replay)
}

fn plan_with_roles(
    w: &mut Window,
    max_running: usize,
    limits: Limits,
    waiting: &[u64],
    role: impl FnMut(u64) -> Role,
) -> Vec<Vec<u64>> {
    let alone = HashSet::new();
    let mut batcher = Merging::with_waiters(|lsn| waiting.contains(&lsn), limits, &alone);
    let plan = w.plan_batched(max_running, 0, role, |_| true, &mut batcher);
    let mut groups = batcher.into_groups();
    // Executions are not the batcher's: each is a request of its own.
    for start in plan.starts.iter().filter(|s| s.executes) {
        groups.push(vec![start.lsn]);
    }
    let started: usize = groups.iter().map(Vec::len).sum();
    assert_eq!(started, plan.starts.len(), "every start is in one request");
    groups
}

#[test]
fn consecutive_adds_of_one_collection_share_one_request_and_take_one_slot() {
    let mut w = window((0..6).map(|i| add(C1, &[&format!("id{i}")])).collect());
    // Even with room for one request only, every entry starts: they ride in it.
    assert_eq!(plan(&mut w, 1, LIMITS, &[]), vec![vec![1, 2, 3, 4, 5, 6]]);
}

#[test]
fn duplicate_ids_across_entries_are_never_in_one_request() {
    // The second add of `a` conflicts with the first: it waits for it (and
    // its durability), and Chroma's own rule (the first record stays) holds.
    let mut w = window(vec![
        add(C1, &["a"]),
        add(C1, &["b"]),
        add(C1, &["a", "c"]),
        add(C1, &["d"]),
    ]);
    assert_eq!(plan(&mut w, 16, LIMITS, &[]), vec![vec![1, 2, 4]]);
    // The batcher itself refuses a shared id, whatever the footprints say.
    let alone = HashSet::new();
    let mut b = Merging::with_waiters(|_| false, LIMITS, &alone);
    let (first, _) = add(C1, &["x", "y"]);
    let (again, _) = add(C1, &["z", "x"]);
    let (other, _) = add(C1, &["w"]);
    b.started(1, &first);
    assert!(!b.joins(2, &again));
    assert!(b.joins(3, &other));
    b.started(2, &again);
    assert_eq!(b.into_groups(), vec![vec![1, 3], vec![2]]);
}

#[test]
fn an_upsert_after_an_add_of_the_same_id_goes_after_it_in_its_own_request() {
    let mut w = window(vec![
        add(C1, &["a"]),
        record(C1, "upsert", &["a"]),
        record(C1, "upsert", &["u1"]),
        record(C1, "upsert", &["u2"]),
    ]);
    // Different operations never share a request; the upsert of `a` waits
    // for the add of `a`.
    assert_eq!(plan(&mut w, 16, LIMITS, &[]), vec![vec![1], vec![3, 4]]);
    for lsn in [1, 3, 4] {
        w.finish(lsn, true);
    }
    let state = w.state_to_commit();
    w.committed(&state);
    assert_eq!(plan(&mut w, 16, LIMITS, &[]), vec![vec![2]]);
}

#[test]
fn the_max_batch_size_bounds_the_records_of_a_request_in_whole_entries() {
    let mut w = window(
        (0..7)
            .map(|i| add(C1, &[&format!("a{i}"), &format!("b{i}")]))
            .collect(),
    );
    let limits = Limits {
        records: 5,
        bytes: 1 << 20,
    };
    assert_eq!(
        plan(&mut w, 16, limits, &[]),
        vec![vec![1, 2], vec![3, 4], vec![5, 6], vec![7]]
    );
    // An entry larger than the limit alone still goes, alone.
    let mut w = window(vec![add(C1, &["a", "b", "c"]), add(C1, &["d"])]);
    let tiny = Limits {
        records: 2,
        bytes: 1 << 20,
    };
    assert_eq!(plan(&mut w, 16, tiny, &[]), vec![vec![1], vec![2]]);
    // The byte limit too.
    let mut w = window((0..3).map(|i| add(C1, &[&format!("a{i}")])).collect());
    let one_body = Limits {
        records: 1000,
        bytes: 60,
    };
    assert_eq!(
        plan(&mut w, 16, one_body, &[]),
        vec![vec![1], vec![2], vec![3]]
    );
}

#[test]
fn other_collections_operations_and_shapes_do_not_share_and_barriers_hold() {
    let mut w = window(vec![
        add(C1, &["a"]),
        add(C2, &["b"]),
        add(C1, &["c"]),
        record(C1, "delete", &["z"]),
        entry(
            C1,
            "add",
            json!({"ids": ["d"], "embeddings": [[1.0, 2.0]], "documents": ["x"]}),
        ),
        add(C2, &["e"]),
        // A delete by filter touches every record: later entries wait.
        entry(C1, "delete", json!({"where": {"k": "v"}})),
        add(C1, &["f"]),
    ]);
    assert_eq!(
        plan(&mut w, 16, LIMITS, &[]),
        vec![vec![1, 3], vec![2, 6], vec![4], vec![5]]
    );
}

#[test]
fn executions_and_entries_whose_client_waits_go_alone() {
    let mut w = window((0..4).map(|i| add(C1, &[&format!("id{i}")])).collect());
    let groups = plan_with_roles(&mut w, 16, LIMITS, &[2], |lsn| {
        if lsn == 4 {
            Role::Execute
        } else {
            Role::Replay
        }
    });
    assert_eq!(groups, vec![vec![1, 3], vec![2], vec![4]]);
}
