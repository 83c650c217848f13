//! The sending side: one slot of the ring per sending process, and publishing into the chain.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::control::CONSUMED;
use super::control::{Control, Field, Word, ALIGN, ASLEEP, CLOSED, DATA, ENTRY_HEADER, MARKER, PADDING, WRITTEN};
use super::{MAX_ATTEMPTS, RING_BYTES, RING_MESSAGE_MAX, SLOTS};

/// Ring bytes kept free for markers: data entries stop short of them, so that messages the
/// socket carries (whose markers must follow them) still go while the ring is full of data.
const MARKER_RESERVE: usize = 4 * 1024;
/// Bytes of a marker entry (which always fits before the ring's end: entries are aligned to it).
const MARKER_SIZE: usize = ALIGN;
/// More entries than the ring holds at once (every slot full of the smallest entries): published
/// while a writer's oldest entry stayed unconsumed, they prove that a peer wrote it back (see
/// [`RingWriter::stalled`]).
pub(super) const STALL_PUBLISHES: u64 = (SLOTS * RING_BYTES / ALIGN) as u64;
/// How long a writer's oldest entry may stay unconsumed, with no room left, before the writer
/// takes the channel to its socket (see [`RingWriter::stalled`]).
pub(super) const STALL_TIME: std::time::Duration = std::time::Duration::from_secs(1);

/// What became of a message offered to the ring.
#[derive(Debug, PartialEq, Eq)]
pub(in super::super) enum Outcome {
    /// Published: the receiver will deliver it.
    Sent,
    /// Not published: send it on the socket with a ticket, then [`RingWriter::mark`] it.
    UseSocket,
    /// Not published, as the ring has no room for it now: wait for the receiver to take
    /// entries, or send it on the socket as for [`UseSocket`](Self::UseSocket).
    NoRoom,
}

/// A claimed slot of a channel's ring, written by one process.
pub(in super::super) struct RingWriter {
    control: Arc<Control>,
    slot: usize,
    token: u64,
    /// Bytes ever written in the slot's ring, and ever reclaimed: `head - tail` are in use.
    head: u64,
    tail: u64,
    /// Ring bytes promised to markers of packets being sent.
    promised: usize,
    /// The fork generation that claimed the slot; a forked child must not release it.
    born: u64,
    /// The tail this writer found stuck (not consumed, no room left) and the word's publish
    /// count then (see [`stalled`](Self::stalled)).
    stuck_tail: Option<(u64, u64)>,
    /// Since when this writer has had no room, its slot more than half full all along.
    full_since: Option<Instant>,
}

impl RingWriter {
    /// Claims a free slot of `control`'s ring whose entries the receiver has all consumed, or
    /// `None` when there is none.
    ///
    /// A slot let go by an earlier process keeps its counters (head and tail): entries it
    /// published may still wait for the receiver, and the ring's next entry goes after them.
    /// Those counters are a peer's word: values that make no sense start over at zero, sane
    /// ones are brought below twice the ring's size (the same offsets, so no counter a peer set
    /// near the top can overflow), and a slot whose entries are not all consumed is passed over
    /// (an earlier process's messages the receiver has yet to read, or a peer's junk that would
    /// keep this writer "full" for ever).
    pub fn claim(control: Arc<Control>, born: u64) -> Option<RingWriter> {
        let token = (u64::from(std::process::id()) << 32) | u64::from(rand_bits());
        let token = token.max(1);
        for slot in 0..SLOTS {
            let owner = control.slot_word(slot, 0);
            if owner.compare_exchange(0, token, Ordering::AcqRel, Ordering::Relaxed).is_err() {
                continue;
            }
            let head = control.slot_word(slot, 1).load(Ordering::Acquire);
            let tail = control.slot_word(slot, 2).load(Ordering::Acquire);
            let aligned = |at: u64| at % ALIGN as u64 == 0;
            let sane = tail <= head && head - tail <= RING_BYTES as u64 && aligned(head) && aligned(tail);
            let (head, tail) = if sane {
                let base = tail - tail % RING_BYTES as u64;
                (head - base, tail - base)
            } else {
                (0, 0)
            };
            let mut writer = RingWriter {
                control: control.clone(),
                slot,
                token,
                head,
                tail,
                promised: 0,
                born,
                stuck_tail: None,
                full_since: None,
            };
            if writer.advance_tail() && writer.tail == writer.head {
                // Free: from now on the counters are this writer's, rebased.
                control.slot_word(slot, 1).store(writer.head, Ordering::Release);
                control.slot_word(slot, 2).store(writer.tail, Ordering::Release);
                return Some(writer);
            }
            // Not free after all: let it go untouched (dropping the writer gives the slot back),
            // so that a later claimant finds the same counters, and the same unread entries.
        }
        None
    }

    /// The control memfd's mapping this writer writes in.
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// Offers a message of at most [`RING_MESSAGE_MAX`] bytes to the ring.
    pub fn send(&mut self, data: &[u8]) -> Outcome {
        debug_assert!(data.len() <= RING_MESSAGE_MAX);
        let Some(offset) = self.room(entry_size(data.len()), MARKER_RESERVE + self.promised) else {
            return Outcome::NoRoom;
        };
        self.write_header(offset, DATA, data.len(), 0);
        self.control.write_payload(self.slot, offset, data);
        match self.publish(offset, entry_size(data.len()), false) {
            true => Outcome::Sent,
            false => Outcome::UseSocket,
        }
    }

