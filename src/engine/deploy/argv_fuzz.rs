//! 10,000 hostile branch names and repository URLs (a fixed seed, so every run tries the same ones): whatever the
//! policy lets through becomes exactly one argument of every command built from it, at the agent (`git
//! ls-remote`) and on the guest (`deploy_app.sh fetch`, `git ls-remote`), where `sh` reads the quoted command line
//! back into the same words (issue #22).

use std::io::Write;
use std::process::{Command, Stdio};

use super::{fetch_argv, guest_ls_remote_argv};
use crate::core::limits::{RepoPolicy, RepoScheme};
use crate::core::names::{BranchPattern, GitRef};
use crate::core::repo::RepoUrl;
use crate::engine::source::{ls_remote_args, Pin};
use crate::ssh::quote::command_line;

/// xorshift64*: deterministic, no crate needed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }
}

/// Pieces hostile to shells, git options, URLs and ref rules, and ordinary ones so that many candidates pass.
const PIECES: &[&str] = &[
    "main", "a", "v1", "feature", "x_y", "1.2", ";", "$(id)", "`id`", "${IFS}", "$HOME", " ", "\t", "\n", "'", "\"", "\\", "-", "--",
    "--upload-pack=touch /tmp/p", "-c", "..", "/", "@", "@{", "{", "}", "*", "?", "~", "^", ":", "é", "\u{202e}", "&&", "|", ">", "<",
    "#", "!", ".", ".lock", "%00", "%0a", "=", "+", ",",
];

const URL_STARTS: &[&str] = &[
    "https://github.com/", "http://127.0.0.1:9/", "ssh://git@github.com/", "git@github.com:", "https://evil.example/", "file:///", "ext::",
    "-", "", "https://u:p@github.com/", "HTTPS://GitHub.com/",
];

/// Ordinary pieces, so that half of the path segments are ones the URL rule lets through.
const PLAIN: &[&str] = &["o", "repo", "my-app", "x_y", "v1.2", "a~b", "r.git"];

fn candidate(rng: &mut Rng, pieces: usize) -> String {
    (0..1 + rng.next() as usize % pieces).map(|_| rng.pick(PIECES)).collect()
}

fn segment(rng: &mut Rng) -> String {
    if rng.next() % 2 == 0 {
        rng.pick(PLAIN).to_string()
    } else {
        candidate(rng, 2)
    }
}

/// Reads each command line back with `sh` (`set --`), returning the words of each.
fn words_read_by_sh(lines: &[String]) -> Vec<Vec<String>> {
    let mut script = String::new();
    for l in lines {
        script.push_str(&format!("set -- {l}\nprintf '%s\\000' \"$#\" \"$@\"\n"));
    }
    let mut child = Command::new("sh").arg("-s").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("sh runs");
    // Written from another thread: sh's output fills its pipe long before it has read the whole script.
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(script.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    let mut fields = out.stdout.split(|b| *b == 0).map(|w| String::from_utf8(w.to_vec()).unwrap());
    lines
        .iter()
        .map(|_| {
            let n: usize = fields.next().unwrap().parse().unwrap();
            (0..n).map(|_| fields.next().unwrap()).collect()
        })
        .collect()
}

#[test]
fn ten_thousand_hostile_branches_and_urls_never_change_the_argv_count() {
    let policy = RepoPolicy {
        allowed_hosts: vec!["github.com".into(), "127.0.0.1:9".into()],
        schemes: vec![RepoScheme::Https, RepoScheme::Http, RepoScheme::Ssh],
        allow_private: vec![],
    };
    // The default branch rule, and one that lets through every name git allows (shell metacharacters included).
    let patterns = [BranchPattern::default(), BranchPattern::parse(".*").unwrap()];
    let pin = Pin::new("github.com".into(), 443, "140.82.112.3".parse().unwrap());
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let rel = "20260101T000000Z-0123456";
    let counts = |url: &str, branch: &str, pin: Option<&Pin>| {
        let refname = format!("refs/heads/{branch}");
        (fetch_argv("/opt/pvedeploy/scripts/deploy_app.sh", "app", url, sha, rel, pin), guest_ls_remote_argv(url, &refname, pin), ls_remote_args(url, &refname, pin))
    };
    let base = |pin| {
        let (a, b, c) = counts("https://github.com/o/r", "main", pin);
        (a.len(), b.len(), c.len())
    };
    let (plain, pinned) = (base(None), base(Some(&pin)));
    let mut rng = Rng(0x5eed_0022);
    let (mut lines, mut expected) = (Vec::new(), Vec::new());
    let (mut branches_ok, mut urls_ok) = (0, 0);
    for case in 0..10_000 {
        let branch = candidate(&mut rng, 4);
        let url = format!("{}{}/{}", rng.pick(URL_STARTS), segment(&mut rng), segment(&mut rng));
        let pattern = &patterns[case % 2];
        let branch = match GitRef::parse_with(&branch, pattern) {
            Ok(b) => {
                branches_ok += 1;
                b
            }
            Err(e) => {
                assert_eq!((e.field.as_str(), e.rule), ("branch", "git_ref"), "{branch:?}");
                GitRef::parse("main").unwrap()
            }
        };
        let url = match RepoUrl::parse(&url, &policy) {
            Ok(u) => {
                urls_ok += 1;
                u
            }
            Err(_) => RepoUrl::parse("https://github.com/o/r", &policy).unwrap(),
        };
        for (pin, want) in [(None, plain), (Some(&pin), pinned)] {
            let (fetch, guest, agent) = counts(url.as_str(), branch.as_str(), pin);
            assert_eq!((fetch.len(), guest.len(), agent.len()), want, "{url} {branch}");
            for argv in [fetch, guest] {
                lines.push(command_line(argv.as_slice()).expect("every accepted value can be quoted"));
                expected.push(argv);
            }
        }
    }
    assert!(branches_ok > 500 && urls_ok > 500, "the generator reaches the accepted side too: {branches_ok} branches, {urls_ok} URLs");
    for (read, argv) in words_read_by_sh(&lines).into_iter().zip(&expected) {
        assert_eq!(&read, argv, "sh read the command line back into other words");
    }
}
