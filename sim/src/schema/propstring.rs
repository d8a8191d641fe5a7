//! Property strings (`key=value,…` with default keys, aliases and key aliases), parsed like
//! `PVE::JSONSchema::parse_property_string`.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::formats::FormatError;
use super::validate::{check_object, Errors};

/// `parse_boolean`: `1|on|yes|true` / `0|off|no|false`, case-insensitive.
pub fn parse_boolean(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "on" | "yes" | "true" => Some(true),
        "0" | "off" | "no" | "false" => Some(false),
        _ => None,
    }
}

/// Parses `data` with the given format and checks every sub-value; the error is PVE's
/// (`format error` with per-key errors, or a plain parse message).
pub fn parse_property_string(format: &Map<String, Value>, data: &str, path: &str) -> Result<BTreeMap<String, String>, FormatError> {
    let res = split_keys(format, data)?;
    let values: BTreeMap<String, Value> = res.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    let mut errors = Errors::new();
    check_object(path, format, &values, &mut errors);
    if errors.is_empty() {
        Ok(res)
    } else {
        Err(FormatError::Nested(errors))
    }
}

fn split_keys(format: &Map<String, Value>, data: &str) -> Result<BTreeMap<String, String>, FormatError> {
    let msg = |m: String| FormatError::Msg(format!("{m}\n"));
    let mut res: BTreeMap<String, String> = BTreeMap::new();
    let mut default_key: Option<String> = None;
    for part in data.split(',') {
        if part.trim().is_empty() {
            continue;
        }
        match part.split_once('=') {
            Some((k, v)) if !k.is_empty() && !v.is_empty() => {
                if res.contains_key(k) {
                    return Err(msg(format!("duplicate key in comma-separated list property: {k}")));
                }
                let mut key = k.to_string();
                let mut schema = format.get(k);
                if let Some(alias) = schema.and_then(|s| s.get("alias")).and_then(Value::as_str) {
                    if let Some(key_alias) = schema.and_then(|s| s.get("keyAlias")).and_then(Value::as_str) {
                        if res.contains_key(key_alias) {
                            return Err(msg(format!("key alias '{key_alias}' is already defined")));
                        }
                        res.insert(key_alias.to_string(), k.to_string());
                    }
                    key = alias.to_string();
                    schema = format.get(alias);
                }
                let Some(schema) = schema else {
                    return Err(msg(format!("invalid key in comma-separated list property: {key}")));
                };
                let mut value = v.to_string();
                if schema.get("type").and_then(Value::as_str) == Some("boolean") {
                    if let Some(b) = parse_boolean(v) {
                        value = if b { "1".into() } else { "0".into() };
                    }
                }
                res.insert(key, value);
            }
            None => {
                if let Some(dk) = &default_key {
                    return Err(msg(format!("duplicate key in comma-separated list property: {dk}")));
                }
                let Some(dk) = format
                    .iter()
                    .find(|(_, s)| s.get("default_key").is_some_and(super::load::truthy))
                    .map(|(k, _)| k.clone())
                else {
                    return Err(msg("value without key, but schema does not define a default key".into()));
                };
                if res.get(&dk).is_some_and(|v| !v.is_empty() && v != "0") {
                    return Err(msg(format!("duplicate key in comma-separated list property: {dk}")));
                }
                res.insert(dk.clone(), part.to_string());
                default_key = Some(dk);
            }
            Some(_) => return Err(msg("missing key in comma-separated list property".into())),
        }
    }
    Ok(res)
}

/// Splits a stored property string without validation (config values the sim wrote itself):
/// `(key, value)` pairs, the keyless part under `default_key`.
pub fn split_simple(data: &str, default_key: &str) -> Vec<(String, String)> {
    data.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (default_key.to_string(), p.to_string()),
        })
        .collect()
}

/// The value of `key` in a stored property string.
pub fn get_key(data: &str, default_key: &str, key: &str) -> Option<String> {
    split_simple(data, default_key).into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// Replaces (or appends) `key=value` in a stored property string, keeping the others in order.
pub fn set_key(data: &str, default_key: &str, key: &str, value: &str) -> String {
    let mut parts = split_simple(data, default_key);
    match parts.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value.to_string(),
        None => parts.push((key.to_string(), value.to_string())),
    }
    parts
        .into_iter()
        .map(|(k, v)| if k == default_key { v } else { format!("{k}={v}") })
        .collect::<Vec<_>>()
        .join(",")
}
