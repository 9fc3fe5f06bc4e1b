//! An in-memory model of the Chroma 1.5.9 write API, as the history test
//! uses it: databases of the default tenant, collections (name, id,
//! metadata) and records (document, metadata, embedding).
//!
//! Semantics, checked against a real Chroma 1.5.9 server (no gateway):
//!
//! - create database: 409 if it exists; delete database: 404 if missing,
//!   otherwise its collections go with it.
//! - create collection: 400 if the database is missing; an existing name is
//!   409 without `get_or_create`, and with it 200 returning the existing
//!   collection *unchanged* (its metadata is not replaced).
//! - `DELETE …/collections/{name}`: 404 if missing.
//! - `PUT …/collections/{id}`: 404 for an unknown id; `new_name` taken by
//!   another collection of the database is a 500 (UNIQUE constraint),
//!   renaming to its own name is fine; `new_metadata` replaces the metadata.
//! - Record routes address the collection by id alone (whatever database
//!   the path names); an unknown id is 404.
//! - `add` of an existing id keeps the old record (201, no change);
//!   `upsert` replaces document and embedding and *merges* metadata keys;
//!   `update` of a missing id is ignored, of an existing one sets the given
//!   document / embedding and merges metadata keys; record `delete` by ids
//!   ignores missing ids; delete by `where` `{"key": value}` deletes the
//!   records whose metadata has that value.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

/// A collection id: learned from an answer, or not (yet) known to anyone
/// but the servers (created by a write whose answer never came).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CollId {
    /// The logical id the gateway answered with.
    Known(String),
    /// Created by an entry whose answer was lost (the LSN).
    Unknown(u64),
}

/// A record.
#[derive(Debug, Clone, PartialEq)]
pub struct Rec {
    /// The document.
    pub doc: Option<String>,
    /// The metadata object.
    pub meta: Map<String, Value>,
    /// The embedding.
    pub emb: Vec<f64>,
}

/// A collection.
#[derive(Debug, Clone)]
pub struct Coll {
    /// Its id.
    pub id: CollId,
    /// Its database.
    pub db: String,
    /// Its name.
    pub name: String,
    /// Its metadata (`Null` when none).
    pub meta: Value,
    /// Its records.
    pub recs: BTreeMap<String, Rec>,
}

/// A write, parsed from a log entry (method, path, body).
#[derive(Debug, Clone)]
pub enum Write {
    /// `POST …/databases`.
    CreateDb(String),
    /// `DELETE …/databases/{db}`.
    DeleteDb(String),
    /// `POST …/databases/{db}/collections`.
    CreateColl {
        db: String,
        name: String,
        meta: Value,
        get_or_create: bool,
    },
    /// `DELETE …/databases/{db}/collections/{name}`.
    DeleteColl { db: String, name: String },
    /// `PUT …/collections/{id}`.
    UpdateColl {
        db: String,
        id: String,
        new_name: Option<String>,
        new_meta: Option<Value>,
    },
    /// `POST …/collections/{id}/{add|upsert|update|delete}`.
    Records {
        db: String,
        id: String,
        op: String,
        body: Value,
    },
}

const DBS: &str = "/api/v2/tenants/default_tenant/databases";

