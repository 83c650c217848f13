//! Review of 7fd193e: the at-the-limit rule (docs/behaviour.md: a message is kept only while
//! fewer than 16 descriptors are free; with 16 or more free, one that does not fit is refused as
//! lost) is not the same for a message whose descriptors come on a side socket. Its packet's
//! own descriptors (the side socket, a pooled payload's memfd), installed by the peek while the
//! side packets are peeked at, are not counted towards the room found (`held + fds.len()`), so
//! with exactly 16 free the side-socket message is kept (out-of-descriptors error) where a
//! one-packet message is refused.

#![cfg(all(target_os = "linux", not(feature = "force-inprocess")))]

mod util;

use std::os::fd::OwnedFd;
use std::time::Duration;

use crossproc::ipc::{inherited_receiver, IpcCommandExt, IpcError, IpcSharedMemory};
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use serde::{Deserialize, Serialize};
use util::{child_command, child_role, with_watchdog};

const ENTRY: &str = "child_entry";
/// Free descriptors when each large message comes: the rule's threshold itself.
const FREE: usize = 16;

#[derive(Serialize, Deserialize)]
enum Message {
    Small(u32),
    Many(Vec<IpcSharedMemory>),
}

/// Descriptors this process can still open.
fn free_descriptors() -> usize {
    let template = std::fs::File::open("/proc/self/stat").unwrap();
    let mut probe = Vec::new();
    while let Ok(fd) = rustix::io::fcntl_dupfd_cloexec(&template, 0) {
        probe.push(fd);
    }
    probe.len() + 1
}

/// Leaves exactly `FREE` descriptors free (the rest held in `held`).
fn leave_free(held: &mut Vec<OwnedFd>) {
    let template = std::fs::File::open("/proc/self/stat").unwrap();
    while let Ok(fd) = rustix::io::fcntl_dupfd_cloexec(&template, 0) {
        held.push(fd);
    }
    drop(template);
    held.truncate(held.len() + 1 - FREE);
    assert_eq!(free_descriptors(), FREE);
}

fn outcome(received: Result<Message, IpcError>) -> String {
    match received {
        Ok(Message::Many(regions)) => format!("delivered ({} regions)", regions.len()),
        Ok(Message::Small(n)) => format!("Small({n})"),
        Err(IpcError::Io(error)) if error.to_string().contains("lost") => "refused as lost".to_owned(),
        Err(IpcError::Io(error)) if error.to_string().contains("out of descriptors") => "kept".to_owned(),
        Err(other) => format!("{other:?}"),
    }
}

#[test]
fn child_entry() {
    let Some(_role) = child_role() else { return };
    let messages = inherited_receiver::<Message>().unwrap();
    assert!(matches!(messages.recv().unwrap(), Message::Small(0)));
    // The parent sent the rest right behind Small(0).
    std::thread::sleep(Duration::from_millis(500));
    let current = getrlimit(Resource::Nofile);
    setrlimit(Resource::Nofile, Rlimit { current: Some(1024), maximum: current.maximum }).unwrap();
    let mut held = Vec::new();
    leave_free(&mut held);
    let one_packet = outcome(messages.recv());
    assert!(matches!(messages.recv().unwrap(), Message::Small(1)));
    assert_eq!(free_descriptors(), FREE);
    let side = outcome(messages.recv());
    assert_eq!(
        one_packet, side,
        "with {FREE} free: a 200-descriptor message (one packet) and a 300-descriptor one (side socket)"
    );
}

#[test]
fn a_side_socket_message_meets_the_same_limit_rule_as_a_one_packet_message() {
    if child_role().is_some() {
        return;
    }
    with_watchdog(Duration::from_secs(60), || {
        let (mut child, messages) = child_command(ENTRY, "threshold").spawn_with_channel::<Message>().unwrap();
        messages.send(Message::Small(0)).unwrap();
        let region = IpcSharedMemory::from_bytes(b"many");
        messages.send(Message::Many(vec![region.clone(); 200])).unwrap();
        messages.send(Message::Small(1)).unwrap();
        messages.send(Message::Many(vec![region; 300])).unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "the child failed: {status}");
    });
}
