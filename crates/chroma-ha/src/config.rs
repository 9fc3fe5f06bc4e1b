//! Gateway configuration: every setting, its default, and where it comes from.
//!
//! # Sources
//!
//! From lowest to highest precedence; a later source overrides an earlier one
//! setting by setting:
//!
//! 1. built-in defaults (the [`defaults`] module);
//! 2. the TOML file given with `--config FILE` (unknown keys are an error;
//!    `deploy/chroma-ha.example.toml` documents every key);
//! 3. the Python balancer's environment variables, so chroma-ha drops in for it:
//!    `PRIMARY_URL`, `REPLICA_URL` (one URL or a comma-separated list), `PORT`,
//!    `CHECK_INTERVAL` (seconds, fractions allowed), `FAILURE_THRESHOLD`,
//!    `REQUEST_TIMEOUT` (seconds), `READ_REPLICA_RATIO`;
//! 4. `CHROMA_HA_*` environment variables, one per setting (table below);
//! 5. command-line flags of `chroma-ha serve` ([`ServeArgs`]).
//!
//! An environment variable that is empty (or only whitespace) counts as unset.
//!
//! # Settings
//!
//! | TOML key                     | environment                         | legacy env           | default          |
//! |------------------------------|-------------------------------------|----------------------|------------------|
//! | `listen`                     | `CHROMA_HA_LISTEN`                  | `PORT` (see below)   | `127.0.0.1:8000` |
//! | `primary` (URL or table)     | `CHROMA_HA_PRIMARY`                 | `PRIMARY_URL`        | none, required   |
//! | `replicas` (list)            | `CHROMA_HA_REPLICAS` (comma list)   | `REPLICA_URL`        | none             |
//! | `server_auth.token`          | `CHROMA_HA_SERVER_TOKEN`            |                      | none             |
//! | `server_auth.header`         | `CHROMA_HA_SERVER_TOKEN_HEADER`     |                      | `authorization`  |
//! | `data_dir`                   | `CHROMA_HA_DATA_DIR`                |                      | `./data`         |
//! | `request_timeout`            | `CHROMA_HA_REQUEST_TIMEOUT`         | `REQUEST_TIMEOUT`    | `30s`            |
//! | `connect_timeout`            | `CHROMA_HA_CONNECT_TIMEOUT`         |                      | `5s`             |
//! | `max_body_bytes`             | `CHROMA_HA_MAX_BODY_BYTES`          |                      | `64MiB`          |
//! | `admin_token`                | `CHROMA_HA_ADMIN_TOKEN`             |                      | none (disabled)  |
//! | `log_level`                  | `CHROMA_HA_LOG_LEVEL`               |                      | `info`           |
//! | `log.url`                    | `CHROMA_HA_LOG_URL`                 |                      | none (file log)  |
//! | `wal.fsync`                  | `CHROMA_HA_FSYNC`                   |                      | `always`         |
//! | `wal.fsync_interval`         | `CHROMA_HA_FSYNC_INTERVAL`          |                      | `2ms`            |
//! | `wal.segment_bytes`          | `CHROMA_HA_WAL_SEGMENT_BYTES`       |                      | `64MiB`          |
//! | `wal.max_bytes`              | `CHROMA_HA_WAL_MAX_BYTES`           |                      | `10GiB`          |
//! | `health.check_interval`      | `CHROMA_HA_CHECK_INTERVAL`          | `CHECK_INTERVAL`     | `1s`             |
//! | `health.failure_threshold`   | `CHROMA_HA_FAILURE_THRESHOLD`       | `FAILURE_THRESHOLD`  | `3`              |
//! | `health.rise_threshold`      | `CHROMA_HA_RISE_THRESHOLD`          |                      | `2`              |
//! | `health.probe_timeout`       | `CHROMA_HA_PROBE_TIMEOUT`           |                      | `2s`             |
//! | `reads.replica_ratio`        | `CHROMA_HA_READ_REPLICA_RATIO`      | `READ_REPLICA_RATIO` | `0.5`            |
//! | `reads.consistency`          | `CHROMA_HA_READ_CONSISTENCY`        |                      | `strong`         |
//! | `reads.max_staleness`        | `CHROMA_HA_READ_MAX_STALENESS`      |                      | `5s`             |
//! | `replication.apply_window`   | `CHROMA_HA_APPLY_WINDOW`            |                      | `16`             |
//! | `replication.replay_rate_limit` | `CHROMA_HA_REPLAY_RATE_LIMIT`    |                      | `0` (unlimited)  |
//! | `replication.retry_base`     | `CHROMA_HA_RETRY_BASE`              |                      | `100ms`          |
//! | `replication.retry_cap`      | `CHROMA_HA_RETRY_CAP`               |                      | `10s`            |
//! | `replication.give_up_after`  | `CHROMA_HA_GIVE_UP_AFTER`           |                      | `5m`             |
//! | `replication.merge_catch_up` | `CHROMA_HA_MERGE_CATCH_UP`        |                      | `true`           |
//! | `replication.max_dead_letters` | `CHROMA_HA_MAX_DEAD_LETTERS`      |                      | `10000`          |
//! | `tls.cert_file`              | `CHROMA_HA_TLS_CERT_FILE`           |                      | none (plain HTTP) |
//! | `tls.key_file`               | `CHROMA_HA_TLS_KEY_FILE`            |                      | none             |
//! | `tls.ca_file`                | `CHROMA_HA_TLS_CA_FILE`             |                      | none (system roots) |
//! | `tls.client_cert_file`       | `CHROMA_HA_TLS_CLIENT_CERT_FILE`    |                      | none             |
//! | `tls.client_key_file`        | `CHROMA_HA_TLS_CLIENT_KEY_FILE`     |                      | none             |
//!
//! Durations are a number of seconds (`1`, `0.5`) or a number with a unit
//! (`500ms`, `2s`, `1m`, `1h`), at most 100 years. Sizes are bytes or a
//! number with a unit (`64MiB`, `10GiB`, `1GB`).
//!
//! `PORT` (legacy): listen on `0.0.0.0:PORT`, as the Python balancer did,
//! unless the file set `listen`, in which case only the port of that address
//! changes. `CHROMA_HA_LISTEN` and `--listen` override `PORT` entirely.
//!
//! Servers: the primary has priority 0, replicas follow in list order. Default
//! names are `primary`, and `replica` when there is one replica or
//! `replica-1`, `replica-2`, ... when there are several. A server URL given
//! by the environment or a flag replaces that server entry (or, for replicas,
//! the whole list) including its name, token and weight from the file: per-server
//! extras only come from the file, so a token is never sent to a host it was
//! not written next to. Servers without their own token use
//! `server_auth.token`.
//!
//! TLS ([`TlsConfig`], loaded by [`crate::tls`]): `tls.cert_file` and
//! `tls.key_file` (both or neither) make the gateway serve TLS only;
//! `tls.ca_file` replaces the system's roots for every outgoing connection
//! (`https://` servers, the leader); `tls.client_cert_file` and
//! `tls.client_key_file` (both or neither) are presented to servers that ask
//! for a client certificate. Every file is read and checked at start-up; an
//! error names the setting and the file.

