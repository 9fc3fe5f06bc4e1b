//! Which (tenant, database) scopes have had their collections adopted by
//! name, on which servers. Adoption lists a scope's collections on a server
//! once per run: concurrent first requests wait for the one in progress, a
//! server that is unhealthy is listed later (on a reference once it is
//! healthy), a server whose listing failed or found no such database is
//! listed again at most every [`RELIST_AFTER`], a scope no server has is
//! not kept, and at most `cap` scopes are kept (least recently used go
//! first; an evicted scope is simply listed again on its next reference).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most scopes remembered.
pub(crate) const MAX_ADOPTED_SCOPES: usize = 10_000;
/// Least time between two listings of one scope on one server that failed
/// or found no such database.
pub(crate) const RELIST_AFTER: Duration = Duration::from_secs(1);

/// What listing a scope's collections on one server gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listing {
    /// Listed and adopted.
    Listed,
    /// 404: the server has no such database.
    Missing,
    /// No answer, or an error answer: try again later.
    Failed,
}

#[derive(Debug, Clone, Copy)]
enum ServerState {
    Done,
    Pending { not_before: Option<Instant> },
}

#[derive(Debug)]
struct ScopeState {
    servers: Vec<ServerState>,
    /// Adoption runs finished for this scope.
    runs: u64,
}

#[derive(Debug)]
struct ScopeAdoption {
    state: Mutex<ScopeState>,
    /// Held while an adoption of this scope runs.
    running: tokio::sync::Mutex<()>,
}

impl ScopeAdoption {
    fn state(&self) -> std::sync::MutexGuard<'_, ScopeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

type Key = (String, String);

#[derive(Debug, Default)]
struct Inner {
    scopes: HashMap<Key, (Arc<ScopeAdoption>, u64)>,
    tick: u64,
}

/// The adopted scopes of this run (see the module documentation).
#[derive(Debug)]
pub(crate) struct Adoptions {
    cap: usize,
    inner: Mutex<Inner>,
}

impl Adoptions {
    /// An empty set that keeps at most `cap` scopes.
    pub(crate) fn new(cap: usize) -> Self {
        Adoptions {
            cap: cap.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The scope's record, created if new, marked as just used.
    fn touch(&self, key: &Key, servers: usize) -> Arc<ScopeAdoption> {
        let mut inner = self.inner();
        inner.tick += 1;
        let tick = inner.tick;
        if let Some((scope, used)) = inner.scopes.get_mut(key) {
            *used = tick;
            return scope.clone();
        }
        if inner.scopes.len() >= self.cap {
            let oldest = inner
                .scopes
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                inner.scopes.remove(&oldest);
            }
        }
        let scope = Arc::new(ScopeAdoption {
            state: Mutex::new(ScopeState {
                servers: vec![ServerState::Pending { not_before: None }; servers],
                runs: 0,
            }),
            running: tokio::sync::Mutex::new(()),
        });
        inner.scopes.insert(key.clone(), (scope.clone(), tick));
        scope
    }

    /// Makes sure scope (`tenant`, `database`) is adopted on every server
    /// that `healthy` says can be asked: `list(i)` lists and adopts it on
    /// server `i`, in priority order. Returns whether any listing adopted
    /// something. Returns at once when nothing is left to do; while
    /// another call adopts the scope, waits for it and takes its result.
    pub(crate) async fn ensure<F, Fut>(
        &self,
        tenant: &str,
        database: &str,
        servers: usize,
        healthy: impl Fn(usize) -> bool,
        list: F,
    ) -> bool
    where
        F: Fn(usize) -> Fut,
        Fut: Future<Output = Listing>,
    {
        let key = (tenant.to_string(), database.to_string());
        let scope = self.touch(&key, servers);
        let due = |state: &ScopeState| -> Vec<usize> {
            let now = Instant::now();
            (0..servers)
                .filter(|i| match state.servers.get(*i) {
                    Some(ServerState::Pending { not_before }) => {
                        not_before.is_none_or(|t| now >= t) && healthy(*i)
                    }
                    _ => false,
                })
                .collect()
        };
        let runs_seen = {
            let state = scope.state();
            if due(&state).is_empty() {
                return false;
            }
            state.runs
        };
        let _running = scope.running.lock().await;
        let todo = {
            let state = scope.state();
            if state.runs != runs_seen {
                // Another call adopted the scope while this one waited.
                return false;
            }
            due(&state)
        };
        let mut adopted = false;
        let mut missing = false;
        for index in todo {
            let listing = list(index).await;
            let mut state = scope.state();
            state.servers[index] = match listing {
                Listing::Listed => {
                    adopted = true;
                    ServerState::Done
                }
                Listing::Missing | Listing::Failed => {
                    missing |= listing == Listing::Missing;
                    ServerState::Pending {
                        not_before: Some(Instant::now() + RELIST_AFTER),
                    }
                }
            };
        }
        let forget = {
            let mut state = scope.state();
            state.runs += 1;
            missing && !state.servers.iter().any(|s| matches!(s, ServerState::Done))
        };
        if forget {
            // No server has this database: do not keep a record of it.
            let mut inner = self.inner();
            if inner
                .scopes
                .get(&key)
                .is_some_and(|(s, _)| Arc::ptr_eq(s, &scope))
            {
                inner.scopes.remove(&key);
            }
        }
        adopted
    }

    /// Forgets every scope (after a reset wiped the servers).
    pub(crate) fn clear(&self) {
        self.inner().scopes.clear();
    }

    /// Scopes remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner().scopes.len()
    }

    /// Whether (`tenant`, `database`) is remembered.
    #[cfg(test)]
    pub(crate) fn contains(&self, tenant: &str, database: &str) -> bool {
        self.inner()
            .scopes
            .contains_key(&(tenant.to_string(), database.to_string()))
    }
}

#[cfg(test)]
mod tests;
