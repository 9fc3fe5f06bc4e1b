//! Fuzz harnesses of the on-disk formats (built for tests and with the
//! `fuzzing` feature; the cargo-fuzz targets in `fuzz/` call them).
//!
//! [`check_wal_frame`] takes arbitrary bytes as the content of the only
//! segment of a log and checks what every reader of that file must agree on:
//! the frame decoder, the buffered segment scanner, `verify`, `inspect` and
//! the recovery done at open. It panics when a property fails.

use std::collections::BTreeMap;
use std::path::Path;

use crate::frame::{self, Decoded, FRAME_HEADER};
use crate::fs::FileSystem;
use crate::inspect::{inspect_with, verify_with};
use crate::recovery::recover_last_segment;
use crate::segment::{self, ScanEnd, SegmentInfo, SegmentScanner, SEGMENT_HEADER};
use crate::testing::MemFs;

/// The record limit the harness decodes single frames with.
const MAX_PAYLOAD: usize = 1 << 20;

/// Checks the WAL's decoders on `data`, read as the whole content of the
/// only segment of a log (and, for the frame decoder, as a frame at offset
/// 0). The segment is named by the LSN of its first frame when that is
/// between 1 and 2^48 (so real segments of any position are valid seeds),
/// else by 1. Properties, each a panic when broken:
///
/// - `frame::decode` never reads past the buffer; a decoded record
///   re-encodes to exactly the bytes it consumed; `Incomplete` asks for more
///   bytes than there are; a frame is accepted only with a matching CRC.
/// - the segment scanner returns the records a plain decode loop over the
///   bytes finds, in LSN order from the segment's first LSN, and stops where that loop stops, for
///   the same reason;
/// - `verify` and `inspect` count the same records as the scanner;
/// - recovery never fails without cursors, keeps exactly those records,
///   and leaves a segment that `verify` finds clean.
pub fn check_wal_frame(data: &[u8]) {
    check_frame_at_start(data);
    check_segment(data);
}

fn check_frame_at_start(data: &[u8]) {
    match frame::decode(data, MAX_PAYLOAD) {
        Decoded::Record {
            lsn,
            payload,
            consumed,
        } => {
            assert!(consumed <= data.len(), "consumed past the buffer");
            assert_eq!(consumed, FRAME_HEADER + payload.len());
            let mut again = Vec::new();
            frame::encode(lsn, payload, &mut again);
            assert_eq!(
                again,
                &data[..consumed],
                "record does not re-encode to its bytes"
            );
        }
        Decoded::Incomplete { needed } => {
            assert!(
                needed > data.len(),
                "incomplete, yet {needed} bytes are there"
            );
            assert!(needed <= FRAME_HEADER + MAX_PAYLOAD);
        }
        Decoded::Invalid(_) => {
            assert!(
                data.len() >= FRAME_HEADER,
                "invalid before a header was read"
            );
        }
    }
}

/// The records a plain loop of `frame::decode` finds after the header, and
/// why it stopped.
fn reference_scan(body: &[u8], first_lsn: u64) -> (Vec<(u64, Vec<u8>)>, usize, ScanEnd) {
    let mut records = Vec::new();
    let mut pos = 0;
    let end = loop {
        match frame::decode(&body[pos..], u32::MAX as usize) {
            Decoded::Record {
                lsn,
                payload,
                consumed,
            } => {
                let expected = first_lsn + records.len() as u64;
                if lsn != expected {
                    break ScanEnd::Invalid(format!("expected LSN {expected}, found {lsn}"));
                }
                records.push((lsn, payload.to_vec()));
                pos += consumed;
            }
            Decoded::Invalid(reason) => break ScanEnd::Invalid(reason.into()),
            Decoded::Incomplete { .. } if pos == body.len() => break ScanEnd::Clean,
            Decoded::Incomplete { .. } => break ScanEnd::Torn,
        }
    };
    (records, pos, end)
}

/// The LSN the segment holding `data` is named by (see [`check_wal_frame`]).
fn first_lsn_of(data: &[u8]) -> u64 {
    let start = SEGMENT_HEADER as usize + 8;
    let Some(bytes) = data.get(start..start + 8) else {
        return 1;
    };
    let mut lsn = [0u8; 8];
    lsn.copy_from_slice(bytes);
    match u64::from_le_bytes(lsn) {
        lsn @ 1..=0x1_0000_0000_0000 => lsn,
        _ => 1,
    }
}

