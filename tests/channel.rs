//! Channel semantics within one process: every public item of `crossproc::ipc`, every error
//! variant, messages of every size, and channels nested inside messages.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crossproc::ipc::{
    self, IpcBytesReceiver, IpcBytesSender, IpcMessage, IpcReceiver, IpcSender, IpcSharedMemory, OpaqueIpcReceiver,
    OpaqueIpcSender,
};
use crossproc::{IpcError, TryRecvError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Shape {
    Unit,
    Tuple(i64, f64),
    Named { name: String, tags: Vec<String>, map: HashMap<u8, Option<bool>> },
}

#[test]
fn values_of_many_types_round_trip() {
    let (tx, rx) = ipc::channel::<Shape>().unwrap();
    let mut map = HashMap::new();
    map.insert(1, Some(true));
    map.insert(2, None);
    let values = vec![
        Shape::Unit,
        Shape::Tuple(-5, 2.5),
        Shape::Named { name: "ünïcødé".into(), tags: vec!["a".into(), String::new()], map },
    ];
    for value in &values {
        tx.send(value.clone()).unwrap();
    }
    for value in &values {
        assert_eq!(&rx.recv().unwrap(), value);
    }
}

#[test]
fn messages_arrive_in_order() {
    let (tx, rx) = ipc::channel::<u32>().unwrap();
    let producer = std::thread::spawn(move || {
        for i in 0..10_000 {
            tx.send(i).unwrap();
        }
    });
    for i in 0..10_000 {
        assert_eq!(rx.recv().unwrap(), i);
    }
    producer.join().unwrap();
    assert!(matches!(rx.recv(), Err(IpcError::Disconnected)));
}

#[test]
fn every_message_is_received_before_disconnected() {
    let (tx, rx) = ipc::channel::<String>().unwrap();
    let clone = tx.clone();
    tx.send("one".into()).unwrap();
    drop(tx);
    clone.send("two".into()).unwrap();
    assert_eq!(rx.try_recv().unwrap(), "one");
    drop(clone);
    assert_eq!(rx.recv().unwrap(), "two");
    assert!(matches!(rx.recv(), Err(IpcError::Disconnected)));
    assert!(matches!(rx.try_recv(), Err(TryRecvError::IpcError(IpcError::Disconnected))));
    assert!(matches!(
        rx.try_recv_timeout(Duration::from_millis(1)),
        Err(TryRecvError::IpcError(IpcError::Disconnected))
    ));
}

/// A message sent just before the last sender closes is never hidden behind `Disconnected`,
/// however the non-blocking receive interleaves with the close (the kernel reports end-of-file
/// to a non-blocking read that found the queue empty a moment before the message arrived).
#[test]
fn try_recv_never_reports_disconnected_before_the_last_message() {
    let (handover, senders) = std::sync::mpsc::channel::<IpcSender<u32>>();
    let sending = std::thread::spawn(move || {
        for (round, tx) in senders.into_iter().enumerate() {
            tx.send(round as u32).unwrap();
        }
    });
    for round in 0..50_000 {
        let (tx, rx) = ipc::channel::<u32>().unwrap();
        handover.send(tx).unwrap();
        let received = loop {
            match rx.try_recv() {
                Err(TryRecvError::Empty) => std::hint::spin_loop(),
                other => break other,
            }
        };
        assert!(matches!(received, Ok(value) if value == round), "round {round}: {received:?}");
    }
    drop(handover);
    sending.join().unwrap();
}

/// The receive spin is process-wide: the tests that set it, or measure what it costs, take
/// this lock so that they never run at once. (Other tests meanwhile just poll longer.)
static SPIN_SETTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A waiting receive polls for the spin window before it sleeps; a window longer than the
/// wait never stretches a timeout, and a message that arrives while polling is taken.
#[test]
fn a_long_receive_spin_keeps_timeouts_and_takes_messages() {
    let _spin = SPIN_SETTING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let before = ipc::set_receive_spin(Duration::from_secs(1));
    assert_eq!(ipc::receive_spin(), Duration::from_secs(1));
    let (tx, rx) = ipc::channel::<u8>().unwrap();
    let mut set = crossproc::ipc::IpcReceiverSet::new().unwrap();
    let (set_tx, set_rx) = ipc::channel::<u8>().unwrap();
    set.add(set_rx).unwrap();

    let start = Instant::now();
    assert!(matches!(rx.try_recv_timeout(Duration::from_millis(20)), Err(TryRecvError::Empty)));
    assert!(matches!(set.try_select_timeout(Duration::from_millis(20)), Err(crossproc::TrySelectError::Empty)));
    assert!(start.elapsed() < Duration::from_millis(500), "a timeout waited {:?}", start.elapsed());

    let sending = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(10));
        tx.send(5).unwrap();
        set_tx.send(6).unwrap();
        set_tx // kept open until the select below is done
    });
    assert_eq!(rx.recv().unwrap(), 5);
    let selected = set.select().unwrap();
    assert_eq!(selected.len(), 1);
    assert_eq!(selected.into_iter().next().unwrap().unwrap().1.to::<u8>().unwrap(), 6);
    sending.join().unwrap();
    ipc::set_receive_spin(before);
}

