//! No descriptor leaks on any path: every scenario returns the process to the descriptor count
//! it started with (counted in `/proc/self/fd` on Linux, by probing the handle table on Windows).
//! The tests here run one at a time.

#![cfg(all(any(target_os = "linux", windows), not(feature = "force-inprocess")))]

mod util;

use std::sync::Mutex;
use std::time::Duration;

use crossproc::ipc::{self, IpcOneShotServer, IpcReceiver, IpcReceiverSet, IpcSender, IpcSharedMemory};
use crossproc::router::RouterProxy;
use util::open_fds;

static SERIAL: Mutex<()> = Mutex::new(());

/// Runs `scenario` twice (the first run may allocate lazily created, kept descriptors such as
/// thread-local state) and asserts the second run leaves the count unchanged. A scenario waits
/// for everything it stops (a server's acceptor, a router thread) before it returns, so the
/// count is exact the moment it ends.
fn assert_no_leak(scenario: impl Fn()) {
    let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    scenario();
    let before = open_fds();
    scenario();
    assert_eq!(open_fds(), before, "descriptors leaked");
}

#[test]
fn channels_messages_and_shared_memory() {
    assert_no_leak(|| {
        let (tx, rx) = ipc::os_channel::<(Vec<IpcSender<u8>>, IpcSharedMemory, Vec<u8>)>().unwrap();
        let inner: Vec<_> = (0..300).map(|_| ipc::os_channel::<u8>().unwrap()).collect();
        let senders = inner.iter().map(|(s, _)| s.clone()).collect();
        tx.send((senders, IpcSharedMemory::from_byte(1, 10_000), vec![5; 3 << 20])).unwrap();
        let (senders, region, bytes) = rx.recv().unwrap();
        assert_eq!((senders.len(), region.len(), bytes.len()), (300, 10_000, 3 << 20));
    });
}

#[test]
fn messages_dropped_unread_and_errors() {
    assert_no_leak(|| {
        let (tx, rx) = ipc::os_channel::<(IpcReceiver<u8>, IpcSharedMemory)>().unwrap();
        for _ in 0..10 {
            let (_t, r) = ipc::os_channel::<u8>().unwrap();
            tx.send((r, IpcSharedMemory::from_bytes(b"x"))).unwrap();
        }
        // A receiver decoded as the wrong type closes every descriptor the message carried.
        let wrong: IpcReceiver<(u8, u8, u8)> = rx.to_opaque().to();
        assert!(wrong.recv().is_err());
        drop(wrong); // nine more messages with descriptors die with the channel
        drop(tx);
    });
}

#[test]
fn receiver_sets_and_one_shot_servers() {
    assert_no_leak(|| {
        let mut set = IpcReceiverSet::new().unwrap();
        let mut senders = Vec::new();
        for _ in 0..20 {
            let (tx, rx) = ipc::os_channel::<u8>().unwrap();
            set.add(rx).unwrap();
            senders.push(tx);
        }
        senders.truncate(10);
        let mut closed = 0;
        while closed < 10 {
            closed += set.select().unwrap().len();
        }
        drop(set);

        let (server, name) = IpcOneShotServer::<u8>::new().unwrap();
        let client = std::thread::spawn(move || IpcSender::<u8>::connect(name).unwrap().send(1).unwrap());
        let (rx, first) = server.accept().unwrap();
        assert_eq!(first, 1);
        client.join().unwrap();
        drop(rx);
        let (server, _name) = IpcOneShotServer::<u8>::new().unwrap();
        drop(server);
    });
}

#[test]
fn a_router_that_shuts_down() {
    assert_no_leak(|| {
        let router = RouterProxy::new();
        let (tx, rx) = ipc::os_channel::<u8>().unwrap();
        let routed = router.route_ipc_receiver_to_new_crossbeam_receiver(rx);
        tx.send(1).unwrap();
        assert_eq!(routed.recv_timeout(Duration::from_secs(10)).unwrap(), 1);
        router.shutdown();
    });
}

#[test]
fn the_count_sees_a_channel_open_and_close() {
    let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let before = open_fds();
    let channel = ipc::os_channel::<u8>().unwrap();
    assert!(open_fds() > before, "a new channel holds descriptors the count must see");
    drop(channel);
    assert_eq!(open_fds(), before);
}

/// Mappings of pooled payload memfds in this process (`/proc/self/maps`).
#[cfg(target_os = "linux")]
fn payload_mappings() -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines().filter(|line| line.contains("memfd:crossproc-payload")).count()
}

/// A receiver keeps mappings of the memfds its senders reuse, and lets them go once every
/// sender is gone; the senders' pools go with the senders.
#[test]
#[cfg(target_os = "linux")]
fn payload_mappings_go_with_the_channel() {
    let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let (tx, rx) = ipc::os_bytes_channel().unwrap();
    for round in 0..3u8 {
        tx.send(&vec![round; 1 << 20]).unwrap();
        assert_eq!(rx.recv().unwrap(), vec![round; 1 << 20]);
    }
    assert!(payload_mappings() >= 2, "the sender's pool and the receiver keep theirs");
    drop(tx);
    assert!(rx.recv().is_err());
    assert_eq!(payload_mappings(), 0);
}
