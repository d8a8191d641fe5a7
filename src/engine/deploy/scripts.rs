//! The guest-side scripts (`scripts/`), embedded in the binary so the agent always uploads the
//! version it was built with, and where they live on the guest.

/// Where the scripts are installed on every guest.
pub const GUEST_DIR: &str = "/opt/pvedeploy/scripts";

/// (path under `scripts/`, content, mode).
pub const FILES: &[(&str, &[u8], u32)] = &[
    ("install_framework.sh", include_bytes!("../../../scripts/install_framework.sh"), 0o755),
    ("deploy_app.sh", include_bytes!("../../../scripts/deploy_app.sh"), 0o755),
    ("run-with-env", include_bytes!("../../../scripts/run-with-env"), 0o755),
    ("app-start", include_bytes!("../../../scripts/app-start"), 0o755),
    ("lib/contract.sh", include_bytes!("../../../scripts/lib/contract.sh"), 0o644),
    ("lib/frameworks.sh", include_bytes!("../../../scripts/lib/frameworks.sh"), 0o644),
    ("lib/packages.sh", include_bytes!("../../../scripts/lib/packages.sh"), 0o644),
];

/// The path of one script on the guest.
pub fn on_guest(name: &str) -> String {
    format!("{GUEST_DIR}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_in_the_directory_is_embedded() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
        let mut on_disk = Vec::new();
        for dir in [root.clone(), root.join("lib")] {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_file() && p.extension().is_none_or(|x| x != "md") {
                    on_disk.push(p.strip_prefix(&root).unwrap().to_string_lossy().into_owned());
                }
            }
        }
        on_disk.sort();
        let mut embedded: Vec<String> = FILES.iter().map(|(n, _, _)| n.to_string()).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk, "add new scripts to FILES");
    }

    /// Whether `scripts/lib/contract.sh`'s `check` accepts `value` (exit 0), or refuses it as a bad argument (exit 2).
    fn contract_accepts(check: &str, value: &str) -> bool {
        let lib = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/lib/contract.sh");
        let out = std::process::Command::new("bash").args(["-c", r#"source "$1" && "$2" "$3""#, "contract", lib, check, value]).output().unwrap();
        match out.status.code() {
            Some(0) => true,
            Some(2) => false,
            other => panic!("{check} {value:?}: exit {other:?}: {}", String::from_utf8_lossy(&out.stderr)),
        }
    }

    /// `app-start`'s own check of the app name (refused: exit 2 saying NAME must match).
    fn app_start_accepts(name: &str) -> bool {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/app-start");
        let out = std::process::Command::new("bash").args([script, name, "x"]).output().unwrap();
        !String::from_utf8_lossy(&out.stderr).contains("NAME must match")
    }

    /// The guest scripts check every value the agent hands them with the agent's own rule: what the core accepts
    /// passes on the guest (no deployment fails at install for a name the API took), and what it refuses is refused
    /// there too.
    #[test]
    fn the_scripts_apply_the_cores_rules_to_the_cores_examples() {
        use crate::core::deployment::Framework;
        use crate::core::names::{examples, AppName, CommitSha, StartCommand};
        use crate::core::release::{persistent_path_examples, PersistentPath};
        let (ok, bad) = examples::app_names();
        for name in ok.iter().chain(&bad) {
            let core = AppName::parse(name).is_ok();
            assert_eq!(contract_accepts("check_app", name), core, "check_app {name:?}");
            assert_eq!(app_start_accepts(name), core, "app-start {name:?}");
        }
        let (ok, bad) = examples::commits();
        for c in ok.iter().chain(&bad) {
            assert_eq!(contract_accepts("check_sha", c), CommitSha::parse(c).is_ok(), "check_sha {c:?}");
        }
        let (ok, bad) = persistent_path_examples();
        for p in ok.iter().chain(&bad) {
            assert_eq!(contract_accepts("check_persist", p), PersistentPath::parse(p).is_ok(), "check_persist {p:?}");
        }
        let (ok, bad) = examples::start_commands();
        for c in ok.iter().chain(&bad) {
            assert_eq!(contract_accepts("check_start_command", c), StartCommand::parse(c).is_ok(), "check_start_command {c:?}");
        }
        for f in Framework::ALL {
            assert!(contract_accepts("check_framework", f.as_str()), "{f:?}");
        }
        assert!(!contract_accepts("check_framework", "rails"));
    }
}
