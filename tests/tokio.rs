//! Feature `tokio`: receivers, senders, select and accept on tokio's reactor, with real child
//! processes; cancellation safety; many receivers on a current-thread runtime.

#![cfg(all(feature = "tokio", target_os = "linux", not(feature = "force-inprocess")))]

mod util;

use std::time::Duration;

use crossproc::ipc::{self, IpcCommandExt, IpcReceiver, IpcReceiverSet, IpcSelectionResult, IpcSender, IpcServer};
use crossproc::tokio::{
    AsyncIpcBytesReceiver, AsyncIpcBytesSender, AsyncIpcReceiver, AsyncIpcReceiverSet, AsyncIpcSender, AsyncIpcServer,
    AsyncOpaqueIpcReceiver,
};
use crossproc::IpcError;
use futures::StreamExt;
use util::{child_command, child_role, server_name, spawn_child};

const ENTRY: &str = "child_entry";

/// The child side of every test in this file; does nothing unless started as a child.
#[test]
fn child_entry() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        "count_to_1000" => {
            let tx = ipc::inherited_sender::<u32>().unwrap();
            for i in 0..1000 {
                tx.send(i).unwrap();
            }
        }
        "send_1_to_5_on_the_sender_received" => {
            let senders = ipc::inherited_receiver::<IpcSender<u32>>().unwrap();
            let tx = senders.recv().unwrap();
            for i in 1..=5 {
                tx.send(i).unwrap();
            }
        }
        "local_async_receiver" => local_async_receiver_child(),
        "client" => {
            let tx = IpcSender::<u32>::connect(server_name()).unwrap();
            tx.send(std::process::id()).unwrap();
        }
        other => panic!("unknown child role {other}"),
    }
}

#[tokio::test]
async fn a_stream_from_a_child_process_ends_when_it_exits() {
    let (mut child, rx) = child_command(ENTRY, "count_to_1000").spawn_with_receiver::<u32>().unwrap();
    let mut rx = AsyncIpcReceiver::new(rx).unwrap();
    let mut expected = 0;
    while let Some(value) = rx.next().await {
        assert_eq!(value.unwrap(), expected);
        expected += 1;
    }
    assert_eq!(expected, 1000);
    assert!(matches!(rx.recv().await, Err(IpcError::Disconnected)));
    assert!(child.wait().unwrap().success());
}

#[tokio::test(flavor = "current_thread")]
async fn many_receivers_on_one_thread() {
    let mut senders = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..300u64 {
        let (tx, rx) = ipc::channel::<u64>().unwrap();
        senders.push(tx);
        let rx = AsyncIpcReceiver::new(rx).unwrap();
        tasks.push(tokio::spawn(async move {
            let mut sum = 0;
            while let Ok(value) = rx.recv().await {
                assert_eq!(value % 300, i);
                sum += value;
            }
            sum
        }));
    }
    // A plain thread sends, so the runtime's only thread does nothing but wait and receive.
    let producer = std::thread::spawn(move || {
        for round in 0..10u64 {
            for (i, tx) in senders.iter().enumerate() {
                tx.send(round * 300 + i as u64).unwrap();
            }
        }
    });
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    producer.join().unwrap();
    assert_eq!(total, (0..3000u64).sum::<u64>());
}

