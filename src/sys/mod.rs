//! The OS layer (`sys`): everything that touches the operating system lives below this module.
//!
//! Everything above `sys` is platform-free. A backend is one folder that provides exactly
//! these items (the contract), re-exported from here:
//!
//! - `channel() -> io::Result<(OsIpcSender, OsIpcReceiver)>`: a new connected channel.
//! - `OsIpcSender` (`Clone + Send + Sync`): `send(&self, data, channels, shared_memory, Wait)`
//!   sends one message atomically (whole or not at all), waiting for buffer room as `Wait` allows
//!   (`WouldBlock` / `TimedOut` when it may not); a failure is a `SendFailure` that gives the
//!   channel ends back as they were; `connect(name)` connects to a server;
//!   `set_buffer_size` / `buffer_size` size the channel's kernel buffer; `raise_for_backlog(budget)`
//!   gives it room, if this backend needs more, for a local channel's backlog that a budget
//!   of `budget` bytes let in (`Some(size to give back)`); `payload_writer(Vec<u8>)`
//!   gives a `PayloadWriter` for one message to this channel, and `send_encoded` sends what it
//!   produced.
//! - `PayloadWriter` (`push`, `extend`, `finish() -> io::Result<Encoded>`): where a message is
//!   encoded; a backend may move large messages out of the heap as they are written (Linux: into
//!   the channel's pooled memfds). `Encoded::into_buffer` gives the buffer back for reuse.
//! - `OsIpcReceiver` (`Send + Sync`): `recv(&self, Wait) -> Result<OsIpcMessage, RecvError>`;
//!   `recv_into(&self, Wait, &mut Vec<u8>)`, the same but the message's data may reuse (take) the
//!   vector's allocation (Linux does; other backends ignore it); `set_limits` / `limits`: the `ReceiveLimits` every message is checked against before anything
//!   is allocated for it.
//! - `OsOpaqueIpcChannel`: a received channel end, not yet known to be a sender or a receiver
//!   (`into_sender`, `into_receiver`, each `io::Result`: a backend may need to make a closed
//!   channel for an end used as the other kind).
//! - `OsIpcSharedMemory` (`Clone + Send + Sync`, `Deref<Target = [u8]>`): an immutable region that
//!   travels by reference, never by copy (`from_bytes`, `from_byte`).
//! - `OsIpcReceiverSet`: `new`, `add(OsIpcReceiver) -> u64`, `remove(u64)`, `set_limits`,
//!   `is_empty`, `select(Wait) -> io::Result<Vec<OsIpcSelectionResult>>` over a set that is not
//!   empty (the layer above decides what selecting an empty set means), taking each ready
//!   member's messages with [`drain_member`].
//! - `spawn_with_inherited(&mut Command, OsIpcChannel) -> io::Result<Child>` and
//!   `take_inherited() -> io::Result<OsOpaqueIpcChannel>`: a channel end handed to a child
//!   process without any name, and picked up there (once).
//! - `INLINE_MAX`: the largest message data that travels inside one packet; larger data goes
//!   out of line (Linux: a memfd; Windows: a file mapping).
//! - `current_credentials()`: this process's `PeerCredentials` (pid, effective uid and gid; the
//!   ids are 0 where the platform has none).
//! - `OsListener`: `bind_private() -> (listener, name)` (a name no other user can take) and
//!   `bind(path)` (a caller's path; a stale socket from a dead server is replaced).
//! - `serve(OsListener, Admit) -> io::Result<(OsIpcReceiver, OsServerGuard)>`: admits clients
//!   that connect with `OsIpcSender::connect` by their kernel-reported credentials; each admitted
//!   client arrives on the receiver as one message whose data are the bytes `Admit` returned and
//!   whose one channel is the client's connection, once its first message is readable. Dropping
//!   the guard stops admitting clients and removes the name; `OsServerGuard::take_failure()`
//!   gives the error that stopped the acceptor, if one did (an [`AcceptorFailure`]).
//!
//! Async interface (Linux only, for now; feature `tokio`): `register` puts a descriptor on
//! tokio's reactor; `OsIpcSender`, `OsIpcReceiver` and `OsIpcReceiverSet` are `AsFd` (readable
//! when a message or event is there, writable when a sender has room); before an async receive
//! sleeps on that readiness it calls `OsIpcReceiver::prepare_to_sleep() -> bool` — `false` means
//! a message is waiting (in the Linux backend's shared-memory ring, which readiness does not
//! show) and the receive is retried instead of sleeping; `OsIpcReceiverSet::prepare_to_sleep`
//! does the same for every member before an async select sleeps. Also Linux only: `decode_packet`, `read_arbitrary_ring` and `race_arbitrary_writes` (feature `fuzzing`).
//!
//! The shared vocabulary (`OsIpcChannel`, `OsIpcMessage`, `Wait`, `RecvError`,
//! `OsIpcSelectionResult`) is defined here, once, for every backend.
//!
//! # Ready for the next operating system
//!
//! The backends: `linux/` (plus what any Unix shares, in `unix/`: the wire format, spawning with
//! an inherited descriptor, EINTR and `poll` helpers), `windows/`, `inprocess/`. A new OS is a
//! new folder that provides the items above; `contract()` (below) names whatever is missing.
//!
//! - **FreeBSD** has `SOCK_SEQPACKET` on `AF_UNIX`, `SCM_RIGHTS` and `memfd_create` with seals
//!   (FreeBSD 13+), so `unix/` and most of `socket`, `memfd`, `pool`, `intake` carry over. To add:
//!   `select` and the server's acceptor on kqueue instead of epoll (about 250 lines), credentials
//!   from `LOCAL_PEERCRED` / `getpeereid` instead of `SO_PEERCRED` (about 40), control-message
//!   sizing (FreeBSD charges descriptors against the send buffer, as ipc-channel 0.22 notes), a
//!   `cfg` in `sys/mod.rs`, and a CI lane (FreeBSD cannot run here; `cargo check` with
//!   `-Zbuild-std` at least). Estimate: 500–800 lines, a week with testing on a real machine.
//! - **macOS** has no `SOCK_SEQPACKET` on `AF_UNIX` and no memfd. Either message framing over
//!   `SOCK_STREAM` (length-prefixed packets, descriptors attached to the first byte, atomic only
//!   under a per-channel send lock — a killed sender can leave half a message, so the receiver
//!   must detect and drop it) with `shm_open` + unlink for shared memory (no seals: the Windows
//!   backend's weaker guarantee), or Mach ports and out-of-line memory as ipc-channel does
//!   (`mach_port_allocate`, `mach_msg`, port sets for select, a bootstrap name for servers).
//!   kqueue for readiness either way. Estimate: 1,500–2,500 lines and a macOS CI runner.

