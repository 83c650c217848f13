//! Spawning a child with a connected channel through an inherited descriptor.

#![cfg(all(any(target_os = "linux", windows), not(feature = "force-inprocess")))]

mod util;

use std::time::Duration;

use crossproc::ipc::{self, inherited_receiver, inherited_sender, IpcCommandExt, IpcReceiver, IpcSender};
use util::{child_command, child_role, with_watchdog};

const ENTRY: &str = "child_entry";

/// The descriptors open in this process, by number.
fn open_fd_numbers() -> Vec<i32> {
    let mut fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_str().unwrap().parse().unwrap())
        .collect();
    fds.sort();
    fds
}

/// The child side of every test in this file; does nothing unless started as a child.
#[test]
fn child_entry() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        "receive" => {
            // Before anything else opens a descriptor: stdin/out/err, the channel, and the
            // directory handle `read_dir` itself holds, nothing more.
            let fds = open_fd_numbers();
            let from_parent = inherited_receiver::<(IpcSender<Vec<i32>>, u32)>().unwrap();
            assert!(inherited_receiver::<u8>().is_err(), "the channel can be taken once");
            let (reply, value) = from_parent.recv().unwrap();
            let mut report = fds;
            report.push(value as i32);
            reply.send(report).unwrap();
        }
        "receive_moved" => {
            // A receiver whose messages were queued before it moved here, one carrying a sender.
            let moved = inherited_receiver::<IpcReceiver<(u32, Option<IpcSender<u32>>)>>().unwrap().recv().unwrap();
            let mut sum = 0;
            loop {
                let (value, reply) = moved.recv().unwrap();
                sum += value;
                if let Some(reply) = reply {
                    reply.send(sum).unwrap();
                    break;
                }
            }
        }
        "send" => {
            let to_parent = inherited_sender::<String>().unwrap();
            to_parent.send(format!("hello from {}", std::process::id())).unwrap();
        }
        other => panic!("unknown child role {other}"),
    }
}

#[test]
#[cfg(target_os = "linux")] // counts /proc/self/fd
fn a_child_receives_on_an_inherited_channel_and_inherits_nothing_else() {
    with_watchdog(Duration::from_secs(60), || {
        // Descriptors this test process holds must not reach the child.
        let (_a, _b) = ipc::channel::<u8>().unwrap();
        let (mut child, to_child) = child_command(ENTRY, "receive").spawn_with_channel().unwrap();
        let (reply_tx, reply_rx) = ipc::channel::<Vec<i32>>().unwrap();
        to_child.send((reply_tx, 41u32)).unwrap();
        let mut report = reply_rx.recv().unwrap();
        assert_eq!(report.pop(), Some(41));
        // Descriptors this process itself inherited without close-on-exec (from whoever started
        // the tests) legitimately reach the child too; crossproc's own never do.
        let inheritable: Vec<i32> = open_fd_numbers()
            .into_iter()
            .filter(|&fd| {
                // SAFETY: the number was just listed as open; we only read its flags.
                let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                rustix::io::fcntl_getfd(fd).is_ok_and(|flags| !flags.contains(rustix::io::FdFlags::CLOEXEC))
            })
            .collect();
        let extra: Vec<i32> = report.iter().copied().filter(|fd| !inheritable.contains(fd)).collect();
        // The child's receiving end is its socket alone: a channel gets its ring (a second
        // descriptor) only once it has carried traffic (see `ring/mod.rs`).
        assert_eq!(extra.len(), 2, "child had {report:?}; beyond {inheritable:?} only the channel and read_dir's own");
        assert!(report.starts_with(&[0, 1, 2]));
        assert!(child.wait().unwrap().success());
    });
}

#[test]
fn a_receiver_moves_to_a_child_with_its_queued_messages() {
    with_watchdog(Duration::from_secs(60), || {
        let (tx, rx) = ipc::channel::<(u32, Option<IpcSender<u32>>)>().unwrap();
        let (reply_tx, reply_rx) = ipc::channel::<u32>().unwrap();
        for value in 1..=10 {
            tx.send((value, None)).unwrap();
        }
        tx.send((100, Some(reply_tx))).unwrap();
        let (mut child, to_child) = child_command(ENTRY, "receive_moved").spawn_with_channel().unwrap();
        to_child.send(rx).unwrap();
        assert_eq!(reply_rx.recv().unwrap(), 155);
        assert!(child.wait().unwrap().success());
    });
}

#[test]
fn a_child_sends_on_an_inherited_channel() {
    with_watchdog(Duration::from_secs(60), || {
        let (mut child, from_child) = child_command(ENTRY, "send").spawn_with_receiver::<String>().unwrap();
        assert_eq!(from_child.recv().unwrap(), format!("hello from {}", child.id()));
        assert!(child.wait().unwrap().success());
        assert!(matches!(from_child.recv(), Err(crossproc::IpcError::Disconnected)));
    });
}

#[test]
fn a_process_without_a_channel_gets_not_found() {
    assert_eq!(inherited_sender::<u8>().unwrap_err().kind(), std::io::ErrorKind::NotFound);
}
