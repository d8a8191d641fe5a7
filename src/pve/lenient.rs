//! Lenient readers for PVE's values: booleans as `0`/`1`/`true`/`"1"`, numbers as strings and strings as numbers (for serde's `deserialize_with`), and property strings (`current=2048`, `enabled=1,fstrim=1`).

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::core::names::{NodeName, VmId};

/// A boolean from `true`/`false`, any number (non-zero = true), or the strings PVE's property
/// strings accept (`1/0/yes/no/on/off/true/false`). `null` is `None`.
pub(crate) fn bool_of(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_f64().map(|f| f != 0.0),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "1" | "yes" | "on" | "true" => Some(true),
            "0" | "no" | "off" | "false" | "" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// A number from a JSON number or a numeric string.
pub(crate) fn f64_of(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => None,
    }
}

/// A non-negative integer from a number (fractions truncated) or a numeric string.
pub(crate) fn u64_of(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| n.as_f64().filter(|f| f.is_finite() && *f >= 0.0).map(|f| f as u64)),
        Value::String(s) => s.trim().parse::<u64>().ok().or_else(|| f64_of(v).filter(|f| *f >= 0.0).map(|f| f as u64)),
        _ => None,
    }
}

/// Any scalar as text (`2048`, `"2048"`, `true` → `"1"`); `null` is `None`.
pub(crate) fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(if *b { "1" } else { "0" }.to_string()),
        Value::Number(n) => Some(n.to_string()),
        other => Some(other.to_string()),
    }
}

/// Tags as PVE stores them: split on `;`, `,` or whitespace.
pub(crate) fn split_tags(s: &str) -> Vec<String> {
    s.split([';', ',', ' ', '\t', '\n']).filter(|t| !t.is_empty()).map(str::to_string).collect()
}

/// The value of `key` in a property string (`k=v,k2=v2`); items without `=` belong to `default_key`.
pub(crate) fn prop<'a>(value: &'a str, key: &str, default_key: Option<&str>) -> Option<&'a str> {
    value.split(',').find_map(|item| match item.split_once('=') {
        Some((k, v)) if k.trim() == key => Some(v.trim()),
        None if default_key == Some(key) => Some(item.trim()),
        _ => None,
    })
}

fn expected<E: serde::de::Error>(what: &str, v: &Value) -> E {
    E::custom(format!("expected {what}, got {v}"))
}

pub(crate) fn bool01<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let v = Value::deserialize(d)?;
    if v.is_null() {
        return Ok(false);
    }
    bool_of(&v).ok_or_else(|| expected("a boolean (0/1)", &v))
}

pub(crate) fn num_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = Value::deserialize(d)?;
    if v.is_null() {
        return Ok(0);
    }
    u64_of(&v).ok_or_else(|| expected("a non-negative integer", &v))
}

pub(crate) fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = Value::deserialize(d)?;
    if v.is_null() {
        return Ok(None);
    }
    u64_of(&v).map(Some).ok_or_else(|| expected("a non-negative integer", &v))
}

pub(crate) fn num_u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = num_u64(d)?;
    u32::try_from(n).map_err(|_| D::Error::custom(format!("{n} is out of range")))
}

pub(crate) fn num_f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = Value::deserialize(d)?;
    if v.is_null() {
        return Ok(0.0);
    }
    f64_of(&v).ok_or_else(|| expected("a number", &v))
}

pub(crate) fn opt_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = Value::deserialize(d)?;
    Ok(text_of(&v))
}

pub(crate) fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(opt_text(d)?.unwrap_or_default())
}

pub(crate) fn tags<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(opt_text(d)?.map(|s| split_tags(&s)).unwrap_or_default())
}

/// A comma-separated list (`content: "images,rootdir"`).
pub(crate) fn comma_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(opt_text(d)?.map(|s| s.split(',').map(str::trim).filter(|x| !x.is_empty()).map(str::to_string).collect()).unwrap_or_default())
}

pub(crate) fn vmid_of(v: &Value) -> Option<VmId> {
    u64_of(v).and_then(|n| VmId::new(n).ok())
}

