//! `chroma-ha restore --from DIR --to URL`: loads a snapshot written by
//! `backup` into an empty Chroma server, after checking every file's size
//! and checksum.
//!
//! With `--join SERVER` (through a running gateway) the restored server
//! then joins the gateway as SERVER through the rebuild's last step
//! ([`crate::rebuild::join`]): before anything is written the gateway
//! checks that its log still holds what follows the snapshot's LSN (and
//! refuses at once if not), marks SERVER rebuilding and sets its position
//! to that LSN; the command waits for SERVER to answer, refuses to delete
//! records it holds without `--replace`, clears it, restores the snapshot
//! into it and hands the gateway the new collection ids; SERVER then
//! replays what the log took since the backup.
//!
//! Exit codes: 0 done, 1 failed (a server, the snapshot, the gateway's
//! refusal), 2 bad usage.

use super::backup_cmd::{reader, report, runtime};
use super::gateway_client::{instance, segment, GatewayArgs, GatewayClient};
use super::progress_line::ProgressLine;
use crate::check::DEFAULT_TENANT;
use crate::copy::{snapshot, CopyProgress, ServerTarget};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Arguments of `chroma-ha restore`.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The snapshot directory (written by `chroma-ha backup`).
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
    /// The Chroma server to load it into (not the gateway); it must hold
    /// none of the snapshot's collections. With --join, default: the
    /// server's URL in the gateway's configuration.
    #[arg(long, value_name = "URL", required_unless_present = "join")]
    pub to: Option<String>,
    /// Then join the restored server to the gateway as its server NAME: it
    /// replays what the log took after the snapshot's LSN. Refused before
    /// anything is written if the log no longer holds that.
    #[arg(long, value_name = "NAME")]
    pub join: Option<String>,
    /// With --join: delete what the server holds (it is replaced).
    #[arg(long, requires = "join")]
    pub replace: bool,
    /// With --join: seconds to wait for the server to answer (it may be
    /// restarting; the gateway keeps it out of service meanwhile).
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub wait: u64,
    /// The gateway and its admin token (with --join).
    #[command(flatten)]
    pub gateway: GatewayArgs,
    /// Records per add request.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub page_size: usize,
    /// Header sent to the Chroma server, e.g. 'x-chroma-token: secret'.
    #[arg(long, value_name = "'Name: value'")]
    pub header: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// TLS for https:// URLs.
    #[command(flatten)]
    pub tls: super::TlsArgs,
}

/// Runs `chroma-ha restore`.
pub fn run_restore(args: RestoreArgs) -> ExitCode {
    if args.page_size == 0 {
        eprintln!("chroma-ha restore: --page-size must be at least 1");
        return ExitCode::from(2);
    }
    report(
        "restore",
        args.json,
        runtime().and_then(|rt| rt.block_on(restore(&args))),
    )
}

/// A join under way: the gateway, the server's name and what the
/// snapshot's collections are known by there.
struct Join {
    client: GatewayClient,
    server: String,
    position: Value,
    /// Logical id by the collection's id in the snapshot.
    logical_ids: HashMap<String, String>,
}

impl Join {
    /// Checks that the snapshot can join (it has an LSN) and finds the
    /// server's URL; changes nothing yet.
    async fn plan(
        args: &RestoreArgs,
        manifest: &snapshot::Manifest,
        server: &str,
    ) -> Result<(Join, String), String> {
        let Some(lsn) = manifest.lsn else {
            return Err(
                "the snapshot has no LSN (it was read outside a gateway, with backup --url): it \
                 cannot join a gateway; restore it without --join, or fill the server with \
                 `chroma-ha rebuild`"
                    .into(),
            );
        };
        // Each collection's logical id; one without (made outside the
        // gateway) is adopted by name on the server.
        let logical_ids = manifest
            .collections
            .iter()
            .filter_map(|c| Some((c.meta.id.clone(), c.logical_id.clone()?)))
            .collect();
        let client = args.gateway.client(&args.tls)?;
        let status = client.status().await?;
        let inst = instance(&status, server)
            .ok_or_else(|| format!("the gateway has no server named {server}"))?;
        let url = match &args.to {
            Some(url) => url.clone(),
            None => inst["url"]
                .as_str()
                .ok_or_else(|| format!("/status shows no URL for {server}"))?
                .to_string(),
        };
        let join = Join {
            client,
            server: server.to_string(),
            position: json!({
                "lsn": lsn,
                "applied_above": manifest.applied_above,
                "log_id": manifest.source.log_id,
            }),
            logical_ids,
        };
        Ok((join, url))
    }

