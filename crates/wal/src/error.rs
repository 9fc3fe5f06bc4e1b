//! Typed errors of the log. Corruption is kept apart from I/O: an I/O error
//! may pass, corruption means bytes on disk are not what the log wrote.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the log, with the context to act on it.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// An operating-system I/O call failed; `context` says which and on what.
    #[error("{context}: {source}")]
    Io {
        /// What the log was doing, naming the file.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Bytes on disk fail a check (CRC, framing, LSN order) outside the
    /// repairable tail of the last segment. Never repaired silently.
    #[error("corruption in {file} at offset {offset}: {reason}", file = .file.display())]
    Corruption {
        /// The segment or cursor file.
        file: PathBuf,
        /// Byte offset of the bad record or header.
        offset: u64,
        /// What check failed.
        reason: String,
    },
    /// Accepting this append would take the log past its configured
    /// `max_bytes`; nothing was written. Retry once cursors let segments go.
    #[error("log full: {used} of {max} bytes used, append of {needed} bytes refused")]
    LogFull {
        /// Bytes in use, including appends queued ahead of this one.
        used: u64,
        /// The configured cap.
        max: u64,
        /// The framed size of the refused record.
        needed: u64,
    },
    /// A single record larger than `max_record_bytes`.
    #[error("record of {size} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge {
        /// Payload size.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// The requested LSN was already truncated away.
    #[error("LSN {requested} was truncated; the log starts at {first_available}")]
    Truncated {
        /// What the caller asked for.
        requested: u64,
        /// The oldest LSN still held.
        first_available: u64,
    },
    /// A cursor name that is empty, too long, or not `[A-Za-z0-9._-]`.
    #[error("invalid cursor name {0:?}: use 1-64 characters of A-Z a-z 0-9 . _ -")]
    InvalidCursorName(String),
    /// A cursor may not point past the last durable record or before the log.
    #[error("cursor {name:?} cannot move to LSN {lsn}: the log holds {first}..={last}")]
    CursorOutOfRange {
        /// The cursor.
        name: String,
        /// The refused position.
        lsn: u64,
        /// First LSN held (minus one is the lowest valid position).
        first: u64,
        /// Last durable LSN.
        last: u64,
    },
    /// A write or fsync failed and rolling the segment back failed too; the
    /// on-disk tail is unknown, so the log refuses appends until reopened.
    #[error("log is unusable until reopened: {0}")]
    Poisoned(String),
    /// The writer has stopped (the log was closed or its thread died).
    #[error("log is closed")]
    Closed,
    /// The store that keeps the log (a database) cannot be reached or
    /// failed the operation; an append that fails so wrote nothing, and the
    /// same operation may succeed later.
    #[error("the log's store is unavailable: {context}: {reason}")]
    Unavailable {
        /// What the log was doing.
        context: String,
        /// The store's error.
        reason: String,
    },
    /// An append's commit was sent to the log's store but its answer was
    /// lost, and the store could not be asked afterwards whether it landed:
    /// the record may or may not be in the log.
    #[error("the outcome of an append is unknown: {context}: {reason}")]
    OutcomeUnknown {
        /// What the log was doing.
        context: String,
        /// The store's error.
        reason: String,
    },
    /// A write of shared state by a process that no longer leads the log:
    /// another process took the lease (a higher epoch) since.
    #[error("refused: this process led the log in epoch {held}, but epoch {current} has begun")]
    Fenced {
        /// The epoch this process held.
        held: u64,
        /// The epoch in force now.
        current: u64,
    },
    /// Another process holds the log directory.
    #[error("log directory {} is locked by another process", .0.display())]
    Locked(PathBuf),
}

impl WalError {
    /// Wraps an I/O error with what the log was doing.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        WalError::Io {
            context: context.into(),
            source,
        }
    }

    /// True when the error means the disk (or the configured cap) has no room:
    /// ENOSPC, EDQUOT, or `LogFull`. Callers map this to "insufficient storage".
    pub fn is_out_of_space(&self) -> bool {
        match self {
            WalError::LogFull { .. } => true,
            WalError::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(code) if code == libc::ENOSPC || code == libc::EDQUOT
            ),
            _ => false,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = WalError> = std::result::Result<T, E>;
