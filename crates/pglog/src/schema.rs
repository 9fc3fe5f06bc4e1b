//! The log's tables, as numbered migrations applied in order at connect.

use tokio_postgres::Client;

/// The schema version this build writes and understands.
pub const LATEST: i32 = 4;

/// An arbitrary key for `pg_advisory_xact_lock`: processes that connect at
/// the same moment migrate one after the other.
const MIGRATION_LOCK: i64 = 0x6368_726f_6d61_6861; // "chromaha"

/// Migration `n` (1-based) is `MIGRATIONS[n - 1]`.
const MIGRATIONS: &[&str] = &[
    // 1: the log.
    "CREATE TABLE chroma_ha_log_head (
         id integer PRIMARY KEY CHECK (id = 1),
         last_lsn bigint NOT NULL,
         first_lsn bigint NOT NULL,
         bytes bigint NOT NULL
     );
     INSERT INTO chroma_ha_log_head VALUES (1, 0, 1, 0);
     CREATE TABLE chroma_ha_log_entries (
         lsn bigint PRIMARY KEY,
         batch bigint NOT NULL,
         payload bytea NOT NULL
     );
     CREATE TABLE chroma_ha_log_cursors (
         name text PRIMARY KEY,
         lsn bigint NOT NULL
     );",
    // 2: the leader lease.
    "CREATE TABLE chroma_ha_leader (
         id integer PRIMARY KEY CHECK (id = 1),
         holder text,
         address text,
         epoch bigint NOT NULL,
         expires_at timestamptz,
         renewed_at timestamptz
     );
     INSERT INTO chroma_ha_leader VALUES (1, NULL, NULL, 0, NULL, NULL);",
    // 3: shared state documents (applied state, id map, operator flags).
    "CREATE TABLE chroma_ha_state (
         key text PRIMARY KEY,
         value bytea NOT NULL,
         epoch bigint NOT NULL,
         updated_at timestamptz NOT NULL DEFAULT now()
     );",
    // 4: the gateways sharing the log, and when the leader's term began.
    "CREATE TABLE chroma_ha_gateways (
         name text PRIMARY KEY,
         address text NOT NULL,
         role text NOT NULL,
         epoch bigint NOT NULL,
         started_at timestamptz NOT NULL,
         seen_at timestamptz NOT NULL
     );
     ALTER TABLE chroma_ha_leader ADD COLUMN term_started_at timestamptz;
     ALTER TABLE chroma_ha_leader ADD COLUMN released boolean NOT NULL DEFAULT false;",
];

/// What [`migrate`] found wrong.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The database was migrated by a newer build.
    #[error(
        "the database's chroma-ha schema is version {found}, newer than this build knows \
         ({supported}); upgrade this gateway"
    )]
    TooNew {
        /// The version in the database.
        found: i32,
        /// [`LATEST`].
        supported: i32,
    },
    /// A statement failed.
    #[error("migrating the log's schema: {0}")]
    Postgres(#[from] tokio_postgres::Error),
}

/// Brings the database to [`LATEST`] and returns the version it had.
/// Refuses a newer one and changes nothing then.
pub async fn migrate(client: &mut Client) -> Result<i32, SchemaError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS chroma_ha_schema (version integer NOT NULL)")
        .await?;
    let found: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM chroma_ha_schema",
            &[],
        )
        .await?
        .get(0);
    if found > LATEST {
        return Err(SchemaError::TooNew {
            found,
            supported: LATEST,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = i as i32 + 1;
        tx.batch_execute(sql).await?;
        tx.execute("INSERT INTO chroma_ha_schema VALUES ($1)", &[&version])
            .await?;
        tracing::info!(version, "applied a migration of the log's schema");
    }
    tx.commit().await?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_latest_version_is_the_number_of_migrations() {
        assert_eq!(super::LATEST as usize, super::MIGRATIONS.len());
    }
}
