//! Every message sent before the last sender is dropped is received, then `Disconnected`
//! (SPEC §1), also when the senders hang up while the receiver is behind: from threads, and
//! from child processes that exit. The stress forms are the ones that lost messages under CPU
//! load (issue 26); `scripts/stress.sh` runs this file beside busy loops.

mod util;

use std::thread;
use std::time::Duration;

use crossproc::ipc::{self, IpcReceiver, IpcSharedMemory};
use crossproc::IpcError;
use util::{child_role, with_watchdog};

#[cfg(all(any(target_os = "linux", windows), not(feature = "force-inprocess")))]
const ENTRY: &str = "child_entry";
/// Messages a receiver takes from its socket before its channel makes a ring (and leaves a
/// packet queued in the senders' direction, as it also does when rings are off).
const RING_AFTER: u32 = 16;

/// The child side of the tests in this file; does nothing unless started as a child.
#[test]
fn child_entry() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        #[cfg(all(any(target_os = "linux", windows), not(feature = "force-inprocess")))]
        "send_and_exit" => {
            let (to_parent, count) =
                ipc::inherited_receiver::<(ipc::IpcSender<(u32, u32)>, u32)>().unwrap().recv().unwrap();
            let thread = std::process::id();
            for index in 0..count {
                to_parent.send((thread, index)).unwrap();
            }
            // Exits without waiting for the parent to read: its last messages are still queued.
        }
        #[cfg(all(target_os = "linux", not(feature = "force-inprocess")))]
        "receive_while_stopped" => {
            let (rx, rings) = ipc::inherited_receiver::<(IpcReceiver<u32>, bool)>().unwrap().recv().unwrap();
            // Sleep in the kernel at once (no polling), so that the parent can see it.
            ipc::set_receive_spin(Duration::ZERO);
            ipc::set_shared_memory_ring(rings);
            for index in 0..RING_AFTER {
                assert_eq!(rx.recv().unwrap(), index);
            }
            println!("waiting in {}", util::thread_id());
            for index in RING_AFTER..RING_AFTER + 3 {
                match rx.recv() {
                    Ok(got) => assert_eq!(got, index),
                    Err(error) => panic!("message {index}, queued before the hang-up, lost: {error:?}"),
                }
            }
            assert!(matches!(rx.recv(), Err(IpcError::Disconnected)));
        }
        other => panic!("unknown child role {other}"),
    }
}

/// The scheduling state of thread `tid` of process `pid` (`S` asleep, `T` stopped, …).
#[cfg(all(target_os = "linux", not(feature = "force-inprocess")))]
fn thread_state(pid: u32, tid: &str) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).expect("read the thread's stat");
    stat.rsplit(')').next().and_then(|rest| rest.trim_start().chars().next()).expect("a state in stat")
}

/// Waits until thread `tid` of process `pid` is in `state`, failing after 30 s.
#[cfg(all(target_os = "linux", not(feature = "force-inprocess")))]
fn wait_for_state(pid: u32, tid: &str, state: char) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while thread_state(pid, tid) != state {
        assert!(std::time::Instant::now() < deadline, "thread {tid} never reached state {state}");
        thread::yield_now();
    }
}

/// Sends `signal` (a name `kill` knows) to process `pid`.
#[cfg(all(target_os = "linux", not(feature = "force-inprocess")))]
fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status();
    assert!(status.unwrap().success(), "kill -{signal} {pid}");
}

/// Reads `receiver` until it fails, checking each sender's order; returns the count per sender
/// and the error that ended the stream.
fn drain(receiver: &IpcReceiver<(u32, u32)>) -> (std::collections::BTreeMap<u32, u32>, IpcError) {
    let mut seen = std::collections::BTreeMap::new();
    loop {
        match receiver.recv() {
            Ok((sender, index)) => {
                let next = seen.entry(sender).or_insert(0);
                assert_eq!(index, *next, "sender {sender}'s messages out of order");
                *next += 1;
            }
            Err(error) => return (seen, error),
        }
    }
}

/// The deterministic form: a channel whose receiver left a packet queued in the senders'
/// direction (the ring's control memfd, or word that it has none), then messages that travel
/// on the socket (each carries a shared-memory region), then the last sender drops. The kernel
/// reports the hang-up as a connection reset ahead of the queued messages; taking it for the
/// end lost all three.
#[test]
fn messages_queued_when_the_senders_hang_up_are_all_received() {
    let (tx, rx) = ipc::os_channel::<(u32, Option<IpcSharedMemory>)>().unwrap();
    for index in 0..RING_AFTER {
        tx.send((index, None)).unwrap();
        assert_eq!(rx.recv().unwrap().0, index);
    }
    for index in 0..3 {
        tx.send((index, Some(IpcSharedMemory::from_byte(index as u8, 10)))).unwrap();
    }
    drop(tx);
    for index in 0..3 {
        let (got, region) = rx.recv().expect("a message queued before the hang-up was lost");
        assert_eq!(got, index);
        assert_eq!(&region.unwrap()[..], &[index as u8; 10]);
    }
    assert!(matches!(rx.recv(), Err(IpcError::Disconnected)));
    assert!(matches!(rx.try_recv(), Err(crossproc::TryRecvError::IpcError(IpcError::Disconnected))));
}

