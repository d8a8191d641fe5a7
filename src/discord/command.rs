//! Slash-command options → a typed `DiscordCommand` (the same `RawSpec` as the HTTP door), and which permission each needs.

use crate::core::backup::BackupId;
use crate::core::command::Action;
use crate::core::deployment::RawSpec;
use crate::core::names::AppName;
use crate::core::snapshot::{SnapshotName, SnapshotNote};
use crate::core::validation::{FieldError, ValidationErrors};

use super::interaction::OptionValue;

/// What a Discord user asked for, typed.
#[derive(Debug, Clone, PartialEq)]
pub enum DiscordCommand {
    /// `/deploy`: the request as the HTTP door hands it to the engine.
    Deploy(RawSpec),
    /// `/status [name] [public]`: one deployment, or the service's counts.
    Status { name: Option<String>, public: bool },
    /// `/list [public]`: the newest deployments.
    List { public: bool },
    /// `/logs name [lines] [public]`, or the Logs button of a `/deploy` message (private).
    Logs { name: String, lines: u32, public: bool },
    /// `/redeploy`, `/rollback`, `/stop`, `/start`.
    Act { action: Action, name: String },
    /// `/destroy name`: only asks for confirmation.
    AskDestroy { name: String },
    /// The confirm button of a `/destroy`.
    ConfirmDestroy { deployment: String, nonce: String },
    /// The cancel button of a `/destroy` or a `/restore`.
    CancelDestroy { nonce: String },
    /// `/resources [public]`: the cluster's nodes and storages.
    Resources { public: bool },
    /// `/snapshots name [public]`: a guest's snapshots.
    Snapshots { name: String, public: bool },
    /// `/backups name [public]`: a guest's vzdump backups.
    Backups { name: String, public: bool },
    /// `/schedules [name] [public]`: the schedules (of one deployment).
    Schedules { name: Option<String>, public: bool },
    /// `/unschedule schedule`: deletes a schedule (by id).
    Unschedule { schedule: String },
    /// `/snapshot name snapshot [description]`: a snapshot taken by hand (no schedule deletes it).
    Snapshot { name: String, snapshot: SnapshotName, description: SnapshotNote },
    /// `/backup name`: a vzdump backup taken by hand now (no retention deletes it).
    Backup { name: String },
    /// `/restore name snapshot`: only asks for confirmation, like `/destroy`.
    AskRestore { name: String, snapshot: SnapshotName },
    /// The confirm button of a `/restore`: its nonce carries the deployment and the snapshot.
    ConfirmRestore { nonce: String },
    /// `/restore-backup name backup`: only asks for confirmation, like `/destroy` (the guest is overwritten).
    AskRestoreBackup { name: String, backup: BackupFile },
    /// `/restore-backup name backup new_name`: into a new deployment; nothing is overwritten, nothing asked.
    RestoreBackupAsNew { name: String, backup: BackupFile, new_name: AppName },
    /// The confirm button of a `/restore-backup`: its nonce carries the deployment and the backup.
    ConfirmRestoreBackup { nonce: String },
}

/// A backup's file name as listed (`vzdump-lxc-10000-2030_01_02-03_00_00.tar.zst`), in vzdump's shape; which storage
/// it is on is the agent's configuration (`BackupFile::on`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupFile(String);

