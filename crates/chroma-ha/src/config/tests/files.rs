//! Configuration files: every key, short forms, the example files, and
//! files completed by the environment.

use super::*;

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
