//! Forwarding a request to the leader and streaming its answer back.
//!
//! The request body is read whole first (it is bounded by
//! `max_body_bytes`), so that a request the leader never received (the
//! connection was refused: the leader just died) can be sent again to the
//! next leader. An answer's body is streamed back as it arrives, with its
//! status and end-to-end headers (`x-chroma-ha-backend`, `x-chroma-ha-lsn`
//! included).

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method};

use crate::backend::strip_hop_by_hop;
use crate::config::Config;
use crate::tls::ClientTls;

/// Header a follower adds to what it forwards, naming itself. A gateway
/// that gets a forwarded request and does not lead answers it (holds it,
/// then 503) instead of forwarding it again: no forwarding loops.
pub const FORWARDED_BY: &str = "x-chroma-ha-forwarded-by";

/// Sends requests to the leader.
#[derive(Debug, Clone)]
pub struct Forwarder {
    http: reqwest::Client,
}

/// Why a forward did not bring an answer.
#[derive(Debug)]
pub enum ForwardError {
    /// The leader was not reached; the request may be sent elsewhere.
    NotSent(String),
    /// It may have reached the leader; its outcome is unknown.
    Unknown(String),
}

impl Forwarder {
    /// A client whose overall limit covers what the leader may take: its
    /// own hold for a leader, and a write's whole wait for its outcome.
    /// It reaches an `https://` leader trusting `tls.ca_file` (or the
    /// system's roots), with the configured client certificate.
    pub fn new(config: &Config) -> Result<Forwarder, String> {
        let limit =
            config.request_timeout + config.cluster.hold_requests_for + Duration::from_secs(10);
        let tls = ClientTls::from_config(&config.tls).map_err(|e| e.to_string())?;
        let http = tls
            .apply(reqwest::Client::builder())
            .tcp_nodelay(true)
            .connect_timeout(config.connect_timeout)
            .timeout(limit)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Forwarder { http })
    }

    /// Sends `method path_and_query` with `headers` and `body` to the
    /// gateway at `leader` (its base URL), as forwarded by `by`.
    pub async fn forward(
        &self,
        leader: &str,
        by: &str,
        method: Method,
        path_and_query: &str,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> Result<Response, ForwardError> {
        strip_hop_by_hop(&mut headers);
        headers.remove(header::HOST);
        headers.remove(header::CONTENT_LENGTH);
        if let Ok(value) = HeaderValue::from_str(by) {
            headers.insert(FORWARDED_BY, value);
        }
        let url = format!("{}{}", leader.trim_end_matches('/'), path_and_query);
        let sent = self
            .http
            .request(method, &url)
            .headers(headers)
            .body(body)
            .send()
            .await;
        let upstream = match sent {
            Ok(r) => r,
            Err(e) if e.is_connect() || e.is_builder() => {
                let tls = crate::tls::explain_failure(&e)
                    .map(|t| format!(" ({t})"))
                    .unwrap_or_default();
                return Err(ForwardError::NotSent(format!("{url}: {e}{tls}")));
            }
            Err(e) => return Err(ForwardError::Unknown(format!("{url}: {e}"))),
        };
        let mut response = Response::builder().status(upstream.status());
        if let Some(out) = response.headers_mut() {
            let mut headers = upstream.headers().clone();
            strip_hop_by_hop(&mut headers);
            headers.remove(header::CONTENT_LENGTH);
            out.extend(headers);
        }
        response
            .body(Body::from_stream(upstream.bytes_stream()))
            .map_err(|e| ForwardError::Unknown(format!("{url}: building the answer: {e}")))
    }

    /// The leader's `/status` document, within a few seconds.
    pub async fn leader_status(&self, leader: &str) -> Result<serde_json::Value, String> {
        let url = format!("{}/status", leader.trim_end_matches('/'));
        let answer = self
            .http
            .get(&url)
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let bytes = answer.bytes().await.map_err(|e| format!("{url}: {e}"))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{url}: not JSON: {e}"))
    }
}
