//! Content comparison between Chroma servers (`chroma-ha check`).
//!
//! This module talks to every Chroma server **directly** (never through the
//! gateway) and compares what each one holds: databases, collections (matched
//! by **name**, since each server gives the same collection its own random
//! id), collection metadata / configuration / schema / dimension, and every
//! record (ids, documents, metadatas, embeddings, uris).
//!
//! The first server in the list is the reference; every other server is
//! compared against it (or against the first server that has the object, when
//! the reference lacks it).
//!
//! Embeddings are compared with a tiny tolerance ([`CheckOptions::tolerance`],
//! `1e-6` by default, relative to the magnitude of the values and absolute
//! below 1.0). All servers receive the same request bytes from the gateway, so
//! exact equality is expected; the tolerance only guards against harmless
//! float formatting differences. Float values in metadata use the same rule;
//! integers, strings and booleans must be equal exactly, and an integer never
//! equals a float (Chroma keeps the two types apart).
//!
//! The check reads each collection's records page by page (`limit`/`offset`),
//! so it is meant for quiescent servers: writes racing with the check can show
//! up as differences.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde_json::{json, Value};

/// Chroma's default tenant name.
pub const DEFAULT_TENANT: &str = "default_tenant";
/// Chroma's default database name.
pub const DEFAULT_DATABASE: &str = "default_database";

/// A header sent with every request to one server (for Chroma token auth,
/// e.g. `x-chroma-token: ...` or `authorization: Bearer ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthHeader {
    /// Header name, e.g. `x-chroma-token`.
    pub name: String,
    /// Header value.
    pub value: String,
}

impl AuthHeader {
    /// Builds a header from a name and a value.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }

    /// Parses `Name: value` (as given on a command line).
    pub fn parse(raw: &str) -> Result<Self, CheckError> {
        match raw.split_once(':') {
            Some((name, value)) if !name.trim().is_empty() => {
                Ok(Self::new(name.trim(), value.trim()))
            }
            _ => Err(CheckError::Config(format!(
                "auth header must look like 'Name: value', got {raw:?}"
            ))),
        }
    }
}

/// Options of a comparison.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Records fetched per `…/get` request and collections per list request.
    pub page_size: u32,
    /// Tolerance for float comparisons (embeddings and float metadata):
    /// `|a - b| <= tolerance * max(1, |a|, |b|)`.
    pub tolerance: f64,
    /// Compare the collections' `configuration_json` (index settings).
    pub compare_configuration: bool,
    /// Compare the collections' `schema` (index schema, which Chroma extends
    /// as metadata keys appear).
    pub compare_schema: bool,
    /// Per-server auth header, aligned with the `urls` slice; a missing or
    /// `None` entry sends no auth header to that server.
    pub auth: Vec<Option<AuthHeader>>,
    /// Timeout of each HTTP request.
    pub request_timeout: Duration,
    /// At most this many differences are kept in the report; the others are
    /// only counted in [`CheckReport::omitted_differences`].
    pub max_differences: usize,
    /// Roots and client certificate for `https://` servers.
    pub tls: crate::tls::ClientTls,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            page_size: 1000,
            tolerance: 1e-6,
            compare_configuration: true,
            compare_schema: true,
            auth: Vec::new(),
            request_timeout: Duration::from_secs(60),
            max_differences: 1000,
            tls: crate::tls::ClientTls::default(),
        }
    }
}

/// Why a comparison could not be carried out (as opposed to a difference
/// found between servers, which goes into the [`CheckReport`]).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Bad arguments (no servers, malformed URL or header...).
    #[error("invalid check configuration: {0}")]
    Config(String),
    /// The HTTP request failed (connection refused, timeout...).
    #[error("request to {url} failed: {source}")]
    Http {
        /// The URL requested.
        url: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an unexpected status.
    #[error("{url} answered {status}: {body}")]
    Status {
        /// The URL requested.
        url: String,
        /// HTTP status code.
        status: u16,
        /// Response body (truncated).
        body: String,
    },
    /// The server's answer could not be understood.
    #[error("unexpected answer from {url}: {detail}")]
    Decode {
        /// The URL requested.
        url: String,
        /// What was wrong with it.
        detail: String,
    },
}

