//! Channels: one message-mode named pipe per channel, written by every sender and read by the
//! one receiver with overlapped I/O.
//!
//! Each channel also has a lock and an owner cell (which process holds the receiver), shared by
//! every process holding one of its ends. A message that carries handles (channel ends, shared
//! memory, a payload in a section) places them in the owner's handle table while holding the
//! lock; a receiver that moves to another process takes the lock, collects what is queued for it
//! (see [`super::transfer`]) and names its new owner before anyone sends it handles again.
//! Messages with bytes only are written without the lock: their position in the pipe is all
//! that matters, and the receiver's backlog always comes first.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::mem;
use std::os::windows::io::OwnedHandle;
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::{
    ERROR_BROKEN_PIPE, ERROR_IO_INCOMPLETE, ERROR_IO_PENDING, ERROR_MORE_DATA, ERROR_NO_DATA, ERROR_OPERATION_ABORTED,
    ERROR_PIPE_NOT_CONNECTED, GENERIC_WRITE, HANDLE,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, ReadFile, WriteFile, FILE_FLAG_FIRST_PIPE_INSTANCE, FILE_FLAG_OVERLAPPED, OPEN_EXISTING,
    PIPE_ACCESS_INBOUND,
};
use windows_sys::Win32::System::Pipes::{
    CreateNamedPipeW, PeekNamedPipe, PIPE_READMODE_MESSAGE, PIPE_REJECT_REMOTE_CLIENTS, PIPE_TYPE_MESSAGE, PIPE_WAIT,
};
use windows_sys::Win32::System::IO::{CancelIoEx, GetOverlappedResult, OVERLAPPED};

use super::section::{ChannelCell, OsIpcSharedMemory, MESSAGE_OVERHEAD};
use super::sys::{check, deadline, event, finish_overlapped, owned, random_u64, raw, wait_for, wide, Peer, SharedLock};
use super::transfer::{self, Exporter, Parcel};
use crate::sys::heap_writer::{Encoded, PayloadWriter};
use crate::sys::{LimitsCell, ReceiveLimits};
use crate::sys::{OsIpcChannel, OsIpcMessage, RecvError, SendFailure, Wait};

/// The pipe's input quota: how many bytes of messages may wait for the receiver.
pub(super) const PIPE_BUFFER: u32 = 256 * 1024;
/// Payloads above this travel in a section instead of the pipe.
pub(crate) const INLINE_MAX: usize = 64 * 1024;
/// The first read of a message asks for this much; a longer message is read on in a second step.
const FIRST_READ: usize = INLINE_MAX + 4096;

/// How long a receiver on its way out waits for its channel's lock before emptying its pipe
/// again (a sender may hold the lock while it waits for room in that very pipe).
pub(super) const LOCK_RETRY: Duration = Duration::from_millis(5);

static NEXT_PIPE: AtomicU64 = AtomicU64::new(0);

/// What every end of one channel in one process shares: the channel's lock and owner cell.
pub(super) struct ChannelState {
    pub lock: SharedLock,
    pub cell: ChannelCell,
}

/// A new channel: the sending end and the receiving end.
pub(crate) fn channel() -> io::Result<(OsIpcSender, OsIpcReceiver)> {
    let name = wide(&format!(
        r"\\.\pipe\crossproc-{}-{}-{:016x}",
        std::process::id(),
        NEXT_PIPE.fetch_add(1, Ordering::Relaxed),
        random_u64()
    ));
    // The first-instance flag and a single instance mean no other process can own or join this
    // pipe.
    // SAFETY: `name` is a zero-terminated UTF-16 string; the result is checked by `owned`.
    let server = owned(unsafe {
        CreateNamedPipeW(
            name.as_ptr(),
            PIPE_ACCESS_INBOUND | FILE_FLAG_OVERLAPPED | FILE_FLAG_FIRST_PIPE_INSTANCE,
            PIPE_TYPE_MESSAGE | PIPE_READMODE_MESSAGE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS,
            1,
            0,
            PIPE_BUFFER,
            0,
            ptr::null(),
        )
    })?;
    // SAFETY: as above; opening the only instance connects it.
    let client = owned(unsafe {
        CreateFileW(name.as_ptr(), GENERIC_WRITE, 0, ptr::null(), OPEN_EXISTING, FILE_FLAG_OVERLAPPED, ptr::null_mut())
    })?;
    let state = Arc::new(ChannelState { lock: SharedLock::new()?, cell: ChannelCell::new(PIPE_BUFFER)? });
    Ok((OsIpcSender::from_parts(client, state.clone()), OsIpcReceiver::from_parts(server, state, VecDeque::new())?))
}

