//! Drift: compares what the store recorded, what the live guest has and what the export on disk says, and names
//! every difference (a field, its three values, a sentence) — memory or cores changed behind our back, a guest
//! deleted, tags removed, any exported attribute changed on Proxmox (the export rendered afresh against the files as
//! written), an export edited by hand, missing, without its manifest, or with files pvedeploy did not write. What
//! could not be read is not a difference: it is an `Unreadable`, named apart.

use std::collections::BTreeMap;

use super::live::{LiveGuest, Summary};
use super::ExportFile;
use crate::core::deployment::Deployment;
use crate::core::status::Status;

/// What Proxmox said about the deployment's guest.
#[derive(Debug, Clone)]
pub enum LiveState {
    /// The guest as read, and its export rendered from it now.
    Present { guest: Box<LiveGuest>, files: Vec<ExportFile> },
    /// Proxmox answered that the guest does not exist.
    Missing,
    /// Proxmox could not be asked (or did not answer in time); nothing is known.
    Unreadable(String),
}

/// What the export folder holds.
#[derive(Debug, Clone)]
pub enum ExportState {
    /// No folder, or an empty one.
    Missing,
    /// The folder holds files but no manifest of this deployment, so nothing in it can be checked.
    Unowned { files: Vec<String>, why: NoManifest },
    Present(Box<ExportFiles>),
    /// The folder could not be read (permissions, I/O, or no answer in time).
    Unreadable(String),
}

/// Why an export folder with files in it has no manifest of its deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoManifest {
    /// `.pvedeploy-export.json` is not there (deleted).
    Missing,
    /// It is there but is not a manifest pvedeploy can read.
    Unreadable(String),
    /// It names another deployment (of the same name) as the folder's owner.
    OtherDeployment(String),
}

/// An export as pvedeploy wrote it (its manifest) and as the folder holds it now.
#[derive(Debug, Clone)]
pub struct ExportFiles {
    /// The figures the export was written with.
    pub summary: Summary,
    /// File name → SHA-256 of what was written.
    pub hashes: BTreeMap<String, String>,
    /// The text of each file that still holds exactly what was written (to name what changed on Proxmox since).
    pub intact: BTreeMap<String, String>,
    /// Files whose content no longer hashes to what was written.
    pub edited: Vec<String>,
    /// Files that were written and are gone.
    pub removed: Vec<String>,
    /// Entries of the folder pvedeploy did not write (its manifest aside); a directory ends in `/`.
    pub extra: Vec<String>,
}

/// One difference between the store, the live guest and the export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub deployment_id: String,
    pub deployment: String,
    /// `memory_mib`, `cores`, `disk_gb`, `tags`, `started`, `guest`, `export`, `export:<file>` (the file on disk),
    /// `live:<file>` (the file rendered now from the live guest against the file as written).
    pub field: String,
    pub store: Option<String>,
    pub live: Option<String>,
    pub export: Option<String>,
    pub message: String,
}

/// Which side of a deployment could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Guest,
    Export,
}

impl Part {
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Guest => "guest",
            Part::Export => "export",
        }
    }
}

/// A deployment whose drift is (partly) unknown because its guest or its export could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    pub deployment_id: String,
    pub deployment: String,
    pub part: Part,
    /// `node/vmid` of the guest the store records.
    pub guest: String,
    pub reason: String,
}

/// What one deployment's check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checked {
    pub differences: Vec<Difference>,
    pub unreadable: Vec<Unreadable>,
}

/// The most lines of one file shown on each side of a `live:<file>` difference.
const SHOWN_LINES: usize = 12;