/// What kind of difference was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DifferenceKind {
    /// A database exists on some servers only.
    MissingDatabase,
    /// A collection (by name) exists on some servers only.
    MissingCollection,
    /// Collection metadata differs.
    CollectionMetadata,
    /// Collection `configuration_json` differs.
    CollectionConfiguration,
    /// Collection `schema` differs.
    CollectionSchema,
    /// Collection `dimension` differs.
    CollectionDimension,
    /// A record id exists on some servers only.
    MissingRecord,
    /// A record's document differs.
    Document,
    /// A record's metadata differs.
    Metadata,
    /// A record's embedding differs.
    Embedding,
    /// A record's uri differs.
    Uri,
}

impl DifferenceKind {
    /// A short, stable name for the kind (used in report lines).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingDatabase => "missing-database",
            Self::MissingCollection => "missing-collection",
            Self::CollectionMetadata => "collection-metadata",
            Self::CollectionConfiguration => "collection-configuration",
            Self::CollectionSchema => "collection-schema",
            Self::CollectionDimension => "collection-dimension",
            Self::MissingRecord => "missing-record",
            Self::Document => "document",
            Self::Metadata => "metadata",
            Self::Embedding => "embedding",
            Self::Uri => "uri",
        }
    }
}

/// One difference between a server and the reference server.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    /// Tenant of the object.
    pub tenant: String,
    /// Database of the object.
    pub database: String,
    /// Collection name, when the difference is inside a collection.
    pub collection: Option<String>,
    /// Record id, when the difference is about one record.
    pub record_id: Option<String>,
    /// What differs.
    pub kind: DifferenceKind,
    /// Index (in `urls`) of the server that differs from the reference.
    pub server: usize,
    /// Index (in `urls`) of the server it was compared with.
    pub reference: usize,
    /// Human-readable description, naming both servers' values.
    pub detail: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.database)?;
        if let Some(c) = &self.collection {
            write!(f, " collection '{c}'")?;
        }
        if let Some(id) = &self.record_id {
            write!(f, " record '{id}'")?;
        }
        write!(f, ": [{}] {}", self.kind.as_str(), self.detail)
    }
}

/// The outcome of [`compare_servers`].
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// The servers compared (index 0 is the reference).
    pub servers: Vec<String>,
    /// The (tenant, database) scopes compared.
    pub scopes: Vec<(String, String)>,
    /// Distinct collections compared (by tenant/database/name, union over
    /// servers).
    pub collections: usize,
    /// Distinct records compared (union of ids over servers, per collection).
    pub records: usize,
    /// Collections found on each server (aligned with `servers`).
    pub collections_per_server: Vec<usize>,
    /// Records found on each server (aligned with `servers`).
    pub records_per_server: Vec<usize>,
    /// The differences found (at most [`CheckOptions::max_differences`]).
    pub differences: Vec<Difference>,
    /// Differences found beyond [`CheckOptions::max_differences`].
    pub omitted_differences: usize,
    /// The float tolerance that was used.
    pub tolerance: f64,
}

impl CheckReport {
    /// True when no difference at all was found.
    pub fn identical(&self) -> bool {
        self.differences.is_empty() && self.omitted_differences == 0
    }

    /// Total number of differences found (kept + omitted).
    pub fn difference_count(&self) -> usize {
        self.differences.len() + self.omitted_differences
    }