use std::io;
use std::time::Duration;

#[cfg(all(target_os = "linux", not(feature = "force-inprocess")))]
#[path = "linux/mod.rs"]
mod backend;

#[cfg(all(windows, not(feature = "force-inprocess")))]
#[path = "windows/mod.rs"]
mod backend;

/// Where `ipc-channel` itself has no cross-process backend and falls back to channels within
/// one process, crossproc does the same (README, "Platforms").
#[cfg(any(
    feature = "force-inprocess",
    target_os = "android",
    target_os = "ios",
    target_os = "wasi",
    target_os = "unknown"
))]
#[path = "inprocess/mod.rs"]
mod backend;

// Anywhere else without a backend (macOS, FreeBSD, OpenBSD and illumos, where ipc-channel talks
// between processes, and every other system), a build that silently could not reach its child
// processes would be worse than none.
#[cfg(not(any(
    target_os = "linux",
    windows,
    feature = "force-inprocess",
    target_os = "android",
    target_os = "ios",
    target_os = "wasi",
    target_os = "unknown"
)))]
compile_error!(
    "crossproc has no cross-process backend for this operating system yet (Linux and Windows \
     have one). Enable feature `force-inprocess` for channels within one process only."
);

pub(crate) use backend::{
    channel, current_credentials, serve, spawn_with_inherited, take_inherited, Encoded, OsIpcReceiver,
    OsIpcReceiverSet, OsIpcSender, OsIpcSharedMemory, OsListener, OsOpaqueIpcChannel, OsServerGuard, PayloadWriter,
    INLINE_MAX,
};

