//! The queue of a local channel: its messages and the budget they take, accounted like the
//! socket it stands for (a message costs its bytes plus a packet's overhead, a large payload a
//! fixed share), so `try_send` reports `Full` at about the point a socket would.

use std::cell::RefCell;
use std::collections::VecDeque;

use super::Channel;
use crate::sys::{self, OsIpcSharedMemory};

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

/// How many levels of queued receivers a leaving receiver's check looks through (a chain
/// longer than this is not looked at past it; docs/local.md).
const STUCK_DEPTH: usize = 64;

impl Queue {
    /// An empty queue with the default budget (Linux's default socket buffer).
    pub fn new() -> Queue {
        Queue { messages: VecDeque::new(), used: 0, capacity: DEFAULT_CAPACITY }
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Whether `cost` fits: it always does in an empty queue, as a message fits an empty socket.
    pub fn fits(&self, message: &LocalMessage) -> bool {
        let cost = message.cost;
        self.used == 0 || self.used + cost <= self.capacity
    }

    pub fn push(&mut self, message: LocalMessage) {
        self.used += message.cost;
        if self.messages.capacity() == 0 {
            // Room for one at first, not the four a growing queue gets: a channel that carries
            // one message (a reply) keeps 240 bytes less while it holds it.
            self.messages.reserve_exact(1);
        }
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
    pub fn take_all(&mut self) -> VecDeque<LocalMessage> {
        self.used = 0;
        std::mem::take(&mut self.messages)
    }

    /// Whether a message here carries a receiver that could not leave with it (one whose own
    /// backlog predates a sender's leave, see `leave::for_receiver`): sent on, that message
    /// could only be dropped. One level deep, and a channel whose lock is busy counts as fine.
    pub fn carries_a_stuck_receiver(&self) -> bool {
        self.carries_a_stuck_receiver_within(STUCK_DEPTH)
    }

    /// [`carries_a_stuck_receiver`](Self::carries_a_stuck_receiver), looking `depth` levels of
    /// queued receivers deep (each level's lock is tried, and held while the next is looked
    /// at, so a cycle ends at a lock this look holds).
    pub fn carries_a_stuck_receiver_within(&self, depth: usize) -> bool {
        depth > 0
            && self.messages.iter().flat_map(|message| &message.channels).any(|channel| match channel {
                Channel::Receiver(super::Receiver::Local(receiver)) => receiver.must_read_its_backlog_here(depth - 1),
                _ => false,
            })
    }

    /// The queue as it is, moved out, with an empty one of the same capacity left behind.
    pub fn take(&mut self) -> Queue {
        std::mem::replace(self, Queue { messages: VecDeque::new(), used: 0, capacity: self.capacity })
    }
}

thread_local! {
    /// Messages left to drop by a [`drop_iteratively`] further up this thread's stack.
    static TO_DROP: RefCell<Option<Vec<LocalMessage>>> = const { RefCell::new(None) };
}

/// Drops messages whose ends may hold more queues of messages (a receiver queued in a channel
/// whose receiver is queued in another, …) one after the other instead of nested, so that a long
/// chain cannot overflow the stack.
pub(super) fn drop_iteratively(messages: impl IntoIterator<Item = LocalMessage>) {
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
