//! How long a waiting receive polls before it sleeps.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
/// at once and burns nothing. The default is 200 µs on machines with more than one CPU and zero
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
    let cpus = std::thread::available_parallelism().map_or(1, |count| count.get());
    let default = if cpus > 1 { DEFAULT_SPIN } else { Duration::ZERO };
    // A concurrent `set_receive_spin` wins over the default.
    let _ = SPIN_NANOS.compare_exchange(UNSET, default.as_nanos() as u64, Ordering::Relaxed, Ordering::Relaxed);
    Duration::from_nanos(SPIN_NANOS.load(Ordering::Relaxed))
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
        if Duration::from_nanos(self.0.load(Ordering::Relaxed)) <= window {
            window
        } else {
            Duration::ZERO
        }
    }

    /// Records a wait that began at `start` and has just ended.
    pub fn record(&self, start: std::time::Instant) {
        self.0.store(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Records a receive that found its message at once.
    pub fn record_none(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn readme_states_the_default_spin() {
        let readme = include_str!("../../README.md").split_whitespace().collect::<Vec<_>>().join(" ");
        let micros = super::DEFAULT_SPIN.as_micros();
        for phrase in [
            format!("polls for up to {micros} µs before it sleeps"),
            format!("polls the channel for up to {micros} µs"),
        ] {
            assert!(readme.contains(&phrase), "README.md must say {phrase:?}");
        }
    }
}
