//! Byte channels: the bytes go on the wire as they are, no serde.

use std::io;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::endpoint::{ipc_error, send_error, try_recv_error, ReceiverEnd, SenderEnd};
use crate::chan::{self, Message};
use crate::error::{IpcError, SendTimeoutError, TryRecvError, TrySendError};
use crate::sys::ReceiveLimits;
use crate::sys::Wait;

/// Creates a byte channel: the sending end and the receiving end.
///
/// ```
/// let (tx, rx) = crossproc::ipc::bytes_channel().unwrap();
/// tx.send(b"raw bytes").unwrap();
/// assert_eq!(rx.recv().unwrap(), b"raw bytes");
/// ```
pub fn bytes_channel() -> Result<(IpcBytesSender, IpcBytesReceiver), io::Error> {
    Ok(bytes_ends(chan::channel()))
}

fn bytes_ends((sender, receiver): (chan::Sender, chan::Receiver)) -> (IpcBytesSender, IpcBytesReceiver) {
    (IpcBytesSender { end: SenderEnd(sender) }, IpcBytesReceiver { end: ReceiverEnd::new(receiver) })
}

/// Creates a byte channel that is an OS channel from the start; see [`os_channel`](super::os_channel).
///
/// ```
/// let (tx, rx) = crossproc::ipc::os_bytes_channel().unwrap();
/// tx.send(b"raw").unwrap();
/// assert_eq!(rx.recv().unwrap(), b"raw");
/// ```
pub fn os_bytes_channel() -> Result<(IpcBytesSender, IpcBytesReceiver), io::Error> {
    Ok(bytes_ends(chan::os_channel()?))
}

/// The sending end of a byte channel; serializable, so it can travel inside a message.
///
/// ```
/// let (tx, rx) = crossproc::ipc::bytes_channel().unwrap();
/// tx.clone().send(&[1, 2]).unwrap();
/// assert_eq!(rx.recv().unwrap(), [1, 2]);
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IpcBytesSender {
    pub(crate) end: SenderEnd,
}

impl IpcBytesSender {
    /// Sends `data` as one message, blocking while the channel's kernel buffer is full (see
    /// [`IpcSender`](super::IpcSender#when-send-blocks)). A receiver that is gone gives
    /// `io::ErrorKind::BrokenPipe`.
    pub fn send(&self, data: &[u8]) -> Result<(), io::Error> {
        Ok(self.end.0.send(data, Vec::new(), Vec::new(), Wait::Blocking)?)
    }

    /// Sends `data` if the channel's buffer has room now; [`TrySendError::Full`] otherwise.
    ///
    /// ```
    /// let (tx, _rx) = crossproc::ipc::bytes_channel().unwrap();
    /// assert!(tx.try_send(b"fits").is_ok());
    /// ```
    pub fn try_send(&self, data: &[u8]) -> Result<(), TrySendError<()>> {
        let result = self.end.0.send(data, Vec::new(), Vec::new(), Wait::NonBlocking);
        result.map_err(|failure| TrySendError::from_send((), send_error(failure.error)))
    }

    /// Sends `data`, waiting at most `timeout` for room; [`SendTimeoutError::Timeout`] otherwise.
    pub fn send_timeout(&self, data: &[u8], timeout: Duration) -> Result<(), SendTimeoutError<()>> {
        let result = self.end.0.send(data, Vec::new(), Vec::new(), Wait::Timeout(timeout));
        result.map_err(|failure| SendTimeoutError::from_send((), send_error(failure.error)))
    }

    /// Sets the size of the channel's kernel buffer; see
    /// [`IpcSender::set_buffer_size`](super::IpcSender::set_buffer_size).
    pub fn set_buffer_size(&self, bytes: usize) -> io::Result<()> {
        self.end.0.set_buffer_size(bytes)
    }

    /// The size of the channel's kernel buffer, in bytes.
    pub fn buffer_size(&self) -> io::Result<usize> {
        self.end.0.buffer_size()
    }
}

/// The receiving end of a byte channel; serializable (it moves into the message).
///
/// ```
/// use crossproc::TryRecvError;
/// let (tx, rx) = crossproc::ipc::bytes_channel().unwrap();
/// assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
/// tx.send(b"").unwrap();
/// assert_eq!(rx.recv().unwrap(), b"");
/// ```
#[derive(Debug, Serialize, Deserialize)]
pub struct IpcBytesReceiver {
    pub(crate) end: ReceiverEnd,
}

impl IpcBytesReceiver {
    /// Sets the limits every later message must respect; see [`ReceiveLimits`].
    ///
    /// ```
    /// use crossproc::ipc::{bytes_channel, ReceiveLimits};
    /// let (tx, rx) = bytes_channel().unwrap();
    /// rx.set_limits(ReceiveLimits { max_message_bytes: 8, ..ReceiveLimits::default() });
    /// tx.send(&[0; 9]).unwrap();
    /// assert!(rx.recv().unwrap_err().limit_exceeded().is_some());
    /// ```
    pub fn set_limits(&self, limits: ReceiveLimits) {
        self.end.set_limits(limits);
    }

    /// Waits for the next message. [`IpcError::Disconnected`] means every sender is gone.
    pub fn recv(&self) -> Result<Vec<u8>, IpcError> {
        self.end.recv(Wait::Blocking).map(into_bytes).map_err(ipc_error)
    }

    /// Waits for the next message and puts it in `buffer`, in place of what `buffer` held,
    /// reusing `buffer`'s allocation. A loop that receives large messages into one vector this
    /// way skips the fresh memory a new vector costs each time (the kernel zeroes every new page
    /// before the copy fills it). On Linux, once the channel is an OS channel, the allocation is
    /// reused whenever it is large enough for the message (otherwise `buffer` gets a new one);
    /// a local channel, and other platforms, give `buffer` the message's own vector (no copy).
    /// On an error `buffer` may be left empty.
    ///
    /// ```
    /// let (tx, rx) = crossproc::ipc::bytes_channel().unwrap();
    /// let mut buffer = Vec::with_capacity(1 << 20);
    /// for round in 0..3u8 {
    ///     tx.send(&[round; 300_000]).unwrap();
    ///     rx.recv_into(&mut buffer).unwrap();
    ///     assert_eq!(buffer, [round; 300_000]);
    /// }
    /// ```
    pub fn recv_into(&self, buffer: &mut Vec<u8>) -> Result<(), IpcError> {
        let message = self.end.recv_into(Wait::Blocking, buffer).map_err(ipc_error)?;
        *buffer = into_bytes(message);
        Ok(())
    }

    /// Takes the next message if one is queued; [`TryRecvError::Empty`] otherwise.
    pub fn try_recv(&self) -> Result<Vec<u8>, TryRecvError> {
        self.end.recv(Wait::NonBlocking).map(into_bytes).map_err(try_recv_error)
    }

    /// Waits at most `duration` for the next message; [`TryRecvError::Empty`] if none came.
    ///
    /// ```
    /// let (_tx, rx) = crossproc::ipc::bytes_channel().unwrap();
    /// assert!(rx.try_recv_timeout(std::time::Duration::from_millis(5)).is_err());
    /// ```
    pub fn try_recv_timeout(&self, duration: Duration) -> Result<Vec<u8>, TryRecvError> {
        self.end.recv(Wait::Timeout(duration)).map(into_bytes).map_err(try_recv_error)
    }
}

/// The bytes of a message; descriptors a peer attached to a byte message are closed.
fn into_bytes(message: Message) -> Vec<u8> {
    message.data
}
