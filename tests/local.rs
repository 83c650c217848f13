//! Local channels (docs/local.md): no descriptor while both ends stay in the process, and every
//! promise kept when an end leaves — to a real child process, through an OS channel.

// In-process mode has no other process for an end to leave to, and some tests are Linux's.
#![cfg_attr(any(feature = "force-inprocess", not(target_os = "linux")), allow(unused_imports, dead_code))]

mod util;

use std::time::Duration;

use crossproc::ipc::{self, inherited_receiver, IpcCommandExt, IpcReceiver, IpcSender};
use crossproc::{IpcError, TryRecvError, TrySendError};
use util::{assert_child_succeeds, child_command, child_role, with_watchdog};

const ENTRY: &str = "child_entry";

#[test]
fn child_entry() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        // Sends 3 through the sender it is given.
        "send_three" => {
            let from_parent = inherited_receiver::<IpcSender<u32>>().unwrap();
            from_parent.recv().unwrap().send(3).unwrap();
        }
        // Reads the receiver it is given to its end and reports what it read.
        "read_to_the_end" => {
            let from_parent = inherited_receiver::<(IpcReceiver<u32>, IpcSender<Vec<u32>>)>().unwrap();
            let (receiver, report) = from_parent.recv().unwrap();
            let mut got = Vec::new();
            loop {
                match receiver.recv() {
                    Ok(value) => got.push(value),
                    Err(IpcError::Disconnected) => break,
                    Err(error) => panic!("{error}"),
                }
            }
            report.send(got).unwrap();
        }
        #[cfg(target_os = "linux")]
        "many_under_a_low_limit" => many_under_a_low_limit(),
        #[cfg(target_os = "linux")]
        "hold_no_descriptor" => hold_no_descriptor(),
        "drop_a_long_chain" => drop_a_long_chain(),
        // Fills local channels to their default budget, sends their receivers back, returns.
        "fill_then_return" => {
            let back = inherited_receiver::<IpcSender<(u32, IpcReceiver<Vec<u8>>)>>().unwrap().recv().unwrap();
            for size in FILL_SIZES {
                let (tx, rx) = ipc::channel::<Vec<u8>>().unwrap();
                let mut sent = 0;
                while tx.try_send(vec![size as u8; size]).is_ok() {
                    sent += 1;
                }
                back.send((sent, rx)).unwrap();
            }
        }
        // Sends back a receiver whose backlog holds another receiver with a backlog, exits.
        "nested_backlogs_then_exit" => {
            let back = inherited_receiver::<IpcSender<Option<IpcReceiver<Nested>>>>().unwrap().recv().unwrap();
            let (outer_tx, outer_rx) = ipc::channel::<Nested>().unwrap();
            outer_tx.set_buffer_size(16 << 20).unwrap();
            for index in 0..PADS {
                outer_tx.send(Nested::Pad(numbered(index))).unwrap();
            }
            let (_inner_tx, inner_rx) = numbered_backlog();
            outer_tx.send(Nested::Inner(inner_rx)).unwrap();
            back.send(Some(outer_rx)).unwrap();
            // The parent reads once told: the outer pump meets the inner receiver during the exit.
            back.send(None).unwrap();
            std::process::exit(0);
        }
        // Sends back a receiver whose backlog its socket cannot take at once, then exits.
        "backlog_then_return" => drop(send_a_long_backlog_back()),
        "backlog_then_exit" => {
            let _sender = send_a_long_backlog_back();
            std::process::exit(0);
        }
        other => panic!("unknown role {other}"),
    }
}

/// (In a child process of its own: the other tests of this file open descriptors meanwhile.)
#[cfg(target_os = "linux")]
#[test]
fn local_channels_and_the_ends_they_carry_hold_no_descriptor() {
    util::child_in_role_succeeds(ENTRY, "hold_no_descriptor");
}