/// Maps the pipe errors that mean "the other end is gone" to `BrokenPipe`.
fn pipe_error(error: io::Error) -> io::Error {
    match error.raw_os_error().map(|code| code as u32) {
        Some(ERROR_BROKEN_PIPE | ERROR_NO_DATA | ERROR_PIPE_NOT_CONNECTED) => io::ErrorKind::BrokenPipe.into(),
        _ => error,
    }
}

thread_local! {
    /// The event this thread's overlapped writes wait on.
    static WRITE_EVENT: Option<OwnedHandle> = event().ok();
}

/// The sending end of a channel.
#[derive(Clone)]
pub(crate) struct OsIpcSender(Arc<SenderInner>);

struct SenderInner {
    pipe: OwnedHandle,
    state: Arc<ChannelState>,
    /// The receiver's process, opened for the last message that carried handles.
    peer: Mutex<Option<Peer>>,
}

impl OsIpcSender {
    pub(super) fn from_parts(pipe: OwnedHandle, state: Arc<ChannelState>) -> Self {
        OsIpcSender(Arc::new(SenderInner { pipe, state, peer: Mutex::new(None) }))
    }

    pub(super) fn pipe(&self) -> &OwnedHandle {
        &self.0.pipe
    }

    pub(super) fn state(&self) -> &ChannelState {
        &self.0.state
    }

    /// Connects to the server named `name`, if its admission rule agrees.
    pub fn connect(name: &str) -> io::Result<OsIpcSender> {
        super::server::connect(name)
    }

    /// Sends one message, waiting for room in the pipe as `wait` allows.
    pub fn send(
        &self,
        data: &[u8],
        channels: Vec<OsIpcChannel>,
        shared_memory: Vec<OsIpcSharedMemory>,
        wait: Wait,
    ) -> Result<(), SendFailure> {
        let deadline = deadline(wait);
        let timed_out = || match wait {
            Wait::NonBlocking => io::Error::from(io::ErrorKind::WouldBlock),
            _ => io::Error::new(io::ErrorKind::TimedOut, "the channel stayed full"),
        };
        if channels.is_empty() && shared_memory.is_empty() && data.len() <= INLINE_MAX {
            let posted = transfer::bytes_only(data).and_then(|message| self.post(&message, wait, deadline));
            return posted.and_then(|posted| posted.ok_or_else(timed_out)).map_err(SendFailure::from);
        }
        // Until the message is exported, a failure gives the channel ends back untouched.
        let failed = |error: io::Error, channels: Vec<OsIpcChannel>| Err(SendFailure { error, channels });
        let _guard = match self.0.state.lock.lock_until(deadline) {
            Ok(Some(guard)) => guard,
            Ok(None) => return failed(timed_out(), channels),
            Err(error) => return failed(error, channels),
        };
        let mut peer = self.0.peer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let owner = self.0.state.cell.owner();
        if owner == RECEIVER_GONE {
            return failed(io::ErrorKind::BrokenPipe.into(), channels);
        }
        if !matches!(&*peer, Some(peer) if peer.pid == owner) {
            match Peer::open(owner) {
                Ok(opened) => *peer = Some(opened),
                Err(_) => return failed(io::ErrorKind::BrokenPipe.into(), channels),
            }
        }
        let peer = peer.as_ref().expect("just opened");
        // A channel without room for even the data is reported before anything is exported, so
        // the common failures (full, timed out) give every end back.
        if !matches!(wait, Wait::Blocking) && !self.wait_for_room(MESSAGE_OVERHEAD + data.len() as u64, deadline) {
            return failed(timed_out(), channels);
        }
        // Exporting detaches every moving receiver (its queue goes into the message, its owner
        // is renamed), which cannot be undone here: from now on a failure (the budget taken
        // meanwhile, a message larger than its data because of a moving receiver's queue, a
        // broken pipe) loses those ends.
        let mut exporter = Exporter::new(peer);
        let sent = exporter
            .message(data, channels, shared_memory)
            .and_then(|message| exporter.fit_the_pipe(message))
            .and_then(|message| self.post(&message, wait, deadline));
        match sent {
            Ok(Some(())) => Ok(()),
            Ok(None) => {
                exporter.take_back();
                Err(timed_out().into())
            }
            Err(error) => {
                exporter.take_back();
                Err(error.into())
            }
        }
    }

