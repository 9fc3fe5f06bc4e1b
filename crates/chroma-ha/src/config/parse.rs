//! Value parsers shared by every configuration source.
//!
//! Each parser turns the text of one setting (from the TOML file, an
//! environment variable or a flag) into a typed value, or returns the reason
//! why the text is not acceptable. The caller adds the setting's name and the
//! bad value, so a reason reads well after `SETTING: 'VALUE' `.

use std::net::SocketAddr;
use std::time::Duration;

use super::{Secret, TokenHeader};

/// A rejected value: the reason, and optionally the part of the raw text that
/// is at fault (one element of a comma list), when it is not the whole text.
#[derive(Debug)]
pub(crate) struct Bad {
    pub(crate) part: Option<String>,
    pub(crate) reason: String,
}

impl Bad {
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        Bad {
            part: None,
            reason: reason.into(),
        }
    }

    pub(crate) fn at(part: &str, reason: impl Into<String>) -> Self {
        Bad {
            part: Some(part.to_string()),
            reason: reason.into(),
        }
    }
}

impl From<String> for Bad {
    fn from(reason: String) -> Self {
        Bad::new(reason)
    }
}

/// Splits `text` into a number and a unit suffix (letters, `µ`), trimming
/// whitespace in between. Returns `None` when there is no number.
fn number_and_unit(text: &str) -> Option<(f64, String)> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_alphabetic() || c == 'µ')
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let num = num.trim();
    if num.is_empty() || !num.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    let value: f64 = num.parse().ok()?;
    Some((value, unit.trim().to_ascii_lowercase()))
}

const DURATION_HINT: &str =
    "is not a duration (give seconds like 1 or 0.5, or a number with a unit: 500ms, 2s, 1m, 1h)";

/// The longest duration a setting takes: 100 years. Timers add durations
/// to `Instant::now()`, which panics past the clock's range; nothing this
/// long is meant.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Parses a duration: a plain number is seconds (fractions allowed, as the
/// Python balancer's `CHECK_INTERVAL`), or a number with a unit `us`, `ms`,
/// `s`, `m`, `h`; at most [`MAX_DURATION`].
pub(crate) fn duration(text: &str) -> Result<Duration, Bad> {
    let (value, unit) = number_and_unit(text).ok_or_else(|| Bad::new(DURATION_HINT))?;
    let scale = match unit.as_str() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(Bad::new(DURATION_HINT)),
    };
    let d = Duration::try_from_secs_f64(value * scale).map_err(|_| Bad::new(DURATION_HINT))?;
    if d > MAX_DURATION {
        return Err(Bad::new("is too long (at most 100 years)"));
    }
    Ok(d)
}

/// Parses a duration that must be greater than zero.
pub(crate) fn positive_duration(text: &str) -> Result<Duration, Bad> {
    let d = duration(text)?;
    if d.is_zero() {
        return Err(Bad::new("must be greater than zero"));
    }
    Ok(d)
}

const SIZE_HINT: &str =
    "is not a size (give bytes like 1048576, or a number with a unit: 512KiB, 64MiB, 10GiB, 1GB)";

/// Parses a byte size: a plain integer is bytes; units `B`, `KB`/`MB`/`GB`/`TB`
/// (powers of 1000) and `KiB`/`MiB`/`GiB`/`TiB` (powers of 1024), any case.
pub(crate) fn size(text: &str) -> Result<u64, Bad> {
    let (value, unit) = number_and_unit(text).ok_or_else(|| Bad::new(SIZE_HINT))?;
    let scale: f64 = match unit.as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(Bad::new(SIZE_HINT)),
    };
    let bytes = (value * scale).floor();
    // 2^64 is exactly representable; anything at or above it does not fit.
    if !bytes.is_finite() || bytes >= 18_446_744_073_709_551_616.0 {
        return Err(Bad::new("is too large"));
    }
    Ok(bytes as u64)
}

/// Parses a size that must be at least `min` bytes.
pub(crate) fn size_at_least(text: &str, min: u64) -> Result<u64, Bad> {
    let n = size(text)?;
    if n < min {
        return Err(Bad::new(format!("must be at least {min} bytes")));
    }
    Ok(n)
}

/// Parses an unsigned integer no smaller than `min`.
pub(crate) fn integer_at_least(text: &str, min: u64) -> Result<u64, Bad> {
    let n: u64 = text
        .trim()
        .parse()
        .map_err(|_| Bad::new("is not a whole number"))?;
    if n < min {
        return Err(Bad::new(format!("must be at least {min}")));
    }
    Ok(n)
}

