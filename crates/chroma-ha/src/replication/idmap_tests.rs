//! Tests of the id map ([`super`]).

use super::*;

async fn map(dir: &std::path::Path) -> IdMap {
    let store = StateStore::Files(dir.to_path_buf());
    IdMap::load(store, vec!["primary".into(), "replica".into()])
        .await
        .unwrap()
}

#[tokio::test]
async fn the_executor_names_the_logical_id_and_replicas_link_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let ids = map(dir.path()).await;
    let logical = ids.learn_created(7, 1, "t", "d", "docs", "R1");
    assert_eq!(logical, "R1", "the replica executed the create");
    assert_eq!(ids.learn_created(7, 0, "t", "d", "docs", "P1"), "R1");
    assert_eq!(ids.physical("R1", 0).as_deref(), Some("P1"));
    assert_eq!(ids.logical("P1", 0).as_deref(), Some("R1"));
    // Replaying the create is harmless.
    assert_eq!(ids.learn_created(7, 0, "t", "d", "docs", "P1"), "R1");
    ids.persist().await.unwrap();
    let again = map(dir.path()).await;
    assert_eq!(again.physical("R1", 0).as_deref(), Some("P1"));
    assert_eq!(again.physical("R1", 1).as_deref(), Some("R1"));
}

#[tokio::test]
async fn a_collection_deleted_on_one_server_is_never_matched_by_name_there_again() {
    let dir = tempfile::tempdir().unwrap();
    let ids = map(dir.path()).await;
    let old = ids.learn_created(1, 0, "t", "d", "taken", "P1");
    ids.learn_created(1, 1, "t", "d", "taken", "R1");
    ids.forget(0, "t", "d", "taken", 100);
    assert!(ids.is_gone_on(&old, 0));
    assert!(
        !ids.is_gone_on(&old, 1),
        "the replica has not deleted it yet"
    );
    // Another collection takes the name on the primary: a new id.
    let new = ids.adopt(0, "t", "d", "taken", "P2").unwrap();
    assert_ne!(new, old);
    assert_eq!(ids.physical(&old, 0), None);
    ids.persist().await.unwrap();
    assert!(
        map(dir.path()).await.is_gone_on(&old, 0),
        "kept across restarts"
    );
}

#[tokio::test]
async fn adoption_links_by_name_and_a_recreated_name_gets_a_new_id() {
    let dir = tempfile::tempdir().unwrap();
    let ids = map(dir.path()).await;
    let a = ids.adopt(0, "t", "d", "old", "P9").unwrap();
    assert_eq!(ids.adopt(1, "t", "d", "old", "R9").unwrap(), a);
    ids.forget(0, "t", "d", "old", 100);
    ids.forget(1, "t", "d", "old", 100);
    assert!(ids.get(&a).is_none());
    let b = ids.learn_created(20, 0, "t", "d", "old", "P10");
    assert_ne!(a, b);
    assert_eq!(ids.learn_created(20, 1, "t", "d", "old", "R10"), b);
}

#[tokio::test]
async fn a_reset_forgets_one_server_only() {
    let dir = tempfile::tempdir().unwrap();
    let ids = map(dir.path()).await;
    let a = ids.learn_created(1, 0, "t", "d", "x", "P1");
    ids.learn_created(1, 1, "t", "d", "x", "R1");
    ids.forget_server(0);
    assert_eq!(ids.physical(&a, 0), None);
    assert_eq!(ids.physical(&a, 1).as_deref(), Some("R1"));
    ids.forget_server(1);
    assert!(ids.is_empty());
}

/// Both servers hold `old` and `new`; the primary then deletes `old` and
/// renames `new` to `old` (LSNs 3 and 4) while the replica lags.
fn primary_reuses_a_deleted_name(ids: &IdMap, old: &str, new: &str) -> (String, String) {
    let a = ids.learn_created(1, 0, "t", "d", old, &format!("P-{old}"));
    ids.learn_created(1, 1, "t", "d", old, &format!("R-{old}"));
    let b = ids.learn_created(2, 0, "t", "d", new, &format!("P-{new}"));
    ids.learn_created(2, 1, "t", "d", new, &format!("R-{new}"));
    ids.forget(0, "t", "d", old, 3);
    ids.rename(&b, 0, old, 4);
    (a, b)
}

