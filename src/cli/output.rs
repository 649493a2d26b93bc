//! Rendering for people (aligned tables) and scripts (JSON). The only place
//! in bundleq that writes to stdout or stderr.
//!
//! Two promises: text from bundles, handlers and file names never reaches
//! a terminal raw (control characters are shown escaped, see [`clean`]);
//! and writing never panics. A closed pipe (`bundleq jobs | head -1`) ends
//! the output quietly; any other write error (`> /dev/full`) is remembered
//! and reported by [`finish`] as one line with exit 1.

use std::borrow::Cow;
use std::fmt::Display;
use std::io::{self, IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

/// The first error writing stdout, if any; later writes are skipped.
static BROKEN: Mutex<Option<io::Error>> = Mutex::new(None);
/// `--json`: errors go to stderr as JSON objects too.
static JSON: AtomicBool = AtomicBool::new(false);

/// Sets the output mode for the whole run.
pub fn configure(json: bool) {
    JSON.store(json, Ordering::Relaxed);
}

/// True when stdout is a terminal (tables fit its width; progress shows).
pub fn stdout_is_terminal() -> bool {
    io::stdout().is_terminal()
}

/// True when stderr is a terminal (a progress bar may be drawn there).
pub fn stderr_is_terminal() -> bool {
    io::stderr().is_terminal()
}

/// The width tables must fit: the terminal's, or 80 when stdout is not a
/// terminal.
pub fn terminal_width() -> usize {
    if stdout_is_terminal()
        && let Ok(ws) = rustix::termios::tcgetwinsize(io::stdout())
        && ws.ws_col >= 20
    {
        return usize::from(ws.ws_col);
    }
    80
}

fn broken() -> bool {
    BROKEN.lock().map(|b| b.is_some()).unwrap_or(true)
}

fn write_stdout(text: &str) {
    if broken() {
        return;
    }
    let mut out = io::stdout().lock();
    if let Err(e) = out
        .write_all(text.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        && let Ok(mut b) = BROKEN.lock()
    {
        b.get_or_insert(e);
    }
}

fn write_stderr(text: &str) {
    let mut err = io::stderr().lock();
    let _ = err
        .write_all(text.as_bytes())
        .and_then(|()| err.write_all(b"\n"));
}

/// Writes bytes to stdout as they are (a completion script, a man page,
/// terminal control for `status --watch`).
pub fn raw(bytes: &[u8]) {
    if broken() {
        return;
    }
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|()| out.flush())
        && let Ok(mut b) = BROKEN.lock()
    {
        b.get_or_insert(e);
    }
}

/// True once stdout can take no more (a closed pipe): loops can stop.
pub fn finished() -> bool {
    broken()
}

/// Flushes stdout and turns a write error into the exit code: `code` as it
/// was for success or a closed pipe (quiet, as ripgrep does), else 1 with
/// one line on stderr.
pub fn finish(code: u8) -> u8 {
    if !broken() {
        let flushed = io::stdout().lock().flush();
        if let Err(e) = flushed
            && let Ok(mut b) = BROKEN.lock()
        {
            b.get_or_insert(e);
        }
    }
    let error = BROKEN.lock().ok().and_then(|mut b| b.take());
    match error {
        None => code,
        Some(e) if e.kind() == io::ErrorKind::BrokenPipe => code,
        Some(e) => {
            write_stderr(&format!("error: failed to write the output: {e}"));
            super::EXIT_ERROR
        }
    }
}

/// `text` with every control character (C0, DEL, C1) and every bidi
/// override shown as an escape (`\e`, `\x07`, `\r`, `\u{202e}`…), so that
/// text from a bundle, a handler or a file name cannot move the cursor,
/// retitle the terminal or hide what follows it.
pub fn clean(text: &str) -> Cow<'_, str> {
    let bad = |c: char| {
        c.is_control()
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
    };
    if !text.chars().any(bad) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{1b}' => out.push_str("\\e"),
            c if (c as u32) < 0x100 && bad(c) => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if bad(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Prints `value` as pretty JSON (JSON escapes control characters itself).
pub fn json<T: Serialize + ?Sized>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => write_stdout(&text),
        Err(e) => write_stderr(&format!("error: failed to render JSON: {e}")),
    }
}

