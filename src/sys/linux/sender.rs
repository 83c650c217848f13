//! The sending end of a channel: a message goes into the channel's ring when it is small and
//! carries no descriptors (see [`super::ring`]), else on the socket as one packet.

use std::convert::Infallible;
use std::fmt;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, MutexGuard, Weak};
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::net::sockopt::socket_cookie;
use rustix::net::{connect, recv, socket_with, AddressFamily, RecvFlags, SocketAddrUnix, SocketFlags, SocketType};

use super::at_exit;
use super::fork;
use super::frame::{
    buffer_claim, other_version, version_mismatch, FrameHeader, CONTROL_PACKET, HANDLES_ON_SIDE_SOCKET, INLINE_MAX,
    MAX_BUFFER_CLAIM, MAX_HANDLES_IN_PACKET, NO_RING_PACKET, PAYLOAD_IN_POOLED_MEMFD, PLACE_HOLDER, VERDICT_ADMITTED,
    VERDICT_REFUSED, VERDICT_TIMEOUT,
};
use super::held::{Held, Shared};
use super::memfd::{Encoded, PayloadWriter};
use super::pool::{Lease, PayloadPool};
use super::receiver::{OsIpcReceiver, RingNews};
use super::reserve;
use super::ring::{Control, Outcome, RingWriter, RING_MESSAGE_MAX};
use super::socket::{hung_up, recv_packet, send_on_side_socket, send_packet, Packet};
use super::sys::{invalid_data, retry_on_intr, wait_readable, wait_writable, wire_count};
use crate::sys::{ForkLock, OsIpcChannel, OsIpcSharedMemory, OutOfDescriptors, SendFailure, Wait};

/// The sending end of a channel; clones share one socket, one pool of payload memfds and one
/// slot of the channel's ring. So does a copy of it that arrives in this process again (see
/// [`super::held`]).
#[derive(Clone)]
pub(crate) struct OsIpcSender {
    pub(super) fd: Arc<OwnedFd>,
    pool: Arc<PayloadPool>,
    ring: Arc<SenderRing>,
}

/// The senders this process holds, by socket cookie: a sender received again is a clone of the
/// one held.
static SENDERS: Held<u64, OsIpcSender> = Held::new(|sender| socket_cookie(&*sender.fd).ok());

impl OsIpcSender {
    /// A sender on `fd` (its first send looks for the channel's ring), not in [`SENDERS`] yet:
    /// it goes there when it is first sent in a message, since only then can it come back.
    pub(super) fn from_fd(fd: OwnedFd) -> Self {
        Self::new(fd, false)
    }

    /// A sender on `fd`, a socket received from elsewhere: a clone of the sender this process
    /// already holds on the same socket (`fd`, a second descriptor of it, is closed), else a
    /// new one that later arrivals of the socket share. Costs one `getsockopt` and a lookup.
    pub(super) fn adopt(fd: OwnedFd) -> Self {
        let Ok(cookie) = socket_cookie(&fd) else {
            // Before Linux 4.13: every copy keeps its descriptor, as before the table.
            return Self::from_fd(fd);
        };
        let Ok(sender) = SENDERS.adopt::<Infallible>(cookie, || Ok(Self::new(fd, true)));
        sender
    }

    fn new(fd: OwnedFd, held: bool) -> Self {
        // For the look after a plain send, which must find the ring also at the limit.
        reserve::keep();
        let ring = SenderRing {
            born: AtomicU64::new(fork::generation()),
            state: ForkLock::new(RingState::Unaware),
            looked: AtomicU64::new(0),
            retired_in: AtomicU64::new(u64::MAX),
            held: AtomicBool::new(held),
            sending: AtomicUsize::new(0),
        };
        OsIpcSender { fd: Arc::new(fd), pool: Arc::default(), ring: Arc::new(ring) }
    }

    /// Puts this sender in [`SENDERS`] (once for all its clones), before it leaves in a
    /// message or for a spawned child, so that a copy sent back to this process shares it. Its
    /// cookie is asked for only once some sender arrives here.
    pub(super) fn hold(&self) {
        if !self.ring.held.swap(true, Ordering::Relaxed) {
            SENDERS.hold(self);
        }
    }

