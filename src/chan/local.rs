//! A local channel: a queue in this process's heap, no descriptor and no system call, until one
//! of its ends leaves the process (docs/local.md).
//!
//! Both ends ([`LocalSender`](super::sender::LocalSender), [`LocalReceiver`](super::receiver::LocalReceiver))
//! hold an `Arc` of the channel's [`Core`]. While the channel is local the core holds the
//! [`Queue`]. When an end leaves, the core becomes [`State::Os`]: it holds the OS channel's ends
//! until the local ends take them, and the messages queued before the change (the backlog),
//! which come out before anything sent on the OS channel.

use crate::sys::ForkLock;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, MutexGuard};
use std::task::Waker;
use std::time::{Duration, Instant};

use super::queue::Queue;
use crate::sys::{self, OsIpcReceiver, OsIpcSender, Wait};

/// What a channel is now.
pub(super) enum State {
    /// Its queue is in this process.
    Local(Queue),
    /// An end left: the channel is an OS channel.
    Os {
        /// The OS sender the local sending ends send through; dropped with the last of them.
        sender: Option<OsIpcSender>,
        /// The OS receiver, until the local receiving end takes it (or leaves with it).
        receiver: Option<Box<OsIpcReceiver>>,
        /// Messages queued while the channel was local, not yet received or moved.
        backlog: Queue,
        /// Whether the backlog is being moved into the OS channel (the receiver left): local
        /// sends join the backlog meanwhile, under its budget, so they stay behind it.
        pumping: bool,
        /// The buffer size to give the OS channel once the backlog is sent (`leave.rs` raised
        /// it for the move), as `set_buffer_size` takes it: the channel's own, or what a user
        /// asked for meanwhile.
        restore_buffer: Option<usize>,
    },
}

/// What both ends of a channel share.
pub(crate) struct Core {
    /// What a receiver polls, and what every send and receive reads: on a cache line of its
    /// own (see [`Watched`]).
    pub(super) watched: OwnLine<Watched>,
    pub(super) shared: ForkLock<Shared>,
    /// A message was queued, the last sender went, or the channel became an OS channel.
    pub(super) readable: Condvar,
    /// Budget was freed, the receiver went, or the channel became an OS channel.
    pub(super) writable: Condvar,
}

/// The part of a [`Core`] read without its lock, on a cache line away from the lock and the
/// queue: a receiver that polls the event count must not pull away the line the sender locks,
/// and the generation, which every send reads, must not share a line with the queue's fields,
/// which every receive writes (it did: a sixth of a send's samples in a profile).
pub(crate) struct Watched {
    /// Counts what a receiver waits for (a message queued, the last sender gone, the change to
    /// an OS channel), so that a polling receiver sees it without the lock.
    pub(super) events: AtomicU64,
    /// The fork generation the channel was made in (see [`Core::check_process`]).
    pub(super) generation: u64,
    /// Whether the channel became an OS channel (set once, under the lock): a send on a local
    /// channel looks here instead of taking the lock to find out.
    pub(super) left: AtomicBool,
}

/// A value on a cache line of its own (128 bytes: adjacent lines are fetched in pairs).
#[repr(align(128))]
pub(crate) struct OwnLine<T>(pub T);

impl<T> std::ops::Deref for OwnLine<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

