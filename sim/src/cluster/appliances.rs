//! The appliance index and template downloads (`pveam`): `GET|POST /nodes/{node}/aplinfo` (mgr
//! `PVE/API2/Nodes.pm:1735-1843`). The index is a fixed excerpt of Proxmox's; a download writes the
//! placeholder template into that node's storage (per node for `local`, as sim/STOCK-FACTS.md §2 says).

use serde_json::{json, Value};

use super::storage::{content_subdir, storage_dir};
use super::{ApiCall, Cluster};
use crate::http::envelope::ApiError;

/// The templates this simulator's appliance index offers.
const INDEX: &[(&str, &str, &str)] = &[
    ("debian-12-standard_12.7-1_amd64.tar.zst", "debian-12-standard", "12.7-1"),
    ("debian-13-standard_13.1-2_amd64.tar.zst", "debian-13-standard", "13.1-2"),
];

fn entry(template: &str, package: &str, version: &str) -> Value {
    json!({
        "template": template, "package": package, "version": version, "type": "lxc", "section": "system",
        "os": package.split('-').next().unwrap_or(package), "architecture": "amd64",
        "headline": format!("{package} (pvedeploy-sim)"), "maintainer": "pvedeploy-sim",
        "location": format!("http://download.proxmox.com/images/system/{template}"),
        "source": "http://download.proxmox.com/images", "infopage": "https://pve.proxmox.com/wiki/Linux_Container",
    })
}

/// `GET /nodes/{node}/aplinfo`
pub fn list() -> Value {
    Value::Array(INDEX.iter().map(|(t, p, v)| entry(t, p, v)).collect())
}

/// `POST /nodes/{node}/aplinfo`: `no such template` (400) for a name not in the index; the storage must exist,
/// be on the node and hold `vztmpl`; a `download` task writes the file.
pub fn download(c: &std::sync::Arc<Cluster>, node: &str, call: &ApiCall) -> Result<Value, ApiError> {
    let template = call.params.need("template")?;
    let storage = call.params.need("storage")?;
    if !INDEX.iter().any(|(t, _, _)| *t == template) {
        return Err(ApiError::param("template", "no such template"));
    }
    let target = {
        let st = c.state();
        let spec = match st.storages.get(&storage) {
            Some(s) if st.storage_on_node(&storage, node) => s.clone(),
            Some(_) => return Err(ApiError::server(format!("storage '{storage}' is not available on node '{node}'"))),
            None => return Err(ApiError::server(format!("storage '{storage}' does not exist"))),
        };
        if !spec.content.iter().any(|x| x == "vztmpl") {
            return Err(ApiError::server(format!("storage '{storage}' does not support templates")));
        }
        storage_dir(&c.state_dir, &spec, node).join(content_subdir("vztmpl").unwrap_or("template/cache")).join(&template)
    };
    let upid = c.spawn_task(node, "download", &template, &call.ident, move |c, task| async move {
        Cluster::pause(c.timing.task_secs).await;
        task.log(format!("downloading http://download.proxmox.com/images/system/{} to {}", target.file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_default(), target.display()));
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("unable to create {}: {e}", dir.display()))?;
        }
        std::fs::write(&target, b"pvedeploy-sim placeholder container template\n").map_err(|e| format!("unable to write '{}' - {e}", target.display()))?;
        task.log("download of template finished");
        Ok(0)
    });
    Ok(json!(upid))
}
