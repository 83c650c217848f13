//! crossproc end to end: a parent process starts real child processes (this same executable,
//! re-run with an environment variable), hands each a channel through a one-shot server, and
//! exchanges typed values, channels inside messages, shared memory and large messages with them.
//!
//! Run: `cargo run --release --example demo`

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crossproc::ipc::{self, IpcBytesSender, IpcOneShotServer, IpcReceiverSet, IpcSender, IpcSharedMemory};
use serde::{Deserialize, Serialize};

const CHILD_VAR: &str = "CROSSPROC_DEMO_SERVER";

/// Work the parent hands a child.
#[derive(Serialize, Deserialize)]
enum Job {
    /// Reply with the number plus one on the given channel (a channel inside a message).
    Ping(u64, IpcSender<u64>),
    /// Sum every byte of a shared region (no copy of its contents travels).
    Checksum(IpcSharedMemory, IpcSender<u64>),
    /// Send `len` bytes back as one message.
    Blob(usize, IpcBytesSender),
    /// Say hello on the shared event channel, then exit.
    Finish(IpcSender<String>),
}

fn main() {
    match std::env::var(CHILD_VAR) {
        Ok(server_name) => child(server_name),
        Err(_) => parent(),
    }
}

fn child(server_name: String) {
    let (jobs_tx, jobs_rx) = ipc::channel::<Job>().expect("channel");
    IpcSender::<IpcSender<Job>>::connect(server_name).expect("connect").send(jobs_tx).expect("send");
    while let Ok(job) = jobs_rx.recv() {
        match job {
            Job::Ping(n, reply) => reply.send(n + 1).expect("reply"),
            Job::Checksum(region, reply) => reply.send(region.iter().map(|&b| u64::from(b)).sum()).expect("reply"),
            Job::Blob(len, reply) => reply.send(&vec![0x5A; len]).expect("reply"),
            Job::Finish(events) => {
                events.send(format!("child {} done", std::process::id())).expect("event");
                return;
            }
        }
    }
}

fn spawn_child() -> (IpcSender<Job>, Child) {
    let (server, name) = IpcOneShotServer::<IpcSender<Job>>::new().expect("server");
    let child = Command::new(std::env::current_exe().expect("exe")).env(CHILD_VAR, &name).spawn().expect("spawn");
    let (_rx, jobs) = server.accept().expect("accept");
    (jobs, child)
}

fn per_op(elapsed: Duration, ops: u32) -> String {
    format!("{:.2} µs", elapsed.as_secs_f64() * 1e6 / f64::from(ops))
}

fn gb_per_s(bytes: usize, elapsed: Duration) -> String {
    format!("{:.2} GB/s", bytes as f64 / elapsed.as_secs_f64() / 1e9)
}

fn parent() {
    println!("crossproc demo: parent pid {}", std::process::id());
    let started = Instant::now();
    let (jobs_a, mut child_a) = spawn_child();
    let (jobs_b, mut child_b) = spawn_child();
    println!("started 2 child processes ({}, {}) in {:?}", child_a.id(), child_b.id(), started.elapsed());

    // 1. Typed round trips; the reply channel travels inside every request.
    let (reply_tx, reply_rx) = ipc::channel::<u64>().expect("channel");
    let rounds = 20_000;
    let start = Instant::now();
    for n in 0..rounds {
        jobs_a.send(Job::Ping(u64::from(n), reply_tx.clone())).expect("send");
        assert_eq!(reply_rx.recv().expect("reply"), u64::from(n) + 1);
    }
    let ping = start.elapsed();

    // 2. Shared memory: 64 MiB seen by the child without copying it through a socket.
    let size = 64 << 20;
    let region = IpcSharedMemory::from_byte(3, size);
    let start = Instant::now();
    jobs_b.send(Job::Checksum(region, reply_tx.clone())).expect("send");
    let sum = reply_rx.recv().expect("sum");
    let checksum = start.elapsed();
    assert_eq!(sum, 3 * size as u64);

    // 3. A 64 MiB message back from the child, through a byte channel sent to it.
    let (blob_tx, blob_rx) = ipc::bytes_channel().expect("channel");
    let start = Instant::now();
    jobs_a.send(Job::Blob(size, blob_tx)).expect("send");
    let blob = blob_rx.recv().expect("blob");
    let blob_time = start.elapsed();
    assert!(blob.len() == size && blob.iter().all(|&b| b == 0x5A));

    // 4. Both children report on one channel; the parent waits with a receiver set.
    let (events_tx, events_rx) = ipc::channel::<String>().expect("channel");
    let mut set = IpcReceiverSet::new().expect("set");
    let events_id = set.add(events_rx).expect("add");
    jobs_a.send(Job::Finish(events_tx.clone())).expect("send");
    jobs_b.send(Job::Finish(events_tx)).expect("send");
    let mut finished = Vec::new();
    'wait: loop {
        for event in set.select().expect("select") {
            match event {
                ipc::IpcSelectionResult::MessageReceived(id, message) => {
                    assert_eq!(id, events_id);
                    finished.push(message.to::<String>().expect("decode"));
                }
                ipc::IpcSelectionResult::ChannelClosed(_) => break 'wait,
            }
        }
    }
    child_a.wait().expect("wait");
    child_b.wait().expect("wait");

    println!();
    println!("| what | result |");
    println!("|---|---|");
    println!(
        "| typed round trip with a channel in each request ({rounds}×) | {} per round trip |",
        per_op(ping, rounds)
    );
    println!("| 64 MiB shared memory, summed by the child | {checksum:?} ({}) |", gb_per_s(size, checksum));
    println!("| 64 MiB message from the child | {blob_time:?} ({}) |", gb_per_s(size, blob_time));
    println!("| children finished (reported through a receiver set) | {} |", finished.join(", "));
    println!("\nall checks passed in {:?}", started.elapsed());
}
