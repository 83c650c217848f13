//! Channels: one `SOCK_SEQPACKET` socket pair per channel, one packet per message on the socket.
//!
//! A packet is atomic in the kernel, so a message is delivered whole or not at all, even when its
//! sender is killed mid-send, and several senders (clones, in any process) never interleave. The
//! packet layout is described in [`super::frame`]. When the last copy of the sending socket is
//! closed, the receiver reads end-of-file: that is `Disconnected`. A sender that is in flight
//! inside another message is a descriptor held by the kernel, so it keeps the channel open.
//!
//! This file holds what both ends share: making a channel, sending and receiving one packet,
//! decoding it, and channel ends in transit. Small messages mostly bypass the socket through the
//! channel's ring ([`super::ring`]); the ends themselves are in [`super::sender`] and
//! [`super::receiver`].

use crate::sys::ForkLock;
use std::fmt;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use rustix::cmsg_space;
use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use rustix::net::{
    recvmsg, sendmsg, socketpair, sockopt::socket_type, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage,
    RecvFlags, ReturnFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};

use super::frame::{
    FrameHeader, HANDLES_ON_SIDE_SOCKET, HEADER_LEN, MAX_FDS_PER_PACKET, MAX_FDS_RECEIVED, PAYLOAD_IN_POOLED_MEMFD,
    PLACE_HOLDER,
};
use super::intake::{take_payload, PeerMaps};
use super::receiver::{OsIpcReceiver, RingNews, KIND_NEVER, KIND_RING};
use super::sender::OsIpcSender;
use super::side::{may_lack_room, side_descriptors, SideIntake, SideStash};
use super::sys::{invalid_data, retry_on_intr, timespec};
use crate::sys::{LimitExceeded, LimitsCell, OsIpcChannel, OsIpcMessage, OsIpcSharedMemory, OutOfDescriptors};

/// Creates a connected, close-on-exec `SOCK_SEQPACKET` socket pair.
pub(super) fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    retry_on_intr(|| socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None))
}

/// A new channel: the sending and the receiving end (its ring comes once it carries traffic).
pub(crate) fn channel() -> io::Result<(OsIpcSender, OsIpcReceiver)> {
    let (tx, rx) = seqpacket_pair()?;
    Ok((OsIpcSender::from_fd(tx), OsIpcReceiver::new(rx)))
}

