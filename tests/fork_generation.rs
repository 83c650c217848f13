//! The fork generation every thread of a new child reads is the child's (review 7, R7-1).
//!
//! `fork::generation()` (src/sys/linux/fork.rs) once marked the wiped page before it counted the
//! fork: a second thread of the child that looked in between read the parent's number, and
//! everything that compares generations took the parent's state for its own. Here that state is
//! a local channel made in the parent, which a child must refuse (`Unsupported`) and read as
//! its own (`Empty`); the reserve's lend (src/sys/linux/reserve.rs) compares the same numbers.
//! Before the fix, 17 of 3,000 children showed it (twice); so 1,000 find it all but surely.
//!
//! The forking process is a fresh one (a child role), single-threaded when it forks; each forked
//! child starts two threads that spin on one flag and then make their first crate call at once.

#![cfg(all(target_os = "linux", not(feature = "force-inprocess")))]

mod util;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crossproc::ipc;
use crossproc::{IpcError, TryRecvError};
use util::{child_in_role_succeeds, child_role};

const ENTRY: &str = "child_entry";
const TRIALS: usize = 1000;

#[test]
fn child_entry() {
    if child_role().as_deref() != Some("forker") {
        return;
    }
    let mut stale = 0;
    let mut trials = 0;
    for _ in 0..TRIALS {
        trials += 1;
        // Made here: the generation page exists, and these channels are this process's.
        let (_tx_a, rx_a) = ipc::channel::<u8>().unwrap();
        let (_tx_b, rx_b) = ipc::channel::<u8>().unwrap();
        // SAFETY: this process has one thread; the child runs the code below and `_exit`s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let go = Arc::new(AtomicBool::new(false));
            let ready = Arc::new(AtomicUsize::new(0));
            let spawn = |rx: ipc::IpcReceiver<u8>| {
                let (go, ready) = (go.clone(), ready.clone());
                std::thread::spawn(move || {
                    ready.fetch_add(1, Ordering::SeqCst);
                    while !go.load(Ordering::Acquire) {
                        std::hint::spin_loop();
                    }
                    // The first crate call of this thread, and of this process.
                    match rx.try_recv() {
                        Err(TryRecvError::IpcError(IpcError::Io(error)))
                            if error.kind() == std::io::ErrorKind::Unsupported =>
                        {
                            0
                        }
                        _ => 1,
                    }
                })
            };
            let a = spawn(rx_a);
            let b = spawn(rx_b);
            while ready.load(Ordering::SeqCst) < 2 {
                std::hint::spin_loop();
            }
            go.store(true, Ordering::Release);
            let wrong = a.join().unwrap() + b.join().unwrap();
            // SAFETY: ends the forked child at once.
            unsafe { libc::_exit(if wrong == 0 { 0 } else { 3 }) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "status {status}");
        match libc::WEXITSTATUS(status) {
            0 => {}
            3 => stale += 1,
            other => panic!("child exit {other}"),
        }
    }
    eprintln!("{stale} of {trials} forked children had a thread that read the parent's generation");
    assert_eq!(stale, 0, "a thread of a fork child took a parent-era local channel for its own");
}

#[test]
fn a_second_thread_of_a_fork_child_never_reads_the_parents_generation() {
    if child_role().is_none() {
        child_in_role_succeeds(ENTRY, "forker");
    }
}
