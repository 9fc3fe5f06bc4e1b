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

mod compare;
mod reader;
mod report;

pub use compare::{compare_servers, discover_scopes};
pub use reader::{encode_segment, list_databases, CollectionInfo, Record, ServerReader};
pub use report::{CheckReport, Difference, DifferenceKind};

use std::time::Duration;

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

#[cfg(test)]
mod tests;
