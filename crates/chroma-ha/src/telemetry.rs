//! Logging setup.
//!
//! Logs go to stderr through a `tracing-subscriber` fmt subscriber. The filter
//! is `RUST_LOG` when that variable is set (and valid), otherwise the
//! configured `log_level` (EnvFilter syntax: `info`, `debug`,
//! `chroma_ha=debug,info`), otherwise `info`. With `CHROMA_HA_LOG_FORMAT=json`
//! every event is one JSON object per line, for log shippers; any other value
//! (or none) gives the human-readable format, coloured only when stderr is a
//! terminal and `NO_COLOR` is unset.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The environment variable that selects the log format (`json` or `text`).
pub const LOG_FORMAT_ENV: &str = "CHROMA_HA_LOG_FORMAT";

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// Parses the value of [`LOG_FORMAT_ENV`]; anything but `json`
    /// (case-insensitive) is [`LogFormat::Text`].
    pub fn from_env_value(value: Option<&str>) -> Self {
        match value.map(str::trim) {
            Some(v) if v.eq_ignore_ascii_case("json") => LogFormat::Json,
            _ => LogFormat::Text,
        }
    }
}

/// Parses a filter in EnvFilter syntax; never panics. Only ASCII is
/// accepted: tracing-subscriber 0.3 panics on some directives with other
/// characters (it slices a directive at offsets into its trimmed copy, so
/// `"x, é=info"` cuts inside the `é`).
pub fn parse_filter(spec: &str) -> Result<EnvFilter, String> {
    if !spec.is_ascii() {
        return Err("only ASCII characters are allowed".to_string());
    }
    EnvFilter::try_new(spec).map_err(|e| e.to_string())
}

/// Builds the filter: `rust_log` when given and valid, else `level`, else
/// `info`.
pub fn build_filter(rust_log: Option<&str>, level: &str) -> EnvFilter {
    if let Some(spec) = rust_log.map(str::trim).filter(|s| !s.is_empty()) {
        if let Ok(filter) = parse_filter(spec) {
            return filter;
        }
        eprintln!("chroma-ha: ignoring invalid RUST_LOG {spec:?}");
    }
    parse_filter(level.trim()).unwrap_or_else(|_| {
        eprintln!("chroma-ha: invalid log level {level:?}; using info");
        EnvFilter::new("info")
    })
}

/// Installs the global tracing subscriber at `level` (RUST_LOG overrides;
/// `CHROMA_HA_LOG_FORMAT=json` gives JSON lines). Logs go to stderr. Calling
/// it again is harmless: the first subscriber stays.
pub fn init_logging(level: &str) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = build_filter(rust_log.as_deref(), level);
    let format = LogFormat::from_env_value(std::env::var(LOG_FORMAT_ENV).ok().as_deref());
    // Colours only for a terminal (not in log files), and never with NO_COLOR.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // `try_init` fails (without panicking) when a global subscriber is
    // already set: keep the first one.
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => builder.with_target(true).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_with_a_non_ascii_character_is_refused_not_a_panic() {
        assert!(parse_filter("chroma_ha=debug, info").is_ok());
        for spec in ["x, é=info", " é=info", "info,\u{a0}ü[x]=debug", "ℹ"] {
            assert!(parse_filter(spec).is_err(), "{spec:?} accepted");
        }
        // RUST_LOG goes through the same parser.
        let _ = build_filter(Some("x, é=info"), "info");
    }

    #[test]
    fn json_format_is_selected_case_insensitively() {
        assert_eq!(LogFormat::from_env_value(Some("JSON")), LogFormat::Json);
        assert_eq!(LogFormat::from_env_value(Some(" json ")), LogFormat::Json);
        assert_eq!(LogFormat::from_env_value(Some("text")), LogFormat::Text);
        assert_eq!(LogFormat::from_env_value(None), LogFormat::Text);
    }

    #[test]
    fn rust_log_overrides_the_level_and_bad_values_fall_back() {
        assert_eq!(build_filter(Some("debug"), "warn").to_string(), "debug");
        assert_eq!(build_filter(None, "warn").to_string(), "warn");
        assert_eq!(build_filter(Some("  "), "warn").to_string(), "warn");
        assert_eq!(build_filter(None, "[[[bad").to_string(), "info");
    }

    #[test]
    fn init_logging_twice_does_not_panic() {
        // "off" keeps the rest of this test binary quiet (unless RUST_LOG
        // says otherwise).
        init_logging("off");
        init_logging("debug");
        tracing::info!("still fine");
    }
}
