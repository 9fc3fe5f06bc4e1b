//! The set of servers behind the gateway, in priority order, each with its
//! client and health, and the probe tasks that keep the health current.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::classify::AttemptClass;
use super::client::{
    BackendClient, ClientBuildError, ClientSettings, TransportError, UpstreamResponse,
};
use super::gate::SendGate;
use super::health::{Health, Thresholds};
use super::probe;
use crate::config::{Config, HealthConfig, ServerConfig};

/// One server: its configuration, priority, client and health.
#[derive(Debug)]
pub struct Backend {
    config: ServerConfig,
    priority: usize,
    client: BackendClient,
    health: Health,
}

impl Backend {
    /// The server's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The server's configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// 0 for the primary, 1.. for replicas in configured order.
    pub fn priority(&self) -> usize {
        self.priority
    }

    /// Whether this is the primary.
    pub fn is_primary(&self) -> bool {
        self.priority == 0
    }

    /// The server's HTTP client.
    pub fn client(&self) -> &BackendClient {
        &self.client
    }

    /// The server's health.
    pub fn health(&self) -> &Health {
        &self.health
    }
}

/// Every server, primary first then replicas in priority order. Never empty.
#[derive(Debug)]
pub struct Backends {
    primary: Arc<Backend>,
    all: Vec<Arc<Backend>>,
    changes: watch::Sender<u64>,
    health_config: HealthConfig,
}

/// The running probe tasks of a [`Backends`]. Dropping it stops them.
#[derive(Debug)]
#[must_use = "dropping ProbeTasks stops the probes"]
pub struct ProbeTasks {
    handles: Vec<JoinHandle<()>>,
}

impl ProbeTasks {
    /// Stops every probe task.
    pub fn shutdown(self) {
        // Drop aborts.
    }
}

impl Drop for ProbeTasks {
    fn drop(&mut self) {
        for h in &self.handles {
            h.abort();
        }
    }
}

impl Backends {
    /// Builds a client and a health record (state `Unknown`) for every server
    /// of `config`. Does not connect and needs no runtime.
    pub fn new(config: &Config) -> Result<Self, ClientBuildError> {
        Self::gated(config, &SendGate::open())
    }

    /// Like [`new`](Self::new), with clients that send only while `gate`
    /// is open.
    pub fn gated(config: &Config, gate: &SendGate) -> Result<Self, ClientBuildError> {
        let tls = crate::tls::ClientTls::from_config(&config.tls)?;
        let settings = ClientSettings::from_config(config, tls);
        let thresholds = Thresholds::from_config(&config.health);
        let (changes, _) = watch::channel(0u64);
        let make =
            |(priority, server): (usize, &ServerConfig)| -> Result<Arc<Backend>, ClientBuildError> {
                Ok(Arc::new(Backend {
                    config: server.clone(),
                    priority,
                    client: BackendClient::new(server, &settings)?.with_gate(gate.clone()),
                    health: Health::with_group(server.name.clone(), thresholds, changes.clone()),
                }))
            };
        let primary = make((0, &config.primary))?;
        let mut all = vec![primary.clone()];
        for (i, replica) in config.replicas.iter().enumerate() {
            all.push(make((i + 1, replica))?);
        }
        Ok(Backends {
            primary,
            all,
            changes,
            health_config: config.health,
        })
    }

    /// Spawns one probe task per server (heartbeat at once, then every
    /// `health.check_interval`, each probe bounded by `health.probe_timeout`).
    /// Must be called inside a Tokio runtime.
    pub fn spawn_probes(&self) -> ProbeTasks {
        let interval = self.health_config.check_interval;
        let timeout = self.health_config.probe_timeout;
        let handles = self
            .all
            .iter()
            .map(|backend| {
                let backend = backend.clone();
                tokio::spawn(async move {
                    let client = backend.client().clone();
                    probe::run_probe_loop(backend.health(), interval, || {
                        let client = client.clone();
                        async move { probe::heartbeat(&client, timeout).await }
                    })
                    .await;
                })
            })
            .collect();
        ProbeTasks { handles }
    }

    /// Records the outcome of a live request to `backend` by the passive
    /// policy ([`Health::observe_as`]): the last routable server stays
    /// routable while its probes pass.
    pub fn observe(
        &self,
        backend: &Backend,
        result: &Result<UpstreamResponse, TransportError>,
    ) -> AttemptClass {
        let sole = backend.health().is_healthy() && self.healthy_count() == 1;
        backend.health().observe_as(result, sole)
    }

