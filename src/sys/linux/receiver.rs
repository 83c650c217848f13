//! The receiving end of a channel: messages from the channel's ring ([`super::ring`]) and from
//! its socket, in the one order their sends took effect. A channel has no ring until its
//! receiver has taken [`RING_AFTER`] messages from the socket that the ring could have carried;
//! then it makes one.
//!
//! A receive delivers, in this order of preference: the ring's next entry (a marker's packet is
//! read from the socket at the marker's place); a packet no marker announced yet (only when the
//! ring is still empty after the packet was seen, so that nothing published before it is
//! overtaken); else it polls the ring for a while, then announces that it sleeps (`ASLEEP`) and
//! waits on the socket, whose next packet wakes it.

use crate::sys::ForkLock;
use std::cell::RefCell;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use rustix::net::{recv, RecvFlags, SendFlags};

use super::fork;
use super::frame::{FrameHeader, CONTROL_PACKET, HEADER_LEN, INLINE_MAX, NO_RING_PACKET};
use super::inflight::QueuedUnit;
use super::intake::PeerMaps;
use super::ring::{Control, Front, RingReader, RING_AFTER, RING_MESSAGE_MAX};
use super::side::SideStash;
use super::socket::{
    decode_message, is_the_end, past_reset, recv_packet_looked_at, send_packet, wait_and_look, FirstLook, ReceiveBuffer,
};
use super::sys::{retry_on_intr, wait_readable};
use crate::sys::{LimitsCell, OsIpcMessage, ReceiveLimits, RecentWait, RecvError, Wait};

/// The receiving end of a channel.
pub(crate) struct OsIpcReceiver {
    fd: OwnedFd,
    /// The channel's ring, once it has one.
    ring: OnceLock<Box<RingReader>>,
    /// Messages taken from the socket while the channel had no ring: at [`RING_AFTER`] the
    /// receiver makes one.
    socket_messages: AtomicU32,
    /// Its senders were told that the channel never gets a ring (rings turned off where the
    /// receiver was when it would have made one): it never makes one, wherever it goes.
    ringless: AtomicBool,
    /// The fork generation this receiver was made in: a copy inherited through `fork` reads the
    /// socket alone and never makes a ring.
    born: u64,
    /// Serialises this process's threads around the ring's receiving side.
    ring_lock: ForkLock<()>,
    /// Serialises this process's reads of the socket: a packet is peeked at, then taken (see
    /// `socket.rs`, `recv_one`), and no other thread here may take it in between.
    /// It guards the side-socket descriptors of a message kept queued at the descriptor limit
    /// (see `side.rs`).
    socket_lock: ForkLock<SideStash>,
    /// Reads of the socket so far (see `read_ticketed`), counted under `socket_lock`.
    socket_reads: AtomicU64,
    limits: LimitsCell,
    recent_wait: RecentWait,
    /// Mappings of the pooled memfds this channel's senders reuse.
    peer_maps: PeerMaps,
    /// The unit of this process's budget of queued control memfds (`inflight.rs`) that the
    /// ring this receiver made here took.
    queued: OnceLock<QueuedUnit>,
}

/// What a receiver that moves tells the process it arrives in about its channel's ring: one
/// byte per channel end in the packet (`wire_kind`), then the ring's control memfd after the
/// end's socket when there is one.
pub(super) enum RingNews<Fd> {
    /// No ring yet: the receiver makes one once the channel carries traffic.
    NotYet,
    /// The ring, by its control memfd.
    Ring(Fd),
    /// The senders were told the channel never gets one.
    Never,
}

/// The bytes that stand for [`RingNews`] in a packet's channel list (a sender's end is
/// [`KIND_NOT_YET`]).
pub(super) const KIND_NOT_YET: u8 = 0;
pub(super) const KIND_RING: u8 = 1;
pub(super) const KIND_NEVER: u8 = 2;

impl<Fd> RingNews<Fd> {
    /// The byte that stands for it in a packet's channel list.
    pub(super) fn wire_kind(&self) -> u8 {
        match self {
            RingNews::NotYet => KIND_NOT_YET,
            RingNews::Ring(_) => KIND_RING,
            RingNews::Never => KIND_NEVER,
        }
    }
}

/// Ring entries or socket packets that carry no message (passed markers, place holders) that
/// one step of a receive takes at most before it looks at its deadline again.
const MAX_STEPS: usize = 64;
/// Such steps that one non-blocking receive takes at most before it reports `Empty`.
const MAX_ROUNDS: usize = 4;

thread_local! {
    /// The buffer every receive on this thread reads its packet into.
    static RECV_BUFFER: RefCell<ReceiveBuffer> = RefCell::new(ReceiveBuffer::new(HEADER_LEN + INLINE_MAX));
}

impl OsIpcReceiver {
    /// Adopts a connected socket as a receiver; the channel gets a ring once it carries traffic.
    pub(super) fn new(fd: OwnedFd) -> Self {
        OsIpcReceiver {
            fd,
            ring: OnceLock::new(),
            socket_messages: AtomicU32::new(0),
            ringless: AtomicBool::new(false),
            born: fork::generation(),
            ring_lock: ForkLock::new(()),
            socket_lock: ForkLock::new(SideStash::default()),
            socket_reads: AtomicU64::new(0),
            limits: LimitsCell::new(ReceiveLimits::DEFAULT),
            recent_wait: RecentWait::default(),
            peer_maps: PeerMaps::default(),
            queued: OnceLock::new(),
        }
    }

    /// Adopts a receiver that arrived in a message, with what it brought along of its ring.
    pub(super) fn from_received(fd: OwnedFd, news: RingNews<OwnedFd>) -> io::Result<Self> {
        let receiver = OsIpcReceiver::new(fd);
        match news {
            RingNews::NotYet => {}
            RingNews::Ring(control_fd) => {
                let control = Control::open(control_fd.as_fd())?;
                if !fork::detectable() {
                    // This process could not tell a forked child's reads from its own: the
                    // ring is retired (its senders take the socket), and drained here.
                    control.close();
                }
                let ring = RingReader::new(Arc::new(control), control_fd, receiver.born);
                ring.arrived(queued_bytes(receiver.fd.as_fd()));
                let _ = receiver.ring.set(Box::new(ring));
            }
            RingNews::Never => receiver.ringless.store(true, Ordering::Relaxed),
        }
        Ok(receiver)
    }