mod file;
mod parse;
mod settings;
pub(crate) mod sources;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use settings::env_names;

/// Built-in defaults of every setting that has one.
pub mod defaults {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::time::Duration;

    /// Address the gateway listens on, `127.0.0.1:8000`: loopback only, so a
    /// fresh install is not reachable from the network until the operator
    /// says so (`listen = "0.0.0.0:8000"`, or the legacy `PORT`).
    pub const LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8000);
    /// Directory of the write-ahead log and state files.
    pub const DATA_DIR: &str = "./data";
    /// Group-commit interval of the `batch` fsync policy.
    pub const FSYNC_INTERVAL: Duration = Duration::from_millis(2);
    /// Size of one log segment file.
    pub const WAL_SEGMENT_BYTES: u64 = 64 << 20;
    /// Disk cap of the log; past it new writes get 507.
    pub const WAL_MAX_BYTES: u64 = 10 << 30;
    /// Interval between heartbeat probes of one server.
    pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);
    /// Consecutive failures that make a healthy server unhealthy.
    pub const FAILURE_THRESHOLD: u32 = 3;
    /// Consecutive probe successes that make an unhealthy server healthy.
    pub const RISE_THRESHOLD: u32 = 2;
    /// Timeout of one heartbeat probe.
    pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
    /// Timeout of one request to a server, from connect to the last body byte.
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
    /// Timeout of establishing a TCP connection to a server.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Share of reads sent to replicas among caught-up servers.
    pub const READ_REPLICA_RATIO: f64 = 0.5;
    /// Bound on staleness of `eventual` reads.
    pub const MAX_STALENESS: Duration = Duration::from_secs(5);
    /// Largest request body the gateway accepts.
    pub const MAX_BODY_BYTES: usize = 64 << 20;
    /// Non-conflicting entries applied in parallel per server.
    pub const APPLY_WINDOW: usize = 16;
    /// First retry delay of an applier after a transient failure.
    pub const RETRY_BASE: Duration = Duration::from_millis(100);
    /// Largest retry delay of an applier.
    pub const RETRY_CAP: Duration = Duration::from_secs(10);
    /// `replication.give_up_after`.
    pub const GIVE_UP_AFTER: Duration = Duration::from_secs(300);
    /// Most dead letters kept; past it, appliers stop at divergent entries.
    pub const MAX_DEAD_LETTERS: usize = 10_000;
    /// Log filter.
    pub const LOG_LEVEL: &str = "info";
    /// `log.lease_time`: how long a leader's claim on a shared log lasts.
    pub const LEASE_TIME: Duration = Duration::from_secs(5);
    /// `log.renew_interval`: how often the leader renews it (and followers
    /// look for a leader).
    pub const RENEW_INTERVAL: Duration = Duration::from_secs(1);
    /// `log.hold_requests_for`: how long a request waits for a leader.
    pub const HOLD_REQUESTS_FOR: Duration = Duration::from_secs(15);
}

