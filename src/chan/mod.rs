//! Channel ends as the public types hold them: local until they leave the process, then the
//! OS backend's ends (docs/local.md).
//!
//! This layer sits between `ipc/` and `sys/` and speaks the same vocabulary as `sys` does
//! (`Sender`, `Receiver`, `Channel`, `Opaque`, `Message`), so the layers above change types,
//! not logic:
//!
//! - [`local`]: a local channel's shared core (a queue in this process, no descriptor, or the
//!   OS channel it became); [`queue`]: its messages and budget; [`sender`] and [`receiver`]:
//!   its two ends.
//! - [`leave`]: what happens when an end leaves: the channel becomes an OS channel and its
//!   backlog follows the receiver.
//!
//! An end *leaves* when it goes into a message for an OS channel ([`send_os`] converts it on
//! the way), when a receiver joins an [`IpcReceiverSet`](crate::ipc::IpcReceiverSet), or when
//! it is handed to a spawned child (the tokio types keep a channel local:
//! [`Receiver::recv_or_register`], [`Sender::register_writable`]).

mod leave;
mod local;
mod queue;
mod receiver;
mod sender;

use std::io;

use crate::sys::{
    self, OsIpcChannel, OsIpcMessage, OsIpcReceiver, OsIpcSender, OsIpcSharedMemory, OsOpaqueIpcChannel, ReceiveLimits,
    RecvError, Wait,
};
use local::Core;
use queue::LocalMessage;
use receiver::LocalReceiver;
use sender::LocalSender;

/// A new local channel.
pub(crate) fn channel() -> (Sender, Receiver) {
    let core = Core::new();
    (Sender::Local(LocalSender::first(core.clone())), Receiver::Local(LocalReceiver::new(core)))
}

/// A new OS channel.
pub(crate) fn os_channel() -> io::Result<(Sender, Receiver)> {
    let (sender, receiver) = sys::channel()?;
    Ok((Sender::Os(sender), Receiver::Os(Box::new(receiver))))
}

/// A send that failed, with the channel ends it was given, in order (an end that left on the
/// way comes back as the OS end it became).
#[derive(Debug)]
pub(crate) struct Failure {
    pub error: io::Error,
    pub channels: Vec<Channel>,
}

impl From<io::Error> for Failure {
    fn from(error: io::Error) -> Self {
        Failure { error, channels: Vec::new() }
    }
}

impl From<Failure> for io::Error {
    fn from(failure: Failure) -> Self {
        failure.error
    }
}

impl From<sys::SendFailure> for Failure {
    fn from(failure: sys::SendFailure) -> Self {
        Failure { error: failure.error, channels: failure.channels.into_iter().map(Channel::from).collect() }
    }
}

/// A sending end.
#[derive(Clone, Debug)]
pub(crate) enum Sender {
    Os(OsIpcSender),
    Local(LocalSender),
}

impl Sender {
    /// The OS sender to send through, if this end is (or became) an OS end.
    pub fn os(&self) -> Option<&OsIpcSender> {
        match self {
            Sender::Os(os) => Some(os),
            Sender::Local(local) => local.os(),
        }
    }

    /// Sends one message, waiting for room as `wait` allows.
    pub fn send(
        &self,
        data: &[u8],
        channels: Vec<Channel>,
        shared_memory: Vec<OsIpcSharedMemory>,
        wait: Wait,
    ) -> Result<(), Failure> {
        match self {
            Sender::Os(os) => send_os(os, data, channels, shared_memory, wait),
            // `LocalSender::send` looks for the OS sender too; looking first here spares the
            // copy of the bytes that only a local queue needs.
            Sender::Local(local) => match local.os() {
                Some(os) => send_os(os, data, channels, shared_memory, wait),
                None => local.send(data.to_vec(), channels, shared_memory, wait),
            },
        }
    }

    /// Like [`send`](Self::send), taking the bytes (a local channel queues them as they are).
    pub fn send_owned(
        &self,
        data: Vec<u8>,
        channels: Vec<Channel>,
        shared_memory: Vec<OsIpcSharedMemory>,
        wait: Wait,
    ) -> Result<(), Failure> {
        match self {
            Sender::Os(os) => send_os(os, &data, channels, shared_memory, wait),
            // A local end whose channel left sends on the OS channel from inside `send`.
            Sender::Local(local) => local.send(data, channels, shared_memory, wait),
        }
    }

