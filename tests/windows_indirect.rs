//! Windows indirect pipe messages (`src/sys/windows/frame.rs`, `transfer.rs`), from review 8.
//!
//! 1. A receiver moved to another process with a backlog whose pipe message is just under, at
//!    and just over the indirect threshold (128 KiB), and with 8 MB: everything arrives, in order.
//! 2. A hostile client's hello that is an indirect message naming another process (its own)
//!    and a handle value of the server's: refused before the value is taken (R8-3: the first
//!    indirect form named no process, and the server closed that handle of its own).

#![cfg(all(windows, not(feature = "force-inprocess")))]

mod util;

use crossproc::ipc::{self, IpcOneShotServer, IpcReceiver, IpcSender};
use util::{child_command, child_role, server_name, with_watchdog};

const ENTRY: &str = "child_entry";
const KIB: usize = 1024;
const HANDLE_VAR: &str = "CROSSPROC_TEST_HANDLE";

/// The backlog totals, one receiver each: around the indirect threshold, then 8 MB.
fn totals() -> Vec<usize> {
    (118..=140).map(|k| k * KIB).chain([8 << 20]).collect()
}

/// The backlog's messages for `total` bytes: none over 60 KiB (each travels inline).
fn messages(round: usize, total: usize) -> Vec<Vec<u8>> {
    let count = total.div_ceil(60 * KIB);
    (0..count)
        .map(|index| {
            let len = total / count + if index == count - 1 { total % count } else { 0 };
            (0..len).map(|at| (at + index * 7 + round * 13) as u8).collect()
        })
        .collect()
}

#[test]
fn child_entry() {
    match child_role().as_deref() {
        Some("mover") => {
            let to_parent = IpcSender::<IpcReceiver<Vec<u8>>>::connect(server_name()).unwrap();
            for (round, total) in totals().into_iter().enumerate() {
                // Around the threshold the backlog waits in the pipe (an OS channel); 8 MB is more
                // than the pipe holds, so it waits in this process (a local channel).
                let (tx, rx) =
                    if total < (1 << 20) { ipc::os_channel::<Vec<u8>>() } else { ipc::channel::<Vec<u8>>() }.unwrap();
                tx.set_buffer_size(16 << 20).unwrap();
                for message in messages(round, total) {
                    tx.send(message).unwrap();
                }
                to_parent.send(rx).unwrap();
                // After the receiver left: reaches it in the parent, after its backlog.
                tx.send(vec![0xEE; round]).unwrap();
            }
            // A local channel's backlog beyond what the pipe takes is sent by a thread of this
            // process: stay until the parent has read everything (it closes our stdin then).
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
        }
        Some("forger") => forge_indirect_hello(),
        _ => {}
    }
}

#[test]
fn a_moving_receivers_backlog_around_the_indirect_threshold_arrives_whole() {
    if child_role().is_some() {
        return;
    }
    with_watchdog(std::time::Duration::from_secs(120), || {
        let (server, name) = IpcOneShotServer::<IpcReceiver<Vec<u8>>>::new().unwrap();
        let mut child = child_command(ENTRY, "mover")
            .env(util::SERVER_VAR, &name)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (stream, first) = server.accept().unwrap();
        let mut next = Some(first);
        for (round, total) in totals().into_iter().enumerate() {
            let rx = next.take().unwrap_or_else(|| stream.recv().unwrap());
            for (index, expected) in messages(round, total).into_iter().enumerate() {
                let got = rx.recv().unwrap_or_else(|error| panic!("total {total}: message {index}: {error:?}"));
                assert!(got == expected, "total {total}: message {index} differs");
            }
            assert_eq!(rx.recv().unwrap(), vec![0xEE; round], "total {total}: the message after the move");
        }
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success());
    });
}

/// The hostile client: writes, as its hello, "CXW1" | 0xFFFFFFFF | its own pid | value | 16,
/// then waits for the server to hang up.
fn forge_indirect_hello() {
    use windows_sys::Win32::Foundation::{GENERIC_READ, GENERIC_WRITE};
    use windows_sys::Win32::Storage::FileSystem::{CreateFileW, ReadFile, WriteFile, OPEN_EXISTING};
    use windows_sys::Win32::System::Pipes::{SetNamedPipeHandleState, PIPE_READMODE_MESSAGE};
    let value: u64 = std::env::var(HANDLE_VAR).unwrap().parse().unwrap();
    let path: Vec<u16> = server_name().encode_utf16().chain(Some(0)).collect();
    let mut message = b"CXW1".to_vec();
    message.extend_from_slice(&u32::MAX.to_le_bytes());
    message.extend_from_slice(&std::process::id().to_le_bytes());
    message.extend_from_slice(&value.to_le_bytes());
    message.extend_from_slice(&16u64.to_le_bytes());
    // SAFETY: plain calls on a pipe this function opens; every pointer is valid for its call.
    unsafe {
        let pipe = CreateFileW(
            path.as_ptr(),
            GENERIC_READ | GENERIC_WRITE,
            0,
            std::ptr::null(),
            OPEN_EXISTING,
            0,
            std::ptr::null_mut(),
        );
        assert!(!pipe.is_null() && pipe as isize != -1, "open the server's pipe");
        let mode = PIPE_READMODE_MESSAGE;
        assert_ne!(SetNamedPipeHandleState(pipe, &mode, std::ptr::null(), std::ptr::null()), 0);
        let mut written = 0;
        assert_ne!(WriteFile(pipe, message.as_ptr(), message.len() as u32, &mut written, std::ptr::null_mut()), 0);
        // The server refuses the hello and closes this instance: the read fails then.
        let mut buffer = [0u8; 64];
        let mut read = 0;
        let answered = ReadFile(pipe, buffer.as_mut_ptr(), 64, &mut read, std::ptr::null_mut());
        assert_eq!(answered, 0, "the server answered a forged hello");
    }
}

#[test]
fn a_forged_indirect_hello_does_not_close_a_handle_of_the_server() {
    use windows_sys::Win32::Foundation::GetHandleInformation;
    use windows_sys::Win32::System::Threading::CreateEventW;
    if child_role().is_some() {
        return;
    }
    with_watchdog(std::time::Duration::from_secs(60), || {
        // A handle of this process that no message ever carried.
        // SAFETY: a new unnamed event; checked right below.
        let event = unsafe { CreateEventW(std::ptr::null(), 1, 0, std::ptr::null()) };
        assert!(!event.is_null());
        let value = event as usize as u64;
        let alive = || {
            let mut flags = 0;
            // SAFETY: only asks whether the value names an open handle.
            unsafe { GetHandleInformation(value as usize as _, &mut flags) != 0 }
        };
        assert!(alive());
        let (server, name) = IpcOneShotServer::<()>::new().unwrap();
        let status = child_command(ENTRY, "forger")
            .env(util::SERVER_VAR, &name)
            .env(HANDLE_VAR, value.to_string())
            .status()
            .unwrap();
        assert!(status.success(), "forger: {status}");
        let survived = alive();
        drop(server);
        assert!(survived, "a client's indirect hello that named another process closed a handle of the server's");
    });
}
