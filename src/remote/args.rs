//! Command-line arguments parsed into the core's own types (clap value parsers), so a wrong argument is refused
//! before any request, with clap naming the argument and the core naming the rule.

use clap::builder::{PossibleValuesParser, TypedValueParser};

use crate::core::deployment::{DeploymentId, Framework, GuestType};
use crate::core::names::{AppName, CommitSha, GitRef, HealthPath, NodeName};
use crate::core::status::Status;

/// A deployment's name, or its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentRef(String);

impl DeploymentRef {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for DeploymentRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub fn deployment_ref(raw: &str) -> Result<DeploymentRef, String> {
    if DeploymentId::parse(raw).is_some() || AppName::parse(raw).is_ok() {
        Ok(DeploymentRef(raw.to_string()))
    } else {
        Err(format!("must be a deployment's name or id; a name {}", AppName::RULE))
    }
}

pub fn app_name(raw: &str) -> Result<AppName, String> {
    AppName::parse(raw).map_err(|e| e.message)
}

/// git's own rules only: which further characters are allowed is the agent's `[repos] branch_pattern`, and its 422
/// names that rule.
pub fn git_ref(raw: &str) -> Result<GitRef, String> {
    GitRef::parse_git(raw).map_err(|e| e.message)
}

pub fn commit(raw: &str) -> Result<CommitSha, String> {
    CommitSha::parse(raw).map_err(|e| e.message)
}

pub fn health_path(raw: &str) -> Result<HealthPath, String> {
    HealthPath::parse(raw).map_err(|e| e.message)
}

pub fn persistent_path(raw: &str) -> Result<crate::core::release::PersistentPath, String> {
    crate::core::release::PersistentPath::parse(raw).map_err(|e| e.message)
}

pub fn start_command(raw: &str) -> Result<crate::core::names::StartCommand, String> {
    crate::core::names::StartCommand::parse(raw).map_err(|e| e.message)
}

/// A path filter or tag pattern (`*`, `**`, `?`), as the agent reads it.
pub fn glob(raw: &str) -> Result<crate::core::glob::Glob, String> {
    crate::core::glob::Glob::parse(raw).map_err(|e| e.message)
}

pub fn node(raw: &str) -> Result<NodeName, String> {
    NodeName::parse(raw).map_err(|e| e.message)
}

/// One of the frameworks (listed in `--help` and in shell completions).
pub fn framework() -> impl TypedValueParser<Value = Framework> {
    PossibleValuesParser::new(Framework::ALL.map(Framework::as_str)).map(|s| Framework::parse(&s).expect("a listed framework"))
}

/// `vm` or `lxc`.
pub fn guest_type() -> impl TypedValueParser<Value = GuestType> {
    PossibleValuesParser::new(["vm", "lxc"]).map(|s| GuestType::parse(&s).expect("a listed type"))
}

/// One of the lifecycle's statuses.
pub fn status() -> impl TypedValueParser<Value = Status> {
    PossibleValuesParser::new(Status::ALL.map(Status::as_str)).map(|s| Status::parse(&s).expect("a listed status"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids_are_told_apart_from_nonsense() {
        assert!(deployment_ref("shop").is_ok());
        assert!(deployment_ref("01a243b2-350f-72e9-9280-66b141539c83").is_ok());
        assert!(deployment_ref("Shop!").unwrap_err().contains("DNS label"));
        assert!(commit("abc").unwrap_err().contains("40 or 64"));
        assert!(git_ref("-x").is_err());
        assert!(glob("api/**").is_ok());
        assert!(glob("/etc/*").unwrap_err().contains("no leading /"));
    }
}
