//! An end leaves the process: its channel becomes an OS channel, and the messages queued while
//! it was local keep their place (docs/local.md, "Leaving").
//!
//! - A *sender* leaves: the receiver stays here and reads the backlog before the OS channel, so
//!   everything queued before the change comes first, then everything sent on the OS channel.
//! - The *receiver* leaves: the backlog goes into the OS channel ahead of it. What fits now is
//!   sent at once; the rest by a thread (the socket may not take a long backlog before the
//!   receiver reads it in its new process), with local sends joining the backlog meanwhile.

use std::io;
use std::sync::Arc;

use super::local::{Core, LocalMessage, State};
use super::{Channel, Failure};
use crate::sys::{self, OsIpcChannel, OsIpcReceiver, OsIpcSender, Wait};

/// Makes `core`'s channel an OS channel, if it is not one yet, and wakes whoever waits on it.
pub(super) fn convert(core: &Arc<Core>) -> io::Result<()> {
    let mut shared = core.lock();
    if matches!(shared.state, State::Os { .. }) {
        return Ok(());
    }
    let (sender, receiver) = sys::channel()?;
    let receiver = shared.receiver.then_some(receiver);
    let old = std::mem::replace(
        &mut shared.state,
        State::Os { sender: Some(sender), receiver, backlog: Default::default(), pumping: false },
    );
    let State::Local { messages, .. } = old else { unreachable!("checked above") };
    let State::Os { backlog, .. } = &mut shared.state else { unreachable!("just set") };
    *backlog = messages;
    drop(shared);
    core.wake_all();
    Ok(())
}

/// Takes the OS receiver of a converted channel for a receiver that leaves, and sends the
/// backlog ahead of it.
pub(super) fn take_receiver(core: &Arc<Core>) -> io::Result<OsIpcReceiver> {
    let mut shared = core.lock();
    let State::Os { receiver, sender, pumping, backlog } = &mut shared.state else {
        return Err(io::Error::other("the channel is not an OS channel"));
    };
    let taken = receiver.take().ok_or_else(|| io::Error::other("the channel's receiver already left"))?;
    // The sender is kept while a backlog waits (see `Shared::release_unused_sender`).
    let pump = match (backlog.is_empty(), sender.clone()) {
        (false, Some(os)) => {
            *pumping = true;
            Some(os)
        }
        _ => None,
    };
    shared.receiver = false;
    let unused = shared.release_unused_sender();
    drop(shared);
    drop(unused);
    if let Some(os) = pump {
        if pump_backlog(core, &os, Wait::NonBlocking) == Pumped::Blocked {
            let core = core.clone();
            std::thread::Builder::new()
                .name("crossproc-backlog".into())
                .spawn(move || {
                    pump_backlog(&core, &os, Wait::Blocking);
                })
                .map_err(|error| io::Error::new(error.kind(), format!("cannot start the backlog's thread: {error}")))?;
        }
    }
    Ok(taken)
}

#[derive(PartialEq)]
enum Pumped {
    Done,
    Blocked,
}

/// Sends the backlog into `os`, oldest first, until it is empty (then local senders send on the
/// OS channel) or, under `Wait::NonBlocking`, the socket is full.
fn pump_backlog(core: &Core, os: &OsIpcSender, wait: Wait) -> Pumped {
    loop {
        let mut shared = core.lock();
        let State::Os { backlog, pumping, .. } = &mut shared.state else { unreachable!("converted") };
        let Some(message) = backlog.pop_front() else {
            *pumping = false;
            let unused = shared.release_unused_sender();
            drop(shared);
            drop(unused);
            core.wake_all();
            return Pumped::Done;
        };
        drop(shared);
        let LocalMessage { data, channels, shared_memory, .. } = message;
        let kept_regions = shared_memory.clone();
        match super::send_os(os, &data, channels, shared_memory, wait) {
            Ok(()) => {}
            Err(Failure { error, channels }) if error.kind() == io::ErrorKind::WouldBlock => {
                let message = LocalMessage::queued(data, channels, kept_regions);
                let mut shared = core.lock();
                if let State::Os { backlog, .. } = &mut shared.state {
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
