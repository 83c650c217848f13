//! Native tokio support (feature `tokio`, Linux): receivers, senders, a receiver set and a
//! server that wait on the runtime's own reactor (`AsyncFd`) — no helper thread, no polling.
//!
//! | sync type | async type | awaits |
//! |---|---|---|
//! | [`IpcReceiver<T>`](crate::ipc::IpcReceiver) | [`AsyncIpcReceiver<T>`] | `recv`, `Stream` |
//! | [`IpcBytesReceiver`](crate::ipc::IpcBytesReceiver) | [`AsyncIpcBytesReceiver`] | `recv`, `Stream` |
//! | [`OpaqueIpcReceiver`](crate::ipc::OpaqueIpcReceiver) | [`AsyncOpaqueIpcReceiver`] | `recv`, `Stream` |
//! | [`IpcSender<T>`](crate::ipc::IpcSender) | [`AsyncIpcSender<T>`] | `send` (waits for buffer room) |
//! | [`IpcBytesSender`](crate::ipc::IpcBytesSender) | [`AsyncIpcBytesSender`] | `send` |
//! | [`IpcReceiverSet`](crate::ipc::IpcReceiverSet) | [`AsyncIpcReceiverSet`] | `select` |
//! | [`IpcServer<T>`](crate::ipc::IpcServer) | [`AsyncIpcServer<T>`] | `accept` |
//!
//! # Cancellation safety
//! Every future here is cancellation safe. A receive takes a message from the kernel only in a
//! synchronous step after readiness was reported, so dropping a `recv`, `select` or `accept`
//! future never loses a message. A `send` future that is dropped has either sent its message
//! whole or not at all.
//!
//! Constructors register with the reactor of the current runtime, so call them inside one.
//!
//! # What this module builds on
//! Nothing tokio-specific lives in [`ipc`](crate::ipc). A receiver of a local channel (one
//! whose ends are all in this process, docs/local.md) needs no reactor: its senders call the
//! waiting task's waker. For an OS channel this module uses three things of the OS layer
//! (`src/sys/mod.rs`, "Async interface"):
//! - **readiness**: `sys::register` puts a duplicate of an end's descriptor (`AsFd` of a
//!   sender, a receiver or a receiver set) on the runtime's reactor;
//! - **a non-blocking receive**: `OsIpcReceiver::recv_into(Wait::NonBlocking, …)` — `Empty`
//!   means wait for readiness, after `OsIpcReceiver::prepare_to_sleep` allowed it;
//! - **a non-blocking send**: `IpcSender::send_with(&value, Wait::NonBlocking)` — `WouldBlock`
//!   means wait until the sender's descriptor is writable (room in the channel).
//!
//! On Linux small messages travel in a shared-memory ring that readiness does not show, so a
//! receive (and a select) always tries once before it waits, and announces that it is about to
//! sleep before it does (`prepare_to_sleep` may then find a message that arrived meanwhile, and
//! the receive is retried instead); while it sleeps, its senders send on the socket, which
//! wakes it. A sender that finds the ring full waits for the socket to be writable: the
//! receiver's reading of the packets that filled it says so.

mod readiness;
mod receiver;
mod select;
mod sender;
mod server;

pub use receiver::{AsyncIpcBytesReceiver, AsyncIpcReceiver, AsyncOpaqueIpcReceiver};
pub use select::AsyncIpcReceiverSet;
pub use sender::{AsyncIpcBytesSender, AsyncIpcSender};
pub use server::AsyncIpcServer;
