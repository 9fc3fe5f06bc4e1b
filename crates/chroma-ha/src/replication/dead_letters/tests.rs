use super::*;
use crate::chroma::{Keys, Scope};
use crate::replication::record::Entry;
use base64::Engine;

fn letter(server: &str, lsn: u64) -> DeadLetter {
    DeadLetter {
        id: 0,
        server: server.into(),
        lsn,
        method: "POST".into(),
        path: "/api/v2/x".into(),
        status: 400,
        error: "{}".into(),
        at: 0.0,
        attempts: 1,
        record_bytes: 0,
    }
}

fn collection_footprint() -> Option<WriteFootprint> {
    Some(WriteFootprint {
        scope: Scope::Collection {
            tenant: "t".into(),
            database: "d".into(),
            collection: "c".into(),
        },
        keys: Keys::Ids(vec![1, 2]),
    })
}

/// Adds, removes and reloads letters kept in `state`.
async fn letters_survive_a_reload_and_ids_are_not_reused(state: &StateStore) {
    let list = DeadLetters::open_in(state, 100).await.unwrap();
    let a = list
        .add(letter("replica", 1), Bytes::from_static(b"ra"), None)
        .await
        .unwrap();
    let b = list
        .add(
            letter("primary", 2),
            Bytes::from_static(b"rb"),
            collection_footprint(),
        )
        .await
        .unwrap();
    assert_ne!(a, b);
    assert!(list.remove(a).await.unwrap().is_some());
    let again = DeadLetters::open_in(state, 100).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again.count_for("primary"), 1);
    assert_eq!(again.count_for("replica"), 0);
    assert_eq!(again.record(b).await.unwrap(), Bytes::from_static(b"rb"));
    assert_eq!(again.footprint(b), Some(collection_footprint()));
    assert_eq!(again.get(b).map(|l| l.record_bytes), Some(2));
    // Removing the highest letter must not let its id come back.
    assert!(again.remove(b).await.unwrap().is_some());
    let third = DeadLetters::open_in(state, 100).await.unwrap();
    assert!(third.is_empty());
    let c = third
        .add(letter("replica", 3), Bytes::new(), None)
        .await
        .unwrap();
    assert!(c > b, "id {c} reused (highest was {b})");
}

