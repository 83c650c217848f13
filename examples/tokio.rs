//! Native tokio (feature `tokio`): receive, send and select on the runtime's reactor, with no
//! helper thread; a send into a full channel waits without blocking the runtime.
//!
//! Run: `cargo run --features tokio --example tokio`

use crossproc::ipc::{self, IpcReceiverSet, IpcSelectionResult};
use crossproc::tokio::{AsyncIpcReceiver, AsyncIpcReceiverSet, AsyncIpcSender};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // Receive and send.
    let (tx, rx) = ipc::channel::<String>().unwrap();
    let (tx, rx) = (AsyncIpcSender::new(tx).unwrap(), AsyncIpcReceiver::new(rx).unwrap());
    let producer = tokio::spawn(async move {
        for i in 0..3 {
            tx.send(format!("async message {i}")).await.unwrap();
        }
    });
    for _ in 0..3 {
        println!("received {:?}", rx.recv().await.unwrap());
    }
    producer.await.unwrap();

    // Select over two channels, fed from plain threads.
    let mut set = IpcReceiverSet::new().unwrap();
    let (numbers_tx, numbers_rx) = ipc::channel::<u32>().unwrap();
    let (words_tx, words_rx) = ipc::channel::<String>().unwrap();
    let numbers = set.add(numbers_rx).unwrap();
    set.add(words_rx).unwrap();
    std::thread::spawn(move || (0..3).for_each(|n| numbers_tx.send(n).unwrap()));
    std::thread::spawn(move || ["a", "b"].iter().for_each(|w| words_tx.send(w.to_string()).unwrap()));
    let mut set = AsyncIpcReceiverSet::new(set).unwrap();
    let mut open = 2;
    while open > 0 {
        for event in set.select().await.unwrap() {
            match event {
                IpcSelectionResult::MessageReceived(id, message) if id == numbers => {
                    println!("number {}", message.to::<u32>().unwrap())
                }
                IpcSelectionResult::MessageReceived(_, message) => println!("word {}", message.to::<String>().unwrap()),
                IpcSelectionResult::ChannelClosed(_) => open -= 1,
            }
        }
    }
}
