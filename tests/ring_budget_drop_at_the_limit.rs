//! A receiver dropped at the descriptor limit while a sender lives (review 3, finding F4 of
//! `src/sys/linux/inflight.rs`). Before, the drop asked the kernel for the sending socket
//! through a new netlink socket, which a process at its limit cannot open: the error was taken
//! for "cannot be watched", and the unit was forgotten, charged for the life of the process
//! although its queued copy goes when the senders do. Once the budget was gone that way, the
//! process never made a ring again. Now the sending socket is asked when the copy is queued.
//!
//! The child runs with `RLIMIT_NOFILE` 64 from the start (a budget of 8 units).

#![cfg(all(target_os = "linux", not(feature = "force-inprocess")))]

mod util;

use std::os::fd::OwnedFd;
use std::time::Duration;

use crossproc::ipc;
use util::{child_command, child_role, descriptors, with_watchdog};

const ENTRY: &str = "child_entry";

/// Ring control memfds this process holds (a receiver with a ring holds one).
fn rings_held() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.unwrap().path()).ok())
        .filter(|target| target.to_string_lossy().contains("crossproc-ring"))
        .count()
}

fn fill(held: &mut Vec<OwnedFd>) {
    descriptors::fill_leaving_one(held);
    descriptors::take_the_rest(held);
}

#[test]
fn child_entry() {
    let Some(role) = child_role() else { return };
    let at_the_limit = role == "at-limit";
    descriptors::lower_the_limit(64);
    // Eight channels take the eight units; each receiver is dropped while its sender lives.
    let mut senders = Vec::new();
    for round in 0..8 {
        let (tx, rx) = ipc::os_channel::<u32>().unwrap();
        for n in 0..20 {
            tx.send(n).unwrap();
            assert_eq!(rx.recv().unwrap(), n);
        }
        assert_eq!(rings_held(), 1, "round {round}: the channel got no ring");
        let mut held = Vec::new();
        if at_the_limit {
            fill(&mut held);
        }
        drop(rx);
        drop(held);
        senders.push(tx);
    }
    // Every sender goes: every queued copy is freed, and every unit could come back.
    drop(senders);
    // A new channel with traffic gets a ring once a look took the units back (one look every
    // as many refused tries as units are watched: 8 tries of 16 messages).
    let (tx, rx) = ipc::os_channel::<u32>().unwrap();
    for n in 0..400 {
        tx.send(n).unwrap();
        assert_eq!(rx.recv().unwrap(), n);
    }
    assert_eq!(rings_held(), 1, "no ring after every sender was gone: the units were lost for good");
}

fn run(role: &'static str) {
    if child_role().is_some() {
        return;
    }
    with_watchdog(Duration::from_secs(60), move || {
        let status = child_command(ENTRY, role).status().unwrap();
        assert!(status.success(), "the {role} child failed: {status}");
    });
}

/// Receivers dropped at the descriptor limit while their senders live.
#[test]
fn units_of_receivers_dropped_at_the_limit_come_back_once_the_senders_are_gone() {
    run("at-limit");
}

/// Control: the same drops with room, and the units come back.
#[test]
fn control_units_of_receivers_dropped_with_room_come_back() {
    run("with-room");
}
