//! The Windows backend: message-mode named pipes, handles placed in the receiving process with
//! `DuplicateHandle`, file mappings for shared memory and large payloads, and an I/O completion
//! port for select.
//!
//! One file per mechanism:
//! - [`frame`]: what one pipe message holds (the wire format).
//! - [`pipe`]: channels: writing whole messages, reading them with overlapped I/O.
//! - [`transfer`]: moving handles, channel ends and queued messages into another process.
//! - [`section`]: file mappings: shared memory, large payloads, and each channel's owner cell.
//! - [`select`]: many receivers behind one completion port.
//! - [`server`]: named servers: pipe instances and the acceptor thread that admits clients.
//! - [`spawn`]: a channel end handed to a child process.
//! - [`sys`]: the small helpers every file above uses (checked calls, waits, another process's
//!   handle table, a lock shared between processes).

#![allow(unsafe_code)]

mod frame;
mod pipe;
mod section;
mod select;
mod server;
mod spawn;
mod sys;
mod transfer;

pub(crate) use crate::sys::heap_writer::{Encoded, PayloadWriter};
pub(crate) use pipe::{channel, OsIpcReceiver, OsIpcSender, OsOpaqueIpcChannel, INLINE_MAX};
pub(crate) use section::OsIpcSharedMemory;
pub(crate) use select::OsIpcReceiverSet;
pub(crate) use server::{current_credentials, serve, OsListener, OsServerGuard};
pub(crate) use spawn::{spawn_with_inherited, take_inherited};
pub(crate) use sys::call_at_exit;
