//! The in-process backend (feature `force-inprocess`, and the fallback off Linux): the same
//! contract on crossbeam channels, for programs that run every "process" as a thread.
//!
//! A channel is a crossbeam channel of whole messages with a byte budget that mimics a socket
//! buffer (so `try_send` reports `Full` as on Linux); a channel end inside a message
//! is the end itself, so a sender in flight keeps its channel connected exactly as on Linux.
//! Server names live in a process-wide registry.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::ops::Deref;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex};
use std::time::Instant;

use crossbeam_channel::{Receiver, Select, Sender};

pub(crate) use crate::sys::heap_writer::{Encoded, PayloadWriter};
use crate::sys::{
    drain_member, Admit, Drained, OsIpcChannel, OsIpcMessage, OsIpcSelectionResult, RecvError, SendFailure, Wait,
};
use crate::sys::{LimitsCell, PeerCredentials, ReceiveLimits};

/// A message as it sits in a queue.
struct Envelope {
    data: Vec<u8>,
    channels: Vec<OsIpcChannel>,
    shared_memory: Vec<OsIpcSharedMemory>,
    /// What the message took from its channel's budget.
    cost: usize,
}

impl Envelope {
    fn open(self, max_nesting: usize) -> OsIpcMessage {
        OsIpcMessage {
            data: self.data,
            channels: self.channels.into_iter().map(OsOpaqueIpcChannel).collect(),
            shared_memory: self.shared_memory,
            max_nesting,
        }
    }
}

/// A new channel: the sending end and the receiving end.
pub(crate) fn channel() -> io::Result<(OsIpcSender, OsIpcReceiver)> {
    Ok(channel_pair())
}

fn channel_pair() -> (OsIpcSender, OsIpcReceiver) {
    let (sender, receiver) = crossbeam_channel::unbounded();
    let budget = Arc::new(Budget::new());
    (OsIpcSender { sender, budget: budget.clone(), handover: None }, OsIpcReceiver::new(receiver, budget))
}

/// Bytes in flight on a channel, bounded like a Linux socket buffer so that backpressure behaves
/// the same: a message costs its size plus a fixed overhead (a payload over 200 KiB, which Linux
/// moves in a memfd, costs only the overhead), and a send waits while the budget is spent unless
/// the channel is empty.
struct Budget {
    used: Mutex<usize>,
    freed: Condvar,
    capacity: AtomicUsize,
    receiver_gone: AtomicBool,
}

/// Linux's default socket buffer.
const DEFAULT_CAPACITY: usize = 212_992;
/// What Linux charges per queued packet, roughly.
const PACKET_OVERHEAD: usize = 768;
/// Payloads above this travel outside the buffer on Linux.
pub(crate) const INLINE_MAX: usize = 200 * 1024;

impl Budget {
    fn new() -> Self {
        Budget {
            used: Mutex::new(0),
            freed: Condvar::new(),
            capacity: AtomicUsize::new(DEFAULT_CAPACITY),
            receiver_gone: AtomicBool::new(false),
        }
    }

    fn cost(len: usize) -> usize {
        PACKET_OVERHEAD + if len > INLINE_MAX { 0 } else { len }
    }

    /// Takes `cost` from the budget, waiting as `wait` allows.
    fn reserve(&self, cost: usize, wait: Wait) -> io::Result<()> {
        let deadline = match wait {
            Wait::Timeout(timeout) => Instant::now().checked_add(timeout),
            _ => None,
        };
        let mut used = self.used.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        loop {
            if self.receiver_gone.load(Ordering::SeqCst) {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            if *used == 0 || *used + cost <= self.capacity.load(Ordering::Relaxed) {
                *used += cost;
                return Ok(());
            }
            used = match (wait, deadline) {
                (Wait::NonBlocking, _) => return Err(io::ErrorKind::WouldBlock.into()),
                (Wait::Timeout(_), Some(deadline)) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "the channel stayed full"));
                    }
                    self.freed.wait_timeout(used, left).unwrap_or_else(|poisoned| poisoned.into_inner()).0
                }
                _ => self.freed.wait(used).unwrap_or_else(|poisoned| poisoned.into_inner()),
            };
        }
    }

    fn release(&self, cost: usize) {
        let mut used = self.used.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *used = used.saturating_sub(cost);
        self.freed.notify_all();
    }

    fn close(&self) {
        self.receiver_gone.store(true, Ordering::SeqCst);
        let _used = self.used.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.freed.notify_all();
    }
}