    /// Whether `self` and `other` are one sender here: the same descriptor, pool and ring slot.
    #[cfg(test)]
    pub(super) fn is_shared_with(&self, other: &OsIpcSender) -> bool {
        Arc::ptr_eq(&self.fd, &other.fd) && Arc::ptr_eq(&self.pool, &other.pool) && Arc::ptr_eq(&self.ring, &other.ring)
    }

    /// Whether this sender writes in a slot of the channel's ring, and the ring is not retired.
    #[cfg(test)]
    pub(super) fn writes_in_ring(&self) -> bool {
        self.ring
            .state()
            .is_some_and(|state| matches!(&*state, RingState::Writing(writer) if !writer.control().is_closed()))
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

    /// Runs `body` while another thread holds the sender's ring state, as a thread inside a
    /// send does (a child forked meanwhile finds it taken for ever; it must not return from
    /// `body`, whose end waits for that thread).
    #[cfg(test)]
    pub(super) fn with_ring_state_held_elsewhere<R>(&self, body: impl FnOnce() -> R) -> R {
        let (held, is_held) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|scope| {
            scope.spawn(move || {
                let _held = self.ring.state.lock().unwrap();
                held.send(()).unwrap();
                let _ = released.recv();
            });
            is_held.recv().unwrap();
            let result = body();
            drop(release);
            result
        })
    }

    /// Whether this sender still looks for the channel's ring after each send.
    #[cfg(test)]
    pub(super) fn looks_for_ring(&self) -> bool {
        self.ring.state().is_some_and(|state| matches!(*state, RingState::Unaware))
    }