/// Every difference for one deployment that has a guest, or that had one and still has its export; `required_tags`
/// are the tags every guest of ours carries.
pub fn compare(d: &Deployment, required_tags: &[String], live: &LiveState, export: &ExportState) -> Checked {
    let mut checked = Checked::default();
    let (Some(node), Some(vmid)) = (d.proxmox_node.as_ref(), d.proxmox_id) else {
        lost_guest_export(d, export, &mut checked);
        return checked;
    };
    let guest = format!("{node}/{vmid}");
    let name = d.spec.name.as_str();
    let out = &mut checked.differences;
    let mut push = |field: &str, store: Option<String>, live: Option<String>, export: Option<String>, message: String| {
        out.push(Difference { deployment_id: d.id.to_string(), deployment: name.to_owned(), field: field.into(), store, live, export, message })
    };
    let unreadable = |part: Part, reason: &str| Unreadable { deployment_id: d.id.to_string(), deployment: name.to_owned(), part, guest: guest.clone(), reason: reason.to_owned() };
    let rewritten = "pvedeploy rewrites it at the deployment's next change, or when the agent restarts";
    let written = match export {
        ExportState::Present(w) => Some(&**w),
        _ => None,
    };
    match export {
        ExportState::Missing => push("export", Some(guest.clone()), None, None, format!("the Terraform export of {name} is missing; {rewritten}")),
        ExportState::Unowned { files, why } => {
            let what = match why {
                NoManifest::Missing => format!("its manifest {} was deleted", super::dir::MANIFEST),
                NoManifest::Unreadable(e) => format!("its manifest {} cannot be read ({e})", super::dir::MANIFEST),
                NoManifest::OtherDeployment(id) => format!("its manifest names another deployment ({id})"),
            };
            let message = format!(
                "the export folder of {name} holds {} but {what}, so pvedeploy cannot tell whether these files are what it wrote; {rewritten}",
                files.join(", ")
            );
            push("export", Some(guest.clone()), None, Some("no manifest".into()), message);
        }
        ExportState::Unreadable(why) => checked.unreadable.push(unreadable(Part::Export, why)),
        ExportState::Present(w) => {
            for f in &w.edited {
                push(&format!("export:{f}"), None, None, Some("edited".into()), format!("{f} of the export of {name} was edited by hand since pvedeploy wrote it"));
            }
            for f in &w.removed {
                push(&format!("export:{f}"), None, None, Some("missing".into()), format!("{f} of the export of {name} was removed since pvedeploy wrote it"));
            }
            for f in &w.extra {
                let read = if terraform_reads(f) { "Terraform reads it with the export, and " } else { "" };
                let message = format!("{f} is in the export folder of {name} but pvedeploy did not write it: {read}the folder is replaced whole when pvedeploy rewrites it, so keep your own files elsewhere");
                push(&format!("export:{f}"), None, None, Some("extra".into()), message);
            }
        }
    }
    let (g, files) = match live {
        LiveState::Present { guest, files } => (&**guest, files),
        LiveState::Missing => {
            push("guest", Some(guest.clone()), None, written.map(|w| format!("{}/{}", w.summary.node, w.summary.vmid)), format!("guest {guest} of {name} no longer exists on Proxmox: it was deleted behind pvedeploy's back"));
            return checked;
        }
        LiveState::Unreadable(why) => {
            checked.unreadable.push(unreadable(Part::Guest, why));
            return checked;
        }
    };
    if let Some(w) = written {
        for s in stale_files(name, &guest, w, files) {
            push(&s.field, None, s.live, s.export, s.message);
        }
    }
    let written = written.map(|w| &w.summary);
    let mut figure = |field: &str, unit: &str, store: Option<u64>, live: Option<u64>, export: Option<u64>| {
        let present: Vec<u64> = [store, live, export].into_iter().flatten().collect();
        if present.windows(2).all(|w| w[0] == w[1]) {
            return;
        }
        let show = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
        let message = format!("{field} differs for {name}: store {} {unit}, live {} {unit}, export {} {unit}", show(store), show(live), show(export));
        push(field, store.map(|v| v.to_string()), live.map(|v| v.to_string()), export.map(|v| v.to_string()), message);
    };
    figure("memory_mib", "MiB", Some(d.spec.memory_mib.into()), Some(g.memory_mib), written.map(|w| w.memory_mib));
    figure("cores", "cores", Some(d.spec.cpu.into()), Some(g.cores.into()), written.map(|w| u64::from(w.cores)));
    figure("disk_gb", "GiB", Some(d.spec.disk_gb.into()), g.disk.as_ref().map(|x| x.size_gib), written.and_then(|w| w.disk_gib));

    let missing: Vec<&str> = required_tags.iter().filter(|t| !g.tags.contains(t)).map(String::as_str).collect();
    let export_tags = written.map(|w| w.tags.join(";"));
    if !missing.is_empty() || export_tags.as_ref().is_some_and(|t| *t != g.tags.join(";")) {
        let what = if missing.is_empty() {
            "the guest's tags differ from the export's".to_string()
        } else {
            format!("the guest lost its tag(s) {}: the reconciler cannot tell it is ours", missing.join(", "))
        };
        push("tags", Some(required_tags.join(";")), Some(g.tags.join(";")), export_tags, format!("{what} ({name})"));
    }
    let expected_running = match d.status {
        Status::Stopped => Some(false),
        Status::Installing | Status::Deploying | Status::Running => Some(true),
        _ => None,
    };
    let written_running = written.map(|w| w.running);
    if expected_running.is_some_and(|e| e != g.running) || written_running.is_some_and(|w| w != g.running) {
        let word = |b: bool| if b { "running" } else { "stopped" }.to_string();
        push("started", expected_running.map(word), Some(word(g.running)), written_running.map(word), format!("guest {guest} of {name} is {} on Proxmox", word(g.running)));
    }
    checked
}

