//! `chroma-ha rebuild SERVER --from SOURCE`: starts a rebuild on a running
//! gateway (`POST /admin/servers/SERVER/rebuild`, see [`crate::rebuild`])
//! and follows it in `/status` with a progress line until it ends.
//!
//! Exit codes: 0 done and the servers identical, 1 refused or failed (the
//! server stays marked rebuilding; run it again), 2 bad usage.

use super::gateway_client::{segment, GatewayArgs};
use serde_json::Value;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Arguments of `chroma-ha rebuild`.
#[derive(Debug, clap::Args)]
pub struct RebuildArgs {
    /// The server to fill (its name in the gateway's configuration).
    pub server: String,
    /// The server to copy from.
    #[arg(long, value_name = "SOURCE")]
    pub from: String,
    /// The gateway and its admin token.
    #[command(flatten)]
    pub gateway: GatewayArgs,
    /// Delete what SERVER holds even though it is not marked rebuilding.
    #[arg(long)]
    pub replace: bool,
    /// Records per request.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub page_size: usize,
    /// Copy rate assumed when checking that the log can hold what arrives
    /// during the copy.
    #[arg(long, value_name = "R", default_value_t = 1000.0)]
    pub expected_records_per_second: f64,
    /// Print the final rebuild object of /status as JSON.
    #[arg(long)]
    pub json: bool,
    /// TLS for an https:// gateway.
    #[command(flatten)]
    pub tls: super::TlsArgs,
}

/// Runs `chroma-ha rebuild`.
pub fn run(args: RebuildArgs) -> ExitCode {
    let rate_ok =
        args.expected_records_per_second.is_finite() && args.expected_records_per_second > 0.0;
    if args.page_size == 0 || !rate_ok {
        eprintln!(
            "chroma-ha rebuild: --page-size and --expected-records-per-second must be positive"
        );
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chroma-ha rebuild: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(rebuild(&args)) {
        Ok((view, message)) => {
            if args.json {
                println!("{view:#}");
            } else {
                println!("{message}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("chroma-ha rebuild: {e}");
            ExitCode::FAILURE
        }
    }
}

fn render(view: &Value) -> String {
    let n = |k: &str| view[k].as_u64().unwrap_or(0);
    let (rd, rt) = (n("records_done"), n("records_total"));
    let percent = if rt == 0 {
        0.0
    } else {
        rd as f64 * 100.0 / rt as f64
    };
    let filled = ((percent / 100.0) * 30.0).round() as usize;
    format!(
        "rebuild {} <- {} {:<16} [{}{}] {percent:5.1}%  collections {}/{}  records {rd}/{rt}  {:.1} MiB  {:.0}s",
        view["server"].as_str().unwrap_or("?"),
        view["source"].as_str().unwrap_or("?"),
        view["phase"].as_str().unwrap_or("?"),
        "#".repeat(filled.min(30)),
        "-".repeat(30 - filled.min(30)),
        n("collections_done"),
        n("collections_total"),
        n("bytes_done") as f64 / 1048576.0,
        view["seconds"].as_f64().unwrap_or(0.0),
    )
}

async fn rebuild(args: &RebuildArgs) -> Result<(Value, String), String> {
    let client = args.gateway.client(&args.tls)?;
    let path = format!(
        "/admin/servers/{}/rebuild?from={}&replace={}&page_size={}&expected_records_per_second={}",
        segment(&args.server),
        segment(&args.from),
        args.replace,
        args.page_size,
        args.expected_records_per_second
    );
    let started = client.admin_post(&path).await?;
    eprintln!(
        "rebuild of {} from {} started: {} records to copy (expected about {:.0} s)",
        args.server,
        args.from,
        started["records_total"],
        started["expected_seconds"].as_f64().unwrap_or(0.0)
    );
    let terminal = std::io::stderr().is_terminal();
    let mut last_print = Instant::now();
    let mut unreachable_since: Option<Instant> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let status = match client.status().await {
            Ok(status) => {
                unreachable_since = None;
                status
            }
            Err(e) => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(10) {
                    return Err(format!(
                        "{e}; the rebuild is interrupted and {} stays marked rebuilding: run \
                         `chroma-ha rebuild {} --from {}` again once the gateway is back",
                        args.server, args.server, args.from
                    ));
                }
                continue;
            }
        };
        let view = status["rebuild"].clone();
        if view["server"].as_str() != Some(args.server.as_str()) {
            return Err(format!(
                "the gateway shows no rebuild of {} any more (did it restart?); {} stays marked \
                 rebuilding: run the rebuild again",
                args.server, args.server
            ));
        }
        let phase = view["phase"].as_str().unwrap_or_default().to_string();
        let line = render(&view);
        if terminal {
            eprint!("\r{line}");
            let _ = std::io::stderr().flush();
        } else if last_print.elapsed() > Duration::from_secs(2)
            || phase == "done"
            || phase == "failed"
        {
            eprintln!("{line}");
            last_print = Instant::now();
        }
        match phase.as_str() {
            "done" => {
                if terminal {
                    eprintln!();
                }
                let secs = view["copy_seconds"].as_f64().unwrap_or(0.0).max(1e-6);
                let records = view["records_done"].as_u64().unwrap_or(0);
                let bytes = view["bytes_done"].as_u64().unwrap_or(0) as f64 / 1048576.0;
                let message = format!(
                    "rebuild of {} from {} done at LSN {}: {} collections, {records} records copied \
                     in {secs:.1}s ({:.0} records/s, {:.2} MiB/s); {} took {:.1}s in all; check: {}",
                    args.server,
                    args.from,
                    view["lsn"],
                    view["collections_done"],
                    records as f64 / secs,
                    bytes / secs,
                    args.server,
                    view["seconds"].as_f64().unwrap_or(0.0),
                    view["check"].as_str().unwrap_or("?"),
                );
                return Ok((view, message));
            }
            "failed" => {
                if terminal {
                    eprintln!();
                }
                return Err(format!(
                    "the rebuild failed: {}; {} stays marked rebuilding (no reads, no writes): fix \
                     the cause and run the rebuild again",
                    view["error"].as_str().unwrap_or("?"),
                    args.server
                ));
            }
            _ => {}
        }
    }
}
