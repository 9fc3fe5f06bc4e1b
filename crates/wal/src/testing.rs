//! Filesystems for tests: [`MemFs`] models what survives a crash, and
//! [`FaultyFs`] injects I/O errors into the real filesystem. Test aids only;
//! the log itself never uses them unless a test passes one in.

use crate::fs::{FileSystem, StdFs, WalFile};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// A change made since the last sync, in the order it was made.
#[derive(Clone)]
enum Pending {
    Write { offset: usize, bytes: Vec<u8> },
    SetLen(usize),
}

#[derive(Default, Clone)]
struct MemFile {
    /// The bytes as the process sees them.
    data: Vec<u8>,
    /// The bytes that survive a crash for sure.
    durable: Vec<u8>,
    /// Changes since the last sync; a crash keeps a random prefix of them,
    /// the last one possibly torn.
    pending: Vec<Pending>,
}

fn apply(data: &mut Vec<u8>, change: &Pending) {
    match change {
        Pending::Write { offset, bytes } => {
            if data.len() < offset + bytes.len() {
                data.resize(offset + bytes.len(), 0);
            }
            data[*offset..offset + bytes.len()].copy_from_slice(bytes);
        }
        Pending::SetLen(len) => data.resize(*len, 0),
    }
}

#[derive(Default)]
struct MemState {
    files: HashMap<u64, MemFile>,
    next_id: u64,
    /// Directory entries as the running process sees them.
    entries: BTreeMap<PathBuf, u64>,
    /// Directory entries as they would be after a crash.
    durable_entries: BTreeMap<PathBuf, u64>,
    dirs: Vec<PathBuf>,
    fail_sync: bool,
    power: Power,
}

/// A power cut, armed or done.
#[derive(Default)]
struct Power {
    /// Changes still allowed before the power goes off; `None`: stays on.
    changes_left: Option<u64>,
    /// Chooses what of the unsynced changes survives.
    seed: u64,
    /// Once the power is off: the filesystem as it comes back.
    survivor: Option<MemFs>,
}

fn power_is_off() -> io::Error {
    io::Error::other("the power is off (simulated power loss)")
}

/// What survives power loss now: unsynced directory changes undone, and
/// each file its synced content plus a prefix (chosen by `seed`) of the
/// changes made since, in order, the last kept write possibly torn.
fn survivor_of(state: &MemState, seed: u64) -> MemState {
    let mut rng = seed;
    let mut next = move || {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (rng >> 33) as usize
    };
    let mut live: Vec<u64> = state.durable_entries.values().copied().collect();
    live.sort_unstable();
    live.dedup();
    let mut files = HashMap::new();
    // In id order, so that a seed always picks the same outcome.
    for id in live {
        let Some(file) = state.files.get(&id) else {
            continue;
        };
        let mut data = file.durable.clone();
        let kept = next() % (file.pending.len() + 1);
        for (i, change) in file.pending.iter().enumerate().take(kept) {
            match change {
                Pending::Write { offset, bytes } if i + 1 == kept => {
                    let torn = next() % (bytes.len() + 1);
                    apply(
                        &mut data,
                        &Pending::Write {
                            offset: *offset,
                            bytes: bytes[..torn].to_vec(),
                        },
                    );
                }
                change => apply(&mut data, change),
            }
        }
        let durable = data.clone();
        files.insert(
            id,
            MemFile {
                data,
                durable,
                pending: Vec::new(),
            },
        );
    }
    MemState {
        files,
        next_id: state.next_id,
        entries: state.durable_entries.clone(),
        durable_entries: state.durable_entries.clone(),
        dirs: state.dirs.clone(),
        fail_sync: false,
        power: Power::default(),
    }
}

/// Fails once the power is off. A `change` (a write, sync, truncation or
/// directory change) also counts down an armed power cut, and the one that
/// finds none left cuts the power instead of happening.
fn check_power(state: &mut MemState, change: bool) -> io::Result<()> {
    if state.power.survivor.is_some() {
        return Err(power_is_off());
    }
    if !change {
        return Ok(());
    }
    match state.power.changes_left {
        Some(0) => {
            let survivor = survivor_of(state, state.power.seed);
            state.power.survivor = Some(MemFs {
                state: Arc::new(Mutex::new(survivor)),
            });
            Err(power_is_off())
        }
        Some(n) => {
            state.power.changes_left = Some(n - 1);
            Ok(())
        }
        None => Ok(()),
    }
}

/// An in-memory filesystem with crash semantics: data survives a
/// [`MemFs::crash`] only once fsynced, directory changes only once their
/// directory is synced, and of the changes made since the last sync a random
/// prefix survives, the last one possibly torn (in-order write-back).
///
/// [`MemFs::crash`] is for a process that has stopped. To lose power while
/// the log is still running — in the middle of a group commit —
/// [`MemFs::cut_power_after`] or [`MemFs::cut_power`] freeze the image that
/// survives at that instant and make every later call fail, so nothing the
/// process does afterwards (the writer failing its batch, rolling back,
/// shutting down) reaches it; [`MemFs::after_power_cut`] returns it.
#[derive(Clone, Default)]
pub struct MemFs {
    state: Arc<Mutex<MemState>>,
}

