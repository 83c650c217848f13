//! The same channel end or region received again (Linux): a process that already holds the
//! kernel object shares its descriptor, instead of keeping one per copy (ipc-channel#240). A
//! child under a descriptor limit of 1,024 keeps 10,000 copies of one sender, and of one region;
//! every copy works, and the last one dropped still hangs the channel up.

#![cfg(all(target_os = "linux", not(feature = "force-inprocess")))]

mod util;

use std::time::Duration;

use crossproc::ipc::{self, IpcOneShotServer, IpcReceiver, IpcSender, IpcSharedMemory};
use crossproc::IpcError;
use serde::{Deserialize, Serialize};
use util::{assert_child_succeeds, child_role, open_fds, server_name, spawn_child, with_watchdog};

const ENTRY: &str = "child_entry";
/// How many times the same end arrives.
const COPIES: u32 = 10_000;
/// The child's descriptor limit: the default soft limit of most systems, which 10,000
/// descriptors of one sender overran at the 1,017th.
const LIMIT: u64 = 1024;
/// What keeping every copy may add to the child's descriptors: the first copy, and the ring of
/// the channel they arrive on (its control memfd).
const GROWTH: usize = 4;

/// The tests here count the descriptors of this process: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a parent sends a child to start it.
#[derive(Serialize, Deserialize)]
enum Setup {
    /// Receive `COPIES` senders, keep them all, report the descriptors before and after, then
    /// send on each its index.
    Senders(IpcReceiver<IpcSender<u32>>, IpcSender<Counts>),
    /// Receive `COPIES` regions, keep them all, check each, report the descriptors and memfd
    /// mappings before and after.
    Regions(IpcReceiver<IpcSharedMemory>, IpcSender<Counts>),
    /// Receive `n` senders, send each back on the second channel.
    Echo(IpcReceiver<IpcSender<u32>>, u32, IpcSender<IpcSender<u32>>),
    /// Receive `n` senders, send 7 on the last, drop them all, and say so.
    DropAll(IpcReceiver<IpcSender<u32>>, u32, IpcSender<()>),
}

/// Descriptors and memfd mappings of the child, before and after it received every copy.
#[derive(Serialize, Deserialize, Debug)]
struct Counts {
    fds: (usize, usize),
    mappings: (usize, usize),
}

/// How many memfd mappings this process has.
fn memfd_mappings() -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    maps.lines().filter(|line| line.contains("/memfd:")).count()
}

/// Lowers this process's soft descriptor limit to [`LIMIT`] (allowed without privileges).
fn lower_descriptor_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_none_or(|current| current > LIMIT) {
        setrlimit(Resource::Nofile, Rlimit { current: Some(LIMIT), maximum: limit.maximum }).unwrap();
    }
}

#[test]
fn child_entry() {
    let Some(role) = child_role() else { return };
    assert_eq!(role, "worker");
    lower_descriptor_limit();
    let (tx, rx) = ipc::os_channel::<Setup>().unwrap();
    IpcSender::<IpcSender<Setup>>::connect(server_name()).unwrap().send(tx).unwrap();
    let counts = |fds_before, mappings_before| Counts {
        fds: (fds_before, open_fds()),
        mappings: (mappings_before, memfd_mappings()),
    };
    match rx.recv().unwrap() {
        Setup::Senders(copies, report) => {
            let (fds, mappings) = (open_fds(), memfd_mappings());
            let kept: Vec<IpcSender<u32>> = (0..COPIES).map(|_| copies.recv().unwrap()).collect();
            report.send(counts(fds, mappings)).unwrap();
            for (index, copy) in kept.iter().enumerate() {
                copy.send(index as u32).unwrap();
            }
        }
        Setup::Regions(copies, report) => {
            let (fds, mappings) = (open_fds(), memfd_mappings());
            let kept: Vec<IpcSharedMemory> = (0..COPIES).map(|_| copies.recv().unwrap()).collect();
            let counted = counts(fds, mappings);
            assert!(kept.iter().all(|region| region[..] == region_bytes()[..]), "a copy holds other bytes");
            report.send(counted).unwrap();
        }
        Setup::Echo(copies, n, back) => {
            for _ in 0..n {
                back.send(copies.recv().unwrap()).unwrap();
            }
        }
        Setup::DropAll(copies, n, dropped) => {
            let kept: Vec<IpcSender<u32>> = (0..n).map(|_| copies.recv().unwrap()).collect();
            kept.last().unwrap().send(7).unwrap();
            drop(kept);
            dropped.send(()).unwrap();
        }
    }
    // Until the parent is done (it drops the setup sender).
    assert!(matches!(rx.recv(), Err(IpcError::Disconnected)));
}

/// The bytes of the region the parent sends.
fn region_bytes() -> Vec<u8> {
    (0..10_000u32).map(|at| (at % 251) as u8).collect()
}

/// Starts a worker child (under the lowered limit) and returns it with the sender of its setup.
fn worker() -> (std::process::Child, IpcSender<Setup>) {
    let (server, name) = IpcOneShotServer::<IpcSender<Setup>>::new().unwrap();
    let child = spawn_child(ENTRY, "worker", &name);
    let (_, setup) = server.accept().unwrap();
    (child, setup)
}

