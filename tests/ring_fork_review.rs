//! Review of 08012d3 (issue 22, item 6): the owner word of a ring whose receiver moves to
//! another process, and the order a fork copy delivers in after it took a ring over.

#![cfg(all(target_os = "linux", not(feature = "force-inprocess")))]

mod util;

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossproc::ipc::{self, IpcReceiver, IpcSender};
use util::with_watchdog;

const COUNT: u32 = 50;

fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Forks a child that runs `child` and leaves with `_exit`: status 0, or 1 if it panicked.
fn fork_child(child: impl FnOnce()) -> libc::pid_t {
    // SAFETY: fork has no preconditions; the child runs only `child` and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).is_ok();
        // SAFETY: _exit has no preconditions.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    pid
}

fn assert_exits_successfully(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waits for a child of this process.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child failed: status {status}");
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
        let (carrier_tx, carrier_rx) = ipc::channel::<IpcReceiver<u32>>().unwrap();
        let (waiting_tx, waiting_rx) = ipc::channel::<()>().unwrap();
        let (ready_tx, ready_rx) = ipc::channel::<()>().unwrap();
        let (sent_tx, sent_rx) = ipc::channel::<()>().unwrap();
        let (go_tx, go_rx) = ipc::channel::<()>().unwrap();
        let (report_tx, report_rx) = ipc::channel::<Vec<u32>>().unwrap();
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
        let (tx, rx) = ipc::channel::<u32>().unwrap();
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