#[cfg(target_os = "linux")]
fn hold_no_descriptor() {
    let before = util::open_fds();
    let mut kept = Vec::new();
    for i in 0..2_000u32 {
        let (tx, rx) = ipc::channel::<(u32, IpcSender<u32>)>().unwrap();
        let (inner_tx, inner_rx) = ipc::channel::<u32>().unwrap();
        tx.send((i, inner_tx)).unwrap();
        let (value, inner_tx) = rx.recv().unwrap();
        inner_tx.send(value).unwrap();
        assert_eq!(inner_rx.recv().unwrap(), i);
        kept.push((tx, rx, inner_tx, inner_rx));
    }
    assert_eq!(util::open_fds(), before, "2,000 local channels and the senders they carried hold no descriptor");
}

/// 100,000 live local channels that each carried a message, under a descriptor limit of 1,024.
#[cfg(target_os = "linux")]
fn many_under_a_low_limit() {
    let limit = libc::rlimit { rlim_cur: 1024, rlim_max: 1024 };
    // SAFETY: lowers this process's own limit; no memory is involved.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    let channels: Vec<_> = (0..100_000u32)
        .map(|i| {
            let (tx, rx) = ipc::channel::<u32>().unwrap();
            tx.send(i).unwrap();
            (tx, rx)
        })
        .collect();
    for (i, (_, rx)) in channels.iter().enumerate().step_by(997) {
        assert_eq!(rx.recv().unwrap(), i as u32);
    }
}

#[cfg(target_os = "linux")]
#[test]
fn a_hundred_thousand_local_channels_live_under_a_limit_of_1024_descriptors() {
    util::child_in_role_succeeds(ENTRY, "many_under_a_low_limit");
}

/// A local channel is not shared with a child made by `fork`: its use there fails loudly, and
/// the parent's channel goes on untouched.
#[cfg(all(target_os = "linux", not(feature = "force-inprocess")))]
#[test]
fn a_local_channel_used_in_a_forked_child_fails_loudly() {
    let (tx, rx) = ipc::channel::<u32>().unwrap();
    tx.send(1).unwrap();
    let pid = util::fork::fork_child(|| {
        let sent = tx.send(2);
        let Err(IpcError::Io(error)) = sent else { panic!("a send in the child must fail, got {sent:?}") };
        assert_eq!(error.kind(), std::io::ErrorKind::Unsupported);
        assert!(error.to_string().contains("os_channel"), "the error names the way out: {error}");
        let received = rx.try_recv();
        assert!(matches!(received, Err(TryRecvError::IpcError(IpcError::Io(_)))), "got {received:?}");
    });
    util::fork::assert_exits_successfully(pid);
    tx.send(3).unwrap();
    assert_eq!(rx.recv().unwrap(), 1);
    assert_eq!(rx.recv().unwrap(), 3, "nothing the child tried arrived");
}

/// A sender that leaves for a child: what was queued while the channel was local comes first,
/// then what the child sent, then `Disconnected` once every sender, local and remote, is gone.
#[cfg(all(any(target_os = "linux", windows), not(feature = "force-inprocess")))]
#[test]
fn a_sender_that_leaves_comes_after_what_was_queued() {
    with_watchdog(Duration::from_secs(60), || {
        let (tx, rx) = ipc::channel::<u32>().unwrap();
        tx.send(1).unwrap();
        tx.send(2).unwrap();
        let (child, to_child) = child_command(ENTRY, "send_three").spawn_with_channel::<IpcSender<u32>>().unwrap();
        to_child.send(tx.clone()).unwrap();
        assert_eq!(rx.recv().unwrap(), 1);
        assert_eq!(rx.recv().unwrap(), 2);
        assert_eq!(rx.recv().unwrap(), 3);
        tx.send(4).unwrap();
        assert_eq!(rx.recv().unwrap(), 4, "a local sender goes on on the OS channel");
        assert_child_succeeds(child);
        drop(tx);
        assert!(matches!(rx.recv(), Err(IpcError::Disconnected)));
    });
}

