//! A restored backup joins the gateway as one of its servers through the
//! rebuild's last step (`chroma-ha restore --from DIR --join SERVER`):
//!
//! 1. [`prepare`] (`POST /admin/servers/SERVER/join/prepare`, the backup's
//!    LSN X, the entries above it it holds and its log's identity): refused
//!    at once, changing nothing, if the backup comes from another log, or
//!    if the log no longer holds what follows X or never reached X.
//!    Otherwise SERVER is marked rebuilding (no reads, never executor, kept
//!    across restarts), paused, and its applier restarted at X; its log
//!    cursor at X keeps everything after X in the log from then on.
//! 2. The CLI clears SERVER and restores the backup into it.
//! 3. [`finish`] (`POST /admin/servers/SERVER/join/finish`, the restored
//!    collections' ids): SERVER must still stand at X; its collection ids
//!    are linked to the logical ids the backup recorded, the mark is
//!    cleared and its applier replays what the log took after X.
//!
//! An interruption between the steps leaves SERVER marked: running
//! `restore --join` again (or a rebuild) starts over.

use super::job::{conflict, index_of};
use super::Rebuilds;
use crate::chroma::GatewayError;
use crate::http::AppState;
use crate::replication::applied::AppliedState;
use crate::replication::idmap::ServerLink;
use crate::replication::rebuild_ops::RebuildMark;
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wal::Log as _;

/// The source shown in a joining server's rebuild mark.
/// (Not a valid server name: server names are log cursor names.)
pub const RESTORE_SOURCE: &str = "(backup)";

/// Where a backup stands in the log: every record up to `lsn`, and the
/// entries of `applied_above`.
#[derive(Debug, Clone, Deserialize)]
pub struct JoinPosition {
    /// The backup's LSN.
    pub lsn: u64,
    /// Entries above it the backup holds too.
    #[serde(default)]
    pub applied_above: Vec<u64>,
    /// The identity of the log the backup was taken through, if it
    /// recorded one.
    #[serde(default)]
    pub log_id: Option<String>,
}

impl JoinPosition {
    fn state(&self) -> AppliedState {
        AppliedState {
            cursor: self.lsn,
            above: self.applied_above.iter().copied().collect(),
        }
    }
}

/// The body of `join/finish`: the position again and the restored
/// collections.
#[derive(Debug, Clone, Deserialize)]
pub struct JoinFinish {
    /// The position given to `join/prepare`.
    #[serde(flatten)]
    pub position: JoinPosition,
    /// Every collection restored onto the server: its logical id (from the
    /// backup; `null` for one made outside the gateway, adopted by name)
    /// and its new id there.
    pub collections: Vec<ServerLink>,
}

fn refused(name: &'static str, message: String) -> GatewayError {
    GatewayError::new(http::StatusCode::CONFLICT, name, message)
}

/// Refuses, changing nothing, a position the log cannot continue from.
fn check_log_holds(app: &AppState, server: &str, at: &JoinPosition) -> Result<(), GatewayError> {
    let wal = app.rep.wal();
    let (first, last) = (wal.first_lsn(), wal.last_lsn());
    if let Some(theirs) = at.log_id.as_deref().filter(|id| *id != app.rep.log_id()) {
        return Err(refused(
            "JoinRefused",
            format!(
                "the backup was taken through another log (identity {theirs}; this gateway's log \
                 is {}): its LSN means nothing here; fill {server} with `chroma-ha rebuild \
                 {server} --from SOURCE` instead",
                app.rep.log_id()
            ),
        ));
    }
    if at.lsn > last {
        return Err(refused(
            "JoinRefused",
            format!(
                "the backup stands at LSN {}, but this gateway's log ends at LSN {last}: it was \
                 taken through another gateway's log; fill {server} with `chroma-ha rebuild \
                 {server} --from SOURCE` instead",
                at.lsn
            ),
        ));
    }
    if first > at.lsn + 1 {
        return Err(refused(
            "LogNoLongerHolds",
            format!(
                "the log no longer holds what follows the backup's LSN {}: it begins at LSN \
                 {first} (records before it were deleted once every server had applied them). \
                 Joined so, {server} would lack writes nothing can replay; fill it with \
                 `chroma-ha rebuild {server} --from SOURCE` instead",
                at.lsn
            ),
        ));
    }
    if let Some(bad) = at
        .applied_above
        .iter()
        .find(|l| **l <= at.lsn || **l > last)
    {
        return Err(GatewayError::new(
            http::StatusCode::BAD_REQUEST,
            "InvalidArgumentError",
            format!(
                "applied_above holds LSN {bad}, which is not above the backup's LSN {} or not in \
                 the log",
                at.lsn
            ),
        ));
    }
    Ok(())
}

