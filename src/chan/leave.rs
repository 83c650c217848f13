//! An end leaves the process: its channel becomes an OS channel, and the messages queued while
//! it was local keep their place (docs/local.md, "Leaving").
//!
//! The queue becomes the *backlog*:
//!
//! - A *sender* leaves: the local receiver reads the backlog before the OS channel. Everything
//!   on the OS channel was sent after the change, so FIFO and causal order hold.
//! - The *receiver* leaves: the backlog is *pumped* into the OS channel, oldest first, before
//!   anything else is sent there (local sends join the backlog while the pump runs). What the
//!   fresh socket takes at once is sent before the receiver goes; the rest by a thread that
//!   lives until the backlog is empty (the socket cannot take more before the receiver reads it
//!   in its new process).
//! - The receiver leaves after a sender did, with the backlog not read yet: the backlog cannot
//!   go ahead of what was sent on the OS channel since, so leaving fails with an error that
//!   says so (the receiver comes back whole).

use std::io;
use std::sync::Arc;

use super::local::{Core, LocalMessage, Shared, State};
use super::{Channel, Failure};
use crate::sys::{self, OsIpcChannel, OsIpcReceiver, OsIpcSender, Wait};

/// Makes a local channel an OS channel with the queue as its backlog, the pump marked as
/// running if there is one; the OS receiver is kept for the local receiver, or returned when
/// `receiver_leaves`.
fn convert_locked(shared: &mut Shared, receiver_leaves: bool) -> io::Result<Option<OsIpcReceiver>> {
    let State::Local { messages, capacity, .. } = &mut shared.state else { unreachable!("callers check") };
    let (sender, receiver) = sys::channel()?;
    // The OS channel gets the room the local one had (as far as the system allows).
    let _ = sender.set_buffer_size(*capacity / 2);
    let backlog = std::mem::take(messages);
    let pumping = receiver_leaves && !backlog.is_empty();
    let (kept, left) = match (receiver_leaves, shared.receiver) {
        (true, _) => (None, Some(receiver)),
        (false, true) => (Some(receiver), None),
        (false, false) => (None, None),
    };
    if receiver_leaves {
        shared.receiver = false;
    }
    shared.state = State::Os { sender: Some(sender), receiver: kept, backlog, pumping };
    Ok(left)
}

/// Makes `core`'s channel an OS channel for a sender that leaves (nothing if it is one already).
pub(super) fn for_sender(core: &Arc<Core>) -> io::Result<()> {
    let mut shared = core.lock();
    if matches!(shared.state, State::Os { .. }) {
        return Ok(());
    }
    convert_locked(&mut shared, false)?;
    core.mark_left();
    drop(shared);
    core.wake_all();
    Ok(())
}

/// The OS receiver for a receiver that leaves, its backlog sent ahead of it.
///
/// If a sender left before and the local receiver has not read the backlog yet, the backlog
/// cannot go ahead of what was sent on the OS channel since: the receiver must read it here
/// first, and leaving fails with an error that says so.
pub(super) fn for_receiver(core: &Arc<Core>) -> io::Result<OsIpcReceiver> {
    let mut shared = core.lock();
    if let State::Os { backlog, receiver, .. } = &mut shared.state {
        if !backlog.is_empty() {
            return Err(io::Error::other(format!(
                "this receiver has {} messages that were queued here before a sender of its channel left \
                 the process: receive them here before sending the receiver away",
                backlog.len()
            )));
        }
        let taken = receiver.take().ok_or_else(|| io::Error::other("the channel's receiver already left"))?;
        shared.receiver = false;
        let unused = shared.release_unused_sender();
        drop(shared);
        drop(unused);
        return Ok(taken);
    }
    let receiver = convert_locked(&mut shared, true)?.expect("the leaving receiver's end");
    core.mark_left();
    let os = os_sender(&shared);
    drop(shared);
    core.wake_all();
    if let Some(os) = os {
        if pump(core, &os, Wait::NonBlocking) == Pumped::Blocked {
            let core = core.clone();
            std::thread::Builder::new()
                .name("crossproc-backlog".into())
                .spawn(move || {
                    pump(&core, &os, Wait::Blocking);
                    stop_pumping(&core);
                })
                .map_err(|error| io::Error::new(error.kind(), format!("cannot start the backlog's thread: {error}")))?;
        } else {
            stop_pumping(core);
        }
    } else {
        let unused = core.lock().release_unused_sender();
        drop(unused);
    }
    Ok(receiver)
}

/// The OS sender a pump sends through, if a pump is to run.
fn os_sender(shared: &Shared) -> Option<OsIpcSender> {
    match &shared.state {
        State::Os { sender: Some(sender), pumping: true, .. } => Some(sender.clone()),
        _ => None,
    }
}

/// Ends a pump: local sends go to the OS channel again, and whoever waits looks again.
fn stop_pumping(core: &Core) {
    let mut shared = core.lock();
    if let State::Os { pumping, .. } = &mut shared.state {
        *pumping = false;
    }
    let unused = shared.release_unused_sender();
    drop(shared);
    drop(unused);
    core.wake_all();
}

#[derive(PartialEq)]
enum Pumped {
    Done,
    Blocked,
}

/// Sends the backlog into `os`, oldest first, until it is empty or, under `Wait::NonBlocking`,
/// the socket is full (the message that did not fit goes back to the front).
fn pump(core: &Core, os: &OsIpcSender, wait: Wait) -> Pumped {
    loop {
        let Some(message) = take_front(core) else { return Pumped::Done };
        let LocalMessage { data, channels, shared_memory, .. } = message;
        let kept_regions = shared_memory.clone();
        match super::send_os(os, &data, channels, shared_memory, wait) {
            Ok(()) => {}
            Err(Failure { error, channels }) if error.kind() == io::ErrorKind::WouldBlock => {
                let message = LocalMessage::queued(data, channels, kept_regions);
                if let State::Os { backlog, .. } = &mut core.lock().state {
                    backlog.push_front(message);
                }
                return Pumped::Blocked;
            }
            // The OS refused a message on a channel made a moment ago (out of memory, or a
            // receiver already gone): it is lost, as it would be had it been sent there.
            Err(_) => {}
        }
    }
}

fn take_front(core: &Core) -> Option<LocalMessage> {
    match &mut core.lock().state {
        State::Os { backlog, .. } => backlog.pop_front(),
        State::Local { .. } => None,
    }
}

/// The ends of an outgoing message for an OS channel, each as the OS end it is or becomes; on a
/// failure every end comes back (those that left as the OS ends they became).
pub(super) fn all(channels: Vec<Channel>) -> Result<Vec<OsIpcChannel>, Failure> {
    let mut out = Vec::with_capacity(channels.len());
    let mut channels = channels.into_iter();
    while let Some(channel) = channels.next() {
        let left = match channel {
            Channel::Sender(sender) => match sender.leave() {
                Ok(os) => Ok(OsIpcChannel::Sender(os)),
                Err(error) => Err((error, Channel::Sender(sender))),
            },
            Channel::Receiver(receiver) => match receiver.leave() {
                Ok(os) => Ok(OsIpcChannel::Receiver(os)),
                Err(failure) => {
                    let (error, receiver) = *failure;
                    Err((error, Channel::Receiver(receiver)))
                }
            },
        };
        match left {
            Ok(os) => out.push(os),
            Err((error, channel)) => {
                let mut back: Vec<Channel> = out.into_iter().map(Channel::from).collect();
                back.push(channel);
                back.extend(channels);
                return Err(Failure { error, channels: back });
            }
        }
    }
    Ok(out)
}