#[tokio::test(flavor = "current_thread")]
async fn dropping_recv_futures_loses_nothing() {
    let (tx, rx) = ipc::channel::<u32>().unwrap();
    let rx = AsyncIpcReceiver::new(rx).unwrap();
    let (go, wait_for_go) = std::sync::mpsc::channel::<()>();
    let producer = std::thread::spawn(move || {
        // Not before a receive future has been dropped mid-wait (below).
        wait_for_go.recv().unwrap();
        for i in 0..2000 {
            tx.send(i).unwrap();
            if i % 50 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });
    let mut expected = 0;
    let mut cancelled = 0;
    loop {
        tokio::select! {
            result = rx.recv() => match result {
                Ok(value) => {
                    assert_eq!(value, expected, "no message lost or reordered by cancellation");
                    expected += 1;
                }
                Err(IpcError::Disconnected) => break,
                Err(other) => panic!("{other}"),
            },
            _ = tokio::task::yield_now() => {
                cancelled += 1;
                if cancelled == 1 {
                    // Nothing was sent yet, so that receive future waited and was dropped.
                    go.send(()).unwrap();
                }
            }
        }
    }
    producer.join().unwrap();
    assert_eq!(expected, 2000);
}

#[tokio::test(flavor = "current_thread")]
async fn an_async_send_waits_for_room_without_blocking_the_runtime() {
    let (tx, rx) = ipc::os_channel::<Vec<u8>>().unwrap();
    async_send_waits_for_room(tx, rx).await;
}

/// The same on a local channel: the receiver's reads call the waiting task's waker.
#[tokio::test(flavor = "current_thread")]
async fn an_async_send_on_a_local_channel_waits_for_room_without_blocking_the_runtime() {
    let (tx, rx) = ipc::channel::<Vec<u8>>().unwrap();
    async_send_waits_for_room(tx, rx).await;
}

async fn async_send_waits_for_room(tx: IpcSender<Vec<u8>>, rx: IpcReceiver<Vec<u8>>) {
    let mut queued = 0;
    while tx.try_send(vec![1; 512]).is_ok() {
        queued += 1;
    }
    let tx = AsyncIpcSender::new(tx).unwrap();
    let message = vec![2; 512];
    let mut send = std::pin::pin!(tx.send(message));
    // The buffer is full: the send waits, and gives the (single) runtime thread back meanwhile.
    assert!(futures::poll!(&mut send).is_pending(), "a send into a full channel must wait");
    let other_task = tokio::spawn(async { "ran while the send waited" });
    let (go, wait_for_go) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        wait_for_go.recv().unwrap();
        for _ in 0..queued {
            assert_eq!(rx.recv().unwrap(), vec![1; 512]);
        }
        assert_eq!(rx.recv().unwrap(), vec![2; 512]);
        rx
    });
    assert!(futures::poll!(&mut send).is_pending(), "still no room");
    assert_eq!(other_task.await.unwrap(), "ran while the send waited");
    go.send(()).unwrap();
    send.await.unwrap();
    drop(reader.join().unwrap());
    assert!(matches!(tx.send(vec![]).await, Err(IpcError::Disconnected)));
}

/// Large payloads claim room in the channel's buffer too, so an async send of one waits for the
/// receiver like any other, woken by the socket becoming writable.
#[tokio::test(flavor = "current_thread")]
async fn an_async_send_of_a_large_payload_waits_for_room() {
    let (tx, rx) = ipc::os_bytes_channel().unwrap();
    let payload = vec![3u8; 64 << 20];
    let mut queued = 0;
    while tx.try_send(&payload).is_ok() {
        queued += 1;
        assert!(queued < 100, "large payloads in flight are bounded");
    }
    let tx = AsyncIpcBytesSender::new(tx).unwrap();
    let mut send = std::pin::pin!(tx.send(&payload));
    assert!(futures::poll!(&mut send).is_pending(), "a large payload into a full channel must wait");
    let reader = std::thread::spawn(move || {
        for _ in 0..=queued {
            assert_eq!(rx.recv().unwrap().len(), 64 << 20);
        }
    });
    tokio::time::timeout(Duration::from_secs(60), send).await.expect("woken once there is room").unwrap();
    reader.join().unwrap();
}