fn check_segment(data: &[u8]) {
    let fs = MemFs::new();
    let dir = Path::new("/wal");
    let first_lsn = first_lsn_of(data);
    let path = dir.join(segment::file_name(first_lsn));
    fs.create_dir_all(dir).expect("in-memory mkdir");
    {
        let mut file = fs.create(&path).expect("in-memory create");
        file.write_at(data, 0).expect("in-memory write");
        file.sync_data().expect("in-memory sync");
    }
    let file = fs.open(&path).expect("in-memory open");
    let header = segment::check_header(file.as_ref(), &path);
    let header_ok = data.len() >= SEGMENT_HEADER as usize
        && &data[..8] == segment::SEGMENT_MAGIC
        && data[8..12] == segment::FORMAT_VERSION.to_le_bytes();
    match &header {
        Ok(true) => assert!(header_ok, "a bad header was accepted"),
        Ok(false) => assert!(data.len() < SEGMENT_HEADER as usize),
        Err(_) => assert!(!header_ok && data.len() >= SEGMENT_HEADER as usize),
    }

    let verified = verify_with(&fs, dir);
    let inspected = inspect_with(&fs, dir);
    if !matches!(header, Ok(true)) {
        assert_eq!(
            header.is_err(),
            verified.is_err(),
            "verify and the header check disagree"
        );
        assert_eq!(
            header.is_err(),
            inspected.is_err(),
            "inspect and the header check disagree"
        );
        if header.is_ok() {
            let recovered =
                recover_last_segment(&fs, &segment_info(&path, first_lsn), &BTreeMap::new())
                    .expect("recovery of a torn header without cursors");
            assert_eq!(recovered.next_lsn, first_lsn);
            assert_eq!(recovered.valid_len, SEGMENT_HEADER);
        }
        return;
    }

    let body = &data[SEGMENT_HEADER as usize..];
    let (want, want_len, want_end) = reference_scan(body, first_lsn);
    let mut scanner = SegmentScanner::new(file.as_ref(), &path, first_lsn);
    let mut got = Vec::new();
    let end = loop {
        match scanner.next_record().expect("in-memory read") {
            Ok(record) => got.push((record.lsn, record.payload)),
            Err(end) => break end,
        }
    };
    assert_eq!(
        got, want,
        "the scanner and a plain decode loop found different records"
    );
    assert_eq!(end, want_end, "the scanner stopped for another reason");
    assert_eq!(scanner.offset(), SEGMENT_HEADER + want_len as u64);
    drop(file);

    let count = want.len() as u64;
    let zero_tail = body[want_len..].iter().all(|b| *b == 0);
    let report = verified.expect("verify of one segment without cursors");
    assert_eq!(report.records, count, "verify counts other records");
    assert_eq!(
        report.torn_tail.is_some(),
        !zero_tail && want_end != ScanEnd::Clean
    );
    let inspect = inspected.expect("inspect of one segment");
    assert_eq!(inspect.segments.len(), 1);
    assert_eq!(
        inspect.segments[0].last_lsn,
        (count > 0).then(|| first_lsn + count - 1)
    );

    let recovered = recover_last_segment(&fs, &segment_info(&path, first_lsn), &BTreeMap::new())
        .expect("recovery without cursors never refuses");
    assert_eq!(recovered.next_lsn, first_lsn + count);
    assert_eq!(recovered.valid_len, SEGMENT_HEADER + want_len as u64);
    assert_eq!(recovered.repair.is_some(), report.torn_tail.is_some());
    drop(recovered);
    let after = verify_with(&fs, dir).expect("verify after recovery");
    assert_eq!(after.records, count, "recovery lost or invented records");
    assert!(after.torn_tail.is_none(), "recovery left a damaged tail");

    // A cursor at the first LSN not held must make recovery refuse, and
    // change nothing.
    let before = fs.read(&path);
    let cursors = BTreeMap::from([("c".to_string(), first_lsn + count)]);
    assert!(recover_last_segment(&fs, &segment_info(&path, first_lsn), &cursors).is_err());
    assert_eq!(
        fs.read(&path),
        before,
        "a refused recovery changed the segment"
    );
}

fn segment_info(path: &Path, first_lsn: u64) -> SegmentInfo {
    SegmentInfo {
        first_lsn,
        path: path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fewer than the other harnesses: one input scans the segment six
    /// times, each filling a 256 KiB read buffer, which costs ~5 ms in an
    /// unoptimized test build (under libFuzzer, ~6000 inputs a second).
    const MUTATIONS: usize = 1000;

    #[test]
    fn wal_frame_harness_passes_on_its_corpus_and_mutations() {
        let ran = fuzz_corpus::exercise("wal_frame", MUTATIONS, check_wal_frame);
        assert!(ran.corpus >= 4, "corpus has only {} inputs", ran.corpus);
    }
}
