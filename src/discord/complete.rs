//! Autocomplete: suggestions for an option naming a deployment or a schedule as the user types it, limited to what
//! the caller's roles may act on (Discord's `APPLICATION_COMMAND_AUTOCOMPLETE` interaction, answered with
//! `APPLICATION_COMMAND_AUTOCOMPLETE_RESULT`: [receiving and responding](https://discord.com/developers/docs/interactions/receiving-and-responding#interaction-response-object-autocomplete)).

use std::collections::HashMap;

use serde_json::Value;

use crate::core::deployment::DeploymentId;
use crate::core::schedule::{Schedule, Target};
use crate::core::status::Status;
use crate::engine::EngineError;
use crate::core::listing::{Filter, PageStart};

use super::authz::authorize;
use super::command::Need;
use super::definitions::{self, Completes};
use super::interaction::Interaction;
use super::reply::{self, MAX_CHOICES};
use super::{render, DiscordDoor};

/// How many of the newest deployments or schedules are searched for a name that contains what was typed (those that
/// start with it are found by the store at any depth).
const SCAN: u32 = 200;

/// Where `typed` is in `candidate` (case-insensitive): 0 at the start, 1 inside, `None` not at all.
fn rank(typed: &str, candidate: &str) -> Option<u8> {
    let (t, c) = (typed.to_lowercase(), candidate.to_lowercase());
    if c.starts_with(&t) {
        Some(0)
    } else if c.contains(&t) {
        Some(1)
    } else {
        None
    }
}

/// The candidates (`(what is matched, name shown, value)`) that match `typed`: those that start with it first, then
/// those that contain it, each group in the given order, at most 25, no value twice.
pub fn matching(typed: &str, candidates: Vec<(String, String, String)>) -> Vec<(String, String)> {
    let typed = typed.trim();
    let mut ranked: Vec<(u8, usize, String, String)> = Vec::new();
    for (n, (key, name, value)) in candidates.into_iter().enumerate() {
        if ranked.iter().any(|r| r.3 == value) {
            continue;
        }
        if let Some(r) = rank(typed, &key) {
            ranked.push((r, n, name, value));
        }
    }
    ranked.sort_by_key(|r| (r.0, r.1));
    ranked.into_iter().take(MAX_CHOICES).map(|(_, _, name, value)| (name, value)).collect()
}

/// The answer to an autocomplete interaction: type 8 with the matching choices, none when the caller may not use
/// the command or the option names nothing we complete.
pub async fn answer(door: &DiscordDoor, i: &Interaction, command: &str, focused: &str, typed: &str) -> Value {
    let Some(need) = definitions::need_of(command) else { return reply::autocomplete(&[]) };
    if authorize(&door.inner.policy, i, need).is_err() {
        return reply::autocomplete(&[]);
    }
    let found = match definitions::completes(command, focused) {
        Some(Completes::Deployment) => deployments(door, need, typed).await,
        Some(Completes::Schedule) => schedules(door, typed).await,
        None => Ok(vec![]),
    };
    match found {
        Ok(choices) => reply::autocomplete(&choices),
        Err(e) => {
            tracing::warn!(error = %e, command, "Discord autocomplete: no suggestions");
            reply::autocomplete(&[])
        }
    }
}

/// Deployments whose name matches; a change command is not offered deployments that are destroyed or being
/// destroyed (nothing can be done to them).
async fn deployments(door: &DiscordDoor, need: Need, typed: &str) -> Result<Vec<(String, String)>, EngineError> {
    let engine = &door.inner.engine;
    let typed = typed.trim().to_lowercase();
    let mut found = Vec::new();
    // Names starting with what was typed, from the store's name index, at any depth.
    if let Ok(prefix) = crate::core::names::AppNamePrefix::parse(&typed) {
        let filter = Filter { name: Some(prefix), ..Filter::default() };
        found.extend(engine.list_deployments(&filter, MAX_CHOICES as u32 * 2, &PageStart::First).await?.items);
    }
    // Names containing it, among the newest.
    found.extend(engine.list_deployments(&Filter::default(), SCAN, &PageStart::First).await?.items);
    let candidates = found
        .into_iter()
        .filter(|d| need == Need::Read || !matches!(d.status, Status::Destroying | Status::Destroyed))
        .map(|d| {
            let name = d.spec.name.to_string();
            (name.clone(), format!("{name} — {} {} ({})", render::icon(d.status), d.status, d.spec.framework.as_str()), name)
        })
        .collect();
    Ok(matching(&typed, candidates))
}

/// Schedules whose action, target name, expression or id matches; `/unschedule` is not offered `destroy` schedules
/// (the API asks an admin token for them; Discord's change role is not one).
async fn schedules(door: &DiscordDoor, typed: &str) -> Result<Vec<(String, String)>, EngineError> {
    let (items, _) = door.inner.schedules.list(SCAN, 0).await?;
    let mut names = TargetNames::default();
    let mut candidates = Vec::new();
    for (s, _) in items.into_iter().filter(|(s, _)| !s.spec.action.needs_admin()) {
        let target = names.of(door, &s).await;
        let line = render::schedule_line(&s, &target);
        // matched on the line as shown, and on the id
        candidates.push((format!("{line} {}", s.id), line, s.id.clone()));
    }
    Ok(matching(typed, candidates))
}

/// The names of schedule targets, read once per answer.
#[derive(Default)]
pub struct TargetNames(HashMap<String, String>);

impl TargetNames {
    /// `all`, the target deployment's name, or its id when it cannot be read.
    pub async fn of(&mut self, door: &DiscordDoor, s: &Schedule) -> String {
        let id = match &s.spec.target {
            Target::All => return "all".into(),
            Target::Deployment(id) => id,
        };
        if let Some(n) = self.0.get(id.as_str()) {
            return n.clone();
        }
        let name = match door.inner.engine.deployment(id).await {
            Ok(Some(d)) => d.spec.name.to_string(),
            _ => id.as_str().to_string(),
        };
        self.0.insert(id.as_str().to_string(), name.clone());
        name
    }
}

/// Whether `s` acts on the deployment `id`.
pub fn targets(s: &Schedule, id: &DeploymentId) -> bool {
    matches!(&s.spec.target, Target::Deployment(t) if t == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(names: &[&str]) -> Vec<(String, String, String)> {
        names.iter().map(|n| (n.to_string(), format!("{n} — running"), n.to_string())).collect()
    }

    #[test]
    fn prefixes_first_then_substrings_no_others() {
        let got = matching("web", c(&["api", "webshop", "my-web", "web", "webshop", "db"]));
        let values: Vec<&str> = got.iter().map(|(_, v)| v.as_str()).collect();
        assert_eq!(values, ["webshop", "web", "my-web"], "each once, prefixes first in the given order");
        assert_eq!(got[0].0, "webshop — running");
        assert_eq!(matching("WEB", c(&["web"])).len(), 1, "case-insensitive");
        assert!(matching("zzz", c(&["web"])).is_empty());
        assert_eq!(matching("", c(&["a", "b"])).len(), 2, "nothing typed: everything");
        let many: Vec<String> = (0..60).map(|n| format!("app-{n}")).collect();
        assert_eq!(matching("app", c(&many.iter().map(String::as_str).collect::<Vec<_>>())).len(), 25);
    }
}
