//! A process that cannot tell its forked children from itself (issue 22, item 12): the kernel
//! refused `MADV_WIPEONFORK` (Linux before 4.14, or a seccomp filter, as here). Such a process
//! must take no ring slot and read no ring, since a forked child would write into the same slot
//! or read the same messages. Its channels go on over their sockets, in order, and so do the
//! ones whose ring another process reads.
//!
//! The child process installs a real seccomp filter that refuses that one `madvise` before it
//! uses crossproc; the ring's reader is this test's own process, which can tell.

#![cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64"),
    not(feature = "force-inprocess")
))]

mod util;

use std::time::Duration;

use crossproc::ipc::{self, IpcOneShotServer, IpcReceiver, IpcSender};
use util::fork::{assert_exits_successfully, fork_child};
use util::{child_role, server_name, spawn_child, with_watchdog};

const ENTRY: &str = "child_entry";
/// Messages each sender sends once the filtered process has the channel.
const COUNT: u32 = 500;
/// Who sent a message: this process, the filtered child, or a child it forked.
const HERE: u32 = 0;
const FILTERED: u32 = 1;
const FORKED: u32 = 2;

type Tagged = (u32, u32);

#[test]
fn child_entry() {
    match child_role().as_deref() {
        Some("filtered") => send_beside_a_fork(),
        Some("filtered_pump") => exit_in_a_child_forked_during_a_pump(),
        _ => {}
    }
}

fn send_beside_a_fork() {
    refuse_wipe_on_fork();
    // A sender of a channel whose ring the test's process reads: it takes no slot, and neither
    // does a child forked from it; both send over the socket.
    let (setup_tx, setup_rx) = ipc::os_channel::<IpcSender<Tagged>>().unwrap();
    IpcSender::connect(server_name()).unwrap().send(setup_tx).unwrap();
    let tx = setup_rx.recv().unwrap();
    // A send before the fork, so that a slot claimed here would be the child's too.
    tx.send((FILTERED, 0)).unwrap();
    let forked = fork_child(|| {
        for seq in 0..COUNT {
            tx.send((FORKED, seq)).unwrap();
        }
    });
    for seq in 1..COUNT {
        tx.send((FILTERED, seq)).unwrap();
    }
    assert_exits_successfully(forked);
    // A channel of this process alone: its receiver makes no ring, however much it carries.
    let (tx, rx) = ipc::os_channel::<u32>().unwrap();
    let socket_pair = util::open_fds();
    for seq in 0..100 {
        tx.send(seq).unwrap();
        assert_eq!(rx.recv().unwrap(), seq);
    }
    assert_eq!(util::open_fds(), socket_pair, "a process that cannot detect a fork made a ring");
}

/// Messages of the backlog in [`exit_in_a_child_forked_during_a_pump`]: more than its socket
/// takes, even raised for the move, so that a thread sends the rest.
const BACKLOG: u32 = 8_000;

/// A child forked while a thread of its parent sends a backlog, in a process that cannot tell
/// its forks apart, ends with `exit`: it must not wait for that thread, which it does not have
/// (review 10, F4: it joined the parent's thread and aborted, 5 of 5 runs). The backlog then
/// arrives whole here.
fn exit_in_a_child_forked_during_a_pump() {
    refuse_wipe_on_fork();
    let (carrier_tx, carrier_rx) = ipc::os_channel::<IpcReceiver<Vec<u8>>>().unwrap();
    let (tx, rx) = ipc::channel::<Vec<u8>>().unwrap();
    tx.set_buffer_size(16 << 20).unwrap();
    for index in 0..BACKLOG {
        tx.send(index.to_le_bytes().repeat(250)).unwrap();
    }
    // Nobody reads the carrier yet: the backlog's thread waits for room.
    carrier_tx.send(rx).unwrap();
    // SAFETY: the child calls only `exit`, which runs the exit hook (the point of the test).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        std::process::exit(0);
    }
    assert_exits_successfully(pid);
    let rx = carrier_rx.recv().unwrap();
    drop(tx);
    let mut got = 0u32;
    while let Ok(message) = rx.recv() {
        assert_eq!(message, got.to_le_bytes().repeat(250));
        got += 1;
    }
    assert_eq!(got, BACKLOG);
}

