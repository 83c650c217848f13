//! Review of 08012d3 (issue 22, item 6): the owner word of a ring whose receiver moves to
//! another process, and the order a fork copy delivers in after it took a ring over.

#![cfg(all(target_os = "linux", not(feature = "force-inprocess")))]

mod util;

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossproc::ipc::{self, IpcReceiver, IpcSender, IpcSharedMemory};
use util::fork::{assert_exits_successfully, fork_child};
use util::with_watchdog;

const COUNT: u32 = 50;

fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs the calling thread on CPU 0 only.
fn pin_to_cpu_0() {
    // SAFETY: a cpu set on the stack, for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set), 0);
    }
}

/// Waits until the (single-threaded) process `pid` sleeps in the kernel.
fn wait_until_asleep(pid: libc::pid_t) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let state = stat.rsplit(") ").next().unwrap().chars().next().unwrap();
        if state == 'S' {
            return;
        }
        assert!(Instant::now() < deadline, "process {pid} never went to sleep (state {state})");
        std::thread::yield_now();
    }
}

/// Makes the channel carry traffic until its receiver reads a ring, left awake.
fn give_a_ring<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
    tx: &IpcSender<T>,
    rx: &IpcReceiver<T>,
    message: impl Fn(u32) -> T,
) {
    for seq in 0..20 {
        tx.send(message(seq)).unwrap();
        assert_eq!(rx.recv().unwrap(), message(seq));
    }
}

/// A receiver moves to process Q, and the sending thread is slow to return from the send (here
/// made so: it runs at `SCHED_IDLE` on Q's CPU, so Q runs first once the packet wakes it). Q
/// writes its own token in the ring's owner word on arrival; the sender's `depart` then writes
/// `MOVING` over it. Q, alive and reading, no longer owns the ring by its word: when Q exits
/// with messages in its ring, the copy Q forked cannot tell Q is gone and loses them — the
/// very case 08012d3 fixes for a receiver that did not move. Fails on 08012d3 (the copy gets
/// nothing).
#[test]
fn a_moved_receivers_token_is_not_overwritten_by_the_senders_depart() {
    let _serial = serial();
    with_watchdog(Duration::from_secs(60), || {
        let (carrier_tx, carrier_rx) = ipc::os_channel::<IpcReceiver<u32>>().unwrap();
        let (waiting_tx, waiting_rx) = ipc::os_channel::<()>().unwrap();
        let (ready_tx, ready_rx) = ipc::os_channel::<()>().unwrap();
        let (sent_tx, sent_rx) = ipc::os_channel::<()>().unwrap();
        let (go_tx, go_rx) = ipc::os_channel::<()>().unwrap();
        let (report_tx, report_rx) = ipc::os_channel::<Vec<u32>>().unwrap();
        let q = fork_child(|| {
            pin_to_cpu_0();
            waiting_tx.send(()).unwrap();
            let rx = carrier_rx.recv().unwrap();
            // Settles and wakes the ring that came along: senders publish into it again.
            assert!(rx.try_recv().is_err());
            ready_tx.send(()).unwrap();
            sent_rx.recv().unwrap();
            // The copy: it reads once Q is gone.
            fork_child(|| {
                go_rx.recv().unwrap();
                let got: Vec<u32> =
                    (0..COUNT).map_while(|_| rx.try_recv_timeout(Duration::from_secs(3)).ok()).collect();
                report_tx.send(got).unwrap();
            });
            // Leaves with `_exit`, nothing dropped, its messages in its ring.
        });
        let (tx, rx) = ipc::os_channel::<u32>().unwrap();
        give_a_ring(&tx, &rx, |seq| seq);
        waiting_rx.recv().unwrap();
        wait_until_asleep(q);
        let sender = std::thread::spawn(move || {
            pin_to_cpu_0();
            let param = libc::sched_param { sched_priority: 0 };
            if std::env::var_os("REVIEW_CONTROL_NO_IDLE").is_none() {
                // SAFETY: sets the calling thread's policy.
                assert_eq!(unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) }, 0);
            }
            carrier_tx.send(rx).unwrap();
        });
        ready_rx.recv().unwrap();
        // The send returned (its `depart` done) before anything else happens.
        sender.join().unwrap();
        for seq in 0..COUNT {
            tx.send(seq).unwrap();
        }
        sent_tx.send(()).unwrap();
        assert_exits_successfully(q);
        go_tx.send(()).unwrap();
        let got = report_rx.recv().unwrap();
        assert_eq!(got, (0..COUNT).collect::<Vec<_>>(), "the copy got every message Q left in its ring, in order");
    });
}

