//! Log lines held back until their transaction is known to be recorded.
//!
//! The store's state changes ("Job … succeeded", "… will retry in 30s")
//! are decided inside a transaction, but they are only true once it has
//! committed into the database that is still at the home's path. Code
//! inside a transaction calls [`defer`]; `Store::write` writes the held
//! lines after a successful commit ([`flush`]) and drops them when the
//! transaction fails ([`discard`]). The buffer is per thread: a `Store` is
//! used by one thread at a time and writes are not nested.

use std::cell::RefCell;

struct Line {
    level: log::Level,
    target: &'static str,
    text: String,
}

thread_local! {
    static HELD: RefCell<Vec<Line>> = const { RefCell::new(Vec::new()) };
}

/// Holds a log line until the current transaction commits.
pub(crate) fn defer(level: log::Level, target: &'static str, text: String) {
    if log::log_enabled!(target: target, level) {
        HELD.with(|h| {
            h.borrow_mut().push(Line {
                level,
                target,
                text,
            })
        });
    }
}

/// Writes the held lines (the transaction committed).
pub(crate) fn flush() {
    let lines = HELD.with(|h| std::mem::take(&mut *h.borrow_mut()));
    for l in lines {
        log::log!(target: l.target, l.level, "{}", l.text);
    }
}

/// Drops the held lines (the transaction did not commit).
pub(crate) fn discard() {
    HELD.with(|h| h.borrow_mut().clear());
}

/// `log::info!`-style macro whose line waits for the commit.
macro_rules! after_commit {
    ($level:expr, $($arg:tt)+) => {
        $crate::store::deferred::defer($level, module_path!(), format!($($arg)+))
    };
}
pub(crate) use after_commit;
