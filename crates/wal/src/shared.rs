//! State shared by the log handle, its writer thread and its readers.

use crate::error::{Result, WalError};
use crate::options::WalOptions;
use crate::segment::SegmentInfo;
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::sync::watch;

/// One record of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its log sequence number: dense, increasing from 1.
    pub lsn: u64,
    /// The bytes that were appended.
    pub payload: Bytes,
}

/// Counters of the log since it was opened.
#[derive(Debug, Default)]
pub struct Counters {
    /// Records made durable.
    pub appends: AtomicU64,
    /// Payload bytes made durable.
    pub append_bytes: AtomicU64,
    /// fdatasync calls on segments.
    pub fsyncs: AtomicU64,
    /// Appends refused or failed.
    pub append_errors: AtomicU64,
}

/// Recently durable records, so readers that keep up never touch the disk.
#[derive(Default)]
pub struct TailCache {
    records: VecDeque<Record>,
    bytes: usize,
    cap: usize,
}

impl TailCache {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            ..Self::default()
        }
    }

    /// Adds a durable record; LSNs must follow each other.
    pub fn push(&mut self, record: Record) {
        if self.cap == 0 {
            return;
        }
        if let Some(last) = self.records.back() {
            if last.lsn + 1 != record.lsn {
                self.records.clear();
                self.bytes = 0;
            }
        }
        self.bytes += record.payload.len();
        self.records.push_back(record);
        while self.bytes > self.cap && self.records.len() > 1 {
            if let Some(old) = self.records.pop_front() {
                self.bytes -= old.payload.len();
            }
        }
    }

    /// The cached record with this LSN, if any.
    pub fn get(&self, lsn: u64) -> Option<Record> {
        let first = self.records.front()?.lsn;
        let index = lsn.checked_sub(first)?;
        self.records.get(usize::try_from(index).ok()?).cloned()
    }
}

pub struct Shared {
    pub dir: PathBuf,
    pub cursor_dir: PathBuf,
    pub options: WalOptions,
    /// Segments in LSN order; the last one is being written.
    pub segments: RwLock<Vec<SegmentInfo>>,
    /// Bytes of each sealed segment, by first LSN.
    pub sealed_bytes: Mutex<BTreeMap<u64, u64>>,
    /// Last LSN readers may see (durable under the policy); 0 = none yet.
    pub durable: watch::Sender<u64>,
    /// Bytes in segment files plus bytes reserved by queued appends.
    pub used_bytes: AtomicU64,
    pub cursors: Mutex<BTreeMap<String, u64>>,
    /// Serializes cursor files and segment deletion.
    pub cursor_io: Mutex<()>,
    /// Records with LSN at or above this are never deleted.
    pub retain_floor: AtomicU64,
    pub cache: Mutex<TailCache>,
    pub poisoned: Mutex<Option<String>>,
    pub counters: Counters,
    pub _lock: Box<dyn std::any::Any + Send + Sync>,
}

/// Locks a mutex, going on with the data if a panicking thread left it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

pub fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Reserves room for `needed` bytes under `max_bytes`.
    pub fn reserve(&self, needed: u64) -> Result<()> {
        let max = self.options.max_bytes;
        let mut used = self.used_bytes.load(Ordering::Acquire);
        loop {
            if used.saturating_add(needed) > max {
                return Err(WalError::LogFull { used, max, needed });
            }
            match self.used_bytes.compare_exchange_weak(
                used,
                used + needed,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(now) => used = now,
            }
        }
    }

    /// Reserves `needed` bytes whatever `max_bytes` says, so that the
    /// bytes are accounted for (and later released) like any other.
    pub fn reserve_uncapped(&self, needed: u64) {
        let _ = self
            .used_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_add(needed))
            });
    }

    /// Gives back bytes reserved or freed.
    pub fn release(&self, bytes: u64) {
        let _ = self
            .used_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(bytes))
            });
    }

    /// The first LSN still held.
    pub fn first_lsn(&self) -> u64 {
        read(&self.segments).first().map_or(1, |s| s.first_lsn)
    }

    /// The last durable LSN (0 when the log has never held a record).
    pub fn durable_lsn(&self) -> u64 {
        *self.durable.borrow()
    }
}
