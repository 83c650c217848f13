// The benchmark scenarios, written once against the `ipc-channel` API and compiled twice:
// `lib` is `crossproc` in one module and `ipc_channel` in the other (see comparison.rs), so
// both libraries run exactly the same code.

use lib::ipc::{self, IpcBytesSender, IpcOneShotServer, IpcReceiver, IpcReceiverSet, IpcSender, IpcSharedMemory};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// What the parent asks the child to do.
#[derive(Serialize, Deserialize)]
pub enum Request {
    /// The channel the child answers on.
    Start(IpcSender<Vec<u8>>),
    /// Send this back.
    Echo(Vec<u8>),
    /// Swallow this (one-way streams).
    Sink(Vec<u8>),
    /// Answer with an empty reply (the end of a stream).
    Flush,
    /// Send `()` on this new channel.
    Ping(IpcSender<()>),
    /// Answer with this process's peak resident memory (8 bytes, little-endian).
    PeakMemory,
    /// Read one byte of every page of this region, then answer with an empty reply.
    Region(IpcSharedMemory),
}

/// The parent's side of a connected child.
pub struct Peer {
    pub requests: IpcSender<Request>,
    pub bytes: IpcBytesSender,
    pub replies: IpcReceiver<Vec<u8>>,
    pub child: std::process::Child,
}

