//! `IpcServer`: a long-lived, named server that any number of clients connect to.

use std::cell::Cell;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::endpoint::{ipc_error, ReceiverEnd};
use super::message::{IpcMessage, OpaqueIpcReceiver};
use super::typed::IpcReceiver;
use crate::error::{IpcError, TryRecvError};
use crate::sys::ReceiveLimits;
use crate::sys::{self, Admit, OsListener, OsServerGuard, PeerCredentials, Wait};

/// Which clients a server admits. A refused client's
/// [`IpcSender::connect`](super::IpcSender::connect) fails with
/// `io::ErrorKind::PermissionDenied`, and the server never sees it.
///
/// ```
/// use crossproc::ipc::{AccessPolicy, PeerCredentials};
/// let me = PeerCredentials::of_this_process();
/// assert!(AccessPolicy::SameUser.allows(&me));
/// assert!(!AccessPolicy::Uids(vec![me.uid.wrapping_add(1)]).allows(&me));
/// assert!(AccessPolicy::custom(|peer| peer.pid == std::process::id()).allows(&me));
/// ```
#[derive(Clone, Default)]
pub enum AccessPolicy {
    /// Only processes whose effective user id is the server's (the default).
    #[default]
    SameUser,
    /// Only processes whose effective user id is in this list.
    Uids(Vec<u32>),
    /// Every process that can reach the name (file-system permissions still apply).
    Anyone,
    /// Whatever the closure decides.
    Custom(Arc<dyn Fn(&PeerCredentials) -> bool + Send + Sync>),
}

impl AccessPolicy {
    /// A policy decided by `rule`.
    pub fn custom(rule: impl Fn(&PeerCredentials) -> bool + Send + Sync + 'static) -> AccessPolicy {
        AccessPolicy::Custom(Arc::new(rule))
    }

    /// Whether a client with these credentials is admitted.
    pub fn allows(&self, peer: &PeerCredentials) -> bool {
        match self {
            AccessPolicy::SameUser => peer.uid == sys::current_credentials().uid,
            AccessPolicy::Uids(uids) => uids.contains(&peer.uid),
            AccessPolicy::Anyone => true,
            AccessPolicy::Custom(rule) => rule(peer),
        }
    }
}

impl fmt::Debug for AccessPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccessPolicy::SameUser => f.write_str("SameUser"),
            AccessPolicy::Uids(uids) => f.debug_tuple("Uids").field(uids).finish(),
            AccessPolicy::Anyone => f.write_str("Anyone"),
            AccessPolicy::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// A newly connected client: the channel its sender feeds, and who it is. Delivered by
/// [`IpcServer`] inside an [`IpcReceiverSet`](super::IpcReceiverSet) (see
/// [`add_server`](super::IpcReceiverSet::add_server)); its first message is the first message
/// on `receiver`.
#[derive(Debug, Serialize, Deserialize)]
pub struct IpcClient<T> {
    /// The client's channel.
    pub receiver: IpcReceiver<T>,
    /// Who the client is.
    pub credentials: PeerCredentials,
}

/// A named server that any number of clients connect to, concurrently and repeatedly, each with
/// [`IpcSender::connect`](super::IpcSender::connect) and each getting its own channel.
///
/// An acceptor thread admits clients by the server's [`AccessPolicy`] as they connect; a client
/// reaches [`accept`](IpcServer::accept) only once its first message has arrived, so a client that
/// connects and stays silent, dies, or sends garbage costs that one connection and nothing else.
/// The name is removed when the server is dropped.
///
/// ```
/// use crossproc::ipc::{IpcSender, IpcServer};
/// let (server, name) = IpcServer::<String>::new().unwrap();
/// let clients: Vec<_> = (0..3)
///     .map(|i| {
///         let name = name.clone();
///         std::thread::spawn(move || IpcSender::connect(name).unwrap().send(format!("client {i}")).unwrap())
///     })
///     .collect();
/// let mut greetings: Vec<String> = (0..3).map(|_| server.accept().unwrap().1).collect();
/// greetings.sort();
/// assert_eq!(greetings, ["client 0", "client 1", "client 2"]);
/// for client in clients { client.join().unwrap(); }
/// ```
pub struct IpcServer<T> {
    incoming: IpcReceiver<IpcClient<T>>,
    guard: OsServerGuard,
    name: String,
    limits: Cell<ReceiveLimits>,
}

