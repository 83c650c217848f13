//! Fault tests with real processes: receive limits against a flooding peer, SIGKILL of a peer
//! during descriptor passing and during accept, and descriptor exhaustion (RLIMIT_NOFILE) in a
//! child.

#![cfg(all(target_os = "linux", not(feature = "force-inprocess")))]

mod util;

use std::time::Duration;

use crossproc::ipc::{
    self, IpcOneShotServer, IpcReceiverSet, IpcSelectionResult, IpcSender, IpcServer, IpcSharedMemory, LimitExceeded,
    ReceiveLimits,
};
use crossproc::{IpcError, TryRecvError};
use util::{assert_child_succeeds, child_command, child_role, server_name, spawn_child, with_watchdog, SERVER_VAR};

const ENTRY: &str = "child_entry";

/// Taken by every test here that puts many descriptors in flight (sent, not yet received). The
/// kernel counts those per user and refuses a send over the sender's RLIMIT_NOFILE with
/// ETOOMANYREFS (root is exempt): as an unprivileged user, a flooding child of one test would
/// make another test's send fail (CI's unprivileged lane saw it). They take turns instead.
static IN_FLIGHT: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn in_flight_turn() -> std::sync::MutexGuard<'static, ()> {
    IN_FLIGHT.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
/// What a "connect_and_hang" child prints once its connection is made.
const CONNECTED: &str = "crossproc-test: connected";

/// The child side of every test in this file; does nothing unless started by `spawn_child`.
#[test]
fn child_entry() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        "flood_descriptors" => {
            let tx = IpcSender::<Vec<IpcSharedMemory>>::connect(server_name()).unwrap();
            tx.send(Vec::new()).unwrap();
            let region = IpcSharedMemory::from_bytes(b"flood");
            loop {
                if tx.send(vec![region.clone(); 600]).is_err() {
                    return;
                }
            }
        }
        "connect_and_hang" => {
            let _tx = IpcSender::<u32>::connect(server_name()).unwrap();
            // Tell the parent (through stdout) that the connection is made, then stay silent.
            println!("{CONNECTED}");
            std::thread::sleep(Duration::from_secs(600));
        }
        "exhaust_descriptors" => exhaust_descriptors_child(),
        other => panic!("unknown child role {other}"),
    }
}

#[test]
fn limits_refuse_oversized_and_handle_heavy_messages() {
    let _turn = in_flight_turn();
    let (tx, rx) = ipc::os_channel::<(Vec<u8>, Vec<IpcSharedMemory>)>().unwrap();
    rx.set_limits(ReceiveLimits { max_message_bytes: 1000, max_handles: 10, ..ReceiveLimits::default() });
    assert_eq!(rx.limits().max_handles, 10);
    tx.send((vec![0; 2000], vec![])).unwrap();
    tx.send((vec![0; 300 * 1024], vec![])).unwrap(); // a memfd payload, refused before mapping
    tx.send((vec![], vec![IpcSharedMemory::from_bytes(b"x"); 11])).unwrap();
    tx.send((vec![], vec![IpcSharedMemory::from_bytes(b"x"); 300])).unwrap(); // side socket, never read
    tx.send((vec![1; 10], vec![IpcSharedMemory::from_bytes(b"y"); 10])).unwrap();
    let expected = [
        LimitExceeded::MessageBytes { limit: 1000, actual: 2003 },
        LimitExceeded::MessageBytes { limit: 1000, actual: 300 * 1024 + 4 },
        LimitExceeded::Handles { limit: 10, actual: 11 },
        LimitExceeded::Handles { limit: 10, actual: 300 },
    ];
    for limit in expected {
        let error = rx.recv().unwrap_err();
        assert_eq!(error.limit_exceeded(), Some(limit), "{error}");
        assert!(matches!(&error, IpcError::Io(io) if io.kind() == std::io::ErrorKind::InvalidData));
    }
    let (bytes, regions) = rx.recv().unwrap();
    assert_eq!((bytes.len(), regions.len()), (10, 10));
}

#[test]
fn a_descriptor_flood_costs_only_the_flooding_channel() {
    let _turn = in_flight_turn();
    with_watchdog(Duration::from_secs(60), || {
        let (server, name) = IpcOneShotServer::<Vec<IpcSharedMemory>>::new().unwrap();
        let mut child = spawn_child(ENTRY, "flood_descriptors", &name);
        let (flood, _) = server.accept().unwrap();
        let (tx, rx) = ipc::os_channel::<u32>().unwrap();
        let mut set = IpcReceiverSet::new().unwrap();
        set.set_limits(ReceiveLimits { max_handles: 100, ..ReceiveLimits::default() });
        let flood_id = set.add(flood).unwrap();
        let good_id = set.add(rx).unwrap();
        let before = util::open_fds();
        for i in 0..50 {
            tx.send(i).unwrap();
        }
        let mut good = 0;
        while good < 50 {
            for event in set.select().unwrap() {
                match event {
                    IpcSelectionResult::MessageReceived(id, message) if id == good_id => {
                        assert_eq!(message.to::<u32>().unwrap(), good);
                        good += 1;
                    }
                    IpcSelectionResult::MessageReceived(id, _) => panic!("flood message {id} got through"),
                    IpcSelectionResult::ChannelClosed(id) => assert_eq!(id, flood_id),
                }
            }
        }
        assert!(util::open_fds() <= before + 10, "refused descriptors are closed");
        child.kill().unwrap();
        child.wait().unwrap();
    });
}

