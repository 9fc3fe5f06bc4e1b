//! Filling an empty log with another log's records, keeping their LSNs (to
//! move a gateway from its file log to PostgreSQL: `chroma-ha log
//! migrate`). Cursors and applied states name LSNs, so the records must
//! keep theirs; the log then goes on from the last one.
//!
//! - [`PgLog::begin_import`] refuses a log that holds anything: an entry,
//!   a cursor, a state document, or a head that has moved.
//! - [`PgLog::import`] takes records whose LSNs continue the log densely
//!   and commits each call's records in one transaction, so an import cut
//!   short leaves a prefix, never a gap.

use bytes::Bytes;
use wal::WalError;

use crate::log::{unavailable, PgLog};

/// Why an import was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The target log is not empty.
    #[error("the target log is not empty ({0}); migrate only into an empty database")]
    NotEmpty(String),
    /// The records do not continue the log densely.
    #[error("the records do not continue the log: expected LSN {expected}, got {found}")]
    Gap {
        /// The LSN that had to come next.
        expected: u64,
        /// The one that came.
        found: u64,
    },
    /// PostgreSQL failed.
    #[error(transparent)]
    Log(#[from] WalError),
}

impl PgLog {
    /// Makes this empty log start at `first_lsn`: its next record is to
    /// have that LSN. Refuses a log that holds anything.
    pub async fn begin_import(&self, first_lsn: u64) -> Result<(), ImportError> {
        let inner = &self.inner;
        let context = "starting an import";
        let first_lsn = first_lsn.max(1);
        inner
            .timed(context, async {
                let mut client = inner.client(context).await?;
                let tx = client.transaction().await.map_err(unavailable(context))?;
                let fail = unavailable(context);
                let head = tx
                    .query_one(
                        "SELECT last_lsn, first_lsn FROM chroma_ha_log_head WHERE id = 1 FOR UPDATE",
                        &[],
                    )
                    .await
                    .map_err(&fail)?;
                let count = |table: &'static str| {
                    let sql = format!("SELECT count(*) FROM {table}");
                    let tx = &tx;
                    let fail = &fail;
                    async move {
                        let row = tx.query_one(sql.as_str(), &[]).await.map_err(fail)?;
                        Ok::<i64, WalError>(row.get(0))
                    }
                };
                let (last, first): (i64, i64) = (head.get(0), head.get(1));
                let mut found = Vec::new();
                if last != 0 || first != 1 {
                    found.push(format!("its LSNs run to {last}"));
                }
                for (table, what) in [
                    ("chroma_ha_log_entries", "entries"),
                    ("chroma_ha_log_cursors", "cursors"),
                    ("chroma_ha_state", "state documents"),
                ] {
                    let n = count(table).await?;
                    if n > 0 {
                        found.push(format!("{n} {what}"));
                    }
                }
                if !found.is_empty() {
                    return Ok(Err(ImportError::NotEmpty(found.join(", "))));
                }
                tx.execute(
                    "UPDATE chroma_ha_log_head SET first_lsn = $1, last_lsn = $2 WHERE id = 1",
                    &[&(first_lsn as i64), &(first_lsn as i64 - 1)],
                )
                .await
                .map_err(&fail)?;
                tx.commit().await.map_err(&fail)?;
                Ok(Ok(()))
            })
            .await??;
        inner
            .first
            .store(first_lsn, std::sync::atomic::Ordering::Release);
        inner.saw_committed(first_lsn - 1);
        Ok(())
    }

    /// Appends `records`, whose LSNs must continue the log densely, in one
    /// transaction, uncapped.
    pub async fn import(&self, records: &[(u64, Bytes)]) -> Result<(), ImportError> {
        let Some(&(last_lsn, _)) = records.last() else {
            return Ok(());
        };
        let inner = &self.inner;
        let context = "importing records";
        inner
            .timed(context, async {
                let fail = unavailable(context);
                let mut client = inner.client(context).await?;
                let tx = client.transaction().await.map_err(&fail)?;
                let head = tx
                    .query_one(
                        "SELECT last_lsn, bytes FROM chroma_ha_log_head WHERE id = 1 FOR UPDATE",
                        &[],
                    )
                    .await
                    .map_err(&fail)?;
                let (last, bytes): (i64, i64) = (head.get(0), head.get(1));
                let gap = (last as u64 + 1..)
                    .zip(records)
                    .find(|(expected, (lsn, _))| lsn != expected);
                if let Some((expected, (found, _))) = gap {
                    return Ok(Err(ImportError::Gap {
                        expected,
                        found: *found,
                    }));
                }
                let lsns: Vec<i64> = records.iter().map(|(l, _)| *l as i64).collect();
                let payloads: Vec<&[u8]> = records.iter().map(|(_, p)| p.as_ref()).collect();
                let added: i64 = records.iter().map(|(_, p)| p.len() as i64).sum();
                tx.execute(
                    "INSERT INTO chroma_ha_log_entries (lsn, batch, payload)
                     SELECT lsn, 0, payload FROM unnest($1::bigint[], $2::bytea[]) AS t(lsn, payload)",
                    &[&lsns, &payloads],
                )
                .await
                .map_err(&fail)?;
                tx.execute(
                    "UPDATE chroma_ha_log_head SET last_lsn = $1, bytes = $2 WHERE id = 1",
                    &[&(last_lsn as i64), &(bytes + added)],
                )
                .await
                .map_err(&fail)?;
                tx.commit().await.map_err(&fail)?;
                Ok(Ok(()))
            })
            .await??;
        inner.saw_committed(last_lsn);
        Ok(())
    }
}