#[tokio::test]
async fn a_lagging_servers_delete_by_name_unlinks_the_collection_that_had_the_name_on_that_server_not_the_one_renamed_into_it(
) {
    let dir = tempfile::tempdir().unwrap();
    let ids = map(dir.path()).await;
    // Which entry a name-keyed lookup finds depends on hash-map order:
    // enough rounds that a wrong pick cannot pass by luck.
    for round in 0..32 {
        let (old, new) = (format!("old{round}"), format!("new{round}"));
        let (a, b) = primary_reuses_a_deleted_name(&ids, &old, &new);
        // The replica catches up: its delete of `old` means `a`.
        ids.forget(1, "t", "d", &old, 100);
        assert!(
            ids.get(&a).is_none(),
            "round {round}: `a` is gone everywhere"
        );
        assert_eq!(
            ids.physical(&b, 1),
            Some(format!("R-{new}")),
            "round {round}: the replica's delete unlinked the collection renamed into the name"
        );
        assert!(!ids.is_gone_on(&b, 1), "round {round}");
        ids.rename(&b, 1, &old, 4);
        assert_eq!(ids.name_on(&b, 1), Some(old.clone()), "round {round}");
    }
}

#[tokio::test]
async fn a_lagging_server_resolves_a_collection_by_the_name_it_has_on_that_server() {
    let dir = tempfile::tempdir().unwrap();
    let ids = map(dir.path()).await;
    let (_, b) = primary_reuses_a_deleted_name(&ids, "old", "new");
    assert_eq!(ids.get(&b).unwrap().name, "old", "clients see the new name");
    assert_eq!(ids.name_on(&b, 0).as_deref(), Some("old"));
    assert_eq!(
        ids.name_on(&b, 1).as_deref(),
        Some("new"),
        "the replica has not applied the rename yet"
    );
}

#[tokio::test]
async fn a_lagging_server_applying_an_earlier_rename_does_not_bring_back_an_older_latest_name() {
    let dir = tempfile::tempdir().unwrap();
    let ids = map(dir.path()).await;
    let a = ids.learn_created(1, 0, "t", "d", "first", "P1");
    ids.learn_created(1, 1, "t", "d", "first", "R1");
    ids.rename(&a, 0, "second", 5);
    ids.rename(&a, 0, "third", 6);
    ids.rename(&a, 1, "second", 5);
    assert_eq!(ids.get(&a).unwrap().name, "third");
    assert_eq!(ids.name_on(&a, 1).as_deref(), Some("second"));
    ids.rename(&a, 1, "third", 6);
    assert_eq!(ids.name_on(&a, 1).as_deref(), Some("third"));
}

#[tokio::test]
async fn per_server_names_survive_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let ids = map(dir.path()).await;
    let (a, b) = primary_reuses_a_deleted_name(&ids, "old", "new");
    ids.persist().await.unwrap();
    drop(ids);
    for _ in 0..16 {
        let again = map(dir.path()).await;
        assert_eq!(again.name_on(&b, 1).as_deref(), Some("new"));
        assert_eq!(again.name_on(&b, 0).as_deref(), Some("old"));
        again.forget(1, "t", "d", "old", 100);
        assert!(again.get(&a).is_none());
        assert_eq!(again.physical(&b, 1).as_deref(), Some("R-new"));
        // Reloaded again from the same file: `again` is not persisted.
    }
    // And the latest rename's LSN survives too.
    let again = map(dir.path()).await;
    again.rename(&b, 1, "earlier", 3);
    assert_eq!(again.get(&b).unwrap().name, "old");
}

#[tokio::test]
async fn a_file_without_per_server_names_gives_each_linked_server_the_latest_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("collections.json");
    let old_format = serde_json::json!({"collections": [{
        "logical": "P1", "tenant": "t", "database": "d", "name": "docs",
        "created_lsn": 1, "physical": {"primary": "P1", "replica": "R1"}
    }]});
    std::fs::write(&path, serde_json::to_vec(&old_format).unwrap()).unwrap();
    let ids = map(dir.path()).await;
    assert_eq!(ids.name_on("P1", 1).as_deref(), Some("docs"));
    // A rename on the primary does not move the replica's name.
    ids.rename("P1", 0, "renamed", 9);
    assert_eq!(ids.name_on("P1", 1).as_deref(), Some("docs"));
    ids.forget(1, "t", "d", "docs", 100);
    assert_eq!(ids.physical("P1", 1), None);
}