#[tokio::test]
async fn bytes_and_opaque_receivers() {
    let (btx, brx) = ipc::bytes_channel().unwrap();
    let btx = AsyncIpcBytesSender::new(btx).unwrap();
    let mut brx = AsyncIpcBytesReceiver::new(brx).unwrap();
    btx.send(b"one").await.unwrap();
    btx.send(&vec![9; 300 * 1024]).await.unwrap();
    assert_eq!(brx.recv().await.unwrap(), b"one");
    assert_eq!(brx.next().await.unwrap().unwrap().len(), 300 * 1024);
    drop(btx);
    assert!(brx.next().await.is_none());

    let (tx, rx) = ipc::channel::<(u8, String)>().unwrap();
    let mut rx = AsyncOpaqueIpcReceiver::new(rx.to_opaque()).unwrap();
    tx.send((1, "x".into())).unwrap();
    drop(tx);
    assert_eq!(rx.recv().await.unwrap().to::<(u8, String)>().unwrap(), (1, "x".into()));
    assert!(rx.next().await.is_none());
}

#[tokio::test(flavor = "current_thread")]
async fn async_recv_into_reuses_the_buffer_and_a_cancelled_one_leaves_it_alone() {
    // An OS channel: a local one hands over the message's own vector instead.
    let (tx, rx) = ipc::os_bytes_channel().unwrap();
    let rx = AsyncIpcBytesReceiver::new(rx).unwrap();
    let mut buffer = Vec::with_capacity(2 << 20);
    buffer.extend_from_slice(b"kept");
    let allocation = buffer.as_ptr();
    let waited = tokio::time::timeout(Duration::from_millis(20), rx.recv_into(&mut buffer)).await;
    assert!(waited.is_err(), "nothing was sent");
    assert_eq!(buffer, b"kept", "a cancelled receive leaves the buffer as it was");
    for (seq, len) in [(1u8, 1 << 20), (2, 64)] {
        tx.send(&vec![seq; len]).unwrap();
        rx.recv_into(&mut buffer).await.unwrap();
        assert!(buffer.len() == len && buffer.iter().all(|&byte| byte == seq), "message {seq}");
        assert_eq!(buffer.as_ptr(), allocation, "message {seq} reused the allocation");
    }
    drop(tx);
    assert!(matches!(rx.recv_into(&mut buffer).await, Err(IpcError::Disconnected)));
}

#[tokio::test(flavor = "current_thread")]
async fn async_select_over_many_receivers() {
    let mut set = AsyncIpcReceiverSet::new(IpcReceiverSet::new().unwrap()).unwrap();
    let mut senders = Vec::new();
    for _ in 0..100 {
        let (tx, rx) = ipc::channel::<u32>().unwrap();
        set.set_mut().add(rx).unwrap();
        senders.push(tx);
    }
    let producer = std::thread::spawn(move || {
        for (i, tx) in senders.into_iter().enumerate() {
            std::thread::sleep(Duration::from_micros(200));
            tx.send(i as u32).unwrap();
        }
    });
    let (mut messages, mut closed) = (0, 0);
    while closed < 100 {
        for event in set.select().await.unwrap() {
            match event {
                IpcSelectionResult::MessageReceived(_, message) => {
                    message.to::<u32>().unwrap();
                    messages += 1;
                }
                IpcSelectionResult::ChannelClosed(_) => closed += 1,
            }
        }
    }
    producer.join().unwrap();
    assert_eq!(messages, 100);
}

#[tokio::test]
async fn async_accept_from_client_processes() {
    let (server, name) = IpcServer::<u32>::new().unwrap();
    let server = AsyncIpcServer::new(server).unwrap();
    let children: Vec<_> = (0..8).map(|_| spawn_child(ENTRY, "client", &name)).collect();
    let mut pids: Vec<u32> = children.iter().map(|child| child.id()).collect();
    let mut seen = Vec::new();
    for _ in 0..8 {
        let (_rx, pid, credentials) = server.accept().await.unwrap();
        assert_eq!(pid, credentials.pid, "the kernel agrees with the client");
        seen.push(pid);
    }
    seen.sort();
    pids.sort();
    assert_eq!(seen, pids);
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
}