impl BackupFile {
    /// `raw` when it has vzdump's shape (errors name the option `backup`).
    pub fn parse(raw: &str) -> Result<BackupFile, FieldError> {
        // Any storage name checks the shape; the configured one is applied when it is used.
        BackupId::on_storage("storage", raw.trim(), "backup").map(|b| BackupFile(b.name()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The backup on `storage`.
    pub fn on(&self, storage: &str) -> Result<BackupId, FieldError> {
        BackupId::on_storage(storage, &self.0, "backup")
    }
}

impl std::fmt::Display for BackupFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The permission a command needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Read,
    Change,
}

/// Lines `/logs` shows by default, and at most (those that do not fit in a message come as a file).
pub const DEFAULT_LINES: u32 = 20;
pub const MAX_LINES: u32 = 500;

impl DiscordCommand {
    pub fn need(&self) -> Need {
        match self {
            DiscordCommand::Status { .. }
            | DiscordCommand::List { .. }
            | DiscordCommand::Logs { .. }
            | DiscordCommand::Resources { .. }
            | DiscordCommand::Snapshots { .. }
            | DiscordCommand::Backups { .. }
            | DiscordCommand::Schedules { .. } => Need::Read,
            DiscordCommand::Deploy(_)
            | DiscordCommand::Act { .. }
            | DiscordCommand::AskDestroy { .. }
            | DiscordCommand::ConfirmDestroy { .. }
            | DiscordCommand::CancelDestroy { .. }
            | DiscordCommand::Snapshot { .. }
            | DiscordCommand::Backup { .. }
            | DiscordCommand::AskRestore { .. }
            | DiscordCommand::ConfirmRestore { .. }
            | DiscordCommand::AskRestoreBackup { .. }
            | DiscordCommand::RestoreBackupAsNew { .. }
            | DiscordCommand::ConfirmRestoreBackup { .. }
            | DiscordCommand::Unschedule { .. } => Need::Change,
        }
    }

    /// Whether the answer is for the caller only: reads are, unless `public:true` asked to share them; what a
    /// change did is shown to the channel. Decided before the answer is deferred (a deferred answer's
    /// ephemerality is fixed then).
    pub fn private(&self) -> bool {
        match self {
            DiscordCommand::Status { public, .. }
            | DiscordCommand::List { public }
            | DiscordCommand::Logs { public, .. }
            | DiscordCommand::Resources { public }
            | DiscordCommand::Snapshots { public, .. }
            | DiscordCommand::Backups { public, .. }
            | DiscordCommand::Schedules { public, .. } => !public,
            _ => false,
        }
    }

    /// The command's name for logs and the audit (`deploy`, `destroy`, …).
    pub fn name(&self) -> &'static str {
        match self {
            DiscordCommand::Deploy(_) => "deploy",
            DiscordCommand::Status { .. } => "status",
            DiscordCommand::List { .. } => "list",
            DiscordCommand::Logs { .. } => "logs",
            DiscordCommand::Act { action, .. } => action.as_str(),
            DiscordCommand::AskDestroy { .. } | DiscordCommand::ConfirmDestroy { .. } | DiscordCommand::CancelDestroy { .. } => "destroy",
            DiscordCommand::Resources { .. } => "resources",
            DiscordCommand::Snapshots { .. } => "snapshots",
            DiscordCommand::Backups { .. } => "backups",
            DiscordCommand::Schedules { .. } => "schedules",
            DiscordCommand::Unschedule { .. } => "unschedule",
            DiscordCommand::Snapshot { .. } => "snapshot",
            DiscordCommand::Backup { .. } => "backup",
            DiscordCommand::AskRestore { .. } | DiscordCommand::ConfirmRestore { .. } => "restore",
            DiscordCommand::AskRestoreBackup { .. } | DiscordCommand::RestoreBackupAsNew { .. } | DiscordCommand::ConfirmRestoreBackup { .. } => "restore-backup",
        }
    }
}

/// The name of an option as the user sees it, for an engine field name (`repo_url` is `repo` in Discord).
pub fn option_name(engine_field: &str) -> &str {
    match engine_field {
        "repo_url" => "repo",
        "memory_mib" => "memory",
        "disk_gb" => "disk",
        other => other,
    }
}

/// Reads a command's options by name; wrong types are collected as field errors.
struct Options<'a> {
    options: &'a [(String, OptionValue)],
    errors: ValidationErrors,
}

impl<'a> Options<'a> {
    fn get(&self, name: &str) -> Option<&'a OptionValue> {
        self.options.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    fn text(&mut self, name: &str) -> Option<String> {
        match self.get(name)? {
            OptionValue::Text(s) => Some(s.clone()),
            _ => {
                self.errors.push(FieldError::new(name, "type", "must be text"));
                None
            }
        }
    }

    fn integer(&mut self, name: &str) -> Option<i64> {
        match self.get(name)? {
            OptionValue::Integer(n) => Some(*n),
            _ => {
                self.errors.push(FieldError::new(name, "type", "must be a whole number"));
                None
            }
        }
    }

