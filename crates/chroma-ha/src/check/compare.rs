//! Comparing servers: scopes, collections by name, records by id.

use super::reader::{truncate, CollectionInfo, Record, ServerReader};
use super::report::{CheckReport, Difference, DifferenceKind};
use super::{CheckError, CheckOptions};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// The union, over all servers, of the databases of each given tenant, as
/// (tenant, database) scopes sorted by name. Use it to check "everything" of
/// some tenants (Chroma has no endpoint that lists tenants).
pub async fn discover_scopes(
    urls: &[String],
    tenants: &[String],
    opts: &CheckOptions,
) -> Result<Vec<(String, String)>, CheckError> {
    let readers = readers(urls, opts)?;
    let mut scopes = BTreeSet::new();
    for tenant in tenants {
        let lists =
            futures::future::try_join_all(readers.iter().map(|r| r.list_databases(tenant))).await?;
        for db in lists.into_iter().flatten() {
            scopes.insert((tenant.clone(), db));
        }
    }
    Ok(scopes.into_iter().collect())
}

/// Compares the content of several Chroma servers, directly.
///
/// For each (tenant, database) scope: checks that the database exists on every
/// server, lists the collections of each server, matches them by name, and
/// compares collection metadata (and configuration / schema / dimension per
/// `opts`) and every record. The first URL is the reference. An unreachable
/// server or an unexpected answer is an error; differences go into the report.
pub async fn compare_servers(
    urls: &[String],
    scopes: &[(String, String)],
    opts: &CheckOptions,
) -> Result<CheckReport, CheckError> {
    let readers = readers(urls, opts)?;
    let mut report = CheckReport {
        servers: readers.iter().map(|r| r.url().to_string()).collect(),
        scopes: scopes.to_vec(),
        collections_per_server: vec![0; readers.len()],
        records_per_server: vec![0; readers.len()],
        tolerance: opts.tolerance,
        ..CheckReport::default()
    };
    let mut sink = Sink {
        report: &mut report,
        max: opts.max_differences,
    };
    for (tenant, database) in scopes {
        compare_scope(&readers, tenant, database, opts, &mut sink).await?;
    }
    Ok(report)
}

struct Sink<'a> {
    report: &'a mut CheckReport,
    max: usize,
}

impl Sink<'_> {
    fn push(&mut self, d: Difference) {
        if self.report.differences.len() < self.max {
            self.report.differences.push(d);
        } else {
            self.report.omitted_differences += 1;
        }
    }
}

fn readers(urls: &[String], opts: &CheckOptions) -> Result<Vec<ServerReader>, CheckError> {
    if urls.is_empty() {
        return Err(CheckError::Config("no server to check".into()));
    }
    urls.iter()
        .enumerate()
        .map(|(i, u)| ServerReader::new(u, opts.auth.get(i).cloned().flatten(), opts))
        .collect()
}

