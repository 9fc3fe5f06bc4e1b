//! Tests of the client and attempt classification against an in-process
//! HTTP server on 127.0.0.1.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::HeaderMap as AxumHeaders;
use axum::response::IntoResponse;
use axum::routing::{any, get};
use axum::Router;

use super::*;
use crate::backend::classify::classify;
use crate::backend::probe::{heartbeat, ProbeError};
use crate::config::Secret;

const CHROMA_404: &str = r#"{"error":"NotFoundError","message":"Collection [x] does not exist"}"#;
const CHROMA_500: &str = r#"{"error":"InternalError","message":"UNIQUE constraint failed"}"#;

fn json(status: u16, body: &'static str) -> impl IntoResponse {
    (
        StatusCode::from_u16(status).unwrap(),
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
}

/// Echoes method, path, query, selected request headers and body as JSON.
async fn echo(
    method: Method,
    uri: http::Uri,
    headers: AxumHeaders,
    body: Bytes,
) -> impl IntoResponse {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let out = serde_json::json!({
        "method": method.as_str(),
        "path": uri.path(),
        "query": uri.query(),
        "authorization": h("authorization"),
        "x-chroma-token": h("x-chroma-token"),
        "x-custom": h("x-custom"),
        "keep-alive": h("keep-alive"),
        "body": String::from_utf8_lossy(&body),
    });
    (
        [
            ("keep-alive", "timeout=5"),
            ("x-upstream", "yes"),
            ("proxy-authenticate", "Basic"),
        ],
        axum::Json(out),
    )
}

async fn start_server() -> SocketAddr {
    let app = Router::new()
        .route(
            "/api/v2/heartbeat",
            get(|| async { json(200, r#"{"nanosecond heartbeat":1}"#) }),
        )
        .route("/ok", get(|| async { json(200, "[]") }))
        .route("/nf", get(|| async { json(404, CHROMA_404) }))
        .route("/ie", get(|| async { json(500, CHROMA_500) }))
        .route(
            "/bad-gateway",
            get(|| async { (StatusCode::BAD_GATEWAY, "") }),
        )
        .route(
            "/unavailable-json",
            get(|| async { json(503, r#"{"error":"Unavailable","message":"busy"}"#) }),
        )
        .route(
            "/html",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "<html>oops</html>") }),
        )
        .route(
            "/hang",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        )
        .route("/other/api/v2/heartbeat", get(|| async { "hello" }))
        .route("/echo", any(echo))
        .route("/prefix/echo", any(echo));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

fn settings(timeout_ms: u64) -> ClientSettings {
    ClientSettings {
        request_timeout: Duration::from_millis(timeout_ms),
        connect_timeout: Duration::from_secs(2),
        pool_idle_timeout: Duration::from_secs(90),
        pool_max_idle: 8,
        tls: Default::default(),
    }
}

fn client_for(url: String, credentials: Option<Credentials>, timeout_ms: u64) -> BackendClient {
    let server = ServerConfig {
        name: "test".into(),
        url,
        credentials,
        read_weight: None,
    };
    BackendClient::new(&server, &settings(timeout_ms)).unwrap()
}

async fn get_path(c: &BackendClient, path: &str) -> Result<UpstreamResponse, TransportError> {
    c.send(Method::GET, path, HeaderMap::new(), Bytes::new())
        .await
}

#[tokio::test]
async fn classifies_answers_and_transients() {
    let addr = start_server().await;
    let c = client_for(format!("http://{addr}"), None, 500);

    let cases = [
        ("/ok", 200, AttemptClass::Answer),
        ("/nf", 404, AttemptClass::Answer),
        ("/ie", 500, AttemptClass::Answer),
        ("/bad-gateway", 502, AttemptClass::Transient),
        ("/unavailable-json", 503, AttemptClass::Transient),
        ("/html", 500, AttemptClass::Transient),
        ("/no-such-route", 404, AttemptClass::Transient),
    ];
    for (path, status, class) in cases {
        let result = get_path(&c, path).await;
        let response = result.as_ref().unwrap();
        assert_eq!(response.status.as_u16(), status, "{path}");
        assert_eq!(classify(&result), class, "{path}");
    }
    let nf = get_path(&c, "/nf").await.unwrap();
    assert_eq!(nf.body, CHROMA_404.as_bytes());
    assert_eq!(
        nf.headers.get(header::CONTENT_TYPE).unwrap(),
        "application/json"
    );
}

#[tokio::test]
async fn a_hang_past_the_timeout_is_transient() {
    let addr = start_server().await;
    let c = client_for(format!("http://{addr}"), None, 200);
    let started = std::time::Instant::now();
    let result = get_path(&c, "/hang").await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(classify(&result), AttemptClass::Transient);
    let err = result.unwrap_err();
    assert!(matches!(err, TransportError::Timeout { .. }), "{err:?}");
    assert!(err.may_have_reached_server());
    let msg = err.to_string();
    assert!(msg.contains("test") && msg.contains("/hang"), "{msg}");

    // A per-call timeout overrides the default.
    let c = client_for(format!("http://{addr}"), None, 60_000);
    let result = c
        .send_with_timeout(
            Method::GET,
            "/hang",
            HeaderMap::new(),
            Bytes::new(),
            Duration::from_millis(100),
        )
        .await;
    assert!(matches!(result, Err(TransportError::Timeout { .. })));
}

#[tokio::test]
async fn a_closed_port_is_a_transient_connect_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let c = client_for(format!("http://{addr}"), None, 1000);
    let result = get_path(&c, "/ok").await;
    assert_eq!(classify(&result), AttemptClass::Transient);
    let err = result.unwrap_err();
    assert!(matches!(err, TransportError::Connect { .. }), "{err:?}");
    assert!(!err.may_have_reached_server());
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

#[tokio::test]
async fn passes_method_query_body_and_drops_hop_by_hop_headers() {
    let addr = start_server().await;
    let c = client_for(format!("http://{addr}/prefix/"), None, 2000);
    let mut headers = HeaderMap::new();
    headers.insert("x-custom", HeaderValue::from_static("1"));
    headers.insert("keep-alive", HeaderValue::from_static("timeout=1"));
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_static("Bearer client"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
    let r = c
        .send(
            Method::POST,
            "/echo?limit=5&offset=10",
            headers,
            Bytes::from_static(b"{\"ids\":[\"a\"]}"),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/prefix/echo");
    assert_eq!(v["query"], "limit=5&offset=10");
    assert_eq!(v["body"], "{\"ids\":[\"a\"]}");
    assert_eq!(v["x-custom"], "1");
    assert_eq!(v["keep-alive"], serde_json::Value::Null);
    // Without configured credentials the client's own pass through.
    assert_eq!(v["authorization"], "Bearer client");
    // Hop-by-hop response headers are gone, end-to-end ones stay.
    assert!(r.headers.get("keep-alive").is_none());
    assert!(r.headers.get("proxy-authenticate").is_none());
    assert_eq!(r.headers.get("x-upstream").unwrap(), "yes");
}

#[tokio::test]
async fn configured_credentials_replace_the_clients() {
    let addr = start_server().await;
    let mut headers = HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_static("Bearer client"),
    );
    headers.insert("x-chroma-token", HeaderValue::from_static("client"));

    let c = client_for(
        format!("http://{addr}"),
        Some(Credentials::Bearer(Secret::new("gw"))),
        2000,
    );
    let r = c
        .send(Method::GET, "/echo", headers.clone(), Bytes::new())
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["authorization"], "Bearer gw");
    assert_eq!(v["x-chroma-token"], serde_json::Value::Null);

    let c = client_for(
        format!("http://{addr}"),
        Some(Credentials::ChromaToken(Secret::new("gw"))),
        2000,
    );
    let r = c
        .send(Method::GET, "/echo", headers, Bytes::new())
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["authorization"], serde_json::Value::Null);
    assert_eq!(v["x-chroma-token"], "gw");
    assert!(!format!("{c:?}").contains("gw\""));
}

#[tokio::test]
async fn a_path_without_slash_is_not_sent() {
    let c = client_for("http://127.0.0.1:9".into(), None, 1000);
    let err = get_path(&c, "api").await.unwrap_err();
    assert!(matches!(err, TransportError::InvalidRequest { .. }));
    assert!(!err.may_have_reached_server());
}

#[tokio::test]
async fn heartbeat_probe() {
    let addr = start_server().await;
    let c = client_for(format!("http://{addr}"), None, 2000);
    heartbeat(&c, Duration::from_secs(1)).await.unwrap();

    // Another service answering 200 is not Chroma.
    let other = client_for(format!("http://{addr}/other"), None, 2000);
    let err = heartbeat(&other, Duration::from_secs(1)).await.unwrap_err();
    assert!(matches!(err, ProbeError::NotHeartbeat), "{err:?}");

    let missing = client_for(format!("http://{addr}/prefix"), None, 2000);
    let err = heartbeat(&missing, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProbeError::Status(StatusCode::NOT_FOUND)),
        "{err:?}"
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = listener.local_addr().unwrap();
    drop(listener);
    let down = client_for(format!("http://{closed}"), None, 2000);
    let err = heartbeat(&down, Duration::from_secs(1)).await.unwrap_err();
    assert!(matches!(
        err,
        ProbeError::Transport(TransportError::Connect { .. })
    ));
}

#[test]
fn strip_hop_by_hop_removes_listed_headers() {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONNECTION,
        HeaderValue::from_static("close, x-private"),
    );
    h.insert("x-private", HeaderValue::from_static("1"));
    h.insert(
        header::TRANSFER_ENCODING,
        HeaderValue::from_static("chunked"),
    );
    h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
    h.insert(header::TE, HeaderValue::from_static("trailers"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    strip_hop_by_hop(&mut h);
    assert_eq!(h.len(), 1);
    assert!(h.contains_key(header::CONTENT_TYPE));
}
