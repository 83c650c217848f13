//! Real child processes: this test executable re-runs itself as the child (see `util`), the
//! child connects to a one-shot server, and the two exchange typed values, channels, byte
//! messages and shared memory. Also: peers killed with SIGKILL mid-stream.

#![cfg(all(any(target_os = "linux", windows), not(feature = "force-inprocess")))]

mod util;

use std::time::Duration;

use crossproc::ipc::{self, IpcBytesSender, IpcOneShotServer, IpcReceiver, IpcSender, IpcSharedMemory};
use crossproc::IpcError;
use serde::{Deserialize, Serialize};
use util::{assert_child_succeeds, child_role, server_name, spawn_child, with_watchdog};

const ENTRY: &str = "child_entry";

/// What the parent asks an "echo" child to do.
#[derive(Serialize, Deserialize)]
enum Command {
    Echo(String, IpcSender<String>),
    Sum(IpcSharedMemory, IpcSender<u64>),
    EchoBytes(Vec<u8>, IpcBytesSender),
    Double(IpcReceiver<u32>, IpcSender<u32>),
    MakeRegion(u8, usize, IpcSender<IpcSharedMemory>),
    SendMany(u32, IpcSender<u32>),
}

/// The child side of every test in this file; does nothing unless started by `spawn_child`.
#[test]
fn child_entry() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        "echo" => echo_child(),
        "stream_until_killed" => stream_until_killed_child(),
        other => panic!("unknown child role {other}"),
    }
}

fn echo_child() {
    let (tx, rx) = ipc::channel::<Command>().unwrap();
    IpcSender::<IpcSender<Command>>::connect(server_name()).unwrap().send(tx).unwrap();
    while let Ok(command) = rx.recv() {
        match command {
            Command::Echo(text, reply) => reply.send(text).unwrap(),
            Command::Sum(region, reply) => reply.send(region.iter().map(|&b| u64::from(b)).sum()).unwrap(),
            Command::EchoBytes(bytes, reply) => reply.send(&bytes).unwrap(),
            Command::Double(input, output) => {
                while let Ok(value) = input.recv() {
                    output.send(value * 2).unwrap();
                }
            }
            Command::MakeRegion(byte, len, reply) => reply.send(IpcSharedMemory::from_byte(byte, len)).unwrap(),
            Command::SendMany(count, reply) => {
                for i in 0..count {
                    reply.send(i).unwrap();
                }
            }
        }
    }
}

/// A message whose every byte is derived from its sequence number, so a torn one is detectable.
fn patterned(seq: u32, len: usize) -> Vec<u8> {
    let mut data = vec![seq as u8; len];
    data[..4].copy_from_slice(&seq.to_le_bytes());
    data
}

fn check_patterned(data: &[u8]) -> u32 {
    let seq = u32::from_le_bytes(data[..4].try_into().unwrap());
    assert!(data[4..].iter().all(|&b| b == seq as u8), "torn message {seq}");
    seq
}

fn stream_until_killed_child() {
    let tx = IpcSender::<Vec<u8>>::connect(server_name()).unwrap();
    tx.send(Vec::new()).unwrap();
    for seq in 0.. {
        // Alternate inline packets and memfd payloads so the kill can land in either path.
        let len = if seq % 2 == 0 { 1000 } else { 3 << 20 };
        if tx.send(patterned(seq, len)).is_err() {
            return;
        }
    }
}

/// Starts an echo child and returns its command sender.
fn start_echo_child() -> (IpcSender<Command>, std::process::Child) {
    let (server, name) = IpcOneShotServer::<IpcSender<Command>>::new().unwrap();
    let child = spawn_child(ENTRY, "echo", &name);
    let (_rx, commands) = server.accept().unwrap();
    (commands, child)
}

#[test]
fn a_child_echoes_values_bytes_and_shared_memory() {
    with_watchdog(Duration::from_secs(60), || {
        let (commands, child) = start_echo_child();
        let (reply_tx, reply_rx) = ipc::channel().unwrap();
        commands.send(Command::Echo("hello child".into(), reply_tx)).unwrap();
        assert_eq!(reply_rx.recv().unwrap(), "hello child");

        let (sum_tx, sum_rx) = ipc::channel().unwrap();
        commands.send(Command::Sum(IpcSharedMemory::from_byte(3, 1 << 20), sum_tx)).unwrap();
        assert_eq!(sum_rx.recv().unwrap(), 3 << 20);

        let (btx, brx) = ipc::bytes_channel().unwrap();
        for len in [0, 10, 70_000, 8 << 20] {
            let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            commands.send(Command::EchoBytes(data.clone(), btx.clone())).unwrap();
            assert_eq!(brx.recv().unwrap(), data);
        }

        let (region_tx, region_rx) = ipc::channel().unwrap();
        commands.send(Command::MakeRegion(0xAB, 5 << 20, region_tx)).unwrap();
        let region = region_rx.recv().unwrap();
        assert_eq!(region.len(), 5 << 20);
        assert!(region.iter().all(|&b| b == 0xAB));

        drop(commands);
        assert_child_succeeds(child);
    });
}

