//! The contract every backend keeps, in one suite that runs unchanged on Linux, in-process
//! (`force-inprocess`) and Windows (the Wine lane), on local channels (`tests/conformance.rs`)
//! and on OS channels from the start (`tests/conformance_os.rs`): channels, select, servers,
//! limits, backpressure, moving receivers, failures. Where a number belongs to a backend, the
//! test asks the channel for it (`buffer_size`) instead of assuming Linux's. `super::ipc` is
//! crossproc's `ipc` with `channel` chosen by the including file.

use std::time::Duration;

use super::ipc::{
    self, IpcOneShotServer, IpcReceiver, IpcReceiverSet, IpcSelectionResult, IpcSender, IpcServer, IpcSharedMemory,
    ReceiveLimits,
};
use crossproc::{IpcError, SendTimeoutError, TryRecvError, TrySelectError, TrySendError};

/// The most messages one select call takes from one receiver (docs/behaviour.md).
const MESSAGES_PER_RECEIVER: usize = 32;

// Channels

#[test]
fn messages_arrive_in_order_then_disconnected() {
    let (tx, rx) = ipc::channel::<u32>().unwrap();
    for i in 0..100 {
        tx.send(i).unwrap();
    }
    drop(tx);
    for i in 0..100 {
        assert_eq!(rx.recv().unwrap(), i);
    }
    assert!(matches!(rx.recv(), Err(IpcError::Disconnected)));
    assert!(matches!(rx.try_recv(), Err(TryRecvError::IpcError(IpcError::Disconnected))));
}

#[test]
fn an_empty_channel_is_empty_not_closed() {
    let (_tx, rx) = ipc::channel::<u32>().unwrap();
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
    assert!(matches!(rx.try_recv_timeout(Duration::from_millis(5)), Err(TryRecvError::Empty)));
}

#[test]
fn a_send_to_a_dropped_receiver_is_disconnected() {
    let (tx, rx) = ipc::channel::<u32>().unwrap();
    drop(rx);
    assert!(matches!(tx.send(1), Err(IpcError::Disconnected)));
    assert!(matches!(tx.try_send(2), Err(TrySendError::Disconnected(2))));
}

#[test]
fn a_sender_in_flight_keeps_the_channel_open() {
    let (tx, rx) = ipc::channel::<u8>().unwrap();
    let (carrier_tx, carrier_rx) = ipc::channel::<IpcSender<u8>>().unwrap();
    carrier_tx.send(tx).unwrap(); // the only sender is inside a message now
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)), "not Disconnected while a sender is in flight");
    carrier_rx.recv().unwrap().send(9).unwrap();
    assert_eq!(rx.recv().unwrap(), 9);
}

#[test]
fn a_moving_receiver_takes_its_queued_messages_along() {
    let (tx, rx) = ipc::channel::<String>().unwrap();
    tx.send("before the move 1".into()).unwrap();
    tx.send("before the move 2".into()).unwrap();
    let (carrier_tx, carrier_rx) = ipc::channel::<IpcReceiver<String>>().unwrap();
    carrier_tx.send(rx).unwrap();
    tx.send("after the move".into()).unwrap();
    let moved = carrier_rx.recv().unwrap();
    assert_eq!(moved.recv().unwrap(), "before the move 1");
    assert_eq!(moved.recv().unwrap(), "before the move 2");
    assert_eq!(moved.recv().unwrap(), "after the move");
}

#[test]
fn shared_memory_travels_with_its_contents() {
    let (tx, rx) = ipc::channel::<Vec<IpcSharedMemory>>().unwrap();
    let regions: Vec<_> = (0..10u8).map(|i| IpcSharedMemory::from_byte(i, 4096 * usize::from(i + 1))).collect();
    tx.send(regions.clone()).unwrap();
    assert_eq!(rx.recv().unwrap(), regions);
}

// Select