    /// Waits until the budget has room for `cost` bytes, until `deadline` at most.
    fn wait_for_room(&self, cost: u64, deadline: Option<Instant>) -> bool {
        retry_until(deadline, || self.0.state.cell.has_room(cost))
    }

    /// Takes the message's cost from the channel's budget (waiting for room until `deadline`;
    /// a blocking send takes it regardless and lets the pipe hold it back), then writes it.
    /// `None` when there was no room in time; nothing was written then.
    fn post(&self, message: &[u8], wait: Wait, deadline: Option<Instant>) -> io::Result<Option<()>> {
        let cell = &self.0.state.cell;
        let cost = MESSAGE_OVERHEAD + message.len() as u64;
        if !retry_until(deadline, || cell.try_reserve(cost, matches!(wait, Wait::Blocking))) {
            return Ok(None);
        }
        let written = write_message(&self.0.pipe, message, deadline);
        if !matches!(written, Ok(Some(()))) {
            cell.release(cost);
        }
        written
    }

    /// A writer to encode one message for this channel in.
    pub fn payload_writer(&self, buffer: Vec<u8>) -> PayloadWriter {
        PayloadWriter::new(buffer)
    }

    /// Like [`send`](Self::send), for bytes a [`PayloadWriter`](super::PayloadWriter) produced.
    pub fn send_encoded(
        &self,
        encoded: &Encoded,
        channels: Vec<OsIpcChannel>,
        shared_memory: Vec<OsIpcSharedMemory>,
        wait: Wait,
    ) -> Result<(), SendFailure> {
        self.send(encoded.bytes(), channels, shared_memory, wait)
    }

    /// Sets the channel's byte budget: what `try_send` and `send_timeout` let wait in the pipe
    /// (the pipe's own quota, fixed at creation, still holds back blocking sends beyond it).
    pub fn set_buffer_size(&self, bytes: usize) -> io::Result<()> {
        self.0.state.cell.set_capacity(bytes.min(u32::MAX as usize) as u32);
        Ok(())
    }

    /// Nothing to raise for a local channel's backlog (see the Linux backend): a pipe's budget
    /// counts what the local budget counts, and is larger by default (review 11, N3).
    pub fn raise_for_backlog(&self, _budget: usize) -> Option<usize> {
        None
    }

    /// The channel's byte budget.
    pub fn buffer_size(&self) -> io::Result<usize> {
        Ok(self.0.state.cell.capacity() as usize)
    }
}

impl fmt::Debug for OsIpcSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OsIpcSender({:?})", raw(&self.0.pipe))
    }
}

