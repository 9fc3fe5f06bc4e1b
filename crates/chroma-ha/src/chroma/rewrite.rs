//! Collection id rewriting: logical → physical in request paths, physical →
//! logical in the response bodies that carry collection objects, and
//! reading (id, name) out of collection objects to learn mappings.

use http::Method;
use serde::Deserialize;

use super::json_scan::{self, Span};
use super::operation::{Operation, ResponseIds};
use super::routes::{classify, Route};
use super::segment;

/// The result of [`rewrite_path_to_physical`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathRewrite {
    /// The route addresses no collection by id (unknown routes included):
    /// send the path as it is.
    NoCollectionId,
    /// The path with its collection-id segment replaced; every other byte
    /// (other segments, query string) is unchanged.
    Rewritten(String),
    /// The route has a collection id that the mapping does not know.
    Unmapped {
        /// The (decoded) id the client used.
        logical: String,
    },
}

/// Rewrite the collection-id segment of `path_and_query` (a request target
/// such as `/api/v2/…/collections/<id>/add?x=1`) to the physical id that
/// `to_physical(logical)` gives for the target server.
///
/// Guarantees: only the single segment that the route identifies as a
/// collection id is touched (names, CRNs and other segments never are);
/// the query string is kept byte for byte.
pub fn rewrite_path_to_physical(
    method: &Method,
    path_and_query: &str,
    to_physical: impl Fn(&str) -> Option<String>,
) -> PathRewrite {
    let (path, query) = match path_and_query.find('?') {
        Some(i) => path_and_query.split_at(i),
        None => (path_and_query, ""),
    };
    let Route::Known(known) = classify(method, path) else {
        return PathRewrite::NoCollectionId;
    };
    let (Some(logical), Some(index)) = (known.collection_id(), known.op.collection_segment_index())
    else {
        return PathRewrite::NoCollectionId;
    };
    let Some(physical) = to_physical(logical) else {
        return PathRewrite::Unmapped {
            logical: logical.to_owned(),
        };
    };
    let mut out = String::with_capacity(path_and_query.len() + physical.len());
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if i == index {
            out.push_str(&segment::encode(&physical));
        } else {
            out.push_str(seg);
        }
    }
    out.push_str(query);
    PathRewrite::Rewritten(out)
}

/// Rewrite the collection ids in a 2xx response body of `op` from physical
/// to logical with `to_logical(physical)`; ids it maps to `None` stay.
///
/// Returns `None` when the body must be sent as it is: the operation
/// carries no collection objects (its body is not even read: record
/// endpoints pass through untouched), the body is not valid JSON or not of
/// the expected shape, or no id changed. When `Some`, the new body differs
/// from the old only inside the rewritten id strings: key order, numbers,
/// whitespace and every other field are byte-identical.
///
/// Ids rewritten: `"id"` of a collection object (create, get by name, get
/// by id, fork, CRN get), of each element of a list, and
/// `attached_function.{input_collection_id,output_collection_id}`.
pub fn rewrite_response_ids(
    op: Operation,
    body: &[u8],
    to_logical: impl Fn(&str) -> Option<String>,
) -> Option<Vec<u8>> {
    let kind = op.response_ids();
    if kind == ResponseIds::None || !json_scan::is_valid(body) {
        return None;
    }
    let root = json_scan::root(body)?;
    let mut targets: Vec<Span> = Vec::new();
    match kind {
        ResponseIds::None => return None,
        ResponseIds::Collection => member_spans(body, &root, &["id"], &mut targets),
        ResponseIds::CollectionList => {
            for element in json_scan::array_elements(body, &root)? {
                member_spans(body, &element, &["id"], &mut targets);
            }
        }
        ResponseIds::AttachedFunction => {
            for (key, span) in json_scan::object_members(body, &root)? {
                if key == "attached_function" {
                    member_spans(
                        body,
                        &span,
                        &["input_collection_id", "output_collection_id"],
                        &mut targets,
                    );
                }
            }
        }
    }
    let mut edits: Vec<(Span, Vec<u8>)> = Vec::new();
    for span in targets {
        let Some(physical) = json_scan::string_at(body, &span) else {
            continue;
        };
        let Some(logical) = to_logical(&physical) else {
            continue;
        };
        if logical == physical {
            continue;
        }
        let Ok(encoded) = serde_json::to_vec(&logical) else {
            continue;
        };
        edits.push((span, encoded));
    }
    if edits.is_empty() {
        return None;
    }
    edits.sort_by_key(|(span, _)| span.start);
    let mut out = Vec::with_capacity(body.len() + 16 * edits.len());
    let mut at = 0;
    for (span, new) in edits {
        out.extend_from_slice(body.get(at..span.start)?);
        out.extend_from_slice(&new);
        at = span.end;
    }
    out.extend_from_slice(body.get(at..)?);
    Some(out)
}