/// The CPU time this thread has used, from /proc (clock-tick resolution).
#[cfg(target_os = "linux")]
fn thread_cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // Fields after the command name (which ends with the last ')'): utime is the 12th, stime the 13th.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 1000 / rustix::param::clock_ticks_per_second())
}

/// A receiver whose messages are far apart sleeps at once instead of polling: after one wait
/// longer than the spin window, the next wait costs (next to) no CPU time.
#[test]
#[cfg(target_os = "linux")]
fn a_receiver_with_sparse_messages_does_not_poll() {
    let _spin = SPIN_SETTING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let before = ipc::set_receive_spin(Duration::from_millis(200));
    let (tx, rx) = ipc::channel::<u8>().unwrap();
    let sending = std::thread::spawn(move || {
        for value in 0..2 {
            std::thread::sleep(Duration::from_millis(400));
            tx.send(value).unwrap();
        }
    });
    assert_eq!(rx.recv().unwrap(), 0); // may poll: the receiver has no history yet
    let cpu = thread_cpu_time();
    assert_eq!(rx.recv().unwrap(), 1);
    let used = thread_cpu_time() - cpu;
    sending.join().unwrap();
    ipc::set_receive_spin(before);
    assert!(used < Duration::from_millis(100), "a 400 ms wait used {used:?} of CPU");
}

#[test]
fn send_to_a_dropped_receiver_is_disconnected() {
    let (tx, rx) = ipc::channel::<u8>().unwrap();
    drop(rx);
    assert!(matches!(tx.send(1), Err(IpcError::Disconnected)));
    let (btx, brx) = ipc::bytes_channel().unwrap();
    drop(brx);
    assert_eq!(btx.send(b"x").unwrap_err().kind(), std::io::ErrorKind::BrokenPipe);
}

#[test]
fn try_recv_and_timeout_report_empty() {
    let (tx, rx) = ipc::channel::<u8>().unwrap();
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
    let start = Instant::now();
    assert!(matches!(rx.try_recv_timeout(Duration::from_millis(50)), Err(TryRecvError::Empty)));
    assert!(start.elapsed() >= Duration::from_millis(50));
    tx.send(3).unwrap();
    assert_eq!(rx.try_recv_timeout(Duration::from_secs(10)).unwrap(), 3);
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        tx.send(4).unwrap();
    });
    assert_eq!(rx.try_recv_timeout(Duration::from_secs(10)).unwrap(), 4);
    sender.join().unwrap();
}

#[test]
fn a_sender_in_flight_keeps_its_channel_connected() {
    let (carrier_tx, carrier_rx) = ipc::channel::<IpcSender<u32>>().unwrap();
    let (tx, rx) = ipc::channel::<u32>().unwrap();
    carrier_tx.send(tx).unwrap(); // the only sender is now inside a queued message
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
    assert!(matches!(rx.try_recv_timeout(Duration::from_millis(20)), Err(TryRecvError::Empty)));
    let tx = carrier_rx.recv().unwrap();
    tx.send(9).unwrap();
    assert_eq!(rx.recv().unwrap(), 9);
    drop(tx);
    assert!(matches!(rx.recv(), Err(IpcError::Disconnected)));
}

#[test]
fn receivers_move_through_channels() {
    let (carrier_tx, carrier_rx) = ipc::channel::<IpcReceiver<String>>().unwrap();
    let (tx, rx) = ipc::channel::<String>().unwrap();
    tx.send("queued before the move".into()).unwrap();
    carrier_tx.send(rx).unwrap();
    let rx = carrier_rx.recv().unwrap();
    assert_eq!(rx.recv().unwrap(), "queued before the move");
    tx.send("after".into()).unwrap();
    assert_eq!(rx.recv().unwrap(), "after");
}

