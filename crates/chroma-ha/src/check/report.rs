//! What a comparison found: the differences and the counts of what was
//! compared.

use std::fmt;

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
