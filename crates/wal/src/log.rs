//! The log handle: opening with recovery, appending, reading, cursors and
//! deletion of consumed segments.

use crate::cursor::{self, CURSOR_DIR};
use crate::error::{Result, WalError};
use crate::frame;
use crate::options::WalOptions;
use crate::reader::LogReader;
use crate::recovery::{self, Recovered};
pub use crate::recovery::{Recovery, TailRepair};
use crate::segment::{self, SegmentInfo, PREPARED_NAME};
use crate::shared::{lock, read, write, Counters, Shared, TailCache};
use crate::writer::{AppendRequest, Writer};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use tokio::sync::{mpsc, oneshot, watch};

/// Name of the lock file that keeps a second process out of the directory.
pub const LOCK_NAME: &str = "LOCK";

/// A snapshot of the log's size and activity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalStats {
    /// First LSN held.
    pub first_lsn: u64,
    /// Last durable LSN.
    pub last_lsn: u64,
    /// Segment files.
    pub segments: usize,
    /// Bytes of all segments plus appends queued.
    pub used_bytes: u64,
    /// The configured cap.
    pub max_bytes: u64,
    /// Records made durable since open.
    pub appends: u64,
    /// Payload bytes made durable since open.
    pub append_bytes: u64,
    /// Segment fsyncs since open.
    pub fsyncs: u64,
    /// Appends that failed since open.
    pub append_errors: u64,
    /// Set when the log refuses appends until reopened.
    pub poisoned: Option<String>,
}

struct WriterThread {
    tx: Option<mpsc::Sender<AppendRequest>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A durable, segmented, append-only log. Cheap to clone; the writer stops
/// (after making queued records durable) when the last clone is dropped.
#[derive(Clone)]
pub struct Wal {
    shared: Arc<Shared>,
    writer: Arc<WriterThread>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.shared.dir)
            .finish()
    }
}

