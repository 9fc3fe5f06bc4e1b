//! The status page at `/`: one self-contained HTML file (no build step,
//! nothing fetched from elsewhere) that polls `/status` and
//! `/status/history` every 2 s. It shows the servers, charts of the last
//! 15 minutes drawn as inline SVG (lag per server in entries and seconds,
//! request and replay rates, log used), the recent state changes, the dead
//! letters with their reasons and, with several gateways on one log, the
//! gateways with the leader and its lease.

use axum::response::Html;

/// `GET /`.
pub async fn status_page() -> Html<&'static str> {
    Html(PAGE)
}

/// `GET /favicon.ico`: 204, so a browser showing the page logs no 404.
pub async fn favicon() -> http::StatusCode {
    http::StatusCode::NO_CONTENT
}

const PAGE: &str = include_str!("page.html");
