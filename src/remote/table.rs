//! A text table fitted to a width: columns as wide as their widest cell; when the whole is too wide, the least
//! important columns are left out first, then the shrinkable ones are cut (`…`). Pure; cells are cleaned text.

use super::terminal::{clean, fit};

/// One column: its title, whether its cells may be cut, and how readily it is left out (0 = never; higher goes first).
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub title: &'static str,
    pub shrink: bool,
    pub drop: u8,
}

const GAP: usize = 2;
/// A shrinkable column keeps at least this many characters.
const MIN_SHRUNK: usize = 12;

/// The table's lines (title line first); `width` `None` means unlimited.
pub fn render(columns: &[Column], rows: &[Vec<String>], width: Option<usize>) -> Vec<String> {
    let rows: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(|c| clean(c).into_owned()).collect()).collect();
    let natural: Vec<usize> = columns.iter().enumerate().map(|(i, c)| rows.iter().map(|r| r.get(i).map_or(0, |s| s.chars().count())).max().unwrap_or(0).max(c.title.len())).collect();
    let mut shown: Vec<usize> = (0..columns.len()).collect();
    let mut widths = natural.clone();
    let total = |shown: &[usize], widths: &[usize]| shown.iter().map(|&i| widths[i]).sum::<usize>() + GAP * shown.len().saturating_sub(1);
    if let Some(limit) = width {
        // Leave out columns, least important first, while too wide.
        let mut droppable: Vec<usize> = (0..columns.len()).filter(|&i| columns[i].drop > 0).collect();
        droppable.sort_by_key(|&i| std::cmp::Reverse(columns[i].drop));
        for i in droppable {
            if total(&shown, &widths) <= limit {
                break;
            }
            shown.retain(|&s| s != i);
        }
        // Then cut the shrinkable ones, widest first, down to their minimum.
        let mut over = total(&shown, &widths).saturating_sub(limit);
        while over > 0 {
            let Some(&i) = shown.iter().filter(|&&i| columns[i].shrink && widths[i] > MIN_SHRUNK.max(columns[i].title.len())).max_by_key(|&&i| widths[i]) else { break };
            let floor = MIN_SHRUNK.max(columns[i].title.len());
            let cut = over.min(widths[i] - floor);
            widths[i] -= cut;
            over -= cut;
        }
    }
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = shown
            .iter()
            .zip(cells)
            .enumerate()
            .map(|(n, (&i, cell))| {
                let cell = fit(cell, widths[i]);
                if n + 1 == shown.len() {
                    cell.into_owned()
                } else {
                    format!("{cell:<w$}", w = widths[i])
                }
            })
            .collect();
        parts.join(&" ".repeat(GAP)).trim_end().to_string()
    };
    let mut out = vec![line(shown.iter().map(|&i| columns[i].title).collect())];
    for r in &rows {
        out.push(line(shown.iter().map(|&i| r.get(i).map_or("", String::as_str)).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLS: [Column; 4] = [
        Column { title: "NAME", shrink: false, drop: 0 },
        Column { title: "STATUS", shrink: false, drop: 0 },
        Column { title: "URL", shrink: true, drop: 0 },
        Column { title: "AGE", shrink: false, drop: 1 },
    ];

    fn rows() -> Vec<Vec<String>> {
        vec![vec!["shop".into(), "running".into(), "http://10.0.20.51:8000/a-long-path".into(), "3m".into()]]
    }

    #[test]
    fn wide_enough_shows_everything() {
        assert_eq!(render(&COLS, &rows(), None), ["NAME  STATUS   URL                                 AGE", "shop  running  http://10.0.20.51:8000/a-long-path  3m"]);
    }

    #[test]
    fn narrow_drops_then_shrinks_and_never_exceeds_the_width() {
        let out = render(&COLS, &rows(), Some(40));
        assert_eq!(out, ["NAME  STATUS   URL", "shop  running  http://10.0.20.51:8000/a…"]);
        assert!(out.iter().all(|l| l.chars().count() <= 40), "{out:?}");
    }

    #[test]
    fn cells_are_cleaned() {
        let out = render(&COLS[..1], &[vec!["a\x1b[31mb".into()]], None);
        assert!(!out.concat().contains('\x1b'));
    }
}
