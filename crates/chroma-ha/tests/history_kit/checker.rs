//! The checker: the gateway's log gives the order of every write (and
//! which ones were refused); replaying it on the [`Model`] gives what each
//! write should have answered, what each strong read may have seen, and the
//! content every server must end with.
//!
//! Requirements checked (each failure is a violation, with an account):
//! - (a) every server's final content, read directly and matched by
//!   collection name, equals the model's; the servers are identical;
//! - (b) nothing a client was told failed is applied: its log entry carries
//!   a refusal record, or it is not in the log (a committed entry that no
//!   unanswered operation can account for is a violation);
//! - (c) every acknowledged write succeeds in the model at its LSN, every
//!   refused one fails there (unless Chroma's answer was a transient
//!   "database is locked"), and a create's answer names the model's id;
//! - (d) every strong read matches the model at some LSN between the
//!   writes acknowledged before it started that overlap its scope and the
//!   last write sent before it ended — per record id, because the gateway
//!   applies writes of disjoint ids in any order.

use std::collections::{BTreeMap, HashMap, VecDeque};

use chroma_ha::check::{compare_servers, CheckOptions};
use serde_json::Value;

use super::model::{Model, Write};
use super::reads::{ReadCheck, RECORD_POOL};
use super::sources::{dump, Content, Logged, TENANT};
use super::workload::DBS;
use super::{clip, short_path, Op, OpResult, ReadKind, Verdict};
use crate::support::block_on;

/// What the check found.
#[derive(Debug, Default)]
pub struct Report {
    /// Write operations by verdict: acknowledged, failed, unknown.
    pub acked: usize,
    pub failed: usize,
    pub unknown: usize,
    /// Failed because the connection was refused (gateway down).
    pub not_sent: usize,
    /// Reads checked / reads that got an answer to check.
    pub reads: usize,
    pub reads_checked: usize,
    /// Log entries, refused ones.
    pub entries: usize,
    pub refused: usize,
    /// Refusals that were Chroma's transient "database is locked".
    pub transient_refusals: usize,
    /// Every violation, with an account.
    pub violations: Vec<String>,
}

