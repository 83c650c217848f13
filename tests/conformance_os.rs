//! The conformance suite (`tests/conformance/suite.rs`) on OS channels from the start:
//! `channel` is `os_channel` here.

/// crossproc's `ipc`, with OS channels where the suite makes its channels.
mod ipc {
    pub use crossproc::ipc::os_channel as channel;
    pub use crossproc::ipc::*;
}

#[path = "conformance/suite.rs"]
mod suite;
