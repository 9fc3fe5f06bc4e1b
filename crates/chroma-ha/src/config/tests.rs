//! Tests of configuration layering, parsing and error messages.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::*;

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

const FULL_TOML: &str = r#"
listen = "0.0.0.0:8100"
data_dir = "/data"
request_timeout = 12
connect_timeout = "250ms"
max_body_bytes = "8MiB"
admin_token = "topsecret"
log_level = "chroma_ha=debug,info"

[primary]
url = "http://p:8000"
name = "main"
token = "ptok"
read_weight = 2

[[replicas]]
url = "http://r1:8000"
token = "rtok"
token_header = "x-chroma-token"

[[replicas]]
url = "http://r2:8000"
name = "far"
read_weight = 0.5

[server_auth]
token = "shared"

[wal]
fsync = "always"
segment_bytes = 1048576
max_bytes = "1GiB"

[health]
check_interval = 0.5
failure_threshold = 2
rise_threshold = 1
probe_timeout = "1s"

[reads]
replica_ratio = 0.3
consistency = "eventual"
max_staleness = "10s"

[replication]
apply_window = 32
replay_rate_limit = 100
retry_base = "50ms"
retry_cap = "5s"
max_dead_letters = 50
merge_catch_up = false
"#;

#[test]
fn toml_file_sets_everything() {
    let c = toml(FULL_TOML).unwrap();
    assert_eq!(c.listen, addr("0.0.0.0:8100"));
    assert_eq!(c.data_dir, Path::new("/data"));
    assert_eq!(c.request_timeout, Duration::from_secs(12));
    assert_eq!(c.connect_timeout, Duration::from_millis(250));
    assert_eq!(c.max_body_bytes, 8 << 20);
    assert_eq!(c.admin_token, Some(Secret::new("topsecret")));
    assert_eq!(c.log_level, "chroma_ha=debug,info");
    assert_eq!(
        c.primary,
        ServerConfig {
            name: "main".into(),
            url: "http://p:8000".into(),
            credentials: Some(Credentials::Bearer(Secret::new("ptok"))),
            read_weight: Some(2.0),
        }
    );
    assert_eq!(c.replicas[0].name, "replica-1");
    assert_eq!(
        c.replicas[0].credentials,
        Some(Credentials::ChromaToken(Secret::new("rtok")))
    );
    assert_eq!(c.replicas[1].name, "far");
    // No own token: the shared server_auth token, as a bearer token.
    assert_eq!(
        c.replicas[1].credentials,
        Some(Credentials::Bearer(Secret::new("shared")))
    );
    assert_eq!(c.replicas[1].read_weight, Some(0.5));
    assert_eq!(c.wal.fsync, FsyncPolicy::Always);
    assert_eq!(c.wal.segment_bytes, 1 << 20);
    assert_eq!(c.wal.max_bytes, 1 << 30);
    assert_eq!(c.health.check_interval, Duration::from_millis(500));
    assert_eq!(c.health.failure_threshold, 2);
    assert_eq!(c.health.rise_threshold, 1);
    assert_eq!(c.health.probe_timeout, Duration::from_secs(1));
    assert_eq!(c.reads.replica_ratio, 0.3);
    assert_eq!(
        c.reads.consistency,
        ReadConsistency::Eventual {
            max_staleness: Duration::from_secs(10)
        }
    );
    assert_eq!(c.replication.apply_window, 32);
    assert_eq!(c.replication.replay_rate_limit.map(|n| n.get()), Some(100));
    assert_eq!(c.replication.retry_base, Duration::from_millis(50));
    assert_eq!(c.replication.retry_cap, Duration::from_secs(5));
    assert_eq!(c.replication.max_dead_letters, 50);
    assert!(!c.replication.merge_catch_up);
}

#[test]
fn merging_catch_up_is_on_by_default_and_a_boolean_everywhere() {
    let c = toml("primary = \"http://p\"").unwrap();
    assert!(c.replication.merge_catch_up);
    let on = toml("primary = \"http://p\"\n[replication]\nmerge_catch_up = true").unwrap();
    assert!(on.replication.merge_catch_up);
    let err = toml("primary = \"http://p\"\n[replication]\nmerge_catch_up = 1")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("replication.merge_catch_up in test.toml") && err.contains("boolean"),
        "{err}"
    );
    for (text, expected) in [("off", false), ("FALSE", false), ("yes", true), ("1", true)] {
        assert_eq!(super::parse::boolean(text).ok(), Some(expected), "{text}");
    }
    assert!(super::parse::boolean("maybe").is_err());
}

