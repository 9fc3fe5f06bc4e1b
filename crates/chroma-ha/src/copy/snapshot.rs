//! Snapshot directories (`chroma-ha backup` / `restore`), format version 1
//! (docs/BACKUP_FORMAT.md):
//!
//! ```text
//! DIR/manifest.json              what the snapshot holds (written last)
//! DIR/collections/000001.jsonl   one file per collection, one JSON record per line
//! ```
//!
//! The manifest names the format and its version, the LSN the snapshot is
//! consistent at, the source server and its Chroma version, every tenant,
//! database and collection (metadata, configuration, schema), and for each
//! collection file its record count, size and SHA-256. A snapshot without a
//! manifest is incomplete; a file whose size or checksum differs from the
//! manifest's is refused, naming it, before anything is restored.

use super::{CollectionMeta, CopyError, CopyProgress, PlannedCollection, RecordLine, RecordPage};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// The `format` field of every manifest.
pub const FORMAT: &str = "chroma-ha-snapshot";
/// The format version this binary writes and reads.
pub const VERSION: u32 = 1;
/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";

/// The manifest of a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// The format version ([`VERSION`]).
    pub version: u32,
    /// When the snapshot was finished, seconds since the Unix epoch.
    pub created_at: u64,
    /// The chroma-ha version that wrote it.
    pub chroma_ha_version: String,
    /// Where it was read from.
    pub source: SnapshotSource,
    /// Every log record up to this LSN is in the snapshot and none after
    /// it, except those in `applied_above`; `None` for a snapshot of a
    /// server read directly, outside a gateway.
    pub lsn: Option<u64>,
    /// Entries above `lsn` already applied to the source when it was read.
    #[serde(default)]
    pub applied_above: Vec<u64>,
    /// The tenants copied.
    pub tenants: Vec<String>,
    /// Every database, including empty ones.
    pub databases: Vec<SnapshotDatabase>,
    /// Every collection and its file.
    pub collections: Vec<SnapshotCollection>,
    /// Totals over the collections.
    pub totals: SnapshotTotals,
}

/// The server a snapshot was read from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotSource {
    /// Its name in the gateway's configuration, if read through one.
    pub server: Option<String>,
    /// Its URL.
    pub url: String,
    /// Its Chroma version (`GET /api/v2/version`).
    pub chroma_version: String,
    /// The identity of the gateway's log that `lsn` belongs to, if read
    /// through a gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_id: Option<String>,
}

/// A database of a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotDatabase {
    /// Tenant.
    pub tenant: String,
    /// Database name.
    pub name: String,
}

/// A collection of a snapshot and its file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotCollection {
    /// Tenant.
    pub tenant: String,
    /// Database.
    pub database: String,
    /// The collection as read from the source.
    #[serde(flatten)]
    pub meta: CollectionMeta,
    /// The id clients of the gateway know it by (absent for a snapshot
    /// read outside a gateway): what a restored server joining the gateway
    /// links its new id to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logical_id: Option<String>,
    /// Its file, relative to the snapshot directory.
    pub file: String,
    /// Records (lines) in the file.
    pub records: u64,
    /// Size of the file in bytes.
    pub bytes: u64,
    /// SHA-256 of the file, lowercase hex.
    pub sha256: String,
}

/// Totals of a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotTotals {
    /// Databases.
    pub databases: u64,
    /// Collections.
    pub collections: u64,
    /// Records.
    pub records: u64,
    /// Bytes of the collection files.
    pub bytes: u64,
}