/// The sending end of a channel.
#[derive(Clone)]
pub(crate) struct OsIpcSender {
    sender: Sender<Envelope>,
    budget: Arc<Budget>,
    /// A client's connection, until its first message (or its hang-up) hands it to the server.
    handover: Option<Arc<Handover>>,
}

/// A connected client not yet handed to its server: as on Linux, the server sees a client only
/// once its first message (or its hang-up) is there, so a silent client holds up nobody.
struct Handover(Mutex<Option<(OsIpcSender, Vec<u8>, OsIpcReceiver)>>);

impl Handover {
    /// Hands the client's channel to the server (once).
    fn complete(&self) {
        let pending = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some((outlet, announcement, receiver)) = pending {
            let _ = outlet.send(&announcement, vec![OsIpcChannel::Receiver(receiver)], Vec::new(), Wait::Blocking);
        }
    }
}

impl Drop for Handover {
    /// Every copy of the client's sender is gone: the server sees the hang-up.
    fn drop(&mut self) {
        self.complete();
    }
}

impl OsIpcSender {
    /// Connects to the server registered under `name`, if its admission rule agrees.
    pub fn connect(name: &str) -> io::Result<OsIpcSender> {
        connect_to(name)
    }

    /// Queues one message, waiting for budget as `wait` allows; fails with `BrokenPipe` when
    /// the receiver is gone.
    pub fn send(
        &self,
        data: &[u8],
        channels: Vec<OsIpcChannel>,
        shared_memory: Vec<OsIpcSharedMemory>,
        wait: Wait,
    ) -> Result<(), SendFailure> {
        let cost = Budget::cost(data.len());
        if let Err(error) = self.budget.reserve(cost, wait) {
            return Err(SendFailure { error, channels });
        }
        let envelope = Envelope { data: data.to_vec(), channels, shared_memory, cost };
        self.sender.send(envelope).map_err(|returned| {
            self.budget.release(cost);
            SendFailure { error: io::ErrorKind::BrokenPipe.into(), channels: returned.into_inner().channels }
        })?;
        if let Some(handover) = &self.handover {
            handover.complete();
        }
        Ok(())
    }

    /// A writer to encode one message for this channel in.
    pub fn payload_writer(&self, buffer: Vec<u8>) -> PayloadWriter {
        PayloadWriter::new(buffer)
    }

    /// Like [`send`](Self::send), for bytes a [`PayloadWriter`] produced.
    pub fn send_encoded(
        &self,
        encoded: &Encoded,
        channels: Vec<OsIpcChannel>,
        shared_memory: Vec<OsIpcSharedMemory>,
        wait: Wait,
    ) -> Result<(), SendFailure> {
        self.send(encoded.bytes(), channels, shared_memory, wait)
    }

    /// Nothing to raise for a local channel's backlog (see the Linux backend): this budget
    /// counts what the local budget counts.
    pub fn raise_for_backlog(&self, _budget: usize) -> Option<usize> {
        None
    }

    /// Sets how many bytes may be in flight (the in-process stand-in for a socket buffer).
    pub fn set_buffer_size(&self, bytes: usize) -> io::Result<()> {
        self.budget.capacity.store(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// How many bytes may be in flight.
    pub fn buffer_size(&self) -> io::Result<usize> {
        Ok(self.budget.capacity.load(Ordering::Relaxed))
    }
}

impl fmt::Debug for OsIpcSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OsIpcSender(in-process)")
    }
}

/// The receiving end of a channel.
pub(crate) struct OsIpcReceiver {
    receiver: Receiver<Envelope>,
    budget: Arc<Budget>,
    limits: LimitsCell,
}

impl Drop for OsIpcReceiver {
    fn drop(&mut self) {
        self.budget.close();
    }
}

impl OsIpcReceiver {
    fn new(receiver: Receiver<Envelope>, budget: Arc<Budget>) -> Self {
        OsIpcReceiver { receiver, budget, limits: LimitsCell::new(ReceiveLimits::DEFAULT) }
    }

    /// Sets the limits every later message is checked against.
    pub fn set_limits(&self, limits: ReceiveLimits) {
        self.limits.set(limits);
    }

    /// The limits in force.
    pub fn limits(&self) -> ReceiveLimits {
        self.limits.get()
    }

    /// Like [`recv`](Self::recv): a message here already is a vector, so `buffer` is not used.
    pub fn recv_into(&self, mode: Wait, _buffer: &mut Vec<u8>) -> Result<OsIpcMessage, RecvError> {
        self.recv(mode)
    }

