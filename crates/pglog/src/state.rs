//! Shared state documents: small named values (a gateway's applied state,
//! its collection id map, its operator flags) kept next to the log, so
//! that any process on any machine that opens the log resumes from them.
//!
//! - A document is replaced whole, atomically: a reader sees the old value
//!   or the new one, never a mix.
//! - A write carries this process's epoch ([`PgLog::fence`]) and is refused
//!   with [`wal::WalError::Fenced`] once a later epoch has begun, in the
//!   same transaction that writes it: a deposed leader cannot overwrite
//!   what its successor wrote.
//! - A write that returns `Ok` is committed. One that fails may or may not
//!   have landed; the caller writes the document again (every write is a
//!   whole value, so a repeat is harmless).

use std::sync::atomic::Ordering;

use bytes::Bytes;
use wal::Result;

use crate::lease::check_fence;
use crate::log::{unavailable, PgLog};

impl PgLog {
    /// The document `key`, if it was ever written.
    pub async fn load_state(&self, key: &str) -> Result<Option<Bytes>> {
        let inner = &self.inner;
        let context = "reading shared state";
        inner
            .timed(context, async {
                let client = inner.client(context).await?;
                let row = client
                    .query_opt("SELECT value FROM chroma_ha_state WHERE key = $1", &[&key])
                    .await
                    .map_err(unavailable(context))?;
                Ok(row.map(|r| Bytes::from(r.get::<_, Vec<u8>>(0))))
            })
            .await
    }

    /// Replaces document `key` with `value`, fenced by this process's epoch.
    pub async fn store_state(&self, key: &str, value: &[u8]) -> Result<()> {
        let inner = &self.inner;
        let context = "writing shared state";
        inner
            .timed(context, async {
                let mut client = inner.client(context).await?;
                let tx = client.transaction().await.map_err(unavailable(context))?;
                let epoch = inner.fence.load(Ordering::Acquire);
                check_fence(&tx, epoch).await?;
                tx.execute(
                    "INSERT INTO chroma_ha_state (key, value, epoch) VALUES ($1, $2, $3)
                     ON CONFLICT (key) DO UPDATE
                     SET value = excluded.value, epoch = excluded.epoch, updated_at = now()",
                    &[&key, &value, &(epoch as i64)],
                )
                .await
                .map_err(unavailable(context))?;
                tx.commit().await.map_err(unavailable(context))?;
                Ok(())
            })
            .await
    }

    /// Every document whose key starts with `prefix`, in key order.
    pub async fn list_state(&self, prefix: &str) -> Result<Vec<(String, Bytes)>> {
        let inner = &self.inner;
        let context = "listing shared state";
        let pattern = format!("{}%", like_escape(prefix));
        inner
            .timed(context, async {
                let client = inner.client(context).await?;
                let rows = client
                    .query(
                        "SELECT key, value FROM chroma_ha_state WHERE key LIKE $1 ORDER BY key",
                        &[&pattern],
                    )
                    .await
                    .map_err(unavailable(context))?;
                Ok(rows
                    .into_iter()
                    .map(|r| (r.get::<_, String>(0), Bytes::from(r.get::<_, Vec<u8>>(1))))
                    .collect())
            })
            .await
    }

    /// Removes document `key` (nothing if it does not exist), fenced by
    /// this process's epoch.
    pub async fn remove_state(&self, key: &str) -> Result<()> {
        let inner = &self.inner;
        let context = "removing shared state";
        inner
            .timed(context, async {
                let mut client = inner.client(context).await?;
                let tx = client.transaction().await.map_err(unavailable(context))?;
                check_fence(&tx, inner.fence.load(Ordering::Acquire)).await?;
                tx.execute("DELETE FROM chroma_ha_state WHERE key = $1", &[&key])
                    .await
                    .map_err(unavailable(context))?;
                tx.commit().await.map_err(unavailable(context))?;
                Ok(())
            })
            .await
    }
}

/// `s` with LIKE's wildcards escaped (backslash is the default escape).
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
