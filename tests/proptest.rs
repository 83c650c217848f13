//! Property tests: random nested messages with channels and shared memory inside round-trip
//! intact, and every channel that travelled still works.

use crossproc::ipc::{self, IpcReceiver, IpcSender, IpcSharedMemory};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

/// The plain shape of a message, which proptest generates and shrinks.
#[derive(Clone, Debug)]
enum Shape {
    Bytes(Vec<u8>),
    Shared(Vec<u8>),
    Sender,
    Receiver,
    List(Vec<Shape>),
    Pair(Box<Shape>, Box<Shape>),
}

/// The real message built from a shape: channel ends and shared memory at every depth.
#[derive(Debug, Serialize, Deserialize)]
enum Node {
    Bytes(Vec<u8>),
    Shared(IpcSharedMemory),
    Sender(IpcSender<u64>),
    Receiver(IpcReceiver<u64>),
    List(Vec<Node>),
    Pair(Box<Node>, Box<Node>),
}

fn shape() -> impl Strategy<Value = Shape> {
    let leaf = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64).prop_map(Shape::Bytes),
        prop::collection::vec(any::<u8>(), 0..5000).prop_map(Shape::Shared),
        Just(Shape::Sender),
        Just(Shape::Receiver),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Shape::List),
            (inner.clone(), inner).prop_map(|(a, b)| Shape::Pair(Box::new(a), Box::new(b))),
        ]
    })
}

/// The other ends of the channels placed in a message, in the order they were placed.
#[derive(Default)]
struct Ends {
    receivers: Vec<IpcReceiver<u64>>,
    senders: Vec<IpcSender<u64>>,
}

fn build(shape: &Shape, ends: &mut Ends) -> Node {
    match shape {
        Shape::Bytes(bytes) => Node::Bytes(bytes.clone()),
        Shape::Shared(bytes) => Node::Shared(IpcSharedMemory::from_bytes(bytes)),
        Shape::Sender => {
            let (tx, rx) = ipc::channel().unwrap();
            ends.receivers.push(rx);
            Node::Sender(tx)
        }
        Shape::Receiver => {
            let (tx, rx) = ipc::channel().unwrap();
            ends.senders.push(tx);
            Node::Receiver(rx)
        }
        Shape::List(items) => Node::List(items.iter().map(|item| build(item, ends)).collect()),
        Shape::Pair(a, b) => Node::Pair(Box::new(build(a, ends)), Box::new(build(b, ends))),
    }
}

/// Checks `node` against `shape`, using every channel end that came through.
fn check(shape: &Shape, node: Node, ends: &mut Ends, counters: &mut (usize, usize)) {
    match (shape, node) {
        (Shape::Bytes(expected), Node::Bytes(bytes)) => assert_eq!(&bytes, expected),
        (Shape::Shared(expected), Node::Shared(region)) => assert_eq!(&region[..], &expected[..]),
        (Shape::Sender, Node::Sender(tx)) => {
            let index = counters.0;
            counters.0 += 1;
            tx.send(index as u64).unwrap();
            assert_eq!(ends.receivers[index].recv().unwrap(), index as u64);
        }
        (Shape::Receiver, Node::Receiver(rx)) => {
            let index = counters.1;
            counters.1 += 1;
            ends.senders[index].send(index as u64 + 1000).unwrap();
            assert_eq!(rx.recv().unwrap(), index as u64 + 1000);
        }
        (Shape::List(shapes), Node::List(nodes)) => {
            assert_eq!(shapes.len(), nodes.len());
            for (shape, node) in shapes.iter().zip(nodes) {
                check(shape, node, ends, counters);
            }
        }
        (Shape::Pair(a, b), Node::Pair(x, y)) => {
            check(a, *x, ends, counters);
            check(b, *y, ends, counters);
        }
        (shape, node) => panic!("shape {shape:?} came back as {node:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn nested_messages_round_trip(shape in shape()) {
        let (tx, rx) = ipc::channel::<Node>().unwrap();
        let mut ends = Ends::default();
        tx.send(build(&shape, &mut ends)).unwrap();
        let node = rx.recv().unwrap();
        check(&shape, node, &mut ends, &mut (0, 0));
    }

    #[test]
    fn byte_messages_of_any_size_round_trip(bytes in prop::collection::vec(any::<u8>(), 0..300_000)) {
        let (tx, rx) = ipc::bytes_channel().unwrap();
        tx.send(&bytes).unwrap();
        prop_assert_eq!(rx.recv().unwrap(), bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        // Whatever a peer's payload holds, decoding returns a value or an error.
        let _ = ipc::IpcMessage::from_data(bytes).to::<Node>();
    }
}