impl Write {
    /// Parses a logged request; `None` for anything the workload never sends.
    pub fn parse(method: &str, path: &str, body: &[u8]) -> Option<Write> {
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(body).ok()?
        };
        let rest = path.split('?').next()?.strip_prefix(DBS)?;
        let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        Some(match (method, segs.as_slice()) {
            ("POST", []) => Write::CreateDb(s(&body, "name")?),
            ("DELETE", [db]) => Write::DeleteDb(db.to_string()),
            ("POST", [db, "collections"]) => Write::CreateColl {
                db: db.to_string(),
                name: s(&body, "name")?,
                meta: body.get("metadata").cloned().unwrap_or(Value::Null),
                get_or_create: body["get_or_create"].as_bool().unwrap_or(false),
            },
            ("DELETE", [db, "collections", name]) => Write::DeleteColl {
                db: db.to_string(),
                name: name.to_string(),
            },
            ("PUT", [db, "collections", id]) => Write::UpdateColl {
                db: db.to_string(),
                id: id.to_string(),
                new_name: s(&body, "new_name"),
                new_meta: body.get("new_metadata").cloned(),
            },
            ("POST", [db, "collections", id, op]) => Write::Records {
                db: db.to_string(),
                id: id.to_string(),
                op: op.to_string(),
                body,
            },
            _ => return None,
        })
    }

    /// Does it change what `GET …/databases/{db}/collections` lists (or
    /// which collections of `db` exist)? These are the gateway's
    /// database-scope writes.
    pub fn database_scoped(&self, in_db: &str) -> bool {
        match self {
            Write::CreateDb(db) | Write::DeleteDb(db) => db == in_db,
            Write::CreateColl { db, .. } | Write::DeleteColl { db, .. } => db == in_db,
            Write::UpdateColl { db, new_name, .. } => db == in_db && new_name.is_some(),
            Write::Records { .. } => false,
        }
    }

    /// Does it (possibly) change record `rid` of the collection with id
    /// `coll` (a database-scope write of `db` included)?
    pub fn touches_record(&self, db: &str, coll: &str, rid: &str) -> bool {
        match self {
            Write::UpdateColl { id, .. } if id == coll => true,
            Write::Records { id, body, .. } if id == coll => match body.get("ids") {
                Some(Value::Array(ids)) => ids.iter().any(|v| v.as_str() == Some(rid)),
                _ => true,
            },
            w => w.database_scoped(db),
        }
    }

    /// The collection id its path names, if any.
    pub fn id(&self) -> Option<&str> {
        match self {
            Write::UpdateColl { id, .. } | Write::Records { id, .. } => Some(id),
            _ => None,
        }
    }

    /// The (database, collection name) or collection id it concerns, for
    /// reports.
    pub fn target(&self) -> String {
        match self {
            Write::CreateDb(db) | Write::DeleteDb(db) => format!("database {db}"),
            Write::CreateColl { db, name, .. } | Write::DeleteColl { db, name } => {
                format!("{db}/{name}")
            }
            Write::UpdateColl { id, .. } | Write::Records { id, .. } => format!("id {id}"),
        }
    }
}

/// What an applied write did, beyond success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Nothing to report.
    Done,
    /// A collection was created or found (get_or_create) with this id.
    Collection(CollId),
}

/// The model state.
#[derive(Debug, Clone)]
pub struct Model {
    /// Databases of the default tenant.
    pub dbs: BTreeSet<String>,
    /// Collections.
    pub colls: Vec<Coll>,
}

impl Model {
    /// A fresh server: only `default_database`.
    pub fn new() -> Model {
        Model {
            dbs: ["default_database".to_string()].into(),
            colls: Vec::new(),
        }
    }

    /// The collection with this (known) id.
    pub fn by_id(&self, id: &str) -> Option<&Coll> {
        self.colls
            .iter()
            .find(|c| c.id == CollId::Known(id.to_string()))
    }

    fn by_id_mut(&mut self, id: &str) -> Option<&mut Coll> {
        self.colls
            .iter_mut()
            .find(|c| c.id == CollId::Known(id.to_string()))
    }

    /// The collection `db/name`.
    pub fn by_name(&self, db: &str, name: &str) -> Option<&Coll> {
        self.colls.iter().find(|c| c.db == db && c.name == name)
    }

    /// Names of the collections of `db` as Chroma lists them (a missing
    /// database lists as empty).
    pub fn listing(&self, db: &str) -> Vec<String> {
        self.names(db).unwrap_or_default().into_iter().collect()
    }

    /// Names of the collections of `db`, or `None` if it does not exist.
    pub fn names(&self, db: &str) -> Option<BTreeSet<String>> {
        self.dbs.contains(db).then(|| {
            self.colls
                .iter()
                .filter(|c| c.db == db)
                .map(|c| c.name.clone())
                .collect()
        })
    }

