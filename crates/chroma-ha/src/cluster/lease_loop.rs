//! The lease loop: every `log.renew_interval`, claim or renew the lease,
//! and act on the answer.
//!
//! | answer                         | this gateway was      | then                                  |
//! |--------------------------------|-----------------------|---------------------------------------|
//! | we lead, same epoch            | candidate or leader   | renew; the gate stays open            |
//! | we lead, a new epoch           | nothing               | candidate: wait one lease (none after |
//! |                                |                       | a release or on a fresh log), start   |
//! | we lead, our epoch + 1         | leader (lapsed)       | no one led between: fence, go on      |
//! | we lead, a later epoch         | leader                | deposed: stop                         |
//! | another gateway leads          | leader                | deposed: stop                         |
//! | another gateway leads          | candidate or follower | follow it                             |
//! | no answer                      | leader                | keep going; the gate closes by itself |
//! |                                |                       | when the last claim runs out          |
//! | no answer                      | follower              | keep forwarding to the last leader    |
//! | no answer                      | candidate             | not acted yet: start over             |

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use pglog::{Claim, GatewayReport, LeaderInfo, PgLog};

use super::{Cluster, Role};
use crate::backend::{GateControl, ProbeTasks};
use crate::replication::Replicator;

/// This gateway led, and found that another term began after its own: it
/// must stop acting, and does so by stopping.
#[derive(Debug, thiserror::Error)]
#[error(
    "deposed: this gateway led the shared log in epoch {ours}, but epoch {now} has begun \
     (leader: {leader}); it stopped sending to Chroma when its lease ran out and now exits \
     so that it can start again as a follower ({held} requests to Chroma found it without a \
     lease and were held back)"
)]
pub struct Deposed {
    /// The epoch this gateway led.
    pub ours: u64,
    /// The epoch in force.
    pub now: u64,
    /// The new leader, as far as known.
    pub leader: String,
    /// Requests to Chroma that found the send gate closed.
    pub held: u64,
}

/// The running core of a leader.
pub struct Started {
    /// Serves every request while this gateway leads.
    pub router: Router,
    /// The core, whose log is fenced with the epoch.
    pub replicator: Arc<Replicator>,
    /// The servers' health probes, for as long as it leads.
    pub probes: ProbeTasks,
}

/// Starts the core for an epoch (its log fenced with it).
pub type Starter =
    Box<dyn Fn(u64) -> Pin<Box<dyn Future<Output = Result<Started, String>> + Send>> + Send + Sync>;

/// What the loop remembers between claims.
struct Term {
    epoch: u64,
    /// When the claim that began it was sent.
    claimed: Instant,
    /// How long after that it may start acting.
    wait: Duration,
    core: Option<Arc<Replicator>>,
    probes: Option<ProbeTasks>,
}

/// The loop's state between claims.
struct LeaseLoop {
    cluster: Arc<Cluster>,
    log: PgLog,
    gate: Arc<GateControl>,
    start: Starter,
    term: Option<Term>,
    last_epoch_seen: u64,
    first_report: bool,
}

