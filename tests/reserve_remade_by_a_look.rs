//! The reserve descriptor (`src/sys/linux/reserve.rs`) is remade by a look for a ring with
//! room, too (review 4 of 8f850f6). Before, it was remade only when a sender was made or by a
//! look that found no room (where the re-open failed as well): a process whose senders all
//! arrived at the limit, that then had room (and sent, looking, in it), and is back at its
//! limit, still had no reserve, and its plain send was overtaken by a later ring message.

#![cfg(all(target_os = "linux", not(feature = "force-inprocess")))]

mod util;

use std::os::fd::OwnedFd;
use std::time::Duration;

use crossproc::ipc::{self, inherited_receiver, IpcCommandExt, IpcSender};
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use serde::{Deserialize, Serialize};
use util::{child_command, child_role, with_watchdog};

const ENTRY: &str = "child_entry";

#[derive(Serialize, Deserialize)]
enum Message {
    Sender(IpcSender<u32>),
    Done,
}

fn fill(held: &mut Vec<OwnedFd>) {
    let current = getrlimit(Resource::Nofile);
    setrlimit(Resource::Nofile, Rlimit { current: Some(256), maximum: current.maximum }).unwrap();
    let template = std::fs::File::open("/proc/self/stat").unwrap();
    while let Ok(fd) = rustix::io::fcntl_dupfd_cloexec(&template, 0) {
        held.push(fd);
    }
    drop(template);
    refill(held);
}

fn refill(held: &mut Vec<OwnedFd>) {
    while let Ok(fd) = rustix::io::fcntl_dupfd_cloexec(&held[0], 0) {
        held.push(fd);
    }
}

#[test]
fn child_entry() {
    let Some(role) = child_role() else { return };
    assert_eq!(role, "reserve");
    let messages = inherited_receiver::<Message>().unwrap();
    let mut held = Vec::new();
    fill(&mut held);
    // Both senders arrive with exactly one descriptor free: no reserve either time.
    held.pop();
    let Ok(Message::Sender(tell_parent)) = messages.recv() else { panic!("not the parent's sender") };
    refill(&mut held);
    held.pop();
    let Ok(Message::Sender(on_the_ring)) = messages.recv() else { panic!("not the ring's sender") };
    // Room for a while: a plain send and its look (on the telling channel, which has no ring).
    held.truncate(held.len() - 8);
    tell_parent.send(100).unwrap();
    // Back at the limit.
    refill(&mut held);
    on_the_ring.send(1).unwrap();
    tell_parent.send(0).unwrap();
    assert!(matches!(messages.recv(), Ok(Message::Done)));
    drop(held);
}

#[test]
fn review4_reserve_not_remade_by_a_look_with_room() {
    if child_role().is_some() {
        return;
    }
    with_watchdog(Duration::from_secs(60), move || {
        let (tx, rx) = ipc::os_channel::<u32>().unwrap();
        for n in 0..40 {
            tx.send(n).unwrap();
            assert_eq!(rx.recv().unwrap(), n);
        }
        let (mut child, messages) = child_command(ENTRY, "reserve").spawn_with_channel::<Message>().unwrap();
        let (told, tell) = ipc::os_channel::<u32>().unwrap();
        messages.send(Message::Sender(told)).unwrap();
        messages.send(Message::Sender(tx.clone())).unwrap();
        assert_eq!(tell.recv().unwrap(), 100);
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
