//! Handing a channel end to a child process through an inherited descriptor.
//!
//! The end is a descriptor that stays close-on-exec in the parent; only in the forked child,
//! between `fork` and `exec`, is close-on-exec cleared on that one descriptor, so no other
//! descriptor leaks into the child and no concurrent spawn elsewhere in the parent inherits it.
//! The child learns the descriptor's number and its inode from an environment variable and
//! checks both before it adopts it, so a stale variable inherited by a grandchild cannot make
//! it adopt an unrelated descriptor. A receiving end brings its ring's control memfd along (a
//! second descriptor, named after the first in the variable; see `ring/mod.rs`).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::io::{fcntl_getfd, fcntl_setfd, FdFlags};
use rustix::net::{sockopt::socket_type, SocketType};

use super::socket::OsOpaqueIpcChannel;
use crate::sys::OsIpcChannel;

/// The environment variable that tells a child which descriptor is its channel: `FD:INODE`, or
/// `FD:INODE:CONTROL` for a receiver and its ring's control memfd.
const INHERITED_VAR: &str = "CROSSPROC_INHERITED_CHANNEL";

static TAKEN: AtomicBool = AtomicBool::new(false);

/// Spawns `command` with `end` inherited by the child, then closes the parent's copy of `end`.
pub(crate) fn spawn_with_inherited(command: &mut Command, end: OsIpcChannel) -> io::Result<Child> {
    let (end, control) = end.into_fds()?;
    let inode = rustix::fs::fstat(&end)?.st_ino;
    let raw: RawFd = end.as_raw_fd();
    let control_raw: Option<RawFd> = control.as_ref().map(AsRawFd::as_raw_fd);
    match control_raw {
        Some(control_raw) => command.env(INHERITED_VAR, format!("{raw}:{inode}:{control_raw}")),
        None => command.env(INHERITED_VAR, format!("{raw}:{inode}")),
    };
    // The closure runs in the child between fork and exec, where only async-signal-safe work is
    // allowed: it makes one or two `fcntl` system calls on descriptor numbers (no allocation,
    // no locks). `end` and `control` are open in the parent until `spawn` returns, so the
    // numbers are valid.
    // SAFETY: the closure is async-signal-safe and its descriptor numbers are valid.
    unsafe {
        command.pre_exec(move || {
            for raw in std::iter::once(raw).chain(control_raw) {
                // SAFETY: `raw` is open in this (forked) process, as explained above.
                let fd = BorrowedFd::borrow_raw(raw);
                fcntl_setfd(fd, FdFlags::empty())?;
            }
            Ok(())
        });
    }
    let child = command.spawn();
    drop((end, control));
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
    let control_raw: Option<RawFd> = match fields.next() {
        Some(control) => Some(control.parse().ok().filter(|&control: &RawFd| control >= 0).ok_or_else(not_found)?),
        None => None,
    };
    if raw < 0 || TAKEN.swap(true, Ordering::SeqCst) {
        return Err(not_found());
    }
    // `fcntl(F_GETFD)` on an arbitrary number fails with EBADF when it is not open.
    let is_open = |number: RawFd| {
        // SAFETY: a number borrowed only to probe it with `fcntl` touches no owner's state.
        fcntl_getfd(unsafe { BorrowedFd::borrow_raw(number) }).is_ok()
    };
    // Check the descriptor before owning it: open, a SOCK_SEQPACKET socket, the same inode.
    let matches = {
        is_open(raw) && {
            // SAFETY: `raw` is open (checked just above) and we only read its metadata.
            let fd = unsafe { BorrowedFd::borrow_raw(raw) };
            socket_type(fd) == Ok(SocketType::SEQPACKET) && rustix::fs::fstat(fd).is_ok_and(|stat| stat.st_ino == inode)
        }
    };
    if !matches {
        TAKEN.store(false, Ordering::SeqCst);
        return Err(not_found());
    }
    // The descriptor is open and is the socket our parent passed (same inode); `TAKEN`
    // guarantees this adoption happens once.
    // SAFETY: nothing else in this process owns the descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    fcntl_setfd(fd.as_fd(), FdFlags::CLOEXEC)?;
    // The control memfd named beside it, if open (the receiver checks it is one when it maps it).
    let control = control_raw.filter(|&control| control != raw && is_open(control));
    // SAFETY: open (checked just above), and named to this process alone by its parent.
    let control = control.map(|control| unsafe { OwnedFd::from_raw_fd(control) });
    if let Some(control) = &control {
        fcntl_setfd(control.as_fd(), FdFlags::CLOEXEC)?;
    }
    Ok(OsOpaqueIpcChannel::from_inherited(fd, control))
}