fn io_err(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> WalError {
    let context = format!("{what} {}", path.display());
    move |e| WalError::io(context, e)
}

/// Lists segments in LSN order.
pub(crate) fn list_segments(
    fs: &dyn crate::fs::FileSystem,
    dir: &Path,
) -> Result<Vec<SegmentInfo>> {
    let mut segments: Vec<SegmentInfo> = fs
        .list_dir(dir)
        .map_err(io_err("listing", dir))?
        .into_iter()
        .filter_map(|path| {
            segment::parse_file_name(&path).map(|first_lsn| SegmentInfo { first_lsn, path })
        })
        .collect();
    segments.sort_by_key(|s| s.first_lsn);
    Ok(segments)
}

/// Creates a preallocated segment file durably under its final name.
fn create_segment(
    fs: &dyn crate::fs::FileSystem,
    dir: &Path,
    first_lsn: u64,
    size: u64,
) -> Result<SegmentInfo> {
    let tmp = dir.join(PREPARED_NAME);
    let path = dir.join(segment::file_name(first_lsn));
    segment::create_preallocated(fs, &tmp, size).map_err(io_err("creating", &tmp))?;
    fs.rename(&tmp, &path).map_err(io_err("renaming", &path))?;
    fs.sync_dir(dir).map_err(io_err("syncing directory", dir))?;
    Ok(SegmentInfo { first_lsn, path })
}

impl Wal {
    /// Opens (or creates) the log in `dir`, repairing a torn tail of the last
    /// segment. Only the last segment is scanned; sealed segments are checked
    /// when read. Fails with `Corruption` (naming the segment and offset)
    /// if the last segment's header is damaged, or if a cursor is at or past
    /// the first LSN the last segment no longer holds intact: that cursor's
    /// consumer read the record, so it was durable, and cutting the log
    /// there would hand its LSN to a new record the consumer would skip.
    /// Nothing is changed on disk then. Fails with `Locked` if another
    /// process has the directory open.
    pub fn open(dir: impl AsRef<Path>, options: WalOptions) -> Result<(Wal, Recovery)> {
        let dir = dir.as_ref().to_path_buf();
        let fs = options.fs.clone();
        let cursor_dir = dir.join(CURSOR_DIR);
        fs.create_dir_all(&cursor_dir)
            .map_err(io_err("creating", &cursor_dir))?;
        let lock_path = dir.join(LOCK_NAME);
        let dir_lock = fs.lock(&lock_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                WalError::Locked(dir.clone())
            } else {
                WalError::io(format!("locking {}", lock_path.display()), e)
            }
        })?;
        let prepared = dir.join(PREPARED_NAME);
        if fs
            .list_dir(&dir)
            .map_err(io_err("listing", &dir))?
            .contains(&prepared)
        {
            fs.remove_file(&prepared)
                .map_err(io_err("removing", &prepared))?;
        }
        let cursors = cursor::load_all(fs.as_ref(), &cursor_dir)?;

        let mut segments = list_segments(fs.as_ref(), &dir)?;
        if segments.is_empty() {
            // A fresh log; if cursors survive from an emptied one, go on after them.
            let start = cursors.values().max().map_or(1, |lsn| lsn + 1);
            segments.push(create_segment(
                fs.as_ref(),
                &dir,
                start,
                options.segment_bytes,
            )?);
        }
        let mut sealed_bytes = BTreeMap::new();
        let mut used = 0u64;
        for sealed in &segments[..segments.len() - 1] {
            let file = fs
                .open(&sealed.path)
                .map_err(io_err("opening", &sealed.path))?;
            if !segment::check_header(file.as_ref(), &sealed.path)? {
                return Err(WalError::Corruption {
                    file: sealed.path.clone(),
                    offset: 0,
                    reason: "sealed segment is shorter than its header".into(),
                });
            }
            let len = file
                .size()
                .map_err(io_err("reading length of", &sealed.path))?;
            sealed_bytes.insert(sealed.first_lsn, len);
            used += len;
        }

        let last = segments[segments.len() - 1].clone();
        let Recovered {
            file,
            valid_len,
            next_lsn,
            repair: tail_repair,
        } = recovery::recover_last_segment(fs.as_ref(), &last, &cursors)?;
        used += valid_len;

        let first_lsn = segments[0].first_lsn;
        let (durable, _) = watch::channel(next_lsn - 1);
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            cursor_dir,
            segments: RwLock::new(segments.clone()),
            sealed_bytes: Mutex::new(sealed_bytes),
            durable,
            used_bytes: AtomicU64::new(used),
            cursors: Mutex::new(cursors),
            cursor_io: Mutex::new(()),
            retain_floor: AtomicU64::new(u64::MAX),
            cache: Mutex::new(TailCache::new(options.tail_cache_bytes)),
            poisoned: Mutex::new(None),
            counters: Counters::default(),
            options,
            _lock: dir_lock,
        });

        let (tx, rx) = mpsc::channel(4096);
        let writer = Writer::new(shared.clone(), file, last, valid_len, next_lsn);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| WalError::io("starting the writer's runtime", e))?;
        let thread = std::thread::Builder::new()
            .name("wal-writer".into())
            .spawn(move || runtime.block_on(writer.run(rx)))
            .map_err(|e| WalError::io("starting the writer thread", e))?;
        let recovery = Recovery {
            segments: segments.len(),
            first_lsn,
            last_lsn: next_lsn - 1,
            tail_repair,
        };
        let wal = Wal {
            shared,
            writer: Arc::new(WriterThread {
                tx: Some(tx),
                thread: Some(thread),
            }),
        };
        Ok((wal, recovery))
    }

    /// Appends a record and resolves with its LSN once it is durable under
    /// the sync policy. Fails at once with `LogFull` past `max_bytes` and
    /// `RecordTooLarge` past `max_record_bytes`; nothing is written then.
    /// On an I/O error nothing of the record stays in the log.
    pub async fn append(&self, payload: impl Into<Bytes>) -> Result<u64> {
        self.append_counted(payload.into(), Cap::Enforced).await
    }

    /// Appends a record like [`Wal::append`], with the same durability, but
    /// exempt from `max_bytes`: it is never refused with `LogFull`, only by
    /// I/O errors (ENOSPC included), a poisoned or closed log, or
    /// `RecordTooLarge` past `max_record_bytes`. It is for the few small
    /// records that must get in even when the log is full, such as a
    /// decision that lets the log drain. Callers must keep them small and
    /// rare: the log grows past `max_bytes` by exactly what they write, and
    /// ordinary appends stay refused until that much more has been freed.
    pub async fn append_uncapped(&self, payload: impl Into<Bytes>) -> Result<u64> {
        self.append_counted(payload.into(), Cap::Exempt).await
    }

    async fn append_counted(&self, payload: Bytes, cap: Cap) -> Result<u64> {
        let result = self.append_inner(payload, cap).await;
        if result.is_err() {
            self.shared
                .counters
                .append_errors
                .fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn append_inner(&self, payload: Bytes, cap: Cap) -> Result<u64> {
        let max = self.shared.options.max_record_bytes;
        if payload.len() > max {
            return Err(WalError::RecordTooLarge {
                size: payload.len(),
                max,
            });
        }
        let reserved = frame::framed_len(payload.len());
        match cap {
            Cap::Enforced => self.shared.reserve(reserved)?,
            Cap::Exempt => self.shared.reserve_uncapped(reserved),
        }
        let (done, result) = oneshot::channel();
        let request = AppendRequest {
            payload,
            reserved,
            done,
        };
        let Some(tx) = self.writer.tx.as_ref() else {
            self.shared.release(reserved);
            return Err(WalError::Closed);
        };
        if tx.send(request).await.is_err() {
            self.shared.release(reserved);
            return Err(WalError::Closed);
        }
        result.await.map_err(|_| WalError::Closed)?
    }

    /// A reader that yields records from `lsn` on, then waits for new ones.
    pub fn read_from(&self, lsn: u64) -> LogReader {
        LogReader::new(self.shared.clone(), lsn)
    }

    /// The first LSN still held.
    pub fn first_lsn(&self) -> u64 {
        self.shared.first_lsn()
    }

    /// The last durable LSN; 0 if the log never held a record.
    pub fn last_lsn(&self) -> u64 {
        self.shared.durable_lsn()
    }

    /// A receiver that sees the last durable LSN change.
    pub fn watch_last_lsn(&self) -> watch::Receiver<u64> {
        self.shared.durable.subscribe()
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The named durable cursor, created (durably) just before the first
    /// retained record if it did not exist.
    pub async fn cursor(&self, name: &str) -> Result<Cursor> {
        cursor::validate_name(name)?;
        if !lock(&self.shared.cursors).contains_key(name) {
            let start = self.first_lsn() - 1;
            self.store_cursor(name, start).await?;
        }
        Ok(Cursor {
            wal: self.clone(),
            name: name.to_string(),
        })
    }

    /// Every cursor and its position.
    pub fn cursors(&self) -> BTreeMap<String, u64> {
        lock(&self.shared.cursors).clone()
    }

    /// Removes a cursor durably, so it no longer holds segments back.
    pub async fn remove_cursor(&self, name: &str) -> Result<()> {
        cursor::validate_name(name)?;
        let shared = self.shared.clone();
        let name = name.to_string();
        blocking(move || {
            let _io = lock(&shared.cursor_io);
            if lock(&shared.cursors).remove(&name).is_some() {
                cursor::remove(shared.options.fs.as_ref(), &shared.cursor_dir, &name)?;
            }
            delete_consumed(&shared).map(|_| ())
        })
        .await
    }

    /// Keeps every record with LSN >= `lsn` even once all cursors are past
    /// it; `None` lifts the floor.
    pub async fn set_retain_floor(&self, lsn: Option<u64>) -> Result<usize> {
        self.shared
            .retain_floor
            .store(lsn.unwrap_or(u64::MAX), Ordering::SeqCst);
        let shared = self.shared.clone();
        blocking(move || {
            let _io = lock(&shared.cursor_io);
            delete_consumed(&shared)
        })
        .await
    }

    async fn store_cursor(&self, name: &str, lsn: u64) -> Result<usize> {
        let first = self.first_lsn();
        let last = self.last_lsn();
        if lsn + 1 < first || lsn > last {
            return Err(WalError::CursorOutOfRange {
                name: name.to_string(),
                lsn,
                first,
                last,
            });
        }
        let shared = self.shared.clone();
        let name = name.to_string();
        blocking(move || {
            let _io = lock(&shared.cursor_io);
            cursor::store(shared.options.fs.as_ref(), &shared.cursor_dir, &name, lsn)?;
            lock(&shared.cursors).insert(name, lsn);
            delete_consumed(&shared)
        })
        .await
    }

    /// Size and activity figures.
    pub fn stats(&self) -> WalStats {
        let shared = &self.shared;
        let c = &shared.counters;
        WalStats {
            first_lsn: shared.first_lsn(),
            last_lsn: shared.durable_lsn(),
            segments: read(&shared.segments).len(),
            used_bytes: shared.used_bytes.load(Ordering::Acquire),
            max_bytes: shared.options.max_bytes,
            appends: c.appends.load(Ordering::Relaxed),
            append_bytes: c.append_bytes.load(Ordering::Relaxed),
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            append_errors: c.append_errors.load(Ordering::Relaxed),
            poisoned: lock(&shared.poisoned).clone(),
        }
    }
}

/// Whether an append is held to `max_bytes`.
#[derive(Debug, Clone, Copy)]
enum Cap {
    Enforced,
    Exempt,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| WalError::io("log maintenance task", std::io::Error::other(e.to_string())))?
}

/// Deletes sealed segments whose every record all cursors have consumed and
/// that lie below the retain floor. Returns how many were deleted.
fn delete_consumed(shared: &Shared) -> Result<usize> {
    let Some(consumed) = lock(&shared.cursors).values().min().copied() else {
        return Ok(0);
    };
    let floor = shared.retain_floor.load(Ordering::SeqCst);
    let doomed: Vec<SegmentInfo> = {
        let segments = read(&shared.segments);
        segments
            .windows(2)
            .take_while(|pair| {
                let last_lsn = pair[1].first_lsn - 1;
                last_lsn <= consumed && last_lsn < floor
            })
            .map(|pair| pair[0].clone())
            .collect()
    };
    if doomed.is_empty() {
        return Ok(0);
    }
    let fs = shared.options.fs.as_ref();
    let mut deleted = 0;
    for segment in &doomed {
        // Forget the segment first so no new reader opens it.
        write(&shared.segments).retain(|s| s.first_lsn != segment.first_lsn);
        fs.remove_file(&segment.path)
            .map_err(io_err("deleting", &segment.path))?;
        if let Some(bytes) = lock(&shared.sealed_bytes).remove(&segment.first_lsn) {
            shared.release(bytes);
        }
        deleted += 1;
    }
    fs.sync_dir(&shared.dir)
        .map_err(io_err("syncing directory", &shared.dir))?;
    Ok(deleted)
}

/// A named, durable position in the log: "everything up to this LSN is
/// consumed". Segments are deleted only once every cursor is past them.
#[derive(Debug, Clone)]
pub struct Cursor {
    wal: Wal,
    name: String,
}

impl Cursor {
    /// The cursor's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The last committed position (0 = nothing consumed).
    pub fn position(&self) -> u64 {
        lock(&self.wal.shared.cursors)
            .get(&self.name)
            .copied()
            .unwrap_or(0)
    }

    /// Durably moves the cursor to `lsn` (which must be durable in the log);
    /// on return it survives a crash. Deletes segments that every cursor
    /// has now consumed and returns how many. On an error the cursor is at
    /// its old position, or — when only that deletion failed — already at
    /// `lsn`; committing again is safe either way.
    pub async fn commit(&self, lsn: u64) -> Result<usize> {
        self.wal.store_cursor(&self.name, lsn).await
    }
}
