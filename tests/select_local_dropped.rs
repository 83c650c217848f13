//! A local member of an `IpcReceiverSet` whose messages are all dropped (over the limits) in a
//! pass is looked at again before the set waits (review 6, R6-1: the set waited for ever, and
//! `try_select_timeout` reported `Empty` with a message queued).
#![cfg(all(target_os = "linux", not(feature = "force-inprocess")))]

mod util;

use std::time::{Duration, Instant};

use crossproc::ipc::{self, IpcReceiver, IpcReceiverSet, IpcSelectionResult, IpcSender, ReceiveLimits};
use util::with_watchdog;

fn small_limits() -> ReceiveLimits {
    ReceiveLimits { max_message_bytes: 64, ..ReceiveLimits::DEFAULT }
}

/// 40 over-limit messages then a good one, queued on a set's member before its first select:
/// the select reports the good one. A local member's first pass drops 32, and the set waited
/// in the OS set for ever (no doorbell byte came for a member left rung).
fn dropped_then_good(tx: IpcSender<Vec<u8>>, rx: IpcReceiver<Vec<u8>>) {
    with_watchdog(Duration::from_secs(20), move || {
        let mut set = IpcReceiverSet::new().unwrap();
        set.set_limits(small_limits());
        let id = set.add(rx).unwrap();
        for _ in 0..40 {
            tx.send(vec![0u8; 200]).unwrap();
        }
        tx.send(vec![1u8]).unwrap();
        let got = set.select().unwrap();
        let (got_id, message) = got.into_iter().next().unwrap().unwrap();
        assert_eq!((got_id, message.to::<Vec<u8>>().unwrap()), (id, vec![1u8]));
    });
}

#[test]
fn a_select_reports_a_message_behind_dropped_ones_on_a_local_member() {
    let (tx, rx) = ipc::channel().unwrap();
    dropped_then_good(tx, rx);
}

/// The same for an OS member: control.
#[test]
fn a_select_reports_a_message_behind_dropped_ones_on_an_os_member() {
    let (tx, rx) = ipc::os_channel().unwrap();
    dropped_then_good(tx, rx);
}

/// `try_select_timeout` reports the message (it waited out its timeout and said `Empty`).
#[test]
fn try_select_timeout_reports_a_message_behind_dropped_ones() {
    with_watchdog(Duration::from_secs(20), || {
        let (tx, rx) = ipc::channel::<Vec<u8>>().unwrap();
        let mut set = IpcReceiverSet::new().unwrap();
        set.set_limits(small_limits());
        set.add(rx).unwrap();
        for _ in 0..40 {
            tx.send(vec![0u8; 200]).unwrap();
        }
        tx.send(vec![1u8]).unwrap();
        let start = Instant::now();
        let result = set.try_select_timeout(Duration::from_secs(2));
        assert!(result.is_ok(), "a queued message was reported as Empty after {:?}", start.elapsed());
    });
}

/// The tokio set: 70 over-limit messages, then a good one, sent while the set is asleep.
#[cfg(feature = "tokio")]
#[test]
fn an_async_set_reports_a_message_behind_dropped_ones() {
    with_watchdog(Duration::from_secs(20), || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let (tx, rx) = ipc::channel::<Vec<u8>>().unwrap();
            let mut set = IpcReceiverSet::new().unwrap();
            set.set_limits(small_limits());
            let id = set.add(rx).unwrap();
            let mut set = crossproc::tokio::AsyncIpcReceiverSet::new(set).unwrap();
            // Registers the waker.
            assert!(matches!(set.set_mut().try_select(), Err(crossproc::TrySelectError::Empty)));
            for _ in 0..70 {
                tx.send(vec![0u8; 200]).unwrap();
            }
            tx.send(vec![1u8]).unwrap();
            let got = set.select().await.unwrap();
            let (got_id, message) = got.into_iter().next().unwrap().unwrap();
            assert_eq!((got_id, message.to::<Vec<u8>>().unwrap()), (id, vec![1u8]));
        });
    });
}

/// A ChannelClosed of a local member is reported once.
#[test]
fn a_local_members_hang_up_is_reported_once() {
    with_watchdog(Duration::from_secs(20), || {
        let (tx, rx) = ipc::channel::<u32>().unwrap();
        let (_quiet, quiet_rx) = ipc::os_channel::<u32>().unwrap();
        let mut set = IpcReceiverSet::new().unwrap();
        let id = set.add(rx).unwrap();
        set.add(quiet_rx).unwrap();
        tx.send(5).unwrap();
        drop(tx);
        let mut events = Vec::new();
        while let Ok(reported) = set.try_select_timeout(Duration::from_millis(300)) {
            events.extend(reported);
        }
        let closed = events.iter().filter(|e| matches!(e, IpcSelectionResult::ChannelClosed(i) if *i == id)).count();
        assert_eq!(closed, 1);
    });
}