#[cfg(any(not(target_os = "linux"), feature = "force-inprocess"))]
mod heap_writer;

#[cfg(all(target_os = "linux", not(feature = "force-inprocess")))]
pub(crate) use backend::{fork_detectable, fork_generation};

/// Which fork generation this process is (it changes in a child made by `fork`); without a
/// Linux backend there is no fork to tell.
#[cfg(any(not(target_os = "linux"), feature = "force-inprocess"))]
pub(crate) fn fork_generation() -> u64 {
    0
}

/// Whether [`fork_generation`] tells a child made by `fork` from its parent: without a Linux
/// backend, only where there is no `fork` at all.
#[cfg(any(not(target_os = "linux"), feature = "force-inprocess"))]
pub(crate) fn fork_detectable() -> bool {
    !cfg!(unix)
}

#[cfg(all(feature = "tokio", target_os = "linux", not(feature = "force-inprocess")))]
pub(crate) use backend::register;
#[cfg(all(feature = "fuzzing", target_os = "linux", not(feature = "force-inprocess")))]
pub(crate) use backend::{decode_packet, race_arbitrary_writes, read_arbitrary_ring};

pub(crate) mod credentials;
pub(crate) mod finish_at_exit;
pub(crate) mod fork_lock;
pub(crate) mod found_once;
pub(crate) use fork_lock::ForkLock;
pub(crate) mod limits;
pub(crate) mod ring_switch;
pub(crate) mod spin;

pub(crate) use credentials::PeerCredentials;
pub(crate) use limits::{LimitsCell, ReceiveLimits};
#[cfg(all(target_os = "linux", not(feature = "force-inprocess")))]
pub(crate) use {limits::LimitExceeded, spin::RecentWait};