fn io_error(path: &Path, what: &str, e: impl std::fmt::Display) -> CopyError {
    CopyError::Snapshot {
        path: path.display().to_string(),
        detail: format!("{what}: {e}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A collection file being written.
struct OpenFile {
    relative: String,
    path: PathBuf,
    out: tokio::io::BufWriter<tokio::fs::File>,
    hash: Sha256,
    records: u64,
    bytes: u64,
}

/// Writes a snapshot into a new directory; the manifest is written last,
/// by [`SnapshotWriter::finish`].
pub struct SnapshotWriter {
    dir: PathBuf,
    open: Option<OpenFile>,
    done: Vec<SnapshotCollection>,
    buffer: Vec<u8>,
}

impl SnapshotWriter {
    /// Creates `dir` (which must not exist, or be empty) and its
    /// `collections/` directory.
    pub async fn create(dir: &Path) -> Result<SnapshotWriter, CopyError> {
        if let Ok(mut entries) = tokio::fs::read_dir(dir).await {
            if entries
                .next_entry()
                .await
                .map_err(|e| io_error(dir, "listing", e))?
                .is_some()
            {
                return Err(CopyError::Snapshot {
                    path: dir.display().to_string(),
                    detail: "the backup directory is not empty; give a new one".into(),
                });
            }
        }
        let collections = dir.join("collections");
        tokio::fs::create_dir_all(&collections)
            .await
            .map_err(|e| io_error(&collections, "creating", e))?;
        Ok(SnapshotWriter {
            dir: dir.to_path_buf(),
            open: None,
            done: Vec::new(),
            buffer: Vec::new(),
        })
    }

    /// Starts the file of collection `c`.
    pub async fn begin_collection(&mut self, _c: &PlannedCollection) -> Result<(), CopyError> {
        let relative = format!("collections/{:06}.jsonl", self.done.len() + 1);
        let path = self.dir.join(&relative);
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| io_error(&path, "creating", e))?;
        self.open = Some(OpenFile {
            relative,
            path,
            out: tokio::io::BufWriter::with_capacity(1 << 20, file),
            hash: Sha256::new(),
            records: 0,
            bytes: 0,
        });
        Ok(())
    }

    /// Appends `page` to the open collection file.
    pub async fn write_page(&mut self, page: &RecordPage) -> Result<(), CopyError> {
        let Some(open) = self.open.as_mut() else {
            return Err(CopyError::Snapshot {
                path: self.dir.display().to_string(),
                detail: "a page was written with no collection file open".into(),
            });
        };
        self.buffer.clear();
        page.write_lines(&mut self.buffer)
            .map_err(|detail| CopyError::Snapshot {
                path: open.path.display().to_string(),
                detail,
            })?;
        open.hash.update(&self.buffer);
        open.out
            .write_all(&self.buffer)
            .await
            .map_err(|e| io_error(&open.path, "writing", e))?;
        open.records += page.len() as u64;
        open.bytes += self.buffer.len() as u64;
        Ok(())
    }

    /// Closes the open collection file (flushed and fsynced) and notes it
    /// for the manifest.
    pub async fn end_collection(&mut self, c: &PlannedCollection) -> Result<(), CopyError> {
        let Some(mut open) = self.open.take() else {
            return Ok(());
        };
        open.out
            .flush()
            .await
            .map_err(|e| io_error(&open.path, "writing", e))?;
        open.out
            .get_ref()
            .sync_all()
            .await
            .map_err(|e| io_error(&open.path, "syncing", e))?;
        self.done.push(SnapshotCollection {
            tenant: c.tenant.clone(),
            database: c.database.clone(),
            meta: c.meta.clone(),
            logical_id: None,
            file: open.relative,
            records: open.records,
            bytes: open.bytes,
            sha256: hex(&open.hash.finalize()),
        });
        Ok(())
    }

    /// Notes the logical id of each collection written so far, by its id
    /// on the source (`logical_ids`: source id → logical id).
    pub fn set_logical_ids(&mut self, logical_ids: &std::collections::HashMap<String, String>) {
        for c in &mut self.done {
            c.logical_id = logical_ids.get(&c.meta.id).cloned();
        }
    }

    /// Writes the manifest (atomically: a temporary file renamed, then the
    /// directory synced) and returns it. Until then the snapshot is
    /// incomplete and `restore` refuses it.
    pub async fn finish(
        self,
        source: SnapshotSource,
        lsn: Option<u64>,
        applied_above: Vec<u64>,
        tenants: Vec<String>,
        databases: &[(String, String)],
    ) -> Result<Manifest, CopyError> {
        let totals = SnapshotTotals {
            databases: databases.len() as u64,
            collections: self.done.len() as u64,
            records: self.done.iter().map(|c| c.records).sum(),
            bytes: self.done.iter().map(|c| c.bytes).sum(),
        };
        let manifest = Manifest {
            format: FORMAT.into(),
            version: VERSION,
            created_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            chroma_ha_version: env!("CARGO_PKG_VERSION").into(),
            source,
            lsn,
            applied_above,
            tenants,
            databases: databases
                .iter()
                .map(|(tenant, name)| SnapshotDatabase {
                    tenant: tenant.clone(),
                    name: name.clone(),
                })
                .collect(),
            collections: self.done,
            totals,
        };
        let path = self.dir.join(MANIFEST);
        let tmp = self.dir.join("manifest.json.tmp");
        let bytes =
            serde_json::to_vec_pretty(&manifest).map_err(|e| io_error(&path, "encoding", e))?;
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| io_error(&tmp, "creating", e))?;
        file.write_all(&bytes)
            .await
            .map_err(|e| io_error(&tmp, "writing", e))?;
        file.sync_all()
            .await
            .map_err(|e| io_error(&tmp, "syncing", e))?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| io_error(&path, "renaming into place", e))?;
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || std::fs::File::open(&dir).and_then(|d| d.sync_all()))
            .await
            .map_err(|e| io_error(&self.dir, "syncing", e))?
            .map_err(|e| io_error(&self.dir, "syncing", e))?;
        Ok(manifest)
    }
}

