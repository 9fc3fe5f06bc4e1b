//! Segment files: naming, the header, and scanning records out of one file.

use crate::error::{Result, WalError};
use crate::frame::{self, Decoded};
use crate::fs::{FileSystem, WalFile};
use std::io;
use std::path::{Path, PathBuf};

/// Magic bytes at the start of every segment.
pub const SEGMENT_MAGIC: &[u8; 8] = b"CHAWALSG";
/// On-disk format version written after the magic.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes of the segment header: magic, version, reserved.
pub const SEGMENT_HEADER: u64 = 16;
/// File-name suffix of segments.
pub const SEGMENT_SUFFIX: &str = ".wal";
/// Name of the segment that is prepared ahead of need.
pub const PREPARED_NAME: &str = "next-segment.tmp";

/// The segment header bytes.
pub fn header() -> [u8; SEGMENT_HEADER as usize] {
    let mut h = [0u8; SEGMENT_HEADER as usize];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h
}

/// Creates a segment file at `path`: the header, then zeros up to `size`
/// bytes, all synced. Records are later written over the zeros, so making
/// them durable does not change the file's size: fdatasync has no metadata
/// to commit, which roughly halves its cost on ext4.
pub fn create_preallocated(
    fs: &dyn FileSystem,
    path: &Path,
    size: u64,
) -> io::Result<Box<dyn WalFile>> {
    const CHUNK: usize = 1 << 20;
    let mut file = fs.create(path)?;
    file.write_at(&header(), 0)?;
    let zeros = vec![0u8; CHUNK];
    let mut offset = SEGMENT_HEADER;
    while offset < size {
        let n = (size - offset).min(CHUNK as u64) as usize;
        file.write_at(&zeros[..n], offset)?;
        offset += n as u64;
    }
    file.sync_data()?;
    Ok(file)
}

/// Whether every byte of the file from `from` to its end is zero: the
/// preallocated space after the last record, not a torn write.
pub fn is_zero_from(file: &dyn WalFile, from: u64, path: &Path) -> Result<bool> {
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = from;
    loop {
        let n = read_fully(file, &mut buf, offset, path)?;
        if buf[..n].iter().any(|b| *b != 0) {
            return Ok(false);
        }
        if n < buf.len() {
            return Ok(true);
        }
        offset += n as u64;
    }
}

/// The file name of the segment whose first record has `first_lsn`: twenty
/// zero-padded digits, so that `ls` sorts segments by first LSN.
pub fn file_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}{SEGMENT_SUFFIX}")
}

/// The first LSN encoded in a segment's file name, if it is one.
pub fn parse_file_name(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// One segment as the log knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// LSN of its first record (or of the next record, while it is empty).
    pub first_lsn: u64,
    /// Its path.
    pub path: PathBuf,
}

/// Checks the header of an open segment. `Ok(false)` when the file is shorter
/// than a header (a torn creation), corruption when the bytes are wrong.
pub fn check_header(file: &dyn WalFile, path: &Path) -> Result<bool> {
    let mut buf = [0u8; SEGMENT_HEADER as usize];
    let n = read_fully(file, &mut buf, 0, path)?;
    if n < buf.len() {
        return Ok(false);
    }
    if &buf[..8] != SEGMENT_MAGIC {
        return Err(WalError::Corruption {
            file: path.to_path_buf(),
            offset: 0,
            reason: "not a segment: bad magic".into(),
        });
    }
    let version = u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]);
    if version != FORMAT_VERSION {
        return Err(WalError::Corruption {
            file: path.to_path_buf(),
            offset: 8,
            reason: format!("unknown format version {version}"),
        });
    }
    Ok(true)
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
pub fn read_fully(file: &dyn WalFile, buf: &mut [u8], offset: u64, path: &Path) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = file
            .read_at(&mut buf[filled..], offset + filled as u64)
            .map_err(|e| WalError::io(format!("reading {}", path.display()), e))?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// Why a scan stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanEnd {
    /// The file ended exactly after a record.
    Clean,
    /// The file ends inside a record's frame.
    Torn,
    /// A frame failed its checks, for this reason.
    Invalid(String),
}

/// A sequential reader of the records of one segment.
pub struct SegmentScanner<'a> {
    file: &'a dyn WalFile,
    path: &'a Path,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_offset: u64,
    /// Position of the next frame within `buf`.
    pos: usize,
    /// Bytes of `buf` that hold file data.
    filled: usize,
    eof: bool,
    expected_lsn: u64,
}

