//! What a rebuild (`chroma-ha rebuild`, [`crate::rebuild`]) needs of the
//! replication core: the durable "rebuilding" mark of a server (never
//! eligible for reads, never executor, kept across restarts), and
//! restarting a server's applier at a given applied state (the position its
//! copied content stands at).

use super::applied::AppliedState;
use super::idmap::ServerLink;
use super::state_file::StateFileError;
use super::Replicator;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use wal::Log as _;

/// A server being rebuilt, as kept in the operator state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebuildMark {
    /// The server it is copied from.
    pub source: String,
    /// Whether the rebuild paused the source's applier (so a restart of
    /// the gateway, which ends the rebuild, resumes it).
    #[serde(default)]
    pub source_paused: bool,
}

impl Replicator {
    /// The rebuild mark of server `index`, if it is being rebuilt.
    pub fn rebuild_mark(&self, index: usize) -> Option<RebuildMark> {
        self.rebuilding[index]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether server `index` is being rebuilt (or a rebuild of it was
    /// interrupted): it serves no reads and executes no writes.
    pub fn is_rebuilding(&self, index: usize) -> bool {
        self.rebuild_mark(index).is_some()
    }

    /// Whether server `index` must serve no reads and execute no writes:
    /// its history is incomplete or it is being rebuilt.
    pub(crate) fn is_unusable(&self, index: usize) -> bool {
        self.is_incomplete(index) || self.is_rebuilding(index)
    }

    /// Marks server `index` as being rebuilt (`Some`) or not, durably.
    pub async fn set_rebuilding(
        &self,
        index: usize,
        mark: Option<RebuildMark>,
    ) -> Result<(), StateFileError> {
        *self.rebuilding[index]
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = mark;
        self.progress_changed();
        self.save_operator_state().await
    }

    /// Stops server `index`'s applier (once nothing it started is under
    /// way), records `state` as what the server has applied and moves its
    /// log cursor there, drops its dead letters (its content was replaced),
    /// and starts a new applier from `state`. The server's pause flag is
    /// left as it is.
    pub async fn restart_applier_at(
        self: &Arc<Self>,
        index: usize,
        state: AppliedState,
    ) -> Result<(), String> {
        let name = self.backends.all()[index].name().to_string();
        self.applier_stops[index].send_replace(true);
        let running = self.appliers[index]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(handle) = running {
            if tokio::time::timeout(Duration::from_secs(120), handle)
                .await
                .is_err()
            {
                return Err(format!(
                    "the applier of {name} did not stop within 120 s (an entry still under way)"
                ));
            }
        }
        self.applier_stops[index].send_replace(false);
        let result = async {
            // The cursor first: from then on the log keeps everything after
            // the position (or refuses, if it no longer holds it).
            self.wal
                .commit_cursor(&name, state.cursor)
                .await
                .map_err(|e| format!("moving {name}'s log cursor to {}: {e}", state.cursor))?;
            self.applied
                .record(&name, state.clone())
                .await
                .unwrap_or_else(|_| Err("the applied-state committer stopped".into()))
                .map_err(|e| format!("recording {name}'s new position: {e}"))?;
            for letter in self.dead_letters.list() {
                if letter.server == name {
                    self.skip_dead_letter(letter.id)
                        .await
                        .map_err(|e| format!("dropping dead letter {}: {e:?}", letter.id))?;
                }
            }
            Ok::<(), String>(())
        }
        .await;
        // The applier runs again whatever happened: from the new position
        // if it was recorded, else from the one the store holds at the next
        // restart.
        self.progress[index].reset(state.cursor);
        self.progress_changed();
        let handle = tokio::spawn(super::applier::run(self.clone(), index, state));
        *self.appliers[index]
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(handle);
        result
    }

    /// The last step of filling server `index` with copied content (a
    /// rebuild, or a restored backup joining): its collection ids become
    /// `links` (made durable), it is no longer incomplete nor marked
    /// rebuilding, and its applier resumes. Call it once its applier stands
    /// at the position the content holds ([`Replicator::restart_applier_at`]).
    pub async fn take_copied_content(
        &self,
        index: usize,
        links: &[ServerLink],
    ) -> Result<(), String> {
        let idmap = self.idmap();
        idmap.forget_server(index);
        for link in links {
            idmap.link_copy(index, link);
        }
        idmap
            .persist()
            .await
            .map_err(|e| format!("saving the id map: {e}"))?;
        self.set_incomplete(index, false)
            .await
            .map_err(|e| e.to_string())?;
        self.set_rebuilding(index, None)
            .await
            .map_err(|e| e.to_string())?;
        self.set_paused(index, false)
            .await
            .map_err(|e| e.to_string())
    }
}