    /// `public`: false unless given.
    fn public(&mut self) -> bool {
        match self.get("public") {
            None => false,
            Some(OptionValue::Bool(b)) => *b,
            Some(_) => {
                self.errors.push(FieldError::new("public", "type", "must be true or false"));
                false
            }
        }
    }

    fn required_text(&mut self, name: &str) -> Option<String> {
        let v = self.text(name);
        if v.is_none() && self.get(name).is_none() {
            self.errors.push(FieldError::new(name, "required", "is required"));
        }
        v
    }

    /// The `snapshot` option, parsed by `rule` (its errors named after the option).
    fn snapshot(&mut self, rule: fn(&str) -> Result<SnapshotName, FieldError>) -> Option<SnapshotName> {
        let raw = self.required_text("snapshot")?;
        match rule(&raw) {
            Ok(n) => Some(n),
            Err(e) => {
                self.errors.push(FieldError::new("snapshot", e.rule, e.message));
                None
            }
        }
    }

    fn finish<T>(self, v: Option<T>) -> Result<T, ValidationErrors> {
        match v {
            Some(v) if self.errors.is_empty() => Ok(v),
            _ => Err(self.errors),
        }
    }
}

/// Converts a slash command into a `DiscordCommand`, naming every wrong option.
pub fn parse_command(name: &str, options: &[(String, OptionValue)]) -> Result<DiscordCommand, ValidationErrors> {
    let mut o = Options { options, errors: ValidationErrors::default() };
    let action = |a| move |name| DiscordCommand::Act { action: a, name };
    let cmd = match name {
        "deploy" => {
            // Every field goes to the engine's parser, which reports missing and wrong ones like the HTTP door.
            let raw = RawSpec {
                name: o.text("name"),
                repo_url: o.text("repo"),
                framework: o.text("framework"),
                guest_type: o.text("type"),
                cpu: o.integer("cpu"),
                memory_mib: o.integer("memory"),
                disk_gb: o.integer("disk"),
                branch: o.text("branch"),
                ..RawSpec::default()
            };
            Some(DiscordCommand::Deploy(raw))
        }
        "status" => {
            let name = o.text("name");
            Some(DiscordCommand::Status { name, public: o.public() })
        }
        "list" => Some(DiscordCommand::List { public: o.public() }),
        "resources" => Some(DiscordCommand::Resources { public: o.public() }),
        "snapshots" => {
            let public = o.public();
            o.required_text("name").map(|name| DiscordCommand::Snapshots { name, public })
        }
        "backups" => {
            let public = o.public();
            o.required_text("name").map(|name| DiscordCommand::Backups { name, public })
        }
        "schedules" => {
            let name = o.text("name");
            Some(DiscordCommand::Schedules { name, public: o.public() })
        }
        "unschedule" => o.required_text("schedule").map(|schedule| DiscordCommand::Unschedule { schedule }),
        "logs" => {
            let public = o.public();
            let name = o.required_text("name");
            let lines = match o.integer("lines") {
                None => Some(DEFAULT_LINES),
                Some(n) if (1..=i64::from(MAX_LINES)).contains(&n) => Some(n as u32),
                Some(_) => {
                    o.errors.push(FieldError::new("lines", "range", format!("must be between 1 and {MAX_LINES}")));
                    None
                }
            };
            name.zip(lines).map(|(name, lines)| DiscordCommand::Logs { name, lines, public })
        }
        "redeploy" => o.required_text("name").map(action(Action::Redeploy)),
        "rollback" => o.required_text("name").map(action(Action::Rollback)),
        "stop" => o.required_text("name").map(action(Action::Stop)),
        "start" => o.required_text("name").map(action(Action::Start)),
        "destroy" => o.required_text("name").map(|name| DiscordCommand::AskDestroy { name }),
        "backup" => o.required_text("name").map(|name| DiscordCommand::Backup { name }),
        "snapshot" => {
            let name = o.required_text("name");
            let snapshot = o.snapshot(SnapshotName::parse);
            let description = o.text("description").map_or(Ok(SnapshotNote::default()), |d| SnapshotNote::parse(&d));
            let description = o.errors.take(description);
            match (name, snapshot, description) {
                (Some(name), Some(snapshot), Some(description)) => Some(DiscordCommand::Snapshot { name, snapshot, description }),
                _ => None,
            }
        }
        "restore" => {
            let name = o.required_text("name");
            let snapshot = o.snapshot(SnapshotName::parse_existing);
            name.zip(snapshot).map(|(name, snapshot)| DiscordCommand::AskRestore { name, snapshot })
        }
        "restore-backup" => {
            let name = o.required_text("name");
            let backup = o.required_text("backup").and_then(|raw| {
                let parsed = BackupFile::parse(&raw);
                o.errors.take(parsed)
            });
            let new_name = match o.text("new_name") {
                None => Some(None),
                Some(raw) => {
                    let parsed = AppName::parse(raw.trim()).map_err(|e| FieldError::new("new_name", e.rule, e.message));
                    o.errors.take(parsed).map(Some)
                }
            };
            match (name, backup, new_name) {
                (Some(name), Some(backup), Some(None)) => Some(DiscordCommand::AskRestoreBackup { name, backup }),
                (Some(name), Some(backup), Some(Some(new_name))) => Some(DiscordCommand::RestoreBackupAsNew { name, backup, new_name }),
                _ => None,
            }
        }
        other => {
            o.errors.push(FieldError::new("command", "unknown", format!("/{other} is not a pvedeploy command")));
            None
        }
    };
    o.finish(cmd)
}

