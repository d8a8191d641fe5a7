//! `pvedeploy list`: the deployments as a table fitted to the terminal (every column, uncut, in a pipe), or JSON.

use super::args;
use super::table::{render, Column};
use super::terminal::Terminal;
use super::wire::{millis, DeploymentJson};
use super::{AgentArgs, Remote, RemoteError};
use crate::core::deployment::Framework;
use crate::core::status::Status;

/// List deployments, newest first.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Only deployments in this status.
    #[arg(long, value_parser = args::status())]
    pub status: Option<Status>,
    /// Only deployments of this framework.
    #[arg(long, value_parser = args::framework())]
    pub framework: Option<Framework>,
    /// Print them as a JSON array.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub agent: AgentArgs,
}

const COLUMNS: [Column; 8] = [
    Column { title: "NAME", shrink: false, drop: 0 },
    Column { title: "STATUS", shrink: false, drop: 0 },
    Column { title: "FRAMEWORK", shrink: false, drop: 2 },
    Column { title: "TYPE", shrink: false, drop: 5 },
    Column { title: "NODE", shrink: false, drop: 4 },
    Column { title: "URL", shrink: true, drop: 0 },
    Column { title: "COMMIT", shrink: false, drop: 3 },
    Column { title: "AGE", shrink: false, drop: 6 },
];

/// How long ago `then` (RFC 3339) was, from `now_ms`: `42s`, `5m`, `3h`, `2d`.
pub fn age(then: &str, now_ms: i64) -> String {
    let Some(t) = millis(then) else { return String::new() };
    let s = (now_ms - t).max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

pub fn rows(items: &[DeploymentJson], now_ms: i64) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|d| {
            vec![
                d.name.clone(),
                d.status.clone(),
                d.framework.clone(),
                d.guest_type.clone(),
                d.proxmox_node.clone().unwrap_or_else(|| "-".into()),
                d.url.clone().unwrap_or_else(|| "-".into()),
                d.commit.as_deref().map(|c| c.chars().take(7).collect()).unwrap_or_else(|| "-".into()),
                age(&d.created_at, now_ms),
            ]
        })
        .collect()
}

pub async fn run(remote: &Remote, a: &ListArgs) -> Result<u8, RemoteError> {
    let mut query = vec![];
    if let Some(s) = a.status {
        query.push(("status", s.as_str()));
    }
    if let Some(f) = a.framework {
        query.push(("framework", f.as_str()));
    }
    let items = remote.deployments(&query).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&items).unwrap_or_default());
        return Ok(0);
    }
    if items.is_empty() {
        eprintln!("no deployments{}", if query.is_empty() { "" } else { " match" });
        return Ok(0);
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    for line in render(&COLUMNS, &rows(&items, now), Terminal::stdout().width) {
        println!("{line}");
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ages_read_like_a_person_says_them() {
        let now = super::millis("2026-12-05T12:00:00Z").unwrap();
        assert_eq!(super::age("2026-12-05T11:59:18Z", now), "42s");
        assert_eq!(super::age("2026-12-05T11:55:00Z", now), "5m");
        assert_eq!(super::age("2026-12-05T09:00:00Z", now), "3h");
        assert_eq!(super::age("2026-12-03T12:00:00Z", now), "2d");
    }
}