/// The contract, checked by the compiler: every item a backend must provide, bound to the
/// signature the layers above use. A backend that lacks an item, or gives it another
/// signature, fails the build here with an error that names the item.
///
/// Error conventions every backend follows (what the layer above relies on):
/// - `BrokenPipe` (or `ConnectionReset`) from a send: the receiver is gone (`Disconnected`).
/// - `WouldBlock` from a non-blocking send, `TimedOut` from a timed one: no room in time; the
///   message was not sent.
/// - `InvalidData` from a receive: the peer sent something malformed or over the limits; that
///   message is dropped (its descriptors closed) and the channel goes on.
/// - `RecvError::Disconnected`: every sender is gone and nothing is queued.
/// - `NotConnected`: the end was moved into a message (decided above the backends).
/// - `OutOfMemory`: a message could not be allocated; that message only fails.
///
/// Auto traits: senders and shared memory are `Send + Sync` (many producers), receivers and
/// receiver sets `Send` (one consumer), and every type is `Debug` but the payload writer.
#[allow(dead_code, clippy::type_complexity)]
fn contract() {
    fn send_sync<T: Send + Sync + std::fmt::Debug>() {}
    fn send<T: Send>() {}
    send_sync::<OsIpcSender>();
    send_sync::<OsIpcSharedMemory>();
    send_sync::<OsIpcReceiver>();
    send::<OsIpcReceiverSet>();
    send::<OsOpaqueIpcChannel>();
    send::<OsListener>();
    send::<OsServerGuard>();
    let _: fn() -> io::Result<(OsIpcSender, OsIpcReceiver)> = channel;
    let _: fn(&str) -> io::Result<OsIpcSender> = OsIpcSender::connect;
    let _: fn(&OsIpcSender, &[u8], Vec<OsIpcChannel>, Vec<OsIpcSharedMemory>, Wait) -> Result<(), SendFailure> =
        OsIpcSender::send;
    let _: fn(&OsIpcSender, &Encoded, Vec<OsIpcChannel>, Vec<OsIpcSharedMemory>, Wait) -> Result<(), SendFailure> =
        OsIpcSender::send_encoded;
    let _: fn(&OsIpcSender, Vec<u8>) -> PayloadWriter = OsIpcSender::payload_writer;
    let _: fn(&OsIpcSender, usize) -> io::Result<()> = OsIpcSender::set_buffer_size;
    let _: fn(&OsIpcSender) -> io::Result<usize> = OsIpcSender::buffer_size;
    let _: fn(&OsIpcSender, usize) -> Option<usize> = OsIpcSender::raise_for_backlog;
    let _: fn(&mut PayloadWriter, u8) = PayloadWriter::push;
    let _: fn(&mut PayloadWriter, &[u8]) = PayloadWriter::extend;
    let _: fn(PayloadWriter) -> io::Result<Encoded> = PayloadWriter::finish;
    let _: fn(Encoded) -> Vec<u8> = Encoded::into_buffer;
    let _: fn(&OsIpcReceiver, Wait) -> Result<OsIpcMessage, RecvError> = OsIpcReceiver::recv;
    let _: fn(&OsIpcReceiver, Wait, &mut Vec<u8>) -> Result<OsIpcMessage, RecvError> = OsIpcReceiver::recv_into;
    let _: fn(&OsIpcReceiver, ReceiveLimits) = OsIpcReceiver::set_limits;
    let _: fn(&OsIpcReceiver) -> ReceiveLimits = OsIpcReceiver::limits;
    let _: fn(OsOpaqueIpcChannel) -> io::Result<OsIpcSender> = OsOpaqueIpcChannel::into_sender;
    let _: fn(OsOpaqueIpcChannel) -> io::Result<OsIpcReceiver> = OsOpaqueIpcChannel::into_receiver;
    let _: fn(&[u8]) -> io::Result<OsIpcSharedMemory> = OsIpcSharedMemory::from_bytes;
    let _: fn(u8, usize) -> io::Result<OsIpcSharedMemory> = OsIpcSharedMemory::from_byte;
    let _: fn(&OsIpcSharedMemory) -> &[u8] = <OsIpcSharedMemory as std::ops::Deref>::deref;
    let _: fn() -> io::Result<OsIpcReceiverSet> = OsIpcReceiverSet::new;
    let _: fn(&mut OsIpcReceiverSet, OsIpcReceiver) -> io::Result<u64> = OsIpcReceiverSet::add;
    let _: fn(&mut OsIpcReceiverSet, u64) = OsIpcReceiverSet::remove;
    let _: fn(&mut OsIpcReceiverSet, ReceiveLimits) = OsIpcReceiverSet::set_limits;
    let _: fn(&OsIpcReceiverSet) -> bool = OsIpcReceiverSet::is_empty;
    let _: fn(&mut OsIpcReceiverSet, Wait) -> io::Result<Vec<OsIpcSelectionResult>> = OsIpcReceiverSet::select;
    let _: fn(&mut std::process::Command, OsIpcChannel) -> io::Result<std::process::Child> = spawn_with_inherited;
    let _: fn() -> io::Result<OsOpaqueIpcChannel> = take_inherited;
    let _: fn() -> PeerCredentials = current_credentials;
    let _: fn() -> io::Result<(OsListener, String)> = OsListener::bind_private;
    let _: fn(&std::path::Path) -> io::Result<OsListener> = OsListener::bind;
    let _: fn(OsListener, Admit) -> io::Result<(OsIpcReceiver, OsServerGuard)> = serve;
    let _: fn(&OsServerGuard) -> Option<io::Error> = OsServerGuard::take_failure;
    let _: usize = INLINE_MAX;
}

/// A server's admission rule: given a client's credentials, the bytes that announce the client
/// to the server, or `None` to refuse it.
pub(crate) type Admit = Box<dyn FnMut(&PeerCredentials) -> Option<Vec<u8>> + Send>;

/// A channel end placed in an outgoing message.
#[derive(Debug)]
pub(crate) enum OsIpcChannel {
    Sender(OsIpcSender),
    Receiver(OsIpcReceiver),
}

/// A received message: its bytes and the channel ends and shared memory regions it carried,
/// in the order the sender listed them.
#[derive(Debug)]
pub(crate) struct OsIpcMessage {
    /// The bytes, always copied out of anything the sender could still change.
    pub data: Vec<u8>,
    pub channels: Vec<OsOpaqueIpcChannel>,
    pub shared_memory: Vec<OsIpcSharedMemory>,
    /// How deeply the decoded value may nest (the receiver's limit).
    pub max_nesting: usize,
}

