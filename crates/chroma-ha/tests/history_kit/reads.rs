//! Strong reads: the states of the model each one may have seen, per
//! record id (the gateway applies writes of disjoint ids in any order), and
//! whether what it saw is among them.

use std::collections::BTreeMap;

use serde_json::Value;

use super::model::{Model, Rec};
use super::{clip, Op, OpResult, ReadKind};

/// A strong read with the bounds of the states it may have seen.
pub struct ReadCheck<'a> {
    pub op: &'a Op,
    /// The answer's body, parsed once (`Null` if not JSON).
    pub body: Value,
    /// Lowest LSN for each record id / for the collection's existence or
    /// the listing.
    pub lo_rid: BTreeMap<&'static str, u64>,
    pub lo_scope: u64,
    pub hi: u64,
    /// Record ids that matched, count bounds, a match of the whole.
    pub matched: BTreeMap<&'static str, bool>,
    pub any: BTreeMap<&'static str, bool>,
    pub all: BTreeMap<&'static str, bool>,
    pub coll_seen: bool,
    /// The collection was deleted within the read's bounds. Chroma 1.5.9
    /// itself answers a get or count of a collection being deleted with
    /// 200 and no records (seen 6 times in 1,800 counts racing a delete on
    /// one server: `tests/python/count_while_deleting.py`), so an empty
    /// answer is then one of the states it may see.
    pub deleted_within: bool,
    pub ok: bool,
    /// The distinct states of the model it was compared with (for reports),
    /// with the first LSN of each.
    pub states: BTreeMap<String, Vec<(u64, String)>>,
}

pub const RECORD_POOL: [&str; 6] = ["r0", "r1", "r2", "r3", "r4", "r5"];

fn same_rec(model: Option<&Rec>, doc: Option<&str>, meta: Option<&Value>) -> bool {
    match (model, meta) {
        (None, None) => true,
        (Some(r), Some(m)) => r.doc.as_deref() == doc && m.as_object() == Some(&r.meta),
        _ => false,
    }
}

/// Parses a get answer: id -> (document, metadata).
fn got(body: &Value) -> BTreeMap<String, (Option<String>, Value)> {
    let ids = body["ids"].as_array().cloned().unwrap_or_default();
    ids.iter()
        .enumerate()
        .filter_map(|(i, id)| {
            let doc = body["documents"][i].as_str().map(String::from);
            Some((
                id.as_str()?.to_string(),
                (doc, body["metadatas"][i].clone()),
            ))
        })
        .collect()
}

