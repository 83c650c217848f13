//! Descriptors left in flight (issue 23, item 1): the kernel counts descriptors queued in
//! `AF_UNIX` sockets per user, and refuses every descriptor-passing send of a process whose user
//! has more in flight than that process's `RLIMIT_NOFILE` (`ETOOMANYREFS`). A channel's ring
//! leaves its control memfd queued for its senders, so crossproc keeps a per-process budget of
//! them (`src/sys/linux/inflight.rs`).
//!
//! The kernel exempts root (and `CAP_SYS_RESOURCE`, `CAP_SYS_ADMIN`), so these tests prove
//! nothing there: they say they are skipped. CI runs this file alone, as a user of its own,
//! (`scripts/unprivileged.sh`), since the count is per user and other tests would disturb it.
//! Every channel here has its ends in different processes.

#![cfg(all(target_os = "linux", not(feature = "force-inprocess")))]

mod util;

use std::process::ExitStatus;
use std::time::Duration;

use crossproc::ipc::{self, inherited_receiver, IpcCommandExt, IpcReceiver, IpcSender, IpcSharedMemory};
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use util::{child_command, child_role, with_watchdog};

const ENTRY: &str = "child_entry";
/// Channels the holder keeps, each with its ring's control memfd queued (without the budget).
const CHANNELS: usize = 1_100;
/// Messages each channel carries: more than the 16 after which its receiver makes a ring.
const MESSAGES: u8 = 20;
/// Senders handed to the feeder per message.
const BATCH: usize = 100;
/// The limit the passing process lowers itself to: the usual default.
const PASSER_LIMIT: u64 = 1_024;

/// Why the kernel would not apply its in-flight limit to this process, if it would not.
fn exempt() -> Option<&'static str> {
    if rustix::process::geteuid().is_root() {
        return Some("root");
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    // CAP_SYS_ADMIN is 21, CAP_SYS_RESOURCE 24.
    (effective & (1 << 21 | 1 << 24) != 0).then_some("CAP_SYS_RESOURCE or CAP_SYS_ADMIN")
}

/// Prints that the test is skipped and why (it must not pass silently as if it proved
/// something); `true` when it is.
fn skipped(test: &str) -> bool {
    match exempt() {
        Some(why) => {
            println!("SKIPPED {test}: this process runs as {why}, which the kernel exempts from the in-flight limit");
            true
        }
        None => false,
    }
}

/// Sets this process's soft descriptor limit (the hard one stays).
fn set_soft_limit(soft: u64) {
    let current = getrlimit(Resource::Nofile);
    setrlimit(Resource::Nofile, Rlimit { current: Some(soft), maximum: current.maximum }).unwrap();
}

/// Raises this process's soft descriptor limit to its hard limit, which must allow `needed`.
fn raise_soft_limit(needed: u64) {
    let hard = getrlimit(Resource::Nofile).maximum.unwrap_or(u64::MAX);
    assert!(hard >= needed, "the hard RLIMIT_NOFILE is {hard}, {needed} descriptors are needed here");
    set_soft_limit(hard.min(1 << 20));
}

fn wait(mut child: std::process::Child) -> ExitStatus {
    child.wait().expect("wait for a child")
}

/// The child side of every test in this file; does nothing unless started as a child.
#[test]
fn child_entry() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        "holder" => hold_channels(),
        "feeder" => {
            // Sends MESSAGES on each sender it is given, then says so and drops them (the
            // holder keeps a copy of each, so every channel's sending socket stays open).
            let batches = inherited_receiver::<(Vec<IpcSender<u8>>, IpcSender<()>)>().unwrap();
            while let Ok((senders, done)) = batches.recv() {
                for sender in &senders {
                    for message in 0..MESSAGES {
                        sender.send(message).unwrap();
                    }
                }
                done.send(()).unwrap();
            }
        }
        "passer" => {
            set_soft_limit(PASSER_LIMIT);
            let (tx, rx) = ipc::os_channel::<(IpcSender<u8>, IpcSharedMemory)>().unwrap();
            let (inner_tx, inner_rx) = ipc::os_channel::<u8>().unwrap();
            let region = IpcSharedMemory::from_bytes(b"a region beside 1,100 channels");
            if let Err(error) = tx.send((inner_tx, region)) {
                panic!("passing a sender and a region failed: {error} ({error:?})");
            }
            let (sender, region) = rx.recv().unwrap();
            assert_eq!(&region[..], b"a region beside 1,100 channels");
            sender.send(7).unwrap();
            assert_eq!(inner_rx.recv().unwrap(), 7);
        }
        "over_the_limit" => {
            // Regions queued on a channel nobody reads stay in flight; past this process's
            // (lowered) limit the kernel refuses the next one, and the error says why.
            set_soft_limit(64);
            let (tx, _rx) = ipc::os_channel::<IpcSharedMemory>().unwrap();
            let region = IpcSharedMemory::from_byte(1, 16);
            for sent in 0..200 {
                if let Err(error) = tx.send(region.clone()) {
                    let text = format!("{error:?}");
                    assert!(text.contains("ETOOMANYREFS") && text.contains("in flight"), "after {sent}: {text}");
                    return;
                }
            }
            panic!("200 regions in flight under a limit of 64, and no send failed");
        }
        other => panic!("unknown child role {other}"),
    }
}