#[test]
fn toml_short_forms_for_servers() {
    let c = toml(
        r#"
primary = "http://p"
replicas = ["http://r1", "http://r2"]
"#,
    )
    .unwrap();
    assert_eq!(c.primary.url, "http://p");
    assert_eq!(c.replicas.len(), 2);
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
fn file_without_a_primary_is_completed_by_env() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(b"[health]\nrise_threshold = 4\n").unwrap();
    let args = ServeArgs {
        config: Some(file.path().to_path_buf()),
        ..ServeArgs::default()
    };
    let c = Config::load(&args, &env_of(&[("CHROMA_HA_PRIMARY", "http://p")])).unwrap();
    assert_eq!(c.health.rise_threshold, 4);
    assert_eq!(c.primary.url, "http://p");
}

#[test]
fn missing_config_file_names_the_flag_and_path() {
    let args = ServeArgs {
        config: Some("/nonexistent/chroma-ha.toml".into()),
        ..ServeArgs::default()
    };
    assert_err(
        Config::load(&args, &env_of(&[])),
        &["--config", "/nonexistent/chroma-ha.toml"],
    );
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
fn invalid_env_values_name_the_variable_and_value() {
    let p = ("PRIMARY_URL", "http://p");
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "REPLICA_URL",
            "ftp://x",
            &["REPLICA_URL", "'ftp://x'", "http(s) URL"],
        ),
        (
            "REPLICA_URL",
            "http://ok,ftp://x",
            &["REPLICA_URL", "'ftp://x'"],
        ),
        ("PORT", "99999", &["PORT", "99999"]),
        ("CHECK_INTERVAL", "soon", &["CHECK_INTERVAL", "'soon'"]),
        (
            "CHECK_INTERVAL",
            "0",
            &["CHECK_INTERVAL", "'0'", "greater than zero"],
        ),
        ("CHECK_INTERVAL", "-1", &["CHECK_INTERVAL", "'-1'"]),
        ("FAILURE_THRESHOLD", "0", &["FAILURE_THRESHOLD", "'0'"]),
        ("FAILURE_THRESHOLD", "2.5", &["FAILURE_THRESHOLD", "'2.5'"]),
        ("REQUEST_TIMEOUT", "x", &["REQUEST_TIMEOUT", "'x'"]),
        (
            "READ_REPLICA_RATIO",
            "1.5",
            &["READ_REPLICA_RATIO", "'1.5'", "0.0 and 1.0"],
        ),
        (
            "CHROMA_HA_LISTEN",
            "localhost",
            &["CHROMA_HA_LISTEN", "'localhost'"],
        ),
        (
            "CHROMA_HA_FSYNC",
            "sometimes",
            &["CHROMA_HA_FSYNC", "'sometimes'"],
        ),
        (
            "CHROMA_HA_FSYNC_INTERVAL",
            "0",
            &["CHROMA_HA_FSYNC_INTERVAL", "'0'"],
        ),
        (
            "CHROMA_HA_WAL_SEGMENT_BYTES",
            "12",
            &["CHROMA_HA_WAL_SEGMENT_BYTES", "'12'"],
        ),
        (
            "CHROMA_HA_WAL_MAX_BYTES",
            "big",
            &["CHROMA_HA_WAL_MAX_BYTES", "'big'"],
        ),
        (
            "CHROMA_HA_RISE_THRESHOLD",
            "0",
            &["CHROMA_HA_RISE_THRESHOLD", "'0'"],
        ),
        (
            "CHROMA_HA_MAX_BODY_BYTES",
            "0",
            &["CHROMA_HA_MAX_BODY_BYTES", "'0'"],
        ),
        (
            "CHROMA_HA_READ_CONSISTENCY",
            "weak",
            &["CHROMA_HA_READ_CONSISTENCY", "'weak'"],
        ),
        (
            "CHROMA_HA_APPLY_WINDOW",
            "0",
            &["CHROMA_HA_APPLY_WINDOW", "'0'"],
        ),
        (
            "CHROMA_HA_REPLAY_RATE_LIMIT",
            "-5",
            &["CHROMA_HA_REPLAY_RATE_LIMIT", "'-5'"],
        ),
        (
            "CHROMA_HA_RETRY_BASE",
            "0s",
            &["CHROMA_HA_RETRY_BASE", "'0s'"],
        ),
        (
            "CHROMA_HA_LOG_LEVEL",
            "info=[",
            &["CHROMA_HA_LOG_LEVEL", "'info=['"],
        ),
        (
            "CHROMA_HA_SERVER_TOKEN_HEADER",
            "cookie",
            &["CHROMA_HA_SERVER_TOKEN_HEADER", "'cookie'"],
        ),
        ("CHROMA_HA_DATA_DIR", "", &[]),
    ];
    for (name, value, fragments) in cases {
        let result = load_env(&[p, (name, value)]);
        if fragments.is_empty() {
            assert!(result.is_ok(), "{name}={value:?} should count as unset");
        } else {
            assert_err(result, fragments);
        }
    }
    assert_err(
        load_env(&[("PRIMARY_URL", "ftp://x")]),
        &["PRIMARY_URL: 'ftp://x' is not an http(s) URL"],
    );
    assert_eq!(
        load_env(&[("PRIMARY_URL", "https://x")])
            .unwrap()
            .primary
            .url,
        "https://x"
    );
    assert_err(
        load_env(&[
            ("PRIMARY_URL", "https://x"),
            ("CHROMA_HA_TLS_CA_FILE", "/nonexistent/ca.pem"),
        ]),
        &[
            "CHROMA_HA_TLS_CA_FILE",
            "'/nonexistent/ca.pem'",
            "cannot be read",
        ],
    );
    assert_err(
        load_env(&[
            ("PRIMARY_URL", "http://x"),
            ("CHROMA_HA_TLS_KEY_FILE", "/nonexistent/key.pem"),
        ]),
        &["CHROMA_HA_TLS_KEY_FILE", "without tls.cert_file"],
    );
}

