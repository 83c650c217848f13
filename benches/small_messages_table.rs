//! The small-message table of issue 17 (see `small_messages.rs`), shared by the
//! `small_messages` and `comparison` bench binaries: typed byte-string messages (as
//! `serde_bytes::ByteBuf` encodes them), a fresh buffer per send, two real processes; crossproc
//! and `ipc-channel` 0.21 interleaved in one run, the median of 5; wall time and the CPU time of
//! both processes (every thread's, from each process's kernel CPU clock). Beside them the floors:
//! the same stream between two threads through crossbeam-channel, and two processes
//! ping-ponging on one shared cache line (the physical limit of any shared-memory transport).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

const CHILD_VAR: &str = "CROSSPROC_SMALL_CHILD";
const SERVER_VAR: &str = "CROSSPROC_SMALL_SERVER";
const RUNS: usize = 5;

#[path = "../tests/util/bytes.rs"]
mod bytes;
use bytes::Bytes;

mod with_crossproc {
    use crossproc as lib;
    include!("small_messages_scenarios.rs");
}

mod with_ipc_channel {
    use ipc_channel as lib;
    include!("small_messages_scenarios.rs");
}

/// CPU time of every thread of process `pid` so far, from the kernel's CPU clock of that process.
/// (`/proc/<pid>/task/*/schedstat` lags by up to a scheduler tick for a thread that is running,
/// and a stream that spins through 20,000 messages in less than a tick read as 0 there.)
fn cpu_time(pid: u32) -> Duration {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `clock` is a valid place for the clock id.
    let found = unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) };
    assert_eq!(found, 0, "no CPU clock for process {pid}");
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid place for the time; `clock` is a CPU clock id.
    let read = unsafe { libc::clock_gettime(clock, &mut now) };
    assert_eq!(read, 0, "the CPU clock of process {pid} could not be read");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// The median of `RUNS` runs of `run` (after one warm-up): wall time and CPU time of this
/// process and `child` together (`child` may be this process: it is counted once).
fn measure(child: u32, run: impl FnMut()) -> (Duration, Duration) {
    each_run(child, RUNS, run)[RUNS / 2]
}

/// Wall and CPU time of this process and `child` together (counted once if it is this
/// process) for each of `runs` runs of `run` (after one warm-up), sorted by wall time.
fn each_run(child: u32, runs: usize, mut run: impl FnMut()) -> Vec<(Duration, Duration)> {
    run();
    let mut samples: Vec<(Duration, Duration)> = (0..runs).map(|_| one_run(child, &mut run)).collect();
    samples.sort();
    samples
}

/// Wall and CPU time of one run of `run` (see [`each_run`]).
fn one_run(child: u32, run: impl FnOnce()) -> (Duration, Duration) {
    let cpu_of_both = || {
        let here = cpu_time(std::process::id());
        if child == std::process::id() {
            here
        } else {
            here + cpu_time(child)
        }
    };
    let cpu = cpu_of_both();
    let start = Instant::now();
    run();
    (start.elapsed(), cpu_of_both() - cpu)
}

/// [`measure`] for two contenders whose runs alternate (after a warm-up of each), so that a
/// phase of the machine (a busy loop's slice, the VM's wake-ups) weighs on both alike.
fn measure_interleaved(
    (first, mut run_first): (u32, impl FnMut()),
    (second, mut run_second): (u32, impl FnMut()),
) -> ((Duration, Duration), (Duration, Duration)) {
    run_first();
    run_second();
    let (mut firsts, mut seconds) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        firsts.push(one_run(first, &mut run_first));
        seconds.push(one_run(second, &mut run_second));
    }
    let median = |mut samples: Vec<(Duration, Duration)>| {
        samples.sort();
        samples[RUNS / 2]
    };
    (median(firsts), median(seconds))
}

/// Nanoseconds per operation.
fn per(duration: Duration, count: u32) -> f64 {
    duration.as_nanos() as f64 / f64::from(count)
}

/// The 64 B stream between two threads through crossbeam-channel (fresh buffer per send).
fn crossbeam_floor(count: u32) -> (Duration, Duration) {
    measure(std::process::id(), || {
        let (tx, rx) = crossbeam_channel::bounded::<Bytes>(1024);
        let receiver = std::thread::spawn(move || while rx.recv().is_ok() {});
        for _ in 0..count {
            tx.send(Bytes(vec![7; 64])).unwrap();
        }
        drop(tx);
        receiver.join().unwrap();
    })
}

