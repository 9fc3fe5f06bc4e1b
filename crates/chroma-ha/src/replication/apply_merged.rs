//! Sending a merged request of replays (see [`super::merge`]), and finding
//! the entry at fault when the server refuses it: split in halves, each half
//! sent again, down to single entries, which take the ordinary replay path
//! (retries, give-up, dead letter). So only an entry Chroma refuses on its
//! own is dead-lettered, and every other entry of the request is applied.

use super::applier::{TaskEnd, Work};
use super::apply_entry::{backoff, describe, replay};
use super::progress::ApplierState;
use super::record::Entry;
use super::Replicator;
use crate::chroma::merge::{merged_body, MergePart};
use crate::chroma::{replay_outcome, ReplayOutcome};
use std::collections::VecDeque;
use std::sync::Arc;

/// Transient failures of a merged request before it is split (its halves,
/// smaller, may fit where it does not, e.g. in the request timeout).
const MERGED_TRIES: u32 = 3;

/// Applies the committed entries `members` (log order, pairwise free of
/// conflicts, one merge key) on server `index`, and returns how each ended.
pub(super) async fn replay_merged(
    rep: &Arc<Replicator>,
    index: usize,
    members: Vec<(u64, Work)>,
) -> Vec<(u64, TaskEnd)> {
    let name = rep.backends.all()[index].name().to_string();
    let mut ends = Vec::with_capacity(members.len());
    let mut pending = VecDeque::from([members]);
    while let Some(mut group) = pending.pop_front() {
        if group.len() == 1 {
            for (lsn, work) in group {
                let end = replay(rep, index, lsn, &work).await;
                ends.push((lsn, end));
            }
            continue;
        }
        if send_merged(rep, index, &group).await {
            rep.merge_metrics.applied(&name, group.len());
            for (lsn, _) in group {
                rep.progress[index].count_applied(true);
                ends.push((lsn, TaskEnd::Finished { sent: true }));
            }
            continue;
        }
        rep.merge_metrics.split(&name);
        let second = group.split_off(group.len() / 2);
        pending.push_front(second);
        pending.push_front(group);
    }
    ends
}

/// Sends `group` as one request until the server applies it (`true`), or
/// refuses it, or fails it [`MERGED_TRIES`] times (`false`: split it).
async fn send_merged(rep: &Arc<Replicator>, index: usize, group: &[(u64, Work)]) -> bool {
    let backend = &rep.backends.all()[index];
    let progress = &rep.progress[index];
    let parts: Option<Vec<&MergePart>> = group.iter().map(|(_, w)| w.merge_part()).collect();
    let (Some(body), Some((first_lsn, first))) =
        (parts.and_then(|p| merged_body(&p)), group.first())
    else {
        return false;
    };
    let Some(op) = first.route.as_ref().map(|r| r.op) else {
        return false;
    };
    let merged = Entry {
        method: first.entry.method.clone(),
        path: first.entry.path.clone(),
        content_type: first.entry.content_type.clone(),
        received_at_ms: first.entry.received_at_ms,
        body,
    };
    let last_lsn = group.last().map_or(*first_lsn, |(lsn, _)| *lsn);
    let mut attempt = 0u32;
    loop {
        if !backend.health().is_healthy() {
            progress.set_state(ApplierState::WaitingForServer);
            backend.health().wait_healthy().await;
        }
        let result = rep.send_entry(index, &merged, http::HeaderMap::new()).await;
        rep.backends.observe(backend, &result);
        let outcome = match &result {
            Ok(response) => replay_outcome(op, response.status, &response.body),
            Err(_) => ReplayOutcome::Transient,
        };
        match outcome {
            ReplayOutcome::Applied | ReplayOutcome::AlreadyDone => return true,
            ReplayOutcome::Divergent => {
                tracing::info!(
                    server = backend.name(),
                    first_lsn,
                    last_lsn,
                    entries = group.len(),
                    answer = %describe(&result),
                    "a merged request was refused; splitting it to find the entry at fault"
                );
                return false;
            }
            ReplayOutcome::Transient => {
                let error = describe(&result);
                progress.count_retry(error.clone());
                attempt += 1;
                if attempt >= MERGED_TRIES {
                    tracing::warn!(
                        server = backend.name(),
                        first_lsn,
                        last_lsn,
                        entries = group.len(),
                        %error,
                        "a merged request keeps failing; splitting it"
                    );
                    return false;
                }
                let delay = backoff(rep.settings.retry_base, rep.settings.retry_cap, attempt);
                tokio::time::sleep(delay).await;
            }
        }
    }
}
