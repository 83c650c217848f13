//! A child forked while another thread of its parent finds what the crate finds once (the
//! wipe-on-fork page that tells a forked child from its parent, `src/sys/linux/fork.rs`; the
//! CPU count behind the receive spin, `src/sys/found_once.rs`) does not hang.
//!
//! Both were kept in a `OnceLock`: a child forked by another thread meanwhile inherited it half
//! made, with no thread left to finish, and its first use of the crate waited for ever (review
//! 8, R8-2: 7 hung children from 300 processes making a channel; review 9, R9-1: 5 of 200 asking
//! `ipc::receive_spin()`). Each fresh process here (a child role) starts a thread whose first
//! call is the process's first use of the crate and forks from its main thread meanwhile; every
//! forked child makes the same call and exits. A child still running after 10 s counts as hung
//! (the deadline only turns a hang into a failure).

#![cfg(all(target_os = "linux", not(feature = "force-inprocess")))]

mod util;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossproc::ipc;
use util::{child_command, child_role};

const ENTRY: &str = "child_entry";
const PROCESSES: usize = 300;
/// The exit code of a fresh process one of whose forked children hung.
const HUNG: i32 = 3;

#[test]
fn child_entry() {
    let first_use: fn() = match child_role().as_deref() {
        Some("channel") => || drop(ipc::channel::<u8>().unwrap()),
        Some("receive_spin") => || {
            let _ = ipc::receive_spin();
        },
        _ => return,
    };
    let done = Arc::new(AtomicBool::new(false));
    let first = {
        let done = done.clone();
        std::thread::spawn(move || {
            first_use();
            done.store(true, Ordering::Release);
        })
    };
    let mut children = Vec::new();
    while !done.load(Ordering::Acquire) && children.len() < 64 {
        // SAFETY: the child makes one call and leaves with `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            first_use();
            // SAFETY: ends the forked child at once.
            unsafe { libc::_exit(0) };
        }
        children.push(pid);
    }
    first.join().unwrap();
    let mut hung = false;
    for pid in children {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut status = 0;
        // SAFETY: polls a child of this process.
        while unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } != pid {
            if Instant::now() > deadline {
                hung = true;
                // SAFETY: ends and reaps the hung child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                }
                break;
            }
            std::thread::yield_now();
        }
    }
    std::process::exit(if hung { HUNG } else { 0 });
}

/// Runs [`PROCESSES`] fresh processes whose first use of the crate is `role`'s.
fn no_forked_child_hangs(role: &str) {
    if child_role().is_some() {
        return;
    }
    let mut hung = 0;
    for _ in 0..PROCESSES {
        match child_command(ENTRY, role).status().unwrap().code() {
            Some(0) => {}
            Some(HUNG) => hung += 1,
            other => panic!("a fresh process ended with {other:?}"),
        }
    }
    assert_eq!(hung, 0, "{hung} of {PROCESSES} fresh processes ({role}) had a forked child that hung");
}

#[test]
fn a_child_forked_while_its_parent_makes_the_fork_page_does_not_hang() {
    no_forked_child_hangs("channel");
}

#[test]
fn a_child_forked_while_its_parent_counts_its_cpus_does_not_hang() {
    no_forked_child_hangs("receive_spin");
}
