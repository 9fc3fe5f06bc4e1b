//! The proxy handler for `/api/…`: classify, then write through the log,
//! read from a caught-up server, or pass an unknown route to the executor.

use super::{error_response, AppState};
use crate::backend::strip_hop_by_hop;
use crate::chroma::{classify, Class, GatewayError, Route};
use crate::replication::Answer;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http::{header, HeaderMap, HeaderName, HeaderValue};
use std::sync::Arc;
use std::time::Instant;

/// Response header naming the server that answered.
pub const BACKEND_HEADER: &str = "x-chroma-ha-backend";
/// Response header with the LSN of a logged write.
pub const LSN_HEADER: &str = "x-chroma-ha-lsn";

/// The client's credentials: forwarded to the executor, never logged.
fn credentials(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in [
        header::AUTHORIZATION,
        HeaderName::from_static("x-chroma-token"),
    ] {
        if let Some(value) = headers.get(&name) {
            out.insert(name, value.clone());
        }
    }
    out
}

/// Handles every request under `/api/`.
pub async fn proxy(State(app): State<Arc<AppState>>, request: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let limit = app.config.max_body_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return error_response(&GatewayError::payload_too_large(limit));
    }
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(body) => body,
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            return error_response(&if too_large {
                GatewayError::payload_too_large(limit)
            } else {
                GatewayError::malformed(format!("could not read the request body: {e}"))
            });
        }
    };
    let method = parts.method.clone();
    let path_and_query = parts.uri.path_and_query().map_or_else(
        || parts.uri.path().to_string(),
        |pq| pq.as_str().to_string(),
    );
    let route = classify(&method, parts.uri.path());
    if let Route::Known(known) = &route {
        if let (Some(tenant), Some(database)) = (&known.tenant, &known.database) {
            app.rep.ensure_adopted(tenant, database).await;
        }
    }
    let class = route.class();
    let result = match class {
        Class::Write => {
            let content_type = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            app.rep
                .write(
                    method,
                    path_and_query,
                    content_type,
                    body,
                    credentials(&parts.headers),
                )
                .await
        }
        Class::Read => {
            let mut headers = parts.headers.clone();
            strip_hop_by_hop(&mut headers);
            app.rep
                .read(&route, method, &path_and_query, headers, body)
                .await
        }
        Class::Passthrough => {
            if let Route::Unknown(unknown) = &route {
                app.metrics.unknown_route(&unknown.shape);
                let first = app
                    .warned_shapes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(unknown.shape.clone());
                if first {
                    tracing::warn!(shape = %unknown.shape, "unknown Chroma route passed to the executor unlogged");
                }
            }
            let mut headers = parts.headers.clone();
            strip_hop_by_hop(&mut headers);
            app.rep
                .passthrough(method, &path_and_query, headers, body)
                .await
        }
    };
    let label = route.metrics_label();
    match result {
        Ok(answer) => {
            let server = app.rep.backends().all()[answer.server].name().to_string();
            app.metrics.request(
                label,
                class,
                &server,
                answer.response.status.as_u16(),
                started.elapsed(),
            );
            respond(answer, &server)
        }
        Err(error) => {
            app.metrics.request(
                label,
                class,
                "none",
                error.status.as_u16(),
                started.elapsed(),
            );
            error_response(&error)
        }
    }
}

fn respond(answer: Answer, server: &str) -> Response {
    let mut response = Response::new(Body::from(answer.response.body));
    *response.status_mut() = answer.response.status;
    let headers = response.headers_mut();
    for (name, value) in answer.response.headers.iter() {
        if name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Ok(value) = HeaderValue::from_str(server) {
        headers.insert(BACKEND_HEADER, value);
    }
    if let Some(lsn) = answer.lsn {
        headers.insert(LSN_HEADER, HeaderValue::from(lsn));
    }
    response
}
