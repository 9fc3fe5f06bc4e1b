//! This process's writer: group commit of appends into one transaction,
//! and what happens when a COMMIT's answer is lost (look it up; if it
//! cannot be looked up, settle it before any other append gets LSNs).

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use wal::{Result, WalError};

use crate::log::{describe, lock, unavailable, AppendRequest, Inner};

/// This process's writer: drains the appends waiting, commits them in one
/// transaction, answers each. Ends when the log is dropped.
///
/// After a batch whose COMMIT answer was lost it first settles that
/// batch's outcome, refusing every other append at once (`Unavailable`)
/// meanwhile: until it is known whether the batch took its LSNs, no other
/// batch may be given them. The batch's own appenders wait for the answer
/// up to `resolve_for`, then are told `OutcomeUnknown`; if the batch turns
/// out to have landed after that, its LSNs are sent to
/// [`PgLog::take_orphans`].
pub(crate) async fn run(
    inner: std::sync::Weak<Inner>,
    mut requests: mpsc::Receiver<AppendRequest>,
) {
    let mut unsettled: Option<Unsettled> = None;
    loop {
        if let Some(u) = unsettled.take() {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            unsettled = settle(&inner, u, &mut requests).await;
            continue;
        }
        let Some(first) = requests.recv().await else {
            return;
        };
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < inner.options.max_batch {
            match requests.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        unsettled = commit_batch(&inner, batch).await;
    }
}

/// A batch whose COMMIT answer was lost and whose outcome is not known yet.
struct Unsettled {
    last: u64,
    batch_id: i64,
    /// The batch's appenders with the answer each gets if it landed; empty
    /// once they were told the outcome is unknown.
    waiting: Vec<(AppendRequest, Result<u64>)>,
    /// When the waiting appenders are told the outcome is unknown.
    answer_by: tokio::time::Instant,
    /// Why the COMMIT's answer was lost, for the appenders' errors.
    why: String,
    /// The LSNs the batch took if it landed.
    lsns: Vec<u64>,
    pause: Duration,
}

/// One attempt to learn `u`'s outcome, refusing the appends that arrive
/// meanwhile. Returns `u` again while the outcome is still unknown.
async fn settle(
    inner: &Inner,
    mut u: Unsettled,
    requests: &mut mpsc::Receiver<AppendRequest>,
) -> Option<Unsettled> {
    let found = refusing_meanwhile(inner, requests, look_up(inner, u.last, u.batch_id)).await?;
    match found {
        Ok(landed) => {
            if landed {
                inner.saw_committed(u.last);
            }
            if u.waiting.is_empty() {
                if landed {
                    tracing::warn!(
                        last_lsn = u.last,
                        "an append whose outcome was reported unknown was committed after all"
                    );
                    let _ = inner.orphans.send(u.lsns);
                }
                return None;
            }
            let not_landed = WalError::Unavailable {
                context: "committing an append".into(),
                reason: format!("{}; the commit did not land", u.why),
            };
            let mut stats = lock(&inner.stats);
            stats.commits += u64::from(landed);
            for (request, answer) in u.waiting {
                let answer = if landed {
                    answer
                } else {
                    Err(copy_error(&not_landed))
                };
                match &answer {
                    Ok(_) => {
                        stats.records += 1;
                        stats.payload_bytes += request.payload.len() as u64;
                    }
                    Err(_) => stats.errors += 1,
                }
                let _ = request.done.send(answer);
            }
            None
        }
        Err(e) => {
            if !u.waiting.is_empty() && tokio::time::Instant::now() >= u.answer_by {
                let unknown = WalError::OutcomeUnknown {
                    context: "committing an append".into(),
                    reason: format!("{}; then, asking whether it landed: {e}", u.why),
                };
                lock(&inner.stats).errors += u.waiting.len() as u64;
                for (request, _) in u.waiting.drain(..) {
                    let _ = request.done.send(Err(copy_error(&unknown)));
                }
            }
            refusing_meanwhile(inner, requests, tokio::time::sleep(u.pause)).await?;
            u.pause = (u.pause * 2).min(Duration::from_secs(1));
            Some(u)
        }
    }
}

/// Runs `work`, refusing every append that arrives meanwhile; `None` when
/// the log was dropped (no more appends can come).
async fn refusing_meanwhile<T>(
    inner: &Inner,
    requests: &mut mpsc::Receiver<AppendRequest>,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return Some(done),
            request = requests.recv() => match request {
                Some(r) => refuse_while_settling(inner, r),
                None => return None,
            },
        }
    }
}

