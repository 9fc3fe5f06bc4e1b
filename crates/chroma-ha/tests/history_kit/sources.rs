//! Where the checker's evidence comes from: the gateway's log (read after
//! the gateway stopped) and each server's content (read directly).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use chroma_ha::check::{CheckOptions, Record, ServerReader};
use chroma_ha::replication::record::{decode, LogRecord, Refusal};
use serde_json::Value;

use super::workload::DBS;
use super::{short_path, Op};
use crate::support::block_on;

/// The tenant the workload uses.
pub const TENANT: &str = "default_tenant";

/// One entry of the gateway's log.
#[derive(Debug, Clone)]
pub struct Logged {
    /// Its LSN.
    pub lsn: u64,
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Body.
    pub body: String,
    /// Its refusal record, if any.
    pub refused: Option<Refusal>,
}

/// Where a run's log is: the file log's directory, or the PostgreSQL
/// database (URL) that held it.
pub enum LogAt<'a> {
    /// `data_dir/wal`, with its segment size.
    File(&'a Path, u64),
    /// A `log.url`.
    Postgres(&'a str),
}

/// Reads the whole log (the gateway must be stopped). Panics if the log
/// does not start at LSN 1.
pub fn read_log(at: LogAt<'_>) -> Vec<Logged> {
    block_on(async {
        match at {
            LogAt::File(dir, segment_bytes) => {
                let options = wal::WalOptions {
                    segment_bytes,
                    ..wal::WalOptions::default()
                };
                let (log, _) = wal::Wal::open(dir, options).expect("open the gateway's log");
                collect(&log).await
            }
            LogAt::Postgres(url) => {
                let log = pglog::PgLog::connect(url, pglog::PgLogOptions::default())
                    .await
                    .expect("open the gateway's log in PostgreSQL");
                collect(&log).await
            }
        }
    })
}

async fn collect<L: wal::Log>(log: &L) -> Vec<Logged> {
    use wal::LogRead;
    assert_eq!(
        log.first_lsn(),
        1,
        "the log was truncated; raise segment_bytes"
    );
    let mut reader = log.read_from(1);
    let mut out: Vec<Logged> = Vec::new();
    let mut refusals = HashMap::new();
    let mut next = 1;
    while let Some(rec) = reader.try_next().await.expect("read the log") {
        assert_eq!(rec.lsn, next, "the log's LSNs are not dense");
        next += 1;
        match decode(&rec.payload).expect("decode a log record") {
            LogRecord::Entry(e) => {
                out.push(Logged {
                    lsn: rec.lsn,
                    method: e.method.to_string(),
                    path: e.path,
                    body: String::from_utf8_lossy(&e.body).into_owned(),
                    refused: None,
                });
            }
            LogRecord::Decision { lsn, refusal } => {
                refusals.insert(lsn, refusal);
            }
        }
    }
    for e in &mut out {
        e.refused = refusals.get(&e.lsn).copied();
    }
    out
}

/// One server's content: database -> collection name -> (metadata, records).
pub type Content = BTreeMap<String, BTreeMap<String, (Value, BTreeMap<String, Record>)>>;

/// Reads the content of the workload's databases on `url`, directly.
pub fn read_server(url: &str) -> Content {
    block_on(async {
        let r = ServerReader::new(url, None, &CheckOptions::default()).expect("reader");
        let mut out = Content::new();
        for db in DBS {
            if !r
                .database_exists(TENANT, db)
                .await
                .expect("database_exists")
            {
                continue;
            }
            let mut colls = BTreeMap::new();
            for c in r.list_collections(TENANT, db).await.expect("list") {
                let recs = r.get_all_records(TENANT, db, &c.id).await.expect("records");
                colls.insert(c.name, (c.metadata, recs));
            }
            out.insert(db.to_string(), colls);
        }
        out
    })
}

/// Writes the log (with the answers of the operations that name their LSN)
/// and every operation to `path`, for diagnosis (`HISTORY_DUMP=path`).
pub fn dump(path: &str, ops: &[Op], log: &[Logged]) {
    use std::fmt::Write as _;
    let by_lsn: HashMap<u64, &Op> = ops.iter().filter_map(|o| Some((o.lsn()?, o))).collect();
    let mut out = String::new();
    for e in log {
        let refused = e.refused.map_or(String::new(), |r| format!(" [{r:?}]"));
        let answer = by_lsn
            .get(&e.lsn)
            .map_or("unanswered".into(), |o| o.describe());
        let _ = writeln!(
            out,
            "LSN {}{refused}: {} {} {}\n    {answer}",
            e.lsn,
            e.method,
            short_path(&e.path),
            e.body
        );
    }
    let t0 = ops.iter().map(|o| o.start).min();
    for o in ops {
        let at = t0.map_or(0.0, |t| (o.start - t).as_secs_f64());
        let took = (o.end - o.start).as_secs_f64();
        let _ = writeln!(out, "{at:.3}s +{took:.3}s {}", o.describe());
    }
    std::fs::write(path, out).expect("write HISTORY_DUMP");
}
