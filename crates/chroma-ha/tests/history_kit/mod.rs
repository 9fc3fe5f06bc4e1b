//! The history test's kit (`tests/history.rs`): a model of Chroma 1.5.9
//! ([`model`]), concurrent recording clients ([`workload`]) and the checker
//! that replays the gateway's log on the model and compares it with the
//! clients' answers ([`checker`], [`reads`]) and with every server's
//! content, read directly like the log ([`sources`]).
#![allow(dead_code)]

pub mod checker;
pub mod model;
pub mod reads;
pub mod sources;
pub mod workload;

use std::time::Instant;

/// What a read asked.
#[derive(Debug, Clone)]
pub enum ReadKind {
    /// `POST …/collections/{id}/get` with these ids.
    Get { id: String, ids: Vec<String> },
    /// `GET …/collections/{id}/count`.
    Count { id: String },
    /// `GET …/databases/{db}/collections`.
    List { db: String },
}

/// What came back.
#[derive(Debug, Clone)]
pub enum OpResult {
    /// An HTTP answer.
    Answer {
        /// Status code.
        status: u16,
        /// Body text.
        body: String,
        /// `x-chroma-ha-lsn` (or, for a 504, the LSN its message names).
        lsn: Option<u64>,
    },
    /// The connection was refused: the request never left the client.
    NotSent(String),
    /// Sent, but no (complete) answer: reset, end of stream, timeout.
    Lost(String),
}

/// What the client was told about a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// 2xx.
    Acked,
    /// Any other answer but 504, or never sent.
    Failed,
    /// 504, or no answer.
    Unknown,
}

/// One client operation, as recorded.
#[derive(Debug, Clone)]
pub struct Op {
    /// The client (thread) that sent it.
    pub client: usize,
    /// Its number within the client.
    pub seq: u64,
    /// HTTP method.
    pub method: String,
    /// Path (with query, if any), as logged by the gateway.
    pub path: String,
    /// JSON body, if any.
    pub body: Option<String>,
    /// `Some` for a read.
    pub read: Option<ReadKind>,
    /// When it was sent.
    pub start: Instant,
    /// When its outcome was known.
    pub end: Instant,
    /// The outcome.
    pub result: OpResult,
}

impl Op {
    /// The verdict on a write.
    pub fn verdict(&self) -> Verdict {
        match &self.result {
            OpResult::Answer { status, .. } if (200..300).contains(status) => Verdict::Acked,
            OpResult::Answer { status: 504, .. } | OpResult::Lost(_) => Verdict::Unknown,
            OpResult::Answer { .. } | OpResult::NotSent(_) => Verdict::Failed,
        }
    }

    /// The LSN the gateway named in its answer.
    pub fn lsn(&self) -> Option<u64> {
        match &self.result {
            OpResult::Answer { lsn, .. } => *lsn,
            _ => None,
        }
    }

    /// A short account: client, request, outcome.
    pub fn describe(&self) -> String {
        let body = self.body.as_deref().unwrap_or("");
        let body = clip(body, 160);
        let outcome = match &self.result {
            OpResult::Answer { status, body, lsn } => {
                let b = clip(body, 160);
                format!(
                    "-> {status} lsn={} {b}",
                    lsn.map_or("-".into(), |l| l.to_string())
                )
            }
            OpResult::NotSent(e) => format!("-> not sent ({e})"),
            OpResult::Lost(e) => format!("-> no answer ({e})"),
        };
        format!(
            "client {} op {}: {} {} {body} {outcome}",
            self.client,
            self.seq,
            self.method,
            short_path(&self.path)
        )
    }
}

/// A path without the `/api/v2/tenants/default_tenant/databases` prefix.
pub fn short_path(path: &str) -> &str {
    path.strip_prefix("/api/v2/tenants/default_tenant/databases")
        .unwrap_or(path)
}

/// At most `n` characters of `s`.
pub fn clip(s: &str, n: usize) -> &str {
    s.char_indices().nth(n).map_or(s, |(i, _)| &s[..i])
}