/// Writes one whole pipe message; `None` when `deadline` passed before it fit (nothing written).
pub(super) fn write_message(pipe: &OwnedHandle, message: &[u8], deadline: Option<Instant>) -> io::Result<Option<()>> {
    let len = u32::try_from(message.len()).map_err(|_| io::Error::other("message header too large"))?;
    WRITE_EVENT.with(|event| {
        let event = event.as_ref().ok_or_else(|| io::Error::other("no event for overlapped writes"))?;
        // SAFETY: all-zero is a valid OVERLAPPED.
        let mut overlapped: OVERLAPPED = unsafe { mem::zeroed() };
        overlapped.hEvent = raw(event);
        // `finish_overlapped` waits until the kernel is done before either is dropped.
        // SAFETY: `message` and `overlapped` outlive the write.
        let started = unsafe { WriteFile(raw(pipe), message.as_ptr(), len, ptr::null_mut(), &mut overlapped) };
        match finish_overlapped(raw(pipe), &overlapped, started, deadline).map_err(pipe_error)? {
            Some(written) if written == len => Ok(Some(())),
            Some(_) => Err(io::Error::other("the pipe took part of a message")),
            None => Ok(None),
        }
    })
}

/// The receiving end of a channel.
pub(crate) struct OsIpcReceiver {
    reader: Mutex<Reader>,
    limits: LimitsCell,
}

/// A receiver's pipe, its read in flight, and the messages already taken from the pipe.
/// Calls `ready` every millisecond until it says yes (`true`) or `deadline` passes (`false`; no
/// deadline means one try). The budget lives in memory other processes change, with nothing to
/// wait on.
fn retry_until(deadline: Option<Instant>, mut ready: impl FnMut() -> bool) -> bool {
    while !ready() {
        let left = deadline.map_or(Duration::ZERO, |deadline| deadline.saturating_duration_since(Instant::now()));
        if left.is_zero() {
            return false;
        }
        std::thread::sleep(left.min(Duration::from_millis(1)));
    }
    true
}

/// The owner a channel's cell names once its receiver was dropped (no process has id 0).
const RECEIVER_GONE: u32 = 0;

pub(super) struct Reader {
    pipe: OwnedHandle,
    pub state: Arc<ChannelState>,
    pub backlog: VecDeque<Parcel>,
    read: Option<Box<PendingRead>>,
    event: OwnedHandle,
    /// Given away to another end: what is still queued in the pipe is no longer ours to close.
    pub detached: bool,
}

/// An overlapped read in flight: the kernel writes into both fields until it completes.
struct PendingRead {
    overlapped: OVERLAPPED,
    buffer: Vec<u8>,
}

// The pointers inside OVERLAPPED are an event handle and kernel bookkeeping.
// SAFETY: a read belongs to one `Reader`, used by one thread at a time behind its mutex.
unsafe impl Send for PendingRead {}

impl OsIpcReceiver {
    pub(super) fn from_parts(
        pipe: OwnedHandle,
        state: Arc<ChannelState>,
        backlog: VecDeque<Parcel>,
    ) -> io::Result<Self> {
        let reader = Reader { pipe, state, backlog, read: None, event: event()?, detached: false };
        Ok(OsIpcReceiver { reader: Mutex::new(reader), limits: LimitsCell::new(ReceiveLimits::DEFAULT) })
    }

    pub(super) fn reader(&self) -> MutexGuard<'_, Reader> {
        self.reader.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn into_reader(self) -> Reader {
        self.reader.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets the limits every later message is checked against.
    pub fn set_limits(&self, limits: ReceiveLimits) {
        self.limits.set(limits);
    }

    /// The limits in force.
    pub fn limits(&self) -> ReceiveLimits {
        self.limits.get()
    }

    /// Like [`recv`](Self::recv); `buffer` is not used (messages are read into vectors of
    /// their own).
    pub fn recv_into(&self, mode: Wait, _buffer: &mut Vec<u8>) -> Result<OsIpcMessage, RecvError> {
        self.recv(mode)
    }

    /// Receives the next message, waiting as `mode` allows.
    pub fn recv(&self, mode: Wait) -> Result<OsIpcMessage, RecvError> {
        let deadline = deadline(mode);
        let limits = self.limits.get();
        let mut reader = self.reader();
        loop {
            if let Some(parcel) = reader.backlog.pop_front() {
                return parcel.open(&self.limits);
            }
            if let Some(message) = reader.poll(&limits)? {
                return transfer::import(&message, &limits)?.open(&self.limits);
            }
            if !wait_for(raw(&reader.event), deadline)? {
                return Err(RecvError::Empty);
            }
        }
    }
}

impl fmt::Debug for OsIpcReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OsIpcReceiver({:?})", raw(&self.reader().pipe))
    }
}

