//! A local channel: a queue in this process's heap, no descriptor and no system call, until one
//! of its ends leaves the process (docs/local.md).
//!
//! Both ends hold an `Arc` of the channel's [`Core`]. While the channel is local the core holds
//! the [`Queue`], accounted like the socket it stands for (a message costs its bytes plus a
//! packet's overhead, a large payload a fixed share), so `try_send` reports `Full` at about the
//! point a socket would. When an end leaves, the core becomes [`State::Os`]: it holds the OS
//! channel's ends until the local ends take them, and the messages queued before the change
//! (the backlog), which come out before anything sent on the OS channel.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, TryLockError};
use std::time::{Duration, Instant};

use super::{Channel, Failure, Message, Opaque};
use crate::sys::spin::RecentWait;
use crate::sys::{self, LimitsCell, OsIpcReceiver, OsIpcSender, OsIpcSharedMemory, ReceiveLimits, RecvError, Wait};

/// Linux's default socket buffer, which a local channel's budget stands for.
pub(super) const DEFAULT_CAPACITY: usize = 212_992;
/// What Linux charges per queued packet, roughly.
const PACKET_OVERHEAD: usize = 768;
/// What a payload too large for a packet costs (Linux moves it in a memfd, which claims about
/// this much of the socket buffer): a few fit in the default budget, as on Linux.
const LARGE_PAYLOAD_COST: usize = 64 * 1024;

/// A message in a local queue: its bytes and its ends as in-process objects.
pub(crate) struct LocalMessage {
    pub data: Vec<u8>,
    pub channels: Vec<Channel>,
    pub shared_memory: Vec<OsIpcSharedMemory>,
    /// What the message takes from its channel's budget.
    cost: usize,
}

impl LocalMessage {
    pub(super) fn queued(data: Vec<u8>, channels: Vec<Channel>, shared_memory: Vec<OsIpcSharedMemory>) -> Self {
        let cost = PACKET_OVERHEAD + if data.len() > sys::INLINE_MAX { LARGE_PAYLOAD_COST } else { data.len() };
        LocalMessage { data, channels, shared_memory, cost }
    }
}

/// Messages in this process, with the budget they take.
pub(super) struct Queue {
    messages: VecDeque<LocalMessage>,
    used: usize,
    pub capacity: usize,
}

impl Queue {
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Whether `cost` fits: it always does in an empty queue, as a message fits an empty socket.
    fn fits(&self, cost: usize) -> bool {
        self.used == 0 || self.used + cost <= self.capacity
    }

    fn push(&mut self, message: LocalMessage) {
        self.used += message.cost;
        self.messages.push_back(message);
    }

    /// Puts back at the front a message taken by [`pop`](Self::pop).
    pub fn push_front(&mut self, message: LocalMessage) {
        self.used += message.cost;
        self.messages.push_front(message);
    }

    pub fn pop(&mut self) -> Option<LocalMessage> {
        let message = self.messages.pop_front()?;
        self.used -= message.cost;
        Some(message)
    }

    /// Everything queued, taken out (the budget is free again).
    fn take_all(&mut self) -> VecDeque<LocalMessage> {
        self.used = 0;
        std::mem::take(&mut self.messages)
    }

    /// Whether a message here carries a receiver that could not leave with it (one whose own
    /// backlog predates a sender's leave, see `leave::for_receiver`): sent on, that message
    /// could only be dropped. One level deep, and a channel whose lock is busy counts as fine.
    pub fn carries_a_stuck_receiver(&self) -> bool {
        self.messages.iter().flat_map(|message| &message.channels).any(|channel| match channel {
            Channel::Receiver(super::Receiver::Local(receiver)) => receiver.core.shared.try_lock().is_ok_and(
                |shared| matches!(&shared.state, State::Os { backlog, receiver: Some(_), .. } if !backlog.is_empty()),
            ),
            _ => false,
        })
    }

    /// The queue as it is, moved out, with an empty one of the same capacity left behind.
    pub fn take(&mut self) -> Queue {
        std::mem::replace(self, Queue { messages: VecDeque::new(), used: 0, capacity: self.capacity })
    }
}

