//! The copy engine: reads every database, collection (configuration,
//! metadata) and record (ids, embeddings, documents, metadatas, uris) of
//! some tenants from a source Chroma server, page by page, and writes them
//! to a target server ([`ServerTarget`]) or to a snapshot directory
//! ([`snapshot`]). Used by `chroma-ha backup`, `restore` and `rebuild`.
//!
//! Memory is bounded: one collection at a time, and at most two pages of it
//! in memory (the page being written and the next one being read, which
//! overlap). The source should not change during the copy: the callers
//! read from a server whose applier is paused.
//!
//! Progress is counted in a [`CopyProgress`] that others may watch while
//! the copy runs.

mod page;
pub mod snapshot;
mod to_server;

pub use page::{RecordLine, RecordPage};
pub use to_server::{CopiedCollection, ServerTarget};

use crate::check::{CheckError, CollectionInfo, ServerReader};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a copy failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// Reading from a server failed.
    #[error(transparent)]
    Source(#[from] CheckError),
    /// A server refused a write or answered something unexpected.
    #[error("writing to {url}: {detail}")]
    Target {
        /// The target server.
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// The target already holds something the copy would create.
    #[error(
        "the target {url} is not empty: {what} exists already (restore and rebuild fill an \
         empty server)"
    )]
    TargetNotEmpty {
        /// The target server.
        url: String,
        /// What exists.
        what: String,
    },
    /// A snapshot file could not be read or written, or is damaged.
    #[error("{path}: {detail}")]
    Snapshot {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// A source page could not be decoded.
    #[error("reading {url}: {detail}")]
    Decode {
        /// The request.
        url: String,
        /// What was wrong.
        detail: String,
    },
}

/// A collection as copied: what a target needs to create it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionMeta {
    /// Its id on the source.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its metadata (`null` when none).
    #[serde(default)]
    pub metadata: Value,
    /// Its `configuration_json` as the source returned it.
    #[serde(default)]
    pub configuration: Value,
    /// Its `schema` as the source returned it.
    #[serde(default)]
    pub schema: Value,
    /// Its dimension as the source returned it.
    #[serde(default)]
    pub dimension: Value,
}

impl From<CollectionInfo> for CollectionMeta {
    fn from(c: CollectionInfo) -> Self {
        CollectionMeta {
            id: c.id,
            name: c.name,
            metadata: c.metadata,
            configuration: c.configuration,
            schema: c.schema,
            dimension: c.dimension,
        }
    }
}

/// One collection to copy.
#[derive(Debug, Clone)]
pub struct PlannedCollection {
    /// Tenant.
    pub tenant: String,
    /// Database.
    pub database: String,
    /// The collection.
    pub meta: CollectionMeta,
    /// Records it holds on the source.
    pub records: u64,
}

/// Everything a copy will create, listed from the source before it starts.
#[derive(Debug, Clone, Default)]
pub struct CopyPlan {
    /// The tenants copied.
    pub tenants: Vec<String>,
    /// Every (tenant, database), including empty ones.
    pub databases: Vec<(String, String)>,
    /// Every collection.
    pub collections: Vec<PlannedCollection>,
}

impl CopyPlan {
    /// Records in all collections.
    pub fn records(&self) -> u64 {
        self.collections.iter().map(|c| c.records).sum()
    }
}

/// Lists what `source` holds in `tenants` (a tenant the source does not
/// have is skipped): databases, collections and their record counts.
pub async fn plan(source: &ServerReader, tenants: &[String]) -> Result<CopyPlan, CopyError> {
    let mut plan = CopyPlan {
        tenants: tenants.to_vec(),
        ..CopyPlan::default()
    };
    for tenant in tenants {
        let (status, _) = source
            .request(reqwest::Method::GET, &["tenants", tenant], None)
            .await?;
        if status == 404 {
            continue;
        }
        for database in source.list_databases(tenant).await? {
            for info in source.list_collections(tenant, &database).await? {
                let records = source.count_records(tenant, &database, &info.id).await?;
                plan.collections.push(PlannedCollection {
                    tenant: tenant.clone(),
                    database: database.clone(),
                    meta: info.into(),
                    records,
                });
            }
            plan.databases.push((tenant.clone(), database));
        }
    }
    Ok(plan)
}

/// Counters of a copy under way; safe to read from other tasks.
#[derive(Debug, Default)]
pub struct CopyProgress {
    /// Collections to copy.
    pub collections_total: AtomicU64,
    /// Collections copied.
    pub collections_done: AtomicU64,
    /// Records to copy.
    pub records_total: AtomicU64,
    /// Records copied.
    pub records_done: AtomicU64,
    /// Bytes of records read.
    pub bytes_done: AtomicU64,
}

impl CopyProgress {
    /// Sets the totals from `plan` and the done counters to zero.
    pub fn start(&self, plan: &CopyPlan) {
        self.collections_total
            .store(plan.collections.len() as u64, Ordering::Relaxed);
        self.records_total.store(plan.records(), Ordering::Relaxed);
        self.collections_done.store(0, Ordering::Relaxed);
        self.records_done.store(0, Ordering::Relaxed);
        self.bytes_done.store(0, Ordering::Relaxed);
    }

