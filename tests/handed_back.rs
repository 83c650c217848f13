//! A value handed back by a failed send is whole: every channel end and region inside it works
//! exactly as before the attempt, queued messages included — whether the send found the channel
//! full, timed out, found the receiver gone, or failed while encoding.

use std::time::Duration;

use crossproc::ipc::{self, IpcReceiver, IpcSender, IpcSharedMemory};
use crossproc::{IpcError, SendTimeoutError, TrySendError};
use serde::{Serialize, Serializer};

type Parcel = (u32, IpcReceiver<String>, IpcSharedMemory);

/// A receiver with two messages queued in it, and the sender that queued them.
fn loaded_receiver() -> (IpcSender<String>, IpcReceiver<String>) {
    let (tx, rx) = ipc::channel::<String>().unwrap();
    tx.send("queued 1".into()).unwrap();
    tx.send("queued 2".into()).unwrap();
    (tx, rx)
}

/// The receiver still holds what was queued before the failed send, and still receives.
fn assert_whole(tx: &IpcSender<String>, rx: &IpcReceiver<String>) {
    assert_eq!(rx.recv().unwrap(), "queued 1");
    assert_eq!(rx.recv().unwrap(), "queued 2");
    tx.send("after".into()).unwrap();
    assert_eq!(rx.recv().unwrap(), "after");
}

/// A channel of parcels whose buffer is full (nobody reads it), and how many parcels it holds.
fn full_channel() -> (IpcSender<Parcel>, IpcReceiver<Parcel>, usize) {
    let (tx, rx) = ipc::channel::<Parcel>().unwrap();
    tx.set_buffer_size(8192).unwrap();
    let region = IpcSharedMemory::from_bytes(b"filler");
    let mut queued = 0;
    while tx.try_send((0, ipc::channel::<String>().unwrap().1, region.clone())).is_ok() {
        queued += 1;
        assert!(queued < 100_000, "the channel never filled");
    }
    (tx, rx, queued)
}

#[test]
fn try_send_into_a_full_channel_gives_the_value_back_whole() {
    let (tx, rx, queued) = full_channel();
    let (inner_tx, inner_rx) = loaded_receiver();
    let region = IpcSharedMemory::from_byte(7, 100);
    let parcel = match tx.try_send((1, inner_rx, region)) {
        Err(TrySendError::Full(parcel)) => parcel,
        other => panic!("expected Full, got {other:?}"),
    };
    assert!(parcel.2.iter().all(|&byte| byte == 7));
    // The value can be sent again once there is room, and arrives whole.
    for _ in 0..queued {
        rx.recv().unwrap();
    }
    tx.send(parcel).unwrap();
    let (one, moved, region) = rx.recv().unwrap();
    assert_eq!((one, region.len()), (1, 100));
    assert_whole(&inner_tx, &moved);
}

#[test]
fn a_timed_out_send_gives_the_value_back_whole() {
    let (tx, _rx, _) = full_channel();
    let (inner_tx, inner_rx) = loaded_receiver();
    let parcel = match tx.send_timeout((1, inner_rx, IpcSharedMemory::from_byte(1, 1)), Duration::from_millis(20)) {
        Err(SendTimeoutError::Timeout(parcel)) => parcel,
        other => panic!("expected Timeout, got {other:?}"),
    };
    assert_whole(&inner_tx, &parcel.1);
}

#[test]
fn a_send_to_a_gone_receiver_gives_the_value_back_whole() {
    let (tx, rx) = ipc::channel::<Parcel>().unwrap();
    drop(rx);
    let (inner_tx, inner_rx) = loaded_receiver();
    let parcel = match tx.try_send((1, inner_rx, IpcSharedMemory::from_byte(1, 1))) {
        Err(TrySendError::Disconnected(parcel)) => parcel,
        other => panic!("expected Disconnected, got {other:?}"),
    };
    assert_whole(&inner_tx, &parcel.1);
}

/// Serializes its receiver first, then fails: the encoding stops half-way.
struct FailsAfterTheReceiver(IpcReceiver<String>);

impl Serialize for FailsAfterTheReceiver {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeTuple};
        let mut tuple = serializer.serialize_tuple(2)?;
        tuple.serialize_element(&self.0)?;
        Err(S::Error::custom("fails after the receiver was encoded"))
    }
}

impl<'de> serde::Deserialize<'de> for FailsAfterTheReceiver {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        IpcReceiver::deserialize(deserializer).map(FailsAfterTheReceiver)
    }
}

#[test]
fn a_send_that_fails_while_encoding_leaves_the_value_whole() {
    let (tx, _rx) = ipc::channel::<FailsAfterTheReceiver>().unwrap();
    let (inner_tx, inner_rx) = loaded_receiver();
    match tx.try_send(FailsAfterTheReceiver(inner_rx)) {
        Err(TrySendError::Failed(value, IpcError::SerializationError(_))) => assert_whole(&inner_tx, &value.0),
        other => panic!("expected Failed, got {other:?}"),
    }
}
