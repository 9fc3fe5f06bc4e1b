//! Read-only views of a log directory for operators: `inspect` (segments,
//! LSN ranges, cursors, sizes) and `verify` (every CRC of every segment).
//! Neither takes the directory lock nor changes a byte.

use crate::cursor::{self, CURSOR_DIR};
use crate::error::{Result, WalError};
use crate::fs::{FileSystem, StdFs};
use crate::log::list_segments;
use crate::recovery::check_cursors_before;
use crate::segment::{self, ScanEnd, SegmentScanner};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One segment as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentReport {
    /// Its path.
    pub path: PathBuf,
    /// LSN of its first record (from its name).
    pub first_lsn: u64,
    /// LSN of its last record; `None` when it holds none. For sealed
    /// segments under `inspect`, derived from the next segment's name.
    pub last_lsn: Option<u64>,
    /// File size in bytes.
    pub bytes: u64,
}

/// What `inspect` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InspectReport {
    /// Segments in LSN order.
    pub segments: Vec<SegmentReport>,
    /// Cursors and their positions.
    pub cursors: BTreeMap<String, u64>,
    /// Total bytes of all segments.
    pub total_bytes: u64,
}

/// What `verify` found when every record checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Segments checked.
    pub segments: usize,
    /// Records checked.
    pub records: u64,
    /// First and last LSN, if any record exists.
    pub lsn_range: Option<(u64, u64)>,
    /// A torn tail of the last segment that the next open will cut away
    /// (normal after a crash): file, offset, reason.
    pub torn_tail: Option<(PathBuf, u64, String)>,
}

fn file_len(fs: &dyn FileSystem, path: &Path) -> Result<u64> {
    let file = fs
        .open(path)
        .map_err(|e| WalError::io(format!("opening {}", path.display()), e))?;
    file.size()
        .map_err(|e| WalError::io(format!("reading length of {}", path.display()), e))
}

/// Lists segments and cursors. Scans only the last segment (for its last LSN).
pub fn inspect(dir: &Path) -> Result<InspectReport> {
    inspect_with(&StdFs, dir)
}

/// `inspect` over any filesystem.
pub fn inspect_with(fs: &dyn FileSystem, dir: &Path) -> Result<InspectReport> {
    let segments = list_segments(fs, dir)?;
    let mut reports = Vec::with_capacity(segments.len());
    for (i, s) in segments.iter().enumerate() {
        let bytes = file_len(fs, &s.path)?;
        let last_lsn = match segments.get(i + 1) {
            Some(next) => (next.first_lsn > s.first_lsn).then(|| next.first_lsn - 1),
            None => {
                let (count, _) = scan_segment(fs, &s.path, s.first_lsn)?;
                (count > 0).then(|| s.first_lsn + count - 1)
            }
        };
        reports.push(SegmentReport {
            path: s.path.clone(),
            first_lsn: s.first_lsn,
            last_lsn,
            bytes,
        });
    }
    let cursor_dir = dir.join(CURSOR_DIR);
    let cursors = if fs.list_dir(&cursor_dir).is_ok() {
        cursor::load_all(fs, &cursor_dir)?
    } else {
        BTreeMap::new()
    };
    Ok(InspectReport {
        total_bytes: reports.iter().map(|r| r.bytes).sum(),
        segments: reports,
        cursors,
    })
}

/// Scans one segment: how many valid records, and how it ended.
fn scan_segment(fs: &dyn FileSystem, path: &Path, first_lsn: u64) -> Result<(u64, (u64, ScanEnd))> {
    let file = fs
        .open(path)
        .map_err(|e| WalError::io(format!("opening {}", path.display()), e))?;
    if !segment::check_header(file.as_ref(), path)? {
        return Ok((0, (0, ScanEnd::Torn)));
    }
    let mut scanner = SegmentScanner::new(file.as_ref(), path, first_lsn);
    let mut count = 0;
    loop {
        match scanner.next_record()? {
            Ok(_) => count += 1,
            Err(end) => {
                let offset = scanner.offset();
                // Zeros after the last record are preallocated space.
                let end = if end != ScanEnd::Clean
                    && segment::is_zero_from(file.as_ref(), offset, path)?
                {
                    ScanEnd::Clean
                } else {
                    end
                };
                return Ok((count, (offset, end)));
            }
        }
    }
}

/// Checks every record of every segment: CRC, framing, dense LSNs across
/// segments, and every cursor file. Fails with `Corruption` naming the file
/// and offset of the first bad byte; a torn tail of the last segment is
/// reported, not failed, since opening the log repairs it — unless a cursor
/// has consumed records past it, which makes opening refuse, and so
/// `verify` fails with the same `Corruption`.
pub fn verify(dir: &Path) -> Result<VerifyReport> {
    verify_with(&StdFs, dir)
}

/// `verify` over any filesystem.
pub fn verify_with(fs: &dyn FileSystem, dir: &Path) -> Result<VerifyReport> {
    let segments = list_segments(fs, dir)?;
    let mut records = 0;
    let mut range: Option<(u64, u64)> = None;
    let mut torn_tail = None;
    // Where the last segment's records end: its path, offset, next LSN.
    let mut end_of_log = None;
    for (i, s) in segments.iter().enumerate() {
        let is_last = i + 1 == segments.len();
        let (count, (offset, end)) = scan_segment(fs, &s.path, s.first_lsn)?;
        let next_lsn = s.first_lsn + count;
        if is_last {
            end_of_log = Some((s.path.clone(), offset, next_lsn));
        }
        if end != ScanEnd::Clean {
            let reason = match end {
                ScanEnd::Invalid(r) => r,
                _ => "record is cut short".into(),
            };
            if is_last {
                torn_tail = Some((s.path.clone(), offset, reason));
            } else {
                return Err(WalError::Corruption {
                    file: s.path.clone(),
                    offset,
                    reason,
                });
            }
        }
        if let Some(next) = segments.get(i + 1) {
            if next.first_lsn != next_lsn {
                return Err(WalError::Corruption {
                    file: s.path.clone(),
                    offset,
                    reason: format!(
                        "segment ends before LSN {next_lsn} but the next segment starts at {}",
                        next.first_lsn
                    ),
                });
            }
        }
        if count > 0 {
            let first = range.map_or(s.first_lsn, |r| r.0);
            range = Some((first, next_lsn - 1));
        }
        records += count;
    }
    let cursor_dir = dir.join(CURSOR_DIR);
    if fs.list_dir(&cursor_dir).is_ok() {
        let cursors = cursor::load_all(fs, &cursor_dir)?;
        if let Some((path, offset, next_lsn)) = &end_of_log {
            let what = match &torn_tail {
                Some((_, _, reason)) => format!("damaged record ({reason})"),
                None => "the records end".into(),
            };
            check_cursors_before(&cursors, *next_lsn, path, *offset, &what)?;
        }
    }
    Ok(VerifyReport {
        segments: segments.len(),
        records,
        lsn_range: range,
        torn_tail,
    })
}
