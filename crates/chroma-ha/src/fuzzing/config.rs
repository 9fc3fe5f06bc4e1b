//! The harness of the configuration parser.

use std::path::Path;

use crate::config::{env_names, Config, ServeArgs};

/// Variables whose values are secrets: no error message may repeat them.
const SECRET_ENV: &[&str] = &[
    "CHROMA_HA_ADMIN_TOKEN",
    "CHROMA_HA_SERVER_TOKEN",
    "CHROMA_HA_LOG_URL",
];

/// A primary for the environment-only build, so other settings are reached.
const PRIMARY: (&str, &str) = ("PRIMARY_URL", "http://127.0.0.1:8001");

/// Parses `data` two ways: as the text of the TOML file (lossy UTF-8), and
/// as the value of one environment variable (the first byte picks which of
/// every variable the gateway reads, the rest is the value) next to a
/// primary URL. Each either gives a `Config` that holds its invariants or
/// an error that reads as a message; neither panics. An error about a
/// secret variable never repeats its value.
pub fn check_config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let from_file = Config::from_toml_str(&text, Path::new("fuzz.toml"));
    check_outcome(from_file.map_err(|e| e.to_string()));

    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let names = env_names();
    let name = names[usize::from(pick) % names.len()];
    let value = String::from_utf8_lossy(rest).into_owned();
    let env = |key: &str| {
        if key == name {
            Some(value.clone())
        } else if key == PRIMARY.0 {
            Some(PRIMARY.1.to_string())
        } else {
            None
        }
    };
    let from_env = crate::config::sources::build(None, &env, &ServeArgs::default());
    if let Err(e) = &from_env {
        let message = e.to_string();
        let secret = value.trim();
        if SECRET_ENV.contains(&name) && secret.len() >= 12 {
            assert!(
                !message.contains(secret),
                "{name}: the error repeats the secret: {message}"
            );
        }
    }
    check_outcome(from_env.map_err(|e| e.to_string()));
}

fn check_outcome(outcome: Result<Config, String>) {
    let config = match outcome {
        Ok(config) => config,
        Err(message) => {
            assert!(!message.trim().is_empty(), "an empty error message");
            return;
        }
    };
    let servers: Vec<_> = config.servers().collect();
    for (i, s) in servers.iter().enumerate() {
        assert!(s.url.starts_with("http://"), "server url {:?}", s.url);
        assert!(!s.url.ends_with('/'), "server url {:?}", s.url);
        assert!(
            !s.name.is_empty() && s.name.len() <= 64,
            "server name {:?}",
            s.name
        );
        if let Some(w) = s.read_weight {
            assert!(w.is_finite() && w >= 0.0, "read weight {w}");
        }
        for other in &servers[..i] {
            assert_ne!(other.name, s.name, "two servers named alike");
            assert_ne!(other.url, s.url, "two servers at one url");
        }
    }
    assert!(config.wal.max_bytes >= config.wal.segment_bytes);
    assert!(config.max_body_bytes >= 1);
    assert!((0.0..=1.0).contains(&config.reads.replica_ratio));
    assert!(config.replication.retry_base <= config.replication.retry_cap);
    let cluster = &config.cluster;
    assert!(cluster.renew_interval.saturating_mul(2) < cluster.lease_time);
    // Every duration can be added to the clock, as the timers do.
    let now = std::time::Instant::now();
    let durations = [
        ("request_timeout", config.request_timeout),
        ("connect_timeout", config.connect_timeout),
        ("health.check_interval", config.health.check_interval),
        ("health.probe_timeout", config.health.probe_timeout),
        ("replication.retry_base", config.replication.retry_base),
        ("replication.retry_cap", config.replication.retry_cap),
        (
            "replication.give_up_after",
            config.replication.give_up_after,
        ),
        ("log.lease_time", cluster.lease_time),
        ("log.renew_interval", cluster.renew_interval),
        ("log.hold_requests_for", cluster.hold_requests_for),
    ];
    for (name, d) in durations {
        assert!(
            now.checked_add(d).is_some(),
            "{name} {d:?} overflows the clock"
        );
    }
}
