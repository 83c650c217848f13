//! Feature `async`: `IpcReceiver::to_stream`.

#![cfg(feature = "async")]

use futures::executor::block_on;
use futures::StreamExt;

use crossproc::ipc;

#[test]
fn a_stream_yields_every_message_then_ends() {
    let (tx, rx) = ipc::channel::<u32>().unwrap();
    let mut stream = rx.to_stream();
    let producer = std::thread::spawn(move || {
        for i in 0..100 {
            tx.send(i).unwrap();
        }
    });
    block_on(async {
        for i in 0..100 {
            assert_eq!(stream.next().await.unwrap().unwrap(), i);
        }
        assert!(stream.next().await.is_none());
    });
    producer.join().unwrap();
}

#[test]
fn a_bad_message_is_an_error_item_not_the_end() {
    let (tx, rx) = ipc::channel::<String>().unwrap();
    let mut stream = rx.to_stream();
    let wrong: ipc::IpcSender<Vec<u64>> = tx.clone().to_opaque().to();
    wrong.send(vec![u64::MAX]).unwrap();
    tx.send("fine".into()).unwrap();
    drop((tx, wrong));
    block_on(async {
        assert!(stream.next().await.unwrap().is_err());
        assert_eq!(stream.next().await.unwrap().unwrap(), "fine");
        assert!(stream.next().await.is_none());
    });
}

#[test]
fn streams_do_not_depend_on_the_global_router() {
    crossproc::router::ROUTER.shutdown();
    let (tx, rx) = ipc::channel::<u32>().unwrap();
    let mut stream = rx.to_stream();
    tx.send(7).expect("a stream's sender must stay connected after ROUTER.shutdown()");
    drop(tx);
    block_on(async {
        assert_eq!(stream.next().await.unwrap().unwrap(), 7);
        assert!(stream.next().await.is_none());
    });
}

#[test]
fn a_stream_is_fused_and_works_in_select() {
    use futures::stream::FusedStream;
    let (tx, rx) = ipc::channel::<u8>().unwrap();
    let mut stream: crossproc::asynch::IpcStream<u8> = rx.to_stream();
    tx.send(1).unwrap();
    drop(tx);
    block_on(async {
        let mut seen = Vec::new();
        loop {
            futures::select! {
                item = stream.next() => match item {
                    Some(value) => seen.push(value.unwrap()),
                    None => break,
                },
            }
        }
        assert_eq!(seen, [1]);
    });
    assert!(stream.is_terminated());
    assert!(block_on(stream.next()).is_none());
}

/// A message type that is not `Send` (it holds a raw pointer type): `to_stream` asks no
/// more of `T` than `Serialize + Deserialize`, as in ipc-channel.
#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct NotSend {
    value: u32,
    #[serde(skip)]
    marker: std::marker::PhantomData<*const ()>,
}

#[test]
fn to_stream_needs_only_serialize_and_deserialize() {
    let (tx, rx) = ipc::channel::<NotSend>().unwrap();
    let mut stream = rx.to_stream();
    tx.send(NotSend { value: 3, marker: std::marker::PhantomData }).unwrap();
    assert_eq!(block_on(stream.next()).unwrap().unwrap().value, 3);
}
