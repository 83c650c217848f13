//! How long a waiting receive polls before it sleeps.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::sys::found_once::FoundOnce;
use crate::sys::Wait;

/// The polling window when nobody has set one, on a machine with more than one CPU.
const DEFAULT_SPIN: Duration = Duration::from_micros(200);

/// Not set yet: the default is worked out on first use.
const UNSET: u64 = u64::MAX;

static SPIN_NANOS: AtomicU64 = AtomicU64::new(UNSET);

/// Sets the longest a waiting receive (`recv`, `try_recv_timeout`, `select`) keeps polling its
/// channel before it puts the thread to sleep, for every channel of this process. Returns the
/// previous window.
///
/// A thread that sleeps must be woken by the kernel when the message arrives, and on virtual
/// machines that wake-up often costs more than the whole message; a receiver that is still
/// polling takes the message at once. Polling costs CPU time, so a receiver (or set) polls only
/// while its messages come in quick succession: when its previous message arrived within the
/// window of the wait (or it has had none yet). A receiver whose messages are far apart sleeps
/// at once and burns nothing. And it polls only while a CPU is to spare: while no more threads
/// are runnable on the machine than this process may use CPUs (`/proc/loadavg`, looked at once
/// a millisecond); on a busy machine a poll would take the CPU from a thread that waits for
/// one, often the very peer that is to answer. The default is 200 µs on machines with more than one CPU and zero
/// (sleep at once) on a single CPU, where polling would only delay the sender.
/// `Duration::ZERO` turns polling off. Linux only; elsewhere receives sleep at once.
///
/// ```
/// use std::time::Duration;
/// let before = crossproc::ipc::set_receive_spin(Duration::ZERO);
/// assert_eq!(crossproc::ipc::receive_spin(), Duration::ZERO);
/// crossproc::ipc::set_receive_spin(before);
/// ```
pub fn set_receive_spin(window: Duration) -> Duration {
    let before = receive_spin();
    let nanos = u64::try_from(window.as_nanos()).unwrap_or(UNSET - 1).min(UNSET - 1);
    SPIN_NANOS.store(nanos, Ordering::Relaxed);
    before
}

/// How long a waiting receive polls before it sleeps (see [`set_receive_spin`]).
///
/// ```
/// assert!(crossproc::ipc::receive_spin() <= std::time::Duration::from_millis(1));
/// ```
pub fn receive_spin() -> Duration {
    let nanos = SPIN_NANOS.load(Ordering::Relaxed);
    if nanos != UNSET {
        return Duration::from_nanos(nanos);
    }
    let default = if usable_cpus() > 1 { DEFAULT_SPIN } else { Duration::ZERO };
    // A concurrent `set_receive_spin` wins over the default.
    let _ = SPIN_NANOS.compare_exchange(UNSET, default.as_nanos() as u64, Ordering::Relaxed, Ordering::Relaxed);
    Duration::from_nanos(SPIN_NANOS.load(Ordering::Relaxed))
}

/// How often [`cpu_to_spare`] looks at the machine again.
const LOAD_SAMPLE: Duration = Duration::from_millis(1);

/// The last looks at the machine: in the high 32 bits the millisecond ([`now_ms`]) of the
/// latest, in the low 32 bits the runnable counts of the latest four, a byte each (the latest
/// lowest). Zero: never looked.
static LOOKS: AtomicU64 = AtomicU64::new(0);

/// The wall clock's millisecond, in 32 bits: it only tells whether a millisecond passed since
/// the last look (a clock that jumps costs one look more or fewer). No `Instant` epoch kept in
/// a `OnceLock`: see [`FoundOnce`] for why none is on the first-use path.
fn now_ms() -> u32 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |since| since.as_millis() as u32)
}