/// Writes `handles` to a fresh socket pair, in packets of at most [`MAX_FDS_PER_PACKET`], and
/// returns the receiving end to send along with the message.
pub(super) fn send_on_side_socket(handles: &[BorrowedFd<'_>]) -> io::Result<OwnedFd> {
    let (tx, rx) = seqpacket_pair()?;
    for chunk in handles.chunks(MAX_FDS_PER_PACKET) {
        send_packet(tx.as_fd(), &[IoSlice::new(&[0])], chunk, SendFlags::DONTWAIT).map_err(|error| {
            if error.kind() == io::ErrorKind::WouldBlock {
                io::Error::new(io::ErrorKind::InvalidInput, "too many handles in one message")
            } else {
                error
            }
        })?;
    }
    Ok(rx)
}

/// Sends one packet with `fds` attached, retrying on `EINTR`, never raising `SIGPIPE`.
pub(super) fn send_packet(
    socket: BorrowedFd<'_>,
    iov: &[IoSlice<'_>],
    fds: &[BorrowedFd<'_>],
    flags: SendFlags,
) -> io::Result<()> {
    let mut space = [MaybeUninit::<u8>::uninit(); cmsg_space!(ScmRights(MAX_FDS_PER_PACKET))];
    let mut control = SendAncillaryBuffer::new(if fds.is_empty() { &mut [] } else { &mut space });
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many descriptors in one packet"));
    }
    let sent = retry_on_intr(|| sendmsg(socket, iov, &mut control, flags | SendFlags::NOSIGNAL)).map_err(|error| {
        // A receiver that closed with messages unread resets the connection instead: the same
        // thing to a sender.
        if error.kind() == io::ErrorKind::ConnectionReset {
            io::Error::new(io::ErrorKind::BrokenPipe, "the receiver is gone")
        } else if error.raw_os_error() == Some(Errno::TOOMANYREFS.raw_os_error()) {
            too_many_in_flight()
        } else {
            error
        }
    })?;
    let expected: usize = iov.iter().map(|slice| slice.len()).sum();
    if sent != expected {
        // A SOCK_SEQPACKET send is all or nothing; anything else is a kernel we do not understand.
        return Err(io::Error::other("packet sent partially"));
    }
    Ok(())
}

/// What a descriptor-passing send that the kernel refused with `ETOOMANYREFS` means: the
/// descriptors that processes of this user have sent and nobody has received yet, in every
/// `AF_UNIX` socket of the system, outnumber this process's `RLIMIT_NOFILE` (root and
/// `CAP_SYS_RESOURCE` are exempt). crossproc's own share of them is bounded (`inflight.rs`).
fn too_many_in_flight() -> io::Error {
    io::Error::other(
        "descriptors in flight over the limit (ETOOMANYREFS): this user's processes have more \
         descriptors sent through Unix sockets and not yet received than this process's \
         RLIMIT_NOFILE allows; receive or close what holds them, or raise the limit",
    )
}

/// The buffer every receive reads its packet into, placed so that the payload (after the
/// header) starts in the middle of a page. On some CPUs (AMD EPYC here) a `rep movsb` copy, which
/// both the kernel and glibc's `memcpy` use for a few KiB and more, runs about 7 times slower when
/// the destination lies 1 to 31 bytes past the source modulo 4 KiB. A large packet's body
/// arrives from page-aligned kernel pages, and a payload copied out lands in a new `Vec` that
/// glibc places 16 bytes into a page; at mid-page the payload is far from both (64 KiB packet
/// received: 35 µs into a buffer 16 bytes into a page, 5 µs here).
pub(super) struct ReceiveBuffer {
    bytes: Vec<u8>,
    start: usize,
}

impl ReceiveBuffer {
    const PAGE: usize = 4096;
    /// Where the payload starts within a page.
    const PAYLOAD_IN_PAGE: usize = 2048;

    pub fn new(len: usize) -> Self {
        let bytes = vec![0; len + Self::PAGE];
        let at = bytes.as_ptr() as usize;
        let wanted = Self::PAYLOAD_IN_PAGE - HEADER_LEN;
        let start = (wanted + Self::PAGE - at % Self::PAGE) % Self::PAGE;
        ReceiveBuffer { bytes, start }
    }

    pub fn get(&mut self) -> &mut [u8] {
        let len = self.bytes.len() - Self::PAGE;
        &mut self.bytes[self.start..self.start + len]
    }
}

/// One packet read from a channel socket.
pub(super) struct Packet {
    /// Its length; its bytes are at the start of the buffer it was read into.
    pub len: usize,
    pub fds: Vec<OwnedFd>,
    /// Why it was refused as it was read (its descriptors were truncated, it was longer than
    /// the buffer, it was empty): consumed all the same, unless peeked at. Its header (and so
    /// its ticket) may still be in the buffer.
    pub refused: Option<&'static str>,
    /// The descriptors of a message that sent them on a side socket, taken in before its packet
    /// was read (see [`super::side`]); `fds` then holds nothing the message needs.
    pub side: Option<Vec<OwnedFd>>,
}

impl Packet {
    /// Its length and descriptors, or the error it was refused with.
    pub fn accepted(self) -> io::Result<(usize, Vec<OwnedFd>)> {
        self.accepted_with_side().map(|(len, fds, _)| (len, fds))
    }

    /// Its length, descriptors and side-socket descriptors taken in already, or the error it
    /// was refused with.
    pub fn accepted_with_side(self) -> io::Result<(usize, Vec<OwnedFd>, Option<Vec<OwnedFd>>)> {
        match self.refused {
            // This process's own limits, not the peer's doing: said without blaming the peer.
            Some(reason) if reason.starts_with(LOST) => Err(io::Error::new(io::ErrorKind::InvalidData, reason)),
            Some(reason) => Err(invalid_data(reason)),
            None => Ok((self.len, self.fds, self.side)),
        }
    }
}

/// How a refusal that is this process's doing (its descriptor table, another process reading
/// the same receiver) begins; other refusals are the peer's (a malformed message).
const LOST: &str = "a message was lost";

/// Receives one packet into `buffer`; `None` at end-of-file. Descriptors of a refused packet
/// are closed before this returns.
///
/// A read of nothing is end-of-file, an empty packet, or a read that found the queue empty
/// just before a last packet and the hang-up came. No crossproc packet is empty (each has a
/// header), so an empty one that comes while a sender lives is a peer's forgery, refused. Once
/// every sender hung up, the queue only shrinks: the read is taken again while packets with
/// bytes are queued, and the end is where none is.
pub(super) fn recv_packet(socket: BorrowedFd<'_>, buffer: &mut [u8], flags: RecvFlags) -> io::Result<Option<Packet>> {
    recv_packet_looked_at(socket, buffer, flags, None, None)
}

/// [`recv_packet`], for a caller that may have taken the first look at the packet already (see
/// [`wait_and_look`]; it knows the packet it saw is still the first), and that gathers a
/// message's side-socket descriptors, within its limits, before the message's packet is read
/// (see [`super::side`]).
pub(super) fn recv_packet_looked_at(
    socket: BorrowedFd<'_>,
    buffer: &mut [u8],
    flags: RecvFlags,
    mut look: Option<FirstLook>,
    mut side: Option<(&mut SideStash, &LimitsCell)>,
) -> io::Result<Option<Packet>> {
    // Bounded by the queue's packet limit (`net.unix.max_dgram_qlen`, 512 by default) and then
    // some; beyond it the empty packet is refused, and the next read goes on.
    const MAX_EMPTY_READS: usize = 4096;
    for _ in 0..MAX_EMPTY_READS {
        let intake = side.as_mut().map(|(stash, limits)| (&mut **stash, *limits));
        let received = recv_one(socket, buffer, flags, look.take(), intake)?;
        if let (Some(packet), Some((stash, _))) = (&received, side.as_mut()) {
            // The queue moved past a message kept at the limit (a `fork` copy took it): what
            // was gathered for it is closed.
            if packet.side.is_none() && stash.is_gathering() && !flags.contains(RecvFlags::PEEK) {
                stash.forget();
            }
        }
        let packet = match received {
            Some(packet) if packet.len == 0 && packet.fds.is_empty() && packet.refused.is_none() => packet,
            other => return Ok(other),
        };
        if !read_side_ended(socket)? {
            return Ok(Some(Packet { refused: Some("an empty packet"), ..packet }));
        }
        // The queued bytes of every packet, which empty ones add nothing to.
        if rustix::io::ioctl_fionread(socket)? == 0 {
            return Ok(None);
        }
        if flags.contains(RecvFlags::PEEK) {
            // A peek would find the same empty packet again: the read that takes it says so.
            return Ok(Some(Packet { refused: Some("an empty packet"), ..packet }));
        }
    }
    Ok(Some(Packet { len: 0, fds: Vec::new(), refused: Some("an empty packet"), side: None }))
}

/// One packet past a connection reset: `None` when the peer hung up with the queue empty.
///
/// A first look (a peek with no room for descriptors, which installs none) tells whether the
/// packet carries descriptors. One without is read as usual. One with is peeked at again with
/// a control buffer, which installs copies of its descriptors while the packet stays queued with
/// its own: when this process is at its limit, that is an error (`OutOfDescriptors`) and the
/// packet stays for a receive once descriptors are free (see [`read_one`] for a packet larger
/// than the room). Read in one step, it would have been consumed with the descriptors the
/// kernel could not install dropped: a message lost to this process's own limit. Then it is
/// read as usual. Should that read find no room for its own copies (the peek took the last),
/// the peek's copies stand in for them, if the packet read is the one peeked at (the same
/// bytes).
///
/// The peek and the read of a packet with descriptors take [`DESCRIPTOR_INTAKE`]: the room a
/// peek finds must not depend on what other threads' receives hold for a moment (each installs
/// a packet's descriptors twice), else another channel's traffic would decide whether an honest
/// message is kept or refused.
///
/// The caller serialises this among the readers of this process (`OsIpcReceiver::
/// recv_ticketed`), and `flags` must not wait unless they peek. A `fork` copy of the receiver
/// that reads the same socket may take the packet between the peek and the read; the read
/// then delivers the next packet, as it always did.
fn recv_one(
    socket: BorrowedFd<'_>,
    buffer: &mut [u8],
    flags: RecvFlags,
    look: Option<FirstLook>,
    side: Option<(&mut SideStash, &LimitsCell)>,
) -> io::Result<Option<Packet>> {
    if flags.contains(RecvFlags::PEEK) {
        return read_one(socket, buffer, flags);
    }
    match look.unwrap_or_else(|| first_look(socket)) {
        // A non-blocking read would find the queue empty too.
        FirstLook::Empty if flags.contains(RecvFlags::DONTWAIT) => return Err(Errno::AGAIN.into()),
        FirstLook::Descriptors => {}
        _ => return read_one(socket, buffer, flags),
    }
    let _intake = descriptor_intake();
    PEEK_BUFFER.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        scratch.resize(buffer.len(), 0);
        // The peek copies only the start of a long packet: a long one with descriptors (rare)
        // is peeked at again, whole. A peek whose probe found room after all (another thread
        // closed a descriptor meanwhile) is taken once more before the packet is refused.
        let short = buffer.len().min(PEEK_BYTES);
        let peek = RecvFlags::PEEK | RecvFlags::DONTWAIT;
        let mut peeked = None;
        for _ in 0..2 {
            drop(peeked.take());
            let Some(mut look) = read_one(socket, &mut scratch[..short], flags | peek)? else { return Ok(None) };
            if look.fds.is_empty() && look.refused.is_none() {
                // Not the packet the first look saw (a fork copy took that one): no descriptors.
                return read_one(socket, buffer, flags);
            }
            if look.len == short && short < buffer.len() {
                drop(look);
                let Some(whole) = read_one(socket, &mut scratch[..], flags | peek)? else { return Ok(None) };
                look = whole;
            }
            let settled = look.refused != Some(MAY_NOT_RECEIVE);
            peeked = Some(look);
            if settled {
                break;
            }
        }
        let peeked = peeked.expect("peeked at least once");
        // A message whose descriptors wait on a side socket: they are taken in first, while its
        // packet stays queued.
        let side = match side {
            // The side socket is the packet's last descriptor (after a pooled payload's memfd).
            Some((stash, limits)) if peeked.refused.is_none() && !peeked.fds.is_empty() => {
                let side = peeked.fds[peeked.fds.len() - 1].as_fd();
                side_descriptors(&scratch[..peeked.len.min(scratch.len())])
                    .filter(|&(_, expected)| stash.is_gathering() || may_lack_room(expected))
                    .map(|counts| (stash.take_in(side, counts, peeked.fds.len(), limits), stash))
            }
            _ => None,
        };
        let side = match side {
            // The message stays queued, and what was gathered in the stash.
            Some((SideIntake::AtTheLimit(error), _)) => return Err(error),
            other => other,
        };
        let Some(read) = read_one(socket, buffer, flags | RecvFlags::DONTWAIT)? else { return Ok(None) };
        let same = read.len == peeked.len && buffer[..read.len] == scratch[..read.len];
        match side {
            // The packet read is the one peeked at: it comes with the side socket's descriptors
            // (the copy of the side socket it installed, if any, is closed).
            Some((SideIntake::Whole(gathered), _)) if same => {
                // The packet's own descriptors but the side socket, from the read (or, where it
                // found no room for them, from the peek).
                let mut own = if read.refused.is_some() { peeked.fds } else { read.fds };
                own.pop();
                return Ok(Some(Packet { len: read.len, fds: own, refused: None, side: Some(gathered) }));
            }
            Some((SideIntake::Refused(reason), _)) if same => {
                return Ok(Some(Packet { refused: Some(reason), ..read }))
            }
            // A `fork` copy of the receiver took the packet meanwhile: what was gathered is not
            // this one's.
            Some((_, stash)) => stash.forget(),
            None => {}
        }
        if read.refused.is_some() && peeked.refused.is_none() && same {
            return Ok(Some(Packet { refused: None, ..peeked }));
        }
        if read.refused.is_some() && !same {
            // The copies of the packet peeked at took the room this one needed (review 3, F3).
            let reason = "a message was lost: another process receiving on this channel (a copy of this \
                          receiver made by fork) took the message this receive had looked at, and the \
                          next one's descriptors found no room (out of descriptors)";
            return Ok(Some(Packet { refused: Some(reason), ..read }));
        }
        Ok(Some(read))
    })
}

