//! Async select over many receivers.

use std::fmt;
use std::io;

use tokio::io::Interest;

use super::readiness::Readiness;
use crate::error::TrySelectError;
use crate::ipc::{IpcReceiverSet, IpcSelectionResult};

/// An [`IpcReceiverSet`] whose `select` awaits on tokio's reactor: the set's epoll descriptor is
/// itself registered, so one wait covers every receiver in it.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use crossproc::{ipc, tokio::AsyncIpcReceiverSet};
/// let mut set = AsyncIpcReceiverSet::new(ipc::IpcReceiverSet::new().unwrap()).unwrap();
/// let (tx, rx) = ipc::channel::<u8>().unwrap();
/// let id = set.set_mut().add(rx).unwrap();
/// tx.send(3).unwrap();
/// let (got, message) = set.select().await.unwrap().remove(0).unwrap();
/// assert_eq!((got, message.to::<u8>().unwrap()), (id, 3));
/// # });
/// ```
pub struct AsyncIpcReceiverSet {
    set: IpcReceiverSet,
    readiness: Readiness,
}

impl AsyncIpcReceiverSet {
    /// Registers `set` with the current runtime's reactor.
    pub fn new(set: IpcReceiverSet) -> io::Result<Self> {
        let readiness = Readiness::new(set.os.as_fd(), Interest::READABLE)?;
        Ok(AsyncIpcReceiverSet { set, readiness })
    }

    /// The set, to add receivers to.
    pub fn set_mut(&mut self) -> &mut IpcReceiverSet {
        &mut self.set
    }

    /// Waits until at least one receiver has a message or closed. Cancellation safe. An empty
    /// set is an `InvalidInput` error, as in [`IpcReceiverSet::select`].
    pub async fn select(&mut self) -> io::Result<Vec<IpcSelectionResult>> {
        self.set.check_not_empty()?;
        let set = &mut self.set;
        self.readiness
            .readable(|| loop {
                return match set.try_select() {
                    Ok(results) => Ok(results),
                    // Members announce that they sleep (see `OsIpcReceiver::prepare_to_sleep`).
                    Err(TrySelectError::Empty) if set.os.prepare_to_sleep() => Err(io::ErrorKind::WouldBlock.into()),
                    Err(TrySelectError::Empty) => continue,
                    Err(TrySelectError::IoError(error)) => Err(error),
                };
            })
            .await
    }
}

impl fmt::Debug for AsyncIpcReceiverSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AsyncIpcReceiverSet")
    }
}
