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

mod readiness;
mod receiver;
mod select;
mod sender;
mod server;

pub use receiver::{AsyncIpcBytesReceiver, AsyncIpcReceiver, AsyncOpaqueIpcReceiver};
pub use select::AsyncIpcReceiverSet;
pub use sender::{AsyncIpcBytesSender, AsyncIpcSender};
pub use server::AsyncIpcServer;
