//! vzdump as PVE does it: a `vzdump` task on the node, a volume in the backup storage's content, `prune-backups`
//! over simulated days, the guest locked meanwhile, refusals; restores of containers and VMs from those volumes;
//! deleting a backup volume.

mod common;

use common::{enc, start, Sim};
use serde_json::Value;

const CT: &str = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst";

async fn container(s: &Sim, vmid: &str, hostname: &str) {
    let r = s.post("/nodes/pve1/lxc", &[("vmid", vmid), ("ostemplate", CT), ("hostname", hostname), ("rootfs", "local-lvm:4"), ("net0", "name=eth0,bridge=vmbr0,ip=dhcp"), ("description", "pvedeploy-id: d-1\nowned")]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(s.wait("pve1", r.data()).await, "OK");
}

async fn log(s: &Sim, upid: &Value) -> Vec<String> {
    log_on(s, "pve1", upid).await
}

async fn log_on(s: &Sim, node: &str, upid: &Value) -> Vec<String> {
    let upid = upid.as_str().unwrap();
    let r = s.get(&format!("/nodes/{node}/tasks/{}/log?limit=500", enc(upid))).await;
    r.data().as_array().unwrap().iter().filter_map(|l| l["t"].as_str().map(str::to_string)).collect()
}

fn volids(list: &Reply) -> Vec<String> {
    list.data().as_array().unwrap().iter().map(|v| v["volid"].as_str().unwrap().to_string()).collect()
}

use common::Reply;

/// 2030-01-01T03:00:00Z
const DAY1: u64 = 1_893_466_800;

#[tokio::test]
async fn backups_per_day_keep_daily_2_and_the_volume_lists_as_pve_lists_it() {
    let s = start().await;
    container(&s, "200", "app1").await;
    for day in 0..4u64 {
        s.handle.set_clock(DAY1 + day * 86_400);
        let r = s.post("/nodes/pve1/vzdump", &[("vmid", "200"), ("storage", "local"), ("mode", "snapshot"), ("compress", "zstd"), ("prune-backups", "keep-daily=2"), ("notes-template", "pvedeploy {{guestname}} {{vmid}}")]).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.data().as_str().unwrap().contains(":vzdump:200:"), "{r:?}");
        assert_eq!(s.wait("pve1", r.data()).await, "OK");
        let lines = log(&s, r.data()).await;
        assert!(lines.iter().any(|l| l == "INFO: Starting Backup of VM 200 (lxc)"), "{lines:?}");
        assert!(lines.iter().any(|l| l == "INFO: prune older backups with retention: keep-daily=2"), "{lines:?}");
        let pruned = if day >= 2 { "INFO: pruned 1 backup(s) not covered by keep-retention policy" } else { "INFO: pruned 0 backup(s)" };
        assert!(lines.iter().any(|l| l == pruned), "day {day}: {lines:?}");
        assert_eq!(lines.last().map(String::as_str), Some("TASK OK"));
    }
    let list = s.get("/nodes/pve1/storage/local/content?content=backup&vmid=200").await;
    assert_eq!(volids(&list), ["local:backup/vzdump-lxc-200-2030_01_03-03_00_00.tar.zst", "local:backup/vzdump-lxc-200-2030_01_04-03_00_00.tar.zst"], "{list:?}");
    let item = &list.data()[0];
    assert_eq!((item["format"].as_str(), item["subtype"].as_str(), item["vmid"].as_u64(), item["ctime"].as_u64()), (Some("tar.zst"), Some("lxc"), Some(200), Some(DAY1 + 2 * 86_400)));
    assert_eq!(item["notes"], "pvedeploy app1 200", "{list:?}");
    assert!(s.get("/nodes/pve1/storage/local/content?content=backup&vmid=201").await.data().as_array().unwrap().is_empty());
    // The guest's lock is gone again; the backed-up config is in the archive where PVE keeps it.
    assert!(s.get("/nodes/pve1/lxc/200/config").await.data().get("lock").is_none());

    // Deleting a backup volume: an `imgdel` task; it is gone from the listing.
    let gone = "local:backup/vzdump-lxc-200-2030_01_03-03_00_00.tar.zst";
    let r = s.form("DELETE", &format!("/nodes/pve1/storage/local/content/{}", enc(gone)), &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.data().as_str().unwrap().contains(":imgdel:200@local:"));
    assert_eq!(s.wait("pve1", r.data()).await, "OK");
    assert_eq!(volids(&s.get("/nodes/pve1/storage/local/content?content=backup").await), ["local:backup/vzdump-lxc-200-2030_01_04-03_00_00.tar.zst"]);
}

