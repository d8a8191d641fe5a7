//! `Upid`: a PVE task id (`UPID:node:pid:pstart:starttime:type:id:user:`), parsed so that it knows its node.

use std::fmt;
use std::str::FromStr;

use crate::core::names::NodeName;

use super::error::PveError;

/// A task id as PVE returns it from every asynchronous call. The node in it is where the task
/// runs, so status and log queries need nothing else. (Boxed: errors carry it and stay small.)
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Upid(Box<Parts>);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Parts {
    raw: String,
    node: NodeName,
    pid: u32,
    starttime: u64,
    task_type: String,
    id: String,
    user: String,
}

impl Upid {
    /// Parses `UPID:pve1:000ABCDE:0012F4A1:6650A3B2:qmclone:9000:root@pam!pvedeploy:`
    /// (pid, pstart and starttime in hex; `id` may be empty).
    pub fn parse(s: &str) -> Result<Self, PveError> {
        let bad = |why: &str| PveError::decode("UPID", format!("'{s}': {why}"));
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 9 || parts[0] != "UPID" || !parts[8].is_empty() {
            return Err(bad("expected UPID:node:pid:pstart:starttime:type:id:user:"));
        }
        let node = NodeName::parse(parts[1]).map_err(|_| bad("invalid node name"))?;
        let hex = |field: &str, name: &str| u64::from_str_radix(field, 16).map_err(|_| bad(&format!("{name} is not hex")));
        let pid = u32::try_from(hex(parts[2], "pid")?).map_err(|_| bad("pid out of range"))?;
        hex(parts[3], "pstart")?;
        let starttime = hex(parts[4], "starttime")?;
        if parts[5].is_empty() || parts[7].is_empty() || parts.iter().any(|p| p.chars().any(char::is_whitespace)) {
            return Err(bad("empty task type or user, or whitespace"));
        }
        Ok(Upid(Box::new(Parts {
            raw: s.to_string(),
            node,
            pid,
            starttime,
            task_type: parts[5].to_string(),
            id: parts[6].to_string(),
            user: parts[7].to_string(),
        })))
    }

    pub fn as_str(&self) -> &str {
        &self.0.raw
    }

    /// The node the task runs on.
    pub fn node(&self) -> &NodeName {
        &self.0.node
    }

    pub fn pid(&self) -> u32 {
        self.0.pid
    }

    /// Unix seconds.
    pub fn starttime(&self) -> u64 {
        self.0.starttime
    }

    /// `qmclone`, `qmstart`, `vzcreate`, …
    pub fn task_type(&self) -> &str {
        &self.0.task_type
    }

    /// Usually the VMID the task works on.
    pub fn id(&self) -> &str {
        &self.0.id
    }

    /// `user@realm` or `user@realm!token`.
    pub fn user(&self) -> &str {
        &self.0.user
    }
}

impl fmt::Display for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.raw)
    }
}

impl FromStr for Upid {
    type Err = PveError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Upid::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pves_task_ids() {
        let u = Upid::parse("UPID:pve1:000ABCDE:0012F4A1:6650A3B2:qmclone:9000:root@pam!pvedeploy:").unwrap();
        assert_eq!(u.node().as_str(), "pve1");
        assert_eq!(u.pid(), 0xABCDE);
        assert_eq!(u.starttime(), 0x6650A3B2);
        assert_eq!((u.task_type(), u.id(), u.user()), ("qmclone", "9000", "root@pam!pvedeploy"));
        assert_eq!(u.to_string(), "UPID:pve1:000ABCDE:0012F4A1:6650A3B2:qmclone:9000:root@pam!pvedeploy:");
        let empty_id: Upid = "UPID:node-2:00001234:00000001:00000002:aptupdate::root@pam:".parse().unwrap();
        assert_eq!(empty_id.id(), "");
    }

    #[test]
    fn rejects_what_is_not_a_upid() {
        for bad in [
            "",
            "UPID:pve1:000ABCDE:0012F4A1:6650A3B2:qmclone:9000:root@pam",
            "XPID:pve1:000ABCDE:0012F4A1:6650A3B2:qmclone:9000:root@pam:",
            "UPID:pve_1:000ABCDE:0012F4A1:6650A3B2:qmclone:9000:root@pam:",
            "UPID:pve1:zz:0012F4A1:6650A3B2:qmclone:9000:root@pam:",
            "UPID:pve1:000ABCDE:0012F4A1:6650A3B2::9000:root@pam:",
            "UPID:pve1:000ABCDE:0012F4A1:6650A3B2:qm clone:9000:root@pam:",
        ] {
            assert!(matches!(Upid::parse(bad), Err(PveError::Decode { .. })), "{bad}");
        }
    }
}