/// What a channel is now.
pub(super) enum State {
    /// Its queue is in this process.
    Local(Queue),
    /// An end left: the channel is an OS channel.
    Os {
        /// The OS sender the local sending ends send through; dropped with the last of them.
        sender: Option<OsIpcSender>,
        /// The OS receiver, until the local receiving end takes it (or leaves with it).
        receiver: Option<OsIpcReceiver>,
        /// Messages queued while the channel was local, not yet received or moved.
        backlog: Queue,
        /// Whether the backlog is being moved into the OS channel (the receiver left): local
        /// sends join the backlog meanwhile, under its budget, so they stay behind it.
        pumping: bool,
    },
}

/// What both ends of a channel share.
pub(crate) struct Core {
    shared: Mutex<Shared>,
    /// A message was queued, the last sender went, or the channel became an OS channel.
    readable: Condvar,
    /// Budget was freed, the receiver went, or the channel became an OS channel.
    writable: Condvar,
    /// The fork generation the channel was made in (see [`Core::check_process`]).
    generation: u64,
    /// Counts what a receiver waits for (a message queued, the last sender gone, the change to
    /// an OS channel), so that a polling receiver sees it without the lock.
    events: AtomicU64,
    /// Whether the channel became an OS channel (set once, under the lock): a send on a local
    /// channel looks here instead of taking the lock to find out.
    left: AtomicBool,
}

pub(super) struct Shared {
    /// Local sending ends alive (each clone counts; so does one inside a queued message).
    pub senders: usize,
    /// Whether the local receiving end is alive (not dropped, not left).
    pub receiver: bool,
    pub state: State,
    /// Threads asleep on `readable` and on `writable`: a send or a receive wakes only when
    /// someone waits (a condition variable's wake is a system call even when nobody does).
    readers_waiting: usize,
    writers_waiting: usize,
}

impl Shared {
    /// The OS sender of a converted channel, once nothing needs it: no local sending end is
    /// left and no backlog waits to be sent (the receiver may still leave with it). Dropped by
    /// the caller outside the lock, it lets the OS receiver see the hang-up.
    pub fn release_unused_sender(&mut self) -> Option<OsIpcSender> {
        match &mut self.state {
            State::Os { sender, backlog, pumping: false, .. } if self.senders == 0 && backlog.is_empty() => {
                sender.take()
            }
            _ => None,
        }
    }
}

impl Core {
    /// A new local channel with one sender and its receiver.
    pub fn new() -> Arc<Core> {
        Arc::new(Core {
            shared: Mutex::new(Shared {
                senders: 1,
                receiver: true,
                state: State::Local(Queue { messages: VecDeque::new(), used: 0, capacity: DEFAULT_CAPACITY }),
                readers_waiting: 0,
                writers_waiting: 0,
            }),
            readable: Condvar::new(),
            writable: Condvar::new(),
            generation: sys::fork_generation(),
            events: AtomicU64::new(0),
            left: AtomicBool::new(false),
        })
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The lock in a child made by `fork`, unless another thread of the parent held it at the
    /// fork (that thread is not in the child to let go).
    fn lock_in_child(&self) -> io::Result<MutexGuard<'_, Shared>> {
        for _ in 0..1_000 {
            match self.shared.try_lock() {
                Ok(guard) => return Ok(guard),
                Err(TryLockError::Poisoned(poisoned)) => return Ok(poisoned.into_inner()),
                Err(TryLockError::WouldBlock) => std::thread::yield_now(),
            }
        }
        Err(io::Error::other("this channel was in use by another thread when the process forked"))
    }

    /// Whether this is the process that made the channel. A child made by `fork` does not share
    /// its parent's copy of a local queue, so using one there would split the channel in two
    /// copies that do not hear each other: such a use fails loudly instead (docs/local.md).
    pub fn in_its_process(&self) -> bool {
        self.generation == sys::fork_generation()
    }