/// A file of the export that the live guest would render differently from what was written.
struct Stale {
    /// `live:<file>`
    field: String,
    /// The lines as rendered now, where they can be told.
    live: Option<String>,
    /// The lines as written, where they can be told.
    export: Option<String>,
    message: String,
}

/// The export rendered now from the live guest, file by file, against the manifest's hashes: every file whose text
/// would change, with the attributes that changed when the file on disk still holds what was written.
fn stale_files(name: &str, guest: &str, w: &ExportFiles, fresh: &[ExportFile]) -> Vec<Stale> {
    let tail = "pvedeploy rewrites the export at the deployment's next change, or when the agent restarts";
    let mut out = Vec::new();
    for f in fresh {
        let field = format!("live:{}", f.path);
        let Some(hash) = w.hashes.get(&f.path) else {
            let message = format!("{} is missing from the export of {name}: pvedeploy writes it now but did not when the export was written; {tail}", f.path);
            out.push(Stale { field, live: Some("written".into()), export: None, message });
            continue;
        };
        if *hash == f.sha256() {
            continue;
        }
        let head = format!("{} of the export of {name} no longer describes guest {guest} on Proxmox", f.path);
        let stale = match w.intact.get(&f.path) {
            Some(old) => {
                let (removed, added) = changed_lines(old, &f.content);
                let mut names: Vec<String> = Vec::new();
                for n in changed_names(old, &removed).into_iter().chain(changed_names(&f.content, &added)) {
                    if !names.contains(&n) {
                        names.push(n);
                    }
                }
                let what = if names.is_empty() { "its layout changed".to_string() } else { format!("changed: {}", names.join(", ")) };
                Stale { field, live: Some(shown(&f.content, &added)), export: Some(shown(old, &removed)), message: format!("{head} ({what}); {tail}") }
            }
            // The file was edited by hand or removed too (reported as such): there is nothing to compare line by line.
            None => Stale { field, live: None, export: None, message: format!("{head} (the file on disk was edited or removed too, so the changed attributes cannot be named); {tail}") },
        };
        out.push(stale);
    }
    for file in w.hashes.keys().filter(|k| !fresh.iter().any(|f| f.path == **k)) {
        let message = format!("{file} of the export of {name} is no longer part of the export; {tail}");
        out.push(Stale { field: format!("live:{file}"), live: None, export: Some("written".into()), message });
    }
    out
}

