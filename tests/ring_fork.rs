//! A receiver copied by `fork`, and the ring its original reads (issue 22, item 6): whichever of
//! the two goes first — the original's process exits, the original is dropped, or the copy is
//! used while the original lives — every message sent on the channel reaches the copy.
//!
//! Before, the copy read the socket alone and the ring went on taking messages that nobody
//! would read: lost without an error, and once the ring was full its senders blocked.

#![cfg(all(target_os = "linux", not(feature = "force-inprocess")))]

mod util;

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crossproc::ipc::{self, IpcReceiver, IpcSender};
use util::fork::{assert_exits_successfully, fork_child};
use util::with_watchdog;

/// Messages sent after the ring's reader is gone (or has let go), in each test.
const COUNT: u32 = 200;

/// The tests of this file fork: one at a time, so that no other test's thread holds a lock
/// across a fork.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Makes the channel carry traffic until its receiver reads a ring (in this process), and
/// leaves the ring awake: senders then publish into it.
fn give_a_ring(tx: &IpcSender<u32>, rx: &IpcReceiver<u32>) {
    for seq in 0..20 {
        tx.send(seq).unwrap();
        assert_eq!(rx.recv().unwrap(), seq);
    }
}

/// What the copy receives, each within 10 s (a lost message ends the list early).
fn receive_all(rx: &IpcReceiver<u32>, count: u32) -> Vec<u32> {
    (0..count).map_while(|_| rx.try_recv_timeout(Duration::from_secs(10)).ok()).collect()
}

/// The ring's reader leaves with `_exit` (as a killed one would: nothing is dropped) after
/// messages were published into its ring: a copy forked from it takes the ring over.
#[test]
fn a_fork_copy_takes_over_the_ring_of_a_reader_that_exited() {
    let _serial = serial();
    with_watchdog(Duration::from_secs(60), || {
        let (setup_tx, setup_rx) = ipc::os_channel::<IpcSender<u32>>().unwrap();
        let (go_tx, go_rx) = ipc::os_channel::<()>().unwrap();
        let (report_tx, report_rx) = ipc::os_channel::<Vec<u32>>().unwrap();
        let reader = fork_child(|| {
            // Made here, so that this process reads its ring (a copy made by `fork` never does).
            let (tx, rx) = ipc::os_channel::<u32>().unwrap();
            give_a_ring(&tx, &rx);
            // The copy, forked from the ring's reader: it reads once that is gone.
            fork_child(|| {
                go_rx.recv().unwrap();
                report_tx.send(receive_all(&rx, COUNT)).unwrap();
            });
            // Published while this process no longer reads: they wait in the ring.
            for seq in 0..COUNT / 2 {
                tx.send(seq).unwrap();
            }
            setup_tx.send(tx).unwrap();
            // Leaves with `_exit`, nothing dropped.
        });
        let tx = setup_rx.recv().unwrap();
        assert_exits_successfully(reader);
        for seq in COUNT / 2..COUNT {
            tx.send(seq).unwrap();
        }
        go_tx.send(()).unwrap();
        let got = report_rx.recv().unwrap();
        assert_eq!(got, (0..COUNT).collect::<Vec<_>>(), "the copy got every message, in order");
    });
}

/// The ring's reader drops its receiver (its process lives on) with messages still in the ring:
/// a copy forked from it gets those and every later one.
#[test]
fn a_fork_copy_takes_over_the_ring_its_reader_let_go() {
    let _serial = serial();
    with_watchdog(Duration::from_secs(60), || {
        let (setup_tx, setup_rx) = ipc::os_channel::<IpcSender<u32>>().unwrap();
        let (ready_tx, ready_rx) = ipc::os_channel::<()>().unwrap();
        let (go_tx, go_rx) = ipc::os_channel::<()>().unwrap();
        let (drop_tx, drop_rx) = ipc::os_channel::<()>().unwrap();
        let (report_tx, report_rx) = ipc::os_channel::<Vec<u32>>().unwrap();
        let reader = fork_child(|| {
            let (tx, rx) = ipc::os_channel::<u32>().unwrap();
            give_a_ring(&tx, &rx);
            let copy = fork_child(|| {
                go_rx.recv().unwrap();
                report_tx.send(receive_all(&rx, COUNT)).unwrap();
            });
            setup_tx.send(tx).unwrap();
            drop_rx.recv().unwrap();
            drop(rx);
            ready_tx.send(()).unwrap();
            assert_exits_successfully(copy);
        });
        let tx = setup_rx.recv().unwrap();
        // Into the ring, which its reader does not read.
        for seq in 0..COUNT / 2 {
            tx.send(seq).unwrap();
        }
        drop_tx.send(()).unwrap();
        ready_rx.recv().unwrap();
        // The ring is retired: these take the socket.
        for seq in COUNT / 2..COUNT {
            tx.send(seq).unwrap();
        }
        go_tx.send(()).unwrap();
        let got = report_rx.recv().unwrap();
        assert_eq!(got, (0..COUNT).collect::<Vec<_>>(), "the copy got every message, in order");
        drop(tx);
        assert_exits_successfully(reader);
    });
}

/// A copy forked from the ring's reader is used while that reader lives (and does not read):
/// the ring is retired, so that what is sent next reaches the copy on the socket.
#[test]
fn a_fork_copy_used_while_its_reader_lives_gets_what_is_sent_next() {
    let _serial = serial();
    with_watchdog(Duration::from_secs(60), || {
        let (tx, rx) = ipc::os_channel::<u32>().unwrap();
        let (ready_tx, ready_rx) = ipc::os_channel::<()>().unwrap();
        let (report_tx, report_rx) = ipc::os_channel::<Vec<u32>>().unwrap();
        give_a_ring(&tx, &rx);
        let copy = fork_child(|| {
            assert!(rx.try_recv().is_err(), "nothing waits yet");
            ready_tx.send(()).unwrap();
            report_tx.send(receive_all(&rx, COUNT)).unwrap();
        });
        ready_rx.recv().unwrap();
        for seq in 0..COUNT {
            tx.send(seq).unwrap();
        }
        let got = report_rx.recv().unwrap();
        assert_eq!(got, (0..COUNT).collect::<Vec<_>>(), "the copy got every message, in order");
        assert_exits_successfully(copy);
        assert!(rx.try_recv().is_err(), "no message reached both copies");
    });
}
