//! crossproc side by side with `ipc-channel` 0.21 and with the bare system-call floor, in one
//! run, between two real processes. Every scenario is the same code for both libraries
//! (`scenarios.rs`, compiled once per library).
//!
//! `cargo bench --bench comparison` runs everything; `scripts/bench-report.py` turns the results
//! into `docs/benchmarks/report.md` and an SVG chart. With `CROSSPROC_BENCH_PEAK=1` the binary
//! instead prints the peak memory of sender and receiver moving one 256 MiB message.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};

const CHILD_VAR: &str = "CROSSPROC_BENCH_CHILD";
const SERVER_VAR: &str = "CROSSPROC_BENCH_SERVER";
const PEAK_VAR: &str = "CROSSPROC_BENCH_PEAK";
/// Set (to a library's name) in a process that only measures [`live_channels`].
const LIVE_VAR: &str = "CROSSPROC_BENCH_LIVE_CHANNELS";

mod with_crossproc {
    use crossproc as lib;
    include!("scenarios.rs");

    /// Receives a bytes message into `buffer`, reusing its allocation.
    fn recv_reusing(bytes: &ipc::IpcBytesReceiver, buffer: &mut Vec<u8>) -> Result<usize, crossproc::IpcError> {
        bytes.recv_into(buffer).map(|()| buffer.len())
    }
}

mod with_ipc_channel {
    use ipc_channel as lib;
    include!("scenarios.rs");

    /// `ipc-channel` has no receive into a given vector: the message's own vector replaces it.
    fn recv_reusing(bytes: &ipc::IpcBytesReceiver, buffer: &mut Vec<u8>) -> Result<usize, ipc_channel::IpcError> {
        *buffer = bytes.recv()?;
        Ok(buffer.len())
    }
}

mod floor;
#[path = "small_messages_table.rs"]
mod small;

/// A `key: N kB` line of a /proc file, in bytes (0 when absent).
fn proc_kib(path: &str, key: &str) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Issue 24's memory row: what 100,000 live channels that each carried one message (and keep
/// it) add to this process's resident memory, per channel, and the descriptors they hold.
fn live_channels(library: &str) -> (u64, usize) {
    const COUNT: u32 = 100_000;
    let descriptors = || std::fs::read_dir("/proc/self/fd").map_or(0, |entries| entries.count());
    fn keep<T: 'static>(channel_with: impl Fn(u32) -> T) -> Box<dyn std::any::Any> {
        Box::new((0..COUNT).map(channel_with).collect::<Vec<_>>())
    }
    let (resident, held) = (proc_kib("/proc/self/status", "VmRSS"), descriptors());
    let kept = match library {
        "crossbeam-channel" => keep(|i| {
            let (tx, rx) = crossbeam_channel::bounded::<u32>(1);
            tx.send(i).unwrap();
            (tx, rx)
        }),
        _ => keep(|i| {
            let (tx, rx) = crossproc::ipc::channel::<u32>().unwrap();
            tx.send(i).unwrap();
            (tx, rx)
        }),
    };
    let per_channel = proc_kib("/proc/self/status", "VmRSS").saturating_sub(resident) / u64::from(COUNT);
    let descriptors = descriptors().saturating_sub(held);
    drop(kept);
    (per_channel, descriptors)
}

/// This process's peak resident set size in bytes (`VmHWM`).
fn peak_rss() -> u64 {
    proc_kib("/proc/self/status", "VmHWM")
}

/// The system's shared memory in use, in bytes (`Shmem` in /proc/meminfo).
fn system_shmem() -> u64 {
    proc_kib("/proc/meminfo", "Shmem")
}

/// Samples, every millisecond until stopped, what this process and `child` hold together at the
/// same moment: both resident sets plus the shared memory in use beyond what it was at the start
/// (memfd pages written with `write()` are in nobody's resident set). The largest sum seen is
/// the honest peak of sender and receiver together; the sum of each one's own peak overstates it,
/// because the two peaks come at different moments.
struct TogetherSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl TogetherSampler {
    fn start(child: u32) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let baseline = system_shmem();
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !stopping.load(Ordering::Relaxed) {
                let together = proc_kib("/proc/self/status", "VmRSS")
                    + proc_kib(&format!("/proc/{child}/status"), "VmRSS")
                    + system_shmem().saturating_sub(baseline);
                peak = peak.max(together);
                std::thread::sleep(Duration::from_millis(1));
            }
            peak
        });
        TogetherSampler { stop, thread }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

