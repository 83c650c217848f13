//! Channels: one `SOCK_SEQPACKET` socket pair per channel, one packet per message.
//!
//! A packet is atomic in the kernel, so a message is delivered whole or not at all, even when its
//! sender is killed mid-send, and several senders (clones, in any process) never interleave. The
//! packet layout is described in [`super::frame`]. When the last copy of the sending socket is
//! closed, the receiver reads end-of-file: that is `Disconnected`. A sender that is in flight
//! inside another message is a descriptor held by the kernel, so it keeps the channel open.

use std::cell::RefCell;
use std::fmt;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::cmsg_space;
use rustix::io::Errno;
use rustix::net::{
    connect, recv, recvmsg, sendmsg, socket_with, socketpair, sockopt::socket_type, AddressFamily, RecvAncillaryBuffer,
    RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix,
    SocketFlags, SocketType,
};

use super::frame::{
    buffer_claim, other_version, version_mismatch, FrameHeader, HANDLES_ON_SIDE_SOCKET, HEADER_LEN, INLINE_MAX,
    MAX_BUFFER_CLAIM, MAX_FDS_PER_PACKET, MAX_FDS_RECEIVED, MAX_HANDLES_IN_PACKET, PAYLOAD_IN_POOLED_MEMFD,
    VERDICT_ADMITTED, VERDICT_REFUSED, VERDICT_TIMEOUT,
};
use super::intake::{take_payload, PeerMaps};
use super::memfd::{Encoded, PayloadWriter};
use super::pool::{Lease, PayloadPool};
use super::sys::invalid_data;
use super::sys::{retry_on_intr, wait_readable, wait_writable, wire_count};
use crate::sys::{LimitExceeded, LimitsCell, ReceiveLimits, RecentWait};
use crate::sys::{OsIpcChannel, OsIpcMessage, OsIpcSharedMemory, RecvError, SendFailure, Wait};

/// Creates a connected, close-on-exec `SOCK_SEQPACKET` socket pair.
pub(super) fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    retry_on_intr(|| socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None))
}

/// A new channel: the sending and the receiving end.
pub(crate) fn channel() -> io::Result<(OsIpcSender, OsIpcReceiver)> {
    let (tx, rx) = seqpacket_pair()?;
    Ok((OsIpcSender::from_fd(tx), OsIpcReceiver::from_fd(rx)))
}

/// The sending end of a channel; clones share one socket, and one pool of payload memfds.
#[derive(Clone)]
pub(crate) struct OsIpcSender {
    fd: Arc<OwnedFd>,
    pool: Arc<PayloadPool>,
}

impl OsIpcSender {
    fn from_fd(fd: OwnedFd) -> Self {
        OsIpcSender { fd: Arc::new(fd), pool: Arc::default() }
    }

    /// A writer to encode one message for this channel in (it spills into the channel's pooled
    /// memfds once the message outgrows a packet).
    pub fn payload_writer(&self, buffer: Vec<u8>) -> PayloadWriter {
        PayloadWriter::new(buffer, self.pool.clone())
    }

