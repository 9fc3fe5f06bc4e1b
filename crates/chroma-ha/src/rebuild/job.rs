//! The rebuild's steps (see the module documentation of
//! [`crate::rebuild`]).

use super::{Phase, Rebuilds};
use crate::check::{CheckOptions, ServerReader};
use crate::chroma::GatewayError;
use crate::copy::{self, CopyProgress, ServerTarget};
use crate::http::AppState;
use crate::replication::applied::AppliedState;
use crate::replication::idmap::ServerLink;
use crate::replication::rebuild_ops::RebuildMark;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What an operator asked for.
#[derive(Debug, Clone)]
pub struct RebuildRequest {
    /// The server to fill.
    pub server: String,
    /// The server to copy from.
    pub source: String,
    /// Replace what the server holds even if it is not marked rebuilding.
    pub replace: bool,
    /// Records per request.
    pub page_size: usize,
    /// The copy rate assumed for the log-room check.
    pub expected_records_per_second: f64,
}

pub(super) fn index_of(app: &AppState, name: &str) -> Result<usize, GatewayError> {
    app.rep
        .backends()
        .index_of(name)
        .ok_or_else(|| GatewayError::not_found(format!("no server named {name}")))
}

pub(super) fn conflict(message: String) -> GatewayError {
    GatewayError::new(http::StatusCode::CONFLICT, "RebuildRefused", message)
}

/// A reader of server `index` with the gateway's client settings.
fn reader(app: &AppState, index: usize, page_size: u32) -> Result<ServerReader, GatewayError> {
    let backend = &app.rep.backends().all()[index];
    let tls = crate::tls::ClientTls::from_files(
        app.config.tls.ca_file.as_deref(),
        app.config.tls.client_cert_file.as_deref(),
        app.config.tls.client_key_file.as_deref(),
    )
    .map_err(|e| GatewayError::internal(format!("TLS for {}: {e}", backend.name())))?;
    let opts = CheckOptions {
        page_size,
        request_timeout: app.config.request_timeout.max(Duration::from_secs(60)),
        tls,
        ..CheckOptions::default()
    };
    ServerReader::new(&backend.config().url, None, &opts)
        .map_err(|e| GatewayError::internal(e.to_string()))
}

/// The tenants to copy: those in the id map and Chroma's default one.
fn tenants(app: &AppState) -> Vec<String> {
    app.rep.idmap().tenants()
}

/// Checks the request, refuses at once if the log cannot hold what
/// arrives during the copy, and starts the rebuild in a task of its own.
pub async fn start(
    app: Arc<AppState>,
    rebuilds: Arc<Rebuilds>,
    request: RebuildRequest,
) -> Result<serde_json::Value, GatewayError> {
    let server = index_of(&app, &request.server)?;
    let source = index_of(&app, &request.source)?;
    if server == source {
        return Err(GatewayError::new(
            http::StatusCode::BAD_REQUEST,
            "InvalidArgumentError",
            "a server cannot be rebuilt from itself",
        ));
    }
    let rep = &app.rep;
    if rep.is_unusable(source) {
        return Err(conflict(format!(
            "{} cannot be the source: its history is incomplete or it is being rebuilt",
            request.source
        )));
    }
    if !rep.backends().all()[source].health().is_healthy() {
        return Err(conflict(format!(
            "the source {} is not healthy",
            request.source
        )));
    }
    // The log keeps everything after the source's position while it is
    // paused: it must hold what arrives during the copy.
    let source_reader = reader(&app, source, request.page_size as u32)?;
    let plan = copy::plan(&source_reader, &tenants(&app))
        .await
        .map_err(|e| {
            GatewayError::service_unavailable(format!("listing {}: {e}", request.source))
        })?;
    let before = rep.wal().stats();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rep.wal().stats();
    let fill = after.append_bytes.saturating_sub(before.append_bytes) as f64 / 2.0;
    let free = app.config.wal.max_bytes.saturating_sub(after.used_bytes);
    let expected = super::log_room_verdict(
        free,
        fill,
        plan.records(),
        request.expected_records_per_second,
    )
    .map_err(|message| {
        GatewayError::new(
            http::StatusCode::INSUFFICIENT_STORAGE,
            "InsufficientLogRoom",
            message,
        )
    })?;
    let progress = rebuilds
        .begin(&request.server, &request.source)
        .map_err(|running| conflict(format!("a rebuild of {running} is running")))?;
    let was_marked = rep.is_rebuilding(server);
    let source_was_paused = rep.is_paused(source);
    let mark = RebuildMark {
        source: request.source.clone(),
        source_paused: false,
    };
    let saved = async {
        rep.set_rebuilding(server, Some(mark)).await?;
        rep.set_paused(server, true).await
    }
    .await;
    if let Err(e) = saved {
        rebuilds.update(|c| {
            c.phase = Phase::Failed;
            c.error = Some(format!("marking {} rebuilding: {e}", request.server));
        });
        return Err(GatewayError::internal(format!(
            "marking {} rebuilding: {e}",
            request.server
        )));
    }
    tracing::warn!(server = %request.server, source = %request.source, records = plan.records(), expected_seconds = expected, "rebuild started");
    let job = Job {
        app: app.clone(),
        rebuilds: rebuilds.clone(),
        request: request.clone(),
        server,
        source,
        was_marked,
        source_was_paused,
        progress,
    };
    tokio::spawn(async move { job.run().await });
    Ok(serde_json::json!({
        "server": request.server,
        "source": request.source,
        "started": true,
        "records_total": plan.records(),
        "expected_seconds": expected,
    }))
}