/// The complete, validated gateway configuration. Every value here has passed
/// validation: URLs are http(s), names are unique, numbers are in range.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Address the gateway listens on.
    pub listen: SocketAddr,
    /// The primary server (priority 0): the preferred executor of writes.
    pub primary: ServerConfig,
    /// Replica servers in priority order (first = next after the primary).
    pub replicas: Vec<ServerConfig>,
    /// Directory of the write-ahead log, cursors and id mappings.
    pub data_dir: PathBuf,
    /// Write-ahead log settings.
    pub wal: WalConfig,
    /// Health-check settings.
    pub health: HealthConfig,
    /// Timeout of one request to a server (connect to last body byte).
    pub request_timeout: Duration,
    /// Timeout of establishing a connection to a server.
    pub connect_timeout: Duration,
    /// How reads are routed.
    pub reads: ReadConfig,
    /// Largest accepted request body, in bytes (at least 1).
    pub max_body_bytes: usize,
    /// Applier settings.
    pub replication: ReplicationConfig,
    /// Token for `/admin/*`; `None` disables the admin endpoints.
    pub admin_token: Option<Secret>,
    /// A `tracing_subscriber::EnvFilter` directive that parses (e.g. `info`).
    pub log_level: String,
    /// Where the log is kept: `None`, the file log in `data_dir/wal`; a
    /// PostgreSQL URL, the log in that database (migrated at start).
    pub log_url: Option<Secret>,
    /// How gateways sharing a log in PostgreSQL elect and find a leader.
    pub cluster: ClusterConfig,
    /// TLS files: the listener's certificate, trusted roots, client identity.
    pub tls: TlsConfig,
}

/// The TLS files the gateway uses; every one set here was readable and valid
/// PEM when the configuration was built, and each key matches its
/// certificate. Pairs (`cert_file`/`key_file`, `client_cert_file`/
/// `client_key_file`) are both set or both unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// The gateway's certificate chain (PEM); set, the listener speaks TLS only.
    pub cert_file: Option<PathBuf>,
    /// The private key of `cert_file` (PEM).
    pub key_file: Option<PathBuf>,
    /// CA certificates (PEM) trusted for outgoing TLS, instead of the
    /// system's roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) presented to servers (mutual TLS).
    pub client_cert_file: Option<PathBuf>,
    /// The private key of `client_cert_file` (PEM).
    pub client_key_file: Option<PathBuf>,
}

/// How the gateways sharing one log in PostgreSQL elect a leader and reach
/// it. Unused with the file log (one gateway, always leading).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This gateway's name, unique among those sharing the log (default:
    /// its advertised URL's host and port).
    pub name: String,
    /// Where the other gateways forward requests to this one
    /// (`http://host:port`, `https://` when the listener has TLS; default:
    /// from `listen`, with the machine's host name for an unspecified
    /// address).
    pub advertise_url: String,
    /// How long a claim on the lease lasts (> 2 × `renew_interval`).
    pub lease_time: Duration,
    /// How often the leader renews, and followers look for a leader.
    pub renew_interval: Duration,
    /// How long a request waits for a leader before a 503.
    pub hold_requests_for: Duration,
}

