//! The slash commands, from one table, as the JSON for `PUT /applications/{app}/guilds/{guild}/commands`.

use serde_json::{json, Value};

use crate::core::deployment::{Framework, GuestType};

use super::command::MAX_LINES;

/// Discord's option types.
#[derive(Clone, Copy)]
enum Ty {
    Text = 3,
    Integer = 4,
}

/// One option: name, type, required, description.
struct Opt(&'static str, Ty, bool, &'static str);

const NAME: Opt = Opt("name", Ty::Text, true, "the deployment's name");

/// The commands: name, description, options. `/deploy`'s `framework` and `type` get their choices below.
const COMMANDS: &[(&str, &str, &[Opt])] = &[
    (
        "deploy",
        "Deploy a git repository as an app",
        &[
            Opt("name", Ty::Text, true, "the app's name: lowercase letters, digits and '-'"),
            Opt("repo", Ty::Text, true, "the repository URL, e.g. https://github.com/owner/repo"),
            Opt("framework", Ty::Text, true, "how the app is built and run"),
            Opt("type", Ty::Text, false, "a VM (default) or a container"),
            Opt("cpu", Ty::Integer, false, "CPU cores (default 1)"),
            Opt("memory", Ty::Integer, false, "memory in MiB (default 1024)"),
            Opt("disk", Ty::Integer, false, "disk in GB (default 10)"),
            Opt("branch", Ty::Text, false, "the branch to deploy (default main)"),
        ],
    ),
    ("status", "A deployment's status, or a summary of all", &[Opt("name", Ty::Text, false, "the deployment's name (all when omitted)")]),
    ("list", "The newest deployments", &[]),
    ("logs", "A deployment's last log lines", &[NAME, Opt("lines", Ty::Integer, false, "how many lines (default 20, at most 50)")]),
    ("redeploy", "Deploy the branch's newest commit again", &[NAME]),
    ("rollback", "Switch back to the previous release", &[NAME]),
    ("stop", "Stop a deployment's guest", &[NAME]),
    ("start", "Start a stopped deployment's guest", &[NAME]),
    ("destroy", "Destroy a deployment and its guest (asks for confirmation)", &[NAME]),
    ("resources", "The cluster's nodes and storages", &[]),
    (
        "snapshot",
        "Take a snapshot of a deployment's guest (no schedule deletes it)",
        &[NAME, Opt("snapshot", Ty::Text, true, "the snapshot's name: a letter, then letters, digits, '_' or '-'"), Opt("description", Ty::Text, false, "one line")],
    ),
    ("restore", "Roll a deployment's guest back to a snapshot (asks for confirmation)", &[NAME, Opt("snapshot", Ty::Text, true, "the snapshot's name")]),
];

fn choices(command: &str, option: &str) -> Option<Vec<&'static str>> {
    match (command, option) {
        ("deploy", "framework") => Some(Framework::ALL.iter().map(|f| f.as_str()).collect()),
        ("deploy", "type") => Some(vec![GuestType::Vm.as_str(), GuestType::Lxc.as_str()]),
        _ => None,
    }
}

/// The body of the bulk overwrite of a guild's commands.
pub fn commands_json() -> Value {
    Value::Array(
        COMMANDS
            .iter()
            .map(|(name, description, opts)| {
                let options: Vec<Value> = opts
                    .iter()
                    .map(|Opt(oname, ty, required, odesc)| {
                        let mut o = json!({"name": oname, "type": *ty as u8, "description": odesc, "required": required});
                        if let Some(c) = choices(name, oname) {
                            o["choices"] = c.into_iter().map(|v| json!({"name": v, "value": v})).collect();
                        }
                        if *name == "logs" && *oname == "lines" {
                            o["min_value"] = json!(1);
                            o["max_value"] = json!(MAX_LINES);
                        }
                        o
                    })
                    .collect();
                // type 1: a slash command; contexts [0]: guilds only (no DMs).
                json!({"name": name, "type": 1, "description": description, "options": options, "contexts": [0]})
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discord::command::parse_command;

    #[test]
    fn every_defined_command_is_one_the_parser_knows() {
        let cmds = commands_json();
        let names: Vec<&str> = cmds.as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["deploy", "status", "list", "logs", "redeploy", "rollback", "stop", "start", "destroy", "resources", "snapshot", "restore"]);
        for c in cmds.as_array().unwrap() {
            // the parser accepts the command with only its required options, as text (two letters: a valid snapshot name too)
            let opts: Vec<(String, crate::discord::interaction::OptionValue)> = c["options"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|o| o["required"] == true)
                .map(|o| (o["name"].as_str().unwrap().to_string(), crate::discord::interaction::OptionValue::Text("xy".into())))
                .collect();
            assert!(parse_command(c["name"].as_str().unwrap(), &opts).is_ok(), "{c}");
            // Discord's rules: required options first, descriptions 1-100 characters
            let req: Vec<bool> = c["options"].as_array().unwrap().iter().map(|o| o["required"] == true).collect();
            assert!(req.windows(2).all(|w| w[0] || !w[1]), "{c}");
            assert!(c["description"].as_str().unwrap().len() <= 100);
        }
    }

    #[test]
    fn framework_and_type_have_choices() {
        let cmds = commands_json();
        let deploy = &cmds[0]["options"];
        let fw: Vec<&str> = deploy[2]["choices"].as_array().unwrap().iter().map(|c| c["value"].as_str().unwrap()).collect();
        assert_eq!(fw, ["django", "flask", "fastapi", "laravel", "node", "nextjs", "static", "procfile"]);
        assert_eq!(deploy[3]["choices"], json!([{"name": "vm", "value": "vm"}, {"name": "lxc", "value": "lxc"}]));
    }
}