    fn check_process(&self) -> io::Result<()> {
        if self.in_its_process() {
            return Ok(());
        }
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this channel was made before fork and had not left its process, so the child has only a \
             copy of its queue: make it with ipc::os_channel() to use it on both sides of a fork",
        ))
    }

    /// Notes that the channel became an OS channel (under the lock, as the state changed).
    pub(super) fn mark_left(&self) {
        self.left.store(true, Ordering::Release);
    }

    /// Wakes every waiter, releasing the lock first: the channel changed in a way both ends
    /// must look at. A polling receiver sees the event; nobody asleep costs no system call.
    pub(super) fn wake_all(&self, shared: MutexGuard<'_, Shared>) {
        self.events.fetch_add(1, Ordering::Release);
        let (readers, writers) = (shared.readers_waiting > 0, shared.writers_waiting > 0);
        drop(shared);
        if readers {
            self.readable.notify_all();
        }
        if writers {
            self.writable.notify_all();
        }
    }

    /// Wakes the senders that wait for budget, if any (the lock is released first).
    pub(super) fn budget_freed(&self, shared: MutexGuard<'_, Shared>) {
        let wake = shared.writers_waiting > 0;
        drop(shared);
        if wake {
            self.writable.notify_all();
        }
    }

    /// Polls for up to `window` for an event after `seen`, without the lock.
    fn poll_events(&self, seen: u64, window: Duration) {
        let start = Instant::now();
        let mut spins = 0u32;
        while self.events.load(Ordering::Acquire) == seen {
            spins = spins.wrapping_add(1);
            if spins % 64 == 0 && start.elapsed() >= window {
                return;
            }
            std::hint::spin_loop();
        }
    }

    /// Sleeps until a message, a hang-up or the change to an OS channel (or `deadline`).
    fn wait_readable<'a>(
        &self,
        mut guard: MutexGuard<'a, Shared>,
        deadline: Option<Instant>,
    ) -> MutexGuard<'a, Shared> {
        guard.readers_waiting += 1;
        let mut guard = Self::wait(&self.readable, guard, deadline);
        guard.readers_waiting -= 1;
        guard
    }

    /// Sleeps until budget is freed, the receiver goes, or the change to an OS channel.
    fn wait_writable<'a>(
        &self,
        mut guard: MutexGuard<'a, Shared>,
        deadline: Option<Instant>,
    ) -> MutexGuard<'a, Shared> {
        guard.writers_waiting += 1;
        let mut guard = Self::wait(&self.writable, guard, deadline);
        guard.writers_waiting -= 1;
        guard
    }

    fn wait<'a>(condvar: &Condvar, guard: MutexGuard<'a, Shared>, deadline: Option<Instant>) -> MutexGuard<'a, Shared> {
        match deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                condvar.wait_timeout(guard, left).unwrap_or_else(|poisoned| poisoned.into_inner()).0
            }
            None => condvar.wait(guard).unwrap_or_else(|poisoned| poisoned.into_inner()),
        }
    }
}

/// When a wait that started now must give up, if it may wait at all (`Err` for `NonBlocking`).
fn deadline(wait: Wait) -> Result<Option<Instant>, ()> {
    match wait {
        Wait::Blocking => Ok(None),
        Wait::NonBlocking => Err(()),
        // A timeout too far away to represent waits as long as a blocking wait.
        Wait::Timeout(timeout) => Ok(Instant::now().checked_add(timeout)),
    }
}

/// What is left of a wait with this deadline, for the OS channel a local one became.
fn remaining(deadline: Result<Option<Instant>, ()>) -> Wait {
    match deadline {
        Err(()) => Wait::NonBlocking,
        Ok(None) => Wait::Blocking,
        Ok(Some(deadline)) => Wait::Timeout(deadline.saturating_duration_since(Instant::now())),
    }
}

fn expired(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|deadline| Instant::now() >= deadline)
}

/// A local sending end.
pub(crate) struct LocalSender {
    core: Arc<Core>,
    /// This end's copy of the OS sender, once the channel became an OS channel.
    os: OnceLock<OsIpcSender>,
}

impl LocalSender {
    /// The sending end of a new channel whose first sender this is.
    pub fn first(core: Arc<Core>) -> LocalSender {
        LocalSender { core, os: OnceLock::new() }
    }

