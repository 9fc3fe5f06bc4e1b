//! [`PgLog`]: connect (and migrate), append with group commit, cursors.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use deadpool_postgres::{Config, ManagerConfig, Pool, PoolConfig, RecyclingMethod, Runtime};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::NoTls;
use wal::{Result, WalError};

use crate::reader::PgReader;
use crate::schema::{self, SchemaError};

/// How a [`PgLog`] runs.
#[derive(Debug, Clone)]
pub struct PgLogOptions {
    /// Cap on the payload bytes the log holds; capped appends past it fail
    /// with `LogFull`.
    pub max_bytes: u64,
    /// Largest payload accepted.
    pub max_record_bytes: usize,
    /// Most appends in one transaction.
    pub max_batch: usize,
    /// Connections in the pool (one is the writer's).
    pub pool_size: usize,
    /// How often a reader at the end of the log looks for records other
    /// processes appended (its own process's appends wake it at once).
    pub poll_interval: Duration,
    /// Longest wait for a connection, and for any one statement.
    pub op_timeout: Duration,
    /// How long an append whose commit answer was lost keeps asking
    /// whether it landed before it gives up with `OutcomeUnknown`.
    pub resolve_for: Duration,
    /// Consumed entries are deleted once at least this many can go (one
    /// large DELETE instead of one per cursor commit).
    pub delete_batch: u64,
    /// Told each committed append transaction's duration (from taking a
    /// connection to the COMMIT's answer), for metrics.
    pub on_commit: Option<CommitHook>,
    /// PostgreSQL ends a session of this process that stays idle this
    /// long inside a transaction (`idle_in_transaction_session_timeout`).
    /// This process sends a transaction's statements back to back, so
    /// only a process stopped or starved mid-transaction trips it, and
    /// then the locks it holds (the head row, the lease row) are freed
    /// instead of blocking every other process until it runs again.
    pub idle_in_transaction_timeout: Duration,
}

/// A callback for [`PgLogOptions::on_commit`].
#[derive(Clone)]
pub struct CommitHook(pub Arc<dyn Fn(Duration) + Send + Sync>);

impl std::fmt::Debug for CommitHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommitHook")
    }
}

impl Default for PgLogOptions {
    fn default() -> Self {
        PgLogOptions {
            max_bytes: 8 << 30,
            max_record_bytes: 64 << 20,
            max_batch: 512,
            pool_size: 8,
            poll_interval: Duration::from_millis(20),
            op_timeout: Duration::from_secs(5),
            resolve_for: Duration::from_secs(30),
            delete_batch: 10_000,
            on_commit: None,
            idle_in_transaction_timeout: Duration::from_secs(1),
        }
    }
}

/// Why [`PgLog::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL is not a PostgreSQL connection string.
    #[error("bad log URL: {0}")]
    BadUrl(String),
    /// PostgreSQL could not be reached, or refused.
    #[error("connecting to the log's database: {0}")]
    Unavailable(String),
    /// The schema is newer than this build, or a migration failed.
    #[error(transparent)]
    Schema(#[from] SchemaError),
}

/// Counters of this process's appends since it connected.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PgLogStats {
    /// Append transactions committed.
    pub commits: u64,
    /// Records those transactions held.
    pub records: u64,
    /// Payload bytes of those records.
    pub payload_bytes: u64,
    /// Appends that failed (refused by the cap, or PostgreSQL errors).
    pub errors: u64,
    /// Time spent in append transactions, from BEGIN to COMMIT's answer.
    pub commit_seconds: f64,
    /// Payload bytes the log held after this process's last commit.
    pub bytes_held: u64,
    /// The cap (`max_bytes`).
    pub max_bytes: u64,
}

/// The log in PostgreSQL. Cheap to clone; every clone is the same log.
#[derive(Clone)]
pub struct PgLog {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for PgLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLog")
            .field("last_lsn", &*self.inner.last.borrow())
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) pool: Pool,
    pub(crate) options: PgLogOptions,
    /// The highest LSN this process knows to be committed.
    pub(crate) last: watch::Sender<u64>,
    pub(crate) first: AtomicU64,
    cursors: Mutex<BTreeMap<String, u64>>,
    appends: mpsc::Sender<AppendRequest>,
    pub(crate) stats: Mutex<PgLogStats>,
    /// The epoch this process's shared-state writes carry (0: none).
    pub(crate) fence: AtomicU64,
    pub(crate) orphans: mpsc::UnboundedSender<Vec<u64>>,
    orphans_rx: Mutex<Option<mpsc::UnboundedReceiver<Vec<u64>>>>,
}

pub(crate) struct AppendRequest {
    pub(crate) payload: Bytes,
    pub(crate) capped: bool,
    pub(crate) done: oneshot::Sender<Result<u64>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A PostgreSQL error while doing `context`: nothing was written.
pub(crate) fn unavailable(context: &str) -> impl Fn(tokio_postgres::Error) -> WalError + '_ {
    move |e| WalError::Unavailable {
        context: context.to_string(),
        reason: describe(&e),
    }
}

