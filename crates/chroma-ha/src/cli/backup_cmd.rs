//! `chroma-ha backup --to DIR` (restoring it: [`super::restore_cmd`]).
//!
//! A backup through a gateway waits for the chosen server to catch up,
//! pauses its applier, waits until it is quiescent (nothing under way,
//! everything applied recorded), reads the position it stands at from
//! `/status`, copies its content into a snapshot directory with
//! [`crate::copy`], and resumes the applier (unless it was paused before).
//! The snapshot is then consistent at that LSN. `--url` reads a Chroma
//! server directly instead (no gateway, no LSN; keep it quiet meanwhile).
//!
//! Exit codes: 0 done, 1 the copy failed (a server, the snapshot), 2 bad
//! usage.

use super::gateway_client::{instance, segment, GatewayArgs, GatewayClient};
use super::progress_line::ProgressLine;
use crate::check::{AuthHeader, CheckOptions, ServerReader, DEFAULT_TENANT};
use crate::copy::{self, snapshot, CopyProgress};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Arguments of `chroma-ha backup`.
#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// The directory to write the snapshot into (new, or empty).
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// The gateway and its admin token.
    #[command(flatten)]
    pub gateway: GatewayArgs,
    /// The server to copy (its name in the gateway's configuration).
    /// Default: the first healthy replica, else the primary.
    #[arg(long, value_name = "NAME")]
    pub server: Option<String>,
    /// Read this Chroma server directly instead of through a gateway: the
    /// snapshot then has no LSN, and the server must not change meanwhile.
    #[arg(long, value_name = "URL", conflicts_with = "server")]
    pub url: Option<String>,
    /// Tenant to copy besides those the gateway knows; repeat for several.
    #[arg(long = "tenant", value_name = "T")]
    pub tenants: Vec<String>,
    /// Records per request.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub page_size: usize,
    /// Header sent to the Chroma server, e.g. 'x-chroma-token: secret'.
    #[arg(long, value_name = "'Name: value'")]
    pub header: Option<String>,
    /// The server must be at most this many log records behind before it
    /// is paused.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub max_lag: u64,
    /// Seconds to wait for the server to catch up and then to stand still.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub wait: u64,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// TLS for https:// URLs.
    #[command(flatten)]
    pub tls: super::TlsArgs,
}