    /// Connects to the server listening at `name` (a socket path) and waits for its verdict: a
    /// client the server's access policy refuses gets `PermissionDenied` here.
    pub fn connect(name: &str) -> io::Result<OsIpcSender> {
        let address = SocketAddrUnix::new(name)?;
        let fd = retry_on_intr(|| socket_with(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None))?;
        match connect(&fd, &address) {
            // An interrupted connect goes on in the background; a Unix socket finishes it at once.
            Ok(()) | Err(Errno::INTR) | Err(Errno::ISCONN) => {}
            Err(error) => return Err(error.into()),
        }
        if !wait_readable(&fd, VERDICT_TIMEOUT)? {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "the server did not answer the connection"));
        }
        let mut verdict = [0u8; 8];
        match retry_on_intr(|| recv(&fd, &mut verdict, RecvFlags::DONTWAIT))? {
            (_, 8) if verdict == VERDICT_ADMITTED => Ok(OsIpcSender::from_fd(fd)),
            (_, 8) if verdict == VERDICT_REFUSED => {
                Err(io::Error::new(io::ErrorKind::PermissionDenied, "the server's access policy refused this client"))
            }
            // A verdict in another protocol version: a server from another build.
            (_, 8) if other_version(&verdict).is_some() => Err(version_mismatch(verdict[3])),
            (_, 0) => Err(io::Error::new(io::ErrorKind::ConnectionRefused, "the server closed the connection")),
            _ => Err(invalid_data("unexpected answer from the server")),
        }
    }

    /// Sends one message, waiting for room in the socket buffer as `wait` allows. The message is
    /// delivered whole or not at all.
    pub fn send(
        &self,
        data: &[u8],
        channels: Vec<OsIpcChannel>,
        shared_memory: Vec<OsIpcSharedMemory>,
        wait: Wait,
    ) -> Result<(), SendFailure> {
        self.send_body(Body::Bytes(data), channels, shared_memory, wait)
    }

    /// Like [`send`](Self::send), for bytes a [`PayloadWriter`](super::PayloadWriter) produced.
    pub fn send_encoded(
        &self,
        encoded: &Encoded,
        channels: Vec<OsIpcChannel>,
        shared_memory: Vec<OsIpcSharedMemory>,
        wait: Wait,
    ) -> Result<(), SendFailure> {
        let body = match encoded {
            Encoded::Inline(bytes) => Body::Bytes(bytes),
            Encoded::Pooled { lease, .. } => Body::Pooled(lease),
        };
        self.send_body(body, channels, shared_memory, wait)
    }

    /// Sends the message; the channel ends are only borrowed, so a failure gives them back.
    fn send_body(
        &self,
        body: Body<'_>,
        channels: Vec<OsIpcChannel>,
        shared_memory: Vec<OsIpcSharedMemory>,
        wait: Wait,
    ) -> Result<(), SendFailure> {
        self.send_packet_of(body, &channels, &shared_memory, wait).map_err(|error| SendFailure { error, channels })
    }

    fn send_packet_of(
        &self,
        body: Body<'_>,
        channels: &[OsIpcChannel],
        shared_memory: &[OsIpcSharedMemory],
        wait: Wait,
    ) -> io::Result<()> {
        let mut header = FrameHeader {
            flags: 0,
            channels: wire_count(channels.len())?,
            shared_memory: wire_count(shared_memory.len())?,
            payload_len: match body {
                Body::Bytes(data) => data.len() as u64,
                Body::Pooled(lease) => lease.len() as u64,
            },
        };
        let handles: Vec<BorrowedFd<'_>> =
            channels.iter().map(OsIpcChannel::as_fd).chain(shared_memory.iter().map(AsFd::as_fd)).collect();

        let side_socket = if handles.len() > MAX_HANDLES_IN_PACKET {
            header.flags |= HANDLES_ON_SIDE_SOCKET;
            Some(send_on_side_socket(&handles)?)
        } else {
            None
        };
        let fds = match &side_socket {
            Some(side) => vec![side.as_fd()],
            None => handles,
        };
        match body {
            Body::Bytes(data) => {
                if data.len() <= INLINE_MAX {
                    let frame = header.encode();
                    let iov = [IoSlice::new(&frame), IoSlice::new(data)];
                    match self.send_waiting(&iov, &fds, wait) {
                        // This socket's send buffer is smaller than the packet: use a memfd.
                        Err(error) if error.raw_os_error() == Some(Errno::MSGSIZE.raw_os_error()) => {}
                        result => return result,
                    }
                }
                let mut lease = self.pool.lease()?;
                lease.write_at(0, data)?;
                self.send_pooled(header, &fds, &lease, wait)
            }
            Body::Pooled(lease) => self.send_pooled(header, &fds, lease, wait),
        }
    }

    /// Sends the header packet of a payload in a pooled memfd (the first descriptor); the
    /// receiver copies the payload out and frees the memfd.
    fn send_pooled(
        &self,
        mut header: FrameHeader,
        fds: &[BorrowedFd<'_>],
        lease: &Lease,
        wait: Wait,
    ) -> io::Result<()> {
        static ZEROS: [u8; MAX_BUFFER_CLAIM] = [0; MAX_BUFFER_CLAIM];
        header.flags |= PAYLOAD_IN_POOLED_MEMFD;
        let fds: Vec<BorrowedFd<'_>> = std::iter::once(lease.fd()).chain(fds.iter().copied()).collect();
        let frame = header.encode();
        let mut claim = buffer_claim(lease.len(), lease.is_fresh());
        loop {
            match self.send_waiting(&[IoSlice::new(&frame), IoSlice::new(&ZEROS[..claim])], &fds, wait) {
                // A send buffer set smaller than the claim: half as much, the header alone at last.
                Err(error) if error.raw_os_error() == Some(Errno::MSGSIZE.raw_os_error()) && claim > 0 => {
                    claim = if claim > 1024 { claim / 2 } else { 0 };
                }
                result => break result?,
            }
        }
        lease.mark_sent();
        Ok(())
    }

    /// Sends one packet, waiting for buffer room as `wait` allows.
    fn send_waiting(&self, iov: &[IoSlice<'_>], fds: &[BorrowedFd<'_>], wait: Wait) -> io::Result<()> {
        let deadline = match wait {
            Wait::Blocking => return send_packet(self.fd.as_fd(), iov, fds, SendFlags::empty()),
            Wait::NonBlocking => return send_packet(self.fd.as_fd(), iov, fds, SendFlags::DONTWAIT),
            Wait::Timeout(timeout) => Instant::now().checked_add(timeout),
        };
        loop {
            match send_packet(self.fd.as_fd(), iov, fds, SendFlags::DONTWAIT) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                result => return result,
            }
            let left = deadline.map_or(Duration::MAX, |deadline| deadline.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "the channel stayed full"));
            }
            // Writable means some room; a large packet may need more, so never spin on it.
            if wait_writable(&self.fd, left)? {
                std::thread::sleep(left.min(Duration::from_micros(200)));
            }
        }
    }

    /// Sets the size of the channel's kernel send buffer (the kernel may round it, and caps it
    /// at `net.core.wmem_max`). Affects every sender of this channel.
    pub fn set_buffer_size(&self, bytes: usize) -> io::Result<()> {
        Ok(rustix::net::sockopt::set_socket_send_buffer_size(&*self.fd, bytes)?)
    }

    /// The size of the channel's kernel send buffer, in bytes.
    pub fn buffer_size(&self) -> io::Result<usize> {
        Ok(rustix::net::sockopt::socket_send_buffer_size(&*self.fd)?)
    }
}