    fn path(&self, step: &str) -> String {
        format!("/admin/servers/{}/join/{step}", segment(&self.server))
    }

    /// Asks the gateway to hold the server at the snapshot's position.
    async fn prepare(&self) -> Result<Value, String> {
        self.client
            .admin_post_json(&self.path("prepare"), &self.position)
            .await
    }

    /// Hands the gateway the restored collections' ids.
    async fn finish(&self, target: &ServerTarget) -> Result<Value, String> {
        let mut collections = Vec::new();
        for c in &target.created {
            collections.push(json!({
                "logical": self.logical_ids.get(&c.source_id),
                "physical": c.target_id,
                "tenant": c.tenant,
                "database": c.database,
                "name": c.name,
            }));
        }
        let mut body = self.position.clone();
        body["collections"] = Value::Array(collections);
        self.client
            .admin_post_json(&self.path("finish"), &body)
            .await
    }
}

async fn restore(args: &RestoreArgs) -> Result<Value, String> {
    let snap = snapshot::Snapshot::open(&args.from)
        .await
        .map_err(|e| e.to_string())?;
    snap.verify().await.map_err(|e| e.to_string())?;
    let m = &snap.manifest;
    let (join, url) = match &args.join {
        Some(server) => {
            let (join, url) = Join::plan(args, m, server).await?;
            (Some(join), url)
        }
        None => (None, args.to.clone().unwrap_or_default()),
    };
    let target = reader(&url, args.header.as_deref(), &args.tls)?;
    if let Some(join) = &join {
        join.prepare().await?;
    }
    // A server joining may still be coming back (it is marked, so nothing
    // reads it meanwhile).
    let wait = if join.is_some() { args.wait } else { 0 };
    let deadline = Instant::now() + Duration::from_secs(wait);
    let max_batch = loop {
        match target.max_batch_size().await {
            Ok(n) => break n,
            Err(e) if Instant::now() >= deadline => return Err(e.to_string()),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    let page_size = args.page_size.min(max_batch);
    let mut target = ServerTarget::new(target);
    if let Some(join) = &join {
        let mut tenants = m.tenants.clone();
        tenants.extend(join.client.tenants().await?);
        tenants.push(DEFAULT_TENANT.to_string());
        tenants.sort();
        tenants.dedup();
        let held = target
            .record_count(&tenants)
            .await
            .map_err(|e| e.to_string())?;
        if held > 0 && !args.replace {
            return Err(format!(
                "{} ({url}) holds {held} records: joining replaces them; run again with \
                 --replace if that is what you want (it stays marked rebuilding until a join or \
                 a rebuild fills it)",
                join.server
            ));
        }
        // What the server held, and anything its applier wrote before the
        // gateway paused it, goes: it is to hold the snapshot only.
        target.clear(&tenants).await.map_err(|e| e.to_string())?;
    }
    let progress = Arc::new(CopyProgress::default());
    let started = Instant::now();
    let line = ProgressLine::start("restore", progress.clone());
    let restored = snap.restore(&mut target, page_size, &progress).await;
    line.stop().await;
    restored.map_err(|e| match &join {
        Some(join) => format!(
            "{e}; {} stays marked rebuilding: run this again, or `chroma-ha rebuild`",
            join.server
        ),
        None => e.to_string(),
    })?;
    let secs = started.elapsed().as_secs_f64().max(1e-6);
    let joined = match &join {
        Some(join) => Some(join.finish(&target).await?),
        None => None,
    };
    let after = match (&joined, m.lsn) {
        (Some(j), _) => format!(
            "; joined as {} at LSN {}: it replays the {} log records since",
            j["server"].as_str().unwrap_or_default(),
            j["lsn"],
            j["log_records_after"]
        ),
        (None, Some(lsn)) => format!(
            "; it stands at LSN {lsn}: to make a gateway's server of it, restore with --join \
             SERVER (the log must still hold what follows LSN {lsn})"
        ),
        (None, None) => String::new(),
    };
    let message = format!(
        "restored {} collections, {} records into {url} in {secs:.1}s ({:.0} records/s){after}",
        m.totals.collections,
        m.totals.records,
        m.totals.records as f64 / secs
    );
    Ok(json!({
        "message": message,
        "lsn": m.lsn,
        "applied_above": m.applied_above,
        "collections": m.totals.collections,
        "records": m.totals.records,
        "bytes": m.totals.bytes,
        "seconds": secs,
        "joined": joined,
    }))
}
