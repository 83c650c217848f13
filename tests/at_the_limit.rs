//! A receive at the descriptor limit loses nothing (issue 23): when a message's descriptors
//! cannot be installed because this process's table is full, the receive fails with an error
//! that says so, the message stays queued, and a receive once descriptors are free takes it
//! whole. The receiver is a child process that fills its own table; the sender is the parent.

#![cfg(all(target_os = "linux", not(feature = "force-inprocess")))]

mod util;

use std::os::fd::OwnedFd;
use std::time::Duration;

use crossproc::ipc::{self, inherited_receiver, IpcCommandExt, IpcError, IpcReceiverSet, IpcSelectionResult};
use crossproc::ipc::{IpcSender, IpcSharedMemory, TryRecvError};
use serde::{Deserialize, Serialize};
use util::{child_command, child_role, descriptors, with_watchdog};

const ENTRY: &str = "child_entry";

#[derive(Serialize, Deserialize)]
enum Message {
    /// A small message (the ring carries these once the channel has one).
    Small(u32),
    /// A message with descriptors: a sender to answer on and a region.
    Carrying(IpcSender<u32>, IpcSharedMemory),
    /// A message with more descriptors than the receiver has free.
    Many(Vec<IpcSharedMemory>),
    /// The same with a payload too large for a packet (it travels in a memfd of its own).
    ManyAndLarge(Vec<IpcSharedMemory>, Vec<u8>),
}

/// Descriptors the "wedge" child leaves free, fewer than its `Many` message carries.
const LEFT_FREE: usize = 64;
/// Descriptors in the `Many` message.
const MANY: usize = 200;

/// Descriptors in the message whose descriptors travel on a side socket (more than one packet
/// carries).
const ON_A_SIDE_SOCKET: usize = 300;
/// Descriptors the "side" child leaves free when that message comes.
const FEW_FREE: usize = 8;

/// The kernel counts descriptors in flight per user, against the sender's `RLIMIT_NOFILE`: as an
/// unprivileged user, the tests that leave hundreds in flight take turns, so that together they
/// stay under it (root is exempt).
fn in_flight_turn() -> std::sync::MutexGuard<'static, ()> {
    static IN_FLIGHT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    IN_FLIGHT.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Fills this process's descriptor table (under a lowered limit) with copies kept in `held`.
fn fill_the_table(held: &mut Vec<OwnedFd>) {
    fill_the_table_under(held, 256);
}

/// Fills the descriptor table under a limit of `limit` with copies kept in `held`, leaving one
/// slot free.
fn fill_the_table_under(held: &mut Vec<OwnedFd>, limit: u64) {
    descriptors::lower_the_limit(limit);
    descriptors::fill_leaving_one(held);
    assert!(held.len() >= 16, "only {} descriptors free under a limit of {limit}", held.len());
}

/// The error is this process's own shortage, said as such (not a peer's malformed message, not
/// a closed channel).
fn assert_out_of_descriptors(error: &IpcError, what: &str) {
    match error {
        IpcError::Io(io) => {
            let text = io.to_string();
            assert!(text.contains("out of descriptors") && text.contains("EMFILE"), "{what}: {text}");
            assert_ne!(io.kind(), std::io::ErrorKind::InvalidData, "{what}: blamed the peer: {text}");
        }
        other => panic!("{what}: {other:?}, not an error that says this process is out of descriptors"),
    }
}

