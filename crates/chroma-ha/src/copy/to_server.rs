//! Writing copied content into a Chroma server: tenants, databases,
//! collections (with their metadata and configuration) and records, added
//! page by page. The target must not hold the collections already: a
//! collection that exists is an error, never merged into.

use super::{CollectionMeta, CopyError, RecordPage};
use crate::check::ServerReader;
use reqwest::Method;
use serde_json::{json, Value};

/// A collection created on the target: where it came from and its new id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopiedCollection {
    /// Tenant.
    pub tenant: String,
    /// Database.
    pub database: String,
    /// Name.
    pub name: String,
    /// Its id on the source (or in the snapshot).
    pub source_id: String,
    /// Its id on the target.
    pub target_id: String,
}

/// A Chroma server being filled.
#[derive(Debug)]
pub struct ServerTarget {
    server: ServerReader,
    /// Every collection created so far, in order.
    pub created: Vec<CopiedCollection>,
}

impl ServerTarget {
    /// A target writing through `server` (a client of the target server).
    pub fn new(server: ServerReader) -> Self {
        Self {
            server,
            created: Vec::new(),
        }
    }

    /// The target's URL.
    pub fn url(&self) -> &str {
        self.server.url()
    }

    /// The client of the target.
    pub fn client(&self) -> &ServerReader {
        &self.server
    }

    fn error(&self, what: &str, status: u16, body: &[u8]) -> CopyError {
        CopyError::Target {
            url: self.server.url().to_string(),
            detail: format!(
                "{what}: answered {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(500)])
            ),
        }
    }

    /// Makes sure `tenant` and its database `database` exist.
    pub async fn ensure_database(&self, tenant: &str, database: &str) -> Result<(), CopyError> {
        let (status, _) = self
            .server
            .request(Method::GET, &["tenants", tenant], None)
            .await?;
        if status == 404 {
            let (status, body) = self
                .server
                .request(Method::POST, &["tenants"], Some(&json!({ "name": tenant })))
                .await?;
            if !(200..300).contains(&status) && status != 409 {
                return Err(self.error(&format!("creating tenant {tenant}"), status, &body));
            }
        }
        if self.server.database_exists(tenant, database).await? {
            return Ok(());
        }
        let (status, body) = self
            .server
            .request(
                Method::POST,
                &["tenants", tenant, "databases"],
                Some(&json!({ "name": database })),
            )
            .await?;
        if !(200..300).contains(&status) && status != 409 {
            return Err(self.error(
                &format!("creating database {tenant}/{database}"),
                status,
                &body,
            ));
        }
        Ok(())
    }

    /// Creates the collection `meta` (which must not exist), notes it in
    /// `created` and returns its id on the target.
    pub async fn create_collection(
        &mut self,
        tenant: &str,
        database: &str,
        meta: &CollectionMeta,
    ) -> Result<String, CopyError> {
        let copied = self.create(tenant, database, meta).await?;
        let id = copied.target_id.clone();
        self.created.push(copied);
        Ok(id)
    }

    /// Creates the collection `meta` (which must not exist) and returns
    /// where it came from and its new id (not noted in `created`).
    pub async fn create(
        &self,
        tenant: &str,
        database: &str,
        meta: &CollectionMeta,
    ) -> Result<CopiedCollection, CopyError> {
        let mut body = serde_json::Map::new();
        body.insert("name".into(), json!(meta.name));
        if !meta.metadata.is_null() {
            body.insert("metadata".into(), meta.metadata.clone());
        }
        // Chroma takes a configuration or a schema, not both: the
        // configuration when there is one (the schema then follows from it
        // and from the records added, as on the source).
        if !meta.configuration.is_null() {
            body.insert("configuration".into(), meta.configuration.clone());
        } else if !meta.schema.is_null() {
            body.insert("schema".into(), meta.schema.clone());
        }
        let (status, answer) = self
            .server
            .request(
                Method::POST,
                &["tenants", tenant, "databases", database, "collections"],
                Some(&Value::Object(body)),
            )
            .await?;
        if status == 409 {
            return Err(CopyError::TargetNotEmpty {
                url: self.server.url().to_string(),
                what: format!("collection {tenant}/{database}/{}", meta.name),
            });
        }
        if !(200..300).contains(&status) {
            return Err(self.error(
                &format!("creating collection {tenant}/{database}/{}", meta.name),
                status,
                &answer,
            ));
        }
        let created: Value = serde_json::from_slice(&answer).map_err(|e| CopyError::Target {
            url: self.server.url().to_string(),
            detail: format!("create collection answer is not JSON: {e}"),
        })?;
        let Some(id) = created.get("id").and_then(Value::as_str) else {
            return Err(CopyError::Target {
                url: self.server.url().to_string(),
                detail: "create collection answer without an id".into(),
            });
        };
        Ok(CopiedCollection {
            tenant: tenant.to_string(),
            database: database.to_string(),
            name: meta.name.clone(),
            source_id: meta.id.clone(),
            target_id: id.to_string(),
        })
    }

