//! Readiness of a platform descriptor, registered with tokio's reactor.
//!
//! Each async object registers its own duplicate of the channel's descriptor, so clones of one
//! channel can be registered side by side (epoll refuses the same descriptor number twice).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::OnceLock;
use std::task::{Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::sys;

/// A duplicate of a descriptor, registered for `interest`.
#[derive(Debug)]
pub(crate) struct Readiness(AsyncFd<OwnedFd>);

impl Readiness {
    pub fn new(fd: impl AsFd, interest: Interest) -> io::Result<Self> {
        Ok(Readiness(sys::register(fd.as_fd().try_clone_to_owned()?, interest)?))
    }

    /// The readiness in `cell`, registered for `fd` on first need: an async end of a local
    /// channel registers only once its channel is an OS channel (docs/local.md).
    pub fn in_cell(cell: &OnceLock<Readiness>, fd: impl AsFd, interest: Interest) -> io::Result<&Readiness> {
        if cell.get().is_none() {
            let _ = cell.set(Readiness::new(fd, interest)?);
        }
        Ok(cell.get().expect("set just now, or by a concurrent caller"))
    }

    /// Runs `attempt` at once and then whenever the descriptor is readable, until it returns
    /// something other than `WouldBlock`. (A message can wait where readiness does not show it,
    /// in a channel's shared-memory ring: `attempt` looks there first.)
    pub async fn readable<R>(&self, mut attempt: impl FnMut() -> io::Result<R>) -> io::Result<R> {
        loop {
            match attempt() {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                result => return result,
            }
            let mut guard = self.0.readable().await?;
            guard.clear_ready();
        }
    }

    /// Like [`readable`](Self::readable), as a poll function.
    pub fn poll_readable<R>(
        &self,
        cx: &mut Context<'_>,
        mut attempt: impl FnMut() -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        loop {
            match attempt() {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                result => return Poll::Ready(result),
            }
            match self.0.poll_read_ready(cx) {
                Poll::Ready(Ok(mut guard)) => guard.clear_ready(),
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Runs `attempt` at once and then whenever the descriptor is writable, until it returns
    /// something other than `WouldBlock`, as a poll function.
    pub fn poll_writable<R>(
        &self,
        cx: &mut Context<'_>,
        mut attempt: impl FnMut() -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        loop {
            match attempt() {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                result => return Poll::Ready(result),
            }
            match self.0.poll_write_ready(cx) {
                Poll::Ready(Ok(mut guard)) => guard.clear_ready(),
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