/// Push the value spans of `keys` members of the object at `span` (if it
/// is an object).
fn member_spans(body: &[u8], span: &Span, keys: &[&str], out: &mut Vec<Span>) {
    if let Some(members) = json_scan::object_members(body, span) {
        for (key, value) in members {
            if keys.contains(&key.as_str()) {
                out.push(value);
            }
        }
    }
}

/// Identity of one collection object, as a server reported it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CollectionInfo {
    /// The collection id on that server.
    pub id: String,
    /// The collection name.
    pub name: String,
    /// The tenant, when the object says.
    #[serde(default)]
    pub tenant: Option<String>,
    /// The database, when the object says.
    #[serde(default)]
    pub database: Option<String>,
}

/// Read (id, name, tenant, database) from one collection object (the body
/// of a create, get, get-by-id or fork response). `None` if the body is not
/// an object with string `id` and `name`.
pub fn collection_info(body: &[u8]) -> Option<CollectionInfo> {
    serde_json::from_slice(body).ok()
}

/// Read every collection of a list-collections response. `None` if the
/// body is not an array of collection objects.
pub fn collection_infos(body: &[u8]) -> Option<Vec<CollectionInfo>> {
    serde_json::from_slice(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    const T: &str = "/api/v2/tenants/default_tenant/databases/default_database";
    const LOGICAL: &str = "63b2d180-955b-48c4-b4da-e836daa0fa3b";
    const PHYSICAL: &str = "2b5e96db-586d-44bd-8934-c0c413d7440a";

    fn map_l2p(id: &str) -> Option<String> {
        (id == LOGICAL).then(|| PHYSICAL.to_owned())
    }
    fn map_p2l(id: &str) -> Option<String> {
        (id == PHYSICAL).then(|| LOGICAL.to_owned())
    }

    #[test]
    fn path_rewrite_touches_only_the_id_segment() {
        let p = format!("{T}/collections/{LOGICAL}/count?read_level=index_and_wal");
        assert_eq!(
            rewrite_path_to_physical(&Method::GET, &p, map_l2p),
            PathRewrite::Rewritten(format!(
                "{T}/collections/{PHYSICAL}/count?read_level=index_and_wal"
            ))
        );
        let by_id = format!("{T}/collections/by-id/{LOGICAL}");
        assert_eq!(
            rewrite_path_to_physical(&Method::GET, &by_id, map_l2p),
            PathRewrite::Rewritten(format!("{T}/collections/by-id/{PHYSICAL}"))
        );
        // A NAME that equals a logical id is never rewritten.
        let name = format!("{T}/collections/{LOGICAL}");
        for m in [Method::GET, Method::DELETE] {
            assert_eq!(
                rewrite_path_to_physical(&m, &name, map_l2p),
                PathRewrite::NoCollectionId
            );
        }
        assert_eq!(
            rewrite_path_to_physical(&Method::PUT, &name, map_l2p),
            PathRewrite::Rewritten(format!("{T}/collections/{PHYSICAL}"))
        );
        // Tenant or database equal to the id: only the id segment changes.
        let tricky =
            format!("/api/v2/tenants/{LOGICAL}/databases/{LOGICAL}/collections/{LOGICAL}/add");
        assert_eq!(
            rewrite_path_to_physical(&Method::POST, &tricky, map_l2p),
            PathRewrite::Rewritten(format!(
                "/api/v2/tenants/{LOGICAL}/databases/{LOGICAL}/collections/{PHYSICAL}/add"
            ))
        );
        assert_eq!(
            rewrite_path_to_physical(
                &Method::POST,
                &format!("{T}/collections/other/add"),
                map_l2p
            ),
            PathRewrite::Unmapped {
                logical: "other".into()
            }
        );
        assert_eq!(
            rewrite_path_to_physical(&Method::GET, "/api/v2/heartbeat", map_l2p),
            PathRewrite::NoCollectionId
        );
        assert_eq!(
            rewrite_path_to_physical(&Method::GET, "/api/v2/whatever/x", map_l2p),
            PathRewrite::NoCollectionId
        );
    }

    #[test]
    fn collection_response_is_rewritten_byte_exactly() {
        let body = format!(
            r#"{{"id":"{PHYSICAL}","name":"col1","configuration_json":{{"hnsw":{{"resize_factor":1.2}}}},"metadata":{{"id":"{PHYSICAL}","f":0.30000000000000004}},"tenant":"t","database":"d","log_position":0,"version":0}}"#
        );
        let out =
            rewrite_response_ids(Operation::CreateCollection, body.as_bytes(), map_p2l).unwrap();
        let expect = body.replacen(PHYSICAL, LOGICAL, 1);
        assert_eq!(String::from_utf8(out).unwrap(), expect);
        // Unknown ids stay: no change at all.
        assert_eq!(
            rewrite_response_ids(Operation::GetCollection, body.as_bytes(), |_| None),
            None
        );
    }

    #[test]
    fn list_and_attached_function_responses() {
        let list = format!(r#"[{{"id":"{PHYSICAL}","name":"a"}}, {{"id":"zzz","name":"b"}}]"#);
        let out =
            rewrite_response_ids(Operation::ListCollections, list.as_bytes(), map_p2l).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(r#"[{{"id":"{LOGICAL}","name":"a"}}, {{"id":"zzz","name":"b"}}]"#)
        );
        let af = format!(
            r#"{{"attached_function":{{"id":"{PHYSICAL}","input_collection_id":"{PHYSICAL}","output_collection_id":null}}}}"#
        );
        let out =
            rewrite_response_ids(Operation::GetAttachedFunction, af.as_bytes(), map_p2l).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                r#"{{"attached_function":{{"id":"{PHYSICAL}","input_collection_id":"{LOGICAL}","output_collection_id":null}}}}"#
            )
        );
    }

    #[test]
    fn record_and_other_bodies_are_never_read() {
        let calls = Cell::new(0);
        let counting = |_: &str| {
            calls.set(calls.get() + 1);
            Some("x".to_owned())
        };
        let body = format!(r#"{{"id":"{PHYSICAL}","ids":["{PHYSICAL}"]}}"#);
        for op in Operation::ALL {
            if op.response_ids() == ResponseIds::None {
                assert_eq!(
                    rewrite_response_ids(op, body.as_bytes(), counting),
                    None,
                    "{op:?}"
                );
            }
        }
        assert_eq!(calls.get(), 0);
        // PUT answers `{}` on 1.5.9: nothing to rewrite.
        assert_eq!(
            Operation::UpdateCollection.response_ids(),
            ResponseIds::None
        );
    }

    #[test]
    fn invalid_or_unexpected_bodies_pass() {
        for body in ["", "{", "[1,2]", r#"{"id":5}"#, "null", r#"{"id":"a"} x"#] {
            assert_eq!(
                rewrite_response_ids(Operation::GetCollection, body.as_bytes(), |_| Some(
                    "L".into()
                )),
                None,
                "{body}"
            );
        }
        assert_eq!(
            rewrite_response_ids(Operation::ListCollections, br#"{"id":"a"}"#, |_| Some(
                "L".into()
            )),
            None
        );
    }

    #[test]
    fn collection_info_reads_create_responses() {
        let body = br#"{"id":"abc","name":"col1","configuration_json":{},"tenant":"t","database":"d","log_position":0,"version":0}"#;
        assert_eq!(
            collection_info(body),
            Some(CollectionInfo {
                id: "abc".into(),
                name: "col1".into(),
                tenant: Some("t".into()),
                database: Some("d".into())
            })
        );
        assert_eq!(collection_info(br#"{"error":"x","message":"y"}"#), None);
        assert_eq!(collection_info(b"garbage"), None);
        let list = br#"[{"id":"a","name":"x"},{"id":"b","name":"y","tenant":"t"}]"#;
        let infos = collection_infos(list).unwrap();
        assert_eq!(infos.len(), 2);
        assert_eq!(infos[1].tenant.as_deref(), Some("t"));
        assert_eq!(collection_infos(b"[1]"), None);
    }
}