/// The holder: makes the channels, has the feeder (another process) send on them, receives
/// every message (so each receiver makes its ring at the 16th), tells the parent, and keeps
/// both ends of every channel until the parent is done.
fn hold_channels() {
    // Both ends and a control memfd per channel, and some to spare.
    raise_soft_limit(CHANNELS as u64 * 3 + 256);
    let from_parent = inherited_receiver::<IpcSender<usize>>().unwrap();
    let to_parent = from_parent.recv().unwrap();
    let (feeder, to_feeder) =
        child_command(ENTRY, "feeder").spawn_with_channel::<(Vec<IpcSender<u8>>, IpcSender<()>)>().unwrap();
    let (done_tx, done_rx) = ipc::os_channel::<()>().unwrap();
    let mut channels: Vec<(IpcSender<u8>, IpcReceiver<u8>)> = Vec::with_capacity(CHANNELS);
    while channels.len() < CHANNELS {
        let batch: Vec<_> =
            (0..BATCH.min(CHANNELS - channels.len())).map(|_| ipc::os_channel::<u8>().unwrap()).collect();
        to_feeder.send((batch.iter().map(|(tx, _)| tx.clone()).collect(), done_tx.clone())).unwrap();
        done_rx.recv().unwrap();
        for (_, rx) in &batch {
            for message in 0..MESSAGES {
                assert_eq!(rx.recv().unwrap(), message);
            }
        }
        channels.extend(batch);
    }
    drop(to_feeder);
    assert!(wait(feeder).success(), "the feeder failed");
    to_parent.send(channels.len()).unwrap();
    // Until the parent is done with the test.
    assert!(from_parent.recv().is_err());
    drop(channels);
}

/// Target 2 of issue 23: one process of a user holds 1,100 channels that carried traffic (each
/// would queue its ring's control memfd); another process of that user, under the default limit
/// of 1,024, still passes a sender and a region through a channel. Without the budget, its send
/// failed with `ETOOMANYREFS` (`Os { code: 109 }`).
#[test]
fn descriptors_pass_beside_a_process_with_1100_busy_channels() {
    if child_role().is_some() || skipped("descriptors_pass_beside_a_process_with_1100_busy_channels") {
        return;
    }
    with_watchdog(Duration::from_secs(120), || {
        let (hold, to_holder) = child_command(ENTRY, "holder").spawn_with_channel::<IpcSender<usize>>().unwrap();
        let (ready_tx, ready_rx) = ipc::os_channel::<usize>().unwrap();
        to_holder.send(ready_tx).unwrap();
        assert_eq!(ready_rx.recv().expect("the holder failed"), CHANNELS);
        let passer = wait(child_command(ENTRY, "passer").spawn().unwrap());
        drop(to_holder);
        assert!(wait(hold).success(), "the holder failed");
        assert!(passer.success(), "the process under a limit of {PASSER_LIMIT} could not pass descriptors: {passer}");
    });
}

/// A send the kernel refuses with `ETOOMANYREFS` anyway says what it means, not "Too many
/// references: cannot splice".
#[test]
fn a_send_over_the_in_flight_limit_says_what_it_means() {
    if child_role().is_some() || skipped("a_send_over_the_in_flight_limit_says_what_it_means") {
        return;
    }
    let status =
        with_watchdog(Duration::from_secs(60), || wait(child_command(ENTRY, "over_the_limit").spawn().unwrap()));
    assert!(status.success(), "the child over the limit failed: {status}");
}
