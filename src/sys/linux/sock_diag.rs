//! Asking the kernel about Unix sockets by inode (`NETLINK_SOCK_DIAG`, the `unix_diag` queries
//! that `ss -x` makes): which socket is the peer of one of ours, and whether a socket still
//! exists anywhere. Any user may ask, about any socket of its network namespace; a sandbox that
//! forbids netlink sockets makes every query an error, which callers treat as "unknown".
//!
//! [`inflight`](super::inflight) asks whether the sending end of a dropped receiver's channel
//! is gone, which frees the control memfd queued on it.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::io::Errno;
use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

/// `SOCK_DIAG_BY_FAMILY`: the message type of a query and of its answer.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `NLMSG_ERROR`: the answer's type when the query failed.
const NLMSG_ERROR: u16 = 2;
/// `NLM_F_REQUEST`.
const NLM_F_REQUEST: u16 = 1;
/// `UDIAG_SHOW_PEER`: ask for the peer's inode.
const UDIAG_SHOW_PEER: u32 = 0x4;
/// `UNIX_DIAG_PEER`: the attribute that carries it.
const UNIX_DIAG_PEER: u16 = 2;
/// The longest a query waits for the kernel's answer (which comes at once) before it fails.
const ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
/// Messages that are not the answer a query passes over before it gives up.
const MAX_OTHER_MESSAGES: usize = 16;
/// `struct nlmsghdr`.
const HEADER_LEN: usize = 16;
/// `struct unix_diag_msg`, which starts an answer's payload.
const UNIX_DIAG_MSG_LEN: usize = 16;

/// A netlink socket for `unix_diag` queries (one descriptor while it lives).
pub(super) struct SockDiag {
    socket: OwnedFd,
}

impl SockDiag {
    /// A fresh query socket.
    pub fn open() -> io::Result<SockDiag> {
        let protocol = Some(rustix::net::netlink::SOCK_DIAG);
        let socket =
            rustix::net::socket_with(AddressFamily::NETLINK, SocketType::DGRAM, SocketFlags::CLOEXEC, protocol)?;
        // The kernel answers at once; a query is never worth waiting on for long.
        rustix::net::sockopt::set_socket_timeout(&socket, rustix::net::sockopt::Timeout::Recv, Some(ANSWER_WAIT))?;
        Ok(SockDiag { socket })
    }

    /// The inode of the socket connected to `socket` (a Unix socket of this process); `None` if
    /// it has none (its peer is gone).
    pub fn peer_of(&self, socket: BorrowedFd<'_>) -> io::Result<Option<u32>> {
        let inode = u32::try_from(rustix::fs::fstat(socket)?.st_ino).map_err(io::Error::other)?;
        let mut answer = [0u8; 512];
        let Some(payload) = self.query(inode, UDIAG_SHOW_PEER, &mut answer)? else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "the kernel does not know this socket"));
        };
        Ok(attribute(&payload[UNIX_DIAG_MSG_LEN.min(payload.len())..], UNIX_DIAG_PEER)
            .and_then(|value| Some(u32::from_ne_bytes(value.get(..4)?.try_into().ok()?)))
            .filter(|&peer| peer != 0))
    }

    /// Whether a Unix socket with this inode exists (is not released). An inode the kernel
    /// gave a new socket after the old one went reads as existing: callers must take "exists"
    /// as "may exist". A kernel without `unix_diag` also answers `ENOENT`, so "gone" means gone
    /// only where a [`peer_of`](Self::peer_of) succeeded before.
    pub fn exists(&self, inode: u32) -> io::Result<bool> {
        let mut answer = [0u8; 512];
        Ok(self.query(inode, 0, &mut answer)?.is_some())
    }

    /// One exact query for `inode`: the answer's payload, or `None` if there is no such socket.
    fn query<'a>(&self, inode: u32, show: u32, answer: &'a mut [u8]) -> io::Result<Option<&'a [u8]>> {
        let mut request = [0u8; HEADER_LEN + 24];
        let len = request.len() as u32;
        request[0..4].copy_from_slice(&len.to_ne_bytes());
        request[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        request[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
        // The sequence number.
        request[8..12].copy_from_slice(&inode.to_ne_bytes());
        // `struct unix_diag_req`: family, protocol, padding, states, inode, show, cookie.
        let body = &mut request[HEADER_LEN..];
        body[0] = 1; // AF_UNIX
        body[4..8].copy_from_slice(&u32::MAX.to_ne_bytes()); // every state
        body[8..12].copy_from_slice(&inode.to_ne_bytes());
        body[12..16].copy_from_slice(&show.to_ne_bytes());
        body[16..24].copy_from_slice(&[0xff; 8]); // no cookie: any socket with this inode
        let kernel = SocketAddrNetlink::new(0, 0);
        rustix::net::sendto(self.socket.as_fd(), &request, SendFlags::empty(), &kernel)?;
        // Answers to earlier queries, or messages from other processes, are passed over; a
        // flood of them makes the query fail, not last.
        for _ in 0..MAX_OTHER_MESSAGES {
            let (_, len, from) = rustix::net::recvfrom(self.socket.as_fd(), &mut *answer, RecvFlags::empty())?;
            // Only the kernel's answers count (port 0): another process may send to this port.
            if from.and_then(|from| SocketAddrNetlink::try_from(from).ok()).is_none_or(|from| from.pid() != 0) {
                continue;
            }
            let message = &answer[..len.min(answer.len())];
            if message.len() < HEADER_LEN + 4 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "short sock_diag answer"));
            }
            let kind = u16::from_ne_bytes([message[4], message[5]]);
            let sequence = u32::from_ne_bytes([message[8], message[9], message[10], message[11]]);
            if sequence != inode {
                continue; // an answer to an earlier query that gave up
            }
            if kind == NLMSG_ERROR {
                let code = i32::from_ne_bytes([message[16], message[17], message[18], message[19]]);
                return match Errno::from_raw_os_error(code.wrapping_neg()) {
                    Errno::NOENT => Ok(None),
                    _ if code >= 0 => Err(io::Error::new(io::ErrorKind::InvalidData, "sock_diag acknowledged nothing")),
                    error => Err(error.into()),
                };
            }
            let answered = message
                .get(HEADER_LEN + 4..HEADER_LEN + 8)
                .map(|ino| u32::from_ne_bytes([ino[0], ino[1], ino[2], ino[3]]));
            if kind != SOCK_DIAG_BY_FAMILY || message.len() < HEADER_LEN + UNIX_DIAG_MSG_LEN || answered != Some(inode)
            {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "unexpected sock_diag answer"));
            }
            let end = message.len();
            return Ok(Some(&answer[HEADER_LEN..end]));
        }
        Err(io::Error::new(io::ErrorKind::InvalidData, "no sock_diag answer among the messages received"))
    }
}

