//! Concurrent clients that send a seeded random mix over the whole write
//! API (plus strong reads) through the gateway and record every operation.
//!
//! Names and ids collide on purpose: collection names come from a pool of
//! four per database, record ids from a pool of six, tags from three, in two
//! databases (`default_database`, which is never deleted, and `hdb1`, which
//! is created and deleted). Collection ids are those the gateway answered
//! creates with (shared by all clients), so some are stale on purpose.
//! Every document and metadata carries a token unique to the operation, so
//! the checker can find an unanswered write in the log by its body.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::{Op, OpResult, ReadKind, Verdict};
use crate::support::http_request;

/// The databases the clients use.
pub const DBS: [&str; 2] = ["default_database", "hdb1"];
/// The database that is created and deleted.
pub const CHURN_DB: &str = "hdb1";
const NAMES: [&str; 4] = ["col0", "col1", "col2", "col3"];
const RECORD_IDS: [&str; 6] = ["r0", "r1", "r2", "r3", "r4", "r5"];
const TAGS: [&str; 3] = ["a", "b", "c"];
/// A client gives up on an answer after this long (the gateway answers a
/// write with 504 after its `request_timeout` + 5 s).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

const DB_PATH: &str = "/api/v2/tenants/default_tenant/databases";

/// Collections learned from answers: (database, name, logical id), newest
/// last. Acknowledged deletes and renames and 404 answers keep it roughly
/// up to date; races between clients leave some ids stale, on purpose.
type Registry = Arc<Mutex<Vec<(String, String, String)>>>;

/// Running clients.
pub struct Clients {
    stop: Arc<AtomicBool>,
    handles: Vec<std::thread::JoinHandle<Vec<Op>>>,
}

impl Clients {
    /// Starts `n` clients against the gateway at `gw`, seeded from `seed`.
    pub fn start(gw: &str, n: usize, seed: u64) -> Clients {
        Self::start_through(&[gw.to_string()], n, seed)
    }

    /// Like [`start`](Self::start), client `i` sending to `gws[i % len]`.
    pub fn start_through(gws: &[String], n: usize, seed: u64) -> Clients {
        let stop = Arc::new(AtomicBool::new(false));
        let registry: Registry = Arc::default();
        let handles = (0..n)
            .map(|client| {
                let mut c = Client {
                    gw: gws[client % gws.len()].clone(),
                    client,
                    seq: 0,
                    rng: StdRng::seed_from_u64(seed.wrapping_mul(1000).wrapping_add(client as u64)),
                    registry: registry.clone(),
                    ops: Vec::new(),
                };
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        c.step();
                    }
                    c.ops
                })
            })
            .collect();
        Clients { stop, handles }
    }

    /// Stops the clients (each finishes its current operation) and returns
    /// every operation, in no particular order.
    pub fn stop(self) -> Vec<Op> {
        self.stop.store(true, Ordering::Relaxed);
        self.handles
            .into_iter()
            .flat_map(|h| h.join().expect("client thread panicked"))
            .collect()
    }
}

struct Client {
    gw: String,
    client: usize,
    seq: u64,
    rng: StdRng,
    registry: Registry,
    ops: Vec<Op>,
}