/// Refuses while a rebuild of `server`, or from it, runs.
fn refuse_while_rebuilding(rebuilds: &Rebuilds, server: &str) -> Result<(), GatewayError> {
    match rebuilds.running() {
        Some((target, source)) if target == server || source == server => Err(conflict(format!(
            "a rebuild of {target} from {source} is running: join {server} when it is over"
        ))),
        _ => Ok(()),
    }
}

/// Step 1: marks `server` rebuilding, pauses it and sets its position to
/// the backup's; refused at once if the log cannot continue from there.
pub async fn prepare(
    app: Arc<AppState>,
    rebuilds: &Rebuilds,
    server: &str,
    at: JoinPosition,
) -> Result<serde_json::Value, GatewayError> {
    let index = index_of(&app, server)?;
    refuse_while_rebuilding(rebuilds, server)?;
    check_log_holds(&app, server, &at)?;
    let rep = &app.rep;
    let mark = RebuildMark {
        source: RESTORE_SOURCE.to_string(),
        source_paused: false,
    };
    let marked = async {
        rep.set_rebuilding(index, Some(mark)).await?;
        rep.set_paused(index, true).await
    }
    .await;
    marked.map_err(|e| GatewayError::internal(format!("marking {server} rebuilding: {e}")))?;
    rep.restart_applier_at(index, at.state())
        .await
        .map_err(|e| {
            refused(
                "JoinRefused",
                format!("{e}; {server} stays marked rebuilding: fill it with `chroma-ha rebuild`"),
            )
        })?;
    tracing::warn!(%server, lsn = at.lsn, "join: marked rebuilding, position set to the backup's; restore it now");
    Ok(serde_json::json!({
        "server": server,
        "url": rep.backends().all()[index].config().url,
        "lsn": at.lsn,
        "first_lsn": rep.wal().first_lsn(),
        "last_lsn": rep.wal().last_lsn(),
        "prepared": true,
    }))
}

/// Step 3: links the restored collections and lets `server` replay what
/// follows the backup.
pub async fn finish(
    app: Arc<AppState>,
    server: &str,
    request: JoinFinish,
) -> Result<serde_json::Value, GatewayError> {
    let index = index_of(&app, server)?;
    // A rebuild of it since the prepare would have marked it as its own.
    let rep = &app.rep;
    let marked_for_restore = rep
        .rebuild_mark(index)
        .is_some_and(|m| m.source == RESTORE_SOURCE);
    if !marked_for_restore {
        return Err(refused(
            "JoinRefused",
            format!(
                "{server} was not prepared for a join: run `chroma-ha restore --join {server}`"
            ),
        ));
    }
    // The applier was restarted paused at the backup's position; it must
    // stand there still (nothing else moved it since).
    let expected = request.position.state();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match rep.progress(index).paused_at {
            Some(at) if at == expected => break,
            Some(at) => {
                return Err(refused(
                    "JoinRefused",
                    format!(
                        "{server} stands at LSN {} (applied above: {:?}), not at the backup's LSN \
                         {}: it was prepared for another backup; run `chroma-ha restore --join \
                         {server}` again",
                        at.cursor, at.above, expected.cursor
                    ),
                ))
            }
            None if Instant::now() > deadline => {
                return Err(GatewayError::service_unavailable(format!(
                    "the applier of {server} did not stand still within 30 s"
                )))
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let collections = request.collections.len();
    rep.take_copied_content(index, &request.collections)
        .await
        .map_err(|e| GatewayError::internal(format!("joining {server}: {e}")))?;
    let behind = rep.wal().last_lsn().saturating_sub(expected.cursor);
    tracing::warn!(%server, lsn = expected.cursor, collections, behind, "join: restored server linked; it replays from the backup's LSN");
    Ok(serde_json::json!({
        "server": server,
        "lsn": expected.cursor,
        "collections": collections,
        "log_records_after": behind,
        "joined": true,
    }))
}
