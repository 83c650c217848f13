//! Every error type of the crate, with the same names and variants as `ipc-channel`.

use std::fmt;
use std::io;

/// An error from encoding or decoding a message with serde.
///
/// Returned by [`IpcMessage::to`](crate::ipc::IpcMessage::to) and inside
/// [`IpcError::SerializationError`].
#[derive(Debug)]
pub struct SerDeError(pub(crate) postcard::Error);

/// The message names the codec only: postcard's own words are the [`source`](std::error::Error::source)
/// (as in ipc-channel), so a printed chain says them once.
///
/// ```
/// use std::error::Error;
/// let error = crossproc::ipc::IpcMessage::from_data(vec![]).to::<u32>().unwrap_err();
/// let postcard = error.source().unwrap().to_string();
/// assert!(!error.to_string().contains(&postcard));
/// ```
impl fmt::Display for SerDeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("postcard could not encode or decode the value")
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

impl IpcError {
    /// The receive limit a refused message exceeded, if that is what this error is.
    ///
    /// ```
    /// assert!(crossproc::IpcError::Disconnected.limit_exceeded().is_none());
    /// ```
    pub fn limit_exceeded(&self) -> Option<crate::ipc::LimitExceeded> {
        match self {
            IpcError::Io(error) => error.get_ref()?.downcast_ref().copied(),
            _ => None,
        }
    }
}

impl fmt::Display for IpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpcError::SerializationError(_) => f.write_str("cannot encode or decode the message"),
            IpcError::Io(_) => f.write_str("i/o error"),
            IpcError::Disconnected => f.write_str("channel disconnected"),
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
            TryRecvError::IpcError(_) => f.write_str("receive failed"),
            TryRecvError::Empty => f.write_str("channel empty"),
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
            TrySelectError::IoError(_) => f.write_str("select failed"),
            TrySelectError::Empty => f.write_str("no messages were received and no channel closed"),
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

/// The error of [`IpcSender::try_send`](crate::ipc::IpcSender::try_send) and
/// [`IpcBytesSender::try_send`](crate::ipc::IpcBytesSender::try_send). Every variant gives the
/// value back; nothing of it was sent.
pub enum TrySendError<T> {
    /// The channel's buffer is full: the receiver is not keeping up.
    Full(T),
    /// The receiver is gone.
    Disconnected(T),
    /// Encoding or the operating system failed.
    Failed(T, IpcError),
}

/// The error of [`IpcSender::send_timeout`](crate::ipc::IpcSender::send_timeout) and
/// [`IpcBytesSender::send_timeout`](crate::ipc::IpcBytesSender::send_timeout). Every variant gives
/// the value back; nothing of it was sent.
pub enum SendTimeoutError<T> {
    /// The channel's buffer stayed full for the whole timeout.
    Timeout(T),
    /// The receiver is gone.
    Disconnected(T),
    /// Encoding or the operating system failed.
    Failed(T, IpcError),
}

impl<T> TrySendError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            TrySendError::Full(value) | TrySendError::Disconnected(value) | TrySendError::Failed(value, _) => value,
        }
    }

    /// Whether the channel was full.
    pub fn is_full(&self) -> bool {
        matches!(self, TrySendError::Full(_))
    }

    /// Whether the receiver is gone.
    pub fn is_disconnected(&self) -> bool {
        matches!(self, TrySendError::Disconnected(_))
    }
}

impl<T> SendTimeoutError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            SendTimeoutError::Timeout(value)
            | SendTimeoutError::Disconnected(value)
            | SendTimeoutError::Failed(value, _) => value,
        }
    }

    /// Whether the timeout ran out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, SendTimeoutError::Timeout(_))
    }

    /// Whether the receiver is gone.
    pub fn is_disconnected(&self) -> bool {
        matches!(self, SendTimeoutError::Disconnected(_))
    }
}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("Full(..)"),
            TrySendError::Disconnected(_) => f.write_str("Disconnected(..)"),
            TrySendError::Failed(_, error) => write!(f, "Failed(.., {error:?})"),
        }
    }
}

impl<T> fmt::Debug for SendTimeoutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendTimeoutError::Timeout(_) => f.write_str("Timeout(..)"),
            SendTimeoutError::Disconnected(_) => f.write_str("Disconnected(..)"),
            SendTimeoutError::Failed(_, error) => write!(f, "Failed(.., {error:?})"),
        }
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("sending on a full channel"),
            TrySendError::Disconnected(_) => f.write_str("sending on a disconnected channel"),
            TrySendError::Failed(..) => f.write_str("send failed"),
        }
    }
}

impl<T> fmt::Display for SendTimeoutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendTimeoutError::Timeout(_) => f.write_str("timed out waiting on a full channel"),
            SendTimeoutError::Disconnected(_) => f.write_str("sending on a disconnected channel"),
            SendTimeoutError::Failed(..) => f.write_str("send failed"),
        }
    }
}