#[test]
fn select_on_an_empty_set_is_an_error_not_a_wait_forever() {
    let mut set = IpcReceiverSet::new().unwrap();
    assert_eq!(set.select().unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
    assert!(matches!(set.try_select(), Err(TrySelectError::Empty)));
    assert!(matches!(set.try_select_timeout(Duration::from_millis(5)), Err(TrySelectError::Empty)));
}

#[test]
fn select_takes_a_bounded_number_of_messages_per_receiver_per_call() {
    let mut set = IpcReceiverSet::new().unwrap();
    let (busy_tx, busy_rx) = ipc::channel::<u32>().unwrap();
    let (quiet_tx, quiet_rx) = ipc::channel::<u32>().unwrap();
    let busy = set.add(busy_rx).unwrap();
    let quiet = set.add(quiet_rx).unwrap();
    let total = 3 * MESSAGES_PER_RECEIVER as u32;
    for i in 0..total {
        busy_tx.send(i).unwrap();
    }
    quiet_tx.send(1000).unwrap();
    let (mut next, mut quiet_seen, mut calls) = (0, false, 0);
    while next < total || !quiet_seen {
        let results = set.select().unwrap();
        calls += 1;
        let from_busy = results
            .iter()
            .filter(|result| matches!(result, IpcSelectionResult::MessageReceived(id, _) if *id == busy))
            .count();
        assert!(from_busy <= MESSAGES_PER_RECEIVER, "{from_busy} messages from one receiver in one call");
        for result in results {
            let (id, message) = result.unwrap();
            if id == quiet {
                assert_eq!(message.to::<u32>().unwrap(), 1000);
                quiet_seen = true;
            } else {
                assert_eq!(message.to::<u32>().unwrap(), next, "in order");
                next += 1;
            }
        }
        assert!(calls <= 10, "everything arrives within a few calls");
    }
}

#[test]
fn select_drops_an_over_limit_message_and_keeps_the_channel() {
    let mut set = IpcReceiverSet::new().unwrap();
    set.set_limits(ReceiveLimits { max_message_bytes: 1000, ..ReceiveLimits::DEFAULT });
    let (tx, rx) = ipc::channel::<Vec<u8>>().unwrap();
    let id = set.add(rx).unwrap();
    tx.send(vec![0; 5000]).unwrap(); // over the limit: dropped
    tx.send(vec![1; 10]).unwrap();
    let mut received = Vec::new();
    while received.is_empty() {
        for result in set.select().unwrap() {
            match result {
                IpcSelectionResult::MessageReceived(got, message) => {
                    assert_eq!(got, id);
                    received.push(message.to::<Vec<u8>>().unwrap());
                }
                IpcSelectionResult::ChannelClosed(_) => panic!("a bad message must not close the channel"),
            }
        }
    }
    assert_eq!(received, [vec![1; 10]]);
    drop(tx);
    let closed = set.select().unwrap();
    assert!(matches!(closed[..], [IpcSelectionResult::ChannelClosed(got)] if got == id));
    assert!(matches!(set.try_select(), Err(TrySelectError::Empty)), "a closed channel is reported once");
}

// Limits

#[test]
fn a_receive_over_the_limits_fails_that_message_only() {
    let (tx, rx) = ipc::channel::<(Vec<u8>, Vec<IpcSharedMemory>)>().unwrap();
    rx.set_limits(ReceiveLimits { max_message_bytes: 1000, max_handles: 2, ..ReceiveLimits::DEFAULT });
    tx.send((vec![0; 5000], vec![])).unwrap();
    tx.send((vec![], vec![IpcSharedMemory::from_byte(1, 1); 3])).unwrap();
    tx.send((vec![7], vec![])).unwrap();
    for _ in 0..2 {
        let error = rx.recv().unwrap_err();
        assert!(error.limit_exceeded().is_some(), "{error:?}");
    }
    assert_eq!(rx.recv().unwrap(), (vec![7], vec![]));
}

// Backpressure

#[test]
fn a_full_channel_says_so_and_frees_up_as_it_is_read() {
    let (tx, rx) = ipc::channel::<Vec<u8>>().unwrap();
    tx.set_buffer_size(16 * 1024).unwrap();
    let buffer = tx.buffer_size().unwrap();
    let mut queued = 0;
    let value = loop {
        match tx.try_send(vec![5; 1024]) {
            Ok(()) => queued += 1,
            Err(TrySendError::Full(value)) => break value,
            Err(other) => panic!("{other:?}"),
        }
        assert!(queued * 1024 <= 4 * buffer, "{queued} KiB queued in a {buffer}-byte buffer");
    };
    assert!(queued >= 1);
    assert!(matches!(tx.send_timeout(value, Duration::from_millis(5)), Err(SendTimeoutError::Timeout(_))));
    rx.recv().unwrap();
    let mut sent_again = false;
    for _ in 0..queued {
        sent_again |= tx.try_send(vec![6; 1024]).is_ok();
        rx.recv().unwrap();
    }
    assert!(sent_again, "reading makes room");
}

// Servers

#[test]
fn a_silent_client_does_not_block_try_accept() {
    let (server, name) = IpcServer::<String>::new().unwrap();
    let silent = IpcSender::<String>::connect(name.clone()).unwrap();
    assert!(matches!(server.try_accept(), Err(TryRecvError::Empty)));
    assert!(matches!(server.accept_timeout(Duration::from_millis(20)), Err(TryRecvError::Empty)));
    let speaking = IpcSender::<String>::connect(name).unwrap();
    speaking.send("hello".into()).unwrap();
    let (_, first, _) = server.accept_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(first, "hello");
    silent.send("late".into()).unwrap();
    let (_, first, _) = server.accept_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(first, "late");
}

#[test]
fn a_client_that_leaves_without_a_word_is_skipped() {
    let (server, name) = IpcServer::<u8>::new().unwrap();
    drop(IpcSender::<u8>::connect(name.clone()).unwrap());
    IpcSender::<u8>::connect(name).unwrap().send(4).unwrap();
    assert_eq!(server.accept_timeout(Duration::from_secs(30)).unwrap().1, 4);
}

#[test]
fn a_one_shot_server_hands_over_the_first_message_and_the_channel() {
    let (server, name) = IpcOneShotServer::<String>::new().unwrap();
    let client = std::thread::spawn(move || {
        let tx = IpcSender::<String>::connect(name).unwrap();
        tx.send("first".into()).unwrap();
        tx.send("second".into()).unwrap();
    });
    let (rx, first) = server.accept().unwrap();
    assert_eq!(first, "first");
    assert_eq!(rx.recv().unwrap(), "second");
    client.join().unwrap();
    assert!(matches!(rx.recv(), Err(IpcError::Disconnected)));
}

#[test]
fn many_silent_clients_lock_out_nobody() {
    let (server, name) = IpcServer::<String>::new().unwrap();
    // More admitted-but-silent clients than any backend's waiting room holds (Windows: 60): a
    // new one evicts the oldest instead of being refused.
    let silent: Vec<_> = (0..100).map(|_| IpcSender::<String>::connect(name.clone()).unwrap()).collect();
    let speaking = IpcSender::<String>::connect(name).unwrap();
    speaking.send("spoke at once".into()).unwrap();
    let (_, first, _) = server.accept_timeout(Duration::from_secs(30)).expect("a client that speaks is accepted");
    assert_eq!(first, "spoke at once");
    drop(silent);
}