/// What a first look at the next packet on `socket` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FirstLook {
    /// No packet is queued (`EAGAIN`).
    Empty,
    /// The packet carries descriptors.
    Descriptors,
    /// A packet without descriptors, the end, or a look that failed: the read that follows
    /// says which.
    Other,
}

/// Waits until a packet is queued on `socket`, or nothing more can come, and takes the first
/// look at it (see [`recv_one`]): one system call where a poll and the look would be two. The
/// look holds no lock, so another reader may take the packet before this one reads: the
/// caller uses the look only if it knows no read happened meanwhile. Like a poll, a look that
/// waits consumes no packet; a connection reset it reports is the read's to look past.
/// `None` when the look saw no packet (it reported a connection reset).
pub(super) fn wait_and_look(socket: BorrowedFd<'_>) -> io::Result<Option<FirstLook>> {
    let mut iov = [IoSliceMut::new(&mut [])];
    let mut control = RecvAncillaryBuffer::default();
    match retry_on_intr(|| recvmsg(socket, &mut iov, &mut control, RecvFlags::PEEK)) {
        Ok(received) if received.flags.contains(ReturnFlags::CTRUNC) => Ok(Some(FirstLook::Descriptors)),
        Ok(_) => Ok(Some(FirstLook::Other)),
        Err(error) if error.kind() == io::ErrorKind::ConnectionReset => Ok(None),
        Err(error) => Err(error),
    }
}

