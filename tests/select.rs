//! `IpcReceiverSet`: messages and closures from many receivers, reported once each.

use std::time::Duration;

use crossproc::ipc::{self, IpcReceiverSet, IpcSelectionResult};
use crossproc::TrySelectError;

fn collect(set: &mut IpcReceiverSet, events: usize) -> Vec<IpcSelectionResult> {
    let mut results = Vec::new();
    while results.len() < events {
        results.extend(set.select().unwrap());
    }
    results
}

#[test]
fn messages_from_many_receivers_are_all_reported() {
    let mut set = IpcReceiverSet::new().unwrap();
    let mut senders = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..50 {
        let (tx, rx) = ipc::channel::<u64>().unwrap();
        ids.push(set.add(rx).unwrap());
        senders.push(tx);
    }
    for (tx, id) in senders.iter().zip(&ids) {
        tx.send(*id).unwrap();
        tx.send(*id + 1000).unwrap();
    }
    let mut seen = Vec::new();
    for result in collect(&mut set, 100) {
        let (id, message) = result.unwrap();
        let value = message.to::<u64>().unwrap();
        assert!(value == id || value == id + 1000);
        seen.push(value);
    }
    seen.sort();
    let mut expected: Vec<u64> = ids.iter().flat_map(|&id| [id, id + 1000]).collect();
    expected.sort();
    assert_eq!(seen, expected);
    assert!(matches!(set.try_select(), Err(TrySelectError::Empty)));
}

#[test]
fn a_closed_channel_is_reported_once_after_its_messages() {
    let mut set = IpcReceiverSet::new().unwrap();
    let (tx, rx) = ipc::channel::<u8>().unwrap();
    let (_keep, other) = ipc::channel::<u8>().unwrap();
    let id = set.add(rx).unwrap();
    set.add(other).unwrap();
    tx.send(1).unwrap();
    tx.send(2).unwrap();
    drop(tx);
    let results = collect(&mut set, 3);
    assert_eq!(results.len(), 3);
    match &results[..] {
        [IpcSelectionResult::MessageReceived(a, _), IpcSelectionResult::MessageReceived(b, _), IpcSelectionResult::ChannelClosed(c)] =>
        {
            assert_eq!((*a, *b, *c), (id, id, id))
        }
        other => panic!("unexpected events {other:?}"),
    }
    assert!(matches!(set.try_select_timeout(Duration::from_millis(20)), Err(TrySelectError::Empty)));
}

#[test]
fn opaque_and_typed_receivers_mix_in_one_set() {
    let mut set = IpcReceiverSet::new().unwrap();
    let (tx1, rx1) = ipc::channel::<String>().unwrap();
    let (tx2, rx2) = ipc::channel::<(u8, u8)>().unwrap();
    let id1 = set.add(rx1).unwrap();
    let id2 = set.add_opaque(rx2.to_opaque()).unwrap();
    assert_ne!(id1, id2);
    tx1.send("text".into()).unwrap();
    tx2.send((1, 2)).unwrap();
    for result in collect(&mut set, 2) {
        let (id, message) = result.unwrap();
        if id == id1 {
            assert_eq!(message.to::<String>().unwrap(), "text");
        } else {
            assert_eq!(id, id2);
            assert_eq!(message.to::<(u8, u8)>().unwrap(), (1, 2));
        }
    }
}

#[test]
fn try_select_timeout_waits_for_a_late_message() {
    let mut set = IpcReceiverSet::new().unwrap();
    let (tx, rx) = ipc::channel::<u8>().unwrap();
    let id = set.add(rx).unwrap();
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        tx.send(7).unwrap();
        tx
    });
    let results = set.try_select_timeout(Duration::from_secs(10)).unwrap();
    let (got, message) = results.into_iter().next().unwrap().unwrap();
    assert_eq!((got, message.to::<u8>().unwrap()), (id, 7));
    drop(sender.join().unwrap());
}

#[test]
#[should_panic(expected = "closed")]
fn unwrap_of_a_closed_result_panics() {
    IpcSelectionResult::ChannelClosed(3).unwrap();
}

#[test]
fn a_thousand_receivers_with_one_ready() {
    let mut set = IpcReceiverSet::new().unwrap();
    let mut senders = Vec::new();
    for _ in 0..1000 {
        let (tx, rx) = ipc::channel::<u32>().unwrap();
        set.add(rx).unwrap();
        senders.push(tx);
    }
    for round in 0..100u32 {
        senders[(round as usize * 37) % 1000].send(round).unwrap();
        let results = set.select().unwrap();
        assert_eq!(results.len(), 1);
        let (_, message) = results.into_iter().next().unwrap().unwrap();
        assert_eq!(message.to::<u32>().unwrap(), round);
    }
}
