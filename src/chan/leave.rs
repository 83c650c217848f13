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
//!   in its new process), and that the process's `exit` waits for (`sys::finish_at_exit`).
//! - The receiver leaves after a sender did, with the backlog not read yet: the backlog cannot
//!   go ahead of what was sent on the OS channel since, so leaving fails with an error that
//!   says so (the receiver comes back whole).

use std::io;
use std::sync::Arc;

use super::local::{Core, Shared, State};
use super::queue::{LocalMessage, DEFAULT_CAPACITY};
use super::{Channel, Failure};
use crate::sys::{self, OsIpcChannel, OsIpcReceiver, OsIpcSender, Wait};

/// Makes a local channel an OS channel with the queue as its backlog, the pump marked as
/// running if there is one; the OS receiver is kept for the local receiver, or returned when
/// `receiver_leaves`.
fn convert_locked(shared: &mut Shared, receiver_leaves: bool) -> io::Result<Option<OsIpcReceiver>> {
    let State::Local(queue) = &mut shared.state else { unreachable!("callers check") };
    let (sender, receiver) = sys::channel()?;
    let pumping = receiver_leaves && !queue.is_empty();
    // The size the OS channel keeps: the local channel's room (as far as the system allows), or
    // for the default the socket's own, which costs no system call.
    let own = (queue.capacity != DEFAULT_CAPACITY).then_some(queue.capacity / 2);
    // Room for the whole backlog while it moves, where the backend needs more than the budget
    // (Linux: `OsIpcSender::raise_for_backlog`); the pump gives the channel its own size back
    // once the backlog is sent.
    let restore_buffer =
        if pumping { sender.raise_for_backlog(queue.capacity) } else { None }.map(|before| own.unwrap_or(before));
    if let (None, Some(size)) = (restore_buffer, own) {
        let _ = sender.set_buffer_size(size);
    }
    let backlog = queue.take();
    let (kept, left) = match (receiver_leaves, shared.receiver) {
        (true, _) => (None, Some(receiver)),
        (false, true) => (Some(Box::new(receiver)), None),
        (false, false) => (None, None),
    };
    if receiver_leaves {
        shared.receiver = false;
    }
    shared.state = State::Os { sender: Some(sender), receiver: kept, backlog, pumping, restore_buffer };
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
    core.wake_all(shared);
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
        return Ok(*taken);
    }
    if let State::Local(queue) = &shared.state {
        if queue.carries_a_stuck_receiver() {
            return Err(io::Error::other(
                "a message queued for this receiver carries a receiver that cannot leave the process yet \
                 (it has messages from before a sender of its channel left): receive that message here first",
            ));
        }
    }
    let receiver = convert_locked(&mut shared, true)?.expect("the leaving receiver's end");
    core.mark_left();
    let os = os_sender(&shared);
    core.wake_all(shared);
    if let Some(os) = os {
        if pump(core, &os, Wait::NonBlocking) == Pumped::Blocked {
            let core = core.clone();
            let thread = std::thread::Builder::new()
                .name("crossproc-backlog".into())
                .spawn(move || {
                    pump(&core, &os, Wait::Blocking);
                })
                .map_err(|error| io::Error::new(error.kind(), format!("cannot start the backlog's thread: {error}")))?;
            // The process's exit waits for the backlog, as a blocked send would have.
            sys::finish_at_exit::finish_before_exit(thread);
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

thread_local! {
    /// Whether this thread is sending a backlog ([`pump`]).
    static IN_PUMP: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread is sending a backlog: the ends inside it leave without the check of
/// [`LocalSender::leave`](super::local::LocalSender::leave) (they were sent before it).
pub(super) fn in_pump() -> bool {
    IN_PUMP.with(std::cell::Cell::get)
}

#[derive(PartialEq)]
enum Pumped {
    Done,
    Blocked,
}

/// Sends the backlog into `os`, oldest first, until it is empty (then, in the same step, local
/// sends go to the OS channel again) or, under `Wait::NonBlocking`, the socket is full (the
/// message that did not fit goes back to the front, and the pump goes on running).
fn pump(core: &Core, os: &OsIpcSender, wait: Wait) -> Pumped {
    loop {
        let mut shared = core.lock();
        let State::Os { backlog, pumping, restore_buffer, .. } = &mut shared.state else { unreachable!("it left") };
        let Some(message) = backlog.pop() else {
            // The socket's own size back (`convert_locked` raised it for the move), before a
            // local sender or a user's `set_buffer_size` reaches the socket itself.
            if let Some(size) = restore_buffer.take() {
                let _ = os.set_buffer_size(size);
            }
            *pumping = false;
            let unused = shared.release_unused_sender();
            core.wake_all(shared);
            drop(unused);
            return Pumped::Done;
        };
        core.budget_freed(shared);
        let LocalMessage { data, channels, shared_memory, .. } = message;
        let kept_regions = shared_memory.clone();
        let outer = IN_PUMP.with(|flag| flag.replace(true));
        let sent = super::send_os(os, &data, channels, shared_memory, wait);
        IN_PUMP.with(|flag| flag.set(outer));
        match sent {
            Ok(()) => {}
            Err(Failure { error, channels }) if error.kind() == io::ErrorKind::WouldBlock => {
                let message = LocalMessage::queued(data, channels, kept_regions);
                if let State::Os { backlog, .. } = &mut core.lock().state {
                    backlog.push_front(message);
                }
                return Pumped::Blocked;
            }
            // The OS refused a message on a channel made a moment ago (out of memory, or a
            // receiver already gone), or an end inside it could not leave: it is lost, as a
            // message the OS refuses after it was sent would be.
            Err(_) => {}
        }
    }
}

/// The ends of an outgoing message for an OS channel, each as the OS end it is or becomes; on a
/// failure every end comes back (those that left as the OS ends they became).
///
/// Receivers leave first: a receiver whose sender travels beside it then takes its backlog
/// along (had the sender left first, the backlog would have had to be read here).
pub(super) fn all(channels: Vec<Channel>, wait: Wait) -> Result<Vec<OsIpcChannel>, Failure> {
    let mut slots: Vec<Option<Channel>> = channels.into_iter().map(Some).collect();
    let mut left: Vec<Option<OsIpcChannel>> = slots.iter().map(|_| None).collect();
    let mut failure = None;
    for (slot, out) in slots.iter_mut().zip(left.iter_mut()) {
        if !matches!(slot, Some(Channel::Receiver(_))) {
            continue;
        }
        let Some(Channel::Receiver(receiver)) = slot.take() else { unreachable!("matched") };
        match receiver.leave() {
            Ok(os) => *out = Some(OsIpcChannel::Receiver(os)),
            Err(boxed) => {
                let (error, receiver) = *boxed;
                *slot = Some(Channel::Receiver(receiver));
                failure = Some(error);
                break;
            }
        }
    }
    for (slot, out) in slots.iter_mut().zip(left.iter_mut()) {
        if failure.is_some() {
            break;
        }
        let Some(Channel::Sender(sender)) = slot.as_ref() else { continue };
        match sender.leave(wait) {
            Ok(os) => {
                *slot = None;
                *out = Some(OsIpcChannel::Sender(os));
            }
            Err(error) => failure = Some(error),
        }
    }
    let zipped = slots.into_iter().zip(left);
    match failure {
        None => Ok(zipped.map(|(_, out)| out.expect("every end left")).collect()),
        Some(error) => Err(Failure {
            error,
            channels: zipped
                .map(|(slot, out)| slot.unwrap_or_else(|| Channel::from(out.expect("an end left"))))
                .collect(),
        }),
    }
}