fn guard(state: &Mutex<MemState>) -> MutexGuard<'_, MemState> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl MemFs {
    /// An empty filesystem.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every later `sync_data` fail (or succeed again) — the state a
    /// dying disk leaves a process in.
    pub fn set_fail_sync(&self, fail: bool) {
        guard(&self.state).fail_sync = fail;
    }

    /// Simulates power loss: unsynced directory changes are undone, and each
    /// file keeps its synced content plus a prefix (chosen by `seed`) of the
    /// changes made since, in order, the last kept write possibly torn.
    /// Call only after the log using it is dropped.
    pub fn crash(&self, seed: u64) {
        let mut state = guard(&self.state);
        *state = survivor_of(&state, seed);
    }

    /// Arms a power cut: the next `changes` changes (file writes, syncs and
    /// truncations, file creation, renames, removals, directory syncs) go
    /// through; the one after that does not happen, and the power goes off
    /// instead, as with [`MemFs::cut_power`]. Reads are not counted.
    pub fn cut_power_after(&self, changes: u64, seed: u64) {
        let mut state = guard(&self.state);
        state.power.changes_left = Some(changes);
        state.power.seed = seed;
    }

    /// Cuts the power now, while the process may still be running: returns
    /// the filesystem as it comes back (what [`MemFs::crash`] would keep,
    /// chosen by `seed`), and from now on every call on this one fails, so
    /// nothing done afterwards reaches the returned image. If the power is
    /// already off, returns the image of that cut.
    pub fn cut_power(&self, seed: u64) -> MemFs {
        let mut state = guard(&self.state);
        if let Some(survivor) = &state.power.survivor {
            return survivor.clone();
        }
        let survivor = MemFs {
            state: Arc::new(Mutex::new(survivor_of(&state, seed))),
        };
        state.power.survivor = Some(survivor.clone());
        survivor
    }

    /// The filesystem as it comes back from the power cut, once the power
    /// went off; `None` while it is on.
    pub fn after_power_cut(&self) -> Option<MemFs> {
        guard(&self.state).power.survivor.clone()
    }

    /// The bytes of a file as the process sees them, if it exists.
    pub fn read(&self, path: &Path) -> Option<Vec<u8>> {
        let state = guard(&self.state);
        let id = state.entries.get(path)?;
        state.files.get(id).map(|f| f.data.clone())
    }

    /// Overwrites a file's bytes (durably), for corruption tests.
    pub fn write(&self, path: &Path, data: Vec<u8>) {
        let mut state = guard(&self.state);
        if let Some(id) = state.entries.get(path).copied() {
            if let Some(file) = state.files.get_mut(&id) {
                file.durable = data.clone();
                file.data = data;
                file.pending.clear();
            }
        }
    }
}

struct MemHandle {
    state: Arc<Mutex<MemState>>,
    id: u64,
}

impl MemHandle {
    /// Runs `f` on the file, once the power check for a `change` (or a
    /// read) has passed.
    fn with<T>(
        &self,
        change: bool,
        f: impl FnOnce(&mut MemFile, bool) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut state = guard(&self.state);
        check_power(&mut state, change)?;
        let fail_sync = state.fail_sync;
        match state.files.get_mut(&self.id) {
            Some(file) => f(file, fail_sync),
            None => Err(io::Error::new(io::ErrorKind::NotFound, "file was lost")),
        }
    }
}

impl WalFile for MemHandle {
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.with(true, |f, _| {
            let change = Pending::Write {
                offset: offset as usize,
                bytes: buf.to_vec(),
            };
            apply(&mut f.data, &change);
            f.pending.push(change);
            Ok(())
        })
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.with(true, |f, fail| {
            if fail {
                return Err(io::Error::other("injected fsync failure"));
            }
            f.durable = f.data.clone();
            f.pending.clear();
            Ok(())
        })
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.with(true, |f, _| {
            let change = Pending::SetLen(len as usize);
            apply(&mut f.data, &change);
            f.pending.push(change);
            Ok(())
        })
    }
    fn size(&self) -> io::Result<u64> {
        self.with(false, |f, _| Ok(f.data.len() as u64))
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.with(false, |f, _| {
            let start = (offset as usize).min(f.data.len());
            let n = buf.len().min(f.data.len() - start);
            buf[..n].copy_from_slice(&f.data[start..start + n]);
            Ok(n)
        })
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{}", path.display()))
}

