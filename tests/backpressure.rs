//! Backpressure: `try_send` and `send_timeout` report a full channel instead of blocking, a
//! message is sent whole or not at all, and nothing is lost or duplicated.

mod util;

use std::time::{Duration, Instant};

use crossproc::ipc::{self, IpcSender};
use crossproc::{SendTimeoutError, TrySendError};
use util::child_role;
#[cfg(all(any(target_os = "linux", windows), not(feature = "force-inprocess")))]
use {crossproc::ipc::IpcCommandExt, util::child_command, util::with_watchdog};

#[cfg(all(any(target_os = "linux", windows), not(feature = "force-inprocess")))]
const ENTRY: &str = "child_entry";

/// The child side of every test in this file; does nothing unless started as a child.
#[test]
fn child_entry() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        // Sleeps before reading, so the parent fills the channel; then checks every message.
        "paused_reader" => {
            let from_parent = ipc::inherited_receiver::<(u64, Vec<u8>)>().unwrap();
            std::thread::sleep(Duration::from_millis(300));
            let mut expected = 0;
            while let Ok((seq, data)) = from_parent.recv() {
                assert_eq!(seq, expected, "in order, nothing lost or duplicated");
                assert_eq!(data, vec![7; 100]);
                expected += 1;
            }
            assert!(expected > 0);
        }
        other => panic!("unknown child role {other}"),
    }
}

/// Fills `tx` with numbered messages until it reports full; returns how many went in.
fn fill(tx: &IpcSender<(u64, Vec<u8>)>, payload: usize) -> u64 {
    let mut sent = 0;
    loop {
        match tx.try_send((sent, vec![0xAB; payload])) {
            Ok(()) => sent += 1,
            Err(TrySendError::Full((seq, _))) => {
                assert_eq!(seq, sent, "the value comes back");
                return sent;
            }
            Err(other) => panic!("unexpected {other}"),
        }
        assert!(sent < 1_000_000, "a channel whose reader stopped must fill up");
    }
}

#[test]
fn a_stopped_reader_fills_the_channel_and_reading_frees_it() {
    let (tx, rx) = ipc::channel::<(u64, Vec<u8>)>().unwrap();
    let first = fill(&tx, 64);
    assert!(first > 0);
    // Reading one message makes room again; nothing was lost or duplicated.
    assert_eq!(rx.recv().unwrap().0, 0);
    let mut next = first;
    while tx.try_send((next, vec![0xAB; 64])).is_ok() {
        next += 1;
    }
    assert!(next > first, "room after reading");
    for expected in 1..next {
        let (seq, data) = rx.recv().unwrap();
        assert_eq!(seq, expected);
        assert_eq!(data, vec![0xAB; 64]);
    }
    assert!(rx.try_recv().is_err(), "nothing extra");
}

#[test]
fn the_buffer_size_bounds_what_is_in_flight() {
    let (small_tx, _small_rx) = ipc::channel::<(u64, Vec<u8>)>().unwrap();
    small_tx.set_buffer_size(16 * 1024).unwrap();
    let (large_tx, _large_rx) = ipc::channel::<(u64, Vec<u8>)>().unwrap();
    large_tx.set_buffer_size(1024 * 1024).unwrap();
    let small = fill(&small_tx, 1000);
    let large = fill(&large_tx, 1000);
    assert!(small < large, "a smaller buffer holds fewer messages ({small} vs {large})");
    assert!(small_tx.buffer_size().unwrap() < large_tx.buffer_size().unwrap());
}

#[test]
fn large_messages_are_all_or_nothing_under_backpressure() {
    let (tx, rx) = ipc::channel::<(u64, Vec<u8>)>().unwrap();
    tx.set_buffer_size(64 * 1024).unwrap();
    // Memfd payloads (over 200 KiB) cost the buffer only their header, so fill with those.
    let sent = fill(&tx, 300 * 1024);
    assert!(sent > 0);
    for expected in 0..sent {
        let (seq, data) = rx.recv().unwrap();
        assert_eq!(seq, expected);
        assert_eq!(data.len(), 300 * 1024);
    }
    assert!(rx.try_recv().is_err());
}

