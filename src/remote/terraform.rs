//! `pvedeploy export` and `pvedeploy drift`: the Terraform files of deployments written to a folder, and the drift
//! report with its exit code (0 clean, 1 differences, 2 could not check everything).

use std::path::Path;

use super::{deployment_arg, write_export, DriftJson, Remote, RemoteError};

/// A deployment the export did not write, and why.
struct NotWritten {
    name: String,
    why: String,
}

/// Writes the export of `name` (or, `all`, of every deployment with a guest or failed without one) under `out`. Exit code 0 when every
/// one was written, 1 when any was skipped or failed (each named with its reason); an unreachable agent or a refused
/// token is an error (exit 2), as is a missing `NAME`.
pub async fn export(remote: &Remote, name: Option<&str>, all: bool, out: &Path) -> Result<u8, RemoteError> {
    let names = match (name, all) {
        (Some(n), _) => vec![deployment_arg(n)?],
        (None, true) => remote.names_to_export_all().await?,
        (None, false) => return Err(super::arg("NAME", "is required (a deployment name or id), or give --all")),
    };
    let mut skipped: Vec<NotWritten> = Vec::new();
    let mut written = 0usize;
    for (i, n) in names.iter().enumerate() {
        match remote.export(n).await {
            Ok(export) => {
                let folder = write_export(out, &export)?;
                println!("wrote {} ({} files, {})", folder.display(), export.files.len(), export.resource);
                written += 1;
            }
            Err(e @ (RemoteError::Unreachable { .. } | RemoteError::Auth { .. } | RemoteError::Argument { .. })) => return Err(e),
            // Proxmox is not answering the agent: asking about the rest would wait as long again for each.
            Err(e @ RemoteError::ProxmoxSlow { .. }) => {
                eprintln!("skipped {n}: {e}");
                skipped.push(NotWritten { name: n.clone(), why: e.to_string() });
                for rest in &names[i + 1..] {
                    skipped.push(NotWritten { name: rest.clone(), why: format!("not asked: Proxmox VE did not answer for {n}") });
                }
                break;
            }
            Err(e) => {
                eprintln!("skipped {n}: {e}");
                skipped.push(NotWritten { name: n.clone(), why: e.to_string() });
            }
        }
    }
    if skipped.is_empty() {
        return Ok(0);
    }
    let list: Vec<String> = skipped.iter().map(|s| format!("{} ({})", s.name, s.why)).collect();
    eprintln!("error: wrote {written} of {} export(s); not written: {}", names.len(), list.join("; "));
    Ok(1)
}

/// Prints the drift report (tab-separated lines, or `--json`) and answers its exit code: 2 when any deployment could
/// not be checked (named with the reason), else 1 when there are differences, else 0.
pub async fn drift(remote: &Remote, json: bool) -> Result<u8, RemoteError> {
    let report = remote.drift().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report).expect("the report serializes"));
    } else {
        for d in &report.differences {
            println!("{}\t{}\t{}", d.deployment, d.field, d.message);
        }
        for u in &report.unreadable {
            println!("{}\tunreadable:{}\tcould not check the {} of {} ({}): {}", u.deployment, u.part, u.part, u.deployment, u.guest, u.reason);
        }
        println!("{}", summary(&report));
    }
    Ok(exit_code(&report))
}

/// The last line of the text report.
fn summary(r: &DriftJson) -> String {
    let mut s = format!("{} difference(s) in {} deployment(s) checked", r.differences.len(), r.checked);
    if !r.unreadable.is_empty() {
        let mut names: Vec<&str> = r.unreadable.iter().map(|u| u.deployment.as_str()).collect();
        names.dedup();
        s.push_str(&format!("; could not check {}: {}", names.len(), names.join(", ")));
    }
    s
}

fn exit_code(r: &DriftJson) -> u8 {
    if !r.unreadable.is_empty() {
        2
    } else if !r.differences.is_empty() {
        1
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::{DriftItemJson, UnreadableJson};

    fn report(differences: usize, unreadable: &[&str]) -> DriftJson {
        let item = |i: usize| DriftItemJson { deployment_id: format!("id{i}"), deployment: format!("d{i}"), field: "cores".into(), store: None, live: None, export: None, message: String::new() };
        let u = |n: &&str| UnreadableJson { deployment_id: format!("id-{n}"), deployment: (*n).into(), part: "guest".into(), guest: "pve1/100".into(), reason: "no answer".into() };
        DriftJson { checked: 3, differences: (0..differences).map(item).collect(), unreadable: unreadable.iter().map(u).collect(), generated_at: String::new() }
    }

    #[test]
    fn could_not_check_wins_over_differences_and_names_the_deployments() {
        assert_eq!(exit_code(&report(0, &[])), 0);
        assert_eq!(exit_code(&report(2, &[])), 1);
        assert_eq!(exit_code(&report(2, &["shop"])), 2);
        assert_eq!(exit_code(&report(0, &["shop", "blog"])), 2);
        assert_eq!(summary(&report(1, &["shop", "blog"])), "1 difference(s) in 3 deployment(s) checked; could not check 2: shop, blog");
    }
}