#[tokio::test]
async fn a_collection_deleted_on_its_executor_before_a_lagging_server_applied_its_create_still_gets_linked_there(
) {
    let dir = tempfile::tempdir().unwrap();
    let ids = map(dir.path()).await;
    // The primary creates `col0` (LSN 337) and deletes it (LSN 341)
    // before the replica has applied the create.
    let a = ids.learn_created(337, 0, "t", "d", "col0", "P1");
    ids.forget(0, "t", "d", "col0", 341);
    assert_eq!(
        ids.learn_created(337, 1, "t", "d", "col0", "R1"),
        a,
        "the replica's copy is the same logical collection"
    );
    assert_eq!(ids.physical(&a, 1).as_deref(), Some("R1"));
    ids.forget(1, "t", "d", "col0", 341);
    assert!(ids.get(&a).is_none(), "deleted everywhere: dropped");
}

#[tokio::test]
async fn a_lagging_servers_database_delete_leaves_the_collections_created_after_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    let ids = map(dir.path()).await;
    let x = ids.learn_created(1, 0, "t", "d", "x", "P1");
    ids.learn_created(1, 1, "t", "d", "x", "R1");
    // The primary deletes the database (LSN 5), makes it again and
    // creates `y` in it (LSN 7); then the replica applies LSN 5.
    ids.forget_database(0, "t", "d", 5);
    let y = ids.learn_created(7, 0, "t", "d", "y", "P7");
    ids.forget_database(1, "t", "d", 5);
    assert!(ids.get(&x).is_none());
    assert!(!ids.is_gone_on(&y, 1), "the replica has yet to create `y`");
    assert_eq!(ids.learn_created(7, 1, "t", "d", "y", "R7"), y);
    assert_eq!(ids.physical(&y, 1).as_deref(), Some("R7"));
}

/// The primary creates `x` (LSN 10), deletes it (LSN 11) and creates
/// `x` again (LSN 12) while the replica lags; the replica holds `R1`,
/// its copy of the first `x`, that no link names yet.
fn a_name_reused_while_the_replica_lags(ids: &IdMap) -> (String, String) {
    let first = ids.learn_created(10, 0, "t", "d", "x", "P1");
    ids.forget(0, "t", "d", "x", 11);
    let second = ids.learn_created(12, 0, "t", "d", "x", "P2");
    (first, second)
}

#[tokio::test]
async fn a_lagging_servers_copy_found_by_a_listing_before_its_create_was_learned_is_linked_to_the_first_collection_of_that_name_not_the_newest(
) {
    // A listing (a read, or adoption after a restart that lost the
    // link) finds the replica's `x` before the applier learns it.
    let dir = tempfile::tempdir().unwrap();
    let ids = map(dir.path()).await;
    let (first, second) = a_name_reused_while_the_replica_lags(&ids);
    assert_eq!(ids.adopt(1, "t", "d", "x", "R1").unwrap(), first);
    assert_eq!(ids.learn_created(10, 1, "t", "d", "x", "R1"), first);
    assert_eq!(ids.physical(&first, 1).as_deref(), Some("R1"));
    assert_eq!(ids.physical(&second, 1), None, "not created there yet");
    // The replica goes on: the delete, then the second create.
    ids.forget(1, "t", "d", "x", 11);
    assert!(ids.get(&first).is_none(), "deleted everywhere");
    assert_eq!(ids.adopt(1, "t", "d", "x", "R2").unwrap(), second);
    assert_eq!(ids.learn_created(12, 1, "t", "d", "x", "R2"), second);
    assert_eq!(ids.physical(&second, 1).as_deref(), Some("R2"));
}

#[tokio::test]
async fn a_collection_renamed_before_a_lagging_server_created_it_is_still_found_there_by_the_name_it_was_created_with(
) {
    let dir = tempfile::tempdir().unwrap();
    let ids = map(dir.path()).await;
    let a = ids.learn_created(10, 0, "t", "d", "x", "P1");
    ids.rename(&a, 0, "y", 11);
    assert_eq!(ids.name_on(&a, 1).as_deref(), Some("x"));
    assert_eq!(ids.adopt(1, "t", "d", "x", "R1").unwrap(), a);
    ids.rename(&a, 1, "y", 11);
    assert_eq!(ids.name_on(&a, 1).as_deref(), Some("y"));
}