/// A record found by a scan.
#[derive(Debug)]
pub struct Scanned {
    /// Its LSN.
    pub lsn: u64,
    /// Its payload.
    pub payload: Vec<u8>,
}

const READ_CHUNK: usize = 256 * 1024;

impl<'a> SegmentScanner<'a> {
    /// Starts after the header, expecting the first record to carry `first_lsn`.
    /// Record lengths are bounded by what the file holds, never by the
    /// configured record limit: a limit lowered after records were written
    /// must not make them unreadable.
    pub fn new(file: &'a dyn WalFile, path: &'a Path, first_lsn: u64) -> Self {
        Self::at(file, path, SEGMENT_HEADER, first_lsn)
    }

    /// Starts at `offset`, where a record with `lsn` must begin.
    pub fn at(file: &'a dyn WalFile, path: &'a Path, offset: u64, lsn: u64) -> Self {
        Self {
            file,
            path,
            buf: Vec::new(),
            buf_offset: offset,
            pos: 0,
            filled: 0,
            eof: false,
            expected_lsn: lsn,
        }
    }

    /// Offset just after the last record returned: where valid data ends.
    pub fn offset(&self) -> u64 {
        self.buf_offset + self.pos as u64
    }

    /// The LSN the next record must carry.
    pub fn expected_lsn(&self) -> u64 {
        self.expected_lsn
    }

    /// Reads more of the file so that `needed` bytes from `pos` are in `buf`.
    fn fill(&mut self, needed: usize) -> Result<()> {
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.filled, 0);
            self.buf_offset += self.pos as u64;
            self.filled -= self.pos;
            self.pos = 0;
        }
        let want = needed.max(READ_CHUNK);
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        while self.filled < needed && !self.eof {
            let end = self.buf.len();
            let n = read_fully(
                self.file,
                &mut self.buf[self.filled..end],
                self.buf_offset + self.filled as u64,
                self.path,
            )?;
            if n < end - self.filled {
                self.eof = true;
            }
            self.filled += n;
        }
        Ok(())
    }

    /// The next record, or `Ok(Err(end))` saying why there is none. I/O
    /// errors are the outer error; what the bytes say is the inner one.
    pub fn next_record(&mut self) -> Result<std::result::Result<Scanned, ScanEnd>> {
        loop {
            let available = &self.buf[self.pos..self.filled];
            match frame::decode(available, u32::MAX as usize) {
                Decoded::Record {
                    lsn,
                    payload,
                    consumed,
                } => {
                    if lsn != self.expected_lsn {
                        return Ok(Err(ScanEnd::Invalid(format!(
                            "expected LSN {}, found {lsn}",
                            self.expected_lsn
                        ))));
                    }
                    let record = Scanned {
                        lsn,
                        payload: payload.to_vec(),
                    };
                    self.pos += consumed;
                    self.expected_lsn += 1;
                    return Ok(Ok(record));
                }
                Decoded::Invalid(reason) => return Ok(Err(ScanEnd::Invalid(reason.into()))),
                Decoded::Incomplete { needed } => {
                    if self.eof && self.filled - self.pos < needed {
                        return Ok(Err(if self.pos == self.filled {
                            ScanEnd::Clean
                        } else {
                            ScanEnd::Torn
                        }));
                    }
                    // A (corrupt) length larger than the rest of the file must
                    // not make us allocate it.
                    if needed > READ_CHUNK {
                        let size = self.file.size().map_err(|e| {
                            WalError::io(format!("reading length of {}", self.path.display()), e)
                        })?;
                        if self.offset() + needed as u64 > size {
                            return Ok(Err(ScanEnd::Torn));
                        }
                    }
                    self.fill(needed)?;
                    if self.eof && self.filled - self.pos < needed {
                        return Ok(Err(if self.pos == self.filled {
                            ScanEnd::Clean
                        } else {
                            ScanEnd::Torn
                        }));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_first_lsn_and_parse_back() {
        let names = [file_name(9), file_name(10), file_name(1_000_000)];
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, names);
        assert_eq!(parse_file_name(Path::new(&names[1])), Some(10));
        assert_eq!(parse_file_name(Path::new("00000000000000000010.tmp")), None);
        assert_eq!(parse_file_name(Path::new("10.wal")), None);
    }
}
