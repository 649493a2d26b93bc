//! Rendering for people (aligned tables) and scripts (JSON). The only place
//! in bundleq that writes to stdout or stderr.
#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the CLI's output module"
)]

use std::fmt::Display;

use serde::Serialize;

/// Prints `value` as pretty JSON.
pub fn json<T: Serialize + ?Sized>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("error: failed to render JSON: {e}"),
    }
}

/// Prints a line.
pub fn line(text: impl Display) {
    println!("{text}");
}

/// Prints one error line to stderr.
pub fn error_line(e: &dyn Display) {
    let text = e.to_string().replace('\n', " ");
    eprintln!("error: {text}");
}

/// Prints text (which may span lines) to stderr.
pub fn error_text(text: &str) {
    eprintln!("{text}");
}

/// Prints rows under a header, columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let render = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            out.push_str(cell);
            if i + 1 < widths.len() {
                out.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
            }
        }
        out.trim_end().to_owned()
    };
    println!("{}", render(&mut header.iter().copied()));
    for row in rows {
        println!("{}", render(&mut row.iter().map(String::as_str)));
    }
    if rows.is_empty() {
        println!("(none)");
    }
}

/// Prints `key: value` lines with the keys aligned.
pub fn fields(pairs: &[(&str, String)]) {
    let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in pairs {
        println!("{k:<w$}  {v}");
    }
}

/// An optional value as a table cell.
pub fn opt<T: Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "-".to_owned(), ToString::to_string)
}

/// A long text cut to `n` characters for a table cell.
pub fn cut(text: &str, n: usize) -> String {
    let one_line = text.replace('\n', " ");
    if one_line.chars().count() <= n {
        one_line
    } else {
        let mut s: String = one_line.chars().take(n.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}
