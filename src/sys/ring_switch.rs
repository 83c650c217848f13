//! Whether new channels get a shared-memory ring (Linux).

use std::sync::atomic::{AtomicBool, Ordering};

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Sets whether channels made from now on by this process (`channel`, `bytes_channel`, and the
/// connections its servers accept) carry small messages through a shared-memory ring, and
/// returns the previous setting. On by default.
///
/// The ring makes small messages cost no system call while the receiver is awake, but each
/// channel then costs a memfd, made with the channel and mapped by every process that uses it
/// (tens of microseconds, and one more descriptor in the receiving process). A program that
/// makes many channels each used for a handful of messages may be faster without it. Channels
/// that exist keep what they have; a channel's senders follow its receiver's choice. Linux only;
/// elsewhere it changes nothing.
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
