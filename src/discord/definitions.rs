//! The slash commands, from one table, as the JSON for `PUT /applications/{app}/guilds/{guild}/commands`.
//!
//! Every bound Discord enforces in the client comes from the rule the engine applies (the agent's `Limits`, the
//! core's name and URL lengths), so what Discord lets through is what the engine checks again. Shapes follow
//! Discord's [application command option structure](https://discord.com/developers/docs/interactions/application-commands#application-command-object-application-command-option-structure)
//! (`autocomplete`, `min_value`/`max_value`, `max_length`, `choices`) and
//! [permissions](https://discord.com/developers/docs/interactions/application-commands#permissions)
//! (`default_member_permissions`).

use serde_json::{json, Value};

use crate::core::deployment::{Framework, GuestType};
use crate::core::limits::Limits;
use crate::core::names::{AppName, GitRef};
use crate::core::repo::RepoUrl;
use crate::core::snapshot::{MAX_NAME as SNAPSHOT_NAME_MAX, MAX_NOTE};

use super::command::{Need, MAX_LINES};

/// Discord's option types (`STRING` 3, `INTEGER` 4, `BOOLEAN` 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ty {
    Text = 3,
    Integer = 4,
    Boolean = 5,
}

/// What an option names, when it is completed as the user types (autocomplete interactions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completes {
    /// A deployment, by name.
    Deployment,
    /// A schedule, by id.
    Schedule,
    /// A backup of the deployment the command's `name` option names, by file name (newest first).
    Backup,
}

/// An option's bounds and suggestions.
#[derive(Clone, Copy)]
enum Shape {
    Plain,
    /// A text of at most this many characters.
    MaxLen(usize),
    /// A whole number in this range.
    Range(i64, i64),
    /// One of the agent's resource limits (`Limits`, as `[limits]` configures them).
    Cpu,
    Memory,
    Disk,
    /// One of fixed choices.
    Choices(fn() -> Vec<&'static str>),
    /// Completed as typed.
    Completes(Completes),
}

/// One option: name, type, required, description, bounds.
struct Opt(&'static str, Ty, bool, &'static str, Shape);

/// A command: name, description, the permission it needs, options.
struct Def(&'static str, &'static str, Need, &'static [Opt]);

const NAME: Opt = Opt("name", Ty::Text, true, "the deployment's name", Shape::Completes(Completes::Deployment));
const PUBLIC: Opt = Opt("public", Ty::Boolean, false, "show the answer to everyone in the channel (default: only you)", Shape::Plain);

fn frameworks() -> Vec<&'static str> {
    Framework::ALL.iter().map(|f| f.as_str()).collect()
}

fn guest_types() -> Vec<&'static str> {
    vec![GuestType::Vm.as_str(), GuestType::Lxc.as_str()]
}

/// The longest backup file name a `backup` option takes (vzdump's names are about 45 characters).
pub const BACKUP_NAME_MAX: usize = 100;

/// Discord's "Manage Server" permission (`MANAGE_GUILD`, 1 << 5): the change commands are shown to members who
/// hold it until a server admin grants them to other roles (*Server Settings → Integrations*); pvedeploy checks
/// `change_roles` on every interaction regardless.
pub const CHANGE_PERMISSIONS: &str = "32";

