//! Write footprints: what a write touches, refined to record ids inside a
//! collection, and when two writes conflict (must keep their log order).

use serde::de::IgnoredAny;
use serde::Deserialize;

use super::operation::Operation;
use super::routes::KnownRoute;
use super::scope::Scope;

/// Which records of the scope a write touches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Keys {
    /// Every record (and for non-collection scopes: everything in scope).
    All,
    /// Only these records: sorted, deduplicated [`hash_id`] values, never
    /// empty. Equal ids always give equal hashes; a hash collision only
    /// makes two writes conflict that need not (safe).
    Ids(Vec<u64>),
}

/// What one write touches: a scope, and inside a collection, which records.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WriteFootprint {
    /// The data the write may change.
    pub scope: Scope,
    /// Which records of a Collection scope; `All` for wider scopes.
    pub keys: Keys,
}

/// Stable 64-bit FNV-1a hash of a record id (its decoded UTF-8 bytes).
/// Stable across builds and platforms, so footprints can be recomputed
/// from a logged body at any time with the same result.
pub fn hash_id(id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in id.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Keys {
    /// Whether two key sets share a record (`All` shares with everything).
    pub fn intersects(&self, other: &Keys) -> bool {
        match (self, other) {
            (Keys::All, _) | (_, Keys::All) => true,
            (Keys::Ids(a), Keys::Ids(b)) => sorted_intersect(a, b),
        }
    }

    /// Keys of these ids: `All` when there are none (never a footprint
    /// that commutes with everything by accident).
    pub fn from_ids<'a>(ids: impl IntoIterator<Item = &'a str>) -> Keys {
        let mut v: Vec<u64> = ids.into_iter().map(hash_id).collect();
        if v.is_empty() {
            return Keys::All;
        }
        v.sort_unstable();
        v.dedup();
        Keys::Ids(v)
    }
}

fn sorted_intersect(a: &[u64], b: &[u64]) -> bool {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => return true,
        }
    }
    false
}

impl WriteFootprint {
    /// Whether the two writes must be applied in log order: their scopes
    /// overlap and, when both are Collection scopes, their keys intersect
    /// (either being `All` counts). Symmetric.
    pub fn conflicts(&self, other: &WriteFootprint) -> bool {
        if !self.scope.overlaps(&other.scope) {
            return false;
        }
        match (&self.scope, &other.scope) {
            (Scope::Collection { .. }, Scope::Collection { .. }) => {
                self.keys.intersects(&other.keys)
            }
            _ => true,
        }
    }

    fn whole(scope: Scope) -> WriteFootprint {
        WriteFootprint {
            scope,
            keys: Keys::All,
        }
    }
}