    fn page_done(&self, page: &RecordPage) {
        self.records_done
            .fetch_add(page.len() as u64, Ordering::Relaxed);
        self.bytes_done
            .fetch_add(page.bytes as u64, Ordering::Relaxed);
    }

    /// (collections done, collections total, records done, records total,
    /// bytes done).
    pub fn figures(&self) -> (u64, u64, u64, u64, u64) {
        (
            self.collections_done.load(Ordering::Relaxed),
            self.collections_total.load(Ordering::Relaxed),
            self.records_done.load(Ordering::Relaxed),
            self.records_total.load(Ordering::Relaxed),
            self.bytes_done.load(Ordering::Relaxed),
        )
    }
}

/// Where a copy goes.
pub enum Target<'a> {
    /// Into a Chroma server.
    Server(&'a mut ServerTarget),
    /// Into a snapshot directory.
    Snapshot(&'a mut snapshot::SnapshotWriter),
}

async fn read_page_raw(
    source: &ServerReader,
    c: &PlannedCollection,
    offset: u64,
    limit: usize,
) -> Result<RecordPage, CopyError> {
    let (url, body) = source
        .records_page(&c.tenant, &c.database, &c.meta.id, offset, limit)
        .await?;
    RecordPage::from_get_answer_raw(body).map_err(|detail| CopyError::Decode { url, detail })
}

async fn read_page(
    source: &ServerReader,
    c: &PlannedCollection,
    offset: u64,
    limit: usize,
) -> Result<RecordPage, CopyError> {
    let (url, body) = source
        .records_page(&c.tenant, &c.database, &c.meta.id, offset, limit)
        .await?;
    RecordPage::from_get_answer(&body).map_err(|detail| CopyError::Decode { url, detail })
}

/// Collections copied at once into a server.
pub const PARALLEL_COLLECTIONS: usize = 2;

/// Copies one collection into a server: creates it, adds its pages (the
/// next one read while the current one is written) and checks the count.
async fn copy_collection_to_server(
    source: &ServerReader,
    target: &ServerTarget,
    c: &PlannedCollection,
    page_size: usize,
    progress: &CopyProgress,
) -> Result<CopiedCollection, CopyError> {
    let copied = target.create(&c.tenant, &c.database, &c.meta).await?;
    let id = copied.target_id.as_str();
    let mut offset = 0u64;
    let mut page = read_page_raw(source, c, offset, page_size).await?;
    loop {
        let more = page.len() == page_size;
        let next_offset = offset + page.len() as u64;
        let next = async {
            if more {
                Some(read_page_raw(source, c, next_offset, page_size).await)
            } else {
                None
            }
        };
        let (written, next) = tokio::join!(target.add(&c.tenant, &c.database, id, &page), next);
        written?;
        progress.page_done(&page);
        match next {
            Some(next) => {
                page = next?;
                offset = next_offset;
            }
            None => break,
        }
    }
    target
        .check_count(&c.tenant, &c.database, &c.meta.name, id, c.records)
        .await?;
    progress.collections_done.fetch_add(1, Ordering::Relaxed);
    Ok(copied)
}

/// Copies everything in `plan` from `source` to `target`, `page_size`
/// records per request, counting in `progress`. Reading the next page
/// overlaps with writing the current one; into a server,
/// [`PARALLEL_COLLECTIONS`] collections are copied at once (so at most
/// twice that many pages are in memory).
pub async fn copy(
    source: &ServerReader,
    plan: &CopyPlan,
    mut target: Target<'_>,
    page_size: usize,
    progress: &CopyProgress,
) -> Result<(), CopyError> {
    use futures::StreamExt as _;
    let page_size = page_size.max(1);
    progress.start(plan);
    if let Target::Server(server) = &mut target {
        for (tenant, database) in &plan.databases {
            server.ensure_database(tenant, database).await?;
        }
        let shared: &ServerTarget = server;
        let mut created = Vec::new();
        let mut running = futures::stream::FuturesOrdered::new();
        let mut pending = plan.collections.iter();
        loop {
            while running.len() < PARALLEL_COLLECTIONS {
                let Some(c) = pending.next() else { break };
                running.push_back(copy_collection_to_server(
                    source, shared, c, page_size, progress,
                ));
            }
            match running.next().await {
                Some(result) => created.push(result?),
                None => break,
            }
        }
        drop(running);
        server.created.extend(created);
        return Ok(());
    }
    let Target::Snapshot(snap) = target else {
        return Ok(());
    };
    for c in &plan.collections {
        snap.begin_collection(c).await?;
        let mut offset = 0u64;
        let mut page = read_page(source, c, offset, page_size).await?;
        loop {
            let more = page.len() == page_size;
            let next_offset = offset + page.len() as u64;
            let next = async {
                if more {
                    Some(read_page(source, c, next_offset, page_size).await)
                } else {
                    None
                }
            };
            let (written, next) = tokio::join!(snap.write_page(&page), next);
            written?;
            progress.page_done(&page);
            match next {
                Some(next) => {
                    page = next?;
                    offset = next_offset;
                }
                None => break,
            }
        }
        snap.end_collection(c).await?;
        progress.collections_done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}