const COMMANDS: &[Def] = &[
    Def(
        "deploy",
        "Deploy a git repository as an app",
        Need::Change,
        &[
            Opt("name", Ty::Text, true, "the app's name: lowercase letters, digits and '-'", Shape::MaxLen(AppName::MAX_LEN)),
            Opt("repo", Ty::Text, true, "the repository URL, e.g. https://github.com/owner/repo", Shape::MaxLen(RepoUrl::MAX_LEN)),
            Opt("framework", Ty::Text, true, "how the app is built and run", Shape::Choices(frameworks)),
            Opt("type", Ty::Text, false, "a VM (default) or a container", Shape::Choices(guest_types)),
            Opt("cpu", Ty::Integer, false, "CPU cores (default 1)", Shape::Cpu),
            Opt("memory", Ty::Integer, false, "memory in MiB (default 1024)", Shape::Memory),
            Opt("disk", Ty::Integer, false, "disk in GB (default 10)", Shape::Disk),
            Opt("branch", Ty::Text, false, "the branch to deploy (default main)", Shape::MaxLen(GitRef::MAX_LEN)),
        ],
    ),
    Def(
        "status",
        "A deployment's status, or a summary of all",
        Need::Read,
        &[Opt("name", Ty::Text, false, "the deployment's name (all when omitted)", Shape::Completes(Completes::Deployment)), PUBLIC],
    ),
    Def("list", "The newest deployments", Need::Read, &[PUBLIC]),
    Def(
        "logs",
        "A deployment's last log lines",
        Need::Read,
        &[NAME, Opt("lines", Ty::Integer, false, "how many lines (default 20)", Shape::Range(1, MAX_LINES as i64)), PUBLIC],
    ),
    Def("redeploy", "Deploy the branch's newest commit again", Need::Change, &[NAME]),
    Def("rollback", "Switch back to the previous release", Need::Change, &[NAME]),
    Def("stop", "Stop a deployment's guest", Need::Change, &[NAME]),
    Def("start", "Start a stopped deployment's guest", Need::Change, &[NAME]),
    Def("destroy", "Destroy a deployment and its guest (asks for confirmation)", Need::Change, &[NAME]),
    Def("resources", "The cluster's nodes and storages", Need::Read, &[PUBLIC]),
    Def(
        "snapshot",
        "Take a snapshot of a deployment's guest (no schedule deletes it)",
        Need::Change,
        &[
            NAME,
            Opt("snapshot", Ty::Text, true, "the snapshot's name: a letter, then letters, digits, '_' or '-'", Shape::MaxLen(SNAPSHOT_NAME_MAX)),
            Opt("description", Ty::Text, false, "one line", Shape::MaxLen(MAX_NOTE)),
        ],
    ),
    Def(
        "restore",
        "Roll a deployment's guest back to a snapshot (asks for confirmation)",
        Need::Change,
        &[NAME, Opt("snapshot", Ty::Text, true, "the snapshot's name", Shape::MaxLen(SNAPSHOT_NAME_MAX))],
    ),
    Def("backup", "Back a deployment's guest up now with Proxmox VE's vzdump (no retention deletes it)", Need::Change, &[NAME]),
    Def(
        "restore-backup",
        "Restore a deployment from a vzdump backup: over its guest (asks first), or into a new deployment",
        Need::Change,
        &[
            NAME,
            Opt("backup", Ty::Text, true, "the backup (type to search the deployment's backups)", Shape::Completes(Completes::Backup)),
            Opt("new_name", Ty::Text, false, "restore into a new deployment of this name instead (nothing is overwritten)", Shape::MaxLen(AppName::MAX_LEN)),
        ],
    ),
    Def("snapshots", "A deployment's snapshots", Need::Read, &[NAME, PUBLIC]),
    Def("backups", "A deployment's vzdump backups", Need::Read, &[NAME, PUBLIC]),
    Def(
        "schedules",
        "The schedules, with their next run",
        Need::Read,
        &[Opt("name", Ty::Text, false, "only this deployment's (all when omitted)", Shape::Completes(Completes::Deployment)), PUBLIC],
    ),
    Def(
        "unschedule",
        "Delete a schedule and its history",
        Need::Change,
        &[Opt("schedule", Ty::Text, true, "the schedule (type to search by deployment, action or time)", Shape::Completes(Completes::Schedule))],
    ),
];

/// The permission `/command` needs (`None`: not ours).
pub fn need_of(command: &str) -> Option<Need> {
    COMMANDS.iter().find(|d| d.0 == command).map(|d| d.2)
}

/// What `option` of `/command` is completed with, if it is.
pub fn completes(command: &str, option: &str) -> Option<Completes> {
    let def = COMMANDS.iter().find(|d| d.0 == command)?;
    def.3.iter().find(|o| o.0 == option).and_then(|o| match o.4 {
        Shape::Completes(c) => Some(c),
        _ => None,
    })
}

fn option_json(opt: &Opt, limits: &Limits) -> Value {
    let Opt(name, ty, required, description, shape) = opt;
    let mut o = json!({"name": name, "type": *ty as u8, "description": description, "required": required});
    let range = |o: &mut Value, min: i64, max: i64| {
        o["min_value"] = json!(min);
        o["max_value"] = json!(max);
    };
    match shape {
        Shape::Plain => {}
        Shape::MaxLen(n) => o["max_length"] = json!(n),
        Shape::Range(min, max) => range(&mut o, *min, *max),
        Shape::Cpu => range(&mut o, (*limits.cpu.start()).into(), (*limits.cpu.end()).into()),
        Shape::Memory => range(&mut o, (*limits.memory_mib.start()).into(), (*limits.memory_mib.end()).into()),
        Shape::Disk => range(&mut o, (*limits.disk_gb.start()).into(), (*limits.disk_gb.end()).into()),
        Shape::Choices(f) => o["choices"] = f().into_iter().map(|v| json!({"name": v, "value": v})).collect(),
        Shape::Completes(c) => {
            // `autocomplete` and `choices` exclude each other; a deployment name is bounded like the core's.
            o["autocomplete"] = json!(true);
            match c {
                Completes::Deployment => o["max_length"] = json!(AppName::MAX_LEN),
                Completes::Backup => o["max_length"] = json!(BACKUP_NAME_MAX),
                Completes::Schedule => {}
            }
        }
    }
    o
}

