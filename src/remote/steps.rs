//! Which step a deployment is at, read from its log lines (each carries the step that wrote it), and how long each
//! step took, from the lines' own timestamps. Pure: fed lines, it says which steps started and finished.

/// Log `step` values that annotate the work rather than being a step of it (the request, release notes, pruning).
const NOTES: [&str; 8] = ["request", "deploy", "redeploy", "rollback", "env", "prune", "expiry", "cleanup"];

/// What a line changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Started(String),
    Finished { step: String, ms: u64, failed: bool },
}

#[derive(Debug, Clone)]
struct Current {
    step: String,
    first_ms: Option<i64>,
    last_ms: Option<i64>,
    error: bool,
}

#[derive(Debug, Default)]
pub struct Steps {
    current: Option<Current>,
    done: Vec<(String, u64)>,
}

impl Steps {
    /// A log line of `step`, written at `ts_ms` with `level`.
    pub fn line(&mut self, step: &str, ts_ms: Option<i64>, level: &str) -> Vec<Change> {
        if NOTES.contains(&step) || step.is_empty() {
            return vec![];
        }
        let mut out = vec![];
        match &mut self.current {
            Some(c) if c.step == step => {
                c.last_ms = ts_ms.or(c.last_ms);
                c.error |= level == "error";
                return out;
            }
            Some(_) => {
                let prev = self.current.take().expect("checked");
                let ms = span(prev.first_ms, ts_ms.or(prev.last_ms));
                self.done.push((prev.step.clone(), ms));
                out.push(Change::Finished { step: prev.step, ms, failed: prev.error });
            }
            None => {}
        }
        self.current = Some(Current { step: step.to_string(), first_ms: ts_ms, last_ms: ts_ms, error: level == "error" });
        out.push(Change::Started(step.to_string()));
        out
    }

    /// The work ended: the step under way finishes at its last line (`failed` marks it as the one that failed).
    pub fn end(&mut self, failed: bool) -> Option<Change> {
        let c = self.current.take()?;
        let ms = span(c.first_ms, c.last_ms);
        self.done.push((c.step.clone(), ms));
        Some(Change::Finished { step: c.step, ms, failed: failed || c.error })
    }

    /// The step under way.
    pub fn current(&self) -> Option<&str> {
        self.current.as_ref().map(|c| c.step.as_str())
    }

    /// The steps finished so far with their durations, in order.
    pub fn finished(&self) -> &[(String, u64)] {
        &self.done
    }
}

fn span(from: Option<i64>, to: Option<i64>) -> u64 {
    match (from, to) {
        (Some(a), Some(b)) if b >= a => (b - a) as u64,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_begin_and_end_with_their_lines_and_notes_do_not_interrupt() {
        let mut s = Steps::default();
        assert!(s.line("request", Some(0), "info").is_empty());
        assert_eq!(s.line("provision", Some(10), "info"), vec![Change::Started("provision".into())]);
        assert!(s.line("provision", Some(2_000), "info").is_empty());
        assert_eq!(
            s.line("boot", Some(2_310), "info"),
            vec![Change::Finished { step: "provision".into(), ms: 2_300, failed: false }, Change::Started("boot".into())]
        );
        s.line("fetch", Some(3_000), "info");
        assert!(s.line("deploy", Some(3_100), "info").is_empty(), "a release note is not a step");
        assert!(s.line("fetch", Some(3_200), "info").is_empty(), "fetch goes on");
        s.line("start", Some(4_000), "info");
        s.line("start", Some(7_000), "error");
        assert_eq!(s.end(false), Some(Change::Finished { step: "start".into(), ms: 3_000, failed: true }));
        let names: Vec<&str> = s.finished().iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["provision", "boot", "fetch", "start"]);
        assert_eq!(s.end(false), None);
    }
}
