//! The descriptor kept in reserve for the look after a plain send (`src/sys/linux/reserve.rs`).
//!
//! - Review 3, finding F2: it was made once per process, when the first sender was made. If
//!   there was no room then, or if the reserve was lost later (another thread took its room
//!   during a look), nothing made it again while the process had room, since `with_one_free`
//!   re-opened it only after a look that found *no room*, where the re-open failed as well. A
//!   later plain send at the limit then looked without room, published no place holder, and a
//!   message sent after it through the ring (by another process it told) overtook it.
//! - Review 4: remade when a sender is made, it was still missing in a process whose senders
//!   all arrived at the limit, that then had room (and sent, looking, in it), and was back at
//!   its limit. Now each look for a ring remakes it too.

#![cfg(all(target_os = "linux", not(feature = "force-inprocess")))]

mod util;

use std::os::fd::OwnedFd;
use std::time::Duration;

use crossproc::ipc::{self, inherited_receiver, IpcCommandExt, IpcSender};
use serde::{Deserialize, Serialize};
use util::{child_command, child_role, descriptors, with_watchdog};

const ENTRY: &str = "child_entry";

#[derive(Serialize, Deserialize)]
enum Message {
    Sender(IpcSender<u32>),
    Done,
}

/// Fills the table under a limit of 256 with the descriptors kept in `held`.
fn fill(held: &mut Vec<OwnedFd>) {
    descriptors::lower_the_limit(256);
    descriptors::fill_leaving_one(held);
    descriptors::take_the_rest(held);
}

#[test]
fn child_entry() {
    let Some(role) = child_role() else { return };
    let messages = inherited_receiver::<Message>().unwrap();
    let mut held = Vec::new();
    fill(&mut held);
    // Exactly one descriptor free when this process's first sender arrives: it takes it, and
    // the reserve cannot be opened.
    held.pop();
    let Ok(Message::Sender(tell_parent)) = messages.recv() else { panic!("not the parent's sender") };
    let on_the_ring = match role.as_str() {
        "first_sender_at_the_limit" => {
            // Room again (3 free), then the second sender (2 free): a sender made remakes it.
            held.truncate(held.len() - 3);
            let Ok(Message::Sender(on_the_ring)) = messages.recv() else { panic!("not the ring's sender") };
            on_the_ring
        }
        "every_sender_at_the_limit" => {
            // The second sender arrives with one free too; then room for a while: a plain send
            // and its look (on the telling channel, which has no ring) remake it.
            descriptors::take_the_rest(&mut held);
            held.pop();
            let Ok(Message::Sender(on_the_ring)) = messages.recv() else { panic!("not the ring's sender") };
            held.truncate(held.len() - 8);
            tell_parent.send(100).unwrap();
            on_the_ring
        }
        other => panic!("unknown child role {other}"),
    };
    // The process is back at its limit (an application opened files, say).
    descriptors::take_the_rest(&mut held);
    // A plain packet (this sender knows of no ring), then the look, which has no room.
    on_the_ring.send(1).unwrap();
    tell_parent.send(0).unwrap();
    assert!(matches!(messages.recv(), Ok(Message::Done)));
    drop(held);
}

/// The child (playing `role`) sends 1 on a channel whose ring is awake, then tells the parent
/// 0, which sends 2 through the ring: 1 must come first. `tells` are what the child says
/// before that 0.
fn a_plain_send_at_the_limit_keeps_its_place(role: &'static str, tells: &'static [u32]) {
    with_watchdog(Duration::from_secs(60), move || {
        let (tx, rx) = util::os_channel_with_awake_ring(|n| n);
        let (mut child, messages) = child_command(ENTRY, role).spawn_with_channel::<Message>().unwrap();
        let (told, tell) = ipc::os_channel::<u32>().unwrap();
        messages.send(Message::Sender(told)).unwrap();
        messages.send(Message::Sender(tx.clone())).unwrap();
        for &expected in tells {
            assert_eq!(tell.recv().unwrap(), expected);
        }
        assert_eq!(tell.recv().unwrap(), 0, "the child sent its message");
        tx.send(2).unwrap();
        let first = rx.recv().unwrap();
        let second = rx.recv().unwrap();
        messages.send(Message::Done).unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "the child failed: {status}");
        assert_eq!((first, second), (1, 2), "the parent's later ring message overtook the child's packet");
    });
}

#[test]
fn a_send_at_the_limit_keeps_its_place_when_the_first_sender_came_at_the_limit() {
    if child_role().is_none() {
        a_plain_send_at_the_limit_keeps_its_place("first_sender_at_the_limit", &[]);
    }
}

#[test]
fn a_send_at_the_limit_keeps_its_place_when_every_sender_came_at_the_limit() {
    if child_role().is_none() {
        a_plain_send_at_the_limit_keeps_its_place("every_sender_at_the_limit", &[100]);
    }
}
