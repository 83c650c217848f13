//! # crossproc
//!
//! Rust channels between processes. Typed [`IpcSender<T>`](ipc::IpcSender) /
//! [`IpcReceiver<T>`](ipc::IpcReceiver) move serde values over native operating-system
//! primitives (on Linux: `SOCK_SEQPACKET` Unix sockets with descriptor passing, and sealed memfd
//! shared memory). Senders, receivers and shared memory are themselves serializable, so channels
//! travel inside messages, to any process.
//!
//! It is a drop-in replacement for Servo's `ipc-channel` 0.21, 0.22 and 0.23: change the
//! dependency line to `ipc-channel = { package = "crossproc", … }` and the program builds and
//! behaves the same (`docs/compatibility.md` lists every item, and every behavioural difference
//! with its reason).
//!
//! ```
//! use crossproc::ipc;
//! let (tx, rx) = ipc::channel::<ipc::IpcSender<String>>().unwrap();
//! let (reply_tx, reply_rx) = ipc::channel::<String>().unwrap();
//! tx.send(reply_tx).unwrap();                  // a channel inside a message
//! rx.recv().unwrap().send("pong".into()).unwrap();
//! assert_eq!(reply_rx.recv().unwrap(), "pong");
//! ```
//!
//! Layout: [`ipc`] is the public channel API, [`router`] the callback thread, `asynch` streams
//! (feature `async`), [`platform`] ipc-channel's OS-level module for code written against it;
//! below them, `codec` (how a value becomes bytes plus channels, and back) and `sys` (one folder
//! per operating system, behind a narrow contract documented in `src/sys/mod.rs`).

#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "async")]
#[cfg_attr(docsrs, doc(cfg(feature = "async")))]
pub mod asynch;
mod chan;
mod codec;
mod error;
pub mod ipc;
pub mod platform;
pub mod router;
mod sys;
#[cfg(all(feature = "tokio", target_os = "linux", not(feature = "force-inprocess")))]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod tokio;

#[cfg(all(feature = "fuzzing", target_os = "linux", not(feature = "force-inprocess")))]
#[doc(hidden)]
pub mod fuzzing;

pub use error::{IpcError, SendTimeoutError, SerDeError, TryRecvError, TrySelectError, TrySendError};

#[cfg(test)]
mod tests {
    /// The README's complete example is `examples/spawn.rs`, which CI builds and runs.
    #[test]
    fn the_readme_example_is_the_spawn_example() {
        let flat = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
        let example = include_str!("../examples/spawn.rs");
        let code = &example[example.find("use std::process::Command;").expect("the example's code")..];
        assert!(flat(include_str!("../README.md")).contains(&flat(code)), "README.md must show examples/spawn.rs");
    }
}
