//! The QEMU guest agent endpoints (`agent/ping`, `network-get-interfaces`, `get-osinfo`) and LXC
//! `interfaces`, answering only once the guest is up and the configured delay has passed.

use std::net::Ipv4Addr;

use serde_json::{json, Value};

use super::config_update::net_mac;
use super::power::agent_enabled;
use super::Cluster;
use crate::backend::GuestKind;
use crate::http::envelope::ApiError;
use crate::http::params::Params;

/// What the agent knows about a running guest.
struct Seen {
    vmid: u32,
    mac: String,
    ip: Option<Ipv4Addr>,
}

/// `agent_available` plus the simulated boot delay: errors are PVE's.
async fn agent_ready(c: &Cluster, node: &str, p: &Params) -> Result<Seen, ApiError> {
    let vmid = p.need_u32("vmid")?;
    let (since, seen) = {
        let st = c.state();
        let g = st.guest_on(node, vmid, GuestKind::Qemu).map_err(ApiError::server)?;
        if !agent_enabled(g) {
            return Err(ApiError::server("No QEMU guest agent configured"));
        }
        let Some(run) = &g.running else {
            return Err(ApiError::server(format!("VM {vmid} is not running")));
        };
        let mac = g.config.get("net0").and_then(|n| net_mac(GuestKind::Qemu, n)).unwrap_or_default();
        (run.since, Seen { vmid, mac, ip: g.ipv4 })
    };
    let silent = c.faults.agent_silent(vmid) || since.elapsed().as_secs_f64() < c.timing.agent_delay_secs || !c.backend.is_up(vmid).await;
    if silent {
        // PVE learns this only when its `guest-ping` times out (3 s on a real node).
        Cluster::pause(c.timing.agent_ping_timeout_secs).await;
        return Err(ApiError::server("QEMU guest agent is not running"));
    }
    Ok(seen)
}

/// A command the agent took but did not answer in time (the `agent_command_times_out` fault): qemu-server's
/// text (`src/PVE/QMPClient.pm:174-176` with `mux_timeout`'s "got timeout", `Monitor.pm:125-130` for the peer).
async fn command_timeout(c: &Cluster, vmid: u32, command: &str) -> Result<(), ApiError> {
    if c.faults.take_agent_timeout(vmid) {
        Cluster::pause(c.timing.agent_command_timeout_secs).await;
        return Err(ApiError::server(format!("VM {vmid} qga command 'guest-{command}' failed - got timeout")));
    }
    Ok(())
}

/// `POST …/agent/ping`
pub async fn ping(c: &Cluster, node: &str, p: &Params) -> Result<Value, ApiError> {
    agent_ready(c, node, p).await?;
    Ok(json!({"result": {}}))
}

/// An EUI-64 link-local IPv6 address for a MAC.
fn link_local(mac: &str) -> String {
    let bytes: Vec<u8> = mac.split(':').filter_map(|b| u8::from_str_radix(b, 16).ok()).collect();
    if bytes.len() != 6 {
        return "fe80::1".to_string();
    }
    let b0 = bytes[0] ^ 0x02;
    format!(
        "fe80::{:x}:{:x}:{:x}:{:x}",
        u16::from(b0) << 8 | u16::from(bytes[1]),
        u16::from(bytes[2]) << 8 | 0xff,
        0xfe00 | u16::from(bytes[3]),
        u16::from(bytes[4]) << 8 | u16::from(bytes[5])
    )
}