    /// Sends one message, waiting for room as `wait` allows. The message is delivered whole or
    /// not at all.
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
        let receivers = || {
            channels.iter().filter_map(|channel| match channel {
                OsIpcChannel::Receiver(receiver) => Some(receiver),
                OsIpcChannel::Sender(_) => None,
            })
        };
        receivers().for_each(OsIpcReceiver::leaving);
        match self.send_message(body, &channels, &shared_memory, wait) {
            Ok(()) => {
                receivers().for_each(OsIpcReceiver::depart);
                Ok(())
            }
            Err(error) => {
                receivers().for_each(OsIpcReceiver::stayed);
                Err(SendFailure { error, channels })
            }
        }
    }

    fn send_message(
        &self,
        body: Body<'_>,
        channels: &[OsIpcChannel],
        shared_memory: &[OsIpcSharedMemory],
        wait: Wait,
    ) -> io::Result<()> {
        let small = match body {
            Body::Bytes(data) if channels.is_empty() && shared_memory.is_empty() && data.len() <= RING_MESSAGE_MAX => {
                Some(data)
            }
            _ => None,
        };
        // `None`: no deadline (a blocking send, or a timeout too long to matter).
        let deadline = match wait {
            Wait::Timeout(timeout) => Instant::now().checked_add(timeout),
            _ => None,
        };
        // Counted before the state's lock is first taken (in `route`), so that `exit`, which
        // looks at the count under that lock, sees every send that got a ticket.
        let _sending = Sending::start(&self.ring.sending);
        // Whether the send may poll a full ring for room (see `RING_ROOM_SPIN`).
        let patient = match wait {
            Wait::Blocking => true,
            Wait::Timeout(timeout) => timeout >= RING_ROOM_SPIN,
            Wait::NonBlocking => false,
        };
        let ticket = loop {
            match self.ring.route(self.fd.as_fd(), small, patient)? {
                Route::Delivered => return Ok(()),
                Route::Plain => break 0,
                Route::Unaware => {
                    self.send_packet_of(body, channels, shared_memory, 0, wait)?;
                    self.hold_place(wait);
                    return Ok(());
                }
                Route::Ticket(ticket) => break ticket,
                Route::Full if matches!(wait, Wait::NonBlocking) => {
                    return Err(io::Error::new(io::ErrorKind::WouldBlock, "the channel is full"))
                }
                Route::Full => {
                    if !self.wait_for_ring_room(deadline)? {
                        // The receiver is gone: the socket says so.
                        break 0;
                    }
                }
            }
        };
        let sent = self.send_packet_of(body, channels, shared_memory, ticket, wait);
        if ticket != 0 {
            self.ring.settle(ticket, sent.is_ok());
        }
        sent
    }

    /// After a plain packet sent while this process knew of no ring: if the ring is there now,
    /// sends a place holder and publishes its marker, so that nothing sent because of the packet
    /// overtakes it (see `ring/mod.rs`). If that fails, the ring is retired instead.
    fn hold_place(&self, wait: Wait) {
        let Some(ticket) = self.ring.place_ticket(self.fd.as_fd()) else { return };
        // This sender has a slot now (the only way it takes one): `exit` gives it back.
        at_exit::note(&self.ring);
        let header = FrameHeader { flags: PLACE_HOLDER, channels: 0, shared_memory: 0, payload_len: 0, ticket };
        let sent = self.send_waiting(&[IoSlice::new(&header.encode())], &[], wait).is_ok();
        self.ring.settle(ticket, sent);
        if !sent {
            self.ring.retire();
        }
    }

    /// Waits for the receiver to free room in a full ring, as `deadline` allows: it wakes this
    /// sender once it has taken entries, and at most [`RING_ROOM_WAIT`] passes before the
    /// sender looks at the socket. `false` when the receiver is gone.
    fn wait_for_ring_room(&self, deadline: Option<Instant>) -> io::Result<bool> {
        let left = deadline.map_or(Duration::MAX, |deadline| deadline.saturating_duration_since(Instant::now()));
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "the channel stayed full"));
        }
        self.ring.wait_for_room(left.min(RING_ROOM_WAIT));
        // A receiver that is gone frees nothing: its socket says so.
        Ok(!hung_up(self.fd.as_fd())?)
    }

    fn send_packet_of(
        &self,
        body: Body<'_>,
        channels: &[OsIpcChannel],
        shared_memory: &[OsIpcSharedMemory],
        ticket: u64,
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
            ticket,
        };
        // Each channel end: its socket, then its ring's control memfd if it brings one.
        let mut kinds = Vec::with_capacity(channels.len());
        let mut handles: Vec<BorrowedFd<'_>> = Vec::with_capacity(channels.len() + shared_memory.len());
        for channel in channels {
            if let OsIpcChannel::Sender(sender) = channel {
                sender.hold();
            }
            let (fd, ring) = channel.travelling();
            kinds.push(ring.wire_kind());
            handles.push(fd);
            if let RingNews::Ring(control) = ring {
                handles.push(control);
            }
        }
        handles.extend(shared_memory.iter().map(AsFd::as_fd));

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
                    let iov = [IoSlice::new(&frame), IoSlice::new(&kinds), IoSlice::new(data)];
                    match self.send_waiting(&iov, &fds, wait) {
                        // This socket's send buffer is smaller than the packet: use a memfd.
                        Err(error) if error.raw_os_error() == Some(Errno::MSGSIZE.raw_os_error()) => {}
                        result => return result,
                    }
                }
                let mut lease = self.pool.lease()?;
                lease.write_at(0, data)?;
                self.send_pooled(header, &kinds, &fds, &lease, wait)
            }
            Body::Pooled(lease) => self.send_pooled(header, &kinds, &fds, lease, wait),
        }
    }

    /// Sends the header packet of a payload in a pooled memfd (the first descriptor); the
    /// receiver copies the payload out and frees the memfd.
    fn send_pooled(
        &self,
        mut header: FrameHeader,
        kinds: &[u8],
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
            let iov = [IoSlice::new(&frame), IoSlice::new(kinds), IoSlice::new(&ZEROS[..claim])];
            match self.send_waiting(&iov, &fds, wait) {
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
        use rustix::net::SendFlags;
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

    /// Gives the socket room for a local channel's backlog that a budget of `budget` bytes let
    /// in, and returns the size to give it back once the backlog is sent (as `set_buffer_size`
    /// takes it). Linux charges a packet more than the budget does (a 1 KB message about 2,300
    /// bytes against 1,768), so a socket of the budget's own size may not hold the backlog, and
    /// its rest would need the pump's thread, which the process's exit then waits for (review
    /// 10, F1). Twice the budget holds it, as far as `net.core.wmem_max` allows.
    pub fn raise_for_backlog(&self, budget: usize) -> Option<usize> {
        let before = self.buffer_size().ok()?;
        self.set_buffer_size(budget).ok()?;
        Some(before / 2)
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

/// Where a message goes.
enum Route {
    /// It went into the ring.
    Delivered,
    /// On the socket, with no marker: the ring is retired or unusable.
    Plain,
    /// On the socket, with no marker, as no ring was found; then look for it again
    /// ([`OsIpcSender::hold_place`]).
    Unaware,
    /// On the socket with this ticket, then a marker in the ring.
    Ticket(u64),
    /// Nowhere yet: the ring has no room for one more marker.
    Full,
}

/// The longest a sender waiting for room in a full ring sleeps before it looks whether the
/// receiver is still there (a receiver that takes entries wakes it at once).
const RING_ROOM_WAIT: Duration = Duration::from_millis(10);

/// How long a process may write into the ring without looking whether the receiver's socket
/// hung up. A receiver that is dropped retires the ring, which the next send sees; a receiver
/// *process* that dies cannot, and only its socket says so. The clock is the coarse one (a read
/// costs ~2 ns; its tick is 1-4 ms), so a ring send from a later tick than the last look looks
/// (one `poll`), and a stream of sends looks once per tick.
const HANG_UP_LOOK_EVERY: Duration = Duration::from_millis(1);

/// How long a send that finds the ring full polls for room before it takes the socket. A
/// receiver that is taking entries frees room within a microsecond or so; a message that takes
/// the socket instead costs both sides a system call, and makes the receiver slower still, so
/// that a receiver briefly behind could stay behind for the rest of a stream.
const RING_ROOM_SPIN: Duration = Duration::from_micros(20);

/// Offers `data` to a full ring again until it has room or [`RING_ROOM_SPIN`] passed.
fn wait_for_room_briefly(writer: &mut RingWriter, data: &[u8]) -> Outcome {
    let start = Instant::now();
    loop {
        // Each offer reads entry states the receiver writes: not more often than this.
        for _ in 0..32 {
            std::hint::spin_loop();
        }
        let outcome = writer.send(data);
        if outcome != Outcome::NoRoom || start.elapsed() >= RING_ROOM_SPIN {
            return outcome;
        }
    }
}

/// What this process knows of the channel's ring, shared by clones of a sender.
pub(super) struct SenderRing {
    /// The fork generation `state` belongs to: a forked child starts over.
    born: AtomicU64,
    state: ForkLock<RingState>,
    /// When this process last looked whether the receiver hung up (coarse clock, nanoseconds).
    looked: AtomicU64,
    /// The fork generation that retired the ring without the state (see
    /// `route_in_stuck_child`); `u64::MAX` when none did.
    retired_in: AtomicU64,
    /// Whether [`SENDERS`] names the sender (it was received, or has been sent in a message).
    held: AtomicBool,
    /// Sends of this process inside [`OsIpcSender::send_message`]: one may hold a ticket whose
    /// marker is not published yet, outside the state's lock, so `exit` keeps the slot then.
    sending: AtomicUsize,
}

/// Counts a send in [`SenderRing::sending`] while it lives.
struct Sending<'a>(&'a AtomicUsize);

impl<'a> Sending<'a> {
    fn start(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Sending(count)
    }
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What [`SENDERS`] keeps of a sender: every part weakly, so that the last copy's drop closes
/// the socket (a hang-up, if no other process holds it).
pub(super) struct WeakSender {
    fd: Weak<OwnedFd>,
    pool: Weak<PayloadPool>,
    ring: Weak<SenderRing>,
}

impl Shared for OsIpcSender {
    type Weak = WeakSender;

    fn downgrade(&self) -> WeakSender {
        WeakSender { fd: Arc::downgrade(&self.fd), pool: Arc::downgrade(&self.pool), ring: Arc::downgrade(&self.ring) }
    }

    fn upgrade(weak: &WeakSender) -> Option<Self> {
        // A copy being dropped right now may have dropped some parts already: then it is gone.
        Some(OsIpcSender { fd: weak.fd.upgrade()?, pool: weak.pool.upgrade()?, ring: weak.ring.upgrade()? })
    }

    fn is_gone(weak: &WeakSender) -> bool {
        weak.fd.strong_count() == 0 || weak.pool.strong_count() == 0 || weak.ring.strong_count() == 0
    }
}

enum RingState {
    /// Not looked for yet, or not there at the last look: the channel has no ring yet.
    Unaware,
    /// Mapped, no slot claimed yet.
    Mapped(Arc<Control>),
    /// Writing in a slot of its own.
    Writing(RingWriter),
    /// Retired, or unusable here: every message takes the socket.
    Absent,
}

impl RingState {
    /// The writer, claiming a slot first if none is claimed yet; `None` when the ring is not
    /// known, or (then `Absent`) when every slot is taken. A retired ring is noticed by the
    /// caller when the ring refuses a message (a look at the word on every send would cost a
    /// cache miss on the line the receiver takes from).
    fn writer(&mut self, born: u64) -> Option<&mut RingWriter> {
        if let RingState::Mapped(control) = self {
            // A process that cannot tell its forked children from itself takes no slot (a
            // child would write into it too).
            let claimed = fork::detectable().then(|| RingWriter::claim(control.clone(), born)).flatten();
            *self = match claimed {
                Some(writer) => RingState::Writing(writer),
                None => {
                    // No slot (every one is taken, or none may be): plain packets keep order
                    // only if nobody writes in the ring from now on.
                    control.close();
                    RingState::Absent
                }
            };
        }
        match self {
            RingState::Writing(writer) => Some(writer),
            _ => None,
        }
    }

    /// Forgets a retired ring (`true`): from now on every message takes the socket.
    fn forget_if_retired(&mut self) -> bool {
        let retired = matches!(self, RingState::Writing(writer) if writer.control().is_closed());
        if retired {
            *self = RingState::Absent;
        }
        retired
    }
}

impl SenderRing {
    /// Decides where the message goes; `small` is its bytes when the ring could carry it. A
    /// `patient` send waits up to [`RING_ROOM_SPIN`] for room in a full ring.
    fn route(&self, socket: BorrowedFd<'_>, small: Option<&[u8]>, patient: bool) -> io::Result<Route> {
        let Some(mut state) = self.state() else {
            return self.route_in_stuck_child(socket);
        };
        // A sender that knows of no ring sends on the socket and looks for the ring after the
        // send (`place_ticket`), which the order needs anyway: a look before the send too would
        // cost every new sender a second system call, to spare a place holder only where the
        // ring was made before the sender came.
        if matches!(*state, RingState::Unaware) {
            return Ok(Route::Unaware);
        }
        let born = self.born.load(Ordering::Relaxed);
        if let (Some(data), Some(writer)) = (small, state.writer(born)) {
            if self.receiver_died(socket)? {
                // The socket says so to the send.
                *state = RingState::Absent;
                return Ok(Route::Plain);
            }
            let mut outcome = writer.send(data);
            if outcome == Outcome::NoRoom && patient {
                outcome = wait_for_room_briefly(writer, data);
            }
            if outcome == Outcome::Sent {
                return Ok(Route::Delivered);
            }
        }
        if state.forget_if_retired() {
            return Ok(Route::Plain);
        }
        Ok(match state.writer(born) {
            Some(writer) => match writer.ticket() {
                Some(ticket) => Route::Ticket(ticket),
                // Full although the receiver holds nothing: a peer keeps this slot full (see
                // `RingWriter::stalled`); the ring is retired and the socket takes over.
                None if writer.stalled() => {
                    writer.control().close();
                    *state = RingState::Absent;
                    Route::Plain
                }
                None => Route::Full,
            },
            None => Route::Plain,
        })
    }

    /// Where a message goes in a child forked while another thread held the state, which no
    /// thread here can ever take: the socket alone. Its plain packets keep their order only if
    /// nobody writes in the ring any more, so the child retires the ring, found anew (the
    /// state's copy of it is out of reach). While there is no ring yet, it looks again after
    /// each plain send (`Unaware`, then [`place_ticket`](Self::place_ticket)).
    fn route_in_stuck_child(&self, socket: BorrowedFd<'_>) -> io::Result<Route> {
        // A look that fails (out of descriptors for the copy) sends on the socket all the same,
        // and is taken again after the send.
        Ok(match self.retire_found_ring(socket) {
            Ok(true) => Route::Plain,
            _ => Route::Unaware,
        })
    }

    /// Retires the channel's ring if there is one (`true`; also when it is known to have none),
    /// remembering that this process did, so that it looks only once.
    fn retire_found_ring(&self, socket: BorrowedFd<'_>) -> io::Result<bool> {
        let generation = fork::generation();
        if self.retired_in.load(Ordering::Acquire) == generation {
            return Ok(true);
        }
        let retired = match find_ring(socket)? {
            RingState::Mapped(control) => {
                control.close();
                true
            }
            RingState::Absent => true,
            _ => false,
        };
        if retired {
            self.retired_in.store(generation, Ordering::Release);
        }
        Ok(retired)
    }

    /// Whether the receiver's socket hung up, looked at only when [`HANG_UP_LOOK_EVERY`] passed
    /// since this process last looked (a message in the ring of a receiver that died would be
    /// lost without an error; one on the socket fails).
    fn receiver_died(&self, socket: BorrowedFd<'_>) -> io::Result<bool> {
        let now = coarse_now();
        if now.saturating_sub(self.looked.load(Ordering::Relaxed)) < HANG_UP_LOOK_EVERY.as_nanos() as u64 {
            return Ok(false);
        }
        self.looked.store(now, Ordering::Relaxed);
        hung_up(socket)
    }

    /// After a plain packet sent while no ring was known: looks again, and returns the ticket of
    /// a place holder when the ring is there now (`None` when there is none, or when the ring
    /// has no room for its marker: it is retired then, which keeps the order as well).
    fn place_ticket(&self, socket: BorrowedFd<'_>) -> Option<u64> {
        let Some(mut state) = self.state() else {
            // See `route_in_stuck_child`: a ring found now is retired before the send returns,
            // which keeps the order as a place holder would. A look that fails is taken again
            // at the next send.
            let _ = self.retire_found_ring(socket);
            return None;
        };
        if matches!(*state, RingState::Unaware) {
            // A look that fails (out of descriptors for the copy) is taken again at the next send.
            *state = find_ring(socket).unwrap_or(RingState::Unaware);
        }
        if state.forget_if_retired() {
            return None;
        }
        let writer = state.writer(self.born.load(Ordering::Relaxed))?;
        let ticket = writer.ticket();
        if ticket.is_none() {
            writer.control().close();
            *state = RingState::Absent;
        }
        ticket
    }

    /// Waits until the receiver frees room in this process's slot, or `timeout` passes (at once
    /// when room came meanwhile).
    fn wait_for_room(&self, timeout: Duration) {
        let waiter = match self.state() {
            Some(mut state) => state.writer(self.born.load(Ordering::Relaxed)).and_then(RingWriter::announce_wait),
            None => None,
        };
        // The state's lock is not held while waiting: the other clones of this sender go on.
        if let Some((control, slot)) = waiter {
            control.wait_for_room(slot, timeout);
        }
    }

    /// Gives this process's slot back, unless a thread is inside a send (while the process
    /// exits: see `at_exit.rs`): one that holds the state's lock, or one between its ticket and
    /// its marker, which holds no lock (review 3, F1). A send after it looks for the ring again,
    /// as a new sender does.
    pub(super) fn give_back_slot(&self) {
        if self.born.load(Ordering::Acquire) != fork::generation() {
            return;
        }
        if let Some(mut state) = self.state.try_lock() {
            if matches!(*state, RingState::Writing(_)) && self.sending.load(Ordering::SeqCst) == 0 {
                // The writer's drop lets the slot go.
                *state = RingState::Unaware;
            }
        }
    }

    /// Retires the ring: from now on every sender uses the socket.
    fn retire(&self) {
        if let Some(mut state) = self.state() {
            if let Some(writer) = state.writer(self.born.load(Ordering::Relaxed)) {
                writer.control().close();
            }
            *state = RingState::Absent;
        }
    }

    /// Publishes the marker of a packet just sent with `ticket`, or gives its room back when
    /// the packet was not `sent`.
    fn settle(&self, ticket: u64, sent: bool) {
        if let Some(mut state) = self.state() {
            match &mut *state {
                RingState::Writing(writer) if sent => writer.mark(ticket),
                RingState::Writing(writer) => writer.cancel(),
                // The ring went away meanwhile (retired): the packet needs no marker.
                _ => {}
            }
        }
    }

    /// The state, started over in a child made by `fork` (the parent's slot stays the
    /// parent's); `None` in a child forked while another thread held it (see [`ForkLock`]).
    fn state(&self) -> Option<MutexGuard<'_, RingState>> {
        let generation = fork::generation();
        let mut state = self.state.lock()?;
        if self.born.load(Ordering::Acquire) != generation {
            *state = RingState::Unaware;
            self.born.store(generation, Ordering::Release);
        }
        Some(state)
    }
}

/// The coarse monotonic clock, in nanoseconds (a read of the vDSO's last tick, no system call).
fn coarse_now() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    (now.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(now.tv_nsec as u64)
}

/// Looks for the ring's control memfd, which the receiver left queued in this direction of the
/// socket, and maps it: `Unaware` when there is none yet, `Absent` when it is broken or when the
/// receiver left word that the channel never gets one.
fn find_ring(socket: BorrowedFd<'_>) -> io::Result<RingState> {
    // A look with room remakes a reserve that is missing (an atomic load when it is there), so
    // that the next look at the limit has it (review 4).
    reserve::keep();
    match find_ring_once(socket) {
        // No room for the copy of the control memfd: the look takes the room of the
        // descriptor this process keeps in reserve for it.
        Err(error) if OutOfDescriptors::is(&error) => {
            reserve::with_one_free(|| find_ring_once(socket)).unwrap_or(Err(error))
        }
        result => result,
    }
}

/// One look of [`find_ring`].
fn find_ring_once(socket: BorrowedFd<'_>) -> io::Result<RingState> {
    let mut packet = [0u8; CONTROL_PACKET.len()];
    match recv_packet(socket, &mut packet, RecvFlags::PEEK | RecvFlags::DONTWAIT)
        .and_then(|packet| packet.map(Packet::accepted).transpose())
    {
        Ok(Some((len, mut fds))) if len == CONTROL_PACKET.len() && packet == CONTROL_PACKET && fds.len() == 1 => {
            let fd = fds.pop().expect("one descriptor");
            Ok(Control::open(fd.as_fd()).map_or(RingState::Absent, |control| RingState::Mapped(Arc::new(control))))
        }
        Ok(Some((len, fds))) if len == NO_RING_PACKET.len() && packet == NO_RING_PACKET && fds.is_empty() => {
            Ok(RingState::Absent)
        }

        // None yet.
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(RingState::Unaware),
        // Nothing can ever come in this direction: the receiver is gone (and the send says so),
        // or a holder of the socket shut it down.
        Ok(None) => Ok(RingState::Absent),
        // Out of descriptors for the copy (or a receiver that queued something else): this send
        // fails, and a later one looks again.
        Err(error) => Err(error),
        _ => Ok(RingState::Absent),
    }
}
