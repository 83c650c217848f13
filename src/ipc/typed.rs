//! Typed channels: values are encoded with serde + postcard.

use std::cell::Cell;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::endpoint::{ipc_error, send_error, try_recv_error, ReceiverEnd, SenderEnd};
use super::message::{OpaqueIpcReceiver, OpaqueIpcSender};
use crate::chan;
use crate::codec::handles;
use crate::error::{IpcError, SendTimeoutError, SerDeError, TryRecvError, TrySendError};
use crate::sys::ReceiveLimits;
use crate::sys::{self, OsIpcSender, Wait};

/// Creates a channel for values of type `T`: the sending end and the receiving end.
///
/// Either end may move to another process inside a message (or through an
/// [`IpcOneShotServer`](super::IpcOneShotServer)) and keeps working there. Until one does, the
/// channel is *local*: a queue in this process, with no descriptor and no system call; it
/// becomes an OS channel (a socket pair on Linux, a pipe on Windows) when an end leaves the
/// process, joins an [`IpcReceiverSet`](super::IpcReceiverSet) or a tokio type, with every
/// message kept in order (docs/local.md). A local channel made before `fork` cannot be used in
/// the child (an error says so): use [`os_channel`] for that.
///
/// ```
/// let (tx, rx) = crossproc::ipc::channel::<String>().unwrap();
/// tx.send("Hello, World!".to_string()).unwrap();
/// assert_eq!(rx.recv().unwrap(), "Hello, World!");
/// ```
pub fn channel<T>() -> Result<(IpcSender<T>, IpcReceiver<T>), io::Error>
where
    T: for<'de> Deserialize<'de> + Serialize,
{
    Ok(typed_ends(chan::channel()))
}

fn typed_ends<T>((sender, receiver): (chan::Sender, chan::Receiver)) -> (IpcSender<T>, IpcReceiver<T>) {
    (
        IpcSender { end: SenderEnd(sender), phantom: PhantomData },
        IpcReceiver { end: ReceiverEnd::new(receiver), phantom: PhantomData },
    )
}

/// Creates a channel for values of type `T` that is an OS channel from the start (a socket pair
/// on Linux, a pipe on Windows), with everything an OS channel has: for a sandbox that forbids
/// making sockets once it is engaged, and for tests and benchmarks of the OS backends.
///
/// [`channel`] makes a local channel instead, which becomes an OS channel only when an end
/// leaves the process (docs/local.md).
///
/// ```
/// let (tx, rx) = crossproc::ipc::os_channel::<u32>().unwrap();
/// tx.send(7).unwrap();
/// assert_eq!(rx.recv().unwrap(), 7);
/// ```
pub fn os_channel<T>() -> Result<(IpcSender<T>, IpcReceiver<T>), io::Error>
where
    T: for<'de> Deserialize<'de> + Serialize,
{
    Ok(typed_ends(chan::os_channel()?))
}

/// The sending end of a typed channel. Clone it for more producers, in this process or any other.
///
/// # When `send` blocks
/// A message waits in the channel's kernel buffer until the receiver takes it (a local channel
/// keeps a budget of the same size, counted the same way). `send` blocks
/// while that buffer has no room for the message (the receiver is not keeping up), and returns as
/// soon as it has; it never waits for the receiver to *process* the message. On Linux the buffer
/// holds about 208 KiB by default (each small message costs about 1 KiB of it, so a few hundred
/// messages). Payloads over 200 KiB travel in a memfd beside the buffer; each claims 64 KiB of
/// the buffer, or only 1 KiB per MiB when it reuses one of the few memfds the channel's senders
/// keep (up to 16 per channel, 256 MiB per process). So the default buffer also bounds large
/// payloads in flight, to about four beyond those kept memfds (and at least two of any size): a
/// receiver that falls behind cannot make them pile up in memory. [`try_send`](Self::try_send)
/// and [`send_timeout`](Self::send_timeout) never block (longer than asked), and
/// [`set_buffer_size`](Self::set_buffer_size) sizes the buffer.
///
/// ```
/// let (tx, rx) = crossproc::ipc::channel::<u64>().unwrap();
/// let tx2 = tx.clone();
/// std::thread::spawn(move || tx2.send(2).unwrap()).join().unwrap();
/// tx.send(1).unwrap();
/// let mut got = [rx.recv().unwrap(), rx.recv().unwrap()];
/// got.sort();
/// assert_eq!(got, [1, 2]);
/// ```
pub struct IpcSender<T> {
    pub(crate) end: SenderEnd,
    /// Covariant in `T`, as ipc-channel's `PhantomData<T>`, yet `Send + Sync` for every `T`:
    /// the sender holds no `T`.
    pub(crate) phantom: PhantomData<fn() -> T>,
}