#[test]
fn sigkill_during_descriptor_passing() {
    let _turn = in_flight_turn();
    with_watchdog(Duration::from_secs(60), || {
        for _ in 0..3 {
            let (server, name) = IpcOneShotServer::<Vec<IpcSharedMemory>>::new().unwrap();
            let mut child = spawn_child(ENTRY, "flood_descriptors", &name);
            let (rx, _) = server.accept().unwrap();
            rx.set_limits(ReceiveLimits::UNLIMITED);
            for _ in 0..3 {
                assert_eq!(rx.recv().unwrap().len(), 600, "whole messages only");
            }
            child.kill().unwrap();
            child.wait().unwrap();
            loop {
                match rx.recv() {
                    Ok(regions) => assert_eq!(regions.len(), 600, "whole messages only"),
                    Err(IpcError::Disconnected) => break,
                    Err(other) => panic!("unexpected {other}"),
                }
            }
        }
    });
}

#[test]
fn sigkill_of_a_client_during_accept() {
    with_watchdog(Duration::from_secs(60), || {
        let (server, name) = IpcServer::<u32>::new().unwrap();
        let mut hanging = child_command(ENTRY, "connect_and_hang")
            .env(SERVER_VAR, &name)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the child says it has connected, then kill it mid-handshake (connected,
        // no first message).
        util::wait_for_line(&mut hanging, CONNECTED);
        assert!(matches!(server.try_accept(), Err(TryRecvError::Empty)), "a silent client must not be accepted");
        hanging.kill().unwrap();
        hanging.wait().unwrap();
        // The server goes on serving everyone else.
        IpcSender::<u32>::connect(name).unwrap().send(5).unwrap();
        assert_eq!(server.accept_timeout(Duration::from_secs(30)).unwrap().1, 5);
    });
}

/// In the child: lower RLIMIT_NOFILE, hit EMFILE on create and on receive, free descriptors,
/// and check everything works again, the message first refused included.
fn exhaust_descriptors_child() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let parent = IpcSender::<IpcSender<Vec<IpcSender<u8>>>>::connect(server_name()).unwrap();
    let (tx, rx) = ipc::os_channel::<Vec<IpcSender<u8>>>().unwrap();
    parent.send(tx).unwrap();
    let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    let original = getrlimit(Resource::Nofile);
    setrlimit(Resource::Nofile, Rlimit { current: Some(open + 8), maximum: original.maximum }).unwrap();

    // Creating channels fails with a clear error once the table is full.
    let mut kept = Vec::new();
    let error = loop {
        match ipc::os_channel::<u8>() {
            Ok(pair) => kept.push(pair),
            Err(error) => break error,
        }
    };
    assert_eq!(error.raw_os_error(), Some(24), "EMFILE, got {error}");
    // A message with 20 channels cannot be taken in: an error that says why, not a crash, a
    // hang or a peer blamed; and the message stays queued (issue 23).
    let error = rx.recv().unwrap_err();
    assert!(
        matches!(&error, IpcError::Io(io) if io.kind() != std::io::ErrorKind::InvalidData
            && io.to_string().contains("out of descriptors")),
        "{error}"
    );
    // Free descriptors: the channel, and the process, work again, and both messages come whole.
    drop(kept);
    setrlimit(Resource::Nofile, original).unwrap();
    for answer in [1, 2] {
        let senders = rx.recv().unwrap();
        assert_eq!(senders.len(), 20);
        senders[0].send(answer).unwrap();
    }
    assert!(ipc::os_channel::<u8>().is_ok());
}

#[test]
fn descriptor_exhaustion_in_a_child_is_an_error_and_recoverable() {
    let _turn = in_flight_turn();
    with_watchdog(Duration::from_secs(60), || {
        let (server, name) = IpcOneShotServer::<IpcSender<Vec<IpcSender<u8>>>>::new().unwrap();
        let child = spawn_child(ENTRY, "exhaust_descriptors", &name);
        let (_rx, to_child) = server.accept().unwrap();
        let (inner_tx, inner_rx) = ipc::os_channel::<u8>().unwrap();
        to_child.send(vec![inner_tx.clone(); 20]).unwrap();
        to_child.send(vec![inner_tx; 20]).unwrap();
        assert_child_succeeds(child);
        assert_eq!(inner_rx.recv().unwrap(), 1, "the message received at the limit arrived whole");
        assert_eq!(inner_rx.recv().unwrap(), 2, "the second message arrived whole");
    });
}
