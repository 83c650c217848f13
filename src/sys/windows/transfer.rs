//! How channel ends, shared memory and queued messages move between processes.
//!
//! Sending: an [`Exporter`] places every handle a message carries in the receiving process's
//! handle table (`DuplicateHandle`) and records the values in the header; if the message is not
//! sent after all, it closes them there again. A receiver on its way out is first detached:
//! under its channel's lock it takes every message queued for it out of its pipe (their handles
//! were placed in this process), names the new owner, and carries those messages along as its
//! backlog, so nothing queued for it is lost or lands in the wrong process.
//!
//! Receiving: [`import`] checks a header whole and against the receiver's limits before it adopts
//! a single handle, then builds the message bottom-up (backlogs first).

use std::collections::VecDeque;
use std::io;
use std::mem;
use std::os::windows::io::OwnedHandle;
use std::sync::Arc;

use super::frame::{self, BodyWire, ChannelWire, EndWire, Header, PayloadWire, SectionWire};
use super::pipe::{ChannelState, OsIpcReceiver, OsIpcSender, OsOpaqueIpcChannel, Reader, INLINE_MAX, LOCK_RETRY};
use super::section::{ChannelCell, OsIpcSharedMemory, View};
use super::sys::{adopt, Peer, SharedLock};
use crate::sys::{LimitsCell, ReceiveLimits};
use crate::sys::{OsIpcChannel, OsIpcMessage, RecvError};

/// A message decoded in this process: bytes, channel ends and regions, all owned here.
pub(super) struct Parcel {
    payload: Vec<u8>,
    channels: Vec<OsOpaqueIpcChannel>,
    shared_memory: Vec<OsIpcSharedMemory>,
}

impl Parcel {
    /// The message, once it passes `limits`.
    pub fn open(self, limits: &LimitsCell) -> Result<OsIpcMessage, RecvError> {
        let handles = self.channels.len() + self.shared_memory.len();
        limits.check(self.payload.len() as u64, handles).map_err(|limit| RecvError::Io(limit.into_io()))?;
        Ok(OsIpcMessage {
            data: self.payload,
            channels: self.channels,
            shared_memory: self.shared_memory,
            max_nesting: limits.max_nesting(),
        })
    }

    /// The first channel end the message carried, if any (a server's hello carries one).
    pub fn take_channel(&mut self) -> Option<OsIpcChannel> {
        (!self.channels.is_empty()).then(|| self.channels.remove(0).0)
    }
}

/// The pipe message for bytes alone (no handles, so no process is named).
pub(super) fn bytes_only(data: &[u8]) -> io::Result<Vec<u8>> {
    let body = BodyWire { payload: PayloadWire::Trailing, channels: Vec::new(), shared_memory: Vec::new() };
    Header { target_pid: 0, bodies: vec![body] }.encode(data)
}

/// Builds one outgoing message whose handles go to `peer`.
pub(super) struct Exporter<'a> {
    peer: &'a Peer,
    given: Vec<u64>,
    bodies: Vec<Option<BodyWire>>,
}

impl<'a> Exporter<'a> {
    pub fn new(peer: &'a Peer) -> Self {
        Exporter { peer, given: Vec::new(), bodies: Vec::new() }
    }

    /// The pipe message for `data` with these channel ends and regions.
    pub fn message(
        &mut self,
        data: &[u8],
        channels: Vec<OsIpcChannel>,
        shared_memory: Vec<OsIpcSharedMemory>,
    ) -> io::Result<Vec<u8>> {
        let (payload, trailing) = if data.len() > INLINE_MAX {
            let view = View::create(data.len(), |region| region.copy_from_slice(data))?;
            (PayloadWire::Section(self.section(&view)?), &[][..])
        } else {
            (PayloadWire::Trailing, data)
        };
        self.bodies.push(None);
        let body = self.body(payload, channels, shared_memory)?;
        self.bodies[0] = Some(body);
        let bodies = mem::take(&mut self.bodies).into_iter().map(|body| body.expect("every body filled")).collect();
        Header { target_pid: self.peer.pid, bodies }.encode(trailing)
    }

    /// `message`, or the indirect message that names a section holding it when it is larger
    /// than the pipe should hold (see [`frame`](super::frame)).
    pub fn fit_the_pipe(&mut self, message: Vec<u8>) -> io::Result<Vec<u8>> {
        if message.len() <= frame::INDIRECT_ABOVE {
            return Ok(message);
        }
        let view = View::create(message.len(), |region| region.copy_from_slice(&message))?;
        Ok(frame::encode_indirect(self.peer.pid, self.section(&view)?))
    }