struct Job {
    app: Arc<AppState>,
    rebuilds: Arc<Rebuilds>,
    request: RebuildRequest,
    server: usize,
    source: usize,
    was_marked: bool,
    source_was_paused: bool,
    progress: Arc<CopyProgress>,
}

impl Job {
    fn phase(&self, phase: Phase) {
        tracing::info!(server = %self.request.server, ?phase, "rebuild");
        self.rebuilds.update(|c| c.phase = phase);
    }

    async fn run(self) {
        let result = self.steps().await;
        let rep = &self.app.rep;
        // The source replays again, whatever happened (unless an operator
        // had paused it before).
        if !self.source_was_paused {
            if let Err(e) = rep.set_paused(self.source, false).await {
                tracing::error!(error = %e, "resuming the rebuild's source");
            }
        }
        match result {
            Ok(()) => {
                tracing::warn!(server = %self.request.server, "rebuild done");
                self.phase(Phase::Done);
            }
            Err(e) => {
                tracing::error!(server = %self.request.server, error = %e, "rebuild failed; the server stays marked rebuilding");
                if let Some(mark) = rep.rebuild_mark(self.server) {
                    let mark = RebuildMark {
                        source_paused: false,
                        ..mark
                    };
                    let _ = rep.set_rebuilding(self.server, Some(mark)).await;
                }
                self.rebuilds.update(|c| {
                    c.phase = Phase::Failed;
                    c.error = Some(e);
                });
            }
        }
    }