/// Whether the next packet on `socket` carries descriptors, by a peek with no room for them
/// (which installs none: the kernel says `MSG_CTRUNC`), or whether there is none.
fn first_look(socket: BorrowedFd<'_>) -> FirstLook {
    let mut iov = [IoSliceMut::new(&mut [])];
    let mut control = RecvAncillaryBuffer::default();
    let flags = RecvFlags::PEEK | RecvFlags::DONTWAIT;
    match retry_on_intr(|| recvmsg(socket, &mut iov, &mut control, flags)) {
        Ok(received) if received.flags.contains(ReturnFlags::CTRUNC) => FirstLook::Descriptors,
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => FirstLook::Empty,
        _ => FirstLook::Other,
    }
}

/// Held by a receive while it peeks at and reads a packet with descriptors (see
/// [`recv_one`]): a few system calls, never a wait.
static DESCRIPTOR_INTAKE: ForkLock<()> = ForkLock::new(());

/// A turn at [`DESCRIPTOR_INTAKE`]. The turn only makes the room a peek finds exact: a
/// receive goes on without it (`None`) rather than wait for ever in a child forked while
/// another thread held it (see [`ForkLock`]).
fn descriptor_intake() -> Option<MutexGuard<'static, ()>> {
    DESCRIPTOR_INTAKE.lock()
}

