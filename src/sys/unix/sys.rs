//! Small system-call helpers any Unix backend uses (compiled into the Linux backend).

use std::io;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;

/// Runs a system call again for as long as it fails with `EINTR`.
pub(super) fn retry_on_intr<T>(mut call: impl FnMut() -> Result<T, Errno>) -> io::Result<T> {
    loop {
        match call() {
            Err(Errno::INTR) => continue,
            result => return result.map_err(io::Error::from),
        }
    }
}

/// Converts a duration into a `Timespec`, saturating instead of overflowing.
pub(super) fn timespec(duration: Duration) -> Timespec {
    Timespec {
        tv_sec: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(duration.subsec_nanos()),
    }
}

/// Waits until `fd` is readable (or hung up), for at most `timeout`.
/// Returns `false` when the time ran out first. `EINTR` restarts the wait with the time left.
pub(super) fn wait_readable(fd: impl AsFd, timeout: Duration) -> io::Result<bool> {
    wait_for(fd, PollFlags::IN, timeout)
}

/// Waits until `fd` is writable (or hung up), for at most `timeout`; `false` when the time ran out.
pub(super) fn wait_writable(fd: impl AsFd, timeout: Duration) -> io::Result<bool> {
    wait_for(fd, PollFlags::OUT, timeout)
}

fn wait_for(fd: impl AsFd, events: PollFlags, timeout: Duration) -> io::Result<bool> {
    // No deadline (`Duration::MAX`, or one past what `Instant` holds) waits with no timeout at
    // all: the kernel then arms no timer for the sleep.
    let deadline = Instant::now().checked_add(timeout).filter(|_| timeout != Duration::MAX);
    loop {
        let left = deadline.map(|deadline| timespec(deadline.saturating_duration_since(Instant::now())));
        let mut fds = [PollFd::new(&fd, events)];
        match poll(&mut fds, left.as_ref()) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(Errno::INTR) => continue,
            Err(error) => return Err(error.into()),
        }
    }
}

/// Converts a collection length into the `u32` the wire format carries.
pub(super) fn wire_count(count: usize) -> io::Result<u32> {
    u32::try_from(count).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many handles in one message"))
}

/// The error for malformed input from a peer.
pub(crate) fn invalid_data(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("malformed message from peer: {what}"))
}