/// Whether Terraform reads a file of this name in a configuration folder.
fn terraform_reads(file: &str) -> bool {
    [".tf", ".tf.json", ".tfvars", ".tfvars.json"].iter().any(|ext| file.ends_with(ext))
}

/// A line as compared: runs of blanks collapsed, so `terraform fmt`'s re-alignment of `=` is no change.
fn normalized(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Indexes of the lines of `old` that are gone and of `new` that are new (a longest common subsequence of
/// normalized lines; export files are a few hundred lines at most).
fn changed_lines(old: &str, new: &str) -> (Vec<usize>, Vec<usize>) {
    let a: Vec<String> = old.lines().map(normalized).collect();
    let b: Vec<String> = new.lines().map(normalized).collect();
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut removed, mut added) = (0, 0, Vec::new(), Vec::new());
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if j == m || (i < n && lcs[i + 1][j] >= lcs[i][j + 1]) {
            removed.push(i);
            i += 1;
        } else {
            added.push(j);
            j += 1;
        }
    }
    (removed, added)
}

/// The dotted name of the attribute or block on each line of `text` (`description`, `memory.dedicated`; empty for
/// closing braces, blank lines and comments), the resource block itself left out of the path.
fn line_names(text: &str) -> Vec<String> {
    let mut path: Vec<String> = Vec::new();
    let mut names = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('}') {
            path.pop();
        }
        let word = t.split([' ', '=', '{', '"']).next().unwrap_or("").to_owned();
        let name = if word.is_empty() || t.starts_with('#') {
            String::new()
        } else {
            path.iter().map(String::as_str).filter(|p| *p != "resource").chain([word.as_str()]).collect::<Vec<_>>().join(".")
        };
        names.push(name);
        if t.ends_with('{') {
            path.push(word);
        }
    }
    names
}

/// The names of the given lines of `text` (see `line_names`).
fn changed_names(text: &str, lines: &[usize]) -> Vec<String> {
    let names = line_names(text);
    lines.iter().filter_map(|&i| names.get(i)).filter(|n| !n.is_empty()).cloned().collect()
}

/// The given lines of `text`, one per line, each attribute under its dotted name (`memory.dedicated = 2048`); at
/// most `SHOWN_LINES`.
fn shown(text: &str, lines: &[usize]) -> String {
    let all: Vec<&str> = text.lines().collect();
    let names = line_names(text);
    let mut out: Vec<String> = lines
        .iter()
        .take(SHOWN_LINES)
        .filter_map(|&i| {
            let line = normalized(all.get(i)?);
            let name = names.get(i).filter(|n| n.contains('.'));
            let word = line.split([' ', '=', '{', '"']).next().unwrap_or("").to_owned();
            Some(match name {
                Some(n) => format!("{n}{}", &line[word.len()..]),
                None => line,
            })
        })
        .collect();
    if lines.len() > SHOWN_LINES {
        out.push(format!("… {} more line(s)", lines.len() - SHOWN_LINES));
    }
    out.join("\n")
}

/// A deployment that no longer records a guest (the agent found it deleted and forgot it) while its export folder
/// still describes one: a `terraform apply` there would create that guest again, so it is a difference.
fn lost_guest_export(d: &Deployment, export: &ExportState, checked: &mut Checked) {
    let ExportState::Present(w) = export else { return };
    let guest = format!("{}/{}", w.summary.node, w.summary.vmid);
    let name = d.spec.name.as_str();
    let message = format!(
        "guest {guest} of {name} no longer exists on Proxmox (pvedeploy found it deleted behind its back and forgot it), \
         but its Terraform export still describes it: `terraform apply` there would create it again; redeploy to provision a new guest"
    );
    checked.differences.push(Difference {
        deployment_id: d.id.to_string(),
        deployment: name.to_owned(),
        field: "guest".into(),
        store: None,
        live: None,
        export: Some(guest),
        message,
    });
}

#[cfg(test)]
mod tests;