/// A value whose serialization fails after a channel inside it was already encoded.
struct FailsHalfway(IpcSender<u8>);

impl Serialize for FailsHalfway {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeTuple};
        let mut tuple = serializer.serialize_tuple(2)?;
        tuple.serialize_element(&self.0)?;
        Err(S::Error::custom("refused halfway"))
    }
}

#[test]
fn a_send_that_fails_halfway_leaves_nothing_for_the_next_one() {
    let (tx, rx) = ipc::channel::<(IpcSender<u8>, u8)>().unwrap();
    let (inner_tx, inner_rx) = ipc::channel::<u8>().unwrap();
    let failing: IpcSender<FailsHalfwayCarrier> = tx.clone().to_opaque().to();
    assert!(matches!(
        failing.send(FailsHalfwayCarrier(FailsHalfway(inner_tx.clone()))),
        Err(IpcError::SerializationError(_))
    ));
    // The next message carries exactly its own channel, nothing left over from the failure.
    tx.send((inner_tx, 5)).unwrap();
    let (received_tx, value) = rx.recv().unwrap();
    assert_eq!(value, 5);
    received_tx.send(6).unwrap();
    assert_eq!(inner_rx.recv().unwrap(), 6);
}

/// `FailsHalfway` as a message type (only ever serialized).
struct FailsHalfwayCarrier(FailsHalfway);

impl Serialize for FailsHalfwayCarrier {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for FailsHalfwayCarrier {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom("never decoded"))
    }
}

#[derive(Serialize, Deserialize)]
struct Nested {
    level: u32,
    reply: IpcSender<String>,
    shared: Option<IpcSharedMemory>,
    inner: Option<Box<Nested>>,
    bytes: Vec<IpcBytesSender>,
}

#[test]
fn channels_nest_at_any_depth() {
    let (tx, rx) = ipc::channel::<Nested>().unwrap();
    let mut reply_receivers = Vec::new();
    let mut bytes_receivers = Vec::new();
    let mut value: Option<Box<Nested>> = None;
    for level in 0..20 {
        let (reply, reply_rx) = ipc::channel().unwrap();
        let (btx, brx) = ipc::bytes_channel().unwrap();
        reply_receivers.push(reply_rx);
        bytes_receivers.push(brx);
        value = Some(Box::new(Nested {
            level,
            reply,
            shared: (level % 2 == 0).then(|| IpcSharedMemory::from_byte(level as u8, 4096)),
            inner: value,
            bytes: vec![btx],
        }));
    }
    tx.send(*value.unwrap()).unwrap();
    let mut node = Some(Box::new(rx.recv().unwrap()));
    let mut seen = 0;
    while let Some(current) = node {
        let level = current.level;
        current.reply.send(format!("level {level}")).unwrap();
        current.bytes[0].send(&[level as u8]).unwrap();
        if let Some(shared) = &current.shared {
            assert!(shared.iter().all(|&b| b == level as u8));
        } else {
            assert_eq!(level % 2, 1);
        }
        node = current.inner;
        seen += 1;
    }
    assert_eq!(seen, 20);
    for (level, (reply_rx, brx)) in reply_receivers.iter().zip(&bytes_receivers).enumerate() {
        assert_eq!(reply_rx.recv().unwrap(), format!("level {level}"));
        assert_eq!(brx.recv().unwrap(), [level as u8]);
    }
}

#[test]
fn many_channels_and_regions_in_one_message() {
    // Linux refuses more than 253 descriptors per sendmsg; ipc-channel 0.21 fails at 300.
    for count in [0usize, 1, 249, 250, 300, 1000] {
        let (tx, rx) = ipc::channel::<(Vec<IpcSender<usize>>, Vec<IpcSharedMemory>)>().unwrap();
        let mut receivers = Vec::new();
        let mut senders = Vec::new();
        for _ in 0..count {
            let (s, r) = ipc::channel().unwrap();
            senders.push(s);
            receivers.push(r);
        }
        let regions: Vec<_> = (0..count / 2).map(|i| IpcSharedMemory::from_bytes(&i.to_le_bytes())).collect();
        tx.send((senders, regions)).unwrap();
        let (senders, regions) = rx.recv().unwrap();
        assert_eq!(senders.len(), count);
        assert_eq!(regions.len(), count / 2);
        for (i, region) in regions.iter().enumerate() {
            assert_eq!(&region[..], &i.to_le_bytes());
        }
        for (i, sender) in senders.iter().enumerate() {
            sender.send(i).unwrap();
        }
        for (i, receiver) in receivers.iter().enumerate() {
            assert_eq!(receiver.recv().unwrap(), i);
        }
    }
}