    /// Counts a message taken from the socket that the ring could have carried (small, without
    /// channels or regions), and gives the channel a ring at the [`RING_AFTER`]th. A channel
    /// whose messages all carry descriptors (requests with reply channels) never gets one: each
    /// of its messages would pay the ring's marker, and none could use it.
    fn count_socket_message(&self, message: &OsIpcMessage) {
        let ring_could_carry =
            message.channels.is_empty() && message.shared_memory.is_empty() && message.data.len() <= RING_MESSAGE_MAX;
        // At the RING_AFTERth, and again at each further RING_AFTER while a ring could not be had
        // (this process's budget of queued control memfds was spent: `make_ring`).
        if ring_could_carry
            && self.socket_messages.fetch_add(1, Ordering::Relaxed).wrapping_add(1) % RING_AFTER == 0
            && self.ring.get().is_none()
        {
            self.make_ring();
        }
    }

    /// Gives the channel a ring: the control memfd is left queued in the senders' direction of
    /// the socket, where each sender finds it (see `ring/mod.rs`). Without memory or descriptors
    /// for one, or in a copy made by `fork`, the channel simply goes on without. The queued copy
    /// takes a unit of this process's budget (`inflight.rs`): with none left, the channel goes on
    /// over its socket and tries again after [`RING_AFTER`] more messages. When the program
    /// turned rings off (`ipc::set_shared_memory_ring`), the senders are told so instead, so
    /// that they stop looking for one.
    fn make_ring(&self) {
        if self.born != fork::generation() || self.ringless.load(Ordering::Relaxed) {
            return;
        }
        if !crate::sys::ring_switch::shared_memory_ring() || !fork::detectable() {
            return self.decline_ring();
        }
        let Some(unit) = QueuedUnit::take() else { return };
        let Ok((control_fd, control)) = Control::create() else { return };
        let _serialised = self.lock_ring();
        if self.ring.set(Box::new(RingReader::unannounced(Arc::new(control), control_fd, self.born))).is_err() {
            return;
        }
        let ring = self.ring.get().expect("the ring was just set");
        let packet = [io::IoSlice::new(&CONTROL_PACKET)];
        match send_packet(self.fd.as_fd(), &packet, &[ring.fd().as_fd()], SendFlags::DONTWAIT) {
            Ok(()) => {
                ring.announced(queued_bytes(self.fd.as_fd()));
                let _ = self.queued.set(unit.queued_on(self.fd.as_fd()));
            }
            // No sender will find it: retired, the channel goes on over its socket (and the
            // unit, with nothing queued, goes back).
            Err(_) => ring.control().close(),
        }
    }

    /// Tells the senders, where they look for the ring, that the channel never gets one: a
    /// sender that finds this stops looking (a look costs a system call per send). The receiver
    /// then never makes a ring, also after moving to another process (a ring made later would
    /// never be found: the first packet in the senders' direction is what they read).
    fn decline_ring(&self) {
        let _serialised = self.lock_ring();
        if self.ring.get().is_some() || self.ringless.load(Ordering::Relaxed) {
            return;
        }
        let packet = [io::IoSlice::new(&NO_RING_PACKET)];
        // Should it fail (the senders are gone), senders simply go on looking.
        if send_packet(self.fd.as_fd(), &packet, &[], SendFlags::DONTWAIT).is_ok() {
            self.ringless.store(true, Ordering::Relaxed);
        }
    }

    /// The ring this process may use: not a copy inherited through `fork` (which reads the
    /// socket alone), and not a retired ring with nothing left in it.
    fn live_ring(&self) -> Option<&RingReader> {
        self.our_ring().filter(|ring| !ring.is_closed() || ring.has_work())
    }

    /// The ring, if this process reads it. In a copy made by `fork`, the first use takes it
    /// over if its reader is gone, or else retires it (see [`RingReader::inherited`]).
    fn our_ring(&self) -> Option<&RingReader> {
        let ring = self.ring.get()?;
        let generation = fork::generation();
        let ours = ring.is_ours(generation) || ring.inherited(generation, || queued_bytes(self.fd.as_fd()));
        ours.then_some(ring)
    }

