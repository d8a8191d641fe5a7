//! Terraform import parity against the simulator: every guest shape pvedeploy makes (VM linked and full clone of
//! a UEFI template with a data disk, containers, DHCP and static addresses, a mount point added in "the UI") is
//! exported through the API, and the model of the bpg provider's import (`pvedeploy::export::plan`) predicts
//! "No changes" for its first `terraform plan` (a container: only the provider's timeout defaults, bpg#3110).

use std::collections::BTreeMap;
use std::time::Duration;

use pvedeploy::core::deployment::GuestType;
use pvedeploy::export::plan::{after_import, Imported};
use pvedeploy_sim::ClusterSpec;
use serde_json::Value;

use crate::helpers::READER;
use crate::provision::{agent_for, agent_with, deploy, start_sim, wait_until, Cluster};

/// The simulator's own API, called with the admin token as an operator (or the Proxmox UI) would.
async fn pve(cluster: &Cluster, method: reqwest::Method, path: &str, form: &[(&str, &str)]) -> Value {
    let (id, secret) = cluster.sim.admin_token();
    let client = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
    let resp = client
        .request(method, format!("https://{}/api2/json{path}", cluster.sim.addr()))
        .header("Authorization", format!("PVEAPIToken={id}={secret}"))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {body}");
    body["data"].clone()
}

/// `GET …/config` as every value in text, the way the agent reads it.
async fn config_of(cluster: &Cluster, node: &str, kind: &str, vmid: u64) -> BTreeMap<String, String> {
    let data = pve(cluster, reqwest::Method::GET, &format!("/nodes/{node}/{kind}/{vmid}/config"), &[]).await;
    data.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
        .collect()
}

async fn provisioned(app: &crate::helpers::TestApp, id: &str) -> Value {
    let d = wait_until(app, id, "provisioned", |d| d["status"] == "installing" || d["status"] == "failed").await;
    assert_eq!(d["status"], "installing", "{d}");
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_guest_shape_the_simulator_makes_plans_clean_after_an_import() {
    let cluster = start_sim(ClusterSpec::sandbox()).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Agent A: linked clones, DHCP. Agent B: full clones, static addresses from a pool.
    let linked = agent_for(&cluster, dir_a.path(), Duration::from_secs(30)).await;
    let pool = pvedeploy::core::addresses::AddressPool::parse("127.78.9.10-127.78.9.20/24", Some("127.78.9.1")).unwrap();
    let full = agent_with(&cluster, dir_b.path(), Duration::from_secs(30), |c| {
        c.full_clone = true;
        c.address_pool = Some(pool);
        c.vmid_range = 5000..=5999;
    })
    .await;
    let shapes = [
        (&linked, deploy(&linked, "pt-linked", "vm").await, GuestType::Vm),
        (&linked, deploy(&linked, "pt-ct", "lxc").await, GuestType::Lxc),
        (&full, deploy(&full, "pt-full", "vm").await, GuestType::Vm),
        (&full, deploy(&full, "pt-ct-static", "lxc").await, GuestType::Lxc),
    ];
    let mut guests = Vec::new();
    for (app, id, kind) in &shapes {
        let d = provisioned(app, id).await;
        guests.push((*app, id.clone(), *kind, d["proxmox_id"].as_u64().unwrap(), d["proxmox_node"].as_str().unwrap().to_owned()));
    }
    // A data volume added to one container in the UI after provisioning.
    let (ct, ct_node) = (guests[1].3, &guests[1].4);
    pve(&cluster, reqwest::Method::PUT, &format!("/nodes/{ct_node}/lxc/{ct}/config"), &[("mp0", "local-lvm:1,mp=/srv/data,backup=1")]).await;

    for (app, id, kind, vmid, node) in &guests {
        let path = if *kind == GuestType::Vm { "qemu" } else { "lxc" };
        let config = config_of(&cluster, node, path, *vmid).await;
        let status = pve(&cluster, reqwest::Method::GET, &format!("/nodes/{node}/{path}/{vmid}/status/current"), &[]).await;
        let (s, export) = app.get(&format!("/api/v1/deployments/{id}/terraform"), Some(READER)).await;
        assert_eq!(s, 200, "{export}");
        let main = export["files"].as_array().unwrap().iter().find(|f| f["path"] == "main.tf").unwrap()["content"].as_str().unwrap().to_owned();
        let imported = Imported { kind: *kind, node, vmid: *vmid as u32, config: &config, running: status["status"] == "running" };
        let plan = after_import(&imported, &main).unwrap_or_else(|e| panic!("{id}: {e}\n{config:#?}\n{main}"));
        let warnings: Vec<&str> = export["warnings"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect();
        match kind {
            GuestType::Vm => {
                assert!(plan.is_clean(), "{id}: {:#?}\n{config:#?}\n{main}", plan.changes);
                assert!(warnings.is_empty(), "{id}: {warnings:?}");
                for key in ["bios", "machine", "efidisk0", "scsi1", "cpu"] {
                    assert!(config.contains_key(key), "the template's {key} reached the clone: {config:#?}");
                }
                let words = main.split_whitespace().collect::<Vec<_>>().join(" ");
                for written in ["bios = \"ovmf\"", "machine = \"q35\"", "type = \"x86-64-v2-AES\"", "interface = \"scsi1\"", "efi_disk {"] {
                    assert!(words.contains(written), "{id}: `{written}` in\n{main}");
                }
                assert!(!main.contains("clone {"), "{main}");
            }
            GuestType::Lxc => {
                assert!(plan.beyond_container_timeouts().is_empty() && !plan.replaces(), "{id}: {:#?}\n{config:#?}\n{main}", plan.changes);
                assert_eq!(warnings.len(), 1, "{warnings:?}");
                assert!(warnings[0].contains("timeout_*"), "{warnings:?}");
                assert!(main.contains("ignore_changes = [operating_system]") && !main.contains("vm_id ="), "{main}");
            }
        }
    }
    let ct_main = {
        let (_, export) = linked.get(&format!("/api/v1/deployments/{}/terraform", guests[1].1), Some(READER)).await;
        export["files"][0]["content"].as_str().unwrap().to_owned()
    };
    assert!(ct_main.contains("mount_point {") && ct_main.contains("path   = \"/srv/data\""), "{ct_main}");
    let static_main = {
        let (_, export) = full.get(&format!("/api/v1/deployments/{}/terraform", guests[3].1), Some(READER)).await;
        export["files"][0]["content"].as_str().unwrap().to_owned()
    };
    assert!(static_main.contains("gateway = \"127.78.9.1\""), "{static_main}");

    // Something the export cannot describe is named in the warnings, not silently planned around.
    let (vm, vm_node) = (guests[0].3, &guests[0].4);
    pve(&cluster, reqwest::Method::PUT, &format!("/nodes/{vm_node}/qemu/{vm}/config"), &[("watchdog", "model=i6300esb")]).await;
    let (_, export) = linked.get(&format!("/api/v1/deployments/{}/terraform", guests[0].1), Some(READER)).await;
    let warnings = export["warnings"].to_string();
    assert!(warnings.contains("`watchdog`"), "{warnings}");

    linked.stop().await;
    full.stop().await;
    cluster.sim.shutdown().await;
}
