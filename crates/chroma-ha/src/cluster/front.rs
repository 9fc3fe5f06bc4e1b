//! What a gateway sharing the log does with each request, by role:
//!
//! - `/health`: answered here, always.
//! - The leader with its core running: everything goes to the core's
//!   router, as for a single gateway.
//! - Otherwise `/ready`, `/status` and `/metrics` are answered here, and
//!   every other request is forwarded to the leader, or held while there is
//!   none (a candidate waiting out its lease, or no leader known) until one
//!   is, at most `log.hold_requests_for`, then answered 503.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;
use tokio::time::Instant;
use tower::ServiceExt;

use super::forward::{ForwardError, FORWARDED_BY};
use super::{Cluster, Role};
use crate::chroma::GatewayError;
use crate::http::error_response;

/// The router of a gateway on a shared log.
pub fn router(cluster: Arc<Cluster>) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(cluster)
}

async fn handle(State(cluster): State<Arc<Cluster>>, request: Request) -> Response {
    let path = request.uri().path();
    if path == "/health" {
        return crate::http::status::health().await;
    }
    if let Some(router) = cluster.leader_router() {
        return serve(router, request).await;
    }
    match path {
        "/ready" => ready(&cluster),
        "/status" => status(&cluster).await,
        "/metrics" => (
            [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            cluster.encode_metrics(),
        )
            .into_response(),
        _ => forward_or_hold(&cluster, request).await,
    }
}

async fn serve(router: &axum::Router, request: Request) -> Response {
    match router.clone().oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// A follower is ready while it knows a leader to forward to.
fn ready(cluster: &Cluster) -> Response {
    match cluster.role() {
        Role::Follower { leader, .. } => {
            Json(serde_json::json!({ "ready": true, "leader": leader })).into_response()
        }
        role => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({
                "ready": false,
                "reason": format!("no leader to forward to (this gateway is {})", role.name()),
            })),
        )
            .into_response(),
    }
}

/// A follower's `/status`: the leader's, with this gateway's view of the
/// cluster in place of the leader's; only the cluster part when the
/// leader cannot be asked.
async fn status(cluster: &Cluster) -> Response {
    let own = serde_json::to_value(super::view::collect(cluster)).unwrap_or_default();
    let mut doc = match cluster.role() {
        Role::Follower { address, .. } => cluster
            .forwarder
            .leader_status(&address)
            .await
            .unwrap_or_else(|e| not_ready(format!("the leader's status could not be read: {e}"))),
        role => not_ready(format!("no leader (this gateway is {})", role.name())),
    };
    if let Some(map) = doc.as_object_mut() {
        map.insert("cluster".into(), own);
    }
    Json(doc).into_response()
}

/// A `/status` document with no servers, not ready for `reason`.
fn not_ready(reason: String) -> serde_json::Value {
    serde_json::json!({
        "service": "chroma-ha",
        "version": env!("CARGO_PKG_VERSION"),
        "ready": false,
        "not_ready_reason": reason,
        "instances": [],
    })
}

async fn forward_or_hold(cluster: &Cluster, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let limit = cluster.gateway_config.max_body_bytes;
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(body) => body,
        Err(_) => return error_response(&GatewayError::payload_too_large(limit)),
    };
    let forwarded = parts.headers.contains_key(FORWARDED_BY);
    let path_and_query = parts.uri.path_and_query().map_or_else(
        || parts.uri.path().to_string(),
        |pq| pq.as_str().to_string(),
    );
    let deadline = Instant::now() + cluster.config.hold_requests_for;
    let mut roles = cluster.watch_role();
    let mut held = false;
    let mut last_failure = None;
    loop {
        if let Some(router) = cluster.leader_router() {
            if held {
                cluster.metrics.held("served");
            }
            let mut request = Request::from_parts(parts, Body::from(body));
            request.headers_mut().remove(FORWARDED_BY);
            return serve(router, request).await;
        }
        let role = roles.borrow_and_update().clone();
        if let Role::Follower { address, .. } = role {
            if !forwarded && address != cluster.config.advertise_url {
                let sent = cluster
                    .forwarder
                    .forward(
                        &address,
                        &cluster.config.name,
                        parts.method.clone(),
                        &path_and_query,
                        parts.headers.clone(),
                        body.clone(),
                    )
                    .await;
                match sent {
                    Ok(response) => {
                        cluster.metrics.forwarded("answered");
                        if held {
                            cluster.metrics.held("served");
                        }
                        return response;
                    }
                    Err(ForwardError::Unknown(e)) => {
                        cluster.metrics.forwarded("failed");
                        // 504, as for a write whose executor did not
                        // answer: the one status that means "unknown".
                        return error_response(&GatewayError::gateway_timeout(format!(
                            "the leader took this request and did not answer ({e}); \
                             its outcome is unknown: read before you retry it"
                        )));
                    }
                    Err(ForwardError::NotSent(e)) => {
                        // The leader is gone: wait for the next one.
                        cluster.metrics.forwarded("unreachable");
                        last_failure = Some(e);
                    }
                }
            }
        }
        held = true;
        let pause = cluster
            .config
            .renew_interval
            .min(deadline.saturating_duration_since(Instant::now()));
        let woke = tokio::time::timeout(pause, roles.changed()).await;
        if Instant::now() >= deadline || matches!(woke, Ok(Err(_))) {
            cluster.metrics.held("timed_out");
            let why = last_failure.map_or_else(String::new, |e| format!(" (last try: {e})"));
            return error_response(&GatewayError::service_unavailable(format!(
                "no gateway leads the log now; this request was held {:?} and not sent{why}; \
                 retry it",
                cluster.config.hold_requests_for
            )));
        }
    }
}
