//! The handle tables: where channel ends and shared memory go while a message is encoded or
//! decoded.
//!
//! serde gives a `Serialize` impl no way to reach the message being built, so senders,
//! receivers and shared-memory regions found inside a value are moved into a thread-local
//! table, and the value itself carries only their index in it. The rules:
//!
//! 1. A table exists only inside [`encode`] or [`decode`], which install a fresh one and
//!    restore the previous one when they return, on success, on error and on unwind alike
//!    (an RAII guard). A `Serialize` impl that fails halfway leaves nothing for the next message,
//!    and nested use (a `Serialize` impl that itself sends a message) is safe.
//! 2. Outside of a table, serializing a channel is an error, never a panic: channels can only
//!    travel inside a crossproc message.
//! 3. Decoding takes each entry at most once: an index used twice, or out of range, is an error.
//!    Entries no index claimed are dropped (their descriptors closed) when decoding ends.
//! 4. A receiver moved into the outgoing table leaves a [`ReturnSlot`] behind in its end. Unless
//!    the message was sent ([`Outgoing::commit`]), dropping the table puts every such receiver
//!    back in its slot, and the end takes it back on its next use: a value handed back by a
//!    failed send (`TrySendError::Full(v)`, an encoding error, …) is whole.

use std::cell::RefCell;
use std::mem;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::chan::{Channel, Opaque, Receiver, Sender};
use crate::codec::depth::Limited;
use crate::error::SerDeError;
use crate::sys::{OsIpcSharedMemory, PayloadWriter};

/// Where a receiver moved into a message waits to be given back if the message is not sent.
pub(crate) type ReturnSlot = Arc<Mutex<Option<Receiver>>>;

/// What a value handed over while it was encoded.
#[derive(Default)]
pub(crate) struct Outgoing {
    channels: Vec<Channel>,
    shared_memory: Vec<OsIpcSharedMemory>,
    /// The receivers among `channels` (by index), each with the slot its end waits on.
    returns: Vec<(usize, ReturnSlot)>,
}

impl Outgoing {
    /// The channel ends and regions to send; give the ends back with [`give_back`](Self::give_back)
    /// if the send fails, or [`commit`](Self::commit) once it succeeded.
    pub fn take_for_send(&mut self) -> (Vec<Channel>, Vec<OsIpcSharedMemory>) {
        (mem::take(&mut self.channels), mem::take(&mut self.shared_memory))
    }

    /// The channel ends a failed send gave back, in the order they were taken.
    pub fn give_back(&mut self, channels: Vec<Channel>) {
        self.channels = channels;
    }

    /// The message was sent: its receivers now belong to the peer.
    pub fn commit(mut self) {
        self.returns.clear();
    }
}

impl Drop for Outgoing {
    /// Gives every receiver of a message that was not sent back to the end it came from. (A
    /// backend that could not give an end back leaves fewer ends than were taken: those
    /// receivers are lost, as the send's error says.)
    fn drop(&mut self) {
        if self.returns.is_empty() {
            return;
        }
        let mut channels: Vec<Option<Channel>> = mem::take(&mut self.channels).into_iter().map(Some).collect();
        for (index, slot) in self.returns.drain(..) {
            if let Some(Channel::Receiver(receiver)) = channels.get_mut(index).and_then(Option::take) {
                *slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(receiver);
            }
        }
    }
}

/// What a received message carried, waiting to be claimed by index.
#[derive(Default)]
struct Incoming {
    channels: Vec<Option<Opaque>>,
    shared_memory: Vec<Option<OsIpcSharedMemory>>,
}

thread_local! {
    static OUTGOING: RefCell<Option<Outgoing>> = const { RefCell::new(None) };
    static INCOMING: RefCell<Option<Incoming>> = const { RefCell::new(None) };
}

/// Installs `value` in a thread-local slot and puts the previous content back on drop.
struct Scope<T: 'static> {
    slot: &'static std::thread::LocalKey<RefCell<Option<T>>>,
    previous: Option<Option<T>>,
}

impl<T: 'static> Scope<T> {
    fn enter(slot: &'static std::thread::LocalKey<RefCell<Option<T>>>, value: T) -> Self {
        let previous = slot.with(|cell| cell.replace(Some(value)));
        Scope { slot, previous: Some(previous) }
    }

    /// Leaves the scope and returns what the table holds now.
    fn finish(mut self) -> Option<T> {
        let previous = self.previous.take().flatten();
        self.slot.with(|cell| cell.replace(previous))
    }
}

impl<T: 'static> Drop for Scope<T> {
    fn drop(&mut self) {
        if let Some(previous) = self.previous.take() {
            self.slot.with(|cell| cell.replace(previous));
        }
    }
}

/// Where postcard writes a message: the platform's payload writer (a message for an OS channel)
/// or a vector (a message for a local channel).
trait Sink {
    fn push(&mut self, byte: u8);
    fn extend(&mut self, bytes: &[u8]);
}

impl Sink for PayloadWriter {
    #[inline]
    fn push(&mut self, byte: u8) {
        PayloadWriter::push(self, byte);
    }