#[test]
fn a_child_forked_during_a_backlog_exits_without_waiting_for_it() {
    if child_role().is_some() {
        return;
    }
    with_watchdog(Duration::from_secs(60), || util::child_in_role_succeeds(ENTRY, "filtered_pump"));
}

/// Installs a seccomp filter under which `madvise(…, MADV_WIPEONFORK)` fails with `EINVAL`, as
/// on a kernel that does not know it; every other system call is allowed. Checks that it holds.
fn refuse_wipe_on_fork() {
    use libc::{sock_filter, sock_fprog, BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W};
    let statement = |code: u32, k: u32| sock_filter { code: code as u16, jt: 0, jf: 0, k };
    let jump_if = |k: u32, jt: u8, jf: u8| sock_filter { code: (BPF_JMP | BPF_JEQ | BPF_K) as u16, jt, jf, k };
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    const AUDIT_ARCH_AARCH64: u32 = 0xC000_00B7;
    let arch = if cfg!(target_arch = "x86_64") { AUDIT_ARCH_X86_64 } else { AUDIT_ARCH_AARCH64 };
    // struct seccomp_data: nr at 0, arch at 4, args[i] at 16 + 8 i (the low word first).
    let mut program = [
        statement(BPF_LD | BPF_W | BPF_ABS, 4),
        jump_if(arch, 0, 5),
        statement(BPF_LD | BPF_W | BPF_ABS, 0),
        jump_if(libc::SYS_madvise as u32, 0, 3),
        statement(BPF_LD | BPF_W | BPF_ABS, 16 + 2 * 8),
        jump_if(libc::MADV_WIPEONFORK as u32, 0, 1),
        statement(BPF_RET | BPF_K, libc::SECCOMP_RET_ERRNO | libc::EINVAL as u32),
        statement(BPF_RET | BPF_K, libc::SECCOMP_RET_ALLOW),
    ];
    let filter = sock_fprog { len: program.len() as u16, filter: program.as_mut_ptr() };
    // SAFETY: prctl with these options reads only the filter, which lives across the call.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0, "no_new_privs");
        assert_eq!(
            libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &filter as *const sock_fprog),
            0,
            "install the seccomp filter: {}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: a fresh private mapping, advised, then unmapped; nothing else refers to it.
    unsafe {
        let page = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(page, libc::MAP_FAILED);
        assert_eq!(libc::madvise(page, 4096, libc::MADV_WIPEONFORK), -1, "the filter refuses wipe-on-fork");
        assert_eq!(libc::madvise(page, 4096, libc::MADV_DONTNEED), 0, "the filter allows other advice");
        libc::munmap(page, 4096);
    }
}

/// This process reads the channel's ring and sends through it while a process that cannot tell
/// its forks apart, and a child it forked, send on the same channel: every message arrives,
/// each sender's in order (before, nothing stopped both from writing into one slot).
#[test]
fn a_process_that_cannot_tell_its_forks_apart_sends_over_the_socket() {
    if child_role().is_some() {
        return;
    }
    with_watchdog(Duration::from_secs(60), || {
        let (tx, rx) = ipc::os_channel::<Tagged>().unwrap();
        // Carries traffic until its receiver here makes a ring and this sender writes in it.
        for seq in 0..20 {
            tx.send((HERE, seq)).unwrap();
            assert_eq!(rx.recv().unwrap(), (HERE, seq));
        }
        let (server, name) = IpcOneShotServer::<IpcSender<IpcSender<Tagged>>>::new().unwrap();
        let child = spawn_child(ENTRY, "filtered", &name);
        let (_, setup) = server.accept().unwrap();
        setup.send(tx.clone()).unwrap();
        let here = std::thread::spawn(move || {
            for seq in 0..COUNT {
                tx.send((HERE, seq)).unwrap();
            }
        });
        let mut next = [0u32; 3];
        while next.iter().any(|&count| count < COUNT) {
            let (who, seq) = rx
                .try_recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|error| panic!("a message was lost ({error:?}); received so far, by sender: {next:?}"));
            assert_eq!(seq, next[who as usize], "sender {who} out of order");
            next[who as usize] += 1;
        }
        here.join().unwrap();
        util::assert_child_succeeds(child);
    });
}
