//! Newtypes for every name that crosses a boundary, built only by `parse` so that holding one proves it is valid.

use std::fmt;

use crate::core::validation::FieldError;

/// A deployment name: a DNS label (RFC 1123), lowercase, 1–63 characters. The guest scripts apply the same rule
/// (`check_app` in `scripts/lib/contract.sh`, `scripts/app-start`), tested over `examples::app_names`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppName(String);

impl AppName {
    pub const RULE: &'static str =
        "must be a DNS label: 1-63 lowercase letters, digits or hyphens, not starting or ending with a hyphen";
    /// `RULE` as a regular expression (ECMA-262 and Rust `regex` alike), for the OpenAPI document.
    pub const PATTERN: &'static str = "^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$";
    /// The longest name (a DNS label's 63 octets, RFC 1035 §2.3.4); the doors announce it (Discord's `max_length`).
    pub const MAX_LEN: usize = 63;

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let ok = !raw.is_empty()
            && raw.len() <= Self::MAX_LEN
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
    pub const PATTERN: &'static str = "^[a-z0-9-]{1,63}$";

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

/// A git branch name valid under `git check-ref-format --branch`, never option-like, and matching the branch
/// pattern in force (`[repos] branch_pattern`, by default [`BranchPattern::DEFAULT`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GitRef(String);

impl GitRef {
    pub const RULE: &'static str = "must be a git branch name (git check-ref-format rules, not starting with '-') of ASCII \
                                    letters, digits and . _ - / @ + only";
    /// The longest branch name accepted; the doors announce it (Discord's `max_length`, the OpenAPI document).
    pub const MAX_LEN: usize = 255;

    /// A branch someone asks us to deploy under the default pattern: git's rules, and only characters that mean
    /// nothing to a shell, a URL or a chat message (`main;id`, `$(id)` and backticks are refused, though git allows
    /// them and they would never be executed: argv is never a shell string).
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        static DEFAULT: std::sync::LazyLock<BranchPattern> = std::sync::LazyLock::new(BranchPattern::default);
        Self::parse_with(raw, &DEFAULT)
    }