/// Claims and renews until deposed. `log` is a handle on the shared log
/// used for the lease and the registry only.
pub async fn run(
    cluster: Arc<Cluster>,
    log: PgLog,
    gate: Arc<GateControl>,
    start: Starter,
) -> Deposed {
    let mut tick = tokio::time::interval(cluster.config.renew_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut state = LeaseLoop {
        cluster,
        log,
        gate,
        start,
        term: None,
        last_epoch_seen: 0,
        first_report: true,
    };
    loop {
        tick.tick().await;
        if let Err(deposed) = state.claim().await {
            return deposed;
        }
        state.report().await;
    }
}

impl LeaseLoop {
    /// One claim or renewal, and what follows from its answer.
    async fn claim(&mut self) -> Result<(), Deposed> {
        let cluster = self.cluster.clone();
        let config = &cluster.config;
        let sent = Instant::now();
        let claim = self
            .log
            .claim_lease(&cluster.holder, &config.advertise_url, config.lease_time)
            .await;
        cluster.metrics.set_gate_held(self.gate.held());
        let claim = match claim {
            Ok(claim) => claim,
            Err(e) => {
                self.unanswered(e.to_string());
                return Ok(());
            }
        };
        let took = sent.elapsed();
        cluster.metrics.renewed(took);
        cluster.update_view(|v| {
            v.last_answer = Some(Instant::now());
            v.last_took = Some(took);
            v.last_error = None;
        });
        match claim {
            Claim::Leader(lead) => self.leading(lead, sent).await,
            Claim::Follower(info) => self.following(info),
        }
    }

    fn saw_epoch(&mut self, epoch: u64) {
        if epoch != self.last_epoch_seen {
            self.cluster.metrics.leader_changed(epoch);
            self.last_epoch_seen = epoch;
        }
    }

    /// PostgreSQL answered: this gateway holds the lease.
    async fn leading(&mut self, lead: pglog::Leadership, sent: Instant) -> Result<(), Deposed> {
        let cluster = self.cluster.clone();
        self.saw_epoch(lead.epoch);
        match self.term.as_mut() {
            Some(t) if t.epoch == lead.epoch => {}
            Some(t) if t.core.is_some() && lead.epoch == t.epoch + 1 => {
                // Our claim lapsed, and we took the lease again before any
                // other gateway: no one acted in between.
                tracing::warn!(
                    epoch = lead.epoch,
                    "the lease lapsed and this gateway took it again before any other: going on \
                     as leader"
                );
                if let Some(core) = &t.core {
                    core.fence(lead.epoch);
                }
                t.epoch = lead.epoch;
                cluster.set_role(Role::Leader { epoch: lead.epoch });
            }
            Some(t) if t.core.is_some() => {
                return Err(self.deposed(lead.epoch, "another gateway, in between".into()))
            }
            _ => {
                // After a release, or on a lease no one held, no earlier
                // leader may still act: nothing to wait out.
                let wait = if lead.predecessor_stopped {
                    Duration::ZERO
                } else {
                    cluster.config.lease_time
                };
                tracing::info!(
                    epoch = lead.epoch,
                    ?wait,
                    "this gateway won the leader lease; it waits out the last leader's lease \
                     before sending to Chroma"
                );
                self.term = Some(Term {
                    epoch: lead.epoch,
                    claimed: sent,
                    wait,
                    core: None,
                    probes: None,
                });
                cluster.set_role(Role::Candidate { epoch: lead.epoch });
            }
        }
        let term_age = self.term.as_ref().map(|t| t.claimed.elapsed());
        cluster.update_view(|v| {
            v.valid_until = Some(lead.valid_until);
            v.leader = Some(LeaderInfo {
                holder: Some(cluster.holder.clone()),
                address: Some(cluster.config.advertise_url.clone()),
                epoch: lead.epoch,
                expires_in: lead.valid_until.checked_duration_since(Instant::now()),
                renewed_ago: Some(Duration::ZERO),
                term_age,
            });
        });
        if let Some(t) = self.term.as_mut() {
            lead_on(&cluster, &self.gate, &self.start, t, lead.valid_until).await;
        }
        Ok(())
    }

    /// PostgreSQL answered: another gateway holds the lease.
    fn following(&mut self, info: LeaderInfo) -> Result<(), Deposed> {
        self.saw_epoch(info.epoch);
        let leader = info.holder.clone().unwrap_or_default();
        if self.term.as_ref().is_some_and(|t| t.core.is_some()) {
            return Err(self.deposed(info.epoch, leader));
        }
        if let Some(t) = self.term.take() {
            self.gate.close();
            tracing::warn!(
                epoch = t.epoch,
                %leader,
                "this gateway lost the lease before it began to act; following"
            );
        }
        self.cluster.set_role(Role::Follower {
            leader,
            address: info.address.clone().unwrap_or_default(),
            epoch: info.epoch,
        });
        self.cluster.update_view(|v| {
            v.leader = Some(info);
            v.valid_until = None;
        });
        Ok(())
    }

    /// PostgreSQL did not answer. A leader goes on: its gate closes by
    /// itself when its last claim runs out. A follower keeps forwarding to
    /// the last leader it knew: without PostgreSQL that leader cannot be
    /// replaced, and it answers for itself (503 for a write it cannot log).
    fn unanswered(&mut self, error: String) {
        let cluster = &self.cluster;
        cluster.metrics.renew_failed();
        if cluster.view().last_error.is_none() {
            tracing::warn!(%error, "could not claim or renew the leader lease");
        }
        cluster.update_view(|v| v.last_error = Some(error));
        if self.term.as_ref().is_some_and(|t| t.core.is_none()) {
            // A candidate that cannot renew has not acted: it waits again
            // from its next successful claim.
            self.term = None;
            cluster.set_role(Role::NoLeader);
        } else if cluster.role() == Role::Starting {
            cluster.set_role(Role::NoLeader);
        }
    }

    /// This leader's term is over: it closes its gate for good.
    fn deposed(&self, now: u64, leader: String) -> Deposed {
        self.gate.close();
        Deposed {
            ours: self.term.as_ref().map_or(0, |t| t.epoch),
            now,
            leader,
            held: self.gate.held(),
        }
    }

    /// Tells the registry about this gateway, and lists them all.
    async fn report(&mut self) {
        let config = &self.cluster.config;
        let role = self.cluster.role();
        let report = GatewayReport {
            name: &config.name,
            address: &config.advertise_url,
            role: role.name(),
            epoch: self.last_epoch_seen,
            first: self.first_report,
        };
        if self.log.report_gateway(&report).await.is_ok() {
            self.first_report = false;
            if let Ok(rows) = self.log.gateways().await {
                self.cluster.update_view(|v| v.gateways = rows);
            }
        }
    }
}

/// A candidate that has waited one lease starts its core; a leader keeps
/// its gate open until its new claim runs out.
async fn lead_on(
    cluster: &Cluster,
    gate: &GateControl,
    start: &Starter,
    term: &mut Term,
    valid_until: Instant,
) {
    if term.core.is_some() {
        gate.open_until(tokio::time::Instant::from_std(valid_until));
        return;
    }
    if term.claimed.elapsed() < term.wait {
        return;
    }
    gate.open_until(tokio::time::Instant::from_std(valid_until));
    match start(term.epoch).await {
        Ok(started) => {
            cluster.set_leader_router(started.router);
            term.core = Some(started.replicator);
            term.probes = Some(started.probes);
            cluster.metrics.set_leading(true);
            cluster.set_role(Role::Leader { epoch: term.epoch });
            tracing::info!(epoch = term.epoch, "this gateway leads the shared log");
        }
        Err(e) => {
            gate.close();
            tracing::error!(
                epoch = term.epoch,
                error = %e,
                "could not start the replication core as leader; trying again at the next renewal"
            );
        }
    }
}
