//! `IpcReceiverSet` with local members (issue 24; docs/local.md, "Waiting"): a local channel's
//! receiver that joins a set stays local, holds no descriptor, and is served in the same
//! `select` as the OS members, woken by its senders; when a sender leaves for another process,
//! the member goes on in the set.

// In-process mode has no other process for an end to leave to, and descriptor counts are Linux's.
#![cfg_attr(any(feature = "force-inprocess", not(target_os = "linux")), allow(unused_imports, dead_code))]

mod util;

use std::time::Duration;

use crossproc::ipc::{self, inherited_receiver, IpcCommandExt, IpcReceiverSet, IpcSelectionResult, IpcSender};
use util::{assert_child_succeeds, child_command, child_role, with_watchdog};

const ENTRY: &str = "child_entry";

#[test]
fn child_entry() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        // Sends 3 and 4 through the sender it is given.
        "send_three_and_four" => {
            let from_parent = inherited_receiver::<IpcSender<u32>>().unwrap();
            let sender = from_parent.recv().unwrap();
            sender.send(3).unwrap();
            sender.send(4).unwrap();
        }
        #[cfg(all(target_os = "linux", not(feature = "force-inprocess")))]
        "count_descriptors" => count_descriptors(),
        #[cfg(all(target_os = "linux", not(feature = "force-inprocess")))]
        "add_at_the_limit" => add_at_the_limit(),
        #[cfg(all(target_os = "linux", not(feature = "force-inprocess")))]
        "platform_set" => platform_set(),
        other => panic!("unknown role {other}"),
    }
}

/// The events `set` reports until `count` have come.
fn collect(set: &mut IpcReceiverSet, count: usize) -> Vec<IpcSelectionResult> {
    let mut results = Vec::new();
    while results.len() < count {
        results.extend(set.select().unwrap());
    }
    results
}

/// 200 local members cost the set no descriptor (its doorbell's two are made with it), and
/// one `select` reports them beside an OS member.
/// (In a child of its own: the other tests of this file open descriptors meanwhile.)
#[cfg(all(target_os = "linux", not(feature = "force-inprocess")))]
#[test]
fn local_members_hold_no_descriptor_and_are_served_beside_os_members() {
    util::child_in_role_succeeds(ENTRY, "count_descriptors");
}

#[cfg(all(target_os = "linux", not(feature = "force-inprocess")))]
fn count_descriptors() {
    // (The channel first: the process's first sender opens the reserve, docs/ring.md.)
    let (os_tx, os_rx) = ipc::os_channel::<u32>().unwrap();
    let before_the_set = util::open_fds();
    let mut set = IpcReceiverSet::new().unwrap();
    assert_eq!(util::open_fds(), before_the_set + 3, "a set is its epoll and its doorbell's socket pair");
    let os_id = set.add(os_rx).unwrap();
    let before = util::open_fds();
    let mut senders = Vec::new();
    for _ in 0..200 {
        let (tx, rx) = ipc::channel::<u32>().unwrap();
        senders.push((set.add(rx).unwrap(), tx));
    }
    assert_eq!(util::open_fds(), before, "200 local members hold descriptors");
    for (id, tx) in senders.iter().step_by(10) {
        tx.send(*id as u32).unwrap();
    }
    os_tx.send(u32::MAX).unwrap();
    let mut seen: Vec<(u64, u32)> =
        collect(&mut set, 21).into_iter().map(|event| event.unwrap()).map(|(id, m)| (id, m.to().unwrap())).collect();
    seen.sort();
    let mut expected: Vec<(u64, u32)> = senders.iter().step_by(10).map(|(id, _)| (*id, *id as u32)).collect();
    expected.push((os_id, u32::MAX));
    expected.sort();
    assert_eq!(seen, expected);
    assert!(matches!(set.try_select(), Err(crossproc::TrySelectError::Empty)));
    assert_eq!(util::open_fds(), before);
}

/// A local member added with the descriptor table full joins and is served (review 6, R6-4:
/// the set made its doorbell when the first local member came, and at the limit that add
/// failed and dropped the receiver, whose senders were then told it was gone).
#[cfg(all(target_os = "linux", not(feature = "force-inprocess")))]
#[test]
fn a_local_member_added_with_the_descriptor_table_full_is_served() {
    util::child_in_role_succeeds(ENTRY, "add_at_the_limit");
}

#[cfg(all(target_os = "linux", not(feature = "force-inprocess")))]
fn add_at_the_limit() {
    let mut set = IpcReceiverSet::new().unwrap();
    let (tx, rx) = ipc::channel::<u32>().unwrap();
    let mut held = Vec::new();
    util::descriptors::lower_the_limit(256);
    util::descriptors::fill_leaving_one(&mut held);
    util::descriptors::take_the_rest(&mut held);
    let id = set.add(rx).expect("a local member added at the limit");
    tx.send(7).unwrap();
    let (got, message) = set.select().unwrap().remove(0).unwrap();
    assert_eq!((got, message.to::<u32>().unwrap()), (id, 7));
    drop(tx);
    assert!(matches!(set.select().unwrap()[..], [IpcSelectionResult::ChannelClosed(closed)] if closed == id));
}