/// A receiver that leaves with a backlog larger than a socket takes before it is read: every
/// message reaches the child in order, also those sent while the backlog was on its way.
#[cfg(all(any(target_os = "linux", windows), not(feature = "force-inprocess")))]
#[test]
fn a_receiver_that_leaves_takes_a_long_backlog_along_in_order() {
    with_watchdog(Duration::from_secs(120), || {
        let (tx, rx) = ipc::channel::<u32>().unwrap();
        tx.set_buffer_size(4 << 20).unwrap();
        // 5,000 small messages: far more than a fresh socket takes, well inside the budget.
        for i in 0..5_000 {
            tx.send(i).unwrap();
        }
        let (report_tx, report_rx) = ipc::channel::<Vec<u32>>().unwrap();
        let (child, to_child) = child_command(ENTRY, "read_to_the_end")
            .spawn_with_channel::<(IpcReceiver<u32>, IpcSender<Vec<u32>>)>()
            .unwrap();
        to_child.send((rx, report_tx)).unwrap();
        for i in 5_000..5_100 {
            tx.send(i).unwrap();
        }
        drop(tx);
        let got = report_rx.recv().unwrap();
        assert_eq!(got, (0..5_100).collect::<Vec<_>>());
        assert_child_succeeds(child);
    });
}

/// A receive that waits on a local channel goes on when a sender leaves, and gets what the
/// child sends through it.
#[cfg(all(target_os = "linux", not(feature = "force-inprocess")))]
#[test]
fn a_waiting_receive_goes_on_when_its_channel_leaves() {
    with_watchdog(Duration::from_secs(60), || {
        let (tx, rx) = ipc::channel::<u32>().unwrap();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let waiting = std::thread::spawn(move || {
            tid_tx.send(util::thread_id()).unwrap();
            rx.recv()
        });
        util::wait_until_asleep(tid_rx.recv().unwrap(), "the local receive");
        let (child, to_child) = child_command(ENTRY, "send_three").spawn_with_channel::<IpcSender<u32>>().unwrap();
        to_child.send(tx).unwrap();
        assert_eq!(waiting.join().unwrap().unwrap(), 3);
        assert_child_succeeds(child);
    });
}

/// A receiver queued in its own channel: nobody can read it any more, and no kernel collects the
/// cycle as it would an OS channel's. Its sender is told by the budget, not by `Disconnected`:
/// sends succeed until the queue is full, then `try_send` reports `Full` (docs/local.md, "Cycles").
#[test]
fn a_receiver_queued_in_its_own_channel_fills_it_up() {
    let (tx, rx) = ipc::channel::<Option<ipc::OpaqueIpcReceiver>>().unwrap();
    tx.send(Some(rx.to_opaque())).unwrap();
    let mut sent = 0;
    loop {
        match tx.try_send(None) {
            Ok(()) => sent += 1,
            Err(TrySendError::Full(_)) => break,
            Err(other) => panic!("{other:?}"),
        }
        assert!(sent < 1_000_000, "the queue of a cycle is bounded");
    }
    assert!(sent > 0);
}

/// A receiver whose channel had a sender leave while messages were queued here reads those
/// messages here first: they cannot go ahead of what the sender sent on the OS channel since, so
/// sending the receiver away before fails with an error that says so, and hands it back whole.
#[cfg(all(any(target_os = "linux", windows), not(feature = "force-inprocess")))]
#[test]
fn a_receiver_cannot_leave_before_it_read_what_was_queued_when_a_sender_left() {
    with_watchdog(Duration::from_secs(60), || {
        let (tx, rx) = ipc::channel::<u32>().unwrap();
        tx.send(1).unwrap();
        let (child, to_child) = child_command(ENTRY, "send_three").spawn_with_channel::<IpcSender<u32>>().unwrap();
        to_child.send(tx.clone()).unwrap();
        let (carrier_tx, carrier_rx) = ipc::os_channel::<IpcReceiver<u32>>().unwrap();
        let rx = match carrier_tx.try_send(rx) {
            Err(TrySendError::Failed(rx, IpcError::Io(error))) => {
                assert!(error.to_string().contains("receive them here"), "{error}");
                rx
            }
            other => panic!("the receiver left with its backlog behind: {:?}", other.map(|_| ())),
        };
        assert_eq!(rx.recv().unwrap(), 1, "the receiver came back whole");
        assert_eq!(rx.recv().unwrap(), 3);
        carrier_tx.send(rx).unwrap();
        let rx = carrier_rx.recv().unwrap();
        tx.send(4).unwrap();
        assert_eq!(rx.recv().unwrap(), 4, "once read, it leaves");
        assert_child_succeeds(child);
    });
}