/// Prints `value` as one line of JSON (JSON Lines, for streams).
pub fn json_line<T: Serialize + ?Sized>(value: &T) {
    match serde_json::to_string(value) {
        Ok(text) => write_stdout(&text),
        Err(e) => write_stderr(&format!("error: failed to render JSON: {e}")),
    }
}

/// Prints a line (escaped).
pub fn line(text: impl Display) {
    write_stdout(&clean(&text.to_string()));
}

/// Prints one error line to stderr (escaped: it may quote a file name);
/// with `--json`, a JSON object `{"error": "..."}`.
pub fn error_line(e: &dyn Display) {
    if JSON.load(Ordering::Relaxed) {
        let text = serde_json::json!({ "error": e.to_string() }).to_string();
        write_stderr(&text);
    } else {
        write_stderr(&format!("error: {}", clean(&e.to_string())));
    }
}

/// Prints a note to stderr (escaped), unless `--json`.
pub fn note(text: &str) {
    if !JSON.load(Ordering::Relaxed) {
        write_stderr(&clean(text));
    }
}

/// Prints lines to stderr, each escaped.
pub fn error_text(text: &str) {
    let lines: Vec<Cow<'_, str>> = text.lines().map(clean).collect();
    write_stderr(&lines.join("\n"));
}

/// Prints rows under a header, columns padded to their widest cell; every
/// cell escaped. With `fit`, the table is made to fit that many columns by
/// cutting cells: the last column first, then the ones before it, never
/// the first (ids) and never below 8 characters.
pub fn table(header: &[&str], rows: &[Vec<String>], fit: Option<usize>) {
    let mut rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| clean(c).into_owned()).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    if let Some(limit) = fit {
        fit_widths(header, &mut widths, limit);
        for row in &mut rows {
            for (cell, w) in row.iter_mut().zip(&widths) {
                if cell.chars().count() > *w {
                    *cell = cut(cell, *w);
                }
            }
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
    write_stdout(&render(&mut header.iter().copied()));
    for row in &rows {
        write_stdout(&render(&mut row.iter().map(String::as_str)));
    }
    if rows.is_empty() {
        write_stdout("(none)");
    }
}

/// Narrows column widths until the table fits `limit` columns: always the
/// widest column that can give, never the first (ids), never below 8
/// characters or its header.
fn fit_widths(header: &[&str], widths: &mut [usize], limit: usize) {
    let floor = |c: usize| 8.max(header[c].chars().count());
    loop {
        let total = widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1);
        let excess = total.saturating_sub(limit);
        if excess == 0 {
            return;
        }
        let mut cuttable: Vec<usize> = (1..widths.len())
            .filter(|&c| widths[c] > floor(c))
            .collect();
        cuttable.sort_by_key(|&c| std::cmp::Reverse(widths[c]));
        let Some(&widest) = cuttable.first() else {
            return;
        };
        let next = cuttable.get(1).map_or(0, |&c| widths[c]);
        let target = widths[widest]
            .saturating_sub(excess)
            .max(next)
            .max(floor(widest))
            .min(widths[widest] - 1);
        widths[widest] = target;
    }
}

/// Prints `key: value` lines with the keys aligned; values escaped, and
/// cut to fit `fit` columns when given.
pub fn fields(pairs: &[(&str, String)], fit: Option<usize>) {
    let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in pairs {
        let v = clean(v);
        let v = match fit {
            Some(limit) => cut(&v, limit.saturating_sub(w + 2).max(8)),
            None => v.into_owned(),
        };
        write_stdout(&format!("{k:<w$}  {v}"));
    }
}

/// An optional value as a table cell.
pub fn opt<T: Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "-".to_owned(), ToString::to_string)
}

/// A long text cut to `n` characters for a table cell (escaped first, so
/// the cut never splits an escape from what it stands for).
pub fn cut(text: &str, n: usize) -> String {
    let one_line = clean(text).into_owned();
    if one_line.chars().count() <= n {
        one_line
    } else {
        let mut s: String = one_line.chars().take(n.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::clean;

    #[test]
    fn control_characters_and_bidi_overrides_are_escaped() {
        assert_eq!(clean("plain text, ünïcode"), "plain text, ünïcode");
        assert_eq!(
            clean("a\u{1b}[2Jb\u{7}c\rd\u{9b}e\u{202e}f\u{7f}"),
            "a\\e[2Jb\\x07c\\rd\\x9be\\u{202e}f\\x7f"
        );
    }
}
