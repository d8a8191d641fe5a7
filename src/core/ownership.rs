//! Which deployment a guest on Proxmox belongs to, read from the marks the agent writes into the guest
//! itself: a tag unique to the deployment and the deployment id in the guest's description. Pure.
//!
//! The description is the mark written in the create call itself for both kinds (PVE's
//! `POST /nodes/{node}/qemu/{vmid}/clone` takes `description` but no `tags`; `POST /nodes/{node}/lxc`
//! takes both — PVE 9.1 `apidoc.json`), so no window exists in which a guest we made is unmarked. The
//! tag is added to a clone by the configure step and lets the reconciler find our guests in
//! `/cluster/resources`, which lists tags but not descriptions.

use crate::core::deployment::DeploymentId;

/// The tag every guest of ours carries, whatever its deployment (the reconciler's filter).
pub const TAG: &str = "pvedeploy";

/// The tag of `id`'s guest: `pvedeploy-<the whole deployment id>`. PVE's tag format is
/// `[a-z0-9_][a-z0-9_\-+.]*` (`$PVE_TAG_RE` for the `pve-tag` format, pve-common `src/PVE/JSONSchema.pm`);
/// a hyphenated lowercase UUID fits.
pub fn tag_for(id: &DeploymentId) -> String {
    format!("{TAG}-{id}")
}

/// What the description of `id`'s guest starts with (the app name follows, for people).
const DESCRIPTION_PREFIX: &str = "pvedeploy deployment ";

/// What the description's spec line starts with.
const SPEC_PREFIX: &str = "pvedeploy-spec ";

/// The description written at create: `pvedeploy deployment <id> (<name>)`, then on its own line the
/// request that made it (`pvedeploy-spec {json}`, no secrets: environment values are never in a spec),
/// so `pvedeploy recover` can rebuild a lost record from the guest alone.
pub fn description_for(id: &DeploymentId, spec: &crate::core::deployment::Spec) -> String {
    format!("{DESCRIPTION_PREFIX}{id} ({})\n{SPEC_PREFIX}{}", spec.name, spec_json(spec))
}

/// The spec as the request's fields (the names `POST /api/v1/deployments` takes).
fn spec_json(s: &crate::core::deployment::Spec) -> String {
    let mut v = serde_json::json!({
        "name": s.name.as_str(),
        "type": s.guest_type.as_str(),
        "framework": s.framework.as_str(),
        "repo_url": s.repo_url.to_string(),
        "branch": s.branch.as_str(),
        "cpu": s.cpu,
        "memory_mib": s.memory_mib,
        "disk_gb": s.disk_gb,
        "node": s.node.as_ref().map(|n| n.as_str()),
        "auto_redeploy": s.auto_redeploy,
        "health_path": s.health_path.as_str(),
        "start_command": s.start_command.as_ref().map(|c| c.as_str()),
        "persistent_paths": s.persistent_paths.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
        "health_timeout_secs": s.health_timeout_secs,
        "health_status": s.health_status,
    });
    // Only when set, so guests made before these fields read the same.
    if !s.paths.is_empty() {
        v["paths"] = s.paths.iter().map(|p| p.as_str()).collect::<Vec<_>>().into();
    }
    if let Some(t) = &s.deploy_tags {
        v["deploy_tags"] = t.as_str().into();
    }
    if s.previews {
        v["previews"] = true.into();
        v["previews_from_forks"] = s.previews_from_forks.into();
        v["preview_ttl_hours"] = s.preview_ttl_hours.into();
    }
    v.to_string()
}