/// Moves `rx` through an OS channel and back: it leaves (its channel becomes an OS channel) and
/// stays in this process.
fn through_an_os_channel<T: serde::Serialize + for<'de> serde::Deserialize<'de>>(end: T) -> Result<T, IpcError> {
    let (carrier_tx, carrier_rx) = ipc::os_channel::<T>().unwrap();
    carrier_tx.send(end)?;
    carrier_rx.recv()
}

/// A message of about 1 KB that says which it is.
fn numbered(index: u32) -> Vec<u8> {
    let mut message = vec![0u8; 1000];
    message[..4].copy_from_slice(&index.to_le_bytes());
    message
}

fn number(message: &[u8]) -> u32 {
    u32::from_le_bytes(message[..4].try_into().unwrap())
}

/// A receiver that left with a backlog larger than its socket takes: while the rest is on its
/// way, local sends join it under the channel's budget (`try_send` reports `Full`), a sender of
/// the channel cannot leave (an error that says why), and the receiver gets everything in order.
/// (On Windows the receiver once travelled with its 8 MB backlog inline in one pipe message,
/// whose blocking write waited for a reader: this very thread. It hung.)
#[cfg(all(any(target_os = "linux", windows), not(feature = "force-inprocess")))]
#[test]
fn a_backlog_on_its_way_keeps_its_budget_and_its_order() {
    with_watchdog(Duration::from_secs(60), || {
        let (tx, rx) = ipc::channel::<Vec<u8>>().unwrap();
        tx.set_buffer_size(8 << 20).unwrap();
        let mut sent = 0;
        while sent < 8_000 {
            tx.send(numbered(sent)).unwrap();
            sent += 1;
        }
        let rx = through_an_os_channel(rx).unwrap();
        // Nobody reads yet, so the backlog's rest waits in this process, under the budget.
        loop {
            match tx.try_send(numbered(sent)) {
                Ok(()) => sent += 1,
                Err(TrySendError::Full(_)) => break,
                Err(other) => panic!("{other:?}"),
            }
            assert!(sent < 40_000, "sends into a backlog on its way are bounded by the budget");
        }
        let left_early = match through_an_os_channel(tx.clone()) {
            Err(IpcError::Io(error)) => {
                assert!(error.to_string().contains("on their way"), "{error}");
                None
            }
            // On Windows a moving receiver takes along everything its pipe holds, and the pump
            // may have written the whole backlog by then: nothing is left on its way, and a
            // sender may leave (what it sends comes after the backlog all the same).
            Ok(remote) if cfg!(windows) => Some(remote),
            other => panic!("a sender left ahead of its receiver's backlog: {:?}", other.map(|_| ())),
        };
        for index in 0..sent {
            assert_eq!(number(&rx.recv().unwrap()), index);
        }
        let remote = match left_early {
            Some(remote) => remote,
            None => through_an_os_channel(tx.clone()).expect("the backlog was read: the sender leaves"),
        };
        remote.send(numbered(sent)).unwrap();
        assert_eq!(number(&rx.recv().unwrap()), sent);
    });
}

/// Messages of a local channel, in its backlog, when its receiver goes back to the parent.
const BACKLOG: u32 = 8_000;

/// Sends the parent a receiver with [`BACKLOG`] messages of 1 KB queued (more than its socket
/// takes: the rest is sent by the backlog's thread), and gives back one of its senders.
fn send_a_long_backlog_back() -> IpcSender<Vec<u8>> {
    let back = inherited_receiver::<IpcSender<IpcReceiver<Vec<u8>>>>().unwrap().recv().unwrap();
    let (tx, rx) = numbered_backlog();
    back.send(rx).unwrap();
    tx
}

/// A local channel with a budget of 32 MB and [`BACKLOG`] numbered messages queued.
fn numbered_backlog() -> (IpcSender<Vec<u8>>, IpcReceiver<Vec<u8>>) {
    let (tx, rx) = ipc::channel::<Vec<u8>>().unwrap();
    tx.set_buffer_size(16 << 20).unwrap();
    for index in 0..BACKLOG {
        tx.send(numbered(index)).unwrap();
    }
    (tx, rx)
}

