//! Newtypes for every name that crosses a boundary, built only by `parse` so that holding one proves it is valid.

use std::fmt;

use crate::core::validation::FieldError;

/// A deployment name: a DNS label (RFC 1123), lowercase, 1–63 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppName(String);

impl AppName {
    pub const RULE: &'static str =
        "must be a DNS label: 1-63 lowercase letters, digits or hyphens, not starting or ending with a hyphen";

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let ok = !raw.is_empty()
            && raw.len() <= 63
            && raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !raw.starts_with('-')
            && !raw.ends_with('-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(FieldError::new("name", "dns_label", Self::RULE))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The start of an app name, as a listing filter: 1–63 of the characters names are made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppNamePrefix(String);

impl AppNamePrefix {
    pub const RULE: &'static str = "must be the start of an app name: 1-63 lowercase letters, digits or hyphens";

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let ok = !raw.is_empty() && raw.len() <= 63 && raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(FieldError::new("name", "name_prefix", Self::RULE))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The smallest string above every name starting with this prefix (`~` sorts after every name character).
    pub fn upper_bound(&self) -> String {
        format!("{}~", self.0)
    }
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A git branch name valid under `git check-ref-format --branch` and never option-like.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GitRef(String);

impl GitRef {
    pub const RULE: &'static str = "must be a git branch name (git check-ref-format rules, not starting with '-') of ASCII \
                                    letters, digits and . _ - / @ + only";

    /// A branch someone asks us to deploy: git's rules, and only characters that mean nothing to a shell, a URL or
    /// a chat message (`main;id`, `$(id)` and backticks are refused, though git allows them and they would never
    /// be executed: argv is never a shell string).
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let conservative = raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/' | b'@' | b'+'));
        if conservative && check_ref_format_branch(raw) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(FieldError::new("branch", "git_ref", Self::RULE))
        }
    }

    /// A branch as git itself names it (a pushed ref, a stored record made before the character rule): git's rules
    /// only. Such a name is only compared with deployments' branches, which `parse` made.
    pub fn parse_git(raw: &str) -> Result<Self, FieldError> {
        if check_ref_format_branch(raw) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(FieldError::new("branch", "git_ref", "must be a valid git branch name (git check-ref-format rules) and must not start with '-'"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GitRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The rules of `git check-ref-format` applied to `refs/heads/<name>`, plus: no leading `-`, at most 255 bytes.
fn check_ref_format_branch(name: &str) -> bool {
    if name.is_empty() || name.len() > 255 || name.starts_with('-') || name == "@" {
        return false;
    }
    if name.starts_with('/') || name.ends_with('/') || name.ends_with('.') || name.contains("//") {
        return false;
    }
    if name.contains("..") || name.contains("@{") {
        return false;
    }
    for c in name.chars() {
        if c.is_ascii_control() || c == '\u{7f}' || matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\') {
            return false;
        }
        if c.is_whitespace() {
            return false;
        }
    }
    name.split('/').all(|component| !component.starts_with('.') && !component.ends_with(".lock") && !component.is_empty())
}

/// A full git commit id (40 lowercase hex digits, SHA-1) or 64 (SHA-256).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CommitSha(String);

impl CommitSha {
    pub const RULE: &'static str = "must be a full commit id: 40 or 64 lowercase hexadecimal digits";

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let ok = (raw.len() == 40 || raw.len() == 64) && raw.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(FieldError::new("commit", "commit_sha", Self::RULE))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The path of the app's HTTP health check: starts with `/`, printable ASCII, no spaces or `#`, at most 256 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthPath(String);

impl HealthPath {
    pub const RULE: &'static str = "must start with '/' and be at most 256 printable ASCII characters without spaces or '#'";

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let ok = raw.starts_with('/') && raw.len() <= 256 && raw.bytes().all(|b| b.is_ascii_graphic() && b != b'#');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(FieldError::new("health_path", "health_path", Self::RULE))
        }
    }

    pub fn root() -> Self {
        Self("/".into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The command that starts the app, replacing the framework's own: like a Procfile's `web:` line, it is
/// the app owner's own command line, run on the guest as the app's user by `/bin/sh -c` (the
/// `compute_start` of `scripts/lib/frameworks.sh`; it reaches the guest as one argument, never spliced
/// into a shell string of ours). 1 to 2048 characters, no NUL, carriage return or newline — the rule
/// `check_start_command` in `scripts/lib/contract.sh` applies too.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StartCommand(String);

impl StartCommand {
    pub const RULE: &'static str = "must be 1 to 2048 characters without NUL, carriage return or newline";

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        if !raw.trim().is_empty() && raw.len() <= 2048 && !raw.contains(['\0', '\r', '\n']) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(FieldError::new("start_command", "start_command", Self::RULE))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A Proxmox VE guest id (`pve-vmid`: 100–999999999).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VmId(u32);

impl VmId {
    pub const RULE: &'static str = "must be a Proxmox VMID between 100 and 999999999";

    pub fn new(raw: u64) -> Result<Self, FieldError> {
        if (100..=999_999_999).contains(&raw) {
            Ok(Self(raw as u32))
        } else {
            Err(FieldError::new("vmid", "range", Self::RULE))
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for VmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A Proxmox VE node name (`pve-node` format).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeName(String);

impl NodeName {
    pub const RULE: &'static str =
        "must be a Proxmox node name: letters, digits and inner hyphens, at most 63 characters";

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let b = raw.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 63
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric();
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(FieldError::new("node", "pve_node", Self::RULE))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Proxmox VE resource pool id (`pve-poolid`: pve-common `src/PVE/JSONSchema.pm` `verify_poolid`,
/// `^[A-Za-z0-9_][-A-Za-z0-9_.]*$`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolName(String);

impl PoolName {
    pub const RULE: &'static str = "must be a Proxmox pool id: a letter, digit or underscore, then letters, digits, '-', '_' or '.'";

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let b = raw.as_bytes();
        let ok = !b.is_empty()
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(FieldError::new("pool", "pve_poolid", Self::RULE))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PoolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_names() {
        for ok in ["apps", "_x", "team-a.prod", "9"] {
            assert!(PoolName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", ".a", "a/b", "a b", "ä"] {
            assert!(PoolName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn name_prefixes() {
        for ok in ["a", "my-", "-", "a1"] {
            let p = AppNamePrefix::parse(ok).unwrap();
            assert!(p.as_str() < p.upper_bound().as_str());
            // Every name the prefix starts lies in [prefix, upper_bound).
            let name = format!("{ok}zzz9-z");
            assert!(p.as_str() <= name.as_str() && name.as_str() < p.upper_bound().as_str());
        }
        for bad in ["", "A", "a b", "a_b", "é", &"x".repeat(64)] {
            assert_eq!(AppNamePrefix::parse(bad).unwrap_err().field, "name", "{bad:?}");
        }
    }

    #[test]
    fn app_names() {
        for ok in ["a", "my-app", "a1", &"x".repeat(63)] {
            assert!(AppName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"x".repeat(64), "a b", "é"] {
            assert!(AppName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn branches_follow_check_ref_format() {
        for ok in ["main", "feature/x", "release-1.2", "a@b", "v1"] {
            assert!(GitRef::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "-x", "--upload-pack=x", "a..b", "a b", "a~1", "a^", "a:b", "a?", "a*", "a[", "a\\b", "/a", "a/",
            "a//b", "a.", ".a", "a/.b", "x.lock", "a@{1}", "@", "a\nb", "a\tb", "a\u{7f}",
        ] {
            assert!(GitRef::parse(bad).is_err(), "{bad:?}");
            assert!(GitRef::parse_git(bad).is_err(), "{bad:?}");
        }
    }

    /// Git allows them, so a pushed ref or an old record may carry them; a deployment request may not.
    #[test]
    fn branches_asked_for_use_characters_that_mean_nothing_to_a_shell() {
        for ok in ["dependabot/npm_and_yarn/left-pad-1.3.0", "renovate/@types-node-20.x", "fix+x", "JIRA-12_a"] {
            assert!(GitRef::parse(ok).is_ok(), "{ok}");
        }
        for shellish in ["main;id", "$(id)", "`id`", "a|b", "a&b", "a>b", "a'b", "a\"b", "a$b", "a!b", "a#b", "a%b", "a,b", "a=b", "a{b}", "ü", "a(b)"] {
            let err = GitRef::parse(shellish).unwrap_err();
            assert_eq!((err.field.as_str(), err.rule), ("branch", "git_ref"), "{shellish:?}");
            assert!(err.message.contains(". _ - / @ +"), "{}", err.message);
            assert!(GitRef::parse_git(shellish).is_ok(), "git itself allows {shellish:?}");
        }
    }

    #[test]
    fn vmids_and_nodes() {
        assert!(VmId::new(99).is_err());
        assert_eq!(VmId::new(100).unwrap().get(), 100);
        assert!(VmId::new(1_000_000_000).is_err());
        assert!(NodeName::parse("pve-1").is_ok());
        assert!(NodeName::parse("pve_1").is_err());
        assert!(NodeName::parse("-pve").is_err());
    }
}