/// Bytes [`recv_one`] peeks at first.
const PEEK_BYTES: usize = 4096;

thread_local! {
    /// Where [`recv_one`] peeks.
    static PEEK_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Why a packet whose descriptors were truncated with room to spare is refused.
const MAY_NOT_RECEIVE: &str = "descriptors truncated (the packet carries descriptors this process may not receive)";

/// A process with fewer descriptors free than this is at its descriptor limit: a packet whose
/// descriptors do not fit then stays queued (the error says to free some). With more free, a
/// packet that still does not fit carries more than the process can take in, and is refused.
pub(super) const AT_THE_LIMIT: usize = 16;

/// One `recvmsg` with a control buffer, past a connection reset. A packet with descriptors
/// that finds this process at its limit (fewer than [`AT_THE_LIMIT`] of them installed) is,
/// when peeked at, `Err(EMFILE)` (or `ENFILE`) and still queued; one that finds more room, but
/// not enough, or that is read, is refused (read, its descriptors are gone).
fn read_one(socket: BorrowedFd<'_>, buffer: &mut [u8], flags: RecvFlags) -> io::Result<Option<Packet>> {
    read_one_holding(socket, buffer, flags, 0)
}

/// [`read_one`] for a receive that holds `held` descriptors of the same message already (a
/// side socket's, see [`super::side`]): they count towards the room it found.
pub(super) fn read_one_holding(
    socket: BorrowedFd<'_>,
    buffer: &mut [u8],
    flags: RecvFlags,
    held: usize,
) -> io::Result<Option<Packet>> {
    let mut space = [MaybeUninit::<u8>::uninit(); cmsg_space!(ScmRights(MAX_FDS_RECEIVED))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [IoSliceMut::new(buffer)];
    let receive = || retry_on_intr(|| recvmsg(socket, &mut iov, &mut control, flags | RecvFlags::CMSG_CLOEXEC));
    let Some(received) = past_reset(receive)? else { return Ok(None) };
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received_fds) = message {
            fds.extend(received_fds);
        }
    }
    let refused = if received.flags.contains(ReturnFlags::CTRUNC) {
        // The kernel installed fewer descriptors than the packet carries. With room for every
        // one a packet can carry (`SCM_MAX_FD`), that is this process's descriptor table (or
        // the system's) being full — unless a descriptor was refused for another reason (a
        // security module), which one free slot now, while the copies are still held, tells.
        //
        // Only a process at its limit keeps the packet queued: a peek that installed
        // `AT_THE_LIMIT` or more of its descriptors found room, just less than the packet
        // carries, and waiting for more would let one sender (a hostile one sends 253) wedge the
        // channel for good. Such a packet is read and lost, said so.
        match out_of_descriptors(socket) {
            Some(full) if flags.contains(RecvFlags::PEEK) && held + fds.len() < AT_THE_LIMIT => return Err(full),
            Some(_) => Some(
                "a message was lost: it carried more descriptors than this process had free (out of \
                 descriptors: EMFILE or ENFILE)",
            ),
            None => Some(MAY_NOT_RECEIVE),
        }
    } else if received.flags.contains(ReturnFlags::TRUNC) {
        Some("packet larger than the largest inline message")
    } else {
        None
    };
    Ok(Some(Packet { len: received.bytes, fds, refused, side: None }))
}