/// One Chroma server behind the gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Unique name (1–64 chars of `A-Za-z0-9._-`), shown in /status, metrics
    /// and the `x-chroma-ha-backend` header.
    pub name: String,
    /// Base URL: `http://host[:port][/prefix]`, no trailing slash, no query.
    pub url: String,
    /// Credentials the gateway itself sends to this server, if any.
    pub credentials: Option<Credentials>,
    /// Relative read weight; `None` when not configured (routing decides).
    /// Always finite and >= 0 when set.
    pub read_weight: Option<f64>,
}

/// Credentials for one server, sent by the gateway's own requests (appliers,
/// probes). Tokens are printable ASCII without spaces, so valid header values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// Sent as `Authorization: Bearer <token>`.
    Bearer(Secret),
    /// Sent as `X-Chroma-Token: <token>`.
    ChromaToken(Secret),
}

impl Credentials {
    /// The header name these credentials travel in (lower case).
    pub fn header_name(&self) -> &'static str {
        match self {
            Credentials::Bearer(_) => "authorization",
            Credentials::ChromaToken(_) => "x-chroma-token",
        }
    }

    /// The header value, including the `Bearer ` prefix where it applies.
    pub fn header_value(&self) -> String {
        match self {
            Credentials::Bearer(t) => format!("Bearer {}", t.expose()),
            Credentials::ChromaToken(t) => t.expose().to_string(),
        }
    }
}

/// Which header carries a configured token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenHeader {
    /// `Authorization: Bearer <token>` (Chroma's default token transport).
    Authorization,
    /// `X-Chroma-Token: <token>`.
    XChromaToken,
}

impl TokenHeader {
    /// Wraps `token` in the credentials this header calls for.
    pub fn credentials(self, token: Secret) -> Credentials {
        match self {
            TokenHeader::Authorization => Credentials::Bearer(token),
            TokenHeader::XChromaToken => Credentials::ChromaToken(token),
        }
    }
}

/// A secret string. Its `Debug` output is redacted, so configurations can be
/// logged; read the value with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Write-ahead log settings.
#[derive(Debug, Clone, PartialEq)]
pub struct WalConfig {
    /// When appends are made durable.
    pub fsync: FsyncPolicy,
    /// Size of one segment file (at least 4 KiB).
    pub segment_bytes: u64,
    /// Disk cap of the log; at least `segment_bytes`.
    pub max_bytes: u64,
}

/// When the log calls fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Acknowledge a write only after its fsync.
    Always,
    /// Group commit: fsync at most every `interval` (> 0), acknowledge after it.
    Batch {
        /// Longest wait before a batch is synced.
        interval: Duration,
    },
    /// Never fsync (tests only: a power loss loses acknowledged writes).
    Never,
}

/// The fsync mode as chosen on the command line / in settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FsyncMode {
    /// Fsync before every acknowledgement.
    Always,
    /// Group commit every `wal.fsync_interval`.
    Batch,
    /// Never fsync (tests only).
    Never,
}

/// Health-check settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthConfig {
    /// Interval between heartbeat probes (> 0).
    pub check_interval: Duration,
    /// Consecutive failures that make a healthy server unhealthy (>= 1).
    pub failure_threshold: u32,
    /// Consecutive successes that make an unhealthy server healthy (>= 1).
    pub rise_threshold: u32,
    /// Timeout of one heartbeat probe (> 0).
    pub probe_timeout: Duration,
}

/// Read routing settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReadConfig {
    /// Share (0.0–1.0) of reads sent to replicas among caught-up servers.
    pub replica_ratio: f64,
    /// Which servers may serve a read.
    pub consistency: ReadConsistency,
}

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadConsistency {
    /// A read sees every write acknowledged before it arrived.
    Strong,
    /// A read may miss writes acknowledged at most `max_staleness` ago.
    Eventual {
        /// Bound on how old the missed writes may be (> 0).
        max_staleness: Duration,
    },
}

