//! Taking in the descriptors of a message that sent them on a side socket (more than fit in one
//! packet) before the message's own packet is read, so that a receive at the descriptor limit
//! leaves the message queued instead of losing it (issue 23).
//!
//! The message's packet carries one descriptor, the side socket; the side socket carries the
//! message's descriptors, in packets of up to 250, all queued before the message's packet was
//! sent. While the message's packet is still queued (peeked at, with a copy of the side socket
//! installed), each side packet is peeked at with room for its descriptors — the copies installed
//! are the ones kept — and then taken with no room for them, which installs nothing. The side
//! socket has no other reader, so what is peeked at is what is taken. The descriptors gathered
//! wait in the receiver's [`SideStash`], named by the side socket's cookie, until the last one
//! is in; only then is the message's packet read.
//!
//! At the limit (fewer than `AT_THE_LIMIT` descriptors gathered for the message when the table
//! is full), the receive fails with an error that says this process is out of descriptors, and
//! what was gathered stays in the stash for the receive that comes once descriptors are free.
//! With more gathered than that, the message carries more descriptors than this process can take
//! in: it is refused as lost, as a packet with more descriptors than the room is, so that no
//! sender can wedge the channel.
//!
//! Only a process that may lack the room takes a message in this way ([`may_lack_room`]): one
//! with room to spare reads the packet first and the side socket after, as before. Two `fork`
//! copies of a receiver that read at once may both peek at one message's packet, and taking its
//! side socket in before the packet is read would let the one that does not get the packet
//! consume the other's descriptors.

use std::io::{self, IoSliceMut};
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::net::sockopt::socket_cookie;
use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvFlags};

use super::frame::{FrameHeader, HANDLES_ON_SIDE_SOCKET, HEADER_LEN};
use super::receiver::KIND_RING;
use super::socket::{read_one_holding, AT_THE_LIMIT};
use super::sys::retry_on_intr;
use crate::sys::{LimitsCell, OutOfDescriptors};

/// The descriptors gathered from one message's side socket while its packet waits (boxed: a
/// receiver rarely has any).
#[derive(Debug, Default)]
pub(super) struct SideStash(Option<Box<Gathered>>);

#[derive(Debug)]
struct Gathered {
    /// The side socket's cookie: which message the descriptors belong to.
    cookie: u64,
    fds: Vec<OwnedFd>,
}

/// What became of a side socket's descriptors.
pub(super) enum SideIntake {
    /// Every one is in: the message's packet may be read.
    Whole(Vec<OwnedFd>),
    /// This process is at its descriptor limit: the message stays queued, what was gathered
    /// stays in the stash.
    AtTheLimit(io::Error),
    /// The message cannot be taken in: it is read and refused with this reason.
    Refused(&'static str),
}

/// What a message whose packet begins with `packet` sends on a side socket, if it does (`None`
/// for any other packet, or one too broken to say: its decoding refuses it): its channels and
/// regions (what `ReceiveLimits` counts), and every descriptor (with rings' control memfds).
pub(super) fn side_descriptors(packet: &[u8]) -> Option<(usize, usize)> {
    let header = FrameHeader::decode(packet).ok().filter(|header| header.has(HANDLES_ON_SIDE_SOCKET))?;
    let kinds = packet.get(HEADER_LEN..HEADER_LEN + header.channels as usize)?;
    let rings = kinds.iter().filter(|&&kind| kind == KIND_RING).count();
    let handles = header.channels as usize + header.shared_memory as usize;
    Some((handles, handles + rings))
}

/// Whether this process may have fewer than `needed` descriptors free (with `AT_THE_LIMIT` to
/// spare): `RLIMIT_NOFILE` less the descriptors open (`/proc/self/fd`). Where that cannot be
/// read, `false`: the message is read as before.
pub(super) fn may_lack_room(needed: usize) -> bool {
    let Some(limit) = rustix::process::getrlimit(rustix::process::Resource::Nofile).current else { return false };
    let Ok(open) = std::fs::read_dir("/proc/self/fd").map(Iterator::count) else { return false };
    (open as u64).saturating_add((needed + AT_THE_LIMIT) as u64) > limit
}

impl SideStash {
    /// Gathers the `expected` descriptors that wait on `side` (a copy of the side socket the
    /// peeked packet carried) for a message of `handles` channels and regions, within `limits`.
    /// `installed` descriptors of the message's packet (the peek's copies: the side socket, a
    /// pooled payload's memfd) are held meanwhile, and count towards the room found, as a
    /// one-packet message's do.
    pub fn take_in(
        &mut self,
        side: BorrowedFd<'_>,
        (handles, expected): (usize, usize),
        installed: usize,
        limits: &LimitsCell,
    ) -> SideIntake {
        if limits.check(0, handles).is_err() {
            // The decoding says which limit; nothing is gathered for it.
            self.forget();
            return SideIntake::Whole(Vec::new());
        }
        let Ok(cookie) = socket_cookie(side) else {
            self.forget();
            return SideIntake::Refused("a side socket that is not a socket");
        };
        let gathered = match &mut self.0 {
            Some(gathered) if gathered.cookie == cookie => gathered,
            other => other.insert(Box::new(Gathered { cookie, fds: Vec::new() })),
        };
        while gathered.fds.len() < expected {
            let mut byte = [0u8; 1];
            let peek = RecvFlags::PEEK | RecvFlags::DONTWAIT;
            match read_one_holding(side, &mut byte, peek, installed + gathered.fds.len()) {
                Ok(Some(packet)) if packet.refused.is_none() && !packet.fds.is_empty() => {
                    if take_without_descriptors(side).is_err() {
                        self.forget();
                        return SideIntake::Refused("an unreadable side socket");
                    }
                    gathered.fds.extend(packet.fds);
                }
                Ok(Some(packet)) if packet.refused.is_some() => {
                    self.forget();
                    return SideIntake::Refused(packet.refused.unwrap_or("side socket refused"));
                }
                Err(error) if OutOfDescriptors::is(&error) => return SideIntake::AtTheLimit(error),
                _ => {
                    self.forget();
                    return SideIntake::Refused("side socket ended early");
                }
            }
        }
        let whole = std::mem::take(&mut gathered.fds);
        self.forget();
        SideIntake::Whole(whole)
    }