/// Parses the LSN out of a 504's message ("… logged at LSN 123 …").
fn lsn_in_message(body: &str) -> Option<u64> {
    let i = body.find("LSN ")?;
    let digits: String = body[i + 4..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

impl Client {
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.rng.random_range(0..from.len())]
    }

    fn token(&self) -> String {
        format!("c{}-{}", self.client, self.seq)
    }

    /// A collection id from the registry (one of the newest), or `None`.
    fn known_collection(&mut self) -> Option<(String, String)> {
        let reg = self.registry.lock().expect("registry");
        if reg.is_empty() {
            return None;
        }
        let newest = reg.len().min(8);
        let i = reg.len() - 1 - self.rng.random_range(0..newest);
        Some((reg[i].0.clone(), reg[i].2.clone()))
    }

    fn record_ids(&mut self) -> Vec<&'static str> {
        let n = self.rng.random_range(1..=2);
        let mut ids: Vec<&str> = Vec::new();
        while ids.len() < n {
            let id = self.pick(&RECORD_IDS);
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    }

    fn embedding(&mut self) -> Value {
        let v: Vec<f64> = (0..3)
            .map(|_| f64::from(self.rng.random_range(0..1000u32)) / 100.0)
            .collect();
        json!(v)
    }

    fn metadata(&mut self, tok: &str, i: usize) -> Value {
        json!({"tag": self.pick(&TAGS), "u": format!("{tok}-{i}")})
    }

    /// One operation: chosen, sent, recorded.
    fn step(&mut self) {
        self.seq += 1;
        let tok = self.token();
        let roll = self.rng.random_range(0..100u32);
        let target = if roll >= 30 {
            self.known_collection()
        } else {
            None
        };
        let (method, path, body, read): (&str, String, Option<Value>, Option<ReadKind>) =
            match (roll, target) {
                (0..=11 | 26..=29, _) | (30.., None) => {
                    let db = self.pick(&DBS);
                    let mut body = json!({"name": self.pick(&NAMES),
                                          "get_or_create": self.rng.random_bool(0.5)});
                    if self.rng.random_bool(0.7) {
                        body["metadata"] = json!({ "u": tok });
                    }
                    (
                        "POST",
                        format!("{DB_PATH}/{db}/collections"),
                        Some(body),
                        None,
                    )
                }
                (12..=15, _) => {
                    let (db, name) = (self.pick(&DBS), self.pick(&NAMES));
                    (
                        "DELETE",
                        format!("{DB_PATH}/{db}/collections/{name}"),
                        None,
                        None,
                    )
                }
                (16..=18, _) => (
                    "POST",
                    DB_PATH.to_string(),
                    Some(json!({"name": CHURN_DB})),
                    None,
                ),
                (19, _) => ("DELETE", format!("{DB_PATH}/{CHURN_DB}"), None, None),
                (20..=25, _) => {
                    let db = self.pick(&DBS);
                    let read = ReadKind::List { db: db.to_string() };
                    (
                        "GET",
                        format!("{DB_PATH}/{db}/collections"),
                        None,
                        Some(read),
                    )
                }
                (30.., Some((db, id))) => {
                    let coll = format!("{DB_PATH}/{db}/collections/{id}");
                    match roll {
                        30..=33 => {
                            let body = json!({"new_name": self.pick(&NAMES)});
                            ("PUT", coll, Some(body), None)
                        }
                        34..=37 => ("PUT", coll, Some(json!({"new_metadata": {"u": tok}})), None),
                        38..=61 => {
                            let op = ["add", "upsert"][usize::from(roll >= 50)];
                            let ids = self.record_ids();
                            let embs: Vec<Value> = ids.iter().map(|_| self.embedding()).collect();
                            let metas: Vec<Value> =
                                (0..ids.len()).map(|i| self.metadata(&tok, i)).collect();
                            let docs: Vec<String> =
                                (0..ids.len()).map(|i| format!("d-{tok}-{i}")).collect();
                            let body = json!({"ids": ids, "embeddings": embs,
                                              "documents": docs, "metadatas": metas});
                            ("POST", format!("{coll}/{op}"), Some(body), None)
                        }
                        62..=71 => {
                            let ids = self.record_ids();
                            let metas: Vec<Value> =
                                (0..ids.len()).map(|i| self.metadata(&tok, i)).collect();
                            let mut body = json!({"ids": ids, "metadatas": metas});
                            if self.rng.random_bool(0.5) {
                                let docs: Vec<String> =
                                    (0..ids.len()).map(|i| format!("d-{tok}-{i}")).collect();
                                body["documents"] = json!(docs);
                            }
                            ("POST", format!("{coll}/update"), Some(body), None)
                        }
                        72..=76 => {
                            let body = json!({"ids": self.record_ids()});
                            ("POST", format!("{coll}/delete"), Some(body), None)
                        }
                        77..=80 => {
                            let body = json!({"where": {"tag": self.pick(&TAGS)}});
                            ("POST", format!("{coll}/delete"), Some(body), None)
                        }
                        81..=92 => {
                            let ids = self.record_ids();
                            let body = json!({"ids": ids, "include": ["documents", "metadatas"]});
                            let read = ReadKind::Get {
                                id,
                                ids: ids.iter().map(|s| s.to_string()).collect(),
                            };
                            ("POST", format!("{coll}/get"), Some(body), Some(read))
                        }
                        _ => {
                            let read = ReadKind::Count { id };
                            ("GET", format!("{coll}/count"), None, Some(read))
                        }
                    }
                }
            };
        let body = body.map(|b| b.to_string());
        let op = self.send(method, path, body, read);
        let pause = match (&op.result, op.verdict()) {
            (OpResult::NotSent(_), _) => 50,
            (OpResult::Answer { status: 503, .. }, _) => 20,
            (_, Verdict::Acked) => 0,
            _ => 5,
        };
        self.learn(&op);
        self.ops.push(op);
        if pause > 0 {
            std::thread::sleep(Duration::from_millis(pause));
        }
    }

    fn send(&self, method: &str, path: String, body: Option<String>, read: Option<ReadKind>) -> Op {
        let start = Instant::now();
        let url = format!("{}{path}", self.gw);
        let result = match http_request(method, &url, body.as_deref(), CLIENT_TIMEOUT) {
            Ok(r) => {
                let text = r.text();
                let lsn = r
                    .header("x-chroma-ha-lsn")
                    .and_then(|v| v.parse().ok())
                    .or_else(|| (r.status == 504).then(|| lsn_in_message(&text)).flatten());
                OpResult::Answer {
                    status: r.status,
                    body: text,
                    lsn,
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                OpResult::NotSent(e.to_string())
            }
            Err(e) => OpResult::Lost(e.to_string()),
        };
        Op {
            client: self.client,
            seq: self.seq,
            method: method.to_string(),
            path,
            body,
            read,
            start,
            end: Instant::now(),
            result,
        }
    }

    /// Keeps the registry up to date with an answer.
    fn learn(&self, op: &Op) {
        let OpResult::Answer { status, body, .. } = &op.result else {
            return;
        };
        let mut reg = self.registry.lock().expect("registry");
        let segs: Vec<&str> = op.path.split('/').collect();
        // ["", "api", "v2", "tenants", t, "databases", db, "collections", x, ...]
        let db = segs.get(6).copied().unwrap_or_default();
        let x = segs.get(8).copied().unwrap_or_default();
        match (op.method.as_str(), segs.len(), *status) {
            ("POST", 8, 200) if op.read.is_none() => {
                let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
                if let (Some(id), Some(name)) = (v["id"].as_str(), v["name"].as_str()) {
                    reg.retain(|e| e.2 != id);
                    reg.push((db.to_string(), name.to_string(), id.to_string()));
                }
            }
            ("DELETE", 9, 200) => reg.retain(|e| !(e.0 == db && e.1 == x)),
            ("DELETE", 7, 200) => reg.retain(|e| e.0 != db),
            ("PUT", 9, 200) => {
                let v: Value =
                    serde_json::from_str(op.body.as_deref().unwrap_or("")).unwrap_or_default();
                if let Some(n) = v["new_name"].as_str() {
                    for e in reg.iter_mut().filter(|e| e.2 == x) {
                        e.1 = n.to_string();
                    }
                }
            }
            (_, 9.., 404) => reg.retain(|e| e.2 != x),
            _ => {}
        }
    }
}
