//! `/admin/…`: operator actions, behind a bearer token from the config.
//! With no token configured every admin endpoint answers 404.
//!
//! - `GET  /admin/dead-letters`                 list dead letters (with their records, base64)
//! - `POST /admin/dead-letters/{id}/retry`      apply one again on its server (409
//!   `DeadLetterOrderError` if that would break log order or order cannot be proven)
//! - `POST /admin/dead-letters/{id}/skip`       drop one (the operator fixed it)
//! - `POST /admin/servers/{name}/pause|resume`  stop / restart a server's applier
//! - `POST /admin/servers/{name}/drain|undrain` take a server out of (back into) service
//! - `POST /admin/servers/{name}/rebuild?from=SOURCE[&replace=true][&page_size=N][&expected_records_per_second=R]`
//!   fill a server from another while serving (202; progress in `/status`, `rebuild`)
//! - `POST /admin/servers/{name}/join/prepare`  `{"lsn", "applied_above"}`: a restored backup
//!   is about to join as this server (marked rebuilding, position set to the backup's; 409
//!   `LogNoLongerHolds` at once if the log cannot continue from there)
//! - `POST /admin/servers/{name}/join/finish`   `{"lsn", "applied_above", "collections"}`: its
//!   restored collections' ids; it replays what follows the backup
//! - `GET  /admin/servers/{name}/collections`   its collections: logical id, id there, name there
//! - `GET  /admin/tenants`                      the tenants the gateway knows of (backups copy them)