/// The body of the bulk overwrite of a guild's commands, bounded by the agent's `limits`.
pub fn commands_json(limits: &Limits) -> Value {
    Value::Array(
        COMMANDS
            .iter()
            .map(|Def(name, description, need, opts)| {
                let options: Vec<Value> = opts.iter().map(|o| option_json(o, limits)).collect();
                // type 1: a slash command; contexts [0]: guilds only (no DMs).
                let mut c = json!({"name": name, "type": 1, "description": description, "options": options, "contexts": [0]});
                if *need == Need::Change {
                    c["default_member_permissions"] = json!(CHANGE_PERMISSIONS);
                }
                c
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discord::command::parse_command;
    use crate::discord::interaction::OptionValue;

    fn example(o: &Value) -> OptionValue {
        match o["type"].as_u64() {
            Some(4) => OptionValue::Integer(o["min_value"].as_i64().unwrap_or(1)),
            Some(5) => OptionValue::Bool(true),
            _ if o["name"] == "backup" => OptionValue::Text("vzdump-lxc-10000-2030_01_02-03_00_00.tar.zst".into()),
            // two letters: a valid snapshot name too
            _ => OptionValue::Text("xy".into()),
        }
    }

    #[test]
    fn every_defined_command_is_one_the_parser_knows() {
        let cmds = commands_json(&Limits::default());
        let names: Vec<&str> = cmds.as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            ["deploy", "status", "list", "logs", "redeploy", "rollback", "stop", "start", "destroy", "resources", "snapshot", "restore", "backup", "restore-backup", "snapshots", "backups", "schedules", "unschedule"]
        );
        for c in cmds.as_array().unwrap() {
            let name = c["name"].as_str().unwrap();
            // the parser accepts the command with only its required options, and with all of them
            let all: Vec<(String, OptionValue)> = c["options"].as_array().unwrap().iter().map(|o| (o["name"].as_str().unwrap().to_string(), example(o))).collect();
            let required: Vec<(String, OptionValue)> = all.iter().zip(c["options"].as_array().unwrap()).filter(|(_, o)| o["required"] == true).map(|(v, _)| v.clone()).collect();
            let parsed = parse_command(name, &required).unwrap_or_else(|e| panic!("/{name}: {e:?}"));
            if name != "deploy" {
                assert!(parse_command(name, &all).is_ok(), "/{name} with every option: {c}");
            }
            // the table's permission is the command's
            assert_eq!(need_of(name), Some(parsed.need()), "/{name}");
            // Discord's rules: required options first, descriptions 1-100 characters, `choices` xor `autocomplete`
            let req: Vec<bool> = c["options"].as_array().unwrap().iter().map(|o| o["required"] == true).collect();
            assert!(req.windows(2).all(|w| w[0] || !w[1]), "{c}");
            assert!(c["description"].as_str().unwrap().len() <= 100);
            for o in c["options"].as_array().unwrap() {
                assert!((1..=100).contains(&o["description"].as_str().unwrap().len()), "{o}");
                assert!(!(o.get("choices").is_some() && o.get("autocomplete").is_some()), "{o}");
            }
        }
    }

    #[test]
    fn framework_and_type_have_choices() {
        let cmds = commands_json(&Limits::default());
        let deploy = &cmds[0]["options"];
        let fw: Vec<&str> = deploy[2]["choices"].as_array().unwrap().iter().map(|c| c["value"].as_str().unwrap()).collect();
        assert_eq!(fw, ["django", "flask", "fastapi", "laravel", "node", "nextjs", "static", "procfile"]);
        assert_eq!(deploy[3]["choices"], json!([{"name": "vm", "value": "vm"}, {"name": "lxc", "value": "lxc"}]));
    }

    #[test]
    fn bounds_come_from_the_agents_limits() {
        let limits = Limits { cpu: 2..=4, memory_mib: 1024..=8192, disk_gb: 5..=50, ..Limits::default() };
        let cmds = commands_json(&limits);
        let deploy = &cmds[0]["options"];
        let find = |n: &str| deploy.as_array().unwrap().iter().find(|o| o["name"] == n).unwrap().clone();
        assert_eq!((find("cpu")["min_value"].as_i64(), find("cpu")["max_value"].as_i64()), (Some(2), Some(4)));
        assert_eq!((find("memory")["min_value"].as_i64(), find("memory")["max_value"].as_i64()), (Some(1024), Some(8192)));
        assert_eq!((find("disk")["min_value"].as_i64(), find("disk")["max_value"].as_i64()), (Some(5), Some(50)));
    }
}
