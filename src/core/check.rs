//! `pvedeploy check`: whether a Proxmox VE cluster is ready for the agent, as pure verdicts over facts the
//! engine gathered (`engine::check`). Each item says what was checked, its verdict and, for a problem, the
//! fix in the operator's words (a `pveum` command, a config key, an API call).

pub mod privileges;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use crate::core::addresses::AddressPool;
use crate::core::deployment::GuestType;

/// What the check compares the cluster with: the agent's settings that touch Proxmox.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `user@realm!name`
    pub token_id: String,
    pub vm_template: u32,
    /// `local:vztmpl/…`
    pub lxc_template: String,
    pub storage: String,
    pub bridge: String,
    pub vmid_first: u32,
    pub vmid_last: u32,
    pub full_clone: bool,
    /// Placement's allow-list (empty: every node).
    pub nodes: Vec<String>,
    pub address_pool: Option<AddressPool>,
    /// `[proxmox.node_ssh]`: the snippets storage and its directory on the nodes; `None`: not configured.
    pub node_ssh: Option<(String, String)>,
    /// `[proxmox] pool`, when guests are created in a pool (the ACL then narrows to `/pool/<name>`).
    pub pool: Option<String>,
    /// `[proxmox.backups] storage`, when backups are configured.
    pub backup_storage: Option<String>,
}

/// What reading one fact gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read<T> {
    Got(T),
    /// Proxmox refused it for a missing privilege (the privileges item names the fix).
    Denied { path: String, privilege: String },
    /// No usable answer (unreachable, timeout, an error): the fact is unknown.
    Failed(String),
}

impl<T> Read<T> {
    pub fn as_ref(&self) -> Read<&T> {
        match self {
            Read::Got(t) => Read::Got(t),
            Read::Denied { path, privilege } => Read::Denied { path: path.clone(), privilege: privilege.clone() },
            Read::Failed(why) => Read::Failed(why.clone()),
        }
    }
}

/// The VM template as its config shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateFacts {
    pub node: String,
    pub is_template: bool,
    /// A `…:cloudinit` drive (ide/sata/scsi).
    pub cloud_init: bool,
    /// `agent` enabled (`1` or `enabled=1`).
    pub agent: bool,
    /// Storages of its disks (not the cloud-init drive).
    pub disk_storages: Vec<String>,
}

/// One storage as a node lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageFacts {
    pub id: String,
    /// The plugin type: `dir`, `nfs`, `lvmthin`, `pbs`, …
    pub kind: String,
    pub content: Vec<String>,
    pub shared: bool,
    /// Not disabled in the storage configuration (pve-storage `API2/Storage/Status.pm:138`, `Storage.pm:1440-1530`
    /// `storage_info`: a disabled storage is listed with `enabled` 0).
    pub enabled: bool,
    /// Accessible from the node (`Status.pm:143`): for a Proxmox Backup Server storage, the server answered and has
    /// the datastore (`PBSPlugin.pm:803-831` `status`).
    pub active: bool,
}

/// One guest in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestFacts {
    pub vmid: u32,
    pub node: String,
    pub name: Option<String>,
    /// Carries a `pvedeploy-<deployment>` tag.
    pub ours: bool,
    pub template: bool,
    /// Static IPv4 addresses from its config (`ipconfig0` / `net0` `ip=`).
    pub addresses: Vec<Ipv4Addr>,
}

/// Everything the engine gathered.
#[derive(Debug, Clone)]
pub struct Facts {
    /// `9.1.1`
    pub version: Read<String>,
    /// Privilege separation of the token, when the token may read it (`None`: not readable).
    pub privsep: Option<bool>,
    /// Roles by name with their privileges (for the fix wording).
    pub roles: Read<BTreeMap<String, Vec<String>>>,
    /// Nodes with online state.
    pub nodes: Read<Vec<(String, bool)>>,
    /// `Got(None)`: no guest with the template's id.
    pub template: Read<Option<TemplateFacts>>,
    /// Per checked path, the privileges the token holds there.
    pub permissions: BTreeMap<String, Read<BTreeSet<String>>>,
    /// Per node.
    pub storages: BTreeMap<String, Read<Vec<StorageFacts>>>,
    /// Per node: whether the container template volume is listed there.
    pub lxc_template: BTreeMap<String, Read<bool>>,
    /// Per node: its bridges.
    pub bridges: BTreeMap<String, Read<Vec<String>>>,
    /// Per node: the SSH login and a test write into the snippets directory (`None` when not configured).
    pub node_ssh: Option<BTreeMap<String, Result<(), String>>>,
    pub guests: Read<Vec<GuestFacts>>,
}