thread_local! {
    /// A reusable encoding buffer, so small sends do not allocate.
    static SEND_BUFFER: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    /// A reusable buffer for received bytes, so small receives do not allocate.
    static RECV_BUFFER: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Encoding buffers larger than this are not kept for reuse.
const KEPT_BUFFER_CAPACITY: usize = 1 << 20;

/// Keeps an encoding buffer for this thread's next send, emptied, unless it grew too large.
fn keep_send_buffer(mut buffer: Vec<u8>) {
    if buffer.capacity() <= KEPT_BUFFER_CAPACITY {
        buffer.clear();
        SEND_BUFFER.with(|cell| cell.set(buffer));
    }
}
/// Receive buffers larger than this are not kept for reuse.
const KEPT_RECV_CAPACITY: usize = 64 << 10;

impl<T> IpcSender<T>
where
    T: Serialize,
{
    /// Connects to the [`IpcOneShotServer`](super::IpcOneShotServer) named `name`.
    ///
    /// ```
    /// use crossproc::ipc::{IpcOneShotServer, IpcSender};
    /// let (server, name) = IpcOneShotServer::<String>::new().unwrap();
    /// let client = std::thread::spawn(move || {
    ///     IpcSender::<String>::connect(name).unwrap().send("hi".into()).unwrap();
    /// });
    /// let (_rx, first) = server.accept().unwrap();
    /// assert_eq!(first, "hi");
    /// client.join().unwrap();
    /// ```
    pub fn connect(name: String) -> Result<IpcSender<T>, io::Error> {
        Ok(IpcSender { end: SenderEnd(chan::Sender::Os(OsIpcSender::connect(&name)?)), phantom: PhantomData })
    }

    /// Sends a value. Channels and shared memory inside it travel along.
    ///
    /// Returns [`IpcError::Disconnected`] when the receiver is gone, and
    /// [`IpcError::SerializationError`] when the value cannot be encoded.
    ///
    /// ```
    /// let (tx, rx) = crossproc::ipc::channel::<Vec<u8>>().unwrap();
    /// tx.send(vec![1, 2, 3]).unwrap();
    /// drop(rx);
    /// assert!(matches!(tx.send(vec![]), Err(crossproc::IpcError::Disconnected)));
    /// ```
    pub fn send(&self, data: T) -> Result<(), IpcError> {
        self.send_with(&data, Wait::Blocking)
    }

    /// Sends a value if the channel's buffer has room now; otherwise gives it back in
    /// [`TrySendError::Full`]. A message is sent whole or not at all.
    ///
    /// ```
    /// use crossproc::TrySendError;
    /// let (tx, rx) = crossproc::ipc::channel::<Vec<u8>>().unwrap();
    /// let mut sent = 0;
    /// while tx.try_send(vec![0; 1000]).is_ok() {
    ///     sent += 1; // the receiver is not reading: the buffer fills up
    /// }
    /// for _ in 0..sent {
    ///     rx.recv().unwrap();
    /// }
    /// assert!(tx.try_send(vec![1]).is_ok()); // room again
    /// ```
    pub fn try_send(&self, data: T) -> Result<(), TrySendError<T>> {
        self.send_with(&data, Wait::NonBlocking).map_err(|error| TrySendError::from_send(data, error))
    }

    /// Sends a value, waiting at most `timeout` for room in the channel's buffer; otherwise
    /// gives it back in [`SendTimeoutError::Timeout`].
    ///
    /// ```
    /// use std::time::Duration;
    /// let (tx, _rx) = crossproc::ipc::channel::<u8>().unwrap();
    /// tx.send_timeout(1, Duration::from_millis(10)).unwrap();
    /// ```
    pub fn send_timeout(&self, data: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        self.send_with(&data, Wait::Timeout(timeout)).map_err(|error| SendTimeoutError::from_send(data, error))
    }

    /// Sends a value by reference, waiting as `wait` allows (every send above, and the async
    /// sender's non-blocking attempts, which retry with the same value).
    pub(crate) fn send_with(&self, data: &T, wait: Wait) -> Result<(), IpcError> {
        // Should anything below fail, dropping `handles` gives every receiver inside `data` back.
        let (result, mut handles) = match self.end.0.os() {
            Some(os) => {
                let writer = os.payload_writer(SEND_BUFFER.with(Cell::take));
                let (writer, mut handles) = handles::encode(data, writer)?;
                let encoded = writer.finish()?;
                let (channels, shared_memory) = handles.take_for_send();
                let result = chan::send_os_encoded(os, &encoded, channels, shared_memory, wait);
                keep_send_buffer(encoded.into_buffer());
                (result, handles)
            }
            None => {
                // A local channel queues the bytes themselves: encode in the kept buffer, and
                // queue a copy of just the right size.
                let (buffer, mut handles) = handles::encode_to_vec(data, SEND_BUFFER.with(Cell::take))?;
                let (channels, shared_memory) = handles.take_for_send();
                let result = self.end.0.send_owned(buffer.as_slice().to_vec(), channels, shared_memory, wait);
                keep_send_buffer(buffer);
                (result, handles)
            }
        };
        match result {
            Ok(()) => {
                handles.commit();
                Ok(())
            }
            Err(failure) => {
                handles.give_back(failure.channels);
                Err(send_error(failure.error))
            }
        }
    }

    /// Sets the size of the channel's kernel buffer, which decides how much may be in flight
    /// before `send` blocks (Linux rounds it and caps it at `net.core.wmem_max`). It applies to
    /// every sender of the channel, in every process.
    ///
    /// ```
    /// let (tx, _rx) = crossproc::ipc::channel::<u8>().unwrap();
    /// tx.set_buffer_size(64 * 1024).unwrap();
    /// assert!(tx.buffer_size().unwrap() >= 64 * 1024);
    /// ```
    pub fn set_buffer_size(&self, bytes: usize) -> io::Result<()> {
        self.end.0.set_buffer_size(bytes)
    }

    /// The size of the channel's kernel buffer, in bytes.
    pub fn buffer_size(&self) -> io::Result<usize> {
        self.end.0.buffer_size()
    }

    /// This sender without its type, for code that handles many channel types.
    pub fn to_opaque(self) -> OpaqueIpcSender {
        OpaqueIpcSender { end: self.end }
    }
}

impl<T> Clone for IpcSender<T> {
    fn clone(&self) -> Self {
        IpcSender { end: self.end.clone(), phantom: PhantomData }
    }
}

impl<T> fmt::Debug for IpcSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("IpcSender").field(&self.end.0).finish()
    }
}

