//! The ring budget's watch list (`src/sys/linux/inflight.rs`), in children with a budget of 8.
//!
//! The budget of queued control memfds (`src/sys/linux/inflight.rs`) must never be exceeded
//! while the copies it counts are still queued: here, channels whose receivers were dropped
//! while their senders live (so their copies stay queued on the sending sockets) keep their
//! units charged, and no further channel may get a ring until a sender goes.

#![cfg(all(target_os = "linux", not(feature = "force-inprocess")))]

mod util;

use crossproc::ipc::{self, IpcReceiver, IpcSender};
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use util::{child_role, open_fds};

const ENTRY: &str = "child_entry";

/// Soft limit in the child: its budget of queued control memfds is an eighth, 8.
const LIMIT: u64 = 64;
const BUDGET: usize = (LIMIT / 8) as usize;

#[test]
fn child_entry() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        "netns" => budget_in_another_network_namespace_child(),
        "contention" => budget_under_contention_child(),
        other => panic!("unknown role {other}"),
    }
}

/// Carries traffic on a fresh channel until it has a ring (`true`), or for `messages` without
/// one (`false`). A ring shows as more descriptors than the socket pair: its control memfd (and,
/// with the process's first ring, the pidfd a ring's owner keeps), as tests/ring.rs counts it.
fn gets_a_ring(tx: &IpcSender<u32>, rx: &IpcReceiver<u32>, socket_pair: usize, messages: u32) -> bool {
    for sent in 0..messages {
        tx.send(sent).unwrap();
        assert_eq!(rx.recv().unwrap(), sent);
        if sent >= 20 && open_fds() > socket_pair {
            return true;
        }
    }
    false
}

/// Spends the budget on channels whose receivers are dropped while their senders live (kept in
/// the returned vector): every unit is on the watch list, and every copy still queued.
fn spend_the_budget_on_live_senders() -> Vec<IpcSender<u32>> {
    let mut live = Vec::new();
    for channel in 0..BUDGET {
        let (tx, rx) = ipc::os_channel::<u32>().unwrap();
        let socket_pair = open_fds();
        assert!(gets_a_ring(&tx, &rx, socket_pair, 20_000), "channel {channel} of the budget got no ring");
        drop(rx);
        live.push(tx);
    }
    live
}

/// Whether a new channel gets a ring within 1,000 socket messages (more than enough for the
/// refused takes that make the budget look at its watch list: one look per 8 refused takes,
/// one refused take per 16 messages).
fn a_new_channel_gets_a_ring() -> bool {
    let (tx, rx) = ipc::os_channel::<u32>().unwrap();
    let socket_pair = open_fds();
    gets_a_ring(&tx, &rx, socket_pair, 1_000)
}

fn budget_in_another_network_namespace_child() {
    let original = getrlimit(Resource::Nofile);
    setrlimit(Resource::Nofile, Rlimit { current: Some(LIMIT), maximum: original.maximum }).unwrap();
    let live = spend_the_budget_on_live_senders();
    // In the network namespace the sockets were made in, the budget holds.
    assert!(!a_new_channel_gets_a_ring(), "a ring past the budget while every sender lives (same namespace)");
    // This thread moves to another network namespace (a sandbox that drops network access
    // after start-up does this; root or a user namespace may). The copies stay queued, the
    // senders live.
    // SAFETY: unshare(2) with CLONE_NEWNET affects this thread's namespaces only.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        eprintln!("skipped: unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
        return;
    }
    // The watch list's look now asks a netlink socket made in the new namespace, where the
    // kernel knows none of the watched sockets: every unit is given back while its copy is
    // still queued, and the channel gets a ring the budget has no room for.
    let past_budget = a_new_channel_gets_a_ring();
    drop(live);
    assert!(!past_budget, "a ring past the budget of {BUDGET} while all {BUDGET} queued copies are still queued");
}

/// A look at the watch list asks the kernel (`NETLINK_SOCK_DIAG`) in the network namespace of
/// the thread that looks, where "no such socket" is also the answer for a socket of another
/// namespace: a thread moved to another namespace must not give back units whose copies are
/// still queued (it did, found in review; skipped where `unshare(CLONE_NEWNET)` is refused).
#[test]
fn the_budget_holds_when_the_looking_thread_is_in_another_network_namespace() {
    if child_role().is_some() {
        return;
    }
    util::child_in_role_succeeds(ENTRY, "netns");
}

/// Ring control memfds open in this process (one per receiver with a ring).
fn rings_open() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().contains("crossproc-ring"))
        .count()
}

/// Channels whose receivers are dropped while the other thread looks at the watch list.
const DROPPED_DURING_LOOKS: usize = 3_000;

fn budget_under_contention_child() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let original = getrlimit(Resource::Nofile);
    setrlimit(Resource::Nofile, Rlimit { current: Some(LIMIT * 4), maximum: original.maximum }).unwrap();
    // The budget was read once, at the first ring: 8 under a soft limit of 64.
    setrlimit(Resource::Nofile, Rlimit { current: Some(LIMIT), maximum: original.maximum }).unwrap();
    let mut pinned = spend_the_budget_on_live_senders();
    // One unit free, seven watched with live senders: every look at the watch list makes seven
    // netlink queries.
    drop(pinned.pop());
    setrlimit(Resource::Nofile, Rlimit { current: Some(LIMIT * 4), maximum: original.maximum }).unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        // Channels that never get a ring (the budget is spent): each refused take, every 16
        // messages, counts toward a look at the watch list.
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let (tx, rx) = ipc::os_channel::<u32>().unwrap();
                for n in 0..200 {
                    tx.send(n).unwrap();
                    rx.recv().unwrap();
                }
                drop(tx);
                drop(rx);
            }
        });
        // Channels that take the free unit and drop their receiver while the sender lives:
        // the unit goes on the watch list, also while a look is under way.
        scope.spawn(|| {
            for _ in 0..DROPPED_DURING_LOOKS {
                let (tx, rx) = ipc::os_channel::<u32>().unwrap();
                for n in 0..40 {
                    tx.send(n).unwrap();
                    rx.recv().unwrap();
                }
                drop(rx);
                drop(tx);
            }
            stop.store(true, Ordering::Relaxed);
        });
    });
    drop(pinned);
    // Every sender is gone: the whole budget must come back. Keep channels alive, each with
    // traffic enough for its refused takes to look at the watch list.
    let baseline = rings_open();
    let mut alive = Vec::new();
    for _ in 0..BUDGET {
        let (tx, rx) = ipc::os_channel::<u32>().unwrap();
        for n in 0..2_000 {
            tx.send(n).unwrap();
            rx.recv().unwrap();
        }
        alive.push((tx, rx));
    }
    let rings = rings_open() - baseline;
    assert_eq!(
        rings, BUDGET,
        "only {rings} of {BUDGET} channels got a ring with every sender gone: units lost for good"
    );
}

/// Receivers dropped on one thread while another looks at the watch list keep their units
/// watched: the list is not held across a look's queries (it was, found in review, and such a
/// unit was charged for the life of the process: the budget ran down again).
#[test]
fn the_budget_does_not_run_down_when_receivers_are_dropped_during_a_look() {
    if child_role().is_some() {
        return;
    }
    util::child_in_role_succeeds(ENTRY, "contention");
}
