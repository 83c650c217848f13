//! Byte channels: the bytes go on the wire as they are, no serde.

use std::io;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::endpoint::{ipc_error, try_recv_error, ReceiverEnd, SenderEnd};
use crate::error::{IpcError, TryRecvError};
use crate::platform::{self, OsIpcMessage, RecvError, RecvMode};

/// Creates a byte channel: the sending end and the receiving end.
///
/// ```
/// let (tx, rx) = crossproc::ipc::bytes_channel().unwrap();
/// tx.send(b"raw bytes").unwrap();
/// assert_eq!(rx.recv().unwrap(), b"raw bytes");
/// ```
pub fn bytes_channel() -> Result<(IpcBytesSender, IpcBytesReceiver), io::Error> {
    let (sender, receiver) = platform::channel()?;
    Ok((IpcBytesSender { end: SenderEnd(sender) }, IpcBytesReceiver { end: ReceiverEnd::new(receiver) }))
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
    end: SenderEnd,
}

impl IpcBytesSender {
    /// Sends `data` as one message, blocking while the channel's kernel buffer is full.
    /// A receiver that is gone gives `io::ErrorKind::BrokenPipe`.
    pub fn send(&self, data: &[u8]) -> Result<(), io::Error> {
        self.end.0.send(data, Vec::new(), Vec::new())
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
    end: ReceiverEnd,
}

impl IpcBytesReceiver {
    /// Waits for the next message. [`IpcError::Disconnected`] means every sender is gone.
    pub fn recv(&self) -> Result<Vec<u8>, IpcError> {
        self.end.recv(RecvMode::Blocking).and_then(into_bytes).map_err(ipc_error)
    }

    /// Takes the next message if one is queued; [`TryRecvError::Empty`] otherwise.
    pub fn try_recv(&self) -> Result<Vec<u8>, TryRecvError> {
        self.end.recv(RecvMode::NonBlocking).and_then(into_bytes).map_err(try_recv_error)
    }

    /// Waits at most `duration` for the next message; [`TryRecvError::Empty`] if none came.
    ///
    /// ```
    /// let (_tx, rx) = crossproc::ipc::bytes_channel().unwrap();
    /// assert!(rx.try_recv_timeout(std::time::Duration::from_millis(5)).is_err());
    /// ```
    pub fn try_recv_timeout(&self, duration: Duration) -> Result<Vec<u8>, TryRecvError> {
        self.end.recv(RecvMode::Timeout(duration)).and_then(into_bytes).map_err(try_recv_error)
    }
}

/// The bytes of a message; descriptors a peer attached to a byte message are closed.
fn into_bytes(message: OsIpcMessage) -> Result<Vec<u8>, RecvError> {
    Ok(message.data.into_vec()?)
}