#[test]
fn messages_of_every_size_arrive_intact() {
    let (tx, rx) = ipc::channel::<Vec<u8>>().unwrap();
    let (btx, brx) = ipc::bytes_channel().unwrap();
    for size in [0usize, 1, 100, 65_535, 65_536, 65_537, 200_000, 1 << 20, 16 << 20] {
        let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        let sender = {
            let (data, tx, btx) = (data.clone(), tx.clone(), btx.clone());
            std::thread::spawn(move || {
                tx.send(data.clone()).unwrap();
                btx.send(&data).unwrap();
            })
        };
        assert_eq!(rx.recv().unwrap(), data, "typed message of {size} bytes");
        assert_eq!(brx.recv().unwrap(), data, "bytes message of {size} bytes");
        sender.join().unwrap();
    }
}

/// Large bytes messages are copied in two halves by two threads, into a reused memfd through
/// its mapping and out into fresh memory: every byte must land where it belongs.
#[test]
fn large_messages_copied_in_halves_arrive_intact() {
    let (tx, rx) = ipc::bytes_channel().unwrap();
    for round in 0..3u8 {
        let data: Vec<u8> = (0..40usize << 20).map(|i| (i % 251) as u8 ^ round).collect();
        tx.send(&data).unwrap();
        assert!(rx.recv().unwrap() == data, "round {round}: the payload changed on the way");
    }
}

#[test]
fn a_256_mib_message_arrives_intact() {
    let size = 256 << 20;
    let (btx, brx) = ipc::bytes_channel().unwrap();
    let mut data = vec![0u8; size];
    // Every page different, so that a step copied to the wrong place shows.
    for (i, chunk) in data.chunks_mut(4096).enumerate() {
        chunk.fill(i as u8);
        chunk[..4].copy_from_slice(&(i as u32).to_le_bytes());
    }
    btx.send(&data).unwrap();
    let received = brx.recv().unwrap();
    assert_eq!(received.len(), size);
    assert!(received == data);
}

#[test]
fn bytes_channels_and_their_ends_travel() {
    let (tx, rx) = ipc::channel::<(IpcBytesSender, IpcBytesReceiver)>().unwrap();
    let (btx, brx) = ipc::bytes_channel().unwrap();
    tx.send((btx, brx)).unwrap();
    let (btx, brx) = rx.recv().unwrap();
    btx.send(b"through").unwrap();
    assert_eq!(brx.recv().unwrap(), b"through");
    assert!(matches!(brx.try_recv(), Err(TryRecvError::Empty)));
    assert!(matches!(brx.try_recv_timeout(Duration::from_millis(5)), Err(TryRecvError::Empty)));
    drop(btx);
    assert!(matches!(brx.recv(), Err(IpcError::Disconnected)));
}

#[test]
fn recv_into_replaces_the_buffer_contents_and_reports_disconnection() {
    let (tx, rx) = ipc::bytes_channel().unwrap();
    let mut buffer = b"old contents, longer than the message".to_vec();
    for message in [&b"short"[..], &[5u8; 300_000][..], &[6u8; 1000][..], &[][..]] {
        tx.send(message).unwrap();
        rx.recv_into(&mut buffer).unwrap();
        assert_eq!(buffer, message);
    }
    drop(tx);
    assert!(matches!(rx.recv_into(&mut buffer), Err(IpcError::Disconnected)));
}

/// On Linux the message lands in the buffer's own allocation when it fits, inline or in a memfd.
#[cfg(all(target_os = "linux", not(feature = "force-inprocess")))]
#[test]
fn recv_into_reuses_an_allocation_that_fits() {
    let (tx, rx) = ipc::os_bytes_channel().unwrap();
    let mut buffer = Vec::with_capacity(4 << 20);
    let allocation = buffer.as_ptr();
    for (seq, len) in [(1u8, 3 << 20), (2, 100), (3, 150_000), (4, 4 << 20)] {
        tx.send(&vec![seq; len]).unwrap();
        rx.recv_into(&mut buffer).unwrap();
        assert!(buffer.len() == len && buffer.iter().all(|&byte| byte == seq), "message {seq}");
        assert_eq!(buffer.as_ptr(), allocation, "message {seq} reused the allocation");
    }
    // Larger than the buffer: a new allocation, and the right bytes.
    tx.send(&vec![9u8; 5 << 20]).unwrap();
    rx.recv_into(&mut buffer).unwrap();
    assert!(buffer.len() == 5 << 20 && buffer.iter().all(|&byte| byte == 9));
}

