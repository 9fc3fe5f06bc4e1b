//! The leader lease: one process at a time leads the log (runs the
//! appliers and sends to Chroma). The lease row holds the holder, its
//! address (where followers forward requests), an epoch and an expiry.
//!
//! - Expiry is judged by PostgreSQL's clock (`now()`), the one clock every
//!   process shares, so no two processes disagree on whether it ran out.
//! - Taking an expired or empty lease starts a new epoch (epoch + 1).
//!   Renewing a live lease keeps the epoch.
//! - A holder may act only until [`Leadership::valid_until`]: the local
//!   instant its claim was *sent* plus the lease time. PostgreSQL set the
//!   expiry at least that late (it ran the statement after it was sent),
//!   so a holder that stops acting at `valid_until` has stopped before any
//!   successor can take the lease, without trusting the two clocks to
//!   agree on the time of day, only on the length of a second.
//! - Writes of shared state (appends, cursor commits, state documents)
//!   carry the epoch ([`PgLog::fence`]) and are refused
//!   ([`wal::WalError::Fenced`]) once a later epoch has begun.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use wal::{Result, WalError};

use crate::log::{unavailable, PgLog};

/// This process holds the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leadership {
    /// The epoch of its term.
    pub epoch: u64,
    /// Whether the claim began this term (a new epoch) rather than renewed
    /// it. A new leader waits out one lease time before sending to Chroma.
    pub new_term: bool,
    /// Whether this new term has no predecessor that may still act: the
    /// term before was ended by its holder ([`PgLog::release_lease`]), or
    /// no one ever held the lease. There is nothing to wait out then.
    pub predecessor_stopped: bool,
    /// Until when it may act, unless it renews before.
    pub valid_until: Instant,
}

/// Who leads the log, as a follower sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderInfo {
    /// The holder's name, if anyone ever held the lease.
    pub holder: Option<String>,
    /// Where the holder takes forwarded requests.
    pub address: Option<String>,
    /// The epoch in force.
    pub epoch: u64,
    /// How long the lease still runs (PostgreSQL's clock); `None` when it
    /// has run out or was never taken.
    pub expires_in: Option<Duration>,
    /// How long ago it was last renewed.
    pub renewed_ago: Option<Duration>,
    /// How long ago the epoch in force began.
    pub term_age: Option<Duration>,
}

/// The outcome of [`PgLog::claim_lease`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This process leads.
    Leader(Leadership),
    /// Another process leads.
    Follower(LeaderInfo),
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn duration(secs: Option<f64>) -> Option<Duration> {
    secs.filter(|s| *s > 0.0).map(Duration::from_secs_f64)
}

impl PgLog {
    /// Becomes or stays leader as `holder` (reachable at `address`) for
    /// `lease_time`, if the lease is free, expired, or already this
    /// holder's; otherwise says who leads.
    pub async fn claim_lease(
        &self,
        holder: &str,
        address: &str,
        lease_time: Duration,
    ) -> Result<Claim> {
        let sent = Instant::now();
        let inner = &self.inner;
        let context = "claiming the leader lease";
        inner
            .timed(context, async {
                let mut client = inner.client(context).await?;
                let tx = client.transaction().await.map_err(unavailable(context))?;
                let row = tx
                    .query_one(
                        "SELECT holder, address, epoch, coalesce(expires_at > now(), false),
                                extract(epoch FROM expires_at - now())::float8,
                                extract(epoch FROM now() - renewed_at)::float8,
                                extract(epoch FROM now() - term_started_at)::float8,
                                released
                         FROM chroma_ha_leader WHERE id = 1 FOR UPDATE",
                        &[],
                    )
                    .await
                    .map_err(unavailable(context))?;
                let current: Option<String> = row.get(0);
                let epoch = row.get::<_, i64>(2) as u64;
                let live: bool = row.get(3);
                let ours = current.as_deref() == Some(holder);
                if live && !ours {
                    return Ok(Claim::Follower(LeaderInfo {
                        holder: current,
                        address: row.get(1),
                        epoch,
                        expires_in: duration(row.get(4)),
                        renewed_ago: duration(row.get(5)),
                        term_age: duration(row.get(6)),
                    }));
                }
                let new_term = !(live && ours);
                let predecessor_stopped = new_term && (row.get::<_, bool>(7) || current.is_none());
                let epoch = if new_term { epoch + 1 } else { epoch };
                tx.execute(
                    "UPDATE chroma_ha_leader SET holder = $1, address = $2, epoch = $3,
                         expires_at = now() + make_interval(secs => $4),
                         renewed_at = now(), released = false,
                         term_started_at = CASE WHEN $5 THEN now() ELSE term_started_at END
                     WHERE id = 1",
                    &[
                        &holder,
                        &address,
                        &(epoch as i64),
                        &seconds(lease_time),
                        &new_term,
                    ],
                )
                .await
                .map_err(unavailable(context))?;
                tx.commit().await.map_err(unavailable(context))?;
                Ok(Claim::Leader(Leadership {
                    epoch,
                    new_term,
                    predecessor_stopped,
                    valid_until: sent + lease_time,
                }))
            })
            .await
    }