    /// Counts a failed live request against `backend` (as
    /// [`observe`](Self::observe) would).
    pub fn mark_failure(&self, backend: &Backend, reason: &str) {
        let sole = backend.health().is_healthy() && self.healthy_count() == 1;
        backend.health().mark_failure_as(reason, sole);
    }

    /// Every server in priority order (primary first).
    pub fn all(&self) -> &[Arc<Backend>] {
        &self.all
    }

    /// The primary.
    pub fn primary(&self) -> &Arc<Backend> {
        &self.primary
    }

    /// The replicas in priority order.
    pub fn replicas(&self) -> &[Arc<Backend>] {
        self.all.get(1..).unwrap_or_default()
    }

    /// The index (priority order) of the server with this name.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.all.iter().position(|b| b.name() == name)
    }

    /// The server with this name.
    pub fn get(&self, name: &str) -> Option<&Arc<Backend>> {
        self.all.iter().find(|b| b.name() == name)
    }

    /// Healthy servers in priority order, as of this call.
    pub fn healthy_in_priority_order(&self) -> Vec<Arc<Backend>> {
        self.all
            .iter()
            .filter(|b| b.health().is_healthy())
            .cloned()
            .collect()
    }

    /// The healthy server of highest priority, if any.
    pub fn first_healthy(&self) -> Option<Arc<Backend>> {
        self.all.iter().find(|b| b.health().is_healthy()).cloned()
    }

    /// Number of healthy servers.
    pub fn healthy_count(&self) -> usize {
        self.all.iter().filter(|b| b.health().is_healthy()).count()
    }

    /// A counter that increments on every health state change of any server;
    /// await `changed()` on it to wake when something may have changed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Resolves with the healthy server of highest priority, waiting until
    /// one is healthy. Wrap in `tokio::time::timeout` to bound the wait.
    pub async fn wait_for_healthy(&self) -> Arc<Backend> {
        let mut rx = self.subscribe();
        loop {
            rx.borrow_and_update();
            if let Some(b) = self.first_healthy() {
                return b;
            }
            // The sender lives in `self`; `changed` fails only if it is
            // dropped, which cannot happen while `self` is borrowed.
            if rx.changed().await.is_err() {
                tokio::task::yield_now().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn set() -> Backends {
        Backends::new(
            &Config::with_servers(
                "http://127.0.0.1:9",
                &["http://127.0.0.1:10", "http://127.0.0.1:11"],
            )
            .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn priority_order_and_lookup() {
        let s = set();
        let names: Vec<_> = s.all().iter().map(|b| b.name().to_string()).collect();
        assert_eq!(names, ["primary", "replica-1", "replica-2"]);
        assert!(s.primary().is_primary());
        assert_eq!(s.replicas().len(), 2);
        assert_eq!(s.get("replica-2").unwrap().priority(), 2);
        assert!(s.get("nope").is_none());
        assert!(s.healthy_in_priority_order().is_empty());
        assert!(s.first_healthy().is_none());
    }

    #[test]
    fn healthy_in_priority_order_skips_unhealthy_and_drained() {
        let s = set();
        for b in s.all() {
            b.health().record_probe_success();
        }
        let names = |s: &Backends| -> Vec<String> {
            s.healthy_in_priority_order()
                .iter()
                .map(|b| b.name().to_string())
                .collect()
        };
        assert_eq!(names(&s), ["primary", "replica-1", "replica-2"]);
        s.primary().health().mark_down("test");
        assert_eq!(names(&s), ["replica-1", "replica-2"]);
        s.get("replica-1").unwrap().health().set_draining(true);
        assert_eq!(names(&s), ["replica-2"]);
        assert_eq!(s.first_healthy().unwrap().name(), "replica-2");
        assert_eq!(s.healthy_count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn change_counter_wakes_waiters() {
        let s = Arc::new(set());
        let rx = s.subscribe();
        let waiter = {
            let s = s.clone();
            tokio::spawn(async move { s.wait_for_healthy().await.name().to_string() })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished());
        s.get("replica-2").unwrap().health().record_probe_success();
        assert!(rx.has_changed().unwrap());
        let name = tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(name, "replica-2");
    }
}