/// An async send retries under backpressure with the same value: a receiver inside it must
/// survive every failed attempt and arrive whole.
#[tokio::test(flavor = "current_thread")]
async fn an_async_send_that_waits_keeps_a_receiver_inside_whole() {
    let (tx, rx) = ipc::os_channel::<(u32, IpcReceiver<String>)>().unwrap();
    tx.set_buffer_size(4096).unwrap();
    let mut queued = 0;
    while tx.try_send((0, ipc::channel::<String>().unwrap().1)).is_ok() {
        queued += 1;
    }
    let (inner_tx, inner_rx) = ipc::channel::<String>().unwrap();
    inner_tx.send("queued".into()).unwrap();
    let tx = AsyncIpcSender::new(tx).unwrap();
    let mut send = std::pin::pin!(tx.send((1, inner_rx)));
    assert!(futures::poll!(&mut send).is_pending(), "the channel is full: the send waits");
    let reader = std::thread::spawn(move || {
        for _ in 0..queued {
            rx.recv().unwrap();
        }
        rx.recv().unwrap()
    });
    send.await.unwrap();
    let (one, moved) = reader.join().unwrap();
    assert_eq!(one, 1);
    assert_eq!(moved.recv().unwrap(), "queued");
    inner_tx.send("after".into()).unwrap();
    assert_eq!(moved.recv().unwrap(), "after");
}

/// The limits set on an `IpcServer` apply to its clients when it is accepted from async code.
#[tokio::test(flavor = "current_thread")]
async fn async_accept_applies_the_servers_limits() {
    let (server, name) = IpcServer::<Vec<u8>>::new().unwrap();
    server.set_limits(crossproc::ipc::ReceiveLimits { max_message_bytes: 100, ..Default::default() });
    let server = AsyncIpcServer::new(server).unwrap();
    std::thread::spawn(move || {
        IpcSender::<Vec<u8>>::connect(name.clone()).unwrap().send(vec![0; 1000]).unwrap();
        IpcSender::<Vec<u8>>::connect(name).unwrap().send(vec![1; 10]).unwrap();
    })
    .join()
    .unwrap();
    let (_, first, _) = server.accept().await.unwrap();
    assert_eq!(first, vec![1; 10], "the client whose first message is over the limit is skipped");
}

/// Issue 22, item 10: tasks that receive on one `AsyncIpcReceiver` at the same time (it is
/// `Sync`) are each woken for the message they wait for. A receive that returned used to leave
/// the ring awake while another task slept on the socket's readiness, so a message published
/// into the ring then waited for an unrelated packet. Here one task receives in a loop and, in
/// each round, another takes one message and stops; each round's messages must all arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_receives_on_one_async_receiver_are_all_woken() {
    const ROUNDS: u32 = 2_000;
    let (tx, rx) = ipc::channel::<u32>().unwrap();
    let rx = std::sync::Arc::new(AsyncIpcReceiver::new(rx).unwrap());
    let (got_tx, mut got_rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
    let looping = {
        let (rx, got_tx) = (rx.clone(), got_tx.clone());
        tokio::spawn(async move {
            while let Ok(message) = rx.recv().await {
                got_tx.send(message).unwrap();
            }
        })
    };
    let mut onces = Vec::new();
    for round in 0..ROUNDS {
        let once = {
            let (rx, got_tx) = (rx.clone(), got_tx.clone());
            tokio::spawn(async move {
                // The looping task may take every message of this round: this one then takes
                // one of a later round, or ends with the channel.
                if let Ok(message) = rx.recv().await {
                    got_tx.send(message).unwrap();
                }
            })
        };
        onces.push(once);
        for message in 0..3 {
            tx.send(round * 3 + message).unwrap();
        }
        for _ in 0..3 {
            let got = tokio::time::timeout(Duration::from_secs(10), got_rx.recv()).await;
            assert!(got.is_ok(), "round {round}: a message waited with no task woken for it");
        }
    }
    drop(tx);
    looping.await.unwrap();
    for once in onces {
        once.await.unwrap();
    }
}