#[test]
fn a_log_url_must_be_a_postgres_url_and_is_never_echoed() {
    assert_eq!(
        load_env(&[("PRIMARY_URL", "http://p")]).unwrap().log_url,
        None
    );
    for bad in [
        "mysql://u:hunter2@db/x",
        "postgres://u:hunter2@db:notaport/x",
    ] {
        let err = load_env(&[("PRIMARY_URL", "http://p"), ("CHROMA_HA_LOG_URL", bad)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("CHROMA_HA_LOG_URL"), "{err}");
        assert!(!err.contains("hunter2"), "the password was echoed: {err}");
    }
    let args = ServeArgs {
        primary: Some("http://p".into()),
        log_url: Some("postgresql://u:hunter2@db/x".into()),
        ..ServeArgs::default()
    };
    let c = sources::build(None, &|_| None, &args).unwrap();
    assert_eq!(
        c.log_url.as_ref().map(Secret::expose),
        Some("postgresql://u:hunter2@db/x")
    );
    assert!(!format!("{c:?}").contains("hunter2"));
    let args = ServeArgs {
        log_url: Some("http://u:hunter2@db/x".into()),
        ..args
    };
    let err = sources::build(None, &|_| None, &args)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--log-url") && !err.contains("hunter2"),
        "{err}"
    );
}

#[test]
fn secrets_are_not_echoed() {
    let err = load_env(&[
        ("PRIMARY_URL", "http://p"),
        ("CHROMA_HA_ADMIN_TOKEN", "has space"),
    ])
    .unwrap_err()
    .to_string();
    assert!(err.contains("CHROMA_HA_ADMIN_TOKEN"), "{err}");
    assert!(!err.contains("has space"), "{err}");
    let c = load_env(&[
        ("PRIMARY_URL", "http://p"),
        ("CHROMA_HA_ADMIN_TOKEN", "abc"),
    ])
    .unwrap();
    assert!(!format!("{c:?}").contains("abc"));
}

