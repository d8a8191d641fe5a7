//! `Glob`: a file or tag pattern as GitHub Actions' `on.push.paths` and `tags` filters write them (`*` any characters
//! but `/`, `**` any characters, `?` one character but `/`), for a deployment's path filters and tag pattern.
//!
//! The rules are those of "Filter pattern cheat sheet" in GitHub's "Workflow syntax for GitHub Actions"
//! (<https://docs.github.com/en/actions/writing-workflows/workflow-syntax-for-github-actions#filter-pattern-cheat-sheet>),
//! without character classes, `+` and `!` negation, which are refused rather than read differently.

use std::fmt;

use crate::core::validation::FieldError;

/// A parsed pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(String);

impl Glob {
    pub const MAX_LEN: usize = 200;
    /// A subset of `RULE` a JSON Schema can state (ASCII): segments of letters, digits and `_ . * ? -`, none
    /// starting with `.` (so never `..`), joined by `/`. Every pattern it matches (within `MAX_LEN`) is accepted.
    pub const SCHEMA_PATTERN: &'static str = "^[A-Za-z0-9_*?-][A-Za-z0-9_.*?-]*(?:/[A-Za-z0-9_*?-][A-Za-z0-9_.*?-]*)*/?$";
    pub const RULE: &'static str = "must be a pattern of at most 200 printable characters without spaces: `*` (any characters but /), `**` (any characters), `?` (one character); no leading / or !, no [ ] or +";

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let ok = !raw.is_empty()
            && raw.len() <= Self::MAX_LEN
            && !raw.starts_with('/')
            && !raw.starts_with('!')
            && raw.chars().all(|c| c.is_ascii_graphic() || (!c.is_ascii() && !c.is_control() && !c.is_whitespace()))
            && !raw.contains(['[', ']', '+', '\\'])
            && !raw.split('/').any(|s| s == "..");
        if ok {
            Ok(Glob(raw.to_owned()))
        } else {
            Err(FieldError::new("pattern", "glob", Self::RULE))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `path` (a repository path such as `api/app.py`, or a tag name) matches the whole pattern. Memoised:
    /// at most (pattern length + 1) × (path length + 1) steps, whatever the pattern.
    pub fn matches(&self, path: &str) -> bool {
        let p: Vec<char> = self.0.chars().collect();
        let s: Vec<char> = path.chars().collect();
        let mut memo = vec![None; (p.len() + 1) * (s.len() + 1)];
        Matcher { p: &p, s: &s, memo: &mut memo }.at(0, 0)
    }
}

struct Matcher<'a> {
    p: &'a [char],
    s: &'a [char],
    memo: &'a mut Vec<Option<bool>>,
}

impl Matcher<'_> {
    fn at(&mut self, i: usize, j: usize) -> bool {
        let key = i * (self.s.len() + 1) + j;
        if let Some(known) = self.memo[key] {
            return known;
        }
        let (p, s) = (self.p, self.s);
        let found = match p.get(i) {
            None => j == s.len(),
            // `**`: any characters; `**/` also matches no directory at all (`**/x` matches `x`).
            Some('*') if p.get(i + 1) == Some(&'*') => (p.get(i + 2) == Some(&'/') && self.at(i + 3, j)) || self.at(i + 2, j) || (j < s.len() && self.at(i, j + 1)),
            // `*`: any characters but `/`.
            Some('*') => self.at(i + 1, j) || s.get(j).is_some_and(|c| *c != '/') && self.at(i, j + 1),
            Some('?') => s.get(j).is_some_and(|c| *c != '/') && self.at(i + 1, j + 1),
            Some(c) => s.get(j) == Some(c) && self.at(i + 1, j + 1),
        };
        self.memo[key] = Some(found);
        found
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        Glob::parse(p).unwrap().matches(s)
    }

    #[test]
    fn patterns_match_as_github_actions_filters_do() {
        // from the cheat sheet's examples
        assert!(m("*", "README.md") && !m("*", "server/README.md"));
        assert!(m("**", "server/README.md") && m("**", "README.md"));
        assert!(m("*.js", "app.js") && !m("*.js", "js/index.js"));
        assert!(m("**.js", "js/index.js") && m("**.js", "index.js"));
        assert!(m("docs/*", "docs/README.md") && !m("docs/*", "docs/mona/octocat.txt") && !m("docs/*", "README.md"));
        assert!(m("docs/**", "docs/mona/octocat.txt") && !m("docs/**", "src/docs/x"));
        assert!(m("**/docs/**", "docs/x.md") && m("**/docs/**", "src/docs/x.md") && !m("**/docs/**", "src/doc/x.md"));
        assert!(m("**/README.md", "README.md") && m("**/README.md", "js/README.md"));
        assert!(m("api/**", "api/app.py") && m("api/**", "api/v1/views.py") && !m("api/**", "web/api/app.py") && !m("api/**", "apix/a"));
        assert!(m("v?.0", "v1.0") && !m("v?.0", "v10.0") && !m("?", "/"));
        // tags
        assert!(m("v*", "v1.2.3") && !m("v*", "release/v1") && m("release/*", "release/v1") && !m("v*", "1.0"));
        // a pattern made to backtrack answers at once
        let hostile = format!("{}b", "*a".repeat(40));
        assert!(!m(&hostile, &"a".repeat(3000)));
    }

    #[test]
    fn patterns_it_would_read_differently_are_refused() {
        for bad in ["", "/api/**", "!docs/**", "src/[ab].py", "v+", "a b", "../x", "a/../b", "a\\b", &"x".repeat(201)] {
            assert_eq!(Glob::parse(bad).unwrap_err().rule, "glob", "{bad:?}");
        }
    }
}
