//! How a log is opened: durability policy, segment size, limits.

use crate::fs::{FileSystem, StdFs};
use std::sync::Arc;
use std::time::Duration;

/// When an append is acknowledged relative to fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Acknowledge after the record's bytes are fdatasync'd. Concurrent
    /// appends share one write and one fsync (group commit).
    Always,
    /// fsync at most once per `interval` and at least every `interval`
    /// while records are waiting; acknowledge after that fsync.
    Batch {
        /// The longest an appended record waits for its fsync.
        interval: Duration,
    },
    /// Never fsync (except when sealing a segment); acknowledge after the
    /// write. Power loss may lose acknowledged records of the active
    /// segment (a suffix of them: what survives is a prefix of the log), and
    /// a cursor committed past what survived makes the next open refuse
    /// with `Corruption`. For tests only.
    Never,
}

impl Default for SyncPolicy {
    fn default() -> Self {
        SyncPolicy::Batch {
            interval: Duration::from_millis(2),
        }
    }
}

/// Settings of a log. `Default` gives 64 MiB segments, batch fsync every
/// 2 ms, no size cap, a 100 µs regroup wait, and the real filesystem.
#[derive(Clone)]
pub struct WalOptions {
    /// Durability of acknowledged appends.
    pub sync: SyncPolicy,
    /// A segment is sealed once it reaches this size (a batch may overshoot
    /// it; a single larger record gets a segment of its own).
    pub segment_bytes: u64,
    /// Appends that would take the total size of segments past this fail
    /// with `LogFull` (`Wal::append_uncapped` is exempt and may exceed it).
    pub max_bytes: u64,
    /// The largest payload accepted.
    pub max_record_bytes: usize,
    /// Recent records kept in memory so that readers that keep up never
    /// touch the disk.
    pub tail_cache_bytes: usize,
    /// Where files are read and written.
    pub fs: Arc<dyn FileSystem>,
    /// Called with the duration of every segment fsync (for metrics).
    pub on_fsync: Option<Arc<dyn Fn(Duration) + Send + Sync>>,
    /// Under `Always`, the longest the writer waits, once a batch has
    /// started, for as many appends as the last successful fsync
    /// acknowledged. Appenders released by one fsync then share the next
    /// one, instead of settling into two half-size groups that take turns.
    /// An append waits at most this long, and only when fewer are queued
    /// than that fsync acknowledged: a lone appender after a group waits
    /// once, then never. The writer thread spins while it waits, so keep
    /// this to tens or hundreds of microseconds; zero turns the wait off.
    pub regroup_wait: Duration,
}

impl Default for WalOptions {
    fn default() -> Self {
        Self {
            sync: SyncPolicy::default(),
            segment_bytes: 64 * 1024 * 1024,
            max_bytes: u64::MAX,
            max_record_bytes: 128 * 1024 * 1024,
            tail_cache_bytes: 32 * 1024 * 1024,
            fs: Arc::new(StdFs),
            on_fsync: None,
            regroup_wait: Duration::from_micros(100),
        }
    }
}

impl std::fmt::Debug for WalOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalOptions")
            .field("sync", &self.sync)
            .field("segment_bytes", &self.segment_bytes)
            .field("max_bytes", &self.max_bytes)
            .field("max_record_bytes", &self.max_record_bytes)
            .field("tail_cache_bytes", &self.tail_cache_bytes)
            .field("regroup_wait", &self.regroup_wait)
            .finish_non_exhaustive()
    }
}