#[tokio::test]
async fn vzdump_refuses_as_pve_does() {
    let s = start().await;
    container(&s, "200", "app1").await;
    // Before the fork: parameters.
    let r = s.post("/nodes/pve1/vzdump", &[("storage", "local")]).await;
    assert_eq!((r.status, r.error("vmid").as_str()), (400, "property is missing"), "{r:?}");
    let r = s.post("/nodes/pve1/vzdump", &[("vmid", "200"), ("prune-backups", "keep-all=1,keep-daily=2")]).await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.error("prune-backups").contains("keep-all cannot be set together with other options."), "{r:?}");
    let r = s.post("/nodes/pve1/vzdump", &[("vmid", "200"), ("prune-backups", "keep-daily=x")]).await;
    assert_eq!(r.status, 400, "{r:?}");
    let r = s.post("/nodes/pve1/vzdump", &[("vmid", "200"), ("storage", "local"), ("notes-template", "{{owner}}")]).await;
    assert_eq!((r.status, r.error("notes-template").as_str()), (400, "found unknown: variable 'owner' at char 4"), "{r:?}");
    // A guest on another node: a silent OK, no task.
    let r = s.post("/nodes/pve2/vzdump", &[("vmid", "200")]).await;
    assert_eq!((r.status, r.data().as_str()), (200, Some("OK")), "{r:?}");
    // In the worker: a storage without `backup` content, a locked guest, an unknown guest.
    let r = s.post("/nodes/pve1/vzdump", &[("vmid", "200"), ("storage", "local-lvm")]).await;
    assert_eq!(s.wait("pve1", r.data()).await, "could not get storage information for 'local-lvm': can't use storage 'local-lvm' for backups - wrong content type");
    s.handle.set_vm_config(200, "lock", "snapshot");
    let r = s.post("/nodes/pve1/vzdump", &[("vmid", "200"), ("storage", "local")]).await;
    assert_eq!(s.wait("pve1", r.data()).await, "job errors");
    assert!(log(&s, r.data()).await.iter().any(|l| l == "ERROR: Backup of VM 200 failed - CT is locked (snapshot)"));
    assert_eq!(s.get("/nodes/pve1/lxc/200/config").await.data()["lock"], "snapshot", "another's lock stays");
    let r = s.post("/nodes/pve1/vzdump", &[("vmid", "777"), ("storage", "local")]).await;
    assert_eq!(s.wait("pve1", r.data()).await, "job errors");
    assert!(log(&s, r.data()).await.iter().any(|l| l == "ERROR: Backup of VM 777 failed - unable to find VM '777'"));
    assert!(s.get("/nodes/pve1/storage/local/content?content=backup").await.data().as_array().unwrap().is_empty());
}