impl fmt::Debug for OsIpcSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OsIpcSender({:?})", self.fd)
    }
}

impl AsFd for OsIpcSender {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A message body: bytes (sent in the packet when they fit), or already in a pooled memfd.
#[derive(Clone, Copy)]
enum Body<'a> {
    Bytes(&'a [u8]),
    Pooled(&'a Lease),
}

/// Writes `handles` to a fresh socket pair, in packets of at most [`MAX_FDS_PER_PACKET`], and
/// returns the receiving end to send along with the message.
fn send_on_side_socket(handles: &[BorrowedFd<'_>]) -> io::Result<OwnedFd> {
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
fn send_packet(
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

/// The receiving end of a channel.
pub(crate) struct OsIpcReceiver {
    fd: OwnedFd,
    limits: LimitsCell,
    recent_wait: RecentWait,
    /// Mappings of the pooled memfds this channel's senders reuse.
    peer_maps: PeerMaps,
}

thread_local! {
    /// The buffer every receive on this thread reads its packet into.
    static RECV_BUFFER: RefCell<ReceiveBuffer> = RefCell::new(ReceiveBuffer::new(HEADER_LEN + INLINE_MAX));
}

impl OsIpcReceiver {
    /// Called by an async receive before it sleeps on this receiver's readiness; `false`
    /// means a message may have arrived meanwhile and the receive should be retried. A socket
    /// needs no announcement: its readiness says everything.
    #[cfg(feature = "tokio")]
    pub fn prepare_to_sleep(&self) -> bool {
        true
    }

    /// Receives the next message, waiting as `mode` allows.
    pub fn recv(&self, mode: Wait) -> Result<OsIpcMessage, RecvError> {
        self.recv_into(mode, &mut Vec::new())
    }

    /// Like [`recv`](Self::recv); the message's data reuses `buffer`'s allocation (taking it)
    /// when the message is large enough to need one.
    pub fn recv_into(&self, mode: Wait, buffer: &mut Vec<u8>) -> Result<OsIpcMessage, RecvError> {
        if matches!(mode, Wait::NonBlocking) {
            return self.recv_once(RecvFlags::DONTWAIT, buffer);
        }
        let start = Instant::now();
        let result = self.wait_and_recv(mode, start, buffer);
        self.recent_wait.record(start);
        result
    }

    fn wait_and_recv(&self, mode: Wait, start: Instant, buffer: &mut Vec<u8>) -> Result<OsIpcMessage, RecvError> {
        let deadline = match mode {
            Wait::Timeout(timeout) => Some(start.checked_add(timeout)),
            _ => None,
        };
        // Poll first: a message that arrives within the spin window is taken without the
        // thread going to sleep and waiting to be woken.
        match self.poll_briefly(start, self.recent_wait.spin_window(mode), buffer) {
            Err(RecvError::Empty) => {}
            result => return result,
        }
        loop {
            if let Some(deadline) = deadline {
                let left =
                    deadline.map_or(Duration::MAX, |deadline| deadline.saturating_duration_since(Instant::now()));
                if !wait_readable(&self.fd, left)? {
                    return Err(RecvError::Empty);
                }
            }
            let flags = match mode {
                Wait::Blocking => RecvFlags::empty(),
                _ => RecvFlags::DONTWAIT,
            };
            match self.recv_once(flags, buffer) {
                // Readiness without a message (another reader won the race): wait again.
                Err(RecvError::Empty) if deadline.is_some() => continue,
                result => return result,
            }
        }
    }

    /// Tries to receive, without sleeping, at least once and until `window` after `start`: a
    /// message that arrives meanwhile is taken without the thread going to sleep.
    fn poll_briefly(&self, start: Instant, window: Duration, buffer: &mut Vec<u8>) -> Result<OsIpcMessage, RecvError> {
        loop {
            match self.recv_once(RecvFlags::DONTWAIT, buffer) {
                Err(RecvError::Empty) if start.elapsed() < window => std::hint::spin_loop(),
                result => return result,
            }
        }
    }

    fn recv_once(&self, flags: RecvFlags, reuse: &mut Vec<u8>) -> Result<OsIpcMessage, RecvError> {
        RECV_BUFFER.with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            let buffer = buffer.get();
            let mut received = recv_packet(self.fd.as_fd(), buffer, flags);
            if matches!(received, Ok(None)) && flags.contains(RecvFlags::DONTWAIT) {
                // A non-blocking read that finds the queue empty and *then* sees the peer's
                // hang-up reports end-of-file, even if the peer's last packet was queued in
                // between. The hang-up comes after that packet, so one more read settles it.
                received = recv_packet(self.fd.as_fd(), buffer, flags);
            }
            match received {
                Ok(Some((len, fds))) => Ok(decode_message(&buffer[..len], fds, &self.limits, &self.peer_maps, reuse)?),
                Ok(None) => {
                    // The senders are gone, and their memfds will not come again.
                    self.peer_maps.clear();
                    Err(RecvError::Disconnected)
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => Err(RecvError::Empty),
                Err(error) => Err(RecvError::Io(error)),
            }
        })
    }
}

impl AsFd for OsIpcReceiver {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl fmt::Debug for OsIpcReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OsIpcReceiver({:?})", self.fd)
    }
}

impl OsIpcReceiver {
    /// Adopts a connected socket (an accepted connection) as a receiver.
    pub(super) fn from_fd(fd: OwnedFd) -> Self {
        OsIpcReceiver {
            fd,
            limits: LimitsCell::new(ReceiveLimits::DEFAULT),
            recent_wait: RecentWait::default(),
            peer_maps: PeerMaps::default(),
        }
    }

    /// Sets the limits every later message is checked against.
    pub fn set_limits(&self, limits: ReceiveLimits) {
        self.limits.set(limits);
    }

    /// The limits in force.
    pub fn limits(&self) -> ReceiveLimits {
        self.limits.get()
    }
}

/// The buffer every receive reads its packet into, placed so that the payload (after the
/// header) starts in the middle of a page. On some CPUs (AMD EPYC here) a `rep movsb` copy, which
/// both the kernel and glibc's `memcpy` use for a few KiB and more, runs about 7 times slower when
/// the destination lies 1 to 31 bytes past the source modulo 4 KiB. A large packet's body
/// arrives from page-aligned kernel pages, and a payload copied out lands in a new `Vec` that
/// glibc places 16 bytes into a page; at mid-page the payload is far from both (64 KiB packet
/// received: 35 µs into a buffer 16 bytes into a page, 5 µs here).
struct ReceiveBuffer {
    bytes: Vec<u8>,
    start: usize,
}

impl ReceiveBuffer {
    const PAGE: usize = 4096;
    /// Where the payload starts within a page.
    const PAYLOAD_IN_PAGE: usize = 2048;

    fn new(len: usize) -> Self {
        let bytes = vec![0; len + Self::PAGE];
        let at = bytes.as_ptr() as usize;
        let wanted = Self::PAYLOAD_IN_PAGE - HEADER_LEN;
        let start = (wanted + Self::PAGE - at % Self::PAGE) % Self::PAGE;
        ReceiveBuffer { bytes, start }
    }

    fn get(&mut self) -> &mut [u8] {
        let len = self.bytes.len() - Self::PAGE;
        &mut self.bytes[self.start..self.start + len]
    }
}

/// Receives one packet into `buffer`. Returns its length and descriptors, or `None` at
/// end-of-file. Descriptors of a refused packet are closed before this returns.
fn recv_packet(
    socket: BorrowedFd<'_>,
    buffer: &mut [u8],
    flags: RecvFlags,
) -> io::Result<Option<(usize, Vec<OwnedFd>)>> {
    let mut space = [MaybeUninit::<u8>::uninit(); cmsg_space!(ScmRights(MAX_FDS_RECEIVED))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [IoSliceMut::new(buffer)];
    let received = retry_on_intr(|| recvmsg(socket, &mut iov, &mut control, flags | RecvFlags::CMSG_CLOEXEC))?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received_fds) = message {
            fds.extend(received_fds);
        }
    }
    if received.flags.contains(ReturnFlags::CTRUNC) {
        // The kernel dropped descriptors it could not install: the packet carried more than
        // one may, or this process is at its descriptor limit (EMFILE). The message is lost;
        // the channel goes on.
        return Err(invalid_data("descriptors truncated (too many, or the process is out of descriptors)"));
    }
    if received.flags.contains(ReturnFlags::TRUNC) {
        return Err(invalid_data("packet larger than the largest inline message"));
    }
    if received.bytes == 0 && fds.is_empty() {
        return Ok(None);
    }
    Ok(Some((received.bytes, fds)))
}

/// Turns one received packet and its descriptors into a message, validating everything; the
/// payload goes into `reuse`'s allocation (taking it) where that can hold it.
fn decode_message(
    packet: &[u8],
    fds: Vec<OwnedFd>,
    limits: &LimitsCell,
    peer_maps: &PeerMaps,
    reuse: &mut Vec<u8>,
) -> io::Result<OsIpcMessage> {
    let header = FrameHeader::decode(packet)?;
    let handle_count = header.channels as usize + header.shared_memory as usize;
    limits.check(header.payload_len, handle_count).map_err(LimitExceeded::into_io)?;
    let inline = &packet[HEADER_LEN..];
    let mut fds = fds.into_iter();
    let data = if header.has(PAYLOAD_IN_POOLED_MEMFD) {
        // Any bytes after the header are the sender's buffer claim (see `frame.rs`).
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
    let expected = handle_count;
    let handles: Vec<OwnedFd> = if header.has(HANDLES_ON_SIDE_SOCKET) {
        let side = fds.next().ok_or_else(|| invalid_data("side socket missing"))?;
        if fds.len() != 0 {
            return Err(invalid_data("descriptors beside a side socket"));
        }
        recv_side_socket(side.as_fd(), expected)?
    } else {
        fds.collect()
    };
    if handles.len() != expected {
        return Err(invalid_data("descriptor count does not match the header"));
    }
    let mut handles = handles.into_iter();
    let channels = handles
        .by_ref()
        .take(header.channels as usize)
        .map(OsOpaqueIpcChannel::from_received)
        .collect::<io::Result<Vec<_>>>()?;
    let shared_memory = handles.map(OsIpcSharedMemory::from_sealed).collect::<io::Result<Vec<_>>>()?;
    Ok(OsIpcMessage { data, channels, shared_memory, max_nesting: limits.max_nesting() })
}

/// Reads exactly `expected` descriptors from a side socket whose sender has finished writing.
fn recv_side_socket(side: BorrowedFd<'_>, expected: usize) -> io::Result<Vec<OwnedFd>> {
    let mut handles = Vec::new();
    let mut byte = [0u8; 1];
    while handles.len() < expected {
        match recv_packet(side, &mut byte, RecvFlags::DONTWAIT) {
            Ok(Some((_, fds))) if !fds.is_empty() => handles.extend(fds),
            Ok(_) => return Err(invalid_data("side socket ended early")),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                return Err(invalid_data("side socket ended early"))
            }
            Err(error) => return Err(error),
        }
    }
    Ok(handles)
}

/// A channel end received in a message: a sender or a receiver, decided by the message's type.
pub(crate) struct OsOpaqueIpcChannel {
    fd: OwnedFd,
}

impl OsOpaqueIpcChannel {
    /// Adopts a received descriptor, refusing anything but a `SOCK_SEQPACKET` socket.
    fn from_received(fd: OwnedFd) -> io::Result<Self> {
        match socket_type(&fd) {
            Ok(SocketType::SEQPACKET) => Ok(OsOpaqueIpcChannel { fd }),
            _ => Err(invalid_data("channel descriptor is not a channel socket")),
        }
    }

    /// Adopts the channel end a parent process passed down (already checked by the caller).
    pub(super) fn from_inherited(fd: OwnedFd) -> Self {
        OsOpaqueIpcChannel { fd }
    }

    /// This end, used as a sender.
    pub fn into_sender(self) -> io::Result<OsIpcSender> {
        Ok(OsIpcSender::from_fd(self.fd))
    }

    /// This end, used as a receiver.
    pub fn into_receiver(self) -> io::Result<OsIpcReceiver> {
        Ok(OsIpcReceiver::from_fd(self.fd))
    }
}

impl fmt::Debug for OsOpaqueIpcChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OsOpaqueIpcChannel({:?})", self.fd)
    }
}

impl OsIpcChannel {
    /// The end's own descriptor (a copy when a sender's socket is shared with clones).
    pub(super) fn into_fd(self) -> io::Result<OwnedFd> {
        match self {
            OsIpcChannel::Sender(sender) => Arc::try_unwrap(sender.fd).or_else(|shared| shared.try_clone()),
            OsIpcChannel::Receiver(receiver) => Ok(receiver.fd),
        }
    }

    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            OsIpcChannel::Sender(sender) => sender.fd.as_fd(),
            OsIpcChannel::Receiver(receiver) => receiver.fd.as_fd(),
        }
    }
}

/// The packet decoder, for the fuzz targets: decodes `packet` with `fds` under default limits.
#[cfg(feature = "fuzzing")]
pub(crate) fn decode_packet(packet: &[u8], fds: Vec<OwnedFd>) -> io::Result<OsIpcMessage> {
    decode_message(packet, fds, &LimitsCell::new(ReceiveLimits::DEFAULT), &PeerMaps::default(), &mut Vec::new())
}
