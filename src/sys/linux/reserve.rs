//! One descriptor this process keeps in reserve for the look that must find a channel's ring
//! after a plain send (issue 22, item 12).
//!
//! A sender that knew of no ring sends a plain packet, then looks for the ring's control memfd
//! and, if the ring is there, publishes a place holder's marker before its send returns: that
//! keeps a later ring message from overtaking the packet (`ring/mod.rs`). The look installs a
//! copy of the memfd, which a process at its descriptor limit has no room for; without the
//! mapping no marker can be published, and the order would be lost. So each process that sends
//! holds one descriptor in reserve (an empty memfd), opened with its first sender, and a look
//! that finds no room closes it, looks again in the room it made, and takes it back after.
//!
//! Where the reserve could not be opened (the process was at its limit when a sender was made,
//! or another thread took the room a look had freed), each later sender made, and each look
//! for a ring (with room or without), opens it again (review 3, F2: before, it was opened once
//! per process, and a process whose first sender came at the limit never had one). Another
//! thread of this process that opens a descriptor at the very moment a look freed the reserve
//! can still take that room first: the look then fails as it would have without a reserve.
//!
//! The reserve is one atomic word, not a lock: a look lends it (marking the word with its fork
//! generation), and a child made by `fork` while a thread of its parent had it lent takes it
//! over, where a lock held at the fork would have left the child without a reserve for good
//! (review 5, F8). A child forked in the few instructions between the lend's mark and the
//! descriptor's close, or between a new reserve's open and its store, keeps one descriptor it
//! does not know of (the word cannot tell it the number safely): a leak of one, never a close
//! of another's descriptor.

use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{memfd_create, MemfdFlags};

use super::fork;

/// The reserve (see [`Word`]).
static RESERVE: AtomicU64 = AtomicU64::new(Word::NONE);

/// Opens the reserve if this process has none (a sender, and a look with room, call this).
pub(super) fn keep() {
    if matches!(Word::decode(RESERVE.load(Ordering::Acquire)), Word::Present(_)) {
        return;
    }
    // Not waiting: a reserve lent by another thread of this process comes back with it.
    drop(Lent::take(false));
}

/// Runs `look` with one more descriptor free than this process has: the reserve's, which is
/// taken back after (`None`, and `look` not run, when there is no reserve to free, or when a
/// process that cannot tell its forks apart finds it lent for 10,000 tries).
pub(super) fn with_one_free<R>(look: impl FnOnce() -> R) -> Option<R> {
    let mut lent = Lent::take(true)?;
    let made_room = lent.free();
    made_room.then(look)
}

/// What [`RESERVE`] holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Word {
    /// No reserve (none opened yet, or it could not be).
    None,
    /// The reserve's descriptor, which only the thread that lends it may take out.
    Present(RawFd),
    /// Lent to a look of fork generation `by` (its low 31 bits); `fd` is the reserve while the
    /// look has not closed it yet.
    Lent { by: u32, fd: Option<RawFd> },
}

impl Word {
    const NONE: u64 = 0;
    const LENT: u64 = 1 << 63;
    const NO_FD: u64 = u32::MAX as u64;

    fn encode(self) -> u64 {
        match self {
            Word::None => Word::NONE,
            Word::Present(fd) => fd as u32 as u64 + 1,
            Word::Lent { by, fd } => {
                Word::LENT | (u64::from(by & 0x7fff_ffff) << 32) | fd.map_or(Word::NO_FD, |fd| fd as u32 as u64)
            }
        }
    }

    fn decode(word: u64) -> Word {
        if word == Word::NONE {
            Word::None
        } else if word & Word::LENT == 0 {
            Word::Present((word - 1) as u32 as RawFd)
        } else {
            let low = word & 0xffff_ffff;
            let fd = (low != Word::NO_FD).then_some(low as u32 as RawFd);
            Word::Lent { by: ((word >> 32) & 0x7fff_ffff) as u32, fd }
        }
    }
}

/// The fork generation as the word keeps it.
fn this_generation() -> u32 {
    (fork::generation() & 0x7fff_ffff) as u32
}

/// The reserve, lent to this thread: its drop puts back the descriptor, or a new one.
struct Lent {
    generation: u32,
    fd: Option<OwnedFd>,
}