/// Checks the history `ops` against the `log` and the servers' content.
pub fn check(ops: &[Op], log: &[Logged], servers: &[(String, Content)], tag: &str) -> Report {
    if let Ok(path) = std::env::var("HISTORY_DUMP") {
        dump(&format!("{path}.{tag}"), ops, log);
    }
    let mut rep = Report {
        entries: log.len(),
        refused: log.iter().filter(|e| e.refused.is_some()).count(),
        ..Report::default()
    };
    let writes: Vec<&Op> = ops.iter().filter(|o| o.read.is_none()).collect();
    for w in &writes {
        match w.verdict() {
            Verdict::Acked => rep.acked += 1,
            Verdict::Failed => rep.failed += 1,
            Verdict::Unknown => rep.unknown += 1,
        }
        rep.not_sent += usize::from(matches!(w.result, OpResult::NotSent(_)));
    }
    let key = |m: &str, p: &str, b: &str| format!("{m} {p} {b}");
    let op_key = |o: &Op| key(&o.method, &o.path, o.body.as_deref().unwrap_or(""));

    // Which operation each entry belongs to.
    let idx: HashMap<u64, usize> = log.iter().enumerate().map(|(i, e)| (e.lsn, i)).collect();
    let mut of_lsn: HashMap<u64, &Op> = HashMap::new();
    for w in &writes {
        let Some(lsn) = w.lsn() else { continue };
        match idx.get(&lsn).map(|i| &log[*i]) {
            Some(e)
                if key(&e.method, &e.path, &e.body) == op_key(w) && !of_lsn.contains_key(&lsn) =>
            {
                of_lsn.insert(lsn, w);
            }
            Some(e) => rep.violations.push(format!(
                "answer names LSN {lsn}, whose entry is another write ({} {} {})\n  op: {}",
                e.method,
                short_path(&e.path),
                clip(&e.body, 120),
                w.describe()
            )),
            None => rep.violations.push(format!(
                "answer names LSN {lsn}, which is no entry of the log\n  op: {}",
                w.describe()
            )),
        }
    }
    // Entries nobody was answered for: match them to unanswered (or
    // failed without an LSN) operations with the same request.
    let mut waiting: HashMap<String, (VecDeque<&Op>, VecDeque<&Op>)> = HashMap::new();
    for w in &writes {
        if w.lsn().is_none() && !matches!(w.result, OpResult::NotSent(_)) {
            let q = waiting.entry(op_key(w)).or_default();
            match w.verdict() {
                Verdict::Unknown => q.0.push_back(w),
                _ => q.1.push_back(w),
            }
        }
    }
    for e in log {
        if of_lsn.contains_key(&e.lsn) {
            continue;
        }
        let q = waiting.entry(key(&e.method, &e.path, &e.body)).or_default();
        let op = if e.refused.is_some() {
            q.1.pop_front().or_else(|| q.0.pop_front())
        } else {
            q.0.pop_front()
        };
        match op {
            Some(op) => {
                of_lsn.insert(e.lsn, op);
            }
            None => rep.violations.push(match q.1.front() {
                Some(f) => format!(
                    "(b) LSN {} is committed, but its client was told it failed\n  op: {}",
                    e.lsn,
                    f.describe()
                ),
                None => format!(
                    "LSN {} ({} {}) matches no operation a client sent",
                    e.lsn,
                    e.method,
                    short_path(&e.path)
                ),
            }),
        }
    }

    // The reads and the bounds of what each may have seen.
    let parsed: Vec<Option<Write>> = log
        .iter()
        .map(|e| Write::parse(&e.method, e.path.as_str(), e.body.as_bytes()))
        .collect();
    let lsn_of_op: HashMap<(usize, u64), u64> = of_lsn
        .iter()
        .map(|(l, o)| ((o.client, o.seq), *l))
        .collect();
    let acked: Vec<(&Op, u64, &Write)> = of_lsn
        .iter()
        .filter(|(_, o)| o.verdict() == Verdict::Acked)
        .filter_map(|(l, o)| Some((*o, *l, parsed[idx[l]].as_ref()?)))
        .collect();
    let mut reads: Vec<ReadCheck> = Vec::new();
    for r in ops.iter().filter(|o| o.read.is_some()) {
        rep.reads += 1;
        let checkable = matches!(&r.result, OpResult::Answer { status, .. }
            if *status == 200 || (400..500).contains(status));
        if !checkable {
            continue;
        }
        rep.reads_checked += 1;
        let before: Vec<&(&Op, u64, &Write)> =
            acked.iter().filter(|(o, _, _)| o.end < r.start).collect();
        let db = r.path.split('/').nth(6).unwrap_or_default().to_string();
        let hi = writes
            .iter()
            .filter(|w| w.start < r.end)
            .filter_map(|w| lsn_of_op.get(&(w.client, w.seq)).copied())
            .max()
            .unwrap_or(0);
        let max_where = |f: &dyn Fn(&Write) -> bool| {
            before
                .iter()
                .filter(|(_, _, w)| f(w))
                .map(|(_, l, _)| *l)
                .max()
                .unwrap_or(0)
        };
        let lo_scope = max_where(&|w| w.database_scoped(&db));
        let mut lo_rid = BTreeMap::new();
        if let Some(ReadKind::Get { id, .. } | ReadKind::Count { id }) = &r.read {
            for rid in RECORD_POOL {
                lo_rid.insert(rid, max_where(&|w| w.touches_record(&db, id, rid)));
            }
        }
        let body = match &r.result {
            OpResult::Answer { body, .. } => serde_json::from_str(body).unwrap_or(Value::Null),
            _ => Value::Null,
        };
        reads.push(ReadCheck {
            op: r,
            body,
            lo_rid,
            lo_scope,
            hi: hi.max(lo_scope),
            matched: BTreeMap::new(),
            any: BTreeMap::new(),
            all: BTreeMap::new(),
            coll_seen: false,
            deleted_within: false,
            ok: false,
            states: BTreeMap::new(),
        });
    }

    // Replay.
    let mut model = Model::new();
    let observe = |reads: &mut Vec<ReadCheck>, m: &Model, k: u64| {
        for r in reads.iter_mut().filter(|r| r.lo() <= k && k <= r.hi) {
            r.observe(m, k);
        }
    };
    observe(&mut reads, &model, 0);
    // For the accounts: refusals with Chroma's transient "database is
    // locked" by target, and when each collection id was deleted.
    let mut transient_at: HashMap<String, u64> = HashMap::new();
    let mut deleted_at: HashMap<String, u64> = HashMap::new();
    let known_ids = |m: &Model| -> Vec<String> {
        m.colls
            .iter()
            .filter_map(|c| match &c.id {
                super::model::CollId::Known(id) => Some(id.clone()),
                super::model::CollId::Unknown(_) => None,
            })
            .collect()
    };
    for (i, e) in log.iter().enumerate() {
        let op = of_lsn.get(&e.lsn).copied();
        let Some(w) = &parsed[i] else {
            rep.violations.push(format!(
                "LSN {} is not a request the model knows: {} {}",
                e.lsn, e.method, e.path
            ));
            continue;
        };
        let answer = op.and_then(|o| match (&o.result, o.verdict()) {
            (OpResult::Answer { body, .. }, Verdict::Acked) => {
                serde_json::from_str::<Value>(body).ok()
            }
            _ => None,
        });
        let answered_id = answer.as_ref().and_then(|a| a["id"].as_str());
        let what = |o: Option<&Op>| o.map_or("(no operation)".to_string(), Op::describe);
        if e.refused.is_some() {
            let predicted = model.clone().apply(w, e.lsn, answered_id);
            let transient = op.is_some_and(
                |o| matches!(&o.result, OpResult::Answer { body, .. } if body.contains("locked")),
            );
            if op.is_some_and(|o| o.verdict() == Verdict::Acked) {
                rep.violations.push(format!(
                    "(c) LSN {} was acknowledged but is refused in the log\n  op: {}",
                    e.lsn,
                    what(op)
                ));
            } else if predicted.is_ok() && transient {
                rep.transient_refusals += 1;
                transient_at.insert(w.target(), e.lsn);
            } else if predicted.is_ok() && op.is_some_and(|o| o.verdict() == Verdict::Failed) {
                rep.violations.push(format!(
                    "(c) LSN {} ({}) was refused, but the model says it succeeds there\n  op: {}",
                    e.lsn,
                    w.target(),
                    what(op)
                ));
            }
        } else {
            let before = known_ids(&model);
            let result = model.apply(w, e.lsn, answered_id);
            let after = known_ids(&model);
            for id in before.into_iter().filter(|id| !after.contains(id)) {
                deleted_at.insert(id, e.lsn);
            }
            match (op.map(Op::verdict), &result) {
                (Some(Verdict::Acked), Err(why)) => {
                    let mut hint = String::new();
                    if let Some(l) = transient_at.get(&w.target()) {
                        hint += &format!(
                            "\n  note: LSN {l} on the same target was refused with Chroma's \
                             \"database is locked\" (a 500 that may have taken effect)"
                        );
                    }
                    if let Some(l) = w.id().and_then(|id| deleted_at.get(id)) {
                        hint += &format!(
                            "\n  note: that collection id was deleted at LSN {l}; Chroma answers 404 for it"
                        );
                    }
                    rep.violations.push(format!(
                        "(c) LSN {} was acknowledged, but the model says it fails there: {why}\n  op: {}{hint}",
                        e.lsn,
                        what(op)
                    ))
                }
                (Some(Verdict::Failed), _) => rep.violations.push(format!(
                    "(b) LSN {} is committed (no refusal record), but its client was told it failed\n  op: {}",
                    e.lsn,
                    what(op)
                )),
                _ => {}
            }
            if let (Ok(super::model::Applied::Collection(id)), Some(a)) = (&result, answered_id) {
                if *id != super::model::CollId::Known(a.to_string()) {
                    rep.violations.push(format!(
                        "(c) LSN {}: the answer names collection id {a}, the model has {id:?}\n  op: {}",
                        e.lsn,
                        what(op)
                    ));
                }
            }
        }
        observe(&mut reads, &model, e.lsn);
    }
    for r in &reads {
        if !r.passed() {
            let mut lines = Vec::new();
            for (what, states) in &r.states {
                let lo = r.lo_rid.get(what.as_str()).copied().unwrap_or(r.lo_scope);
                let shown: Vec<String> = states
                    .iter()
                    .map(|(k, s)| format!("from LSN {k}: {s}"))
                    .collect();
                let by = of_lsn.get(&lo).map_or(String::new(), |o| {
                    format!(
                        "\n      last acknowledged before the read: {}",
                        o.describe()
                    )
                });
                lines.push(format!("    {what}: model {}{by}", shown.join("; ")));
            }
            rep.violations.push(format!(
                "(d) a strong read matches no state of the model up to LSN {} (the last write \
                 sent before it ended)\n  read: {}\n    observed: {}\n{}",
                r.hi,
                r.op.describe(),
                r.observed(),
                lines.join("\n")
            ));
        }
    }

    for (url, content) in servers {
        compare_content(&model, url, content, log, &mut rep.violations);
    }
    if servers.len() > 1 {
        let urls: Vec<String> = servers.iter().map(|(u, _)| u.clone()).collect();
        let scopes: Vec<(String, String)> = DBS
            .iter()
            .filter(|db| servers.iter().any(|(_, c)| c.contains_key(**db)))
            .map(|db| (TENANT.to_string(), db.to_string()))
            .collect();
        let report = block_on(compare_servers(&urls, &scopes, &CheckOptions::default()))
            .expect("compare_servers");
        if !report.identical() {
            rep.violations
                .push(format!("(a) the servers differ:\n{report}"));
        }
    }
    rep
}

