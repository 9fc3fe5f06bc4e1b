//! Tests of configuration layering, parsing and error messages.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::*;

mod errors;
mod files;

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name: &str| map.get(name).cloned()
}

fn load_env(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::load(&ServeArgs::default(), &env_of(pairs))
}

fn toml(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, Path::new("test.toml"))
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Asserts that loading fails and the message contains every fragment.
fn assert_err(result: Result<Config, ConfigError>, fragments: &[&str]) {
    let err = result.expect_err("configuration unexpectedly accepted");
    let msg = err.to_string();
    for f in fragments {
        assert!(msg.contains(f), "error {msg:?} does not mention {f:?}");
    }
}

#[test]
fn defaults_with_only_a_primary() {
    let c = load_env(&[("PRIMARY_URL", "http://p:8000")]).unwrap();
    assert_eq!(c.listen, addr("127.0.0.1:8000"));
    assert_eq!(c.primary.name, "primary");
    assert_eq!(c.primary.url, "http://p:8000");
    assert_eq!(c.primary.credentials, None);
    assert!(c.replicas.is_empty());
    assert_eq!(c.data_dir, Path::new("./data"));
    assert_eq!(c.wal.fsync, FsyncPolicy::Always);
    assert_eq!(c.wal.segment_bytes, 64 << 20);
    assert_eq!(c.wal.max_bytes, 10 << 30);
    assert_eq!(c.health.check_interval, Duration::from_secs(1));
    assert_eq!(c.health.failure_threshold, 3);
    assert_eq!(c.health.rise_threshold, 2);
    assert_eq!(c.request_timeout, Duration::from_secs(30));
    assert_eq!(c.reads.replica_ratio, 0.5);
    assert_eq!(c.reads.consistency, ReadConsistency::Strong);
    assert_eq!(c.max_body_bytes, 64 << 20);
    assert_eq!(c.replication.apply_window, 16);
    assert_eq!(c.replication.replay_rate_limit, None);
    assert!(c.replication.retry_base <= c.replication.retry_cap);
    assert_eq!(c.replication.max_dead_letters, 10_000);
    assert_eq!(c.admin_token, None);
    assert_eq!(c.log_level, "info");
}

#[test]
fn a_primary_is_required() {
    assert_err(load_env(&[]), &["primary", "PRIMARY_URL"]);
    assert_err(load_env(&[("REPLICA_URL", "http://r")]), &["primary"]);
}

#[test]
fn legacy_env_names_work() {
    let c = load_env(&[
        ("PRIMARY_URL", "http://p:8000/"),
        ("REPLICA_URL", "http://r1:8000, http://r2:8000"),
        ("PORT", "9000"),
        ("CHECK_INTERVAL", "0.25"),
        ("FAILURE_THRESHOLD", "5"),
        ("REQUEST_TIMEOUT", "2.5"),
        ("READ_REPLICA_RATIO", "0.8"),
    ])
    .unwrap();
    assert_eq!(c.primary.url, "http://p:8000");
    let urls: Vec<_> = c.replicas.iter().map(|r| r.url.as_str()).collect();
    assert_eq!(urls, ["http://r1:8000", "http://r2:8000"]);
    let names: Vec<_> = c.replicas.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["replica-1", "replica-2"]);
    // Like the Python balancer, PORT alone listens on every interface.
    assert_eq!(c.listen, addr("0.0.0.0:9000"));
    assert_eq!(c.health.check_interval, Duration::from_millis(250));
    assert_eq!(c.health.failure_threshold, 5);
    assert_eq!(c.request_timeout, Duration::from_millis(2500));
    assert_eq!(c.reads.replica_ratio, 0.8);
}

#[test]
fn single_replica_is_named_replica() {
    let c = load_env(&[("PRIMARY_URL", "http://p"), ("REPLICA_URL", "http://r")]).unwrap();
    assert_eq!(c.replicas.len(), 1);
    assert_eq!(c.replicas[0].name, "replica");
    let names: Vec<_> = c.servers().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["primary", "replica"]);
}

#[test]
fn empty_env_values_count_as_unset() {
    let c = load_env(&[
        ("PRIMARY_URL", "http://p"),
        ("REPLICA_URL", ""),
        ("CHROMA_HA_LISTEN", "  "),
    ])
    .unwrap();
    assert!(c.replicas.is_empty());
    assert_eq!(c.listen, defaults::LISTEN);
}