impl OsIpcMessage {
    /// A message with bytes only, under the default limits.
    pub fn from_data(data: Vec<u8>) -> Self {
        let max_nesting = ReceiveLimits::DEFAULT.max_nesting;
        OsIpcMessage { data, channels: Vec::new(), shared_memory: Vec::new(), max_nesting }
    }
}

/// The version a packet (or verdict) beginning with `magic` speaks, when it is not `ours`: a
/// peer from a crossproc build with another wire protocol.
#[cfg_attr(any(feature = "force-inprocess", not(any(target_os = "linux", windows))), allow(dead_code))]
pub(crate) fn other_version(bytes: &[u8], magic: [u8; 3], ours: u8) -> Option<u8> {
    (bytes.len() >= 4 && bytes[0..3] == magic && bytes[3] != ours).then(|| bytes[3])
}

/// The error for a peer whose crossproc build speaks version `theirs` of the wire protocol
/// where this one speaks `ours` (each an ASCII digit).
#[cfg_attr(any(feature = "force-inprocess", not(any(target_os = "linux", windows))), allow(dead_code))]
pub(crate) fn version_mismatch(theirs: u8, ours: u8) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "the peer speaks crossproc wire protocol version {}, this build speaks version {}: \
             both processes must use crossproc builds with the same protocol version",
            char::from(theirs).escape_default(),
            char::from(ours)
        ),
    )
}

/// An empty vector with room for `len` bytes of a received message, or an `OutOfMemory` error:
/// a peer chooses `len` (up to the receive limit), so failing to allocate it must fail that one
/// message, never abort the process.
#[cfg_attr(any(feature = "force-inprocess", not(any(target_os = "linux", windows))), allow(dead_code))]
pub(crate) fn message_buffer(len: usize) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(len).map_err(|_| {
        io::Error::new(io::ErrorKind::OutOfMemory, format!("cannot allocate {len} bytes for a received message"))
    })?;
    Ok(bytes)
}

/// Where a server's acceptor thread leaves the error that stopped it, for `accept` to report
/// (the server's incoming channel closes at the same time). Shared by the thread and the guard.
#[derive(Clone, Debug, Default)]
#[cfg_attr(any(feature = "force-inprocess", not(any(target_os = "linux", windows))), allow(dead_code))]
pub(crate) struct AcceptorFailure(std::sync::Arc<std::sync::Mutex<Option<io::Error>>>);

#[cfg_attr(any(feature = "force-inprocess", not(any(target_os = "linux", windows))), allow(dead_code))]
impl AcceptorFailure {
    /// Records why the acceptor stopped.
    pub fn record(&self, error: io::Error) {
        *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(error);
    }

    /// The recorded error, once.
    pub fn take(&self) -> Option<io::Error> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take()
    }
}

/// How long a send or receive may wait.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Wait {
    /// Receive: wait until a message arrives or every sender is gone. Send: wait until the
    /// channel's buffer has room.
    Blocking,
    /// Receive: return [`RecvError::Empty`] at once when nothing is queued. Send: fail with
    /// `io::ErrorKind::WouldBlock` at once when the buffer is full.
    NonBlocking,
    /// Wait at most this long.
    Timeout(Duration),
}

/// A send that failed, with the channel ends it was given, unchanged and in order, so that a
/// value handed back to the caller is whole (a receiver inside it still receives). A backend that
/// cannot give an end back (Windows, once a moving receiver was detached) returns fewer.
#[derive(Debug)]
pub(crate) struct SendFailure {
    pub error: io::Error,
    pub channels: Vec<OsIpcChannel>,
}

impl From<io::Error> for SendFailure {
    /// A failure of a message that carried no channel ends.
    fn from(error: io::Error) -> Self {
        SendFailure { error, channels: Vec::new() }
    }
}

impl From<SendFailure> for io::Error {
    fn from(failure: SendFailure) -> Self {
        failure.error
    }
}