/// A snapshot directory opened for reading.
#[derive(Debug, Clone)]
pub struct Snapshot {
    dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

impl Snapshot {
    /// Reads and checks the manifest of the snapshot in `dir`.
    pub async fn open(dir: &Path) -> Result<Snapshot, CopyError> {
        let path = dir.join(MANIFEST);
        let bytes = tokio::fs::read(&path).await.map_err(|e| {
            io_error(
                &path,
                "cannot read the manifest (an unfinished backup has none)",
                e,
            )
        })?;
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
            io_error(
                &path,
                "the manifest is damaged or not a snapshot manifest",
                e,
            )
        })?;
        if manifest.format != FORMAT {
            return Err(io_error(
                &path,
                "not a chroma-ha snapshot",
                format!("format is {:?}", manifest.format),
            ));
        }
        if manifest.version > VERSION {
            return Err(io_error(
                &path,
                "written by a newer chroma-ha",
                format!(
                    "format version {}, this binary reads {VERSION}",
                    manifest.version
                ),
            ));
        }
        for c in &manifest.collections {
            let file = Path::new(&c.file);
            if file.is_absolute()
                || file
                    .components()
                    .any(|p| matches!(p, std::path::Component::ParentDir))
            {
                return Err(io_error(&path, "bad file name", &c.file));
            }
        }
        Ok(Snapshot {
            dir: dir.to_path_buf(),
            manifest,
        })
    }

    /// The path of a collection's file.
    pub fn file_path(&self, c: &SnapshotCollection) -> PathBuf {
        self.dir.join(&c.file)
    }

    /// Checks every collection file's size and SHA-256 against the
    /// manifest; the first that differs is an error naming it.
    pub async fn verify(&self) -> Result<(), CopyError> {
        let mut buf = vec![0u8; 1 << 20];
        for c in &self.manifest.collections {
            let path = self.file_path(c);
            let mut file = tokio::fs::File::open(&path)
                .await
                .map_err(|e| io_error(&path, "cannot open the collection file", e))?;
            let mut hash = Sha256::new();
            let mut size = 0u64;
            loop {
                let n = file
                    .read(&mut buf)
                    .await
                    .map_err(|e| io_error(&path, "reading", e))?;
                if n == 0 {
                    break;
                }
                hash.update(&buf[..n]);
                size += n as u64;
            }
            let sum = hex(&hash.finalize());
            if size != c.bytes || sum != c.sha256 {
                return Err(CopyError::Snapshot {
                    path: path.display().to_string(),
                    detail: format!(
                        "corrupted: the manifest says {} bytes with SHA-256 {}, the file has {size} \
                         bytes with SHA-256 {sum}; the backup is refused (collection {}/{}/{})",
                        c.bytes, c.sha256, c.tenant, c.database, c.meta.name
                    ),
                });
            }
        }
        Ok(())
    }

    /// Restores the whole snapshot into `target` (which must hold none of
    /// its collections), `page_size` records per add. Verify it first.
    pub async fn restore(
        &self,
        target: &mut super::ServerTarget,
        page_size: usize,
        progress: &CopyProgress,
    ) -> Result<(), CopyError> {
        let page_size = page_size.max(1);
        let plan = super::CopyPlan {
            tenants: self.manifest.tenants.clone(),
            databases: self
                .manifest
                .databases
                .iter()
                .map(|d| (d.tenant.clone(), d.name.clone()))
                .collect(),
            collections: self
                .manifest
                .collections
                .iter()
                .map(|c| PlannedCollection {
                    tenant: c.tenant.clone(),
                    database: c.database.clone(),
                    meta: c.meta.clone(),
                    records: c.records,
                })
                .collect(),
        };
        progress.start(&plan);
        for (tenant, database) in &plan.databases {
            target.ensure_database(tenant, database).await?;
        }
        for c in &self.manifest.collections {
            let id = target
                .create_collection(&c.tenant, &c.database, &c.meta)
                .await?;
            let path = self.file_path(c);
            let file = tokio::fs::File::open(&path)
                .await
                .map_err(|e| io_error(&path, "cannot open the collection file", e))?;
            let mut lines = tokio::io::BufReader::with_capacity(1 << 20, file).lines();
            let mut page = RecordPage::default();
            let mut line_no = 0u64;
            loop {
                let line = lines
                    .next_line()
                    .await
                    .map_err(|e| io_error(&path, "reading", e))?;
                let end = line.is_none();
                if let Some(line) = line {
                    line_no += 1;
                    let record: RecordLine = serde_json::from_str(&line).map_err(|e| {
                        io_error(&path, &format!("line {line_no} is not a record"), e)
                    })?;
                    page.push(record, line.len() + 1);
                }
                if page.len() >= page_size || (end && !page.is_empty()) {
                    target.add(&c.tenant, &c.database, &id, &page).await?;
                    progress.page_done(&page);
                    page = RecordPage::default();
                }
                if end {
                    break;
                }
            }
            if line_no != c.records {
                return Err(io_error(
                    &path,
                    "corrupted",
                    format!("{line_no} records, the manifest says {}", c.records),
                ));
            }
            target
                .check_count(&c.tenant, &c.database, &c.meta.name, &id, c.records)
                .await?;
            progress
                .collections_done
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }
}