    /// What this receiver brings along of its ring when it moves. A `fork` copy whose ring
    /// another process reads brings word that the channel never gets another (its senders
    /// find that ring, retired, where a new one would have to be).
    pub(super) fn travelling_ring(&self) -> RingNews<BorrowedFd<'_>> {
        match self.our_ring() {
            Some(ring) => RingNews::Ring(ring.fd().as_fd()),
            None if self.ringless.load(Ordering::Relaxed) || self.ring.get().is_some() => RingNews::Never,
            None => RingNews::NotYet,
        }
    }

    /// The receiver is about to leave in a message (see [`RingReader::leaving`]).
    pub(super) fn leaving(&self) {
        if let Some(ring) = self.ring.get() {
            ring.leaving();
        }
    }

    /// The send that was to carry the receiver away failed (see [`RingReader::stayed`]).
    pub(super) fn stayed(&self) {
        if let Some(ring) = self.ring.get() {
            ring.stayed();
        }
    }

    /// The receiver left in a message: its ring goes on in the process it went to.
    pub(super) fn depart(&self) {
        if let Some(ring) = self.ring.get() {
            ring.depart();
        }
        // Its control memfd stays queued where this process left it, and its unit stays charged
        // here until that copy is freed (`inflight.rs`, settled when this copy is dropped).
    }

    /// This receiver's socket, for a child to inherit. Only a receiver without a ring can be
    /// handed down this way (one made for the child just before); one with a ring travels in a
    /// message instead.
    pub(super) fn into_fd(self) -> io::Result<OwnedFd> {
        if self.ring.get().is_some() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a receiver with a shared-memory ring is sent in a message, not inherited",
            ));
        }
        // A copy, since the receiver's `Drop` needs its own (the socket stays open throughout).
        self.fd.try_clone()
    }

    /// Called before the receiver sleeps on its descriptor's readiness (an async receive, a
    /// select); `false` means a message waits in the ring and the receive should be retried.
    /// While it sleeps, senders send on the socket, whose packets make the descriptor ready.
    pub fn prepare_to_sleep(&self) -> bool {
        self.live_ring().is_none_or(RingReader::sleep)
    }

    /// Whether this process reads a ring of the channel (its messages make no descriptor ready).
    pub(super) fn has_live_ring(&self) -> bool {
        self.live_ring().is_some()
    }

    /// Whether a message waits in the ring (a load of two words; no system call).
    pub(super) fn has_ring_work(&self) -> bool {
        self.live_ring().is_some_and(RingReader::has_work)
    }

    /// Receives the next message, waiting as `mode` allows.
    pub fn recv(&self, mode: Wait) -> Result<OsIpcMessage, RecvError> {
        self.recv_into(mode, &mut Vec::new())
    }

    /// Like [`recv`](Self::recv); the message's data reuses `buffer`'s allocation (taking it)
    /// when the message is large enough to need one.
    pub fn recv_into(&self, mode: Wait, buffer: &mut Vec<u8>) -> Result<OsIpcMessage, RecvError> {
        // A message that waits in the ring already is taken without reading the clock.
        if let Some(ring) = self.live_ring() {
            ring.wake();
            if let Some(message) = self.next_from_ring(ring, buffer)? {
                if !matches!(mode, Wait::NonBlocking) {
                    self.recent_wait.record_none();
                }
                return Ok(message);
            }
        }
        let start = Instant::now();
        let result = match self.live_ring() {
            Some(ring) => self.recv_with_ring(ring, mode, start, buffer),
            None => {
                let result = match mode {
                    Wait::NonBlocking => self.recv_once(RecvFlags::DONTWAIT, buffer),
                    _ => self.wait_and_recv(mode, start, buffer),
                };
                if let Ok(message) = &result {
                    self.count_socket_message(message);
                }
                result
            }
        };
        if !matches!(mode, Wait::NonBlocking) {
            self.recent_wait.record(start);
        }
        result
    }

    fn recv_with_ring(
        &self,
        ring: &RingReader,
        mode: Wait,
        start: Instant,
        buffer: &mut Vec<u8>,
    ) -> Result<OsIpcMessage, RecvError> {
        let deadline = match mode {
            Wait::Timeout(timeout) => start.checked_add(timeout),
            _ => None,
        };
        let spin = self.recent_wait.spin_window(mode);
        // This thread is awake: senders may use the ring (it announces again before it sleeps).
        ring.wake();
        let mut rounds = 0;
        let out_of_time = || deadline.is_some_and(|deadline| Instant::now() >= deadline);
        loop {
            if let Some(message) = self.next_from_ring(ring, buffer)? {
                return Ok(message);
            }
            match self.unannounced(ring, buffer) {
                Ok(Some(message)) => return Ok(message),
                // The ring or the socket held entries that were no message (passed markers,
                // place holders): go on, but a call that must not wait, or whose time is up,
                // returns after a bounded amount of such work (a peer's flood must not keep it).
                Ok(None) => {
                    rounds += 1;
                    if (matches!(mode, Wait::NonBlocking) && rounds == MAX_ROUNDS) || out_of_time() {
                        return Err(RecvError::Empty);
                    }
                    continue;
                }
                // The socket was empty: the ring may be settled now.
                Err(RecvError::Empty) => ring.wake(),
                Err(error) => return Err(error),
            }
            if matches!(mode, Wait::NonBlocking) {
                return Err(RecvError::Empty);
            }
            // Poll the ring first: a message that comes within the window is taken without a
            // system call, and without the sender having to wake this thread.
            if start.elapsed() < spin && ring.is_settled() {
                'polling: while start.elapsed() < spin {
                    // The clock is read every eighth look only.
                    for _ in 0..8 {
                        if ring.has_work() {
                            break 'polling;
                        }
                        // A look at the ring pulls its cache line from the sender's core, which
                        // the sender's next publish must then take back: look less often than
                        // we could.
                        for _ in 0..16 {
                            std::hint::spin_loop();
                        }
                    }
                }
                continue;
            }
            if !ring.sleep() {
                // Something came into the ring meanwhile (or a peer keeps publishing entries
                // that are no message): look again, unless the time is up.
                if out_of_time() {
                    return Err(RecvError::Empty);
                }
                continue;
            }
            // No deadline: a blocking receive, or a timeout too long to matter.
            let left = deadline.map_or(Duration::MAX, |deadline| deadline.saturating_duration_since(Instant::now()));
            let readable = wait_readable(&self.fd, left);
            ring.wake();
            if !readable? {
                return self.next_from_ring(ring, buffer)?.ok_or(RecvError::Empty);
            }
        }
    }

    /// The next message from the ring, reading a marker's packet from the socket in its place;
    /// `None` when the ring is empty, or after [`MAX_STEPS`] entries passed without a message
    /// (markers whose packets are gone: a peer's flood must not keep one call for ever).
    fn next_from_ring(&self, ring: &RingReader, buffer: &mut Vec<u8>) -> Result<Option<OsIpcMessage>, RecvError> {
        let _serialised = self.lock_ring();
        for _ in 0..MAX_STEPS {
            match ring.front(buffer)? {
                Front::Empty => return Ok(None),
                Front::Data(data) => {
                    self.limits.check(data.len() as u64, 0).map_err(|error| RecvError::Io(error.into_io()))?;
                    return Ok(Some(OsIpcMessage {
                        data,
                        channels: Vec::new(),
                        shared_memory: Vec::new(),
                        max_nesting: self.limits.max_nesting(),
                    }));
                }
                Front::Marker(ticket) if ring.was_delivered(ticket) => ring.pass()?,
                Front::Marker(ticket) => match self.recv_ticketed(RecvFlags::DONTWAIT, buffer) {
                    // The packet is gone: another reader (a `fork` copy of this receiver) took it.
                    (Err(RecvError::Empty) | Err(RecvError::Disconnected), _) => ring.pass()?,
                    (received, theirs) => {
                        if theirs == ticket {
                            ring.pass()?;
                        } else {
                            // A packet queued before the marker's own, whose marker comes later:
                            // it may go first. Refused, it still keeps its place (its marker is
                            // passed when it comes), and the marker in front stays.
                            ring.delivered_ahead(theirs);
                        }
                        if let Some(message) = received? {
                            return Ok(Some(message));
                        }
                    }
                },
            }
        }
        Ok(None)
    }

    /// A packet on the socket that no marker in the ring announced yet: taken only if the ring
    /// is empty once the packet is known to be there (else `None`: the ring goes first).
    /// `Empty` when the socket has nothing, `Disconnected` at its end.
    fn unannounced(&self, ring: &RingReader, buffer: &mut Vec<u8>) -> Result<Option<OsIpcMessage>, RecvError> {
        let fresh = ring.is_fresh();
        let waiting = self.packet_waiting().inspect_err(|error| {
            if fresh && matches!(error, RecvError::Empty) {
                ring.settle();
            }
        })?;
        if !waiting {
            // The senders are gone; anything they published before is in the ring already.
            if ring.has_work() {
                return Ok(None);
            }
            self.peer_maps.clear();
            return Err(RecvError::Disconnected);
        }
        let _serialised = self.lock_ring();
        if ring.has_work() {
            return Ok(None);
        }
        match self.recv_ticketed(RecvFlags::DONTWAIT, buffer) {
            (Err(RecvError::Empty), _) => Ok(None),
            (received, ticket) => {
                // Delivered (or refused) before its marker, which is passed when it comes.
                ring.delivered_ahead(ticket);
                received
            }
        }
    }

    /// Whether a packet waits on the socket (`false` at end-of-file); `Empty` when neither.
    fn packet_waiting(&self) -> Result<bool, RecvError> {
        let peek = || {
            let mut byte = [0u8; 1];
            match past_reset(|| retry_on_intr(|| recv(&self.fd, &mut byte, RecvFlags::PEEK | RecvFlags::DONTWAIT))) {
                Ok(Some((_, received))) if received > 0 => Ok(true),
                // Nothing read: the end, or an empty packet (which the read refuses).
                Ok(Some(_)) => Ok(!is_the_end(self.fd.as_fd()).map_err(RecvError::Io)?),
                Ok(None) => Ok(false),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => Err(RecvError::Empty),
                Err(error) => Err(RecvError::Io(error)),
            }
        };
        // A read that finds the queue empty and *then* sees the hang-up reports end-of-file even
        // if a last packet was queued in between: look once more.
        match peek()? {
            true => Ok(true),
            false => peek(),
        }
    }

    fn lock_ring(&self) -> Option<MutexGuard<'_, ()>> {
        self.lock(&self.ring_lock)
    }

    /// One of this receiver's locks. In a copy made by `fork` (which may take the ring over),
    /// a lock that another thread of the parent held at the fork is never let go: the copy
    /// goes on without it (`None`) rather than wait for ever (see [`ForkLock`]).
    fn lock<'a, T>(&self, lock: &'a ForkLock<T>) -> Option<MutexGuard<'a, T>> {
        if self.born == fork::generation() {
            return Some(lock.lock_here());
        }
        lock.lock()
    }

    /// Waits on the socket alone (a channel without a ring), polling it first.
    fn wait_and_recv(&self, mode: Wait, start: Instant, buffer: &mut Vec<u8>) -> Result<OsIpcMessage, RecvError> {
        let deadline = match mode {
            Wait::Timeout(timeout) => Some(start.checked_add(timeout)),
            _ => None,
        };
        // Poll first: a message that arrives within the spin window is taken without the
        // thread going to sleep and waiting to be woken. A blocking receive that does not poll
        // reads at once (a message already queued is taken without sleeping all the same).
        let spin = self.recent_wait.spin_window(mode);
        if !(spin.is_zero() && matches!(mode, Wait::Blocking)) {
            match self.poll_briefly(start, spin, buffer) {
                Err(RecvError::Empty) => {}
                result => return result,
            }
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

    /// Reads the next message from the socket, passing place holders (which only a reader
    /// without the ring meets: a copy made by `fork`, or a ring retired). A non-blocking read
    /// passes at most [`MAX_STEPS`] of them (then `Empty`): a peer's flood must not keep one
    /// call for ever.
    fn recv_once(&self, flags: RecvFlags, reuse: &mut Vec<u8>) -> Result<OsIpcMessage, RecvError> {
        let mut steps = 0;
        loop {
            let (received, ticket) = self.recv_ticketed(flags, reuse);
            if let Some(ring) = self.ring.get().filter(|_| ticket != 0) {
                // A `fork` copy that reads the socket alone takes packets whose markers are in
                // the ring: should it take the ring over, it passes those markers.
                ring.read_elsewhere(ticket, fork::generation());
            }
            if let Some(message) = received? {
                return Ok(message);
            }
            steps += 1;
            if steps == MAX_STEPS && flags.contains(RecvFlags::DONTWAIT) {
                return Err(RecvError::Empty);
            }
        }
    }

    /// Reads one packet from the socket: its message (`None` for a place holder), and its
    /// ticket whatever became of it (0 when it had none, or no readable header), so that a
    /// refused packet still keeps its place in the ring's order.
    fn recv_ticketed(&self, flags: RecvFlags, reuse: &mut Vec<u8>) -> (Result<Option<OsIpcMessage>, RecvError>, u64) {
        if !flags.contains(RecvFlags::DONTWAIT) {
            // Wait without holding the socket's lock (a `try_recv` on another thread must not
            // wait behind this one), then read without waiting. The wait is the packet's first
            // look, which the read uses if no read came between (`reads` unchanged).
            loop {
                let reads = self.socket_reads.load(Ordering::Acquire);
                let look = match wait_and_look(self.fd.as_fd()) {
                    Ok(look) => look.map(|look| (reads, look)),
                    Err(error) => return (Err(RecvError::Io(error)), 0),
                };
                match self.read_ticketed(flags | RecvFlags::DONTWAIT, reuse, look) {
                    // Another thread took the packet that made the socket readable.
                    (Err(RecvError::Empty), _) => continue,
                    received => return received,
                }
            }
        }
        self.read_ticketed(flags, reuse, None)
    }

    /// [`recv_ticketed`](Self::recv_ticketed) without waiting, given what a first look saw
    /// when [`socket_reads`](Self::socket_reads) was at the count it carries.
    fn read_ticketed(
        &self,
        flags: RecvFlags,
        reuse: &mut Vec<u8>,
        look: Option<(u64, FirstLook)>,
    ) -> (Result<Option<OsIpcMessage>, RecvError>, u64) {
        let mut stash = self.lock(&self.socket_lock);
        // Packets leave the queue's front only by reads, which all count under this lock (a
        // `fork` copy's reads aside, as with every look: see `recv_one`).
        let look = look.filter(|(reads, _)| *reads == self.socket_reads.load(Ordering::Relaxed)).map(|(_, look)| look);
        RECV_BUFFER.with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            let buffer = buffer.get();
            let socket = self.fd.as_fd();
            let mut received = recv_packet_looked_at(
                socket,
                buffer,
                flags,
                look,
                stash.as_deref_mut().map(|stash| (stash, &self.limits)),
            );
            if matches!(received, Ok(None)) && flags.contains(RecvFlags::DONTWAIT) {
                // A non-blocking read that finds the queue empty and *then* sees the peer's
                // hang-up reports end-of-file, even if the peer's last packet was queued in
                // between. The hang-up comes after that packet, so one more read settles it.
                let side = stash.as_deref_mut().map(|stash| (stash, &self.limits));
                received = recv_packet_looked_at(socket, buffer, flags, None, side);
            }
            // Counted once the packet left the queue, before the lock is let go: a look that
            // loaded the count before this read must not match it afterwards.
            if !flags.contains(RecvFlags::PEEK) {
                self.socket_reads.fetch_add(1, Ordering::Release);
            }
            match received {
                Ok(Some(packet)) => {
                    if !flags.contains(RecvFlags::PEEK) {
                        if let Some(ring) = self.ring.get() {
                            ring.consumed(packet.len);
                        }
                    }
                    let ticket = FrameHeader::decode(&buffer[..packet.len]).map_or(0, |header| header.ticket);
                    let decoded = packet.accepted_with_side().and_then(|(len, fds, side)| {
                        decode_message(&buffer[..len], fds, side, &self.limits, &self.peer_maps, reuse)
                    });
                    match decoded {
                        Ok((message, _)) => (Ok(message), ticket),
                        Err(error) => (Err(RecvError::Io(error)), ticket),
                    }
                }
                Ok(None) => {
                    // The senders are gone, and their memfds will not come again.
                    self.peer_maps.clear();
                    (Err(RecvError::Disconnected), 0)
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => (Err(RecvError::Empty), 0),
                Err(error) => (Err(RecvError::Io(error)), 0),
            }
        })
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

/// Bytes of the packets queued on `socket` (`u64::MAX`, which never counts down, if unknown).
fn queued_bytes(socket: BorrowedFd<'_>) -> u64 {
    rustix::io::ioctl_fionread(socket).unwrap_or(u64::MAX)
}

impl Drop for OsIpcReceiver {
    fn drop(&mut self) {
        // The unit of a ring made here goes back once the queued control memfd is freed (every
        // sending end closed): now, or when the kernel no longer knows the sending socket. See
        // `inflight.rs`.
        if let Some(unit) = self.queued.take() {
            unit.settle_at_drop(self.fd.as_fd());
        }
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

#[cfg(test)]
mod tests {
    use super::super::socket::channel;
    use super::*;
    use crate::sys::OsIpcChannel;

    use super::super::frame::PLACE_HOLDER;
    use super::super::ring::{Outcome, RingWriter};

    /// A channel whose receiver has a ring its senders may use (it took [`RING_AFTER`] messages
    /// and then saw its socket empty), and a writer of its own in that ring, as a hostile
    /// co-sender that maps the control memfd has.
    fn channel_with_ring() -> (super::super::sender::OsIpcSender, OsIpcReceiver, RingWriter) {
        let (tx, rx) = channel().unwrap();
        for byte in 0..RING_AFTER as u8 {
            assert!(tx.send(&[byte], vec![], vec![], Wait::Blocking).is_ok());
            assert_eq!(rx.recv(Wait::Blocking).unwrap().data, [byte]);
        }
        assert!(matches!(rx.recv(Wait::NonBlocking), Err(RecvError::Empty)));
        let control = rx.ring.get().expect("a ring after RING_AFTER messages").control().clone();
        let writer = RingWriter::claim(control, fork::generation()).unwrap();
        (tx, rx, writer)
    }

    /// A channel with a ring its senders may use, or a plain one.
    fn test_channel(with_ring: bool) -> (super::super::sender::OsIpcSender, OsIpcReceiver) {
        if with_ring {
            let (tx, rx, _writer) = channel_with_ring();
            (tx, rx)
        } else {
            channel().unwrap()
        }
    }

    /// A packet as a peer writes it: `payload` inline, with `ticket`.
    fn raw_packet(tx: &super::super::sender::OsIpcSender, flags: u32, payload: &[u8], ticket: u64) {
        let header = FrameHeader { flags, channels: 0, shared_memory: 0, payload_len: payload.len() as u64, ticket };
        let header = header.encode();
        let iov = [io::IoSlice::new(&header), io::IoSlice::new(payload)];
        send_packet(tx.fd.as_fd(), &iov, &[], SendFlags::empty()).unwrap();
    }

    /// Item 1 of issue 22: a co-sender that publishes markers whose packets never come (as
    /// many as its slot holds) cannot keep a non-blocking receive inside its call: the receive
    /// passes a bounded number of them and returns, leaving the rest for later calls; a timed
    /// one returns by its deadline.
    #[test]
    fn a_marker_flood_does_not_hold_a_receive() {
        let (_tx, rx, mut writer) = channel_with_ring();
        let mut published = 0;
        while let Some(ticket) = writer.ticket() {
            writer.mark(ticket);
            published += 1;
        }
        assert!(published > MAX_STEPS * MAX_ROUNDS, "only {published} markers fit");
        assert!(matches!(rx.recv(Wait::NonBlocking), Err(RecvError::Empty)));
        assert!(rx.has_ring_work(), "one non-blocking receive passed all {published} markers");
        let mut calls = 1;
        while rx.has_ring_work() {
            assert!(matches!(rx.recv(Wait::NonBlocking), Err(RecvError::Empty)));
            calls += 1;
        }
        // Each call passes at least one bounded step of them.
        assert!(calls > 1 && calls <= published.div_ceil(MAX_STEPS), "{calls} calls for {published}");
    }

    /// Item 2: nor can one that queues place holders (with a ring, and without one, where a
    /// `fork` copy or a retired ring reads the socket alone).
    #[test]
    fn a_place_holder_flood_does_not_hold_a_receive() {
        for with_ring in [true, false] {
            let (tx, rx) = test_channel(with_ring);
            let header = FrameHeader { flags: PLACE_HOLDER, channels: 0, shared_memory: 0, payload_len: 0, ticket: 9 };
            let header = header.encode();
            let mut queued = 0;
            while send_packet(tx.fd.as_fd(), &[io::IoSlice::new(&header)], &[], SendFlags::DONTWAIT).is_ok() {
                queued += 1;
            }
            assert!(queued > MAX_STEPS * MAX_ROUNDS, "only {queued} place holders fit");
            assert!(matches!(rx.recv(Wait::NonBlocking), Err(RecvError::Empty)), "ring: {with_ring}");
            assert!(
                matches!(rx.packet_waiting(), Ok(true)),
                "ring {with_ring}: one non-blocking receive read all {queued} place holders"
            );
        }
    }

    /// A co-sender that keeps publishing markers without packets, as fast as the receiver
    /// passes them (here from 8 slots), cannot hold a timed receive past its deadline (found in
    /// review: the path where the receiver tries to sleep and finds the ring busy again never
    /// looked at the deadline).
    #[test]
    fn a_marker_stream_does_not_hold_a_timed_receive_past_its_deadline() {
        use std::sync::atomic::AtomicBool;
        let (_tx, rx, writer) = channel_with_ring();
        let control = rx.ring.get().unwrap().control().clone();
        let mut writers = vec![writer];
        for _ in 0..7 {
            writers.push(RingWriter::claim(control.clone(), fork::generation()).unwrap());
        }
        let stop = AtomicBool::new(false);
        let elapsed = std::thread::scope(|scope| {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    for writer in writers.iter_mut() {
                        while let Some(ticket) = writer.ticket() {
                            writer.mark(ticket);
                        }
                    }
                }
            });
            while !rx.has_ring_work() {
                std::thread::yield_now();
            }
            let start = Instant::now();
            let result = rx.recv(Wait::Timeout(Duration::from_millis(50)));
            let elapsed = start.elapsed();
            stop.store(true, Ordering::Relaxed);
            assert!(matches!(result, Err(RecvError::Empty)), "{result:?}");
            elapsed
        });
        // A bounded step beyond the deadline, never the flood's length.
        assert!(elapsed < Duration::from_secs(2), "try_recv_timeout(50 ms) returned after {elapsed:?}");
    }

    /// A co-sender that shuts the channel's sending socket down for writing (no sender can send
    /// on it any more): the receiver delivers what was queued, then `Disconnected`, in every mode, and
    /// a select over it returns (found in review: every receive reported an empty packet, and a
    /// blocking select spun).
    #[test]
    fn a_socket_shut_down_for_writing_ends_the_channel() {
        for with_ring in [false, true] {
            let (tx, rx) = test_channel(with_ring);
            assert!(tx.send(b"honest", vec![], vec![], Wait::Blocking).is_ok());
            rustix::net::shutdown(&*tx.fd, rustix::net::Shutdown::Write).unwrap();
            assert_eq!(rx.recv(Wait::NonBlocking).unwrap().data, b"honest");
            for mode in [Wait::NonBlocking, Wait::Blocking, Wait::Timeout(Duration::from_millis(10))] {
                assert!(matches!(rx.recv(mode), Err(RecvError::Disconnected)), "ring {with_ring}, {mode:?}");
            }
        }
        let (tx, rx) = channel().unwrap();
        let mut set = super::super::select::OsIpcReceiverSet::new().unwrap();
        set.add(rx).unwrap();
        rustix::net::shutdown(&*tx.fd, rustix::net::Shutdown::Write).unwrap();
        let results = set.select(Wait::Blocking).unwrap();
        assert!(matches!(results[..], [crate::sys::OsIpcSelectionResult::ChannelClosed(_)]), "{results:?}");
    }

    /// A co-sender that shuts the sending socket down for reading (where senders look for the
    /// ring) does not make new senders fail: they stop looking, and send on the socket.
    #[test]
    fn a_socket_shut_down_for_reading_still_sends() {
        let (tx, rx) = channel().unwrap();
        rustix::net::shutdown(&*tx.fd, rustix::net::Shutdown::Read).unwrap();
        let fresh = super::super::sender::OsIpcSender::from_fd(tx.fd.try_clone().unwrap());
        for byte in 0..3 {
            assert!(fresh.send(&[byte], vec![], vec![], Wait::Blocking).is_ok(), "send {byte}");
            assert_eq!(rx.recv(Wait::Blocking).unwrap().data, [byte]);
        }
    }

    /// Item 3: an empty packet from a live sender is a malformed message, not the end: the
    /// receiver says so once and goes on; the end still comes when the senders are gone.
    #[test]
    fn an_empty_packet_is_refused_and_not_taken_for_the_end() {
        for with_ring in [false, true] {
            let (tx, rx) = test_channel(with_ring);
            for mode in [Wait::NonBlocking, Wait::Blocking] {
                send_packet(tx.fd.as_fd(), &[], &[], SendFlags::empty()).unwrap();
                assert!(tx.send(b"after", vec![], vec![], Wait::Blocking).is_ok());
                // With a ring, the message may come first: a packet without a ticket (as the
                // forged one is) is ordered only against the socket.
                let (mut refused, mut after) = (0, 0);
                for _ in 0..2 {
                    match rx.recv(mode) {
                        Err(RecvError::Io(error)) if error.kind() == io::ErrorKind::InvalidData => refused += 1,
                        Ok(message) if message.data == b"after" => after += 1,
                        other => panic!("ring {with_ring}, {mode:?}: the empty packet gave {other:?}"),
                    }
                }
                assert_eq!((refused, after), (1, 1), "ring {with_ring}, {mode:?}");
            }
            send_packet(tx.fd.as_fd(), &[], &[], SendFlags::empty()).unwrap();
            drop(tx);
            // The senders are gone, and nothing with bytes is queued: the end.
            assert!(matches!(rx.recv(Wait::Blocking), Err(RecvError::Disconnected)), "ring {with_ring}");
        }
    }

    /// Item 8: a packet refused at another packet's marker (here over the receiver's limits)
    /// keeps its place: the marker in front is not passed, so what was sent after that
    /// marker's packet (a ring message) does not overtake it.
    #[test]
    fn a_refused_packet_keeps_the_marker_in_front() {
        let (tx, rx, mut writer) = channel_with_ring();
        rx.set_limits(ReceiveLimits { max_message_bytes: 16, ..ReceiveLimits::DEFAULT });
        let (late, early) = (writer.ticket().unwrap(), writer.ticket().unwrap());
        // P (too large) and then S go on the socket; S's marker is published, P's sender is
        // still between its packet and its marker.
        raw_packet(&tx, 0, &[1; 100], late);
        raw_packet(&tx, 0, b"S", early);
        writer.mark(early);
        match rx.recv(Wait::NonBlocking) {
            Err(RecvError::Io(error)) => assert_eq!(error.kind(), io::ErrorKind::InvalidData),
            other => panic!("the packet over the limits gave {other:?}"),
        }
        // Sent after S, through the ring.
        assert_eq!(writer.send(b"D"), Outcome::Sent);
        writer.mark(late);
        assert_eq!(rx.recv(Wait::NonBlocking).unwrap().data, b"S", "the ring message overtook S");
        assert_eq!(rx.recv(Wait::NonBlocking).unwrap().data, b"D");
        assert!(matches!(rx.recv(Wait::NonBlocking), Err(RecvError::Empty)));
    }

    /// Item 9: a child forked while the sender's ring state was held (another thread inside a
    /// send) can never take it. Its plain packet must not be overtaken by a ring message its
    /// parent sends once the child's send returned: the child retires the ring.
    #[test]
    fn a_child_forked_inside_a_send_keeps_the_order() {
        let (tx, rx, _writer) = channel_with_ring();
        assert!(tx.send(b"through the ring", vec![], vec![], Wait::Blocking).is_ok());
        assert_eq!(rx.recv(Wait::Blocking).unwrap().data, b"through the ring");
        let pid = tx.with_ring_state_held_elsewhere(|| {
            // SAFETY: the child sends one message and leaves with `_exit`, never returning into
            // the test harness.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                let sent = tx.send(b"p", vec![], vec![], Wait::Blocking).is_ok();
                // SAFETY: ends the forked child at once.
                unsafe { libc::_exit(if sent { 0 } else { 1 }) };
            }
            pid
        });
        assert!(pid >= 0, "fork failed");
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "the child's send failed");
        // Sent after the child's send returned, so it must come after it.
        assert!(tx.send(b"m", vec![], vec![], Wait::Blocking).is_ok());
        assert_eq!(rx.recv(Wait::Blocking).unwrap().data, b"p", "the parent's ring message overtook the child's");
        assert_eq!(rx.recv(Wait::Blocking).unwrap().data, b"m");
    }

    /// Item 1 of issue 23: a ring made here takes a unit of the process's budget of queued
    /// control memfds. Dropped after every sender, the receiver gives it back at once; dropped
    /// while a sender lives, or moved away, it leaves the unit watched until the kernel no longer
    /// knows the sending socket its copy is queued on.
    #[test]
    fn a_ring_takes_a_unit_that_goes_back_once_its_copy_is_freed() {
        let inode = |fd: BorrowedFd<'_>| rustix::fs::fstat(fd).unwrap().st_ino as u32;
        for moved in [false, true] {
            let (tx, rx, writer) = channel_with_ring();
            assert!(rx.queued.get().is_some(), "the ring took a unit");
            let sending = inode(tx.as_fd());
            if moved {
                rx.depart(); // what a send that carries the receiver away does to it
            }
            drop(rx);
            assert!(super::super::inflight::is_watched(sending), "a sender lives: the copy stays queued");
            super::super::inflight::reclaim_now();
            assert!(super::super::inflight::is_watched(sending), "the sender still lives");
            drop((tx, writer));
            super::super::inflight::reclaim_now();
            assert!(!super::super::inflight::is_watched(sending), "the sender is gone, and the copy with it");
        }

        let (tx, rx, _writer) = channel_with_ring();
        let sending = inode(tx.as_fd());
        drop(tx);
        drop(rx);
        assert!(!super::super::inflight::is_watched(sending), "every sender was gone first: given back at once");
    }

    /// A receiver that declines the ring (rings turned off where it is) tells its senders, who
    /// stop looking for one (a look costs a system call per send); moved elsewhere, it still
    /// never makes one, since its senders would never find it.
    #[test]
    fn senders_stop_looking_once_the_receiver_declines_the_ring() {
        let (tx, rx) = channel().unwrap();
        let send = |byte: u8| assert!(tx.send(&[byte], vec![], vec![], Wait::Blocking).is_ok());
        send(0);
        assert!(tx.looks_for_ring());
        rx.decline_ring();
        send(1);
        assert!(!tx.looks_for_ring(), "the sender did not take the receiver's word");
        for expected in [0, 1] {
            assert_eq!(rx.recv(Wait::Blocking).unwrap().data, [expected]);
        }

        let (carrier_tx, carrier_rx) = channel().unwrap();
        assert!(carrier_tx.send(&[], vec![OsIpcChannel::Receiver(rx)], vec![], Wait::Blocking).is_ok());
        let mut carried = carrier_rx.recv(Wait::Blocking).unwrap().channels;
        let moved = carried.pop().unwrap().into_receiver().unwrap();
        for byte in 2..RING_AFTER as u8 + 6 {
            send(byte);
            assert_eq!(moved.recv(Wait::Blocking).unwrap().data, [byte]);
        }
        assert!(moved.ring.get().is_none(), "the moved receiver made a ring its senders cannot find");
    }
}