/// The value of the netlink attribute of type `wanted` among `attributes` (`struct rtattr`s,
/// each padded to 4 bytes).
fn attribute(mut attributes: &[u8], wanted: u16) -> Option<&[u8]> {
    while attributes.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attributes[0], attributes[1]]));
        let kind = u16::from_ne_bytes([attributes[2], attributes[3]]);
        if len < 4 || len > attributes.len() {
            return None;
        }
        if kind == wanted {
            return Some(&attributes[4..len]);
        }
        attributes = attributes.get(len.next_multiple_of(4)..).unwrap_or(&[]);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inode(socket: &OwnedFd) -> u32 {
        rustix::fs::fstat(socket).unwrap().st_ino as u32
    }

    #[test]
    fn the_peer_of_a_socket_and_whether_it_is_released() {
        let diag = SockDiag::open().unwrap();
        let (a, b) = super::super::socket::seqpacket_pair().unwrap();
        assert_eq!(diag.peer_of(a.as_fd()).unwrap(), Some(inode(&b)));
        assert!(diag.exists(inode(&b)).unwrap());
        let copy = b.try_clone().unwrap();
        drop(b);
        assert!(diag.exists(inode(&copy)).unwrap(), "a copy keeps the socket");
        let released = inode(&copy);
        drop(copy);
        assert!(!diag.exists(released).unwrap());
        assert_eq!(diag.peer_of(a.as_fd()).unwrap(), None, "the peer is gone");
    }

    #[test]
    fn attributes_are_found_past_padding_and_broken_ones_end_the_search() {
        let mut attributes = Vec::new();
        attributes.extend_from_slice(&5u16.to_ne_bytes());
        attributes.extend_from_slice(&1u16.to_ne_bytes());
        attributes.extend_from_slice(&[9, 0, 0, 0]); // one byte of value, three of padding
        attributes.extend_from_slice(&8u16.to_ne_bytes());
        attributes.extend_from_slice(&UNIX_DIAG_PEER.to_ne_bytes());
        attributes.extend_from_slice(&77u32.to_ne_bytes());
        assert_eq!(attribute(&attributes, UNIX_DIAG_PEER), Some(&77u32.to_ne_bytes()[..]));
        assert_eq!(attribute(&attributes[..6], UNIX_DIAG_PEER), None);
        assert_eq!(attribute(&[200, 0, 2, 0], UNIX_DIAG_PEER), None);
    }
}
