//! Reading one Chroma server directly: databases, collections, records
//! page by page, and raw requests for the copy.

use super::{AuthHeader, CheckError, CheckOptions};
use serde_json::{json, Value};
use std::collections::BTreeMap;

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
pub fn encode_segment(s: &str) -> String {
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
pub(super) fn decode_records(
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

pub(super) fn truncate(mut s: String, max: usize) -> String {
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
