//! Environment variables given on the command line: `KEY=VALUE`, `KEY` (the value taken from this process's own
//! environment) and `.env` files. Names and values are checked against the core's rules before anything is sent;
//! an error names the variable (and the file line), never the value.

use std::collections::BTreeMap;
use std::path::Path;

use super::{arg, RemoteError};
use crate::core::release::{EnvName, EnvValue};

/// Variables in the order given; a later one replaces an earlier one of the same name.
#[derive(Debug, Default, Clone)]
pub struct Vars(BTreeMap<String, EnvValue>);

impl Vars {
    pub fn insert(&mut self, name: EnvName, value: EnvValue) {
        self.0.insert(name.as_str().to_string(), value);
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    pub fn remove(&mut self, name: &str) {
        self.0.remove(name);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Only `names` (the others dropped).
    pub fn only(&self, names: &[String]) -> Vars {
        Vars(self.0.iter().filter(|(k, _)| names.contains(k)).map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    pub fn extend(&mut self, other: Vars) {
        self.0.extend(other.0);
    }

    /// The request body's `vars` (the only place values are exposed).
    pub fn to_body(&self) -> BTreeMap<String, String> {
        self.0.iter().map(|(k, v)| (k.clone(), v.expose().to_string())).collect()
    }
}

/// `KEY=VALUE`, or `KEY` whose value `lookup` finds (this process's environment), checked against the rules.
pub fn assignment(raw: &str, flag: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<(EnvName, EnvValue), RemoteError> {
    let (key, value) = match raw.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string())),
        None => (raw, None),
    };
    let name = EnvName::parse(key).map_err(|_| match value {
        // Before `=` is a name; a lone word may be a value typed by mistake, so it is not repeated.
        Some(_) => arg(flag, format!("names a variable {:?} that {}", printable(key), EnvName::RULE)),
        None => arg(flag, format!("takes KEY=VALUE or KEY, and a KEY {}", EnvName::RULE)),
    })?;
    let value = match value {
        Some(v) => v,
        None => lookup(key).ok_or_else(|| arg(flag, format!("{key}: is not set in this environment (give {key}=VALUE, or export {key} first)")))?,
    };
    let value = EnvValue::parse(&name, value).map_err(|_| arg(flag, format!("{key}: the value {}", EnvValue::RULE)))?;
    Ok((name, value))
}

/// The variables of `env_file` then of `args` (which win), checked; the values of bare `KEY`s come from this
/// process's environment. `flag` names the arguments in errors.
pub fn from_args(args: &[String], flag: &str, env_file: Option<&Path>) -> Result<Vars, RemoteError> {
    let mut vars = match env_file {
        Some(p) => read_file(p)?,
        None => Vars::default(),
    };
    for raw in args {
        let (n, v) = assignment(raw, flag, |k| std::env::var(k).ok())?;
        vars.insert(n, v);
    }
    Ok(vars)
}

/// Reads a `.env` file (see `parse`).
pub fn read_file(path: &Path) -> Result<Vars, RemoteError> {
    let text = std::fs::read_to_string(path).map_err(|e| arg("--env-file", format!("cannot be read ({}): {e}", path.display())))?;
    parse(&text).map_err(|(line, rule)| arg("--env-file", format!("{}:{line}: {rule}", path.display())))
}

/// `.env` text: one `KEY=VALUE` per line, optionally after `export `; blank lines and lines starting with `#` are
/// skipped; a value wrapped in one pair of matching `"` or `'` loses them; everything else is literal (no
/// escapes, no `$` expansion, a `#` inside a value is part of it). Errors are (line number, rule).
pub fn parse(text: &str) -> Result<Vars, (usize, String)> {
    let mut vars = Vars::default();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let trimmed = trimmed.strip_prefix("export ").map(str::trim_start).unwrap_or(trimmed);
        let Some((key, value)) = trimmed.split_once('=') else {
            return Err((n, "expected KEY=VALUE".into()));
        };
        let key = key.trim_end();
        let name = EnvName::parse(key).map_err(|_| (n, format!("the name {:?} {}", printable(key), EnvName::RULE)))?;
        let value = unquote(value);
        let value = EnvValue::parse(&name, value.to_string()).map_err(|_| (n, format!("{key}: the value {}", EnvValue::RULE)))?;
        vars.insert(name, value);
    }
    Ok(vars)
}

fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return &v[1..v.len() - 1];
        }
    }
    v
}

/// A name as it may be shown in an error: at most 40 characters, control characters escaped.
fn printable(s: &str) -> String {
    s.chars().take(40).flat_map(char::escape_debug).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dotenv_file_is_read_literally() {
        let v = parse("# comment\n\nexport A=1\nB = ignored-space-before-equals\nC=\"quoted # kept\"\nD='x'\nE=a=b\r\nF=\n").unwrap();
        let body = v.to_body();
        assert_eq!(body["A"], "1");
        assert_eq!(body["B"], " ignored-space-before-equals");
        assert_eq!(body["C"], "quoted # kept");
        assert_eq!(body["D"], "x");
        assert_eq!(body["E"], "a=b");
        assert_eq!(body["F"], "");
        assert_eq!(parse("NOEQUALS\n").unwrap_err(), (1, "expected KEY=VALUE".to_string()));
        let (line, rule) = parse("OK=1\n1BAD=secret-value\n").unwrap_err();
        assert_eq!(line, 2);
        assert!(rule.contains("1BAD") && !rule.contains("secret-value"), "{rule}");
    }

    #[test]
    fn assignments_never_show_the_value() {
        let env = |k: &str| (k == "FROM_ENV").then(|| "v".to_string());
        let (n, v) = assignment("FROM_ENV", "--env", env).unwrap();
        assert_eq!((n.as_str(), v.expose()), ("FROM_ENV", "v"));
        let (n, v) = assignment("K=a=b", "--env", env).unwrap();
        assert_eq!((n.as_str(), v.expose()), ("K", "a=b"));
        let e = assignment("MISSING", "--env", env).unwrap_err().to_string();
        assert!(e.contains("MISSING") && e.contains("not set"), "{e}");
        let e = assignment("not a name!", "--env", env).unwrap_err().to_string();
        assert!(!e.contains("not a name!"), "{e}");
        let e = assignment("K=line\nbreak-secret", "--env", env).unwrap_err().to_string();
        assert!(e.contains("K:") && !e.contains("break-secret"), "{e}");
    }
}