    /// Has `waker` called once a local channel may have room again; `false` for an OS channel,
    /// whose readiness the caller waits on instead.
    #[cfg_attr(not(all(feature = "tokio", target_os = "linux", not(feature = "force-inprocess"))), allow(dead_code))]
    pub fn register_writable(&self, send: u64, waker: &std::task::Waker) -> bool {
        match self {
            Sender::Os(_) => false,
            Sender::Local(local) => local.register_writable(send, waker),
        }
    }

    /// How many async sends' wakers wait for budget in a local channel (tests).
    #[cfg(all(test, feature = "tokio", target_os = "linux", not(feature = "force-inprocess")))]
    pub fn writer_wakers(&self) -> usize {
        match self {
            Sender::Os(_) => 0,
            Sender::Local(local) => local.writer_wakers(),
        }
    }

    /// Takes out what [`register_writable`](Self::register_writable) put in for `send`.
    #[cfg_attr(not(all(feature = "tokio", target_os = "linux", not(feature = "force-inprocess"))), allow(dead_code))]
    pub fn unregister_writable(&self, send: u64) {
        if let Sender::Local(local) = self {
            local.unregister_writable(send);
        }
    }

    /// The OS sender this end is, or becomes by leaving the process (waiting, as `wait`
    /// allows, for the last step of a move of its receiver: `LocalSender::leave`).
    pub fn leave(&self, wait: Wait) -> io::Result<OsIpcSender> {
        match self {
            Sender::Os(os) => Ok(os.clone()),
            Sender::Local(local) => local.leave(wait),
        }
    }

    pub fn set_buffer_size(&self, bytes: usize) -> io::Result<()> {
        match self {
            Sender::Os(os) => os.set_buffer_size(bytes),
            Sender::Local(local) => local.set_buffer_size(bytes),
        }
    }

    pub fn buffer_size(&self) -> io::Result<usize> {
        match self {
            Sender::Os(os) => os.buffer_size(),
            Sender::Local(local) => local.buffer_size(),
        }
    }
}

/// Sends through an OS sender; the local ends among `channels` leave the process first.
pub(crate) fn send_os(
    os: &OsIpcSender,
    data: &[u8],
    channels: Vec<Channel>,
    shared_memory: Vec<OsIpcSharedMemory>,
    wait: Wait,
) -> Result<(), Failure> {
    let channels = leave::all(channels, wait)?;
    Ok(os.send(data, channels, shared_memory, wait)?)
}

/// Sends what an OS sender's payload writer encoded; the local ends among `channels` leave
/// the process first.
pub(crate) fn send_os_encoded(
    os: &OsIpcSender,
    encoded: &sys::Encoded,
    channels: Vec<Channel>,
    shared_memory: Vec<OsIpcSharedMemory>,
    wait: Wait,
) -> Result<(), Failure> {
    let channels = leave::all(channels, wait)?;
    Ok(os.send_encoded(encoded, channels, shared_memory, wait)?)
}

/// A receiving end.
#[derive(Debug)]
pub(crate) enum Receiver {
    /// Boxed, so that the public receiver types stay small.
    Os(Box<OsIpcReceiver>),
    Local(LocalReceiver),
}

impl Receiver {
    /// Receives one message whose data may reuse `buffer`'s allocation.
    pub fn recv_into(&self, wait: Wait, buffer: &mut Vec<u8>) -> Result<Message, RecvError> {
        match self {
            Receiver::Os(os) => os.recv_into(wait, buffer).map(Message::from),
            Receiver::Local(local) => local.recv_into(wait, buffer),
        }
    }

    /// Receives one message without waiting; while the channel is local, `Empty` means that
    /// `waker` is called once there may be one. Once it is an OS channel ([`os_receiver`]),
    /// `Empty` leaves the waiting to the caller, on that receiver's readiness.
    ///
    /// [`os_receiver`]: Self::os_receiver
    #[cfg_attr(not(all(feature = "tokio", target_os = "linux", not(feature = "force-inprocess"))), allow(dead_code))]
    pub fn recv_or_register(&self, waker: &std::task::Waker, buffer: &mut Vec<u8>) -> Result<Message, RecvError> {
        match self {
            Receiver::Os(os) => os.recv_into(Wait::NonBlocking, buffer).map(Message::from),
            Receiver::Local(local) => local.recv_or_register(waker, buffer),
        }
    }

    /// The OS receiver this end reads: from the start for an OS channel, else once its local
    /// channel became one and the backlog was read.
    #[cfg_attr(not(all(feature = "tokio", target_os = "linux", not(feature = "force-inprocess"))), allow(dead_code))]
    pub fn os_receiver(&self) -> Option<&OsIpcReceiver> {
        match self {
            Receiver::Os(os) => Some(os),
            Receiver::Local(local) => local.os_receiver(),
        }
    }

