//! Test-side OpenSSH: throwaway ed25519 keys, strict-host-key `ssh`/`sftp` commands, `ssh-keyscan`.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A key pair on disk; `public` is `ssh-ed25519 AAAA…` without the comment.
pub struct Key {
    pub private: PathBuf,
    pub public: String,
}

pub fn keygen(dir: &Path, name: &str) -> Key {
    let private = dir.join(name);
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&private)
        .status()
        .expect("ssh-keygen");
    assert!(st.success(), "ssh-keygen failed");
    let public = std::fs::read_to_string(private.with_extension("pub")).unwrap();
    let public = public.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    Key { private, public }
}

/// `ssh`/`sftp` with `key`, strict host-key checking against `known_hosts`, no prompts.
pub fn openssh(program: &str, key: &Key, known_hosts: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.arg("-i").arg(&key.private);
    for opt in ["StrictHostKeyChecking=yes", "BatchMode=yes", "ConnectTimeout=10", "IdentitiesOnly=yes"] {
        cmd.arg("-o").arg(opt);
    }
    cmd.arg("-o").arg(format!("UserKnownHostsFile={}", known_hosts.display()));
    cmd
}

/// `ssh-keyscan -t ed25519 ip` → `ip ssh-ed25519 AAAA…`
pub fn keyscan(ip: Ipv4Addr) -> String {
    let out = Command::new("ssh-keyscan").args(["-T", "5", "-t", "ed25519"]).arg(ip.to_string()).output().expect("ssh-keyscan");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Whether something is mounted exactly on `path`.
pub fn mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.to_string_lossy();
    info.lines().any(|l| l.split(' ').nth(4) == Some(p.as_ref()))
}