#[test]
fn chroma_ha_env_overrides_legacy_env() {
    let c = load_env(&[
        ("PRIMARY_URL", "http://old-p"),
        ("CHROMA_HA_PRIMARY", "http://new-p"),
        ("REPLICA_URL", "http://old-r"),
        ("CHROMA_HA_REPLICAS", "http://a,http://b,http://c"),
        ("CHECK_INTERVAL", "5"),
        ("CHROMA_HA_CHECK_INTERVAL", "500ms"),
        ("PORT", "9000"),
        ("CHROMA_HA_LISTEN", "127.0.0.2:7000"),
        ("READ_REPLICA_RATIO", "0.1"),
        ("CHROMA_HA_READ_REPLICA_RATIO", "0.9"),
    ])
    .unwrap();
    assert_eq!(c.primary.url, "http://new-p");
    assert_eq!(c.replicas.len(), 3);
    assert_eq!(c.health.check_interval, Duration::from_millis(500));
    assert_eq!(c.listen, addr("127.0.0.2:7000"));
    assert_eq!(c.reads.replica_ratio, 0.9);
}

#[test]
fn every_chroma_ha_env_setting_is_read() {
    let c = load_env(&[
        ("CHROMA_HA_PRIMARY", "http://p"),
        ("CHROMA_HA_REPLICAS", "http://r"),
        ("CHROMA_HA_SERVER_TOKEN", "s3cret"),
        ("CHROMA_HA_SERVER_TOKEN_HEADER", "x-chroma-token"),
        ("CHROMA_HA_DATA_DIR", "/var/lib/chroma-ha"),
        ("CHROMA_HA_FSYNC", "batch"),
        ("CHROMA_HA_FSYNC_INTERVAL", "7ms"),
        ("CHROMA_HA_WAL_SEGMENT_BYTES", "1MiB"),
        ("CHROMA_HA_WAL_MAX_BYTES", "2GiB"),
        ("CHROMA_HA_CHECK_INTERVAL", "1.5"),
        ("CHROMA_HA_FAILURE_THRESHOLD", "4"),
        ("CHROMA_HA_RISE_THRESHOLD", "3"),
        ("CHROMA_HA_PROBE_TIMEOUT", "750ms"),
        ("CHROMA_HA_REQUEST_TIMEOUT", "10"),
        ("CHROMA_HA_CONNECT_TIMEOUT", "1s"),
        ("CHROMA_HA_MAX_BODY_BYTES", "1MB"),
        ("CHROMA_HA_READ_REPLICA_RATIO", "0"),
        ("CHROMA_HA_READ_CONSISTENCY", "eventual"),
        ("CHROMA_HA_READ_MAX_STALENESS", "3s"),
        ("CHROMA_HA_APPLY_WINDOW", "4"),
        ("CHROMA_HA_REPLAY_RATE_LIMIT", "500"),
        ("CHROMA_HA_RETRY_BASE", "10ms"),
        ("CHROMA_HA_RETRY_CAP", "1s"),
        ("CHROMA_HA_MAX_DEAD_LETTERS", "7"),
        ("CHROMA_HA_ADMIN_TOKEN", "adm1n"),
        ("CHROMA_HA_LOG_LEVEL", "debug"),
        ("CHROMA_HA_LOG_URL", "postgres://ha:pw@db:5432/chroma_ha"),
    ])
    .unwrap();
    assert_eq!(
        c.log_url.as_ref().map(Secret::expose),
        Some("postgres://ha:pw@db:5432/chroma_ha")
    );
    let creds = Some(Credentials::ChromaToken(Secret::new("s3cret")));
    assert_eq!(c.primary.credentials, creds);
    assert_eq!(c.replicas[0].credentials, creds);
    assert_eq!(c.data_dir, Path::new("/var/lib/chroma-ha"));
    assert_eq!(
        c.wal,
        WalConfig {
            fsync: FsyncPolicy::Batch {
                interval: Duration::from_millis(7)
            },
            segment_bytes: 1 << 20,
            max_bytes: 2 << 30,
        }
    );
    assert_eq!(
        c.health,
        HealthConfig {
            check_interval: Duration::from_millis(1500),
            failure_threshold: 4,
            rise_threshold: 3,
            probe_timeout: Duration::from_millis(750),
        }
    );
    assert_eq!(c.request_timeout, Duration::from_secs(10));
    assert_eq!(c.connect_timeout, Duration::from_secs(1));
    assert_eq!(c.max_body_bytes, 1_000_000);
    assert_eq!(c.reads.replica_ratio, 0.0);
    assert_eq!(
        c.reads.consistency,
        ReadConsistency::Eventual {
            max_staleness: Duration::from_secs(3)
        }
    );
    assert_eq!(c.replication.apply_window, 4);
    assert_eq!(c.replication.replay_rate_limit.map(|n| n.get()), Some(500));
    assert_eq!(c.replication.retry_base, Duration::from_millis(10));
    assert_eq!(c.replication.retry_cap, Duration::from_secs(1));
    assert_eq!(c.replication.max_dead_letters, 7);
    assert_eq!(c.admin_token.as_ref().map(Secret::expose), Some("adm1n"));
    assert_eq!(c.log_level, "debug");
}

