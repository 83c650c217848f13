//! `ipc-channel`'s `platform` module, for code written against it: the same names, methods and
//! conversions, as a thin layer over crossproc's public types. New code should use [`ipc`]
//! instead; crossproc's real OS layer is private and free to change.
//!
//! | `ipc-channel` | here, built on |
//! |---|---|
//! | [`channel`], [`OsIpcSender`], [`OsIpcReceiver`] | [`ipc::OpaqueIpcSender`], [`ipc::OpaqueIpcReceiver`] |
//! | [`OsIpcReceiverSet`], [`OsIpcSelectionResult`], [`OsTrySelectError`] | [`ipc::IpcReceiverSet`] |
//! | [`OsIpcSharedMemory`] | [`ipc::IpcSharedMemory`] |
//! | [`OsIpcOneShotServer`] | [`ipc::IpcOneShotServer`] |
//! | [`OsIpcChannel`], [`OsOpaqueIpcChannel`] | a channel end to send, a received one |
//!
//! Messages are handed out as [`ipc::IpcMessage`], as in `ipc-channel`. Every fallible call
//! returns [`OsError`], which converts with `?` into `io::Error`, [`IpcError`] and
//! [`TryRecvError`] exactly as `ipc-channel`'s per-OS error types do (a closed channel becomes
//! [`IpcError::Disconnected`], an empty one [`TryRecvError::Empty`]).
//!
//! ```
//! use crossproc::platform::{self, OsIpcChannel, OsIpcSharedMemory};
//! let (tx, rx) = platform::channel().unwrap();
//! let (inner_tx, inner_rx) = platform::channel().unwrap();
//! let region = OsIpcSharedMemory::from_bytes(b"shared");
//! // A message of a `(String, IpcSender, IpcSharedMemory)`, written by hand: postcard bytes
//! // whose handles are indices into the lists that travel beside them.
//! let data = postcard::to_stdvec(&("hello", 0u32, 0u32)).unwrap();
//! tx.send(&data, vec![OsIpcChannel::Sender(inner_tx)], vec![region]).unwrap();
//! let message = rx.recv().unwrap();
//! let (text, sender, region): (String, crossproc::ipc::IpcSender<u8>, crossproc::ipc::IpcSharedMemory) =
//!     message.to().unwrap();
//! assert_eq!((text.as_str(), &*region), ("hello", &b"shared"[..]));
//! sender.send(1).unwrap();
//! assert!(inner_rx.recv().is_ok());
//! ```

use std::fmt;
use std::io;
use std::ops::Deref;
use std::time::Duration;

use crate::chan;
use crate::error::{IpcError, TryRecvError, TrySelectError};
use crate::ipc::{self, IpcMessage, IpcSelectionResult, OpaqueIpcReceiver, OpaqueIpcSender, ReceiverEnd, SenderEnd};
use crate::sys::{self, Wait};

/// The error of every call in this module (`ipc-channel` has one such type per OS, unnamed).
#[derive(Debug)]
pub enum OsError {
    /// Every sender of the channel is gone.
    ChannelClosed,
    /// A non-blocking call found nothing to do.
    Empty,
    /// The operating system failed, or a peer sent something malformed.
    Io(io::Error),
}

impl OsError {
    /// Whether every sender of the channel is gone (as `ipc-channel`'s `channel_is_closed`).
    ///
    /// ```
    /// let (tx, rx) = crossproc::platform::channel().unwrap();
    /// drop(tx);
    /// assert!(rx.recv().unwrap_err().channel_is_closed());
    /// ```
    pub fn channel_is_closed(&self) -> bool {
        matches!(self, OsError::ChannelClosed)
    }
}

impl fmt::Display for OsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OsError::ChannelClosed => f.write_str("every sender of the channel is gone"),
            OsError::Empty => f.write_str("no message is ready"),
            OsError::Io(error) => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for OsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OsError::Io(error) => error.source(),
            _ => None,
        }
    }
}

impl From<io::Error> for OsError {
    fn from(error: io::Error) -> Self {
        OsError::Io(error)
    }
}

impl From<OsError> for io::Error {
    fn from(error: OsError) -> Self {
        match error {
            OsError::ChannelClosed => io::Error::new(io::ErrorKind::ConnectionReset, error),
            OsError::Empty => io::Error::new(io::ErrorKind::WouldBlock, error),
            OsError::Io(error) => error,
        }
    }
}