/// Parses a boolean: `true`/`false`, also `1`/`0`, `yes`/`no`, `on`/`off`
/// (any case).
pub(crate) fn boolean(text: &str) -> Result<bool, Bad> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(Bad::new("is not a boolean (true or false)")),
    }
}

/// Parses a `u32` no smaller than `min`.
pub(crate) fn u32_at_least(text: &str, min: u32) -> Result<u32, Bad> {
    let n = integer_at_least(text, u64::from(min))?;
    u32::try_from(n).map_err(|_| Bad::new(format!("must be at most {}", u32::MAX)))
}

/// Parses a share between 0.0 and 1.0 inclusive.
pub(crate) fn ratio(text: &str) -> Result<f64, Bad> {
    let r: f64 = text
        .trim()
        .parse()
        .map_err(|_| Bad::new("is not a number"))?;
    if !(0.0..=1.0).contains(&r) {
        return Err(Bad::new("must be between 0.0 and 1.0"));
    }
    Ok(r)
}

/// Parses a read weight: a finite number >= 0.
pub(crate) fn weight(text: &str) -> Result<f64, Bad> {
    let w: f64 = text
        .trim()
        .parse()
        .map_err(|_| Bad::new("is not a number"))?;
    if !w.is_finite() || w < 0.0 {
        return Err(Bad::new("must be a number >= 0"));
    }
    Ok(w)
}

/// Parses a socket address to listen on, like `127.0.0.1:8000` or `[::]:8000`.
pub(crate) fn listen(text: &str) -> Result<SocketAddr, Bad> {
    text.trim()
        .parse()
        .map_err(|_| Bad::new("is not an address like 127.0.0.1:8000 or [::1]:8000"))
}

/// Parses a TCP port number.
pub(crate) fn port(text: &str) -> Result<u16, Bad> {
    text.trim()
        .parse()
        .map_err(|_| Bad::new("is not a port number (0-65535)"))
}