use super::{error_response, AppState};
use crate::chroma::GatewayError;
use crate::replication::dead_letters::DeadLetter;
use axum::extract::{Path, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use http::{header, HeaderMap, StatusCode};
use std::sync::Arc;

/// The admin routes (mounted under `/admin`), every one behind the token.
pub fn router(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/dead-letters", get(list_dead_letters))
        .route("/dead-letters/{id}/retry", post(retry_dead_letter))
        .route("/dead-letters/{id}/skip", post(skip_dead_letter))
        .route("/servers/{name}/rebuild", post(rebuild_server))
        .route("/servers/{name}/join/prepare", post(join_prepare))
        .route("/servers/{name}/join/finish", post(join_finish))
        .route("/servers/{name}/collections", get(server_collections))
        .route("/servers/{name}/{action}", post(server_action))
        .route("/tenants", get(list_tenants))
        .route_layer(middleware::from_fn_with_state(state, require_token))
}

/// Lets a request through only with the admin token.
async fn require_token(State(app): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    match authorize(&app, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(denied) => error_response(&denied),
    }
}

/// Checks the bearer token in constant time; the error to send if not allowed.
fn authorize(app: &AppState, headers: &HeaderMap) -> Result<(), GatewayError> {
    let Some(token) = &app.config.admin_token else {
        return Err(GatewayError::not_found(
            "the admin API is disabled: set admin_token (CHROMA_HA_ADMIN_TOKEN) to enable it",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let expected = token.expose().as_bytes();
    let matches = given.len() == expected.len()
        && given
            .bytes()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if matches {
        Ok(())
    } else {
        Err(GatewayError::unauthorized(
            "admin endpoints need 'Authorization: Bearer <admin_token>'",
        ))
    }
}

/// A letter as the admin API shows it: its fields and its log record
/// (base64; `null` if its file cannot be read).
fn letter_json(letter: &DeadLetter, record: Option<&[u8]>) -> serde_json::Value {
    let mut value = serde_json::to_value(letter).unwrap_or_default();
    if let Some(fields) = value.as_object_mut() {
        fields.insert(
            "record".into(),
            record.map_or(serde_json::Value::Null, |r| {
                base64::engine::general_purpose::STANDARD.encode(r).into()
            }),
        );
    }
    value
}

async fn list_dead_letters(State(app): State<Arc<AppState>>) -> Response {
    let letters: Vec<serde_json::Value> = app
        .rep
        .dead_letters()
        .list_with_records()
        .await
        .iter()
        .map(|(letter, record)| letter_json(letter, record.as_deref()))
        .collect();
    let list = app.rep.dead_letters();
    Json(serde_json::json!({
        "dead_letters": letters,
        "max_dead_letters": list.max(),
        "full": list.is_full(),
    }))
    .into_response()
}

async fn retry_dead_letter(State(app): State<Arc<AppState>>, Path(id): Path<u64>) -> Response {
    match app.rep.retry_dead_letter(id).await {
        Ok(true) => Json(serde_json::json!({ "id": id, "resolved": true })).into_response(),
        Ok(false) => {
            let list = app.rep.dead_letters();
            let letter = match list.get(id) {
                Some(letter) => letter_json(&letter, list.record(id).await.ok().as_deref()),
                None => serde_json::Value::Null,
            };
            (
                StatusCode::CONFLICT,
                Json(serde_json::json!({
                    "id": id,
                    "resolved": false,
                    "dead_letter": letter,
                })),
            )
                .into_response()
        }
        Err(e) => error_response(&e),
    }
}

async fn skip_dead_letter(State(app): State<Arc<AppState>>, Path(id): Path<u64>) -> Response {
    match app.rep.skip_dead_letter(id).await {
        Ok(Some(letter)) => {
            tracing::warn!(id, server = %letter.server, lsn = letter.lsn, "dead letter skipped by operator");
            Json(serde_json::json!({ "id": id, "skipped": true })).into_response()
        }
        Ok(None) => error_response(&GatewayError::not_found(format!("no dead letter {id}"))),
        Err(e) => error_response(&e),
    }
}

/// The tenants of every collection in the id map, and Chroma's default
/// tenant (Chroma has no endpoint that lists tenants).
async fn list_tenants(State(app): State<Arc<AppState>>) -> Response {
    Json(serde_json::json!({ "tenants": app.rep.idmap().tenants() })).into_response()
}

/// The query of `POST /admin/servers/{name}/rebuild`.
#[derive(Debug, serde::Deserialize)]
struct RebuildQuery {
    from: Option<String>,
    #[serde(default)]
    replace: bool,
    page_size: Option<usize>,
    expected_records_per_second: Option<f64>,
}

async fn rebuild_server(
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
    axum::extract::Query(query): axum::extract::Query<RebuildQuery>,
) -> Response {
    let Some(source) = query.from else {
        return error_response(&GatewayError::new(
            StatusCode::BAD_REQUEST,
            "InvalidArgumentError",
            "name the server to copy from: ?from=SOURCE",
        ));
    };
    let request = crate::rebuild::RebuildRequest {
        server: name,
        source,
        replace: query.replace,
        page_size: query.page_size.unwrap_or(1000).clamp(1, 100_000),
        expected_records_per_second: query.expected_records_per_second.unwrap_or(1000.0),
    };
    match crate::rebuild::start(app.clone(), app.rebuilds.clone(), request).await {
        Ok(body) => (StatusCode::ACCEPTED, Json(body)).into_response(),
        Err(e) => error_response(&e),
    }
}

/// A JSON body, or the Chroma-style 400 that says why it is not one.
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, GatewayError> {
    serde_json::from_slice(body).map_err(|e| {
        GatewayError::new(
            StatusCode::BAD_REQUEST,
            "InvalidArgumentError",
            format!("the body is not the JSON this endpoint takes: {e}"),
        )
    })
}

fn answer(result: Result<serde_json::Value, GatewayError>) -> Response {
    match result {
        Ok(body) => Json(body).into_response(),
        Err(e) => error_response(&e),
    }
}

async fn join_prepare(
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let position = match json_body(&body) {
        Ok(p) => p,
        Err(e) => return error_response(&e),
    };
    let rebuilds = app.rebuilds.clone();
    answer(crate::rebuild::join::prepare(app, &rebuilds, &name, position).await)
}

async fn join_finish(
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let request = match json_body(&body) {
        Ok(r) => r,
        Err(e) => return error_response(&e),
    };
    answer(crate::rebuild::join::finish(app, &name, request).await)
}

async fn server_collections(
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Response {
    let Some(index) = app.rep.backends().index_of(&name) else {
        return error_response(&GatewayError::not_found(format!("no server named {name}")));
    };
    Json(serde_json::json!({
        "server": name,
        "collections": app.rep.idmap().links(index),
    }))
    .into_response()
}

async fn server_action(
    State(app): State<Arc<AppState>>,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    let Some(index) = app.rep.backends().index_of(&name) else {
        return error_response(&GatewayError::not_found(format!("no server named {name}")));
    };
    let backend = &app.rep.backends().all()[index];
    if action == "resume" && app.rep.is_rebuilding(index) {
        return error_response(&GatewayError::new(
            StatusCode::CONFLICT,
            "RebuildRefused",
            format!(
                "{name} is being rebuilt (or its rebuild was interrupted): its applier resumes when \
                 a rebuild finishes; run `chroma-ha rebuild {name} --from SOURCE`"
            ),
        ));
    }
    let saved = match action.as_str() {
        "pause" => app.rep.set_paused(index, true).await,
        "resume" => app.rep.set_paused(index, false).await,
        "drain" => app.rep.set_draining(index, true).await,
        "undrain" => app.rep.set_draining(index, false).await,
        "complete" => app.rep.set_incomplete(index, false).await,
        other => {
            return error_response(&GatewayError::not_found(format!(
                "unknown action {other}: use pause, resume, drain, undrain or complete"
            )))
        }
    };
    if let Err(e) = saved {
        return error_response(&GatewayError::internal(format!(
            "{action} of {name} is in effect but could not be saved for restarts: {e}"
        )));
    }
    tracing::warn!(server = %name, %action, "operator action");
    Json(serde_json::json!({
        "server": name,
        "action": action,
        "paused": app.rep.is_paused(index),
        "draining": backend.health().is_draining(),
        "history_incomplete": app.rep.is_incomplete(index),
        "rebuilding": app.rep.is_rebuilding(index),
    }))
    .into_response()
}
