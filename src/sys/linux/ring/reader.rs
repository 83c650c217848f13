//! The receiving side: taking the chain, and delivering its entries oldest first.
//!
//! Everything read from the mapping is a peer's word: each reference, length, state and
//! sequence number is checked before use, a walk is bounded, and payloads are copied out before
//! anything looks at them. A broken ring is an error on this channel (and retires its ring, so
//! that the channel goes on over its socket); nothing else is affected.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use super::super::owner;
use super::super::sys::invalid_data;
use super::control::{Control, Field, Word, ASLEEP, CONSUMED, DATA, ENTRY_HEADER, MARKER, WRITTEN};
use super::{MAX_ATTEMPTS, RING_BYTES, RING_MESSAGE_MAX, SLOTS};

/// The most entries one chain can hold: every slot full of the smallest entries.
const MAX_CHAIN: usize = SLOTS * RING_BYTES / ENTRY_HEADER;
/// Chains one look at the front takes at most (see `front_unchecked`).
const MAX_TAKES: usize = 4;

/// What comes next from the ring.
#[derive(Debug, PartialEq, Eq)]
pub(in super::super) enum Front {
    /// Nothing published.
    Empty,
    /// A message's bytes (delivered: the entry is consumed).
    Data(Vec<u8>),
    /// The marker of the packet with this ticket; it stays in front until [`RingReader::pass`].
    Marker(u64),
}

/// The receiver's side of a channel's ring: the mapping, and the control memfd it travels with.
pub(in super::super) struct RingReader {
    control: Arc<Control>,
    fd: OwnedFd,
    /// The fork generation this reader belongs to; a forked child's copy leaves the ring alone
    /// unless it takes it over (see [`inherited`](Self::inherited)).
    born: AtomicU64,
    /// The fork generation in which a copy of this reader was last looked at by
    /// [`inherited`](Self::inherited).
    inherited_in: AtomicU64,
    /// The token this reader wrote in the control memfd as the ring's owner (see `owner.rs`):
    /// what its `Drop` replaces with `LET_GO`. Kept, not asked of `owner::token` again, which
    /// in a child forked while another thread held the list of tokens draws a new one each time.
    token: AtomicU64,
    /// Set when the receiver moved to another process, which goes on with the ring.
    departed: AtomicBool,
    /// [`ANNOUNCING`], [`FRESH`] or [`SETTLED`]: whether the receiver may let senders use the
    /// ring yet (see `ring/mod.rs`, "A ring once a channel carries traffic").
    settled: AtomicU8,
    /// While [`FRESH`]: bytes of the packets that were queued on the socket when the senders
    /// could first find the ring, not yet read. Those are all the plain packets a sender may
    /// have sent without knowing of the ring, so once they are read the ring settles, also
    /// while a fast sender keeps the socket from ever being empty.
    unread_before_ring: AtomicU64,
    /// Tickets of the packets a copy of this reader made by `fork` read from the socket while it
    /// did not read the ring (the latest [`AHEAD_KEPT`]): their markers are passed if it takes
    /// the ring over.
    read_elsewhere: Mutex<Vec<u64>>,
    /// Set when the ring proved corrupt: it is never read again (a hostile writer could otherwise
    /// keep it looking busy for ever).
    broken: AtomicBool,
}

/// Tickets a copy made by `fork` keeps of packets it read while another process read the ring:
/// as many as the ring's list of packets delivered ahead of their markers holds.
const AHEAD_KEPT: usize = 64;

/// The ring's control memfd is not yet queued for the senders.
const ANNOUNCING: u8 = 2;
/// Queued, but the socket was not yet seen empty since: plain packets sent before any sender
/// could know of the ring may wait there, so `ASLEEP` stays set and every sender uses the socket.
const FRESH: u8 = 1;
/// The socket was seen empty after the ring was announced: senders may use the ring.
const SETTLED: u8 = 0;

impl RingReader {
    /// The reader of a ring its senders know of already (it starts [`FRESH`]: see `settled`).
    pub fn new(control: Arc<Control>, fd: OwnedFd, born: u64) -> RingReader {
        // This process reads the ring from now on.
        let token = owner::token();
        control.owner().store(token, Ordering::Release);
        RingReader {
            control,
            fd,
            token: AtomicU64::new(token),
            born: AtomicU64::new(born),
            inherited_in: AtomicU64::new(born),
            departed: AtomicBool::new(false),
            settled: AtomicU8::new(FRESH),
            unread_before_ring: AtomicU64::new(u64::MAX),
            broken: AtomicBool::new(false),
            read_elsewhere: Mutex::new(Vec::new()),
        }
    }