/// The custom id of a destroy confirmation's buttons: `destroy:<deployment id>:<nonce>`, `cancel:<nonce>`.
pub fn confirm_id(deployment: &str, nonce: &str) -> String {
    format!("destroy:{deployment}:{nonce}")
}

pub fn cancel_id(nonce: &str) -> String {
    format!("cancel:{nonce}")
}

/// The custom id of a restore confirmation's button: `restore:<nonce>` (the nonce carries deployment and snapshot;
/// both would not fit in Discord's 100 characters).
pub fn restore_id(nonce: &str) -> String {
    format!("restore:{nonce}")
}

/// The custom id of a `/restore-backup` confirmation's button: `restore-backup:<nonce>` (the nonce carries the
/// deployment and the backup).
pub fn restore_backup_id(nonce: &str) -> String {
    format!("restore-backup:{nonce}")
}

/// The buttons of a `/deploy` message: `logs:<deployment id>` (the last lines, privately), `rollback:<deployment id>`.
pub fn logs_id(deployment: &str) -> String {
    format!("logs:{deployment}")
}

pub fn rollback_id(deployment: &str) -> String {
    format!("rollback:{deployment}")
}

/// Converts a button press into a `DiscordCommand`.
pub fn parse_component(custom_id: &str) -> Result<DiscordCommand, ValidationErrors> {
    let bad = || ValidationErrors(vec![FieldError::new("custom_id", "unknown", "is not a pvedeploy button")]);
    let mut parts = custom_id.split(':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("destroy"), Some(d), Some(n), None) if !d.is_empty() && !n.is_empty() => Ok(DiscordCommand::ConfirmDestroy { deployment: d.into(), nonce: n.into() }),
        (Some("cancel"), Some(n), None, None) if !n.is_empty() => Ok(DiscordCommand::CancelDestroy { nonce: n.into() }),
        (Some("restore"), Some(n), None, None) if !n.is_empty() => Ok(DiscordCommand::ConfirmRestore { nonce: n.into() }),
        (Some("restore-backup"), Some(n), None, None) if !n.is_empty() => Ok(DiscordCommand::ConfirmRestoreBackup { nonce: n.into() }),
        (Some("logs"), Some(d), None, None) if !d.is_empty() => Ok(DiscordCommand::Logs { name: d.into(), lines: DEFAULT_LINES, public: false }),
        (Some("rollback"), Some(d), None, None) if !d.is_empty() => Ok(DiscordCommand::Act { action: Action::Rollback, name: d.into() }),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKUP: &str = "vzdump-lxc-10000-2030_01_02-03_00_00.tar.zst";

    fn t(name: &str, v: &str) -> (String, OptionValue) {
        (name.into(), OptionValue::Text(v.into()))
    }
    fn i(name: &str, v: i64) -> (String, OptionValue) {
        (name.into(), OptionValue::Integer(v))
    }
    fn b(name: &str, v: bool) -> (String, OptionValue) {
        (name.into(), OptionValue::Bool(v))
    }

    #[test]
    fn deploy_options_become_the_http_doors_raw_spec() {
        let opts = [t("name", "web"), t("repo", "https://github.com/o/r"), t("framework", "flask"), t("type", "lxc"), i("cpu", 2), i("memory", 2048), i("disk", 20), t("branch", "dev")];
        let DiscordCommand::Deploy(raw) = parse_command("deploy", &opts).unwrap() else { panic!() };
        let expected = RawSpec {
            name: Some("web".into()),
            repo_url: Some("https://github.com/o/r".into()),
            framework: Some("flask".into()),
            guest_type: Some("lxc".into()),
            cpu: Some(2),
            memory_mib: Some(2048),
            disk_gb: Some(20),
            branch: Some("dev".into()),
            ..RawSpec::default()
        };
        assert_eq!(raw, expected);
        // missing fields stay missing: the engine reports them as the API does
        let DiscordCommand::Deploy(raw) = parse_command("deploy", &[t("name", "web")]).unwrap() else { panic!() };
        assert_eq!((raw.repo_url, raw.cpu), (None, None));
        let e = parse_command("deploy", &[t("name", "web"), t("cpu", "two")]).unwrap_err();
        assert_eq!((e.0[0].field.as_str(), e.0[0].rule), ("cpu", "type"));
    }

    #[test]
    fn every_command_converts_and_needs_its_permission() {
        let cases: Vec<(&str, Vec<(String, OptionValue)>, DiscordCommand, Need)> = vec![
            ("status", vec![], DiscordCommand::Status { name: None, public: false }, Need::Read),
            ("status", vec![t("name", "web")], DiscordCommand::Status { name: Some("web".into()), public: false }, Need::Read),
            ("status", vec![t("name", "web"), b("public", true)], DiscordCommand::Status { name: Some("web".into()), public: true }, Need::Read),
            ("list", vec![], DiscordCommand::List { public: false }, Need::Read),
            ("resources", vec![], DiscordCommand::Resources { public: false }, Need::Read),
            ("logs", vec![t("name", "web")], DiscordCommand::Logs { name: "web".into(), lines: DEFAULT_LINES, public: false }, Need::Read),
            ("logs", vec![t("name", "web"), i("lines", 5), b("public", true)], DiscordCommand::Logs { name: "web".into(), lines: 5, public: true }, Need::Read),
            ("snapshots", vec![t("name", "web")], DiscordCommand::Snapshots { name: "web".into(), public: false }, Need::Read),
            ("backups", vec![t("name", "web")], DiscordCommand::Backups { name: "web".into(), public: false }, Need::Read),
            ("schedules", vec![], DiscordCommand::Schedules { name: None, public: false }, Need::Read),
            ("unschedule", vec![t("schedule", "0190")], DiscordCommand::Unschedule { schedule: "0190".into() }, Need::Change),
            ("redeploy", vec![t("name", "web")], DiscordCommand::Act { action: Action::Redeploy, name: "web".into() }, Need::Change),
            ("rollback", vec![t("name", "web")], DiscordCommand::Act { action: Action::Rollback, name: "web".into() }, Need::Change),
            ("stop", vec![t("name", "web")], DiscordCommand::Act { action: Action::Stop, name: "web".into() }, Need::Change),
            ("start", vec![t("name", "web")], DiscordCommand::Act { action: Action::Start, name: "web".into() }, Need::Change),
            ("destroy", vec![t("name", "web")], DiscordCommand::AskDestroy { name: "web".into() }, Need::Change),
            (
                "snapshot",
                vec![t("name", "web"), t("snapshot", "before-2"), t("description", "pre-release")],
                DiscordCommand::Snapshot { name: "web".into(), snapshot: SnapshotName::parse("before-2").unwrap(), description: SnapshotNote::parse("pre-release").unwrap() },
                Need::Change,
            ),
            (
                "restore-backup",
                vec![t("name", "web"), t("backup", BACKUP)],
                DiscordCommand::AskRestoreBackup { name: "web".into(), backup: BackupFile::parse(BACKUP).unwrap() },
                Need::Change,
            ),
            (
                "restore-backup",
                vec![t("name", "web"), t("backup", BACKUP), t("new_name", "web-again")],
                DiscordCommand::RestoreBackupAsNew { name: "web".into(), backup: BackupFile::parse(BACKUP).unwrap(), new_name: AppName::parse("web-again").unwrap() },
                Need::Change,
            ),
            ("restore", vec![t("name", "web"), t("snapshot", "pvd-0000aaaa-20300101-030000")], DiscordCommand::AskRestore { name: "web".into(), snapshot: SnapshotName::parse_existing("pvd-0000aaaa-20300101-030000").unwrap() }, Need::Change),
        ];
        for (name, opts, want, need) in cases {
            let got = parse_command(name, &opts).unwrap();
            assert_eq!(got, want, "/{name}");
            assert_eq!(got.need(), need, "/{name}");
        }
        assert_eq!(parse_command("deploy", &[]).unwrap().need(), Need::Change);
    }

    #[test]
    fn wrong_options_are_named() {
        for (name, opts, field, rule) in [
            ("logs", vec![], "name", "required"),
            ("logs", vec![t("name", "web"), i("lines", 0)], "lines", "range"),
            ("logs", vec![t("name", "web"), i("lines", i64::from(MAX_LINES) + 1)], "lines", "range"),
            ("logs", vec![t("name", "web"), t("public", "yes")], "public", "type"),
            ("unschedule", vec![], "schedule", "required"),
            ("stop", vec![i("name", 3)], "name", "type"),
            ("destroy", vec![], "name", "required"),
            ("snapshot", vec![t("name", "web"), t("snapshot", "pvd-mine")], "snapshot", "reserved"),
            ("snapshot", vec![t("name", "web"), t("snapshot", "1st")], "snapshot", "snapshot_name"),
            ("snapshot", vec![t("name", "web"), t("snapshot", "ok"), t("description", "a\nb")], "description", "one_line"),
            ("restore", vec![t("name", "web")], "snapshot", "required"),
            ("restore-backup", vec![t("name", "web")], "backup", "required"),
            ("restore-backup", vec![t("name", "web"), t("backup", "../../etc/passwd")], "backup", "backup_name"),
            ("restore-backup", vec![t("name", "web"), t("backup", "local:backup/x")], "backup", "backup_name"),
            ("restore-backup", vec![t("name", "web"), t("backup", BACKUP), t("new_name", "Web Again")], "new_name", "dns_label"),
            ("shutdown", vec![], "command", "unknown"),
        ] {
            let e = parse_command(name, &opts).unwrap_err();
            assert_eq!((e.0[0].field.as_str(), e.0[0].rule), (field, rule), "/{name}");
        }
    }

    #[test]
    fn buttons_round_trip() {
        let id = "0190d5c0-0000-7000-8000-000000000000";
        assert_eq!(parse_component(&confirm_id(id, "abc")).unwrap(), DiscordCommand::ConfirmDestroy { deployment: id.into(), nonce: "abc".into() });
        assert_eq!(parse_component(&cancel_id("abc")).unwrap(), DiscordCommand::CancelDestroy { nonce: "abc".into() });
        assert!(parse_component("destroy:x").is_err());
        assert!(parse_component("other:1:2").is_err());
        assert_eq!(parse_component(&cancel_id("n")).unwrap().need(), Need::Change);
        assert_eq!(parse_component(&restore_id("abc")).unwrap(), DiscordCommand::ConfirmRestore { nonce: "abc".into() });
        assert_eq!(parse_component(&restore_backup_id("abc")).unwrap(), DiscordCommand::ConfirmRestoreBackup { nonce: "abc".into() });
        assert_eq!(parse_component(&restore_backup_id("abc")).unwrap().need(), Need::Change);
        assert!(restore_id(&"f".repeat(24)).len() <= 100);
        assert_eq!(parse_component(&logs_id(id)).unwrap(), DiscordCommand::Logs { name: id.into(), lines: DEFAULT_LINES, public: false });
        assert!(parse_component(&logs_id(id)).unwrap().private(), "a Logs button answers the presser only");
        assert_eq!(parse_component(&rollback_id(id)).unwrap(), DiscordCommand::Act { action: Action::Rollback, name: id.into() });
        assert_eq!(parse_component(&rollback_id(id)).unwrap().need(), Need::Change);
    }
}
