//! The zero-loss check, on every server directly (never through the
//! gateway): every acknowledged write present, nothing a client was told
//! failed present, every write without a verdict resolved (applied or not,
//! the same on every server), and all servers identical (`compare_servers`).

use std::collections::{BTreeMap, HashMap};

use chroma_ha::check::{compare_servers, CheckOptions, Record, ServerReader};

use super::workload::{Content, Model, Outcome, Presence, UnknownKind, UnknownWrite};
use super::{DATABASE, TENANT};
use crate::support::block_on;

/// What the check found on one server.
#[derive(Debug, Default)]
pub struct ServerCheck {
    /// The server's URL.
    pub url: String,
    /// Ids / collections checked.
    pub checked: usize,
    /// Acknowledged writes that are missing or overwritten.
    pub lost: Vec<String>,
    /// Writes a client was told failed (or that nobody made) that are visible.
    pub phantoms: Vec<String>,
    /// What this server shows of each of the model's unknown writes (same
    /// order as `Model::unknown`).
    pub unknown: Vec<Resolution>,
}

/// What a server shows of a write whose client got no verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Its effect is there (on every id it wrote).
    Applied,
    /// Its effect is not there (on any id it wrote).
    NotApplied,
    /// Some of its ids show it and others do not, or an id is in a state
    /// neither with nor without it.
    Inconsistent,
    /// Nothing on the server can tell (every id was overwritten later).
    Undetermined,
}

/// One unknown write and how every server resolved it.
#[derive(Debug, Clone)]
pub struct UnknownCheck {
    /// The write.
    pub write: String,
    /// Per server, in the order of the servers checked.
    pub per_server: Vec<Resolution>,
}

impl UnknownCheck {
    /// Applied or not applied, the same on every server.
    pub fn resolved(&self) -> Option<Resolution> {
        let first = *self.per_server.first()?;
        let ok = matches!(first, Resolution::Applied | Resolution::NotApplied)
            && self.per_server.iter().all(|r| *r == first);
        ok.then_some(first)
    }
}

/// What the check found on all servers.
#[derive(Debug, Default)]
pub struct Verification {
    /// Per server.
    pub servers: Vec<ServerCheck>,
    /// `compare_servers` found no difference.
    pub identical: bool,
    /// Its report.
    pub compare_report: String,
    /// Every unknown write of the model, resolved on every server.
    pub unknown: Vec<UnknownCheck>,
}

impl Verification {
    /// Lost writes on the worst server.
    pub fn lost(&self) -> usize {
        self.servers.iter().map(|s| s.lost.len()).max().unwrap_or(0)
    }

    /// Visible failed writes on the worst server.
    pub fn phantoms(&self) -> usize {
        self.servers
            .iter()
            .map(|s| s.phantoms.len())
            .max()
            .unwrap_or(0)
    }

    /// Unknown writes applied on every server.
    pub fn unknown_applied(&self) -> usize {
        self.unknown
            .iter()
            .filter(|u| u.resolved() == Some(Resolution::Applied))
            .count()
    }

    /// Unknown writes applied on no server.
    pub fn unknown_not_applied(&self) -> usize {
        self.unknown
            .iter()
            .filter(|u| u.resolved() == Some(Resolution::NotApplied))
            .count()
    }

    /// Unknown writes that are not resolved the same way on every server.
    pub fn unresolved(&self) -> Vec<&UnknownCheck> {
        self.unknown
            .iter()
            .filter(|u| u.resolved().is_none())
            .collect()
    }

    /// Whether nothing was lost, nothing failed is visible, every unknown
    /// write is resolved and the servers are identical.
    pub fn ok(&self) -> bool {
        self.identical
            && self.unresolved().is_empty()
            && self
                .servers
                .iter()
                .all(|s| s.lost.is_empty() && s.phantoms.is_empty())
    }

    /// Panics with the details unless [`Verification::ok`].
    pub fn assert_ok(&self, context: &str) {
        let mut problems = Vec::new();
        for s in &self.servers {
            for p in s.lost.iter().take(15) {
                problems.push(format!("{}: LOST {p}", s.url));
            }
            for p in s.phantoms.iter().take(15) {
                problems.push(format!(
                    "{}: PRESENT ALTHOUGH FAILED OR NEVER WRITTEN {p}",
                    s.url
                ));
            }
        }
        for u in self.unresolved().iter().take(15) {
            problems.push(format!(
                "UNKNOWN WRITE NOT RESOLVED ALIKE ON EVERY SERVER {}: {:?}",
                u.write, u.per_server
            ));
        }
        assert!(
            self.ok(),
            "{context}: zero-loss check failed (lost {}, failed present {}, unknown unresolved {}, identical {}):\n{}\n{}",
            self.lost(),
            self.phantoms(),
            self.unresolved().len(),
            self.identical,
            problems.join("\n"),
            self.compare_report
        );
    }
}

fn matches(record: Option<&Record>, expected: &Option<Content>) -> bool {
    match (record, expected) {
        (None, None) => true,
        (Some(r), Some(c)) => {
            r.document.as_deref() == Some(c.doc.as_str())
                && r.metadata == c.meta
                && r.embedding.as_ref().is_some_and(|e| {
                    e.len() == c.emb.len()
                        && e.iter()
                            .zip(&c.emb)
                            .all(|(a, b)| (a - f64::from(*b)).abs() <= 1e-6 * a.abs().max(1.0))
                })
        }
        _ => false,
    }
}