    /// The reader of a ring just made, whose control memfd is yet to be queued for the senders:
    /// it starts asleep, so that every sender sends on the socket until the receiver settles it.
    pub fn unannounced(control: Arc<Control>, fd: OwnedFd, born: u64) -> RingReader {
        let reader = RingReader::new(control, fd, born);
        reader.settled.store(ANNOUNCING, Ordering::Relaxed);
        reader.sleep();
        reader
    }

    /// The control memfd is queued for the senders now, and `queued` bytes of packets wait on
    /// the socket (its `FIONREAD`, taken after the control memfd was queued).
    pub fn announced(&self, queued: u64) {
        self.unread_before_ring.store(queued, Ordering::Release);
        if self.settled.compare_exchange(ANNOUNCING, FRESH, Ordering::AcqRel, Ordering::Acquire).is_ok() && queued == 0
        {
            self.settle();
        }
    }

    /// A ring that arrived with its receiver: `queued` bytes of packets wait on the socket (its
    /// `FIONREAD`, taken once the receiver is here). The senders found the ring where the
    /// receiver was before, so every plain packet they sent without knowing of it is among
    /// these.
    pub fn arrived(&self, queued: u64) {
        self.unread_before_ring.store(queued, Ordering::Release);
        if queued == 0 {
            self.settle();
        }
    }

    /// Whether the receiver awaits its first look at an empty socket (take this *before* the
    /// look, and [`settle`](Self::settle) after it if the socket was empty).
    pub fn is_fresh(&self) -> bool {
        self.settled.load(Ordering::Acquire) == FRESH
    }

    /// The socket was empty at a look that began while the ring [`is_fresh`](Self::is_fresh):
    /// every plain packet sent before the senders could know of the ring has been read.
    pub fn settle(&self) {
        let _ = self.settled.compare_exchange(FRESH, SETTLED, Ordering::AcqRel, Ordering::Acquire);
    }