/// Answers an append that arrived while an earlier batch's outcome is
/// being settled: refused, nothing written.
fn refuse_while_settling(inner: &Inner, r: AppendRequest) {
    lock(&inner.stats).errors += 1;
    let _ = r.done.send(Err(WalError::Unavailable {
        context: "appending".into(),
        reason: "the log is still finding out whether an earlier append whose answer \
                 was lost was committed"
            .into(),
    }));
}

/// What the transaction of a batch decided before it was committed.
struct Planned {
    answers: Vec<Result<u64>>,
    last: u64,
    batch_id: i64,
    /// Payload bytes held once it commits.
    bytes: u64,
}

/// Commits `batch` in one transaction and answers each request, or, if
/// the COMMIT's answer was lost, returns the batch to settle.
async fn commit_batch(inner: &Inner, batch: Vec<AppendRequest>) -> Option<Unsettled> {
    let batch_id: i64 = random_batch_id();
    let started = std::time::Instant::now();
    let fail = |batch: Vec<AppendRequest>, e: &WalError| {
        lock(&inner.stats).errors += batch.len() as u64;
        for request in batch {
            let _ = request.done.send(Err(copy_error(e)));
        }
        None
    };
    let mut client = match inner.client("appending").await {
        Ok(c) => c,
        Err(e) => return fail(batch, &e),
    };
    let planned = inner
        .timed(
            "appending",
            plan_and_send(&mut client, inner, &batch, batch_id),
        )
        .await;
    let planned = match planned {
        Ok(p) => p,
        Err(e) => return fail(batch, &e),
    };
    let commit = client.execute("COMMIT", &[]);
    let lost = match tokio::time::timeout(inner.options.op_timeout, commit).await {
        Ok(Ok(_)) => None,
        // The server answered the COMMIT with an error: rolled back.
        Ok(Err(e)) if e.as_db_error().is_some() => {
            return fail(batch, &unavailable("committing an append")(e));
        }
        Ok(Err(e)) => Some(describe(&e)),
        Err(_) => Some(format!("no answer within {:?}", inner.options.op_timeout)),
    };
    if let Some(why) = lost {
        // Never hand this connection out again: its COMMIT may still run.
        drop(deadpool_postgres::Object::take(client));
        let lsns = planned.answers.iter();
        let lsns = lsns.filter_map(|a| a.as_ref().ok().copied()).collect();
        return Some(Unsettled {
            last: planned.last,
            batch_id: planned.batch_id,
            waiting: batch.into_iter().zip(planned.answers).collect(),
            answer_by: tokio::time::Instant::now() + inner.options.resolve_for,
            why,
            lsns,
            pause: Duration::from_millis(50),
        });
    }
    inner.saw_committed(planned.last);
    let took = started.elapsed();
    if let Some(hook) = &inner.options.on_commit {
        (hook.0)(took);
    }
    let mut stats = lock(&inner.stats);
    stats.commits += 1;
    for (request, answer) in batch.iter().zip(&planned.answers) {
        match answer {
            Ok(_) => {
                stats.records += 1;
                stats.payload_bytes += request.payload.len() as u64;
            }
            Err(_) => stats.errors += 1,
        }
    }
    stats.commit_seconds += took.as_secs_f64();
    stats.bytes_held = planned.bytes;
    drop(stats);
    for (request, answer) in batch.into_iter().zip(planned.answers) {
        let _ = request.done.send(answer);
    }
    None
}

