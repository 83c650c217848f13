//! Which process reads a ring, and whether it is still alive: so that a copy of a receiver made
//! by `fork` can take over a ring whose reader is gone (issue 22, item 6).
//!
//! A ring has one reader, its *owner*, named in the control memfd by a token: a random number
//! this process draws once per fork generation ([`token`]). A receiver copied by `fork` reads
//! the socket alone while the owner lives; once the owner let go of the ring (its receiver was
//! dropped: token 0) or its process is gone (killed, or `exit` without dropping), the copy takes
//! the ring over, messages left in it included (`RingReader::inherited`).
//!
//! Whether the owner's process is gone is asked of a pidfd of it: each process that owns a ring
//! opens one of itself ([`token`]: one descriptor for the life of the process), and a forked
//! child inherits it, descriptor and all, so the child can ask about its parent, grandparent…
//! by the generation a ring was made in (each process's ancestry has one process per
//! generation). A pidfd names the process, not its pid, so a pid reused, or a process in
//! another pid namespace, cannot be mistaken for it. Where a pidfd cannot be had (Linux before
//! 5.3, or a seccomp filter that refuses `pidfd_open`), the owner's death goes unnoticed and a
//! copy takes over only a ring its owner let go.

use crate::sys::ForkLock;
use std::hash::{BuildHasher, Hasher};
use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags};
use rustix::process::{getpid, pidfd_open, PidfdFlags};

use super::fork;
use super::sys::timespec;

/// The token of a ring whose owner let go of it (its receiver was dropped).
pub(super) const LET_GO: u64 = 0;
/// The token of a ring whose receiver is on its way to another process (which writes its own
/// token on arrival): its owner is alive, elsewhere.
pub(super) const MOVING: u64 = u64::MAX;

/// This process's owner tokens and pidfds, one per fork generation of its ancestry that owned a
/// ring (a forked child inherits its parent's list, and the descriptors in it).
static OWNERS: ForkLock<Vec<Owner>> = ForkLock::new(Vec::new());

struct Owner {
    generation: u64,
    token: u64,
    /// A pidfd of the process of that generation (`None`: none could be had).
    process: Option<OwnedFd>,
}

/// This process's owner token (drawn, and a pidfd of this process opened, on first use in each
/// fork generation). Never [`LET_GO`] nor [`MOVING`].
pub(super) fn token() -> u64 {
    let generation = fork::generation();
    // A child forked while another thread held the list cannot take it: its rings get a token
    // no list names, so they are taken over only once let go (see the module's docs).
    let Some(mut owners) = OWNERS.lock() else { return draw(generation) };
    if let Some(owner) = owners.iter().find(|owner| owner.generation == generation) {
        return owner.token;
    }
    let token = draw(generation);
    let process = pidfd_open(getpid(), PidfdFlags::empty()).ok();
    owners.push(Owner { generation, token, process });
    token
}

/// Whether the ring's reader is gone, given the generation its reader was in when this process
/// (or an ancestor) forked and the token the control memfd names now: the token seen when it is
/// gone (a ring let go, or the process of that generation exited with its token still there).
pub(super) fn gone(generation: u64, seen: u64) -> Option<u64> {
    if seen == LET_GO {
        return Some(seen);
    }
    let owners = OWNERS.lock()?;
    let owner = owners.iter().find(|owner| owner.generation == generation && owner.token == seen)?;
    let process = owner.process.as_ref()?;
    // A pidfd is readable once its process has exited.
    let mut fds = [PollFd::new(process, PollFlags::IN)];
    let exited = poll(&mut fds, Some(&timespec(Duration::ZERO))).is_ok_and(|ready| ready > 0);
    exited.then_some(seen)
}

