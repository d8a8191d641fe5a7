//! A pool of static IPv4 addresses for guests (`first-last/prefix`, optional gateway) and the
//! network settings Proxmox expects for one of them (`ipconfig0`, the `ip=` of a container's `net0`). Pure.

use std::net::{IpAddr, Ipv4Addr};

/// Static addresses the agent hands out, one per guest, instead of DHCP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPool {
    first: Ipv4Addr,
    last: Ipv4Addr,
    prefix: u8,
    gateway: Option<Ipv4Addr>,
}

/// How the guest's first interface gets its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addressing {
    Dhcp,
    Static { address: Ipv4Addr, prefix: u8, gateway: Option<Ipv4Addr> },
}

impl AddressPool {
    pub const RULE: &'static str = "must be FIRST-LAST/PREFIX with IPv4 addresses, FIRST <= LAST, both in one /PREFIX network (e.g. 10.0.20.50-10.0.20.99/24)";

    /// Parses `10.0.20.50-10.0.20.99/24`; `gateway` must lie in the same network and outside the range.
    pub fn parse(range: &str, gateway: Option<&str>) -> Result<Self, String> {
        let (span, prefix) = range.split_once('/').ok_or_else(|| Self::RULE.to_string())?;
        let (a, b) = span.split_once('-').ok_or_else(|| Self::RULE.to_string())?;
        let first: Ipv4Addr = a.trim().parse().map_err(|_| Self::RULE.to_string())?;
        let last: Ipv4Addr = b.trim().parse().map_err(|_| Self::RULE.to_string())?;
        let prefix: u8 = prefix.trim().parse().ok().filter(|p| (1..=32).contains(p)).ok_or_else(|| Self::RULE.to_string())?;
        if u32::from(first) > u32::from(last) || network(first, prefix) != network(last, prefix) {
            return Err(Self::RULE.to_string());
        }
        let gateway = match gateway {
            None => None,
            Some(g) => {
                let g: Ipv4Addr = g.trim().parse().map_err(|_| "gateway must be an IPv4 address".to_string())?;
                if network(g, prefix) != network(first, prefix) {
                    return Err(format!("gateway {g} must be in the pool's network {}/{prefix}", Ipv4Addr::from(network(first, prefix))));
                }
                if (u32::from(first)..=u32::from(last)).contains(&u32::from(g)) {
                    return Err(format!("gateway {g} must not be one of the pool's addresses"));
                }
                Some(g)
            }
        };
        Ok(Self { first, last, prefix, gateway })
    }

    /// Every address of the pool, lowest first.
    pub fn addresses(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        (u32::from(self.first)..=u32::from(self.last)).map(Ipv4Addr::from)
    }

    pub fn contains(&self, a: Ipv4Addr) -> bool {
        (u32::from(self.first)..=u32::from(self.last)).contains(&u32::from(a))
    }

    pub fn size(&self) -> u32 {
        u32::from(self.last) - u32::from(self.first) + 1
    }

    pub fn addressing(&self, address: Ipv4Addr) -> Addressing {
        Addressing::Static { address, prefix: self.prefix, gateway: self.gateway }
    }
}

impl std::fmt::Display for AddressPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}/{}", self.first, self.last, self.prefix)
    }
}

impl Addressing {
    /// The `ip=…[,gw=…]` part shared by a VM's `ipconfig0` and a container's `net0`.
    pub fn ip_settings(&self) -> String {
        match self {
            Addressing::Dhcp => "ip=dhcp".into(),
            Addressing::Static { address, prefix, gateway: None } => format!("ip={address}/{prefix}"),
            Addressing::Static { address, prefix, gateway: Some(g) } => format!("ip={address}/{prefix},gw={g}"),
        }
    }

    pub fn static_address(&self) -> Option<Ipv4Addr> {
        match self {
            Addressing::Static { address, .. } => Some(*address),
            Addressing::Dhcp => None,
        }
    }
}

