//! Handing a channel end to a child process through an inherited descriptor.
//!
//! The end is a descriptor that stays close-on-exec in the parent; only in the forked child,
//! between `fork` and `exec`, is close-on-exec cleared on that one descriptor, so no other
//! descriptor leaks into the child and no concurrent spawn elsewhere in the parent inherits it.
//! The child learns the descriptor's number and its inode from an environment variable and
//! checks both before it adopts it, so a stale variable inherited by a grandchild cannot make
//! it adopt an unrelated descriptor. The channel is made for the child just before, so it has
//! no ring yet (see `ring/mod.rs`): one descriptor is the whole end.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::io::{fcntl_getfd, fcntl_setfd, FdFlags};
use rustix::net::{sockopt::socket_type, SocketType};

use super::socket::OsOpaqueIpcChannel;
use crate::sys::OsIpcChannel;

/// The environment variable that tells a child which descriptor is its channel: `FD:INODE`.
const INHERITED_VAR: &str = "CROSSPROC_INHERITED_CHANNEL";

static TAKEN: AtomicBool = AtomicBool::new(false);

/// Spawns `command` with `end` inherited by the child, then closes the parent's copy of `end`.
pub(crate) fn spawn_with_inherited(command: &mut Command, end: OsIpcChannel) -> io::Result<Child> {
    let end = end.into_fd()?;
    let inode = rustix::fs::fstat(&end)?.st_ino;
    let raw: RawFd = end.as_raw_fd();
    command.env(INHERITED_VAR, format!("{raw}:{inode}"));
    // The closure runs in the child between fork and exec, where only async-signal-safe work is
    // allowed: it makes one `fcntl` system call on a descriptor number (no allocation, no
    // locks). `end` is open in the parent until `spawn` returns, so the number is valid.
    // SAFETY: the closure is async-signal-safe and its descriptor number is valid.
    unsafe {
        command.pre_exec(move || {
            // SAFETY: `raw` is open in this (forked) process, as explained above.
            fcntl_setfd(BorrowedFd::borrow_raw(raw), FdFlags::empty())?;
            Ok(())
        });
    }
    let child = command.spawn();
    drop(end);
    child
}

/// Adopts the channel end this process inherited from [`spawn_with_inherited`]. Only the first
/// call succeeds.
pub(crate) fn take_inherited() -> io::Result<OsOpaqueIpcChannel> {
    let not_found = || io::Error::new(io::ErrorKind::NotFound, "this process did not inherit a crossproc channel");
    let value = std::env::var(INHERITED_VAR).map_err(|_| not_found())?;
    let mut fields = value.split(':');
    let raw: RawFd = fields.next().and_then(|raw| raw.parse().ok()).ok_or_else(not_found)?;
    let inode: u64 = fields.next().and_then(|inode| inode.parse().ok()).ok_or_else(not_found)?;
    if raw < 0 || fields.next().is_some() || TAKEN.swap(true, Ordering::SeqCst) {
        return Err(not_found());
    }
    // Check the descriptor before owning it: open (`fcntl(F_GETFD)` on a number that is not
    // fails with EBADF), then a SOCK_SEQPACKET socket with the same inode. Nothing is written.
    // SAFETY: probed with `fcntl` first; used further only once it is known to be open.
    let probe = unsafe { BorrowedFd::borrow_raw(raw) };
    let matches = fcntl_getfd(probe).is_ok()
        && socket_type(probe) == Ok(SocketType::SEQPACKET)
        && rustix::fs::fstat(probe).is_ok_and(|stat| stat.st_ino == inode);
    if !matches {
        TAKEN.store(false, Ordering::SeqCst);
        return Err(not_found());
    }
    // The descriptor is open and is the socket our parent passed (same inode); `TAKEN`
    // guarantees this adoption happens once.
    // SAFETY: nothing else in this process owns the descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    fcntl_setfd(fd.as_fd(), FdFlags::CLOEXEC)?;
    Ok(OsOpaqueIpcChannel::from_inherited(fd))
}
