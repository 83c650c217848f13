//! Select over many receivers.

use std::collections::HashMap;
use std::io;
use std::task::Waker;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::doorbell::Doorbell;
use super::message::{IpcMessage, OpaqueIpcReceiver};
use super::server::IpcServer;
use super::typed::IpcReceiver;
use crate::chan::{Message, Receiver};
use crate::error::TrySelectError;
use crate::sys::{drain_with, Drained, OsIpcReceiver, OsIpcReceiverSet, OsIpcSelectionResult, OsServerGuard, Wait};
use crate::sys::{fork_generation, ReceiveLimits};

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
    /// The members, by the id their events carry.
    members: HashMap<u64, Member>,
    /// The ids of the members in the OS set, by their id there.
    os_ids: HashMap<u64, u64>,
    /// What local members' senders ring (made with the set, or for a set of OS receivers
    /// alone when a local member first joins).
    doorbell: Option<Doorbell>,
    /// The fork generation in which every local member is known to be of this process (see
    /// [`check_local_members`](Self::check_local_members)).
    local_generation: u64,
    next_id: u64,
    limits: Option<ReceiveLimits>,
    /// Servers added with `add_server`, kept running while their id is in the set.
    servers: HashMap<u64, OsServerGuard>,
    /// Messages a member brought along that its OS channel does not hold (a local channel's
    /// backlog from before a sender left): reported before anything of that member.
    pending: Vec<IpcSelectionResult>,
    /// A member's receive failed with its message still queued (out of descriptors): the
    /// error a select returns if it has nothing else to report.
    stuck: Option<io::Error>,
}

/// Passes a non-blocking select makes over members rung meanwhile before it reports `Empty`.
const MAX_NONBLOCKING_PASSES: usize = 4;

/// A member of a set.
enum Member {
    /// Waits in the OS set, under this id there.
    Os(u64),
    /// A local channel's receiver, waited on through the doorbell (its waker rings it).
    Local(Receiver, Waker),
}

impl IpcReceiverSet {
    /// An empty set. Its descriptors are made here (on Linux an epoll and the doorbell its
    /// local members ring, docs/local.md "Waiting"), so that adding a member needs none: a
    /// receiver is never lost to an add that finds the descriptor table full.
    pub fn new() -> Result<IpcReceiverSet, io::Error> {
        let mut set = IpcReceiverSet::for_os_receivers()?;
        set.doorbell = Some(Doorbell::new(&mut set.os)?);
        Ok(set)
    }

    /// An empty set for OS receivers alone (`platform::OsIpcReceiverSet`): no doorbell, so
    /// one descriptor on Linux, as ipc-channel's. A local member that joins one all the same
    /// makes the doorbell then.
    pub(crate) fn for_os_receivers() -> Result<IpcReceiverSet, io::Error> {
        Ok(IpcReceiverSet {
            os: OsIpcReceiverSet::new()?,
            members: HashMap::new(),
            os_ids: HashMap::new(),
            doorbell: None,
            local_generation: fork_generation(),
            next_id: 0,
            limits: None,
            servers: HashMap::new(),
            pending: Vec::new(),
            stuck: None,
        })
    }

    /// Sets the receive limits of every receiver in the set, and of every one added later.
    pub fn set_limits(&mut self, limits: ReceiveLimits) {
        self.limits = Some(limits);
        self.os.set_limits(limits);
        for member in self.members.values() {
            if let Member::Local(receiver, _) = member {
                receiver.set_limits(limits);
            }
        }
    }

    /// Moves a typed receiver into the set and returns the id its events will carry.
    pub fn add<T>(&mut self, receiver: IpcReceiver<T>) -> Result<u64, io::Error>
    where
        T: for<'de> Deserialize<'de> + Serialize,
    {
        self.add_opaque(receiver.to_opaque())
    }