    /// Whether descriptors of a message kept at the limit wait here (its next receive goes on
    /// gathering, whatever the room).
    pub fn is_gathering(&self) -> bool {
        self.0.is_some()
    }

    /// Closes what was gathered (the message it belonged to is gone, or refused).
    pub fn forget(&mut self) {
        self.0 = None;
    }
}

/// Takes the packet at the front of `side` with no room for its descriptors: it installs none
/// (the copies a peek just installed are the ones kept).
fn take_without_descriptors(side: BorrowedFd<'_>) -> io::Result<()> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut control = RecvAncillaryBuffer::default();
    retry_on_intr(|| recvmsg(side, &mut iov, &mut control, RecvFlags::DONTWAIT)).map(|_| ())
}

#[cfg(test)]
mod tests {
    use std::io::IoSlice;
    use std::os::fd::{AsFd, OwnedFd};

    use rustix::net::{socketpair, AddressFamily, SendFlags, SocketFlags, SocketType};

    use super::super::frame::{FrameHeader, HANDLES_ON_SIDE_SOCKET};
    use super::super::socket::{channel, send_packet};
    use crate::sys::{RecvError, Wait};

    /// Review of 7fd193e: hostile side sockets (stream, datagram, packets without descriptors,
    /// more or fewer descriptors than the header claims, a side socket shared by two messages,
    /// one whose writer stays open) each refuse their own message, without a hang or a panic,
    /// and the message behind each comes.
    #[test]
    fn hostile_side_sockets_refuse_their_message_and_the_next_comes() {
        let (tx, rx) = channel().unwrap();
        let file = || -> OwnedFd { std::fs::File::open("/proc/self/stat").unwrap().into() };
        let send_side = |side: &OwnedFd, claimed: u32| {
            let header = FrameHeader {
                flags: HANDLES_ON_SIDE_SOCKET,
                channels: 0,
                shared_memory: claimed,
                payload_len: 0,
                ticket: 0,
            }
            .encode();
            send_packet(tx.fd.as_fd(), &[IoSlice::new(&header)], &[side.as_fd()], SendFlags::empty()).unwrap();
        };
        let fill = |writer: &OwnedFd, packets: &[usize]| {
            let f = file();
            for &n in packets {
                let fds = vec![f.as_fd(); n];
                send_packet(writer.as_fd(), &[IoSlice::new(&[0])], &fds, SendFlags::empty()).unwrap();
            }
        };
        let mut writers = Vec::new();
        for (kind, packets, claimed) in [
            (SocketType::STREAM, vec![3, 3], 6),
            (SocketType::DGRAM, vec![3, 3], 6),
            (SocketType::SEQPACKET, vec![0, 0], 6),
            (SocketType::SEQPACKET, vec![250, 250], 260),
            (SocketType::SEQPACKET, vec![250], 260),
            (SocketType::SEQPACKET, vec![], 260),
        ] {
            let (reader, writer) = socketpair(AddressFamily::UNIX, kind, SocketFlags::CLOEXEC, None).unwrap();
            fill(&writer, &packets);
            send_side(&reader, claimed);
            assert!(tx.send(b"next", vec![], vec![], Wait::Blocking).is_ok());
            match rx.recv(Wait::Blocking) {
                Err(RecvError::Io(error)) => {
                    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData, "{kind:?} {packets:?}")
                }
                Ok(message) => {
                    // Only a stream socket may deliver (its bytes merge): what it delivers is whole.
                    assert!(kind == SocketType::STREAM && message.shared_memory.len() == 6, "{kind:?}: {message:?}");
                }
                Err(other) => panic!("{kind:?} {packets:?}: {other:?}"),
            }
            assert_eq!(rx.recv(Wait::Blocking).unwrap().data, b"next", "{kind:?} {packets:?}");
            writers.push(writer);
        }
        // One side socket in two messages, each claiming all of it: the first takes it, the
        // second finds it empty.
        let (reader, writer) =
            socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None).unwrap();
        fill(&writer, &[250, 10]);
        send_side(&reader, 260);
        send_side(&reader, 260);
        assert!(tx.send(b"next", vec![], vec![], Wait::Blocking).is_ok());
        assert!(matches!(rx.recv(Wait::Blocking), Err(RecvError::Io(_))), "regions are not sealed memfds");
        assert!(matches!(rx.recv(Wait::Blocking), Err(RecvError::Io(_))));
        assert_eq!(rx.recv(Wait::Blocking).unwrap().data, b"next");
    }
}
