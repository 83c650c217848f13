//! How long a waiting receive polls before it sleeps.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The polling window when nobody has set one, on a machine with more than one CPU.
const DEFAULT_SPIN: Duration = Duration::from_micros(50);

/// Not set yet: the default is worked out on first use.
const UNSET: u64 = u64::MAX;

static SPIN_NANOS: AtomicU64 = AtomicU64::new(UNSET);

/// Sets how long a waiting receive (`recv`, `recv_timeout`) keeps polling its channel before it
/// puts the thread to sleep, for every channel of this process. Returns the previous window.
///
/// A thread that sleeps must be woken by the kernel when the message arrives, and on virtual
/// machines that wake-up often costs more than the whole message; a receiver that is still
/// polling takes the message at once. The price is CPU time: each receive that ends up
/// sleeping first burns up to the window. The default is 50 µs on machines with more than one
/// CPU and zero (sleep at once) on a single CPU, where polling would only delay the sender.
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