crate::core::spelling::string_enum! {
    /// An item's verdict.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    pub enum Verdict {
        Ok = "ok",
        /// Works, with a limit or a risk worth knowing.
        Warning = "warning",
        /// Fails for some or all deployments until fixed.
        Problem = "problem",
        /// Could not be checked.
        Unchecked = "unchecked",
    }
}

impl Verdict {
    fn mark(self) -> &'static str {
        match self {
            Verdict::Ok => "ok  ",
            Verdict::Warning => "warn",
            Verdict::Problem => "FAIL",
            Verdict::Unchecked => "????",
        }
    }
}

/// Which deployments an item makes certain to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocks {
    Nothing,
    Vms,
    Containers,
    All,
}

impl Blocks {
    fn covers(self, kind: GuestType) -> bool {
        matches!((self, kind), (Blocks::All, _) | (Blocks::Vms, GuestType::Vm) | (Blocks::Containers, GuestType::Lxc))
    }
}

/// One line of the checklist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// What was checked: `version`, `token`, `privileges`, `nodes`, `vm_template`, `lxc_template`, `storage`,
    /// `bridge`, `node_ssh`, `vmid_range`, `address_pool`.
    pub check: &'static str,
    pub verdict: Verdict,
    pub text: String,
    pub fix: Option<String>,
    pub blocks: Blocks,
}

impl Item {
    fn ok(check: &'static str, text: impl Into<String>) -> Self {
        Item { check, verdict: Verdict::Ok, text: text.into(), fix: None, blocks: Blocks::Nothing }
    }

    fn warn(check: &'static str, text: impl Into<String>, fix: Option<String>) -> Self {
        Item { check, verdict: Verdict::Warning, text: text.into(), fix, blocks: Blocks::Nothing }
    }

    fn problem(check: &'static str, text: impl Into<String>, fix: impl Into<String>, blocks: Blocks) -> Self {
        Item { check, verdict: Verdict::Problem, text: text.into(), fix: Some(fix.into()), blocks }
    }

    fn unchecked(check: &'static str, text: impl Into<String>) -> Self {
        Item { check, verdict: Verdict::Unchecked, text: text.into(), fix: None, blocks: Blocks::Nothing }
    }
}

/// The checklist.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    pub items: Vec<Item>,
}

impl Report {
    /// `0` ready (warnings allowed), `1` problems to fix, `2` something could not be checked.
    pub fn exit_code(&self) -> u8 {
        if self.items.iter().any(|i| i.verdict == Verdict::Unchecked) {
            2
        } else if self.items.iter().any(|i| i.verdict == Verdict::Problem) {
            1
        } else {
            0
        }
    }

    /// `ready`, `problems` or `unchecked`.
    pub fn state(&self) -> &'static str {
        match self.exit_code() {
            0 => "ready",
            1 => "problems",
            _ => "unchecked",
        }
    }

    /// The problem that makes a deployment of `kind` certain to fail, if any.
    pub fn refusal(&self, kind: GuestType) -> Option<&Item> {
        self.items.iter().find(|i| i.verdict == Verdict::Problem && i.blocks.covers(kind))
    }

    /// The checklist as text: one line per item, its fix indented below.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for i in &self.items {
            out.push_str(&format!("[{}] {:<12} {}\n", i.verdict.mark(), i.check, i.text));
            if let Some(fix) = &i.fix {
                out.push_str(&format!("       fix: {fix}\n"));
            }
        }
        let [p, w, u] = [Verdict::Problem, Verdict::Warning, Verdict::Unchecked].map(|v| self.items.iter().filter(|i| i.verdict == v).count());
        out.push_str(&match self.exit_code() {
            0 if w == 0 => "ready\n".to_string(),
            0 => format!("ready, with {w} warning(s)\n"),
            1 => format!("not ready: {p} problem(s), {w} warning(s)\n"),
            _ => format!("could not check everything: {u} item(s) unchecked, {p} problem(s), {w} warning(s)\n"),
        });
        out
    }
}

/// The PVE major the privileges are named for (9 unless the version says otherwise).
pub fn major(facts: &Facts) -> u32 {
    match &facts.version {
        Read::Got(v) => v.split('.').next().and_then(|m| m.parse().ok()).unwrap_or(9),
        _ => 9,
    }
}

