//! `IpcServer` under load: connections accepted per second, and messages per second, with 1,
//! 16 and 256 clients at once. Clients are threads of this process; every connection and every
//! message goes through the kernel exactly as it would from another process.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use crossproc::ipc::{IpcSender, IpcServer};

const MESSAGES_PER_CLIENT: u64 = 100;

/// `clients` threads each connect once and send one message; returns the time to accept all.
fn accept_burst(server: &IpcServer<u64>, name: &str, clients: u64) -> Duration {
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let name = name.to_owned();
            std::thread::spawn(move || IpcSender::<u64>::connect(name).unwrap().send(i).unwrap())
        })
        .collect();
    for _ in 0..clients {
        server.accept().unwrap();
    }
    for thread in threads {
        thread.join().unwrap();
    }
    start.elapsed()
}

/// `clients` threads each stream messages to the server; returns the time until all arrived.
fn message_burst(server: &IpcServer<u64>, name: &str, clients: u64) -> Duration {
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let name = name.to_owned();
            std::thread::spawn(move || {
                let tx = IpcSender::<u64>::connect(name).unwrap();
                for i in 0..=MESSAGES_PER_CLIENT {
                    tx.send(i).unwrap();
                }
            })
        })
        .collect();
    let receivers: Vec<_> = (0..clients).map(|_| server.accept().unwrap().0).collect();
    for receiver in &receivers {
        for _ in 0..MESSAGES_PER_CLIENT {
            receiver.recv().unwrap();
        }
    }
    for thread in threads {
        thread.join().unwrap();
    }
    start.elapsed()
}

fn server_load(c: &mut Criterion) {
    let (server, name) = IpcServer::<u64>::new().unwrap();
    let mut group = c.benchmark_group("server_accept");
    group.sample_size(10);
    for clients in [1u64, 16, 256] {
        group.throughput(Throughput::Elements(clients));
        group.bench_function(BenchmarkId::from_parameter(clients), |b| {
            b.iter_custom(|iterations| (0..iterations).map(|_| accept_burst(&server, &name, clients)).sum())
        });
    }
    group.finish();

    let mut group = c.benchmark_group("server_messages");
    group.sample_size(10);
    for clients in [1u64, 16, 256] {
        group.throughput(Throughput::Elements(clients * MESSAGES_PER_CLIENT));
        group.bench_function(BenchmarkId::from_parameter(clients), |b| {
            b.iter_custom(|iterations| (0..iterations).map(|_| message_burst(&server, &name, clients)).sum())
        });
    }
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    server_load(&mut criterion);
    criterion.final_summary();
}
