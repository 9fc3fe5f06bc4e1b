//! [`PgReader`]: a log's records in LSN order, then tailing.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use wal::{Record, Result, WalError};

use crate::log::{unavailable, Inner};

/// Rows fetched per query.
const PAGE: i64 = 512;

/// Yields records from a starting LSN in order; at the end of the log it
/// waits for more: woken at once by appends of its own process, and polling
/// every `poll_interval` for those of other processes.
pub struct PgReader {
    inner: Arc<Inner>,
    next_lsn: u64,
    buffered: VecDeque<Record>,
    last: tokio::sync::watch::Receiver<u64>,
}

impl PgReader {
    pub(crate) fn new(inner: Arc<Inner>, from: u64) -> Self {
        let last = inner.last.subscribe();
        PgReader {
            inner,
            next_lsn: from.max(1),
            buffered: VecDeque::new(),
            last,
        }
    }

    /// Fetches the rows from `next_lsn` on into the buffer. Rows are a
    /// prefix of the log (LSNs commit in order), so they must start at
    /// `next_lsn` and follow each other; a first row past it means the
    /// records were deleted.
    async fn fetch(&mut self) -> Result<()> {
        let inner = self.inner.clone();
        let from = self.next_lsn;
        let context = "reading the log";
        let (rows, first) = inner
            .timed(context, async {
                let client = inner.client(context).await?;
                let rows = client
                    .query(
                        "SELECT lsn, payload FROM chroma_ha_log_entries
                         WHERE lsn >= $1 ORDER BY lsn LIMIT $2",
                        &[&(from as i64), &PAGE],
                    )
                    .await
                    .map_err(unavailable(context))?;
                let first = if rows
                    .first()
                    .is_none_or(|r| r.get::<_, i64>(0) as u64 != from)
                {
                    let head = client
                        .query_one("SELECT first_lsn FROM chroma_ha_log_head WHERE id = 1", &[])
                        .await
                        .map_err(unavailable(context))?;
                    Some(head.get::<_, i64>(0) as u64)
                } else {
                    None
                };
                Ok((rows, first))
            })
            .await?;
        if let Some(first) = first {
            self.inner.first.fetch_max(first, Ordering::AcqRel);
            if from < first {
                return Err(WalError::Truncated {
                    requested: from,
                    first_available: first,
                });
            }
        }
        let mut expected = from;
        for row in rows {
            let lsn = row.get::<_, i64>(0) as u64;
            if lsn != expected {
                break;
            }
            let payload: Vec<u8> = row.get(1);
            self.buffered.push_back(Record {
                lsn,
                payload: payload.into(),
            });
            expected += 1;
        }
        if expected > from {
            self.inner.saw_committed(expected - 1);
        }
        Ok(())
    }

    fn pop(&mut self) -> Option<Record> {
        let record = self.buffered.pop_front()?;
        self.next_lsn = record.lsn + 1;
        Some(record)
    }
}

impl wal::LogRead for PgReader {
    fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    async fn next(&mut self) -> Result<Record> {
        loop {
            if let Some(record) = self.pop() {
                return Ok(record);
            }
            self.last.borrow_and_update();
            self.fetch().await?;
            if let Some(record) = self.pop() {
                return Ok(record);
            }
            let poll = self.inner.options.poll_interval;
            tokio::select! {
                _ = self.last.changed() => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    async fn try_next(&mut self) -> Result<Option<Record>> {
        if let Some(record) = self.pop() {
            return Ok(Some(record));
        }
        self.fetch().await?;
        Ok(self.pop())
    }
}
