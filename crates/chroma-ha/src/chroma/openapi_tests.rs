//! The route table against `reference/chroma-1.5.9-openapi.json`: every
//! path × method of the spec classifies to its operation, with the class
//! and scope level of an explicit expected table that covers the spec
//! exactly.

use std::collections::{BTreeMap, BTreeSet};

use http::Method;
use serde_json::Value;

use super::operation::{Class, Operation, ScopeLevel};
use super::routes::{classify, CollectionRef, Route};

/// What each operationId must be: `None` = Read, `Some(level)` = Write.
const EXPECTED: &[(&str, Option<ScopeLevel>)] = &[
    ("get_user_identity", None),
    ("get_collection_by_crn", None),
    ("healthcheck", None),
    ("heartbeat", None),
    ("pre_flight_checks", None),
    ("reset", Some(ScopeLevel::Global)),
    ("create_tenant", Some(ScopeLevel::Global)),
    ("get_tenant", None),
    ("update_tenant", Some(ScopeLevel::Global)),
    ("list_databases", None),
    ("create_database", Some(ScopeLevel::Database)),
    ("get_database", None),
    ("delete_database", Some(ScopeLevel::Database)),
    ("list_collections", None),
    ("create_collection", Some(ScopeLevel::Database)),
    ("get_collection_by_id", None),
    ("get_collection", None),
    ("update_collection", Some(ScopeLevel::Collection)),
    ("delete_collection", Some(ScopeLevel::Database)),
    ("collection_add", Some(ScopeLevel::Collection)),
    ("detach_function", Some(ScopeLevel::Database)),
    ("collection_count", None),
    ("collection_delete", Some(ScopeLevel::Collection)),
    ("fork_collection", Some(ScopeLevel::Database)),
    ("fork_count", None),
    ("attach_function", Some(ScopeLevel::Database)),
    ("get_attached_function", None),
    ("collection_get", None),
    ("indexing_status", None),
    ("collection_query", None),
    ("collection_search", None),
    ("collection_update", Some(ScopeLevel::Collection)),
    ("collection_upsert", Some(ScopeLevel::Collection)),
    ("count_collections", None),
    ("version", None),
];

const SAMPLE_ID: &str = "5c7d3e8a-1f2b-4c5d-9e0f-a1b2c3d4e5f6";

fn sample(param: &str) -> &'static str {
    match param {
        "tenant" | "tenant_name" => "sample_tenant",
        "database" => "sample_db",
        "collection_id" => SAMPLE_ID,
        "crn" => "sample_tenant:sample_db:sample_coll",
        "name" | "function_name" => "sample_fn",
        other => panic!("spec has a path parameter the test does not know: {other}"),
    }
}

fn substitute(template: &str) -> String {
    template
        .split('/')
        .map(
            |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(param) => sample(param).to_owned(),
                None => seg.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

fn spec() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../reference/chroma-1.5.9-openapi.json"
    );
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn every_spec_operation_classifies_as_expected() {
    let spec = spec();
    let expected: BTreeMap<&str, Option<ScopeLevel>> = EXPECTED.iter().copied().collect();
    assert_eq!(expected.len(), EXPECTED.len(), "duplicate in EXPECTED");
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let paths = spec["paths"].as_object().unwrap();
    for (template, methods) in paths {
        for (method, operation) in methods.as_object().unwrap() {
            let Ok(m) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&m.as_str()) {
                continue;
            }
            let id = operation["operationId"].as_str().unwrap();
            assert!(seen.insert(id.to_owned()), "operationId {id} twice in spec");
            let want = *expected
                .get(id)
                .unwrap_or_else(|| panic!("spec operation {id} missing from EXPECTED"));

            let path = substitute(template);
            let route = classify(&m, &path);
            let Route::Known(known) = &route else {
                panic!("{m} {path} ({id}) classified as {route:?}");
            };
            let op = known.op;
            assert_eq!(op.operation_id(), id, "{m} {path}");
            assert_eq!(op.template(), template.as_str(), "{id}");
            assert_eq!(op.method(), m, "{id}");
            assert_eq!(route.metrics_label(), template.as_str(), "{id}");
            let want_class = if want.is_some() {
                Class::Write
            } else {
                Class::Read
            };
            assert_eq!(route.class(), want_class, "{id}");
            assert_eq!(op.write_level(), want, "{id}");

            // Parameters come back from the path.
            if template.contains("{tenant}") || template.contains("{tenant_name}") {
                assert_eq!(known.tenant.as_deref(), Some("sample_tenant"), "{id}");
            }
            if template.contains("{database}") {
                assert_eq!(known.database.as_deref(), Some("sample_db"), "{id}");
            }
            if template.contains("{collection_id}") {
                let value = SAMPLE_ID.to_owned();
                let want_ref =
                    if matches!(op, Operation::GetCollection | Operation::DeleteCollection) {
                        CollectionRef::Name(value)
                    } else {
                        CollectionRef::Id(value)
                    };
                assert_eq!(known.collection.as_ref(), Some(&want_ref), "{id}");
            } else {
                assert_eq!(known.collection, None, "{id}");
            }
            assert_eq!(known.render(), path, "{id}");
        }
    }
    let expected_ids: BTreeSet<String> = expected.keys().map(|s| s.to_string()).collect();
    assert_eq!(seen, expected_ids, "EXPECTED and the spec differ");
    let all_ids: BTreeSet<String> = Operation::ALL
        .iter()
        .map(|op| op.operation_id().to_owned())
        .collect();
    assert_eq!(all_ids, seen, "Operation::ALL and the spec differ");
}

#[test]
fn wrong_methods_on_spec_paths_are_unknown() {
    let spec = spec();
    for (template, methods) in spec["paths"].as_object().unwrap() {
        let path = substitute(template);
        for m in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if methods.get(m.to_lowercase()).is_some() {
                continue;
            }
            let method: Method = m.parse().unwrap();
            let route = classify(&method, &path);
            // The same path may be another template's match (a collection
            // named like a static word); otherwise it must be unknown.
            if let Some(op) = route.operation() {
                assert_eq!(op.method(), method, "{m} {path}");
                assert_ne!(op.template(), template.as_str(), "{m} {path}");
            }
        }
    }
}
