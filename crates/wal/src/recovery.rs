//! Recovery at open: scanning the last segment, cutting a torn or corrupt
//! tail, and refusing to cut anything a cursor proves was durable.
//!
//! Readers only ever see durable records, and a cursor is only ever moved
//! to a record a reader could see. So a cursor at or past LSN *n* is proof
//! that record *n* was durable (under `Always` and `Batch`): if the log
//! ends before *n* after recovery, durable records were lost, and cutting
//! there would let new records reuse LSNs that consumer believes it has
//! already consumed. Recovery refuses with [`WalError::Corruption`] then.

use crate::error::{Result, WalError};
use crate::frame::{self, Decoded, FRAME_HEADER};
use crate::fs::{FileSystem, WalFile};
use crate::segment::{self, ScanEnd, SegmentInfo, SegmentScanner, SEGMENT_HEADER};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// What opening the log found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Segment files in the log.
    pub segments: usize,
    /// First LSN held.
    pub first_lsn: u64,
    /// Last LSN held (first_lsn - 1 when the log is empty).
    pub last_lsn: u64,
    /// Set when the last segment's tail was cut back.
    pub tail_repair: Option<TailRepair>,
}

/// A torn or corrupt tail of the last segment that opening cut away. Only
/// made when no cursor had consumed any of the records cut away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailRepair {
    /// The segment that was repaired.
    pub segment: PathBuf,
    /// Its length after the repair: where its last valid record ends.
    pub valid_bytes: u64,
    /// Bytes removed after that point (damaged data and the preallocated
    /// zeros after it).
    pub truncated_bytes: u64,
    /// The LSNs that survive in that segment, if any.
    pub surviving: Option<(u64, u64)>,
    /// The LSNs of the records cut away, first and last: the first is the
    /// LSN the damaged record should have carried; the last is the highest
    /// LSN of an intact record found after the damage, or the first if none
    /// was found. `None` when the segment's header was cut short (it could
    /// hold no record).
    pub discarded_lsns: Option<(u64, u64)>,
    /// The bytes of the segment that held data (damaged or intact records)
    /// and were cut away: from `valid_bytes` to the end of the last non-zero
    /// byte or intact record, whichever is later.
    pub discarded_bytes: Range<u64>,
    /// What was wrong with the first removed byte.
    pub reason: String,
}

/// The state of the last segment after recovery, for the writer.
pub(crate) struct Recovered {
    /// The last segment, open for appending.
    pub file: Box<dyn WalFile>,
    /// Where its last valid record ends.
    pub valid_len: u64,
    /// The LSN the next record gets.
    pub next_lsn: u64,
    /// What was cut away, if anything.
    pub repair: Option<TailRepair>,
}

