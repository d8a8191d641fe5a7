//! Writes one guest's identity into its overlay before boot: hostname, sshd address,
//! the cloud-init NoCloud seed (VMs) or root's authorized_keys (containers).

use std::io;
use std::net::Ipv4Addr;

use crate::backend::{GuestKind, GuestStart};

use super::image::SSHD_LISTEN_DROPIN;
use super::rootfs::GuestRoot;

const SEED_DIR: &str = "/var/lib/cloud/seed/nocloud";
const CLOUD_INIT_DISABLED: &str = "/etc/cloud/cloud-init.disabled";

/// Everything written for `g`; runs while the guest is stopped.
pub fn write_guest_files(root: &GuestRoot, g: &GuestStart) -> io::Result<()> {
    root.write_file(
        "/etc/hostname",
        format!("{}\n", g.hostname).as_bytes(),
        0o644,
    )?;
    root.write_file(
        "/etc/hosts",
        hosts_file(&g.hostname, g.ipv4).as_bytes(),
        0o644,
    )?;
    root.write_file(SSHD_LISTEN_DROPIN, sshd_listen(g.ipv4).as_bytes(), 0o644)?;
    match g.kind {
        GuestKind::Qemu => {
            root.remove_file(CLOUD_INIT_DISABLED)?;
            match &g.cloud_init {
                Some(seed) => {
                    root.ensure_dir(SEED_DIR, 0o700)?;
                    root.write_file(
                        &format!("{SEED_DIR}/meta-data"),
                        seed.meta_data.as_bytes(),
                        0o600,
                    )?;
                    root.write_file(
                        &format!("{SEED_DIR}/user-data"),
                        seed.user_data.as_bytes(),
                        0o600,
                    )?;
                }
                None => {
                    // No cloud-init drive: nothing for cloud-init to find.
                    root.remove_file(&format!("{SEED_DIR}/meta-data"))?;
                    root.remove_file(&format!("{SEED_DIR}/user-data"))?;
                }
            }
        }
        GuestKind::Lxc => {
            root.touch(CLOUD_INIT_DISABLED)?;
            if let Some((private, public)) = &g.lxc_host_key {
                root.write_file("/etc/ssh/ssh_host_ed25519_key", private.as_bytes(), 0o600)?;
                root.write_file("/etc/ssh/ssh_host_ed25519_key.pub", public.as_bytes(), 0o644)?;
            }
            if let Some(keys) = &g.lxc_ssh_public_keys {
                root.ensure_dir("/root/.ssh", 0o700)?;
                root.write_file(
                    "/root/.ssh/authorized_keys",
                    authorized_keys(keys).as_bytes(),
                    0o600,
                )?;
            }
        }
    }
    Ok(())
}

/// `ListenAddress <ipv4>:22`: guests share the host network, each on its own address.
pub fn sshd_listen(ipv4: Ipv4Addr) -> String {
    format!("# pvedeploy-sim: this guest's address\nListenAddress {ipv4}:22\n")
}

fn hosts_file(hostname: &str, ipv4: Ipv4Addr) -> String {
    format!(
        "127.0.0.1\tlocalhost\n{ipv4}\t{hostname}\n\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         ff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
    )
}

/// Keys one per line with a final newline, blank lines dropped.
fn authorized_keys(keys: &str) -> String {
    let mut out = String::new();
    for line in keys.lines().map(str::trim).filter(|l| !l.is_empty()) {
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::CloudInitSeed;
    use std::os::unix::fs::PermissionsExt;

    fn start(kind: GuestKind) -> GuestStart {
        GuestStart {
            vmid: 100,
            node: "pve1".into(),
            kind,
            hostname: "web".into(),
            ipv4: Ipv4Addr::new(127, 77, 0, 5),
            mac: "BC:24:11:00:00:01".into(),
            cloud_init: Some(CloudInitSeed {
                instance_id: "iid".into(),
                meta_data: "instance-id: iid\n".into(),
                user_data: "#cloud-config\n".into(),
            }),
            lxc_ssh_public_keys: Some("ssh-ed25519 AAAA a\r\n\nssh-ed25519 BBBB b".into()),
            lxc_host_key: Some(("PRIVATE".into(), "ssh-ed25519 HOST root@ct".into())),
        }
    }

    fn mode(p: &std::path::Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn vm_gets_a_private_seed_and_listen_address() {
        let tmp = tempfile::tempdir().unwrap();
        write_guest_files(&GuestRoot::new(tmp.path()), &start(GuestKind::Qemu)).unwrap();
        let seed = tmp.path().join("var/lib/cloud/seed/nocloud");
        assert_eq!(mode(&seed), 0o700);
        assert_eq!(mode(&seed.join("user-data")), 0o600);
        assert_eq!(
            std::fs::read_to_string(seed.join("meta-data")).unwrap(),
            "instance-id: iid\n"
        );
        let listen =
            std::fs::read_to_string(tmp.path().join(SSHD_LISTEN_DROPIN.trim_start_matches('/')))
                .unwrap();
        assert!(listen.contains("ListenAddress 127.77.0.5:22"));
        assert!(!tmp.path().join("root/.ssh").exists());
    }

    #[test]
    fn container_gets_root_keys_and_no_cloud_init() {
        let tmp = tempfile::tempdir().unwrap();
        write_guest_files(&GuestRoot::new(tmp.path()), &start(GuestKind::Lxc)).unwrap();
        assert!(tmp.path().join("etc/cloud/cloud-init.disabled").exists());
        let ak = tmp.path().join("root/.ssh/authorized_keys");
        assert_eq!(
            std::fs::read_to_string(&ak).unwrap(),
            "ssh-ed25519 AAAA a\nssh-ed25519 BBBB b\n"
        );
        assert_eq!(mode(&ak), 0o600);
        assert_eq!(mode(&tmp.path().join("root/.ssh")), 0o700);
        let hk = tmp.path().join("etc/ssh/ssh_host_ed25519_key");
        assert_eq!(std::fs::read_to_string(&hk).unwrap(), "PRIVATE");
        assert_eq!(mode(&hk), 0o600);
        assert!(!tmp
            .path()
            .join("var/lib/cloud/seed/nocloud/user-data")
            .exists());
    }
}