/// The child side of every test in this file; does nothing unless started as a child.
#[test]
fn child_entry() {
    let Some(role) = child_role() else { return };
    let messages = inherited_receiver::<Message>().unwrap();
    if role == "wedge" || role == "wedge-side" {
        return wedge_child(messages);
    }
    if role == "side" {
        return side_socket_child(messages);
    }
    if role == "order" {
        return order_child(messages);
    }
    // Small messages first: enough for the channel to get its ring, when `ring` is the role.
    let small = if role == "ring" { 40 } else { 2 };
    for expected in 0..small {
        assert!(matches!(messages.recv().unwrap(), Message::Small(n) if n == expected));
    }
    let mut held = Vec::new();
    fill_the_table(&mut held);
    // Next come the message with descriptors and a small one behind it (a blocking receive
    // waits for the first, should the parent not have sent it yet).
    let error = messages.recv().err().expect("a message with descriptors received into a full table");
    assert_out_of_descriptors(&error, "recv");
    match messages.try_recv() {
        Err(TryRecvError::IpcError(error)) => assert_out_of_descriptors(&error, "try_recv"),
        other => panic!("try_recv at the limit: {:?}", other.map(|_| ())),
    }
    // The small message behind it does not overtake it.
    match messages.try_recv_timeout(Duration::from_millis(1)) {
        Err(TryRecvError::IpcError(error)) => assert_out_of_descriptors(&error, "try_recv_timeout"),
        other => panic!("try_recv_timeout at the limit: {:?}", other.map(|_| ())),
    }
    // Room for the message's descriptors (and what receiving them takes), and it comes whole.
    held.truncate(held.len() - 16);
    let Message::Carrying(answer, region) = messages.recv().unwrap() else {
        panic!("not the message with descriptors")
    };
    assert_eq!(&region[..], b"kept while the table was full");
    answer.send(7).unwrap();
    assert!(matches!(messages.recv().unwrap(), Message::Small(1000)));

    // In a set, the same: an error for that member, not a closed channel. (The set is made
    // first: its own descriptors, an epoll and a doorbell, are made with it.)
    let mut set = IpcReceiverSet::new().unwrap();
    fill_the_table(&mut held);
    let id = set.add(messages).unwrap();
    answer.send(8).unwrap(); // the parent now sends the second message with descriptors
    match set.select() {
        Err(error) => {
            let text = error.to_string();
            assert!(text.contains("out of descriptors"), "select: {text}");
        }
        Ok(results) => {
            for result in results {
                assert!(!matches!(result, IpcSelectionResult::ChannelClosed(_)), "select said the channel closed");
            }
        }
    }
    held.truncate(held.len() - 16);
    let mut results = set.select().unwrap();
    assert_eq!(results.len(), 1, "select after descriptors were freed");
    let Some(IpcSelectionResult::MessageReceived(from, message)) = results.pop() else {
        panic!("select after descriptors were freed: not a message")
    };
    assert_eq!(from, id);
    let Ok(Message::Carrying(answer, region)) = message.to() else { panic!("not the second message") };
    assert_eq!(&region[..], b"kept while the table was full");
    answer.send(9).unwrap();
}

fn a_message_at_the_limit_stays_receivable(role: &str) {
    if child_role().is_some() {
        return;
    }
    let role = role.to_owned();
    with_watchdog(Duration::from_secs(60), move || {
        let (mut child, messages) = child_command(ENTRY, &role).spawn_with_channel::<Message>().unwrap();
        let small = if role == "ring" { 40 } else { 2 };
        for n in 0..small {
            messages.send(Message::Small(n)).unwrap();
        }
        let (answer, answers) = ipc::os_channel::<u32>().unwrap();
        let region = IpcSharedMemory::from_bytes(b"kept while the table was full");
        messages.send(Message::Carrying(answer.clone(), region.clone())).unwrap();
        messages.send(Message::Small(1000)).unwrap();
        assert_eq!(answers.recv().unwrap(), 7);
        assert_eq!(answers.recv().unwrap(), 8);
        messages.send(Message::Carrying(answer, region)).unwrap();
        assert_eq!(answers.recv().unwrap(), 9);
        let status = child.wait().unwrap();
        assert!(status.success(), "the child failed: {status}");
    });
}

/// Without a ring: the message is on the socket, peeked at, left there.
#[test]
fn a_message_at_the_limit_stays_receivable_on_the_socket() {
    a_message_at_the_limit_stays_receivable("socket");
}

/// With a ring: the message's marker keeps its place, and the small message behind it (in the
/// ring) waits.
#[test]
fn a_message_at_the_limit_stays_receivable_with_a_ring() {
    a_message_at_the_limit_stays_receivable("ring");
}