/// The error with the server's message and detail when there is one.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

impl Inner {
    /// A pooled connection, within `op_timeout`.
    pub(crate) async fn client(&self, context: &str) -> Result<deadpool_postgres::Client> {
        self.pool.get().await.map_err(|e| WalError::Unavailable {
            context: context.to_string(),
            reason: e.to_string(),
        })
    }

    /// Runs `f` within `op_timeout`.
    pub(crate) async fn timed<T>(
        &self,
        context: &str,
        f: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.options.op_timeout, f).await {
            Ok(result) => result,
            Err(_) => Err(WalError::Unavailable {
                context: context.to_string(),
                reason: format!("no answer within {:?}", self.options.op_timeout),
            }),
        }
    }

    /// Notes that LSNs up to `lsn` are committed.
    pub(crate) fn saw_committed(&self, lsn: u64) {
        self.last.send_if_modified(|last| {
            let moved = lsn > *last;
            *last = (*last).max(lsn);
            moved
        });
    }
}

impl PgLog {
    /// Connects to the log at `url` (`postgres://user@host:port/db`),
    /// applies the migrations it lacks, and starts this process's writer.
    pub async fn connect(url: &str, options: PgLogOptions) -> Result<PgLog, ConnectError> {
        url.parse::<tokio_postgres::Config>()
            .map_err(|e| ConnectError::BadUrl(e.to_string()))?;
        let mut config = Config::new();
        config.url = Some(url.to_string());
        config.connect_timeout = Some(options.op_timeout);
        config.options = Some(format!(
            "-c idle_in_transaction_session_timeout={}",
            options.idle_in_transaction_timeout.as_millis().max(1)
        ));
        config.manager = Some(ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        });
        let mut pool_config = PoolConfig::new(options.pool_size.max(2));
        pool_config.timeouts.wait = Some(options.op_timeout);
        pool_config.timeouts.create = Some(options.op_timeout);
        pool_config.timeouts.recycle = Some(options.op_timeout);
        config.pool = Some(pool_config);
        let pool = config
            .create_pool(Some(Runtime::Tokio1), NoTls)
            .map_err(|e| ConnectError::BadUrl(e.to_string()))?;
        let mut client = pool
            .get()
            .await
            .map_err(|e| ConnectError::Unavailable(e.to_string()))?;
        schema::migrate(&mut client).await?;
        let head = client
            .query_one(
                "SELECT last_lsn, first_lsn FROM chroma_ha_log_head WHERE id = 1",
                &[],
            )
            .await
            .map_err(|e| ConnectError::Unavailable(describe(&e)))?;
        let (last, first): (i64, i64) = (head.get(0), head.get(1));
        let cursors = client
            .query("SELECT name, lsn FROM chroma_ha_log_cursors", &[])
            .await
            .map_err(|e| ConnectError::Unavailable(describe(&e)))?
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
            .collect();
        drop(client);
        let (appends, requests) = mpsc::channel(options.max_batch.max(1) * 4);
        let (orphans, orphans_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            pool,
            options,
            last: watch::channel(last as u64).0,
            first: AtomicU64::new(first as u64),
            cursors: Mutex::new(cursors),
            appends,
            stats: Mutex::new(PgLogStats::default()),
            fence: AtomicU64::new(0),
            orphans,
            orphans_rx: Mutex::new(Some(orphans_rx)),
        });
        tokio::spawn(crate::writer::run(Arc::downgrade(&inner), requests));
        Ok(PgLog { inner })
    }

    async fn append_request(&self, payload: Bytes, capped: bool) -> Result<u64> {
        let max = self.inner.options.max_record_bytes;
        if payload.len() > max {
            return Err(WalError::RecordTooLarge {
                size: payload.len(),
                max,
            });
        }
        let (done, answer) = oneshot::channel();
        let request = AppendRequest {
            payload,
            capped,
            done,
        };
        self.inner
            .appends
            .send(request)
            .await
            .map_err(|_| WalError::Closed)?;
        answer.await.map_err(|_| WalError::Closed)?
    }

    /// The LSNs of appends that failed with `OutcomeUnknown` and turned
    /// out to be committed: records in the log whose appender never got
    /// their LSN. The first call takes the receiver; later calls get `None`.
    pub fn take_orphans(&self) -> Option<mpsc::UnboundedReceiver<Vec<u64>>> {
        lock(&self.inner.orphans_rx).take()
    }

    /// This process's append counters.
    pub fn stats(&self) -> PgLogStats {
        PgLogStats {
            max_bytes: self.inner.options.max_bytes,
            ..*lock(&self.inner.stats)
        }
    }

    /// Bytes of payload the log holds, as PostgreSQL counts them now.
    pub async fn bytes(&self) -> Result<u64> {
        let inner = &self.inner;
        inner
            .timed("reading the log's size", async {
                let client = inner.client("reading the log's size").await?;
                let row = client
                    .query_one("SELECT bytes FROM chroma_ha_log_head WHERE id = 1", &[])
                    .await
                    .map_err(unavailable("reading the log's size"))?;
                Ok(row.get::<_, i64>(0) as u64)
            })
            .await
    }

    /// Moves cursor `name` to `lsn` (`Some`), creating it if needed, or
    /// removes it (`None`), in one transaction that holds the head row,
    /// checks this process's epoch, and deletes what every cursor consumed.
    async fn change_cursor(&self, name: &str, lsn: Option<u64>) -> Result<()> {
        validate_cursor_name(name)?;
        let inner = &self.inner;
        let context = match lsn {
            Some(_) => "committing a cursor",
            None => "removing a cursor",
        };
        let first = inner
            .timed(context, async {
                let mut client = inner.client(context).await?;
                let tx = client.transaction().await.map_err(unavailable(context))?;
                let head = tx
                    .query_one(
                        "SELECT last_lsn, first_lsn FROM chroma_ha_log_head WHERE id = 1 FOR UPDATE",
                        &[],
                    )
                    .await
                    .map_err(unavailable(context))?;
                let (last, first) = (head.get::<_, i64>(0) as u64, head.get::<_, i64>(1) as u64);
                crate::lease::check_fence(&tx, inner.fence.load(Ordering::Acquire)).await?;
                match lsn {
                    Some(lsn) if lsn > last || lsn + 1 < first => {
                        return Err(WalError::CursorOutOfRange {
                            name: name.to_string(),
                            lsn,
                            first,
                            last,
                        })
                    }
                    Some(lsn) => {
                        tx.execute(
                            "INSERT INTO chroma_ha_log_cursors VALUES ($1, $2)
                             ON CONFLICT (name) DO UPDATE SET lsn = EXCLUDED.lsn",
                            &[&name, &(lsn as i64)],
                        )
                        .await
                    }
                    None => {
                        tx.execute(
                            "DELETE FROM chroma_ha_log_cursors WHERE name = $1",
                            &[&name],
                        )
                        .await
                    }
                }
                .map_err(unavailable(context))?;
                let first = delete_consumed(&tx, first, inner.options.delete_batch).await?;
                tx.commit().await.map_err(unavailable(context))?;
                Ok(first)
            })
            .await?;
        let mut cursors = lock(&inner.cursors);
        match lsn {
            Some(lsn) => cursors.insert(name.to_string(), lsn),
            None => cursors.remove(name),
        };
        drop(cursors);
        inner.first.store(first, Ordering::Release);
        Ok(())
    }
}