/// Applier settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// Non-conflicting entries in flight per server (>= 1).
    pub apply_window: usize,
    /// Entries per second per server while catching up; `None` = unlimited.
    pub replay_rate_limit: Option<NonZeroU32>,
    /// First retry delay after a transient failure (> 0, <= `retry_cap`).
    pub retry_base: Duration,
    /// Largest retry delay.
    pub retry_cap: Duration,
    /// How long an entry may keep failing transiently on a healthy server
    /// (at least 5 tries) before it is dead-lettered.
    pub give_up_after: Duration,
    /// Whether a server that is behind has consecutive committed record
    /// writes of one collection merged into one request each (see
    /// `replication::merge`); off: every entry is one request.
    pub merge_catch_up: bool,
    /// Most dead letters kept (>= 1). When the list is full, an applier
    /// that meets a divergent entry holds it unfinished (and stops moving
    /// on past it) until an operator makes room; no letter is dropped.
    pub max_dead_letters: usize,
}

/// Why the configuration could not be built. Every variant names the setting
/// (TOML key with file, environment variable or flag) and, where there is one,
/// the bad value (secrets are shown as `***`).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value is not acceptable for its setting.
    #[error("{setting}: '{value}' {reason}")]
    Invalid {
        /// Where the value came from, e.g. `REPLICA_URL` or `health.check_interval in x.toml`.
        setting: String,
        /// The offending value (`***` for secrets).
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// A required setting is missing, or settings contradict each other.
    #[error("{setting}: {reason}")]
    Conflict {
        /// The setting concerned.
        setting: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The config file has a key that is not a setting.
    #[error("{path}: unknown setting '{key}' (known here: {known})")]
    UnknownKey {
        /// The config file.
        path: String,
        /// The full key, e.g. `health.chek_interval`.
        key: String,
        /// The keys accepted at that level.
        known: String,
    },
    /// The config file could not be read.
    #[error("--config: cannot read '{}': {source}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML.
    #[error("{path}: not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// The parser's message, with line and column.
        message: String,
    },
}

/// Flags of `chroma-ha serve`. Flags override every other source.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file (see deploy/chroma-ha.example.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on, e.g. 0.0.0.0:8000.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// URL of the primary Chroma server.
    #[arg(long, value_name = "URL")]
    pub primary: Option<String>,
    /// URL of a replica Chroma server; repeat in priority order (replaces the
    /// configured replica list).
    #[arg(long = "replica", value_name = "URL")]
    pub replicas: Vec<String>,
    /// Directory for the write-ahead log and state.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// When the log calls fsync.
    #[arg(long, value_enum)]
    pub fsync: Option<FsyncMode>,
    /// Keep the log in this PostgreSQL database (`postgres://…`) instead
    /// of the file log in the data directory.
    #[arg(long, value_name = "URL")]
    pub log_url: Option<String>,
}

/// Reads a variable from the process environment; non-UTF-8 values are
/// converted lossily (and then usually fail validation, naming the variable).
pub fn process_env(name: &str) -> Option<String> {
    std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
}

impl Config {
    /// Builds the configuration from defaults, the file named by
    /// `args.config`, the environment as seen through `env` (legacy names,
    /// then `CHROMA_HA_*`), then the flags in `args`, and validates it.
    /// Pass [`process_env`] for the real environment.
    pub fn load(
        args: &ServeArgs,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
                        path: path.clone(),
                        source,
                    })?;
                Some((path.clone(), text))
            }
            None => None,
        };
        let file = file.as_ref().map(|(p, t)| (p.as_path(), t.as_str()));
        sources::build(file, env, args)
    }

    /// Builds the configuration from defaults and TOML text alone (no
    /// environment, no flags). `origin` names the text in error messages.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        sources::build(Some((origin, text)), &|_| None, &ServeArgs::default())
    }

    /// Defaults plus the given servers; handy for tests and tools.
    pub fn with_servers(primary: &str, replicas: &[&str]) -> Result<Config, ConfigError> {
        let args = ServeArgs {
            primary: Some(primary.to_string()),
            replicas: replicas.iter().map(|r| r.to_string()).collect(),
            ..ServeArgs::default()
        };
        sources::build(None, &|_| None, &args)
    }

    /// All servers in priority order: the primary, then the replicas.
    pub fn servers(&self) -> impl Iterator<Item = &ServerConfig> {
        std::iter::once(&self.primary).chain(self.replicas.iter())
    }
}