impl ReadCheck<'_> {
    fn note(&mut self, what: &str, k: u64, state: String) {
        let v = self.states.entry(what.to_string()).or_default();
        if v.last().is_none_or(|(_, s)| *s != state) {
            v.push((k, state));
        }
    }

    /// The lowest LSN whose state the read may have seen in any respect.
    pub fn lo(&self) -> u64 {
        self.lo_rid
            .values()
            .copied()
            .chain([self.lo_scope])
            .min()
            .unwrap_or(self.lo_scope)
    }

    /// The read's view of the model after LSN `k`.
    pub fn observe(&mut self, m: &Model, k: u64) {
        let OpResult::Answer { status, .. } = &self.op.result else {
            return;
        };
        let missing = *status != 200;
        let v = std::mem::take(&mut self.body);
        self.observe_answer(m, k, missing, &v);
        self.body = v;
    }

    fn observe_answer(&mut self, m: &Model, k: u64, missing: bool, v: &Value) {
        match self.op.read.as_ref().expect("a read") {
            ReadKind::List { db } => {
                if k >= self.lo_scope {
                    let names: Option<Vec<String>> = v.as_array().map(|a| {
                        let mut n: Vec<String> = a
                            .iter()
                            .filter_map(|c| c["name"].as_str().map(String::from))
                            .collect();
                        n.sort();
                        n
                    });
                    self.note("listing", k, format!("{:?}", m.names(db)));
                    // Chroma lists a missing database as empty.
                    self.ok |= if missing {
                        m.names(db).is_none()
                    } else {
                        names == Some(m.listing(db))
                    };
                }
            }
            ReadKind::Get { id, ids } => {
                let coll = m.by_id(id);
                if k >= self.lo_scope {
                    let exists = coll.map(|c| format!("{}/{}", c.db, c.name));
                    self.note("collection", k, format!("{exists:?}"));
                }
                if missing {
                    self.ok |= k >= self.lo_scope && coll.is_none();
                    return;
                }
                self.deleted_within |= k >= self.lo_scope && coll.is_none();
                let seen = got(v);
                for rid in ids {
                    let rid = RECORD_POOL.iter().find(|r| *r == rid).expect("pool id");
                    if k < self.lo_rid[rid] {
                        continue;
                    }
                    let Some(c) = coll else { continue };
                    let state = c.recs.get(*rid).map_or("absent".into(), |r| {
                        format!("{:?} {}", r.doc, Value::Object(r.meta.clone()))
                    });
                    self.note(rid, k, state);
                    let s = seen.get(*rid);
                    if same_rec(
                        c.recs.get(*rid),
                        s.and_then(|s| s.0.as_deref()),
                        s.map(|s| &s.1),
                    ) {
                        self.matched.insert(rid, true);
                    }
                }
            }
            ReadKind::Count { id } => {
                let coll = m.by_id(id);
                if k >= self.lo_scope {
                    let n = coll.map(|c| c.recs.len());
                    self.note("count", k, format!("{n:?}"));
                }
                if missing {
                    self.ok |= k >= self.lo_scope && coll.is_none();
                    return;
                }
                self.deleted_within |= k >= self.lo_scope && coll.is_none();
                let Some(c) = coll else { return };
                for rid in RECORD_POOL {
                    if k >= self.lo_rid[rid] {
                        self.coll_seen = true;
                        let present = c.recs.contains_key(rid);
                        *self.any.entry(rid).or_insert(false) |= present;
                        *self.all.entry(rid).or_insert(true) &= present;
                    }
                }
            }
        }
    }

    /// What the read saw, shortly.
    pub fn observed(&self) -> String {
        let OpResult::Answer { status, body, .. } = &self.op.result else {
            return "no answer".into();
        };
        if *status != 200 {
            return format!("{status} {}", clip(body, 120));
        }
        let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        match self.op.read.as_ref().expect("a read") {
            ReadKind::List { .. } => {
                let names: Vec<&str> = v
                    .as_array()
                    .map(|a| a.iter().filter_map(|c| c["name"].as_str()).collect())
                    .unwrap_or_default();
                format!("{names:?}")
            }
            ReadKind::Get { .. } => format!("{:?}", got(&v)),
            ReadKind::Count { .. } => body.trim().to_string(),
        }
    }

    /// Whether the read answered 200 with no records.
    fn answered_empty(&self) -> bool {
        let OpResult::Answer { body, .. } = &self.op.result else {
            return false;
        };
        let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        got(&v).is_empty()
    }

    pub fn passed(&self) -> bool {
        let OpResult::Answer { status, body, .. } = &self.op.result else {
            return true;
        };
        match self.op.read.as_ref().expect("a read") {
            _ if *status != 200 => self.ok,
            ReadKind::List { .. } => self.ok,
            ReadKind::Get { .. } if self.deleted_within && self.answered_empty() => true,
            ReadKind::Get { ids, .. } => ids
                .iter()
                .all(|r| self.matched.get(r.as_str()).copied().unwrap_or(false)),
            ReadKind::Count { .. } => {
                let n = body.trim().parse::<usize>().unwrap_or(usize::MAX);
                if self.deleted_within && n == 0 {
                    return true;
                }
                let lo = self.all.values().filter(|b| **b).count();
                let hi = self.any.values().filter(|b| **b).count();
                self.coll_seen && lo <= n && n <= hi
            }
        }
    }
}
