//! The in-process backend (feature `force-inprocess`, and the fallback off Linux): the same
//! contract on crossbeam channels, for programs that run every "process" as a thread.
//!
//! A channel is an unbounded crossbeam channel of whole messages; a channel end inside a message
//! is the end itself, so a sender in flight keeps its channel connected exactly as on Linux.
//! Server names live in a process-wide registry.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::ops::Deref;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Instant;

use crossbeam_channel::{Receiver, Select, Sender};

use crate::ipc::PeerCredentials;
use crate::platform::{Admit, OsIpcChannel, OsIpcMessage, OsIpcSelectionResult, RecvError, Wait};

/// A message as it sits in a queue.
struct Envelope {
    data: Vec<u8>,
    channels: Vec<OsIpcChannel>,
    shared_memory: Vec<OsIpcSharedMemory>,
}

impl Envelope {
    fn open(self) -> OsIpcMessage {
        OsIpcMessage {
            data: OsPayload(self.data),
            channels: self.channels.into_iter().map(OsOpaqueIpcChannel).collect(),
            shared_memory: self.shared_memory,
        }
    }
}

/// A new channel: the sending end and the receiving end.
pub(crate) fn channel() -> io::Result<(OsIpcSender, OsIpcReceiver)> {
    let (sender, receiver) = crossbeam_channel::unbounded();
    Ok((OsIpcSender { sender }, OsIpcReceiver { receiver }))
}

/// The sending end of a channel.
#[derive(Clone)]
pub(crate) struct OsIpcSender {
    sender: Sender<Envelope>,
}

impl OsIpcSender {
    /// Connects to the server registered under `name`, if its admission rule agrees.
    pub fn connect(name: &str) -> io::Result<OsIpcSender> {
        connect_to(name)
    }

    /// Queues one message; fails with `BrokenPipe` when the receiver is gone. In-process
    /// channels are unbounded, so a send never waits.
    pub fn send(
        &self,
        data: &[u8],
        channels: Vec<OsIpcChannel>,
        shared_memory: Vec<OsIpcSharedMemory>,
        _wait: Wait,
    ) -> io::Result<()> {
        let envelope = Envelope { data: data.to_vec(), channels, shared_memory };
        self.sender.send(envelope).map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
    }

    /// In-process channels are unbounded: there is no buffer to size.
    pub fn set_buffer_size(&self, _bytes: usize) -> io::Result<()> {
        Ok(())
    }

    /// In-process channels are unbounded.
    pub fn buffer_size(&self) -> io::Result<usize> {
        Ok(usize::MAX)
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
}

impl OsIpcReceiver {
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
        Ok(envelope.open())
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
    pub fn into_sender(self) -> OsIpcSender {
        match self.0 {
            OsIpcChannel::Sender(sender) => sender,
            OsIpcChannel::Receiver(_) => OsIpcSender { sender: crossbeam_channel::unbounded().0 },
        }
    }

    /// This end as a receiver; a sender used as a receiver is one whose channel is already closed.
    pub fn into_receiver(self) -> OsIpcReceiver {
        match self.0 {
            OsIpcChannel::Receiver(receiver) => receiver,
            OsIpcChannel::Sender(_) => OsIpcReceiver { receiver: crossbeam_channel::unbounded().1 },
        }
    }
}

/// The bytes of a received message.
#[derive(Debug)]
pub(crate) struct OsPayload(Vec<u8>);

impl OsPayload {
    /// The bytes as an owned vector.
    pub fn into_vec(self) -> io::Result<Vec<u8>> {
        Ok(self.0)
    }

    /// Nothing to prepare: the bytes are on the heap.
    pub fn prefault(&self) {}
}

impl From<Vec<u8>> for OsPayload {
    fn from(bytes: Vec<u8>) -> Self {
        OsPayload(bytes)
    }
}

impl Deref for OsPayload {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
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
}

impl OsIpcReceiverSet {
    /// An empty set.
    pub fn new() -> io::Result<Self> {
        Ok(OsIpcReceiverSet { receivers: Vec::new(), next_id: 0 })
    }

    /// Adds a receiver and returns its id.
    pub fn add(&mut self, receiver: OsIpcReceiver) -> io::Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        self.receivers.push((id, receiver));
        Ok(id)
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
                (Wait::Blocking, _) if self.receivers.is_empty() => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "select on an empty set would wait forever",
                    ))
                }
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
            loop {
                match receiver.recv(Wait::NonBlocking) {
                    Ok(message) => results.push(OsIpcSelectionResult::MessageReceived(*id, message)),
                    Err(RecvError::Empty) => break,
                    Err(_) => {
                        results.push(OsIpcSelectionResult::ChannelClosed(*id));
                        closed.push(*id);
                        break;
                    }
                }
            }
        }
        self.receivers.retain(|(id, _)| !closed.contains(id));
        results
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
    let (sender, receiver) = channel()?;
    server.outlet.send(&announcement, vec![OsIpcChannel::Receiver(receiver)], Vec::new(), Wait::Blocking)?;
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