/// The request recorded in a guest's description, unparsed (it is checked again like any request).
pub fn spec_in_description(description: &str) -> Option<crate::core::deployment::RawSpec> {
    let line = description.lines().find_map(|l| l.trim().strip_prefix(SPEC_PREFIX))?;
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(String::from);
    let int = |k: &str| v.get(k).and_then(|x| x.as_i64());
    Some(crate::core::deployment::RawSpec {
        name: text("name"),
        guest_type: text("type"),
        framework: text("framework"),
        repo_url: text("repo_url"),
        branch: text("branch"),
        cpu: int("cpu"),
        memory_mib: int("memory_mib"),
        disk_gb: int("disk_gb"),
        node: text("node"),
        auto_redeploy: v.get("auto_redeploy").and_then(|x| x.as_bool()),
        health_path: text("health_path"),
        start_command: text("start_command"),
        persistent_paths: v.get("persistent_paths").and_then(|x| x.as_array()).map(|a| a.iter().filter_map(|p| p.as_str().map(String::from)).collect()),
        health_timeout_secs: int("health_timeout_secs"),
        health_status: int("health_status"),
        paths: v.get("paths").and_then(|x| x.as_array()).map(|a| a.iter().filter_map(|p| p.as_str().map(String::from)).collect()),
        deploy_tags: text("deploy_tags"),
        previews: v.get("previews").and_then(|x| x.as_bool()),
        previews_from_forks: v.get("previews_from_forks").and_then(|x| x.as_bool()),
        preview_ttl_hours: int("preview_ttl_hours"),
    })
}

/// Whose guest it is, by its marks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// The marks name this deployment (tag, description, or both agreeing).
    Deployment(DeploymentId),
    /// No pvedeploy mark: someone else's guest.
    Unmarked,
    /// Two different deployments are named: trust neither.
    Conflicting,
}

impl Owner {
    /// Reads a guest's marks from its tags and description (as Proxmox returns them).
    pub fn of(tags: &[String], description: Option<&str>) -> Owner {
        let from_tags: Vec<DeploymentId> = tags
            .iter()
            .filter_map(|t| t.strip_prefix(TAG)?.strip_prefix('-'))
            .filter_map(DeploymentId::parse)
            .collect();
        // PVE stores the description URL-encoded in the config file but answers it decoded; only its
        // first line matters (an operator may add notes below).
        let from_description = description.and_then(|d| {
            let at = d.find(DESCRIPTION_PREFIX)?;
            let rest = &d[at + DESCRIPTION_PREFIX.len()..];
            DeploymentId::parse(rest.get(..36)?)
        });
        let mut named: Vec<DeploymentId> = from_tags.into_iter().chain(from_description).collect();
        named.sort();
        named.dedup();
        match named.len() {
            0 => Owner::Unmarked,
            1 => Owner::Deployment(named.remove(0)),
            _ => Owner::Conflicting,
        }
    }

    /// Whether the marks name exactly `id`.
    pub fn is(&self, id: &DeploymentId) -> bool {
        matches!(self, Owner::Deployment(d) if d == id)
    }
}

/// Why the agent will not act on a guest. Each says what a person should look at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotOurs {
    #[error("guest {vmid} carries no pvedeploy mark for this deployment: it is not ours, left untouched")]
    Foreign { vmid: u32 },
    #[error("guest {vmid} is marked as deployment {other}'s, not this one's: left untouched")]
    Others { vmid: u32, other: String },
    #[error("guest {vmid} carries marks of two deployments: left untouched")]
    Conflicting { vmid: u32 },
    #[error("our store records VMID {vmid} as {}: left untouched", match .holder { Some(h) => format!("held by deployment {h}"), None => "held by no deployment".to_string() })]
    ClaimElsewhere { vmid: u32, holder: Option<String> },
}