    /// Receives the next message, waiting as `mode` allows.
    pub fn recv(&self, mode: Wait) -> Result<OsIpcMessage, RecvError> {
        use crossbeam_channel::{RecvTimeoutError, TryRecvError};
        let envelope = match mode {
            Wait::Blocking => self.receiver.recv().map_err(|_| RecvError::Disconnected)?,
            Wait::NonBlocking => self.receiver.try_recv().map_err(|error| match error {
                TryRecvError::Empty => RecvError::Empty,
                TryRecvError::Disconnected => RecvError::Disconnected,
            })?,
            Wait::Timeout(duration) => self.receiver.recv_timeout(duration).map_err(|error| match error {
                RecvTimeoutError::Timeout => RecvError::Empty,
                RecvTimeoutError::Disconnected => RecvError::Disconnected,
            })?,
        };
        self.budget.release(envelope.cost);
        let handles = envelope.channels.len() + envelope.shared_memory.len();
        self.limits.check(envelope.data.len() as u64, handles).map_err(|limit| RecvError::Io(limit.into_io()))?;
        Ok(envelope.open(self.limits.max_nesting()))
    }
}

impl fmt::Debug for OsIpcReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OsIpcReceiver(in-process)")
    }
}

/// A channel end received in a message.
#[derive(Debug)]
pub(crate) struct OsOpaqueIpcChannel(OsIpcChannel);

impl OsOpaqueIpcChannel {
    /// This end as a sender; a receiver used as a sender is one whose channel is already closed.
    pub fn into_sender(self) -> io::Result<OsIpcSender> {
        Ok(match self.0 {
            OsIpcChannel::Sender(sender) => sender,
            OsIpcChannel::Receiver(_) => channel_pair().0,
        })
    }

    /// This end as a receiver; a sender used as a receiver is one whose channel is already closed.
    pub fn into_receiver(self) -> io::Result<OsIpcReceiver> {
        Ok(match self.0 {
            OsIpcChannel::Receiver(receiver) => receiver,
            OsIpcChannel::Sender(_) => channel_pair().1,
        })
    }
}

/// An immutable region shared by reference counting.
#[derive(Clone)]
pub(crate) struct OsIpcSharedMemory(Arc<[u8]>);

impl OsIpcSharedMemory {
    /// A new region holding a copy of `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> io::Result<Self> {
        Ok(OsIpcSharedMemory(bytes.into()))
    }

    /// A new region of `len` bytes, each equal to `byte`.
    pub fn from_byte(byte: u8, len: usize) -> io::Result<Self> {
        Ok(OsIpcSharedMemory(vec![byte; len].into()))
    }
}

impl Deref for OsIpcSharedMemory {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for OsIpcSharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OsIpcSharedMemory({} bytes)", self.0.len())
    }
}

/// A set of receivers waited on together (crossbeam's `Select`).
pub(crate) struct OsIpcReceiverSet {
    receivers: Vec<(u64, OsIpcReceiver)>,
    next_id: u64,
    limits: Option<ReceiveLimits>,
}

impl OsIpcReceiverSet {
    /// An empty set.
    pub fn new() -> io::Result<Self> {
        Ok(OsIpcReceiverSet { receivers: Vec::new(), next_id: 0, limits: None })
    }