#[cfg(test)]
mod engagement {
    use super::super::socket::channel;
    use super::*;

    /// Issue 23, item 5: a sender that keeps the socket from ever being empty (here one message
    /// always stays queued ahead of the receive) still gets the ring. The receiver lets senders
    /// use it once it has read everything that was queued when the ring was announced, rather
    /// than waiting to see its socket empty, which a fast sender may never let happen.
    #[test]
    fn a_ring_engages_while_the_socket_is_never_empty() {
        let (tx, rx) = channel().unwrap();
        let send = |index: u32| assert!(tx.send(&index.to_le_bytes(), vec![], vec![], Wait::Blocking).is_ok());
        send(0);
        for index in 0..2_000u32 {
            send(index + 1);
            let message = rx.recv(Wait::Blocking).unwrap();
            assert_eq!(message.data, index.to_le_bytes());
        }
        let ring = rx.ring.get().expect("a ring after RING_AFTER messages");
        assert!(ring.is_settled(), "the senders were kept off the ring for the whole stream");
    }
}

#[cfg(test)]
mod side_review_tests {
    use super::super::socket::channel;
    use super::*;
    use crate::sys::OsIpcChannel;

    /// Review of 7fd193e: a message whose descriptors travel on a side socket is checked against
    /// `max_handles` with its rings' control memfds counted (`SideStash::take_in`), where the
    /// decoding counts channel ends and regions only. A message within the limits the decoding
    /// applies (and that the one-packet path, and the side-socket path before 7fd193e, deliver)
    /// is refused: "descriptor count does not match the header".
    #[test]
    fn a_side_socket_message_within_the_limits_is_delivered_with_its_rings() {
        // A few with rings (each takes a unit of the process's ring budget, which the other
        // tests of this binary need too), the rest without: more descriptors than one packet
        // carries, and one handle per end.
        const ENDS: usize = 245;
        const WITH_RINGS: usize = 8;
        let mut ends = Vec::new();
        for end in 0..ENDS {
            let (tx, rx) = channel().unwrap();
            if end < WITH_RINGS {
                for byte in 0..RING_AFTER as u8 {
                    assert!(tx.send(&[byte], vec![], vec![], Wait::Blocking).is_ok());
                    assert_eq!(rx.recv(Wait::Blocking).unwrap().data, [byte]);
                }
                assert!(matches!(rx.recv(Wait::NonBlocking), Err(RecvError::Empty)));
            }
            ends.push(rx);
        }
        let rings = ends.iter().filter(|rx| matches!(rx.travelling_ring(), RingNews::Ring(_))).count();
        assert!(ENDS + rings > 250, "only {rings} of the receivers have a ring: no side socket");
        let (tx, rx) = channel().unwrap();
        // The limit the message meets: one handle per channel end, as the decoding counts.
        rx.set_limits(ReceiveLimits { max_handles: ENDS, ..ReceiveLimits::DEFAULT });
        let channels = ends.into_iter().map(OsIpcChannel::Receiver).collect();
        assert!(tx.send(b"ends", channels, vec![], Wait::Blocking).is_ok());
        match rx.recv(Wait::Blocking) {
            Ok(message) => assert_eq!(message.channels.len(), ENDS),
            Err(error) => panic!("a message within the limits was refused: {error:?}"),
        }
    }
}

