//! The one-shot server: how a process with no channel yet gets its first one.

use std::fmt;
use std::io;
use std::marker::PhantomData;

use serde::{Deserialize, Serialize};

use super::endpoint::{ipc_error, ReceiverEnd};
use super::message::IpcMessage;
use super::typed::IpcReceiver;
use crate::error::IpcError;
use crate::platform::OsIpcOneShotServer;

/// A server that one client connects to, once: the rendezvous between a parent and a process it
/// started. Hand the name to the client (an argument, an environment variable); the client calls
/// [`IpcSender::connect`](super::IpcSender::connect) and sends a first message, usually carrying
/// more channels.
///
/// On Linux the name is the path of a socket inside a fresh directory with mode 0700, so no
/// other user can connect to it or replace it; the directory is removed when a client is
/// accepted or the server is dropped.
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
    os: OsIpcOneShotServer,
    phantom: PhantomData<fn() -> T>,
}

impl<T> IpcOneShotServer<T>
where
    T: for<'de> Deserialize<'de> + Serialize,
{
    /// Starts a server and returns it with its name.
    pub fn new() -> Result<(IpcOneShotServer<T>, String), io::Error> {
        let (os, name) = OsIpcOneShotServer::new()?;
        Ok((IpcOneShotServer { os, phantom: PhantomData }, name))
    }

    /// Waits for the client and its first message; returns the channel the client's sender
    /// feeds and that first message.
    pub fn accept(self) -> Result<(IpcReceiver<T>, T), IpcError> {
        let (receiver, message) = self.os.accept().map_err(ipc_error)?;
        let first = IpcMessage::from(message).to()?;
        Ok((IpcReceiver { end: ReceiverEnd::new(receiver), phantom: PhantomData }, first))
    }
}

impl<T> fmt::Debug for IpcOneShotServer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("IpcOneShotServer").field(&self.os).finish()
    }
}
