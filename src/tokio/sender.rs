//! Async senders: `send` awaits room in the channel's buffer instead of blocking a runtime thread.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::task::Poll;

use serde::{Deserialize, Serialize};
use tokio::io::Interest;

use super::readiness::Readiness;
use crate::chan::Sender;
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

/// Where an async send waits for room: a local channel's budget (its receiver calls the task's
/// waker when it frees some, no descriptor), or an OS channel's readiness on the reactor,
/// registered when the channel first is one.
struct Room {
    readiness: OnceLock<Readiness>,
}

impl Room {
    fn new(end: &Sender) -> io::Result<Room> {
        let room = Room { readiness: OnceLock::new() };
        // An OS channel is registered at once, so that a reactor that refuses it says so here.
        room.os_readiness(end)?;
        Ok(room)
    }

    fn os_readiness(&self, end: &Sender) -> io::Result<Option<&Readiness>> {
        let Some(os) = end.os() else { return Ok(None) };
        Readiness::in_cell(&self.readiness, os, Interest::WRITABLE).map(Some)
    }

    /// Sends with `try_send` until it finds room, waiting between tries.
    async fn send(
        &self,
        end: &Sender,
        mut try_send: impl FnMut() -> io::Result<Result<(), IpcError>>,
    ) -> Result<(), IpcError> {
        let registration =
            Registration { end, send: NEXT_SEND.fetch_add(1, Ordering::Relaxed), made: AtomicBool::new(false) };
        std::future::poll_fn(|cx| loop {
            if let Some(readiness) = self.os_readiness(end)? {
                return readiness.poll_writable(cx, &mut try_send).map(|result| result?);
            }
            match try_send() {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                result => return Poll::Ready(result?),
            }
            // Full: wait for the receiver to free budget. A try after registering catches budget
            // freed in between; once registered, any later freeing wakes this task.
            if !end.register_writable(registration.send, cx.waker()) {
                continue; // it became an OS channel
            }
            registration.made.store(true, Ordering::Relaxed);
            match try_send() {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                result => return Poll::Ready(result?),
            }
        })
        .await
    }
}

/// Ids of async sends on local channels (see [`Registration`]).
static NEXT_SEND: AtomicU64 = AtomicU64::new(0);

/// An async send's waker in a full local channel: taken out when the send ends, or is dropped
/// before it ends (cancelled), so that the wakers of sends that no longer wait do not pile up.
struct Registration<'a> {
    end: &'a Sender,
    send: u64,
    /// Whether the send registered its waker (most sends find room and never do).
    made: AtomicBool,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if self.made.load(Ordering::Relaxed) {
            self.end.unregister_writable(self.send);
        }
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
    room: Room,
}

impl<T> AsyncIpcSender<T>
where
    T: for<'de> Deserialize<'de> + Serialize,
{
    /// Registers `sender` with the current runtime's reactor (a local channel needs none).
    pub fn new(sender: IpcSender<T>) -> io::Result<Self> {
        Ok(AsyncIpcSender { room: Room::new(&sender.end.0)?, sender })
    }

    /// Sends `value`, awaiting room in the channel's buffer. Cancellation safe: a dropped
    /// future has sent the message whole or not at all.
    pub async fn send(&self, value: T) -> Result<(), IpcError> {
        let try_send =
            || self.sender.send_with(&value, Wait::NonBlocking).map_err(|error| TrySendError::from_send((), error));
        self.room.send(&self.sender.end.0, || attempt(try_send())).await
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
    room: Room,
}

impl AsyncIpcBytesSender {
    /// Registers `sender` with the current runtime's reactor (a local channel needs none).
    pub fn new(sender: IpcBytesSender) -> io::Result<Self> {
        Ok(AsyncIpcBytesSender { room: Room::new(&sender.end.0)?, sender })
    }

    /// Sends `data`, awaiting room in the channel's buffer. Cancellation safe.
    pub async fn send(&self, data: &[u8]) -> Result<(), IpcError> {
        self.room.send(&self.sender.end.0, || attempt(self.sender.try_send(data))).await
    }
}

impl fmt::Debug for AsyncIpcBytesSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AsyncIpcBytesSender").field(&self.sender).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::Arc;
    use std::task::{Context, Wake, Waker};

    use super::AsyncIpcSender;
    use crate::error::TrySendError;
    use crate::ipc;

    /// A waker of its own for each send, as each task has.
    struct Task;

    impl Wake for Task {
        fn wake(self: Arc<Self>) {}
    }

    /// Sends into a full local channel that are dropped before they end (cancelled, as by a
    /// `timeout` or a `select!`) take their wakers out: 100 of them left 100 behind, for as long
    /// as the channel stayed full. A send still waiting keeps its own, and gets its room.
    #[test]
    fn cancelled_sends_into_a_full_local_channel_leave_no_waker_behind() {
        let (tx, rx) = ipc::channel::<u32>().unwrap();
        while !matches!(tx.try_send(0), Err(TrySendError::Full(_))) {}
        let tx = AsyncIpcSender::new(tx).unwrap();
        for _ in 0..100 {
            let waker = Waker::from(Arc::new(Task));
            let mut send = std::pin::pin!(tx.send(1));
            assert!(send.as_mut().poll(&mut Context::from_waker(&waker)).is_pending());
        }
        assert_eq!(tx.sender.end.0.writer_wakers(), 0, "cancelled sends left their wakers");
        let waker = Waker::from(Arc::new(Task));
        let mut waiting = std::pin::pin!(tx.send(2));
        assert!(waiting.as_mut().poll(&mut Context::from_waker(&waker)).is_pending());
        assert_eq!(tx.sender.end.0.writer_wakers(), 1);
        while rx.try_recv().is_ok() {}
        assert!(waiting.as_mut().poll(&mut Context::from_waker(&waker)).is_ready());
        assert_eq!(rx.try_recv().unwrap(), 2);
        assert_eq!(tx.sender.end.0.writer_wakers(), 0);
    }
}
