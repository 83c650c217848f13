//! Untyped messages and channel ends.

use std::fmt;
use std::marker::PhantomData;

use serde::{Deserialize, Serialize};

use super::endpoint::{ReceiverEnd, SenderEnd};
use super::typed::{IpcReceiver, IpcSender};
use crate::chan::{Message, Opaque};
use crate::codec::handles;
use crate::error::SerDeError;
use crate::sys::OsIpcSharedMemory;

/// A received message that is not decoded yet: its bytes and the channels and shared memory it
/// carries. [`IpcReceiverSet::select`](super::IpcReceiverSet::select) and the router hand these
/// out; [`to`](IpcMessage::to) decodes one.
///
/// ```
/// use crossproc::ipc::IpcMessage;
/// let bytes = postcard::to_stdvec(&(1u8, "one".to_string())).unwrap();
/// let message = IpcMessage::from_data(bytes);
/// assert_eq!(message.to::<(u8, String)>().unwrap(), (1, "one".to_string()));
/// ```
pub struct IpcMessage {
    data: Vec<u8>,
    channels: Vec<Opaque>,
    shared_memory: Vec<OsIpcSharedMemory>,
    max_nesting: usize,
}

impl IpcMessage {
    /// A message made of encoded bytes only (no channels, no shared memory).
    pub fn from_data(data: Vec<u8>) -> Self {
        IpcMessage::from(Message::from_data(data))
    }

    /// Decodes the message as a `T`, handing it the channels and shared memory it carries.
    /// Anything the value does not claim is closed.
    pub fn to<T>(self) -> Result<T, SerDeError>
    where
        T: for<'de> Deserialize<'de> + Serialize,
    {
        handles::decode(&self.data, self.channels, self.shared_memory, self.max_nesting)
    }
}

impl From<Message> for IpcMessage {
    fn from(message: Message) -> Self {
        IpcMessage {
            data: message.data,
            channels: message.channels,
            shared_memory: message.shared_memory,
            max_nesting: message.max_nesting,
        }
    }
}

impl From<crate::sys::OsIpcMessage> for IpcMessage {
    fn from(message: crate::sys::OsIpcMessage) -> Self {
        IpcMessage::from(Message::from(message))
    }
}

impl fmt::Debug for IpcMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpcMessage")
            .field("data_len", &self.data.len())
            .field("channels", &self.channels.len())
            .field("shared_memory", &self.shared_memory.len())
            .finish()
    }
}

/// A sender whose message type is not known here; [`to`](OpaqueIpcSender::to) gives the typed end.
///
/// ```
/// let (tx, rx) = crossproc::ipc::channel::<u32>().unwrap();
/// let opaque = tx.to_opaque();
/// opaque.to::<u32>().send(7).unwrap();
/// assert_eq!(rx.recv().unwrap(), 7);
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpaqueIpcSender {
    pub(crate) end: SenderEnd,
}

impl OpaqueIpcSender {
    /// This sender, typed again.
    pub fn to<'de, T>(self) -> IpcSender<T>
    where
        T: Deserialize<'de> + Serialize,
    {
        IpcSender { end: self.end, phantom: PhantomData }
    }
}

/// A receiver whose message type is not known here; [`to`](OpaqueIpcReceiver::to) gives the
/// typed end, and [`IpcReceiverSet::add_opaque`](super::IpcReceiverSet::add_opaque) takes it.
///
/// ```
/// let (tx, rx) = crossproc::ipc::channel::<u32>().unwrap();
/// let rx = rx.to_opaque().to::<u32>();
/// tx.send(7).unwrap();
/// assert_eq!(rx.recv().unwrap(), 7);
/// ```
#[derive(Debug, Serialize, Deserialize)]
pub struct OpaqueIpcReceiver {
    pub(crate) end: ReceiverEnd,
}

impl OpaqueIpcReceiver {
    /// This receiver, typed again.
    pub fn to<'de, T>(self) -> IpcReceiver<T>
    where
        T: Deserialize<'de> + Serialize,
    {
        IpcReceiver { end: self.end, phantom: PhantomData }
    }
}