fn io_err(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> WalError {
    let context = format!("{what} {}", path.display());
    move |e| WalError::io(context, e)
}

/// Fails with `Corruption` (naming `file` and `offset`) if any cursor is at
/// or past `next_lsn`, the first LSN the log no longer holds: that cursor's
/// consumer read the record, so it was durable and is now lost. `what`
/// says what was found at `offset`.
pub(crate) fn check_cursors_before(
    cursors: &BTreeMap<String, u64>,
    next_lsn: u64,
    file: &Path,
    offset: u64,
    what: &str,
) -> Result<()> {
    let Some((name, &position)) = cursors.iter().max_by_key(|(_, lsn)| **lsn) else {
        return Ok(());
    };
    if position < next_lsn {
        return Ok(());
    }
    Err(WalError::Corruption {
        file: file.to_path_buf(),
        offset,
        reason: format!(
            "{what} where LSN {next_lsn} should start, but cursor {name:?} has consumed up to \
             LSN {position}: records it read were durable and are lost; refusing to cut the \
             log there"
        ),
    })
}

/// Scans the last segment and cuts a torn or corrupt tail back to its last
/// valid record (durably), unless a cursor shows that what would be cut was
/// durable: then it fails with `Corruption` and changes nothing.
pub(crate) fn recover_last_segment(
    fs: &dyn FileSystem,
    last: &SegmentInfo,
    cursors: &BTreeMap<String, u64>,
) -> Result<Recovered> {
    let path = &last.path;
    let mut file = fs.open(path).map_err(io_err("opening", path))?;
    let file_len = file.size().map_err(io_err("reading length of", path))?;
    if !segment::check_header(file.as_ref(), path)? {
        // Torn at creation: no record fits, but a cursor may say one was there.
        let reason = "segment header was cut short";
        check_cursors_before(cursors, last.first_lsn, path, 0, reason)?;
        file.set_len(0).map_err(io_err("truncating", path))?;
        file.write_at(&segment::header(), 0)
            .map_err(io_err("writing", path))?;
        file.sync_data().map_err(io_err("syncing", path))?;
        let repair = TailRepair {
            segment: path.clone(),
            valid_bytes: SEGMENT_HEADER,
            truncated_bytes: file_len,
            surviving: None,
            discarded_lsns: None,
            discarded_bytes: 0..file_len,
            reason: reason.into(),
        };
        return Ok(Recovered {
            file,
            valid_len: SEGMENT_HEADER,
            next_lsn: last.first_lsn,
            repair: Some(repair),
        });
    }

    let mut scanner = SegmentScanner::new(file.as_ref(), path, last.first_lsn);
    let end = loop {
        if let Err(end) = scanner.next_record()? {
            break end;
        }
    };
    let valid = scanner.offset();
    let next = scanner.expected_lsn();
    // Zeros after the last record are preallocated space, not damage.
    let damaged = end != ScanEnd::Clean && !segment::is_zero_from(file.as_ref(), valid, path)?;
    let reason = match end {
        ScanEnd::Invalid(reason) if damaged => reason,
        ScanEnd::Torn if damaged => "last record is cut short".into(),
        _ => String::new(),
    };
    let found = if damaged {
        format!("damaged record ({reason})")
    } else {
        "the records end".into()
    };
    check_cursors_before(cursors, next, path, valid, &found)?;
    if !damaged {
        return Ok(Recovered {
            file,
            valid_len: valid,
            next_lsn: next,
            repair: None,
        });
    }

    let (last_intact, data_end) = scan_beyond_damage(file.as_ref(), path, valid, file_len, next)?;
    file.set_len(valid).map_err(io_err("truncating", path))?;
    file.sync_data().map_err(io_err("syncing", path))?;
    let discarded_lsns = Some((next, last_intact.unwrap_or(next)));
    tracing::warn!(
        segment = %path.display(),
        valid_bytes = valid,
        truncated_bytes = file_len - valid,
        ?discarded_lsns,
        discarded_bytes = ?(valid..data_end),
        %reason,
        "cut back the damaged tail of the write-ahead log; no cursor had consumed it"
    );
    let repair = TailRepair {
        segment: path.clone(),
        valid_bytes: valid,
        truncated_bytes: file_len.saturating_sub(valid),
        surviving: (next > last.first_lsn).then(|| (last.first_lsn, next - 1)),
        discarded_lsns,
        discarded_bytes: valid..data_end,
        reason,
    };
    Ok(Recovered {
        file,
        valid_len: valid,
        next_lsn: next,
        repair: Some(repair),
    })
}

/// Looks past damage at `from` (where LSN `next` should start) for intact
/// records with higher LSNs. Returns the highest LSN found, and where the
/// data ends: after the last intact record or non-zero byte.
fn scan_beyond_damage(
    file: &dyn WalFile,
    path: &Path,
    from: u64,
    file_len: u64,
    next: u64,
) -> Result<(Option<u64>, u64)> {
    let len = usize::try_from(file_len.saturating_sub(from)).map_err(|_| {
        WalError::io(
            format!("reading the damaged tail of {}", path.display()),
            std::io::Error::other("segment too large for memory"),
        )
    })?;
    let mut bytes = vec![0u8; len];
    let n = segment::read_fully(file, &mut bytes, from, path)?;
    bytes.truncate(n);
    // A frame takes at least FRAME_HEADER bytes, which bounds the LSNs
    // that can follow: anything further is not worth a CRC.
    let highest_possible = next.saturating_add((n / FRAME_HEADER) as u64);
    let mut last_lsn = None;
    let mut data_end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    let mut i = 1;
    while i + FRAME_HEADER <= bytes.len() {
        let mut lsn = [0u8; 8];
        lsn.copy_from_slice(&bytes[i + 8..i + 16]);
        let lsn = u64::from_le_bytes(lsn);
        if lsn > next && lsn <= highest_possible && last_lsn.is_none_or(|l| lsn > l) {
            if let Decoded::Record { consumed, .. } = frame::decode(&bytes[i..], u32::MAX as usize)
            {
                last_lsn = Some(lsn);
                i += consumed;
                data_end = data_end.max(i);
                continue;
            }
        }
        i += 1;
    }
    Ok((last_lsn, from + data_end as u64))
}