impl<T> Serialize for IpcSender<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.end.serialize(serializer)
    }
}

impl<'de, T> Deserialize<'de> for IpcSender<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(IpcSender { end: SenderEnd::deserialize(deserializer)?, phantom: PhantomData })
    }
}

/// The receiving end of a typed channel. It has one owner; sending it moves it.
///
/// ```
/// let (tx, rx) = crossproc::ipc::channel::<u8>().unwrap();
/// tx.send(1).unwrap();
/// drop(tx);
/// assert_eq!(rx.recv().unwrap(), 1);
/// assert!(matches!(rx.recv(), Err(crossproc::IpcError::Disconnected)));
/// ```
pub struct IpcReceiver<T> {
    pub(crate) end: ReceiverEnd,
    pub(crate) phantom: PhantomData<fn() -> T>,
}

impl<T> IpcReceiver<T>
where
    T: for<'de> Deserialize<'de> + Serialize,
{
    /// Waits for the next value. [`IpcError::Disconnected`] means every sender is gone and
    /// every value sent was already received.
    pub fn recv(&self) -> Result<T, IpcError> {
        let message = self.receive(Wait::Blocking).map_err(ipc_error)?;
        Ok(message?)
    }

    /// Takes the next value if one is queued; [`TryRecvError::Empty`] otherwise.
    ///
    /// ```
    /// use crossproc::TryRecvError;
    /// let (tx, rx) = crossproc::ipc::channel::<u8>().unwrap();
    /// assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
    /// tx.send(5).unwrap();
    /// assert_eq!(rx.try_recv().unwrap(), 5);
    /// ```
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        self.recv_with(Wait::NonBlocking)
    }

    /// Waits at most `duration` for the next value; [`TryRecvError::Empty`] if none came.
    ///
    /// ```
    /// use std::time::Duration;
    /// let (_tx, rx) = crossproc::ipc::channel::<u8>().unwrap();
    /// let result = rx.try_recv_timeout(Duration::from_millis(10));
    /// assert!(matches!(result, Err(crossproc::TryRecvError::Empty)));
    /// ```
    pub fn try_recv_timeout(&self, duration: Duration) -> Result<T, TryRecvError> {
        self.recv_with(Wait::Timeout(duration))
    }

    fn recv_with(&self, mode: Wait) -> Result<T, TryRecvError> {
        let message = self.receive(mode).map_err(try_recv_error)?;
        message.map_err(|error| TryRecvError::IpcError(error.into()))
    }

    /// Receives and decodes one message; its bytes land in this thread's kept buffer, which the
    /// next receive reuses (a small message then costs no allocation of its own).
    fn receive(&self, mode: Wait) -> Result<Result<T, SerDeError>, sys::RecvError> {
        let mut buffer = RECV_BUFFER.with(Cell::take);
        let message = self.end.recv_into(mode, &mut buffer);
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                RECV_BUFFER.with(|cell| cell.set(buffer));
                return Err(error);
            }
        };
        let value = handles::decode(&message.data, message.channels, message.shared_memory, message.max_nesting);
        if message.data.capacity() <= KEPT_RECV_CAPACITY {
            RECV_BUFFER.with(|cell| cell.set(message.data));
        }
        Ok(value)
    }

    /// Sets the limits every later message must respect; see [`ReceiveLimits`]. The limits
    /// stay with this process: a receiver sent to another process starts with the defaults there.
    pub fn set_limits(&self, limits: ReceiveLimits) {
        self.end.set_limits(limits);
    }

    /// The receive limits in force.
    ///
    /// ```
    /// let (_tx, rx) = crossproc::ipc::channel::<u8>().unwrap();
    /// assert_eq!(rx.limits(), crossproc::ipc::ReceiveLimits::default());
    /// ```
    pub fn limits(&self) -> ReceiveLimits {
        self.end.limits()
    }

    /// This receiver without its type, for [`IpcReceiverSet::add_opaque`](super::IpcReceiverSet::add_opaque)
    /// and code that handles many channel types.
    pub fn to_opaque(self) -> OpaqueIpcReceiver {
        OpaqueIpcReceiver { end: self.end }
    }
}

impl<T> fmt::Debug for IpcReceiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("IpcReceiver").field(&self.end).finish()
    }
}

impl<T> Serialize for IpcReceiver<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.end.serialize(serializer)
    }
}

impl<'de, T> Deserialize<'de> for IpcReceiver<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(IpcReceiver { end: ReceiverEnd::deserialize(deserializer)?, phantom: PhantomData })
    }
}
