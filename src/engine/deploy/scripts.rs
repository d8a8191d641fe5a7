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
}
