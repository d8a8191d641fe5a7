//! Cloud-init as PVE's `Cloudinit.pm` generates it (NoCloud user-data, network-config v1,
//! meta-data), `cicustom` snippets, and the `cloudinit` endpoints.

pub mod crypt;

use serde_json::{json, Value};
use sha1::{Digest, Sha1};

use super::state::{ClusterState, Guest};
use super::storage::file_volume_path;
use super::Cluster;
use crate::backend::{CloudInitSeed, GuestKind};
use crate::http::envelope::ApiError;
use crate::http::params::Params;
use crate::schema::propstring::get_key;

/// The nameserver the simulated nodes' `/etc/resolv.conf` lists (used when the VM sets none).
const HOST_NAMESERVER: &str = "10.77.0.1";

/// `encrypt_pw`: already-hashed values are kept, others become SHA-256-crypt.
pub fn hash_password(pw: &str) -> String {
    let hashed = ["$1$", "$5$", "$6$", "$2a$", "$2y$"].iter().any(|p| pw.starts_with(p)) && pw.matches('$').count() >= 3;
    if hashed {
        return pw.to_string();
    }
    let salt: String = (0..8)
        .map(|_| char::from(b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"[rand::random_range(0..64)]))
        .collect();
    crypt::sha256_crypt(pw, &salt)
}

/// `get_hostname_fqdn`: the `name` (or `VM<vmid>`), split at the first dot, and the FQDN.
pub fn hostname_fqdn(g: &Guest) -> (String, String) {
    let name = g.config.get("name").cloned().unwrap_or_else(|| format!("VM{}", g.vmid));
    if let Some((host, _)) = name.split_once('.') {
        return (host.to_string(), name.clone());
    }
    match g.config.get("searchdomain") {
        Some(search) if !search.is_empty() => (name.clone(), format!("{name}.{search}")),
        _ => (name.clone(), name),
    }
}

/// `cloudinit_userdata`
pub fn userdata(g: &Guest) -> String {
    let (hostname, fqdn) = hostname_fqdn(g);
    let mut out = String::from("#cloud-config\n");
    out.push_str(&format!("hostname: {hostname}\n"));
    out.push_str("manage_etc_hosts: true\n");
    out.push_str(&format!("fqdn: {fqdn}\n"));
    let user = g.config.get("ciuser");
    if let Some(u) = user {
        out.push_str(&format!("user: {u}\n"));
        if u == "root" {
            out.push_str("disable_root: False\n");
        }
    }
    if let Some(pw) = g.config.get("cipassword") {
        out.push_str(&format!("password: {pw}\n"));
    }
    if let Some(keys) = g.config.get("sshkeys") {
        let decoded = percent_encoding::percent_decode_str(keys).decode_utf8_lossy().to_string();
        out.push_str("ssh_authorized_keys:\n");
        for k in decoded.split('\n').map(|k| k.trim_end_matches('\r')).filter(|k| k.chars().any(|c| !c.is_whitespace())) {
            out.push_str(&format!("  - {k}\n"));
        }
    }
    out.push_str("chpasswd:\n  expire: False\n");
    if user.is_none_or(|u| u != "root") {
        out.push_str("users:\n  - default\n");
    }
    if g.config.get("ciupgrade").is_none_or(|v| v != "0") {
        out.push_str("package_upgrade: true\n");
    }
    out
}

fn ipv4_netmask(bits: u32) -> String {
    let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits.min(32)) };
    std::net::Ipv4Addr::from(mask).to_string()
}

/// `nocloud_network` (network-config version 1)
pub fn network(g: &Guest) -> String {
    let mut out = String::from("version: 1\nconfig:\n");
    let i = "    ";
    let nets: Vec<(&String, &String)> = g.config.iter().filter(|(k, _)| k.starts_with("net") && k[3..].bytes().all(|b| b.is_ascii_digit())).collect();
    let mut sorted = nets;
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    for (key, value) in sorted {
        let id = &key[3..];
        let Some(ipconfig) = g.config.get(&format!("ipconfig{id}")) else { continue };
        let mac = super::config_update::net_mac(GuestKind::Qemu, value).unwrap_or_default().to_lowercase();
        out.push_str(&format!("{i}- type: physical\n{i}  name: eth{id}\n{i}  mac_address: '{mac}'\n{i}  subnets:\n"));
        let j = format!("{i}  ");
        let ip = get_key(ipconfig, "ip", "ip");
        let ip6 = get_key(ipconfig, "ip", "ip6");
        let ip = if ip.is_none() && ip6.is_none() { Some("dhcp".to_string()) } else { ip };
        if let Some(ip) = ip {
            if ip == "dhcp" {
                out.push_str(&format!("{j}- type: dhcp4\n"));
            } else if let Some((addr, bits)) = ip.split_once('/') {
                out.push_str(&format!("{j}- type: static\n{j}  address: '{addr}'\n{j}  netmask: '{}'\n", ipv4_netmask(bits.parse().unwrap_or(32))));
                if let Some(gw) = get_key(ipconfig, "ip", "gw") {
                    out.push_str(&format!("{j}  gateway: '{gw}'\n"));
                }
            }
        }
        if let Some(ip6) = ip6 {
            match ip6.as_str() {
                "dhcp" => out.push_str(&format!("{j}- type: dhcp6\n")),
                "auto" => out.push_str(&format!("{j}- type: ipv6_slaac\n")),
                _ => {
                    out.push_str(&format!("{j}- type: static6\n{j}  address: '{ip6}'\n"));
                    if let Some(gw) = get_key(ipconfig, "ip", "gw6") {
                        out.push_str(&format!("{j}  gateway: '{gw}'\n"));
                    }
                }
            }
        }
    }
    let nameservers: Vec<String> = match g.config.get("nameserver") {
        Some(ns) => ns.split_whitespace().map(str::to_string).collect(),
        None => vec![HOST_NAMESERVER.to_string()],
    };
    let search: Vec<String> = g.config.get("searchdomain").map(|s| s.split_whitespace().map(str::to_string).collect()).unwrap_or_default();
    out.push_str(&format!("{i}- type: nameserver\n"));
    if !nameservers.is_empty() {
        out.push_str(&format!("{i}  address:\n"));
        for ns in &nameservers {
            out.push_str(&format!("{i}  - '{ns}'\n"));
        }
    }
    if !search.is_empty() {
        out.push_str(&format!("{i}  search:\n"));
        for s in &search {
            out.push_str(&format!("{i}  - '{s}'\n"));
        }
    }
    out
}

