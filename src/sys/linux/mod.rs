//! The Linux backend: `SOCK_SEQPACKET` Unix-domain sockets with descriptor passing, sealed memfd
//! shared memory, and epoll.
//!
//! What any Unix with `SOCK_SEQPACKET` and `SCM_RIGHTS` shares lives in `src/sys/unix/` and is
//! compiled in here (a FreeBSD backend would include the same files):
//! - [`frame`]: the header that starts every packet (the wire format).
//! - [`spawn`]: a channel end inherited by a child process (close-on-exec cleared in the child).
//! - [`sys`]: the small helpers every file uses (EINTR retry, `poll` readiness waits).
//!
//! What is Linux's own, one file per mechanism:
//! - [`socket`]: channels, sending and receiving one message per packet (portable but for the
//!   memfd payloads it hands to [`pool`] and [`intake`]).
//! - [`sender`] and [`receiver`]: the two ends, choosing between the ring and the socket.
//! - [`ring`]: the shared-memory fast path for small messages (one control memfd per channel).
//! - [`at_exit`]: ring slots given back when the process exits without dropping its senders.
//! - [`held`]: the ends and regions this process holds, by kernel object, so that one received
//!   again shares its descriptor.
//! - [`reserve`]: the descriptor a process keeps free for the look that must find a ring.
//! - [`fork`]: noticing, without a system call, that this process is a forked child.
//! - [`owner`]: which process reads a ring and whether it lives, so that a fork copy of a
//!   receiver takes over a ring whose reader is gone.
//! - [`memfd`]: sealed memfd regions (`memfd_create`, `F_SEAL_*`), for shared memory and for
//!   payloads too large for a packet.
//! - [`pool`]: reusable memfds for a channel's large payloads (the sending side).
//! - [`intake`]: copying a pooled payload out on the receiving side.
//! - [`inflight`]: the shares of `RLIMIT_NOFILE` that queued control memfds and pooled payload
//!   memfds may take.
//! - [`sock_diag`]: asking the kernel whether a Unix socket still exists (`unix_diag`).
//! - [`side`]: taking in a message's side-socket descriptors before its packet is read.
//! - [`shared_map`]: the mapping of a pooled memfd both sides copy through.
//! - [`select`]: many receivers behind one epoll descriptor.
//! - [`server`]: named servers: the listening socket, `SO_PEERCRED`, and the epoll-driven
//!   acceptor thread that admits clients.
//! - `reactor` (feature `tokio`): registering a descriptor with tokio's reactor.

#![allow(unsafe_code)]

mod at_exit;
#[cfg(test)]
mod documented;
mod fork;
#[path = "../unix/frame.rs"]
mod frame;
mod held;
mod inflight;
mod intake;
mod memfd;
mod owner;
mod pool;
#[cfg(feature = "tokio")]
mod reactor;
mod receiver;
mod reserve;
mod ring;
mod select;
mod sender;
mod server;
mod shared_map;
mod side;
mod sock_diag;
mod socket;
#[path = "../unix/spawn.rs"]
mod spawn;
#[path = "../unix/sys.rs"]
mod sys;

pub(crate) use frame::INLINE_MAX;

/// Which fork generation this process is: a value recorded before a `fork` differs from the
/// one read in the child after it (one memory load; see [`fork`]).
pub(crate) fn fork_generation() -> u64 {
    fork::generation()
}

/// Whether [`fork_generation`] tells a forked child from its parent (see [`fork`]).
pub(crate) fn fork_detectable() -> bool {
    fork::detectable()
}
pub(crate) use memfd::{Encoded, OsIpcSharedMemory, PayloadWriter};
#[cfg(feature = "tokio")]
pub(crate) use reactor::register;
pub(crate) use receiver::OsIpcReceiver;
#[cfg(feature = "fuzzing")]
pub(crate) use ring::{race_arbitrary_writes, read_arbitrary_ring};
pub(crate) use select::OsIpcReceiverSet;
pub(crate) use sender::OsIpcSender;
pub(crate) use server::{current_credentials, serve, OsListener, OsServerGuard};
#[cfg(feature = "fuzzing")]
pub(crate) use socket::decode_packet;
pub(crate) use socket::{channel, OsOpaqueIpcChannel};
pub(crate) use spawn::{spawn_with_inherited, take_inherited};
