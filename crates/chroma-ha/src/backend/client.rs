//! HTTP client for one Chroma server.
//!
//! Keeps connections alive (pooled), sets TCP_NODELAY, bounds connect time and
//! total request time, never follows redirects, ignores `HTTP_PROXY`-style
//! environment variables (backends are addressed directly), and reads each
//! answer completely before returning it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

use super::classify::{classify_response, AttemptClass};
use super::gate::SendGate;
use crate::config::{Config, Credentials, ServerConfig};
use crate::tls::ClientTls;

/// Connection settings shared by every server's client.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Default limit of one request, from connecting to the last body byte.
    pub request_timeout: Duration,
    /// Limit of establishing a TCP connection.
    pub connect_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per server.
    pub pool_max_idle: usize,
    /// Trusted roots and client certificate for `https://` servers.
    pub tls: ClientTls,
}

impl ClientSettings {
    /// The settings the configuration asks for, with pool defaults
    /// (idle connections kept 90 s, at most 256 per server) and `tls`
    /// (built from `config.tls` by [`ClientTls::from_config`]).
    pub fn from_config(config: &Config, tls: ClientTls) -> Self {
        ClientSettings {
            request_timeout: config.request_timeout,
            connect_timeout: config.connect_timeout,
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle: 256,
            tls,
        }
    }
}

/// An answer from a server: status, end-to-end headers (hop-by-hop headers
/// removed) and the complete body.
#[derive(Debug, Clone)]
pub struct UpstreamResponse {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers without hop-by-hop headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl UpstreamResponse {
    /// Whether this answer is Chroma's verdict or a sign of an unwell server;
    /// see [`AttemptClass`].
    pub fn class(&self) -> AttemptClass {
        classify_response(self.status, &self.body)
    }
}

/// A request that produced no complete HTTP answer. Every variant names the
/// server; all of them are [`AttemptClass::Transient`].
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// No connection could be made (refused, unreachable, DNS, connect
    /// timeout): the request certainly did not reach the server.
    #[error("server '{server}': cannot connect to {url}: {detail}")]
    Connect {
        /// Server name.
        server: String,
        /// Full request URL.
        url: String,
        /// Cause chain.
        detail: String,
    },
    /// No complete answer within the time limit; the server may have acted.
    #[error("server '{server}': {method} {path} got no complete answer within {timeout:?}")]
    Timeout {
        /// Server name.
        server: String,
        /// Request method.
        method: Method,
        /// Path and query.
        path: String,
        /// The limit that expired.
        timeout: Duration,
    },
    /// The connection broke mid-request or the answer was malformed; the
    /// server may have acted.
    #[error("server '{server}': {method} {path} failed: {detail}")]
    Broken {
        /// Server name.
        server: String,
        /// Request method.
        method: Method,
        /// Path and query.
        path: String,
        /// Cause chain.
        detail: String,
    },
    /// This gateway does not hold the leader lease of its shared log: the
    /// request was not sent, and says nothing about the server.
    #[error("server '{server}': not sent: this gateway does not lead the shared log")]
    NotLeading {
        /// Server name.
        server: String,
    },
    /// The request could not be built (bad path or header); it was not sent.
    #[error("server '{server}': cannot send {method} {path}: {detail}")]
    InvalidRequest {
        /// Server name.
        server: String,
        /// Request method.
        method: Method,
        /// Path and query.
        path: String,
        /// What is wrong.
        detail: String,
    },
}

impl TransportError {
    /// Whether the server may have received (and acted on) the request:
    /// false for connect failures and unbuildable requests, true otherwise.
    pub fn may_have_reached_server(&self) -> bool {
        matches!(
            self,
            TransportError::Timeout { .. } | TransportError::Broken { .. }
        )
    }
}

/// The client could not be built for a server.
#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    /// The HTTP client library refused the settings.
    #[error("server '{server}': cannot build HTTP client: {source}")]
    Http {
        /// Server name.
        server: String,
        /// Underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// A TLS file (CA, client certificate or key) cannot be used.
    #[error("TLS for the servers: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The configured credentials are not a valid header value.
    #[error("server '{server}': its token is not a valid HTTP header value")]
    Credentials {
        /// Server name.
        server: String,
    },
}

/// HTTP client for one Chroma server. Cheap to clone (the connection pool is
/// shared between clones).
#[derive(Clone)]
pub struct BackendClient {
    name: Arc<str>,
    base_url: Arc<str>,
    http: reqwest::Client,
    credentials: Option<(HeaderName, HeaderValue)>,
    request_timeout: Duration,
    gate: SendGate,
}

impl fmt::Debug for BackendClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendClient")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("credentials", &self.credentials.as_ref().map(|_| "***"))
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// Header names that apply to one connection only (RFC 9110 §7.6.1), plus
/// the non-standard `proxy-connection`.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes hop-by-hop headers: the fixed list and every header named in a
/// `Connection` header.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in &listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// Renders an error and its sources as `a: b: c`.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