#[test]
fn invalid_flags_name_the_flag() {
    let env = env_of(&[("PRIMARY_URL", "http://p")]);
    let load = |args: ServeArgs| Config::load(&args, &env);
    assert_err(
        load(ServeArgs {
            listen: Some("nope".into()),
            ..ServeArgs::default()
        }),
        &["--listen", "'nope'"],
    );
    assert_err(
        load(ServeArgs {
            primary: Some("ftp://x".into()),
            ..ServeArgs::default()
        }),
        &["--primary", "'ftp://x'"],
    );
    assert_err(
        load(ServeArgs {
            replicas: vec!["http://r".into(), "mailto:x".into()],
            ..ServeArgs::default()
        }),
        &["--replica", "'mailto:x'"],
    );
    assert_err(
        load(ServeArgs {
            replicas: vec![",".into()],
            ..ServeArgs::default()
        }),
        &["--replica"],
    );
}

#[test]
fn invalid_toml_values_name_the_key_and_file() {
    let cases: &[(&str, &[&str])] = &[
        (
            "primary = \"ftp://x\"",
            &["primary in test.toml", "'ftp://x'"],
        ),
        (
            "primary = \"http://p\"\n[health]\ncheck_interval = -2",
            &["health.check_interval in test.toml", "'-2'"],
        ),
        (
            "primary = \"http://p\"\n[health]\ncheck_interval = true",
            &["health.check_interval in test.toml", "boolean"],
        ),
        (
            "primary = \"http://p\"\n[reads]\nreplica_ratio = 2",
            &["reads.replica_ratio in test.toml", "'2'"],
        ),
        (
            "primary = \"http://p\"\n[wal]\nfsync = \"maybe\"",
            &["wal.fsync in test.toml", "'maybe'"],
        ),
        (
            "[primary]\nurl = \"http://p\"\nname = \"has space\"",
            &["primary.name in test.toml", "'has space'"],
        ),
        (
            "[primary]\nurl = \"http://p\"\nread_weight = -1",
            &["primary.read_weight in test.toml", "'-1'"],
        ),
        (
            "[primary]\nurl = \"http://p\"\ntoken_header = \"x-chroma-token\"",
            &["primary.token_header in test.toml", "no token"],
        ),
        ("[primary]\nname = \"p\"", &["primary in test.toml", "url"]),
        (
            "primary = \"http://p\"\n[[replicas]]\nurl = \"gopher://r\"",
            &["replicas[0].url in test.toml", "'gopher://r'"],
        ),
        (
            "primary = \"http://p\"\nreplicas = \"http://r\"",
            &["replicas in test.toml", "array"],
        ),
        ("primary = 5", &["primary in test.toml", "integer"]),
        (
            "primary = \"http://p\"\nhealth = 3",
            &["health in test.toml", "table"],
        ),
    ];
    for (text, fragments) in cases {
        assert_err(toml(text), fragments);
    }
}

#[test]
fn unknown_toml_keys_are_errors() {
    assert_err(
        toml("primary = \"http://p\"\nlisten_addr = \"x\""),
        &["test.toml", "unknown setting 'listen_addr'", "listen"],
    );
    assert_err(
        toml("primary = \"http://p\"\n[health]\nchek_interval = 1"),
        &["unknown setting 'health.chek_interval'", "check_interval"],
    );
    assert_err(
        toml("[primary]\nurl = \"http://p\"\nweight = 1"),
        &["unknown setting 'primary.weight'", "read_weight"],
    );
    assert_err(
        toml("primary = \"http://p\"\n[metrics]\nport = 1"),
        &["unknown setting 'metrics'"],
    );
}

#[test]
fn toml_syntax_errors_name_the_file() {
    assert_err(toml("primary = "), &["test.toml", "TOML"]);
}