/// The nodes that may receive guests: the allow-list, or every node the cluster lists.
pub fn target_nodes(plan: &Plan, facts: &Facts) -> Vec<String> {
    match (&plan.nodes[..], &facts.nodes) {
        ([], Read::Got(nodes)) => nodes.iter().map(|(n, _)| n.clone()).collect(),
        (allowed, _) => allowed.to_vec(),
    }
}

/// Every item, in the order an operator fixes them.
pub fn evaluate(plan: &Plan, facts: &Facts) -> Report {
    let mut items = vec![version(facts), token(plan, facts)];
    items.extend(privileges_items(plan, facts));
    items.extend(nodes(plan, facts));
    items.push(vm_template(plan, facts));
    items.push(lxc_template(plan, facts));
    items.extend(storages(plan, facts));
    items.push(bridges(plan, facts));
    items.push(node_ssh(plan, facts));
    items.push(vmid_range(plan, facts));
    if let Some(item) = address_pool(plan, facts) {
        items.push(item);
    }
    Report { items }
}

/// Per-node checks with no node to look at (the node list was not read) are unchecked, never vacuously fine.
fn no_nodes(check: &'static str, plan: &Plan, facts: &Facts) -> Option<Item> {
    target_nodes(plan, facts).is_empty().then(|| Item::unchecked(check, "no node to check: the cluster's node list was not read"))
}

fn unread<T>(check: &'static str, what: &str, r: &Read<T>) -> Option<Item> {
    match r {
        Read::Got(_) => None,
        Read::Denied { path, privilege } => Some(Item::problem(
            check,
            format!("cannot read {what}: the token lacks {privilege} on {path}"),
            format!("grant {privilege} on {path} (see the privileges item)"),
            Blocks::Nothing,
        )),
        Read::Failed(why) => Some(Item::unchecked(check, format!("cannot read {what}: {why}"))),
    }
}

fn version(facts: &Facts) -> Item {
    match &facts.version {
        Read::Got(v) => {
            let m = major(facts);
            if m >= 8 {
                Item::ok("version", format!("Proxmox VE {v} (privileges named as on PVE {m})"))
            } else {
                Item::problem("version", format!("Proxmox VE {v} is older than 8"), "upgrade to Proxmox VE 8 or 9 (pvedeploy uses their API and privilege names)", Blocks::All)
            }
        }
        r => unread("version", "the version (GET /version)", r).unwrap_or_else(|| Item::unchecked("version", "unknown")),
    }
}

fn token(plan: &Plan, facts: &Facts) -> Item {
    let user = plan.token_id.split_once('!').map_or(plan.token_id.as_str(), |(u, _)| u);
    if user == "root@pam" {
        return Item::warn(
            "token",
            format!("{} is a token of root@pam, which may do anything on the cluster", plan.token_id),
            Some("create a dedicated user and a privilege-separated token: pveum user add pvedeploy@pve && pveum user token add pvedeploy@pve agent --privsep 1".into()),
        );
    }
    match facts.privsep {
        Some(false) => Item::warn(
            "token",
            format!("{} has no privilege separation: it holds everything {user} may do", plan.token_id),
            Some(format!("pveum user token modify {user} {} --privsep 1 (then grant the token its own ACL)", plan.token_id.split_once('!').map_or("", |(_, t)| t))),
        ),
        Some(true) => Item::ok("token", format!("{}: a privilege-separated token of {user}", plan.token_id)),
        None => Item::ok("token", format!("{}: a token of {user} (its privilege separation is not readable by the token itself)", plan.token_id)),
    }
}

