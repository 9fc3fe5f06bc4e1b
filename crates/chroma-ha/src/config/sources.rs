//! The layering of sources: defaults < file < legacy env < `CHROMA_HA_*`
//! env < flags, and the final cross-field validation into a [`Config`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::path::Path;

use super::file::apply_file;
use super::parse::{self, Bad};
use super::settings::{
    apply, find, invalid, ConsistencyMode, Draft, ServerDraft, LEGACY_PORT, SETTINGS,
};
use super::{
    ClusterConfig, Config, ConfigError, FsyncMode, FsyncPolicy, HealthConfig, ReadConfig,
    ReadConsistency, ReplicationConfig, ServeArgs, ServerConfig, TlsConfig, WalConfig,
};

fn env_value(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    env(name).filter(|v| !v.trim().is_empty())
}

fn apply_legacy_env(
    d: &mut Draft,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    for s in SETTINGS {
        if let Some(name) = s.legacy_env {
            if let Some(v) = env_value(env, name) {
                apply(d, s, &v, name)?;
            }
        }
    }
    if let Some(v) = env_value(env, LEGACY_PORT) {
        let port = parse::port(&v).map_err(|bad| invalid(LEGACY_PORT, false, &v, bad))?;
        let host = if d.listen_explicit {
            d.listen.ip()
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        };
        d.listen = SocketAddr::new(host, port);
    }
    Ok(())
}

fn apply_env(d: &mut Draft, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
    for s in SETTINGS {
        if let Some(v) = env_value(env, s.env) {
            apply(d, s, &v, s.env)?;
        }
    }
    Ok(())
}

fn apply_flags(d: &mut Draft, args: &ServeArgs) -> Result<(), ConfigError> {
    let by_flag = |key: &str| find(key).ok_or_else(|| unreachable_setting(key));
    if let Some(v) = &args.listen {
        apply(d, by_flag("listen")?, v, "--listen")?;
    }
    if let Some(v) = &args.primary {
        apply(d, by_flag("primary")?, v, "--primary")?;
    }
    if !args.replicas.is_empty() {
        let mut replicas = Vec::new();
        for v in &args.replicas {
            let urls =
                parse::server_url_list(v).map_err(|bad| invalid("--replica", false, v, bad))?;
            if urls.is_empty() {
                return Err(invalid(
                    "--replica",
                    false,
                    v,
                    Bad::new("is not an http(s) URL"),
                ));
            }
            replicas.extend(
                urls.into_iter()
                    .map(|u| ServerDraft::from_url(u, "--replica")),
            );
        }
        d.replicas = replicas;
    }
    if let Some(v) = &args.data_dir {
        if v.as_os_str().is_empty() {
            return Err(invalid("--data-dir", false, "", Bad::new("is empty")));
        }
        d.data_dir = v.clone();
    }
    if let Some(mode) = args.fsync {
        d.fsync = mode;
    }
    if let Some(v) = &args.log_url {
        d.log_url = Some(parse::postgres_url(v).map_err(|bad| invalid("--log-url", true, v, bad))?);
    }
    Ok(())
}

/// A setting the flag code refers to is missing from the table: a bug, but
/// reported as an error rather than a panic.
pub(super) fn unreachable_setting(key: &str) -> ConfigError {
    ConfigError::Conflict {
        setting: key.to_string(),
        reason: "internal error: setting not in the settings table".to_string(),
    }
}

// ---------------------------------------------------------------- finishing