    async fn steps(&self) -> Result<(), String> {
        let rep = self.app.rep.clone();
        let names = (&self.request.server, &self.request.source);
        // 1. The server must be up.
        self.phase(Phase::WaitingForServer);
        let deadline = Instant::now() + Duration::from_secs(600);
        while !rep.backends().all()[self.server].health().is_healthy() {
            if Instant::now() > deadline {
                return Err(format!("{} did not become healthy within 600 s", names.0));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let page_size = self.request.page_size.max(1);
        let target_reader =
            reader(&self.app, self.server, page_size as u32).map_err(|e| e.message)?;
        let page_size = page_size.min(
            target_reader
                .max_batch_size()
                .await
                .map_err(|e| e.to_string())?,
        );
        let tenants = tenants(&self.app);
        let mut target = ServerTarget::new(target_reader);
        if !self.was_marked && !self.request.replace {
            let held = target
                .record_count(&tenants)
                .await
                .map_err(|e| e.to_string())?;
            if held > 0 {
                // Nothing was changed: take the mark back.
                let _ = rep.set_rebuilding(self.server, None).await;
                let _ = rep.set_paused(self.server, false).await;
                return Err(format!(
                    "{} holds {held} records and is not marked rebuilding: a rebuild deletes them; \
                     run it again with --replace if that is what you want",
                    names.0
                ));
            }
        }

        // 2. The source, caught up, paused, standing still at X.
        self.phase(Phase::PausingSource);
        let at = self.hold_source().await?;
        self.rebuilds.update(|c| c.lsn = Some(at.cursor));

        // 3. Clear and copy.
        self.phase(Phase::Clearing);
        let deleted = target.clear(&tenants).await.map_err(|e| e.to_string())?;
        if deleted > 0 {
            tracing::warn!(server = %names.0, deleted, "rebuild: collections deleted before the copy");
        }
        self.phase(Phase::Copying);
        let source_reader =
            reader(&self.app, self.source, page_size as u32).map_err(|e| e.message)?;
        let plan = copy::plan(&source_reader, &tenants)
            .await
            .map_err(|e| e.to_string())?;
        let copy_started = Instant::now();
        copy::copy(
            &source_reader,
            &plan,
            copy::Target::Server(&mut target),
            page_size,
            &self.progress,
        )
        .await
        .map_err(|e| format!("copying {} to {}: {e}", names.1, names.0))?;
        let copy_seconds = copy_started.elapsed().as_secs_f64();
        self.rebuilds
            .update(|c| c.copy_seconds = Some(copy_seconds));

        // 4. Both stand at X: compare them.
        self.phase(Phase::Checking);
        let urls = vec![source_reader.url().to_string(), target.url().to_string()];
        let opts = CheckOptions {
            page_size: page_size as u32,
            ..CheckOptions::default()
        };
        let scopes = crate::check::discover_scopes(&urls, &tenants, &opts)
            .await
            .map_err(|e| e.to_string())?;
        let report = crate::check::compare_servers(&urls, &scopes, &opts)
            .await
            .map_err(|e| e.to_string())?;
        let identical = report.identical();
        self.rebuilds.update(|c| {
            c.identical = Some(identical);
            c.check = Some(report.summary());
        });
        if !identical {
            return Err(format!(
                "after the copy {} differs from {}: {}",
                names.0,
                names.1,
                report.difference_lines().join("; ")
            ));
        }

        // 5. Set the position, link ids, clear the mark, resume.
        self.phase(Phase::Linking);
        let idmap = rep.idmap();
        let links: Vec<ServerLink> = target
            .created
            .iter()
            .filter_map(|c| {
                let logical = idmap.logical(&c.source_id, self.source).or_else(|| {
                    idmap.adopt(self.source, &c.tenant, &c.database, &c.name, &c.source_id)
                })?;
                Some(ServerLink {
                    logical: Some(logical),
                    physical: c.target_id.clone(),
                    tenant: c.tenant.clone(),
                    database: c.database.clone(),
                    name: c.name.clone(),
                })
            })
            .collect();
        rep.restart_applier_at(self.server, at.clone()).await?;
        rep.take_copied_content(self.server, &links).await?;
        tracing::warn!(
            server = %names.0,
            source = %names.1,
            lsn = at.cursor,
            records = plan.records(),
            copy_seconds,
            "rebuild: copied, checked identical, position set; the server replays from there"
        );
        Ok(())
    }

    /// Waits for the source to catch up, pauses it and waits until it
    /// stands still; returns its applied state then.
    async fn hold_source(&self) -> Result<AppliedState, String> {
        let rep = &self.app.rep;
        let name = &self.request.source;
        let deadline = Instant::now() + Duration::from_secs(300);
        if !self.source_was_paused {
            while !rep.is_caught_up(self.source) {
                if Instant::now() > deadline {
                    return Err(format!("the source {name} did not catch up within 300 s"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let mark = RebuildMark {
                source: name.clone(),
                source_paused: true,
            };
            rep.set_rebuilding(self.server, Some(mark))
                .await
                .map_err(|e| e.to_string())?;
            rep.set_paused(self.source, true)
                .await
                .map_err(|e| format!("pausing {name}: {e}"))?;
        }
        loop {
            if let Some(at) = rep.progress(self.source).paused_at {
                return Ok(at);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the source {name} did not stand still within 300 s"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
