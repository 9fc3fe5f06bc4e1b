//! The backend client and its attempt classification against a REAL Chroma
//! 1.5.9 server (started by the test harness): the heartbeat probe passes,
//! and Chroma's own error answers (404 for a missing collection, 400 for a
//! malformed body) are answers, not transient failures. The same client
//! against in-process stand-ins is tested in `src/backend/client/tests.rs`.

mod support;

use std::time::Duration;

use bytes::Bytes;
use chroma_ha::backend::{
    classify, heartbeat, AttemptClass, BackendClient, ClientSettings, TransportError,
    UpstreamResponse,
};
use chroma_ha::config::ServerConfig;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use support::{block_on, ChromaServer};

const COLLECTIONS: &str = "/api/v2/tenants/default_tenant/databases/default_database/collections";

fn client_for(url: String) -> BackendClient {
    let server = ServerConfig {
        name: "real".into(),
        url,
        credentials: None,
        read_weight: None,
    };
    let settings = ClientSettings {
        request_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(2),
        pool_idle_timeout: Duration::from_secs(90),
        pool_max_idle: 8,
        tls: Default::default(),
    };
    BackendClient::new(&server, &settings).unwrap()
}

async fn send(
    c: &BackendClient,
    method: Method,
    path: &str,
    body: &'static [u8],
) -> Result<UpstreamResponse, TransportError> {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    c.send(method, path, h, Bytes::from_static(body)).await
}

#[test]
fn a_real_chroma_passes_the_heartbeat_and_its_error_answers_are_answers() {
    let chroma = ChromaServer::start();
    block_on(async {
        let c = client_for(chroma.url());
        heartbeat(&c, Duration::from_secs(5))
            .await
            .expect("heartbeat of a running Chroma");

        // A missing collection: Chroma's 404 with its error JSON.
        let r = send(
            &c,
            Method::GET,
            &format!("{COLLECTIONS}/no-such-collection"),
            b"",
        )
        .await;
        let answer = r.as_ref().expect("an answer");
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{answer:?}");
        assert_eq!(classify(&r), AttemptClass::Answer, "{answer:?}");

        // A malformed body: Chroma's 400.
        let r = send(&c, Method::POST, COLLECTIONS, b"{bad").await;
        let answer = r.as_ref().expect("an answer");
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{answer:?}");
        assert_eq!(classify(&r), AttemptClass::Answer, "{answer:?}");

        // A success, for contrast: the collection is created.
        let r = send(&c, Method::POST, COLLECTIONS, br#"{"name":"client-test"}"#).await;
        let answer = r.as_ref().expect("an answer");
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        assert_eq!(classify(&r), AttemptClass::Answer);
        let created: serde_json::Value =
            serde_json::from_slice(&answer.body).expect("JSON collection");
        assert_eq!(created["name"], "client-test", "{created}");
    });
}

#[test]
fn a_stopped_chroma_is_a_transient_failure_and_fails_the_heartbeat() {
    let mut chroma = ChromaServer::start();
    let url = chroma.url();
    chroma.kill();
    block_on(async {
        let c = client_for(url);
        assert!(
            heartbeat(&c, Duration::from_secs(2)).await.is_err(),
            "the heartbeat of a killed Chroma fails"
        );
        let r = send(&c, Method::GET, COLLECTIONS, b"").await;
        assert!(r.is_err(), "no answer from a killed Chroma: {r:?}");
        assert_eq!(classify(&r), AttemptClass::Transient);
    });
}
