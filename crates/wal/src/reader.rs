//! Readers: records in LSN order from any retained LSN, then tailing.

use crate::error::{Result, WalError};
use crate::fs::WalFile;
use crate::segment::{ScanEnd, SegmentScanner, SEGMENT_HEADER};
use crate::shared::{lock, read, Record, Shared};
use bytes::Bytes;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

/// Most records read from disk in one go.
const READ_BATCH_RECORDS: usize = 1024;
/// Most payload bytes read from disk in one go.
const READ_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// Where the next record starts on disk.
struct DiskPosition {
    segment_first: u64,
    path: PathBuf,
    file: Box<dyn WalFile>,
    offset: u64,
    next_lsn: u64,
}

/// Yields records in LSN order from a starting LSN; once it reaches the end
/// of the log it waits for new durable records (tailing). It never yields a
/// record that is not durable under the log's policy.
pub struct LogReader {
    shared: Arc<Shared>,
    next_lsn: u64,
    durable: watch::Receiver<u64>,
    disk: Option<DiskPosition>,
    buffered: VecDeque<Record>,
}

impl LogReader {
    pub(crate) fn new(shared: Arc<Shared>, from: u64) -> Self {
        let durable = shared.durable.subscribe();
        Self {
            shared,
            next_lsn: from.max(1),
            durable,
            disk: None,
            buffered: VecDeque::new(),
        }
    }

    /// The LSN of the record the next call returns.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// The next record, waiting for it if the reader is at the end of the
    /// log. Errors: `Truncated` if the record was deleted, `Corruption` if
    /// its bytes fail their checks, `Io`. After an error the same record is
    /// tried again by the next call.
    pub async fn next(&mut self) -> Result<Record> {
        loop {
            if let Some(record) = self.buffered.pop_front() {
                self.next_lsn = record.lsn + 1;
                return Ok(record);
            }
            let durable = *self.durable.borrow_and_update();
            if self.next_lsn > durable {
                if self.durable.changed().await.is_err() {
                    return Err(WalError::Closed);
                }
                continue;
            }
            let first = self.shared.first_lsn();
            if self.next_lsn < first {
                return Err(WalError::Truncated {
                    requested: self.next_lsn,
                    first_available: first,
                });
            }
            if let Some(record) = lock(&self.shared.cache).get(self.next_lsn) {
                self.next_lsn += 1;
                return Ok(record);
            }
            self.read_from_disk(durable).await?;
        }
    }

    /// The next record if one is durable now, without waiting.
    pub async fn try_next(&mut self) -> Result<Option<Record>> {
        if self.buffered.is_empty() && self.next_lsn > *self.durable.borrow() {
            return Ok(None);
        }
        self.next().await.map(Some)
    }

    /// Turns the reader into a stream of records (it never ends by itself).
    pub fn into_stream(self) -> impl futures::Stream<Item = Result<Record>> {
        futures::stream::unfold(self, |mut reader| async move {
            let item = reader.next().await;
            Some((item, reader))
        })
    }

    async fn read_from_disk(&mut self, durable: u64) -> Result<()> {
        let shared = self.shared.clone();
        let from = self.next_lsn;
        let position = self.disk.take();
        let (records, position) =
            tokio::task::spawn_blocking(move || read_batch(&shared, position, from, durable))
                .await
                .map_err(|e| {
                    WalError::io("reading the log", std::io::Error::other(e.to_string()))
                })??;
        self.disk = position;
        self.buffered = records;
        Ok(())
    }
}

fn corruption(path: &std::path::Path, offset: u64, reason: String) -> WalError {
    WalError::Corruption {
        file: path.to_path_buf(),
        offset,
        reason,
    }
}

/// Opens the segment holding `lsn` and positions just before that record.
fn seek(shared: &Shared, lsn: u64) -> Result<DiskPosition> {
    let segment = {
        let segments = read(&shared.segments);
        let first = segments.first().map_or(1, |s| s.first_lsn);
        if lsn < first {
            return Err(WalError::Truncated {
                requested: lsn,
                first_available: first,
            });
        }
        let index = segments.partition_point(|s| s.first_lsn <= lsn) - 1;
        segments[index].clone()
    };
    let file = shared.options.fs.open(&segment.path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            WalError::Truncated {
                requested: lsn,
                first_available: shared.first_lsn(),
            }
        } else {
            WalError::io(format!("opening {}", segment.path.display()), e)
        }
    })?;
    let mut position = DiskPosition {
        segment_first: segment.first_lsn,
        path: segment.path,
        file,
        offset: SEGMENT_HEADER,
        next_lsn: segment.first_lsn,
    };
    // Skip the records before `lsn`.
    let mut scanner = SegmentScanner::at(
        position.file.as_ref(),
        &position.path,
        position.offset,
        position.next_lsn,
    );
    while scanner.expected_lsn() < lsn {
        match scanner.next_record()? {
            Ok(_) => {}
            Err(end) => {
                return Err(corruption(
                    &position.path,
                    scanner.offset(),
                    format!("record {} is missing: {end:?}", scanner.expected_lsn()),
                ))
            }
        }
    }
    position.offset = scanner.offset();
    position.next_lsn = lsn;
    Ok(position)
}

/// Reads records `from..=durable` (at most one batch) from disk.
fn read_batch(
    shared: &Shared,
    position: Option<DiskPosition>,
    from: u64,
    durable: u64,
) -> Result<(VecDeque<Record>, Option<DiskPosition>)> {
    let mut position = match position {
        Some(p) if p.next_lsn == from => p,
        _ => seek(shared, from)?,
    };
    let mut records = VecDeque::new();
    let mut bytes = 0;
    while position.next_lsn <= durable
        && records.len() < READ_BATCH_RECORDS
        && bytes < READ_BATCH_BYTES
    {
        let mut scanner = SegmentScanner::at(
            position.file.as_ref(),
            &position.path,
            position.offset,
            position.next_lsn,
        );
        let mut end = None;
        while scanner.expected_lsn() <= durable
            && records.len() < READ_BATCH_RECORDS
            && bytes < READ_BATCH_BYTES
        {
            match scanner.next_record()? {
                Ok(scanned) => {
                    bytes += scanned.payload.len();
                    records.push_back(Record {
                        lsn: scanned.lsn,
                        payload: Bytes::from(scanned.payload),
                    });
                }
                Err(e) => {
                    end = Some(e);
                    break;
                }
            }
        }
        position.offset = scanner.offset();
        position.next_lsn = scanner.expected_lsn();
        match end {
            None => {}
            Some(ScanEnd::Clean) => {
                // The segment ended: the next one must start exactly here.
                let next = {
                    let segments = read(&shared.segments);
                    segments
                        .iter()
                        .find(|s| s.first_lsn > position.segment_first)
                        .cloned()
                };
                match next {
                    Some(next) if next.first_lsn == position.next_lsn => {
                        position = seek(shared, next.first_lsn)?;
                    }
                    Some(next) => {
                        return Err(corruption(
                            &position.path,
                            position.offset,
                            format!(
                                "segment ends before LSN {} but the next segment starts at {}",
                                position.next_lsn, next.first_lsn
                            ),
                        ))
                    }
                    None => {
                        return Err(corruption(
                            &position.path,
                            position.offset,
                            format!("durable record {} is missing", position.next_lsn),
                        ))
                    }
                }
            }
            Some(other) => {
                return Err(corruption(
                    &position.path,
                    position.offset,
                    match other {
                        ScanEnd::Invalid(reason) => reason,
                        _ => "record is cut short".into(),
                    },
                ))
            }
        }
    }
    Ok((records, Some(position)))
}