    /// One human-readable line per difference (plus one for omitted ones).
    pub fn difference_lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .differences
            .iter()
            .map(|d| {
                let srv = self
                    .servers
                    .get(d.server)
                    .map(String::as_str)
                    .unwrap_or("?");
                let reference = self
                    .servers
                    .get(d.reference)
                    .map(String::as_str)
                    .unwrap_or("?");
                format!(
                    "{d} (server #{} {srv} vs #{} {reference})",
                    d.server, d.reference
                )
            })
            .collect();
        if self.omitted_differences > 0 {
            lines.push(format!(
                "... and {} more differences not listed",
                self.omitted_differences
            ));
        }
        lines
    }

    /// A one-line summary: identical or not, counts.
    pub fn summary(&self) -> String {
        let verdict = if self.identical() {
            "IDENTICAL".to_string()
        } else {
            format!("DIFFERENT ({} differences)", self.difference_count())
        };
        format!(
            "{verdict}: {} servers, {} scopes, {} collections, {} records compared \
             (per server: collections {:?}, records {:?}; float tolerance {:e})",
            self.servers.len(),
            self.scopes.len(),
            self.collections,
            self.records,
            self.collections_per_server,
            self.records_per_server,
            self.tolerance
        )
    }

    /// Does any difference concern this collection name (and this record id,
    /// when given)? Convenient for tests.
    pub fn mentions(&self, collection: &str, record_id: Option<&str>) -> bool {
        self.differences.iter().any(|d| {
            d.collection.as_deref() == Some(collection)
                && (record_id.is_none() || d.record_id.as_deref() == record_id)
        })
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.summary())?;
        for line in self.difference_lines() {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

/// A collection as listed by a server.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionInfo {
    /// The server-local id.
    pub id: String,
    /// The name (the identity across servers).
    pub name: String,
    /// Collection metadata (`null` when none).
    pub metadata: Value,
    /// `configuration_json` as returned.
    pub configuration: Value,
    /// `schema` as returned.
    pub schema: Value,
    /// `dimension` as returned.
    pub dimension: Value,
}

/// One record of a collection.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Record {
    /// The document, if any.
    pub document: Option<String>,
    /// The metadata (`null` when none).
    pub metadata: Value,
    /// The embedding, if returned.
    pub embedding: Option<Vec<f64>>,
    /// The uri, if any.
    pub uri: Option<String>,
}

/// A read-only client of one Chroma server, as used by the check.
#[derive(Debug, Clone)]
pub struct ServerReader {
    base: String,
    auth: Option<AuthHeader>,
    http: reqwest::Client,
    page_size: u32,
}