fn describe(states: &[Option<Content>]) -> String {
    states
        .iter()
        .map(|s| match s {
            None => "absent".to_string(),
            Some(c) => c.doc.clone(),
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Checks one server against the model. Collections whose names start
/// with `prefix` but are not in the model count as phantoms.
async fn check_server(url: &str, model: &Model, prefix: &str) -> ServerCheck {
    let reader = ServerReader::new(url, None, &CheckOptions::default()).expect("reader");
    let mut out = ServerCheck {
        url: url.to_string(),
        ..ServerCheck::default()
    };
    let listed = reader
        .list_collections(TENANT, DATABASE)
        .await
        .unwrap_or_else(|e| panic!("listing collections on {url}: {e}"));
    let by_name: HashMap<String, String> = listed.into_iter().map(|c| (c.name, c.id)).collect();
    let mut contents: HashMap<String, BTreeMap<String, Record>> = HashMap::new();
    for name in by_name.keys() {
        if name.starts_with(prefix) && !model.colls.contains_key(name) {
            out.phantoms
                .push(format!("collection {name} exists but nobody created it"));
        }
    }
    for (name, coll) in &model.colls {
        out.checked += 1;
        let Some(id) = by_name.get(name) else {
            match coll.presence {
                Presence::Must => out.lost.push(format!(
                    "collection {name} (creation acknowledged) is missing"
                )),
                _ => {
                    // Its records were only written after an acknowledged
                    // create, so there is nothing more to check.
                }
            }
            continue;
        };
        if coll.presence == Presence::MustNot {
            out.phantoms.push(format!(
                "collection {name} exists although its creation was refused"
            ));
        }
        let records: BTreeMap<String, Record> = reader
            .get_all_records(TENANT, DATABASE, id)
            .await
            .unwrap_or_else(|e| panic!("reading {name} on {url}: {e}"));
        for (rid, states) in &coll.ids {
            out.checked += 1;
            let actual = records.get(rid);
            if states.iter().any(|s| matches(actual, s)) {
                continue;
            }
            let line = format!(
                "{name}/{rid}: found {}, allowed: {}",
                actual.map_or("absent".to_string(), |r| format!("{:?}", r.document)),
                describe(states)
            );
            let doc_outcome = actual
                .and_then(|r| r.document.as_ref())
                .and_then(|d| model.doc_outcome.get(d));
            match (actual, doc_outcome) {
                (Some(_), Some(Outcome::Failed) | None) => out.phantoms.push(line),
                _ => out.lost.push(line),
            }
        }
        for rid in records.keys() {
            if !coll.ids.contains_key(rid) {
                out.phantoms
                    .push(format!("{name}/{rid}: present but never written"));
            }
        }
        contents.insert(name.clone(), records);
    }
    out.unknown = model
        .unknown
        .iter()
        .map(|u| resolve(u, &by_name, &contents))
        .collect();
    out
}

/// What one server (its collections by name, and the records of those in
/// the model) shows of an unknown write.
fn resolve(
    u: &UnknownWrite,
    by_name: &HashMap<String, String>,
    contents: &HashMap<String, BTreeMap<String, Record>>,
) -> Resolution {
    let ids = match &u.kind {
        UnknownKind::Create => {
            return if by_name.contains_key(&u.collection) {
                Resolution::Applied
            } else {
                Resolution::NotApplied
            }
        }
        UnknownKind::Records { ids, .. } => ids,
    };
    let records = contents.get(&u.collection);
    let (mut applied, mut not_applied, mut inconsistent) = (0, 0, 0);
    for i in ids.iter().filter(|i| !i.superseded) {
        let actual = records.and_then(|r| r.get(&i.id));
        let with = i.after.iter().any(|s| matches(actual, s));
        let without = i.before.iter().any(|s| matches(actual, s));
        match (with, without) {
            (true, false) => applied += 1,
            (false, true) => not_applied += 1,
            (true, true) => {}
            (false, false) => inconsistent += 1,
        }
    }
    match (applied, not_applied, inconsistent) {
        (0, 0, 0) => Resolution::Undetermined,
        (_, 0, 0) => Resolution::Applied,
        (0, _, 0) => Resolution::NotApplied,
        _ => Resolution::Inconsistent,
    }
}

/// Checks every server in `urls` against `model` and compares them with
/// each other in `scopes` (default database when empty).
pub fn verify(
    urls: &[String],
    model: &Model,
    prefix: &str,
    extra_scopes: &[(&str, &str)],
) -> Verification {
    block_on(async {
        let mut servers = Vec::new();
        for url in urls {
            servers.push(check_server(url, model, prefix).await);
        }
        let mut scopes = vec![(TENANT.to_string(), DATABASE.to_string())];
        scopes.extend(
            extra_scopes
                .iter()
                .map(|(t, d)| (t.to_string(), d.to_string())),
        );
        let report = compare_servers(urls, &scopes, &CheckOptions::default())
            .await
            .expect("compare_servers");
        let unknown = model
            .unknown
            .iter()
            .enumerate()
            .map(|(k, u)| UnknownCheck {
                write: u.describe(),
                per_server: servers.iter().map(|s| s.unknown[k]).collect(),
            })
            .collect();
        Verification {
            servers,
            identical: report.identical(),
            compare_report: report.to_string(),
            unknown,
        }
    })
}