/// A process that sent a receiver away with a backlog its socket could not take at once, and
/// then ends (returning from `main`, or `std::process::exit` with the sender still alive), waits
/// for the backlog to be sent: the receiver gets all of it, then `Disconnected`. (Before, the
/// exit ended the thread that sent it, and the receiver was told `Disconnected` after the
/// messages the socket had taken: review 8.)
/// (On Windows `std::process::exit` stops the threads at once: only the return is waited for.)
#[cfg(all(any(target_os = "linux", windows), not(feature = "force-inprocess")))]
#[test]
fn a_process_that_exits_waits_for_the_backlog_of_a_receiver_it_sent_away() {
    let roles: &[&'static str] =
        if cfg!(windows) { &["backlog_then_return"] } else { &["backlog_then_return", "backlog_then_exit"] };
    for &role in roles {
        with_watchdog(Duration::from_secs(60), move || {
            let (child, to_child) =
                child_command(ENTRY, role).spawn_with_channel::<IpcSender<IpcReceiver<Vec<u8>>>>().unwrap();
            let (back_tx, back_rx) = ipc::channel::<IpcReceiver<Vec<u8>>>().unwrap();
            to_child.send(back_tx).unwrap();
            let rx = back_rx.recv().unwrap();
            let mut got = 0;
            loop {
                match rx.recv() {
                    Ok(message) => {
                        assert_eq!(number(&message), got, "{role}: out of order");
                        got += 1;
                    }
                    Err(IpcError::Disconnected) => break,
                    Err(error) => panic!("{role}: {error}"),
                }
            }
            assert_eq!(got, BACKLOG, "{role}: the receiver was told Disconnected before the end of its backlog");
            assert_child_succeeds(child);
        });
    }
}

/// Messages ahead of the inner receiver in `nested_backlogs_then_exit`: more than a socket
/// takes even raised for the move (8 MB here, `net.core.wmem_max` twice), so that the outer
/// pump still runs when the child exits.
const PADS: u32 = 6_000;

/// What the outer channel of `nested_backlogs_then_exit` carries.
#[derive(serde::Serialize, serde::Deserialize)]
enum Nested {
    Pad(Vec<u8>),
    Inner(IpcReceiver<Vec<u8>>),
}

/// A backlog whose pump, while the process exits, meets a receiver with a backlog of its own:
/// that receiver's pump starts during the exit, which waits for it too (review 10, F2: before,
/// the inner receiver was told `Disconnected` after about 3,700 of its 8,000 messages).
#[cfg(all(target_os = "linux", not(feature = "force-inprocess")))]
#[test]
fn an_exit_waits_for_a_backlog_found_inside_a_backlog() {
    with_watchdog(Duration::from_secs(60), || {
        let (child, to_child) = child_command(ENTRY, "nested_backlogs_then_exit")
            .spawn_with_channel::<IpcSender<Option<IpcReceiver<Nested>>>>()
            .unwrap();
        let (back_tx, back_rx) = ipc::channel::<Option<IpcReceiver<Nested>>>().unwrap();
        to_child.send(back_tx).unwrap();
        let outer = back_rx.recv().unwrap().unwrap();
        assert!(back_rx.recv().unwrap().is_none(), "the child says it exits");
        let mut pads = 0;
        let inner = loop {
            match outer.recv().unwrap() {
                Nested::Pad(message) => {
                    assert_eq!(number(&message), pads);
                    pads += 1;
                }
                Nested::Inner(inner) => break inner,
            }
        };
        assert_eq!(pads, PADS);
        let mut got = 0;
        while let Ok(message) = inner.recv() {
            assert_eq!(number(&message), got);
            got += 1;
        }
        assert_eq!(got, BACKLOG, "the inner receiver was told Disconnected before the end of its backlog");
        assert_child_succeeds(child);
    });
}

/// Message sizes whose default budget holds more than a socket of the same size (review 10).
const FILL_SIZES: [usize; 4] = [1024, 2000, 4000, 8000];

/// A receiver that leaves with all that its channel's default budget let in needs no thread to
/// send the rest: a child that does so and returns from `main` ends at once, while nobody reads,
/// and its parent, which waits for it first (as many programs do), then reads every message.
/// (Before, the budget let in more than the fresh socket took: the rest waited in a thread that
/// the child's exit waited for, and both processes waited for ever: review 10, F1.)
#[cfg(all(any(target_os = "linux", windows), not(feature = "force-inprocess")))]
#[test]
fn a_receiver_that_leaves_with_a_full_budget_needs_no_thread() {
    with_watchdog(Duration::from_secs(60), || {
        let (mut child, to_child) = child_command(ENTRY, "fill_then_return")
            .spawn_with_channel::<IpcSender<(u32, IpcReceiver<Vec<u8>>)>>()
            .unwrap();
        let (back_tx, back_rx) = ipc::channel::<(u32, IpcReceiver<Vec<u8>>)>().unwrap();
        to_child.send(back_tx).unwrap();
        assert!(child.wait().unwrap().success(), "the child failed");
        for size in FILL_SIZES {
            let (sent, rx) = back_rx.recv().unwrap();
            assert!(sent > 0);
            for _ in 0..sent {
                assert_eq!(rx.recv().unwrap(), vec![size as u8; size]);
            }
            assert!(matches!(rx.recv(), Err(IpcError::Disconnected)), "{size} B: more than was sent");
        }
    });
}

/// A buffer size set while a receiver's backlog moves (its rest sent by a thread) is the size
/// the channel keeps once the move is over (review 11, N1: the move's restore of the socket's
/// size overwrote it).
#[cfg(all(target_os = "linux", not(feature = "force-inprocess")))]
#[test]
fn a_buffer_size_set_while_a_backlog_moves_is_kept() {
    with_watchdog(Duration::from_secs(60), || {
        const MESSAGES: u32 = 12_000;
        let (tx, rx) = ipc::channel::<Vec<u8>>().unwrap();
        tx.set_buffer_size(16 << 20).unwrap();
        for index in 0..MESSAGES {
            tx.send(numbered(index)).unwrap();
        }
        let (carrier_tx, carrier_rx) = ipc::os_channel::<IpcReceiver<Vec<u8>>>().unwrap();
        carrier_tx.send(rx).unwrap();
        tx.set_buffer_size(64 << 10).unwrap();
        assert_eq!(tx.buffer_size().unwrap(), 128 << 10, "as Linux reports a size set");
        let rx = carrier_rx.recv().unwrap();
        for index in 0..MESSAGES {
            assert_eq!(number(&rx.recv().unwrap()), index);
        }
        // A sender leaves once the move is over.
        let moved = through_an_os_channel(tx.clone()).unwrap();
        assert_eq!(moved.buffer_size().unwrap(), 128 << 10, "the size set during the move was undone");
    });
}

/// A channel that became an OS channel before a fork works on both sides of it.
#[cfg(all(target_os = "linux", not(feature = "force-inprocess")))]
#[test]
fn a_channel_that_left_before_a_fork_works_in_the_child() {
    let (tx, rx) = ipc::channel::<u32>().unwrap();
    let remote = through_an_os_channel(tx.clone()).unwrap();
    let pid = util::fork::fork_child(|| {
        tx.send(7).unwrap();
        drop(remote);
    });
    util::fork::assert_exits_successfully(pid);
    assert_eq!(rx.recv().unwrap(), 7);
}

/// A set takes a receiver whose backlog predates a sender that left (it could not leave the
/// process): what was queued comes first, then what the sender sent since.
#[cfg(all(any(target_os = "linux", windows), not(feature = "force-inprocess")))]
#[test]
fn a_set_reports_what_was_queued_before_a_sender_left_first() {
    let (tx, rx) = ipc::channel::<u32>().unwrap();
    tx.send(1).unwrap();
    let remote = through_an_os_channel(tx.clone()).unwrap();
    remote.send(2).unwrap();
    let mut set = ipc::IpcReceiverSet::new().unwrap();
    let id = set.add(rx).unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        for event in set.select().unwrap() {
            let (member, message) = event.unwrap();
            assert_eq!(member, id);
            got.push(message.to::<u32>().unwrap());
        }
    }
    assert_eq!(got, [1, 2]);
}

