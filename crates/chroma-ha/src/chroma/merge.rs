//! Which record writes can share one request, and the merged body.
//!
//! A server that is behind replays many small committed writes; Chroma's
//! cost per request grows slowly with its size, so consecutive record writes
//! of one collection are sent as one request (see `replication::merge`).
//! This module holds the dialect's half: a write is a [`MergePart`] when
//! merging it with others of the same [`MergeKey`] has exactly the effect of
//! applying them one by one, given that their ids are disjoint (the caller
//! checks that across parts):
//!
//! - `add` and `upsert`: a body with `ids` (non-empty, no id twice) and only
//!   the record fields `embeddings`, `documents`, `metadatas`, `uris`, each
//!   absent/null or an array with one element per id. Parts share a key only
//!   with the same fields present and the same embedding encoding (float
//!   arrays or base64 strings), so the merged arrays line up record by record
//!   and no part's absent field is turned into explicit nulls.
//! - `delete`: a body with `ids` only (`where`, `where_document`, `limit`
//!   absent or null).
//! - The same method, path and query (so the same collection, logical id)
//!   and the same content type. Replayed entries carry no credentials of
//!   their own (the log never holds them), so none can differ.
//!
//! The merged body keeps every element's bytes exactly as the client sent
//! them (no number is re-printed): it is the parts' arrays concatenated in
//! order.

use super::json_scan::{self, Span};
use super::operation::Operation;
use bytes::Bytes;
use std::collections::HashSet;

/// Record fields of `add`/`upsert` besides `ids`, in the order a merged
/// body lists them.
const RECORD_FIELDS: [&str; 4] = ["embeddings", "documents", "metadatas", "uris"];

/// Fields of a `delete` that must be absent or null for it to merge.
const DELETE_FILTERS: [&str; 3] = ["where", "where_document", "limit"];

/// How embeddings are spelled in a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EmbeddingEncoding {
    /// No embeddings field (or null).
    Absent,
    /// Arrays of numbers.
    Floats,
    /// Base64 strings.
    Base64,
}

/// What parts must share to be merged into one request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MergeKey {
    /// The operation: add, upsert or delete.
    pub op: Operation,
    /// HTTP method and path with query, as logged (logical ids).
    pub method: http::Method,
    /// Path and query as logged.
    pub path: String,
    /// The request's content type.
    pub content_type: Option<String>,
    /// Which of [`RECORD_FIELDS`] are present (always none for a delete).
    pub fields: [bool; 4],
    /// The embeddings' spelling.
    pub embeddings: EmbeddingEncoding,
}

/// A record write that can be merged with others of its key.
#[derive(Debug, Clone)]
pub struct MergePart {
    key: MergeKey,
    body: Bytes,
    ids: Vec<String>,
    /// Element spans in `body`: `ids` first, then each present record field.
    arrays: Vec<Vec<Span>>,
}

impl MergePart {
    /// The part a logged write is, or `None` when it must be sent alone
    /// (another operation, a body of another shape, a filter, an id twice,
    /// arrays of unequal length, anything not understood).
    pub fn parse(
        op: Operation,
        method: &http::Method,
        path: &str,
        content_type: Option<&str>,
        body: &Bytes,
    ) -> Option<MergePart> {
        let record_write = match op {
            Operation::CollectionAdd | Operation::CollectionUpsert => true,
            Operation::CollectionDelete => false,
            _ => return None,
        };
        if !json_scan::is_valid(body) {
            return None;
        }
        let root = json_scan::root(body)?;
        let members = json_scan::object_members(body, &root)?;
        let mut seen = HashSet::new();
        let mut ids_span = None;
        let mut fields: [Option<Span>; 4] = Default::default();
        for (name, span) in members {
            if !seen.insert(name.clone()) {
                return None; // a key twice: let Chroma judge it alone
            }
            let null = body.get(span.clone()) == Some(&b"null"[..]);
            if name == "ids" {
                ids_span = Some(span);
            } else if let Some(i) = RECORD_FIELDS.iter().position(|f| *f == name) {
                if !record_write {
                    return None;
                }
                if !null {
                    fields[i] = Some(span);
                }
            } else if !record_write && DELETE_FILTERS.contains(&name.as_str()) {
                if !null {
                    return None;
                }
            } else {
                return None;
            }
        }
        let id_elements = json_scan::array_elements(body, &ids_span?)?;
        let ids = id_elements
            .iter()
            .map(|s| json_scan::string_at(body, s))
            .collect::<Option<Vec<String>>>()?;
        if ids.is_empty() || ids.iter().collect::<HashSet<_>>().len() != ids.len() {
            return None;
        }
        let mut arrays = vec![id_elements];
        let mut present = [false; 4];
        let mut embeddings = EmbeddingEncoding::Absent;
        for (i, span) in fields.iter().enumerate() {
            let Some(span) = span else { continue };
            let elements = json_scan::array_elements(body, span)?;
            if elements.len() != ids.len() {
                return None;
            }
            if RECORD_FIELDS[i] == "embeddings" {
                embeddings = encoding_of(body, &elements)?;
            }
            present[i] = true;
            arrays.push(elements);
        }
        Some(MergePart {
            key: MergeKey {
                op,
                method: method.clone(),
                path: path.to_string(),
                content_type: content_type.map(String::from),
                fields: present,
                embeddings,
            },
            body: body.clone(),
            ids,
            arrays,
        })
    }

    /// What another part must share with this one to be merged with it.
    pub fn key(&self) -> &MergeKey {
        &self.key
    }

    /// The record ids it writes (no id twice).
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// The size of its body.
    pub fn body_len(&self) -> usize {
        self.body.len()
    }
}

/// All elements floats arrays, or all strings; anything else (a null, a
/// mix) is not merged.
fn encoding_of(body: &[u8], elements: &[Span]) -> Option<EmbeddingEncoding> {
    let first = |s: &Span| body.get(s.start).copied();
    if elements.iter().all(|s| first(s) == Some(b'[')) {
        Some(EmbeddingEncoding::Floats)
    } else if elements.iter().all(|s| first(s) == Some(b'"')) {
        Some(EmbeddingEncoding::Base64)
    } else {
        None
    }
}

/// The body of one request that applies `parts` (all of one key, in log
/// order): each array the parts' arrays concatenated, every element's bytes
/// as they were. `None` if the parts do not share a key or there are none.
pub fn merged_body(parts: &[&MergePart]) -> Option<Bytes> {
    let first = parts.first()?;
    if parts.iter().any(|p| p.key != first.key) {
        return None;
    }
    let mut names = vec!["ids"];
    names.extend(
        RECORD_FIELDS
            .iter()
            .zip(first.key.fields)
            .filter(|(_, present)| *present)
            .map(|(name, _)| *name),
    );
    let total: usize = parts.iter().map(|p| p.body.len()).sum();
    let mut out = Vec::with_capacity(total + 16 * names.len());
    out.push(b'{');
    for (field, name) in names.iter().enumerate() {
        if field > 0 {
            out.push(b',');
        }
        out.extend_from_slice(format!("\"{name}\":[").as_bytes());
        let mut element = 0usize;
        for part in parts {
            for span in part.arrays.get(field)? {
                if element > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(part.body.get(span.clone())?);
                element += 1;
            }
        }
        out.push(b']');
    }
    out.push(b'}');
    Some(Bytes::from(out))
}

#[cfg(test)]
#[path = "merge_tests.rs"]
mod tests;
