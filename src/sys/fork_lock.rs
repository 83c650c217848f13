//! A lock that a child made by `fork` can tell is orphaned.
//!
//! `fork` copies only the calling thread: a lock another thread held at that moment stays held
//! in the child for ever, and a child that waits for it hangs. Giving up after a number of tries
//! instead (as the crate once did) also gives up under ordinary contention, on a busy machine,
//! and what the caller then skips (a ring's place holder, a slot given back at exit) breaks
//! order or leaks (review 5, F8). A [`ForkLock`] records the fork generation of the thread that
//! took it last: a thread that finds it held by its own generation waits, as for any mutex; one
//! that finds it held by an earlier generation knows that the holder is not in this process.
//!
//! Where forks cannot be told apart (`crate::sys::fork_detectable` is false: no wipe-on-fork
//! page, or no Linux backend), the generation never changes, and the lock falls back to a
//! bounded number of tries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};

use super::{fork_detectable, fork_generation};

/// Tries (a `yield` between them) before a lock held by an earlier generation, or one held
/// where forks cannot be told apart, is taken for orphaned. The same generation's holder may
/// have taken the lock and not yet recorded its generation: a few instructions, so this bounds
/// only a thread preempted in between, right after a fork.
pub(crate) const ORPHAN_TRIES: usize = 10_000;

/// A mutex for short critical sections that never waits for ever in a child made by `fork`
/// while another thread held it. A poisoned lock is taken as it is (the sections keep their
/// data consistent at every step).
pub(crate) struct ForkLock<T> {
    /// The fork generation of the thread that took the lock last.
    holder: AtomicU64,
    mutex: Mutex<T>,
}

impl<T> ForkLock<T> {
    pub const fn new(value: T) -> Self {
        ForkLock { holder: AtomicU64::new(0), mutex: Mutex::new(value) }
    }

    /// The lock, waiting for a holder of this process; `None` only when a thread of a parent
    /// process held it at the `fork` that made this one.
    pub fn lock(&self) -> Option<MutexGuard<'_, T>> {
        let generation = fork_generation();
        if let Some(guard) = self.try_lock_in(generation) {
            return Some(guard);
        }
        let detectable = fork_detectable();
        for _ in 0..ORPHAN_TRIES {
            if detectable && self.holder.load(Ordering::Acquire) == generation {
                let guard = self.mutex.lock().unwrap_or_else(PoisonError::into_inner);
                return Some(self.taken(guard, generation));
            }
            std::thread::yield_now();
            if let Some(guard) = self.try_lock_in(generation) {
                return Some(guard);
            }
        }
        None
    }

    /// The lock, for a caller that knows it was made in this fork generation (so that no
    /// holder can be missing): waits as a mutex does.
    pub fn lock_here(&self) -> MutexGuard<'_, T> {
        let guard = self.mutex.lock().unwrap_or_else(PoisonError::into_inner);
        self.taken(guard, fork_generation())
    }

    /// The lock if it is free.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        self.try_lock_in(fork_generation())
    }

    fn try_lock_in(&self, generation: u64) -> Option<MutexGuard<'_, T>> {
        match self.mutex.try_lock() {
            Ok(guard) => Some(self.taken(guard, generation)),
            Err(TryLockError::Poisoned(poisoned)) => Some(self.taken(poisoned.into_inner(), generation)),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    fn taken<'a>(&self, guard: MutexGuard<'a, T>, generation: u64) -> MutexGuard<'a, T> {
        // Written only when it changes (once per fork generation): a store on every lock would
        // be one more write to a line that other threads contend for.
        if self.holder.load(Ordering::Relaxed) != generation {
            self.holder.store(generation, Ordering::Release);
        }
        guard
    }
}
