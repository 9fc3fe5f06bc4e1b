//! Wires the gateway together and runs it until Ctrl-C or SIGTERM.

use crate::backend::Backends;
use crate::config::Config;
use crate::http::{metrics::Metrics, router, AppState};
use crate::replication::{Replicator, StartError};
use axum::serve::ListenerExt;
use std::sync::Arc;
use std::time::Duration;

/// Why the gateway could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The data directory could not be created.
    #[error("creating the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A server's HTTP client could not be built.
    #[error(transparent)]
    Client(#[from] crate::backend::ClientBuildError),
    /// The replication core could not start.
    #[error(transparent)]
    Replication(#[from] StartError),
    /// Metrics could not be registered.
    #[error("registering metrics: {0}")]
    Metrics(String),
    /// The listen address could not be bound.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP server failed.
    #[error("serving HTTP: {0}")]
    Serve(#[source] std::io::Error),
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    tracing::info!("stopping: no new requests; the log is durable, appliers resume at next start");
}

/// Runs the gateway with `config` until it is told to stop.
pub async fn run(config: Config) -> Result<(), RunError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| RunError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    let metrics = Arc::new(Metrics::new().map_err(RunError::Metrics)?);
    let backends = Arc::new(Backends::new(&config)?);
    let _probes = backends.spawn_probes();
    let fsync_metrics = metrics.clone();
    let on_fsync: Arc<dyn Fn(Duration) + Send + Sync> =
        Arc::new(move |took| fsync_metrics.observe_fsync(took));
    let rep = Replicator::start(&config, backends, Some(on_fsync)).await?;
    let listen = config.listen;
    let state = Arc::new(AppState {
        rep,
        config: Arc::new(config),
        metrics,
        warned_shapes: Default::default(),
    });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: listen,
            source,
        })?
        .tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "could not set TCP_NODELAY");
            }
        });
    tracing::info!(%listen, "chroma-ha is listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(RunError::Serve)
}
