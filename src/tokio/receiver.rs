//! Async receivers: typed, bytes and opaque.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use futures_core::Stream;
use serde::{Deserialize, Serialize};
use tokio::io::Interest;

use super::readiness::Readiness;
use crate::chan::{Message, Receiver};
use crate::error::IpcError;
use crate::ipc::{IpcBytesReceiver, IpcMessage, IpcReceiver, OpaqueIpcReceiver, ReceiverEnd};
use crate::sys::{OsIpcReceiver, RecvError, Wait};

/// A receiver and, once it reads an OS channel, that channel's readiness on the reactor. A
/// local channel registers nothing: its senders call the waiting task's waker (docs/local.md,
/// "Waiting"); if it becomes an OS channel, the receiver registers then.
struct Core {
    receiver: Receiver,
    readiness: OnceLock<Readiness>,
    /// One receive at a time (the receivers are `Sync`): a receive that returns leaves the
    /// channel's ring awake, so senders stop sending the packets whose readiness would wake
    /// another task asleep on it. The next receive waits its turn here instead, and announces
    /// that it sleeps before it does (issue 22, item 10).
    turn: tokio::sync::Mutex<()>,
}

/// Turns a receive result into the `io::Result<Option<_>>` the readiness loop expects; the
/// message's data may reuse `buffer`'s allocation. `WouldBlock` only once the receiver has
/// announced that it is going to sleep (see the module's "What this module builds on").
fn attempt(receiver: &OsIpcReceiver, buffer: &mut Vec<u8>) -> io::Result<Result<Option<Message>, IpcError>> {
    loop {
        return match receiver.recv_into(Wait::NonBlocking, buffer) {
            Ok(message) => Ok(Ok(Some(Message::from(message)))),
            Err(RecvError::Empty) if receiver.prepare_to_sleep() => Err(io::ErrorKind::WouldBlock.into()),
            Err(RecvError::Empty) => continue,
            Err(RecvError::Disconnected) => Ok(Ok(None)),
            Err(RecvError::Io(error)) => Ok(Err(IpcError::Io(error))),
        };
    }
}

impl Core {
    fn new(end: ReceiverEnd) -> io::Result<Core> {
        let core = Core { receiver: end.into_inner()?, readiness: OnceLock::new(), turn: tokio::sync::Mutex::new(()) };
        // An OS channel is registered at once, so that a reactor that refuses it says so here.
        core.os_readiness()?;
        Ok(core)
    }

    /// The OS receiver and its readiness, registered on first need; `None` while the channel
    /// is local.
    fn os_readiness(&self) -> io::Result<Option<(&OsIpcReceiver, &Readiness)>> {
        let Some(os) = self.receiver.os_receiver() else { return Ok(None) };
        Ok(Some((os, Readiness::in_cell(&self.readiness, os, Interest::READABLE)?)))
    }

    async fn recv(&self) -> Result<Option<Message>, IpcError> {
        self.recv_into(&mut Vec::new()).await
    }

    async fn recv_into(&self, buffer: &mut Vec<u8>) -> Result<Option<Message>, IpcError> {
        let _turn = self.turn.lock().await;
        std::future::poll_fn(|cx| self.poll_recv_into(cx, buffer)).await
    }

    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Result<Option<Message>, IpcError>> {
        self.poll_recv_into(cx, &mut Vec::new())
    }

    fn poll_recv_into(&self, cx: &mut Context<'_>, buffer: &mut Vec<u8>) -> Poll<Result<Option<Message>, IpcError>> {
        loop {
            match self.os_readiness() {
                Err(error) => return Poll::Ready(Err(IpcError::Io(error))),
                Ok(Some((os, readiness))) => {
                    return match readiness.poll_readable(cx, || attempt(os, buffer)) {
                        Poll::Ready(Ok(result)) => Poll::Ready(result),
                        Poll::Ready(Err(error)) => Poll::Ready(Err(IpcError::Io(error))),
                        Poll::Pending => Poll::Pending,
                    };
                }
                Ok(None) => {}
            }
            return match self.receiver.recv_or_register(cx.waker(), buffer) {
                Ok(message) => Poll::Ready(Ok(Some(message))),
                Err(RecvError::Disconnected) => Poll::Ready(Ok(None)),
                Err(RecvError::Io(error)) => Poll::Ready(Err(IpcError::Io(error))),
                // It became an OS channel: wait on that channel's readiness.
                Err(RecvError::Empty) if self.receiver.os_receiver().is_some() => continue,
                Err(RecvError::Empty) => Poll::Pending,
            };
        }
    }
}

fn decode<T: for<'de> Deserialize<'de> + Serialize>(message: Message) -> Result<T, IpcError> {
    Ok(IpcMessage::from(message).to()?)
}

fn bytes(message: Message) -> Vec<u8> {
    message.data
}

/// An [`IpcReceiver`] that waits on tokio's reactor. Also a `Stream` of `Result<T, IpcError>`
/// that ends when every sender is gone.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use crossproc::tokio::AsyncIpcReceiver;
/// let (tx, rx) = crossproc::ipc::channel::<String>().unwrap();
/// let rx = AsyncIpcReceiver::new(rx).unwrap();
/// tx.send("hello".into()).unwrap();
/// assert_eq!(rx.recv().await.unwrap(), "hello");
/// drop(tx);
/// assert!(matches!(rx.recv().await, Err(crossproc::IpcError::Disconnected)));
/// # });
/// ```
pub struct AsyncIpcReceiver<T> {
    core: Core,
    phantom: PhantomData<fn() -> T>,
}

