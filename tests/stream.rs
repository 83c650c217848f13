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