/// Starts a child process running [`child_main`] for this library.
pub fn spawn_peer(library: &str) -> Peer {
    let (server, name) = IpcOneShotServer::<(IpcSender<Request>, IpcBytesSender)>::new().unwrap();
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .env(super::CHILD_VAR, library)
        .env(super::SERVER_VAR, name)
        .spawn()
        .unwrap();
    let (_, (requests, bytes)) = server.accept().unwrap();
    let (reply_tx, replies) = ipc::channel().unwrap();
    requests.send(Request::Start(reply_tx)).unwrap();
    Peer { requests, bytes, replies, child }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The child process: answers requests, acknowledges every bytes message (with `reuse`,
/// received into one vector, see `recv_reusing`).
pub fn child_main(server_name: String, reuse: bool) {
    let (requests_tx, requests) = ipc::channel::<Request>().unwrap();
    let (bytes_tx, bytes) = ipc::bytes_channel().unwrap();
    IpcSender::connect(server_name).unwrap().send((requests_tx, bytes_tx)).unwrap();
    let Ok(Request::Start(reply)) = requests.recv() else { return };
    let bytes_reply = reply.clone();
    std::thread::spawn(move || {
        let mut buffer = Vec::new();
        loop {
            let received = if reuse {
                recv_reusing(&bytes, &mut buffer)
            } else {
                bytes.recv().map(|message| std::hint::black_box(message).len())
            };
            if received.is_err() || bytes_reply.send(Vec::new()).is_err() {
                return;
            }
            std::hint::black_box(&buffer);
        }
    });
    while let Ok(request) = requests.recv() {
        let result = match request {
            Request::Echo(data) => reply.send(data),
            Request::Sink(data) => {
                std::hint::black_box(data);
                Ok(())
            }
            Request::Flush => reply.send(Vec::new()),
            Request::Ping(sender) => sender.send(()),
            Request::PeakMemory => reply.send(super::peak_rss().to_le_bytes().to_vec()),
            Request::Region(region) => {
                let touched = region.iter().step_by(4096).fold(0u8, |sum, byte| sum.wrapping_add(*byte));
                std::hint::black_box(touched);
                reply.send(Vec::new())
            }
            Request::Start(_) => Ok(()),
        };
        if result.is_err() {
            return;
        }
    }
}

/// One round trip of `data` through the child (typed `Vec<u8>`).
pub fn round_trip(peer: &Peer, data: &[u8]) {
    peer.requests.send(Request::Echo(data.to_vec())).unwrap();
    assert_eq!(peer.replies.recv().unwrap().len(), data.len());
}

/// `count` one-way typed messages of `data`, then one acknowledgement; returns the time taken.
pub fn stream(peer: &Peer, data: &[u8], count: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..count {
        peer.requests.send(Request::Sink(data.to_vec())).unwrap();
    }
    peer.requests.send(Request::Flush).unwrap();
    peer.replies.recv().unwrap();
    start.elapsed()
}

/// One bytes message of `data` to the child, and its acknowledgement.
pub fn one_way_bytes(peer: &Peer, data: &[u8]) {
    peer.bytes.send(data).unwrap();
    peer.replies.recv().unwrap();
}

/// `data` copied into a new shared memory region, sent to the child, which reads every page of
/// its mapping (no copy on the receiving side), and its acknowledgement.
pub fn one_way_shared_memory(peer: &Peer, data: &[u8]) {
    peer.requests.send(Request::Region(IpcSharedMemory::from_bytes(data))).unwrap();
    peer.replies.recv().unwrap();
}

/// Creates a channel, passes its sender to the child, and waits for the child to use it.
pub fn pass_sender(peer: &Peer) {
    let (tx, rx) = ipc::channel::<()>().unwrap();
    peer.requests.send(Request::Ping(tx)).unwrap();
    rx.recv().unwrap();
}

/// A receiver set of `size` receivers and their senders.
pub fn receiver_set(size: usize) -> (IpcReceiverSet, Vec<IpcSender<u8>>) {
    let mut set = IpcReceiverSet::new().unwrap();
    let senders = (0..size)
        .map(|_| {
            let (tx, rx) = ipc::channel::<u8>().unwrap();
            set.add(rx).unwrap();
            tx
        })
        .collect();
    (set, senders)
}

/// One message on one receiver of the set, and the select that finds it.
pub fn select_one(set: &mut IpcReceiverSet, senders: &[IpcSender<u8>], round: usize) {
    senders[round % senders.len()].send(1).unwrap();
    let results = set.select().unwrap();
    assert_eq!(results.len(), 1);
}

/// Sends one `size`-byte bytes message to a fresh child, which reports its peak resident memory;
/// returns (sender peak, receiver peak, shared memory in flight right after the send) in bytes.
/// Shared memory written with `write()` is in no process's resident set, so it is read from
/// the system's `Shmem` counter instead.
pub fn peak_memory(library: &str, size: usize) -> (u64, u64, u64, u64) {
    let peer = spawn_peer(library);
    let data = vec![0x42u8; size];
    let sampler = super::TogetherSampler::start(peer.child.id());
    let shmem_before = super::system_shmem();
    peer.bytes.send(&data).unwrap();
    let in_flight = super::system_shmem().saturating_sub(shmem_before);
    peer.replies.recv().unwrap();
    let together = sampler.finish();
    drop(data);
    peer.requests.send(Request::PeakMemory).unwrap();
    let child_peak = peer.replies.recv().unwrap();
    let child_peak = u64::from_le_bytes(child_peak[..8].try_into().unwrap_or([0; 8]));
    (super::peak_rss(), child_peak, in_flight, together)
}

/// Issue 24's rows, within one process: a channel that carries reply senders to this thread.
pub fn local_requests() -> (IpcSender<IpcSender<u32>>, IpcReceiver<IpcSender<u32>>) {
    ipc::channel().unwrap()
}

/// A new reply channel, its sender sent through `requests`, taken out, answered through, and
/// the answer read: all on this thread.
pub fn local_reply_round(requests: &(IpcSender<IpcSender<u32>>, IpcReceiver<IpcSender<u32>>)) {
    let (tx, rx) = ipc::channel::<u32>().unwrap();
    requests.0.send(tx).unwrap();
    requests.1.recv().unwrap().send(7).unwrap();
    assert_eq!(rx.recv().unwrap(), 7);
}

/// A new channel whose sender is sent through `requests` and taken out on this thread.
pub fn local_pass_sender(requests: &(IpcSender<IpcSender<u32>>, IpcReceiver<IpcSender<u32>>)) {
    let (tx, rx) = ipc::channel::<u32>().unwrap();
    requests.0.send(tx).unwrap();
    drop((requests.1.recv().unwrap(), rx));
}

/// `count` 64 B typed messages (a fresh vector each) from this thread to another, through a
/// new channel; the time until the other thread has read the last.
pub fn local_stream(count: u64) -> Duration {
    let (tx, rx) = ipc::channel::<Vec<u8>>().unwrap();
    let reader = std::thread::spawn(move || while rx.recv().is_ok() {});
    let start = Instant::now();
    for _ in 0..count {
        tx.send(vec![7; 64]).unwrap();
    }
    drop(tx);
    reader.join().unwrap();
    start.elapsed()
}