#[tokio::test]
async fn a_collection_adopted_on_its_executor_before_its_create_was_learned_still_gets_linked_on_a_server_that_lags_behind_an_earlier_database_delete(
) {
    // Seen in a crash history (seed 404): the primary executed the
    // create of `col0` (LSN 336) and the gateway died before learning
    // it; after the restart a listing adopted the primary's copy by
    // name, then the primary's replay of LSN 336 found it already done.
    // The replica, lagging, then applied a delete of the database made
    // before (LSN 231), then LSN 336.
    let dir = tempfile::tempdir().unwrap();
    let ids = map(dir.path()).await;
    let adopted = ids.adopt(0, "t", "hdb1", "col0", "P1").unwrap();
    assert_eq!(
        ids.learn_created(336, 0, "t", "hdb1", "col0", "P1"),
        adopted
    );
    ids.forget_database(1, "t", "hdb1", 231);
    assert!(!ids.is_gone_on(&adopted, 1), "created after the delete");
    assert_eq!(
        ids.learn_created(336, 1, "t", "hdb1", "col0", "R1"),
        adopted,
        "the replica's copy is the same logical collection"
    );
    assert_eq!(ids.physical(&adopted, 1).as_deref(), Some("R1"));
}

#[tokio::test]
async fn a_listing_answered_after_a_delete_does_not_bring_the_deleted_collection_back_as_a_new_one()
{
    // Seen in a crash history (seed 101): a listing of the primary
    // answered just after it applied the delete of `col3` still held
    // it; adopting it made a phantom collection that a later create of
    // `col3` on the replica then linked to: primary 404s.
    let dir = tempfile::tempdir().unwrap();
    let ids = map(dir.path()).await;
    let a = ids.learn_created(1, 0, "t", "d", "col3", "P1");
    ids.learn_created(1, 1, "t", "d", "col3", "R1");
    ids.forget(0, "t", "d", "col3", 111);
    assert_eq!(ids.adopt(0, "t", "d", "col3", "P1"), None);
    assert_eq!(ids.len(), 1, "no phantom entry");
    ids.forget(1, "t", "d", "col3", 111);
    assert!(ids.get(&a).is_none());
    // The next `col3`, created on the replica, gets its own id and the
    // primary's copy links to it.
    let b = ids.learn_created(953, 1, "t", "d", "col3", "R2");
    assert_eq!(ids.learn_created(953, 0, "t", "d", "col3", "P2"), b);
}

#[tokio::test]
async fn a_delete_by_name_on_a_server_that_never_had_the_collection_lets_it_be_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let ids = map(dir.path()).await;
    // Adopted on the primary only (made before the gateway).
    let a = ids.adopt(0, "t", "d", "only", "P1").unwrap();
    ids.forget(0, "t", "d", "only", 9);
    assert!(ids.get(&a).is_some(), "the replica has not applied it yet");
    ids.forget(1, "t", "d", "only", 9);
    assert!(ids.get(&a).is_none());
}

#[tokio::test]
async fn a_copied_collection_every_server_deleted_since_is_known_again_on_its_server_only() {
    let dir = tempfile::tempdir().unwrap();
    let ids = map(dir.path()).await;
    let logical = ids.learn_created(3, 0, "t", "d", "old", "P1");
    ids.learn_created(3, 1, "t", "d", "old", "R1");
    ids.forget(0, "t", "d", "old", 9);
    ids.forget_server(1);
    assert!(ids.get(&logical).is_none(), "deleted everywhere: dropped");
    // A backup taken before the delete is restored onto the replica.
    let link = ServerLink {
        logical: Some(logical.clone()),
        physical: "R2".into(),
        tenant: "t".into(),
        database: "d".into(),
        name: "old".into(),
    };
    ids.link_copy(1, &link);
    assert_eq!(ids.physical(&logical, 1).as_deref(), Some("R2"));
    assert_eq!(ids.links(1), vec![link]);
    assert!(ids.is_gone_on(&logical, 0), "the primary deleted it");
    assert!(ids.links(0).is_empty());
    // The replica replays the delete: it is dropped again.
    ids.forget(1, "t", "d", "old", 9);
    assert!(ids.get(&logical).is_none());
}

#[tokio::test]
async fn a_copied_collection_without_a_logical_id_is_adopted_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let ids = map(dir.path()).await;
    let known = ids.adopt(0, "t", "d", "outside", "P1").unwrap();
    ids.link_copy(
        1,
        &ServerLink {
            logical: None,
            physical: "R1".into(),
            tenant: "t".into(),
            database: "d".into(),
            name: "outside".into(),
        },
    );
    assert_eq!(ids.physical(&known, 1).as_deref(), Some("R1"));
}
