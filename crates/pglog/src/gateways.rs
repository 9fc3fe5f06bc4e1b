//! The registry of processes sharing the log: each reports its name,
//! address, role and epoch every few seconds, so that any of them can show
//! them all. It is informative only: nothing decides from it (the lease
//! decides who leads), so its writes are not fenced.
//!
//! Ages are measured by PostgreSQL's clock. A process not seen for a day
//! is dropped by the next report.

use std::time::Duration;

use wal::Result;

use crate::log::{unavailable, PgLog};

/// What one process says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayReport<'a> {
    /// Its name, unique among the processes sharing the log.
    pub name: &'a str,
    /// Where it takes requests.
    pub address: &'a str,
    /// Its role, as it names it (`leader`, `follower`, …).
    pub role: &'a str,
    /// The epoch it last knew.
    pub epoch: u64,
    /// Whether this is its first report since it started.
    pub first: bool,
}

/// One process as the registry last heard of it.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayRow {
    /// Its name.
    pub name: String,
    /// Where it takes requests.
    pub address: String,
    /// Its role when it last reported.
    pub role: String,
    /// The epoch it last knew.
    pub epoch: u64,
    /// How long ago it started.
    pub started_ago: Duration,
    /// How long ago it last reported.
    pub seen_ago: Duration,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

impl PgLog {
    /// Records `report`, and drops processes not seen for a day.
    pub async fn report_gateway(&self, report: &GatewayReport<'_>) -> Result<()> {
        let inner = &self.inner;
        let context = "reporting this gateway";
        inner
            .timed(context, async {
                let client = inner.client(context).await?;
                client
                    .execute(
                        "INSERT INTO chroma_ha_gateways VALUES ($1, $2, $3, $4, now(), now())
                         ON CONFLICT (name) DO UPDATE SET
                             address = excluded.address, role = excluded.role,
                             epoch = excluded.epoch, seen_at = now(),
                             started_at = CASE WHEN $5 THEN now()
                                               ELSE chroma_ha_gateways.started_at END",
                        &[
                            &report.name,
                            &report.address,
                            &report.role,
                            &(report.epoch as i64),
                            &report.first,
                        ],
                    )
                    .await
                    .map_err(unavailable(context))?;
                client
                    .execute(
                        "DELETE FROM chroma_ha_gateways WHERE seen_at < now() - interval '1 day'",
                        &[],
                    )
                    .await
                    .map_err(unavailable(context))?;
                Ok(())
            })
            .await
    }

    /// Every process seen in the last day, by name.
    pub async fn gateways(&self) -> Result<Vec<GatewayRow>> {
        let inner = &self.inner;
        let context = "listing the gateways";
        inner
            .timed(context, async {
                let client = inner.client(context).await?;
                let rows = client
                    .query(
                        "SELECT name, address, role, epoch,
                                extract(epoch FROM now() - started_at)::float8,
                                extract(epoch FROM now() - seen_at)::float8
                         FROM chroma_ha_gateways ORDER BY name",
                        &[],
                    )
                    .await
                    .map_err(unavailable(context))?;
                Ok(rows
                    .iter()
                    .map(|r| GatewayRow {
                        name: r.get(0),
                        address: r.get(1),
                        role: r.get(2),
                        epoch: r.get::<_, i64>(3) as u64,
                        started_ago: secs(r.get(4)),
                        seen_ago: secs(r.get(5)),
                    })
                    .collect())
            })
            .await
    }
}
