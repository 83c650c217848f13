//! Threads the process waits for when it exits: a local channel's backlog still on its way into
//! the OS channel of a receiver that left the process (docs/local.md, "Leaving").
//!
//! The thread that sends such a backlog (`crossproc-backlog`) blocks while the receiver's
//! socket or pipe is full, until the receiver reads in its new process. A process that exited
//! meanwhile lost the rest of the backlog: the receiver was told `Disconnected` after the
//! messages that fit (review 8, with an 8 MB backlog), where ipc-channel's sender would have
//! blocked in its send until they were read. So `exit` waits for these threads first, as that
//! send would have waited; each ends once its backlog is sent, or at once when the receiver is
//! gone (its send fails).
//!
//! When the wait runs: on Linux in `exit` (returning from `main`, `std::process::exit`), from
//! the backend's `.fini_array` function (`linux/at_exit.rs`), before ring slots are given back;
//! on Windows when `main` returns (the C runtime's `atexit`; `std::process::exit` there calls
//! `ExitProcess` at once, which stops the threads). A process killed, or ended by `_exit` or a
//! panic that aborts, still loses what was left. A child made by `fork` has none of its
//! parent's threads, so it never waits for them.
//!
//! The wait has no deadline, as a blocked send has none: an exit waits for ever while the
//! receiver lives and does not read, and another thread's `exit` meanwhile waits for the first
//! (Rust lets one thread exit at a time); a signal's default action or `_exit` ends it. A
//! thread is needed only when the backlog is larger than the OS channel can take even with its
//! buffer raised for the move (`chan/leave.rs`): with the default budget, never.

use std::thread::JoinHandle;

use super::{fork_generation, ForkLock};

/// The threads to wait for, each with the process that started it: its fork generation and its
/// pid (where forks cannot be told apart, the generation never changes: review 10, F4).
static UNFINISHED: ForkLock<Vec<(Process, JoinHandle<()>)>> = ForkLock::new(Vec::new());

/// A process, as [`UNFINISHED`] tells one from another.
type Process = (u64, u32);

fn this_process() -> Process {
    (fork_generation(), std::process::id())
}

/// Makes `exit` wait for `thread` (see the module).
pub(crate) fn finish_before_exit(thread: JoinHandle<()>) {
    if cfg!(any(feature = "force-inprocess", not(any(target_os = "linux", windows)))) {
        // Without another process to send to, nothing is lost when this one ends.
        return;
    }
    #[cfg(all(windows, not(feature = "force-inprocess")))]
    {
        static HOOKED: std::sync::Once = std::sync::Once::new();
        HOOKED.call_once(|| super::backend::call_at_exit(wait_for_unfinished));
    }
    // Where a thread of the parent held the list's lock at the fork, this child cannot note the
    // thread: it runs all the same, but the child's exit does not wait for it.
    let Some(mut unfinished) = UNFINISHED.lock() else { return };
    let here = this_process();
    let kept = std::mem::take(&mut *unfinished);
    for (born, old) in kept {
        if born != here {
            // A parent's thread, which this process does not have: its handle is never used.
            std::mem::forget(old);
        } else if !old.is_finished() {
            unfinished.push((born, old));
        }
    }
    unfinished.push((here, thread));
}

/// Waits for every thread of this process noted by [`finish_before_exit`] (run by `exit`).
#[cfg_attr(any(feature = "force-inprocess", not(any(target_os = "linux", windows))), allow(dead_code))]
pub(crate) extern "C" fn wait_for_unfinished() {
    // No `std::thread::current()` here: `exit` has run this thread's thread-local destructors
    // already. (The threads waited for never call `exit`: they only send what was queued.)
    let here = this_process();
    // Until none is left: a thread waited for may start another (a receiver inside the backlog
    // it sends, with a backlog of its own: review 10, F2).
    loop {
        // Taken out, so that the lock is not held while the threads end.
        let unfinished = match UNFINISHED.lock() {
            Some(mut unfinished) => std::mem::take(&mut *unfinished),
            None => return,
        };
        if unfinished.is_empty() {
            return;
        }
        for (born, thread) in unfinished {
            if born != here {
                std::mem::forget(thread);
            } else {
                // A thread that panicked has nothing left to wait for.
                let _ = thread.join();
            }
        }
    }
}