/// `Some(EMFILE or ENFILE)` when this process can open no more descriptors (the probe, a copy
/// of `socket` in the lowest free slot, is closed at once).
fn out_of_descriptors(socket: BorrowedFd<'_>) -> Option<io::Error> {
    match rustix::io::fcntl_dupfd_cloexec(socket, 0) {
        Ok(_closed_at_once) => None,
        Err(error @ (Errno::MFILE | Errno::NFILE)) => {
            let errno = if error == Errno::MFILE { "EMFILE" } else { "ENFILE" };
            Some(io::Error::new(io::Error::from(error).kind(), OutOfDescriptors { errno }))
        }
        Err(_) => None,
    }
}

/// After a peek of nothing: whether that was the end (every sender hung up, and no packet with
/// bytes is queued), not an empty packet (which the read then refuses) or a packet that came
/// just before the hang-up.
pub(super) fn is_the_end(socket: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(read_side_ended(socket)? && rustix::io::ioctl_fionread(socket)? == 0)
}

/// Whether the other end of `socket` is closed: every copy of it (a poll that asks for no
/// event reports a hang-up; it does not wait).
pub(super) fn hung_up(socket: BorrowedFd<'_>) -> io::Result<bool> {
    polled(socket, PollFlags::empty())
}

/// Whether nothing more can ever arrive on `socket`: the other end is closed, or this
/// direction was shut down (`shutdown` by any holder of either end; no send can succeed then
/// either, so the queue only shrinks).
pub(super) fn read_side_ended(socket: BorrowedFd<'_>) -> io::Result<bool> {
    polled(socket, PollFlags::RDHUP)
}

/// Whether a poll for `events` on `socket` (with hang-ups, which are always reported) reports
/// anything, without waiting.
fn polled(socket: BorrowedFd<'_>, events: PollFlags) -> io::Result<bool> {
    let mut fds = [PollFd::new(&socket, events)];
    match rustix::event::poll(&mut fds, Some(&timespec(Duration::ZERO))) {
        Ok(0) | Err(Errno::INTR) => Ok(false),
        Ok(_) => Ok(true),
        Err(error) => Err(error.into()),
    }
}

/// Runs a receive (or a peek) on a channel socket, looking once more past a connection reset.
///
/// A peer that closes while a packet waits unread in *its* direction (the ring's control
/// packet, which senders only peek at; the "no ring" packet) makes the kernel report
/// `ECONNRESET` to this end once, and ahead of the packets still queued here: the socket's
/// error is looked at before its queue. The reset is consumed by the read that reports it, so
/// the next read delivers what the peer sent before it closed, then end-of-file. Taking the
/// reset for the end lost the last messages of a channel (issue 26). Should a reset come twice
/// (no kernel does), the second is the end.
pub(super) fn past_reset<T>(mut receive: impl FnMut() -> io::Result<T>) -> io::Result<Option<T>> {
    for _ in 0..2 {
        match receive() {
            Err(error) if error.kind() == io::ErrorKind::ConnectionReset => continue,
            result => return result.map(Some),
        }
    }
    Ok(None)
}