impl From<OsError> for IpcError {
    fn from(error: OsError) -> Self {
        match error {
            OsError::ChannelClosed => IpcError::Disconnected,
            error => IpcError::Io(error.into()),
        }
    }
}

impl From<OsError> for TryRecvError {
    fn from(error: OsError) -> Self {
        match error {
            OsError::Empty => TryRecvError::Empty,
            error => TryRecvError::IpcError(error.into()),
        }
    }
}

impl From<IpcError> for OsError {
    fn from(error: IpcError) -> Self {
        match error {
            IpcError::Disconnected => OsError::ChannelClosed,
            IpcError::Io(error) => OsError::Io(error),
            IpcError::SerializationError(error) => OsError::Io(io::Error::new(io::ErrorKind::InvalidData, error)),
        }
    }
}

impl From<TryRecvError> for OsError {
    fn from(error: TryRecvError) -> Self {
        match error {
            TryRecvError::Empty => OsError::Empty,
            TryRecvError::IpcError(error) => error.into(),
        }
    }
}

/// A new channel.
pub fn channel() -> Result<(OsIpcSender, OsIpcReceiver), OsError> {
    let (sender, receiver) = ipc::os_channel::<()>()?;
    let (sender, receiver) = (sender.to_opaque(), receiver.to_opaque());
    Ok((OsIpcSender(sender), OsIpcReceiver(receiver)))
}

/// The sending end of a [`channel`]; cloneable.
#[derive(Clone, Debug)]
pub struct OsIpcSender(OpaqueIpcSender);

impl OsIpcSender {
    /// Connects to an [`OsIpcOneShotServer`] (or an [`IpcServer`](ipc::IpcServer)) by name.
    pub fn connect(name: String) -> Result<OsIpcSender, OsError> {
        Ok(OsIpcSender(ipc::IpcSender::<()>::connect(name)?.to_opaque()))
    }

    /// The largest message data that travels inside one packet. Unlike `ipc-channel`, crossproc
    /// never splits a message: larger data travels out of line (Linux: in a memfd) in one send.
    pub fn get_max_fragment_size() -> usize {
        sys::INLINE_MAX
    }

    /// Sends `data` with channel ends and shared memory regions, as one message. A typed
    /// receiver decodes each channel or region in the data as its index in these lists.
    pub fn send(
        &self,
        data: &[u8],
        channels: Vec<OsIpcChannel>,
        shared_memory_regions: Vec<OsIpcSharedMemory>,
    ) -> Result<(), OsError> {
        let channels = channels.into_iter().map(OsIpcChannel::into_chan).collect::<io::Result<_>>()?;
        let regions = shared_memory_regions.iter().map(|region| region.0.to_os()).collect::<io::Result<_>>()?;
        Ok(self.0.end.0.send(data, channels, regions, Wait::Blocking).map_err(io::Error::from)?)
    }

    /// This sender as crossproc's untyped sender.
    pub fn into_opaque(self) -> OpaqueIpcSender {
        self.0
    }
}

/// The receiving end of a [`channel`].
#[derive(Debug)]
pub struct OsIpcReceiver(OpaqueIpcReceiver);

/// A receiver is never duplicated, so two receivers are equal when they are the same one, or
/// when both are empty ([`consume`](OsIpcReceiver::consume)d or moved into a message) — what
/// comparing the handles gives in ipc-channel's Windows backend, which has this impl (its Unix
/// one does not; crossproc has it on every OS).
///
/// ```
/// let (_tx, rx) = crossproc::platform::channel().unwrap();
/// let (_tx2, rx2) = crossproc::platform::channel().unwrap();
/// assert!(rx == rx && rx != rx2);
/// let (moved, moved2) = (rx.consume(), rx2.consume());
/// assert!(moved != rx && moved != moved2 && rx == rx2);
/// ```
impl PartialEq for OsIpcReceiver {
    fn eq(&self, other: &OsIpcReceiver) -> bool {
        std::ptr::eq(self, other) || (self.0.end.is_moved() && other.0.end.is_moved())
    }
}

impl OsIpcReceiver {
    /// Moves the receiver out into a new value; this one is left empty (every later receive on
    /// it fails), as in `ipc-channel`.
    pub fn consume(&self) -> OsIpcReceiver {
        OsIpcReceiver(OpaqueIpcReceiver { end: self.0.end.take() })
    }

    /// Waits for a message.
    pub fn recv(&self) -> Result<IpcMessage, OsError> {
        self.receive(Wait::Blocking)
    }

    /// A message if one is queued; [`OsError::Empty`] otherwise.
    pub fn try_recv(&self) -> Result<IpcMessage, OsError> {
        self.receive(Wait::NonBlocking)
    }