    /// Moves an untyped receiver into the set and returns the id its events will carry. A local
    /// channel's receiver stays local: the set waits on it with no descriptor of its own
    /// (docs/local.md, "Waiting").
    pub fn add_opaque(&mut self, receiver: OpaqueIpcReceiver) -> Result<u64, io::Error> {
        let receiver = receiver.end.into_inner()?;
        let id = self.next_id;
        if receiver.is_local() {
            receiver.check_process()?;
            if let Some(limits) = self.limits {
                receiver.set_limits(limits);
            }
            let doorbell = match &mut self.doorbell {
                Some(doorbell) => doorbell,
                None => self.doorbell.insert(Doorbell::new(&mut self.os)?),
            };
            // Looked at by the next select, which registers the waker if nothing is queued.
            doorbell.note(id);
            self.members.insert(id, Member::Local(receiver, doorbell.waker(id)));
        } else {
            let (receiver, backlog) = receiver.into_os_with_backlog()?;
            self.add_os(id, receiver, backlog).map_err(|(error, _)| error)?;
        }
        self.next_id += 1;
        Ok(id)
    }

    /// Puts `receiver` in the OS set as member `id`, with the backlog to report first (handed
    /// back with the error where the OS set cannot take it).
    fn add_os(
        &mut self,
        id: u64,
        receiver: OsIpcReceiver,
        backlog: Vec<Message>,
    ) -> Result<(), (io::Error, Vec<Message>)> {
        let os_id = match self.os.add(receiver) {
            Ok(os_id) => os_id,
            Err(error) => return Err((error, backlog)),
        };
        self.members.insert(id, Member::Os(os_id));
        self.os_ids.insert(os_id, id);
        self.pending.extend(backlog.into_iter().map(|message| received(id, message)));
        Ok(())
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
        match self.select_with(Wait::Blocking) {
            Ok(results) => Ok(results),
            Err(TrySelectError::IoError(error)) => Err(error),
            Err(TrySelectError::Empty) => unreachable!("a blocking select waits until something happened"),
        }
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
        if self.members.is_empty() {
            // Nothing can happen in an empty set: it waits out the time it was given, as a set
            // of silent members would.
            if let Wait::Timeout(duration) = mode {
                std::thread::sleep(duration);
            }
            return Err(TrySelectError::Empty);
        }
        self.check_local_members()?;
        let deadline = match mode {
            Wait::Timeout(duration) => Instant::now().checked_add(duration),
            _ => None,
        };
        // A non-blocking select looks again at members rung meanwhile, a few times.
        let mut passes = 0;
        loop {
            passes += 1;
            let mut results = std::mem::take(&mut self.pending);
            self.drain_local(&mut results);
            // A member left rung (it had more, or every message it gave was dropped) is looked
            // at again before any wait: no byte on the doorbell would wake one for it (review 6).
            let rung = self.doorbell.as_ref().is_some_and(Doorbell::has_rung);
            let wait = match mode {
                _ if !results.is_empty() || rung => Wait::NonBlocking,
                Wait::Timeout(_) => match deadline {
                    Some(deadline) => Wait::Timeout(deadline.saturating_duration_since(Instant::now())),
                    None => Wait::Blocking,
                },
                mode => mode,
            };
            let reported = match self.os.select(wait) {
                Ok(reported) => reported,
                Err(error) => {
                    self.pending = results;
                    return Err(error.into());
                }
            };
            let rang = self.report_os(reported, &mut results);
            if !results.is_empty() {
                return Ok(results);
            }
            if let Some(error) = self.stuck.take() {
                return Err(TrySelectError::IoError(error));
            }
            let time_left = deadline.is_none_or(|deadline| Instant::now() < deadline);
            let rung = rang || self.doorbell.as_ref().is_some_and(Doorbell::has_rung);
            match mode {
                Wait::Blocking => {}
                Wait::NonBlocking if rung && passes < MAX_NONBLOCKING_PASSES => {}
                Wait::Timeout(_) if time_left => {}
                _ => {
                    // Members still rung get a doorbell byte, so that whoever waits on the OS
                    // set next (an async set) is woken for them.
                    if let Some(doorbell) = &self.doorbell {
                        doorbell.ring_if_rung();
                    }
                    return Err(TrySelectError::Empty);
                }
            }
        }
    }

