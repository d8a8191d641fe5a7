//! PVE's named formats (`pve-vmid`, `dns-name`, `urlencoded`, `pve-qm-ipconfig`, …) and the
//! `-list` / `-opt` suffixes, with PVE's messages.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use serde_json::{json, Map, Value};

use super::propstring::parse_property_string;
use super::validate::perl_full_match;

/// A failed format check, rendered like PVE's `$@` after `check_format`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    /// A plain `die` message, ending in a newline.
    Msg(String),
    /// `raise "format error\n", errors => {…}` from a property string.
    Nested(BTreeMap<String, String>),
}

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FormatError::Msg(m) => f.write_str(m),
            FormatError::Nested(errors) => {
                f.write_str("format error\n")?;
                for (k, v) in errors {
                    writeln!(f, "{k}: {v}")?;
                }
                Ok(())
            }
        }
    }
}

fn die(msg: impl Into<String>) -> Result<(), FormatError> {
    let mut m = msg.into();
    m.push('\n');
    Err(FormatError::Msg(m))
}

/// `check_format`: `format` is a named format (optionally `-list`/`-opt`) or a property-string
/// object.
pub fn check_format(format: &Value, value: &str, path: &str) -> Result<(), FormatError> {
    match format {
        Value::Object(map) => parse_property_string(map, value, path).map(|_| ()),
        Value::String(name) => check_named(name, value, path),
        _ => Ok(()),
    }
}

fn check_named(format: &str, value: &str, path: &str) -> Result<(), FormatError> {
    if format == "regex" {
        return Ok(());
    }
    let (name, suffix) = match format.rsplit_once('-') {
        Some((base, "list")) => (base, Some("list")),
        Some((base, "opt")) => (base, Some("opt")),
        _ => (format, None),
    };
    if let Some(hash) = hash_format(name) {
        if suffix.is_some() {
            return die(format!("'-{}' format must have code ref, not hash", suffix.unwrap_or_default()));
        }
        let parsed = parse_property_string(hash, value, path)?;
        // `validate_prune_backups` (pve-storage `Plugin.pm:125-137`), the format's verify function.
        if name == "prune-backups" && parsed.get("keep-all").is_some_and(|v| perl_true(v)) && parsed.iter().any(|(k, v)| k != "keep-all" && v.parse::<u64>().is_ok_and(|n| n > 0)) {
            return die("keep-all cannot be set together with other options.");
        }
        return Ok(());
    }
    match suffix {
        Some("list") => {
            for item in split_list(value) {
                check_code(name, &item)?;
            }
            Ok(())
        }
        Some(_) if !perl_true(value) => Ok(()),
        _ => check_code(name, value),
    }
}

fn perl_true(s: &str) -> bool {
    !s.is_empty() && s != "0"
}

/// `PVE::Tools::split_list`: NUL-separated, or split on `,`, `;` and whitespace.
pub fn split_list(text: &str) -> Vec<String> {
    if text.contains('\0') {
        return text.split('\0').map(str::to_string).collect();
    }
    text.replace([',', ';'], " ").split_whitespace().map(str::to_string).collect()
}

/// Formats listed here are checked; any other named format is accepted (see README).
pub const CHECKED_FORMATS: &[&str] = &[
    "string", "urlencoded", "pve-configid", "pve-storage-id", "pve-bridge-id", "pve-vmid", "pve-node", "mac-addr",
    "ipv4", "ipv6", "ip", "ipv4mask", "CIDR", "CIDRv4", "CIDRv6", "pve-ipv4-config", "pve-ipv6-config", "dns-name",
    "address", "disk-size", "pve-tag", "pve-poolid", "pve-volume-id", "pve-volume-id-or-qm-path",
    "pve-volume-id-or-absolute-path", "pve-lxc-mp-string", "lxc-ip-with-ll-iface", "pve-storage-content",
    "pve-realm", "pve-userid", "pve-tfa-secret", "pve-task-status-type", "pve-startup-order", "email",
    "pve-qm-ipconfig", "pve-qm-cicustom", "pve-qm-boot", "pve-qm-ide", "pve-qm-watchdog", "pve-qm-smbios1",
    "prune-backups", "pve-storage-server",
];