impl Lent {
    /// Lends the reserve (also when there is none: the lend is then the right to open one).
    /// A reserve lent by a thread of this process is waited for if `wait`; one lent at the fork
    /// that made this process (by an earlier generation: generations grow from parent to child)
    /// is taken over. Where forks cannot be told apart, a lent reserve is waited for a bounded
    /// number of tries (it may be a parent's, whose lend never ends here), then `None`.
    fn take(wait: bool) -> Option<Lent> {
        let mut tries = 0;
        loop {
            let generation = this_generation();
            let word = RESERVE.load(Ordering::Acquire);
            let fd = match Word::decode(word) {
                Word::None => None,
                Word::Present(fd) => Some(fd),
                Word::Lent { by, .. } if by >= generation || !fork::detectable() => {
                    tries += 1;
                    if !wait || (!fork::detectable() && tries > crate::sys::fork_lock::ORPHAN_TRIES) {
                        return None;
                    }
                    // Another thread's look: a close, a peek and an open.
                    std::thread::yield_now();
                    continue;
                }
                // A parent's thread had it lent when it forked this process: its descriptor, if
                // not closed yet, is this process's copy of the reserve.
                Word::Lent { fd, .. } => fd,
            };
            let lent = Word::Lent { by: generation, fd }.encode();
            if RESERVE.compare_exchange(word, lent, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                // SAFETY: the word held this descriptor, stored there by a `Lent`'s drop from an
                // `OwnedFd` it owned; the exchange made this thread the only one that may take
                // it out, and no other code of this process knows its number.
                let fd = fd.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
                return Some(Lent { generation, fd });
            }
        }
    }

    /// Closes the reserve, which makes room for one descriptor (`false`: there was none).
    fn free(&mut self) -> bool {
        let Some(fd) = self.fd.take() else {
            return false;
        };
        // Marked closed before the close: a child forked in between then leaks the copy, where
        // marked after, it could close a descriptor another thread opened in the room.
        RESERVE.store(Word::Lent { by: self.generation, fd: None }.encode(), Ordering::Release);
        drop(fd);
        true
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        let fd = self.fd.take().or_else(open);
        let word = fd.map_or(Word::None, |fd| Word::Present(fd.into_raw_fd()));
        RESERVE.store(word.encode(), Ordering::Release);
    }
}

fn open() -> Option<OwnedFd> {
    memfd_create("crossproc-reserve", MemfdFlags::CLOEXEC).ok()
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_word_keeps_what_it_is_given() {
        for word in [
            Word::None,
            Word::Present(0),
            Word::Present(1_048_575),
            Word::Lent { by: 0, fd: None },
            Word::Lent { by: 3, fd: Some(0) },
            Word::Lent { by: 0x7fff_ffff, fd: Some(i32::MAX - 1) },
        ] {
            assert_eq!(Word::decode(word.encode()), word);
        }
    }

    /// A look of this process that finds the reserve lent waits for it and gets its room,
    /// where it once took a lock for that: a look does not fail because another ran.
    #[test]
    fn a_look_waits_for_a_reserve_another_thread_has_lent() {
        keep();
        let lent = Lent::take(true).expect("the reserve");
        let (done_tx, done_rx) = mpsc::channel();
        let looker = std::thread::spawn(move || done_tx.send(with_one_free(|| 7)).unwrap());
        assert!(done_rx.recv_timeout(Duration::from_millis(50)).is_err(), "the look did not wait");
        drop(lent);
        assert_eq!(done_rx.recv().unwrap(), Some(7));
        looker.join().unwrap();
    }

    /// A child forked while a thread of its parent had the reserve lent (before and after the
    /// lend closed it) takes it over: its look gets the room, and it has a reserve after.
    #[test]
    fn a_child_forked_while_the_reserve_was_lent_takes_it_over() {
        if !fork::detectable() {
            return;
        }
        for close_first in [false, true] {
            keep();
            let mut lent = Lent::take(true).expect("the reserve");
            if close_first {
                assert!(lent.free());
            }
            // SAFETY: the child only runs this module's code on its own memory, and leaves
            // with `_exit`.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // The first look gets the room of the reserve the parent had not closed yet
                // (where it had, that room is already free here, and a new reserve is opened
                // in it); the next look has a reserve of its own.
                let first = with_one_free(|| ()).is_some() != close_first;
                let next = with_one_free(|| ()).is_some();
                // SAFETY: ends the forked child at once.
                unsafe { libc::_exit(i32::from(!first) + 2 * i32::from(!next)) };
            }
            assert!(pid > 0, "fork failed");
            let status = super::super::receiver::takeover_review::wait_child(pid, Duration::from_secs(20));
            drop(lent);
            let status = status.expect("the child waited for the parent's lend");
            assert!(libc::WIFEXITED(status), "child status {status}");
            assert_eq!(libc::WEXITSTATUS(status), 0, "1: the first look, 2: the next, went without the reserve");
        }
    }
}
