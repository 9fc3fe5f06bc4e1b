//! The command line: `serve`, `status`, `check`, `wal inspect|verify`,
//! `log migrate`, `backup`, `restore`, `rebuild`.
//! Exit codes: 0 success, 1 a check failed (corruption, servers differ,
//! gateway not ready), 2 bad usage or configuration.

mod backup_cmd;
mod check_cmd;
mod gateway_client;
mod log_cmd;
mod progress_line;
mod rebuild_cmd;
mod restore_cmd;
mod status_cmd;
mod wal_cmd;

use crate::config::{Config, ServeArgs};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// chroma-ha: a high-availability gateway for ChromaDB with a durable
/// write-ahead log.
#[derive(Debug, Parser)]
#[command(name = "chroma-ha", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway in front of a primary and its replicas.
    Serve(ServeArgs),
    /// Show a running gateway's status (GET /status).
    Status(status_cmd::StatusArgs),
    /// Compare the content of Chroma servers directly (exit 1 if they differ).
    Check(check_cmd::CheckArgs),
    /// Look at a write-ahead log directory (read-only; safe while serving).
    Wal {
        /// What to do with the log.
        #[command(subcommand)]
        command: WalCommand,
    },
    /// Write a snapshot of every server's content, consistent at one log
    /// position, into a directory (through a running gateway).
    Backup(backup_cmd::BackupArgs),
    /// Load a snapshot written by `backup` into an empty Chroma server, and
    /// with --join make it one of a running gateway's servers.
    Restore(restore_cmd::RestoreArgs),
    /// Fill a server from another while the gateway serves (through a
    /// running gateway's admin API).
    Rebuild(rebuild_cmd::RebuildArgs),
    /// Move a stopped gateway's log and state to PostgreSQL.
    Log {
        /// What to do.
        #[command(subcommand)]
        command: log_cmd::LogCommand,
    },
}

/// TLS options of the commands that talk to a gateway or a server.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// CA certificates (PEM) to trust for https:// URLs, instead of the
    /// system's roots.
    #[arg(long, value_name = "FILE", env = "CHROMA_HA_TLS_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for servers that ask for one (with --client-key).
    #[arg(long, value_name = "FILE", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// Private key (PEM) of --client-cert.
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The client TLS these options ask for; an error names the file.
    pub fn client_tls(&self) -> Result<crate::tls::ClientTls, crate::tls::TlsError> {
        crate::tls::ClientTls::from_files(
            self.ca_file.as_deref(),
            self.client_cert.as_deref(),
            self.client_key.as_deref(),
        )
    }
}

/// `chroma-ha wal …`
#[derive(Debug, Subcommand)]
pub enum WalCommand {
    /// Segments, LSN ranges, cursors and sizes.
    Inspect {
        /// The log directory (DATA_DIR/wal of a gateway).
        dir: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check every record's CRC; exit 1 naming file and offset on corruption.
    Verify {
        /// The log directory (DATA_DIR/wal of a gateway).
        dir: PathBuf,
    },
}

/// Parses the command line and runs it; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Status(args) => status_cmd::run(args),
        Command::Check(args) => check_cmd::run(args),
        Command::Wal { command } => match command {
            WalCommand::Inspect { dir, json } => wal_cmd::inspect(&dir, json),
            WalCommand::Verify { dir } => wal_cmd::verify(&dir),
        },
        Command::Log { command } => log_cmd::run(command),
        Command::Backup(args) => backup_cmd::run_backup(args),
        Command::Rebuild(args) => rebuild_cmd::run(args),
        Command::Restore(args) => restore_cmd::run_restore(args),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let config = match Config::load(&args, &crate::config::process_env) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("chroma-ha: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    crate::telemetry::init_logging(&config.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("chroma-ha: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::gateway::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "gateway stopped");
            eprintln!("chroma-ha: {e}");
            ExitCode::FAILURE
        }
    }
}