/// Inside an open transaction on `client`: locks the head, takes LSNs for
/// the requests the cap admits, inserts them and moves the head. Leaves the
/// transaction open for the caller's COMMIT.
async fn plan_and_send(
    client: &mut deadpool_postgres::Client,
    inner: &Inner,
    batch: &[AppendRequest],
    batch_id: i64,
) -> Result<Planned> {
    let context = "appending";
    let fail = unavailable(context);
    client.execute("BEGIN", &[]).await.map_err(&fail)?;
    let result = async {
        let head = client
            .query_one(
                "SELECT last_lsn, bytes FROM chroma_ha_log_head WHERE id = 1 FOR UPDATE",
                &[],
            )
            .await
            .map_err(&fail)?;
        let (mut last, mut bytes) = (head.get::<_, i64>(0) as u64, head.get::<_, i64>(1) as u64);
        // A deposed leader appends nothing once a later term has begun.
        crate::lease::check_fence(&*client, inner.fence.load(Ordering::Acquire)).await?;
        let max = inner.options.max_bytes;
        let mut answers = Vec::with_capacity(batch.len());
        let mut lsns: Vec<i64> = Vec::new();
        let mut payloads: Vec<&[u8]> = Vec::new();
        for request in batch {
            let needed = request.payload.len() as u64;
            if request.capped && bytes + needed > max {
                answers.push(Err(WalError::LogFull {
                    used: bytes,
                    max,
                    needed,
                }));
                continue;
            }
            last += 1;
            bytes += needed;
            answers.push(Ok(last));
            lsns.push(last as i64);
            payloads.push(&request.payload);
        }
        if !lsns.is_empty() {
            client
                .execute(
                    "INSERT INTO chroma_ha_log_entries (lsn, batch, payload)
                     SELECT lsn, $3, payload FROM unnest($1::bigint[], $2::bytea[]) AS t(lsn, payload)",
                    &[&lsns, &payloads, &batch_id],
                )
                .await
                .map_err(&fail)?;
            client
                .execute(
                    "UPDATE chroma_ha_log_head SET last_lsn = $1, bytes = $2 WHERE id = 1",
                    &[&(last as i64), &(bytes as i64)],
                )
                .await
                .map_err(&fail)?;
        }
        Ok(Planned {
            answers,
            last,
            batch_id,
            bytes,
        })
    }
    .await;
    if result.is_err() {
        // Best effort: a broken connection is dropped by the pool anyway.
        let _ = client.execute("ROLLBACK", &[]).await;
    }
    result
}

/// Whether the batch `batch_id`, whose last LSN was to be `last`, was
/// committed. It first takes the head row's lock, so the transaction in
/// question has ended (committed or rolled back) when it looks: another
/// batch at `last`, or none, means ours rolled back.
async fn look_up(inner: &Inner, last: u64, batch_id: i64) -> Result<bool> {
    let context = "looking up an append";
    inner
        .timed(context, async {
            let mut client = inner.client(context).await?;
            let tx = client.transaction().await.map_err(unavailable(context))?;
            let first: i64 = tx
                .query_one(
                    "SELECT first_lsn FROM chroma_ha_log_head WHERE id = 1 FOR UPDATE",
                    &[],
                )
                .await
                .map_err(unavailable(context))?
                .get(0);
            if (last as i64) < first {
                // Deleted since: every cursor consumed it, so it landed.
                return Ok(true);
            }
            let row = tx
                .query_opt(
                    "SELECT batch FROM chroma_ha_log_entries WHERE lsn = $1",
                    &[&(last as i64)],
                )
                .await
                .map_err(unavailable(context))?;
            tx.rollback().await.map_err(unavailable(context))?;
            Ok(row.is_some_and(|r| r.get::<_, i64>(0) == batch_id))
        })
        .await
}

/// The same error for every request of a batch (the type is not `Clone`:
/// it may hold an `io::Error`).
fn copy_error(e: &WalError) -> WalError {
    match e {
        WalError::Unavailable { context, reason } => WalError::Unavailable {
            context: context.clone(),
            reason: reason.clone(),
        },
        WalError::OutcomeUnknown { context, reason } => WalError::OutcomeUnknown {
            context: context.clone(),
            reason: reason.clone(),
        },
        WalError::Closed => WalError::Closed,
        WalError::Fenced { held, current } => WalError::Fenced {
            held: *held,
            current: *current,
        },
        other => WalError::Unavailable {
            context: "appending".into(),
            reason: other.to_string(),
        },
    }
}

fn random_batch_id() -> i64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() as i64
}
