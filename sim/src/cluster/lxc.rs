//! Containers: the node's CT list and `POST /nodes/{node}/lxc` (from a `vztmpl` volume, with
//! `rootfs`, `net0`, `ssh-public-keys`, …).

use std::sync::Arc;

use serde_json::{json, Value};

use super::config_update::apply_changes;
use super::nodes::guest_summary;
use super::qemu::vmid_unused;
use super::state::{Guest, HostKey};
use super::storage::file_volume_path;
use super::{perms, ApiCall, Cluster};
use crate::backend::GuestKind;
use crate::http::envelope::ApiError;

/// `GET /nodes/{node}/lxc`
pub fn list(c: &Cluster, node: &str) -> Value {
    let st = c.state();
    Value::Array(st.guests.values().filter(|g| g.node == node && g.kind == GuestKind::Lxc).map(guest_summary).collect())
}

/// Create-only parameters that are not config keys.
const CREATE_CONTROL: &[&str] = &[
    "node", "vmid", "ostemplate", "storage", "password", "ssh-public-keys", "start", "pool", "restore", "force",
    "unique", "ignore-unpack-errors", "bwlimit", "ha-managed",
];

/// `ostype` from the template file name (`debian-12-standard…` → `debian`).
fn ostype_of(ostemplate: &str) -> String {
    let file = ostemplate.rsplit('/').next().unwrap_or_default();
    let distro = file.split(['-', '_']).next().unwrap_or("unmanaged");
    match distro {
        "debian" | "ubuntu" | "centos" | "fedora" | "opensuse" | "archlinux" | "alpine" | "gentoo" | "nixos" | "devuan" => distro.to_string(),
        "rockylinux" | "almalinux" => "centos".to_string(),
        _ => "unmanaged".to_string(),
    }
}

/// `POST /nodes/{node}/lxc` (`vzcreate`)
pub fn create(c: &Arc<Cluster>, node: &str, call: &ApiCall) -> Result<Value, ApiError> {
    let p = &call.params;
    if p.bool("restore") == Some(true) {
        return super::backups::restore::restore(c, node, GuestKind::Lxc, call);
    }
    let vmid = p.need_u32("vmid")?;
    let ostemplate = p.need("ostemplate")?;
    let storage = p.str("storage").unwrap_or_else(|| "local".to_string());
    let start_after = p.bool("start").unwrap_or(false);
    let ssh_keys = p.str("ssh-public-keys");
    let pool = p.str("pool");
    let mut set = p.without(CREATE_CONTROL);
    create_checks(c, call, vmid, pool.as_deref(), &ostemplate, &storage, &set)?;
    if !set.iter().any(|(k, _)| k == "rootfs") {
        set.push(("rootfs".into(), format!("{storage}:4")));
    }
    if !set.iter().any(|(k, _)| k == "ostype") {
        set.push(("ostype".into(), ostype_of(&ostemplate)));
    }
    set.push(("arch".into(), p.str("arch").unwrap_or_else(|| "amd64".to_string())));
    for (key, default) in [("memory", "512"), ("swap", "512")] {
        if !set.iter().any(|(k, _)| k == key) {
            set.push((key.into(), default.into()));
        }
    }
    {
        let mut st = c.state();
        vmid_unused(&st, vmid).map_err(ApiError::server)?;
        let Some((tmpl_storage, volname)) = ostemplate.split_once(':') else {
            return Err(ApiError::server(format!("unable to parse volume ID '{ostemplate}'")));
        };
        if !st.storage_on_node(tmpl_storage, node) {
            return Err(ApiError::server(format!("storage '{tmpl_storage}' does not exist")));
        }
        if !volname.starts_with("vztmpl/") {
            return Err(ApiError::server(format!("volume '{ostemplate}' is not a container template (vztmpl)")));
        }
        let mut g = Guest::new(vmid, node, GuestKind::Lxc);
        g.config.insert("lock".into(), "create".into());
        g.lxc_ssh_keys = ssh_keys;
        st.guests.insert(vmid, g);
    }
    let node_owned = node.to_string();
    let upid = c.spawn_task(node, "vzcreate", &vmid.to_string(), &call.ident, move |c, task| async move {
        Cluster::pause(c.timing.task_secs).await;
        let result = {
            let mut st = c.state();
            // Only the volume name is checked before the fork; a template file missing on this node fails the
            // worker after the rootfs was allocated, and the worker cleans up (pve-container
            // `src/PVE/LXC/Create.pm:645-646` warns "can't find file", `restore_archive` dies in
            // `abs_filesystem_path`, `src/PVE/API2/LXC.pm:616-629` frees the disks and reports
            // "unable to create CT N - …").
            let r = apply_changes(&mut st, vmid, &set, &[]).map_err(|e| e.to_string()).and_then(|_| {
                match file_volume_path(&c.state_dir, &st, &ostemplate, &node_owned).is_some_and(|path| path.is_file()) {
                    true => Ok(()),
                    false => {
                        task.log(format!("WARN: can't find file '{ostemplate}'"));
                        Err(format!("can't find file '{ostemplate}'"))
                    }
                }
            });
            if r.is_ok() {
                task.log(format!("extracting archive '{ostemplate}'"));
            }
            if let Some(g) = st.guests.get_mut(&vmid) {
                g.config.remove("lock");
            }
            if r.is_err() {
                let vols: Vec<String> = st.volumes.values().filter(|v| v.vmid == vmid).map(|v| v.volid.clone()).collect();
                for v in vols {
                    super::storage::free(&mut st, &v, &node_owned);
                }
                st.guests.remove(&vmid);
            }
            r
        };
        result.map_err(|e| format!("unable to create CT {vmid} - {e}"))?;
        task.log("Total bytes read: 125440000 (120MiB, 298MiB/s)");
        // As PVE's container setup does: fresh host keys made on the host with ssh-keygen, written
        // into the container, their fingerprints printed to the task log.
        let hostname = c.state().guests.get(&vmid).and_then(|g| g.config.get("hostname").cloned()).unwrap_or_else(|| format!("CT{vmid}"));
        let comment = format!("root@{}", hostname.split('.').next().unwrap_or(&hostname));
        task.log("Creating SSH host key 'ssh_host_ed25519_key' - this may take some time ...");
        let key = host_key(&comment).await.map_err(|e| format!("unable to create CT {vmid} - ssh-keygen failed: {e}"))?;
        task.log(format!("done: {} {comment}", key.fingerprint));
        if let Some(g) = c.state().guests.get_mut(&vmid) {
            g.lxc_host_key = Some(key);
        }
        if let Some(pool) = &pool {
            perms::add_to_pool(&c.access, vmid, pool);
        }
        if start_after {
            return super::power::boot(&c, &node_owned, vmid, GuestKind::Lxc).await;
        }
        Ok(0)
    });
    Ok(json!(upid))
}