/// In the child: with `LEFT_FREE` descriptors free, a message with `MANY` cannot be taken in
/// and never could be unless the program freed more; it must not block the channel for good
/// (a hostile sender would wedge it with one message). It is refused, said so, and the message
/// behind it comes.
fn wedge_child(messages: crossproc::ipc::IpcReceiver<Message>) {
    assert!(matches!(messages.recv().unwrap(), Message::Small(0)));
    let mut held = Vec::new();
    fill_the_table(&mut held);
    held.truncate(held.len() - LEFT_FREE);
    let (answer, to_parent) = ipc::os_channel::<u32>().unwrap();
    let Message::Carrying(parent, _) = messages.recv().unwrap() else { panic!("not the parent's sender") };
    parent.send(1).unwrap();
    drop(to_parent);
    drop(answer);
    match messages.recv() {
        Err(IpcError::Io(error)) => {
            assert_eq!(error.kind(), std::io::ErrorKind::InvalidData, "{error}");
            assert!(error.to_string().contains("lost"), "{error}");
        }
        Err(other) => panic!("a message with more descriptors than are free: {other:?}"),
        Ok(_) => panic!("a message with more descriptors than {LEFT_FREE} fit in {LEFT_FREE}"),
    }
    assert!(matches!(messages.recv().unwrap(), Message::Small(2000)), "the message behind it");
    // Its descriptors were closed: the room is what it was.
    let free = descriptors::free_slots() - 1;
    assert!(free + 8 >= LEFT_FREE, "{free} free after the refusal, {LEFT_FREE} before");
    parent.send(2).unwrap();
}

/// A message that carries more descriptors than the receiver has free while it still has some
/// room is refused (lost, with an error that says so), not kept in front of every later one.
#[test]
fn a_message_larger_than_the_free_room_does_not_wedge_the_channel() {
    does_not_wedge("wedge", MANY);
}

/// The same for a message whose descriptors come on a side socket: what was taken in of them is
/// closed, and the message behind it comes.
#[test]
fn a_message_on_a_side_socket_larger_than_the_free_room_does_not_wedge_the_channel() {
    does_not_wedge("wedge-side", ON_A_SIDE_SOCKET);
}

fn does_not_wedge(role: &'static str, descriptors: usize) {
    if child_role().is_some() {
        return;
    }
    let _turn = in_flight_turn();
    with_watchdog(Duration::from_secs(60), move || {
        let (mut child, messages) = child_command(ENTRY, role).spawn_with_channel::<Message>().unwrap();
        messages.send(Message::Small(0)).unwrap();
        let (answer, answers) = ipc::os_channel::<u32>().unwrap();
        messages.send(Message::Carrying(answer, IpcSharedMemory::from_bytes(b"to answer on"))).unwrap();
        assert_eq!(answers.recv().unwrap(), 1, "the child filled its table");
        let region = IpcSharedMemory::from_bytes(b"many");
        messages.send(Message::Many(vec![region; descriptors])).unwrap();
        messages.send(Message::Small(2000)).unwrap();
        assert_eq!(answers.recv().unwrap(), 2);
        let status = child.wait().unwrap();
        assert!(status.success(), "the child failed: {status}");
    });
}

/// In the child: a message whose descriptors come on a side socket arrives while only
/// `FEW_FREE` descriptors are free. Its descriptors are taken in while its packet stays queued,
/// so the receive fails with the error that says this process is out of descriptors, again and
/// again, and once descriptors are free the message comes whole, then the one behind it.
fn side_socket_child(messages: crossproc::ipc::IpcReceiver<Message>) {
    assert!(matches!(messages.recv().unwrap(), Message::Small(0)));
    let Message::Carrying(parent, _) = messages.recv().unwrap() else { panic!("not the parent's sender") };
    let mut held = Vec::new();
    fill_the_table_under(&mut held, 1024);
    held.truncate(held.len() - FEW_FREE);
    parent.send(1).unwrap();
    let error = messages.recv().err().expect("a message with 300 descriptors received with 8 free");
    assert_out_of_descriptors(&error, "recv");
    match messages.try_recv() {
        Err(TryRecvError::IpcError(error)) => assert_out_of_descriptors(&error, "try_recv"),
        other => panic!("try_recv at the limit: {:?}", other.map(|_| ())),
    }
    drop(held);
    let Message::Many(regions) = messages.recv().unwrap() else { panic!("not the message with 300 descriptors") };
    assert_eq!(regions.len(), ON_A_SIDE_SOCKET);
    assert!(regions.iter().all(|region| &region[..] == b"on a side socket"));
    assert!(matches!(messages.recv().unwrap(), Message::Small(3000)), "the message behind it");
    // The same for one whose payload travels in a memfd beside the side socket.
    drop(regions);
    let mut held = Vec::new();
    fill_the_table_under(&mut held, 1024);
    held.truncate(held.len() - FEW_FREE);
    parent.send(2).unwrap();
    let error = messages.recv().err().expect("a large message with 300 descriptors received with 8 free");
    assert_out_of_descriptors(&error, "recv of the large one");
    drop(held);
    let Message::ManyAndLarge(regions, payload) = messages.recv().unwrap() else { panic!("not the large message") };
    assert_eq!(regions.len(), ON_A_SIDE_SOCKET);
    assert!(payload.len() == LARGE && payload.iter().all(|&byte| byte == 7), "the payload came whole");
    parent.send(3).unwrap();
}