fn finish(d: Draft) -> Result<Config, ConfigError> {
    let tls = tls_config(&d)?;
    let Some(primary) = d.primary else {
        return Err(ConfigError::Conflict {
            setting: "primary".to_string(),
            reason: "no primary server configured; set PRIMARY_URL, CHROMA_HA_PRIMARY, \
                     --primary or `primary` in the config file"
                .to_string(),
        });
    };
    let default_credentials = d
        .server_token
        .clone()
        .map(|t| d.server_token_header.credentials(t));
    let single_replica = d.replicas.len() == 1;
    let drafts = std::iter::once((primary, "primary".to_string())).chain(
        d.replicas.into_iter().enumerate().map(|(i, r)| {
            let name = if single_replica {
                "replica".to_string()
            } else {
                format!("replica-{}", i + 1)
            };
            (r, name)
        }),
    );
    let mut servers: Vec<ServerConfig> = Vec::new();
    for (draft, default_name) in drafts {
        let server = ServerConfig {
            name: draft.name.unwrap_or(default_name),
            url: draft.url,
            credentials: draft.credentials.or_else(|| default_credentials.clone()),
            read_weight: draft.read_weight,
        };
        if let Some(other) = servers.iter().find(|s| s.name == server.name) {
            return Err(ConfigError::Invalid {
                setting: format!("{} (name)", draft.origin),
                value: server.name.clone(),
                reason: format!("is already the name of the server at {}", other.url),
            });
        }
        if let Some(other) = servers.iter().find(|s| s.url == server.url) {
            return Err(ConfigError::Invalid {
                setting: draft.origin,
                value: server.url.clone(),
                reason: format!("is already configured as server '{}'", other.name),
            });
        }
        servers.push(server);
    }
    let mut servers = servers.into_iter();
    let primary = servers
        .next()
        .ok_or_else(|| unreachable_setting("primary"))?;
    let replicas: Vec<ServerConfig> = servers.collect();

    if d.max_bytes < d.segment_bytes {
        return Err(ConfigError::Conflict {
            setting: "wal.max_bytes".to_string(),
            reason: format!(
                "{} bytes is smaller than wal.segment_bytes ({} bytes)",
                d.max_bytes, d.segment_bytes
            ),
        });
    }
    // Saturating: a renew interval above half of Duration::MAX must be
    // refused here, not overflow.
    if d.renew_interval.saturating_mul(2) >= d.lease_time {
        return Err(ConfigError::Conflict {
            setting: "log.renew_interval".to_string(),
            reason: format!(
                "{:?} is not less than half of log.lease_time ({:?}): one late renewal would \
                 lose the lease",
                d.renew_interval, d.lease_time
            ),
        });
    }
    if d.retry_base > d.retry_cap {
        return Err(ConfigError::Conflict {
            setting: "replication.retry_base".to_string(),
            reason: format!(
                "{:?} is larger than replication.retry_cap ({:?})",
                d.retry_base, d.retry_cap
            ),
        });
    }

    Ok(Config {
        listen: d.listen,
        primary,
        replicas,
        data_dir: d.data_dir,
        wal: WalConfig {
            fsync: match d.fsync {
                FsyncMode::Always => FsyncPolicy::Always,
                FsyncMode::Batch => FsyncPolicy::Batch {
                    interval: d.fsync_interval,
                },
                FsyncMode::Never => FsyncPolicy::Never,
            },
            segment_bytes: d.segment_bytes,
            max_bytes: d.max_bytes,
        },
        health: HealthConfig {
            check_interval: d.check_interval,
            failure_threshold: d.failure_threshold,
            rise_threshold: d.rise_threshold,
            probe_timeout: d.probe_timeout,
        },
        request_timeout: d.request_timeout,
        connect_timeout: d.connect_timeout,
        reads: ReadConfig {
            replica_ratio: d.replica_ratio,
            consistency: match d.consistency {
                ConsistencyMode::Strong => ReadConsistency::Strong,
                ConsistencyMode::Eventual => ReadConsistency::Eventual {
                    max_staleness: d.max_staleness,
                },
            },
        },
        max_body_bytes: d.max_body_bytes,
        replication: ReplicationConfig {
            apply_window: d.apply_window,
            replay_rate_limit: NonZeroU32::new(d.replay_rate_limit),
            retry_base: d.retry_base,
            retry_cap: d.retry_cap,
            give_up_after: d.give_up_after,
            merge_catch_up: d.merge_catch_up,
            max_dead_letters: d.max_dead_letters,
        },
        admin_token: d.admin_token,
        log_level: d.log_level,
        log_url: d.log_url,
        cluster: cluster_config(
            d.listen,
            tls.cert_file.is_some(),
            d.gateway_name,
            d.advertise_url,
            d.lease_time,
            d.renew_interval,
            d.hold_requests_for,
        ),
        tls,
    })
}