/// The child keeps 10,000 copies of one sender: its descriptors grow by at most
/// [`GROWTH`], every copy sends (each its index, received here in order), and none is lost.
/// Each copy used to be a descriptor (the 1,017th receive failed with "descriptors truncated")
/// and to claim a slot of the channel's ring of its own.
#[test]
fn a_sender_received_10_000_times_is_one_descriptor() {
    let _serial = serial();
    with_watchdog(Duration::from_secs(120), || {
        let (child, setup) = worker();
        let (copies_tx, copies_rx) = ipc::os_channel().unwrap();
        let (report_tx, report_rx) = ipc::os_channel().unwrap();
        setup.send(Setup::Senders(copies_rx, report_tx)).unwrap();
        let (tx, rx) = ipc::os_channel::<u32>().unwrap();
        for _ in 0..COPIES {
            copies_tx.send(tx.clone()).unwrap();
        }
        let counts: Counts = report_rx.recv().unwrap();
        assert!(counts.fds.1 <= counts.fds.0 + GROWTH, "{COPIES} copies of one sender: {counts:?}");
        for expected in 0..COPIES {
            assert_eq!(rx.recv().unwrap(), expected);
        }
        drop((setup, tx));
        assert_child_succeeds(child);
        assert!(matches!(rx.recv(), Err(IpcError::Disconnected)));
    });
}

/// The child keeps 10,000 copies of one region: one descriptor and one mapping for them all,
/// each copy holding the region's bytes.
#[test]
fn a_region_received_10_000_times_is_one_descriptor_and_one_mapping() {
    let _serial = serial();
    with_watchdog(Duration::from_secs(120), || {
        let (child, setup) = worker();
        let (copies_tx, copies_rx) = ipc::os_channel().unwrap();
        let (report_tx, report_rx) = ipc::os_channel().unwrap();
        setup.send(Setup::Regions(copies_rx, report_tx)).unwrap();
        let region = IpcSharedMemory::from_bytes(&region_bytes());
        for _ in 0..COPIES {
            copies_tx.send(region.clone()).unwrap();
        }
        let counts: Counts = report_rx.recv().unwrap();
        assert!(counts.fds.1 <= counts.fds.0 + GROWTH, "{COPIES} copies of one region: {counts:?}");
        assert!(counts.mappings.1 <= counts.mappings.0 + GROWTH, "{COPIES} copies of one region: {counts:?}");
        drop(setup);
        assert_child_succeeds(child);
    });
}

/// A sender sent to another process and back, again and again, comes back as the sender this
/// process holds: no descriptor per round trip.
#[test]
fn a_sender_sent_out_and_back_is_the_sender_itself() {
    let _serial = serial();
    const ROUNDS: u32 = 1_000;
    with_watchdog(Duration::from_secs(60), || {
        let (child, setup) = worker();
        let (copies_tx, copies_rx) = ipc::os_channel().unwrap();
        let (back_tx, back_rx) = ipc::os_channel().unwrap();
        setup.send(Setup::Echo(copies_rx, ROUNDS, back_tx)).unwrap();
        let (tx, rx) = ipc::os_channel::<u32>().unwrap();
        let before = open_fds();
        let mut kept = Vec::new();
        for round in 0..ROUNDS {
            copies_tx.send(tx.clone()).unwrap();
            let copy: IpcSender<u32> = back_rx.recv().unwrap();
            copy.send(round).unwrap();
            assert_eq!(rx.recv().unwrap(), round);
            kept.push(copy);
        }
        let held = open_fds() - before;
        assert!(held <= GROWTH, "{ROUNDS} round trips of one sender hold {held} descriptors");
        drop((setup, tx, kept));
        assert_child_succeeds(child);
        assert!(matches!(rx.recv(), Err(IpcError::Disconnected)));
    });
}

/// The copies of a sender received many times share one descriptor, yet dropping them all
/// still hangs the channel up while the receiving process lives on.
#[test]
fn dropping_every_copy_received_hangs_up() {
    let _serial = serial();
    const N: u32 = 100;
    with_watchdog(Duration::from_secs(60), || {
        let (child, setup) = worker();
        let (copies_tx, copies_rx) = ipc::os_channel().unwrap();
        let (dropped_tx, dropped_rx) = ipc::os_channel().unwrap();
        setup.send(Setup::DropAll(copies_rx, N, dropped_tx)).unwrap();
        let (tx, rx) = ipc::os_channel::<u32>().unwrap();
        for _ in 0..N {
            copies_tx.send(tx.clone()).unwrap();
        }
        drop(tx);
        assert_eq!(rx.recv().unwrap(), 7);
        dropped_rx.recv().unwrap();
        // The child is alive (it waits for the setup sender to go): only its drops hung up.
        assert!(matches!(rx.recv(), Err(IpcError::Disconnected)));
        drop(setup);
        assert_child_succeeds(child);
    });
}
