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
//! for a ring (with room or without), opens it again (review 3, F2: before, it was opened once per process, and a process whose
//! first sender came at the limit never had one). Another thread of this process that opens a
//! descriptor at the very moment a look freed the reserve can still take that room first: the
//! look then fails as it would have without a reserve.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{memfd_create, MemfdFlags};

use crate::sys::ForkLock;

/// The descriptor in reserve (`None` until the first sender, or while it could not be opened).
static RESERVE: ForkLock<Option<OwnedFd>> = ForkLock::new(None);
/// Whether [`RESERVE`] holds the descriptor (so that a sender made needs no lock to know).
static PRESENT: AtomicBool = AtomicBool::new(false);

/// Opens the reserve if this process has none (a sender calls this when it is made).
pub(super) fn keep() {
    if PRESENT.load(Ordering::Acquire) {
        return;
    }
    if let Some(mut reserve) = RESERVE.lock() {
        if reserve.is_none() {
            *reserve = open();
            PRESENT.store(reserve.is_some(), Ordering::Release);
        }
    }
}

/// Runs `look` with one more descriptor free than this process has: the reserve's, which is
/// taken back after (`None`, and `look` not run, when there is no reserve to free).
pub(super) fn with_one_free<R>(look: impl FnOnce() -> R) -> Option<R> {
    let mut reserve = RESERVE.lock()?;
    let freed = reserve.take();
    let made_room = freed.is_some();
    drop(freed);
    let result = made_room.then(look);
    *reserve = open();
    PRESENT.store(reserve.is_some(), Ordering::Release);
    result
}

fn open() -> Option<OwnedFd> {
    memfd_create("crossproc-reserve", MemfdFlags::CLOEXEC).ok()
}
