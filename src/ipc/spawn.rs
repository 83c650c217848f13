//! Spawning a child process with a channel already connected: no name, nothing to race for.

use std::io;
use std::marker::PhantomData;
use std::process::{Child, Command};

use serde::{Deserialize, Serialize};

use super::endpoint::{ReceiverEnd, SenderEnd};
use super::typed::{os_channel, IpcReceiver, IpcSender};
use crate::chan::{Receiver, Sender};
use crate::sys::{self, OsIpcChannel};

/// Starts a [`Command`] with a connected channel, passed as an inherited descriptor: no
/// file-system name exists, so no other process can connect in its place. Only that one
/// descriptor is inherited; every other one stays close-on-exec.
///
/// The child picks its end up with [`inherited_receiver`] or [`inherited_sender`]. A common
/// pattern sends the child a sender of replies as the first message.
///
/// ```no_run
/// use crossproc::ipc::{self, IpcCommandExt, IpcSender};
/// use std::process::Command;
/// // Parent:
/// let (mut child, to_child) = Command::new("my-worker").spawn_with_channel::<IpcSender<String>>().unwrap();
/// let (reply_tx, reply_rx) = ipc::channel::<String>().unwrap();
/// to_child.send(reply_tx).unwrap();
/// println!("child says {}", reply_rx.recv().unwrap());
/// child.wait().unwrap();
/// // Child (my-worker):
/// let from_parent = ipc::inherited_receiver::<IpcSender<String>>().unwrap();
/// from_parent.recv().unwrap().send("hello".into()).unwrap();
/// ```
pub trait IpcCommandExt {
    /// Spawns the command; the parent gets the sending end, the child the receiving end.
    fn spawn_with_channel<T>(&mut self) -> io::Result<(Child, IpcSender<T>)>
    where
        T: for<'de> Deserialize<'de> + Serialize;

    /// Spawns the command; the parent gets the receiving end, the child the sending end.
    fn spawn_with_receiver<T>(&mut self) -> io::Result<(Child, IpcReceiver<T>)>
    where
        T: for<'de> Deserialize<'de> + Serialize;
}

impl IpcCommandExt for Command {
    fn spawn_with_channel<T>(&mut self) -> io::Result<(Child, IpcSender<T>)>
    where
        T: for<'de> Deserialize<'de> + Serialize,
    {
        let (sender, receiver) = os_channel::<T>()?;
        let child_end = OsIpcChannel::Receiver(receiver.end.into_os()?);
        Ok((sys::spawn_with_inherited(self, child_end)?, sender))
    }

    fn spawn_with_receiver<T>(&mut self) -> io::Result<(Child, IpcReceiver<T>)>
    where
        T: for<'de> Deserialize<'de> + Serialize,
    {
        let (sender, receiver) = os_channel::<T>()?;
        let child_end = OsIpcChannel::Sender(sender.end.0.leave(crate::sys::Wait::Blocking)?);
        Ok((sys::spawn_with_inherited(self, child_end)?, receiver))
    }
}

/// In a child started with [`IpcCommandExt::spawn_with_channel`]: the receiving end its parent
/// passed down. Only the first call succeeds; a process started any other way gets
/// `io::ErrorKind::NotFound`.
///
/// ```
/// // This doc test was not started with a channel.
/// assert!(crossproc::ipc::inherited_receiver::<u8>().is_err());
/// ```
pub fn inherited_receiver<T>() -> io::Result<IpcReceiver<T>>
where
    T: for<'de> Deserialize<'de> + Serialize,
{
    let end = sys::take_inherited()?;
    Ok(IpcReceiver { end: ReceiverEnd::new(Receiver::Os(Box::new(end.into_receiver()?))), phantom: PhantomData })
}

/// In a child started with [`IpcCommandExt::spawn_with_receiver`]: the sending end its parent
/// passed down. Only the first call succeeds; a process started any other way gets
/// `io::ErrorKind::NotFound`.
///
/// ```
/// assert!(crossproc::ipc::inherited_sender::<u8>().is_err());
/// ```
pub fn inherited_sender<T>() -> io::Result<IpcSender<T>>
where
    T: for<'de> Deserialize<'de> + Serialize,
{
    let end = sys::take_inherited()?;
    Ok(IpcSender { end: SenderEnd(Sender::Os(end.into_sender()?)), phantom: PhantomData })
}