/// Whether polling costs nobody anything: whether, in at least one of the latest four looks (a
/// millisecond apart at most once), no more threads were runnable on the machine, the looking
/// one included, than this process may use CPUs. Where threads wait for a CPU, a poll takes one
/// from them, and often from the very peer whose message it waits for: a request that carried
/// a new reply channel cost 10 × ipc-channel beside two busy loops (issue 26), the poll burning
/// the time slice the replying thread needed. The fewest of four looks, because a kernel worker
/// that runs for a moment (one look in five during a stream of requests on an idle machine
/// here) is not load, while busy loops show in every look. The count is the kernel's running
/// count in `/proc/loadavg` (the machine's, also in a container whose CPUs are fewer); where it
/// cannot be read, a CPU counts as spare.
fn cpu_to_spare() -> bool {
    // Milliseconds wrap after 49 days; only the difference to the last look matters.
    let now = now_ms().max(1);
    let looks = LOOKS.load(Ordering::Relaxed);
    let counts = if looks != 0 && now.wrapping_sub((looks >> 32) as u32) < LOAD_SAMPLE.as_millis() as u32 {
        looks as u32
    } else {
        let runnable = runnable_threads().map_or(0, |count| count.min(255) as u32);
        // Never looked: the three older looks count as the newest.
        let older = if looks == 0 { runnable * 0x0001_0101 } else { looks as u32 };
        let counts = (older << 8) | runnable;
        // A concurrent look that stored first wins; both saw the same machine.
        let _ = LOOKS.compare_exchange(
            looks,
            (u64::from(now) << 32) | u64::from(counts),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        counts
    };
    let fewest = counts.to_le_bytes().into_iter().min().unwrap_or(0);
    usize::from(fewest) <= usable_cpus()
}

/// How many CPUs this process may use, found once (`available_parallelism` reads the cgroup's
/// quota files each time).
fn usable_cpus() -> usize {
    static CPUS: FoundOnce = FoundOnce::new();
    CPUS.get(|| std::thread::available_parallelism().map_or(1, |count| count.get()))
}

/// How many threads are runnable on the machine right now (the fourth field of
/// `/proc/loadavg`, "running/total").
fn runnable_threads() -> Option<usize> {
    use std::io::Read;
    let mut text = [0u8; 128];
    let len = std::fs::File::open("/proc/loadavg").and_then(|mut file| file.read(&mut text)).ok()?;
    let field = std::str::from_utf8(&text[..len]).ok()?.split_whitespace().nth(3)?;
    field.split('/').next()?.parse().ok()
}

/// How long a receiver's (or set's) previous wait lasted, from the start of the receive to the
/// message: whether its messages come in quick succession, and so whether polling pays.
#[derive(Debug, Default)]
#[cfg_attr(any(not(target_os = "linux"), feature = "force-inprocess"), allow(dead_code))]
pub(crate) struct RecentWait(AtomicU64);

#[cfg_attr(any(not(target_os = "linux"), feature = "force-inprocess"), allow(dead_code))]
impl RecentWait {
    /// How long a receive starting now may poll: the window of `wait` (never longer than the
    /// wait itself), or nothing when the previous message took longer than that to come.
    pub fn spin_window(&self, wait: Wait) -> Duration {
        let window = match wait {
            Wait::NonBlocking => Duration::ZERO,
            Wait::Blocking => receive_spin(),
            Wait::Timeout(timeout) => receive_spin().min(timeout),
        };
        if window > Duration::ZERO && Duration::from_nanos(self.0.load(Ordering::Relaxed)) <= window && cpu_to_spare() {
            window
        } else {
            Duration::ZERO
        }
    }

    /// Records a wait that began at `start` and has just ended.
    pub fn record(&self, start: Instant) {
        self.0.store(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Records a receive that found its message at once.
    pub fn record_none(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    /// With more threads busy than the process has CPUs, every look sees no CPU to spare, so a
    /// receive does not poll (each busy thread spins until the test is done).
    #[test]
    #[cfg(target_os = "linux")]
    fn no_cpu_is_spare_beside_more_busy_threads_than_cpus() {
        use super::*;
        use std::sync::atomic::AtomicBool;
        use std::sync::{Arc, Barrier};
        let done = Arc::new(AtomicBool::new(false));
        let busy = usable_cpus() + 1;
        let started = Arc::new(Barrier::new(busy + 1));
        let threads: Vec<_> = (0..busy)
            .map(|_| {
                let (done, started) = (done.clone(), started.clone());
                std::thread::spawn(move || {
                    started.wait();
                    while !done.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        started.wait();
        // Five looks, each in a later millisecond than the one before, so that all four
        // remembered were taken under the load.
        let mut spare = Vec::new();
        for _ in 0..5 {
            let tick = now_ms();
            while now_ms() == tick {
                std::hint::spin_loop();
            }
            spare.push(cpu_to_spare());
        }
        done.store(true, Ordering::Relaxed);
        for thread in threads {
            thread.join().unwrap();
        }
        assert!(!spare[4], "a CPU counted as spare beside {busy} busy threads ({spare:?})");
    }

    #[test]
    fn readme_states_the_default_spin() {
        let flat = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
        let readme = flat(include_str!("../../README.md"));
        let behaviour = flat(include_str!("../../docs/behaviour.md"));
        let micros = super::DEFAULT_SPIN.as_micros();
        for (name, doc, phrase) in [
            ("README.md", &readme, format!("polls for up to {micros} µs before it sleeps")),
            ("docs/behaviour.md", &behaviour, format!("polls the channel for up to {micros} µs")),
        ] {
            assert!(doc.contains(&phrase), "{name} must say {phrase:?}");
        }
    }
}