    /// Waits at most `duration` for a message; [`OsError::Empty`] if none came.
    pub fn try_recv_timeout(&self, duration: Duration) -> Result<IpcMessage, OsError> {
        self.receive(Wait::Timeout(duration))
    }

    fn receive(&self, wait: Wait) -> Result<IpcMessage, OsError> {
        match self.0.end.recv(wait) {
            Ok(message) => Ok(IpcMessage::from(message)),
            Err(sys::RecvError::Disconnected) => Err(OsError::ChannelClosed),
            Err(sys::RecvError::Empty) => Err(OsError::Empty),
            Err(sys::RecvError::Io(error)) => Err(OsError::Io(error)),
        }
    }

    /// This receiver as crossproc's untyped receiver.
    pub fn into_opaque(self) -> OpaqueIpcReceiver {
        self.0
    }
}

/// A channel end to send in a message ([`OsIpcSender::send`]).
#[derive(Debug)]
pub enum OsIpcChannel {
    /// A sender (a clone of it travels).
    Sender(OsIpcSender),
    /// A receiver (it moves).
    Receiver(OsIpcReceiver),
}

impl OsIpcChannel {
    fn into_chan(self) -> io::Result<chan::Channel> {
        Ok(match self {
            OsIpcChannel::Sender(sender) => chan::Channel::Sender(sender.0.end.0),
            OsIpcChannel::Receiver(receiver) => chan::Channel::Receiver(receiver.0.end.into_inner()?),
        })
    }
}

/// A received channel end that is not yet a sender or a receiver. `ipc-channel` hands these out
/// only inside its own crate; the type is here so that code naming it compiles.
#[derive(Debug)]
pub struct OsOpaqueIpcChannel(Option<sys::OsOpaqueIpcChannel>);

impl OsOpaqueIpcChannel {
    /// The end as a sender.
    ///
    /// # Panics
    /// When this end was already converted, or the system cannot represent it as a sender.
    pub fn to_sender(&mut self) -> OsIpcSender {
        let end = self.0.take().expect("this channel end was already converted");
        let sender = end.into_sender().expect("cannot use this channel end as a sender");
        OsIpcSender(OpaqueIpcSender { end: SenderEnd(chan::Sender::Os(sender)) })
    }

    /// The end as a receiver.
    ///
    /// # Panics
    /// When this end was already converted, or the system cannot represent it as a receiver.
    pub fn to_receiver(&mut self) -> OsIpcReceiver {
        let end = self.0.take().expect("this channel end was already converted");
        let receiver = end.into_receiver().expect("cannot use this channel end as a receiver");
        OsIpcReceiver(OpaqueIpcReceiver { end: ReceiverEnd::new(chan::Receiver::Os(Box::new(receiver))) })
    }
}

/// Select over many [`OsIpcReceiver`]s.
pub struct OsIpcReceiverSet(ipc::IpcReceiverSet);

impl OsIpcReceiverSet {
    /// An empty set.
    pub fn new() -> Result<OsIpcReceiverSet, OsError> {
        Ok(OsIpcReceiverSet(ipc::IpcReceiverSet::for_os_receivers()?))
    }

    /// Moves a receiver into the set; returns the id its events carry.
    pub fn add(&mut self, receiver: OsIpcReceiver) -> Result<u64, OsError> {
        Ok(self.0.add_opaque(receiver.0)?)
    }

    /// Waits until a member has a message or closed.
    pub fn select(&mut self) -> Result<Vec<OsIpcSelectionResult>, OsError> {
        Ok(self.0.select()?.into_iter().map(OsIpcSelectionResult::from).collect())
    }

    /// What is ready now; [`OsTrySelectError::Empty`] if nothing is.
    pub fn try_select(&mut self) -> Result<Vec<OsIpcSelectionResult>, OsTrySelectError> {
        Self::report(self.0.try_select())
    }

    /// Waits at most `duration`; [`OsTrySelectError::Empty`] if nothing happened.
    pub fn try_select_timeout(&mut self, duration: Duration) -> Result<Vec<OsIpcSelectionResult>, OsTrySelectError> {
        Self::report(self.0.try_select_timeout(duration))
    }

    fn report(
        results: Result<Vec<IpcSelectionResult>, TrySelectError>,
    ) -> Result<Vec<OsIpcSelectionResult>, OsTrySelectError> {
        match results {
            Ok(results) => Ok(results.into_iter().map(OsIpcSelectionResult::from).collect()),
            Err(TrySelectError::Empty) => Err(OsTrySelectError::Empty),
            Err(TrySelectError::IoError(error)) => Err(OsTrySelectError::IoError(error.into())),
        }
    }
}