/// `platform::OsIpcReceiverSet` holds OS receivers alone (`platform::channel` makes OS
/// channels), so it makes no doorbell: one descriptor, its epoll, as ipc-channel's, and it can
/// be made with one slot free (review 7, R7-2).
#[cfg(all(target_os = "linux", not(feature = "force-inprocess")))]
#[test]
fn a_platform_set_holds_one_descriptor() {
    util::child_in_role_succeeds(ENTRY, "platform_set");
}

#[cfg(all(target_os = "linux", not(feature = "force-inprocess")))]
fn platform_set() {
    // (A sender first: the process's first sender opens the reserve, docs/ring.md.)
    let (tx, rx) = crossproc::platform::channel().unwrap();
    let before = util::open_fds();
    let mut set = crossproc::platform::OsIpcReceiverSet::new().unwrap();
    assert_eq!(util::open_fds(), before + 1, "a platform set is its epoll alone");
    set.add(rx).unwrap();
    tx.send(b"one", Vec::new(), Vec::new()).unwrap();
    assert_eq!(set.select().unwrap().len(), 1);
    drop(set);
    let mut held = Vec::new();
    util::descriptors::lower_the_limit(256);
    util::descriptors::fill_leaving_one(&mut held);
    crossproc::platform::OsIpcReceiverSet::new().expect("a platform set made with one slot free");
}

/// A child made by `fork` that selects on its copy of a set holding local members of its
/// parent is told `Unsupported`, as their receives are: its copies of their queues hear no
/// sender of the parent (review 6, R6-5: it reported them closed, as if every sender had gone).
#[cfg(all(target_os = "linux", not(feature = "force-inprocess")))]
#[test]
fn a_forked_copy_of_a_set_with_local_members_says_it_cannot_serve_them() {
    let mut set = IpcReceiverSet::new().unwrap();
    let (tx, rx) = ipc::channel::<u32>().unwrap();
    let id = set.add(rx).unwrap();
    // The child runs only the code below and leaves with `_exit`.
    // SAFETY: fork has no preconditions; the child keeps to this thread's code.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = match set.try_select() {
            Err(crossproc::TrySelectError::IoError(error)) if error.kind() == std::io::ErrorKind::Unsupported => 0,
            Err(crossproc::TrySelectError::IoError(_)) => 1,
            Err(crossproc::TrySelectError::Empty) => 2,
            Ok(_) => 3,
        };
        // SAFETY: ends the forked child at once.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "child status {status}");
    assert_eq!(libc::WEXITSTATUS(status), 0, "1: another error, 2: Empty, 3: events (the local member closed)");
    // The parent's set is untouched.
    tx.send(5).unwrap();
    let (got, message) = set.select().unwrap().remove(0).unwrap();
    assert_eq!((got, message.to::<u32>().unwrap()), (id, 5));
}

/// A select asleep in the kernel is woken by a send on a local member, and by the last
/// sender's drop.
#[cfg(target_os = "linux")]
#[test]
fn a_sleeping_select_is_woken_by_a_local_send_and_a_hang_up() {
    with_watchdog(Duration::from_secs(60), || {
        let (tx, rx) = ipc::channel::<u32>().unwrap();
        let (_quiet_tx, quiet_rx) = ipc::os_channel::<u32>().unwrap();
        let mut set = IpcReceiverSet::new().unwrap();
        let id = set.add(rx).unwrap();
        set.add(quiet_rx).unwrap();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let selecting = std::thread::spawn(move || {
            tid_tx.send(util::thread_id()).unwrap();
            first_tx.send(collect(&mut set, 1)).unwrap();
            collect(&mut set, 1)
        });
        let tid = tid_rx.recv().unwrap();
        util::wait_until_asleep(tid, "the select");
        tx.send(7).unwrap();
        let first = first_rx.recv().unwrap();
        util::wait_until_asleep(tid, "the select, after the message");
        drop(tx);
        let second = selecting.join().unwrap();
        let (got, message) = first.into_iter().next().unwrap().unwrap();
        assert_eq!((got, message.to::<u32>().unwrap()), (id, 7));
        assert!(matches!(second[..], [IpcSelectionResult::ChannelClosed(closed)] if closed == id));
    });
}

/// A local member whose sender leaves for a child process: what was queued comes first, then
/// what the child sends (the member has moved into the set's OS part), then the hang-up.
#[cfg(all(any(target_os = "linux", windows), not(feature = "force-inprocess")))]
#[test]
fn a_local_member_goes_on_in_the_set_when_its_sender_leaves() {
    with_watchdog(Duration::from_secs(60), || {
        let (tx, rx) = ipc::channel::<u32>().unwrap();
        let mut set = IpcReceiverSet::new().unwrap();
        let id = set.add(rx).unwrap();
        tx.send(1).unwrap();
        let (child, to_child) =
            child_command(ENTRY, "send_three_and_four").spawn_with_channel::<IpcSender<u32>>().unwrap();
        to_child.send(tx).unwrap();
        let mut got = Vec::new();
        let mut closed = false;
        while !closed {
            for event in set.select().unwrap() {
                match event {
                    IpcSelectionResult::MessageReceived(member, message) => {
                        assert_eq!(member, id);
                        got.push(message.to::<u32>().unwrap());
                    }
                    IpcSelectionResult::ChannelClosed(member) => {
                        assert_eq!(member, id);
                        closed = true;
                    }
                }
            }
        }
        assert_eq!(got, [1, 3, 4]);
        assert_child_succeeds(child);
    });
}