impl<T> IpcServer<T>
where
    T: for<'de> Deserialize<'de> + Serialize,
{
    /// A server under a fresh private name (on Linux, a socket in a new mode-0700 directory),
    /// admitting processes of the same user. Returns the server and its name.
    pub fn new() -> io::Result<(IpcServer<T>, String)> {
        Self::new_with_policy(AccessPolicy::SameUser)
    }

    /// Like [`new`](Self::new), with another access policy.
    pub fn new_with_policy(policy: AccessPolicy) -> io::Result<(IpcServer<T>, String)> {
        let (listener, name) = OsListener::bind_private()?;
        Ok((Self::start(listener, name.clone(), policy)?, name))
    }

    /// A server at a path the caller chooses (a well-known place for a service), admitting
    /// processes of the same user. A stale socket left at `path` by a server that is gone is
    /// replaced; a live server's socket, or any other file, is an `AddrInUse` error.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("service.sock");
    /// let server = crossproc::ipc::IpcServer::<u8>::bind(&path).unwrap();
    /// assert_eq!(server.name(), path.to_str().unwrap());
    /// assert!(crossproc::ipc::IpcServer::<u8>::bind(&path).is_err()); // still in use
    /// drop(server);
    /// assert!(!path.exists());
    /// ```
    pub fn bind(path: impl AsRef<Path>) -> io::Result<IpcServer<T>> {
        Self::bind_with_policy(path, AccessPolicy::SameUser)
    }

    /// Like [`bind`](Self::bind), with another access policy.
    pub fn bind_with_policy(path: impl AsRef<Path>, policy: AccessPolicy) -> io::Result<IpcServer<T>> {
        let path = path.as_ref();
        let name = path.to_str().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path is not UTF-8"))?;
        Self::start(OsListener::bind(path)?, name.to_owned(), policy)
    }

    fn start(listener: OsListener, name: String, policy: AccessPolicy) -> io::Result<IpcServer<T>> {
        let admit: Admit = Box::new(move |peer| policy.allows(peer).then(|| announcement(peer)));
        let (receiver, guard) = sys::serve(listener, admit)?;
        let incoming =
            IpcReceiver { end: ReceiverEnd::new(crate::chan::Receiver::Os(Box::new(receiver))), phantom: PhantomData };
        Ok(IpcServer { incoming, guard, name, limits: Cell::new(ReceiveLimits::DEFAULT) })
    }

    /// The name clients pass to [`IpcSender::connect`](super::IpcSender::connect).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets the receive limits applied to every client's channel from its first message on.
    pub fn set_limits(&self, limits: ReceiveLimits) {
        self.limits.set(limits);
    }

    /// Waits for the next client's first message; returns the client's channel, that message
    /// and the client's credentials. Clients that left, or whose first message was undecodable
    /// or over the limits, are skipped.
    pub fn accept(&self) -> Result<(IpcReceiver<T>, T, PeerCredentials), IpcError> {
        loop {
            let client = self.incoming.recv().map_err(|error| acceptor_error(&self.guard, error))?;
            if let Some(accepted) = self.first_message(client) {
                return Ok(accepted);
            }
        }
    }

    /// Reads a handed-over client's first message under the server's limits.
    fn first_message(&self, client: IpcClient<T>) -> Option<(IpcReceiver<T>, T, PeerCredentials)> {
        client.receiver.set_limits(self.limits.get());
        let first = client.receiver.recv().ok()?;
        Some((client.receiver, first, client.credentials))
    }

    /// Like [`accept`](Self::accept), without waiting: [`TryRecvError::Empty`] when no client
    /// is ready.
    pub fn try_accept(&self) -> Result<(IpcReceiver<T>, T, PeerCredentials), TryRecvError> {
        loop {
            let client = self.incoming.try_recv().map_err(|error| self.try_acceptor_error(error))?;
            if let Some(accepted) = self.first_message(client) {
                return Ok(accepted);
            }
        }
    }

    /// Like [`accept`](Self::accept), waiting at most `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let (server, _name) = crossproc::ipc::IpcServer::<u8>::new().unwrap();
    /// let result = server.accept_timeout(Duration::from_millis(10));
    /// assert!(matches!(result, Err(crossproc::TryRecvError::Empty)));
    /// ```
    pub fn accept_timeout(&self, timeout: Duration) -> Result<(IpcReceiver<T>, T, PeerCredentials), TryRecvError> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let left = deadline.map_or(timeout, |deadline| deadline.saturating_duration_since(Instant::now()));
            let client = self.incoming.try_recv_timeout(left).map_err(|error| self.try_acceptor_error(error))?;
            if let Some(accepted) = self.first_message(client) {
                return Ok(accepted);
            }
        }
    }

    /// [`acceptor_error`] for the non-blocking forms.
    fn try_acceptor_error(&self, error: TryRecvError) -> TryRecvError {
        match error {
            TryRecvError::IpcError(error) => TryRecvError::IpcError(acceptor_error(&self.guard, error)),
            TryRecvError::Empty => TryRecvError::Empty,
        }
    }

    /// The first client only, whatever became of it (the one-shot server's rule), with its first
    /// message not yet decoded.
    pub(crate) fn accept_first_raw(self) -> Result<(OpaqueIpcReceiver, IpcMessage), IpcError> {
        let client = self.incoming.recv().map_err(|error| acceptor_error(&self.guard, error))?;
        client.receiver.set_limits(self.limits.get());
        let first = client.receiver.end.recv(Wait::Blocking).map_err(ipc_error)?;
        Ok((client.receiver.to_opaque(), IpcMessage::from(first)))
    }

    /// The server's parts, for a receiver set: the channel of new clients and the guard that
    /// keeps the name alive.
    /// The receive limits applied to each client's channel.
    #[cfg(feature = "tokio")]
    pub(crate) fn client_limits(&self) -> ReceiveLimits {
        self.limits.get()
    }

    pub(crate) fn into_parts(self) -> (IpcReceiver<IpcClient<T>>, OsServerGuard) {
        (self.incoming, self.guard)
    }
}

/// `error`, or the system error that stopped the acceptor when that is why new clients stopped
/// coming (the incoming channel then reports `Disconnected`).
pub(crate) fn acceptor_error(guard: &OsServerGuard, error: IpcError) -> IpcError {
    match error {
        IpcError::Disconnected => guard.take_failure().map_or(IpcError::Disconnected, IpcError::Io),
        error => error,
    }
}

/// The bytes announcing an admitted client: an encoded `IpcClient` whose receiver is the one
/// channel the announcement carries.
fn announcement(peer: &PeerCredentials) -> Vec<u8> {
    postcard::to_stdvec(&(0u32, peer)).unwrap_or_default()
}

impl<T> fmt::Debug for IpcServer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpcServer").field("name", &self.name).finish()
    }
}