#[tokio::test]
async fn containers_and_vms_restore_from_their_backups() {
    let s = start().await;
    container(&s, "200", "app1").await;
    let r = s.post("/nodes/pve1/vzdump", &[("vmid", "200"), ("storage", "local")]).await;
    assert_eq!(s.wait("pve1", r.data()).await, "OK");
    let volid = volids(&s.get("/nodes/pve1/storage/local/content?content=backup&vmid=200").await).remove(0);
    assert!(volid.ends_with(".tar"), "{volid}");
    // The original goes; its backup stays.
    assert_eq!(s.task("DELETE", "pve1", "/nodes/pve1/lxc/200", &[]).await, "OK");
    // Restore into a new VMID with the given settings over the backed-up ones.
    let r = s.post("/nodes/pve1/lxc", &[("vmid", "201"), ("ostemplate", &volid), ("restore", "1"), ("storage", "local-lvm"), ("hostname", "app2"), ("unique", "1")]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.data().as_str().unwrap().contains(":vzrestore:201:"));
    assert_eq!(s.wait("pve1", r.data()).await, "OK");
    let lines = log(&s, r.data()).await;
    assert!(lines.iter().any(|l| l == &format!("recovering backed-up configuration from '{volid}'")), "{lines:?}");
    let cfg = s.get("/nodes/pve1/lxc/201/config").await;
    assert_eq!(cfg.data()["hostname"], "app2");
    assert_eq!(cfg.data()["description"], "pvedeploy-id: d-1\nowned\n", "the backed-up description: {cfg:?}");
    assert!(cfg.data()["rootfs"].as_str().unwrap().starts_with("local-lvm:vm-201-disk-0,size=4G"), "{cfg:?}");
    // Restoring over an existing guest needs `force`; a volume that is not a backup is refused.
    let r = s.post("/nodes/pve1/lxc", &[("vmid", "201"), ("ostemplate", &volid), ("restore", "1"), ("storage", "local-lvm")]).await;
    assert_eq!(r.status, 500, "{r:?}");
    assert!(r.reason.contains("CT 201 already exists"), "{r:?}");
    let r = s.post("/nodes/pve1/lxc", &[("vmid", "202"), ("ostemplate", CT), ("restore", "1"), ("storage", "local-lvm")]).await;
    assert_eq!(r.status, 500, "{r:?}");
    assert!(r.reason.contains("content type needs to be 'backup'"), "{r:?}");
    let r = s.post("/nodes/pve1/lxc", &[("vmid", "201"), ("ostemplate", &volid), ("restore", "1"), ("storage", "local-lvm"), ("force", "1")]).await;
    assert_eq!(s.wait("pve1", r.data()).await, "OK", "in place with force");
    assert_eq!(s.get("/nodes/pve1/lxc/201/config").await.data()["hostname"], "app1");

    // A VM: clone, back up, restore under a new VMID; drive options conflict with `archive`.
    assert_eq!(s.clone_vm(300, &[("full", "1"), ("name", "vm1")]).await, "OK");
    let r = s.post("/nodes/pve1/vzdump", &[("vmid", "300"), ("storage", "local"), ("compress", "zstd")]).await;
    assert_eq!(s.wait("pve1", r.data()).await, "OK");
    let vm_backup = volids(&s.get("/nodes/pve1/storage/local/content?content=backup&vmid=300").await).remove(0);
    assert!(vm_backup.ends_with(".vma.zst"), "{vm_backup}");
    let r = s.post("/nodes/pve1/qemu", &[("vmid", "301"), ("archive", &vm_backup), ("scsi0", "local-lvm:4")]).await;
    assert_eq!((r.status, r.error("scsi0").as_str()), (400, "option conflicts with option 'archive'"), "{r:?}");
    let r = s.post("/nodes/pve1/qemu", &[("vmid", "301"), ("archive", &vm_backup), ("name", "vm2"), ("unique", "1")]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.data().as_str().unwrap().contains(":qmrestore:301:"));
    assert_eq!(s.wait("pve1", r.data()).await, "OK");
    let cfg = s.get("/nodes/pve1/qemu/301/config").await;
    assert_eq!(cfg.data()["name"], "vm2");
    assert!(cfg.data()["scsi0"].as_str().unwrap().starts_with("local-lvm:vm-301-disk-"), "{cfg:?}");
    let old_mac = s.get("/nodes/pve1/qemu/300/config").await.data()["net0"].as_str().unwrap().to_string();
    assert_ne!(cfg.data()["net0"].as_str().unwrap(), old_mac, "unique: a new MAC");
}