fn privileges_items(plan: &Plan, facts: &Facts) -> Vec<Item> {
    let m = major(facts);
    let template_storages = match &facts.template {
        Read::Got(Some(t)) => t.disk_storages.clone(),
        _ => vec![],
    };
    let role: Option<Vec<String>> = match &facts.roles {
        Read::Got(roles) => roles.get(privileges::ROLE).cloned(),
        _ => None,
    };
    let mut items = Vec::new();
    let mut all_ok = true;
    let needs = privileges::needs(m, plan, &target_nodes(plan, facts), &template_storages);
    let lacking_any = needs.iter().any(|n| matches!(facts.permissions.get(&n.path), Some(Read::Got(have)) if n.privileges.iter().any(|p| !have.contains(*p))));
    // The README's role, made once; the items below then only grant it.
    let role = match role {
        None if lacking_any && matches!(facts.roles, Read::Got(_)) => {
            let all = privileges::role_privileges(m);
            items.push(Item::problem(
                "privileges",
                format!("role {} does not exist (the privileges the agent needs on PVE {m})", privileges::ROLE),
                format!("pveum role add {} --privs \"{}\"", privileges::ROLE, all.join(" ")),
                Blocks::Nothing,
            ));
            Some(all.iter().map(|p| p.to_string()).collect())
        }
        other => other,
    };
    for need in needs {
        match facts.permissions.get(&need.path) {
            Some(Read::Got(have)) => {
                let missing: Vec<String> = need.privileges.iter().filter(|p| !have.contains(**p)).map(|p| p.to_string()).collect();
                if !missing.is_empty() {
                    all_ok = false;
                    items.push(Item::problem(
                        "privileges",
                        format!("the token lacks {} on {} (to {})", missing.join(", "), need.path, need.why),
                        privileges::fix(m, &plan.token_id, &need, &missing, role.as_deref()),
                        Blocks::Nothing,
                    ));
                }
            }
            Some(r) => {
                all_ok = false;
                items.extend(unread("privileges", &format!("the token's privileges on {}", need.path), r));
            }
            None => {
                all_ok = false;
                items.push(Item::unchecked("privileges", format!("the token's privileges on {} were not read", need.path)));
            }
        }
    }
    if all_ok {
        items.push(Item::ok("privileges", format!("the token holds every privilege the agent needs on every path it touches (PVE {m} names)")));
    }
    items
}

