//! Every error type of the crate, with the same names and variants as `ipc-channel`.

use std::fmt;
use std::io;

/// An error from encoding or decoding a message with serde.
///
/// Returned by [`IpcMessage::to`](crate::ipc::IpcMessage::to) and inside
/// [`IpcError::SerializationError`].
#[derive(Debug)]
pub struct SerDeError(pub(crate) postcard::Error);

impl fmt::Display for SerDeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "serialization error: {}", self.0)
    }
}

impl std::error::Error for SerDeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl From<postcard::Error> for SerDeError {
    fn from(error: postcard::Error) -> Self {
        SerDeError(error)
    }
}

/// The error of a send or a blocking receive.
///
/// Returned by [`IpcSender::send`](crate::ipc::IpcSender::send) and
/// [`IpcReceiver::recv`](crate::ipc::IpcReceiver::recv).
#[derive(Debug)]
pub enum IpcError {
    /// The message could not be encoded or decoded.
    SerializationError(SerDeError),
    /// The operating system reported an error, or a peer sent a malformed message
    /// (`io::ErrorKind::InvalidData`).
    Io(io::Error),
    /// Every sender is gone and no message is left (on receive), or the receiver is gone (on send).
    Disconnected,
}

impl fmt::Display for IpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpcError::SerializationError(error) => write!(f, "{error}"),
            IpcError::Io(error) => write!(f, "i/o error: {error}"),
            IpcError::Disconnected => write!(f, "channel disconnected"),
        }
    }
}

impl std::error::Error for IpcError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            IpcError::SerializationError(error) => Some(error),
            IpcError::Io(error) => Some(error),
            IpcError::Disconnected => None,
        }
    }
}

impl From<SerDeError> for IpcError {
    fn from(error: SerDeError) -> Self {
        IpcError::SerializationError(error)
    }
}

impl From<io::Error> for IpcError {
    fn from(error: io::Error) -> Self {
        IpcError::Io(error)
    }
}

/// The error of a non-blocking or timed receive.
///
/// Returned by [`IpcReceiver::try_recv`](crate::ipc::IpcReceiver::try_recv) and
/// [`IpcReceiver::try_recv_timeout`](crate::ipc::IpcReceiver::try_recv_timeout).
#[derive(Debug)]
pub enum TryRecvError {
    /// The receive failed as a blocking one would have.
    IpcError(IpcError),
    /// No message arrived in the time allowed.
    Empty,
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryRecvError::IpcError(error) => write!(f, "{error}"),
            TryRecvError::Empty => write!(f, "channel empty"),
        }
    }
}

impl std::error::Error for TryRecvError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TryRecvError::IpcError(error) => Some(error),
            TryRecvError::Empty => None,
        }
    }
}

impl From<IpcError> for TryRecvError {
    fn from(error: IpcError) -> Self {
        TryRecvError::IpcError(error)
    }
}

/// The error of a non-blocking or timed select.
///
/// Returned by [`IpcReceiverSet::try_select`](crate::ipc::IpcReceiverSet::try_select) and
/// [`IpcReceiverSet::try_select_timeout`](crate::ipc::IpcReceiverSet::try_select_timeout).
#[derive(Debug)]
pub enum TrySelectError {
    /// The operating system reported an error.
    IoError(io::Error),
    /// Nothing happened in the time allowed: no message, no closed channel.
    Empty,
}

impl fmt::Display for TrySelectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySelectError::IoError(error) => write!(f, "i/o error: {error}"),
            TrySelectError::Empty => write!(f, "no messages were received and no channel closed"),
        }
    }
}

impl std::error::Error for TrySelectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TrySelectError::IoError(error) => Some(error),
            TrySelectError::Empty => None,
        }
    }
}

impl From<io::Error> for TrySelectError {
    fn from(error: io::Error) -> Self {
        TrySelectError::IoError(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    #[test]
    fn errors_display_and_chain() {
        let io_error = IpcError::from(io::Error::other("boom"));
        assert!(io_error.to_string().contains("boom"));
        assert!(io_error.source().is_some());
        assert_eq!(IpcError::Disconnected.to_string(), "channel disconnected");
        let serde = IpcError::from(SerDeError(postcard::Error::DeserializeUnexpectedEnd));
        assert!(matches!(serde, IpcError::SerializationError(_)));
        assert!(serde.source().is_some());
        let try_recv = TryRecvError::from(IpcError::Disconnected);
        assert!(try_recv.to_string().contains("disconnected"));
        assert_eq!(TryRecvError::Empty.to_string(), "channel empty");
        assert!(TrySelectError::from(io::Error::other("x")).source().is_some());
        assert!(TrySelectError::Empty.source().is_none());
    }
}
