//! Three real gateways sharing one log in a throwaway PostgreSQL, in front
//! of two real Chroma servers: the deployment of the several-gateways
//! tests. Leases are short (2 s, renewed every 0.5 s) so that takeovers
//! take seconds.

use std::time::{Duration, Instant};

use pglog::testing::TestPostgres;
use serde_json::Value;

use super::{log_lines, start_gateway, status, wait_until, Deployment};
use crate::support::{ChromaServer, GatewayProcess};

/// The lease settings of the tests.
pub const LEASE_ENV: &[(&str, &str)] = &[
    ("CHROMA_HA_LEASE_TIME", "2"),
    ("CHROMA_HA_LEASE_RENEW_INTERVAL", "0.5"),
    ("CHROMA_HA_HOLD_REQUESTS_FOR", "15"),
];

/// The lease time of [`LEASE_ENV`].
pub const LEASE: Duration = Duration::from_secs(2);

/// PostgreSQL, a primary, a replica and three gateways.
pub struct Trio {
    /// The log's database server.
    pub pg: TestPostgres,
    /// The primary.
    pub primary: ChromaServer,
    /// The replica.
    pub replica: ChromaServer,
    /// The gateways.
    pub gateways: Vec<GatewayProcess>,
}

impl Trio {
    /// Starts everything and waits until one gateway leads with both
    /// servers healthy.
    pub fn start() -> Trio {
        Self::start_with(&[])
    }

    /// Like [`start`](Self::start), with `extra` settings for the gateways.
    pub fn start_with(extra: &[(&str, &str)]) -> Trio {
        let pg = TestPostgres::start();
        let mut servers = ChromaServer::start_many(2);
        let replica = servers.pop().expect("two servers");
        let primary = servers.pop().expect("two servers");
        let url = pg.url("postgres");
        let mut env: Vec<(&str, &str)> = LEASE_ENV.to_vec();
        env.extend_from_slice(extra);
        env.push(("CHROMA_HA_LOG_URL", &url));
        let gateways = (0..3)
            .map(|_| start_gateway(&primary.url(), &replica.url(), &env))
            .collect();
        let trio = Trio {
            pg,
            primary,
            replica,
            gateways,
        };
        trio.wait_leader(Duration::from_secs(30), None);
        trio
    }

    /// Every gateway's URL, dead ones included.
    pub fn urls(&self) -> Vec<String> {
        self.gateways.iter().map(GatewayProcess::url).collect()
    }

    /// Each gateway's role as its `/status` says (`None`: no answer).
    pub fn roles(&self) -> Vec<Option<String>> {
        self.gateways
            .iter()
            .map(|g| status(&g.url()).and_then(|s| s["cluster"]["role"].as_str().map(String::from)))
            .collect()
    }

    /// The gateway that says it leads, if one does.
    pub fn leader(&self) -> Option<usize> {
        self.roles()
            .iter()
            .position(|r| r.as_deref() == Some("leader"))
    }

    /// Waits until a gateway other than `not` leads, is ready, and sees
    /// both servers healthy; returns it.
    pub fn wait_leader(&self, timeout: Duration, not: Option<usize>) -> usize {
        let mut found = None;
        wait_until(
            "one gateway leads with both servers healthy",
            timeout,
            || {
                found = self.leader().filter(|&l| Some(l) != not).filter(|&l| {
                    status(&self.gateways[l].url()).is_some_and(|s| {
                        s["ready"] == Value::Bool(true) && s["healthy_instances"] == 2
                    })
                });
                found.is_some()
            },
        );
        found.expect("a leader")
    }

    /// The time from `since` until a write sent through one of the
    /// gateways `through` after it is acknowledged: collections
    /// `takeover-probe-N` created one after the other, each try given
    /// 1 s, the gateways taken in turn. Independent of the workload, whose
    /// writers may all be waiting on a stopped gateway.
    pub fn time_to_first_write(&self, through: &[usize], since: Instant) -> Duration {
        let deadline = Instant::now() + Duration::from_secs(60);
        for n in 0.. {
            assert!(
                Instant::now() < deadline,
                "no write acknowledged within 60 s"
            );
            let gw = &self.gateways[through[n % through.len()]];
            let body = format!(r#"{{"name":"takeover-probe-{n}"}}"#);
            let url = super::collections_url(&gw.url(), super::DATABASE);
            let sent =
                crate::support::http_request("POST", &url, Some(&body), Duration::from_secs(1));
            if sent.is_ok_and(|r| r.status == 200) {
                return since.elapsed();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        unreachable!()
    }

    /// Every line of every gateway's log holding one of `needles`.
    pub fn logs(&self, needles: &[&str], max: usize) -> Vec<String> {
        self.gateways
            .iter()
            .enumerate()
            .flat_map(|(i, g)| {
                log_lines(g, needles, max)
                    .into_iter()
                    .map(move |l| format!("gw{i}: {l}"))
            })
            .collect()
    }
}

impl Deployment for Trio {
    fn gw(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(l) = self.leader() {
                return self.gateways[l].url();
            }
            if Instant::now() > deadline {
                return self.gateways[0].url();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn server_urls(&self) -> Vec<String> {
        vec![self.primary.url(), self.replica.url()]
    }

    fn gateway_log(&self, needles: &[&str], max: usize) -> Vec<String> {
        self.logs(needles, max)
    }
}