impl<T> AsyncIpcReceiver<T>
where
    T: for<'de> Deserialize<'de> + Serialize,
{
    /// Registers `receiver` with the current runtime's reactor.
    pub fn new(receiver: IpcReceiver<T>) -> io::Result<Self> {
        Ok(AsyncIpcReceiver { core: Core::new(receiver.end)?, phantom: PhantomData })
    }

    /// Waits for the next value; [`IpcError::Disconnected`] when every sender is gone.
    /// Cancellation safe.
    pub async fn recv(&self) -> Result<T, IpcError> {
        decode(self.core.recv().await?.ok_or(IpcError::Disconnected)?)
    }
}

impl<T> Stream for AsyncIpcReceiver<T>
where
    T: for<'de> Deserialize<'de> + Serialize,
{
    type Item = Result<T, IpcError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.core.poll_recv(cx).map(|result| result.transpose().map(|message| message.and_then(decode)))
    }
}

impl<T> fmt::Debug for AsyncIpcReceiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AsyncIpcReceiver").field(&self.core.receiver).finish()
    }
}

/// An [`IpcBytesReceiver`] that waits on tokio's reactor; also a `Stream`.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let (tx, rx) = crossproc::ipc::bytes_channel().unwrap();
/// let rx = crossproc::tokio::AsyncIpcBytesReceiver::new(rx).unwrap();
/// tx.send(b"raw").unwrap();
/// assert_eq!(rx.recv().await.unwrap(), b"raw");
/// # });
/// ```
pub struct AsyncIpcBytesReceiver {
    core: Core,
}

impl AsyncIpcBytesReceiver {
    /// Registers `receiver` with the current runtime's reactor.
    pub fn new(receiver: IpcBytesReceiver) -> io::Result<Self> {
        Ok(AsyncIpcBytesReceiver { core: Core::new(receiver.end)? })
    }

    /// Waits for the next message; [`IpcError::Disconnected`] when every sender is gone.
    /// Cancellation safe.
    pub async fn recv(&self) -> Result<Vec<u8>, IpcError> {
        Ok(bytes(self.core.recv().await?.ok_or(IpcError::Disconnected)?))
    }

    /// Like [`recv`](Self::recv), but the message replaces `buffer`'s contents and reuses its
    /// allocation (see [`IpcBytesReceiver::recv_into`]). Cancellation safe: `buffer` is
    /// untouched until a message arrives.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let (tx, rx) = crossproc::ipc::bytes_channel().unwrap();
    /// let rx = crossproc::tokio::AsyncIpcBytesReceiver::new(rx).unwrap();
    /// let mut buffer = Vec::with_capacity(1 << 20);
    /// tx.send(&[3; 500_000]).unwrap();
    /// rx.recv_into(&mut buffer).await.unwrap();
    /// assert_eq!(buffer, [3; 500_000]);
    /// # });
    /// ```
    pub async fn recv_into(&self, buffer: &mut Vec<u8>) -> Result<(), IpcError> {
        *buffer = bytes(self.core.recv_into(buffer).await?.ok_or(IpcError::Disconnected)?);
        Ok(())
    }
}

impl Stream for AsyncIpcBytesReceiver {
    type Item = Result<Vec<u8>, IpcError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.core.poll_recv(cx).map(|result| result.transpose().map(|message| message.map(bytes)))
    }
}

impl fmt::Debug for AsyncIpcBytesReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AsyncIpcBytesReceiver").field(&self.core.receiver).finish()
    }
}

/// An [`OpaqueIpcReceiver`] that waits on tokio's reactor and yields undecoded
/// [`IpcMessage`]s; also a `Stream`.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let (tx, rx) = crossproc::ipc::channel::<u16>().unwrap();
/// let rx = crossproc::tokio::AsyncOpaqueIpcReceiver::new(rx.to_opaque()).unwrap();
/// tx.send(9).unwrap();
/// assert_eq!(rx.recv().await.unwrap().to::<u16>().unwrap(), 9);
/// # });
/// ```
pub struct AsyncOpaqueIpcReceiver {
    core: Core,
}

impl AsyncOpaqueIpcReceiver {
    /// Registers `receiver` with the current runtime's reactor.
    pub fn new(receiver: OpaqueIpcReceiver) -> io::Result<Self> {
        Ok(AsyncOpaqueIpcReceiver { core: Core::new(receiver.end)? })
    }

    /// Waits for the next message; [`IpcError::Disconnected`] when every sender is gone.
    /// Cancellation safe.
    pub async fn recv(&self) -> Result<IpcMessage, IpcError> {
        Ok(IpcMessage::from(self.core.recv().await?.ok_or(IpcError::Disconnected)?))
    }
}

impl Stream for AsyncOpaqueIpcReceiver {
    type Item = Result<IpcMessage, IpcError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.core.poll_recv(cx).map(|result| result.transpose().map(|message| message.map(IpcMessage::from)))
    }
}

impl fmt::Debug for AsyncOpaqueIpcReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AsyncOpaqueIpcReceiver").field(&self.core.receiver).finish()
    }
}