    /// A branch someone asks us to deploy: git's rules, then the configured pattern; the 422 names the pattern.
    pub fn parse_with(raw: &str, pattern: &BranchPattern) -> Result<Self, FieldError> {
        if pattern.matches(raw) && check_ref_format_branch(raw) {
            Ok(Self(raw.to_owned()))
        } else if pattern.is_default() {
            Err(FieldError::new("branch", "git_ref", Self::RULE))
        } else {
            Err(FieldError::new(
                "branch",
                "git_ref",
                format!("must be a git branch name (git check-ref-format rules, not starting with '-') matching {} ([repos] branch_pattern)", pattern.as_str()),
            ))
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

/// Which branch names deployments may ask for, on top of git's own rules: a regular expression the whole name
/// must match (`[repos] branch_pattern`). The default allows only characters that mean nothing to a shell, a URL
/// or a chat message.
#[derive(Debug, Clone)]
pub struct BranchPattern {
    source: String,
    whole: regex::Regex,
}

impl BranchPattern {
    /// The default: ASCII letters, digits and `. _ - / @ +`.
    pub const DEFAULT: &'static str = "^[A-Za-z0-9._/@+-]+$";
    /// The default rule together with git's, as one pattern a JSON Schema can state (no look-around): components
    /// of letters, digits and `_ - @ +` not starting with `-` or `@`, a `.` only before a digit (so no `..`, no
    /// leading or trailing `.`, no `.lock`), joined by `/`. A subset: every name it matches (within
    /// [`GitRef::MAX_LEN`]) the default accepts; `feature/a.b` is accepted without matching it.
    pub const DEFAULT_SCHEMA: &'static str = "^[A-Za-z0-9_+](?:\\.?[0-9]|[A-Za-z0-9_@+-])*(?:/[A-Za-z0-9_+](?:\\.?[0-9]|[A-Za-z0-9_@+-])*)*$";

    /// An operator's pattern: a regular expression (Rust `regex` syntax) matched against the whole name.
    pub fn parse(source: &str) -> Result<Self, String> {
        if source.is_empty() {
            return Err("must be a regular expression a branch name must match, e.g. \"^[A-Za-z0-9._/-]+$\"".into());
        }
        let whole = regex::Regex::new(&format!("^(?:{source})$")).map_err(|e| format!("is not a regular expression: {e}"))?;
        Ok(Self { source: source.to_owned(), whole })
    }

    pub fn matches(&self, name: &str) -> bool {
        self.whole.is_match(name)
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn is_default(&self) -> bool {
        self.source == Self::DEFAULT
    }

    /// The pattern the OpenAPI document states for `branch`: the default's exact subset, or the operator's pattern
    /// (git's rules then still apply).
    pub fn schema_pattern(&self) -> String {
        if self.is_default() {
            Self::DEFAULT_SCHEMA.to_owned()
        } else {
            format!("^(?:{})$", self.source)
        }
    }
}

impl Default for BranchPattern {
    fn default() -> Self {
        Self::parse(Self::DEFAULT).expect("the default branch pattern compiles")
    }
}

impl PartialEq for BranchPattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for BranchPattern {}

/// The rules of `git check-ref-format` applied to `refs/heads/<name>`, plus: no leading `-`, at most 255 bytes.
fn check_ref_format_branch(name: &str) -> bool {
    if name.is_empty() || name.len() > GitRef::MAX_LEN || name.starts_with('-') || name == "@" {
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

/// A full git commit id (40 lowercase hex digits, SHA-1) or 64 (SHA-256); `check_sha` in
/// `scripts/lib/contract.sh` applies the same rule, tested over `examples::commits`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CommitSha(String);

impl CommitSha {
    pub const RULE: &'static str = "must be a full commit id: 40 or 64 lowercase hexadecimal digits";
    pub const PATTERN: &'static str = "^(?:[0-9a-f]{40}|[0-9a-f]{64})$";

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

    /// Its first `len` hexadecimal digits (the short form people read).
    pub fn short(&self, len: usize) -> &str {
        &self.0[..len.min(self.0.len())]
    }
}

impl fmt::Display for CommitSha {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The path of the app's HTTP health check: starts with `/`, printable ASCII, no spaces or `#`, at most 256 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthPath(String);

impl HealthPath {
    pub const RULE: &'static str = "must start with '/' and be at most 256 printable ASCII characters without spaces or '#'";
    pub const PATTERN: &'static str = "^/[!-\"$-~]*$";
    pub const MAX_LEN: usize = 256;

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
    /// A subset of `RULE` a schema can state exactly (ASCII, so characters are bytes): printable characters, spaces
    /// and tabs, at least one printable. Every string it matches (within `MAX_LEN`) is accepted.
    pub const PATTERN: &'static str = "^[\t -~]*[!-~][\t -~]*$";
    pub const MAX_LEN: usize = 2048;

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
    pub const PATTERN: &'static str = "^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$";

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

/// Values each rule accepts and refuses: the tests here run the core's rule over them, and the guest scripts' tests
/// (`engine::deploy::scripts`) run the scripts' checks of the same rule.
#[cfg(test)]
pub(crate) mod examples {
    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// (accepted, refused) app names.
    pub fn app_names() -> (Vec<String>, Vec<String>) {
        let mut ok = strings(&["a", "my-app", "a1", "1shop", "9", "0-a", "a--b"]);
        ok.push("x".repeat(63));
        let mut bad = strings(&["", "-a", "a-", "A", "a_b", "a.b", "a b", "é", "1-", "a/b", "$(id)"]);
        bad.push("x".repeat(64));
        (ok, bad)
    }

    /// (accepted, refused) commit ids.
    pub fn commits() -> (Vec<String>, Vec<String>) {
        let ok = vec!["0123456789abcdef0123456789abcdef01234567".into(), "a".repeat(40), "f".repeat(64)];
        let bad = vec![String::new(), "0123456".into(), "0123456789ABCDEF0123456789ABCDEF01234567".into(), "g".repeat(40), "a".repeat(39), "a".repeat(41), "a".repeat(63), "a".repeat(65), format!("{} ", "a".repeat(40))];
        (ok, bad)
    }

    /// (accepted, refused) start commands; the refused ones are those an argv element can carry (no NUL).
    pub fn start_commands() -> (Vec<String>, Vec<String>) {
        let mut ok = strings(&["gunicorn -b \"$BIND:$PORT\" 'app:create()' $(never-run-here)", "x", " node  server.js\t"]);
        ok.push("x".repeat(2048));
        let mut bad = strings(&["", "a\nb", "a\rb", "\n"]);
        bad.push("x".repeat(2049));
        (ok, bad)
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
        let (ok, bad) = examples::app_names();
        for ok in ok {
            assert!(AppName::parse(&ok).is_ok(), "{ok}");
        }
        for bad in bad {
            assert!(AppName::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn commits_and_start_commands() {
        let (ok, bad) = examples::commits();
        assert!(ok.iter().all(|c| CommitSha::parse(c).is_ok()), "{ok:?}");
        assert!(bad.iter().all(|c| CommitSha::parse(c).is_err()), "{bad:?}");
        let (ok, bad) = examples::start_commands();
        assert!(ok.iter().all(|c| StartCommand::parse(c).is_ok()), "{ok:?}");
        assert!(bad.iter().all(|c| StartCommand::parse(c).is_err()), "{bad:?}");
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
