//! Async sends into a full local channel keep their wakers by send id and take them out when
//! they end (review 7 wrote these cases). Each case must end: a hang is a lost wakeup, which the
//! watchdog turns into a failure.

#![cfg(all(feature = "tokio", target_os = "linux", not(feature = "force-inprocess")))]

mod util;

use std::time::Duration;

use crossproc::ipc::{self, IpcReceiver, IpcSender};
use crossproc::tokio::AsyncIpcSender;
use util::with_watchdog;

fn full_local() -> (IpcSender<u32>, IpcReceiver<u32>, usize) {
    let (tx, rx) = ipc::channel::<u32>().unwrap();
    let mut queued = 0;
    while tx.try_send(0).is_ok() {
        queued += 1;
    }
    (tx, rx, queued)
}

fn block_on<F: std::future::Future<Output = ()> + Send + 'static>(body: impl FnOnce() -> F + Send + 'static) {
    with_watchdog(Duration::from_secs(30), move || {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(body())
    });
}

fn assert_send<T: Send>(_: &T) {}

/// Woken by a freeing, refilled by another sender before it runs: it registers again and is
/// woken by the next freeing.
#[test]
fn a_send_woken_then_refilled_is_woken_again() {
    block_on(|| async {
        let (tx, rx, queued) = full_local();
        let filler = tx.clone();
        let tx = AsyncIpcSender::new(tx).unwrap();
        let mut send = Box::pin(tx.send(7));
        assert_send(&send);
        assert!(futures::poll!(&mut send).is_pending());
        assert_eq!(rx.try_recv().unwrap(), 0); // wakes the send (its waker is taken)
        filler.try_send(0).unwrap(); // full again before it runs
        assert!(futures::poll!(&mut send).is_pending());
        let reader = std::thread::spawn(move || {
            for _ in 0..queued {
                assert_eq!(rx.recv().unwrap(), 0);
            }
            assert_eq!(rx.recv().unwrap(), 7);
        });
        send.await.unwrap();
        reader.join().unwrap();
    });
}

/// Two sends of one task (`join!`) into a full channel, freed one message at a time.
#[test]
fn two_sends_of_one_task_both_end() {
    block_on(|| async {
        let (tx, rx, queued) = full_local();
        let tx = AsyncIpcSender::new(tx).unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            for _ in 0..queued + 2 {
                got.push(rx.recv().unwrap());
            }
            got
        });
        let (a, b) = tokio::join!(tx.send(1), tx.send(2));
        a.unwrap();
        b.unwrap();
        let got = reader.join().unwrap();
        assert_eq!(&got[queued..].iter().copied().collect::<std::collections::BTreeSet<_>>(), &[1, 2].into());
    });
}

/// A send polled in one task, then awaited by another (its waker changes).
#[test]
fn a_send_moved_to_another_task_is_woken_there() {
    with_watchdog(Duration::from_secs(30), || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let (tx, rx, queued) = full_local();
        let tx: &'static AsyncIpcSender<u32> = Box::leak(Box::new(AsyncIpcSender::new(tx).unwrap()));
        let mut send = Box::pin(tx.send(9));
        runtime.block_on(async { assert!(futures::poll!(&mut send).is_pending()) });
        let task = runtime.spawn(async move { send.await.unwrap() });
        for _ in 0..queued {
            assert_eq!(rx.recv().unwrap(), 0);
        }
        assert_eq!(rx.recv().unwrap(), 9);
        runtime.block_on(task).unwrap();
    });
}

/// A send that waits on a local channel's budget while the channel becomes an OS channel
/// (a clone of its sender leaves in a message) follows it to the OS sender's readiness.
#[test]
fn a_waiting_send_follows_its_channel_to_the_os() {
    block_on(|| async {
        let (tx, rx, queued) = full_local();
        let leaving = tx.clone();
        let tx = AsyncIpcSender::new(tx).unwrap();
        let mut send = Box::pin(tx.send(5));
        assert!(futures::poll!(&mut send).is_pending());
        let (carrier_tx, carrier_rx) = ipc::os_channel::<IpcSender<u32>>().unwrap();
        carrier_tx.send(leaving).unwrap();
        let _left = carrier_rx.recv().unwrap();
        let reader = std::thread::spawn(move || {
            for _ in 0..queued {
                assert_eq!(rx.recv().unwrap(), 0);
            }
            assert_eq!(rx.recv().unwrap(), 5);
        });
        send.await.unwrap();
        reader.join().unwrap();
    });
}