/// Adds a Proxmox Backup Server storage as an operator does (`pvesm add pbs`, `POST /storage`).
async fn add_pbs(s: &Sim, id: &str) {
    let fingerprint = ["ab"; 32].join(":");
    let r = s.post("/storage", &[("storage", id), ("type", "pbs"), ("server", "pbs.example.com"), ("datastore", "store1"), ("username", "backup@pbs"), ("password", "secret"), ("fingerprint", &fingerprint), ("content", "backup")]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!((r.data()["storage"].as_str(), r.data()["type"].as_str()), (Some(id), Some("pbs")));
}

#[tokio::test]
async fn a_pbs_storage_is_added_through_the_api_and_validated_as_pve_does() {
    let s = start().await;
    // The schema: a server that is no host name or address, a bad fingerprint.
    let r = s.post("/storage", &[("storage", "pbs"), ("type", "pbs"), ("server", "not a host"), ("datastore", "store1")]).await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.error("server").contains("valid server name or IP address"), "{r:?}");
    let r = s.post("/storage", &[("storage", "pbs"), ("type", "pbs"), ("server", "pbs.example.com"), ("datastore", "store1"), ("fingerprint", "ab:cd")]).await;
    assert_eq!(r.status, 400, "{r:?}");
    // `check_config`: the fixed options are required, options of other types refused.
    let r = s.post("/storage", &[("storage", "pbs"), ("type", "pbs"), ("server", "pbs.example.com")]).await;
    assert_eq!((r.status, r.reason.contains("missing value for required option 'datastore'")), (500, true), "{r:?}");
    let r = s.post("/storage", &[("storage", "pbs"), ("type", "pbs"), ("server", "pbs.example.com"), ("datastore", "store1"), ("path", "/srv")]).await;
    assert_eq!((r.status, r.reason.contains("unexpected property 'path'")), (500, true), "{r:?}");
    // A datastore the server does not have (names that would leave its directory among them).
    let r = s.post("/storage", &[("storage", "pbs"), ("type", "pbs"), ("server", "pbs.example.com"), ("datastore", "..")]).await;
    assert_eq!((r.status, r.reason.contains("Cannot find datastore '..'")), (500, true), "{r:?}");
    add_pbs(&s, "pbs").await;
    let r = s.post("/storage", &[("storage", "pbs"), ("type", "pbs"), ("server", "pbs.example.com"), ("datastore", "store1")]).await;
    assert_eq!((r.status, r.reason.contains("storage ID 'pbs' already defined")), (500, true), "{r:?}");
    // Content `backup` only, shared, on every node.
    let r = s.post("/storage", &[("storage", "pbs2"), ("type", "pbs"), ("server", "10.0.0.9"), ("datastore", "store1"), ("content", "backup,images")]).await;
    assert_eq!(r.status, 200, "{r:?}");
    for node in ["pve1", "pve2"] {
        let list = s.get(&format!("/nodes/{node}/storage")).await;
        let pbs = list.data().as_array().unwrap().iter().find(|x| x["storage"] == "pbs2").cloned().expect("listed");
        assert_eq!((pbs["type"].as_str(), pbs["content"].as_str(), pbs["shared"].as_u64()), (Some("pbs"), Some("backup"), Some(1)), "{pbs}");
    }
}

/// `ct/200/<UTC time>` on the PBS storage.
fn pbs_volid(storage: &str, kind: &str, vmid: u32, at: u64) -> String {
    let days = at / 86_400;
    // 2030-01-01 is day 21915; the tests stay within January 2030.
    assert!((21_915..21_915 + 31).contains(&days));
    let s = at % 86_400;
    format!("{storage}:backup/{kind}/{vmid}/2030-01-{:02}T{:02}:{:02}:{:02}Z", days - 21_915 + 1, s / 3600, s / 60 % 60, s % 60)
}