pub(super) struct Shared {
    /// Local sending ends alive (each clone counts; so does one inside a queued message).
    pub senders: usize,
    /// Whether the local receiving end is alive (not dropped, not left).
    pub receiver: bool,
    pub state: State,
    /// Threads asleep on `readable` and on `writable`: a send or a receive wakes only when
    /// someone waits (a condition variable's wake is a system call even when nobody does).
    pub(super) readers_waiting: usize,
    pub(super) writers_waiting: usize,
    /// The task an async receive of the receiving end waits in (tokio): woken, as a sleeping
    /// thread is, by what a receiver waits for. No descriptor: the sender calls the waker.
    pub(super) reader_waker: Option<Waker>,
    /// The tasks async sends wait in for budget (tokio), woken as `writable`'s threads are, by
    /// the id of the send that registered each (a send that ends takes its own out, so that
    /// cancelled sends do not pile up while the channel stays full).
    pub(super) writer_wakers: Vec<(u64, Waker)>,
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
            watched: OwnLine(Watched {
                events: AtomicU64::new(0),
                generation: sys::fork_generation(),
                left: AtomicBool::new(false),
            }),
            shared: ForkLock::new(Shared {
                senders: 1,
                receiver: true,
                state: State::Local(Queue::new()),
                readers_waiting: 0,
                writers_waiting: 0,
                reader_waker: None,
                writer_wakers: Vec::new(),
            }),
            readable: Condvar::new(),
            writable: Condvar::new(),
        })
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock_here()
    }

    /// The lock in a child made by `fork`, unless another thread of the parent held it at the
    /// fork (that thread is not in the child to let go).
    pub(super) fn lock_in_child(&self) -> io::Result<MutexGuard<'_, Shared>> {
        self.shared
            .lock()
            .ok_or_else(|| io::Error::other("this channel was in use by another thread when the process forked"))
    }

    /// Whether this is the process that made the channel. A child made by `fork` does not share
    /// its parent's copy of a local queue, so using one there would split the channel in two
    /// copies that do not hear each other: such a use fails loudly instead (docs/local.md).
    pub fn in_its_process(&self) -> bool {
        self.watched.generation == sys::fork_generation()
    }

    pub(super) fn check_process(&self) -> io::Result<()> {
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
        self.watched.left.store(true, Ordering::Release);
    }

    /// Wakes every waiter, releasing the lock first: the channel changed in a way both ends
    /// must look at. A polling receiver sees the event; nobody asleep costs no system call.
    pub(super) fn wake_all(&self, mut shared: MutexGuard<'_, Shared>) {
        let (readers, writers) = (shared.readers_waiting > 0, shared.writers_waiting > 0);
        let mut tasks: Vec<Waker> = shared.writer_wakers.drain(..).map(|(_, waker)| waker).collect();
        tasks.extend(shared.reader_waker.take());
        drop(shared);
        self.watched.events.fetch_add(1, Ordering::Release);
        if readers {
            self.readable.notify_all();
        }
        if writers {
            self.writable.notify_all();
        }
        tasks.into_iter().for_each(Waker::wake);
    }

    /// Wakes the receiving end if it waits (a thread asleep, or a task), releasing the lock
    /// first: a message was queued.
    pub(super) fn message_queued(&self, mut shared: MutexGuard<'_, Shared>) {
        let thread = shared.readers_waiting > 0;
        // Written only when there is a task (each write is a cache line the receiver reads).
        let task = if shared.reader_waker.is_some() { shared.reader_waker.take() } else { None };
        drop(shared);
        // After the lock is free: a polling receiver that sees the event takes the lock at
        // once, and would otherwise find it held (and sleep on it, and need waking).
        self.watched.events.fetch_add(1, Ordering::Release);
        if thread {
            self.readable.notify_one();
        }
        if let Some(task) = task {
            task.wake();
        }
    }

    /// Wakes the senders that wait for budget, if any (the lock is released first).
    pub(super) fn budget_freed(&self, mut shared: MutexGuard<'_, Shared>) {
        let wake = shared.writers_waiting > 0;
        // Written only when there are tasks (see `message_queued`).
        let tasks =
            if shared.writer_wakers.is_empty() { Vec::new() } else { std::mem::take(&mut shared.writer_wakers) };
        drop(shared);
        if wake {
            self.writable.notify_all();
        }
        tasks.into_iter().for_each(|(_, waker)| waker.wake());
    }

    /// Polls for up to `window` for an event after `seen`, without the lock.
    pub(super) fn poll_events(&self, seen: u64, window: Duration) {
        let start = Instant::now();
        let mut spins = 0u32;
        while self.watched.events.load(Ordering::Acquire) == seen {
            spins = spins.wrapping_add(1);
            if spins % 64 == 0 && start.elapsed() >= window {
                return;
            }
            std::hint::spin_loop();
        }
    }

    /// Sleeps until a message, a hang-up or the change to an OS channel (or `deadline`).
    pub(super) fn wait_readable<'a>(
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
    pub(super) fn wait_writable<'a>(
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
pub(super) fn deadline(wait: Wait) -> Result<Option<Instant>, ()> {
    match wait {
        Wait::Blocking => Ok(None),
        Wait::NonBlocking => Err(()),
        // A timeout too far away to represent waits as long as a blocking wait.
        Wait::Timeout(timeout) => Ok(Instant::now().checked_add(timeout)),
    }
}

/// What is left of a wait with this deadline, for the OS channel a local one became.
pub(super) fn remaining(deadline: Result<Option<Instant>, ()>) -> Wait {
    match deadline {
        Err(()) => Wait::NonBlocking,
        Ok(None) => Wait::Blocking,
        Ok(Some(deadline)) => Wait::Timeout(deadline.saturating_duration_since(Instant::now())),
    }
}

pub(super) fn expired(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|deadline| Instant::now() >= deadline)
}
