//! The conformance suite (`tests/conformance/suite.rs`) on local channels: `ipc::channel()` as
//! programs call it.

/// crossproc's `ipc`, as it is.
mod ipc {
    pub use crossproc::ipc::*;
}

#[path = "conformance/suite.rs"]
mod suite;