/// The payload of the large message on a side socket: more than a packet carries.
const LARGE: usize = 300 << 10;

/// A message with more descriptors than one packet carries (they travel on a side socket) that
/// comes while the receiver is at its descriptor limit stays queued, and arrives whole once
/// descriptors are free. Before, its packet was read first and the side socket's descriptors
/// after: the message was lost.
#[test]
fn a_message_on_a_side_socket_at_the_limit_stays_receivable() {
    if child_role().is_some() {
        return;
    }
    let _turn = in_flight_turn();
    with_watchdog(Duration::from_secs(60), move || {
        let (mut child, messages) = child_command(ENTRY, "side").spawn_with_channel::<Message>().unwrap();
        messages.send(Message::Small(0)).unwrap();
        let (answer, answers) = ipc::os_channel::<u32>().unwrap();
        messages.send(Message::Carrying(answer, IpcSharedMemory::from_bytes(b"to answer on"))).unwrap();
        assert_eq!(answers.recv().unwrap(), 1, "the child filled its table");
        let region = IpcSharedMemory::from_bytes(b"on a side socket");
        messages.send(Message::Many(vec![region; ON_A_SIDE_SOCKET])).unwrap();
        messages.send(Message::Small(3000)).unwrap();
        assert_eq!(answers.recv().unwrap(), 2);
        let region = IpcSharedMemory::from_bytes(b"on a side socket");
        messages.send(Message::ManyAndLarge(vec![region; ON_A_SIDE_SOCKET], vec![7; LARGE])).unwrap();
        assert_eq!(answers.recv().unwrap(), 3);
        let status = child.wait().unwrap();
        assert!(status.success(), "the child failed: {status}");
    });
}

/// In the child: a sender that never sent (it knows of no ring) sends with no descriptor free,
/// then tells the parent, which sends on the same channel through its ring.
fn order_child(messages: crossproc::ipc::IpcReceiver<Message>) {
    let Message::Carrying(tell_parent, _) = messages.recv().unwrap() else { panic!("not the parent's sender") };
    let Message::Carrying(on_the_ring, _) = messages.recv().unwrap() else { panic!("not the ring's sender") };
    let mut held = Vec::new();
    fill_the_table(&mut held);
    // The slot the filling's template left too: not one descriptor is free.
    descriptors::take_the_rest(&mut held);
    // A plain packet, then the look for the ring, which finds it only in the reserve's room.
    on_the_ring.send(1).unwrap();
    tell_parent.send(0).unwrap();
    // Held until the parent read both, so that the look's room was this process's last.
    assert!(matches!(messages.recv().unwrap(), Message::Small(0)));
    drop(held);
}

/// A message sent at the descriptor limit by a sender that knew of no ring keeps its place:
/// one sent after it through the ring (by another process, told through another channel)
/// arrives after it. The look for the ring after the plain send found no room for the copy of
/// the ring's control memfd, so no marker kept the packet's place (issue 22, item 12): the
/// later message overtook it.
#[test]
fn a_send_at_the_limit_keeps_its_place_before_a_later_ring_message() {
    if child_role().is_some() {
        return;
    }
    with_watchdog(Duration::from_secs(60), move || {
        // The channel gets its ring here, and it is awake: `tx` sends into it.
        let (tx, rx) = util::os_channel_with_awake_ring(|n| n);
        let (mut child, messages) = child_command(ENTRY, "order").spawn_with_channel::<Message>().unwrap();
        let (told, tell) = ipc::os_channel::<u32>().unwrap();
        let region = IpcSharedMemory::from_bytes(b"unused");
        messages.send(Message::Carrying(told, region.clone())).unwrap();
        messages.send(Message::Carrying(tx.clone(), region)).unwrap();
        assert_eq!(tell.recv().unwrap(), 0, "the child sent its message");
        tx.send(2).unwrap();
        assert_eq!(rx.recv().unwrap(), 1, "the child's message first: it was sent before the parent's");
        assert_eq!(rx.recv().unwrap(), 2);
        messages.send(Message::Small(0)).unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "the child failed: {status}");
    });
}