/// The pure part of the ownership rule: the store's claim for the VMID belongs to `id` and the guest's
/// marks name `id`. (The engine adds the third part, the lease, immediately before the call.)
pub fn check(id: &DeploymentId, vmid: u32, claim_holder: Option<&str>, owner: &Owner) -> Result<(), NotOurs> {
    if claim_holder != Some(id.as_str()) {
        return Err(NotOurs::ClaimElsewhere { vmid, holder: claim_holder.map(String::from) });
    }
    match owner {
        Owner::Deployment(d) if d == id => Ok(()),
        Owner::Deployment(d) => Err(NotOurs::Others { vmid, other: d.to_string() }),
        Owner::Unmarked => Err(NotOurs::Foreign { vmid }),
        Owner::Conflicting => Err(NotOurs::Conflicting { vmid }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> DeploymentId {
        DeploymentId::parse(&format!("01900000-0000-7000-8000-0000000000{n:02x}")).unwrap()
    }

    #[test]
    fn tags_carry_the_whole_id_and_are_valid_pve_tags() {
        let (a, b) = (id(1), id(2));
        assert_ne!(tag_for(&a), tag_for(&b), "two deployments created in the same second differ");
        let t = tag_for(&a);
        assert!(t.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-+.".contains(c)), "{t}");
        assert_eq!(Owner::of(&[TAG.into(), t], None), Owner::Deployment(a));
    }

    #[test]
    fn marks_are_read_from_tags_and_description() {
        let (a, b) = (id(1), id(2));
        let desc = description_for(&a, &spec());
        assert_eq!(Owner::of(&[], Some(&desc)), Owner::Deployment(a.clone()));
        assert_eq!(Owner::of(&[], Some(&format!("{desc}\nnotes by the operator"))), Owner::Deployment(a.clone()));
        assert_eq!(Owner::of(&[TAG.into()], None), Owner::Unmarked, "the shared tag alone names no deployment");
        assert_eq!(Owner::of(&["pvedeploy-0190".into()], Some("pvedeploy deployment 12")), Owner::Unmarked, "a truncated id is no mark");
        assert_eq!(Owner::of(&[tag_for(&b)], Some(&desc)), Owner::Conflicting);
        assert_eq!(Owner::of(&[tag_for(&a)], Some(&desc)), Owner::Deployment(a));
    }

    fn spec() -> crate::core::deployment::Spec {
        let raw = crate::core::deployment::RawSpec {
            name: Some("web".into()),
            framework: Some("flask".into()),
            repo_url: Some("https://github.com/octo/app".into()),
            start_command: Some("gunicorn -b \"$HOST:$PORT\" app:app".into()),
            persistent_paths: Some(vec!["data/".into()]),
            health_status: Some(204),
            ..Default::default()
        };
        crate::core::deployment::Spec::parse(raw, &crate::core::limits::Limits::default(), &crate::core::limits::RepoPolicy::default()).unwrap()
    }

    #[test]
    fn the_request_in_the_description_parses_back_to_the_same_spec() {
        let s = spec();
        let desc = format!("{}\nnotes by the operator", description_for(&id(1), &s));
        let raw = spec_in_description(&desc).expect("a spec line");
        let back = crate::core::deployment::Spec::parse(raw, &crate::core::limits::Limits::default(), &crate::core::limits::RepoPolicy::default()).unwrap();
        assert_eq!(back, s);
        assert_eq!(spec_in_description("pvedeploy deployment x (web)"), None, "a guest made before specs were written");
    }

    #[test]
    fn the_rule_needs_our_claim_and_our_mark() {
        let (a, b) = (id(1), id(2));
        let ours = Owner::Deployment(a.clone());
        assert_eq!(check(&a, 100, Some(a.as_str()), &ours), Ok(()));
        assert!(matches!(check(&a, 100, None, &ours), Err(NotOurs::ClaimElsewhere { .. })), "store rolled back: no claim, no action");
        assert!(matches!(check(&a, 100, Some(b.as_str()), &ours), Err(NotOurs::ClaimElsewhere { .. })));
        assert!(matches!(check(&a, 100, Some(a.as_str()), &Owner::Unmarked), Err(NotOurs::Foreign { .. })));
        assert!(matches!(check(&a, 100, Some(a.as_str()), &Owner::Deployment(b)), Err(NotOurs::Others { .. })));
    }
}
