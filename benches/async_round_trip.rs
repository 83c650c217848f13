//! Round trips through a channel pair to an echo thread: the blocking API against the tokio API
//! (feature `tokio`), in one run. `cargo bench --features tokio --bench async_round_trip`

use criterion::Criterion;
use crossproc::ipc::{self, IpcReceiver, IpcSender};
use crossproc::tokio::{AsyncIpcReceiver, AsyncIpcSender};

/// Starts a thread that sends back every message; returns the request sender and reply receiver.
fn echo() -> (IpcSender<Vec<u8>>, IpcReceiver<Vec<u8>>) {
    let (request_tx, request_rx) = ipc::channel::<Vec<u8>>().unwrap();
    let (reply_tx, reply_rx) = ipc::channel::<Vec<u8>>().unwrap();
    std::thread::spawn(move || {
        while let Ok(message) = request_rx.recv() {
            if reply_tx.send(message).is_err() {
                return;
            }
        }
    });
    (request_tx, reply_rx)
}

fn round_trips(c: &mut Criterion) {
    let data = vec![7u8; 64];
    let mut group = c.benchmark_group("async_round_trip_64B");

    let (tx, rx) = echo();
    group.bench_function("blocking", |b| {
        b.iter(|| {
            tx.send(data.clone()).unwrap();
            rx.recv().unwrap()
        })
    });

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (tx, rx) = echo();
    let (tx, rx) = runtime.block_on(async { (AsyncIpcSender::new(tx).unwrap(), AsyncIpcReceiver::new(rx).unwrap()) });
    group.bench_function("tokio", |b| {
        b.iter(|| {
            runtime.block_on(async {
                tx.send(data.clone()).await.unwrap();
                rx.recv().await.unwrap()
            })
        })
    });
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    round_trips(&mut criterion);
    criterion.final_summary();
}