    #[inline]
    fn extend(&mut self, bytes: &[u8]) {
        PayloadWriter::extend(self, bytes);
    }
}

impl Sink for Vec<u8> {
    #[inline]
    fn push(&mut self, byte: u8) {
        Vec::push(self, byte);
    }

    #[inline]
    fn extend(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// postcard's output. (postcard's own `to_extend` goes through `Extend` one byte at a time,
/// which cost 37 % of a 64 KiB round trip.)
struct Output<W>(W);

impl<W: Sink> postcard::ser_flavors::Flavor for Output<W> {
    type Output = W;

    #[inline]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        self.0.extend(bytes);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<W> {
        Ok(self.0)
    }
}

/// Encodes `value` into `writer` and returns the writer with the handles found inside the value.
pub(crate) fn encode<T: Serialize + ?Sized>(
    value: &T,
    writer: PayloadWriter,
) -> Result<(PayloadWriter, Outgoing), SerDeError> {
    encode_into(value, Output(writer))
}

/// Encodes `value` at the end of `buffer` (a message for a local channel) and returns the
/// bytes with the handles found inside the value.
pub(crate) fn encode_to_vec<T: Serialize + ?Sized>(
    value: &T,
    buffer: Vec<u8>,
) -> Result<(Vec<u8>, Outgoing), SerDeError> {
    encode_into(value, Output(buffer))
}

fn encode_into<T: Serialize + ?Sized, F: postcard::ser_flavors::Flavor>(
    value: &T,
    output: F,
) -> Result<(F::Output, Outgoing), SerDeError> {
    let scope = Scope::enter(&OUTGOING, Outgoing::default());
    let output = crate::codec::encoder::to_flavor(value, output)?;
    Ok((output, scope.finish().unwrap_or_default()))
}

/// Decodes a `T` from `bytes`, letting it claim the given handles.
pub(crate) fn decode<T: for<'de> Deserialize<'de>>(
    bytes: &[u8],
    channels: Vec<Opaque>,
    shared_memory: Vec<OsIpcSharedMemory>,
    max_nesting: usize,
) -> Result<T, SerDeError> {
    let incoming = Incoming {
        channels: channels.into_iter().map(Some).collect(),
        shared_memory: shared_memory.into_iter().map(Some).collect(),
    };
    let _scope = Scope::enter(&INCOMING, incoming);
    let mut deserializer = postcard::Deserializer::from_bytes(bytes);
    Ok(T::deserialize(Limited { inner: &mut deserializer, depth: max_nesting })?)
}

/// Adds a sender to the message being encoded and returns its index.
pub(crate) fn push_sender(sender: Sender) -> Result<u32, &'static str> {
    push_channel(Channel::Sender(sender), None)
}

/// Moves a receiver into the message being encoded and returns its index, or gives the
/// receiver back with the error. `slot` is where it returns if the message is not sent.
pub(crate) fn push_receiver(receiver: Receiver, slot: ReturnSlot) -> Result<u32, &'static str> {
    push_channel(Channel::Receiver(receiver), Some(slot))
}

fn push_channel(channel: Channel, slot: Option<ReturnSlot>) -> Result<u32, &'static str> {
    OUTGOING.with(|cell| {
        let mut table = cell.borrow_mut();
        let Some(table) = table.as_mut() else {
            if let (Some(slot), Channel::Receiver(receiver)) = (slot, channel) {
                *slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(receiver);
            }
            return Err("channels can only be serialized inside a crossproc message");
        };
        let index = table.channels.len();
        table.channels.push(channel);
        if let Some(slot) = slot {
            table.returns.push((index, slot));
        }
        u32::try_from(index).map_err(|_| "too many channels in one message")
    })
}

/// Adds a shared-memory region to the message being encoded and returns its index.
pub(crate) fn push_shared_memory(region: OsIpcSharedMemory) -> Result<u32, &'static str> {
    OUTGOING.with(|cell| {
        let mut table = cell.borrow_mut();
        let table = table.as_mut().ok_or("shared memory can only be serialized inside a crossproc message")?;
        table.shared_memory.push(region);
        u32::try_from(table.shared_memory.len() - 1).map_err(|_| "too many shared memory regions in one message")
    })
}

/// Claims the channel end at `index` of the message being decoded.
pub(crate) fn take_channel(index: u32) -> Result<Opaque, &'static str> {
    INCOMING.with(|cell| {
        let mut table = cell.borrow_mut();
        let table = table.as_mut().ok_or("channels can only be deserialized from a crossproc message")?;
        table
            .channels
            .get_mut(index as usize)
            .and_then(Option::take)
            .ok_or("message refers to a channel it does not carry")
    })
}

/// Claims the shared-memory region at `index` of the message being decoded.
pub(crate) fn take_shared_memory(index: u32) -> Result<OsIpcSharedMemory, &'static str> {
    INCOMING.with(|cell| {
        let mut table = cell.borrow_mut();
        let table = table.as_mut().ok_or("shared memory can only be deserialized from a crossproc message")?;
        table
            .shared_memory
            .get_mut(index as usize)
            .and_then(Option::take)
            .ok_or("message refers to shared memory it does not carry")
    })
}
