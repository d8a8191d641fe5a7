//! `terraform fmt`'s alignment: in each run of consecutive one-line `name = value` lines, the `=` signs line up
//! one space after the longest name (a blank line, a comment, a block or a multi-line value ends the run).

/// Realigns `=` in every run of one-line attributes of `text`; other lines are kept as they are.
pub fn align(text: &str) -> String {
    let lines: Vec<&str> = text.split('\n').collect();
    let parsed: Vec<Option<(&str, &str, &str)>> = lines.iter().map(|l| assignment(l)).collect();
    let mut out = Vec::with_capacity(lines.len());
    let mut i = 0;
    while i < lines.len() {
        if parsed[i].is_none() {
            out.push(lines[i].to_owned());
            i += 1;
            continue;
        }
        let end = (i..lines.len()).find(|&j| parsed[j].is_none()).unwrap_or(lines.len());
        let width = parsed[i..end].iter().flatten().map(|(indent, name, _)| indent.len() + name.len()).max().unwrap_or(0);
        for (indent, name, value) in parsed[i..end].iter().flatten() {
            let pad = width - indent.len() - name.len();
            out.push(format!("{indent}{name}{} = {value}", " ".repeat(pad)));
        }
        i = end;
    }
    out.join("\n")
}

/// `(indent, name, value)` of a line `name = value` whose value opens and closes on the same line.
fn assignment(line: &str) -> Option<(&str, &str, &str)> {
    let body = line.trim_start();
    let indent = &line[..line.len() - body.len()];
    let name_len = body.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))?;
    if name_len == 0 || body.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let (name, rest) = body.split_at(name_len);
    let value = rest.trim_start().strip_prefix('=')?;
    if value.starts_with('=') {
        return None;
    }
    let value = value.trim_start();
    (brackets(value) == 0 && !value.is_empty()).then_some((indent, name, value))
}

/// Net count of opening minus closing brackets outside string literals.
fn brackets(value: &str) -> i32 {
    let (mut depth, mut in_string, mut escaped) = (0, false, false);
    for c in value.chars() {
        match (in_string, c) {
            (true, _) if escaped => escaped = false,
            (true, '\\') => escaped = true,
            (true, '"') => in_string = false,
            (true, _) => {}
            (false, '"') => in_string = true,
            (false, '{' | '[' | '(') => depth += 1,
            (false, '}' | ']' | ')') => depth -= 1,
            _ => {}
        }
    }
    depth
}

#[cfg(test)]
mod tests {
    use super::align;

    #[test]
    fn runs_align_and_blocks_break_them() {
        let text = "a = 1\nlonger = \"x = {\"\nb {\n  c = [1, 2]\n  dd = {\n    e = 1\n  }\n}\n\nz = 2\n";
        let want = "a      = 1\nlonger = \"x = {\"\nb {\n  c = [1, 2]\n  dd = {\n    e = 1\n  }\n}\n\nz = 2\n";
        assert_eq!(align(text), want);
        assert_eq!(align(want), want, "aligning is idempotent");
    }
}