/// Deletes the entries every cursor has consumed (none without cursors)
/// once at least `batch` of them can go, inside `tx`, which holds the head
/// row; returns the new first LSN.
async fn delete_consumed(
    tx: &tokio_postgres::Transaction<'_>,
    first: u64,
    batch: u64,
) -> Result<u64> {
    let context = "deleting consumed entries";
    let row = tx
        .query_one("SELECT min(lsn) FROM chroma_ha_log_cursors", &[])
        .await
        .map_err(unavailable(context))?;
    let Some(upto) = row.get::<_, Option<i64>>(0) else {
        return Ok(first);
    };
    let upto = upto as u64;
    if upto + 1 < first + batch.max(1) {
        return Ok(first);
    }
    let freed: Option<i64> = tx
        .query_one(
            "WITH gone AS (DELETE FROM chroma_ha_log_entries WHERE lsn <= $1 RETURNING payload)
             SELECT sum(length(payload))::bigint FROM gone",
            &[&(upto as i64)],
        )
        .await
        .map_err(unavailable(context))?
        .get(0);
    tx.execute(
        "UPDATE chroma_ha_log_head SET first_lsn = $1, bytes = bytes - $2 WHERE id = 1",
        &[&(upto as i64 + 1), &freed.unwrap_or(0)],
    )
    .await
    .map_err(unavailable(context))?;
    Ok(upto + 1)
}

fn validate_cursor_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(WalError::InvalidCursorName(name.to_string()))
    }
}

impl wal::Log for PgLog {
    type Reader = PgReader;

    async fn append(&self, payload: Bytes) -> Result<u64> {
        self.append_request(payload, true).await
    }

    async fn append_uncapped(&self, payload: Bytes) -> Result<u64> {
        self.append_request(payload, false).await
    }

    fn read_from(&self, lsn: u64) -> PgReader {
        PgReader::new(self.inner.clone(), lsn)
    }

    fn first_lsn(&self) -> u64 {
        self.inner.first.load(Ordering::Acquire)
    }

    fn last_lsn(&self) -> u64 {
        *self.inner.last.borrow()
    }

    fn cursors(&self) -> BTreeMap<String, u64> {
        lock(&self.inner.cursors).clone()
    }

    async fn commit_cursor(&self, name: &str, lsn: u64) -> Result<()> {
        self.change_cursor(name, Some(lsn)).await
    }

    async fn remove_cursor(&self, name: &str) -> Result<()> {
        self.change_cursor(name, None).await
    }
}
