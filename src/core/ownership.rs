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

/// The description written at create: `pvedeploy deployment <id> (<name>)`.
pub fn description_for(id: &DeploymentId, name: &str) -> String {
    format!("{DESCRIPTION_PREFIX}{id} ({name})")
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
        let desc = description_for(&a, "web");
        assert_eq!(Owner::of(&[], Some(&desc)), Owner::Deployment(a.clone()));
        assert_eq!(Owner::of(&[], Some(&format!("{desc}\nnotes by the operator"))), Owner::Deployment(a.clone()));
        assert_eq!(Owner::of(&[TAG.into()], None), Owner::Unmarked, "the shared tag alone names no deployment");
        assert_eq!(Owner::of(&["pvedeploy-0190".into()], Some("pvedeploy deployment 12")), Owner::Unmarked, "a truncated id is no mark");
        assert_eq!(Owner::of(&[tag_for(&b)], Some(&desc)), Owner::Conflicting);
        assert_eq!(Owner::of(&[tag_for(&a)], Some(&desc)), Owner::Deployment(a));
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
