// The small-message scenarios of issue 17, written once against the `ipc-channel` API and
// compiled twice (`lib` is `crossproc` in one module and `ipc_channel` in the other, see
// small_messages.rs): typed byte-string messages, a fresh buffer per send, two processes.

use super::Bytes;
use lib::ipc::{self, IpcOneShotServer, IpcReceiver, IpcSender};
use serde::{Deserialize, Serialize};

/// What the parent asks the child to do.
#[derive(Serialize, Deserialize)]
pub enum Request {
    /// Send `count` messages of `len` bytes to the parent, then an empty one.
    Stream { count: u32, len: u32 },
    /// Receive messages until an empty one, then answer with an empty one.
    Sink,
    /// Echo every message until an empty one.
    Echo,
    /// Receive a sender, send one message on it; repeat until the channel closes.
    Senders(IpcReceiver<IpcSender<Bytes>>),
    /// Send `count` messages of `len` bytes on this (fresh) channel, then an empty one.
    StreamOn { sender: IpcSender<Bytes>, count: u32, len: u32 },
}

/// The parent's side of a connected child.
pub struct Peer {
    pub requests: IpcSender<Request>,
    pub to_child: IpcSender<Bytes>,
    pub from_child: IpcReceiver<Bytes>,
    pub child: std::process::Child,
}

/// Starts a child process running [`child_main`] for this library.
pub fn spawn_peer(library: &str) -> Peer {
    let (server, name) = IpcOneShotServer::<(IpcSender<Request>, IpcSender<Bytes>)>::new().unwrap();
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .env(super::CHILD_VAR, library)
        .env(super::SERVER_VAR, name)
        .spawn()
        .unwrap();
    let (_, (requests, to_child)) = server.accept().unwrap();
    let (reply_tx, from_child) = ipc::channel().unwrap();
    requests.send(Request::Senders(first_sender(reply_tx))).unwrap();
    Peer { requests, to_child, from_child, child }
}

/// Hands the child the channel it answers on, as the first "sender to use".
fn first_sender(reply: IpcSender<Bytes>) -> IpcReceiver<IpcSender<Bytes>> {
    let (tx, rx) = ipc::channel::<IpcSender<Bytes>>().unwrap();
    tx.send(reply).unwrap();
    rx
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The child process.
pub fn child_main(server_name: String) {
    let (requests_tx, requests) = ipc::channel::<Request>().unwrap();
    let (data_tx, data) = ipc::channel::<Bytes>().unwrap();
    IpcSender::connect(server_name).unwrap().send((requests_tx, data_tx)).unwrap();
    let Ok(Request::Senders(first)) = requests.recv() else { return };
    let reply = first.recv().unwrap();
    while let Ok(request) = requests.recv() {
        match request {
            Request::Stream { count, len } => {
                for _ in 0..count {
                    reply.send(Bytes(vec![7; len as usize])).unwrap();
                }
                reply.send(Bytes(Vec::new())).unwrap();
            }
            Request::Sink => {
                while !data.recv().unwrap().0.is_empty() {}
                reply.send(Bytes(Vec::new())).unwrap();
            }
            Request::Echo => loop {
                let message = data.recv().unwrap();
                let done = message.0.is_empty();
                reply.send(message).unwrap();
                if done {
                    break;
                }
            },
            Request::StreamOn { sender, count, len } => {
                for _ in 0..count {
                    sender.send(Bytes(vec![7; len as usize])).unwrap();
                }
                sender.send(Bytes(Vec::new())).unwrap();
            }
            Request::Senders(senders) => {
                while let Ok(sender) = senders.recv() {
                    sender.send(Bytes(vec![1; 8])).unwrap();
                }
            }
        }
    }
}

/// The child streams `count` messages of `len` bytes to the parent.
pub fn stream_from_child(peer: &Peer, count: u32, len: u32) {
    peer.requests.send(Request::Stream { count, len }).unwrap();
    while !peer.from_child.recv().unwrap().0.is_empty() {}
}

/// The parent streams `count` messages of `len` bytes to the child.
pub fn stream_to_child(peer: &Peer, count: u32, len: usize) {
    peer.requests.send(Request::Sink).unwrap();
    for _ in 0..count {
        peer.to_child.send(Bytes(vec![7; len])).unwrap();
    }
    peer.to_child.send(Bytes(Vec::new())).unwrap();
    peer.from_child.recv().unwrap();
}

/// The child streams `count` messages of `len` bytes to the parent on a channel made for this
/// stream alone (so each stream starts on a channel that has carried nothing).
pub fn stream_on_fresh_channel(peer: &Peer, count: u32, len: u32) {
    let (sender, receiver) = ipc::channel().unwrap();
    peer.requests.send(Request::StreamOn { sender, count, len }).unwrap();
    while !receiver.recv().unwrap().0.is_empty() {}
}

/// `count` round trips of `len` bytes.
pub fn round_trips(peer: &Peer, count: u32, len: usize) {
    peer.requests.send(Request::Echo).unwrap();
    for _ in 0..count {
        peer.to_child.send(Bytes(vec![7; len])).unwrap();
        assert_eq!(peer.from_child.recv().unwrap().0.len(), len);
    }
    peer.to_child.send(Bytes(Vec::new())).unwrap();
    peer.from_child.recv().unwrap();
}

/// `count` times: make a channel, pass its sender to the child, receive what it sends on it.
pub fn pass_senders(peer: &Peer, count: u32) {
    let (senders_tx, senders_rx) = ipc::channel::<IpcSender<Bytes>>().unwrap();
    peer.requests.send(Request::Senders(senders_rx)).unwrap();
    for _ in 0..count {
        let (tx, rx) = ipc::channel::<Bytes>().unwrap();
        senders_tx.send(tx).unwrap();
        assert_eq!(rx.recv().unwrap().0.len(), 8);
    }
}

/// `count` requests to a serving thread of this process, each carrying a new reply channel
/// that the thread answers on (the commonest RPC pattern).
pub fn requests_to_thread(count: u32) {
    let (requests, served) = ipc::channel::<IpcSender<Bytes>>().unwrap();
    let server = std::thread::spawn(move || {
        while let Ok(reply) = served.recv() {
            reply.send(Bytes(vec![1; 8])).unwrap();
        }
    });
    for _ in 0..count {
        let (tx, rx) = ipc::channel::<Bytes>().unwrap();
        requests.send(tx).unwrap();
        assert_eq!(rx.recv().unwrap().0.len(), 8);
    }
    drop(requests);
    server.join().unwrap();
}