#[test]
fn cross_field_errors() {
    assert_err(
        load_env(&[("PRIMARY_URL", "http://p"), ("REPLICA_URL", "http://p/")]),
        &["REPLICA_URL", "http://p", "primary"],
    );
    assert_err(
        toml("[primary]\nurl = \"http://p\"\n[[replicas]]\nurl = \"http://r\"\nname = \"primary\""),
        &["replicas[0]", "'primary'", "already"],
    );
    assert_err(
        load_env(&[
            ("PRIMARY_URL", "http://p"),
            ("CHROMA_HA_WAL_SEGMENT_BYTES", "1GiB"),
            ("CHROMA_HA_WAL_MAX_BYTES", "1MiB"),
        ]),
        &["wal.max_bytes", "wal.segment_bytes"],
    );
    assert_err(
        load_env(&[
            ("PRIMARY_URL", "http://p"),
            ("CHROMA_HA_RETRY_BASE", "20s"),
            ("CHROMA_HA_RETRY_CAP", "1s"),
        ]),
        &["replication.retry_base", "replication.retry_cap"],
    );
}

#[test]
fn with_servers_builds_defaults() {
    let c = Config::with_servers("http://p", &["http://r1", "http://r2"]).unwrap();
    assert_eq!(c.servers().count(), 3);
    assert!(Config::with_servers("nope", &[]).is_err());
}

/// The example file must parse, and must mention every setting.
#[test]
fn example_file_documents_every_key_and_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/chroma-ha.example.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let c = Config::from_toml_str(&text, &path).unwrap();
    // Apart from servers, the example holds the defaults.
    let d = Config::with_servers(&c.primary.url, &[]).unwrap();
    assert_eq!(c.listen, d.listen);
    assert_eq!(c.wal, d.wal);
    assert_eq!(c.health, d.health);
    assert_eq!(c.reads, d.reads);
    assert_eq!(c.replication, d.replication);
    assert_eq!(c.request_timeout, d.request_timeout);
    assert_eq!(c.connect_timeout, d.connect_timeout);
    assert_eq!(c.max_body_bytes, d.max_body_bytes);
    assert_eq!(c.data_dir, d.data_dir);
    assert_eq!(c.log_level, d.log_level);
    assert_eq!(c.cluster, d.cluster);
    for key in settings::toml_keys() {
        let leaf = key.rsplit('.').next().unwrap();
        let documented = text.contains(&format!("[{key}]"))
            || text.lines().any(|l| {
                l.trim_start_matches(['#', ' '])
                    .starts_with(&format!("{leaf} ="))
            });
        assert!(documented, "example does not document {key}");
    }
    for key in ["url", "name", "token", "token_header", "read_weight"] {
        assert!(
            text.contains(&format!("{key} =")),
            "example lacks server key {key}"
        );
    }
    for name in env_names() {
        assert!(text.contains(name), "example does not mention {name}");
    }
}

#[test]
fn lease_settings_come_from_the_log_table_and_a_renewal_slower_than_half_the_lease_is_refused() {
    let text = r#"
primary = "http://p:8000"
listen = "127.0.0.1:9000"
[log]
url = "postgres://u@db/x"
gateway_name = "gw-a"
lease_time = "3s"
renew_interval = "0.5s"
hold_requests_for = "20s"
"#;
    let c = Config::from_toml_str(text, Path::new("t.toml")).unwrap();
    assert_eq!(c.cluster.name, "gw-a");
    assert_eq!(c.cluster.advertise_url, "http://127.0.0.1:9000");
    assert_eq!(c.cluster.lease_time, Duration::from_secs(3));
    assert_eq!(c.cluster.renew_interval, Duration::from_millis(500));
    assert_eq!(c.cluster.hold_requests_for, Duration::from_secs(20));
    let slow = text.replace("renew_interval = \"0.5s\"", "renew_interval = \"1.5s\"");
    let e = Config::from_toml_str(&slow, Path::new("t.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("log.renew_interval") && e.contains("half"),
        "{e}"
    );
    let unnamed = text.replace("gateway_name = \"gw-a\"\n", "");
    let c = Config::from_toml_str(&unnamed, Path::new("t.toml")).unwrap();
    assert_eq!(c.cluster.name, "127.0.0.1-9000", "named after its address");
}

#[test]
fn the_several_gateways_example_config_parses_with_its_lease_settings() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/several-gateways/chroma-ha.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let c = Config::from_toml_str(&text, &path).unwrap();
    assert_eq!(c.primary.url, "http://chroma-primary:8000");
    assert_eq!(c.replicas.len(), 1);
    assert_eq!(c.cluster.lease_time, Duration::from_secs(5));
    assert_eq!(c.cluster.hold_requests_for, Duration::from_secs(15));
}