    /// Applies `w` (logged at `lsn`; `answered_id` is the collection id of
    /// its answer, if a create was answered). `Err` says why Chroma refuses
    /// it; the state is then unchanged.
    pub fn apply(
        &mut self,
        w: &Write,
        lsn: u64,
        answered_id: Option<&str>,
    ) -> Result<Applied, String> {
        match w {
            Write::CreateDb(db) => {
                if !self.dbs.insert(db.clone()) {
                    return Err(format!("409: database {db} exists"));
                }
            }
            Write::DeleteDb(db) => {
                if !self.dbs.remove(db) {
                    return Err(format!("404: database {db} does not exist"));
                }
                self.colls.retain(|c| &c.db != db);
            }
            Write::CreateColl {
                db,
                name,
                meta,
                get_or_create,
            } => {
                if !self.dbs.contains(db) {
                    return Err(format!("400: database {db} does not exist"));
                }
                if let Some(i) = self
                    .colls
                    .iter()
                    .position(|c| &c.db == db && &c.name == name)
                {
                    if !get_or_create {
                        return Err(format!("409: collection {db}/{name} exists"));
                    }
                    if let (CollId::Unknown(_), Some(id)) = (&self.colls[i].id, answered_id) {
                        // The answer names the id of a collection created
                        // by a write whose own answer was lost.
                        self.colls[i].id = CollId::Known(id.to_string());
                    }
                    return Ok(Applied::Collection(self.colls[i].id.clone()));
                }
                let id = answered_id.map_or(CollId::Unknown(lsn), |s| CollId::Known(s.into()));
                self.colls.push(Coll {
                    id: id.clone(),
                    db: db.clone(),
                    name: name.clone(),
                    meta: meta.clone(),
                    recs: BTreeMap::new(),
                });
                return Ok(Applied::Collection(id));
            }
            Write::DeleteColl { db, name } => {
                let before = self.colls.len();
                self.colls.retain(|c| !(&c.db == db && &c.name == name));
                if self.colls.len() == before {
                    return Err(format!("404: collection {db}/{name} does not exist"));
                }
            }
            Write::UpdateColl {
                id,
                new_name,
                new_meta,
                ..
            } => {
                let Some(c) = self.by_id(id) else {
                    return Err(format!("404: collection id {id} does not exist"));
                };
                if let Some(n) = new_name {
                    if let Some(other) = self.by_name(&c.db, n) {
                        if other.id != c.id {
                            return Err(format!("500: name {}/{n} is taken", c.db));
                        }
                    }
                }
                let c = self.by_id_mut(id).expect("found above");
                if let Some(n) = new_name {
                    c.name = n.clone();
                }
                if let Some(m) = new_meta {
                    c.meta = m.clone();
                }
            }
            Write::Records { id, op, body, .. } => {
                let Some(c) = self.by_id_mut(id) else {
                    return Err(format!("404: collection id {id} does not exist"));
                };
                apply_records(&mut c.recs, op, body)?;
            }
        }
        Ok(Applied::Done)
    }
}

fn merge(into: &mut Map<String, Value>, from: &Value) {
    if let Some(m) = from.as_object() {
        for (k, v) in m {
            into.insert(k.clone(), v.clone());
        }
    }
}

fn emb(v: &Value) -> Option<Vec<f64>> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
}

fn apply_records(recs: &mut BTreeMap<String, Rec>, op: &str, b: &Value) -> Result<(), String> {
    let ids: Vec<String> = b["ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let field = |k: &str, i: usize| b.get(k).and_then(|a| a.get(i)).filter(|v| !v.is_null());
    match op {
        "add" | "upsert" | "update" => {
            for (i, rid) in ids.iter().enumerate() {
                let doc = field("documents", i)
                    .and_then(Value::as_str)
                    .map(String::from);
                let e = field("embeddings", i).and_then(emb);
                let meta = field("metadatas", i);
                match (op, recs.get_mut(rid)) {
                    ("add", Some(_)) | ("update", None) => {}
                    (_, Some(r)) => {
                        if doc.is_some() {
                            r.doc = doc;
                        }
                        if let Some(e) = e {
                            r.emb = e;
                        }
                        if let Some(m) = meta {
                            merge(&mut r.meta, m);
                        }
                    }
                    (_, None) => {
                        let mut m = Map::new();
                        if let Some(v) = meta {
                            merge(&mut m, v);
                        }
                        let Some(e) = e else {
                            return Err(format!("400: {op} of {rid} without an embedding"));
                        };
                        recs.insert(
                            rid.clone(),
                            Rec {
                                doc,
                                meta: m,
                                emb: e,
                            },
                        );
                    }
                }
            }
        }
        "delete" => {
            let wher = b.get("where").and_then(Value::as_object);
            recs.retain(|rid, r| {
                let by_id = b.get("ids").is_none() || ids.contains(rid);
                let by_where = wher.is_none_or(|w| w.iter().all(|(k, v)| r.meta.get(k) == Some(v)));
                !(by_id && by_where)
            });
        }
        other => return Err(format!("unknown record operation {other}")),
    }
    Ok(())
}
