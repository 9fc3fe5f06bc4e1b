//! The settings table: every scalar setting described once, with its TOML
//! key, its environment names and one parser, and the draft it fills in.
//!
//! All sources (file, environment, flags) feed text through the same parser,
//! so validation and error wording do not depend on the source.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::parse::{self, Bad};
use super::{defaults, ConfigError, Credentials, FsyncMode, Secret, TokenHeader};

/// A server entry before defaults (name, credentials) are resolved.
#[derive(Debug, Clone)]
pub(super) struct ServerDraft {
    pub(super) url: String,
    pub(super) name: Option<String>,
    pub(super) credentials: Option<Credentials>,
    pub(super) read_weight: Option<f64>,
    /// The setting this entry came from, for later error messages.
    pub(super) origin: String,
}

impl ServerDraft {
    pub(super) fn from_url(url: String, origin: &str) -> Self {
        ServerDraft {
            url,
            name: None,
            credentials: None,
            read_weight: None,
            origin: origin.to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ConsistencyMode {
    Strong,
    Eventual,
}

/// Every setting, mutable while sources are layered.
#[derive(Debug, Clone)]
pub(super) struct Draft {
    pub(super) listen: SocketAddr,
    /// Whether a source (the file) chose the listen address; `PORT` then
    /// keeps its host.
    pub(super) listen_explicit: bool,
    pub(super) primary: Option<ServerDraft>,
    pub(super) replicas: Vec<ServerDraft>,
    pub(super) server_token: Option<Secret>,
    pub(super) server_token_header: TokenHeader,
    pub(super) data_dir: PathBuf,
    pub(super) fsync: FsyncMode,
    pub(super) fsync_interval: Duration,
    pub(super) segment_bytes: u64,
    pub(super) max_bytes: u64,
    pub(super) check_interval: Duration,
    pub(super) failure_threshold: u32,
    pub(super) rise_threshold: u32,
    pub(super) probe_timeout: Duration,
    pub(super) request_timeout: Duration,
    pub(super) connect_timeout: Duration,
    pub(super) max_body_bytes: usize,
    pub(super) replica_ratio: f64,
    pub(super) consistency: ConsistencyMode,
    pub(super) max_staleness: Duration,
    pub(super) apply_window: usize,
    pub(super) replay_rate_limit: u32,
    pub(super) retry_base: Duration,
    pub(super) retry_cap: Duration,
    pub(super) give_up_after: Duration,
    pub(super) merge_catch_up: bool,
    pub(super) max_dead_letters: usize,
    pub(super) admin_token: Option<Secret>,
    pub(super) log_level: String,
    pub(super) log_url: Option<Secret>,
    pub(super) gateway_name: Option<String>,
    pub(super) advertise_url: Option<String>,
    pub(super) lease_time: Duration,
    pub(super) renew_interval: Duration,
    pub(super) hold_requests_for: Duration,
    /// TLS files, each with the setting it came from.
    pub(super) tls_cert_file: Option<(PathBuf, String)>,
    pub(super) tls_key_file: Option<(PathBuf, String)>,
    pub(super) tls_ca_file: Option<(PathBuf, String)>,
    pub(super) tls_client_cert_file: Option<(PathBuf, String)>,
    pub(super) tls_client_key_file: Option<(PathBuf, String)>,
}

impl Default for Draft {
    fn default() -> Self {
        Draft {
            listen: defaults::LISTEN,
            listen_explicit: false,
            primary: None,
            replicas: Vec::new(),
            server_token: None,
            server_token_header: TokenHeader::Authorization,
            data_dir: PathBuf::from(defaults::DATA_DIR),
            fsync: FsyncMode::Always,
            fsync_interval: defaults::FSYNC_INTERVAL,
            segment_bytes: defaults::WAL_SEGMENT_BYTES,
            max_bytes: defaults::WAL_MAX_BYTES,
            check_interval: defaults::CHECK_INTERVAL,
            failure_threshold: defaults::FAILURE_THRESHOLD,
            rise_threshold: defaults::RISE_THRESHOLD,
            probe_timeout: defaults::PROBE_TIMEOUT,
            request_timeout: defaults::REQUEST_TIMEOUT,
            connect_timeout: defaults::CONNECT_TIMEOUT,
            max_body_bytes: defaults::MAX_BODY_BYTES,
            replica_ratio: defaults::READ_REPLICA_RATIO,
            consistency: ConsistencyMode::Strong,
            max_staleness: defaults::MAX_STALENESS,
            apply_window: defaults::APPLY_WINDOW,
            replay_rate_limit: 0,
            retry_base: defaults::RETRY_BASE,
            retry_cap: defaults::RETRY_CAP,
            give_up_after: defaults::GIVE_UP_AFTER,
            merge_catch_up: true,
            max_dead_letters: defaults::MAX_DEAD_LETTERS,
            admin_token: None,
            log_level: defaults::LOG_LEVEL.to_string(),
            log_url: None,
            gateway_name: None,
            advertise_url: None,
            lease_time: defaults::LEASE_TIME,
            renew_interval: defaults::RENEW_INTERVAL,
            hold_requests_for: defaults::HOLD_REQUESTS_FOR,
            tls_cert_file: None,
            tls_key_file: None,
            tls_ca_file: None,
            tls_client_cert_file: None,
            tls_client_key_file: None,
        }
    }
}

/// Applies the text of one setting to the draft; the `&str` after the value
/// is the setting's origin (for server entries, which keep it).
pub(super) type Apply = fn(&mut Draft, &str, &str) -> Result<(), Bad>;

/// Settings whose TOML value is a boolean (`true`/`false`); every other
/// setting takes a string or a number.
pub(super) const BOOLEAN_KEYS: &[&str] = &["replication.merge_catch_up"];

/// One scalar setting.
pub(super) struct Setting {
    /// TOML key, dotted for keys inside a table (`health.check_interval`).
    pub(super) key: &'static str,
    /// `CHROMA_HA_*` variable.
    pub(super) env: &'static str,
    /// The Python balancer's variable, if any.
    pub(super) legacy_env: Option<&'static str>,
    /// Whether the value is secret (not echoed in errors).
    pub(super) secret: bool,
    pub(super) apply: Apply,
}

const fn setting(key: &'static str, env: &'static str, apply: Apply) -> Setting {
    Setting {
        key,
        env,
        legacy_env: None,
        secret: false,
        apply,
    }
}

const fn legacy(mut s: Setting, legacy_env: &'static str) -> Setting {
    s.legacy_env = Some(legacy_env);
    s
}

const fn secret(mut s: Setting) -> Setting {
    s.secret = true;
    s
}

fn usize_at_least(v: &str, min: u64) -> Result<usize, Bad> {
    let n = parse::integer_at_least(v, min)?;
    usize::try_from(n).map_err(|_| Bad::new("is too large"))
}

/// Tables of the TOML file that hold scalar settings.
pub(super) const SECTIONS: &[&str] = &[
    "server_auth",
    "log",
    "wal",
    "health",
    "reads",
    "replication",
    "tls",
];

/// Keys of a server table in the file.
pub(super) const SERVER_KEYS: &[&str] = &["url", "name", "token", "token_header", "read_weight"];

/// Legacy variable for the listen port.
pub(super) const LEGACY_PORT: &str = "PORT";

pub(super) static SETTINGS: &[Setting] = &[
    setting("listen", "CHROMA_HA_LISTEN", |d, v, _| {
        d.listen = parse::listen(v)?;
        d.listen_explicit = true;
        Ok(())
    }),
    legacy(
        setting("primary", "CHROMA_HA_PRIMARY", |d, v, origin| {
            d.primary = Some(ServerDraft::from_url(parse::server_url(v)?, origin));
            Ok(())
        }),
        "PRIMARY_URL",
    ),
    legacy(
        setting("replicas", "CHROMA_HA_REPLICAS", |d, v, origin| {
            d.replicas = parse::server_url_list(v)?
                .into_iter()
                .map(|url| ServerDraft::from_url(url, origin))
                .collect();
            Ok(())
        }),
        "REPLICA_URL",
    ),
    secret(setting(
        "server_auth.token",
        "CHROMA_HA_SERVER_TOKEN",
        |d, v, _| {
            d.server_token = Some(parse::token(v)?);
            Ok(())
        },
    )),
    setting(
        "server_auth.header",
        "CHROMA_HA_SERVER_TOKEN_HEADER",
        |d, v, _| {
            d.server_token_header = parse::token_header(v)?;
            Ok(())
        },
    ),
    setting("data_dir", "CHROMA_HA_DATA_DIR", |d, v, _| {
        d.data_dir = parse::path(v)?;
        Ok(())
    }),
    legacy(
        setting("request_timeout", "CHROMA_HA_REQUEST_TIMEOUT", |d, v, _| {
            d.request_timeout = parse::positive_duration(v)?;
            Ok(())
        }),
        "REQUEST_TIMEOUT",
    ),
    setting("connect_timeout", "CHROMA_HA_CONNECT_TIMEOUT", |d, v, _| {
        d.connect_timeout = parse::positive_duration(v)?;
        Ok(())
    }),
    setting("max_body_bytes", "CHROMA_HA_MAX_BODY_BYTES", |d, v, _| {
        let n = parse::size_at_least(v, 1)?;
        d.max_body_bytes = usize::try_from(n).map_err(|_| Bad::new("is too large"))?;
        Ok(())
    }),
    secret(setting(
        "admin_token",
        "CHROMA_HA_ADMIN_TOKEN",
        |d, v, _| {
            d.admin_token = Some(parse::token(v)?);
            Ok(())
        },
    )),
    secret(setting("log.url", "CHROMA_HA_LOG_URL", |d, v, _| {
        d.log_url = Some(parse::postgres_url(v)?);
        Ok(())
    })),
    setting("log.gateway_name", "CHROMA_HA_GATEWAY_NAME", |d, v, _| {
        d.gateway_name = Some(parse::server_name(v)?);
        Ok(())
    }),
    setting("log.advertise_url", "CHROMA_HA_ADVERTISE_URL", |d, v, _| {
        d.advertise_url = Some(parse::server_url(v)?);
        Ok(())
    }),
    setting("log.lease_time", "CHROMA_HA_LEASE_TIME", |d, v, _| {
        d.lease_time = parse::positive_duration(v)?;
        Ok(())
    }),
    setting(
        "log.renew_interval",
        "CHROMA_HA_LEASE_RENEW_INTERVAL",
        |d, v, _| {
            d.renew_interval = parse::positive_duration(v)?;
            Ok(())
        },
    ),
    setting(
        "log.hold_requests_for",
        "CHROMA_HA_HOLD_REQUESTS_FOR",
        |d, v, _| {
            d.hold_requests_for = parse::positive_duration(v)?;
            Ok(())
        },
    ),
    setting("log_level", "CHROMA_HA_LOG_LEVEL", |d, v, _| {
        d.log_level = parse::log_level(v)?;
        Ok(())
    }),
    setting("wal.fsync", "CHROMA_HA_FSYNC", |d, v, _| {
        d.fsync = match v.trim().to_ascii_lowercase().as_str() {
            "always" => FsyncMode::Always,
            "batch" => FsyncMode::Batch,
            "never" => FsyncMode::Never,
            _ => return Err(Bad::new("is not one of always, batch, never")),
        };
        Ok(())
    }),
    setting(
        "wal.fsync_interval",
        "CHROMA_HA_FSYNC_INTERVAL",
        |d, v, _| {
            d.fsync_interval = parse::positive_duration(v)?;
            Ok(())
        },
    ),
    setting(
        "wal.segment_bytes",
        "CHROMA_HA_WAL_SEGMENT_BYTES",
        |d, v, _| {
            d.segment_bytes = parse::size_at_least(v, 4096)?;
            Ok(())
        },
    ),
    setting("wal.max_bytes", "CHROMA_HA_WAL_MAX_BYTES", |d, v, _| {
        d.max_bytes = parse::size_at_least(v, 4096)?;
        Ok(())
    }),
    legacy(
        setting(
            "health.check_interval",
            "CHROMA_HA_CHECK_INTERVAL",
            |d, v, _| {
                d.check_interval = parse::positive_duration(v)?;
                Ok(())
            },
        ),
        "CHECK_INTERVAL",
    ),
    legacy(
        setting(
            "health.failure_threshold",
            "CHROMA_HA_FAILURE_THRESHOLD",
            |d, v, _| {
                d.failure_threshold = parse::u32_at_least(v, 1)?;
                Ok(())
            },
        ),
        "FAILURE_THRESHOLD",
    ),
    setting(
        "health.rise_threshold",
        "CHROMA_HA_RISE_THRESHOLD",
        |d, v, _| {
            d.rise_threshold = parse::u32_at_least(v, 1)?;
            Ok(())
        },
    ),
    setting(
        "health.probe_timeout",
        "CHROMA_HA_PROBE_TIMEOUT",
        |d, v, _| {
            d.probe_timeout = parse::positive_duration(v)?;
            Ok(())
        },
    ),
    legacy(
        setting(
            "reads.replica_ratio",
            "CHROMA_HA_READ_REPLICA_RATIO",
            |d, v, _| {
                d.replica_ratio = parse::ratio(v)?;
                Ok(())
            },
        ),
        "READ_REPLICA_RATIO",
    ),
    setting(
        "reads.consistency",
        "CHROMA_HA_READ_CONSISTENCY",
        |d, v, _| {
            d.consistency = match v.trim().to_ascii_lowercase().as_str() {
                "strong" => ConsistencyMode::Strong,
                "eventual" => ConsistencyMode::Eventual,
                _ => return Err(Bad::new("is not one of strong, eventual")),
            };
            Ok(())
        },
    ),
    setting(
        "reads.max_staleness",
        "CHROMA_HA_READ_MAX_STALENESS",
        |d, v, _| {
            d.max_staleness = parse::positive_duration(v)?;
            Ok(())
        },
    ),
    setting(
        "replication.apply_window",
        "CHROMA_HA_APPLY_WINDOW",
        |d, v, _| {
            d.apply_window = usize_at_least(v, 1)?;
            Ok(())
        },
    ),
    setting(
        "replication.replay_rate_limit",
        "CHROMA_HA_REPLAY_RATE_LIMIT",
        |d, v, _| {
            d.replay_rate_limit = parse::u32_at_least(v, 0)?;
            Ok(())
        },
    ),
    setting(
        "replication.retry_base",
        "CHROMA_HA_RETRY_BASE",
        |d, v, _| {
            d.retry_base = parse::positive_duration(v)?;
            Ok(())
        },
    ),
    setting("replication.retry_cap", "CHROMA_HA_RETRY_CAP", |d, v, _| {
        d.retry_cap = parse::positive_duration(v)?;
        Ok(())
    }),
    setting(
        "replication.give_up_after",
        "CHROMA_HA_GIVE_UP_AFTER",
        |d, v, _| {
            d.give_up_after = parse::positive_duration(v)?;
            Ok(())
        },
    ),
    setting(
        "replication.merge_catch_up",
        "CHROMA_HA_MERGE_CATCH_UP",
        |d, v, _| {
            d.merge_catch_up = parse::boolean(v)?;
            Ok(())
        },
    ),
    setting(
        "replication.max_dead_letters",
        "CHROMA_HA_MAX_DEAD_LETTERS",
        |d, v, _| {
            d.max_dead_letters = usize_at_least(v, 1)?;
            Ok(())
        },
    ),
    setting("tls.cert_file", "CHROMA_HA_TLS_CERT_FILE", |d, v, o| {
        d.tls_cert_file = Some((parse::path(v)?, o.to_string()));
        Ok(())
    }),
    setting("tls.key_file", "CHROMA_HA_TLS_KEY_FILE", |d, v, o| {
        d.tls_key_file = Some((parse::path(v)?, o.to_string()));
        Ok(())
    }),
    setting("tls.ca_file", "CHROMA_HA_TLS_CA_FILE", |d, v, o| {
        d.tls_ca_file = Some((parse::path(v)?, o.to_string()));
        Ok(())
    }),
    setting(
        "tls.client_cert_file",
        "CHROMA_HA_TLS_CLIENT_CERT_FILE",
        |d, v, o| {
            d.tls_client_cert_file = Some((parse::path(v)?, o.to_string()));
            Ok(())
        },
    ),
    setting(
        "tls.client_key_file",
        "CHROMA_HA_TLS_CLIENT_KEY_FILE",
        |d, v, o| {
            d.tls_client_key_file = Some((parse::path(v)?, o.to_string()));
            Ok(())
        },
    ),
];

/// Every environment variable the gateway reads: the Python balancer's names
/// and the `CHROMA_HA_*` names. Useful to warn about misspelled variables.
pub fn env_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = SETTINGS.iter().filter_map(|s| s.legacy_env).collect();
    names.push(LEGACY_PORT);
    names.extend(SETTINGS.iter().map(|s| s.env));
    names
}

/// The TOML keys of every scalar setting (for tests and docs).
#[cfg(test)]
pub(crate) fn toml_keys() -> Vec<&'static str> {
    SETTINGS.iter().map(|s| s.key).collect()
}

pub(super) fn find(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

/// Applies `raw` to `setting`, turning a rejection into an error that names
/// `origin` and the bad value.
pub(super) fn apply(
    d: &mut Draft,
    s: &Setting,
    raw: &str,
    origin: &str,
) -> Result<(), ConfigError> {
    (s.apply)(d, raw, origin).map_err(|bad| invalid(origin, s.secret, raw, bad))
}

pub(super) fn invalid(origin: &str, secret: bool, raw: &str, bad: Bad) -> ConfigError {
    let value = if secret {
        "***".to_string()
    } else {
        bad.part.unwrap_or_else(|| raw.to_string())
    };
    ConfigError::Invalid {
        setting: origin.to_string(),
        value,
        reason: bad.reason,
    }
}