impl ServerReader {
    /// Builds a reader for `url` (e.g. `http://127.0.0.1:8000`).
    pub fn new(
        url: &str,
        auth: Option<AuthHeader>,
        opts: &CheckOptions,
    ) -> Result<Self, CheckError> {
        let base = url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(CheckError::Config(format!(
                "server URL must start with http:// or https://, got {url:?}"
            )));
        }
        let http = opts
            .tls
            .apply(reqwest::Client::builder())
            .timeout(opts.request_timeout)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| CheckError::Config(format!("cannot build HTTP client: {e}")))?;
        Ok(Self {
            base,
            auth,
            http,
            page_size: opts.page_size.max(1),
        })
    }

    /// The server's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    fn path(&self, segments: &[&str]) -> String {
        let mut s = format!("{}/api/v2", self.base);
        for seg in segments {
            s.push('/');
            s.push_str(&encode_segment(seg));
        }
        s
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<(u16, bytes::Bytes), CheckError> {
        let req = match &self.auth {
            Some(h) => req.header(h.name.as_str(), h.value.as_str()),
            None => req,
        };
        let resp = req.send().await.map_err(|source| CheckError::Http {
            url: url.to_string(),
            source,
        })?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|source| CheckError::Http {
            url: url.to_string(),
            source,
        })?;
        Ok((status, body))
    }

    async fn get_json(&self, url: &str) -> Result<Value, CheckError> {
        let (status, body) = self.send(self.http.get(url), url).await?;
        expect_json(url, status, &body)
    }

    async fn post_json(&self, url: &str, payload: &Value) -> Result<Value, CheckError> {
        let req = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(payload.to_string());
        let (status, body) = self.send(req, url).await?;
        expect_json(url, status, &body)
    }

    /// GETs `base?limit=..&offset=..` page by page until a short page and
    /// decodes each item of the JSON arrays (`what` names them in errors;
    /// `decode` gets the item and its page's URL).
    async fn get_listing<T>(
        &self,
        base: &str,
        what: &str,
        decode: impl Fn(&Value, &str) -> Result<T, CheckError>,
    ) -> Result<Vec<T>, CheckError> {
        let mut out = Vec::new();
        loop {
            let url = format!("{base}?limit={}&offset={}", self.page_size, out.len());
            let page = self.get_json(&url).await?;
            let items = page.as_array().ok_or_else(|| CheckError::Decode {
                url: url.clone(),
                detail: format!("expected a JSON array of {what}"),
            })?;
            for item in items {
                out.push(decode(item, &url)?);
            }
            if items.len() < self.page_size as usize {
                return Ok(out);
            }
        }
    }

    /// Lists the names of the databases of `tenant` (all pages).
    pub async fn list_databases(&self, tenant: &str) -> Result<Vec<String>, CheckError> {
        let base = self.path(&["tenants", tenant, "databases"]);
        self.get_listing(&base, "databases", |item, url| {
            item.get("name")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| CheckError::Decode {
                    url: url.to_string(),
                    detail: format!("database without a name: {item}"),
                })
        })
        .await
    }

    /// Does `tenant/database` exist on this server?
    pub async fn database_exists(&self, tenant: &str, database: &str) -> Result<bool, CheckError> {
        let url = self.path(&["tenants", tenant, "databases", database]);
        let (status, body) = self.send(self.http.get(&url), &url).await?;
        match status {
            200..=299 => Ok(true),
            404 => Ok(false),
            _ => Err(status_error(&url, status, &body)),
        }
    }

    /// Lists every collection of `tenant/database` (all pages).
    pub async fn list_collections(
        &self,
        tenant: &str,
        database: &str,
    ) -> Result<Vec<CollectionInfo>, CheckError> {
        let base = self.path(&["tenants", tenant, "databases", database, "collections"]);
        self.get_listing(&base, "collections", |item, url| {
            let field = |k: &str| item.get(k).cloned().unwrap_or(Value::Null);
            let (Some(id), Some(name)) = (
                item.get("id").and_then(Value::as_str),
                item.get("name").and_then(Value::as_str),
            ) else {
                return Err(CheckError::Decode {
                    url: url.to_string(),
                    detail: "collection without id or name".into(),
                });
            };
            Ok(CollectionInfo {
                id: id.to_string(),
                name: name.to_string(),
                metadata: field("metadata"),
                configuration: field("configuration_json"),
                schema: field("schema"),
                dimension: field("dimension"),
            })
        })
        .await
    }

    /// Sends `method` to `/api/v2/<segments…>` with an optional JSON body
    /// and returns the status and body as received (any status). The copy
    /// engine ([`crate::copy`]) writes through this.
    pub async fn request(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        payload: Option<&Value>,
    ) -> Result<(u16, bytes::Bytes), CheckError> {
        let url = self.path(segments);
        let mut req = self.http.request(method, &url);
        if let Some(payload) = payload {
            req = req
                .header("content-type", "application/json")
                .body(payload.to_string());
        }
        self.send(req, &url).await
    }

    /// Sends `method` to `/api/v2/<segments…>` with `body` (JSON text) and
    /// returns the status and body as received.
    pub async fn request_text(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        body: String,
    ) -> Result<(u16, bytes::Bytes), CheckError> {
        let url = self.path(segments);
        let req = self
            .http
            .request(method, &url)
            .header("content-type", "application/json")
            .body(body);
        self.send(req, &url).await
    }

    /// GETs `/api/v2/<segments…>` and decodes the JSON answer (an error for
    /// a status outside 2xx).
    pub async fn get_value(&self, segments: &[&str]) -> Result<Value, CheckError> {
        self.get_json(&self.path(segments)).await
    }

    /// The server's version (`GET /api/v2/version`).
    pub async fn version(&self) -> Result<String, CheckError> {
        let v = self.get_value(&["version"]).await?;
        Ok(v.as_str().map_or_else(|| v.to_string(), str::to_string))
    }

    /// The largest batch the server takes in one write
    /// (`GET /api/v2/pre-flight-checks`, `max_batch_size`).
    pub async fn max_batch_size(&self) -> Result<usize, CheckError> {
        let v = self.get_value(&["pre-flight-checks"]).await?;
        v.get("max_batch_size")
            .and_then(Value::as_u64)
            .map(|n| n.max(1) as usize)
            .ok_or_else(|| CheckError::Decode {
                url: self.path(&["pre-flight-checks"]),
                detail: "no max_batch_size in the pre-flight checks".into(),
            })
    }

    /// The number of records of a collection (by its id on this server).
    pub async fn count_records(
        &self,
        tenant: &str,
        database: &str,
        collection_id: &str,
    ) -> Result<u64, CheckError> {
        let segments = [
            "tenants",
            tenant,
            "databases",
            database,
            "collections",
            collection_id,
            "count",
        ];
        let v = self.get_value(&segments).await?;
        v.as_u64().ok_or_else(|| CheckError::Decode {
            url: self.path(&segments),
            detail: format!("count is not a number: {v}"),
        })
    }

    /// One page of a collection's records (`limit` from `offset`), with
    /// documents, metadatas, embeddings and uris: the URL asked and the
    /// raw `…/get` answer (decoded by [`crate::copy::RecordPage`]).
    pub async fn records_page(
        &self,
        tenant: &str,
        database: &str,
        collection_id: &str,
        offset: u64,
        limit: usize,
    ) -> Result<(String, bytes::Bytes), CheckError> {
        let url = self.path(&[
            "tenants",
            tenant,
            "databases",
            database,
            "collections",
            collection_id,
            "get",
        ]);
        let payload = json!({
            "include": ["documents", "metadatas", "embeddings", "uris"],
            "limit": limit,
            "offset": offset,
        });
        let req = self
            .http
            .post(&url)
            .header("content-type", "application/json")
            .body(payload.to_string());
        let (status, body) = self.send(req, &url).await?;
        if !(200..300).contains(&status) {
            return Err(status_error(&url, status, &body));
        }
        Ok((url, body))
    }

    /// Fetches every record of a collection (by its id on this server),
    /// with documents, metadatas, embeddings and uris, page by page.
    pub async fn get_all_records(
        &self,
        tenant: &str,
        database: &str,
        collection_id: &str,
    ) -> Result<BTreeMap<String, Record>, CheckError> {
        let url = self.path(&[
            "tenants",
            tenant,
            "databases",
            database,
            "collections",
            collection_id,
            "get",
        ]);
        let mut out = BTreeMap::new();
        let mut offset = 0usize;
        loop {
            let payload = json!({
                "include": ["documents", "metadatas", "embeddings", "uris"],
                "limit": self.page_size,
                "offset": offset,
            });
            let page = self.post_json(&url, &payload).await?;
            let n = decode_records(&url, &page, &mut out)?;
            if n < self.page_size as usize {
                break;
            }
            offset += n;
        }
        Ok(out)
    }
}