/// `GET …/agent/network-get-interfaces` (the raw `guest-network-get-interfaces` reply)
pub async fn interfaces(c: &Cluster, node: &str, p: &Params) -> Result<Value, ApiError> {
    let seen = agent_ready(c, node, p).await?;
    command_timeout(c, seen.vmid, "network-get-interfaces").await?;
    let mac = seen.mac.to_lowercase();
    let mut eth0_addrs = Vec::new();
    if let Some(ip) = seen.ip {
        eth0_addrs.push(json!({"ip-address-type": "ipv4", "ip-address": ip.to_string(), "prefix": 8}));
    }
    eth0_addrs.push(json!({"ip-address-type": "ipv6", "ip-address": link_local(&mac), "prefix": 64}));
    let stats = json!({"rx-bytes": 0, "rx-packets": 0, "rx-errs": 0, "rx-dropped": 0, "tx-bytes": 0, "tx-packets": 0, "tx-errs": 0, "tx-dropped": 0});
    Ok(json!({"result": [
        {
            "name": "lo",
            "hardware-address": "00:00:00:00:00:00",
            "ip-addresses": [
                {"ip-address-type": "ipv4", "ip-address": "127.0.0.1", "prefix": 8},
                {"ip-address-type": "ipv6", "ip-address": "::1", "prefix": 128}
            ],
            "statistics": stats,
        },
        {
            "name": "eth0",
            "hardware-address": mac,
            "ip-addresses": eth0_addrs,
            "statistics": stats,
        }
    ]}))
}

/// `GET …/agent/get-osinfo`
pub async fn osinfo(c: &Cluster, node: &str, p: &Params) -> Result<Value, ApiError> {
    let _ = agent_ready(c, node, p).await?.vmid;
    Ok(json!({"result": {
        "id": "debian",
        "name": "Debian GNU/Linux",
        "pretty-name": "Debian GNU/Linux 12 (bookworm)",
        "version": "12 (bookworm)",
        "version-id": "12",
        "kernel-release": "6.1.0-40-cloud-amd64",
        "kernel-version": "#1 SMP PREEMPT_DYNAMIC Debian 6.1.153-1 (2025-09-20)",
        "machine": "x86_64",
    }}))
}

/// `GET /nodes/{node}/lxc/{vmid}/interfaces` as pve-container answers it (`src/PVE/API2/LXC.pm:2981-3065`,
/// `src/PVE/LXC.pm:1262-1302`): `null` for a stopped container; when running always `lo`, then `eth0` with
/// `hwaddr`/`hardware-address`, `ip-addresses` (types `inet`/`inet6`) and the deprecated `inet`/`inet6` as
/// `addr/prefix` — only its link-local IPv6 until its IPv4 is configured.
pub async fn lxc_interfaces(c: &Cluster, node: &str, p: &Params) -> Result<Value, ApiError> {
    let vmid = p.need_u32("vmid")?;
    let (since, mac, ip) = {
        let st = c.state();
        let g = st.guest_on(node, vmid, GuestKind::Lxc).map_err(ApiError::server)?;
        let Some(run) = &g.running else {
            return Ok(Value::Null);
        };
        let mac = g.config.get("net0").and_then(|n| net_mac(GuestKind::Lxc, n)).unwrap_or_default().to_lowercase();
        (run.since, mac, g.ipv4)
    };
    let configured = since.elapsed().as_secs_f64() >= c.timing.agent_delay_secs && c.backend.is_up(vmid).await;
    let v6 = link_local(&mac);
    let mut addresses = vec![json!({"ip-address": v6, "ip-address-type": "inet6", "prefix": 64})];
    let mut eth0 = json!({"name": "eth0", "hwaddr": mac, "hardware-address": mac, "inet6": format!("{v6}/64")});
    if let (true, Some(ip), Some(obj)) = (configured, ip, eth0.as_object_mut()) {
        obj.insert("inet".into(), json!(format!("{ip}/8")));
        addresses.insert(0, json!({"ip-address": ip.to_string(), "ip-address-type": "inet", "prefix": 8}));
    }
    eth0["ip-addresses"] = Value::Array(addresses);
    Ok(json!([
        {"name": "lo", "hwaddr": "00:00:00:00:00:00", "hardware-address": "00:00:00:00:00:00", "inet": "127.0.0.1/8", "inet6": "::1/128",
         "ip-addresses": [{"ip-address": "127.0.0.1", "ip-address-type": "inet", "prefix": 8}, {"ip-address": "::1", "ip-address-type": "inet6", "prefix": 128}]},
        eth0
    ]))
}