    pub fn set_limits(&self, limits: ReceiveLimits) {
        match self {
            Receiver::Os(os) => os.set_limits(limits),
            Receiver::Local(local) => local.set_limits(limits),
        }
    }

    pub fn limits(&self) -> ReceiveLimits {
        match self {
            Receiver::Os(os) => os.limits(),
            Receiver::Local(local) => local.limits(),
        }
    }

    /// Whether this is a local channel's end (one that became an OS channel included).
    pub fn is_local(&self) -> bool {
        matches!(self, Receiver::Local(_))
    }

    /// An error if this end may not be used in this process (a local channel made before the
    /// `fork` that made this process: docs/local.md, "fork").
    pub fn check_process(&self) -> io::Result<()> {
        match self {
            Receiver::Os(_) => Ok(()),
            Receiver::Local(local) => local.check_process(),
        }
    }

    /// The OS receiver this end is, or becomes by leaving the process; on failure the end
    /// comes back unchanged.
    pub fn leave(self) -> Result<OsIpcReceiver, Box<(io::Error, Receiver)>> {
        match self {
            Receiver::Os(os) => Ok(*os),
            Receiver::Local(mut local) => match local.leave() {
                Ok(os) => Ok(os),
                Err(error) => Err(Box::new((error, Receiver::Local(local)))),
            },
        }
    }

    /// The OS receiver for a receiver that stays in this process (for a select set): like
    /// [`leave`](Self::leave), but a backlog that cannot go ahead of the OS channel (a sender
    /// left before it was read) comes out as messages, to be read first.
    pub fn into_os_with_backlog(self) -> io::Result<(OsIpcReceiver, Vec<Message>)> {
        match self {
            Receiver::Os(os) => Ok((*os, Vec::new())),
            Receiver::Local(mut local) => local.stay_as_os(),
        }
    }

    /// [`leave`](Self::leave), for callers that drop the end on failure.
    pub fn into_os(self) -> io::Result<OsIpcReceiver> {
        self.leave().map_err(|failure| failure.0)
    }
}

/// A channel end in an outgoing message.
#[derive(Debug)]
pub(crate) enum Channel {
    Sender(Sender),
    Receiver(Receiver),
}

impl From<OsIpcChannel> for Channel {
    fn from(channel: OsIpcChannel) -> Self {
        match channel {
            OsIpcChannel::Sender(sender) => Channel::Sender(Sender::Os(sender)),
            OsIpcChannel::Receiver(receiver) => Channel::Receiver(Receiver::Os(Box::new(receiver))),
        }
    }
}

/// A channel end in a received message, not yet known to be a sender or a receiver.
#[derive(Debug)]
pub(crate) enum Opaque {
    Os(OsOpaqueIpcChannel),
    /// An end that came through a local channel: the end itself.
    Local(Channel),
}

impl Opaque {
    /// This end as a sender; a receiver used as a sender is a sender whose receiver is gone.
    pub fn into_sender(self) -> io::Result<Sender> {
        match self {
            Opaque::Os(os) => Ok(Sender::Os(os.into_sender()?)),
            Opaque::Local(Channel::Sender(sender)) => Ok(sender),
            Opaque::Local(Channel::Receiver(_)) => Ok(channel().0),
        }
    }

    /// This end as a receiver; a sender used as a receiver is a receiver whose senders are gone.
    pub fn into_receiver(self) -> io::Result<Receiver> {
        match self {
            Opaque::Os(os) => Ok(Receiver::Os(Box::new(os.into_receiver()?))),
            Opaque::Local(Channel::Receiver(receiver)) => Ok(receiver),
            Opaque::Local(Channel::Sender(_)) => Ok(channel().1),
        }
    }
}

/// A received message.
#[derive(Debug)]
pub(crate) struct Message {
    pub data: Vec<u8>,
    pub channels: Vec<Opaque>,
    pub shared_memory: Vec<OsIpcSharedMemory>,
    /// How deeply the decoded value may nest (the receiver's limit).
    pub max_nesting: usize,
}

impl Message {
    /// A message with bytes only, under the default limits.
    pub fn from_data(data: Vec<u8>) -> Self {
        Message::from(OsIpcMessage::from_data(data))
    }
}

impl From<OsIpcMessage> for Message {
    fn from(message: OsIpcMessage) -> Self {
        Message {
            data: message.data,
            channels: message.channels.into_iter().map(Opaque::Os).collect(),
            shared_memory: message.shared_memory,
            max_nesting: message.max_nesting,
        }
    }
}

impl std::fmt::Debug for LocalMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LocalMessage({} bytes, {} channels)", self.data.len(), self.channels.len())
    }
}