fn nodes(plan: &Plan, facts: &Facts) -> Vec<Item> {
    let Read::Got(nodes) = &facts.nodes else {
        return unread("nodes", "the nodes (GET /nodes)", &facts.nodes).into_iter().collect();
    };
    let mut items = Vec::new();
    for n in target_nodes(plan, facts) {
        match nodes.iter().find(|(name, _)| *name == n) {
            Some((_, true)) => {}
            Some((_, false)) => items.push(Item::warn("nodes", format!("node {n} is offline: no guest is placed there until it is back"), Some(format!("bring {n} back online, or leave it out of [proxmox] nodes")))),
            None => items.push(Item::problem("nodes", format!("node {n} of [proxmox] nodes is not in the cluster"), format!("remove {n} from [proxmox] nodes (the cluster has {})", nodes.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")), Blocks::Nothing)),
        }
    }
    if items.is_empty() {
        items.push(Item::ok("nodes", format!("every node that may receive guests is online: {}", target_nodes(plan, facts).join(", "))));
    }
    items
}

fn vm_template(plan: &Plan, facts: &Facts) -> Item {
    let id = plan.vm_template;
    let t = match &facts.template {
        Read::Got(Some(t)) => t,
        Read::Got(None) => {
            let path = format!("/vms/{id}");
            if matches!(facts.permissions.get(&path), Some(Read::Got(have)) if !have.contains("VM.Audit")) {
                return Item::problem("vm_template", format!("VM template {id} is not visible: the token lacks VM.Audit on {path}"), format!("grant VM.Audit on {path} (see the privileges items)"), Blocks::Nothing);
            }
            return Item::problem(
                "vm_template",
                format!("VM template {id} does not exist"),
                format!("create a cloud-init VM template {id} (a Debian 12 cloud image with a cloud-init drive and `agent: 1`, then `qm template {id}`), or set [proxmox] vm_template"),
                Blocks::Vms,
            )
        }
        r => return unread("vm_template", &format!("VM template {id}"), r).unwrap_or_else(|| Item::unchecked("vm_template", "unknown")),
    };
    let mut wrong = Vec::new();
    if !t.is_template {
        wrong.push(format!("is not a template (qm template {id})"));
    }
    if !t.cloud_init {
        wrong.push(format!("has no cloud-init drive (qm set {id} --ide2 {}:cloudinit)", t.disk_storages.first().map_or("local-lvm", String::as_str)));
    }
    if !t.agent {
        wrong.push(format!("does not enable the QEMU guest agent (qm set {id} --agent enabled=1)"));
    }
    if !wrong.is_empty() {
        return Item::problem("vm_template", format!("VM {id} on {} {}", t.node, wrong.iter().map(|w| w.split(" (").next().unwrap_or(w)).collect::<Vec<_>>().join(", ")), wrong.iter().filter_map(|w| w.split_once(" (").map(|(_, f)| f.trim_end_matches(')').to_string())).collect::<Vec<_>>().join(" && "), Blocks::Vms);
    }
    let shared: BTreeSet<&str> = facts.storages.values().filter_map(|r| match r {
        Read::Got(list) => Some(list),
        _ => None,
    }).flatten().filter(|s| s.shared).map(|s| s.id.as_str()).collect();
    let local: Vec<&String> = t.disk_storages.iter().filter(|s| !shared.contains(s.as_str())).collect();
    let elsewhere: Vec<String> = target_nodes(plan, facts).into_iter().filter(|n| *n != t.node).collect();
    if !local.is_empty() && !elsewhere.is_empty() {
        return Item::warn(
            "vm_template",
            format!("VM template {id} on {} keeps its disks on local storage ({}): VMs can only be placed on {}, not on {}", t.node, local.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "), t.node, elsewhere.join(", ")),
            Some(format!("move the template's disks to a shared storage (qm disk move {id} <disk> <shared storage>), or restrict [proxmox] nodes to {}", t.node)),
        );
    }
    Item::ok("vm_template", format!("VM template {id} on {}: a template with a cloud-init drive and the guest agent, reachable from every node that may receive VMs", t.node))
}

fn lxc_template(plan: &Plan, facts: &Facts) -> Item {
    if let Some(item) = no_nodes("lxc_template", plan, facts) {
        return item;
    }
    let volid = &plan.lxc_template;
    let (storage, file) = volid.split_once(":vztmpl/").unwrap_or(("local", volid.as_str()));
    let mut missing = Vec::new();
    let mut present = Vec::new();
    for n in target_nodes(plan, facts) {
        match facts.lxc_template.get(&n) {
            Some(Read::Got(true)) => present.push(n),
            Some(Read::Got(false)) => missing.push(n),
            Some(r) => return unread("lxc_template", &format!("{storage} on {n}"), r).unwrap_or_else(|| Item::unchecked("lxc_template", "unknown")),
            None => return Item::unchecked("lxc_template", format!("{storage} on {n} was not read")),
        }
    }
    if missing.is_empty() {
        return Item::ok("lxc_template", format!("{volid} is on every node that may receive containers"));
    }
    let fix = missing.iter().map(|n| format!("pveam download {storage} {file} (on {n}; or POST /nodes/{n}/aplinfo storage={storage} template={file})")).collect::<Vec<_>>().join("; ");
    if present.is_empty() {
        Item::problem("lxc_template", format!("{volid} is on no node: every container create would fail (\"can't find file\")"), fix, Blocks::Containers)
    } else {
        Item::problem("lxc_template", format!("{volid} is missing on {}: a container placed there fails at create", missing.join(", ")), fix, Blocks::Nothing)
    }
}

fn storages(plan: &Plan, facts: &Facts) -> Vec<Item> {
    if let Some(item) = no_nodes("storage", plan, facts) {
        return vec![item];
    }
    let mut needs: Vec<(String, &'static str, Blocks, &'static str)> = vec![
        (plan.storage.clone(), "images", Blocks::Nothing, "full clones of VMs"),
        (plan.storage.clone(), "rootdir", Blocks::Containers, "container root disks"),
    ];
    if let Some((s, _)) = plan.lxc_template.split_once(':') {
        needs.push((s.to_string(), "vztmpl", Blocks::Containers, "the container template"));
    }
    if let Some((s, _)) = &plan.node_ssh {
        needs.push((s.clone(), "snippets", Blocks::Nothing, "cloud-init snippets"));
    }
    if let Some(s) = &plan.backup_storage {
        // vzdump refuses a storage without content `backup` (mgr `VZDump.pm` `storage_info`: "can't use storage …
        // for backups - wrong content type"); a deployment itself does not need it.
        needs.push((s.clone(), "backup", Blocks::Nothing, "backups"));
    }
    let mut items = Vec::new();
    for n in target_nodes(plan, facts) {
        let list = match facts.storages.get(&n) {
            Some(Read::Got(l)) => l,
            Some(r) => {
                items.extend(unread("storage", &format!("the storages of {n}"), r));
                continue;
            }
            None => continue,
        };
        for (id, content, blocks, why) in &needs {
            // PVE reads a `cicustom` snippet by its path and never checks the storage's `snippets` flag
            // (sim/STOCK-FACTS.md §1; qemu-server Cloudinit.pm:674-683), and the agent makes the directory over
            // SFTP: without the flag it works, but PVE neither lists the files nor makes the directory.
            let required = *content != "snippets";
            match list.iter().find(|s| s.id == *id) {
                None => items.push(Item::problem("storage", format!("storage {id} (for {why}) is not available on {n}"), format!("add storage {id} to node {n} (pvesm set {id} --nodes …), or configure another storage"), Blocks::Nothing)),
                Some(s) if !s.content.iter().any(|c| c == content) => {
                    let mut all = s.content.clone();
                    all.push(content.to_string());
                    let fix = format!("pvesm set {id} --content {} (or PUT /storage/{id} content={})", all.join(","), all.join(","));
                    if !items.iter().any(|i: &Item| i.fix.as_deref() == Some(fix.as_str())) {
                        let text = format!("storage {id} lacks content type {content} (for {why})");
                        items.push(if required { Item::problem("storage", text, fix, *blocks) } else { Item::warn("storage", format!("{text}: snippets still work, as files the agent writes"), Some(fix)) });
                    }
                }
                Some(_) => {}
            }
        }
    }
    let backup = plan.backup_storage.as_ref().map(|id| backup_storage(id, plan, facts, &mut items));
    if items.is_empty() {
        let list: Vec<String> = needs.iter().map(|(id, c, _, _)| format!("{id}:{c}")).collect();
        let backup = backup.flatten().map_or_else(String::new, |b| format!("; backups to {b}"));
        items.push(Item::ok("storage", format!("content types in place on every node: {}{backup}", list.join(", "))));
    }
    items
}

/// The backup storage beyond its content type: enabled and active on every node (a Proxmox Backup Server storage
/// is active when the node reaches the server and its datastore), and what kind it is (vzdump writes to a file
/// storage's dump directory or to a PBS datastore, mgr `PVE/VZDump.pm:195-223` `storage_info`). Problems go into
/// `items`; the answer describes the storage for the summary line.
fn backup_storage(id: &str, plan: &Plan, facts: &Facts, items: &mut Vec<Item>) -> Option<String> {
    let mut seen: Option<&StorageFacts> = None;
    for n in target_nodes(plan, facts) {
        let Some(Read::Got(list)) = facts.storages.get(&n) else { continue };
        let Some(s) = list.iter().find(|s| s.id == id) else { continue };
        seen = Some(s);
        if !s.enabled {
            items.push(Item::problem("storage", format!("backup storage {id} is disabled on {n}: every backup fails"), format!("pvesm set {id} --disable 0 (or PUT /storage/{id} disable=0)"), Blocks::Nothing));
        } else if !s.active {
            let why = if s.kind == "pbs" { "Proxmox VE cannot reach its Proxmox Backup Server or the datastore" } else { "Proxmox VE cannot access it" };
            let fix = if s.kind == "pbs" {
                format!("check the storage's server, port, datastore, fingerprint, username and password (pvesm status --storage {id} on {n} names the error; pvesm set {id} --fingerprint … --password)")
            } else {
                format!("pvesm status --storage {id} on {n} names the error (a mount that is gone, a path that does not exist)")
            };
            items.push(Item::problem("storage", format!("backup storage {id} is not active on {n} ({why}): every backup from there fails"), fix, Blocks::Nothing));
        }
    }
    let s = seen?;
    Some(match (s.kind.as_str(), s.shared) {
        ("pbs", _) => format!("{id} (Proxmox Backup Server, shared by the nodes)"),
        (kind, true) => format!("{id} ({kind}, shared by the nodes)"),
        (kind, false) => format!("{id} ({kind}, each node's own)"),
    })
}

fn bridges(plan: &Plan, facts: &Facts) -> Item {
    if let Some(item) = no_nodes("bridge", plan, facts) {
        return item;
    }
    let mut missing = Vec::new();
    for n in target_nodes(plan, facts) {
        match facts.bridges.get(&n) {
            Some(Read::Got(list)) if list.iter().any(|b| *b == plan.bridge) => {}
            Some(Read::Got(_)) => missing.push(n),
            Some(r) => return unread("bridge", &format!("the network of {n}"), r).unwrap_or_else(|| Item::unchecked("bridge", "unknown")),
            None => return Item::unchecked("bridge", format!("the network of {n} was not read")),
        }
    }
    if missing.is_empty() {
        Item::ok("bridge", format!("bridge {} exists on every node", plan.bridge))
    } else {
        Item::problem("bridge", format!("bridge {} is missing on {}", plan.bridge, missing.join(", ")), format!("create {} on {} (System > Network), or set [proxmox] bridge", plan.bridge, missing.join(", ")), Blocks::Nothing)
    }
}

fn node_ssh(plan: &Plan, facts: &Facts) -> Item {
    let Some(results) = &facts.node_ssh else {
        return Item::problem(
            "node_ssh",
            "no [proxmox.node_ssh]: a VM's host key cannot be pinned, so VM deployments are refused (containers work)",
            "configure [proxmox.node_ssh] (user, host_keys per node; docs/configuration.md#reaching-the-nodes-over-ssh-cloud-init-snippets) and authorize <data_dir>/keys/deploy_ed25519.pub on the nodes",
            Blocks::Vms,
        );
    };
    if let Some(item) = no_nodes("node_ssh", plan, facts) {
        return item;
    }
    let dir = plan.node_ssh.as_ref().map_or("the snippets directory", |(_, d)| d.as_str());
    let failed: Vec<String> = results.iter().filter_map(|(n, r)| r.as_ref().err().map(|e| format!("{n}: {e}"))).collect();
    if failed.is_empty() {
        Item::ok("node_ssh", format!("SFTP with the pinned host key and a test write into {dir} work on {}", results.keys().cloned().collect::<Vec<_>>().join(", ")))
    } else {
        Item::problem("node_ssh", format!("cannot write into {dir} over SFTP on {}", failed.join("; ")), format!("check [proxmox.node_ssh] (address, user, host key) and that {dir} exists and is writable (enable the snippets content type on the storage)"), Blocks::Nothing)
    }
}

fn vmid_range(plan: &Plan, facts: &Facts) -> Item {
    let Read::Got(guests) = &facts.guests else {
        return unread("vmid_range", "the cluster's guests", &facts.guests).unwrap_or_else(|| Item::unchecked("vmid_range", "unknown"));
    };
    let (first, last) = (plan.vmid_first, plan.vmid_last);
    let inside: Vec<&GuestFacts> = guests.iter().filter(|g| (first..=last).contains(&g.vmid)).collect();
    let foreign: Vec<String> = inside.iter().filter(|g| !g.ours).map(|g| format!("{} ({} on {})", g.vmid, g.name.as_deref().unwrap_or("unnamed"), g.node)).collect();
    let size = u64::from(last - first) + 1;
    if inside.len() as u64 >= size {
        return Item::problem("vmid_range", format!("every id of [proxmox] vmid_range {first}-{last} is taken"), "widen [proxmox] vmid_range to ids no one else uses", Blocks::All);
    }
    if plan.vm_template >= first && plan.vm_template <= last {
        return Item::problem("vmid_range", format!("the VM template {} lies inside vmid_range {first}-{last}", plan.vm_template), "move [proxmox] vmid_range away from the template's id", Blocks::Nothing);
    }
    if foreign.is_empty() {
        Item::ok("vmid_range", format!("ids {first}-{last}: no guest there that is not ours"))
    } else {
        Item::warn("vmid_range", format!("ids {first}-{last} hold guests pvedeploy did not make: {} (they are skipped, never touched)", foreign.join(", ")), Some("give pvedeploy a vmid_range no one else uses".into()))
    }
}

fn address_pool(plan: &Plan, facts: &Facts) -> Option<Item> {
    let pool = plan.address_pool.as_ref()?;
    let Read::Got(guests) = &facts.guests else {
        return unread("address_pool", "the guests' addresses", &facts.guests);
    };
    let clashes: Vec<String> = guests.iter().filter(|g| !g.ours).flat_map(|g| g.addresses.iter().filter(|a| pool.contains(**a)).map(move |a| format!("{a} ({} {})", g.vmid, g.name.as_deref().unwrap_or("unnamed")))).collect();
    Some(if clashes.is_empty() {
        Item::ok("address_pool", "no guest outside pvedeploy has a static address from the address pool")
    } else {
        Item::problem("address_pool", format!("guests pvedeploy did not make use addresses of the pool: {}", clashes.join(", ")), "narrow [proxmox] address_pool to addresses no guest uses", Blocks::Nothing)
    })
}

#[cfg(test)]
mod tests;