/// Turns one received packet and its descriptors into a message (`None` for a place holder)
/// and its ticket (see [`super::ring`]), validating everything; the payload goes into `reuse`'s
/// allocation (taking it) where that can hold it.
pub(super) fn decode_message(
    packet: &[u8],
    fds: Vec<OwnedFd>,
    side: Option<Vec<OwnedFd>>,
    limits: &LimitsCell,
    peer_maps: &PeerMaps,
    reuse: &mut Vec<u8>,
) -> io::Result<(Option<OsIpcMessage>, u64)> {
    let header = FrameHeader::decode(packet)?;
    if header.has(PLACE_HOLDER) {
        if header.flags != PLACE_HOLDER
            || header.channels != 0
            || header.shared_memory != 0
            || header.payload_len != 0
            || packet.len() != HEADER_LEN
            || !fds.is_empty()
        {
            return Err(invalid_data("a place holder that carries something"));
        }
        return Ok((None, header.ticket));
    }
    let handle_count = header.channels as usize + header.shared_memory as usize;
    limits.check(header.payload_len, handle_count).map_err(LimitExceeded::into_io)?;
    // One byte per channel end, what a receiver brings of its ring (`RingNews::wire_kind`):
    // `KIND_RING` when its ring's control memfd follows it.
    let kinds = packet
        .get(HEADER_LEN..HEADER_LEN + header.channels as usize)
        .ok_or_else(|| invalid_data("packet shorter than its channel list"))?;
    if kinds.iter().any(|&kind| kind > KIND_NEVER) {
        return Err(invalid_data("unknown channel kind"));
    }
    let inline = &packet[HEADER_LEN + kinds.len()..];
    let mut fds = fds.into_iter();
    let data = if header.has(PAYLOAD_IN_POOLED_MEMFD) {
        // Any bytes after the channel list are the sender's buffer claim (see `frame.rs`).
        let memfd = fds.next().ok_or_else(|| invalid_data("payload memfd missing"))?;
        let len = usize::try_from(header.payload_len).map_err(|_| invalid_data("payload too large"))?;
        take_payload(memfd.as_fd(), len, peer_maps, std::mem::take(reuse))?
    } else {
        if inline.len() as u64 != header.payload_len {
            return Err(invalid_data("payload length does not match the packet"));
        }
        let mut data = std::mem::take(reuse);
        data.clear();
        data.extend_from_slice(inline);
        data
    };
    let expected = handle_count + kinds.iter().filter(|&&kind| kind == KIND_RING).count();
    let handles: Vec<OwnedFd> = if let Some(side) = side {
        // Taken in before the packet was read (`super::side`).
        if fds.len() != 0 || !header.has(HANDLES_ON_SIDE_SOCKET) {
            return Err(invalid_data("descriptors beside a side socket"));
        }
        side
    } else if header.has(HANDLES_ON_SIDE_SOCKET) {
        let side = fds.next().ok_or_else(|| invalid_data("side socket missing"))?;
        if fds.len() != 0 {
            return Err(invalid_data("descriptors beside a side socket"));
        }
        recv_side_socket(side.as_fd(), expected).map_err(|error| refused(error, "an unreadable side socket"))?
    } else {
        fds.collect()
    };
    if handles.len() != expected {
        return Err(invalid_data("descriptor count does not match the header"));
    }
    let mut handles = handles.into_iter();
    let mut channels = Vec::with_capacity(kinds.len());
    for &kind in kinds {
        let fd = handles.next().ok_or_else(|| invalid_data("channel descriptor missing"))?;
        let ring = match kind {
            KIND_RING => RingNews::Ring(handles.next().ok_or_else(|| invalid_data("ring control memfd missing"))?),
            KIND_NEVER => RingNews::Never,
            _ => RingNews::NotYet,
        };
        channels.push(OsOpaqueIpcChannel::from_received(fd, ring)?);
    }
    let shared_memory = handles
        .map(|fd| OsIpcSharedMemory::from_sealed(fd).map_err(|error| refused(error, "a region that cannot be mapped")))
        .collect::<io::Result<Vec<_>>>()?;
    let message = OsIpcMessage { data, channels, shared_memory, max_nesting: limits.max_nesting() };
    Ok((Some(message), header.ticket))
}

/// A message refused for `what` a peer sent (a side socket that is a pipe, a region too large
/// to map): whatever the system call said, `InvalidData`, so that a select drops the message
/// and keeps the channel (another error would close it).
fn refused(error: io::Error, what: &str) -> io::Error {
    if error.kind() == io::ErrorKind::InvalidData {
        return error;
    }
    invalid_data(&format!("{what}: {error}"))
}

