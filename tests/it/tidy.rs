//! Tidy checks over the tree itself (rust-analyzer's `tidy` in spirit): every source file says what it is in
//! its first line, and every relative link in the docs leads somewhere that exists.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every file under `dir` (recursively) whose name ends with `ext`, skipping build output.
fn files(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if !matches!(name.as_str(), "target" | "node_modules" | ".git") {
                files(&path, ext, out);
            }
        } else if name.ends_with(ext) {
            out.push(path);
        }
    }
}

#[test]
fn every_source_file_opens_with_a_module_doc_line() {
    let root = root();
    let mut all = vec![root.join("build.rs")];
    for dir in ["src", "tests", "benches", "sim/src", "sim/tests"] {
        files(&root.join(dir), ".rs", &mut all);
    }
    assert!(all.len() > 100, "the walk found the tree ({} files)", all.len());
    let missing: Vec<String> = all
        .iter()
        .filter(|p| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            !text.lines().find(|l| !l.trim().is_empty()).is_some_and(|l| l.starts_with("//!"))
        })
        .map(|p| p.strip_prefix(&root).unwrap_or(p).display().to_string())
        .collect();
    assert!(missing.is_empty(), "these files do not open with a `//!` line saying what they are: {missing:?}");
}

/// The lines of a Markdown text outside fenced code blocks (those inside are blank); inline code spans
/// are removed (`keep_code` false: a link inside one is not a link) or only their backticks (headings).
fn prose(text: &str, keep_code: bool) -> Vec<String> {
    let mut fence: Option<String> = None;
    text.lines()
        .map(|line| {
            let t = line.trim_start();
            let marker: String = t.chars().take_while(|c| *c == '`' || *c == '~').collect();
            if let Some(open) = &fence {
                if marker.len() >= open.len() && marker.starts_with(&open[..1]) {
                    fence = None;
                }
                return String::new();
            }
            if marker.len() >= 3 {
                fence = Some(marker);
                return String::new();
            }
            // Drop inline code spans: `…`.
            let mut out = String::new();
            let mut in_code = false;
            for c in line.chars() {
                if c == '`' {
                    in_code = !in_code;
                } else if !in_code || keep_code {
                    out.push(c);
                }
            }
            out
        })
        .collect()
}

/// GitHub's anchor for a heading: lowercase, spaces to hyphens, punctuation dropped.
fn slug(heading: &str) -> String {
    let mut text = heading.trim().to_string();
    // [text](url) → text
    while let (Some(a), Some(b)) = (text.find("]("), text.find('[')) {
        let Some(end) = text[a..].find(')') else { break };
        if b > a {
            break;
        }
        text = format!("{}{}{}", &text[..b], &text[b + 1..a], &text[a + end + 1..]);
    }
    text.to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(path: &Path) -> HashSet<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = HashSet::new();
    for line in prose(&text, true) {
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if (1..=6).contains(&hashes) && line[hashes..].starts_with(' ') {
            let s = slug(line[hashes..].trim().trim_end_matches('#'));
            let n = seen.entry(s.clone()).or_insert(0);
            out.insert(if *n == 0 { s.clone() } else { format!("{s}-{n}") });
            *n += 1;
        }
    }
    out
}

/// Every `](target)` of a Markdown line.
fn links(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        if let Some(end) = rest.find(')') {
            let target = rest[..end].split_whitespace().next().unwrap_or("").trim_matches(|c| c == '<' || c == '>');
            out.push(target.to_string());
            rest = &rest[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let root = root();
    let mut docs = vec![root.join("README.md"), root.join("ARCHITECTURE.md")];
    for dir in ["docs", "hcl-export", "scripts", "sim", "cloud-init"] {
        files(&root.join(dir), ".md", &mut docs);
    }
    docs.retain(|p| p.exists());
    assert!(docs.len() > 15, "the walk found the docs ({} files)", docs.len());
    let mut broken = Vec::new();
    let mut checked = 0;
    for doc in &docs {
        let text = std::fs::read_to_string(doc).unwrap();
        for (n, line) in prose(&text, false).iter().enumerate() {
            for target in links(line) {
                if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                let (file, anchor) = match target.split_once('#') {
                    Some((f, a)) => (f, Some(a)),
                    None => (target.as_str(), None),
                };
                let path = if file.is_empty() { doc.clone() } else { doc.parent().unwrap().join(file) };
                let at = format!("{}:{}: {target}", doc.strip_prefix(&root).unwrap().display(), n + 1);
                if !path.exists() {
                    broken.push(format!("{at} (no such file)"));
                } else if let Some(anchor) = anchor.filter(|_| path.extension().is_some_and(|e| e == "md")) {
                    if !anchors(&path).contains(anchor) {
                        broken.push(format!("{at} (no such heading)"));
                    }
                }
            }
        }
    }
    assert!(checked > 100, "links were found ({checked})");
    assert!(broken.is_empty(), "broken links: {broken:#?}");
}

#[test]
fn slugs_follow_githubs_rules() {
    assert_eq!(slug("Safety on a shared cluster"), "safety-on-a-shared-cluster");
    assert_eq!(slug("`GET /deployments` — paging"), "get-deployments--paging");
    assert_eq!(slug("0001 — The store: durable 2xx"), "0001--the-store-durable-2xx");
    assert_eq!(slug("See [the API](api.md)"), "see-the-api");
}

/// A module's files: `src/<name>.rs` and everything under `src/<name>/`.
fn module_files(name: &str) -> Vec<PathBuf> {
    let src = root().join("src");
    let mut out = vec![src.join(format!("{name}.rs"))];
    files(&src.join(name), ".rs", &mut out);
    out.retain(|p| p.exists());
    out
}

/// Each line of a module's files that holds one of `needles`, as `path:line: text`.
fn lines_holding(modules: &[&str], needles: &[&str]) -> Vec<String> {
    let root = root();
    let mut found = Vec::new();
    for m in modules {
        let paths = module_files(m);
        assert!(!paths.is_empty(), "the module {m} has files");
        for path in paths {
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                if needles.iter().any(|needle| line.contains(needle)) {
                    found.push(format!("{}:{}: {}", path.strip_prefix(&root).unwrap().display(), n + 1, line.trim()));
                }
            }
        }
    }
    found
}

/// The doors (HTTP API, GitHub webhooks, Discord, the command line's client) talk only to the engine: they read
/// through its methods and import no store module (the types they share with it live in `core`).
#[test]
fn doors_talk_only_to_the_engine() {
    let doors = ["api", "webhooks", "discord", "remote"];
    let found = lines_holding(&doors, &[".store()", "crate::store"]);
    assert!(found.is_empty(), "doors reach the store around the engine (read through `Engine`, import shared types from `core`): {found:#?}");
}

/// The doors do not import each other: `server::routes` composes their routes, each with its own state, and what
/// they share (the JSON error bodies) is in `http`.
#[test]
fn the_doors_do_not_import_each_other() {
    let doors = ["api", "webhooks", "discord", "remote"];
    let mut found = Vec::new();
    for door in doors {
        let others: Vec<String> = doors.iter().filter(|o| **o != door).map(|o| format!("crate::{o}")).collect();
        let others: Vec<&str> = others.iter().map(String::as_str).collect();
        found.extend(lines_holding(&[door], &others));
    }
    assert!(found.is_empty(), "a door imports another (compose routes in server::routes, share through http or core): {found:#?}");
}
