//! Whether channels get a shared-memory ring (Linux).

use std::sync::atomic::{AtomicBool, Ordering};

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Sets whether receivers in this process give their channels a shared-memory ring for small
/// messages, and returns the previous setting. On by default.
///
/// A channel starts as a socket pair; once its receiver has taken 16 messages from the socket,
/// it makes the ring, which makes small messages cost no system call while the receiver is
/// awake. The ring costs a memfd, mapped by every process that uses the channel (tens of
/// microseconds once, and one more descriptor in the receiving process). Turned off, channels
/// whose receiver is in this process stay socket pairs from now on (a channel that has a ring
/// keeps it); a channel's senders follow its receiver's choice (told at the 16th message, they
/// stop looking for a ring, so a send is one system call again). Linux only; elsewhere it
/// changes nothing.
///
/// ```
/// let before = crossproc::ipc::set_shared_memory_ring(false);
/// assert!(!crossproc::ipc::shared_memory_ring());
/// let (tx, rx) = crossproc::ipc::channel::<u8>().unwrap();
/// tx.send(7).unwrap();
/// assert_eq!(rx.recv().unwrap(), 7);
/// crossproc::ipc::set_shared_memory_ring(before);
/// ```
pub fn set_shared_memory_ring(enabled: bool) -> bool {
    ENABLED.swap(enabled, Ordering::Relaxed)
}

/// Whether channels made from now on get a shared-memory ring (see [`set_shared_memory_ring`]).
///
/// ```
/// assert!(crossproc::ipc::shared_memory_ring());
/// ```
pub fn shared_memory_ring() -> bool {
    ENABLED.load(Ordering::Relaxed)
}