/// The checks of pve-container's `create_vm` before the fork (`src/PVE/API2/LXC.pm:270-360`), in its order: a
/// privileged container needs `Sys.Modify` on `/`; the pool exists; `VM.Allocate` on the guest or the pool; every
/// option's privilege (`check_ct_modify_config_perm`, with the pool); the template readable
/// (`check_volume_access`); `Datastore.AllocateSpace` on the root disk's storage.
fn create_checks(c: &Cluster, call: &ApiCall, vmid: u32, pool: Option<&str>, ostemplate: &str, storage: &str, set: &[(String, String)]) -> Result<(), ApiError> {
    let ident = &call.ident;
    let unprivileged = call.params.bool("unprivileged").unwrap_or(true);
    if !unprivileged {
        perms::check(ident, "/", &["Sys.Modify"], false)?;
    }
    if let Some(pool) = pool {
        perms::pool_exists(&c.access, pool)?;
    }
    perms::allocate(ident, vmid, pool)?;
    let options: Vec<(String, String)> = set.iter().filter(|(k, _)| k != "unprivileged").cloned().collect();
    perms::lxc_modify_config(ident, vmid, pool, &Default::default(), &options, &[], unprivileged)?;
    perms::volume_access(ident, vmid, ostemplate)?;
    let rootfs_storage = set
        .iter()
        .find(|(k, _)| k == "rootfs")
        .and_then(|(_, v)| crate::schema::propstring::get_key(v, "volume", "volume"))
        .and_then(|v| v.split_once(':').map(|(s, _)| s.to_string()))
        .unwrap_or_else(|| storage.to_string());
    perms::check(ident, &format!("/storage/{rootfs_storage}"), &["Datastore.AllocateSpace"], false)
}

/// Generates an ed25519 host key with `ssh-keygen`, as PVE's `rewrite_ssh_host_keys` does.
async fn host_key(comment: &str) -> std::io::Result<HostKey> {
    let dir = std::env::temp_dir().join(format!("pvesim-hostkey-{}-{}", std::process::id(), rand::random::<u64>()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("ssh_host_ed25519_key");
    let out = tokio::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-E", "sha256", "-C", comment, "-f"])
        .arg(&file)
        .output()
        .await;
    let result = (|| {
        let out = out?;
        if !out.status.success() {
            return Err(std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()));
        }
        let private = std::fs::read_to_string(&file)?;
        let public = std::fs::read_to_string(file.with_extension("pub"))?;
        let fp = std::process::Command::new("ssh-keygen").args(["-l", "-E", "sha256", "-f"]).arg(file.with_extension("pub")).output()?;
        let fingerprint = String::from_utf8_lossy(&fp.stdout).split_whitespace().nth(1).unwrap_or_default().to_string();
        Ok(HostKey { private, public, fingerprint })
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