#[test]
fn send_timeout_waits_then_gives_the_value_back() {
    let (tx, rx) = ipc::channel::<(u64, Vec<u8>)>().unwrap();
    let sent = fill(&tx, 64);
    let start = Instant::now();
    match tx.send_timeout((sent, vec![1]), Duration::from_millis(50)) {
        Err(SendTimeoutError::Timeout((seq, _))) => assert_eq!(seq, sent),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(start.elapsed() >= Duration::from_millis(50));
    // A reader that catches up lets a waiting send through.
    let reader = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        for _ in 0..=sent {
            rx.recv().unwrap();
        }
    });
    tx.send_timeout((sent, vec![1]), Duration::from_secs(30)).unwrap();
    reader.join().unwrap();
}

#[test]
fn a_gone_receiver_is_disconnected_not_full() {
    let (tx, rx) = ipc::channel::<u8>().unwrap();
    drop(rx);
    assert!(matches!(tx.try_send(1), Err(TrySendError::Disconnected(1))));
    assert!(matches!(tx.send_timeout(2, Duration::from_millis(5)), Err(SendTimeoutError::Disconnected(2))));
    let (btx, brx) = ipc::bytes_channel().unwrap();
    drop(brx);
    assert!(btx.try_send(b"x").unwrap_err().is_disconnected());
}

#[test]
fn bytes_senders_report_full_too() {
    let (btx, brx) = ipc::bytes_channel().unwrap();
    let mut sent = 0u32;
    while btx.try_send(&sent.to_le_bytes()).is_ok() {
        sent += 1;
        assert!(sent < 1_000_000);
    }
    assert!(btx.send_timeout(b"late", Duration::from_millis(10)).unwrap_err().is_timeout());
    for expected in 0..sent {
        assert_eq!(brx.recv().unwrap(), expected.to_le_bytes());
    }
    btx.try_send(b"room again").unwrap();
    assert_eq!(brx.recv().unwrap(), b"room again");
}

#[test]
#[cfg(all(any(target_os = "linux", windows), not(feature = "force-inprocess")))]
fn a_slow_reader_in_another_process() {
    with_watchdog(Duration::from_secs(60), || {
        let (mut child, to_child) =
            child_command(ENTRY, "paused_reader").spawn_with_channel::<(u64, Vec<u8>)>().unwrap();
        // The child sleeps before reading, so the channel fills up.
        let sent = {
            let mut sent = 0;
            while to_child.try_send((sent, vec![7; 100])).is_ok() {
                sent += 1;
                assert!(sent < 1_000_000);
            }
            sent
        };
        assert!(sent > 0);
        drop(to_child);
        let status = child.wait().unwrap();
        assert!(status.success(), "the child received all {sent} messages in order");
    });
}

#[test]
#[cfg(not(windows))]
fn a_receiver_gone_with_messages_unread_is_a_broken_pipe() {
    let (btx, brx) = ipc::bytes_channel().unwrap();
    btx.send(b"never read").unwrap();
    drop(brx);
    assert_eq!(btx.send(b"late").unwrap_err().kind(), std::io::ErrorKind::BrokenPipe);
}

/// Large payloads travel in memfds, but each claims room in the channel's buffer (64 KiB for a
/// fresh memfd), so a receiver that falls behind cannot make them pile up without bound.
#[cfg(all(target_os = "linux", not(feature = "force-inprocess")))]
mod large_payloads_in_flight {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const CHUNK: usize = 64 << 20;
    /// More `CHUNK`s in flight than this means the bound does not hold (the default buffer,
    /// about 208 KiB, holds about four 64 KiB claims).
    const MOST: usize = 6;

    fn payload(seq: usize) -> Vec<u8> {
        vec![seq as u8 + 1; CHUNK]
    }

    /// Fills `tx` with `CHUNK`s until it reports full; returns how many went in.
    fn fill(tx: &ipc::IpcBytesSender) -> usize {
        let mut sent = 0;
        while tx.try_send(&payload(sent)).is_ok() {
            sent += 1;
            assert!(sent <= MOST, "more than {MOST} payloads of 64 MiB in flight");
        }
        sent
    }