/// A local channel given to tokio stays local: no descriptor for its async receiver or sender,
/// and a receive that waits is woken by its sender (another thread here) calling the task's
/// waker, also for the hang-up. In a child process of its own, so that no other test's
/// descriptors are counted.
#[test]
fn a_local_async_receiver_holds_no_descriptor_and_its_sender_wakes_it() {
    if child_role().is_some() {
        return;
    }
    util::child_in_role_succeeds(ENTRY, "local_async_receiver");
}

fn local_async_receiver_child() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let before = util::open_fds();
    let (tx, rx) = ipc::channel::<u32>().unwrap();
    let rx = runtime.block_on(async { AsyncIpcReceiver::new(rx) }).unwrap();
    let async_tx = runtime.block_on(async { AsyncIpcSender::new(tx.clone()) }).unwrap();
    assert_eq!(util::open_fds(), before, "a local channel on tokio holds no descriptor");
    runtime.block_on(async {
        async_tx.send(6).await.unwrap();
        assert_eq!(rx.recv().await.unwrap(), 6);
    });
    drop(async_tx);
    runtime.block_on(async {
        let mut first = Box::pin(rx.recv());
        assert!(futures::poll!(&mut first).is_pending(), "nothing was sent yet");
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let sender = std::thread::spawn(move || {
            tx.send(7).unwrap();
            go_rx.recv().unwrap();
            drop(tx);
        });
        assert_eq!(first.await.unwrap(), 7);
        let mut hang_up = Box::pin(rx.recv());
        assert!(futures::poll!(&mut hang_up).is_pending(), "the sender lives");
        go_tx.send(()).unwrap();
        assert!(matches!(hang_up.await, Err(IpcError::Disconnected)));
        sender.join().unwrap();
    });
    assert_eq!(util::open_fds(), before, "nor did it make one on the way");
}

/// A receive waiting on a local channel whose sender then leaves for a child process is woken by
/// the leave and goes on on the OS channel: it gets what the child sends.
#[tokio::test(flavor = "current_thread")]
async fn a_waiting_local_async_receive_follows_its_sender_to_a_child() {
    let (tx, rx) = ipc::channel::<u32>().unwrap();
    let rx = AsyncIpcReceiver::new(rx).unwrap();
    let mut first = Box::pin(rx.recv());
    assert!(futures::poll!(&mut first).is_pending(), "nothing was sent yet");
    let (mut child, senders) =
        child_command(ENTRY, "send_1_to_5_on_the_sender_received").spawn_with_channel::<IpcSender<u32>>().unwrap();
    senders.send(tx).unwrap();
    assert_eq!(first.await.unwrap(), 1);
    for expected in 2..=5 {
        assert_eq!(rx.recv().await.unwrap(), expected);
    }
    assert!(matches!(rx.recv().await, Err(IpcError::Disconnected)));
    assert!(child.wait().unwrap().success());
}

/// What a local receiver given to tokio had queued from before a sender of its channel left the
/// process comes first, then what that sender sent since.
#[tokio::test(flavor = "current_thread")]
async fn a_local_receiver_brings_what_was_queued_before_a_sender_left() {
    let (tx, rx) = ipc::channel::<u32>().unwrap();
    tx.send(1).unwrap();
    let (carrier_tx, carrier_rx) = ipc::os_channel::<IpcSender<u32>>().unwrap();
    carrier_tx.send(tx.clone()).unwrap();
    let remote = carrier_rx.recv().unwrap();
    remote.send(2).unwrap();
    let rx = AsyncIpcReceiver::new(rx).unwrap();
    assert_eq!(rx.recv().await.unwrap(), 1);
    assert_eq!(rx.recv().await.unwrap(), 2);
    drop((tx, remote));
    assert!(matches!(rx.recv().await, Err(IpcError::Disconnected)));
}