fn server_list(readers: &[ServerReader], idx: &[usize]) -> String {
    idx.iter()
        .map(|i| format!("#{i} {}", readers[*i].url()))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn compare_scope(
    readers: &[ServerReader],
    tenant: &str,
    database: &str,
    opts: &CheckOptions,
    sink: &mut Sink<'_>,
) -> Result<(), CheckError> {
    let diff =
        |collection: Option<&str>, record_id: Option<&str>, kind, server, reference, detail| {
            Difference {
                tenant: tenant.to_string(),
                database: database.to_string(),
                collection: collection.map(str::to_string),
                record_id: record_id.map(str::to_string),
                kind,
                server,
                reference,
                detail,
            }
        };

    // 1. Database presence.
    let exists =
        futures::future::try_join_all(readers.iter().map(|r| r.database_exists(tenant, database)))
            .await?;
    let present: Vec<usize> = (0..readers.len()).filter(|i| exists[*i]).collect();
    let Some(&db_ref) = present.first() else {
        // Absent everywhere: nothing differs, nothing to compare.
        return Ok(());
    };
    for i in (0..readers.len()).filter(|i| !exists[*i]) {
        sink.push(diff(
            None,
            None,
            DifferenceKind::MissingDatabase,
            i,
            db_ref,
            format!(
                "database exists on {} but not on #{i} {}",
                server_list(readers, &present),
                readers[i].url()
            ),
        ));
    }

    // 2. Collections, by name.
    let listed = futures::future::try_join_all(
        present
            .iter()
            .map(|i| readers[*i].list_collections(tenant, database)),
    )
    .await?;
    let mut by_server: Vec<BTreeMap<String, CollectionInfo>> = vec![BTreeMap::new(); readers.len()];
    for (pos, cols) in listed.into_iter().enumerate() {
        let i = present[pos];
        sink.report.collections_per_server[i] += cols.len();
        for c in cols {
            by_server[i].insert(c.name.clone(), c);
        }
    }
    let names: BTreeSet<String> = by_server.iter().flat_map(|m| m.keys().cloned()).collect();
    sink.report.collections += names.len();

    for name in &names {
        let holders: Vec<usize> = present
            .iter()
            .copied()
            .filter(|i| by_server[*i].contains_key(name))
            .collect();
        let Some(&r) = holders.first() else { continue };
        for &i in present.iter().filter(|i| !holders.contains(i)) {
            sink.push(diff(
                Some(name),
                None,
                DifferenceKind::MissingCollection,
                i,
                r,
                format!(
                    "collection exists on {} but not on #{i} {}",
                    server_list(readers, &holders),
                    readers[i].url()
                ),
            ));
        }
        let rinfo = &by_server[r][name];
        for &i in holders.iter().skip(1) {
            let info = &by_server[i][name];
            let fields = [
                (
                    true,
                    DifferenceKind::CollectionMetadata,
                    "metadata",
                    &rinfo.metadata,
                    &info.metadata,
                ),
                (
                    opts.compare_configuration,
                    DifferenceKind::CollectionConfiguration,
                    "configuration_json",
                    &rinfo.configuration,
                    &info.configuration,
                ),
                (
                    opts.compare_schema,
                    DifferenceKind::CollectionSchema,
                    "schema",
                    &rinfo.schema,
                    &info.schema,
                ),
                (
                    true,
                    DifferenceKind::CollectionDimension,
                    "dimension",
                    &rinfo.dimension,
                    &info.dimension,
                ),
            ];
            for (enabled, kind, label, a, b) in fields {
                if enabled && !json_equal(a, b, opts.tolerance) {
                    sink.push(diff(
                        Some(name),
                        None,
                        kind,
                        i,
                        r,
                        format!(
                            "collection {label} differs: #{r} has {}, #{i} has {}",
                            short(a),
                            short(b)
                        ),
                    ));
                }
            }
        }

        // 3. Records.
        let fetched = futures::future::try_join_all(
            holders
                .iter()
                .map(|i| readers[*i].get_all_records(tenant, database, &by_server[*i][name].id)),
        )
        .await?;
        let mut records: Vec<Option<BTreeMap<String, Record>>> = vec![None; readers.len()];
        for (pos, recs) in fetched.into_iter().enumerate() {
            sink.report.records_per_server[holders[pos]] += recs.len();
            records[holders[pos]] = Some(recs);
        }
        let ids: BTreeSet<&String> = records.iter().flatten().flat_map(|m| m.keys()).collect();
        sink.report.records += ids.len();
        for id in ids {
            let has: Vec<usize> = holders
                .iter()
                .copied()
                .filter(|i| records[*i].as_ref().is_some_and(|m| m.contains_key(id)))
                .collect();
            let Some(&rr) = has.first() else { continue };
            for &i in holders.iter().filter(|i| !has.contains(i)) {
                sink.push(diff(
                    Some(name),
                    Some(id),
                    DifferenceKind::MissingRecord,
                    i,
                    rr,
                    format!(
                        "record exists on {} but not on #{i} {}",
                        server_list(readers, &has),
                        readers[i].url()
                    ),
                ));
            }
            let Some(a) = records[rr].as_ref().and_then(|m| m.get(id)) else {
                continue;
            };
            for &i in has.iter().skip(1) {
                let Some(b) = records[i].as_ref().and_then(|m| m.get(id)) else {
                    continue;
                };
                for (kind, detail) in compare_records(a, b, rr, i, opts.tolerance) {
                    sink.push(diff(Some(name), Some(id), kind, i, rr, detail));
                }
            }
        }
    }
    Ok(())
}

fn compare_records(
    a: &Record,
    b: &Record,
    ia: usize,
    ib: usize,
    tol: f64,
) -> Vec<(DifferenceKind, String)> {
    let mut out = Vec::new();
    if a.document != b.document {
        out.push((
            DifferenceKind::Document,
            format!(
                "document differs: #{ia} has {}, #{ib} has {}",
                short_opt(&a.document),
                short_opt(&b.document)
            ),
        ));
    }
    if !json_equal(&a.metadata, &b.metadata, tol) {
        out.push((
            DifferenceKind::Metadata,
            format!(
                "metadata differs: #{ia} has {}, #{ib} has {}",
                short(&a.metadata),
                short(&b.metadata)
            ),
        ));
    }
    match (&a.embedding, &b.embedding) {
        (None, None) => {}
        (Some(x), Some(y)) if x.len() != y.len() => out.push((
            DifferenceKind::Embedding,
            format!(
                "embedding dimension differs: #{ia} has {}, #{ib} has {}",
                x.len(),
                y.len()
            ),
        )),
        (Some(x), Some(y)) => {
            if let Some(k) = (0..x.len()).find(|k| !float_equal(x[*k], y[*k], tol)) {
                out.push((
                    DifferenceKind::Embedding,
                    format!(
                        "embedding differs at index {k}: #{ia} has {}, #{ib} has {} (tolerance {tol:e})",
                        x[k], y[k]
                    ),
                ));
            }
        }
        (x, y) => out.push((
            DifferenceKind::Embedding,
            format!(
                "embedding present on one side only: #{ia} {}, #{ib} {}",
                if x.is_some() { "has one" } else { "has none" },
                if y.is_some() { "has one" } else { "has none" }
            ),
        )),
    }
    if a.uri != b.uri {
        out.push((
            DifferenceKind::Uri,
            format!(
                "uri differs: #{ia} has {}, #{ib} has {}",
                short_opt(&a.uri),
                short_opt(&b.uri)
            ),
        ));
    }
    out
}

pub(super) fn float_equal(a: f64, b: f64, tol: f64) -> bool {
    if a == b {
        return true;
    }
    if a.is_nan() && b.is_nan() {
        return true;
    }
    (a - b).abs() <= tol * 1f64.max(a.abs()).max(b.abs())
}

/// JSON equality where floats compare with a tolerance; integers must be
/// equal and never equal a float. Object key order does not matter.
pub(super) fn json_equal(a: &Value, b: &Value, tol: f64) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let xf = !(x.is_i64() || x.is_u64());
            let yf = !(y.is_i64() || y.is_u64());
            match (xf, yf) {
                (false, false) => x == y,
                (true, true) => match (x.as_f64(), y.as_f64()) {
                    (Some(p), Some(q)) => float_equal(p, q, tol),
                    _ => false,
                },
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_equal(p, q, tol))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w, tol)))
        }
        _ => a == b,
    }
}

fn short(v: &Value) -> String {
    truncate(v.to_string(), 200)
}

fn short_opt(v: &Option<String>) -> String {
    match v {
        Some(s) => truncate(format!("{s:?}"), 200),
        None => "none".to_string(),
    }
}
