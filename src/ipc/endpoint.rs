//! The two channel ends as every public channel type holds them, with their serde impls.
//!
//! A sender serializes as a clone of itself handed to the message; a receiver *moves* into the
//! message (the end left behind is empty and every later receive on it fails), because a
//! channel has exactly one receiver.

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::sync::Arc;

use serde::{de, ser, Deserialize, Deserializer, Serialize, Serializer};

use crate::chan::{Message, Receiver, Sender};
use crate::codec::handles::{self, ReturnSlot};
use crate::error::{IpcError, TryRecvError};
use crate::ipc::ReceiveLimits;
use crate::sys::{RecvError, Wait};

/// The sending end shared by typed, bytes and opaque senders.
#[derive(Clone, Debug)]
pub(crate) struct SenderEnd(pub Sender);

impl Serialize for SenderEnd {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let index = handles::push_sender(self.0.clone()).map_err(ser::Error::custom)?;
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
/// moved into a message that was sent.
pub(crate) struct ReceiverEnd {
    receiver: RefCell<Option<Receiver>>,
    /// Set while the receiver is inside a message being sent: if that send fails, the receiver
    /// comes back through this slot (see `handles`), and is taken back on the next use.
    sent: RefCell<Option<ReturnSlot>>,
}

impl ReceiverEnd {
    pub fn new(receiver: Receiver) -> Self {
        ReceiverEnd { receiver: RefCell::new(Some(receiver)), sent: RefCell::new(None) }
    }

    /// The receiver, taken back from a message whose send failed; `None` once it was moved into
    /// a message that was sent.
    fn receiver(&self) -> std::cell::RefMut<'_, Option<Receiver>> {
        let mut sent = self.sent.borrow_mut();
        if let Some(slot) = sent.as_ref() {
            let returned = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
            if let Some(receiver) = returned {
                *self.receiver.borrow_mut() = Some(receiver);
                *sent = None;
            } else if Arc::strong_count(slot) == 1 {
                *sent = None; // the message went out: the receiver is the peer's now
            }
        }
        self.receiver.borrow_mut()
    }

    /// Receives one raw message, waiting as `mode` allows.
    pub fn recv(&self, mode: Wait) -> Result<Message, RecvError> {
        self.recv_into(mode, &mut Vec::new())
    }

    /// Receives one raw message whose data may reuse `buffer`'s allocation.
    pub fn recv_into(&self, mode: Wait, buffer: &mut Vec<u8>) -> Result<Message, RecvError> {
        match self.receiver().as_ref() {
            Some(receiver) => receiver.recv_into(mode, buffer),
            None => Err(RecvError::Io(moved_error())),
        }
    }

    /// Sets the receive limits (ignored once the receiver was moved into a message).
    pub fn set_limits(&self, limits: ReceiveLimits) {
        if let Some(receiver) = self.receiver().as_ref() {
            receiver.set_limits(limits);
        }
    }

    /// The receive limits in force.
    pub fn limits(&self) -> ReceiveLimits {
        self.receiver().as_ref().map_or(ReceiveLimits::DEFAULT, Receiver::limits)
    }

    /// Moves the receiver out into a new end, leaving this one empty (as if it had been sent).
    pub fn take(&self) -> ReceiverEnd {
        ReceiverEnd { receiver: RefCell::new(self.receiver().take()), sent: RefCell::new(None) }
    }

    /// Whether the receiver was moved out (into a message that was sent, or by [`take`](Self::take)).
    pub fn is_moved(&self) -> bool {
        self.receiver().is_none()
    }

    /// The receiver, unless it was moved into a message.
    pub fn into_inner(self) -> io::Result<Receiver> {
        self.receiver().take().ok_or_else(moved_error)
    }

    /// The OS receiver this end is, or becomes by leaving the process (for an
    /// `IpcReceiverSet`, a tokio receiver or a spawned child).
    pub fn into_os(self) -> io::Result<crate::sys::OsIpcReceiver> {
        self.into_inner()?.into_os()
    }
}

fn moved_error() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "this receiver was moved into a message")
}

impl fmt::Debug for ReceiverEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.receiver.try_borrow() {
            Ok(receiver) => write!(f, "{:?}", *receiver),
            Err(_) => write!(f, "<busy>"),
        }
    }
}

impl Serialize for ReceiverEnd {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let receiver = self
            .receiver()
            .take()
            .ok_or_else(|| ser::Error::custom("this receiver was already moved into a message"))?;
        let slot = ReturnSlot::default();
        *self.sent.borrow_mut() = Some(slot.clone());
        let index = handles::push_receiver(receiver, slot).map_err(ser::Error::custom)?;
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