/// Review of 08012d3: a copy made by `fork` that takes a ring over uses the receiver's
/// `ring_lock` for the first time in its process (before, a copy never did).
#[cfg(test)]
pub(super) mod takeover_review {
    use super::super::socket::channel;
    use super::*;

    /// The control of `rx`'s ring, if it has one.
    pub(crate) fn ring_control(rx: &OsIpcReceiver) -> Option<Arc<Control>> {
        rx.ring.get().map(|ring| ring.control().clone())
    }

    /// Waits up to `timeout` for the child `pid` (a pidfd's readiness: no sleeping), killing it
    /// if it is still running then; its exit status, or `None` if it hung.
    pub(crate) fn wait_child(pid: libc::pid_t, timeout: Duration) -> Option<i32> {
        let pidfd = rustix::process::pidfd_open(
            rustix::process::Pid::from_raw(pid).expect("a child's pid"),
            rustix::process::PidfdFlags::empty(),
        )
        .unwrap();
        let mut fds = [rustix::event::PollFd::new(&pidfd, rustix::event::PollFlags::IN)];
        let ready = rustix::event::poll(&mut fds, Some(&super::super::sys::timespec(timeout))).unwrap();
        let mut status = 0;
        if ready == 0 {
            // SAFETY: signals and reaps our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return None;
        }
        // SAFETY: reaps our own child, which has exited.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        Some(status)
    }

