//! Async accept for `IpcServer`.

use std::fmt;
use std::io;

use serde::{Deserialize, Serialize};

use super::receiver::AsyncIpcReceiver;
use crate::error::IpcError;
use crate::ipc::{acceptor_error, IpcClient, IpcReceiver, IpcServer, PeerCredentials};
use crate::sys::{OsServerGuard, ReceiveLimits};

/// An [`IpcServer`] whose `accept` awaits on tokio's reactor.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use crossproc::ipc::{IpcSender, IpcServer};
/// let (server, name) = IpcServer::<String>::new().unwrap();
/// let server = crossproc::tokio::AsyncIpcServer::new(server).unwrap();
/// std::thread::spawn(move || IpcSender::<String>::connect(name).unwrap().send("hi".into()).unwrap());
/// let (_rx, first, who) = server.accept().await.unwrap();
/// assert_eq!((first.as_str(), who.pid), ("hi", std::process::id()));
/// # });
/// ```
pub struct AsyncIpcServer<T> {
    incoming: AsyncIpcReceiver<IpcClient<T>>,
    guard: OsServerGuard,
    /// The server's limits ([`IpcServer::set_limits`]), applied to every client's channel.
    limits: ReceiveLimits,
}

impl<T> AsyncIpcServer<T>
where
    T: for<'de> Deserialize<'de> + Serialize,
{
    /// Registers `server` with the current runtime's reactor; the limits set on it
    /// ([`IpcServer::set_limits`]) apply to every client's channel from its first message on.
    pub fn new(server: IpcServer<T>) -> io::Result<Self> {
        let limits = server.client_limits();
        let (incoming, guard) = server.into_parts();
        Ok(AsyncIpcServer { incoming: AsyncIpcReceiver::new(incoming)?, guard, limits })
    }

    /// Waits for the next client's first message, as [`IpcServer::accept`] does (an acceptor
    /// that failed is reported as its error). Cancellation safe.
    pub async fn accept(&self) -> Result<(IpcReceiver<T>, T, PeerCredentials), IpcError> {
        loop {
            let client = self.incoming.recv().await.map_err(|error| acceptor_error(&self.guard, error))?;
            // A client is handed over only once its first message (or hang-up) is readable.
            client.receiver.set_limits(self.limits);
            if let Ok(first) = client.receiver.try_recv() {
                return Ok((client.receiver, first, client.credentials));
            }
        }
    }
}

impl<T> fmt::Debug for AsyncIpcServer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AsyncIpcServer")
    }
}