impl FileSystem for MemFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = guard(&self.state);
        check_power(&mut state, false)?;
        if !state.dirs.iter().any(|d| d == path) {
            state.dirs.push(path.to_path_buf());
        }
        Ok(())
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        let mut state = guard(&self.state);
        check_power(&mut state, false)?;
        Ok(state
            .entries
            .keys()
            .filter(|p| p.parent() == Some(path))
            .cloned()
            .collect())
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        let mut state = guard(&self.state);
        check_power(&mut state, true)?;
        let id = state.next_id;
        state.next_id += 1;
        state.files.insert(id, MemFile::default());
        state.entries.insert(path.to_path_buf(), id);
        Ok(Box::new(MemHandle {
            state: self.state.clone(),
            id,
        }))
    }
    fn open(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        let mut state = guard(&self.state);
        check_power(&mut state, false)?;
        let id = *state.entries.get(path).ok_or_else(|| not_found(path))?;
        Ok(Box::new(MemHandle {
            state: self.state.clone(),
            id,
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = guard(&self.state);
        check_power(&mut state, true)?;
        let id = state.entries.remove(from).ok_or_else(|| not_found(from))?;
        state.entries.insert(to.to_path_buf(), id);
        Ok(())
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = guard(&self.state);
        check_power(&mut state, true)?;
        state.entries.remove(path).ok_or_else(|| not_found(path))?;
        Ok(())
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = guard(&self.state);
        check_power(&mut state, true)?;
        let current: Vec<(PathBuf, u64)> = state
            .entries
            .iter()
            .filter(|(p, _)| p.parent() == Some(path))
            .map(|(p, id)| (p.clone(), *id))
            .collect();
        state
            .durable_entries
            .retain(|p, _| p.parent() != Some(path));
        state.durable_entries.extend(current);
        Ok(())
    }
    fn lock(&self, _path: &Path) -> io::Result<Box<dyn std::any::Any + Send + Sync>> {
        Ok(Box::new(()))
    }
}

/// The real filesystem with switchable faults: failing fsync, and ENOSPC
/// once a write budget is spent. Faults never reach files opened by the
/// thread that prepares the next segment in the background: a test's fault
/// lands on the writes and syncs it aims at, not on whichever thread gets
/// there first. (A segment the writer has to create itself still sees them.)
#[derive(Clone, Default)]
pub struct FaultyFs {
    faults: Arc<Faults>,
}

#[derive(Default)]
struct Faults {
    fail_sync: AtomicBool,
    /// Syncs that fail before they succeed again.
    failing_syncs: AtomicU64,
    /// Bytes that may still be appended before ENOSPC; `u64::MAX` = no limit.
    space_left: AtomicU64,
    limit_space: AtomicBool,
}

impl FaultyFs {
    /// The real filesystem with no fault switched on.
    pub fn new() -> Self {
        Self::default()
    }
    /// Makes every `sync_data` fail with EIO while `fail` is set.
    pub fn set_fail_sync(&self, fail: bool) {
        self.faults.fail_sync.store(fail, Ordering::SeqCst);
    }
    /// Makes the next `n` file syncs fail with EIO, then succeed again.
    pub fn fail_next_syncs(&self, n: u64) {
        self.faults.failing_syncs.store(n, Ordering::SeqCst);
    }
    /// Lets `bytes` more bytes be written, then fails writes with ENOSPC;
    /// `None` removes the limit.
    pub fn set_space_left(&self, bytes: Option<u64>) {
        self.faults
            .space_left
            .store(bytes.unwrap_or(u64::MAX), Ordering::SeqCst);
        self.faults
            .limit_space
            .store(bytes.is_some(), Ordering::SeqCst);
    }
}

struct FaultyFile {
    inner: Box<dyn WalFile>,
    faults: Arc<Faults>,
    /// False for files of the background preparation, which faults leave
    /// alone.
    faulty: bool,
}

impl WalFile for FaultyFile {
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        if self.faulty && self.faults.limit_space.load(Ordering::SeqCst) {
            let left = self.faults.space_left.load(Ordering::SeqCst);
            if (buf.len() as u64) > left {
                // A real disk may take part of the write before failing.
                self.inner.write_at(&buf[..left as usize], offset)?;
                self.faults.space_left.store(0, Ordering::SeqCst);
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.faults
                .space_left
                .store(left - buf.len() as u64, Ordering::SeqCst);
        }
        self.inner.write_at(buf, offset)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        if !self.faulty {
            return self.inner.sync_data();
        }
        let transient = self
            .faults
            .failing_syncs
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if transient || self.faults.fail_sync.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.inner.sync_data()
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
}

/// Whether faults reach a file opened now: not on the thread that prepares
/// segments in the background.
fn is_faulty() -> bool {
    std::thread::current().name() != Some(crate::writer::PREPARE_THREAD)
}

impl FileSystem for FaultyFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        StdFs.create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        StdFs.list_dir(path)
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        Ok(Box::new(FaultyFile {
            inner: StdFs.create(path)?,
            faults: self.faults.clone(),
            faulty: is_faulty(),
        }))
    }
    fn open(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        Ok(Box::new(FaultyFile {
            inner: StdFs.open(path)?,
            faults: self.faults.clone(),
            faulty: is_faulty(),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdFs.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        StdFs.remove_file(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        if self.faults.fail_sync.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        StdFs.sync_dir(path)
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn std::any::Any + Send + Sync>> {
        StdFs.lock(path)
    }
}
