//! Several gateways on one log in PostgreSQL: one leads, the others follow.
//!
//! - The leader holds the lease ([`pglog::lease`]). It alone runs the
//!   replication core and sends to Chroma, and only while its last claim is
//!   valid ([`crate::backend::SendGate`]). Everything it writes to the
//!   shared log carries its epoch and is refused once a later term began.
//! - A gateway that wins a new term waits out one lease time before it
//!   starts the core, which resumes every applier from the shared state.
//!   That leaves any request a deposed leader sent just before its lease
//!   ran out time to land before the new leader sends.
//! - A leader that finds another gateway leading has been deposed: it
//!   stops ([`Deposed`]), and its supervisor starts it again as a follower.
//!   A leader whose lease merely lapsed (PostgreSQL unreachable), and that
//!   takes it again with no one else having led in between, goes on.
//! - Followers forward every other request to the leader, and answer
//!   `/health`, `/ready`, `/status` and `/metrics` themselves. While no
//!   leader is known they hold a request up to `log.hold_requests_for`,
//!   then answer 503.
//!
//! Modules: [`lease_loop`] (claims, renewals, roles), [`front`] (what each
//! role does with a request), [`forward`] (streaming to the leader),
//! [`metrics`], [`view`] (the cluster part of `/status`).

pub mod forward;
pub mod front;
pub mod lease_loop;
pub mod metrics;
pub mod view;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use axum::Router;
use tokio::sync::watch;

use crate::config::{ClusterConfig, Config};

pub use lease_loop::Deposed;

/// What this gateway is doing in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// No claim has been answered yet.
    Starting,
    /// Another gateway leads, at `address`.
    Follower {
        /// The leader's name.
        leader: String,
        /// Where it takes requests.
        address: String,
        /// Its epoch.
        epoch: u64,
    },
    /// No leader is known: PostgreSQL cannot be reached, or the lease
    /// just ran out.
    NoLeader,
    /// This gateway won term `epoch` and waits out one lease before acting.
    Candidate {
        /// The term.
        epoch: u64,
    },
    /// This gateway leads term `epoch`, and its replication core runs.
    Leader {
        /// The term.
        epoch: u64,
    },
}

impl Role {
    /// The role's name in `/status` and the registry.
    pub fn name(&self) -> &'static str {
        match self {
            Role::Starting => "starting",
            Role::Follower { .. } => "follower",
            Role::NoLeader => "no_leader",
            Role::Candidate { .. } => "candidate",
            Role::Leader { .. } => "leader",
        }
    }
}

/// What the lease loop last learned, for `/status`.
#[derive(Debug, Clone, Default)]
pub struct LeaseView {
    /// The lease row as last read (or as this gateway's claim made it).
    pub leader: Option<pglog::LeaderInfo>,
    /// When the last claim or renewal was answered.
    pub last_answer: Option<Instant>,
    /// How long it took.
    pub last_took: Option<std::time::Duration>,
    /// Until when this gateway may act, if it leads.
    pub valid_until: Option<Instant>,
    /// The last error talking to PostgreSQL, cleared by a success.
    pub last_error: Option<String>,
    /// Every gateway in the registry, as last listed.
    pub gateways: Vec<pglog::GatewayRow>,
}

/// The cluster side of one gateway, shared by the lease loop and the
/// request handlers.
#[derive(Debug)]
pub struct Cluster {
    /// Name, address and lease settings.
    pub config: ClusterConfig,
    /// Who this process is in the lease: its name and a number drawn at
    /// start (`gw-a#5f3a9c1e`). A restarted gateway is another holder, so
    /// it never takes over a term of its previous run without waiting it
    /// out, even if two processes were given one name.
    pub holder: String,
    /// The whole configuration (timeouts, body limit).
    pub gateway_config: Arc<Config>,
    role: watch::Sender<Role>,
    /// Set once this gateway leads and its core runs.
    leader_router: OnceLock<Router>,
    view: Mutex<LeaseView>,
    /// Cluster metrics.
    pub metrics: metrics::ClusterMetrics,
    /// Every metric of the gateway (the cluster's are registered there).
    gateway_metrics: Arc<crate::http::metrics::Metrics>,
    /// The HTTP client that forwards to the leader.
    pub forwarder: forward::Forwarder,
}

impl Cluster {
    /// A gateway that has not claimed yet; its metrics are registered
    /// with the gateway's.
    pub fn new(
        config: Arc<Config>,
        gateway_metrics: Arc<crate::http::metrics::Metrics>,
    ) -> Result<Arc<Cluster>, String> {
        let forwarder = forward::Forwarder::new(&config)
            .map_err(|e| format!("building the client that forwards to the leader: {e}"))?;
        Ok(Arc::new(Cluster {
            holder: format!("{}#{:08x}", config.cluster.name, rand::random::<u32>()),
            config: config.cluster.clone(),
            forwarder,
            gateway_config: config,
            role: watch::channel(Role::Starting).0,
            leader_router: OnceLock::new(),
            view: Mutex::new(LeaseView::default()),
            metrics: metrics::ClusterMetrics::register(gateway_metrics.registry())?,
            gateway_metrics,
        }))
    }

    /// This gateway's metrics as Prometheus text, when no core runs here.
    pub fn encode_metrics(&self) -> Vec<u8> {
        self.gateway_metrics.encode()
    }

    /// The role now.
    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    /// Changes of the role.
    pub fn watch_role(&self) -> watch::Receiver<Role> {
        self.role.subscribe()
    }

    pub(crate) fn set_role(&self, role: Role) {
        self.role.send_if_modified(|current| {
            let changed = *current != role;
            *current = role;
            changed
        });
    }

    /// The router of the running core, once this gateway leads.
    pub fn leader_router(&self) -> Option<&Router> {
        self.leader_router.get()
    }

    pub(crate) fn set_leader_router(&self, router: Router) {
        let _ = self.leader_router.set(router);
    }

    /// What the lease loop last learned.
    pub fn view(&self) -> LeaseView {
        self.view.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn update_view(&self, change: impl FnOnce(&mut LeaseView)) {
        change(&mut self.view.lock().unwrap_or_else(|p| p.into_inner()));
    }
}
