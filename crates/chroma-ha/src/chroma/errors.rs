//! The gateway's own errors, shaped like Chroma's:
//! `{"error": "<Name>", "message": "<text>"}` with an HTTP status.
//!
//! The Python client (chromadb 1.5.9, `_raise_chroma_error`) raises the
//! typed exception when `error` is one of its names (`InvalidArgumentError`,
//! `NotFoundError`, `InternalError`, `AuthError`, `RateLimitError`, …) and a
//! plain `Exception(<body text>)` otherwise, so names of conditions that
//! only a gateway has (`ServiceUnavailable`, `InsufficientStorage`) still
//! reach the user with the message intact.

use std::borrow::Cow;

use http::StatusCode;
use serde::Serialize;

/// Content type of [`GatewayError::body`].
pub const CONTENT_TYPE: &str = "application/json";

/// An error answered by the gateway itself, in Chroma's error format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {name}: {message}")]
pub struct GatewayError {
    /// HTTP status of the answer.
    pub status: StatusCode,
    /// The `"error"` field: a Chroma-style error name.
    pub name: Cow<'static, str>,
    /// The `"message"` field: what happened, for a person.
    pub message: String,
}

#[derive(Serialize)]
struct Wire<'a> {
    error: &'a str,
    message: &'a str,
}

impl GatewayError {
    /// An error with any status, name and message.
    pub fn new(
        status: StatusCode,
        name: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        GatewayError {
            status,
            name: name.into(),
            message: message.into(),
        }
    }

    /// 503 `ServiceUnavailable`: no server can take the request now.
    pub fn service_unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            message,
        )
    }

    /// 507 `InsufficientStorage`: the write-ahead log reached its size cap;
    /// writes are refused, reads and replay go on.
    pub fn log_full(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "InsufficientStorage",
            message,
        )
    }

    /// 413 `PayloadTooLarge`: the request body exceeds `limit` bytes.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLarge",
            format!("request body exceeds the gateway's limit of {limit} bytes"),
        )
    }

    /// 400 `InvalidArgumentError` (Chroma's own name for a body it cannot
    /// parse; the Python client raises `InvalidArgumentError`).
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidArgumentError", message)
    }

    /// 401 `AuthError` (Python: `ChromaAuthError`), e.g. a bad admin token.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "AuthError", message)
    }

    /// 404 `NotFoundError`, e.g. an unknown admin path or dead letter.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFoundError", message)
    }

    /// 500 `InternalError`: a bug or an I/O failure inside the gateway.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    /// 504 `GatewayTimeout`: the server did not answer in time.
    pub fn gateway_timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "GatewayTimeout", message)
    }

    /// The JSON body `{"error": name, "message": message}`; always valid
    /// JSON that [`super::replay::is_chroma_error_body`] accepts.
    pub fn body(&self) -> Vec<u8> {
        let wire = Wire {
            error: &self.name,
            message: &self.message,
        };
        // Serializing two strings cannot fail; keep a valid body regardless.
        serde_json::to_vec(&wire).unwrap_or_else(|_| {
            br#"{"error":"InternalError","message":"error body could not be encoded"}"#.to_vec()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chroma::replay::is_chroma_error_body;

    #[test]
    fn bodies_are_chroma_shaped() {
        let cases = [
            (
                GatewayError::service_unavailable("no healthy server"),
                503,
                "ServiceUnavailable",
            ),
            (
                GatewayError::log_full("log is full"),
                507,
                "InsufficientStorage",
            ),
            (GatewayError::payload_too_large(10), 413, "PayloadTooLarge"),
            (
                GatewayError::malformed("bad json"),
                400,
                "InvalidArgumentError",
            ),
            (GatewayError::unauthorized("token"), 401, "AuthError"),
            (GatewayError::not_found("x"), 404, "NotFoundError"),
            (GatewayError::internal("x"), 500, "InternalError"),
            (GatewayError::gateway_timeout("x"), 504, "GatewayTimeout"),
        ];
        for (e, status, name) in cases {
            assert_eq!(e.status.as_u16(), status);
            let body = e.body();
            assert!(is_chroma_error_body(&body));
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["error"], name);
            assert_eq!(v["message"], e.message.as_str());
            assert_eq!(v.as_object().unwrap().len(), 2);
        }
    }

    #[test]
    fn messages_are_escaped() {
        let e = GatewayError::malformed("quote \" and \n newline");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["message"], "quote \" and \n newline");
        assert_eq!(
            e.to_string(),
            "400 Bad Request InvalidArgumentError: quote \" and \n newline"
        );
    }
}