fn small_messages(c: &mut Criterion) {
    let crossproc = with_crossproc::spawn_peer("crossproc");
    let sleeping = with_crossproc::spawn_peer(SLEEPING);
    let ipc_channel = with_ipc_channel::spawn_peer("ipc-channel");
    let floor = floor::Peer::spawn(false);
    let polling_floor = floor::Peer::spawn(true);
    let data = vec![7u8; 64];

    let mut group = c.benchmark_group("round_trip_64B");
    group.bench_function("crossproc", |b| b.iter(|| with_crossproc::round_trip(&crossproc, &data)));
    without_polling(|| {
        group.bench_function(SLEEPING, |b| b.iter(|| with_crossproc::round_trip(&sleeping, &data)));
    });
    group.bench_function("ipc-channel", |b| b.iter(|| with_ipc_channel::round_trip(&ipc_channel, &data)));
    group.bench_function("syscall-floor", |b| b.iter(|| floor.round_trip(&data)));
    group.bench_function("syscall-floor-polling", |b| b.iter(|| polling_floor.round_trip(&data)));
    group.finish();

    let mut group = c.benchmark_group("stream_64B");
    group.throughput(Throughput::Elements(1));
    group.bench_function("crossproc", |b| b.iter_custom(|n| with_crossproc::stream(&crossproc, &data, n)));
    without_polling(|| {
        group.bench_function(SLEEPING, |b| b.iter_custom(|n| with_crossproc::stream(&sleeping, &data, n)));
    });
    group.bench_function("ipc-channel", |b| b.iter_custom(|n| with_ipc_channel::stream(&ipc_channel, &data, n)));
    group.bench_function("syscall-floor", |b| b.iter_custom(|n| floor.stream(&data, n)));
    group.bench_function("syscall-floor-polling", |b| b.iter_custom(|n| polling_floor.stream(&data, n)));
    group.finish();

    let mut group = c.benchmark_group("pass_sender");
    group.bench_function("crossproc", |b| b.iter(|| with_crossproc::pass_sender(&crossproc)));
    without_polling(|| {
        group.bench_function(SLEEPING, |b| b.iter(|| with_crossproc::pass_sender(&sleeping)));
    });
    group.bench_function("ipc-channel", |b| b.iter(|| with_ipc_channel::pass_sender(&ipc_channel)));
    group.finish();
}

/// crossproc with the child receiving bytes messages into one reused vector
/// (`IpcBytesReceiver::recv_into`); `ipc-channel` has no such receive.
const REUSING: &str = "crossproc-recv-into";

/// crossproc with polling turned off in both processes (`ipc::set_receive_spin(ZERO)`): the
/// same strategy as `ipc-channel`, for a like-for-like line next to the default.
const SLEEPING: &str = "crossproc-sleeping";

/// Runs `bench` with this process's receives sleeping at once.
fn without_polling(bench: impl FnOnce()) {
    let window = crossproc::ipc::set_receive_spin(Duration::ZERO);
    bench();
    crossproc::ipc::set_receive_spin(window);
}

