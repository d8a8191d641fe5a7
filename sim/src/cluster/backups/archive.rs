//! The backup archive on disk: a tar (compressed as `compress` asks) holding the guest's config where PVE keeps it
//! (`./etc/vzdump/pct.conf` for containers, `./qemu-server.conf` for VMs; pve-storage `Storage.pm:1938-1978`
//! `extract_vzdump_config`) and, where the backend keeps the guest's disk as files (real guests), those files. A VM
//! backup is named `.vma` as PVE names it, but holds the same tar (the sim has no VMA writer). Written and read
//! with GNU tar, as PVE's container backups are.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::backend::GuestKind;

/// Where the config sits inside the archive.
pub fn config_member(kind: GuestKind) -> &'static str {
    match kind {
        GuestKind::Lxc => "./etc/vzdump/pct.conf",
        GuestKind::Qemu => "./qemu-server.conf",
    }
}

/// The container's SSH host key inside its root file system (PVE's `rewrite_ssh_host_keys` writes it there).
pub const HOST_KEY: &str = "./etc/ssh/ssh_host_ed25519_key";

/// `compress` → (tar's option, PVE's extension) (`VZDump.pm:840-869` `compressor_info`).
pub fn compressor(compress: Option<&str>) -> Result<Option<(&'static str, &'static str)>, String> {
    Ok(match compress.unwrap_or("0") {
        "0" => None,
        "1" | "lzo" => Some(("--lzop", "lzo")),
        "gzip" => Some(("--gzip", "gz")),
        "zstd" => Some(("--zstd", "zst")),
        other => return Err(format!("internal error - unknown compression option '{other}'")),
    })
}

fn run(cmd: &mut Command) -> Result<Vec<u8>, String> {
    let out = cmd.output().map_err(|e| format!("unable to run tar: {e}"))?;
    if !out.status.success() {
        return Err(format!("command 'tar' failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(out.stdout)
}

/// What goes into one archive.
pub struct Contents {
    pub kind: GuestKind,
    pub config: String,
    /// A container's host key (private, public), for guests whose disk the backend does not keep.
    pub host_key: Option<(String, String)>,
    /// The guest's files (the overlay's upper layer of a real guest).
    pub disk: Option<PathBuf>,
}

/// Writes the archive to `target` through a `.dat` file renamed at the end (`VZDump.pm:1003-1004`, `1206-1207`).
pub fn write(target: &Path, contents: &Contents, compress: Option<&str>) -> Result<u64, String> {
    let staging = target.with_extension("tmp");
    let dat = target.with_extension("dat");
    let _ = std::fs::remove_dir_all(&staging);
    let io = |e: std::io::Error| format!("unable to create temporary directory '{}': {e}", staging.display());
    let conf = staging.join(config_member(contents.kind).trim_start_matches("./"));
    std::fs::create_dir_all(conf.parent().unwrap_or(&staging)).map_err(io)?;
    std::fs::write(&conf, &contents.config).map_err(io)?;
    if let Some((private, public)) = &contents.host_key {
        let key = staging.join(HOST_KEY.trim_start_matches("./"));
        std::fs::create_dir_all(key.parent().unwrap_or(&staging)).map_err(io)?;
        std::fs::write(&key, private).map_err(io)?;
        std::fs::write(key.with_extension("pub"), public).map_err(io)?;
    }
    let mut tar = Command::new("tar");
    tar.arg("--create").arg("--file").arg(&dat).args(["--numeric-owner", "--xattrs", "--xattrs-include=trusted.overlay.*", "--sparse"]);
    if let Some((flag, _)) = compressor(compress)? {
        tar.arg(flag);
    }
    if let Some(disk) = contents.disk.as_ref().filter(|d| d.is_dir()) {
        tar.arg("-C").arg(disk).arg(".");
    }
    tar.arg("-C").arg(&staging).arg(".");
    let result = run(&mut tar).and_then(|_| std::fs::rename(&dat, target).map_err(|e| format!("unable to rename '{}' to '{}': {e}", dat.display(), target.display())));
    let _ = std::fs::remove_dir_all(&staging);
    if result.is_err() {
        let _ = std::fs::remove_file(&dat);
    }
    result?;
    std::fs::metadata(target).map(|m| m.len()).map_err(|e| e.to_string())
}

/// One member of the archive as text (GNU tar detects the compression when reading).
pub fn read_member(archive: &Path, member: &str) -> Result<String, String> {
    let out = run(Command::new("tar").arg("--extract").arg("--to-stdout").arg("--file").arg(archive).arg(member))?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Unpacks the whole archive into `dir` (a restored guest's disk).
pub fn extract(archive: &Path, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("unable to create '{}': {e}", dir.display()))?;
    run(Command::new("tar")
        .arg("--extract")
        .arg("--file")
        .arg(archive)
        .args(["--numeric-owner", "--xattrs", "--xattrs-include=trusted.overlay.*", "--sparse"])
        .arg("-C")
        .arg(dir))
    .map(|_| ())
}

/// A config file's text back into keys (description from the leading `#` lines), as the sim renders it.
pub fn parse_config(text: &str) -> std::collections::BTreeMap<String, String> {
    let mut config = std::collections::BTreeMap::new();
    let mut description = Vec::new();
    for line in text.lines() {
        if line.starts_with('[') {
            break; // snapshots and pending changes are not restored
        }
        if let Some(d) = line.strip_prefix('#') {
            description.push(d.to_string());
        } else if let Some((k, v)) = line.split_once(": ") {
            config.insert(k.to_string(), v.to_string());
        }
    }
    if !description.is_empty() {
        config.insert("description".into(), description.join("\n"));
    }
    config
}