/// 200,000 receivers, each queued in the previous one's channel, then the first dropped.
fn drop_a_long_chain() {
    let (first_tx, first_rx) = ipc::channel::<Option<ipc::OpaqueIpcReceiver>>().unwrap();
    let mut senders = Vec::new();
    let mut previous = first_tx;
    for _ in 0..200_000 {
        let (tx, rx) = ipc::channel::<Option<ipc::OpaqueIpcReceiver>>().unwrap();
        previous.send(Some(rx.to_opaque())).unwrap();
        senders.push(std::mem::replace(&mut previous, tx));
    }
    drop(senders);
    drop(first_rx);
}

/// Dropping a long chain of queued receivers does not overflow the stack (each drop would
/// otherwise nest in the one before).
#[test]
fn a_long_chain_of_queued_receivers_drops_without_overflowing_the_stack() {
    util::child_in_role_succeeds(ENTRY, "drop_a_long_chain");
}

/// A receiver whose queue holds a message that carries such a receiver (one that must read its
/// backlog here first) cannot leave either: sent on, that message could only be dropped. The
/// send fails with an error that says so, and everything stays receivable here.
#[cfg(all(any(target_os = "linux", windows), not(feature = "force-inprocess")))]
#[test]
fn a_receiver_whose_queue_carries_a_receiver_that_cannot_leave_stays() {
    let (tx_b, rx_b) = ipc::channel::<u32>().unwrap();
    tx_b.send(1).unwrap();
    let remote_b = through_an_os_channel(tx_b.clone()).unwrap();
    let (tx_a, rx_a) = ipc::channel::<IpcReceiver<u32>>().unwrap();
    tx_a.send(rx_b).unwrap();
    let (carrier_tx, _carrier_rx) = ipc::os_channel::<IpcReceiver<IpcReceiver<u32>>>().unwrap();
    let rx_a = match carrier_tx.try_send(rx_a) {
        Err(TrySendError::Failed(rx_a, IpcError::Io(error))) => {
            assert!(error.to_string().contains("receive that message here first"), "{error}");
            rx_a
        }
        other => panic!("the receiver left: {:?}", other.map(|_| ())),
    };
    let rx_b = rx_a.recv().unwrap();
    remote_b.send(2).unwrap();
    assert_eq!(rx_b.recv().unwrap(), 1);
    assert_eq!(rx_b.recv().unwrap(), 2);
}

