//! Select over many receivers with one epoll descriptor: the cost of a wait depends on how many
//! receivers are ready, not on how many are in the set.
//!
//! Members with a shared-memory ring: a message in a ring makes no descriptor ready, so the set
//! looks at the rings of the members that may be *awake* (their senders write in the ring
//! without a wake-up), and before it sleeps each of them announces that it sleeps, after which
//! their senders' packets wake the epoll wait. A member stays announced until it is drained
//! (a receive wakes its ring). At most [`AWAKE_MAX`] members, those drained most recently, stay
//! awake between selects: the others announce that they sleep at once, so their messages make
//! their descriptors ready, and a select's cost does not grow with the size of the set.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use std::mem::MaybeUninit;

use rustix::event::epoll::{self, CreateFlags, Event, EventData, EventFlags};
use rustix::io::Errno;

use super::sys::{retry_on_intr, timespec};
use super::OsIpcReceiver;
use crate::sys::{drain_member, Drained, OsIpcSelectionResult, Wait};
use crate::sys::{ReceiveLimits, RecentWait};

/// Events fetched from the kernel per wait.
const EVENTS_PER_WAIT: usize = 256;

/// The most members whose rings stay awake (their messages cost no system call) between
/// selects: those drained most recently.
pub(super) const AWAKE_MAX: usize = 16;

/// A set of receivers waited on together.
pub(crate) struct OsIpcReceiverSet {
    epoll: OwnedFd,
    receivers: HashMap<u64, OsIpcReceiver>,
    /// The members whose ring may be awake, least recently drained first: those that came with
    /// a ring or were drained since they last announced that they sleep.
    awake: VecDeque<u64>,
    next_id: u64,
    limits: Option<ReceiveLimits>,
    recent_wait: RecentWait,
    /// A member's receive failed with its message still queued (out of descriptors): the
    /// error this select returns if it has nothing else to return.
    stuck: Option<io::Error>,
}

impl OsIpcReceiverSet {
    /// An empty set.
    pub fn new() -> io::Result<Self> {
        Ok(OsIpcReceiverSet {
            epoll: retry_on_intr(|| epoll::create(CreateFlags::CLOEXEC))?,
            receivers: HashMap::new(),
            awake: VecDeque::new(),
            next_id: 0,
            limits: None,
            recent_wait: RecentWait::default(),
            stuck: None,
        })
    }

    /// Adds a receiver and returns the id its events will carry.
    pub fn add(&mut self, receiver: OsIpcReceiver) -> io::Result<u64> {
        if let Some(limits) = self.limits {
            receiver.set_limits(limits);
        }
        let id = self.next_id;
        retry_on_intr(|| epoll::add(&self.epoll, receiver.as_fd(), EventData::new_u64(id), EventFlags::IN))?;
        self.next_id += 1;
        let ringed = receiver.has_live_ring();
        self.receivers.insert(id, receiver);
        if ringed {
            self.keep_awake(id);
        }
        Ok(id)
    }

    /// Whether the set has no members.
    pub fn is_empty(&self) -> bool {
        self.receivers.is_empty()
    }

