//! Receive limits: what a receiver accepts from a peer before it refuses a message.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Limits a receiver applies to every message before it allocates, maps or installs anything
/// for it. A message over a limit is refused: that receive returns
/// [`IpcError::Io`](crate::IpcError::Io) with kind `InvalidData` whose inner error is a
/// [`LimitExceeded`] (see [`IpcError::limit_exceeded`](crate::IpcError::limit_exceeded)), the
/// descriptors it carried are closed, and the channel goes on with the next message.
///
/// ```
/// use crossproc::ipc::{self, ReceiveLimits};
/// let (tx, rx) = ipc::channel::<Vec<u8>>().unwrap();
/// rx.set_limits(ReceiveLimits { max_message_bytes: 1024, ..ReceiveLimits::default() });
/// tx.send(vec![0; 4096]).unwrap();
/// let error = rx.recv().unwrap_err();
/// assert!(error.limit_exceeded().is_some());
/// tx.send(vec![0; 16]).unwrap();
/// assert_eq!(rx.recv().unwrap().len(), 16); // the channel keeps working
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceiveLimits {
    /// The largest encoded message accepted, in bytes. Default: 4 GiB.
    pub max_message_bytes: u64,
    /// The most channel ends plus shared-memory regions accepted in one message. Each one costs
    /// the receiving process a descriptor. Default: 4096.
    pub max_handles: usize,
    /// How deeply a decoded value may nest (each sequence, map, enum variant, `Some` or newtype
    /// is one level). Bounds the stack a recursive message type can use. Default: 128.
    pub max_nesting: usize,
}

impl ReceiveLimits {
    /// The defaults: 4 GiB per message, 4096 handles per message, 128 levels of nesting.
    pub const DEFAULT: ReceiveLimits =
        ReceiveLimits { max_message_bytes: 4 << 30, max_handles: 4096, max_nesting: 128 };

    /// No limits on size and handles (trusted peers only). Nesting stays at the default, since
    /// deeper values could overflow the stack whoever sent them.
    pub const UNLIMITED: ReceiveLimits =
        ReceiveLimits { max_message_bytes: u64::MAX, max_handles: usize::MAX, max_nesting: 128 };
}

impl Default for ReceiveLimits {
    fn default() -> Self {
        ReceiveLimits::DEFAULT
    }
}

/// Which [`ReceiveLimits`] a refused message exceeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitExceeded {
    /// The message was larger than `max_message_bytes`.
    MessageBytes {
        /// The limit.
        limit: u64,
        /// What the message claimed.
        actual: u64,
    },
    /// The message carried more handles than `max_handles`.
    Handles {
        /// The limit.
        limit: usize,
        /// What the message claimed.
        actual: usize,
    },
}

impl fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitExceeded::MessageBytes { limit, actual } => {
                write!(f, "message of {actual} bytes exceeds the receive limit of {limit}")
            }
            LimitExceeded::Handles { limit, actual } => {
                write!(f, "message with {actual} channels and regions exceeds the receive limit of {limit}")
            }
        }
    }
}

impl std::error::Error for LimitExceeded {}

impl LimitExceeded {
    /// The `io::Error` a receive returns for this.
    pub(crate) fn into_io(self) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, self)
    }
}

/// Limits that can be changed through a shared reference (a receiver's).
#[derive(Debug)]
pub(crate) struct LimitsCell {
    max_message_bytes: AtomicU64,
    max_handles: AtomicUsize,
    max_nesting: AtomicUsize,
}

impl LimitsCell {
    pub fn new(limits: ReceiveLimits) -> Self {
        LimitsCell {
            max_message_bytes: AtomicU64::new(limits.max_message_bytes),
            max_handles: AtomicUsize::new(limits.max_handles),
            max_nesting: AtomicUsize::new(limits.max_nesting),
        }
    }

    pub fn get(&self) -> ReceiveLimits {
        ReceiveLimits {
            max_message_bytes: self.max_message_bytes.load(Ordering::Relaxed),
            max_handles: self.max_handles.load(Ordering::Relaxed),
            max_nesting: self.max_nesting.load(Ordering::Relaxed),
        }
    }

    pub fn set(&self, limits: ReceiveLimits) {
        self.max_message_bytes.store(limits.max_message_bytes, Ordering::Relaxed);
        self.max_handles.store(limits.max_handles, Ordering::Relaxed);
        self.max_nesting.store(limits.max_nesting, Ordering::Relaxed);
    }

    /// How deeply messages received under these limits may nest.
    pub fn max_nesting(&self) -> usize {
        self.max_nesting.load(Ordering::Relaxed)
    }

    /// Checks a message's claimed size and handle count against the limits.
    pub fn check(&self, message_bytes: u64, handles: usize) -> Result<(), LimitExceeded> {
        let limits = self.get();
        if message_bytes > limits.max_message_bytes {
            return Err(LimitExceeded::MessageBytes { limit: limits.max_message_bytes, actual: message_bytes });
        }
        if handles > limits.max_handles {
            return Err(LimitExceeded::Handles { limit: limits.max_handles, actual: handles });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::ReceiveLimits;

    #[test]
    fn security_md_states_the_default_limits() {
        let security = include_str!("../../SECURITY.md");
        let defaults = ReceiveLimits::DEFAULT;
        for row in [
            format!("largest encoded message | {} GiB |", defaults.max_message_bytes >> 30),
            format!("per message | {} |", defaults.max_handles),
            format!("nested in a decoded value | {} |", defaults.max_nesting),
        ] {
            assert!(security.contains(&row), "SECURITY.md's limits table must say {row:?}");
        }
    }
}