#[derive(Deserialize)]
struct RecordIds {
    ids: Option<Vec<String>>,
    #[serde(rename = "where")]
    where_: Option<IgnoredAny>,
    where_document: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct NamePayload {
    name: String,
}

#[derive(Deserialize)]
struct UpdateCollectionPayload {
    new_name: Option<IgnoredAny>,
}

/// The footprint of a write request (`None` for reads).
///
/// Rules (anything not understood widens, never narrows):
/// - `add`/`upsert`/`update`: Collection scope, keys = the body's `ids`.
/// - `delete` (records): keys = `ids` if present and neither `where` nor
///   `where_document` is set (non-null); otherwise `All`.
/// - `update_collection` (PUT): Collection/`All`, or the Database when the
///   body has a non-null `new_name` (renames race on names) or is not JSON.
/// - `create_database`: Database{tenant, body `name`}; Global if no name.
/// - every other write: the path scope with `All`.
/// - Malformed JSON, missing or empty `ids`, non-string ids: `All`.
pub fn footprint(route: &KnownRoute, body: &[u8]) -> Option<WriteFootprint> {
    use Operation::*;
    route.op.write_level()?;
    let path_scope = route.scope()?;
    let fp = match route.op {
        CollectionAdd | CollectionUpsert | CollectionUpdate | CollectionDelete => {
            let scope = collection_scope(route)?;
            let keys = record_keys(route.op, body);
            WriteFootprint { scope, keys }
        }
        UpdateCollection => match serde_json::from_slice::<UpdateCollectionPayload>(body) {
            Ok(UpdateCollectionPayload { new_name: None }) => {
                WriteFootprint::whole(collection_scope(route)?)
            }
            _ => WriteFootprint::whole(path_scope),
        },
        CreateDatabase => match serde_json::from_slice::<NamePayload>(body) {
            Ok(p) => WriteFootprint::whole(Scope::Database {
                tenant: route.tenant.clone().unwrap_or_default(),
                database: p.name,
            }),
            Err(_) => WriteFootprint::whole(Scope::Global),
        },
        _ => WriteFootprint::whole(path_scope),
    };
    Some(fp)
}

fn collection_scope(route: &KnownRoute) -> Option<Scope> {
    Some(Scope::Collection {
        tenant: route.tenant.clone().unwrap_or_default(),
        database: route.database.clone().unwrap_or_default(),
        collection: route.collection_id()?.to_owned(),
    })
}

fn record_keys(op: Operation, body: &[u8]) -> Keys {
    let Ok(p) = serde_json::from_slice::<RecordIds>(body) else {
        return Keys::All;
    };
    if op == Operation::CollectionDelete && (p.where_.is_some() || p.where_document.is_some()) {
        return Keys::All;
    }
    match p.ids {
        Some(ids) => Keys::from_ids(ids.iter().map(String::as_str)),
        None => Keys::All,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chroma::routes::{classify, Route};
    use http::Method;

    const T: &str = "/api/v2/tenants/tn/databases/db";

    fn fp(method: Method, path: &str, body: &str) -> Option<WriteFootprint> {
        match classify(&method, path) {
            Route::Known(k) => footprint(&k, body.as_bytes()),
            Route::Unknown(u) => panic!("unknown {u:?}"),
        }
    }
    fn rec(action: &str, coll: &str, body: &str) -> WriteFootprint {
        fp(
            Method::POST,
            &format!("{T}/collections/{coll}/{action}"),
            body,
        )
        .unwrap()
    }

    #[test]
    fn reads_have_no_footprint() {
        assert_eq!(
            fp(Method::POST, &format!("{T}/collections/c/query"), "{}"),
            None
        );
        assert_eq!(fp(Method::GET, "/api/v2/heartbeat", ""), None);
    }

    #[test]
    fn disjoint_record_writes_commute() {
        let a = rec(
            "add",
            "c",
            r#"{"ids":["a","b"],"embeddings":[[1,2],[3,4]]}"#,
        );
        let b = rec("upsert", "c", r#"{"ids":["c"],"embeddings":[[1,2]]}"#);
        let c = rec("update", "c", r#"{"ids":["b"]}"#);
        let d = rec("delete", "c", r#"{"ids":["z"]}"#);
        assert!(!a.conflicts(&b) && !b.conflicts(&a));
        assert!(a.conflicts(&c) && c.conflicts(&a));
        assert!(!a.conflicts(&d) && !c.conflicts(&d));
        assert!(a.conflicts(&a));
        // Another collection never conflicts at the record level.
        let other = rec("add", "c2", r#"{"ids":["a"]}"#);
        assert!(!a.conflicts(&other));
    }

    #[test]
    fn whole_collection_writes() {
        let a = rec("add", "c", r#"{"ids":["a"]}"#);
        for body in [
            r#"{"where":{"k":1}}"#,
            r#"{"ids":["q"],"where":{"k":1}}"#,
            r#"{"ids":["q"],"where_document":{"$contains":"x"}}"#,
            r#"{}"#,
            r#"{"ids":[]}"#,
            "not json",
            r#"{"ids":"a"}"#,
            r#"{"ids":[1]}"#,
            "",
        ] {
            let d = rec("delete", "c", body);
            assert_eq!(d.keys, Keys::All, "{body}");
            assert!(a.conflicts(&d) && d.conflicts(&a), "{body}");
        }
        // Null where clauses are absent.
        let d = rec(
            "delete",
            "c",
            r#"{"ids":["q"],"where":null,"where_document":null}"#,
        );
        assert!(!a.conflicts(&d));
        for body in ["garbage", r#"{"embeddings":[[1]]}"#, r#"{"ids":[]}"#] {
            assert_eq!(rec("add", "c", body).keys, Keys::All, "{body}");
        }
        let meta = fp(
            Method::PUT,
            &format!("{T}/collections/c"),
            r#"{"new_metadata":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(meta.keys, Keys::All);
        assert!(matches!(meta.scope, Scope::Collection { .. }));
        assert!(meta.conflicts(&a));
        assert!(!meta.conflicts(&rec("add", "c2", r#"{"ids":["a"]}"#)));
    }

    #[test]
    fn renames_and_collection_lifecycle_are_database_wide() {
        let db = Scope::Database {
            tenant: "tn".into(),
            database: "db".into(),
        };
        for body in [r#"{"new_name":"x"}"#, "garbage"] {
            let f = fp(Method::PUT, &format!("{T}/collections/c"), body).unwrap();
            assert_eq!(f.scope, db, "{body}");
        }
        let create = fp(Method::POST, &format!("{T}/collections"), r#"{"name":"n"}"#).unwrap();
        let delete = fp(Method::DELETE, &format!("{T}/collections/n"), "").unwrap();
        let fork = fp(
            Method::POST,
            &format!("{T}/collections/c/fork"),
            r#"{"new_name":"f"}"#,
        )
        .unwrap();
        let attach = fp(
            Method::POST,
            &format!("{T}/collections/c/functions/attach"),
            "{}",
        )
        .unwrap();
        let detach = fp(
            Method::POST,
            &format!("{T}/collections/c/attached_functions/f/detach"),
            "{}",
        )
        .unwrap();
        let add = rec("add", "c", r#"{"ids":["a"]}"#);
        for f in [&create, &delete, &fork, &attach, &detach] {
            assert_eq!(f.scope, db);
            assert!(f.conflicts(&add) && add.conflicts(f));
        }
        let elsewhere = fp(
            Method::POST,
            "/api/v2/tenants/tn/databases/other/collections",
            r#"{"name":"n"}"#,
        )
        .unwrap();
        assert!(!create.conflicts(&elsewhere));
    }

    #[test]
    fn global_and_database_writes() {
        let reset = fp(Method::POST, "/api/v2/reset", "").unwrap();
        let tenant = fp(Method::POST, "/api/v2/tenants", r#"{"name":"t"}"#).unwrap();
        let patch = fp(Method::PATCH, "/api/v2/tenants/t", "{}").unwrap();
        let add = rec("add", "c", r#"{"ids":["a"]}"#);
        for g in [&reset, &tenant, &patch] {
            assert_eq!(g.scope, Scope::Global);
            assert!(g.conflicts(&add) && add.conflicts(g));
        }
        let mk_db = fp(
            Method::POST,
            "/api/v2/tenants/tn/databases",
            r#"{"name":"db"}"#,
        )
        .unwrap();
        assert_eq!(
            mk_db.scope,
            Scope::Database {
                tenant: "tn".into(),
                database: "db".into()
            }
        );
        assert!(mk_db.conflicts(&add));
        let mk_other = fp(
            Method::POST,
            "/api/v2/tenants/tn/databases",
            r#"{"name":"zz"}"#,
        )
        .unwrap();
        assert!(!mk_other.conflicts(&add));
        let bad = fp(Method::POST, "/api/v2/tenants/tn/databases", "{").unwrap();
        assert_eq!(bad.scope, Scope::Global);
        let drop_db = fp(Method::DELETE, T, "").unwrap();
        assert!(drop_db.conflicts(&add) && drop_db.conflicts(&mk_db));
    }

    #[test]
    fn ids_are_decoded_sorted_and_deduplicated() {
        let a = rec("add", "c", r#"{"ids":["b","a","b"]}"#);
        let b = rec("add", "c", r#"{"ids":["\u0061"]}"#);
        let mut want = vec![hash_id("a"), hash_id("b")];
        want.sort_unstable();
        assert_eq!(a.keys, Keys::Ids(want));
        assert!(a.conflicts(&b));
        assert_eq!(hash_id(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash_id("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