/// A message of the order test: its number, and maybe a region (which sends it on the socket,
/// with a marker in the ring).
type Numbered = (u32, Option<IpcSharedMemory>);

/// The copy is used while the ring's reader lives: it retires the ring, and reads the socket,
/// taking there a packet whose marker waits in the ring (m1, sent with a region). The reader
/// then lets go, and the copy takes the ring over "with the messages left in it, in order"
/// (docs/ring.md). At m1's marker, whose packet is gone, it reads the socket's next packet in
/// the marker's place — m3, sent after the ring was retired — before m2, which the same
/// sender sent earlier through the ring. Fails on 08012d3: [100, 103, 102].
#[test]
fn a_fork_copy_that_takes_a_ring_over_keeps_each_senders_order() {
    let _serial = serial();
    with_watchdog(Duration::from_secs(60), || {
        let (setup_tx, setup_rx) = ipc::os_channel::<IpcSender<Numbered>>().unwrap();
        let (go_tx, go_rx) = ipc::os_channel::<()>().unwrap();
        let (drop_tx, drop_rx) = ipc::os_channel::<()>().unwrap();
        let (dropped_tx, dropped_rx) = ipc::os_channel::<()>().unwrap();
        let (forked_tx, forked_rx) = ipc::os_channel::<()>().unwrap();
        let (report_tx, report_rx) = ipc::os_channel::<Vec<u32>>().unwrap();
        let reader = fork_child(|| {
            let (tx, rx) = ipc::os_channel::<Numbered>().unwrap();
            for seq in 0..20 {
                tx.send((seq, None)).unwrap();
                assert_eq!(rx.recv().unwrap().0, seq);
            }
            setup_tx.send(tx).unwrap();
            // The sender, new in the test's process, finds the ring after its first send.
            assert_eq!(rx.recv().unwrap().0, 99);
            assert!(rx.try_recv().is_err(), "its place holder passed");
            let copy = fork_child(|| {
                let take = |count: usize| -> Vec<u32> {
                    (0..count).map_while(|_| rx.try_recv_timeout(Duration::from_secs(3)).ok()).map(|m| m.0).collect()
                };
                go_rx.recv().unwrap();
                report_tx.send(take(1)).unwrap();
                go_rx.recv().unwrap();
                report_tx.send(take(3)).unwrap();
            });
            forked_tx.send(()).unwrap();
            drop_rx.recv().unwrap();
            drop(rx);
            dropped_tx.send(()).unwrap();
            assert_exits_successfully(copy);
        });
        let tx = setup_rx.recv().unwrap();
        tx.send((99, None)).unwrap();
        forked_rx.recv().unwrap();
        tx.send((100, None)).unwrap(); // into the ring
        tx.send((101, Some(IpcSharedMemory::from_bytes(b"region")))).unwrap(); // socket, marker in the ring
        tx.send((102, None)).unwrap(); // into the ring
        go_tx.send(()).unwrap();
        // The copy's first use retires the ring (its reader lives) and reads the socket.
        assert_eq!(report_rx.recv().unwrap(), [101]);
        tx.send((103, None)).unwrap(); // the ring is retired: the socket
        drop_tx.send(()).unwrap();
        dropped_rx.recv().unwrap();
        go_tx.send(()).unwrap();
        let got = report_rx.recv().unwrap();
        assert_eq!(got, [100, 102, 103], "after the takeover, the sender's messages came out of order");
        drop(tx);
        assert_exits_successfully(reader);
    });
}