/// Lists the databases of `tenant` on the server at `url`
/// (`GET /api/v2/tenants/{tenant}/databases`, all pages).
pub async fn list_databases(
    url: &str,
    tenant: &str,
    auth: Option<AuthHeader>,
    opts: &CheckOptions,
) -> Result<Vec<String>, CheckError> {
    ServerReader::new(url, auth, opts)?
        .list_databases(tenant)
        .await
}

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

fn float_equal(a: f64, b: f64, tol: f64) -> bool {
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
fn json_equal(a: &Value, b: &Value, tol: f64) -> bool {
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

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

fn status_error(url: &str, status: u16, body: &[u8]) -> CheckError {
    CheckError::Status {
        url: url.to_string(),
        status,
        body: truncate(String::from_utf8_lossy(body).into_owned(), 500),
    }
}

fn expect_json(url: &str, status: u16, body: &[u8]) -> Result<Value, CheckError> {
    if !(200..300).contains(&status) {
        return Err(status_error(url, status, body));
    }
    serde_json::from_slice(body).map_err(|e| CheckError::Decode {
        url: url.to_string(),
        detail: format!("invalid JSON: {e}"),
    })
}

/// Percent-encodes one path segment (everything but RFC 3986 unreserved).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes one `…/get` response into `out`; returns the number of records in
/// the page.
fn decode_records(
    url: &str,
    page: &Value,
    out: &mut BTreeMap<String, Record>,
) -> Result<usize, CheckError> {
    let bad = |detail: String| CheckError::Decode {
        url: url.to_string(),
        detail,
    };
    let ids = page
        .get("ids")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("get response without an 'ids' array".into()))?;
    let column = |key: &str| -> Result<Option<&Vec<Value>>, CheckError> {
        match page.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(a)) if a.len() == ids.len() => Ok(Some(a)),
            Some(_) => Err(bad(format!(
                "'{key}' is not an array as long as 'ids' ({})",
                ids.len()
            ))),
        }
    };
    let docs = column("documents")?;
    let metas = column("metadatas")?;
    let embs = column("embeddings")?;
    let uris = column("uris")?;
    let string_at =
        |col: Option<&Vec<Value>>, k: usize, key: &str| -> Result<Option<String>, CheckError> {
            match col.map(|c| &c[k]) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(bad(format!("'{key}' entry is not a string: {other}"))),
            }
        };
    for (k, id) in ids.iter().enumerate() {
        let id = id
            .as_str()
            .ok_or_else(|| bad(format!("record id is not a string: {id}")))?;
        let embedding = match embs.map(|c| &c[k]) {
            None | Some(Value::Null) => None,
            Some(Value::Array(xs)) => Some(
                xs.iter()
                    .map(|x| {
                        x.as_f64()
                            .ok_or_else(|| bad(format!("embedding value is not a number: {x}")))
                    })
                    .collect::<Result<Vec<f64>, _>>()?,
            ),
            Some(other) => return Err(bad(format!("embedding is not an array: {other}"))),
        };
        let record = Record {
            document: string_at(docs, k, "documents")?,
            metadata: metas.map(|c| c[k].clone()).unwrap_or(Value::Null),
            embedding,
            uri: string_at(uris, k, "uris")?,
        };
        if out.insert(id.to_string(), record).is_some() {
            return Err(bad(format!(
                "record id '{id}' returned twice while paging (was the collection written during the check?)"
            )));
        }
    }
    Ok(ids.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_equal_rules() {
        assert!(json_equal(
            &json!({"a": 1, "b": "x"}),
            &json!({"b": "x", "a": 1}),
            1e-6
        ));
        assert!(!json_equal(&json!({"a": 1}), &json!({"a": 1.0}), 1e-6));
        assert!(json_equal(
            &json!({"a": 0.1}),
            &json!({"a": 0.1000000001}),
            1e-6
        ));
        assert!(!json_equal(&json!({"a": 0.1}), &json!({"a": 0.1001}), 1e-6));
        assert!(!json_equal(
            &json!({"a": 1}),
            &json!({"a": 1, "b": 2}),
            1e-6
        ));
        assert!(json_equal(&Value::Null, &Value::Null, 1e-6));
    }

    #[test]
    fn float_tolerance_is_relative_above_one() {
        assert!(float_equal(1000.0, 1000.0005, 1e-6));
        assert!(!float_equal(1000.0, 1000.01, 1e-6));
        assert!(float_equal(1e-7, 1.5e-7, 1e-6));
    }

    #[test]
    fn decode_rejects_ragged_columns() {
        let mut out = BTreeMap::new();
        let page = json!({"ids": ["a", "b"], "documents": ["x"]});
        assert!(decode_records("u", &page, &mut out).is_err());
        let page = json!({"ids": ["a"], "documents": [null], "metadatas": [{"k": 1}],
                          "embeddings": [[0.5, 1.0]], "uris": null});
        assert_eq!(decode_records("u", &page, &mut out).ok(), Some(1));
        assert_eq!(out["a"].embedding.as_deref(), Some(&[0.5, 1.0][..]));
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode_segment("a b/c"), "a%20b%2Fc");
        assert_eq!(encode_segment("default_tenant"), "default_tenant");
    }

    #[test]
    fn auth_header_parse() {
        let h = AuthHeader::parse("x-chroma-token: abc").ok();
        assert_eq!(h, Some(AuthHeader::new("x-chroma-token", "abc")));
        assert!(AuthHeader::parse("nocolon").is_err());
    }
}