pub(crate) fn vmid<'de, D: Deserializer<'de>>(d: D) -> Result<VmId, D::Error> {
    let v = Value::deserialize(d)?;
    vmid_of(&v).ok_or_else(|| expected("a VMID (100-999999999)", &v))
}

pub(crate) fn opt_vmid<'de, D: Deserializer<'de>>(d: D) -> Result<Option<VmId>, D::Error> {
    let v = Value::deserialize(d)?;
    if v.is_null() {
        return Ok(None);
    }
    vmid_of(&v).map(Some).ok_or_else(|| expected("a VMID (100-999999999)", &v))
}

pub(crate) fn node_name<'de, D: Deserializer<'de>>(d: D) -> Result<NodeName, D::Error> {
    let s = String::deserialize(d)?;
    NodeName::parse(&s).map_err(|_| D::Error::custom(format!("'{s}' is not a node name")))
}

pub(crate) fn opt_node_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NodeName>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) => NodeName::parse(&s).map(Some).map_err(|_| D::Error::custom(format!("'{s}' is not a node name"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Deserialize, Debug)]
    struct B {
        #[serde(default, deserialize_with = "bool01")]
        b: bool,
    }

    fn b(v: Value) -> Result<B, serde_json::Error> {
        serde_json::from_value(v)
    }

    #[test]
    fn booleans_accept_0_1_true_false_and_strings() {
        for (v, want) in [
            (json!(1), true),
            (json!(0), false),
            (json!(true), true),
            (json!(false), false),
            (json!("1"), true),
            (json!("0"), false),
            (json!("true"), true),
            (json!("off"), false),
            (json!("Yes"), true),
            (json!(null), false),
        ] {
            let got = b(json!({ "b": v.clone() })).unwrap();
            assert_eq!(got.b, want, "{v}");
        }
        assert!(!b(json!({})).unwrap().b);
        assert!(b(json!({"b": "maybe"})).is_err());
        assert!(b(json!({"b": [1]})).is_err());
    }

    #[test]
    fn property_strings() {
        assert_eq!(prop("2048", "current", Some("current")), Some("2048"));
        assert_eq!(prop("current=4096", "current", Some("current")), Some("4096"));
        assert_eq!(prop("enabled=1,fstrim_cloned_disks=1", "enabled", Some("enabled")), Some("1"));
        assert_eq!(prop("1,type=virtio", "enabled", Some("enabled")), Some("1"));
        assert_eq!(prop("virtio=BC:24:11:00:00:01,bridge=vmbr0", "bridge", None), Some("vmbr0"));
        assert_eq!(prop("virtio=BC:24:11:00:00:01", "bridge", None), None);
    }

    #[derive(Deserialize, Debug)]
    struct N {
        #[serde(deserialize_with = "num_u64")]
        n: u64,
        #[serde(deserialize_with = "num_f64")]
        f: f64,
        #[serde(deserialize_with = "text")]
        t: String,
        #[serde(deserialize_with = "vmid")]
        id: VmId,
        #[serde(default, deserialize_with = "tags")]
        tags: Vec<String>,
    }

    #[test]
    fn numbers_and_strings_cross_over() {
        let n: N = serde_json::from_value(json!({"n": "2048", "f": "0.5", "t": 2048, "id": "101", "tags": "a;b,c d"})).unwrap();
        assert_eq!((n.n, n.f, n.t.as_str(), n.id.get()), (2048, 0.5, "2048", 101));
        assert_eq!(n.tags, ["a", "b", "c", "d"]);
        let n: N = serde_json::from_value(json!({"n": 3.0e9, "f": 1, "t": "x", "id": 999_999_999})).unwrap();
        assert_eq!((n.n, n.f), (3_000_000_000, 1.0));
        assert!(serde_json::from_value::<N>(json!({"n": "x", "f": 1, "t": "", "id": 100})).is_err());
        assert!(serde_json::from_value::<N>(json!({"n": 1, "f": 1, "t": "", "id": 99})).is_err());
        assert!(serde_json::from_value::<N>(json!({"n": -1, "f": 1, "t": "", "id": 100})).is_err());
    }
}
