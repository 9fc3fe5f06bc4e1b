//! `chroma-ha log migrate --from DATA_DIR --to postgres://…`.

use std::path::PathBuf;
use std::process::ExitCode;

/// `chroma-ha log …`
#[derive(Debug, clap::Subcommand)]
pub enum LogCommand {
    /// Copy a stopped gateway's file log, cursors, id map, applied state,
    /// operator flags and dead letters into an empty PostgreSQL log.
    Migrate(MigrateArgs),
}

/// `chroma-ha log migrate`.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The stopped gateway's data directory (the one holding `wal/`).
    #[arg(long = "from", value_name = "DATA_DIR")]
    pub from: PathBuf,
    /// The PostgreSQL log to fill; it must be empty.
    #[arg(
        long = "to",
        value_name = "URL",
        env = "CHROMA_HA_LOG_URL",
        hide_env_values = true
    )]
    pub to: String,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs a `log` subcommand.
pub fn run(command: LogCommand) -> ExitCode {
    match command {
        LogCommand::Migrate(args) => migrate(args),
    }
}

fn migrate(args: MigrateArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("chroma-ha log migrate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(crate::replication::migrate::to_postgres(
        &args.from, &args.to,
    ));
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            eprintln!("chroma-ha log migrate: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("chroma-ha log migrate: {e}");
                return ExitCode::FAILURE;
            }
        }
        return ExitCode::SUCCESS;
    }
    println!(
        "migrated {} records (LSNs {}..={}), {} cursors, {} dead letters, state: {}",
        report.records,
        report.first_lsn,
        report.last_lsn,
        report.cursors.len(),
        report.dead_letters,
        if report.documents.is_empty() {
            "none".to_string()
        } else {
            report.documents.join(", ")
        }
    );
    for (name, lsn) in &report.cursors {
        println!("  cursor {name}: {lsn}");
    }
    println!(
        "start the gateway with log.url (or CHROMA_HA_LOG_URL) set to the target; \
         {} is no longer used",
        args.from.display()
    );
    ExitCode::SUCCESS
}
