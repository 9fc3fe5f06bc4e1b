//! The `cluster` part of `/status`: this gateway, the leader and its
//! lease, and every gateway the registry knows.

use serde::Serialize;

use super::{Cluster, Role};

/// The leader as this gateway last learned it.
#[derive(Debug, Serialize)]
pub struct LeaderStatus {
    /// Its name.
    pub name: Option<String>,
    /// Where it takes requests.
    pub address: Option<String>,
    /// Its epoch.
    pub epoch: u64,
    /// Seconds its lease still runs; 0 once it ran out.
    pub lease_expires_in_seconds: f64,
    /// Seconds since it last renewed.
    pub last_renewal_seconds_ago: Option<f64>,
    /// Seconds since its term began.
    pub term_age_seconds: Option<f64>,
}

/// One gateway of the registry.
#[derive(Debug, Serialize)]
pub struct GatewayStatus {
    /// Its name.
    pub name: String,
    /// Where it takes requests.
    pub address: String,
    /// Its role when it last reported.
    pub role: String,
    /// The epoch it last knew.
    pub epoch: u64,
    /// Seconds since it last reported.
    pub seen_seconds_ago: f64,
    /// Seconds since it started.
    pub started_seconds_ago: f64,
    /// Whether it reported within one lease time.
    pub alive: bool,
}

/// The cluster part of `/status`.
#[derive(Debug, Serialize)]
pub struct ClusterStatus {
    /// This gateway's name.
    pub name: String,
    /// Where it takes requests.
    pub address: String,
    /// `starting`, `follower`, `no_leader`, `candidate` or `leader`.
    pub role: &'static str,
    /// The lease time, seconds.
    pub lease_time_seconds: f64,
    /// The leader.
    pub leader: Option<LeaderStatus>,
    /// While this gateway leads: seconds until its last claim runs out.
    pub lease_valid_for_seconds: Option<f64>,
    /// How long the last claim or renewal took, milliseconds.
    pub last_renew_ms: Option<f64>,
    /// The last error talking to PostgreSQL, if the last claim failed.
    pub postgres_error: Option<String>,
    /// Every gateway seen in the last day.
    pub gateways: Vec<GatewayStatus>,
}

/// This gateway's view of the cluster, now.
pub fn collect(cluster: &Cluster) -> ClusterStatus {
    let view = cluster.view();
    let role = cluster.role();
    let since = view.last_answer.map(|at| at.elapsed()).unwrap_or_default();
    let leader = view.leader.as_ref().map(|l| LeaderStatus {
        name: l.holder.clone(),
        address: l.address.clone(),
        epoch: l.epoch,
        lease_expires_in_seconds: l
            .expires_in
            .map_or(0.0, |left| left.saturating_sub(since).as_secs_f64()),
        last_renewal_seconds_ago: l.renewed_ago.map(|d| (d + since).as_secs_f64()),
        term_age_seconds: l.term_age.map(|d| (d + since).as_secs_f64()),
    });
    let lease = cluster.config.lease_time;
    ClusterStatus {
        name: cluster.config.name.clone(),
        address: cluster.config.advertise_url.clone(),
        role: role.name(),
        lease_time_seconds: lease.as_secs_f64(),
        leader,
        lease_valid_for_seconds: match role {
            Role::Leader { .. } | Role::Candidate { .. } => view.valid_until.map(|until| {
                until
                    .saturating_duration_since(std::time::Instant::now())
                    .as_secs_f64()
            }),
            _ => None,
        },
        last_renew_ms: view.last_took.map(|d| d.as_secs_f64() * 1000.0),
        postgres_error: view.last_error,
        gateways: view
            .gateways
            .into_iter()
            .map(|g| GatewayStatus {
                alive: g.seen_ago + since < lease,
                seen_seconds_ago: (g.seen_ago + since).as_secs_f64(),
                started_seconds_ago: (g.started_ago + since).as_secs_f64(),
                name: g.name,
                address: g.address,
                role: g.role,
                epoch: g.epoch,
            })
            .collect(),
    }
}