impl<T> std::error::Error for TrySendError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TrySendError::Failed(_, error) => Some(error),
            _ => None,
        }
    }
}

impl<T> std::error::Error for SendTimeoutError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SendTimeoutError::Failed(_, error) => Some(error),
            _ => None,
        }
    }
}

impl<T> TrySendError<T> {
    /// Sorts the outcome of a non-blocking send.
    pub(crate) fn from_send(value: T, error: IpcError) -> Self {
        match error {
            IpcError::Io(io) if io.kind() == io::ErrorKind::WouldBlock => TrySendError::Full(value),
            IpcError::Disconnected => TrySendError::Disconnected(value),
            error => TrySendError::Failed(value, error),
        }
    }
}

impl<T> SendTimeoutError<T> {
    /// Sorts the outcome of a timed send.
    pub(crate) fn from_send(value: T, error: IpcError) -> Self {
        match error {
            IpcError::Io(io) if io.kind() == io::ErrorKind::TimedOut => SendTimeoutError::Timeout(value),
            IpcError::Disconnected => SendTimeoutError::Disconnected(value),
            error => SendTimeoutError::Failed(value, error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    /// Every message of the chain that `error` starts, outermost first.
    fn chain(error: &dyn Error) -> Vec<String> {
        let mut messages = vec![error.to_string()];
        let mut next = error.source();
        while let Some(cause) = next {
            messages.push(cause.to_string());
            next = cause.source();
        }
        messages
    }

    #[test]
    fn no_text_appears_twice_in_a_printed_chain() {
        let boom = || io::Error::other("boom");
        let limit =
            || io::Error::new(io::ErrorKind::InvalidData, crate::ipc::LimitExceeded::Handles { limit: 1, actual: 2 });
        let serde = || SerDeError(postcard::Error::DeserializeUnexpectedEnd);
        let errors: Vec<Box<dyn Error>> = vec![
            Box::new(IpcError::from(boom())),
            Box::new(IpcError::from(limit())),
            Box::new(IpcError::from(serde())),
            Box::new(TryRecvError::from(IpcError::from(boom()))),
            Box::new(TryRecvError::from(IpcError::from(serde()))),
            Box::new(TrySelectError::from(boom())),
            Box::new(TrySendError::Failed(1, IpcError::from(boom()))),
            Box::new(SendTimeoutError::Failed(1, IpcError::from(serde()))),
            Box::new(crate::platform::OsTrySelectError::IoError(boom().into())),
        ];
        for error in &errors {
            let messages = chain(error.as_ref());
            assert!(messages.len() >= 2, "{messages:?}: the cause must be reachable as a source");
            for (outer, inner) in messages.iter().zip(&messages[1..]) {
                assert!(!outer.contains(inner.as_str()), "{outer:?} repeats its source {inner:?}");
            }
            let innermost = messages.last().unwrap();
            assert!(
                ["boom", "exceeds the receive limit", "end of buffer"].iter().any(|cause| innermost.contains(cause)),
                "{messages:?}"
            );
        }
    }

    #[test]
    fn errors_display_and_chain() {
        let io_error = IpcError::from(io::Error::other("boom"));
        assert_eq!(io_error.source().unwrap().to_string(), "boom");
        assert_eq!(IpcError::Disconnected.to_string(), "channel disconnected");
        let serde = IpcError::from(SerDeError(postcard::Error::DeserializeUnexpectedEnd));
        assert!(matches!(serde, IpcError::SerializationError(_)));
        assert!(serde.source().is_some());
        let try_recv = TryRecvError::from(IpcError::Disconnected);
        assert_eq!(try_recv.source().unwrap().to_string(), "channel disconnected");
        assert_eq!(TryRecvError::Empty.to_string(), "channel empty");
        assert!(TrySelectError::from(io::Error::other("x")).source().is_some());
        assert!(TrySelectError::Empty.source().is_none());
        let full = TrySendError::from_send(5, IpcError::Io(io::ErrorKind::WouldBlock.into()));
        assert!(full.is_full() && format!("{full:?}") == "Full(..)" && full.to_string().contains("full"));
        assert_eq!(full.into_inner(), 5);
        let gone = TrySendError::from_send(6, IpcError::Disconnected);
        assert!(gone.is_disconnected());
        let timeout = SendTimeoutError::from_send(7, IpcError::Io(io::ErrorKind::TimedOut.into()));
        assert!(timeout.is_timeout() && timeout.to_string().contains("timed out"));
        let failed = SendTimeoutError::from_send(8, IpcError::Io(io::Error::other("x")));
        assert!(matches!(failed, SendTimeoutError::Failed(8, _)));
        assert!(SendTimeoutError::from_send(9, IpcError::Disconnected).is_disconnected());
    }
}