/// The TLS files: pairs complete, and every file readable and valid (an
/// error names the setting it came from and the file).
fn tls_config(d: &Draft) -> Result<TlsConfig, ConfigError> {
    for (a, b) in [
        (&d.tls_cert_file, &d.tls_key_file),
        (&d.tls_key_file, &d.tls_cert_file),
        (&d.tls_client_cert_file, &d.tls_client_key_file),
        (&d.tls_client_key_file, &d.tls_client_cert_file),
    ] {
        if let (Some((_, origin)), None) = (a, b) {
            let other = match origin_key(origin) {
                "tls.cert_file" => "tls.key_file (CHROMA_HA_TLS_KEY_FILE)",
                "tls.key_file" => "tls.cert_file (CHROMA_HA_TLS_CERT_FILE)",
                "tls.client_cert_file" => "tls.client_key_file (CHROMA_HA_TLS_CLIENT_KEY_FILE)",
                _ => "tls.client_cert_file (CHROMA_HA_TLS_CLIENT_CERT_FILE)",
            };
            return Err(ConfigError::Conflict {
                setting: origin.clone(),
                reason: format!("is set without {other}; give both or neither"),
            });
        }
    }
    let path = |f: &Option<(std::path::PathBuf, String)>| f.as_ref().map(|(p, _)| p.clone());
    let tls = TlsConfig {
        cert_file: path(&d.tls_cert_file),
        key_file: path(&d.tls_key_file),
        ca_file: path(&d.tls_ca_file),
        client_cert_file: path(&d.tls_client_cert_file),
        client_key_file: path(&d.tls_client_key_file),
    };
    crate::tls::validate(&tls).map_err(|e| {
        let origin = match e.which {
            crate::tls::TlsFile::Cert => &d.tls_cert_file,
            crate::tls::TlsFile::Key => &d.tls_key_file,
            crate::tls::TlsFile::Ca => &d.tls_ca_file,
            crate::tls::TlsFile::ClientCert => &d.tls_client_cert_file,
            crate::tls::TlsFile::ClientKey => &d.tls_client_key_file,
        };
        ConfigError::Invalid {
            setting: origin.as_ref().map(|(_, o)| o.clone()).unwrap_or_default(),
            value: e.path.display().to_string(),
            reason: e.reason,
        }
    })?;
    Ok(tls)
}

/// The TOML key of a setting's origin (`tls.cert_file in x.toml` or an
/// environment variable's name).
fn origin_key(origin: &str) -> &str {
    match SETTINGS.iter().find(|s| s.env == origin) {
        Some(s) => s.key,
        None => origin.split(' ').next().unwrap_or(origin),
    }
}

/// Layers every source in precedence order and validates the result.
pub(crate) fn build(
    file: Option<(&Path, &str)>,
    env: &dyn Fn(&str) -> Option<String>,
    args: &ServeArgs,
) -> Result<Config, ConfigError> {
    let mut d = Draft::default();
    if let Some((path, text)) = file {
        apply_file(&mut d, path, text)?;
    }
    apply_legacy_env(&mut d, env)?;
    apply_env(&mut d, env)?;
    apply_flags(&mut d, args)?;
    finish(d)
}

/// The machine's host name, for a default advertised address.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

fn cluster_config(
    listen: std::net::SocketAddr,
    listen_tls: bool,
    name: Option<String>,
    advertise_url: Option<String>,
    lease_time: std::time::Duration,
    renew_interval: std::time::Duration,
    hold_requests_for: std::time::Duration,
) -> ClusterConfig {
    let scheme = if listen_tls { "https" } else { "http" };
    let advertise_url = advertise_url.unwrap_or_else(|| {
        if listen.ip().is_unspecified() {
            format!("{scheme}://{}:{}", host_name(), listen.port())
        } else {
            format!("{scheme}://{listen}")
        }
    });
    let advertise_url = advertise_url.trim_end_matches('/').to_string();
    let name = name.unwrap_or_else(|| {
        let authority = advertise_url.split("://").nth(1).unwrap_or(&advertise_url);
        authority
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .take(64)
            .collect()
    });
    ClusterConfig {
        name,
        advertise_url,
        lease_time,
        renew_interval,
        hold_requests_for,
    }
}
