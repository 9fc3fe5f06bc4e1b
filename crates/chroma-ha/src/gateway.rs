//! Wires the gateway together and runs it until Ctrl-C or SIGTERM.

use crate::backend::{Backends, SendGate};
use crate::cluster::lease_loop::{self, Started, Starter};
use crate::cluster::{Cluster, Deposed};
use crate::config::Config;
use crate::http::{metrics::Metrics, router, AppState};
use crate::replication::{Replicator, StartError};
use crate::tls::listener::TlsListener;
use crate::tls::reload::{ServerCert, TlsMetrics, POLL_INTERVAL};
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
    /// The listener's certificate or key cannot be used.
    #[error("TLS listener: {0}")]
    Tls(#[from] crate::tls::TlsError),
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
    /// Another gateway leads the shared log now.
    #[error(transparent)]
    Deposed(#[from] Deposed),
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

/// Runs the gateway with `config` until it is told to stop: alone on the
/// file log, or as one of the gateways sharing a log in PostgreSQL
/// ([`crate::cluster`]), where it also stops when it is deposed.
pub async fn run(config: Config) -> Result<(), RunError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| RunError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    let metrics = Arc::new(Metrics::new().map_err(RunError::Metrics)?);
    let config = Arc::new(config);
    // Bound first: no other process on this machine serves this address,
    // so a gateway named after it is the only one of that name.
    let listen = config.listen;
    let tcp = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: listen,
            source,
        })?;
    let (Some(cert_file), Some(key_file)) = (&config.tls.cert_file, &config.tls.key_file) else {
        let listener = tcp.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "could not set TCP_NODELAY");
            }
        });
        return serve_on(config, metrics, listener).await;
    };
    let tls_metrics = TlsMetrics::register(metrics.registry()).map_err(RunError::Metrics)?;
    let cert = ServerCert::load(cert_file, key_file, tls_metrics)?;
    let listener =
        TlsListener::new(tcp, cert.server_config()?).map_err(|source| RunError::Listen {
            addr: listen,
            source,
        })?;
    let _reloads = cert.watch(POLL_INTERVAL);
    tracing::info!(cert_file = %cert_file.display(), "the listener serves TLS only; SIGHUP reloads the certificate");
    serve_on(config, metrics, listener).await
}

/// Serves on `listener` (plain or TLS) until told to stop.
async fn serve_on<L>(
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    listener: L,
) -> Result<(), RunError>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let listen = config.listen;
    if let Some(url) = config.log_url.as_ref().map(|u| u.expose().to_string()) {
        return run_shared(config, &url, metrics, listener).await;
    }
    let backends = Arc::new(Backends::new(&config)?);
    let _probes = backends.spawn_probes();
    let rep = Replicator::start(&config, backends, Some(fsync_hook(&metrics))).await?;
    let state = AppState::start(rep, config, metrics, None);
    tracing::info!(%listen, "chroma-ha is listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(RunError::Serve)
}

fn fsync_hook(metrics: &Arc<Metrics>) -> Arc<dyn Fn(Duration) + Send + Sync> {
    let metrics = metrics.clone();
    Arc::new(move |took| metrics.observe_fsync(took))
}

/// One of several gateways on a log in PostgreSQL: serves as follower
/// until it wins the lease, then as leader; stops when told to, or when
/// deposed.
async fn run_shared<L>(
    config: Arc<Config>,
    url: &str,
    metrics: Arc<Metrics>,
    listener: L,
) -> Result<(), RunError>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let lease_time = config.cluster.lease_time;
    let lease_log = pglog::PgLog::connect(
        url,
        pglog::PgLogOptions {
            op_timeout: lease_time / 2,
            pool_size: 2,
            ..pglog::PgLogOptions::default()
        },
    )
    .await
    .map_err(StartError::from)?;
    let (gate, gate_control) = SendGate::leased(config.cluster.hold_requests_for);
    let backends = Arc::new(Backends::gated(&config, &gate)?);
    let cluster = Cluster::new(config.clone(), metrics.clone()).map_err(RunError::Metrics)?;
    let start: Starter = {
        let (config, cluster, metrics) = (config.clone(), cluster.clone(), metrics.clone());
        Box::new(move |epoch| {
            let (config, cluster, metrics) = (config.clone(), cluster.clone(), metrics.clone());
            let backends = backends.clone();
            Box::pin(async move {
                let probes = backends.spawn_probes();
                let hook = Some(fsync_hook(&metrics));
                let rep = Replicator::start_fenced(&config, backends, hook, epoch)
                    .await
                    .map_err(|e| e.to_string())?;
                let state = AppState::start(rep.clone(), config, metrics, Some(cluster));
                Ok(Started {
                    router: router(state),
                    replicator: rep,
                    probes,
                })
            })
        })
    };
    let gate_control = Arc::new(gate_control);
    let lease = tokio::spawn(lease_loop::run(
        cluster.clone(),
        lease_log.clone(),
        gate_control.clone(),
        start,
    ));
    tracing::info!(
        listen = %config.listen,
        name = %config.cluster.name,
        address = %config.cluster.advertise_url,
        "chroma-ha is listening, sharing its log in PostgreSQL with other gateways"
    );
    let serve = axum::serve(listener, crate::cluster::front::router(cluster.clone()))
        .with_graceful_shutdown(shutdown_signal());
    tokio::select! {
        served = serve => {
            // Stopped on request: hand the lease over at once.
            gate_control.close();
            if let crate::cluster::Role::Leader { epoch } | crate::cluster::Role::Candidate { epoch } =
                cluster.role()
            {
                if let Err(e) = lease_log.release_lease(&cluster.holder, epoch).await {
                    tracing::warn!(error = %e, "could not release the leader lease; it runs out by itself");
                }
            }
            served.map_err(RunError::Serve)
        }
        deposed = lease => match deposed {
            Ok(deposed) => Err(RunError::Deposed(deposed)),
            Err(e) => Err(RunError::Serve(std::io::Error::other(format!("the lease loop failed: {e}")))),
        },
    }
}
