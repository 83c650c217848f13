//! The Linux backend: `SOCK_SEQPACKET` Unix-domain sockets with descriptor passing, sealed memfd
//! shared memory, and epoll.
//!
//! One file per mechanism:
//! - [`frame`]: the header that starts every packet (the wire format).
//! - [`socket`]: channels, sending and receiving one message per packet.
//! - [`memfd`]: sealed memfd regions, for shared memory and for payloads too large for a packet.
//! - [`pool`]: reusable memfds for a channel's large payloads (the sending side).
//! - [`intake`]: copying a pooled payload out on the receiving side.
//! - [`shared_map`]: the mapping of a pooled memfd both sides copy through.
//! - [`select`]: many receivers behind one epoll descriptor.
//! - [`server`]: named servers: the listening socket and the acceptor thread that admits clients.
//! - `reactor` (feature `tokio`): registering a descriptor with tokio's reactor.
//! - [`spawn`]: a channel end inherited by a child process.
//! - [`sys`]: the small helpers every file above uses (EINTR retry, readiness wait).

#![allow(unsafe_code)]

#[cfg(test)]
mod documented;
mod frame;
mod intake;
mod memfd;
mod pool;
#[cfg(feature = "tokio")]
mod reactor;
mod select;
mod server;
mod shared_map;
mod socket;
mod spawn;
mod sys;

pub(crate) use frame::INLINE_MAX;
pub(crate) use memfd::{Encoded, OsIpcSharedMemory, PayloadWriter};
#[cfg(feature = "tokio")]
pub(crate) use reactor::register;
pub(crate) use select::OsIpcReceiverSet;
pub(crate) use server::{current_credentials, serve, OsListener, OsServerGuard};
#[cfg(feature = "fuzzing")]
pub(crate) use socket::decode_packet;
pub(crate) use socket::{channel, OsIpcReceiver, OsIpcSender, OsOpaqueIpcChannel};
pub(crate) use spawn::{spawn_with_inherited, take_inherited};