    /// The epoll descriptor: readable whenever a member is ready (for async runtimes).
    #[cfg(feature = "tokio")]
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.epoll.as_fd()
    }

    /// Called before an async select sleeps on the epoll descriptor: every member that may be
    /// awake announces that it sleeps; `false` when a member has a message waiting in its ring
    /// (select again).
    #[cfg(feature = "tokio")]
    pub fn prepare_to_sleep(&mut self) -> bool {
        self.announce_sleep().is_empty()
    }

    /// Every member that may be awake announces that it sleeps; returns those that could not,
    /// as a message waits in their ring (they stay awake).
    fn announce_sleep(&mut self) -> Vec<u64> {
        let receivers = &self.receivers;
        let mut busy = Vec::new();
        self.awake.retain(|id| match receivers.get(id) {
            Some(receiver) if !receiver.prepare_to_sleep() => {
                busy.push(*id);
                true
            }
            _ => false,
        });
        busy
    }

    /// Notes that member `id` may be awake (it was just drained, or came with a ring), and has
    /// the least recently drained members beyond [`AWAKE_MAX`] announce that they sleep (one
    /// with a message in its ring stays awake until it is drained).
    fn keep_awake(&mut self, id: u64) {
        if let Some(at) = self.awake.iter().position(|&member| member == id) {
            self.awake.remove(at);
        }
        self.awake.push_back(id);
        for _ in 0..self.awake.len().saturating_sub(AWAKE_MAX) {
            let Some(oldest) = self.awake.pop_front() else { break };
            if self.receivers.get(&oldest).is_some_and(|receiver| !receiver.prepare_to_sleep()) {
                self.awake.push_back(oldest);
            }
        }
    }

    /// Sets the receive limits of every member, present and future.
    pub fn set_limits(&mut self, limits: ReceiveLimits) {
        self.limits = Some(limits);
        for receiver in self.receivers.values() {
            receiver.set_limits(limits);
        }
    }

    /// Removes (and closes) a receiver; unknown ids are ignored.
    pub fn remove(&mut self, id: u64) {
        self.awake.retain(|&member| member != id);
        if let Some(receiver) = self.receivers.remove(&id) {
            let _ = epoll::delete(&self.epoll, receiver.as_fd());
        }
    }

    /// Waits as `mode` allows, then reports messages and closed channels. A channel that
    /// disconnected is reported once and leaves the set. A malformed message is dropped (its
    /// descriptors closed) and its channel keeps being served.
    pub fn select(&mut self, mode: Wait) -> io::Result<Vec<OsIpcSelectionResult>> {
        let start = Instant::now();
        // Poll first, like a receive (see `RecentWait`), then sleep as `mode` allows.
        let spin = self.recent_wait.spin_window(mode);
        let mut results = Vec::new();
        let mut events = [MaybeUninit::<Event>::uninit(); EVENTS_PER_WAIT];
        loop {
            let elapsed = start.elapsed();
            let polling = elapsed < spin;
            let mut timeout = match mode {
                _ if polling => Some(Duration::ZERO),
                Wait::Blocking => None,
                Wait::NonBlocking => Some(Duration::ZERO),
                Wait::Timeout(duration) => Some(duration.saturating_sub(elapsed)),
            };
            // Messages in members' rings make no descriptor ready: take those of the members
            // that may be awake first. Before a wait, each of them announces that it sleeps, so
            // that from then on its senders' packets wake this wait.
            let sleeping = timeout != Some(Duration::ZERO);
            let waiting: Vec<u64> = if sleeping {
                self.announce_sleep()
            } else {
                let receivers = &self.receivers;
                self.awake.iter().copied().filter(|id| receivers.get(id).is_some_and(|r| r.has_ring_work())).collect()
            };
            let had_ring_work = !waiting.is_empty();
            for id in waiting {
                self.drain(id, &mut results);
            }
            // What waited may have been no message (a marker whose packet was read already); the
            // member woke to take it and must announce again that it sleeps before any wait. The
            // descriptors are still looked at meanwhile, so that other members are served even
            // if a (hostile) ring never stops yielding such entries.
            let announce_again = sleeping && had_ring_work && results.is_empty();
            if !results.is_empty() || announce_again {
                timeout = Some(Duration::ZERO);
            }
            let ready: Vec<u64> = match epoll::wait(&self.epoll, &mut events[..], timeout.map(timespec).as_ref()) {
                Ok((ready, _)) => ready.iter().map(|event| event.data.u64()).collect(),
                Err(Errno::INTR) if timeout.is_none() || polling || announce_again => continue,
                Err(Errno::INTR) => return Ok(results),
                Err(error) => return Err(error.into()),
            };
            for id in ready {
                self.drain(id, &mut results);
            }
            if let Some(error) = self.stuck.take() {
                if results.is_empty() {
                    return Err(error);
                }
            }
            if !results.is_empty() || (timeout.is_some() && !polling && !announce_again) {
                if !matches!(mode, Wait::NonBlocking) {
                    self.recent_wait.record(start);
                }
                return Ok(results);
            }
            if polling {
                std::hint::spin_loop();
            }
        }
    }

    fn drain(&mut self, id: u64, results: &mut Vec<OsIpcSelectionResult>) {
        let Some(receiver) = self.receivers.get(&id) else { return };
        // Epoll is level-triggered: a member left with `More` is reported again next time.
        match drain_member(id, || receiver.recv(Wait::NonBlocking), results) {
            Drained::Closed => return self.remove(id),
            // Reported by this select if it has nothing else to report; the member stays.
            Drained::Stuck(error) => self.stuck = Some(error),
            Drained::Empty | Drained::More => {}
        }
        if receiver.has_live_ring() {
            // The receive woke its ring (or made one).
            self.keep_awake(id);
        }
    }
}