fn sizes(c: &mut Criterion) {
    let crossproc = with_crossproc::spawn_peer("crossproc");
    let reusing = with_crossproc::spawn_peer(REUSING);
    let ipc_channel = with_ipc_channel::spawn_peer("ipc-channel");

    let mut group = c.benchmark_group("round_trip");
    for size in [64usize, 4 << 10, 64 << 10, 256 << 10] {
        let data = vec![7u8; size];
        group.throughput(Throughput::Bytes(2 * size as u64));
        group.bench_with_input(BenchmarkId::new("crossproc", size), &data, |b, data| {
            b.iter(|| with_crossproc::round_trip(&crossproc, data))
        });
        group.bench_with_input(BenchmarkId::new("ipc-channel", size), &data, |b, data| {
            b.iter(|| with_ipc_channel::round_trip(&ipc_channel, data))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("one_way_bytes");
    group.sample_size(10).measurement_time(Duration::from_secs(8));
    for size in [64usize << 10, 1 << 20, 16 << 20, 64 << 20] {
        let data = vec![7u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("crossproc", size), &data, |b, data| {
            b.iter(|| with_crossproc::one_way_bytes(&crossproc, data))
        });
        if size >= 1 << 20 {
            group.bench_with_input(BenchmarkId::new(REUSING, size), &data, |b, data| {
                b.iter(|| with_crossproc::one_way_bytes(&reusing, data))
            });
        }
        group.bench_with_input(BenchmarkId::new("ipc-channel", size), &data, |b, data| {
            b.iter(|| with_ipc_channel::one_way_bytes(&ipc_channel, data))
        });
        group.bench_with_input(BenchmarkId::new("memcpy-floor", size), &data, |b, data| {
            b.iter(|| std::hint::black_box(data.to_vec()))
        });
        if size == 64 << 20 {
            // The bandwidth yardstick: a copy between buffers that are already in memory.
            let mut warm = vec![0u8; size];
            group.bench_with_input(BenchmarkId::new("memcpy-warm", size), &data, |b, data| {
                b.iter(|| std::hint::black_box(&mut warm).copy_from_slice(data))
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("one_way_shared_memory");
    group.sample_size(10).measurement_time(Duration::from_secs(8));
    for size in [1usize << 20, 64 << 20] {
        let data = vec![7u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("crossproc", size), &data, |b, data| {
            b.iter(|| with_crossproc::one_way_shared_memory(&crossproc, data))
        });
        group.bench_with_input(BenchmarkId::new("ipc-channel", size), &data, |b, data| {
            b.iter(|| with_ipc_channel::one_way_shared_memory(&ipc_channel, data))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("one_way_typed");
    group.sample_size(10).measurement_time(Duration::from_secs(8));
    for size in [1usize << 20, 16 << 20] {
        let data = vec![7u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("crossproc", size), &data, |b, data| {
            b.iter_custom(|n| with_crossproc::stream(&crossproc, data, n))
        });
        group.bench_with_input(BenchmarkId::new("ipc-channel", size), &data, |b, data| {
            b.iter_custom(|n| with_ipc_channel::stream(&ipc_channel, data, n))
        });
    }
    group.finish();
}

fn select(c: &mut Criterion) {
    let mut group = c.benchmark_group("select_one_ready");
    for size in [10usize, 1000] {
        let (mut set, senders) = with_crossproc::receiver_set(size);
        let mut round = 0;
        group.bench_function(BenchmarkId::new("crossproc", size), |b| {
            b.iter(|| {
                round += 1;
                with_crossproc::select_one(&mut set, &senders, round)
            })
        });
        // The same over OS channels: `ipc::channel()` makes local channels, which a set serves
        // through its doorbell; these are the receivers a set holds when they came from other
        // processes.
        let (mut set, senders) = os_receiver_set(size);
        group.bench_function(BenchmarkId::new("crossproc-os", size), |b| {
            b.iter(|| {
                round += 1;
                with_crossproc::select_one(&mut set, &senders, round)
            })
        });
        let (mut set, senders) = with_ipc_channel::receiver_set(size);
        group.bench_function(BenchmarkId::new("ipc-channel", size), |b| {
            b.iter(|| {
                round += 1;
                with_ipc_channel::select_one(&mut set, &senders, round)
            })
        });
    }
    group.finish();
}

/// A set of `size` receivers of OS channels (crossproc's `os_channel`) and their senders.
fn os_receiver_set(size: usize) -> (crossproc::ipc::IpcReceiverSet, Vec<crossproc::ipc::IpcSender<u8>>) {
    let mut set = crossproc::ipc::IpcReceiverSet::new().unwrap();
    let senders = (0..size)
        .map(|_| {
            let (tx, rx) = crossproc::ipc::os_channel::<u8>().unwrap();
            set.add(rx).unwrap();
            tx
        })
        .collect();
    (set, senders)
}

/// Issue 24's rows: channels whose ends never leave this process, with crossbeam-channel
/// between threads (no encoding, no system call) as the floor.
fn within_one_process(c: &mut Criterion) {
    let mut group = c.benchmark_group("local_reply_round");
    let crossproc = with_crossproc::local_requests();
    group.bench_function("crossproc", |b| b.iter(|| with_crossproc::local_reply_round(&crossproc)));
    let ipc_channel = with_ipc_channel::local_requests();
    group.bench_function("ipc-channel", |b| b.iter(|| with_ipc_channel::local_reply_round(&ipc_channel)));
    let crossbeam = crossbeam_channel::unbounded::<crossbeam_channel::Sender<u32>>();
    group.bench_function("crossbeam-channel", |b| {
        b.iter(|| {
            let (tx, rx) = crossbeam_channel::bounded::<u32>(1);
            crossbeam.0.send(tx).unwrap();
            crossbeam.1.recv().unwrap().send(7).unwrap();
            assert_eq!(rx.recv().unwrap(), 7);
        })
    });
    group.finish();

    let mut group = c.benchmark_group("local_pass_sender");
    group.bench_function("crossproc", |b| b.iter(|| with_crossproc::local_pass_sender(&crossproc)));
    group.bench_function("ipc-channel", |b| b.iter(|| with_ipc_channel::local_pass_sender(&ipc_channel)));
    group.bench_function("crossbeam-channel", |b| {
        b.iter(|| {
            let (tx, rx) = crossbeam_channel::bounded::<u32>(1);
            crossbeam.0.send(tx).unwrap();
            drop((crossbeam.1.recv().unwrap(), rx));
        })
    });
    group.finish();

    let mut group = c.benchmark_group("local_stream_64B");
    group.throughput(Throughput::Elements(1));
    group.bench_function("crossproc", |b| b.iter_custom(with_crossproc::local_stream));
    group.bench_function("ipc-channel", |b| b.iter_custom(with_ipc_channel::local_stream));
    group.bench_function("crossbeam-channel", |b| {
        b.iter_custom(|count| {
            let (tx, rx) = crossbeam_channel::bounded::<Vec<u8>>(1024);
            let reader = std::thread::spawn(move || while rx.recv().is_ok() {});
            let start = std::time::Instant::now();
            for _ in 0..count {
                tx.send(vec![7; 64]).unwrap();
            }
            drop(tx);
            reader.join().unwrap();
            start.elapsed()
        })
    });
    group.finish();
}

fn main() {
    if small::run_child() {
        return;
    }
    if let Ok(library) = std::env::var(CHILD_VAR) {
        let server = std::env::var(SERVER_VAR).unwrap_or_default();
        match library.as_str() {
            "crossproc" => with_crossproc::child_main(server, false),
            REUSING => with_crossproc::child_main(server, true),
            SLEEPING => without_polling(|| with_crossproc::child_main(server, false)),
            "ipc-channel" => with_ipc_channel::child_main(server, false),
            "floor-polling" => floor::child_main(server, true),
            _ => floor::child_main(server, false),
        }
        return;
    }
    if let Ok(library) = std::env::var(LIVE_VAR) {
        let (per_channel, descriptors) = live_channels(&library);
        println!("{library} resident_per_channel={per_channel} descriptors={descriptors}");
        return;
    }
    if let Ok(library) = std::env::var(PEAK_VAR) {
        let size = 256 << 20;
        let (sender, receiver, in_flight, together) = match library.as_str() {
            "ipc-channel" => with_ipc_channel::peak_memory("ipc-channel", size),
            _ => with_crossproc::peak_memory("crossproc", size),
        };
        println!(
            "{library} peak_sender={sender} peak_receiver={receiver} shmem_in_flight={in_flight} \
             peak_together={together} message={size}"
        );
        return;
    }
    let mut criterion = Criterion::default().configure_from_args();
    small_messages(&mut criterion);
    sizes(&mut criterion);
    select(&mut criterion);
    within_one_process(&mut criterion);
    criterion.final_summary();
    // A run of some rows only (`cargo bench --bench comparison -- local_`) leaves the table,
    // and the report it writes, as they are.
    if std::env::args().skip(1).any(|arg| arg == "--list" || !arg.starts_with('-')) {
        return;
    }
    // Issue 17's rows: wall and CPU time of both processes, with the floors (crossbeam between
    // threads, and two processes on one shared cache line); `scripts/bench-report.py` puts the
    // table into the report.
    let table = small::table();
    print!("{table}");
    small::write_report(&table, "cargo bench --bench comparison");
}
