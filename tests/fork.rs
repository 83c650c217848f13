//! Processes made by `fork` after a sender was used: both keep every message intact, whether
//! they send large payloads at once on the same channel (whose pooled memfds they share) or
//! small ones (through the channel's shared-memory ring, where the child must claim a slot of
//! its own rather than write in its parent's).

#![cfg(all(target_os = "linux", not(feature = "force-inprocess")))]

mod util;

use crossproc::ipc::{IpcOneShotServer, IpcSender};
use crossproc::IpcError;
use util::bytes::Bytes;
use util::{assert_child_succeeds, child_role, server_name, spawn_child, with_watchdog};

const ENTRY: &str = "child_entry";
/// Large enough to travel in a pooled memfd rather than inside the packet.
const LARGE: usize = 256 * 1024;
/// Small enough for the ring.
const SMALL: usize = 64;
const SEEDS: u32 = 3;
const PER_PROCESS: u32 = 400;

/// (who sent it, its index among that sender's messages, a payload derived from both)
type Message = (u8, u32, Bytes);

/// The first word of every 4 KiB (and of a small payload) names the sender, the message and the
/// page, so a payload written over another, even in part, shows; the rest is a fixed pattern.
fn payload(sender: u8, index: u32, len: usize) -> Bytes {
    static PATTERN: std::sync::LazyLock<Vec<u8>> =
        std::sync::LazyLock::new(|| (0..LARGE).map(|at| (at % 251) as u8).collect());
    let mut bytes = PATTERN[..len].to_vec();
    for (page, chunk) in bytes.chunks_mut(4096).enumerate() {
        let stamp = u64::from(sender) << 56 | u64::from(index) << 24 | page as u64;
        chunk[..8].copy_from_slice(&stamp.to_le_bytes());
    }
    Bytes(bytes)
}

#[test]
fn child_entry() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        "send_fork_send" => send_fork_send(LARGE),
        "send_fork_send_small" => send_fork_send(SMALL),
        other => panic!("unknown child role {other}"),
    }
}

/// Seeds the channel's memfd pool, forks, and sends from both processes at once.
fn send_fork_send(len: usize) {
    let tx = IpcSender::<Message>::connect(server_name()).unwrap();
    for index in 0..SEEDS {
        tx.send((0, index, payload(0, index, len))).unwrap();
    }
    // The child runs only this thread's code below and leaves with `_exit`, never returning
    // into the test harness.
    // SAFETY: fork has no preconditions; the child keeps to the code above.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    let me = if pid == 0 { 2 } else { 1 };
    let mut ok = true;
    for index in 0..PER_PROCESS {
        ok &= tx.send((me, index, payload(me, index, len))).is_ok();
    }
    if pid == 0 {
        drop(tx);
        // Ends the forked child at once, as fork's contract asks of a child of a multi-threaded
        // process.
        // SAFETY: _exit has no preconditions.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(ok, "a send in the parent failed");
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "the forked child failed: {status}");
}

#[test]
fn processes_forked_after_sending_both_keep_every_large_message_intact() {
    forked_senders_keep_every_message("send_fork_send", LARGE);
}

#[test]
fn processes_forked_after_sending_both_keep_every_small_message_intact() {
    forked_senders_keep_every_message("send_fork_send_small", SMALL);
}

fn forked_senders_keep_every_message(role: &str, len: usize) {
    for round in 0..10 {
        let (server, name) = IpcOneShotServer::<Message>::new().unwrap();
        let child = spawn_child(ENTRY, role, &name);
        let (rx, first) = server.accept().unwrap();
        let mut next = [1, 0, 0];
        assert_eq!((first.0, first.1), (0, 0));
        with_watchdog(std::time::Duration::from_secs(120), move || {
            loop {
                match rx.recv() {
                    Ok((sender, index, bytes)) => {
                        let expected = next[sender as usize];
                        assert_eq!(index, expected, "round {round}: sender {sender}'s messages out of order or lost");
                        assert!(
                            bytes == payload(sender, index, len),
                            "round {round}: sender {sender}'s message {index} corrupted"
                        );
                        next[sender as usize] += 1;
                    }
                    Err(IpcError::Disconnected) => break,
                    Err(error) => panic!("round {round}: {error:?}"),
                }
            }
            assert_eq!(next, [SEEDS, PER_PROCESS, PER_PROCESS], "round {round}: messages lost");
        });
        assert_child_succeeds(child);
    }
}
