//! A bounded pool of owned PKCS#11 sessions for one member. `Session` is `Send` but not
//! `Sync`, so every concurrent operation borrows a session of its own; the pool opens
//! sessions on demand up to its bound and makes callers wait (briefly) beyond it.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use cryptoki::context::Pkcs11;
use cryptoki::session::Session;
use cryptoki::slot::Slot;

use super::error::{Failure, HsmError};

/// How long a caller waits for a free session before trying another member.
const WAIT_FOR_SESSION: Duration = Duration::from_secs(5);

/// Sessions of one connection to a member.
pub struct Pool {
    state: Mutex<PoolState>,
    freed: Condvar,
    bound: usize,
}

struct PoolState {
    idle: Vec<Session>,
    open: usize,
    /// Callers blocked in [`Pool::acquire`]: only they need a wake-up, which costs a system
    /// call even when nobody waits.
    waiting: usize,
}

impl Pool {
    /// An empty pool that will hold at most `bound` sessions.
    pub fn new(bound: usize) -> Pool {
        Pool {
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
                waiting: 0,
            }),
            freed: Condvar::new(),
            bound,
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes an idle session, opens a new one, or waits for one to be released.
    pub fn acquire(&self, member: &str, pkcs11: &Pkcs11, slot: Slot) -> Result<Session, HsmError> {
        let mut state = self.lock();
        loop {
            if let Some(session) = state.idle.pop() {
                return Ok(session);
            }
            if state.open < self.bound {
                state.open += 1;
                drop(state);
                return pkcs11.open_rw_session(slot).map_err(|error| {
                    self.forget_one();
                    HsmError::pkcs11(member, error)
                });
            }
            state.waiting += 1;
            let (guard, wait) = self
                .freed
                .wait_timeout(state, WAIT_FOR_SESSION)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            state = guard;
            state.waiting -= 1;
            if wait.timed_out() && state.idle.is_empty() && state.open >= self.bound {
                return Err(HsmError::new(member, Failure::Busy));
            }
        }
    }

    /// Returns a session; a session that saw its member fail is closed instead of kept.
    pub fn release(&self, session: Session, reusable: bool) {
        if reusable {
            let mut state = self.lock();
            state.idle.push(session);
            self.wake_one(state);
        } else {
            drop(session);
            self.forget_one();
        }
    }

    fn forget_one(&self) {
        let mut state = self.lock();
        state.open -= 1;
        self.wake_one(state);
    }

    /// Unlocks the pool and wakes one waiting caller, if any. A waiter counts itself under the
    /// lock before it waits, so no wake-up it needs is skipped.
    fn wake_one(&self, state: MutexGuard<'_, PoolState>) {
        let waiting = state.waiting > 0;
        drop(state);
        if waiting {
            self.freed.notify_one();
        }
    }
}