#[tokio::test]
async fn vzdump_to_pbs_names_lists_prunes_and_deletes_as_pbs_does() {
    let s = start().await;
    add_pbs(&s, "pbs").await;
    container(&s, "200", "app1").await;
    for day in 0..4u64 {
        s.handle.set_clock(DAY1 + day * 86_400);
        let r = s.post("/nodes/pve1/vzdump", &[("vmid", "200"), ("storage", "pbs"), ("mode", "snapshot"), ("compress", "zstd"), ("prune-backups", "keep-daily=2"), ("notes-template", "pvedeploy {{guestname}} {{vmid}}")]).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(s.wait("pve1", r.data()).await, "OK");
        let lines = log(&s, r.data()).await;
        let snapshot = pbs_volid("pbs", "ct", 200, DAY1 + day * 86_400).split_once(":backup/").unwrap().1.to_string();
        assert!(lines.iter().any(|l| *l == format!("INFO: creating Proxmox Backup Server archive '{snapshot}'")), "{lines:?}");
        assert!(lines.iter().any(|l| l == "INFO: running 'proxmox-backup-client prune' for 'ct/200'"), "{lines:?}");
        let pruned = if day >= 2 { "INFO: pruned 1 backup(s) not covered by keep-retention policy" } else { "INFO: pruned 0 backup(s)" };
        assert!(lines.iter().any(|l| l == pruned), "day {day}: {lines:?}");
    }
    // Listed as `list_volumes` lists it, from every node (the storage is shared).
    for node in ["pve1", "pve2"] {
        let list = s.get(&format!("/nodes/{node}/storage/pbs/content?content=backup&vmid=200")).await;
        assert_eq!(volids(&list), [pbs_volid("pbs", "ct", 200, DAY1 + 2 * 86_400), pbs_volid("pbs", "ct", 200, DAY1 + 3 * 86_400)], "{list:?}");
        let item = &list.data()[0];
        assert_eq!(
            (item["format"].as_str(), item["content"].as_str(), item["subtype"].as_str(), item["vmid"].as_u64(), item["ctime"].as_u64(), item["notes"].as_str()),
            (Some("pbs-ct"), Some("backup"), Some("lxc"), Some(200), Some(DAY1 + 2 * 86_400), Some("pvedeploy app1 200")),
            "{list:?}"
        );
        assert!(item["size"].as_u64().unwrap() > 0 && item.get("protected").is_none(), "{item}");
    }
    assert!(s.get("/nodes/pve1/storage/pbs/content?content=backup&vmid=201").await.data().as_array().unwrap().is_empty());
    assert!(s.get("/nodes/pve1/storage/pbs/content?content=images").await.data().as_array().unwrap().is_empty());
    // Deleted from another node than the one that made it: an `imgdel` task, gone for every node.
    let gone = pbs_volid("pbs", "ct", 200, DAY1 + 2 * 86_400);
    let r = s.form("DELETE", &format!("/nodes/pve2/storage/pbs/content/{}", enc(&gone)), &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.data().as_str().unwrap().contains(":imgdel:200@pbs:"), "{r:?}");
    assert_eq!(s.wait("pve2", r.data()).await, "OK");
    assert!(log_on(&s, "pve2", r.data()).await.iter().any(|l| *l == format!("Removed volume '{gone}'")));
    assert_eq!(volids(&s.get("/nodes/pve1/storage/pbs/content?content=backup").await), [pbs_volid("pbs", "ct", 200, DAY1 + 3 * 86_400)]);
    // A second storage on the same server and datastore sees the same backups, as on PBS.
    add_pbs(&s, "pbs-again").await;
    assert_eq!(volids(&s.get("/nodes/pve1/storage/pbs-again/content?content=backup").await), [pbs_volid("pbs-again", "ct", 200, DAY1 + 3 * 86_400)]);
}