    /// Closes in the peer every handle this exporter placed there (the message was not sent).
    pub fn take_back(&mut self) {
        for value in self.given.drain(..) {
            self.peer.take_back(value);
        }
    }

    fn record(&mut self, value: io::Result<u64>) -> io::Result<u64> {
        let value = value?;
        self.given.push(value);
        Ok(value)
    }

    /// A queued message's bytes: inline in the header, or in a new section when large.
    fn payload(&mut self, bytes: Vec<u8>) -> io::Result<PayloadWire> {
        if bytes.len() <= INLINE_MAX {
            return Ok(PayloadWire::Inline(bytes));
        }
        let view = View::create(bytes.len(), |region| region.copy_from_slice(&bytes))?;
        Ok(PayloadWire::Section(self.section(&view)?))
    }

    fn section(&mut self, view: &View) -> io::Result<SectionWire> {
        let handle = self.record(view.give(self.peer))?;
        Ok(SectionWire { handle, len: view.len() as u64 })
    }

    fn body(
        &mut self,
        payload: PayloadWire,
        channels: Vec<OsIpcChannel>,
        regions: Vec<OsIpcSharedMemory>,
    ) -> io::Result<BodyWire> {
        let mut shared_memory = Vec::with_capacity(regions.len());
        for region in &regions {
            shared_memory.push(self.section(&region.0)?);
        }
        let mut ends = Vec::with_capacity(channels.len());
        for end in channels {
            ends.push(self.end(end)?);
        }
        Ok(BodyWire { payload, channels: ends, shared_memory })
    }

    fn channel(&mut self, pipe: &OwnedHandle, state: &ChannelState) -> io::Result<ChannelWire> {
        Ok(ChannelWire {
            pipe: self.record(self.peer.give(pipe, None))?,
            lock: self.record(self.peer.give(&state.lock.0, None))?,
            cell: self.record(state.cell.give(self.peer))?,
        })
    }

    fn end(&mut self, end: OsIpcChannel) -> io::Result<EndWire> {
        match end {
            OsIpcChannel::Sender(sender) => Ok(EndWire::Sender(self.channel(sender.pipe(), sender.state())?)),
            OsIpcChannel::Receiver(receiver) => {
                let mut reader = detach(receiver, self.peer.pid)?;
                let channel = self.channel(reader.pipe(), &reader.state)?;
                let backlog = mem::take(&mut reader.backlog);
                let (first, count) = (self.bodies.len(), backlog.len());
                self.bodies.extend(backlog.iter().map(|_| None));
                for (index, parcel) in backlog.into_iter().enumerate() {
                    let payload = self.payload(parcel.payload)?;
                    let channels = parcel.channels.into_iter().map(|end| end.0).collect();
                    self.bodies[first + index] = Some(self.body(payload, channels, parcel.shared_memory)?);
                }
                let too_many = || io::Error::other("too many queued messages to move a receiver");
                let first = u32::try_from(first).map_err(|_| too_many())?;
                let count = u32::try_from(count).map_err(|_| too_many())?;
                Ok(EndWire::Receiver { channel, first, count })
            }
        }
    }
}

/// Takes a receiver out of service before it moves to process `new_owner`: under the channel's
/// lock, everything queued in its pipe joins its backlog and the owner cell names `new_owner`, so
/// every later message with handles places them there.
pub(super) fn detach(receiver: OsIpcReceiver, new_owner: u32) -> io::Result<Reader> {
    let limits = receiver.limits();
    let mut reader = receiver.into_reader();
    let state = reader.state.clone();
    let guard = loop {
        // A sender may hold the lock while it waits for room in this very pipe: empty it.
        if let Some(guard) = state.lock.lock_until(std::time::Instant::now().checked_add(LOCK_RETRY))? {
            break guard;
        }
        reader.drain(&limits);
    };
    reader.drain(&limits);
    if let Some(message) = reader.cancel(&limits) {
        if let Ok(parcel) = import(&message, &limits) {
            reader.backlog.push_back(parcel);
        }
    }
    state.cell.set_owner(new_owner);
    reader.detached = true;
    drop(guard);
    Ok(reader)
}