    /// This end's OS sender, if the channel became an OS channel and sends go there (taken on
    /// first use). In a child made by `fork` too: an OS channel works on both sides of a fork.
    pub fn os(&self) -> Option<&OsIpcSender> {
        if let Some(os) = self.os.get() {
            return Some(os);
        }
        if !self.core.left.load(Ordering::Acquire) {
            return None;
        }
        let shared = if self.core.in_its_process() { self.core.lock() } else { self.core.lock_in_child().ok()? };
        match &shared.state {
            State::Os { sender: Some(sender), pumping: false, .. } => {
                let sender = sender.clone();
                drop(shared);
                Some(self.os.get_or_init(|| sender))
            }
            _ => None,
        }
    }

    /// Queues one message, waiting for budget as `wait` allows; once the channel is an OS
    /// channel, sends it there (its ends leave the process with it).
    pub fn send(
        &self,
        data: Vec<u8>,
        channels: Vec<Channel>,
        shared_memory: Vec<OsIpcSharedMemory>,
        wait: Wait,
    ) -> Result<(), Failure> {
        if let Some(os) = self.os() {
            return super::send_os(os, &data, channels, shared_memory, wait);
        }
        if let Err(error) = self.core.check_process() {
            return Err(Failure { error, channels });
        }
        let message = LocalMessage::queued(data, channels, shared_memory);
        let deadline = deadline(wait);
        let mut shared = self.core.lock();
        loop {
            let receiver = shared.receiver;
            let queue = match &mut shared.state {
                State::Os { pumping: false, .. } => {
                    drop(shared);
                    let os = self.os().expect("an OS channel that is not pumping has its sender");
                    return super::send_os(os, &message.data, message.channels, message.shared_memory, wait);
                }
                State::Os { backlog, .. } => backlog,
                State::Local(_) if !receiver => {
                    return Err(Failure { error: io::ErrorKind::BrokenPipe.into(), channels: message.channels });
                }
                State::Local(queue) => queue,
            };
            if queue.fits(message.cost) {
                queue.push(message);
                self.core.events.fetch_add(1, Ordering::Release);
                let wake = shared.readers_waiting > 0;
                drop(shared);
                if wake {
                    self.core.readable.notify_one();
                }
                return Ok(());
            }
            let full = match deadline {
                Err(()) => Some(io::Error::from(io::ErrorKind::WouldBlock)),
                Ok(deadline) if expired(deadline) => {
                    Some(io::Error::new(io::ErrorKind::TimedOut, "the channel stayed full"))
                }
                Ok(_) => None,
            };
            if let Some(error) = full {
                return Err(Failure { error, channels: message.channels });
            }
            shared = self.core.wait_writable(shared, deadline.ok().flatten());
        }
    }

    /// The OS sender this end becomes when it leaves the process (the channel becomes an OS
    /// channel first, if it is not one yet).
    ///
    /// While the receiver's backlog is still being sent to it (it was larger than a socket
    /// takes), a sender that left could overtake it, and waiting for it could wait for ever (the
    /// receiver may be read only by the thread that waits): that fails with an error instead,
    /// for the caller to try again once the receiver has read its backlog. Inside the backlog
    /// itself the end leaves at once (`leave::pump`).
    pub fn leave(&self) -> io::Result<OsIpcSender> {
        if let Some(os) = self.os() {
            return Ok(os.clone());
        }
        self.core.check_process()?;
        super::leave::for_sender(&self.core)?;
        let shared = self.core.lock();
        match &shared.state {
            State::Os { pumping: true, backlog, .. } if !super::leave::in_pump() => Err(io::Error::other(format!(
                "this channel's receiver left with {} messages still on their way to it: its sender can leave \
                 the process once the receiver has read them",
                backlog.len()
            ))),
            State::Os { sender: Some(sender), .. } => Ok(sender.clone()),
            _ => Err(io::Error::other("a converted channel lost its sender")),
        }
    }

