//! Registering a descriptor with tokio's reactor (feature `tokio`).

use std::io;
use std::os::fd::OwnedFd;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Registers `fd` with the current tokio runtime for `interest`.
pub(crate) fn register(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    // An `OwnedFd` is an open descriptor whose `as_raw_fd` returns the same number for as long
    // as it is owned — here by the `AsyncFd`, until it is dropped.
    // SAFETY: the descriptor stays open and unchanged for the `AsyncFd`'s whole life.
    let registered = unsafe { AsyncFd::register_with_interest(fd, interest) };
    registered.map_err(io::Error::from)
}
