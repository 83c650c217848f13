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

use std::cell::RefCell;

use serde::{Deserialize, Serialize};

use crate::depth::Limited;
use crate::error::SerDeError;
use crate::sys::{OsIpcChannel, OsIpcSharedMemory, OsOpaqueIpcChannel, PayloadWriter};

/// What a value handed over while it was encoded.
#[derive(Default)]
pub(crate) struct Outgoing {
    pub channels: Vec<OsIpcChannel>,
    pub shared_memory: Vec<OsIpcSharedMemory>,
}

/// What a received message carried, waiting to be claimed by index.
#[derive(Default)]
struct Incoming {
    channels: Vec<Option<OsOpaqueIpcChannel>>,
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

/// postcard's output: the platform's payload writer. (postcard's own `to_extend` goes through
/// `Extend` one byte at a time, which cost 37 % of a 64 KiB round trip.)
struct Output(PayloadWriter);

impl postcard::ser_flavors::Flavor for Output {
    type Output = PayloadWriter;

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

    fn finalize(self) -> postcard::Result<PayloadWriter> {
        Ok(self.0)
    }
}

/// Encodes `value` into `writer` and returns the writer with the handles found inside the value.
pub(crate) fn encode<T: Serialize + ?Sized>(
    value: &T,
    writer: PayloadWriter,
) -> Result<(PayloadWriter, Outgoing), SerDeError> {
    let scope = Scope::enter(&OUTGOING, Outgoing::default());
    let writer = crate::encoder::to_flavor(value, Output(writer))?;
    Ok((writer, scope.finish().unwrap_or_default()))
}

/// Decodes a `T` from `bytes`, letting it claim the given handles.
pub(crate) fn decode<T: for<'de> Deserialize<'de>>(
    bytes: &[u8],
    channels: Vec<OsOpaqueIpcChannel>,
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

/// Adds a channel end to the message being encoded and returns its index.
pub(crate) fn push_channel(channel: OsIpcChannel) -> Result<u32, &'static str> {
    OUTGOING.with(|cell| {
        let mut table = cell.borrow_mut();
        let table = table.as_mut().ok_or("channels can only be serialized inside a crossproc message")?;
        table.channels.push(channel);
        u32::try_from(table.channels.len() - 1).map_err(|_| "too many channels in one message")
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
pub(crate) fn take_channel(index: u32) -> Result<OsOpaqueIpcChannel, &'static str> {
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
