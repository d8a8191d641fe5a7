//! `pvedeploy env set|unset|list NAME`: a deployment's environment variables. Values come from this shell's
//! environment or a file and are never printed. The API's `PUT …/env` replaces the whole set and never returns
//! values, so a change that would silently drop a variable is refused unless its value is given again.

use std::path::PathBuf;

use super::args::{self, DeploymentRef};
use super::dotenv::{self, Vars};
use super::{arg, AgentArgs, Remote, RemoteError};

#[derive(clap::Subcommand, Debug)]
pub enum EnvCommand {
    /// Set variables (applied at the next deploy). Variables already set must be given again, or --replace.
    Set(SetArgs),
    /// Remove variables; the values of those that stay must be given again (--env-file), as the API replaces all.
    Unset(UnsetArgs),
    /// The names of the variables set (values are never returned by the agent).
    List(EnvListArgs),
}

impl EnvCommand {
    pub fn agent(&self) -> &AgentArgs {
        match self {
            EnvCommand::Set(a) => &a.agent,
            EnvCommand::Unset(a) => &a.agent,
            EnvCommand::List(a) => &a.agent,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct SetArgs {
    /// The deployment's name or id.
    #[arg(value_parser = args::deployment_ref)]
    pub name: DeploymentRef,
    /// KEY=VALUE, or KEY to take the value from this shell's environment (kept out of `ps`).
    #[arg(value_name = "KEY[=VALUE]")]
    pub vars: Vec<String>,
    /// A .env file of KEY=VALUE lines (the arguments win over it).
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    /// Drop the variables already set that are not given here (otherwise refused: their values cannot be read back).
    #[arg(long)]
    pub replace: bool,
    #[command(flatten)]
    pub agent: AgentArgs,
}

#[derive(clap::Args, Debug)]
pub struct UnsetArgs {
    /// The deployment's name or id.
    #[arg(value_parser = args::deployment_ref)]
    pub name: DeploymentRef,
    /// The variables to remove.
    #[arg(value_name = "KEY", required = true)]
    pub keys: Vec<String>,
    /// A .env file with the values of the variables that stay.
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    #[command(flatten)]
    pub agent: AgentArgs,
}

#[derive(clap::Args, Debug)]
pub struct EnvListArgs {
    /// The deployment's name or id.
    #[arg(value_parser = args::deployment_ref)]
    pub name: DeploymentRef,
    /// Print the names as a JSON array.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub agent: AgentArgs,
}

/// The whole set to send for `set`: the given variables; refused when a variable already set would be dropped
/// without `replace` (the agent keeps values write-only, so it cannot be sent back unchanged).
pub fn plan_set(current: &[String], given: Vars, replace: bool, name: &str) -> Result<Vars, RemoteError> {
    let dropped: Vec<&str> = current.iter().map(String::as_str).filter(|n| !given.contains(n)).collect();
    if !dropped.is_empty() && !replace {
        return Err(arg(
            "--replace",
            format!(
                "is needed: {name} also has {}, and the agent replaces the whole set and never returns values, so they would be lost; give them again (KEY takes each from this shell's environment, or put them in --env-file), or pass --replace to drop them",
                dropped.join(", ")
            ),
        ));
    }
    Ok(given)
}

/// The whole set to send for `unset`: the variables that stay, with their values from `supplied`; refused when one
/// is missing there.
pub fn plan_unset(current: &[String], remove: &[String], supplied: &Vars, name: &str) -> Result<Vars, RemoteError> {
    let stay: Vec<String> = current.iter().filter(|n| !remove.contains(n)).cloned().collect();
    let missing: Vec<&str> = stay.iter().map(String::as_str).filter(|n| !supplied.contains(n)).collect();
    if !missing.is_empty() {
        return Err(arg(
            "--env-file",
            format!(
                "must hold the values of the variables that stay on {name} ({}): the agent replaces the whole set and never returns values",
                missing.join(", ")
            ),
        ));
    }
    Ok(supplied.only(&stay))
}

pub async fn run(remote: &Remote, cmd: &EnvCommand) -> Result<u8, RemoteError> {
    match cmd {
        EnvCommand::List(a) => {
            let d = remote.deployment(a.name.as_str()).await?;
            let names = remote.env_names(&d.id).await?;
            if a.json {
                println!("{}", serde_json::to_string(&names).unwrap_or_default());
            } else if names.is_empty() {
                eprintln!("{} has no environment variables", d.name);
            } else {
                for n in names {
                    println!("{n}");
                }
            }
            Ok(0)
        }
        EnvCommand::Set(a) => {
            let given = dotenv::from_args(&a.vars, "KEY[=VALUE]", a.env_file.as_deref())?;
            if given.is_empty() {
                return Err(arg("KEY[=VALUE]", "is required: at least one variable, or --env-file"));
            }
            let d = remote.deployment(a.name.as_str()).await?;
            let current = remote.env_names(&d.id).await?;
            let vars = plan_set(&current, given, a.replace, &d.name)?;
            let names = remote.put_env(&d.id, &vars.to_body()).await?;
            println!("{}: environment is now {} (values not shown); it applies at the next deploy: `pvedeploy redeploy {}`", d.name, names.join(", "), d.name);
            Ok(0)
        }
        EnvCommand::Unset(a) => {
            for k in &a.keys {
                crate::core::release::EnvName::parse(k).map_err(|e| arg("KEY", format!("{k:?} {}", e.message)))?;
            }
            let supplied = match &a.env_file {
                Some(p) => dotenv::read_file(p)?,
                None => Vars::default(),
            };
            let d = remote.deployment(a.name.as_str()).await?;
            let current = remote.env_names(&d.id).await?;
            let absent: Vec<&str> = a.keys.iter().map(String::as_str).filter(|k| !current.iter().any(|c| c == k)).collect();
            if !absent.is_empty() {
                eprintln!("{} has no {}", d.name, absent.join(", "));
            }
            if absent.len() == a.keys.len() {
                return Ok(0);
            }
            let vars = plan_unset(&current, &a.keys, &supplied, &d.name)?;
            let names = remote.put_env(&d.id, &vars.to_body()).await?;
            let now = if names.is_empty() { "empty".to_string() } else { names.join(", ") };
            println!("{}: environment is now {now}; it applies at the next deploy: `pvedeploy redeploy {}`", d.name, d.name);
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(text: &str) -> Vars {
        dotenv::parse(text).unwrap()
    }

    #[test]
    fn set_keeps_nothing_silently() {
        let current = vec!["A".to_string(), "B".to_string()];
        let e = plan_set(&current, vars("A=1\n"), false, "shop").unwrap_err().to_string();
        assert!(e.contains("--replace") && e.contains("also has B"), "{e}");
        assert_eq!(plan_set(&current, vars("A=1\nB=2\nC=3\n"), false, "shop").unwrap().len(), 3);
        assert_eq!(plan_set(&current, vars("C=3\n"), true, "shop").unwrap().names().collect::<Vec<_>>(), ["C"]);
    }

    #[test]
    fn unset_needs_the_values_that_stay() {
        let current = vec!["A".to_string(), "B".to_string(), "C".to_string()];
        let e = plan_unset(&current, &["A".into()], &vars("B=2\n"), "shop").unwrap_err().to_string();
        assert!(e.contains("(C)"), "{e}");
        let kept = plan_unset(&current, &["A".into()], &vars("A=9\nB=2\nC=3\n"), "shop").unwrap();
        assert_eq!(kept.names().collect::<Vec<_>>(), ["B", "C"]);
        assert!(plan_unset(&["A".into()], &["A".into()], &Vars::default(), "shop").unwrap().is_empty());
    }
}