    /// A new ticket for a message about to go on the socket, with room promised for its
    /// marker; `None` when the ring has no room for one more marker (the channel is full until
    /// the receiver reads).
    pub fn ticket(&mut self) -> Option<u64> {
        self.reclaim();
        if !self.has_marker_room() {
            return None;
        }
        self.promised += MARKER_SIZE;
        let count = self.control.slot_word(self.slot, 3).fetch_add(1, Ordering::Relaxed);
        Some(((self.slot as u64 + 1) << 56) | (count & ((1 << 56) - 1)))
    }

    /// Whether one more marker fits, besides those promised.
    fn has_marker_room(&self) -> bool {
        RING_BYTES - (self.head - self.tail) as usize >= self.promised + MARKER_SIZE
    }

    /// Announces that this writer waits for room (its slot's waiting flag), then looks once
    /// more: `Some` (the mapping and the slot to wait on with [`Control::wait_for_room`]) when
    /// there is still none, `None` when room came meanwhile.
    pub fn announce_wait(&mut self) -> Option<(Arc<Control>, usize)> {
        self.control.waiting(self.slot).store(1, Ordering::SeqCst);
        // See `Control::wake_waiting_writers`: the flag is set before this look.
        std::sync::atomic::fence(Ordering::SeqCst);
        self.reclaim();
        if self.has_marker_room() {
            self.control.waiting(self.slot).store(0, Ordering::Relaxed);
            return None;
        }
        Some((self.control.clone(), self.slot))
    }

    /// Gives back the room promised with a ticket whose packet was not sent.
    pub fn cancel(&mut self) {
        self.promised = self.promised.saturating_sub(MARKER_SIZE);
    }

    /// Publishes the marker of the message with `ticket`, which is on the socket now. If it
    /// cannot (the ring is retired, or a peer broke it), the ring is retired, so that the packet
    /// stays in order with everything sent after it.
    pub fn mark(&mut self, ticket: u64) {
        self.cancel();
        let published = self.room(MARKER_SIZE, self.promised).is_some_and(|offset| {
            self.write_header(offset, MARKER, 0, ticket);
            self.publish(offset, MARKER_SIZE, true)
        });
        if !published {
            self.control.close();
        }
    }

