//! The receiving end of a local channel.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::task::Waker;
use std::time::{Duration, Instant};

use super::local::{deadline, expired, remaining, Core, State};
use super::queue::{drop_iteratively, LocalMessage};
use super::{Message, Opaque};
use crate::sys::spin::RecentWait;
use crate::sys::{LimitsCell, OsIpcReceiver, ReceiveLimits, RecvError, Wait};

/// A local receiving end.
pub(crate) struct LocalReceiver {
    core: Arc<Core>,
    /// The OS receiver, once the channel became an OS channel and its backlog was read (boxed:
    /// a local end stays small).
    os: OnceLock<Box<OsIpcReceiver>>,
    limits: LimitsCell,
    /// How long the previous receive waited: a receive polls before it sleeps only while
    /// messages come in quick succession (`ipc::set_receive_spin`).
    recent: RecentWait,
}

impl LocalReceiver {
    pub fn new(core: Arc<Core>) -> LocalReceiver {
        LocalReceiver {
            core,
            os: OnceLock::new(),
            limits: LimitsCell::new(ReceiveLimits::DEFAULT),
            recent: RecentWait::default(),
        }
    }

    /// Whether this end could not leave now because of a backlog that predates a sender's leave
    /// (see `leave::for_receiver`), or because its own queue carries such an end, `depth`
    /// levels deep at most; a channel whose lock is busy counts as fine.
    pub fn must_read_its_backlog_here(&self, depth: usize) -> bool {
        self.core.shared.try_lock().is_some_and(|shared| match &shared.state {
            State::Os { backlog, receiver: Some(_), .. } => !backlog.is_empty(),
            State::Local(queue) => queue.carries_a_stuck_receiver_within(depth),
            State::Os { .. } => false,
        })
    }

    /// Receives one message, waiting as `wait` allows.
    pub fn recv_into(&self, wait: Wait, buffer: &mut Vec<u8>) -> Result<Message, RecvError> {
        if let Some(os) = self.os.get() {
            return os.recv_into(wait, buffer).map(Message::from);
        }
        if !self.core.in_its_process() {
            return self.recv_in_child(wait, buffer);
        }
        let mut start = None;
        let deadline = deadline(wait);
        let mut polled = false;
        let mut shared = self.core.lock();
        loop {
            let senders = shared.senders;
            match &mut shared.state {
                State::Local(queue) => {
                    if let Some(message) = queue.pop() {
                        self.core.budget_freed(shared);
                        match start {
                            Some(start) => self.recent.record(start),
                            None => self.recent.record_none(),
                        }
                        return self.open(message);
                    }
                    if senders == 0 {
                        return Err(RecvError::Disconnected);
                    }
                    match deadline {
                        Err(()) => return Err(RecvError::Empty),
                        Ok(deadline) if expired(deadline) => return Err(RecvError::Empty),
                        Ok(deadline) => {
                            start.get_or_insert_with(Instant::now);
                            let window = if polled { Duration::ZERO } else { self.recent.spin_window(wait) };
                            polled = true;
                            if window.is_zero() {
                                shared = self.core.wait_readable(shared, deadline);
                            } else {
                                let seen = self.core.watched.events.load(Ordering::Acquire);
                                drop(shared);
                                self.core.poll_events(seen, window);
                                shared = self.core.lock();
                            }
                        }
                    }
                }
                State::Os { backlog, receiver, .. } => {
                    if let Some(message) = backlog.pop() {
                        let unused = shared.release_unused_sender();
                        drop(shared);
                        drop(unused);
                        return self.open(message);
                    }
                    let receiver =
                        receiver.take().ok_or_else(|| io::Error::other("a converted channel lost its receiver"))?;
                    receiver.set_limits(self.limits.get());
                    drop(shared);
                    let os = self.os.get_or_init(|| receiver);
                    return os.recv_into(remaining(deadline), buffer).map(Message::from);
                }
            }
        }
    }

    /// Receives one message without waiting; when there is none yet, `waker` is called once
    /// there may be (a message queued, the last sender gone, the channel became an OS channel).
    /// Once the channel is an OS channel, `Empty` leaves the waiting to the caller, on the
    /// readiness of [`os_receiver`](Self::os_receiver).
    pub fn recv_or_register(&self, waker: &Waker, buffer: &mut Vec<u8>) -> Result<Message, RecvError> {
        if self.os.get().is_none() && self.core.in_its_process() {
            let mut shared = self.core.lock();
            let senders = shared.senders;
            if matches!(&shared.state, State::Local(queue) if queue.is_empty() && senders > 0) {
                if !shared.reader_waker.as_ref().is_some_and(|known| known.will_wake(waker)) {
                    shared.reader_waker = Some(waker.clone());
                }
                return Err(RecvError::Empty);
            }
        }
        self.recv_into(Wait::NonBlocking, buffer)
    }

