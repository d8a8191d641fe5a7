//! Finds the host's Debian mirrors in its apt sources, for debootstrap and the guests' sources.

use std::path::Path;

/// Where the base image fetches packages from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirrors {
    /// Mirror for `bookworm` and `bookworm-updates`.
    pub main: String,
    /// Mirror for `bookworm-security`, if the host has one configured.
    pub security: Option<String>,
}

const FALLBACK_MIRROR: &str = "http://deb.debian.org/debian";

/// Reads `/etc/apt/sources.list.d/*.sources`, `*.list` and `/etc/apt/sources.list`.
pub fn host_mirrors(suite: &str) -> Mirrors {
    let mut texts: Vec<(bool, String)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<_> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            let deb822 = match p.extension().and_then(|e| e.to_str()) {
                Some("sources") => true,
                Some("list") => false,
                _ => continue,
            };
            if let Ok(t) = std::fs::read_to_string(&p) {
                texts.push((deb822, t));
            }
        }
    }
    if let Ok(t) = std::fs::read_to_string(Path::new("/etc/apt/sources.list")) {
        texts.push((false, t));
    }
    mirrors_from(&texts, suite)
}

fn mirrors_from(texts: &[(bool, String)], suite: &str) -> Mirrors {
    let security_suite = format!("{suite}-security");
    let mut main = None;
    let mut security = None;
    for (deb822, text) in texts {
        let entries = if *deb822 {
            parse_deb822(text)
        } else {
            parse_one_line(text)
        };
        for (uri, suites) in entries {
            if main.is_none() && suites.iter().any(|s| s == suite) {
                main = Some(uri.clone());
            }
            if security.is_none() && suites.contains(&security_suite) {
                security = Some(uri.clone());
            }
        }
    }
    Mirrors {
        main: main.unwrap_or_else(|| FALLBACK_MIRROR.to_string()),
        security,
    }
}

/// `(first URI, suites)` of every enabled `Types: deb` stanza.
fn parse_deb822(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let mut types = Vec::new();
        let mut uris = Vec::new();
        let mut suites = Vec::new();
        let mut enabled = true;
        for line in stanza.lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let words = || {
                value
                    .split_whitespace()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            };
            match key.trim().to_ascii_lowercase().as_str() {
                "types" => types = words(),
                "uris" => uris = words(),
                "suites" => suites = words(),
                "enabled" => enabled = !value.trim().eq_ignore_ascii_case("no"),
                _ => {}
            }
        }
        if enabled && types.iter().any(|t| t == "deb") {
            if let Some(uri) = uris.into_iter().find(|u| u.starts_with("http")) {
                out.push((uri.trim_end_matches('/').to_string(), suites));
            }
        }
    }
    out
}

/// `deb [options] URI suite components…` lines.
fn parse_one_line(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("deb ") else {
            continue;
        };
        let rest = rest.trim_start();
        let rest = match rest.strip_prefix('[') {
            Some(r) => match r.split_once(']') {
                Some((_, after)) => after,
                None => continue,
            },
            None => rest,
        };
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        if uri.starts_with("http") {
            out.push((
                uri.trim_end_matches('/').to_string(),
                vec![suite.to_string()],
            ));
        }
    }
    out
}

/// The deb822 sources file the guests get, pointing at the same mirrors as the host.
pub fn guest_sources(m: &Mirrors, suite: &str) -> String {
    let mut s = format!(
        "Types: deb\nURIs: {}\nSuites: {suite} {suite}-updates\nComponents: main\n\
         Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
        m.main
    );
    if let Some(sec) = &m.security {
        s.push_str(&format!(
            "\nTypes: deb\nURIs: {sec}\nSuites: {suite}-security\nComponents: main\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb822_main_and_security() {
        let t = "Types: deb\n# comment\nURIs: http://deb.debian.org/debian/\nSuites: bookworm bookworm-updates\n\
                 Components: main\n\nTypes: deb\nURIs: http://deb.debian.org/debian-security\n\
                 Suites: bookworm-security\nComponents: main\n";
        let m = mirrors_from(&[(true, t.to_string())], "bookworm");
        assert_eq!(m.main, "http://deb.debian.org/debian");
        assert_eq!(
            m.security.as_deref(),
            Some("http://deb.debian.org/debian-security")
        );
    }

    #[test]
    fn one_line_with_options_and_fallback() {
        let t = "deb [arch=amd64 signed-by=/x.gpg] http://ftp.de.debian.org/debian bookworm main\n\
                 deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n";
        let m = mirrors_from(&[(false, t.to_string())], "bookworm");
        assert_eq!(m.main, "http://ftp.de.debian.org/debian");
        assert_eq!(m.security, None);
        let none = mirrors_from(&[], "bookworm");
        assert_eq!(none.main, FALLBACK_MIRROR);
    }

    #[test]
    fn disabled_stanza_is_skipped() {
        let t = "Types: deb\nURIs: http://a/debian\nSuites: bookworm\nEnabled: no\n\n\
                 Types: deb\nURIs: http://b/debian\nSuites: bookworm\n";
        assert_eq!(
            mirrors_from(&[(true, t.to_string())], "bookworm").main,
            "http://b/debian"
        );
    }
}
