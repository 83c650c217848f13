//! Ring slots given back when the process exits without dropping its senders (issue 22, item 11),
//! after the threads that `exit` waits for (`crate::sys::finish_at_exit`).
//!
//! A sending process holds a slot of each ring it writes in until its last sender of that
//! channel is dropped. A process that ends with `exit` (`std::process::exit`, or returning from
//! `main` while senders live in statics or other threads) runs no destructor, so its slots
//! stayed taken: after 16 such processes a channel's ring was retired for good. Each sender that
//! takes a slot is noted here, weakly, and a function in the executable's `.fini_array`, which
//! `exit` runs, gives back the slots of those still alive whose state no thread holds at that
//! moment (one inside a send keeps its slot). A process killed, or ended with `_exit`, still
//! keeps its slots.

use std::sync::{Arc, Weak};

use super::sender::SenderRing;
use crate::sys::ForkLock;

/// The senders of this process that took a ring slot (some long dropped: pruned as it grows).
static TAKEN: ForkLock<Vec<Weak<SenderRing>>> = ForkLock::new(Vec::new());

/// Notes that `ring` took a slot, so that `exit` gives it back.
pub(super) fn note(ring: &Arc<SenderRing>) {
    let Some(mut taken) = TAKEN.lock() else { return };
    // Pruned whenever the list doubled: amortised constant work per note.
    if taken.len() >= 64 && taken.len().is_power_of_two() {
        taken.retain(|ring| ring.strong_count() > 0);
    }
    taken.push(Arc::downgrade(ring));
}

/// Waits for the threads that still send a backlog (`crate::sys::finish_at_exit`: they may
/// send through rings), then gives back the slots of the senders still alive (run by `exit`).
extern "C" fn give_back_at_exit() {
    crate::sys::finish_at_exit::wait_for_unfinished();
    // A lock another thread holds for good (a fork child's inherited one) is passed by; one
    // held for a moment by a thread of this process is waited for (review 5, R5-5).
    let Some(taken) = TAKEN.lock() else { return };
    for ring in taken.iter().filter_map(Weak::upgrade) {
        ring.give_back_slot();
    }
}

// `exit` runs the functions in `.fini_array` (after `atexit`'s), never `_exit` or a signal.
// SAFETY: the entry is a plain `extern "C" fn()` that takes no arguments, as the array holds;
// it runs once, while the process exits, and waits for no lock another thread could hold for
// long (the list's holders only add to it; a sender's state is only tried).
#[used]
#[link_section = ".fini_array"]
static GIVE_BACK_AT_EXIT: extern "C" fn() = give_back_at_exit;

#[cfg(test)]
mod tests {
    use super::super::ring::RING_AFTER;
    use super::super::socket::channel;
    use crate::sys::Wait;

    /// More processes than a ring has slots send through one channel's ring in turn, each
    /// ending with `exit` while its sender lives: they give their slots back, so the ring is
    /// still there for this process's sender after them. (Before, the 17th found every slot
    /// taken and retired the ring.)
    #[test]
    fn processes_that_exit_with_a_live_sender_give_their_slots_back() {
        let (tx, rx) = channel().unwrap();
        for byte in 0..RING_AFTER as u8 {
            assert!(tx.send(&[byte], vec![], vec![], Wait::Blocking).is_ok());
            assert_eq!(rx.recv(Wait::Blocking).unwrap().data, [byte]);
        }
        for child in 0..20u8 {
            // SAFETY: the child sends two messages and leaves with `exit` (which runs
            // `.fini_array`, the point of the test), never returning into the test harness.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                // The first takes the socket and finds the ring (a slot); the second the ring.
                let sent = (0..2).all(|_| tx.send(&[child], vec![], vec![], Wait::Blocking).is_ok());
                std::process::exit(if sent { 0 } else { 1 });
            }
            let mut status = 0;
            // SAFETY: waits for the child forked above.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child {child} failed");
            for _ in 0..2 {
                assert_eq!(rx.recv(Wait::Blocking).unwrap().data, [child]);
            }
        }
        assert!(tx.send(b"after them", vec![], vec![], Wait::Blocking).is_ok());
        assert_eq!(rx.recv(Wait::Blocking).unwrap().data, b"after them");
        assert!(tx.writes_in_ring(), "the ring was retired: slots of processes that exited stayed taken");
    }
}
