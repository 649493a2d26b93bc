//! A pool of read connections shared by handler threads: each call takes a
//! connection for itself (a connection is `Send`, not `Sync`), at most
//! `cap` are open at once, and idle ones are kept for the next call.

use std::sync::{Arc, Condvar, Mutex};

use super::{Location, Store, StoreOptions};
use crate::error::Result;

#[derive(Debug, Default)]
struct State {
    idle: Vec<Store>,
    /// Connections taken and not yet given back.
    out: usize,
}

/// Read connections to one database, opened on demand, at most `cap`.
#[derive(Clone, Debug)]
pub struct Readers {
    location: Location,
    options: StoreOptions,
    cap: usize,
    /// The idle connections and the count of those in use; the condvar
    /// wakes a caller waiting for one when the cap is reached.
    state: Arc<(Mutex<State>, Condvar)>,
}

impl Readers {
    pub(crate) fn new(location: Location, options: StoreOptions, cap: usize) -> Readers {
        Readers {
            location,
            options,
            cap: cap.max(1),
            state: Arc::new((Mutex::new(State::default()), Condvar::new())),
        }
    }

    /// Readers for the database at `location` (when no store is open yet).
    pub fn at(location: &Location, options: &StoreOptions, cap: usize) -> Readers {
        Readers::new(location.clone(), options.clone(), cap)
    }

    /// Runs `f` with a connection of its own.
    pub fn with<T>(&self, f: impl FnOnce(&mut Store) -> Result<T>) -> Result<T> {
        let (lock, freed) = &*self.state;
        let taken = {
            let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
            while st.idle.is_empty() && st.out >= self.cap {
                st = freed.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            st.out += 1;
            st.idle.pop()
        };
        let store = match taken {
            Some(s) => Ok(s),
            None => Store::open(&self.location, self.options.clone()),
        };
        let (out, back) = match store {
            Ok(mut s) => {
                let out = f(&mut s);
                (out, Some(s))
            }
            Err(e) => (Err(e), None),
        };
        let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
        st.out -= 1;
        if let Some(s) = back {
            st.idle.push(s);
        }
        freed.notify_one();
        out
    }
}