    #[test]
    fn are_bounded_and_reading_one_makes_room() {
        let (tx, rx) = ipc::bytes_channel().unwrap();
        let sent = fill(&tx);
        assert!(sent >= 2, "at least two payloads of any size fit ({sent})");
        assert!(tx.send_timeout(&payload(sent), Duration::from_millis(30)).unwrap_err().is_timeout());
        assert!(rx.recv().unwrap() == payload(0));
        tx.try_send(&payload(sent)).unwrap();
        for seq in 1..=sent {
            assert!(rx.recv().unwrap() == payload(seq), "message {seq}");
        }
    }

    #[test]
    fn a_smaller_buffer_lets_fewer_through() {
        let (tx, rx) = ipc::bytes_channel().unwrap();
        let default = fill(&tx);
        drop(rx);
        let (tx, _rx) = ipc::bytes_channel().unwrap();
        let full_size = tx.buffer_size().unwrap();
        // Linux doubles the size it is given (for its own bookkeeping): this halves the buffer.
        tx.set_buffer_size(full_size / 4).unwrap();
        assert!(tx.buffer_size().unwrap() <= full_size / 2);
        let mut sent = 0;
        while tx.try_send(&payload(sent)).is_ok() {
            sent += 1;
        }
        assert!(sent < default, "half the buffer, fewer payloads in flight ({sent} vs {default})");
    }

    #[test]
    fn a_blocked_send_goes_once_the_receiver_reads() {
        let (tx, rx) = ipc::bytes_channel().unwrap();
        let probe = fill(&tx);
        for seq in 0..probe {
            assert!(rx.recv().unwrap() == payload(seq));
        }
        let sent = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = sent.clone();
        let total = probe + 2;
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let sender = std::thread::spawn(move || {
            tid_tx.send(util::thread_id()).unwrap();
            for seq in 0..total {
                tx.send(&payload(seq)).unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
        let tid = tid_rx.recv().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while sent.load(Ordering::SeqCst) < probe {
            assert!(Instant::now() < deadline, "the first {probe} sends must fit the emptied buffer");
            std::thread::yield_now();
        }
        util::wait_until_asleep(tid, "the send after the buffer filled up");
        assert_eq!(sent.load(Ordering::SeqCst), probe, "the last two sends wait for room");
        for seq in 0..total {
            assert!(rx.recv().unwrap() == payload(seq), "message {seq}");
        }
        sender.join().unwrap();
    }

    #[test]
    fn a_blocked_send_ends_when_the_receiver_goes() {
        let (tx, rx) = ipc::bytes_channel().unwrap();
        let sent = fill(&tx);
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let sender = std::thread::spawn(move || {
            tid_tx.send(util::thread_id()).unwrap();
            tx.send(&payload(sent)).unwrap_err()
        });
        // The receiver goes only once the send is blocked, waiting for room.
        util::wait_until_asleep(tid_rx.recv().unwrap(), "a send into a full buffer");
        drop(rx);
        assert_eq!(sender.join().unwrap().kind(), std::io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn a_buffer_smaller_than_the_claim_still_bounds_them() {
        let (tx, _rx) = ipc::bytes_channel().unwrap();
        // Smaller than a fresh payload's 64 KiB claim: the claim shrinks to fit, rather than
        // leaving only the header packet (about 1 KiB of buffer each, so dozens in flight).
        tx.set_buffer_size(16 << 10).unwrap();
        let payload = vec![7u8; 1 << 20];
        let mut sent = 0;
        while tx.try_send(&payload).is_ok() {
            sent += 1;
            assert!(sent <= 4, "more than 4 fresh payloads in a 16 KiB buffer");
        }
        assert!(sent >= 1);
    }

    #[test]
    fn a_tiny_buffer_still_takes_one_large_payload() {
        let (tx, rx) = ipc::bytes_channel().unwrap();
        tx.set_buffer_size(4096).unwrap();
        tx.send(&payload(0)).unwrap();
        assert!(rx.recv().unwrap() == payload(0));
    }
}