impl BackendClient {
    /// Builds the client of `server`. Does not connect; needs no runtime.
    pub fn new(server: &ServerConfig, settings: &ClientSettings) -> Result<Self, ClientBuildError> {
        let http = settings
            .tls
            .apply(reqwest::Client::builder())
            .tcp_nodelay(true)
            .connect_timeout(settings.connect_timeout)
            .pool_idle_timeout(settings.pool_idle_timeout)
            .pool_max_idle_per_host(settings.pool_max_idle)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|source| ClientBuildError::Http {
                server: server.name.clone(),
                source,
            })?;
        let credentials =
            match &server.credentials {
                Some(c) => Some(Self::credential_header(c).ok_or_else(|| {
                    ClientBuildError::Credentials {
                        server: server.name.clone(),
                    }
                })?),
                None => None,
            };
        Ok(BackendClient {
            name: server.name.as_str().into(),
            base_url: server.url.trim_end_matches('/').into(),
            http,
            credentials,
            request_timeout: settings.request_timeout,
            gate: SendGate::open(),
        })
    }

    /// This client, sending only while `gate` is open.
    pub fn with_gate(mut self, gate: SendGate) -> Self {
        self.gate = gate;
        self
    }

    fn credential_header(c: &Credentials) -> Option<(HeaderName, HeaderValue)> {
        let name = HeaderName::from_static(c.header_name());
        let mut value = HeaderValue::from_str(&c.header_value()).ok()?;
        value.set_sensitive(true);
        Some((name, value))
    }

    /// The server's configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server's base URL (no trailing slash).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The default per-request time limit.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// Sends one request with the default time limit; see
    /// [`send_with_timeout`](Self::send_with_timeout).
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<UpstreamResponse, TransportError> {
        self.send_with_timeout(method, path_and_query, headers, body, self.request_timeout)
            .await
    }

    /// Sends `method base_url+path_and_query` with `headers` and `body`, and
    /// reads the whole answer within `timeout`.
    ///
    /// `path_and_query` must start with `/`. Hop-by-hop headers, `Host` and
    /// `Content-Length` are dropped from `headers` (the client sets its own).
    /// If the server has configured credentials, any `Authorization` and
    /// `X-Chroma-Token` in `headers` are replaced by them; otherwise headers
    /// pass as given. Any HTTP answer is `Ok`, whatever its status; use
    /// [`UpstreamResponse::class`] to tell verdicts from failures.
    pub async fn send_with_timeout(
        &self,
        method: Method,
        path_and_query: &str,
        mut headers: HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Result<UpstreamResponse, TransportError> {
        if !path_and_query.starts_with('/') {
            return Err(TransportError::InvalidRequest {
                server: self.name.to_string(),
                method,
                path: path_and_query.to_string(),
                detail: "path does not start with '/'".to_string(),
            });
        }
        if !self.gate.pass(timeout).await {
            return Err(TransportError::NotLeading {
                server: self.name.to_string(),
            });
        }
        strip_hop_by_hop(&mut headers);
        headers.remove(header::HOST);
        headers.remove(header::CONTENT_LENGTH);
        if let Some((name, value)) = &self.credentials {
            headers.remove(header::AUTHORIZATION);
            headers.remove("x-chroma-token");
            headers.insert(name.clone(), value.clone());
        }
        let url = format!("{}{}", self.base_url, path_and_query);
        let request = self
            .http
            .request(method.clone(), &url)
            .headers(headers)
            .body(body)
            .timeout(timeout);
        let result = async {
            let mut response = request.send().await?;
            let status = response.status();
            let mut headers = std::mem::take(response.headers_mut());
            let body = response.bytes().await?;
            strip_hop_by_hop(&mut headers);
            Ok::<_, reqwest::Error>(UpstreamResponse {
                status,
                headers,
                body,
            })
        }
        .await;
        result.map_err(|e| self.transport_error(&e, method, path_and_query, &url, timeout))
    }

    fn transport_error(
        &self,
        e: &reqwest::Error,
        method: Method,
        path: &str,
        url: &str,
        timeout: Duration,
    ) -> TransportError {
        let server = self.name.to_string();
        let path = path.to_string();
        if e.is_connect() {
            let detail = match crate::tls::explain_failure(e) {
                Some(tls) => format!("{tls}: {}", error_chain(e)),
                None => error_chain(e),
            };
            TransportError::Connect {
                server,
                url: url.to_string(),
                detail,
            }
        } else if e.is_timeout() {
            TransportError::Timeout {
                server,
                method,
                path,
                timeout,
            }
        } else if e.is_builder() {
            TransportError::InvalidRequest {
                server,
                method,
                path,
                detail: error_chain(e),
            }
        } else {
            TransportError::Broken {
                server,
                method,
                path,
                detail: error_chain(e),
            }
        }
    }
}

#[cfg(test)]
mod tests;