/// The last log entries that concern collection `name` of `db` (its
/// creates, deletes, renames, and writes through the ids it had), and
/// record `rid` if given.
fn account(log: &[Logged], model: &Model, db: &str, name: &str, rid: Option<&str>) -> String {
    let ids: Vec<String> = log
        .iter()
        .filter_map(|e| Write::parse(&e.method, &e.path, e.body.as_bytes()))
        .filter_map(|w| match w {
            Write::UpdateColl {
                id,
                new_name: Some(n),
                db: d,
                ..
            } if n == name && d == db => Some(id),
            _ => None,
        })
        .chain(model.by_name(db, name).and_then(|c| match &c.id {
            super::model::CollId::Known(id) => Some(id.clone()),
            super::model::CollId::Unknown(_) => None,
        }))
        .collect();
    let by_name = format!("/{db}/collections/{name}");
    let create = format!("/{db}/collections");
    let lines: Vec<String> = log
        .iter()
        .filter(|e| {
            let about = e.path.ends_with(&by_name)
                || (e.path.ends_with(&create) && e.body.contains(&format!("\"{name}\"")))
                || ids.iter().any(|id| e.path.contains(id.as_str()))
                || e.path.ends_with(&format!("/databases/{db}"));
            about
                && rid.is_none_or(|r| {
                    !e.body.contains("\"ids\"") || e.body.contains(&format!("\"{r}\""))
                })
        })
        .map(|e| {
            let refused = e.refused.map_or(String::new(), |r| format!(" [{r:?}]"));
            format!(
                "    LSN {}{refused}: {} {} {}",
                e.lsn,
                e.method,
                short_path(&e.path),
                clip(&e.body, 140)
            )
        })
        .collect();
    let from = lines.len().saturating_sub(8);
    format!("  last log entries about it:\n{}", lines[from..].join("\n"))
}