    /// A packet of `bytes` was read (taken, not peeked at) from the socket. The socket is a
    /// queue, so the bytes read since the announcement are the oldest ones queued: once they
    /// add up to what was queued then, every plain packet sent before the senders could know
    /// of the ring is read, and the ring settles. (A read this count misses, by a `fork` copy
    /// or before the announcement, only makes it settle later, at the socket's first empty
    /// look, as before.)
    pub fn consumed(&self, bytes: usize) {
        if !self.is_fresh() {
            return;
        }
        let left = self.unread_before_ring.fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
            (left != u64::MAX).then(|| left.saturating_sub(bytes as u64))
        });
        if left.is_ok_and(|left| left <= bytes as u64) {
            self.settle();
        }
    }

    /// Whether senders may use the ring (see [`settle`](Self::settle)).
    pub fn is_settled(&self) -> bool {
        self.settled.load(Ordering::Acquire) == SETTLED
    }

    /// The receiver is about to leave in a message: from now until it arrives, the ring's
    /// reader is alive elsewhere, and no fork copy here may take the ring over, also if this
    /// process dies before the send returns ([`stayed`](Self::stayed) undoes it when the send
    /// fails).
    pub fn leaving(&self) {
        self.replace_owner(self.token.load(Ordering::Acquire), owner::MOVING);
    }

    /// The send that was to carry the receiver away failed: this process reads the ring still.
    pub fn stayed(&self) {
        self.replace_owner(owner::MOVING, self.token.load(Ordering::Acquire));
    }

    /// Replaces the owner token `from` with `to`, if this process reads the ring and the
    /// control memfd still names `from` (the process the receiver went to may have written its
    /// own already).
    fn replace_owner(&self, from: u64, to: u64) {
        if self.is_ours(super::super::fork::generation()) {
            let _ = self.control.owner().compare_exchange(from, to, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    /// The receiver moved on (its ring with it): dropping this copy leaves the ring open. (The
    /// ring was marked as moving before the send: see [`leaving`](Self::leaving).)
    pub fn depart(&self) {
        self.departed.store(true, Ordering::Relaxed);
    }

    /// The control memfd (to send along when the receiver moves).
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// The mapping.
    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// Whether this process may use the ring: not a copy made by `fork` (that reads the socket
    /// alone, so that no message reaches two readers).
    pub fn is_ours(&self, generation: u64) -> bool {
        self.born.load(Ordering::Acquire) == generation
    }

    /// A copy of this reader that `fork` made is used in this process (fork generation
    /// `generation`, not the ring's): the copy takes the ring over if its reader is gone — let
    /// go, or its process exited (see `owner.rs`) — with the messages left in it, counting
    /// what waits on the socket then (`queued`) as a receiver that arrives does. While the
    /// reader lives, the first use retires the ring instead: from then on every message takes
    /// the socket, which both copies read, so none is lost to a ring that only one of them
    /// reads, whichever of them goes first. `true` when the ring is this process's now.
    ///
    /// Costs nothing once looked at, but for a ring with messages left in it (one `poll` of the
    /// owner's pidfd each time, until one of the copies takes them).
    pub fn inherited(&self, generation: u64, queued: impl FnOnce() -> u64) -> bool {
        let first_use = self.inherited_in.swap(generation, Ordering::AcqRel) != generation;
        if !first_use && !self.has_work() {
            return false;
        }
        let seen = self.control.owner().load(Ordering::Acquire);
        let mine = owner::token();
        if let Some(seen) = owner::gone(self.born.load(Ordering::Acquire), seen) {
            if self.control.owner().compare_exchange(seen, mine, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                // Packets this copy took while another process read the ring are delivered
                // already: their markers are passed, not stood in for by later packets.
                if let Ok(mut read) = self.read_elsewhere.try_lock() {
                    for ticket in read.drain(..) {
                        self.delivered_ahead(ticket);
                    }
                }
                self.token.store(mine, Ordering::Release);
                self.settled.store(FRESH, Ordering::Release);
                self.arrived(queued());
                self.born.store(generation, Ordering::Release);
                return true;
            }
        }
        if first_use {
            self.control.close();
        }
        false
    }

    /// A packet with `ticket` was read from the socket by this process (`generation`): noted if
    /// this process does not read the ring (see [`inherited`](Self::inherited)).
    pub fn read_elsewhere(&self, ticket: u64, generation: u64) {
        if self.is_ours(generation) {
            return;
        }
        if let Ok(mut read) = self.read_elsewhere.try_lock() {
            if read.len() == AHEAD_KEPT {
                read.remove(0);
            }
            read.push(ticket);
        }
    }

    /// Whether something waits in the ring (one load of each word; no checks).
    pub fn has_work(&self) -> bool {
        !self.broken.load(Ordering::Relaxed)
            && (self.control.cursor().load(Ordering::Acquire) != 0
                || Word(self.control.word().load(Ordering::Acquire)).head() != 0)
    }

    /// The next thing to deliver; a message's bytes go into `reuse`'s allocation (taking it)
    /// when it can hold them.
    pub fn front(&self, reuse: &mut Vec<u8>) -> io::Result<Front> {
        if self.broken.load(Ordering::Relaxed) {
            return Ok(Front::Empty);
        }
        let result = self.front_unchecked(reuse);
        if result.is_err() {
            // Stop trusting this ring: what is on the socket still arrives.
            self.broken.store(true, Ordering::Relaxed);
            self.control.cursor().store(0, Ordering::Release);
            self.control.close();
        }
        result
    }

    fn front_unchecked(&self, reuse: &mut Vec<u8>) -> io::Result<Front> {
        // A chain taken sets the cursor, so the second round finds it, unless a peer cleared it
        // meanwhile (and may keep doing so while it publishes).
        for _ in 0..MAX_TAKES {
            let cursor = self.control.cursor().load(Ordering::Acquire);
            if cursor == 0 {
                if !self.take()? {
                    return Ok(Front::Empty);
                }
                continue;
            }
            let (slot, offset) = locate(cursor)?;
            let field = |field| self.control.field(slot, offset, field).load(Ordering::Acquire);
            if field(Field::State) != WRITTEN {
                return Err(invalid_data("ring entry is not a written one"));
            }
            match field(Field::Kind) {
                DATA => {
                    let len = field(Field::Len) as usize;
                    if len > RING_MESSAGE_MAX {
                        return Err(invalid_data("ring entry longer than a ring message"));
                    }
                    let mut data = std::mem::take(reuse);
                    data.clear();
                    if data.capacity() < len {
                        data = crate::sys::message_buffer(len)?;
                    }
                    self.control.read_payload(slot, offset, len, &mut data)?;
                    self.consume(slot, offset);
                    return Ok(Front::Data(data));
                }
                MARKER => return Ok(Front::Marker(self.control.ticket(slot, offset).load(Ordering::Acquire))),
                _ => return Err(invalid_data("ring entry of unknown kind")),
            }
        }
        Err(invalid_data("ring cursor cleared under the receiver"))
    }

    /// Passes the marker in front (its packet was delivered).
    pub fn pass(&self) -> io::Result<()> {
        let (slot, offset) = locate(self.control.cursor().load(Ordering::Acquire))?;
        self.consume(slot, offset);
        Ok(())
    }

    /// Moves the cursor past the entry in front (at `offset` of slot `slot`) and gives the entry
    /// back to its writer: its `fwd` is read first, since the writer may reuse it at once.
    fn consume(&self, slot: usize, offset: usize) {
        let next = self.control.field(slot, offset, Field::Fwd).load(Ordering::Acquire);
        self.control.cursor().store(u64::from(next), Ordering::Release);
        self.control.field(slot, offset, Field::State).store(CONSUMED, Ordering::Release);
    }

    /// Takes the whole published chain and links it oldest first from the cursor. `false` when
    /// nothing was published.
    fn take(&self) -> io::Result<bool> {
        // Everything taken before is consumed: a writer waiting for room may go on.
        self.control.wake_waiting_writers();
        let word = self.control.word();
        let mut current = Word(word.load(Ordering::Acquire));
        let mut attempts = 0;
        loop {
            if current.head() == 0 {
                return Ok(false);
            }
            let emptied = Word::new(0, current.count(), current.flags());
            match word.compare_exchange_weak(current.0, emptied.0, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(actual) => current = Word(actual),
            }
            attempts += 1;
            if attempts == MAX_ATTEMPTS {
                // Review 5, R5-3: a peer that writes the word without end kept this loop going.
                return Err(invalid_data("ring word never settles"));
            }
        }
        // Walk from the newest, checking each entry's publish count, and point each at the one
        // published after it.
        let mut reference = current.head();
        let mut newer = 0u32;
        let mut count = current.count();
        for _ in 0..MAX_CHAIN {
            let (slot, offset) = locate(u64::from(reference))?;
            let field = |field| self.control.field(slot, offset, field);
            if field(Field::State).load(Ordering::Acquire) != WRITTEN
                || field(Field::Seq).load(Ordering::Acquire) != count as u32
            {
                return Err(invalid_data("ring chain out of sequence"));
            }
            field(Field::Fwd).store(newer, Ordering::Release);
            newer = reference;
            reference = field(Field::Next).load(Ordering::Acquire);
            count = count.wrapping_sub(1);
            if reference == 0 {
                self.control.cursor().store(u64::from(newer), Ordering::Release);
                return Ok(true);
            }
        }
        Err(invalid_data("ring chain longer than the ring"))
    }

    /// Announces that the receiver is about to wait on its socket: from now on senders send on
    /// the socket, whose packets wake it. `false` when something waits in the ring (the
    /// receiver must not sleep then).
    pub fn sleep(&self) -> bool {
        if self.broken.load(Ordering::Relaxed) {
            return true;
        }
        if self.control.cursor().load(Ordering::Acquire) != 0 {
            return false;
        }
        self.control.wake_waiting_writers();
        let word = self.control.word();
        let mut current = Word(word.load(Ordering::Acquire));
        for _ in 0..MAX_ATTEMPTS {
            if current.head() != 0 {
                return false;
            }
            if current.has(ASLEEP) {
                return true;
            }
            let asleep = Word(current.0 | ASLEEP);
            match word.compare_exchange_weak(current.0, asleep.0, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(actual) => current = Word(actual),
            }
        }
        // A word that never settles (a peer writing it without end: only publishes change it
        // honestly, and they end this loop): the ring is retired, and the receiver sleeps on
        // its socket, where everything goes from now on.
        self.broken.store(true, Ordering::Relaxed);
        self.control.cursor().store(0, Ordering::Release);
        self.control.close();
        true
    }

    /// Announces that the receiver is awake: senders may use the ring again (once it is
    /// [settled](Self::settle); until then this does nothing).
    pub fn wake(&self) {
        if !self.is_settled() {
            return;
        }
        let word = self.control.word();
        if Word(word.load(Ordering::Relaxed)).has(ASLEEP) {
            word.fetch_and(!ASLEEP, Ordering::AcqRel);
        }
    }

    /// Remembers that the packet with `ticket` was delivered before its marker was seen.
    pub fn delivered_ahead(&self, ticket: u64) {
        if ticket != 0 {
            self.control.remember_ahead(ticket);
        }
    }

    /// Whether the packet of the marker with `ticket` was delivered already (forgetting it).
    pub fn was_delivered(&self, ticket: u64) -> bool {
        self.control.forget_ahead(ticket)
    }

    /// Whether the ring is retired (or broken).
    pub fn is_closed(&self) -> bool {
        self.broken.load(Ordering::Relaxed) || self.control.is_closed()
    }
}

impl Drop for RingReader {
    fn drop(&mut self) {
        // The receiver is gone: senders go to the socket, which tells them so.
        if !self.departed.load(Ordering::Relaxed) && self.is_ours(super::super::fork::generation()) {
            self.control.close();
            // A fork copy of the receiver may take over what is left in the ring.
            self.replace_owner(self.token.load(Ordering::Acquire), owner::LET_GO);
        }
    }
}

/// The entry a reference (a peer's word) points at, or an error.
fn locate(reference: u64) -> io::Result<(usize, usize)> {
    u32::try_from(reference)
        .ok()
        .and_then(Control::locate)
        .filter(|&(_, offset)| offset + ENTRY_HEADER <= RING_BYTES)
        .ok_or_else(|| invalid_data("ring reference out of bounds"))
}