/// Why a receive returned no message.
#[derive(Debug)]
pub(crate) enum RecvError {
    /// Every sender is gone and nothing is queued.
    Disconnected,
    /// Nothing arrived in the time allowed.
    Empty,
    /// The operating system failed, or the peer sent something malformed.
    Io(io::Error),
}

impl From<io::Error> for RecvError {
    fn from(error: io::Error) -> Self {
        RecvError::Io(error)
    }
}

/// The most messages one select call takes from one receiver, so that a receiver flooded by
/// its peer cannot starve the others (every backend follows this).
pub(crate) const MESSAGES_PER_RECEIVER: usize = 32;

/// Why a receive failed with its message still queued: this process (or the system) has no
/// descriptor free for the message's descriptors. A receive once descriptors are free takes the
/// message whole. (An error's payload, so that a select and the router can tell it apart.)
#[derive(Debug)]
pub(crate) struct OutOfDescriptors {
    /// `EMFILE` (this process's table is full) or `ENFILE` (the system's is).
    pub errno: &'static str,
}

impl OutOfDescriptors {
    /// Whether `error` is this one.
    pub fn is(error: &io::Error) -> bool {
        error.get_ref().is_some_and(|inner| inner.is::<OutOfDescriptors>())
    }
}

impl std::fmt::Display for OutOfDescriptors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "this process is out of descriptors ({}) for a message's descriptors: the message stays queued, \
             and a receive once descriptors are free takes it whole",
            self.errno
        )
    }
}

impl std::error::Error for OutOfDescriptors {}

/// What [`drain_member`] left of a ready member.
#[derive(Debug)]
pub(crate) enum Drained {
    /// Its next message is there, but this process has no descriptors free to receive it
    /// ([`OutOfDescriptors`]): it stays queued, the member stays in the set, and the select
    /// reports this error if it has nothing else to report.
    Stuck(#[cfg_attr(not(all(target_os = "linux", not(feature = "force-inprocess"))), allow(dead_code))] io::Error),
    /// Nothing more is queued.
    Empty,
    /// [`MESSAGES_PER_RECEIVER`] were taken; more may be queued.
    More,
    /// The channel closed (or failed); it was reported and must leave the set.
    Closed,
}

/// The select policy, decided once for every backend: takes up to [`MESSAGES_PER_RECEIVER`]
/// messages from the member `id` (through `receive`, a non-blocking receive); a malformed or
/// over-limit message (`InvalidData`) is dropped, its descriptors closed, and the channel stays;
/// a message this process has no descriptors for stays queued (`Stuck`); a hang-up or any
/// other error is reported as `ChannelClosed`.
pub(crate) fn drain_member(
    id: u64,
    receive: impl FnMut() -> Result<OsIpcMessage, RecvError>,
    results: &mut Vec<OsIpcSelectionResult>,
) -> Drained {
    let drained = drain_with(receive, |message| results.push(OsIpcSelectionResult::MessageReceived(id, message)));
    if matches!(drained, Drained::Closed) {
        results.push(OsIpcSelectionResult::ChannelClosed(id));
    }
    drained
}

/// [`drain_member`] for any kind of message: `deliver` takes each one; the caller reports a
/// `Closed` member.
pub(crate) fn drain_with<M>(mut receive: impl FnMut() -> Result<M, RecvError>, mut deliver: impl FnMut(M)) -> Drained {
    for _ in 0..MESSAGES_PER_RECEIVER {
        match receive() {
            Ok(message) => deliver(message),
            Err(RecvError::Empty) => return Drained::Empty,
            Err(RecvError::Io(error)) if error.kind() == io::ErrorKind::InvalidData => {}
            Err(RecvError::Io(error)) if OutOfDescriptors::is(&error) => return Drained::Stuck(error),
            Err(RecvError::Io(_) | RecvError::Disconnected) => return Drained::Closed,
        }
    }
    Drained::More
}

/// One event reported by [`OsIpcReceiverSet::select`].
#[derive(Debug)]
pub(crate) enum OsIpcSelectionResult {
    MessageReceived(u64, OsIpcMessage),
    ChannelClosed(u64),
}
