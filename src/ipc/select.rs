//! Select over many receivers.

use std::collections::HashMap;
use std::io;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::message::{IpcMessage, OpaqueIpcReceiver};
use super::server::IpcServer;
use super::typed::IpcReceiver;
use crate::error::TrySelectError;
use crate::sys::ReceiveLimits;
use crate::sys::{OsIpcReceiverSet, OsIpcSelectionResult, OsServerGuard, Wait};

/// A set of receivers waited on together: receivers move into the set, and each
/// [`select`](IpcReceiverSet::select) reports what arrived on any of them. Waiting costs the
/// same however many receivers the set holds (epoll on Linux).
///
/// ```
/// use crossproc::ipc::{self, IpcReceiverSet};
/// let (tx1, rx1) = ipc::channel::<u32>().unwrap();
/// let (tx2, rx2) = ipc::channel::<String>().unwrap();
/// let mut set = IpcReceiverSet::new().unwrap();
/// let id1 = set.add(rx1).unwrap();
/// let id2 = set.add(rx2).unwrap();
/// tx2.send("two".into()).unwrap();
/// drop(tx1);
/// let mut seen = 0;
/// while seen < 2 {
///     for event in set.select().unwrap() {
///         match event {
///             ipc::IpcSelectionResult::MessageReceived(id, message) => {
///                 assert_eq!(id, id2);
///                 assert_eq!(message.to::<String>().unwrap(), "two");
///             }
///             ipc::IpcSelectionResult::ChannelClosed(id) => assert_eq!(id, id1),
///         }
///         seen += 1;
///     }
/// }
/// ```
pub struct IpcReceiverSet {
    pub(crate) os: OsIpcReceiverSet,
    /// Servers added with `add_server`, kept running while their id is in the set.
    servers: HashMap<u64, OsServerGuard>,
    /// Messages a member brought along that its OS channel does not hold (a local channel's
    /// backlog from before a sender left): reported before anything of that member.
    pending: Vec<IpcSelectionResult>,
}

impl IpcReceiverSet {
    /// An empty set.
    pub fn new() -> Result<IpcReceiverSet, io::Error> {
        Ok(IpcReceiverSet { os: OsIpcReceiverSet::new()?, servers: HashMap::new(), pending: Vec::new() })
    }

    /// Sets the receive limits of every receiver in the set, and of every one added later.
    pub fn set_limits(&mut self, limits: ReceiveLimits) {
        self.os.set_limits(limits);
    }

    /// Moves a typed receiver into the set and returns the id its events will carry.
    pub fn add<T>(&mut self, receiver: IpcReceiver<T>) -> Result<u64, io::Error>
    where
        T: for<'de> Deserialize<'de> + Serialize,
    {
        self.add_opaque(receiver.to_opaque())
    }

    /// Moves an untyped receiver into the set and returns the id its events will carry.
    pub fn add_opaque(&mut self, receiver: OpaqueIpcReceiver) -> Result<u64, io::Error> {
        // A local receiver becomes an OS one for the set (docs/local.md, "Waiting").
        let (receiver, backlog) = receiver.end.into_inner()?.into_os_with_backlog()?;
        let id = self.os.add(receiver)?;
        self.pending.extend(
            backlog.into_iter().map(|message| IpcSelectionResult::MessageReceived(id, IpcMessage::from(message))),
        );
        Ok(id)
    }

    /// Moves a server into the set: each new client is reported as a message on the returned id,
    /// which decodes as an [`IpcClient<T>`](super::IpcClient); add its `receiver` to the set to hear from it.
    /// The server runs (and keeps its name) while it is in the set.
    ///
    /// ```
    /// use crossproc::ipc::{IpcClient, IpcReceiverSet, IpcSelectionResult, IpcSender, IpcServer};
    /// let (server, name) = IpcServer::<String>::new().unwrap();
    /// let mut set = IpcReceiverSet::new().unwrap();
    /// let server_id = set.add_server(server).unwrap();
    /// let client = std::thread::spawn(move || IpcSender::<String>::connect(name).unwrap().send("hi".into()).unwrap());
    /// let (id, message) = set.select().unwrap().remove(0).unwrap();
    /// assert_eq!(id, server_id);
    /// let new_client = message.to::<IpcClient<String>>().unwrap();
    /// let client_id = set.add(new_client.receiver).unwrap();
    /// let (id, message) = set.select().unwrap().remove(0).unwrap();
    /// assert_eq!((id, message.to::<String>().unwrap()), (client_id, "hi".to_string()));
    /// client.join().unwrap();
    /// ```
    pub fn add_server<T>(&mut self, server: IpcServer<T>) -> Result<u64, io::Error>
    where
        T: for<'de> Deserialize<'de> + Serialize,
    {
        let (incoming, guard) = server.into_parts();
        let id = self.add(incoming)?;
        self.servers.insert(id, guard);
        Ok(id)
    }

