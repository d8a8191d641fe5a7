//! Drive and mount-point config values: which keys are disks, their volumes and sizes, and PVE's
//! `STORAGE:SIZE` syntax for new volumes.

use super::state::Guest;
use crate::backend::GuestKind;
use crate::schema::propstring::{get_key, set_key};

/// `ide0`–`ide3`, `sata0`–`sata5`, `scsi0`–`scsi30`, `virtio0`–`virtio15`, `efidisk0`, `tpmstate0`.
pub fn is_qemu_drive(key: &str) -> bool {
    let numbered = |prefix: &str, max: u32| {
        key.strip_prefix(prefix)
            .and_then(|n| (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then(|| n.parse::<u32>().ok()).flatten())
            .is_some_and(|n| n <= max)
    };
    numbered("ide", 3) || numbered("sata", 5) || numbered("scsi", 30) || numbered("virtio", 15) || key == "efidisk0" || key == "tpmstate0"
}

/// `rootfs`, `mp0`…
pub fn is_lxc_mount(key: &str) -> bool {
    key == "rootfs" || key.strip_prefix("mp").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `key` holds a volume for this guest type.
pub fn is_disk_key(kind: GuestKind, key: &str) -> bool {
    match kind {
        GuestKind::Qemu => is_qemu_drive(key),
        GuestKind::Lxc => is_lxc_mount(key),
    }
}

/// The property-string key of the volume (`file` for QEMU drives, `volume` for mount points).
pub fn volume_key(kind: GuestKind) -> &'static str {
    match kind {
        GuestKind::Qemu => "file",
        GuestKind::Lxc => "volume",
    }
}

/// The volume of a drive/mount-point value.
pub fn volume_of(kind: GuestKind, value: &str) -> Option<String> {
    get_key(value, volume_key(kind), volume_key(kind))
}

/// CD-ROM drives (`media=cdrom`, `none`, `cdrom`) are not disks.
pub fn is_cdrom(value: &str) -> bool {
    get_key(value, "file", "media").is_some_and(|m| m == "cdrom")
        || matches!(get_key(value, "file", "file").as_deref(), Some("none") | Some("cdrom"))
}

pub fn is_cloudinit_volume(volid: &str) -> bool {
    volid.contains("-cloudinit")
}

/// `STORAGE:SIZE_IN_GiB` (a new volume) → (storage, bytes).
pub fn new_volume_request(volume: &str) -> Option<(String, u64)> {
    let (storage, size) = volume.split_once(':')?;
    if size.is_empty() || size.contains('/') {
        return None;
    }
    let gib: f64 = size.parse().ok()?;
    if !size.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    Some((storage.to_string(), (gib * 1024.0 * 1024.0 * 1024.0) as u64))
}

/// `PVE::JSONSchema::format_size`: `4G`, `512M`, `1536K`, or bytes.
pub fn format_size(size: u64) -> String {
    let units = [(1u64 << 40, "T"), (1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")];
    for (unit, suffix) in units {
        if size >= unit && size.is_multiple_of(unit) {
            return format!("{}{suffix}", size / unit);
        }
    }
    size.to_string()
}

/// The `size=` of a drive value in bytes.
pub fn size_of(kind: GuestKind, value: &str) -> u64 {
    get_key(value, volume_key(kind), "size")
        .and_then(|s| crate::schema::formats::parse_size(&s))
        .unwrap_or(0)
}

/// Replaces the volume and size of a drive value.
pub fn with_volume(kind: GuestKind, value: &str, volid: &str, size: u64) -> String {
    let vk = volume_key(kind);
    let v = set_key(value, vk, vk, volid);
    set_key(&v, vk, "size", &format_size(size))
}

/// Drive keys holding real disks (no CD-ROMs), in config order.
pub fn disk_keys(g: &Guest) -> Vec<String> {
    g.config
        .iter()
        .filter(|(k, v)| is_disk_key(g.kind, k) && !is_cdrom(v))
        .map(|(k, _)| k.clone())
        .collect()
}

/// The size PVE shows as `maxdisk`: the boot disk (QEMU) or the root filesystem (LXC).
pub fn boot_disk_size(g: &Guest) -> u64 {
    let order: &[&str] = match g.kind {
        GuestKind::Qemu => &["scsi0", "virtio0", "sata0", "ide0"],
        GuestKind::Lxc => &["rootfs"],
    };
    order
        .iter()
        .filter_map(|k| g.config.get(*k))
        .find(|v| !is_cdrom(v))
        .map(|v| size_of(g.kind, v))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_requests() {
        assert_eq!(format_size(4 << 30), "4G");
        assert_eq!(format_size(4 << 20), "4M");
        assert_eq!(new_volume_request("local-lvm:8"), Some(("local-lvm".into(), 8 << 30)));
        assert_eq!(new_volume_request("local-lvm:vm-100-disk-0"), None);
        assert!(is_qemu_drive("scsi30") && !is_qemu_drive("scsi31") && is_qemu_drive("ide2"));
        assert!(is_cdrom("local-lvm:vm-9000-cloudinit,media=cdrom"));
    }
}