fn network(a: Ipv4Addr, prefix: u8) -> u32 {
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix)) };
    u32::from(a) & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_renders() {
        let p = AddressPool::parse("10.0.20.50-10.0.20.52/24", Some("10.0.20.1")).unwrap();
        assert_eq!(p.size(), 3);
        let all: Vec<String> = p.addresses().map(|a| a.to_string()).collect();
        assert_eq!(all, ["10.0.20.50", "10.0.20.51", "10.0.20.52"]);
        assert_eq!(p.addressing("10.0.20.51".parse().unwrap()).ip_settings(), "ip=10.0.20.51/24,gw=10.0.20.1");
        assert_eq!(AddressPool::parse("127.78.0.10-127.78.0.20/8", None).unwrap().addressing("127.78.0.10".parse().unwrap()).ip_settings(), "ip=127.78.0.10/8");
        assert_eq!(Addressing::Dhcp.ip_settings(), "ip=dhcp");
    }

    #[test]
    fn rejects_what_cannot_work() {
        for bad in ["10.0.0.5", "10.0.0.9-10.0.0.5/24", "10.0.0.250-10.0.1.5/24", "10.0.0.1-10.0.0.5/33", "a-b/24", "10.0.0.1-10.0.0.5"] {
            assert!(AddressPool::parse(bad, None).is_err(), "{bad}");
        }
        assert!(AddressPool::parse("10.0.0.10-10.0.0.20/24", Some("10.0.1.1")).unwrap_err().contains("network"));
        assert!(AddressPool::parse("10.0.0.10-10.0.0.20/24", Some("10.0.0.15")).unwrap_err().contains("must not be one"));
    }
}

/// An IP network, `10.0.0.0/8` or `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub const RULE: &'static str = "must be an IP network such as 10.0.0.0/8, 192.168.1.10/32 or fd00::/8";

    pub fn parse(raw: &str) -> Result<Cidr, String> {
        let (ip, prefix) = raw.trim().split_once('/').ok_or_else(|| Self::RULE.to_string())?;
        let net: IpAddr = ip.parse().map_err(|_| Self::RULE.to_string())?;
        let prefix: u8 = prefix.parse().map_err(|_| Self::RULE.to_string())?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(Self::RULE.to_string());
        }
        Ok(Cidr { net, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |ip: IpAddr| -> Option<u128> {
            match (ip, self.net) {
                (IpAddr::V4(a), IpAddr::V4(_)) => Some(u128::from(u32::from(a)) << 96),
                (IpAddr::V6(a), IpAddr::V6(_)) => Some(u128::from(a)),
                _ => None,
            }
        };
        let (Some(a), Some(n)) = (bits(ip), bits(self.net)) else { return false };
        // Both aligned to the top bit (an IPv4 address in the top 32), so the prefix counts from there.
        let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(self.prefix)) };
        a & mask == n & mask
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// Why `ip` is not an address a public service lives at (`None`: it is public): loopback, the private ranges
/// (RFC 1918), link-local (cloud metadata at 169.254.169.254), shared CGNAT space (RFC 6598), unique local IPv6
/// (RFC 4193), unspecified, multicast, broadcast, IPv4-mapped forms of those.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_private() {
                Some("private (RFC 1918)")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if o[0] == 100 && (64..128).contains(&o[1]) {
                Some("shared address space (RFC 6598)")
            } else if v4.is_unspecified() || o[0] == 0 {
                Some("unspecified")
            } else if v4.is_multicast() || v4.is_broadcast() || o[0] >= 240 {
                Some("multicast or reserved")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return non_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if first & 0xfe00 == 0xfc00 {
                Some("unique local (RFC 4193)")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if v6.is_multicast() {
                Some("multicast or reserved")
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod outbound_tests {
    use super::*;

    #[test]
    fn public_and_non_public_addresses() {
        for (ip, kind) in [
            ("127.0.0.1", Some("loopback")),
            ("10.1.2.3", Some("private (RFC 1918)")),
            ("172.16.0.1", Some("private (RFC 1918)")),
            ("192.168.1.1", Some("private (RFC 1918)")),
            ("169.254.169.254", Some("link-local")),
            ("100.64.0.1", Some("shared address space (RFC 6598)")),
            ("0.0.0.0", Some("unspecified")),
            ("::1", Some("loopback")),
            ("fd00::1", Some("unique local (RFC 4193)")),
            ("fe80::1", Some("link-local")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("140.82.112.3", None),
            ("2606:50c0:8000::153", None),
        ] {
            assert_eq!(non_public(ip.parse().unwrap()), kind, "{ip}");
        }
    }

    #[test]
    fn networks() {
        let n = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(n.contains("10.255.0.1".parse().unwrap()) && !n.contains("11.0.0.1".parse().unwrap()) && !n.contains("::1".parse().unwrap()));
        let one = Cidr::parse("127.0.0.1/32").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()) && !one.contains("127.0.0.2".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("fd00::/8").unwrap().contains("fd12::1".parse().unwrap()));
        for bad in ["10.0.0.0", "10.0.0.0/33", "x/8", "::/129"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }
}
