//! A number found once and kept, without a lock.
//!
//! `fork` copies only the calling thread: a `OnceLock` that another thread was filling at that
//! moment stays "being filled" in the child for ever, and the child's first use waits for it
//! for ever (review 8, R8-2, and review 9, R9-1: 5 of 200 fresh processes had a forked child
//! hang in `ipc::receive_spin()`, whose CPU count is found once). A [`FoundOnce`] lets every
//! thread that finds it empty find the number itself and keeps whichever is stored first, so a
//! child forked meanwhile finds it again.

use std::sync::atomic::{AtomicUsize, Ordering};

/// A number found at first use (see the module).
pub(crate) struct FoundOnce(AtomicUsize);

impl FoundOnce {
    pub const fn new() -> FoundOnce {
        FoundOnce(AtomicUsize::new(0))
    }

    /// The number, found with `find` if nobody has stored it yet (`usize::MAX` is kept as
    /// `usize::MAX - 1`).
    pub fn get(&self, find: impl FnOnce() -> usize) -> usize {
        match self.0.load(Ordering::Relaxed) {
            0 => {
                let found = find().min(usize::MAX - 1);
                // A concurrent finder that stored first wins; both looked at the same machine.
                match self.0.compare_exchange(0, found + 1, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => found,
                    Err(stored) => stored - 1,
                }
            }
            stored => stored - 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::FoundOnce;

    #[test]
    fn the_first_number_found_is_kept() {
        let once = FoundOnce::new();
        assert_eq!(once.get(|| 7), 7);
        assert_eq!(once.get(|| 9), 7);
        let zero = FoundOnce::new();
        assert_eq!(zero.get(|| 0), 0);
        assert_eq!(zero.get(|| 5), 0);
        assert_eq!(FoundOnce::new().get(|| usize::MAX), usize::MAX - 1);
    }
}
