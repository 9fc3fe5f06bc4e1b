//! The front: the Chroma-compatible proxy on `/api/v2/…`, and the
//! gateway's own endpoints (`/health`, `/ready`, `/status`,
//! `/status/history`, `/metrics`, `/admin/…`, and the status page at `/`).

pub mod admin;
pub mod history;
pub mod metrics;
pub mod page;
pub mod proxy;
pub mod status;

use crate::chroma::GatewayError;
use crate::config::Config;
use crate::replication::Replicator;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use std::sync::Arc;

/// Everything a request handler needs.
#[derive(Debug)]
pub struct AppState {
    /// The replication core.
    pub rep: Arc<Replicator>,
    /// The configuration the gateway runs with.
    pub config: Arc<Config>,
    /// Prometheus metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// Unknown path shapes already warned about.
    pub warned_shapes: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The gateways sharing the log, when it is in PostgreSQL.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// The last minutes, sampled every second, for the status page.
    pub history: history::History,
    /// The current or last rebuild of a server.
    pub rebuilds: Arc<crate::rebuild::Rebuilds>,
}

impl AppState {
    /// The state of a gateway whose core runs `rep`, with its history
    /// sampled every second for as long as the state lives. Needs a Tokio
    /// runtime.
    pub fn start(
        rep: Arc<Replicator>,
        config: Arc<Config>,
        metrics: Arc<metrics::Metrics>,
        cluster: Option<Arc<crate::cluster::Cluster>>,
    ) -> Arc<Self> {
        let state = Arc::new(AppState {
            rep,
            config,
            metrics,
            warned_shapes: Default::default(),
            cluster,
            history: history::History::new(),
            rebuilds: Arc::default(),
        });
        history::spawn_sampler(Arc::downgrade(&state));
        state
    }
}

/// The gateway's router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(page::status_page))
        .route("/favicon.ico", get(page::favicon))
        .route("/health", get(status::health))
        .route("/ready", get(status::ready))
        .route("/status", get(status::status))
        .route("/status/history", get(history::history))
        .route("/metrics", get(metrics::metrics))
        .nest("/admin", admin::router(state.clone()))
        .route("/api/{*rest}", any(proxy::proxy))
        .fallback(not_found)
        .with_state(state)
}

async fn not_found() -> Response {
    error_response(&GatewayError::not_found("no such endpoint on chroma-ha"))
}

/// A gateway error as a Chroma-style JSON response.
pub fn error_response(error: &GatewayError) -> Response {
    (
        error.status,
        [(
            http::header::CONTENT_TYPE,
            crate::chroma::errors::CONTENT_TYPE,
        )],
        error.body(),
    )
        .into_response()
}