    /// Sets the budget (or the OS channel's buffer).
    pub fn set_buffer_size(&self, bytes: usize) -> io::Result<()> {
        if let Some(os) = self.os() {
            return os.set_buffer_size(bytes);
        }
        self.core.check_process()?;
        let mut shared = self.core.lock();
        match &mut shared.state {
            State::Local(queue) | State::Os { backlog: queue, sender: None, .. } => {
                // As Linux does with `SO_SNDBUF`: the size asked for, doubled for bookkeeping.
                queue.capacity = bytes.saturating_mul(2).max(4096);
                drop(shared);
                self.core.writable.notify_all();
                Ok(())
            }
            State::Os { sender: Some(sender), .. } => sender.set_buffer_size(bytes),
        }
    }

    /// The budget (or the OS channel's buffer), in bytes.
    pub fn buffer_size(&self) -> io::Result<usize> {
        if let Some(os) = self.os() {
            return os.buffer_size();
        }
        self.core.check_process()?;
        let shared = self.core.lock();
        match &shared.state {
            State::Local(queue) | State::Os { backlog: queue, sender: None, .. } => Ok(queue.capacity),
            State::Os { sender: Some(sender), .. } => sender.buffer_size(),
        }
    }
}

impl Clone for LocalSender {
    fn clone(&self) -> Self {
        if self.core.in_its_process() {
            self.core.lock().senders += 1;
        }
        LocalSender { core: self.core.clone(), os: self.os.clone() }
    }
}

impl Drop for LocalSender {
    fn drop(&mut self) {
        if !self.core.in_its_process() {
            return; // a fork child's copy: its lock may have been held at the fork
        }
        let mut shared = self.core.lock();
        shared.senders -= 1;
        if shared.senders > 0 {
            return;
        }
        let last = shared.release_unused_sender();
        self.core.wake_all(shared);
        drop(last);
    }
}

impl std::fmt::Debug for LocalSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.os.get() {
            Some(os) => write!(f, "{os:?}"),
            None => write!(f, "LocalSender({:p})", Arc::as_ptr(&self.core)),
        }
    }
}

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
                                let seen = self.core.events.load(Ordering::Acquire);
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
                    let os = self.os.get_or_init(|| Box::new(receiver));
                    return os.recv_into(remaining(deadline), buffer).map(Message::from);
                }
            }
        }
    }

    /// A receive in a child made by `fork`: only an OS channel with nothing left in its backlog
    /// is shared with the parent (as a receiver copied by fork is); anything else fails loudly.
    fn recv_in_child(&self, wait: Wait, buffer: &mut Vec<u8>) -> Result<Message, RecvError> {
        if !self.core.left.load(Ordering::Acquire) {
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
        self.os.get_or_init(|| Box::new(receiver)).recv_into(wait, buffer).map(Message::from)
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

thread_local! {
    /// Messages left to drop by a [`drop_iteratively`] further up this thread's stack.
    static TO_DROP: RefCell<Option<Vec<LocalMessage>>> = const { RefCell::new(None) };
}

/// Drops messages whose ends may hold more queues of messages (a receiver queued in a channel
/// whose receiver is queued in another, …) one after the other instead of nested, so that a long
/// chain cannot overflow the stack.
fn drop_iteratively(messages: impl IntoIterator<Item = LocalMessage>) {
    let mut messages = Some(messages);
    let outermost = TO_DROP.try_with(|cell| {
        let mut slot = cell.borrow_mut();
        match slot.as_mut() {
            Some(pending) => {
                pending.extend(messages.take().into_iter().flatten());
                false
            }
            None => {
                *slot = Some(Vec::new());
                true
            }
        }
    });
    // Without the table (this thread is ending), they are dropped as they come.
    let Some(messages) = messages else { return };
    if outermost != Ok(true) {
        drop(messages.into_iter().collect::<Vec<_>>());
        return;
    }
    for message in messages {
        drop(message);
        loop {
            let next = TO_DROP.try_with(|cell| cell.borrow_mut().as_mut().and_then(Vec::pop)).ok().flatten();
            match next {
                Some(message) => drop(message),
                None => break,
            }
        }
    }
    let _ = TO_DROP.try_with(|cell| cell.borrow_mut().take());
}

impl std::fmt::Debug for LocalReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.os.get() {
            Some(os) => write!(f, "{os:?}"),
            None => write!(f, "LocalReceiver({:p})", Arc::as_ptr(&self.core)),
        }
    }
}