#[tokio::test]
async fn containers_and_vms_restore_from_pbs() {
    let s = start().await;
    add_pbs(&s, "pbs").await;
    container(&s, "200", "app1").await;
    s.handle.set_clock(DAY1);
    let r = s.post("/nodes/pve1/vzdump", &[("vmid", "200"), ("storage", "pbs")]).await;
    assert_eq!(s.wait("pve1", r.data()).await, "OK");
    let volid = pbs_volid("pbs", "ct", 200, DAY1);
    assert_eq!(volids(&s.get("/nodes/pve2/storage/pbs/content?content=backup").await), [volid.clone()]);
    assert_eq!(s.task("DELETE", "pve1", "/nodes/pve1/lxc/200", &[]).await, "OK");
    // Restored on the other node (PBS is shared), as a new container.
    let r = s.post("/nodes/pve2/lxc", &[("vmid", "201"), ("ostemplate", &volid), ("restore", "1"), ("storage", "local-lvm"), ("hostname", "app2")]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.data().as_str().unwrap().contains(":vzrestore:201:"));
    assert_eq!(s.wait("pve2", r.data()).await, "OK");
    assert!(log_on(&s, "pve2", r.data()).await.iter().any(|l| *l == format!("recovering backed-up configuration from '{volid}'")));
    let cfg = s.get("/nodes/pve2/lxc/201/config").await;
    assert_eq!(cfg.data()["hostname"], "app2");
    assert_eq!(cfg.data()["description"], "pvedeploy-id: d-1
owned
", "{cfg:?}");
    // A container's backup is no VM's: the restore task fails as `restore_proxmox_backup_archive` does.
    let r = s.post("/nodes/pve1/qemu", &[("vmid", "202"), ("archive", &volid)]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(s.wait("pve1", r.data()).await.contains("got unexpected backup format 'pbs-ct'"));
    assert_eq!(s.get("/nodes/pve1/qemu/202/config").await.status, 500, "the failed restore leaves no guest");
    // A VM.
    assert_eq!(s.clone_vm(300, &[("full", "1"), ("name", "vm1")]).await, "OK");
    s.handle.set_clock(DAY1 + 60);
    let r = s.post("/nodes/pve1/vzdump", &[("vmid", "300"), ("storage", "pbs")]).await;
    assert_eq!(s.wait("pve1", r.data()).await, "OK");
    let vm_backup = pbs_volid("pbs", "vm", 300, DAY1 + 60);
    let listed = s.get("/nodes/pve1/storage/pbs/content?content=backup&vmid=300").await;
    assert_eq!((volids(&listed), listed.data()[0]["format"].as_str(), listed.data()[0]["subtype"].as_str()), (vec![vm_backup.clone()], Some("pbs-vm"), Some("qemu")));
    let r = s.post("/nodes/pve1/qemu", &[("vmid", "301"), ("archive", &vm_backup), ("name", "vm2"), ("unique", "1")]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.data().as_str().unwrap().contains(":qmrestore:301:"));
    assert_eq!(s.wait("pve1", r.data()).await, "OK");
    assert_eq!(s.get("/nodes/pve1/qemu/301/config").await.data()["name"], "vm2");
    // A PBS name that is no snapshot is no backup volume.
    let r = s.post("/nodes/pve1/lxc", &[("vmid", "203"), ("ostemplate", "pbs:backup/ct/200/2030-01-01T03:00:00"), ("restore", "1"), ("storage", "local-lvm")]).await;
    assert_eq!(r.status, 500, "{r:?}");
    assert!(r.reason.contains("content type needs to be 'backup'"), "{r:?}");
}

#[tokio::test]
async fn vzdump_refuses_a_pbs_storage_without_content_backup() {
    let s = start().await;
    let r = s.post("/storage", &[("storage", "pbs"), ("type", "pbs"), ("server", "pbs.example.com"), ("datastore", "store1"), ("content", "none")]).await;
    assert_eq!(r.status, 200, "{r:?}");
    container(&s, "200", "app1").await;
    let r = s.post("/nodes/pve1/vzdump", &[("vmid", "200"), ("storage", "pbs")]).await;
    assert_eq!(s.wait("pve1", r.data()).await, "could not get storage information for 'pbs': can't use storage 'pbs' for backups - wrong content type");
    assert!(s.get("/nodes/pve1/storage/pbs/content").await.data().as_array().unwrap().is_empty());
    // Given the content type, it works.
    assert_eq!(s.put("/storage/pbs", &[("content", "backup")]).await.status, 200);
    let r = s.post("/nodes/pve1/vzdump", &[("vmid", "200"), ("storage", "pbs")]).await;
    assert_eq!(s.wait("pve1", r.data()).await, "OK");
    assert_eq!(s.get("/nodes/pve1/storage/pbs/content").await.data().as_array().unwrap().len(), 1);
}
