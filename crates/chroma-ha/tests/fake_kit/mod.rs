//! Shared pieces of the tests that run the replication core in-process
//! against fake Chroma servers (axum routers on loopback): the heartbeat
//! route, serving a router, and a replicator over two fakes that waits
//! until both are healthy.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::{Json, Router};
use chroma_ha::backend::Backends;
use chroma_ha::config::{Config, FsyncPolicy};
use chroma_ha::replication::Replicator;

/// A temporary data directory for an in-process replicator. The
/// replicator's tasks outlive the test body (they end with the runtime),
/// so one of them may still be writing a state file while the directory is
/// removed; removal is tried again until it sticks.
pub struct StateDir(Option<tempfile::TempDir>);

impl StateDir {
    /// A new empty directory.
    pub fn new() -> StateDir {
        StateDir(Some(tempfile::tempdir().expect("create a temp dir")))
    }

    /// Its path.
    pub fn path(&self) -> &std::path::Path {
        self.0.as_ref().expect("present until dropped").path()
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let Some(dir) = self.0.take() else { return };
        let path = dir.keep();
        for _ in 0..40 {
            match std::fs::remove_dir_all(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    std::thread::sleep(Duration::from_millis(25))
                }
                _ => return,
            }
        }
    }
}

/// Chroma's `GET /api/v2/heartbeat` answer.
pub async fn heartbeat() -> Json<serde_json::Value> {
    Json(serde_json::json!({"nanosecond heartbeat": 1}))
}

/// Serves `app` on a free loopback port; returns its base URL.
pub async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// A configuration for a primary and a replica with its state in `dir`,
/// no fsync, and health probes every 50 ms.
pub fn config_for(primary: &str, replica: &str, dir: &std::path::Path) -> Config {
    let mut config = Config::with_servers(primary, &[replica]).unwrap();
    config.data_dir = dir.to_path_buf();
    config.wal.fsync = FsyncPolicy::Never;
    config.health.check_interval = Duration::from_millis(50);
    config
}

/// Starts the replication core with health probes and waits (up to 5 s)
/// until every server is healthy.
pub async fn start(config: &Config) -> Arc<Replicator> {
    let backends = Arc::new(Backends::new(config).unwrap());
    std::mem::forget(backends.spawn_probes());
    let rep = Replicator::start(config, backends.clone(), None)
        .await
        .unwrap();
    let servers = backends.all().len();
    let deadline = Instant::now() + Duration::from_secs(5);
    while backends.healthy_count() < servers {
        assert!(
            Instant::now() < deadline,
            "fake servers never became healthy"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rep
}