/// A random token for `generation`, never [`LET_GO`] nor [`MOVING`].
fn draw(generation: u64) -> u64 {
    loop {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(generation);
        hasher.write_u32(getpid().as_raw_nonzero().get() as u32);
        let token = hasher.finish();
        if token != LET_GO && token != MOVING {
            return token;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_this_processes_until_it_forks() {
        let token = token();
        assert_eq!(token, super::token());
        assert!(token != LET_GO && token != MOVING);
        // This process is alive, so a ring it owns is not gone; a ring let go is.
        assert_eq!(gone(fork::generation(), token), None);
        assert_eq!(gone(fork::generation(), LET_GO), Some(LET_GO));
        // A token no process of this ancestry drew is never taken for a dead owner's.
        assert_eq!(gone(fork::generation(), token ^ 1), None);
    }

    /// Review of 08012d3: a child forked while another thread of its parent held the list of
    /// owner tokens (`OWNERS`) gets a token no list names, and "its rings are taken over only
    /// once let go" — but `token()` draws a new token at every call there, so the receiver's
    /// `Drop` (compare-and-swap of `token()` for `LET_GO`) never matches the token its ring was
    /// given, and the ring is never let go: a copy forked from that child loses the message
    /// left in the ring. Fails on 08012d3 (the grandchild receives nothing).
    #[test]
    fn a_ring_let_go_in_a_child_forked_while_the_owner_list_was_held_is_taken_over() {
        // Without the list held at the fork, the copy gets the message (the takeover works).
        let_go_in_a_child(false);
        let_go_in_a_child(true);
    }

    fn let_go_in_a_child(held_at_fork: bool) {
        use crate::sys::{RecvError, Wait};
        use std::sync::atomic::Ordering;
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let _held = held_at_fork.then(|| OWNERS.lock().unwrap());
            locked_tx.send(()).unwrap();
            release_rx.recv().unwrap();
        });
        locked_rx.recv().unwrap();
        // SAFETY: the child runs the code below and leaves with `_exit`.
        let child = unsafe { libc::fork() };
        if child == 0 {
            let (tx, rx) = super::super::socket::channel().unwrap();
            for byte in 0..super::super::ring::RING_AFTER as u8 {
                assert!(tx.send(&[byte], vec![], vec![], Wait::Blocking).is_ok());
                assert_eq!(rx.recv(Wait::Blocking).unwrap().data, [byte]);
            }
            assert!(matches!(rx.recv(Wait::NonBlocking), Err(RecvError::Empty)));
            // The sender finds the ring after this one (it looks after each plain send).
            assert!(tx.send(b"found", vec![], vec![], Wait::Blocking).is_ok());
            assert_eq!(rx.recv(Wait::Blocking).unwrap().data, b"found");
            assert!(matches!(rx.recv(Wait::NonBlocking), Err(RecvError::Empty)));
            assert!(tx.send(b"left in the ring", vec![], vec![], Wait::Blocking).is_ok());
            let control = super::super::receiver::takeover_review::ring_control(&rx);
            let Some(control) = control else { unsafe { libc::_exit(4) } };
            // Bits 2..18 of the word: the head of the published chain; and nothing on the socket.
            let queued = rustix::io::ioctl_fionread(&rx).unwrap();
            if control.is_closed() || (control.word().load(Ordering::Acquire) >> 2) & 0xffff == 0 || queued != 0 {
                // The message did not go into the ring: the test would prove nothing.
                unsafe { libc::_exit(5) };
            }
            let (read_end, write_end) = rustix::pipe::pipe().unwrap();
            // SAFETY: the grandchild receives once and leaves with `_exit`.
            let copy = unsafe { libc::fork() };
            if copy == 0 {
                let mut byte = [0u8; 1];
                let _ = rustix::io::read(&read_end, &mut byte);
                let got = rx.recv(Wait::Timeout(Duration::from_secs(5)));
                let ok = matches!(&got, Ok(message) if message.data == b"left in the ring");
                // SAFETY: ends the forked grandchild at once.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
            }
            // The reader lets go, the message still in its ring.
            drop(rx);
            eprintln!("child: owner word after the drop: {:#x}", control.owner().load(Ordering::Acquire));
            let _ = rustix::io::write(&write_end, &[1]);
            let status = super::super::receiver::takeover_review::wait_child(copy, Duration::from_secs(30));
            let ok = status.is_some_and(|status| libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
            drop(tx);
            // SAFETY: ends the forked child at once.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        assert!(child > 0, "fork failed");
        release_tx.send(()).unwrap();
        holder.join().unwrap();
        let status = super::super::receiver::takeover_review::wait_child(child, Duration::from_secs(60));
        let status = status.expect("the child hung");
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the copy forked from the child did not get the message left in the ring its reader let go \
             (status {status}, list held at the fork: {held_at_fork})"
        );
    }
}