/// Round trips between two processes spinning on one shared cache line (fork, a shared
/// anonymous mapping, an atomic counter each side bumps when it sees the other's). With `len`
/// bytes, each turn also carries a message: the side whose turn it is copies the other's message
/// out of the mapping (as a receiver must, before it looks at it) and its own answer in.
fn shared_memory_floor(count: u32, len: usize) -> Duration {
    use std::sync::atomic::{AtomicU64, Ordering};
    const PAGE: usize = 4096;
    let map_len = PAGE + 2 * len.next_multiple_of(PAGE);
    // SAFETY: a fresh shared anonymous mapping; checked below.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            map_len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(page, libc::MAP_FAILED);
    // SAFETY: the mapping is aligned and zeroed, and lives until munmap below.
    let counter = unsafe { &*(page as *const AtomicU64) };
    let area = |index: usize| (page as usize + PAGE + index * len.next_multiple_of(PAGE)) as *mut u8;
    // Copies between a side's own buffer and the mapping, only while it is that side's turn.
    let put = |index: usize, from: &[u8]| {
        // SAFETY: the area is `len` bytes inside the mapping; the other side does not touch it now.
        unsafe { std::ptr::copy_nonoverlapping(from.as_ptr(), area(index), len) }
    };
    let take = |index: usize, into: &mut [u8]| {
        // SAFETY: as in `put`.
        unsafe { std::ptr::copy_nonoverlapping(area(index), into.as_mut_ptr(), len) }
    };
    let rounds = u64::from(count);
    let mut own = vec![7u8; len];
    // SAFETY: the child only spins on the shared counter and copies, and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        for round in 0..rounds {
            while counter.load(Ordering::Acquire) != 2 * round + 1 {
                std::hint::spin_loop();
            }
            take(0, &mut own);
            put(1, &own);
            counter.store(2 * round + 2, Ordering::Release);
        }
        // SAFETY: ends the forked child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    let start = Instant::now();
    for round in 0..rounds {
        put(0, &own);
        counter.store(2 * round + 1, Ordering::Release);
        while counter.load(Ordering::Acquire) != 2 * round + 2 {
            std::hint::spin_loop();
        }
        take(1, &mut own);
    }
    let elapsed = start.elapsed();
    // SAFETY: waits for the child forked above; the mapping is no longer used by either side.
    unsafe {
        libc::waitpid(pid, std::ptr::null_mut(), 0);
        libc::munmap(page, map_len);
    }
    elapsed
}

/// Busy loops in processes of their own, as on a machine with more work than CPUs; they end
/// when this is dropped.
struct BusyLoops(Vec<std::process::Child>);

impl BusyLoops {
    fn start(count: usize) -> Self {
        let start = || std::process::Command::new("sh").args(["-c", "while :; do :; done"]).spawn().unwrap();
        BusyLoops((0..count).map(|_| start()).collect())
    }
}