/// Prints a command's summary (JSON, or its message) and gives its exit
/// status: 0 done, 1 failed.
pub(super) fn report(command: &str, json: bool, result: Result<Value, String>) -> ExitCode {
    match result {
        Ok(summary) => {
            if json {
                println!("{summary:#}");
            } else {
                println!("{}", summary["message"].as_str().unwrap_or_default());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("chroma-ha {command}: {e}");
            ExitCode::FAILURE
        }
    }
}

pub(super) fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// A reader of a Chroma server with the command's TLS and header.
pub(super) fn reader(
    url: &str,
    header: Option<&str>,
    tls: &super::TlsArgs,
) -> Result<ServerReader, String> {
    let auth = header
        .map(AuthHeader::parse)
        .transpose()
        .map_err(|e| e.to_string())?;
    let opts = CheckOptions {
        tls: tls.client_tls().map_err(|e| e.to_string())?,
        request_timeout: Duration::from_secs(120),
        ..CheckOptions::default()
    };
    ServerReader::new(url, auth, &opts).map_err(|e| e.to_string())
}

/// Runs `chroma-ha backup`.
pub fn run_backup(args: BackupArgs) -> ExitCode {
    if args.page_size == 0 {
        eprintln!("chroma-ha backup: --page-size must be at least 1");
        return ExitCode::from(2);
    }
    report(
        "backup",
        args.json,
        runtime().and_then(|rt| rt.block_on(backup(&args))),
    )
}

/// The server a backup reads, held still at a log position.
struct Held {
    name: String,
    url: String,
    lsn: u64,
    above: Vec<u64>,
    /// Its collections' logical ids, by their ids there, as it stands.
    logical_ids: HashMap<String, String>,
    /// The identity of the gateway's log.
    log_id: Option<String>,
    /// Resume its applier afterwards (it was not paused before).
    resume: bool,
}

/// Waits until `name` is caught up, pauses it and waits until it stands
/// still; returns where.
async fn hold(
    client: &GatewayClient,
    name: &str,
    max_lag: u64,
    wait: Duration,
) -> Result<Held, String> {
    let deadline = Instant::now() + wait;
    let status = client.status().await?;
    let inst =
        instance(&status, name).ok_or_else(|| format!("the gateway has no server named {name}"))?;
    let url = inst["url"].as_str().unwrap_or_default().to_string();
    let was_paused = inst["applier"].as_str() == Some("paused");
    if inst["history_incomplete"].as_bool() == Some(true)
        || inst
            .get("rebuilding")
            .is_some_and(|r| r.as_bool() == Some(true))
    {
        return Err(format!(
            "server {name} is incomplete or being rebuilt: copy another one"
        ));
    }
    if !was_paused {
        loop {
            let status = client.status().await?;
            let inst = instance(&status, name).ok_or_else(|| format!("server {name} vanished"))?;
            let lag = inst["lag_entries"].as_u64().unwrap_or(u64::MAX);
            if inst["healthy"].as_bool() == Some(true) && lag <= max_lag {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "server {name} did not catch up within {}s (still {lag} records behind, healthy: {})",
                    wait.as_secs(),
                    inst["healthy"]
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        client
            .admin_post(&format!("/admin/servers/{}/pause", segment(name)))
            .await?;
    }
    loop {
        let status = client.status().await;
        if let Some(at) = status
            .as_ref()
            .ok()
            .and_then(|s| instance(s, name))
            .and_then(|i| i.get("paused_at"))
            .filter(|p| !p.is_null())
        {
            let links = match client
                .admin_get(&format!("/admin/servers/{}/collections", segment(name)))
                .await
            {
                Ok(links) => links,
                Err(e) => {
                    if !was_paused {
                        let _ = client
                            .admin_post(&format!("/admin/servers/{}/resume", segment(name)))
                            .await;
                    }
                    return Err(format!("reading {name}'s collection ids: {e}"));
                }
            };
            let logical_ids = links["collections"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|l| {
                    Some((
                        l["physical"].as_str()?.to_string(),
                        l["logical"].as_str()?.to_string(),
                    ))
                })
                .collect();
            return Ok(Held {
                name: name.to_string(),
                url,
                lsn: at["lsn"].as_u64().unwrap_or(0),
                above: at["applied_above"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_u64).collect())
                    .unwrap_or_default(),
                logical_ids,
                log_id: status
                    .as_ref()
                    .ok()
                    .and_then(|s| s["write_ahead_log"]["log_id"].as_str())
                    .map(str::to_string),
                resume: !was_paused,
            });
        }
        if Instant::now() > deadline {
            if !was_paused {
                let _ = client
                    .admin_post(&format!("/admin/servers/{}/resume", segment(name)))
                    .await;
            }
            return Err(format!(
                "server {name} was paused but did not stand still within {}s",
                wait.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Picks the server a backup reads by default: the first healthy replica
/// that is neither incomplete nor being rebuilt, else the primary.
fn default_server(status: &Value) -> Option<String> {
    let instances = status.get("instances")?.as_array()?;
    let usable = |i: &&Value| {
        i["healthy"].as_bool() == Some(true)
            && i["history_incomplete"].as_bool() != Some(true)
            && i.get("rebuilding").and_then(Value::as_bool) != Some(true)
    };
    instances
        .iter()
        .filter(usable)
        .find(|i| i["role"].as_str() == Some("replica"))
        .or_else(|| instances.iter().find(usable))
        .and_then(|i| i["name"].as_str())
        .map(str::to_string)
}

async fn backup(args: &BackupArgs) -> Result<Value, String> {
    let mut tenants: Vec<String> = args.tenants.clone();
    let (held, client) = match &args.url {
        Some(url) => (
            Held {
                name: String::new(),
                url: url.clone(),
                lsn: 0,
                above: Vec::new(),
                logical_ids: HashMap::new(),
                log_id: None,
                resume: false,
            },
            None,
        ),
        None => {
            let client = args.gateway.client(&args.tls)?;
            let status = client.status().await?;
            let name = match &args.server {
                Some(name) => name.clone(),
                None => default_server(&status)
                    .ok_or("no healthy server to copy (see chroma-ha status)")?,
            };
            tenants.extend(client.tenants().await?);
            let held = hold(&client, &name, args.max_lag, Duration::from_secs(args.wait)).await?;
            (held, Some(client))
        }
    };
    if tenants.is_empty() {
        tenants.push(DEFAULT_TENANT.to_string());
    }
    tenants.sort();
    tenants.dedup();
    let result = copy_to_snapshot(args, &held, tenants).await;
    if let (Some(client), true) = (&client, held.resume) {
        if let Err(e) = client
            .admin_post(&format!("/admin/servers/{}/resume", segment(&held.name)))
            .await
        {
            eprintln!(
                "chroma-ha backup: could not resume server {}'s applier: {e}; resume it with \
                 POST /admin/servers/{}/resume",
                held.name, held.name
            );
        }
    }
    result
}

async fn copy_to_snapshot(
    args: &BackupArgs,
    held: &Held,
    tenants: Vec<String>,
) -> Result<Value, String> {
    let source = reader(&held.url, args.header.as_deref(), &args.tls)?;
    let chroma_version = source.version().await.map_err(|e| e.to_string())?;
    let page_size = args
        .page_size
        .min(source.max_batch_size().await.map_err(|e| e.to_string())?);
    let started = Instant::now();
    let plan = copy::plan(&source, &tenants)
        .await
        .map_err(|e| e.to_string())?;
    let mut writer = snapshot::SnapshotWriter::create(&args.to)
        .await
        .map_err(|e| e.to_string())?;
    let progress = Arc::new(CopyProgress::default());
    let line = ProgressLine::start("backup", progress.clone());
    let copied = copy::copy(
        &source,
        &plan,
        copy::Target::Snapshot(&mut writer),
        page_size,
        &progress,
    )
    .await;
    line.stop().await;
    copied.map_err(|e| e.to_string())?;
    writer.set_logical_ids(&held.logical_ids);
    let via_gateway = args.url.is_none();
    let manifest = writer
        .finish(
            snapshot::SnapshotSource {
                server: via_gateway.then(|| held.name.clone()),
                url: held.url.clone(),
                chroma_version,
                log_id: held.log_id.clone(),
            },
            via_gateway.then_some(held.lsn),
            held.above.clone(),
            tenants,
            &plan.databases,
        )
        .await
        .map_err(|e| e.to_string())?;
    let secs = started.elapsed().as_secs_f64().max(1e-6);
    let totals = &manifest.totals;
    let at = match manifest.lsn {
        Some(lsn) => format!(" at LSN {lsn}"),
        None => String::new(),
    };
    let message =
        format!(
        "backup of {}{at} written to {}: {} databases, {} collections, {} records, {:.1} MiB in \
         {secs:.1}s ({:.0} records/s, {:.2} MiB/s)",
        if held.name.is_empty() { &held.url } else { &held.name },
        args.to.display(),
        totals.databases,
        totals.collections,
        totals.records,
        totals.bytes as f64 / 1048576.0,
        totals.records as f64 / secs,
        totals.bytes as f64 / 1048576.0 / secs,
    );
    Ok(json!({
        "message": message,
        "dir": args.to.display().to_string(),
        "server": via_gateway.then(|| held.name.clone()),
        "lsn": manifest.lsn,
        "applied_above": manifest.applied_above,
        "databases": totals.databases,
        "collections": totals.collections,
        "records": totals.records,
        "bytes": totals.bytes,
        "seconds": secs,
    }))
}