    /// Adds `page` to the collection `id`.
    pub async fn add(
        &self,
        tenant: &str,
        database: &str,
        id: &str,
        page: &RecordPage,
    ) -> Result<(), CopyError> {
        if page.is_empty() {
            return Ok(());
        }
        let payload = page.add_body().map_err(|detail| CopyError::Target {
            url: self.server.url().to_string(),
            detail,
        })?;
        let (status, body) = self
            .server
            .request_text(
                Method::POST,
                &[
                    "tenants",
                    tenant,
                    "databases",
                    database,
                    "collections",
                    id,
                    "add",
                ],
                payload,
            )
            .await?;
        if !(200..300).contains(&status) {
            return Err(self.error(
                &format!("adding {} records to {tenant}/{database}/{id}", page.len()),
                status,
                &body,
            ));
        }
        Ok(())
    }

    /// Checks that collection `id` holds `expected` records.
    pub async fn check_count(
        &self,
        tenant: &str,
        database: &str,
        name: &str,
        id: &str,
        expected: u64,
    ) -> Result<(), CopyError> {
        let found = self.server.count_records(tenant, database, id).await?;
        if found != expected {
            return Err(CopyError::Target {
                url: self.server.url().to_string(),
                detail: format!(
                    "collection {tenant}/{database}/{name} holds {found} records after the copy, \
                     expected {expected}"
                ),
            });
        }
        Ok(())
    }

    /// Deletes every collection of the given tenants' databases on the
    /// target (a rebuild starting again). Returns how many were deleted.
    pub async fn clear(&self, tenants: &[String]) -> Result<usize, CopyError> {
        let mut deleted = 0;
        for tenant in tenants {
            let (status, _) = self
                .server
                .request(Method::GET, &["tenants", tenant], None)
                .await?;
            if status == 404 {
                continue;
            }
            for database in self.server.list_databases(tenant).await? {
                for c in self.server.list_collections(tenant, &database).await? {
                    let (status, body) = self
                        .server
                        .request(
                            Method::DELETE,
                            &[
                                "tenants",
                                tenant,
                                "databases",
                                &database,
                                "collections",
                                &c.name,
                            ],
                            None,
                        )
                        .await?;
                    if !(200..300).contains(&status) && status != 404 {
                        return Err(self.error(
                            &format!("deleting collection {tenant}/{database}/{}", c.name),
                            status,
                            &body,
                        ));
                    }
                    deleted += 1;
                }
            }
        }
        Ok(deleted)
    }

    /// Records in the given tenants' collections on the target.
    pub async fn record_count(&self, tenants: &[String]) -> Result<u64, CopyError> {
        let mut total = 0;
        for tenant in tenants {
            let (status, _) = self
                .server
                .request(Method::GET, &["tenants", tenant], None)
                .await?;
            if status == 404 {
                continue;
            }
            for database in self.server.list_databases(tenant).await? {
                for c in self.server.list_collections(tenant, &database).await? {
                    total += self.server.count_records(tenant, &database, &c.id).await?;
                }
            }
        }
        Ok(total)
    }
}
