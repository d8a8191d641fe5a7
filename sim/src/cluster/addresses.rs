//! The address pool of one simulator instance: its own /24s inside 127.77.0.0–127.99.255.255,
//! claimed machine-wide, handing out only addresses nothing answers on at :22.
//!
//! Parallel tests each start a simulator, and real guests share the host network, so two
//! instances must never hand out the same address. Each instance claims a randomly chosen
//! /24 by holding an exclusive `flock` on `$TMPDIR/pvedeploy-sim-nets/127.A.B` (released by
//! the kernel when the process dies, so a crashed test frees its net); a /24 another
//! process holds is skipped. Within the instance, an address where a TCP connect to :22
//! succeeds (anything else on the machine) is skipped as well. A pool claims its first /24
//! lazily (a simulator that never starts a guest claims nothing) and another when one is full.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

/// Second octets of the nets the pool may claim (127.77.x.y … 127.99.x.y).
const SECOND_OCTETS: std::ops::RangeInclusive<u8> = 77..=99;
/// How long a :22 probe waits (a loopback address nothing listens on refuses at once).
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

/// One claimed /24: `127.A.B.0/24`, with the lock that makes it ours.
#[derive(Debug)]
struct ClaimedNet {
    a: u8,
    b: u8,
    /// `None` when no lock directory was usable (the net is then only random, not exclusive).
    _lock: Option<File>,
}

/// The /24s this simulator instance owns.
#[derive(Debug, Default)]
pub struct AddressPool {
    nets: Vec<ClaimedNet>,
}

impl AddressPool {
    /// A free address (`.1`–`.254` of an owned /24) not in `used` and with nothing on :22;
    /// claims a further /24 when the owned ones are full. `None` when every net is taken.
    pub fn next_free(&mut self, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        loop {
            for net in &self.nets {
                let found = (1..=254u8)
                    .map(|d| Ipv4Addr::new(127, net.a, net.b, d))
                    .find(|ip| !used.contains(ip) && !answers_on_22(*ip));
                if found.is_some() {
                    return found;
                }
            }
            let net = self.claim()?;
            tracing::info!(net = %format!("127.{}.{}.0/24", net.a, net.b), "simulator claimed a guest address net");
            self.nets.push(net);
        }
    }

    /// The owned /24s as `(A, B)` of `127.A.B.0/24` (kept across restarts of a persistent simulator).
    pub fn nets(&self) -> Vec<(u8, u8)> {
        self.nets.iter().map(|n| (n.a, n.b)).collect()
    }

    /// Takes back the /24s a previous run of this simulator owned, so its guests keep their addresses. A net
    /// another simulator holds meanwhile is used all the same (the guests' addresses are part of the restored
    /// cluster), with an error logged: a guest whose address is taken then fails to start (`AddressInUse`).
    pub fn reclaim(&mut self, nets: &[(u8, u8)]) {
        let dir = lock_dir();
        for &(a, b) in nets {
            if self.nets.iter().any(|c| (c.a, c.b) == (a, b)) {
                continue;
            }
            let lock = dir.as_ref().and_then(|d| File::options().create(true).truncate(false).write(true).open(d.join(format!("127.{a}.{b}"))).ok());
            let lock = match lock {
                Some(f) if f.try_lock().is_ok() => Some(f),
                _ => {
                    tracing::error!(net = %format!("127.{a}.{b}.0/24"), "another simulator holds this restored guest net; its guests' addresses may clash");
                    None
                }
            };
            self.nets.push(ClaimedNet { a, b, _lock: lock });
        }
    }

    /// Claims a /24 no other simulator on this machine holds, starting at a random one.
    fn claim(&self) -> Option<ClaimedNet> {
        let first = u32::from(*SECOND_OCTETS.start());
        let count = (u32::from(*SECOND_OCTETS.end()) - first + 1) * 256;
        let start = rand::random_range(0..count);
        let dir = lock_dir();
        for i in 0..count {
            let n = (start + i) % count;
            let (a, b) = ((first + n / 256) as u8, (n % 256) as u8);
            if self.nets.iter().any(|c| (c.a, c.b) == (a, b)) {
                continue;
            }
            let Some(dir) = &dir else {
                return Some(ClaimedNet { a, b, _lock: None });
            };
            let Ok(file) = File::options().create(true).truncate(false).write(true).open(dir.join(format!("127.{a}.{b}")))
            else {
                continue;
            };
            if file.try_lock().is_ok() {
                return Some(ClaimedNet { a, b, _lock: Some(file) });
            }
        }
        None
    }
}

/// `$TMPDIR/pvedeploy-sim-nets` (mode 1777 so root and non-root simulators share it), or
/// `None`, with a warning, when it cannot be used.
fn lock_dir() -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join("pvedeploy-sim-nets");
    if !dir.is_dir() {
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "no lock directory for guest nets; picking one at random");
            return None;
        }
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777));
    }
    Some(dir)
}

/// Whether something accepts TCP connections on `ip:22`.
fn answers_on_22(ip: Ipv4Addr) -> bool {
    TcpStream::connect_timeout(&SocketAddr::from((ip, 22)), PROBE_TIMEOUT).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_pools_never_share_a_net() {
        let (mut p, mut q) = (AddressPool::default(), AddressPool::default());
        let used = BTreeSet::new();
        let a = p.next_free(&used).expect("address");
        let b = q.next_free(&used).expect("address");
        assert_eq!(a.octets()[0], 127);
        assert!(SECOND_OCTETS.contains(&a.octets()[1]) && SECOND_OCTETS.contains(&b.octets()[1]));
        assert_ne!(a.octets()[..3], b.octets()[..3], "{a} and {b} are in the same /24");
    }

    #[test]
    fn a_restored_pool_takes_back_its_nets() {
        let mut p = AddressPool::default();
        let first = p.next_free(&BTreeSet::new()).expect("address");
        let nets = p.nets();
        drop(p);
        let mut q = AddressPool::default();
        q.reclaim(&nets);
        assert_eq!(q.nets(), nets);
        assert_eq!(q.next_free(&BTreeSet::new()), Some(first));
    }

    #[test]
    fn a_full_net_leads_to_another() {
        let mut p = AddressPool::default();
        let mut used = BTreeSet::new();
        let first = p.next_free(&used).expect("address");
        for d in 1..=254u8 {
            used.insert(Ipv4Addr::new(127, first.octets()[1], first.octets()[2], d));
        }
        let next = p.next_free(&used).expect("address in a second net");
        assert_ne!(first.octets()[..3], next.octets()[..3]);
        assert_eq!(p.nets.len(), 2);
    }
}
