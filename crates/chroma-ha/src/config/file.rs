//! The TOML file layer: walks the table, feeds scalar values through the
//! settings table and reads server entries; unknown keys are errors.

use std::path::Path;

use super::parse;
use super::settings::{
    apply, find, invalid, Draft, ServerDraft, BOOLEAN_KEYS, SECTIONS, SERVER_KEYS, SETTINGS,
};
use super::{ConfigError, TokenHeader};

/// Turns a scalar TOML value into the text the setting parsers take.
fn scalar_text(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        _ => None,
    }
}

fn type_name(value: &toml::Value) -> &'static str {
    match value {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a datetime",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

fn wrong_type(origin: &str, value: &toml::Value, expected: &str) -> ConfigError {
    ConfigError::Conflict {
        setting: origin.to_string(),
        reason: format!("expected {expected}, found {}", type_name(value)),
    }
}

fn known_keys(prefix: &str) -> String {
    let mut keys: Vec<&str> = SETTINGS
        .iter()
        .filter_map(|s| match prefix {
            "" => (!s.key.contains('.')).then_some(s.key),
            p => s.key.strip_prefix(p).and_then(|k| k.strip_prefix('.')),
        })
        .collect();
    if prefix.is_empty() {
        keys.extend(SECTIONS);
    }
    keys.join(", ")
}

fn apply_file_scalar(
    d: &mut Draft,
    key: &str,
    value: &toml::Value,
    path: &str,
) -> Result<(), ConfigError> {
    let origin = format!("{key} in {path}");
    let Some(s) = find(key) else {
        let (prefix, _) = key.rsplit_once('.').unwrap_or(("", key));
        return Err(ConfigError::UnknownKey {
            path: path.to_string(),
            key: key.to_string(),
            known: known_keys(prefix),
        });
    };
    let text = match value {
        toml::Value::Boolean(b) if BOOLEAN_KEYS.contains(&key) => b.to_string(),
        _ if BOOLEAN_KEYS.contains(&key) => {
            return Err(wrong_type(&origin, value, "a boolean (true or false)"))
        }
        _ => scalar_text(value).ok_or_else(|| wrong_type(&origin, value, "a string or number"))?,
    };
    apply(d, s, &text, &origin)
}

/// Reads one server entry of the file: a URL string or a table with `url`
/// and optional `name`, `token`, `token_header`, `read_weight`.
fn file_server(value: &toml::Value, key: &str, path: &str) -> Result<ServerDraft, ConfigError> {
    let origin = format!("{key} in {path}");
    let table = match value {
        toml::Value::String(url) => {
            let url = parse::server_url(url).map_err(|bad| invalid(&origin, false, url, bad))?;
            return Ok(ServerDraft::from_url(url, &origin));
        }
        toml::Value::Table(t) => t,
        other => {
            return Err(wrong_type(
                &origin,
                other,
                "a URL string or a table with url",
            ))
        }
    };
    for k in table.keys() {
        if !SERVER_KEYS.contains(&k.as_str()) {
            return Err(ConfigError::UnknownKey {
                path: path.to_string(),
                key: format!("{key}.{k}"),
                known: SERVER_KEYS.join(", "),
            });
        }
    }
    let text = |field: &str| -> Result<Option<(String, String)>, ConfigError> {
        let field_origin = format!("{key}.{field} in {path}");
        match table.get(field) {
            None => Ok(None),
            Some(v) => match scalar_text(v) {
                Some(t) => Ok(Some((t, field_origin))),
                None => Err(wrong_type(&field_origin, v, "a string or number")),
            },
        }
    };
    let (url_text, url_origin) = text("url")?.ok_or_else(|| ConfigError::Conflict {
        setting: origin.clone(),
        reason: "a server table needs a url".to_string(),
    })?;
    let url =
        parse::server_url(&url_text).map_err(|bad| invalid(&url_origin, false, &url_text, bad))?;
    let mut server = ServerDraft::from_url(url, &origin);
    if let Some((t, o)) = text("name")? {
        server.name = Some(parse::server_name(&t).map_err(|bad| invalid(&o, false, &t, bad))?);
    }
    let header = match text("token_header")? {
        Some((t, o)) => Some(parse::token_header(&t).map_err(|bad| invalid(&o, false, &t, bad))?),
        None => None,
    };
    match (text("token")?, header) {
        (Some((t, o)), header) => {
            let token = parse::token(&t).map_err(|bad| invalid(&o, true, &t, bad))?;
            server.credentials = Some(
                header
                    .unwrap_or(TokenHeader::Authorization)
                    .credentials(token),
            );
        }
        (None, Some(_)) => {
            return Err(ConfigError::Conflict {
                setting: format!("{key}.token_header in {path}"),
                reason: "is set but the server has no token".to_string(),
            })
        }
        (None, None) => {}
    }
    if let Some((t, o)) = text("read_weight")? {
        server.read_weight = Some(parse::weight(&t).map_err(|bad| invalid(&o, false, &t, bad))?);
    }
    Ok(server)
}

pub(super) fn apply_file(d: &mut Draft, path: &Path, text: &str) -> Result<(), ConfigError> {
    let path = path.display().to_string();
    let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: path.clone(),
        message: e.to_string().trim_end().to_string(),
    })?;
    for (key, value) in &table {
        match key.as_str() {
            "primary" => d.primary = Some(file_server(value, "primary", &path)?),
            "replicas" => {
                let toml::Value::Array(items) = value else {
                    return Err(wrong_type(
                        &format!("replicas in {path}"),
                        value,
                        "an array of URLs or [[replicas]] tables",
                    ));
                };
                d.replicas = items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| file_server(v, &format!("replicas[{i}]"), &path))
                    .collect::<Result<_, _>>()?;
            }
            section if SECTIONS.contains(&section) => {
                let toml::Value::Table(inner) = value else {
                    return Err(wrong_type(
                        &format!("{section} in {path}"),
                        value,
                        "a table",
                    ));
                };
                for (k, v) in inner {
                    apply_file_scalar(d, &format!("{section}.{k}"), v, &path)?;
                }
            }
            other => apply_file_scalar(d, other, value, &path)?,
        }
    }
    Ok(())
}