/// Parses and normalizes a Chroma server's base URL: `http(s)://host[:port][/prefix]`
/// without query, fragment or user info, with no trailing slash.
pub(crate) fn server_url(text: &str) -> Result<String, Bad> {
    let text = text.trim();
    let url = reqwest::Url::parse(text).map_err(|_| Bad::new("is not an http(s) URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Bad::new("is not an http(s) URL"));
    }
    if matches!(url.host_str(), None | Some("")) {
        return Err(Bad::new("has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(Bad::new("must not have a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Bad::new(
            "must not carry credentials; use the server's token setting",
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// Parses a comma-separated list of server URLs; empty items are skipped.
/// An error names the offending item.
pub(crate) fn server_url_list(text: &str) -> Result<Vec<String>, Bad> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| server_url(item).map_err(|bad| Bad::at(item, bad.reason)))
        .collect()
}

/// Parses a server name: 1–64 characters from `A-Z a-z 0-9 . _ -`, so it is
/// safe in HTTP headers, metric labels and file names.
pub(crate) fn server_name(text: &str) -> Result<String, Bad> {
    let ok = !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        return Err(Bad::new(
            "is not a server name (1-64 characters from A-Z a-z 0-9 . _ -)",
        ));
    }
    Ok(text.to_string())
}

/// Parses a token: non-empty, printable ASCII without spaces, so it is a valid
/// HTTP header value.
pub(crate) fn token(text: &str) -> Result<Secret, Bad> {
    let text = text.trim();
    if text.is_empty() || !text.chars().all(|c| c.is_ascii_graphic()) {
        return Err(Bad::new(
            "is not a token (printable ASCII without spaces, not empty)",
        ));
    }
    Ok(Secret::new(text))
}

/// Parses the URL of a PostgreSQL log: `postgres://` or `postgresql://`,
/// in the form the PostgreSQL client accepts.
pub(crate) fn postgres_url(text: &str) -> Result<Secret, Bad> {
    let text = text.trim();
    if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
        return Err(Bad::new("is not a postgres:// or postgresql:// URL"));
    }
    text.parse::<tokio_postgres::Config>()
        .map_err(|e| Bad::new(format!("is not a PostgreSQL URL: {e}")))?;
    Ok(Secret::new(text))
}

/// Parses the header that carries a server token.
pub(crate) fn token_header(text: &str) -> Result<TokenHeader, Bad> {
    match text.trim().to_ascii_lowercase().as_str() {
        "authorization" | "bearer" => Ok(TokenHeader::Authorization),
        "x-chroma-token" => Ok(TokenHeader::XChromaToken),
        _ => Err(Bad::new("is not 'authorization' or 'x-chroma-token'")),
    }
}

/// Parses a log filter (`info`, `debug`, `chroma_ha=debug,info`, ...).
pub(crate) fn log_level(text: &str) -> Result<String, Bad> {
    let text = text.trim();
    if text.is_empty() {
        return Err(Bad::new("is empty"));
    }
    crate::telemetry::parse_filter(text).map_err(|e| {
        Bad::new(format!(
            "is not a log filter like 'info' or 'chroma_ha=debug': {e}"
        ))
    })?;
    Ok(text.to_string())
}

/// Parses a non-empty path.
pub(crate) fn path(text: &str) -> Result<std::path::PathBuf, Bad> {
    if text.trim().is_empty() {
        return Err(Bad::new("is empty"));
    }
    Ok(std::path::PathBuf::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("1").unwrap(), Duration::from_secs(1));
        assert_eq!(duration("0.5").unwrap(), Duration::from_millis(500));
        assert_eq!(duration(" 2.5 s ").unwrap(), Duration::from_millis(2500));
        assert_eq!(duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(duration("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(duration("1h").unwrap(), Duration::from_secs(3600));
        for bad in ["", "-1", "abc", "1 fortnight", "1e3", "1..2", "NaN", "inf"] {
            assert!(duration(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(duration("876000h").unwrap(), MAX_DURATION);
        for too_long in ["876001h", "10000000000000000000", "99999999999999999999h"] {
            let reason = duration(too_long).map(|_| ()).unwrap_err().reason;
            assert!(
                reason.contains("too long") || reason.contains("not a duration"),
                "{too_long}: {reason}"
            );
        }
        assert!(positive_duration("0").is_err());
        assert!(positive_duration("0ms").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(size("1024").unwrap(), 1024);
        assert_eq!(size("64MiB").unwrap(), 64 << 20);
        assert_eq!(size("10 GiB").unwrap(), 10 << 30);
        assert_eq!(size("1gb").unwrap(), 1_000_000_000);
        assert_eq!(size("1.5KiB").unwrap(), 1536);
        for bad in ["", "-1", "lots", "1 XB", "99999999999TiB"] {
            assert!(size(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn urls() {
        assert_eq!(server_url("http://a:8000/").unwrap(), "http://a:8000");
        assert_eq!(server_url(" http://a:8000/x/ ").unwrap(), "http://a:8000/x");
        assert_eq!(server_url("https://a:8443/").unwrap(), "https://a:8443");
        for bad in [
            "ftp://x",
            "a:8000",
            "localhost",
            "http://",
            "http://a?x=1",
            "http://a#f",
            "http://u:p@a",
        ] {
            assert!(server_url(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            server_url_list("http://a, http://b ,,").unwrap(),
            vec!["http://a".to_string(), "http://b".to_string()]
        );
        let err = server_url_list("http://a,ftp://x").unwrap_err();
        assert_eq!(err.part.as_deref(), Some("ftp://x"));
    }

    #[test]
    fn small_values() {
        assert_eq!(ratio("0.25").unwrap(), 0.25);
        assert!(ratio("1.5").is_err());
        assert!(ratio("-0.1").is_err());
        assert!(ratio("x").is_err());
        assert!(u32_at_least("0", 1).is_err());
        assert_eq!(u32_at_least("3", 1).unwrap(), 3);
        assert!(u32_at_least("99999999999", 1).is_err());
        assert!(server_name("primary").is_ok());
        assert!(server_name("bad name").is_err());
        assert!(server_name("").is_err());
        assert!(token("abc def").is_err());
        assert!(token("abc").is_ok());
        assert!(token_header("X-Chroma-Token").is_ok());
        assert!(token_header("cookie").is_err());
        assert!(log_level("chroma_ha=debug,info").is_ok());
        assert!(log_level("info=[").is_err());
        assert!(listen("127.0.0.1:8000").is_ok());
        assert!(listen("localhost").is_err());
        assert!(weight("-1").is_err());
        assert!(weight("2.5").is_ok());
    }
}
