//! Transitions held back until their transaction is known to be recorded.
//!
//! A state change ("succeeded", "will retry in 30s") is decided inside a
//! transaction, but it is only true once that transaction has committed
//! into the database that is still at its path. Code inside a transaction
//! calls [`defer`]; `SqliteStore::write` hands the held transitions to the
//! store's journal after a successful commit ([`take`]) and drops them
//! when the transaction fails ([`discard`]). The buffer is per thread: a
//! store is used by one thread at a time and writes are not nested.

use std::cell::RefCell;

use super::convert::uuid_text;
use crate::error::Result;
use crate::store::{Transition, TransitionKind};

thread_local! {
    static HELD: RefCell<Vec<Transition>> = const { RefCell::new(Vec::new()) };
}

/// Holds a transition until the current transaction commits.
pub(crate) fn defer(t: Transition) {
    HELD.with(|h| h.borrow_mut().push(t));
}

/// Holds a transition of the job whose id is stored as `id`.
pub(crate) fn record(id: &str, kind: TransitionKind) -> Result<()> {
    let job_id = uuid_text(id, "read a job id")?;
    defer(Transition { job_id, kind });
    Ok(())
}

/// The held transitions (the transaction committed).
pub(crate) fn take() -> Vec<Transition> {
    HELD.with(|h| std::mem::take(&mut *h.borrow_mut()))
}

/// Drops the held transitions (the transaction did not commit).
pub(crate) fn discard() {
    HELD.with(|h| h.borrow_mut().clear());
}
