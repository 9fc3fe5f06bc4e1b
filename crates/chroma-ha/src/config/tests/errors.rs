//! Bad configuration: each error names the variable, flag or key and the
//! file, and never echoes a secret.

use super::*;

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