#[test]
fn every_env_name_is_listed() {
    let names = env_names();
    for n in [
        "PRIMARY_URL",
        "REPLICA_URL",
        "PORT",
        "CHECK_INTERVAL",
        "FAILURE_THRESHOLD",
        "REQUEST_TIMEOUT",
        "READ_REPLICA_RATIO",
        "CHROMA_HA_PRIMARY",
        "CHROMA_HA_ADMIN_TOKEN",
    ] {
        assert!(names.contains(&n), "{n} missing");
    }
    let mut sorted = names.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len(), "duplicate env names");
}

#[test]
fn precedence_file_then_legacy_env_then_chroma_ha_env_then_flags() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(
        br#"
listen = "10.0.0.1:8000"
data_dir = "/from-file"
[primary]
url = "http://file-p"
token = "t"
[health]
check_interval = 9
failure_threshold = 9
rise_threshold = 9
[wal]
fsync = "never"
"#,
    )
    .unwrap();
    let env = env_of(&[
        ("PORT", "9001"),
        ("CHECK_INTERVAL", "0.5"),
        ("FAILURE_THRESHOLD", "4"),
        ("CHROMA_HA_FAILURE_THRESHOLD", "6"),
        ("CHROMA_HA_DATA_DIR", "/from-env"),
        ("PRIMARY_URL", "http://env-p"),
    ]);
    let mut args = ServeArgs {
        config: Some(file.path().to_path_buf()),
        ..ServeArgs::default()
    };

    let c = Config::load(&args, &env).unwrap();
    // PORT keeps the host the file chose.
    assert_eq!(c.listen, addr("10.0.0.1:9001"));
    assert_eq!(c.health.check_interval, Duration::from_millis(500));
    assert_eq!(c.health.failure_threshold, 6);
    assert_eq!(c.health.rise_threshold, 9);
    assert_eq!(c.data_dir, Path::new("/from-env"));
    assert_eq!(c.wal.fsync, FsyncPolicy::Never);
    // An env URL replaces the file's entry, token included.
    assert_eq!(c.primary.url, "http://env-p");
    assert_eq!(c.primary.credentials, None);

    args.listen = Some("127.0.0.1:1234".into());
    args.primary = Some("http://flag-p".into());
    args.replicas = vec![
        "http://flag-r1".into(),
        "http://flag-r2,http://flag-r3".into(),
    ];
    args.data_dir = Some("/from-flag".into());
    args.fsync = Some(FsyncMode::Always);
    let c = Config::load(&args, &env).unwrap();
    assert_eq!(c.listen, addr("127.0.0.1:1234"));
    assert_eq!(c.primary.url, "http://flag-p");
    let urls: Vec<_> = c.replicas.iter().map(|r| r.url.as_str()).collect();
    assert_eq!(urls, ["http://flag-r1", "http://flag-r2", "http://flag-r3"]);
    assert_eq!(c.data_dir, Path::new("/from-flag"));
    assert_eq!(c.wal.fsync, FsyncPolicy::Always);
}

#[test]
fn clap_parses_serve_flags() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }
    let cli = Cli::try_parse_from([
        "chroma-ha",
        "--config",
        "x.toml",
        "--listen",
        "0.0.0.0:8000",
        "--primary",
        "http://p",
        "--replica",
        "http://r1",
        "--replica",
        "http://r2",
        "--data-dir",
        "/d",
        "--fsync",
        "never",
    ])
    .unwrap();
    assert_eq!(cli.serve.config.as_deref(), Some(Path::new("x.toml")));
    assert_eq!(cli.serve.replicas, ["http://r1", "http://r2"]);
    assert_eq!(cli.serve.fsync, Some(FsyncMode::Never));
    assert!(Cli::try_parse_from(["chroma-ha", "--fsync", "sometimes"]).is_err());
}

#[test]
fn with_servers_builds_defaults() {
    let c = Config::with_servers("http://p", &["http://r1", "http://r2"]).unwrap();
    assert_eq!(c.servers().count(), 3);
    assert!(Config::with_servers("nope", &[]).is_err());
}