fn check_code(name: &str, v: &str) -> Result<(), FormatError> {
    match name {
        "string" => Ok(()),
        "urlencoded" => ok_if(re(&URLENCODED, v), format!("invalid urlencoded string: {v}")),
        "pve-configid" => ok_if(re(&CONFIGID, v), format!("invalid configuration ID '{v}'")),
        "pve-storage-id" => ok_if(re(&PVE_ID, v), format!("storage ID '{v}' contains illegal characters")),
        "pve-bridge-id" => ok_if(perl_full_match(r"[-_.\w\d]+", v), format!("invalid bridge ID '{v}'")),
        "pve-vmid" => ok_if(re(&VMID, v), "value does not look like a valid VM ID"),
        "pve-node" => ok_if(re(&NODE, v), "value does not look like a valid node name"),
        "mac-addr" => ok_if(re(&MAC, v), "value does not look like a valid unicast MAC address"),
        "ipv4" => ok_if(v.parse::<Ipv4Addr>().is_ok(), "value does not look like a valid IPv4 address"),
        "ipv6" => ok_if(v.parse::<Ipv6Addr>().is_ok(), "value does not look like a valid IPv6 address"),
        "ip" => ok_if(is_ip(v), "value does not look like a valid IP address"),
        "ipv4mask" => ok_if(ipv4_mask_bits(v).is_some(), "value does not look like a valid IP netmask"),
        "CIDRv4" => ok_if(is_cidr4(v), "value does not look like a valid IPv4 CIDR network"),
        "CIDRv6" => ok_if(is_cidr6(v), "value does not look like a valid IPv6 CIDR network"),
        "CIDR" => ok_if(is_cidr4(v) || is_cidr6(v), "value does not look like a valid CIDR network"),
        "pve-ipv4-config" => ok_if(
            v == "dhcp" || v == "manual" || is_cidr4(v),
            "value does not look like a valid ipv4 network configuration",
        ),
        "pve-ipv6-config" => ok_if(
            matches!(v, "auto" | "dhcp" | "manual") || is_cidr6(v),
            "value does not look like a valid ipv6 network configuration",
        ),
        "dns-name" => ok_if(is_dns_name(v), "value does not look like a valid DNS name"),
        "address" => ok_if(is_ip(v) || is_dns_name(v), format!("value does not look like a valid address: {v}")),
        // pve-storage `Plugin.pm:316-329` `verify_server`.
        "pve-storage-server" => ok_if(is_ip(v) || is_dns_name(v), "value does not look like a valid server name or IP address"),
        "disk-size" => ok_if(parse_size(v).is_some(), format!("value does not look like a valid disk size: {v}")),
        "pve-tag" => ok_if(re(&TAG, v), "invalid characters in tag"),
        "pve-poolid" => ok_if(re(&POOLID, v), format!("invalid pool ID '{v}'")),
        "pve-volume-id" => check_volume_id(v),
        "pve-volume-id-or-qm-path" => {
            if v == "none" || v == "cdrom" || v.starts_with('/') {
                Ok(())
            } else {
                check_volume_id(v)
            }
        }
        "pve-volume-id-or-absolute-path" => if v.starts_with('/') { Ok(()) } else { check_volume_id(v) },
        "pve-lxc-mp-string" => ok_if(
            !v.contains("/./") && !v.contains("/../") && !v.ends_with("/..") && !v.ends_with("/.") && !v.starts_with("../"),
            format!("mount point '{v}' contains illegal character sequences"),
        ),
        "lxc-ip-with-ll-iface" => {
            let (ip, iface) = v.split_once('%').unwrap_or((v, ""));
            let ll = ip.to_ascii_lowercase().starts_with("fe80:");
            ok_if(is_ip(ip) && (iface.is_empty() || ll), format!("{v} is not a valid IP address"))
        }
        "pve-storage-content" => ok_if(
            matches!(v, "images" | "rootdir" | "vztmpl" | "iso" | "backup" | "snippets" | "import" | "none"),
            format!("invalid content type '{v}'"),
        ),
        "pve-realm" => ok_if(re(&REALM, v), format!("realm ID '{v}' contains illegal characters")),
        "pve-userid" => ok_if(v.contains('@') && v.len() <= 64, format!("value '{v}' does not look like a valid user name")),
        "pve-task-status-type" => ok_if(
            matches!(v.to_ascii_lowercase().as_str(), "ok" | "error" | "warning" | "unknown"),
            format!("invalid status '{v}'"),
        ),
        "pve-startup-order" => ok_if(startup_order_ok(v), "unable to parse startup options"),
        "email" => ok_if(v.contains('@') && !v.contains(char::is_whitespace), "value does not look like a valid email address"),
        // formats the simulator does not check (listed in README)
        _ => Ok(()),
    }
}

fn ok_if(ok: bool, msg: impl Into<String>) -> Result<(), FormatError> {
    if ok {
        Ok(())
    } else {
        die(msg)
    }
}

