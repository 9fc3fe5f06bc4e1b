//! The single writer: group commit of concurrent appends, segment rollover,
//! and rollback of a batch whose write or fsync failed.

use crate::error::{Result, WalError};
use crate::frame;
use crate::fs::WalFile;
use crate::options::SyncPolicy;
use crate::segment::{self, SegmentInfo, PREPARED_NAME, SEGMENT_HEADER};
use crate::shared::{lock, write, Record, Shared};
use bytes::Bytes;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};

/// Name of the thread that prepares the next segment in the background.
pub(crate) const PREPARE_THREAD: &str = "wal-prepare";

/// Largest number of bytes gathered into one write.
const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// One queued append.
pub struct AppendRequest {
    pub payload: Bytes,
    /// Bytes reserved against `max_bytes` for it.
    pub reserved: u64,
    pub done: oneshot::Sender<Result<u64>>,
}

/// A record written but not yet acknowledged.
struct Pending {
    lsn: u64,
    payload: Bytes,
    reserved: u64,
    done: oneshot::Sender<Result<u64>>,
}

pub struct Writer {
    shared: Arc<Shared>,
    file: Box<dyn WalFile>,
    segment: SegmentInfo,
    /// Bytes of the active segment written so far.
    written: u64,
    /// Bytes of the active segment known durable; a failed batch rolls back here.
    durable: u64,
    next_lsn: u64,
    /// Encoded records not yet written.
    buf: Vec<u8>,
    /// Records encoded or written, waiting for their acknowledgement.
    pending: Vec<Pending>,
    last_sync: Instant,
    /// How many appends the last fsync acknowledged; zero after a failure.
    released: usize,
    prepared: Option<JoinHandle<io::Result<()>>>,
}