fn compare_content(
    model: &Model,
    url: &str,
    content: &Content,
    log: &[Logged],
    out: &mut Vec<String>,
) {
    for db in DBS {
        let (Some(want), got) = (model.names(db), content.get(db)) else {
            if content.contains_key(db) {
                out.push(format!(
                    "(a) {url}: database {db} exists, the model has none"
                ));
            }
            continue;
        };
        let Some(got) = got else {
            out.push(format!("(a) {url}: database {db} is missing"));
            continue;
        };
        for name in want.iter().filter(|n| !got.contains_key(*n)) {
            out.push(format!(
                "(a) {url}: collection {db}/{name} is missing\n{}",
                account(log, model, db, name, None)
            ));
        }
        for (name, (meta, recs)) in got {
            let Some(c) = model.by_name(db, name) else {
                out.push(format!(
                    "(a) {url}: collection {db}/{name} exists, the model has none\n{}",
                    account(log, model, db, name, None)
                ));
                continue;
            };
            if *meta != c.meta {
                out.push(format!(
                    "(a) {url}: {db}/{name} metadata {meta}, expected {}\n{}",
                    c.meta,
                    account(log, model, db, name, None)
                ));
            }
            let rids: std::collections::BTreeSet<&String> =
                recs.keys().chain(c.recs.keys()).collect();
            for rid in rids {
                let (found, expected) = (recs.get(rid), c.recs.get(rid));
                let same = match (found, expected) {
                    (None, None) => true,
                    (Some(f), Some(x)) => {
                        f.document == x.doc
                            && f.metadata.as_object() == Some(&x.meta)
                            && f.embedding.as_ref().is_some_and(|e| {
                                e.len() == x.emb.len()
                                    && e.iter()
                                        .zip(&x.emb)
                                        .all(|(a, b)| (a - b).abs() <= 1e-5 * a.abs().max(1.0))
                            })
                    }
                    _ => false,
                };
                if !same {
                    let show_f = found.map_or("absent".into(), |f| {
                        format!("{:?} {}", f.document, f.metadata)
                    });
                    let show_x =
                        expected.map_or("absent".into(), |x| format!("{:?} {:?}", x.doc, x.meta));
                    out.push(format!(
                        "(a) {url}: {db}/{name} record {rid}: found {show_f}, expected {show_x}\n{}",
                        account(log, model, db, name, Some(rid))
                    ));
                }
            }
        }
    }
}