impl Reader {
    pub(super) fn pipe(&self) -> &OwnedHandle {
        &self.pipe
    }

    /// The event a read in flight signals when it completes.
    pub(super) fn event(&self) -> HANDLE {
        raw(&self.event)
    }

    /// Starts a read unless one is in flight.
    fn start(&mut self) -> io::Result<()> {
        if self.read.is_some() {
            return Ok(());
        }
        // SAFETY: all-zero is a valid OVERLAPPED.
        let mut read = Box::new(PendingRead { overlapped: unsafe { mem::zeroed() }, buffer: vec![0; FIRST_READ] });
        read.overlapped.hEvent = raw(&self.event);
        let PendingRead { overlapped, buffer } = &mut *read;
        let (pipe, into, len) = (raw(&self.pipe), buffer.as_mut_ptr(), buffer.len() as u32);
        // The read is finished, or cancelled and waited for, in `poll` and `cancel`.
        // SAFETY: the boxed OVERLAPPED and buffer stay put and alive until then.
        let started = unsafe { ReadFile(pipe, into, len, ptr::null_mut(), overlapped) };
        if started == 0 {
            let error = io::Error::last_os_error();
            if !matches!(error.raw_os_error().map(|code| code as u32), Some(ERROR_IO_PENDING | ERROR_MORE_DATA)) {
                return Err(pipe_error(error));
            }
        }
        self.read = Some(read);
        Ok(())
    }

    /// The next whole pipe message if one has arrived, without waiting for one.
    pub(super) fn poll(&mut self, limits: &ReceiveLimits) -> Result<Option<Vec<u8>>, RecvError> {
        self.start().map_err(closed_or_io)?;
        let read = self.read.as_ref().expect("a read in flight");
        let mut transferred = 0;
        // SAFETY: the read is ours and in flight or finished; no waiting.
        let finished = check(unsafe { GetOverlappedResult(raw(&self.pipe), &read.overlapped, &mut transferred, 0) });
        match finished {
            Err(error) if error.raw_os_error() == Some(ERROR_IO_INCOMPLETE as i32) => Ok(None),
            outcome => {
                let read = self.read.take().expect("a read in flight");
                self.finish(read, outcome, transferred, limits).map(Some)
            }
        }
    }

