//! The one-shot server: how a process with no channel yet gets its first one.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::message::{IpcMessage, OpaqueIpcReceiver};
use super::server::{AccessPolicy, IpcServer};
use super::typed::IpcReceiver;
use crate::error::IpcError;

/// A server that one client connects to, once: the rendezvous between a parent and a process it
/// started. Hand the name to the client (an argument, an environment variable); the client calls
/// [`IpcSender::connect`](super::IpcSender::connect) and sends a first message, usually carrying
/// more channels.
///
/// On Linux the name is the path of a socket inside a fresh directory with mode 0700, so no
/// other user can connect to it or replace it; the directory is removed when a client is
/// accepted or the server is dropped. For many clients, see [`IpcServer`].
///
/// ```
/// use crossproc::ipc::{self, IpcOneShotServer, IpcSender};
/// let (server, name) = IpcOneShotServer::<ipc::IpcSender<u32>>::new().unwrap();
/// std::thread::spawn(move || {
///     let (reply_tx, reply_rx) = ipc::channel::<u32>().unwrap();
///     IpcSender::connect(name).unwrap().send(reply_tx).unwrap();
///     assert_eq!(reply_rx.recv().unwrap(), 42);
/// });
/// let (_rx, reply_tx) = server.accept().unwrap();
/// reply_tx.send(42).unwrap();
/// ```
pub struct IpcOneShotServer<T> {
    /// Behind a mutex only so that the server is `Sync`, as ipc-channel's is: every use takes
    /// `self` by value, so the lock is never contended (`Debug` only tries it). Untyped, since
    /// the raw accept does not depend on `T`, so that a mutex (invariant) leaves `T` covariant.
    server: Mutex<IpcServer<()>>,
    phantom: PhantomData<fn() -> T>,
}

impl<T> IpcOneShotServer<T>
where
    T: for<'de> Deserialize<'de> + Serialize,
{
    /// Starts a server and returns it with its name.
    pub fn new() -> Result<(IpcOneShotServer<T>, String), io::Error> {
        // The private directory already keeps other users out; within it, anyone may connect.
        let (server, name) = IpcServer::new_with_policy(AccessPolicy::Anyone)?;
        Ok((IpcOneShotServer { server: Mutex::new(server), phantom: PhantomData }, name))
    }

    /// Waits for the client and its first message; returns the channel the client's sender
    /// feeds and that first message. A client that leaves without a message is
    /// [`IpcError::Disconnected`].
    pub fn accept(self) -> Result<(IpcReceiver<T>, T), IpcError> {
        let (receiver, first) = self.accept_raw()?;
        Ok((receiver.to(), first.to()?))
    }

    /// The raw form of [`accept`](Self::accept), for `crossproc::platform`.
    pub(crate) fn accept_raw(self) -> Result<(OpaqueIpcReceiver, IpcMessage), IpcError> {
        let server = self.server.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner());
        server.accept_first_raw()
    }
}

impl<T> fmt::Debug for IpcOneShotServer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.server.try_lock() {
            Ok(server) => f.debug_tuple("IpcOneShotServer").field(&*server).finish(),
            Err(_) => f.write_str("IpcOneShotServer(<busy>)"),
        }
    }
}
