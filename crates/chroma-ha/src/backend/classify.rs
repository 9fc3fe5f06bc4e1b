//! Classification of one attempt against a Chroma server: an answer (Chroma's
//! verdict, to pass on and to decide an entry) or a transient failure (the
//! server is unwell; the attempt may be retried elsewhere or later).

use http::StatusCode;

use super::client::{TransportError, UpstreamResponse};

/// What one attempt tells about the request and the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptClass {
    /// Chroma's verdict: any 2xx, or any other status (500 included) whose
    /// body is Chroma's error JSON. Goes back to the client as-is and decides
    /// the entry; never a reason to fail over or retry.
    Answer,
    /// The server is unwell: no connection, timeout, reset, 502/503/504, or a
    /// non-2xx answer whose body is not Chroma's error JSON (e.g. a proxy's
    /// HTML page, or an empty 404 of an unknown route).
    Transient,
}

/// Classifies an HTTP answer by status and body; see [`AttemptClass`].
/// 502, 503 and 504 are transient even with a JSON body.
pub fn classify_response(status: StatusCode, body: &[u8]) -> AttemptClass {
    if crate::chroma::is_unwell(status, body) {
        AttemptClass::Transient
    } else {
        AttemptClass::Answer
    }
}

/// Classifies the outcome of [`BackendClient::send`](super::BackendClient::send):
/// every transport error is transient; an answer is classified by
/// [`classify_response`].
pub fn classify(result: &Result<UpstreamResponse, TransportError>) -> AttemptClass {
    match result {
        Ok(response) => response.class(),
        Err(_) => AttemptClass::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_classes() {
        use AttemptClass::*;
        let json = br#"{"error":"InternalError","message":"UNIQUE constraint failed"}"#;
        let cases: &[(u16, &[u8], AttemptClass)] = &[
            (200, b"", Answer),
            (201, b"not json", Answer),
            (204, b"", Answer),
            (400, json, Answer),
            (404, json, Answer),
            (409, json, Answer),
            (422, json, Answer),
            (500, json, Answer),
            (500, b"<html>oops</html>", Transient),
            (404, b"", Transient),
            (302, b"", Transient),
            (502, b"", Transient),
            (503, json, Transient),
            (504, json, Transient),
        ];
        for (status, body, want) in cases {
            let status = StatusCode::from_u16(*status).unwrap();
            assert_eq!(classify_response(status, body), *want, "{status}");
        }
    }
}
