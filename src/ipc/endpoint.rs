//! The two channel ends as every public channel type holds them, with their serde impls.
//!
//! A sender serializes as a clone of itself handed to the message; a receiver *moves* into the
//! message (the end left behind is empty and every later receive on it fails), because a
//! channel has exactly one receiver.

use std::cell::RefCell;
use std::fmt;
use std::io;

use serde::{de, ser, Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{IpcError, TryRecvError};
use crate::handles;
use crate::ipc::ReceiveLimits;
use crate::sys::{OsIpcChannel, OsIpcMessage, OsIpcReceiver, OsIpcSender, RecvError, Wait};

/// The sending end shared by typed, bytes and opaque senders.
#[derive(Clone, Debug)]
pub(crate) struct SenderEnd(pub OsIpcSender);

impl Serialize for SenderEnd {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let index = handles::push_channel(OsIpcChannel::Sender(self.0.clone())).map_err(ser::Error::custom)?;
        serializer.serialize_u32(index)
    }
}

impl<'de> Deserialize<'de> for SenderEnd {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let index = u32::deserialize(deserializer)?;
        let channel = handles::take_channel(index).map_err(de::Error::custom)?;
        Ok(SenderEnd(channel.into_sender().map_err(de::Error::custom)?))
    }
}

/// The receiving end shared by typed, bytes and opaque receivers. Empty once it has been
/// moved into a message.
pub(crate) struct ReceiverEnd(RefCell<Option<OsIpcReceiver>>);

impl ReceiverEnd {
    pub fn new(receiver: OsIpcReceiver) -> Self {
        ReceiverEnd(RefCell::new(Some(receiver)))
    }

    /// Receives one raw message, waiting as `mode` allows.
    pub fn recv(&self, mode: Wait) -> Result<OsIpcMessage, RecvError> {
        self.recv_into(mode, &mut Vec::new())
    }

    /// Receives one raw message whose data may reuse `buffer`'s allocation.
    pub fn recv_into(&self, mode: Wait, buffer: &mut Vec<u8>) -> Result<OsIpcMessage, RecvError> {
        match self.0.borrow().as_ref() {
            Some(receiver) => receiver.recv_into(mode, buffer),
            None => Err(RecvError::Io(moved_error())),
        }
    }

    /// Sets the receive limits (ignored once the receiver was moved into a message).
    pub fn set_limits(&self, limits: ReceiveLimits) {
        if let Some(receiver) = self.0.borrow().as_ref() {
            receiver.set_limits(limits);
        }
    }

    /// The receive limits in force.
    pub fn limits(&self) -> ReceiveLimits {
        self.0.borrow().as_ref().map_or(ReceiveLimits::DEFAULT, OsIpcReceiver::limits)
    }

    /// Moves the receiver out into a new end, leaving this one empty (as if it had been sent).
    pub fn take(&self) -> ReceiverEnd {
        ReceiverEnd(RefCell::new(self.0.borrow_mut().take()))
    }

    /// The OS receiver, unless it was moved into a message.
    pub fn into_inner(self) -> io::Result<OsIpcReceiver> {
        self.0.into_inner().ok_or_else(moved_error)
    }
}

fn moved_error() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "this receiver was moved into a message")
}

impl fmt::Debug for ReceiverEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.try_borrow() {
            Ok(receiver) => write!(f, "{:?}", *receiver),
            Err(_) => write!(f, "<busy>"),
        }
    }
}

impl Serialize for ReceiverEnd {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let receiver = self
            .0
            .borrow_mut()
            .take()
            .ok_or_else(|| ser::Error::custom("this receiver was already moved into a message"))?;
        let index = handles::push_channel(OsIpcChannel::Receiver(receiver)).map_err(ser::Error::custom)?;
        serializer.serialize_u32(index)
    }
}

impl<'de> Deserialize<'de> for ReceiverEnd {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let index = u32::deserialize(deserializer)?;
        let channel = handles::take_channel(index).map_err(de::Error::custom)?;
        Ok(ReceiverEnd::new(channel.into_receiver().map_err(de::Error::custom)?))
    }
}

/// The error a blocking receive reports.
pub(crate) fn ipc_error(error: RecvError) -> IpcError {
    match error {
        RecvError::Disconnected => IpcError::Disconnected,
        RecvError::Io(error) => IpcError::Io(error),
        RecvError::Empty => IpcError::Io(io::ErrorKind::WouldBlock.into()),
    }
}

/// The error a non-blocking or timed receive reports.
pub(crate) fn try_recv_error(error: RecvError) -> TryRecvError {
    match error {
        RecvError::Empty => TryRecvError::Empty,
        error => TryRecvError::IpcError(ipc_error(error)),
    }
}

/// The error a send reports: a vanished receiver is `Disconnected`, anything else is I/O.
pub(crate) fn send_error(error: io::Error) -> IpcError {
    match error.kind() {
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => IpcError::Disconnected,
        _ => IpcError::Io(error),
    }
}