/// `nocloud_gen_metadata`: `instance-id: <sha1(user-data . network-config)>`
pub fn instance_id(user: &str, network: &str) -> String {
    hex::encode(Sha1::digest(format!("{user}{network}").as_bytes()))
}

/// The NoCloud seed a started VM gets: generated files, or `cicustom` snippets where set.
pub fn seed(st: &ClusterState, state_dir: &std::path::Path, g: &Guest) -> Result<CloudInitSeed, String> {
    let custom = g.config.get("cicustom").cloned().unwrap_or_default();
    let read = |which: &str| -> Result<Option<String>, String> {
        let Some(volid) = get_key(&custom, "user", which) else { return Ok(None) };
        if !volid.split_once(':').is_some_and(|(_, v)| v.starts_with("snippets/")) {
            return Err(format!("{volid} is not in the snippets directory"));
        }
        let path = file_volume_path(state_dir, st, &volid, &g.node).ok_or_else(|| format!("{volid} is not in the snippets directory"))?;
        std::fs::read_to_string(&path)
            .map(Some)
            .map_err(|e| format!("unable to open file '{}' - {e}", path.display()))
    };
    let user = match read("user")? {
        Some(u) => u,
        None => userdata(g),
    };
    let net = match read("network")? {
        Some(n) => n,
        None => network(g),
    };
    let id = instance_id(&user, &net);
    let meta = match read("meta")? {
        Some(m) => m,
        None => format!("instance-id: {id}\n"),
    };
    Ok(CloudInitSeed { instance_id: id, meta_data: meta, user_data: user })
}

/// `GET …/cloudinit/dump?type=user|network|meta` (generated config, as PVE's
/// `dump_cloudinit_config`; `cicustom` snippets are not consulted there).
pub fn dump(c: &Cluster, node: &str, p: &Params) -> Result<Value, ApiError> {
    let vmid = p.need_u32("vmid")?;
    let kind = p.need("type")?;
    c.with_guest(node, vmid, GuestKind::Qemu, |g| {
        let mut g = g.clone();
        super::config_update::apply_pending(&mut g);
        let text = match kind.as_str() {
            "user" => userdata(&g),
            "network" => network(&g),
            _ => format!("instance-id: {}\n", instance_id(&userdata(&g), &network(&g))),
        };
        json!(text)
    })
}

const CLOUDINIT_KEYS: &[&str] = &["ciuser", "cipassword", "sshkeys", "nameserver", "searchdomain", "cicustom", "citype", "ciupgrade"];

/// `GET …/cloudinit`: the cloud-init keys with pending values.
pub fn pending_list(c: &Cluster, node: &str, p: &Params) -> Result<Value, ApiError> {
    let vmid = p.need_u32("vmid")?;
    c.with_guest(node, vmid, GuestKind::Qemu, |g| {
        let mut keys: Vec<String> = g
            .config
            .keys()
            .chain(g.pending.keys())
            .filter(|k| CLOUDINIT_KEYS.contains(&k.as_str()) || k.starts_with("ipconfig"))
            .cloned()
            .collect();
        keys.sort();
        keys.dedup();
        let mask = |k: &str, v: &String| if k == "cipassword" { "**********".to_string() } else { v.clone() };
        Value::Array(
            keys.iter()
                .map(|k| {
                    let mut e = serde_json::Map::new();
                    e.insert("key".into(), json!(k));
                    if let Some(v) = g.config.get(k) {
                        e.insert("value".into(), json!(mask(k, v)));
                    }
                    if let Some(v) = g.pending.get(k) {
                        e.insert("pending".into(), json!(mask(k, v)));
                    }
                    Value::Object(e)
                })
                .collect(),
        )
    })
}

/// `PUT …/cloudinit`: regenerate the drive (applies pending cloud-init keys).
pub fn regenerate(c: &Cluster, node: &str, p: &Params) -> Result<Value, ApiError> {
    let vmid = p.need_u32("vmid")?;
    let mut st = c.state();
    let g = st.guest_on_mut(node, vmid, GuestKind::Qemu).map_err(ApiError::server)?;
    let keys: Vec<String> = g.pending.keys().filter(|k| CLOUDINIT_KEYS.contains(&k.as_str()) || k.starts_with("ipconfig")).cloned().collect();
    for k in keys {
        if let Some(v) = g.pending.remove(&k) {
            g.config.insert(k, v);
        }
    }
    Ok(Value::Null)
}