    /// A thread of the reader's process is inside a receive on the ring (it holds `ring_lock`)
    /// when another thread forks. The reader then lets go of the ring, one message still in
    /// it. The child's copy takes the ring over, as `RingReader::inherited` says, and its
    /// receive waits for ever on the `ring_lock` that the thread it was copied from (which
    /// does not exist in the child) will never let go. Fails (the child hangs) on 08012d3.
    #[test]
    fn a_fork_copy_that_takes_a_ring_over_does_not_wait_for_a_lock_held_at_the_fork() {
        // Without the lock held at the fork, the copy takes the ring over and gets the message
        // (the takeover works); with it, it must too.
        take_over_after_fork(false);
        take_over_after_fork(true);
    }

    fn take_over_after_fork(held_at_fork: bool) {
        let (tx, rx) = channel().unwrap();
        for byte in 0..RING_AFTER as u8 {
            assert!(tx.send(&[byte], vec![], vec![], Wait::Blocking).is_ok());
            assert_eq!(rx.recv(Wait::Blocking).unwrap().data, [byte]);
        }
        assert!(matches!(rx.recv(Wait::NonBlocking), Err(RecvError::Empty)));
        let control = rx.ring.get().expect("a ring").control().clone();
        // Into the ring, which its reader does not read before it lets go.
        assert!(tx.send(b"left in the ring", vec![], vec![], Wait::Blocking).is_ok());
        assert!(rx.ring.get().unwrap().has_work(), "the message waits in the ring");

        let rx = Arc::new(rx);
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = {
            let rx = rx.clone();
            std::thread::spawn(move || {
                // What a receive does while it takes the ring's front.
                let _held = held_at_fork.then(|| rx.lock_ring());
                locked_tx.send(()).unwrap();
                release_rx.recv().unwrap();
            })
        };
        locked_rx.recv().unwrap();
        // SAFETY: the child only receives, and leaves with `_exit`.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // The reader lets go (its receiver dropped): a fork copy may take the ring over.
            let deadline = Instant::now() + Duration::from_secs(10);
            while control.owner().load(Ordering::Acquire) != super::super::owner::LET_GO {
                if Instant::now() > deadline {
                    // SAFETY: ends the forked child at once.
                    unsafe { libc::_exit(3) };
                }
                std::hint::spin_loop();
            }
            let got = rx.recv(Wait::Timeout(Duration::from_secs(5)));
            let ok = matches!(&got, Ok(message) if message.data == b"left in the ring");
            // SAFETY: ends the forked child at once.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        assert!(pid > 0, "fork failed");
        release_tx.send(()).unwrap();
        holder.join().unwrap();
        drop(Arc::try_unwrap(rx).expect("the last reference"));
        assert_eq!(control.owner().load(Ordering::Acquire), super::super::owner::LET_GO);
        let status = wait_child(pid, Duration::from_secs(15));
        let status =
            status.unwrap_or_else(|| panic!("the child's receive hung (ring lock held at the fork: {held_at_fork})"));
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child failed: status {status}");
        drop(tx);
    }
}
