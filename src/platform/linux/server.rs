//! The one-shot server: a listening socket in a fresh private directory.
//!
//! The directory is created with mode 0700 under a random name, so no other user can connect
//! to the socket or put their own socket in its place; it is removed as soon as a client is
//! accepted, and when the server is dropped.

use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;

use rustix::net::{accept_with, bind, listen, socket_with, AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use tempfile::TempDir;

use super::sys::retry_on_intr;
use super::OsIpcReceiver;
use crate::platform::{OsIpcMessage, RecvError, RecvMode};

/// A server that accepts one client, receives its first message, and is done.
pub(crate) struct OsIpcOneShotServer {
    listener: OwnedFd,
    dir: TempDir,
}

impl OsIpcOneShotServer {
    /// Binds a new server and returns it with the name a client connects to.
    pub fn new() -> io::Result<(Self, String)> {
        let dir = tempfile::Builder::new()
            .prefix("crossproc-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()?;
        let path = dir.path().join("socket");
        let name = path.to_str().ok_or_else(|| io::Error::other("temporary directory is not UTF-8"))?.to_owned();
        let listener =
            retry_on_intr(|| socket_with(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None))?;
        bind(&listener, &SocketAddrUnix::new(path.as_path())?)?;
        listen(&listener, 16)?;
        Ok((OsIpcOneShotServer { listener, dir }, name))
    }

    /// Waits for one client, then for its first message.
    pub fn accept(self) -> Result<(OsIpcReceiver, OsIpcMessage), RecvError> {
        let connection = retry_on_intr(|| accept_with(&self.listener, SocketFlags::CLOEXEC))?;
        drop(self);
        let receiver = OsIpcReceiver::from_fd(connection);
        let message = receiver.recv(RecvMode::Blocking)?;
        Ok((receiver, message))
    }
}

impl fmt::Debug for OsIpcOneShotServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OsIpcOneShotServer({})", self.dir.path().display())
    }
}