/// Decodes a pipe message received by this process (the section's copy, for an indirect one).
pub(super) fn import(message: &[u8], limits: &ReceiveLimits) -> io::Result<Parcel> {
    let Some((target_pid, section)) = frame::decode_indirect(message)? else {
        return import_direct(message, limits);
    };
    let refuse = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("malformed message: {what}"));
    // Before the handle is taken: a value not placed here may be one of this process's own
    // (review 8, R8-3: a forged indirect hello made a server close a handle of its own).
    if target_pid != std::process::id() {
        return Err(refuse("its handles were placed in another process"));
    }
    // Bounded before anything is mapped: the payloads, and room for the header over them.
    if section.len > limits.max_message_bytes.saturating_add(1 << 20) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "a message longer than the receiver's limits"));
    }
    let len = section_len(section.len)?;
    // Copied out at once: the sender keeps a writable handle to its section.
    let mut inner = crate::sys::message_buffer(len)?;
    inner.extend_from_slice(&View::open(adopt(section.handle)?, len)?);
    if frame::decode_indirect(&inner)?.is_some() {
        return Err(refuse("an indirect message inside another"));
    }
    import_direct(&inner, limits)
}

/// Decodes a pipe message that holds itself.
fn import_direct(message: &[u8], limits: &ReceiveLimits) -> io::Result<Parcel> {
    let (header, offset) = Header::decode(message)?;
    let trailing = &message[offset..];
    let (handles, bytes) = header.totals(trailing.len());
    let refuse = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("malformed message: {what}"));
    if header.target_pid != std::process::id() && !(header.target_pid == 0 && handles == 0) {
        return Err(refuse("its handles were placed in another process"));
    }
    LimitsCell::new(*limits).check(bytes, handles).map_err(|limit| limit.into_io())?;

    // A value named twice would be closed twice (the second time, maybe someone else's handle).
    let values: Vec<u64> = header.bodies.iter().rev().flat_map(handle_values).collect();
    let mut distinct = values.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() != values.len() {
        return Err(refuse("it names one handle twice"));
    }
    // Adopt every handle first (in the order built below), so that any failure closes them all.
    let mut adopted = VecDeque::with_capacity(values.len());
    for value in values {
        adopted.push_back(adopt(value)?);
    }
    let mut next = || adopted.pop_front().expect("one adopted handle per value");

    let count = header.bodies.len();
    let mut built: Vec<Option<Parcel>> = (0..count).map(|_| None).collect();
    for (index, body) in header.bodies.into_iter().enumerate().rev() {
        let payload = match body.payload {
            PayloadWire::Trailing => trailing.to_vec(),
            PayloadWire::Inline(bytes) => bytes,
            // Copied out at once: the sender keeps a writable handle to its section.
            PayloadWire::Section(section) => {
                let len = section_len(section.len)?;
                let mut bytes = crate::sys::message_buffer(len)?;
                bytes.extend_from_slice(&View::open(next(), len)?);
                bytes
            }
        };
        let mut shared_memory = Vec::with_capacity(body.shared_memory.len());
        for section in &body.shared_memory {
            shared_memory.push(OsIpcSharedMemory(Arc::new(View::open(next(), section_len(section.len)?)?)));
        }
        let mut channels = Vec::with_capacity(body.channels.len());
        for end in body.channels {
            let (pipe, lock, cell) = (next(), next(), next());
            let state = Arc::new(ChannelState { lock: SharedLock(lock), cell: ChannelCell::open(cell)? });
            channels.push(OsOpaqueIpcChannel(match end {
                EndWire::Sender(_) => OsIpcChannel::Sender(OsIpcSender::from_parts(pipe, state)),
                EndWire::Receiver { first, count, .. } => {
                    let range = first as usize..(first + count) as usize;
                    let backlog = built[range].iter_mut().map(|parcel| parcel.take().expect("checked tree")).collect();
                    OsIpcChannel::Receiver(OsIpcReceiver::from_parts(pipe, state, backlog)?)
                }
            }));
        }
        built[index] = Some(Parcel { payload, channels, shared_memory });
    }
    Ok(built[0].take().expect("body 0 exists"))
}

fn section_of(payload: &PayloadWire) -> Option<SectionWire> {
    match payload {
        PayloadWire::Section(section) => Some(*section),
        _ => None,
    }
}

fn section_len(len: u64) -> io::Result<usize> {
    usize::try_from(len).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "a region larger than memory"))
}

/// A body's handle values, in the order [`import`] consumes them.
fn handle_values(body: &BodyWire) -> impl Iterator<Item = u64> + '_ {
    let payload = section_of(&body.payload).map(|section| section.handle);
    let regions = body.shared_memory.iter().map(|section| section.handle);
    let ends = body.channels.iter().flat_map(|end| {
        let (EndWire::Sender(channel) | EndWire::Receiver { channel, .. }) = end;
        [channel.pipe, channel.lock, channel.cell]
    });
    payload.into_iter().chain(regions).chain(ends)
}
