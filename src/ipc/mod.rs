//! Typed channels between processes: the `ipc-channel` API.
//!
//! | item | what it is |
//! |---|---|
//! | [`channel`], [`IpcSender`], [`IpcReceiver`] | typed channels (serde + postcard) |
//! | [`os_channel`], [`os_bytes_channel`] | channels that are OS channels from the start |
//! | [`bytes_channel`], [`IpcBytesSender`], [`IpcBytesReceiver`] | raw byte channels |
//! | [`OpaqueIpcSender`], [`OpaqueIpcReceiver`], [`IpcMessage`] | untyped ends and messages |
//! | [`IpcReceiverSet`], [`IpcSelectionResult`] | select over many receivers |
//! | [`IpcSharedMemory`] | immutable memory shared by reference |
//! | [`ReceiveLimits`], [`LimitExceeded`] | what a receiver accepts from an untrusted peer |
//! | [`IpcOneShotServer`] | a named rendezvous for a process that has no channel yet |
//! | [`IpcServer`], [`AccessPolicy`], [`PeerCredentials`], [`IpcClient`] | a named server for many clients |
//! | [`set_receive_spin`], [`receive_spin`] | how long a waiting receive polls before it sleeps |
//! | [`set_shared_memory_ring`], [`shared_memory_ring`] | whether new channels carry small messages through shared memory (Linux) |
//! | [`IpcCommandExt`], [`inherited_receiver`], [`inherited_sender`] | a child process started with a connected channel |
//!
//! Every sender, receiver and shared-memory region is itself serializable: put it anywhere in a
//! message (a field, a `Vec`, an `Option`, at any depth) and the other side gets a working one.

mod bytes;
mod doorbell;
mod endpoint;
mod message;
mod one_shot;
mod select;
mod server;
mod shmem;
mod spawn;
mod typed;

#[cfg(feature = "async")]
#[cfg_attr(docsrs, doc(cfg(feature = "async")))]
pub use crate::asynch::IpcStream;
pub use crate::sys::credentials::PeerCredentials;
pub use crate::sys::limits::{LimitExceeded, ReceiveLimits};
pub use crate::sys::ring_switch::{set_shared_memory_ring, shared_memory_ring};
pub use crate::sys::spin::{receive_spin, set_receive_spin};
pub use bytes::{bytes_channel, os_bytes_channel, IpcBytesReceiver, IpcBytesSender};
pub(crate) use endpoint::{ReceiverEnd, SenderEnd};
pub use message::{IpcMessage, OpaqueIpcReceiver, OpaqueIpcSender};
pub use one_shot::IpcOneShotServer;
pub use select::{IpcReceiverSet, IpcSelectionResult};
#[cfg(feature = "tokio")]
pub(crate) use server::acceptor_error;
pub use server::{AccessPolicy, IpcClient, IpcServer};
pub use shmem::IpcSharedMemory;
pub use spawn::{inherited_receiver, inherited_sender, IpcCommandExt};
pub use typed::{channel, os_channel, IpcReceiver, IpcSender};

pub use crate::error::{IpcError, TryRecvError, TrySelectError};