    /// Makes the ring's content readable by the receiver: at `offset`, an entry of `size` bytes,
    /// linked to the chain with one compare-and-swap of the word. `false` when the word is
    /// `CLOSED`, or `ASLEEP` unless `even_asleep` (the entry is then not published).
    fn publish(&mut self, offset: usize, size: usize, even_asleep: bool) -> bool {
        let word = self.control.word();
        let reference = Control::reference(self.slot, offset);
        let mut current = Word(word.load(Ordering::Acquire));
        for _ in 0..MAX_ATTEMPTS {
            if current.has(CLOSED) || (current.has(ASLEEP) && !even_asleep) {
                return false;
            }
            let count = current.count() + 1;
            self.control.field(self.slot, offset, Field::Next).store(current.head(), Ordering::Relaxed);
            self.control.field(self.slot, offset, Field::Seq).store(count as u32, Ordering::Relaxed);
            // `ASLEEP` stays: only the receiver, once awake, clears it (a marker published while
            // it sleeps follows a packet that woke it, or will).
            let new = Word::new(reference, count, current.flags());
            match word.compare_exchange_weak(current.0, new.0, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    self.head += size as u64;
                    self.control.slot_word(self.slot, 1).store(self.head, Ordering::Release);
                    return true;
                }
                Err(actual) => current = Word(actual),
            }
        }
        self.control.close();
        false
    }

    fn write_header(&self, offset: usize, kind: u32, len: usize, ticket: u64) {
        let field = |field| self.control.field(self.slot, offset, field);
        field(Field::State).store(WRITTEN, Ordering::Relaxed);
        field(Field::Kind).store(kind, Ordering::Relaxed);
        field(Field::Len).store(len as u32, Ordering::Relaxed);
        field(Field::Fwd).store(0, Ordering::Relaxed);
        self.control.ticket(self.slot, offset).store(ticket, Ordering::Relaxed);
    }

    /// Where an entry of `size` bytes can be written with `reserve` bytes left free after it,
    /// padding to the ring's start when it does not fit before the end; `None` when the ring is
    /// too full.
    fn room(&mut self, size: usize, reserve: usize) -> Option<usize> {
        let offset = (self.head % RING_BYTES as u64) as usize;
        let to_end = RING_BYTES - offset;
        let needed = if size <= to_end { size } else { to_end + size };
        // Entries the receiver consumed are reclaimed only when the room seems short: reading
        // their states costs a cache miss each (the receiver wrote them).
        if (self.head - self.tail) as usize + needed + reserve > RING_BYTES / 2 {
            self.reclaim();
        }
        if (self.head - self.tail) as usize + needed + reserve > RING_BYTES {
            return None;
        }
        if size > to_end {
            // Padding to the end, which the writer reclaims by itself.
            self.write_header(offset, 0, to_end - ENTRY_HEADER, 0);
            self.control.field(self.slot, offset, Field::State).store(PADDING, Ordering::Release);
            self.head += to_end as u64;
            return Some(0);
        }
        Some(offset)
    }

    /// Moves the tail past entries the receiver consumed (and padding), oldest first.
    fn reclaim(&mut self) {
        if !self.advance_tail() {
            // A broken ring: stop using it.
            self.control.close();
            return;
        }
        self.control.slot_word(self.slot, 2).store(self.tail, Ordering::Release);
        if (self.head - self.tail) as usize <= RING_BYTES / 2 {
            self.full_since = None;
        }
    }

    /// Moves this writer's own tail past entries the receiver consumed (and padding), writing
    /// nothing shared; `false` when the slot's entries make no sense (a peer broke them: every
    /// entry between the tail and the head was published, so it is written, consumed or
    /// padding).
    fn advance_tail(&mut self) -> bool {
        while self.tail < self.head {
            let offset = (self.tail % RING_BYTES as u64) as usize;
            match self.control.field(self.slot, offset, Field::State).load(Ordering::Acquire) {
                CONSUMED | PADDING => {}
                WRITTEN => break,
                // Review 5, R5-1: a peer that set consumed entries to anything else kept this
                // writer "full" with none of `stalled`'s signs showing.
                _ => return false,
            }
            // The length is read back from shared memory: a peer may have changed it.
            let len = self.control.field(self.slot, offset, Field::Len).load(Ordering::Relaxed) as usize;
            let size = entry_size(len.min(RING_BYTES));
            if offset + size > RING_BYTES || size as u64 > self.head - self.tail {
                return false;
            }
            self.tail += size as u64;
        }
        true
    }

    /// Whether this writer's slot stays full for no reason the receiver knows of. A co-sender
    /// that rewrites an entry's state after the receiver consumed it would keep this writer
    /// "full" for ever; these signs tell it:
    ///
    /// - the slot is broken (an entry in it is in no state an honest writer leaves: the ring
    ///   was retired as the writer reclaimed);
    /// - the entry at the tail is not consumed although the receiver holds nothing (it took
    ///   every published entry and delivered it);
    /// - since this writer found its tail stuck, more entries were published than the whole
    ///   ring holds at once ([`STALL_PUBLISHES`]): some of them must have been consumed, and
    ///   the receiver consumes in publish order, so the older entry at the tail was consumed
    ///   too, and someone wrote it back (review 3, F7: a co-sender that also keeps the chain
    ///   from ever being empty hid the first sign);
    /// - the writer has had no room for [`STALL_TIME`], its slot more than half full all along:
    ///   the count is a peer's word too, and one that keeps it still hides the third sign
    ///   (review 4); timing how long the slot stays full, not how long one tail entry stays,
    ///   keeps a peer that lets one entry go now and then from holding the writer to a message
    ///   a second (review 5, R5-2). An honest receiver that reads that slowly while this writer
    ///   waits only moves the channel to its socket, where backpressure goes on.
    ///
    /// (The receiver, between taking a chain and setting its cursor, looks like the second for
    /// a moment, and a peer can advance the count at will: the caller retires the ring then,
    /// which costs speed, never order.)
    pub fn stalled(&mut self) -> bool {
        self.reclaim();
        if self.control.is_closed() {
            return true;
        }
        if self.has_marker_room() {
            return false;
        }
        let word = Word(self.control.word().load(Ordering::Acquire));
        if word.head() == 0 && self.control.cursor().load(Ordering::Acquire) == 0 {
            return true;
        }
        let full_since = *self.full_since.get_or_insert_with(Instant::now);
        let published_past_tail = match self.stuck_tail {
            Some((tail, count)) if tail == self.tail => word.count().wrapping_sub(count) > STALL_PUBLISHES,
            _ => {
                self.stuck_tail = Some((self.tail, word.count()));
                false
            }
        };
        published_past_tail || full_since.elapsed() >= STALL_TIME
    }

    /// Makes this writer's slot look full since `ago` (for tests of [`stalled`](Self::stalled)).
    #[cfg(test)]
    pub fn pretend_full_for(&mut self, ago: std::time::Duration) {
        self.full_since = Instant::now().checked_sub(ago);
    }
}

impl Drop for RingWriter {
    fn drop(&mut self) {
        // Lets the slot go for another process; a forked child's copy belongs to its parent.
        if super::super::fork::generation() == self.born {
            let owner = self.control.slot_word(self.slot, 0);
            let _ = owner.compare_exchange(self.token, 0, Ordering::AcqRel, Ordering::Relaxed);
        }
    }
}

/// Bytes an entry with a `len`-byte payload takes in the ring.
pub(super) fn entry_size(len: usize) -> usize {
    (ENTRY_HEADER + len).next_multiple_of(ALIGN)
}

/// A few bits that differ between writers of one process.
fn rand_bits() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