    /// Who leads now.
    pub async fn leader(&self) -> Result<LeaderInfo> {
        let inner = &self.inner;
        let context = "reading the leader lease";
        inner
            .timed(context, async {
                let client = inner.client(context).await?;
                let row = client
                    .query_one(
                        "SELECT holder, address, epoch,
                                extract(epoch FROM expires_at - now())::float8,
                                extract(epoch FROM now() - renewed_at)::float8,
                                extract(epoch FROM now() - term_started_at)::float8
                         FROM chroma_ha_leader WHERE id = 1",
                        &[],
                    )
                    .await
                    .map_err(unavailable(context))?;
                Ok(LeaderInfo {
                    holder: row.get(0),
                    address: row.get(1),
                    epoch: row.get::<_, i64>(2) as u64,
                    expires_in: duration(row.get(3)),
                    renewed_ago: duration(row.get(4)),
                    term_age: duration(row.get(5)),
                })
            })
            .await
    }

    /// Gives the lease up at once if `holder` holds it in `epoch` (a clean
    /// shutdown, after it stopped acting), so the next claimant need not
    /// wait for it to expire, nor wait out a lease once it has claimed
    /// ([`Leadership::predecessor_stopped`]).
    pub async fn release_lease(&self, holder: &str, epoch: u64) -> Result<()> {
        let inner = &self.inner;
        let context = "releasing the leader lease";
        inner
            .timed(context, async {
                let client = inner.client(context).await?;
                client
                    .execute(
                        "UPDATE chroma_ha_leader SET expires_at = now(), released = true
                         WHERE id = 1 AND holder = $1 AND epoch = $2",
                        &[&holder, &(epoch as i64)],
                    )
                    .await
                    .map_err(unavailable(context))?;
                Ok(())
            })
            .await
    }

    /// From now on this process's writes of shared state (appends, cursor
    /// commits, state documents) carry `epoch` and are refused once a later epoch has begun. `0`
    /// turns fencing off (a single gateway without a lease).
    pub fn fence(&self, epoch: u64) {
        self.inner.fence.store(epoch, Ordering::Release);
    }
}

/// Inside the transaction open on `tx`: refuses with `Fenced` when this process fences its writes
/// with an epoch (`fence` > 0) and a later one has begun. Holds the lease
/// row (shared) until `tx` ends, so no new term can begin meanwhile.
pub(crate) async fn check_fence<C: deadpool_postgres::GenericClient + Sync>(
    tx: &C,
    fence: u64,
) -> Result<()> {
    if fence == 0 {
        return Ok(());
    }
    let row = tx
        .query_one(
            "SELECT epoch FROM chroma_ha_leader WHERE id = 1 FOR SHARE",
            &[],
        )
        .await
        .map_err(unavailable("checking the leader's epoch"))?;
    let current = row.get::<_, i64>(0) as u64;
    if current != fence {
        return Err(WalError::Fenced {
            held: fence,
            current,
        });
    }
    Ok(())
}