    /// Takes what the local members rung since the last look have: up to 32 messages each (a
    /// member left with more is looked at again next time), registering their wakers where
    /// nothing is queued. A member whose channel became an OS channel (a sender left) and read
    /// its backlog moves into the OS set.
    fn drain_local(&mut self, results: &mut Vec<IpcSelectionResult>) {
        let Some(rung) = self.doorbell.as_ref().map(Doorbell::take_rung) else { return };
        let note = |set: &Self, id| set.doorbell.as_ref().map(|doorbell| doorbell.note(id));
        for id in rung {
            let Some(Member::Local(receiver, waker)) = self.members.get(&id) else { continue };
            let mut buffer = Vec::new();
            let drained = drain_with(
                || receiver.recv_or_register(waker, &mut buffer),
                |message| results.push(received(id, message)),
            );
            match drained {
                Drained::Closed => {
                    results.push(IpcSelectionResult::ChannelClosed(id));
                    self.forget(id);
                }
                Drained::More => {
                    note(self, id);
                }
                Drained::Stuck(error) => {
                    note(self, id);
                    self.stuck = Some(error);
                }
                Drained::Empty if receiver.os_receiver().is_some() => {
                    if let Some(Member::Local(receiver, _)) = self.members.remove(&id) {
                        self.migrate(id, receiver, results);
                    }
                }
                Drained::Empty => {}
            }
        }
    }

    /// Moves member `id`, whose channel became an OS channel, into the OS set. Where the OS
    /// set cannot take it (epoll refused to watch one more descriptor: `max_user_watches`), the
    /// set cannot wait on it any more: what it brought is reported, then the member as closed
    /// (its receiver is dropped, so its senders are told so too), not dropped unreported.
    fn migrate(&mut self, id: u64, receiver: Receiver, results: &mut Vec<IpcSelectionResult>) {
        let refused = match receiver.into_os_with_backlog() {
            Ok((receiver, backlog)) => self.add_os(id, receiver, backlog).err(),
            Err(error) => Some((error, Vec::new())),
        };
        if let Some((_, backlog)) = refused {
            results.extend(backlog.into_iter().map(|message| received(id, message)));
            results.push(IpcSelectionResult::ChannelClosed(id));
            self.servers.remove(&id);
        }
    }

    /// In a child made by `fork`, a set whose local members were made in its parent cannot
    /// serve them: the child has copies of their queues that no sender of the parent reaches.
    /// Its select fails as their receives do, `Unsupported` (docs/local.md), rather than report
    /// them closed. One load when nothing forked.
    fn check_local_members(&mut self) -> io::Result<()> {
        let here = fork_generation();
        if self.local_generation == here {
            return Ok(());
        }
        for member in self.members.values() {
            if let Member::Local(receiver, _) = member {
                receiver.check_process()?;
            }
        }
        self.local_generation = here;
        Ok(())
    }

    /// Adds what the OS set reported to `results`, under the members' ids; `true` when the
    /// doorbell rang.
    fn report_os(&mut self, reported: Vec<OsIpcSelectionResult>, results: &mut Vec<IpcSelectionResult>) -> bool {
        let doorbell = self.doorbell.as_ref().map(|doorbell| doorbell.os_id);
        let mut rung = false;
        for result in reported {
            match result {
                OsIpcSelectionResult::MessageReceived(os_id, _) if Some(os_id) == doorbell => rung = true,
                OsIpcSelectionResult::MessageReceived(os_id, message) => {
                    if let Some(&id) = self.os_ids.get(&os_id) {
                        results.push(received(id, message));
                    }
                }
                OsIpcSelectionResult::ChannelClosed(os_id) => {
                    if let Some(id) = self.os_ids.remove(&os_id) {
                        self.members.remove(&id);
                        self.servers.remove(&id);
                        results.push(IpcSelectionResult::ChannelClosed(id));
                    }
                }
            }
        }
        rung
    }

    /// A blocking select of an empty set would wait forever: that is an `InvalidInput` error.
    pub(crate) fn check_not_empty(&self) -> io::Result<()> {
        if self.members.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "select on an empty set would wait forever"));
        }
        Ok(())
    }

    /// Closes and forgets the receiver with this id (used by the router for one-shot routes).
    pub(crate) fn remove(&mut self, id: u64) {
        self.forget(id);
        self.pending
            .retain(|result| !matches!(result, IpcSelectionResult::MessageReceived(member, _) if *member == id));
    }

    /// Drops member `id` (an OS member leaves the OS set) and its server.
    fn forget(&mut self, id: u64) {
        if let Some(Member::Os(os_id)) = self.members.remove(&id) {
            self.os.remove(os_id);
            self.os_ids.remove(&os_id);
        }
        self.servers.remove(&id);
    }
}

/// The event of a message that member `id` received.
fn received(id: u64, message: impl Into<IpcMessage>) -> IpcSelectionResult {
    IpcSelectionResult::MessageReceived(id, message.into())
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
