use super::*;
use http::Method;
use serde_json::{json, Value};

const PATH: &str = "/api/v2/tenants/t/databases/d/collections/c1/add";

fn part(op: Operation, body: &str) -> Option<MergePart> {
    MergePart::parse(
        op,
        &Method::POST,
        PATH,
        Some("application/json"),
        &Bytes::from(body.to_string()),
    )
}

fn add(body: &str) -> MergePart {
    part(Operation::CollectionAdd, body).expect("a mergeable add")
}

fn parsed(body: &Bytes) -> Value {
    serde_json::from_slice(body).expect("the merged body is JSON")
}

#[test]
fn adds_merge_into_one_body_in_log_order_with_every_byte_kept() {
    // Number spellings a re-print would change stay as sent.
    let a = add(r#"{"ids":["a","b"],"embeddings":[[1.0,2.50],[1e-3,4]],"documents":["x",null]}"#);
    let b = add(
        r#"{ "documents": ["y"], "ids": ["c"], "embeddings": [[0.100000001490116119384765625, 6]] }"#,
    );
    assert_eq!(a.key(), b.key());
    let body = merged_body(&[&a, &b]).expect("merged");
    assert_eq!(
        std::str::from_utf8(&body).expect("utf-8"),
        r#"{"ids":["a","b","c"],"embeddings":[[1.0,2.50],[1e-3,4],[0.100000001490116119384765625, 6]],"documents":["x",null,"y"]}"#
    );
    assert_eq!(parsed(&body)["ids"], json!(["a", "b", "c"]));
}

#[test]
fn parts_of_another_shape_collection_or_content_type_do_not_share_a_key() {
    let floats = add(r#"{"ids":["a"],"embeddings":[[1,2]]}"#);
    let with_docs = add(r#"{"ids":["b"],"embeddings":[[1,2]],"documents":["d"]}"#);
    let base64 = add(r#"{"ids":["c"],"embeddings":["AACAPwAAAEA="]}"#);
    let null_docs = add(r#"{"ids":["d"],"embeddings":[[1,2]],"documents":null}"#);
    assert_ne!(floats.key(), with_docs.key());
    assert_ne!(floats.key(), base64.key());
    // A null field is an absent one.
    assert_eq!(floats.key(), null_docs.key());
    assert!(merged_body(&[&floats, &with_docs]).is_none());
    let upsert = part(
        Operation::CollectionUpsert,
        r#"{"ids":["e"],"embeddings":[[1,2]]}"#,
    )
    .expect("a mergeable upsert");
    assert_ne!(floats.key(), upsert.key());
    let other_collection = MergePart::parse(
        Operation::CollectionAdd,
        &Method::POST,
        "/api/v2/tenants/t/databases/d/collections/c2/add",
        Some("application/json"),
        &Bytes::from_static(br#"{"ids":["a"],"embeddings":[[1,2]]}"#),
    )
    .expect("mergeable");
    assert_ne!(floats.key(), other_collection.key());
    let no_content_type = MergePart::parse(
        Operation::CollectionAdd,
        &Method::POST,
        PATH,
        None,
        &Bytes::from_static(br#"{"ids":["a"],"embeddings":[[1,2]]}"#),
    )
    .expect("mergeable");
    assert_ne!(floats.key(), no_content_type.key());
}

#[test]
fn writes_that_must_go_alone_are_not_parts() {
    use Operation::*;
    for (op, body) in [
        // Another operation.
        (CollectionUpdate, r#"{"ids":["a"],"documents":["d"]}"#),
        (UpdateCollection, r#"{"new_name":"x"}"#),
        // Duplicate ids inside one write: Chroma refuses it; alone it is dead-lettered.
        (CollectionAdd, r#"{"ids":["a","a"],"embeddings":[[1],[2]]}"#),
        // Arrays of unequal length would misalign the merged records.
        (CollectionAdd, r#"{"ids":["a","b"],"embeddings":[[1]]}"#),
        (
            CollectionAdd,
            r#"{"ids":["a"],"embeddings":[[1]],"documents":["x","y"]}"#,
        ),
        // No ids, empty ids, ids that are not strings.
        (CollectionAdd, r#"{"embeddings":[[1]]}"#),
        (CollectionAdd, r#"{"ids":[],"embeddings":[]}"#),
        (CollectionAdd, r#"{"ids":[1],"embeddings":[[1]]}"#),
        // Unknown fields, mixed embeddings, a key twice, not JSON.
        (
            CollectionAdd,
            r#"{"ids":["a"],"embeddings":[[1]],"extra":1}"#,
        ),
        (
            CollectionAdd,
            r#"{"ids":["a","b"],"embeddings":[[1],"AAA="]}"#,
        ),
        (
            CollectionAdd,
            r#"{"ids":["a"],"ids":["b"],"embeddings":[[1]]}"#,
        ),
        (CollectionAdd, "not json"),
        (CollectionAdd, r#"[{"ids":["a"]}]"#),
        // A delete by filter, or with a limit.
        (CollectionDelete, r#"{"where":{"k":"v"}}"#),
        (CollectionDelete, r#"{"ids":["a"],"where":{"k":"v"}}"#),
        (
            CollectionDelete,
            r#"{"ids":["a"],"where_document":{"$contains":"x"}}"#,
        ),
        (CollectionDelete, r#"{"ids":["a"],"limit":1}"#),
        (CollectionDelete, r#"{"ids":["a"],"embeddings":[[1]]}"#),
    ] {
        assert!(part(op, body).is_none(), "{op:?} {body}");
    }
}

#[test]
fn deletes_by_ids_merge_and_null_filters_do_not_matter() {
    let a = part(Operation::CollectionDelete, r#"{"ids":["a"],"where":null}"#).expect("part");
    let b = part(Operation::CollectionDelete, r#"{"ids":["b","c"]}"#).expect("part");
    assert_eq!(a.key(), b.key());
    assert_eq!(b.ids(), ["b", "c"]);
    let body = merged_body(&[&a, &b]).expect("merged");
    assert_eq!(parsed(&body), json!({"ids": ["a", "b", "c"]}));
}
