//! Active health probes: `GET /api/v2/heartbeat` every check interval.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use tokio::time::MissedTickBehavior;

use super::client::{BackendClient, TransportError};
use super::health::Health;

/// Chroma's heartbeat route.
pub const HEARTBEAT_PATH: &str = "/api/v2/heartbeat";

/// Why a heartbeat probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No answer.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// An answer other than 2xx.
    #[error("heartbeat answered {0}")]
    Status(StatusCode),
    /// A 2xx answer that is not Chroma's heartbeat JSON.
    #[error("heartbeat answer is not Chroma's {{\"nanosecond heartbeat\": N}}")]
    NotHeartbeat,
}

/// Probes one server once: succeeds only on a 2xx answer within `timeout`
/// whose body is a JSON object with a `"nanosecond heartbeat"` member (so
/// another service answering on the port does not pass for Chroma).
pub async fn heartbeat(client: &BackendClient, timeout: Duration) -> Result<(), ProbeError> {
    let response = client
        .send_with_timeout(
            Method::GET,
            HEARTBEAT_PATH,
            HeaderMap::new(),
            Bytes::new(),
            timeout,
        )
        .await?;
    if !response.status.is_success() {
        return Err(ProbeError::Status(response.status));
    }
    match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&response.body) {
        Ok(obj) if obj.contains_key("nanosecond heartbeat") => Ok(()),
        _ => Err(ProbeError::NotHeartbeat),
    }
}

/// Runs `probe` at once and then every `interval`, feeding the results into
/// `health`. Probes never overlap: if one takes longer than `interval`, the
/// next starts right after it. Never returns; abort the task to stop it.
pub async fn run_probe_loop<F, Fut, E>(health: &Health, interval: Duration, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match probe().await {
            Ok(()) => health.record_probe_success(),
            Err(e) => health.record_probe_failure(&e.to_string()),
        }
    }
}