    /// Waits until at least one receiver has a message or closed, and reports every such event.
    /// A closed channel is reported once, then leaves the set. At most 32 messages are taken
    /// from one receiver per call (the rest come with the next), and a malformed or over-limit
    /// message is dropped while its channel stays. An empty set is an `InvalidInput` error: it
    /// would wait forever.
    ///
    /// ```
    /// let mut set = crossproc::ipc::IpcReceiverSet::new().unwrap();
    /// assert_eq!(set.select().unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
    /// ```
    pub fn select(&mut self) -> Result<Vec<IpcSelectionResult>, io::Error> {
        self.check_not_empty()?;
        let wait = if self.pending.is_empty() { Wait::Blocking } else { Wait::NonBlocking };
        let results = self.os.select(wait)?;
        Ok(self.report(results))
    }

    /// Reports what is ready now, without waiting; [`TrySelectError::Empty`] if nothing is.
    ///
    /// ```
    /// let mut set = crossproc::ipc::IpcReceiverSet::new().unwrap();
    /// let (_tx, rx) = crossproc::ipc::channel::<u8>().unwrap();
    /// set.add(rx).unwrap();
    /// assert!(matches!(set.try_select(), Err(crossproc::TrySelectError::Empty)));
    /// ```
    pub fn try_select(&mut self) -> Result<Vec<IpcSelectionResult>, TrySelectError> {
        self.select_with(Wait::NonBlocking)
    }

    /// Waits at most `duration`; [`TrySelectError::Empty`] if nothing happened (an empty set
    /// waits out `duration` too).
    pub fn try_select_timeout(&mut self, duration: Duration) -> Result<Vec<IpcSelectionResult>, TrySelectError> {
        self.select_with(Wait::Timeout(duration))
    }

    fn select_with(&mut self, mode: Wait) -> Result<Vec<IpcSelectionResult>, TrySelectError> {
        if self.os.is_empty() {
            // Nothing can happen in an empty set: it waits out the time it was given, as a set
            // of silent members would.
            if let Wait::Timeout(duration) = mode {
                std::thread::sleep(duration);
            }
            return Err(TrySelectError::Empty);
        }
        let mode = if self.pending.is_empty() { mode } else { Wait::NonBlocking };
        let results = self.os.select(mode)?;
        if results.is_empty() && self.pending.is_empty() {
            return Err(TrySelectError::Empty);
        }
        Ok(self.report(results))
    }

    fn report(&mut self, results: Vec<OsIpcSelectionResult>) -> Vec<IpcSelectionResult> {
        for result in &results {
            if let OsIpcSelectionResult::ChannelClosed(id) = result {
                self.servers.remove(id);
            }
        }
        let mut reported = std::mem::take(&mut self.pending);
        reported.extend(results.into_iter().map(IpcSelectionResult::from));
        reported
    }

    /// A blocking select of an empty set would wait forever: that is an `InvalidInput` error.
    pub(crate) fn check_not_empty(&self) -> io::Result<()> {
        if self.os.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "select on an empty set would wait forever"));
        }
        Ok(())
    }

    /// Closes and forgets the receiver with this id (used by the router for one-shot routes).
    pub(crate) fn remove(&mut self, id: u64) {
        self.os.remove(id);
        self.servers.remove(&id);
        self.pending
            .retain(|result| !matches!(result, IpcSelectionResult::MessageReceived(member, _) if *member == id));
    }
}

/// One event from [`IpcReceiverSet::select`].
#[derive(Debug)]
pub enum IpcSelectionResult {
    /// A message arrived on the receiver with this id.
    MessageReceived(u64, IpcMessage),
    /// Every sender of the receiver with this id is gone; it has left the set.
    ChannelClosed(u64),
}

impl IpcSelectionResult {
    /// The id and message of a [`MessageReceived`](Self::MessageReceived).
    ///
    /// # Panics
    /// On [`ChannelClosed`](Self::ChannelClosed), as in `ipc-channel`.
    ///
    /// ```
    /// let (tx, rx) = crossproc::ipc::channel::<u8>().unwrap();
    /// let mut set = crossproc::ipc::IpcReceiverSet::new().unwrap();
    /// let id = set.add(rx).unwrap();
    /// tx.send(9).unwrap();
    /// let (got_id, message) = set.select().unwrap().remove(0).unwrap();
    /// assert_eq!((got_id, message.to::<u8>().unwrap()), (id, 9));
    /// ```
    pub fn unwrap(self) -> (u64, IpcMessage) {
        match self {
            IpcSelectionResult::MessageReceived(id, message) => (id, message),
            IpcSelectionResult::ChannelClosed(id) => {
                panic!("IpcSelectionResult::unwrap(): receiver {id} was closed, no message")
            }
        }
    }
}

impl From<OsIpcSelectionResult> for IpcSelectionResult {
    fn from(result: OsIpcSelectionResult) -> Self {
        match result {
            OsIpcSelectionResult::MessageReceived(id, message) => {
                IpcSelectionResult::MessageReceived(id, IpcMessage::from(message))
            }
            OsIpcSelectionResult::ChannelClosed(id) => IpcSelectionResult::ChannelClosed(id),
        }
    }
}