impl fmt::Debug for OsIpcReceiverSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OsIpcReceiverSet")
    }
}

/// One event of an [`OsIpcReceiverSet`].
#[derive(Debug)]
pub enum OsIpcSelectionResult {
    /// A message arrived on the member with this id.
    DataReceived(u64, IpcMessage),
    /// Every sender of the member with this id is gone; it left the set.
    ChannelClosed(u64),
}

impl OsIpcSelectionResult {
    /// The id and message of a `DataReceived`.
    ///
    /// # Panics
    /// On `ChannelClosed`.
    pub fn unwrap(self) -> (u64, IpcMessage) {
        match self {
            OsIpcSelectionResult::DataReceived(id, message) => (id, message),
            OsIpcSelectionResult::ChannelClosed(id) => panic!("OsIpcSelectionResult::unwrap(): channel {id} closed"),
        }
    }
}

impl From<IpcSelectionResult> for OsIpcSelectionResult {
    fn from(result: IpcSelectionResult) -> Self {
        match result {
            IpcSelectionResult::MessageReceived(id, message) => OsIpcSelectionResult::DataReceived(id, message),
            IpcSelectionResult::ChannelClosed(id) => OsIpcSelectionResult::ChannelClosed(id),
        }
    }
}

/// Why [`OsIpcReceiverSet::try_select`] returned nothing.
#[derive(Debug)]
pub enum OsTrySelectError {
    /// The system failed.
    IoError(OsError),
    /// Nothing was ready.
    Empty,
}

impl fmt::Display for OsTrySelectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OsTrySelectError::IoError(_) => f.write_str("select failed"),
            OsTrySelectError::Empty => f.write_str("no message was received and no channel closed"),
        }
    }
}

impl std::error::Error for OsTrySelectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OsTrySelectError::IoError(error) => Some(error),
            OsTrySelectError::Empty => None,
        }
    }
}

impl From<OsError> for OsTrySelectError {
    fn from(error: OsError) -> Self {
        OsTrySelectError::IoError(error)
    }
}

/// Shared memory; see [`ipc::IpcSharedMemory`], which it wraps (including its private
/// copy-on-write `deref_mut`).
#[derive(Clone, PartialEq)]
pub struct OsIpcSharedMemory(ipc::IpcSharedMemory);

impl OsIpcSharedMemory {
    /// A region of `length` bytes equal to `byte`.
    ///
    /// # Panics
    /// When the system cannot create the region.
    pub fn from_byte(byte: u8, length: usize) -> OsIpcSharedMemory {
        OsIpcSharedMemory(ipc::IpcSharedMemory::from_byte(byte, length))
    }

    /// A region holding a copy of `bytes`.
    ///
    /// # Panics
    /// When the system cannot create the region.
    pub fn from_bytes(bytes: &[u8]) -> OsIpcSharedMemory {
        OsIpcSharedMemory(ipc::IpcSharedMemory::from_bytes(bytes))
    }

    /// See [`ipc::IpcSharedMemory::deref_mut`].
    ///
    /// # Safety
    /// Nothing is required: the function is `unsafe` only to keep `ipc-channel`'s signature.
    #[allow(unsafe_code)] // an `unsafe fn` signature for compatibility; no unsafe operation inside
    pub unsafe fn deref_mut(&mut self) -> &mut [u8] {
        self.0.private_mut()
    }

    /// The contents as a vector.
    pub fn take(self) -> Option<Vec<u8>> {
        self.0.take()
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
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A one-shot server: one client connects and sends one first message.
#[derive(Debug)]
pub struct OsIpcOneShotServer(ipc::IpcOneShotServer<()>);

impl OsIpcOneShotServer {
    /// Starts a server; returns it and the name a client passes to [`OsIpcSender::connect`].
    pub fn new() -> Result<(OsIpcOneShotServer, String), OsError> {
        let (server, name) = ipc::IpcOneShotServer::new()?;
        Ok((OsIpcOneShotServer(server), name))
    }

    /// Waits for the client; returns its channel and its first message, not yet decoded.
    pub fn accept(self) -> Result<(OsIpcReceiver, IpcMessage), OsError> {
        let (receiver, first) = self.0.accept_raw()?;
        Ok((OsIpcReceiver(receiver), first))
    }
}