/// Reads exactly `expected` descriptors from a side socket whose sender has finished writing.
fn recv_side_socket(side: BorrowedFd<'_>, expected: usize) -> io::Result<Vec<OwnedFd>> {
    let mut handles = Vec::new();
    let mut byte = [0u8; 1];
    while handles.len() < expected {
        match recv_packet(side, &mut byte, RecvFlags::DONTWAIT) {
            Ok(Some(packet)) => match packet.accepted()? {
                (_, fds) if !fds.is_empty() => handles.extend(fds),
                _ => return Err(invalid_data("side socket ended early")),
            },
            Ok(None) => return Err(invalid_data("side socket ended early")),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                return Err(invalid_data("side socket ended early"))
            }
            // The message itself was taken already (its packet carried the side socket): it is
            // lost, and the error must not say it stays queued. `InvalidData`, so that a select
            // drops the message and keeps the channel. (Reading the side socket before the
            // message's packet is taken would keep it: open work, issue 23.)
            Err(error) if OutOfDescriptors::is(&error) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a message was lost: its descriptors came on a side socket, and this process ran out of \
                     descriptors while reading them",
                ))
            }
            Err(error) => return Err(error),
        }
    }
    Ok(handles)
}

/// A channel end received in a message: a sender or a receiver, decided by the message's type.
pub(crate) struct OsOpaqueIpcChannel {
    fd: OwnedFd,
    /// What a receiver brought along of its ring.
    ring: RingNews<OwnedFd>,
}

impl OsOpaqueIpcChannel {
    /// Adopts a received descriptor, refusing anything but a `SOCK_SEQPACKET` socket.
    fn from_received(fd: OwnedFd, ring: RingNews<OwnedFd>) -> io::Result<Self> {
        match socket_type(&fd) {
            Ok(SocketType::SEQPACKET) => Ok(OsOpaqueIpcChannel { fd, ring }),
            _ => Err(invalid_data("channel descriptor is not a channel socket")),
        }
    }

    /// Adopts the channel end a parent process passed down (already checked by the caller).
    pub(super) fn from_inherited(fd: OwnedFd) -> Self {
        OsOpaqueIpcChannel { fd, ring: RingNews::NotYet }
    }

    /// This end, used as a sender (a sender finds the ring on its own): the sender this process
    /// already holds on the same socket, if any (see [`super::held`]).
    pub fn into_sender(self) -> io::Result<OsIpcSender> {
        Ok(OsIpcSender::adopt(self.fd))
    }

    /// This end, used as a receiver.
    pub fn into_receiver(self) -> io::Result<OsIpcReceiver> {
        OsIpcReceiver::from_received(self.fd, self.ring)
    }
}

impl fmt::Debug for OsOpaqueIpcChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OsOpaqueIpcChannel({:?})", self.fd)
    }
}

impl OsIpcChannel {
    /// The end's socket, for a child to inherit (a copy when a sender's socket is shared with
    /// clones).
    pub(super) fn into_fd(self) -> io::Result<OwnedFd> {
        match self {
            OsIpcChannel::Sender(sender) => {
                // A clone kept here is what a copy the child sends back becomes (see `held`).
                sender.hold();
                Ok(Arc::try_unwrap(sender.fd).or_else(|shared| shared.try_clone())?)
            }
            OsIpcChannel::Receiver(receiver) => receiver.into_fd(),
        }
    }

    /// What the end travels as: its socket, and what a receiver brings along of its ring.
    pub(super) fn travelling(&self) -> (BorrowedFd<'_>, RingNews<BorrowedFd<'_>>) {
        match self {
            OsIpcChannel::Sender(sender) => (sender.fd.as_fd(), RingNews::NotYet),
            OsIpcChannel::Receiver(receiver) => (receiver.as_fd(), receiver.travelling_ring()),
        }
    }
}

/// The packet decoder, for the fuzz targets: decodes `packet` with `fds` under default limits.
#[cfg(feature = "fuzzing")]
pub(crate) fn decode_packet(packet: &[u8], fds: Vec<OwnedFd>) -> io::Result<OsIpcMessage> {
    let limits = LimitsCell::new(crate::sys::ReceiveLimits::DEFAULT);
    let (message, _) = decode_message(packet, fds, None, &limits, &PeerMaps::default(), &mut Vec::new())?;
    message.ok_or_else(|| invalid_data("a place holder, not a message"))
}
