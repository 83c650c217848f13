//! Async senders: `send` awaits room in the channel's buffer instead of blocking a runtime thread.

use std::fmt;
use std::io;

use serde::{Deserialize, Serialize};
use tokio::io::Interest;

use super::readiness::Readiness;
use crate::error::{IpcError, TrySendError};
use crate::ipc::{IpcBytesSender, IpcSender};
use crate::sys::Wait;

/// Turns a `try_send` outcome into what the readiness loop expects: `WouldBlock` while full.
fn attempt<V>(result: Result<(), TrySendError<V>>) -> io::Result<Result<(), IpcError>> {
    match result {
        Ok(()) => Ok(Ok(())),
        Err(TrySendError::Full(_)) => Err(io::ErrorKind::WouldBlock.into()),
        Err(TrySendError::Disconnected(_)) => Ok(Err(IpcError::Disconnected)),
        Err(TrySendError::Failed(_, error)) => Ok(Err(error)),
    }
}

/// An [`IpcSender`] whose `send` awaits room in the channel's buffer on tokio's reactor, so a
/// slow receiver never blocks a runtime thread. [`try_clone`](Self::try_clone) gives more senders.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let (tx, rx) = crossproc::ipc::channel::<u32>().unwrap();
/// let tx = crossproc::tokio::AsyncIpcSender::new(tx).unwrap();
/// tx.send(5).await.unwrap();
/// assert_eq!(rx.recv().unwrap(), 5);
/// # });
/// ```
pub struct AsyncIpcSender<T> {
    sender: IpcSender<T>,
    readiness: Readiness,
}

impl<T> AsyncIpcSender<T>
where
    T: for<'de> Deserialize<'de> + Serialize,
{
    /// Registers `sender` with the current runtime's reactor.
    pub fn new(sender: IpcSender<T>) -> io::Result<Self> {
        let readiness = Readiness::new(&sender.end.0.leave()?, Interest::WRITABLE)?;
        Ok(AsyncIpcSender { sender, readiness })
    }

    /// Sends `value`, awaiting room in the channel's buffer. Cancellation safe: a dropped
    /// future has sent the message whole or not at all.
    pub async fn send(&self, value: T) -> Result<(), IpcError> {
        let try_send =
            || self.sender.send_with(&value, Wait::NonBlocking).map_err(|error| TrySendError::from_send((), error));
        self.readiness.writable(|| attempt(try_send())).await?
    }

    /// Another sender of the same channel, registered with the current runtime (not `Clone`,
    /// because registering can fail).
    pub fn try_clone(&self) -> io::Result<Self> {
        AsyncIpcSender::new(self.sender.clone())
    }

    /// The blocking sender inside.
    pub fn into_inner(self) -> IpcSender<T> {
        self.sender
    }
}

impl<T> fmt::Debug for AsyncIpcSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AsyncIpcSender").field(&self.sender).finish()
    }
}

/// An [`IpcBytesSender`] whose `send` awaits room in the channel's buffer.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let (tx, rx) = crossproc::ipc::bytes_channel().unwrap();
/// let tx = crossproc::tokio::AsyncIpcBytesSender::new(tx).unwrap();
/// tx.send(b"async").await.unwrap();
/// assert_eq!(rx.recv().unwrap(), b"async");
/// # });
/// ```
pub struct AsyncIpcBytesSender {
    sender: IpcBytesSender,
    readiness: Readiness,
}

impl AsyncIpcBytesSender {
    /// Registers `sender` with the current runtime's reactor.
    pub fn new(sender: IpcBytesSender) -> io::Result<Self> {
        let readiness = Readiness::new(&sender.end.0.leave()?, Interest::WRITABLE)?;
        Ok(AsyncIpcBytesSender { sender, readiness })
    }

    /// Sends `data`, awaiting room in the channel's buffer. Cancellation safe.
    pub async fn send(&self, data: &[u8]) -> Result<(), IpcError> {
        self.readiness.writable(|| attempt(self.sender.try_send(data))).await?
    }
}

impl fmt::Debug for AsyncIpcBytesSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AsyncIpcBytesSender").field(&self.sender).finish()
    }
}