/// The same two levels down: a receiver queued in a channel whose receiver is queued in the
/// leaving one (review finding F2: the check looked one level deep, and the send dropped the
/// innermost receiver with its messages).
#[cfg(all(any(target_os = "linux", windows), not(feature = "force-inprocess")))]
#[test]
fn a_receiver_whose_queue_carries_one_that_cannot_leave_two_levels_down_stays() {
    let (tx_c, rx_c) = ipc::channel::<u32>().unwrap();
    tx_c.send(1).unwrap();
    let remote_c = through_an_os_channel(tx_c.clone()).unwrap();
    let (tx_b, rx_b) = ipc::channel::<IpcReceiver<u32>>().unwrap();
    tx_b.send(rx_c).unwrap();
    let (tx_a, rx_a) = ipc::channel::<IpcReceiver<IpcReceiver<u32>>>().unwrap();
    tx_a.send(rx_b).unwrap();
    let (carrier_tx, _carrier_rx) = ipc::os_channel::<IpcReceiver<IpcReceiver<IpcReceiver<u32>>>>().unwrap();
    let rx_a = match carrier_tx.try_send(rx_a) {
        Err(TrySendError::Failed(rx_a, IpcError::Io(error))) => {
            assert!(error.to_string().contains("receive that message here first"), "{error}");
            rx_a
        }
        other => panic!("the receiver left: {:?}", other.map(|_| ())),
    };
    let rx_c = rx_a.recv().unwrap().recv().unwrap();
    remote_c.send(2).unwrap();
    assert_eq!(rx_c.recv().unwrap(), 1);
    assert_eq!(rx_c.recv().unwrap(), 2);
}