    /// Turns a completed read into the whole message, reading on when the message was longer
    /// than the first read.
    fn finish(
        &self,
        read: Box<PendingRead>,
        outcome: io::Result<()>,
        transferred: u32,
        limits: &ReceiveLimits,
    ) -> Result<Vec<u8>, RecvError> {
        let mut message = read.buffer;
        message.truncate(transferred as usize);
        let mut total = transferred as u64;
        let mut outcome = outcome;
        // Headroom for the header over the payload limit.
        let most = limits.max_message_bytes.saturating_add(1 << 20);
        let mut discarding = false;
        while let Err(error) = outcome {
            if error.raw_os_error() != Some(ERROR_MORE_DATA as i32) {
                return Err(closed_or_io(pipe_error(error)));
            }
            let mut left = 0;
            // SAFETY: only the counters are asked for; the out-pointer is valid.
            unsafe { PeekNamedPipe(raw(&self.pipe), ptr::null_mut(), 0, ptr::null_mut(), ptr::null_mut(), &mut left) };
            let chunk = (left as usize).clamp(4096, 16 << 20);
            discarding |= message.len() as u64 + chunk as u64 > most;
            let start = if discarding { 0 } else { message.len() };
            message.resize(start + chunk, 0);
            let (got, next) = self.read_more(&mut message[start..])?;
            message.truncate(start + got);
            total += got as u64;
            outcome = next;
        }
        self.state.cell.release(MESSAGE_OVERHEAD + total);
        if discarding {
            return Err(RecvError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                "a message longer than the receiver's limits was discarded",
            )));
        }
        Ok(message)
    }

    /// One more read of the current message into `into`, waited for; bypasses any completion
    /// port (the low bit of the event handle) so `select` sees only first reads.
    fn read_more(&self, into: &mut [u8]) -> Result<(usize, io::Result<()>), RecvError> {
        // SAFETY: all-zero is a valid OVERLAPPED.
        let mut overlapped: OVERLAPPED = unsafe { mem::zeroed() };
        overlapped.hEvent = (raw(&self.event) as usize | 1) as HANDLE;
        // SAFETY: `into` and `overlapped` outlive the read, which is waited for right below.
        let started = unsafe {
            ReadFile(raw(&self.pipe), into.as_mut_ptr(), into.len() as u32, ptr::null_mut(), &mut overlapped)
        };
        if started == 0 {
            let error = io::Error::last_os_error();
            if !matches!(error.raw_os_error().map(|code| code as u32), Some(ERROR_IO_PENDING | ERROR_MORE_DATA)) {
                return Err(closed_or_io(pipe_error(error)));
            }
        }
        let mut got = 0;
        // SAFETY: waits for the read started above.
        let outcome = check(unsafe { GetOverlappedResult(raw(&self.pipe), &overlapped, &mut got, 1) });
        Ok((got as usize, outcome))
    }

    /// Stops the read in flight; the message it had already completed with, if any.
    pub(super) fn cancel(&mut self, limits: &ReceiveLimits) -> Option<Vec<u8>> {
        let read = self.read.take()?;
        let mut transferred = 0;
        // SAFETY: cancels only this read, then waits until the kernel is done with its buffers.
        let outcome = unsafe {
            CancelIoEx(raw(&self.pipe), &read.overlapped);
            check(GetOverlappedResult(raw(&self.pipe), &read.overlapped, &mut transferred, 1))
        };
        match &outcome {
            Err(error) if error.raw_os_error() == Some(ERROR_OPERATION_ABORTED as i32) => None,
            _ => self.finish(read, outcome, transferred, limits).ok(),
        }
    }

    /// Moves every message waiting in the pipe into the backlog (a receiver on its way out).
    pub(super) fn drain(&mut self, limits: &ReceiveLimits) {
        while let Ok(Some(message)) = self.poll(limits) {
            if let Ok(parcel) = transfer::import(&message, limits) {
                self.backlog.push_back(parcel);
            }
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let limits = ReceiveLimits::DEFAULT;
        // Close the handles of messages still queued for this process, as a closing socket would,
        // and tell senders the receiver is gone (so a send with channel ends inside fails before
        // it exports them, and gives them back).
        if !self.detached {
            self.state.cell.set_owner(RECEIVER_GONE);
            for _ in 0..1024 {
                match self.poll(&limits) {
                    Ok(Some(message)) => drop(transfer::import(&message, &limits)),
                    _ => break,
                }
            }
        }
        self.cancel(&limits);
    }
}

fn closed_or_io(error: io::Error) -> RecvError {
    if error.kind() == io::ErrorKind::BrokenPipe {
        RecvError::Disconnected
    } else {
        RecvError::Io(error)
    }
}

/// A channel end received in a message.
#[derive(Debug)]
pub(crate) struct OsOpaqueIpcChannel(pub(super) OsIpcChannel);

impl OsOpaqueIpcChannel {
    /// This end as a sender; a receiver used as a sender is one whose channel is already closed
    /// (making that channel can fail when this process is out of handles).
    pub fn into_sender(self) -> io::Result<OsIpcSender> {
        match self.0 {
            OsIpcChannel::Sender(sender) => Ok(sender),
            OsIpcChannel::Receiver(_) => Ok(channel()?.0),
        }
    }

    /// This end as a receiver; a sender used as a receiver is one whose channel is already closed
    /// (making that channel can fail when this process is out of handles).
    pub fn into_receiver(self) -> io::Result<OsIpcReceiver> {
        match self.0 {
            OsIpcChannel::Receiver(receiver) => Ok(receiver),
            OsIpcChannel::Sender(_) => Ok(channel()?.1),
        }
    }
}