    /// Adds a receiver and returns its id.
    pub fn add(&mut self, receiver: OsIpcReceiver) -> io::Result<u64> {
        if let Some(limits) = self.limits {
            receiver.set_limits(limits);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.receivers.push((id, receiver));
        Ok(id)
    }

    /// Sets the receive limits of every member, present and future.
    pub fn set_limits(&mut self, limits: ReceiveLimits) {
        self.limits = Some(limits);
        for (_, receiver) in &self.receivers {
            receiver.set_limits(limits);
        }
    }

    /// Removes (and drops) the receiver with this id.
    pub fn remove(&mut self, id: u64) {
        self.receivers.retain(|(other, _)| *other != id);
    }

    /// Waits as `mode` allows, then reports every queued message and closed channel.
    pub fn select(&mut self, mode: Wait) -> io::Result<Vec<OsIpcSelectionResult>> {
        let deadline = match mode {
            Wait::Timeout(duration) => Instant::now().checked_add(duration),
            _ => None,
        };
        loop {
            let results = self.drain();
            if !results.is_empty() || matches!(mode, Wait::NonBlocking) {
                return Ok(results);
            }
            let mut select = Select::new();
            for (_, receiver) in &self.receivers {
                select.recv(&receiver.receiver);
            }
            match (mode, deadline) {
                (Wait::Blocking | Wait::NonBlocking, _) | (Wait::Timeout(_), None) => {
                    select.ready();
                }
                (_, Some(deadline)) => {
                    if select.ready_deadline(deadline).is_err() {
                        return Ok(Vec::new());
                    }
                }
            }
        }
    }

    fn drain(&mut self) -> Vec<OsIpcSelectionResult> {
        let mut results = Vec::new();
        let mut closed = Vec::new();
        for (id, receiver) in &self.receivers {
            if matches!(drain_member(*id, || receiver.recv(Wait::NonBlocking), &mut results), Drained::Closed) {
                closed.push(*id);
            }
        }
        self.receivers.retain(|(id, _)| !closed.contains(id));
        results
    }

    /// Whether the set has no members.
    pub fn is_empty(&self) -> bool {
        self.receivers.is_empty()
    }
}

/// The credentials of this process (every in-process peer has them).
pub(crate) fn current_credentials() -> PeerCredentials {
    #[cfg(target_os = "linux")]
    let (uid, gid) = (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw());
    #[cfg(not(target_os = "linux"))]
    let (uid, gid) = (0, 0);
    PeerCredentials { pid: std::process::id(), uid, gid }
}

/// A running server: its admission rule and where admitted clients go.
struct Registered {
    admit: Mutex<Admit>,
    outlet: OsIpcSender,
}

/// Running servers by name.
static SERVERS: LazyLock<Mutex<HashMap<String, Arc<Registered>>>> = LazyLock::new(Default::default);
static NEXT_SERVER: AtomicU64 = AtomicU64::new(0);

fn servers() -> std::sync::MutexGuard<'static, HashMap<String, Arc<Registered>>> {
    SERVERS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A reserved server name.
pub(crate) struct OsListener {
    name: String,
}

impl OsListener {
    /// A fresh unique name.
    pub fn bind_private() -> io::Result<(OsListener, String)> {
        let name =
            format!("crossproc-inprocess-{}-{}", std::process::id(), NEXT_SERVER.fetch_add(1, Ordering::Relaxed));
        Ok((OsListener { name: name.clone() }, name))
    }

    /// The caller's name; fails while another server runs under it.
    pub fn bind(path: &Path) -> io::Result<OsListener> {
        let name = path.to_str().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "name is not UTF-8"))?;
        if servers().contains_key(name) {
            return Err(io::Error::new(io::ErrorKind::AddrInUse, format!("{name} is in use by a live server")));
        }
        Ok(OsListener { name: name.to_owned() })
    }
}

/// Registers the server; see the platform contract.
pub(crate) fn serve(listener: OsListener, admit: Admit) -> io::Result<(OsIpcReceiver, OsServerGuard)> {
    let (outlet, incoming) = channel()?;
    let registered = Arc::new(Registered { admit: Mutex::new(admit), outlet });
    servers().insert(listener.name.clone(), registered);
    Ok((incoming, OsServerGuard { name: listener.name }))
}

/// Unregisters a server's name when dropped.
#[derive(Debug)]
pub(crate) struct OsServerGuard {
    name: String,
}

impl OsServerGuard {
    /// Never anything: there is no acceptor thread to fail.
    pub fn take_failure(&self) -> Option<io::Error> {
        None
    }
}

impl Drop for OsServerGuard {
    fn drop(&mut self) {
        servers().remove(&self.name);
    }
}

fn connect_to(name: &str) -> io::Result<OsIpcSender> {
    let server = servers()
        .get(name)
        .cloned()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no server named {name}")))?;
    let announcement = (server.admit.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))(&current_credentials());
    let announcement = announcement.ok_or_else(|| {
        io::Error::new(io::ErrorKind::PermissionDenied, "the server's access policy refused this client")
    })?;
    let (mut sender, receiver) = channel()?;
    let pending = (server.outlet.clone(), announcement, receiver);
    sender.handover = Some(Arc::new(Handover(Mutex::new(Some(pending)))));
    Ok(sender)
}

/// Child processes cannot share in-process channels.
pub(crate) fn spawn_with_inherited(
    _command: &mut std::process::Command,
    _end: OsIpcChannel,
) -> io::Result<std::process::Child> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "the in-process backend cannot hand channels to child processes"))
}

/// Child processes cannot share in-process channels.
pub(crate) fn take_inherited() -> io::Result<OsOpaqueIpcChannel> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "the in-process backend cannot inherit channels"))
}