type Re = LazyLock<Option<fancy_regex::Regex>>;

fn re(r: &Re, v: &str) -> bool {
    r.as_ref().is_some_and(|re| re.is_match(v).unwrap_or(false))
}

macro_rules! perl_re {
    ($name:ident, $re:expr) => {
        static $name: Re = LazyLock::new(|| fancy_regex::Regex::new($re).ok());
    };
}

perl_re!(URLENCODED, r"^[-%a-zA-Z0-9_.!~*'()]*\n?\z");
perl_re!(CONFIGID, r"(?i)^[a-z][a-z0-9_-]+\n?\z");
perl_re!(PVE_ID, r"(?i)^[a-z][a-z0-9\-_.]*[a-z0-9]\n?\z");
perl_re!(VMID, r"^[1-9][0-9]{2,8}\n?\z");
perl_re!(NODE, r"^([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)\n?\z");
perl_re!(MAC, r"(?i)^[a-f0-9][02468ace](?::[a-f0-9]{2}){5}\n?\z");
perl_re!(DNS_NAME, r"^(([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)\.)*([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)\n?\z");
perl_re!(TAG, r"(?i)^[a-z0-9_][a-z0-9_\-+.]*\n?\z");
perl_re!(POOLID, r"^[A-Za-z0-9_][-A-Za-z0-9_.]*\n?\z");
perl_re!(REALM, r"(?i)^[a-z][a-z0-9\-_.]*[a-z0-9]\n?\z");
perl_re!(VOLUME_ID, r"(?i)^([a-z][a-z0-9\-_.]*[a-z0-9]):(.+)\z");
perl_re!(SIZE, r"^(\d+(\.\d+)?)([KMGT](iB)?)?\z");

fn is_dns_name(v: &str) -> bool {
    re(&DNS_NAME, v)
}

fn is_ip(v: &str) -> bool {
    v.parse::<Ipv4Addr>().is_ok() || v.parse::<Ipv6Addr>().is_ok()
}

fn cidr_parts(v: &str) -> Option<(&str, u32)> {
    let (addr, bits) = v.split_once('/')?;
    if bits.is_empty() || !bits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((addr, bits.parse().ok()?))
}

/// `CIDRv4`: address and mask 8–32.
pub fn is_cidr4(v: &str) -> bool {
    cidr_parts(v).is_some_and(|(a, bits)| a.parse::<Ipv4Addr>().is_ok() && bits > 7 && bits <= 32)
}

/// `CIDRv6`: address and mask 8–128.
pub fn is_cidr6(v: &str) -> bool {
    cidr_parts(v).is_some_and(|(a, bits)| a.parse::<Ipv6Addr>().is_ok() && bits > 7 && bits <= 128)
}

fn ipv4_mask_bits(v: &str) -> Option<u32> {
    let n = u32::from(v.parse::<Ipv4Addr>().ok()?);
    let bits = n.leading_ones();
    (n.checked_shl(bits).unwrap_or(0) == 0).then_some(bits)
}

fn check_volume_id(v: &str) -> Result<(), FormatError> {
    ok_if(re(&VOLUME_ID, v), format!("unable to parse volume ID '{v}'"))
}

/// `PVE::JSONSchema::parse_size` (binary units; a bare number is bytes).
pub fn parse_size(v: &str) -> Option<u64> {
    let caps = SIZE.as_ref()?.captures(v).ok()??;
    let num: f64 = caps.get(1)?.as_str().parse().ok()?;
    let mult = match caps.get(3).map(|m| &m.as_str()[..1]) {
        Some("K") => 1u64 << 10,
        Some("M") => 1 << 20,
        Some("G") => 1 << 30,
        Some("T") => 1 << 40,
        _ => 1,
    };
    Some((num * mult as f64) as u64)
}

fn startup_order_ok(v: &str) -> bool {
    !v.is_empty()
        && v.split(',').filter(|p| !p.trim().is_empty()).all(|p| {
            let n = p.strip_prefix("order=").or_else(|| p.strip_prefix("up=")).or_else(|| p.strip_prefix("down=")).unwrap_or(p);
            !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
        })
}