    /// An error if this end may not be used in this process (see `Core::check_process`): a
    /// channel that left before the fork is shared as an OS channel is.
    pub fn check_process(&self) -> io::Result<()> {
        if self.os.get().is_some() || self.core.watched.left.load(Ordering::Acquire) {
            return Ok(());
        }
        self.core.check_process()
    }

    /// The OS receiver this end reads, once its channel became an OS channel and its backlog
    /// was read.
    pub fn os_receiver(&self) -> Option<&OsIpcReceiver> {
        self.os.get().map(|os| &**os)
    }

    /// A receive in a child made by `fork`: only an OS channel with nothing left in its backlog
    /// is shared with the parent (as a receiver copied by fork is); anything else fails loudly.
    fn recv_in_child(&self, wait: Wait, buffer: &mut Vec<u8>) -> Result<Message, RecvError> {
        if !self.core.watched.left.load(Ordering::Acquire) {
            return Err(RecvError::Io(self.core.check_process().expect_err("a child")));
        }
        let mut shared = self.core.lock_in_child()?;
        let State::Os { backlog, receiver, .. } = &mut shared.state else { unreachable!("it left") };
        if !backlog.is_empty() {
            return Err(RecvError::Io(self.core.check_process().expect_err("a child")));
        }
        let receiver = receiver.take().ok_or_else(|| io::Error::other("a converted channel lost its receiver"))?;
        drop(shared);
        receiver.set_limits(self.limits.get());
        self.os.get_or_init(|| receiver).recv_into(wait, buffer).map(Message::from)
    }

    /// A queued message as a received one, checked against this end's limits as a message from
    /// another process would be.
    fn open(&self, message: LocalMessage) -> Result<Message, RecvError> {
        let handles = message.channels.len() + message.shared_memory.len();
        if let Err(exceeded) = self.limits.check(message.data.len() as u64, handles) {
            drop_iteratively(vec![message]);
            return Err(RecvError::Io(exceeded.into_io()));
        }
        Ok(Message {
            data: message.data,
            channels: message.channels.into_iter().map(Opaque::Local).collect(),
            shared_memory: message.shared_memory,
            max_nesting: self.limits.max_nesting(),
        })
    }

    pub fn set_limits(&self, limits: ReceiveLimits) {
        self.limits.set(limits);
        if let Some(os) = self.os.get() {
            os.set_limits(limits);
        }
    }

    pub fn limits(&self) -> ReceiveLimits {
        self.limits.get()
    }

    /// The OS receiver for this end, which stays in this process, with the backlog it has not
    /// read yet if that cannot go ahead of the OS channel (a sender left before it was read).
    pub fn stay_as_os(&mut self) -> io::Result<(OsIpcReceiver, Vec<Message>)> {
        if self.os.get().is_none() && self.core.in_its_process() {
            let mut shared = self.core.lock();
            if let State::Os { backlog, receiver: Some(_), .. } = &mut shared.state {
                let unread = backlog.take_all();
                drop(shared);
                let mut messages = Vec::new();
                for message in unread {
                    messages.extend(self.open(message).ok());
                }
                return Ok((self.leave()?, messages));
            }
        }
        Ok((self.leave()?, Vec::new()))
    }

    /// The OS receiver this end becomes when it leaves the process: the channel becomes an OS
    /// channel (if it is not one yet), and its backlog goes ahead into the OS channel.
    pub fn leave(&mut self) -> io::Result<OsIpcReceiver> {
        let limits = self.limits.get();
        if let Some(os) = self.os.take() {
            if self.core.in_its_process() {
                self.core.lock().receiver = false;
            }
            return Ok(*os);
        }
        self.core.check_process()?;
        let receiver = super::leave::for_receiver(&self.core)?;
        receiver.set_limits(limits);
        Ok(receiver)
    }
}

impl Drop for LocalReceiver {
    fn drop(&mut self) {
        if !self.core.in_its_process() || self.os.get().is_some() {
            return;
        }
        let mut shared = self.core.lock();
        if !shared.receiver {
            return; // it left
        }
        shared.receiver = false;
        let (unread, receiver) = match &mut shared.state {
            State::Local(queue) => (queue.take_all(), None),
            State::Os { backlog, receiver, .. } => (backlog.take_all(), receiver.take()),
        };
        self.core.wake_all(shared);
        drop(receiver);
        // What it never read goes with it, outside the lock (the ends inside may be channels
        // whose drop locks their own core).
        drop_iteratively(unread);
    }
}

impl std::fmt::Debug for LocalReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.os.get() {
            Some(os) => write!(f, "{os:?}"),
            None => write!(f, "LocalReceiver({:p})", Arc::as_ptr(&self.core)),
        }
    }
}