impl Drop for BusyLoops {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `body` with `$busy` busy loops beside it (none: an idle machine).
macro_rules! beside {
    ($busy:expr, $body:expr) => {{
        let _load = ($busy > 0).then(|| BusyLoops::start($busy));
        $body
    }};
}

macro_rules! both {
    ($table:ident, $name:expr, $count:expr, |$peer:ident| $body:expr) => {{
        let crossproc = {
            let $peer = with_crossproc::spawn_peer("crossproc");
            let child = $peer.child.id();
            measure(child, || $body)
        };
        let ipc_channel = {
            use with_ipc_channel as with_crossproc;
            let $peer = with_crossproc::spawn_peer("ipc-channel");
            let child = $peer.child.id();
            measure(child, || $body)
        };
        row(&mut $table, $name, $count, crossproc, ipc_channel);
    }};
}

fn row(table: &mut String, name: &str, count: u32, crossproc: (Duration, Duration), ipc_channel: (Duration, Duration)) {
    let _ = writeln!(
        table,
        "| {name} | {:.0} ns | {:.0} ns | **{:.2}** | {:.0} ns | {:.0} ns | **{:.2}** |",
        per(crossproc.0, count),
        per(ipc_channel.0, count),
        crossproc.0.as_secs_f64() / ipc_channel.0.as_secs_f64(),
        per(crossproc.1, count),
        per(ipc_channel.1, count),
        crossproc.1.as_secs_f64() / ipc_channel.1.as_secs_f64(),
    );
}

/// In a child process started by [`table`]: plays its part and returns `true`.
pub fn run_child() -> bool {
    let Ok(library) = std::env::var(CHILD_VAR) else { return false };
    let server = std::env::var(SERVER_VAR).unwrap();
    match library.as_str() {
        "crossproc" => with_crossproc::child_main(server),
        _ => with_ipc_channel::child_main(server),
    }
    true
}

/// Rows of streams that each start on a channel of their own, made for them: whether the ring
/// engages on every stream (a stream the ring misses runs at socket speed from first message to
/// last), as the median and the slowest of [`FRESH`] streams.
pub fn fresh_streams(table: &mut String) {
    const STREAM: u32 = 20_000;
    let crossproc = {
        let peer = with_crossproc::spawn_peer("crossproc");
        each_run(peer.child.id(), FRESH, || with_crossproc::stream_on_fresh_channel(&peer, STREAM, 64))
    };
    let ipc_channel = {
        let peer = with_ipc_channel::spawn_peer("ipc-channel");
        each_run(peer.child.id(), FRESH, || with_ipc_channel::stream_on_fresh_channel(&peer, STREAM, 64))
    };
    for (which, at) in [("median", FRESH / 2), ("slowest", FRESH - 1)] {
        let name = format!("a child streams 64 B messages to its parent on a fresh channel: the {which} of {FRESH}");
        row(table, &name, STREAM, crossproc[at], ipc_channel[at]);
    }
}

/// Fresh streams measured by [`fresh_streams`].
const FRESH: usize = 200;

/// The table's header row.
pub const HEADER: &str = "| scenario (per message) | crossproc wall | ipc-channel wall | ratio | crossproc CPU | ipc-channel CPU | ratio |\n|---|---|---|---|---|---|---|\n";

/// Rows of requests that each carry a new reply channel, to a child and to a serving thread,
/// idle and beside two busy loops (a receive that polls on a machine without a spare CPU delays
/// its peer): make a channel, pass its sender, use it. Both libraries' runs alternate.
pub fn request_rows(table: &mut String) {
    const REQUESTS: u32 = 2_000;
    for busy in [0, 2] {
        let load = if busy == 0 { "idle".to_owned() } else { format!("beside {busy} busy loops") };
        beside!(busy, {
            let ours = with_crossproc::spawn_peer("crossproc");
            let theirs = with_ipc_channel::spawn_peer("ipc-channel");
            let (crossproc, ipc_channel) = measure_interleaved(
                (ours.child.id(), || with_crossproc::pass_senders(&ours, REQUESTS)),
                (theirs.child.id(), || with_ipc_channel::pass_senders(&theirs, REQUESTS)),
            );
            let name = format!("a request with a new reply channel to a child, {load}");
            row(table, &name, REQUESTS, crossproc, ipc_channel);
            let here = std::process::id();
            let (crossproc, ipc_channel) = measure_interleaved(
                (here, || with_crossproc::requests_to_thread(REQUESTS)),
                (here, || with_ipc_channel::requests_to_thread(REQUESTS)),
            );
            let name = format!("a request with a new reply channel to a thread, {load}");
            row(table, &name, REQUESTS, crossproc, ipc_channel);
        });
    }
}

/// Runs every scenario through both libraries and the floors; returns the Markdown table.
pub fn table() -> String {
    const STREAM: u32 = 20_000;
    let mut table = String::from(HEADER);
    both!(table, "a child streams 64 B messages to its parent", STREAM, |peer| with_crossproc::stream_from_child(
        &peer, STREAM, 64
    ));
    both!(table, "the parent streams 64 B messages to a child", STREAM, |peer| with_crossproc::stream_to_child(
        &peer, STREAM, 64
    ));
    fresh_streams(&mut table);
    both!(table, "round trip of 64 B", 5_000, |peer| with_crossproc::round_trips(&peer, 5_000, 64));
    both!(table, "round trip of 4 KiB", 2_000, |peer| with_crossproc::round_trips(&peer, 2_000, 4096));
    both!(table, "round trip of 64 KiB", 500, |peer| with_crossproc::round_trips(&peer, 500, 64 << 10));
    // Make a channel, pass its sender, use it: a request with a new reply channel, to a child
    // and to a serving thread, idle and beside two busy loops (a receive that polls on a
    // machine without a spare CPU delays its peer).
    request_rows(&mut table);
    let (wall, cpu) = crossbeam_floor(STREAM);
    let floor = shared_memory_floor(100_000, 0);
    let floor_64k = shared_memory_floor(2_000, 64 << 10);
    let _ = write!(
        table,
        "\nFloors: the 64 B stream between two threads through crossbeam-channel: {:.0} ns wall, {:.0} ns CPU \
         per message; a round trip between two processes spinning on one shared cache line: {:.0} ns; the same \
         carrying 64 KiB each way (each side copies the other's message out of shared memory and its answer \
         in): {:.0} ns.\n",
        per(wall, STREAM),
        per(cpu, STREAM),
        per(floor, 100_000),
        per(floor_64k, 2_000),
    );
    table.push_str(WHERE_THE_TIME_GOES);
    table
}

/// What the floors say about the rows above (the same in every run).
const WHERE_THE_TIME_GOES: &str = "\nWhere the time goes: in a 64 B stream the sending process is busy for the whole \
time (compare the CPU column) while the receiver mostly polls, so the sender's work per message sets the pace. A \
profile of the sender puts about a fifth of that work in the compare-and-swap that publishes each message (on the \
channel's word, whose cache line the receiver's looks pull away; the cache-line floor is the least it can cost), \
about a sixth in encoding, and the rest in the typed layer's bookkeeping, spread over many small steps (README, \
\"Performance\"). A 64 KiB round trip copies each message out of memory another core just wrote, at least twice: \
the 64 KiB floor prices those copies alone. 64 KiB messages travel on the socket, which costs about what a ring \
would.\n";

/// Writes `table` to `docs/benchmarks/small-messages.md`, saying where and how it was made.
pub fn write_report(table: &str, command: &str) {
    let report = format!(
        "# Small messages (issue 17)\n\nGenerated by `{command}` on {} ({} CPUs): typed byte-string \
         messages, a fresh buffer per send, two processes, median of {RUNS} runs, CPU time of both processes.\n\n{table}",
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| info.lines().find_map(|line| line.strip_prefix("model name\t: ").map(str::to_owned)))
            .unwrap_or_else(|| "an unknown CPU".into()),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    let _ = std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/benchmarks/small-messages.md"), report);
}
