//! Scopes: the part of a server's data a request reads or changes.

use super::operation::ScopeLevel;

/// The data a request reads or changes: Global ⊃ Database ⊃ Collection.
///
/// Strings are percent-decoded path values (what Chroma itself sees). A
/// collection is named by the id the client used (the logical id).
/// Serialized with a `level` tag (`global`, `database`, `collection`), as
/// dead letters store it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(tag = "level", rename_all = "snake_case")]
pub enum Scope {
    /// Everything: tenants, databases, collections of every tenant.
    Global,
    /// One database of one tenant and every collection in it.
    Database {
        /// Tenant name.
        tenant: String,
        /// Database name.
        database: String,
    },
    /// One collection, addressed by id.
    Collection {
        /// Tenant name as written in the request path.
        tenant: String,
        /// Database name as written in the request path.
        database: String,
        /// Collection id (logical) as written in the request path.
        collection: String,
    },
}

impl Scope {
    /// The level of this scope.
    pub fn level(&self) -> ScopeLevel {
        match self {
            Scope::Global => ScopeLevel::Global,
            Scope::Database { .. } => ScopeLevel::Database,
            Scope::Collection { .. } => ScopeLevel::Collection,
        }
    }

    /// Whether the two scopes share any data. Symmetric; reflexive.
    ///
    /// - Global overlaps everything.
    /// - A Database overlaps itself and every collection of it.
    /// - Two Collections overlap when their ids are equal, whatever tenant or
    ///   database the paths named: Chroma 1.5.9 resolves id routes by the id
    ///   alone (verified: `add` through `/tenants/nosuch/databases/nosuch/…`
    ///   writes the collection). A Database/Collection pair compares the
    ///   path's tenant and database; a caller that wants to be exact against
    ///   clients that lie about them should put the collection's real home
    ///   (from its id map) into the Collection scope.
    pub fn overlaps(&self, other: &Scope) -> bool {
        use Scope::*;
        match (self, other) {
            (Global, _) | (_, Global) => true,
            (
                Database { tenant, database },
                Database {
                    tenant: t2,
                    database: d2,
                },
            ) => tenant == t2 && database == d2,
            (
                Database { tenant, database },
                Collection {
                    tenant: t2,
                    database: d2,
                    ..
                },
            )
            | (
                Collection {
                    tenant: t2,
                    database: d2,
                    ..
                },
                Database { tenant, database },
            ) => tenant == t2 && database == d2,
            (Collection { collection, .. }, Collection { collection: c2, .. }) => collection == c2,
        }
    }

    /// The Database scope that contains this scope (`Global` stays Global).
    pub fn database_scope(&self) -> Scope {
        match self {
            Scope::Global => Scope::Global,
            Scope::Database { tenant, database }
            | Scope::Collection {
                tenant, database, ..
            } => Scope::Database {
                tenant: tenant.clone(),
                database: database.clone(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(t: &str, d: &str) -> Scope {
        Scope::Database {
            tenant: t.into(),
            database: d.into(),
        }
    }
    fn coll(t: &str, d: &str, c: &str) -> Scope {
        Scope::Collection {
            tenant: t.into(),
            database: d.into(),
            collection: c.into(),
        }
    }

    #[test]
    fn overlap_rules() {
        let all = [
            Scope::Global,
            db("t", "d"),
            db("t", "e"),
            db("u", "d"),
            coll("t", "d", "c1"),
            coll("t", "d", "c2"),
            coll("t", "e", "c3"),
        ];
        for a in &all {
            assert!(a.overlaps(a));
            assert!(Scope::Global.overlaps(a) && a.overlaps(&Scope::Global));
            for b in &all {
                assert_eq!(a.overlaps(b), b.overlaps(a), "{a:?} {b:?}");
            }
        }
        assert!(db("t", "d").overlaps(&coll("t", "d", "c1")));
        assert!(!db("t", "e").overlaps(&coll("t", "d", "c1")));
        assert!(!db("u", "d").overlaps(&coll("t", "d", "c1")));
        assert!(!db("t", "d").overlaps(&db("t", "e")));
        assert!(!coll("t", "d", "c1").overlaps(&coll("t", "d", "c2")));
        // Same id, different path tenant: Chroma resolves by id alone.
        assert!(coll("t", "d", "c1").overlaps(&coll("x", "y", "c1")));
    }

    #[test]
    fn database_scope_contains() {
        assert_eq!(coll("t", "d", "c").database_scope(), db("t", "d"));
        assert_eq!(Scope::Global.database_scope(), Scope::Global);
    }
}