#[tokio::test]
async fn dead_letters_survive_a_reload_and_ids_are_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    letters_survive_a_reload_and_ids_are_not_reused(&StateStore::Files(dir.path().to_path_buf()))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_kept_in_postgresql_survive_a_reload_and_ids_are_not_reused() {
    let pg = pglog::testing::TestPostgres::start();
    let options = pglog::PgLogOptions::default();
    let log = pglog::PgLog::connect(&pg.url("postgres"), options)
        .await
        .unwrap();
    letters_survive_a_reload_and_ids_are_not_reused(&StateStore::Postgres(log.clone())).await;
    // A record whose letter was never completed is removed at load.
    log.store_state("dead_letter/00000000000000000099.record", b"half")
        .await
        .unwrap();
    let again = DeadLetters::open_in(&StateStore::Postgres(log.clone()), 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    // `log migrate` copies a file list into an empty database: same ids,
    // records, footprints and highest id.
    let dir = tempfile::tempdir().unwrap();
    let files = DeadLetters::open(dir.path(), 10).await.unwrap();
    let a = files
        .add(
            letter("replica", 5),
            Bytes::from_static(b"r5"),
            collection_footprint(),
        )
        .await
        .unwrap();
    let b = files
        .add(letter("primary", 6), Bytes::from_static(b"r6"), None)
        .await
        .unwrap();
    files.remove(b).await.unwrap();
    let pg2 = pglog::testing::TestPostgres::start();
    let target = pglog::PgLog::connect(&pg2.url("postgres"), pglog::PgLogOptions::default())
        .await
        .unwrap();
    let target = StateStore::Postgres(target);
    assert_eq!(files.copy_into(&target).await.unwrap(), 1);
    let copied = DeadLetters::open_in(&target, 10).await.unwrap();
    assert_eq!(copied.list(), files.list());
    assert_eq!(copied.record(a).await.unwrap(), Bytes::from_static(b"r5"));
    assert_eq!(copied.footprint(a), Some(collection_footprint()));
    let c = copied
        .add(letter("replica", 7), Bytes::new(), None)
        .await
        .unwrap();
    assert!(c > b, "id {c} reused (highest was {b})");
    assert_eq!(
        log.load_state("dead_letter/00000000000000000099.record")
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn a_full_list_refuses_a_letter_and_says_when_room_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let list = DeadLetters::open(dir.path(), 2).await.unwrap();
    let a = list
        .add(letter("replica", 1), Bytes::new(), None)
        .await
        .unwrap();
    list.add(letter("replica", 2), Bytes::new(), None)
        .await
        .unwrap();
    assert!(list.is_full());
    let refused = list.add(letter("replica", 3), Bytes::new(), None).await;
    assert!(
        matches!(refused, Err(DeadLetterError::Full { max: 2 })),
        "{refused:?}"
    );
    assert_eq!(list.len(), 2, "nothing was dropped to make room");
    let room = list.room_made();
    tokio::pin!(room);
    room.as_mut().enable();
    list.remove(a).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(1), room)
        .await
        .expect("removing a letter wakes those waiting for room");
    list.add(letter("replica", 3), Bytes::new(), None)
        .await
        .unwrap();
    assert_eq!(list.len(), 2);
}

#[tokio::test]
async fn the_same_entry_on_the_same_server_is_listed_once() {
    let dir = tempfile::tempdir().unwrap();
    let list = DeadLetters::open(dir.path(), 10).await.unwrap();
    let a = list
        .add(letter("replica", 7), Bytes::new(), None)
        .await
        .unwrap();
    let mut second = letter("replica", 7);
    second.status = 500;
    let b = list.add(second, Bytes::new(), None).await.unwrap();
    assert_eq!(a, b);
    assert_eq!(list.len(), 1);
    let stored = list.get(a).unwrap();
    assert_eq!((stored.attempts, stored.status), (2, 500));
    list.add(letter("primary", 7), Bytes::new(), None)
        .await
        .unwrap();
    assert_eq!(list.len(), 2, "another server's letter is its own");
}

#[tokio::test]
async fn an_old_dead_letters_json_is_migrated_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let entry = Entry {
        method: http::Method::POST,
        path: "/api/v2/tenants/t/databases/d/collections".into(),
        content_type: None,
        received_at_ms: 1,
        body: Bytes::from_static(br#"{"name":"x"}"#),
    };
    let record = entry.encode();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&record);
    let old = serde_json::json!({
        "next_id": 9,
        "dead_letters": [{
            "id": 4, "server": "replica", "lsn": 12, "method": "POST",
            "path": entry.path, "status": 400, "error": "no db",
            "at": 1.5, "attempts": 2, "record": b64,
        }],
    });
    let legacy = dir.path().join("dead_letters.json");
    std::fs::write(&legacy, serde_json::to_vec(&old).unwrap()).unwrap();
    let list = DeadLetters::open(dir.path(), 10).await.unwrap();
    assert!(!legacy.exists(), "the old file is removed once migrated");
    let letters = list.list();
    assert_eq!(letters.len(), 1);
    assert_eq!((letters[0].id, letters[0].lsn), (4, 12));
    assert_eq!(letters[0].attempts, 2);
    assert_eq!(list.record(4).await.unwrap(), record);
    assert_eq!(
        list.footprint(4).flatten().map(|f| f.scope),
        Some(Scope::Database {
            tenant: "t".into(),
            database: "d".into()
        })
    );
    // The old list's next id is honoured, and a reload finds the same.
    let again = DeadLetters::open(dir.path(), 10).await.unwrap();
    assert_eq!(again.list(), letters);
    let id = again
        .add(letter("replica", 13), Bytes::new(), None)
        .await
        .unwrap();
    assert_eq!(id, 10);
}

#[tokio::test]
async fn leftovers_of_an_interrupted_write_are_removed_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let list = DeadLetters::open(dir.path(), 10).await.unwrap();
    let a = list
        .add(letter("replica", 1), Bytes::from_static(b"r"), None)
        .await
        .unwrap();
    let letters_dir = dir.path().join("dead_letters");
    let orphan = letters_dir.join(format!("{:020}.record", a + 1));
    let tmp = letters_dir.join(format!("{:020}.tmp", a + 2));
    std::fs::write(&orphan, b"half").unwrap();
    std::fs::write(&tmp, b"half").unwrap();
    let again = DeadLetters::open(dir.path(), 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert!(!orphan.exists() && !tmp.exists());
    assert_eq!(again.record(a).await.unwrap(), Bytes::from_static(b"r"));
}