#[test]
fn a_receiver_moves_to_a_child_with_messages_queued() {
    with_watchdog(Duration::from_secs(60), || {
        let (commands, child) = start_echo_child();
        let (input_tx, input_rx) = ipc::channel::<u32>().unwrap();
        let (output_tx, output_rx) = ipc::channel::<u32>().unwrap();
        for i in 0..100 {
            input_tx.send(i).unwrap();
        }
        commands.send(Command::Double(input_rx, output_tx)).unwrap();
        for i in 100..200 {
            input_tx.send(i).unwrap();
        }
        drop(input_tx);
        for i in 0..200 {
            assert_eq!(output_rx.recv().unwrap(), i * 2);
        }
        drop(commands);
        // The child dropped its only output sender when the input closed.
        assert!(matches!(output_rx.recv(), Err(IpcError::Disconnected)));
        assert_child_succeeds(child);
    });
}

#[test]
fn one_sender_cloned_into_several_children() {
    with_watchdog(Duration::from_secs(60), || {
        let (tx, rx) = ipc::channel::<u32>().unwrap();
        let mut children = Vec::new();
        for _ in 0..3 {
            let (commands, child) = start_echo_child();
            commands.send(Command::SendMany(500, tx.clone())).unwrap();
            children.push((commands, child));
        }
        drop(tx);
        let mut counts = [0u32; 500];
        for _ in 0..1500 {
            counts[rx.recv().unwrap() as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c == 3));
        for (commands, child) in children {
            drop(commands);
            assert_child_succeeds(child);
        }
        assert!(matches!(rx.recv(), Err(IpcError::Disconnected)));
    });
}

#[test]
fn a_peer_killed_mid_stream_gives_whole_messages_then_disconnected() {
    with_watchdog(Duration::from_secs(60), || {
        for round in 0..3 {
            let (server, name) = IpcOneShotServer::<Vec<u8>>::new().unwrap();
            let mut child = spawn_child(ENTRY, "stream_until_killed", &name);
            let (rx, first) = server.accept().unwrap();
            assert!(first.is_empty());
            let mut expected = 0;
            for _ in 0..(4 + round * 3) {
                assert_eq!(check_patterned(&rx.recv().unwrap()), expected);
                expected += 1;
            }
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            loop {
                match rx.recv() {
                    Ok(message) => {
                        assert_eq!(check_patterned(&message), expected);
                        expected += 1;
                    }
                    Err(IpcError::Disconnected) => break,
                    Err(other) => panic!("unexpected error after SIGKILL: {other}"),
                }
            }
        }
    });
}

#[test]
#[cfg(target_os = "linux")] // Unix socket files and directory modes
fn a_one_shot_server_name_is_private_and_removed_after_accept() {
    use std::os::unix::fs::PermissionsExt;
    let (server, name) = IpcOneShotServer::<u8>::new().unwrap();
    let dir = std::path::Path::new(&name).parent().unwrap().to_owned();
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "server directory must be private");
    let client = std::thread::spawn(move || IpcSender::<u8>::connect(name).unwrap().send(1).unwrap());
    let (_rx, first) = server.accept().unwrap();
    assert_eq!(first, 1);
    client.join().unwrap();
    assert!(!dir.exists(), "server directory must be removed after accept");

    let (server, name) = IpcOneShotServer::<u8>::new().unwrap();
    drop(server);
    assert!(!std::path::Path::new(&name).exists(), "server socket must be removed on drop");
    assert!(IpcSender::<u8>::connect(name).is_err());
}

#[test]
fn a_client_that_connects_and_leaves_gives_disconnected() {
    let (server, name) = IpcOneShotServer::<u8>::new().unwrap();
    let client = std::thread::spawn(move || drop(IpcSender::<u8>::connect(name).unwrap()));
    assert!(matches!(server.accept(), Err(IpcError::Disconnected)));
    client.join().unwrap();
}
