//! The one audited quoting function: turns an argument vector into a POSIX `sh` command line that the remote shell splits back into exactly that vector.
//!
//! Rules (audit these, nothing else builds a remote shell string):
//! - A word made only of `[A-Za-z0-9_@%+=:,./-]` stays bare — none of these characters is special
//!   to `sh` — except a word shaped like an assignment (`NAME=…`), which is quoted, because in command
//!   position `sh` would take it as a variable assignment instead of a word.
//! - Every other word is wrapped in single quotes, inside which `sh` treats every byte literally; a
//!   `'` inside it is written `'\''` (close, escaped quote, reopen).
//! - The empty word is `''`.
//! - A NUL byte cannot be passed through a C `argv` at all, so a word containing one is rejected with
//!   [`QuoteError::Nul`] (a `Result`, never a panic, never a silent truncation).
//!
//! Quoting keeps a word one word; it does not stop the *command* from reading a word that starts with
//! `-` as an option. Callers put `--` before positional arguments (`git clone -- <url> <dir>`).

/// A word that cannot be passed to a remote command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    /// Argument `index` contains a NUL byte, which no command can receive; remove it.
    #[error("argument {index} contains a NUL byte, which cannot be passed to a command")]
    Nul { index: usize },
    /// The argument vector is empty: there is no command to run.
    #[error("the command is empty (argv must name a program)")]
    Empty,
}

fn is_bare(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '@' | '%' | '+' | '=' | ':' | ',' | '.' | '/' | '-')
}

/// `NAME=…` with `NAME` a shell identifier: an assignment when it stands in command position.
fn looks_like_assignment(word: &str) -> bool {
    match word.split_once('=') {
        Some((name, _)) => {
            let mut chars = name.chars();
            chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        None => false,
    }
}

/// Quotes one word for POSIX `sh`. Errors only on a NUL byte (reported as argument 0).
pub fn quote(arg: &str) -> Result<String, QuoteError> {
    quote_at(arg, 0)
}

fn quote_at(arg: &str, index: usize) -> Result<String, QuoteError> {
    if arg.contains('\0') {
        return Err(QuoteError::Nul { index });
    }
    if arg.is_empty() {
        return Ok("''".to_string());
    }
    if arg.chars().all(is_bare) && !looks_like_assignment(arg) {
        return Ok(arg.to_string());
    }
    let mut out = String::with_capacity(arg.len() + 2);
    out.push('\'');
    for c in arg.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    Ok(out)
}

/// Quotes every word of `argv` and joins them with single spaces. An empty `argv` is an error.
pub fn command_line<S: AsRef<str>>(argv: &[S]) -> Result<String, QuoteError> {
    if argv.is_empty() {
        return Err(QuoteError::Empty);
    }
    let words = argv.iter().enumerate().map(|(i, a)| quote_at(a.as_ref(), i)).collect::<Result<Vec<_>, _>>()?;
    Ok(words.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn q(s: &str) -> String {
        quote(s).unwrap()
    }

    /// Runs `printf '%s\0' START <line>` in the local `/bin/sh` and returns the words after START.
    fn through_sh(line: &str) -> Vec<String> {
        let out = std::process::Command::new("/bin/sh").arg("-c").arg(format!("printf '%s\\0' START {line}")).output().expect("/bin/sh runs");
        assert!(out.status.success(), "sh failed for {line:?}: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).expect("utf-8 back");
        let mut words: Vec<String> = text.split('\0').map(str::to_string).collect();
        assert_eq!(words.pop().as_deref(), Some(""), "output ends with a NUL");
        assert_eq!(words.first().map(String::as_str), Some("START"));
        words.remove(0);
        words
    }

    #[test]
    fn hostile_words_are_quoted_exactly() {
        let cases: &[(&str, &str)] = &[
            ("$(id)", "'$(id)'"),
            ("`id`", "'`id`'"),
            ("a;b", "'a;b'"),
            ("a && b", "'a && b'"),
            ("a|b", "'a|b'"),
            ("a\nb", "'a\nb'"),
            ("it's", "'it'\\''s'"),
            ("'", "''\\'''"),
            ("\"x\"", "'\"x\"'"),
            ("back\\slash", "'back\\slash'"),
            ("*", "'*'"),
            ("~", "'~'"),
            ("~root", "'~root'"),
            ("-rf", "-rf"),
            ("--upload-pack=touch /tmp/x", "'--upload-pack=touch /tmp/x'"),
            ("--upload-pack=x", "--upload-pack=x"),
            ("ext::sh -c touch% /tmp/pwned", "'ext::sh -c touch% /tmp/pwned'"),
            ("PATH=/tmp", "'PATH=/tmp'"),
            ("héllo wörld ✓", "'héllo wörld ✓'"),
            ("", "''"),
            ("plain-word_1.2/x:y,z@h%+", "plain-word_1.2/x:y,z@h%+"),
            ("$HOME", "'$HOME'"),
            ("a b", "'a b'"),
            ("\t", "'\t'"),
            ("#comment", "'#comment'"),
            ("{a,b}", "'{a,b}'"),
            ("!x", "'!x'"),
            ("a>b", "'a>b'"),
        ];
        for (input, want) in cases {
            assert_eq!(&q(input), want, "quote({input:?})");
        }
    }

    #[test]
    fn hostile_words_round_trip_through_sh() {
        let long = "x'$(id)`;\n".repeat(5_000);
        let argv: Vec<String> = [
            "$(id)", "`id`", ";", "a && b", "|", "line1\nline2", "'", "\"", "\\", "*", "~", "-n", "--upload-pack=touch /tmp/x",
            "ext::sh -c touch% /tmp/pwned", "ünïcødé ✓ 日本", "", "PATH=/tmp", "'\\''", long.as_str(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(through_sh(&command_line(&argv).unwrap()), argv);
    }

    #[test]
    fn an_assignment_shaped_word_stays_a_command_name() {
        // Unquoted, `sh -c 'X=1 true'` would assign and succeed; quoted it looks for a command `X=1`.
        let line = command_line(&["X=1", "true"]).unwrap();
        let st = std::process::Command::new("/bin/sh").arg("-c").arg(&line).stderr(std::process::Stdio::null()).status().unwrap();
        assert_eq!(st.code(), Some(127), "{line}: X=1 must be looked up as a command");
    }

    #[test]
    fn nul_and_empty_are_refused() {
        assert_eq!(quote("a\0b"), Err(QuoteError::Nul { index: 0 }));
        assert_eq!(command_line(&["ok", "also", "bad\0"]), Err(QuoteError::Nul { index: 2 }));
        assert_eq!(command_line::<&str>(&[]), Err(QuoteError::Empty));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Whatever the words, the remote shell sees the same vector: same length, same bytes.
        #[test]
        fn argv_never_changes_shape(argv in proptest::collection::vec("[^\u{0}]{0,24}", 0..8)) {
            let words = if argv.is_empty() { String::new() } else { command_line(&argv).unwrap() };
            prop_assert_eq!(through_sh(&words), argv);
        }

        #[test]
        fn shell_heavy_words_never_change_shape(argv in proptest::collection::vec("[ -~\n\t'\"\\\\$`*?~#;&|<>(){}\\[\\]!=-]{0,16}", 1..6)) {
            prop_assert_eq!(through_sh(&command_line(&argv).unwrap()), argv);
        }
    }
}