/// Hash-based named formats the schema refers to by name only.
fn hash_format(name: &str) -> Option<&'static Map<String, Value>> {
    static FORMATS: LazyLock<BTreeMap<&'static str, Map<String, Value>>> = LazyLock::new(|| {
        let obj = |v: Value| match v {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        let volume = json!({"type": "string", "format": "pve-volume-id", "optional": 1});
        BTreeMap::from([
            (
                "pve-qm-ipconfig",
                obj(json!({
                    "ip": {"type": "string", "format": "pve-ipv4-config", "optional": 1},
                    "gw": {"type": "string", "format": "ipv4", "optional": 1},
                    "ip6": {"type": "string", "format": "pve-ipv6-config", "optional": 1},
                    "gw6": {"type": "string", "format": "ipv6", "optional": 1},
                })),
            ),
            (
                "pve-qm-cicustom",
                obj(json!({"meta": volume, "network": volume, "user": volume, "vendor": volume})),
            ),
            (
                "pve-qm-boot",
                obj(json!({
                    "legacy": {"type": "string", "pattern": "[acdn]{1,4}", "default_key": 1, "optional": 1},
                    "order": {"type": "string", "optional": 1},
                })),
            ),
            (
                "pve-qm-ide",
                obj(json!({
                    "file": {"type": "string", "format": "pve-volume-id-or-qm-path", "default_key": 1},
                    "media": {"type": "string", "enum": ["cdrom", "disk"], "optional": 1},
                })),
            ),
            (
                "pve-qm-watchdog",
                obj(json!({
                    "model": {"type": "string", "enum": ["i6300esb", "ib700"], "default_key": 1, "optional": 1},
                    "action": {"type": "string", "enum": ["reset", "shutdown", "poweroff", "pause", "debug", "none"], "optional": 1},
                })),
            ),
            (
                // pve-storage `src/PVE/Storage/Plugin.pm:81-123` (0c56bad)
                "prune-backups",
                obj(json!({
                    "keep-all": {"type": "boolean", "optional": 1},
                    "keep-last": {"type": "integer", "minimum": 0, "optional": 1},
                    "keep-hourly": {"type": "integer", "minimum": 0, "optional": 1},
                    "keep-daily": {"type": "integer", "minimum": 0, "optional": 1},
                    "keep-weekly": {"type": "integer", "minimum": 0, "optional": 1},
                    "keep-monthly": {"type": "integer", "minimum": 0, "optional": 1},
                    "keep-yearly": {"type": "integer", "minimum": 0, "optional": 1},
                })),
            ),
            (
                "pve-qm-smbios1",
                obj(json!({
                    "uuid": {"type": "string", "optional": 1},
                    "version": {"type": "string", "optional": 1},
                    "serial": {"type": "string", "optional": 1},
                    "manufacturer": {"type": "string", "optional": 1},
                    "product": {"type": "string", "optional": 1},
                    "sku": {"type": "string", "optional": 1},
                    "family": {"type": "string", "optional": 1},
                    "base64": {"type": "boolean", "optional": 1},
                })),
            ),
        ])
    });
    FORMATS.get(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(format: &str, v: &str) -> String {
        check_format(&json!(format), v, "p").err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn named_formats_use_pve_messages() {
        assert_eq!(err("dns-name", "web_1"), "value does not look like a valid DNS name\n");
        assert_eq!(err("dns-name", "web-1.example.com"), "");
        assert_eq!(err("urlencoded", "ssh-ed25519 AAAA"), "invalid urlencoded string: ssh-ed25519 AAAA\n");
        assert_eq!(err("urlencoded", "ssh-ed25519%20AAAA%2B%2F%3D%20me%40host"), "");
        assert_eq!(err("pve-tag-list", "a;b c"), "");
        assert_eq!(err("pve-tag-list", "a;b!"), "invalid characters in tag\n");
        assert_eq!(err("pve-ipv4-config", "127.77.0.5/8"), "");
        assert_eq!(err("pve-ipv4-config", "127.77.0.5/7"), "value does not look like a valid ipv4 network configuration\n");
        assert_eq!(err("disk-size", "32G"), "");
        assert_eq!(err("disk-size", "+10G"), "value does not look like a valid disk size: +10G\n");
        assert_eq!(err("pve-configid-list", "net1,ipconfig1"), "");
        assert_eq!(err("pve-configid-list", "net1,1x"), "invalid configuration ID '1x'\n");
    }

    #[test]
    fn ipconfig_is_a_property_string() {
        assert_eq!(err("pve-qm-ipconfig", "ip=dhcp"), "");
        assert_eq!(
            err("pve-qm-ipconfig", "ip=10.0.0.5"),
            "format error\np.ip: invalid format - value does not look like a valid ipv4 network configuration\n\n"
        );
        assert_eq!(err("pve-qm-ipconfig", "foo=1"), "invalid key in comma-separated list property: foo\n");
    }
}