#[test]
fn opaque_ends_travel_and_become_typed_again() {
    let (tx, rx) = ipc::channel::<(OpaqueIpcSender, OpaqueIpcReceiver)>().unwrap();
    let (inner_tx, inner_rx) = ipc::channel::<u64>().unwrap();
    tx.send((inner_tx.to_opaque(), inner_rx.to_opaque())).unwrap();
    let (otx, orx) = rx.recv().unwrap();
    let (inner_tx, inner_rx) = (otx.to::<u64>(), orx.to::<u64>());
    inner_tx.send(77).unwrap();
    assert_eq!(inner_rx.recv().unwrap(), 77);
}

#[test]
fn shared_memory_compares_clones_and_takes() {
    let region = IpcSharedMemory::from_bytes(b"hello");
    let copy = region.clone();
    assert_eq!(region, copy);
    assert_ne!(region, IpcSharedMemory::from_bytes(b"world"));
    assert_eq!(format!("{region:?}"), "IpcSharedMemory(5 bytes)");
    assert_eq!(copy.take(), Some(b"hello".to_vec()));
    assert_eq!(IpcSharedMemory::from_bytes(&[]).take(), Some(Vec::new()));
    assert_eq!(&*IpcSharedMemory::from_byte(9, 3), &[9, 9, 9]);
    let (tx, rx) = ipc::channel::<IpcSharedMemory>().unwrap();
    tx.send(IpcSharedMemory::from_bytes(&[])).unwrap();
    assert!(rx.recv().unwrap().is_empty());
}

#[test]
fn ipc_message_decodes_and_reports_bad_data() {
    let message = IpcMessage::from_data(postcard::to_stdvec(&(7u16, "x".to_string())).unwrap());
    assert!(format!("{message:?}").contains("IpcMessage"));
    assert_eq!(message.to::<(u16, String)>().unwrap(), (7, "x".to_string()));
    let truncated = IpcMessage::from_data(vec![0xFF]);
    assert!(truncated.to::<String>().is_err());
}

#[test]
fn a_message_of_the_wrong_type_is_a_serialization_error() {
    let (tx, rx) = ipc::channel::<String>().unwrap();
    let tx: IpcSender<Vec<u64>> = tx.to_opaque().to();
    tx.send(vec![u64::MAX]).unwrap();
    assert!(matches!(rx.recv(), Err(IpcError::SerializationError(_))));
    tx.send(vec![u64::MAX]).unwrap();
    assert!(matches!(rx.try_recv(), Err(TryRecvError::IpcError(IpcError::SerializationError(_)))));
}

#[test]
fn channels_cannot_be_serialized_outside_a_message() {
    let (tx, rx) = ipc::channel::<u8>().unwrap();
    assert!(postcard::to_stdvec(&tx).is_err());
    assert!(postcard::to_stdvec(&IpcSharedMemory::from_bytes(b"x")).is_err());
    assert!(postcard::from_bytes::<IpcSender<u8>>(&[0]).is_err());
    // A failed attempt leaves the receiver usable.
    tx.send(1).unwrap();
    assert_eq!(rx.recv().unwrap(), 1);
}

#[test]
fn a_message_that_claims_a_channel_it_does_not_carry_is_refused() {
    let message = IpcMessage::from_data(vec![0]);
    assert!(message.to::<IpcSender<u8>>().is_err());
}

#[test]
fn senders_are_sync_and_receivers_are_send() {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}
    assert_send_sync::<IpcSender<std::rc::Rc<u8>>>();
    assert_send_sync::<IpcBytesSender>();
    assert_send::<IpcReceiver<u8>>();
    assert_send::<IpcBytesReceiver>();
    assert_send_sync::<IpcSharedMemory>();
}

#[test]
fn debug_output_names_the_type() {
    let (tx, rx) = ipc::channel::<u8>().unwrap();
    assert!(format!("{tx:?}").starts_with("IpcSender"));
    assert!(format!("{rx:?}").starts_with("IpcReceiver"));
    let (btx, brx) = ipc::bytes_channel().unwrap();
    assert!(format!("{btx:?}").contains("IpcBytesSender"));
    assert!(format!("{brx:?}").contains("IpcBytesReceiver"));
}
