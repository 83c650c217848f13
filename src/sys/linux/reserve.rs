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
//! Another thread of this process that opens a descriptor at that very moment can take the room
//! first: the look then fails as it would have, and the reserve is lost until the next look at
//! the limit takes the room back (each look tries).

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use rustix::fs::{memfd_create, MemfdFlags};

use super::fork;

/// The descriptor in reserve (`None` until the first sender, or while another took its room).
static RESERVE: Mutex<Option<OwnedFd>> = Mutex::new(None);
/// Whether [`keep`] made the reserve already (it is made once, then only taken back).
static KEPT: AtomicBool = AtomicBool::new(false);

/// Opens the reserve, once per process (a sender calls this when it is made).
pub(super) fn keep() {
    if KEPT.load(Ordering::Relaxed) || KEPT.swap(true, Ordering::AcqRel) {
        return;
    }
    if let Some(mut reserve) = fork::lock_unless_orphaned(&RESERVE, 10_000) {
        if reserve.is_none() {
            *reserve = open();
        }
    }
}

/// Runs `look` with one more descriptor free than this process has: the reserve's, which is
/// taken back after (`None`, and `look` not run, when there is no reserve to free).
pub(super) fn with_one_free<R>(look: impl FnOnce() -> R) -> Option<R> {
    let mut reserve = fork::lock_unless_orphaned(&RESERVE, 10_000)?;
    let freed = reserve.take();
    let made_room = freed.is_some();
    drop(freed);
    let result = made_room.then(look);
    *reserve = open();
    result
}

fn open() -> Option<OwnedFd> {
    memfd_create("crossproc-reserve", MemfdFlags::CLOEXEC).ok()
}
