//! The sending end of a local channel.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::task::Waker;
use std::time::{Duration, Instant};

use super::local::{deadline, expired, Core, State};
use super::queue::LocalMessage;
use super::{Channel, Failure};
use crate::sys::{OsIpcSender, OsIpcSharedMemory, Wait};

/// How long a sender that leaves waits for a pump whose backlog is empty to end the move (see
/// [`LocalSender::leave`]); past it, the message still being sent is taken to be stuck.
const LAST_STEP: Duration = Duration::from_secs(1);

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
        if !self.core.watched.left.load(Ordering::Acquire) {
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
            if queue.fits(&message) {
                queue.push(message);
                self.core.message_queued(shared);
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

    /// Has `waker` called once budget may have been freed (or the receiver went, or the
    /// channel became an OS channel), for the async send `send` (an id unique to it, so that
    /// it can take its waker out again); `false` when the channel is an OS channel already,
    /// whose readiness the caller waits on instead.
    pub fn register_writable(&self, send: u64, waker: &Waker) -> bool {
        if self.os().is_some() || !self.core.in_its_process() {
            return false;
        }
        let mut shared = self.core.lock();
        if matches!(shared.state, State::Os { pumping: false, .. }) {
            return false;
        }
        match shared.writer_wakers.iter_mut().find(|(id, _)| *id == send) {
            Some((_, known)) if known.will_wake(waker) => {}
            Some((_, known)) => known.clone_from(waker),
            None => shared.writer_wakers.push((send, waker.clone())),
        }
        true
    }

    /// Takes out the waker the async send `send` registered, if it is still there (the send
    /// ended, or was cancelled).
    pub fn unregister_writable(&self, send: u64) {
        if !self.core.in_its_process() {
            return;
        }
        self.core.lock().writer_wakers.retain(|(id, _)| *id != send);
    }

    /// How many async sends' wakers wait for budget (tests).
    #[cfg(all(test, feature = "tokio", target_os = "linux", not(feature = "force-inprocess")))]
    pub fn writer_wakers(&self) -> usize {
        self.core.lock().writer_wakers.len()
    }

    /// The OS sender this end becomes when it leaves the process (the channel becomes an OS
    /// channel first, if it is not one yet).
    ///
    /// While the receiver's backlog is still being sent to it (it was larger than a socket
    /// takes), a sender that left could overtake it, and waiting for it could wait for ever (the
    /// receiver may be read only by the thread that waits): that fails with an error instead,
    /// for the caller to try again once the receiver has read its backlog, after a short wait
    /// (as `wait` allows) when only the message being sent is left. Inside the backlog itself
    /// the end leaves at once (`leave::pump`).
    pub fn leave(&self, wait: Wait) -> io::Result<OsIpcSender> {
        if let Some(os) = self.os() {
            return Ok(os.clone());
        }
        self.core.check_process()?;
        super::leave::for_sender(&self.core)?;
        let mut shared = self.core.lock();
        // A pump whose backlog is empty holds one message at most, sent or being sent: once it
        // is sent (the receiver may have read it already), the pump's next step ends the move.
        // A blocking send waits for that step, a while (a receiver that read everything must
        // not see its sender refused because the pump's thread has not run yet: CI, under
        // load); a timed one as long as its time allows; `try_send` not at all (review 11, N2).
        let patience = match wait {
            Wait::NonBlocking => Duration::ZERO,
            Wait::Blocking => LAST_STEP,
            Wait::Timeout(timeout) => timeout.min(LAST_STEP),
        };
        let until = Instant::now() + patience;
        while matches!(&shared.state, State::Os { pumping: true, backlog, .. } if backlog.is_empty())
            && !super::leave::in_pump()
            && Instant::now() < until
        {
            shared = self.core.wait_writable(shared, Some(until));
        }
        match &shared.state {
            State::Os { pumping: true, backlog, .. } if !super::leave::in_pump() => Err(io::Error::other(format!(
                "this channel's receiver left with messages still on their way to it ({} queued here, and perhaps \
                 the one being sent): its sender can leave the process once the receiver has read them",
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
                self.core.budget_freed(shared);
                Ok(())
            }
            // The socket keeps the room it was given for the move; it gets this size once the
            // backlog is sent (review 11, N1: the pump's restore undid a size set meanwhile).
            State::Os { backlog, restore_buffer: Some(size), .. } => {
                backlog.capacity = bytes.saturating_mul(2).max(4096);
                *size = bytes;
                self.core.budget_freed(shared);
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
            State::Local(queue)
            | State::Os { backlog: queue, sender: None, .. }
            | State::Os { backlog: queue, restore_buffer: Some(_), .. } => Ok(queue.capacity),
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