/// The interleaving that lost messages under load, made certain: the receiver sleeps in the
/// kernel, waiting for the next message; before it runs again, the last messages are sent and
/// the last sender drops (the receiving process is stopped meanwhile, as a busy machine may
/// keep it off the CPU). Its wake-up finds the reset first and the messages behind it. With
/// rings off the receive sleeps in `recvmsg` itself, with a ring in `poll`.
#[cfg(all(target_os = "linux", not(feature = "force-inprocess")))]
#[test]
fn a_receiver_woken_after_the_hang_up_takes_the_last_messages_first() {
    use crossproc::ipc::IpcCommandExt;
    use std::io::BufRead;
    with_watchdog(Duration::from_secs(60), || {
        for rings in [false, true] {
            let (tx, rx) = ipc::os_channel::<u32>().unwrap();
            let (mut child, to_child) = util::child_command(ENTRY, "receive_while_stopped")
                .stdout(std::process::Stdio::piped())
                .spawn_with_channel::<(IpcReceiver<u32>, bool)>()
                .unwrap();
            to_child.send((rx, rings)).unwrap();
            for index in 0..RING_AFTER {
                tx.send(index).unwrap();
            }
            let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok);
            let line = stdout.find(|line| line.starts_with("waiting in "));
            let tid = line.expect("the child ended before it waited").trim_start_matches("waiting in ").to_owned();
            wait_for_state(child.id(), &tid, 'S');
            signal(child.id(), "STOP");
            wait_for_state(child.id(), &tid, 'T');
            for index in RING_AFTER..RING_AFTER + 3 {
                tx.send(index).unwrap();
            }
            drop(tx);
            signal(child.id(), "CONT");
            // The rest of what the child prints, so that it can print it.
            stdout.for_each(drop);
            util::assert_child_succeeds(child);
        }
    });
}

/// The same with a `try_recv` loop (the non-blocking path peeks at the socket first).
#[test]
fn try_recv_takes_messages_queued_when_the_senders_hang_up() {
    let (tx, rx) = ipc::os_channel::<(u32, Option<IpcSharedMemory>)>().unwrap();
    for index in 0..RING_AFTER {
        tx.send((index, None)).unwrap();
        assert_eq!(rx.recv().unwrap().0, index);
    }
    for index in 0..3 {
        tx.send((index, Some(IpcSharedMemory::from_byte(1, 1)))).unwrap();
    }
    drop(tx);
    for index in 0..3 {
        match rx.try_recv() {
            Ok((got, _)) => assert_eq!(got, index),
            Err(error) => panic!("message {index} queued before the hang-up was lost: {error:?}"),
        }
    }
    assert!(matches!(rx.try_recv(), Err(crossproc::TryRecvError::IpcError(IpcError::Disconnected))));
}

/// Eight threads each send 2,000 messages through clones of one sender and drop their clone;
/// the receiver reads until `Disconnected` and must have every message, in each thread's order.
/// Rounds alternate between a local channel and an OS channel.
#[test]
fn every_message_from_eight_threads_arrives_before_disconnected() {
    with_watchdog(Duration::from_secs(120), || {
        for round in 0..6 {
            let make = if round % 2 == 0 { ipc::channel::<(u32, u32)> } else { ipc::os_channel::<(u32, u32)> };
            let (tx, rx) = make().unwrap();
            let senders: Vec<_> = (0..8)
                .map(|thread| {
                    let tx = tx.clone();
                    thread::spawn(move || {
                        for index in 0..2_000 {
                            tx.send((thread, index)).unwrap();
                        }
                    })
                })
                .collect();
            drop(tx);
            let (seen, end) = drain(&rx);
            for sender in senders {
                sender.join().unwrap();
            }
            let total: u32 = seen.values().sum();
            assert!(matches!(end, IpcError::Disconnected), "round {round}: ended with {end:?}");
            assert_eq!(total, 16_000, "round {round}: Disconnected after {total} of 16,000 ({seen:?})");
        }
    });
}

/// Two child processes each send 3,000 messages through a clone and exit, four threads here
/// send 1,500 each; the parent receives all 12,000 before `Disconnected`.
#[cfg(all(any(target_os = "linux", windows), not(feature = "force-inprocess")))]
#[test]
fn every_message_from_exiting_children_and_threads_arrives_before_disconnected() {
    use crossproc::ipc::IpcCommandExt;
    with_watchdog(Duration::from_secs(120), || {
        for round in 0..3 {
            let (tx, rx) = ipc::channel::<(u32, u32)>().unwrap();
            let mut children = Vec::new();
            for _ in 0..2 {
                let (child, to_child) = util::child_command(ENTRY, "send_and_exit")
                    .spawn_with_channel::<(ipc::IpcSender<(u32, u32)>, u32)>()
                    .unwrap();
                to_child.send((tx.clone(), 3_000)).unwrap();
                children.push(child);
            }
            let threads: Vec<_> = (0..4)
                .map(|thread| {
                    let tx = tx.clone();
                    thread::spawn(move || {
                        for index in 0..1_500 {
                            tx.send((thread, index)).unwrap();
                        }
                    })
                })
                .collect();
            drop(tx);
            let (seen, end) = drain(&rx);
            for thread in threads {
                thread.join().unwrap();
            }
            for child in children {
                util::assert_child_succeeds(child);
            }
            let total: u32 = seen.values().sum();
            assert!(matches!(end, IpcError::Disconnected), "round {round}: ended with {end:?}");
            assert_eq!(total, 12_000, "round {round}: Disconnected after {total} of 12,000 ({seen:?})");
        }
    });
}