fn copy_io_error(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

/// Creates the next segment file ahead of need, preallocated and synced.
fn prepare_segment(shared: &Shared) -> io::Result<()> {
    let path = shared.dir.join(PREPARED_NAME);
    segment::create_preallocated(
        shared.options.fs.as_ref(),
        &path,
        shared.options.segment_bytes,
    )
    .map(drop)
}

impl Writer {
    pub fn new(
        shared: Arc<Shared>,
        file: Box<dyn WalFile>,
        segment: SegmentInfo,
        len: u64,
        next_lsn: u64,
    ) -> Self {
        let mut writer = Self {
            shared,
            file,
            segment,
            written: len,
            durable: len,
            next_lsn,
            buf: Vec::new(),
            pending: Vec::new(),
            last_sync: Instant::now(),
            released: 0,
            prepared: None,
        };
        writer.spawn_prepare();
        writer
    }

    fn spawn_prepare(&mut self) {
        let shared = self.shared.clone();
        self.prepared = std::thread::Builder::new()
            .name(PREPARE_THREAD.into())
            .spawn(move || prepare_segment(&shared))
            .ok();
    }

    /// Runs until every handle is dropped; then makes pending records durable.
    pub async fn run(mut self, mut rx: mpsc::Receiver<AppendRequest>) {
        let mut open = true;
        while open || !self.pending.is_empty() {
            let first = if !open {
                None
            } else if self.pending.is_empty() {
                rx.recv().await
            } else {
                // Batch policy with unsynced records: collect more until the deadline.
                let deadline = self.sync_deadline();
                tokio::select! {
                    request = rx.recv() => request,
                    _ = tokio::time::sleep_until(deadline.into()) => None,
                }
            };
            match first {
                Some(request) => {
                    let batch = self.gather(request, &mut rx);
                    self.accept(batch);
                }
                None if rx.is_closed() && rx.is_empty() => open = false,
                None => {}
            }
            let sync_now = match self.shared.options.sync {
                SyncPolicy::Always | SyncPolicy::Never => true,
                SyncPolicy::Batch { .. } => !open || Instant::now() >= self.sync_deadline(),
            };
            if sync_now && !self.pending.is_empty() {
                self.commit();
            }
        }
        if let Some(handle) = self.prepared.take() {
            let _ = handle.join();
        }
    }

    /// Takes every request already queued behind `first`. Under `Always`,
    /// also waits up to `regroup_wait` for as many as the last successful
    /// fsync released: appenders that were acknowledged together come back within
    /// microseconds, and one fsync for all of them costs little more than
    /// one for half. The wait spins (yielding), because the runtime's timer
    /// counts in milliseconds.
    fn gather(
        &self,
        first: AppendRequest,
        rx: &mut mpsc::Receiver<AppendRequest>,
    ) -> Vec<AppendRequest> {
        let regroup = match self.shared.options.sync {
            SyncPolicy::Always => self.shared.options.regroup_wait,
            SyncPolicy::Batch { .. } | SyncPolicy::Never => Duration::ZERO,
        };
        let started = Instant::now();
        let mut bytes = first.payload.len();
        let mut batch = vec![first];
        while bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(request) => {
                    bytes += request.payload.len();
                    batch.push(request);
                }
                Err(TryRecvError::Empty)
                    if batch.len() < self.released && started.elapsed() < regroup =>
                {
                    std::thread::yield_now();
                }
                Err(_) => break,
            }
        }
        batch
    }

    fn sync_deadline(&self) -> Instant {
        match self.shared.options.sync {
            SyncPolicy::Batch { interval } => self.last_sync + interval,
            SyncPolicy::Always | SyncPolicy::Never => self.last_sync,
        }
    }

    /// Encodes and writes a batch, rolling to a new segment where needed.
    fn accept(&mut self, batch: Vec<AppendRequest>) {
        if let Some(reason) = lock(&self.shared.poisoned).clone() {
            self.released = 0;
            for request in batch {
                self.shared.release(request.reserved);
                let _ = request.done.send(Err(WalError::Poisoned(reason.clone())));
            }
            return;
        }
        let mut requests = batch.into_iter();
        while let Some(request) = requests.next() {
            let size = frame::framed_len(request.payload.len());
            let segment_used = self.written + self.buf.len() as u64;
            if segment_used > SEGMENT_HEADER
                && segment_used + size > self.shared.options.segment_bytes
            {
                if !self.pending.is_empty() {
                    self.commit();
                }
                if let Err(e) = self.roll() {
                    let message = e.to_string();
                    self.shared.release(request.reserved);
                    let _ = request.done.send(Err(e));
                    for rest in requests {
                        self.shared.release(rest.reserved);
                        let _ = rest.done.send(Err(WalError::io(
                            message.clone(),
                            io::Error::other("rollover failed"),
                        )));
                    }
                    return;
                }
            }
            frame::encode(self.next_lsn, &request.payload, &mut self.buf);
            self.pending.push(Pending {
                lsn: self.next_lsn,
                payload: request.payload,
                reserved: request.reserved,
                done: request.done,
            });
            self.next_lsn += 1;
        }
        self.flush();
    }

    /// Writes the encoded buffer to the active segment.
    fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        match self.file.write_at(&self.buf, self.written) {
            Ok(()) => {
                self.written += self.buf.len() as u64;
                self.buf.clear();
            }
            Err(e) => self.fail("writing", e),
        }
    }

    /// Makes pending records durable (per policy) and acknowledges them.
    fn commit(&mut self) {
        self.flush();
        if self.pending.is_empty() {
            return;
        }
        if self.shared.options.sync != SyncPolicy::Never {
            let started = Instant::now();
            let result = self.file.sync_data();
            self.shared.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
            if let Some(observe) = &self.shared.options.on_fsync {
                observe(started.elapsed());
            }
            if let Err(e) = result {
                self.fail("fsync of", e);
                return;
            }
        }
        self.last_sync = Instant::now();
        self.durable = self.written;
        let Some(last) = self.pending.last().map(|p| p.lsn) else {
            return;
        };
        {
            let mut cache = lock(&self.shared.cache);
            for p in &self.pending {
                cache.push(Record {
                    lsn: p.lsn,
                    payload: p.payload.clone(),
                });
            }
        }
        let counters = &self.shared.counters;
        counters
            .appends
            .fetch_add(self.pending.len() as u64, Ordering::Relaxed);
        let bytes: usize = self.pending.iter().map(|p| p.payload.len()).sum();
        counters
            .append_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        self.shared.durable.send_replace(last);
        self.released = self.pending.len();
        for p in self.pending.drain(..) {
            let _ = p.done.send(Ok(p.lsn));
        }
    }

    /// Fails every pending record and cuts the segment back to its durable
    /// length, so that none of them can reappear. If that cut cannot be made
    /// durable, the log is poisoned until reopened.
    fn fail(&mut self, what: &str, error: io::Error) {
        self.released = 0;
        let path = self.segment.path.display().to_string();
        let rollback = self
            .file
            .set_len(self.durable)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = &rollback {
            let reason = format!("{what} {path} failed ({error}) and rolling back failed ({e})");
            tracing::error!(%reason, "write-ahead log poisoned");
            *lock(&self.shared.poisoned) = Some(reason);
        }
        self.written = self.durable;
        self.buf.clear();
        if let Some(first) = self.pending.first() {
            self.next_lsn = first.lsn;
        }
        let counters = &self.shared.counters;
        counters
            .append_errors
            .fetch_add(self.pending.len() as u64, Ordering::Relaxed);
        for p in self.pending.drain(..) {
            self.shared.release(p.reserved);
            let _ = p.done.send(Err(WalError::io(
                format!("{what} {path}"),
                copy_io_error(&error),
            )));
        }
    }

    /// Seals the active segment (cut to its records, so sealed segments end
    /// exactly after their last record) and starts the next one at `next_lsn`.
    fn roll(&mut self) -> Result<()> {
        let fs = &self.shared.options.fs;
        let dir = &self.shared.dir;
        let sealing = self.segment.path.display().to_string();
        self.file
            .set_len(self.written)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| WalError::io(format!("sealing {sealing}"), e))?;
        self.durable = self.written;
        let prepared_path = dir.join(PREPARED_NAME);
        let prepared = match self.prepared.take().map(|h| h.join()) {
            Some(Ok(Ok(()))) => true,
            Some(Ok(Err(e))) => {
                tracing::warn!(error = %e, "preparing the next segment failed; creating it now");
                false
            }
            Some(Err(_)) | None => false,
        };
        if !prepared {
            prepare_segment(&self.shared)
                .map_err(|e| WalError::io(format!("creating {}", prepared_path.display()), e))?;
        }
        let path: PathBuf = dir.join(segment::file_name(self.next_lsn));
        fs.rename(&prepared_path, &path)
            .map_err(|e| WalError::io(format!("renaming new segment to {}", path.display()), e))?;
        // The new segment now exists under its name: writing on into the old
        // one would put records where a reopen does not look for them.
        let opened = fs
            .sync_dir(dir)
            .map_err(|e| WalError::io(format!("syncing directory {}", dir.display()), e))
            .and_then(|()| {
                fs.open(&path)
                    .map_err(|e| WalError::io(format!("opening {}", path.display()), e))
            });
        let file = match opened {
            Ok(file) => file,
            Err(e) => {
                let reason = format!("starting segment {} failed: {e}", path.display());
                tracing::error!(%reason, "write-ahead log poisoned");
                *lock(&self.shared.poisoned) = Some(reason.clone());
                return Err(WalError::Poisoned(reason));
            }
        };
        let sealed = std::mem::replace(
            &mut self.segment,
            SegmentInfo {
                first_lsn: self.next_lsn,
                path,
            },
        );
        lock(&self.shared.sealed_bytes).insert(sealed.first_lsn, self.written);
        write(&self.shared.segments).push(self.segment.clone());
        self.shared
            .used_bytes
            .fetch_add(SEGMENT_HEADER, Ordering::AcqRel);
        self.file = file;
        self.written = SEGMENT_HEADER;
        self.durable = SEGMENT_HEADER;
        self.spawn_prepare();
        Ok(())
    }
}
