//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`; not a public API).

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{fcntl_add_seals, ftruncate, memfd_create, MemfdFlags, SealFlags};
use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};

use crate::sys;

/// Decodes one packet the way a receiver does, with descriptors made from the input.
///
/// Input: one byte `n` (the number of descriptors, mod 8), `n` bytes naming a kind each,
/// then the packet. Kinds (mod 6): a sealed memfd, an unsealed memfd, a pipe, a
/// `SOCK_SEQPACKET` socket, a stream socket, a side socket carrying sealed memfds.
pub fn decode_packet(input: &[u8]) -> io::Result<()> {
    let Some((&count, rest)) = input.split_first() else { return Ok(()) };
    let count = usize::from(count % 8).min(rest.len());
    let (kinds, packet) = rest.split_at(count);
    let fds = kinds.iter().map(|&kind| descriptor(kind)).collect::<io::Result<Vec<_>>>()?;
    sys::decode_packet(packet, fds).map(drop)
}

fn memfd(len: u64, sealed: bool) -> io::Result<OwnedFd> {
    let fd = memfd_create("fuzz", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    ftruncate(&fd, len)?;
    if sealed {
        fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE)?;
    }
    Ok(fd)
}

fn pair(kind: SocketType) -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(socketpair(AddressFamily::UNIX, kind, SocketFlags::CLOEXEC, None)?)
}

fn descriptor(kind: u8) -> io::Result<OwnedFd> {
    let size = u64::from(kind / 6) * 97;
    match kind % 6 {
        0 => memfd(size, true),
        1 => memfd(size, false),
        2 => Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?.0),
        3 => Ok(pair(SocketType::SEQPACKET)?.0),
        4 => Ok(pair(SocketType::STREAM)?.0),
        _ => {
            let (tx, rx) = pair(SocketType::SEQPACKET)?;
            let regions = [memfd(8, true)?, memfd(8, true)?];
            let borrowed = [regions[0].as_fd(), regions[1].as_fd()];
            let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(2))];
            let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
            control.push(rustix::net::SendAncillaryMessage::ScmRights(&borrowed));
            rustix::net::sendmsg(&tx, &[io::IoSlice::new(&[0])], &mut control, rustix::net::SendFlags::empty())?;
            Ok(rx)
        }
    }
}

/// Reads a channel's shared-memory ring whose contents are `input` (see
/// `sys/linux/ring/mod.rs`): every entry is delivered, or the ring is refused, cleanly.
pub fn read_ring(input: &[u8]) -> io::Result<usize> {
    sys::read_arbitrary_ring(input)
}

/// Reads a channel's shared-memory ring while a hostile peer writes `input`'s writes into it at
/// the same time (see `sys/linux/ring/mod.rs`): the reader returns from every call and never
/// panics.
pub fn race_ring(input: &[u8]) -> io::Result<usize> {
    sys::race_arbitrary_writes(input)
}
