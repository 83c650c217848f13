//! The shared-memory fast path: small messages that cost no system call while the receiver is
//! awake.
//!
//! A channel that carries traffic gets one *control* memfd, made by its receiver once it has
//! taken [`RING_AFTER`] messages from the socket (see "A ring once a channel carries traffic").
//! It is mapped by the receiver and by every process that sends on the channel, and holds:
//!
//! - the **word**: one 64-bit atomic where every send takes effect. It holds the head of a chain
//!   of published entries (newest first), a publish count, and two bits: `ASLEEP` (the receiver
//!   is about to wait on its socket) and `CLOSED` (the ring is retired: everything goes on the
//!   socket);
//! - the receiver's **cursor** (the oldest entry it has taken but not delivered) and its
//!   **ahead** list (tickets of packets it delivered before their markers: see below);
//! - [`SLOTS`] **writer slots**, each a ring of [`RING_BYTES`] that one sending process claims
//!   and writes entries into.
//!
//! A send writes its entry in its own slot, then publishes it with one compare-and-swap of the
//! word (the entry's `next` is the old head). A sender killed before that CAS leaves nothing
//! visible; after it, the message is whole. The receiver takes the whole chain with one CAS,
//! walks it (bounded, every sequence number checked), links it oldest-first through the entries'
//! `fwd` fields and delivers from its cursor, copying each message out before it looks at it.
//!
//! Messages that carry descriptors, do not fit the ring, or find the receiver `ASLEEP` go on
//! the socket with a **ticket** in their header, and the sender then publishes a **marker**
//! entry with the same ticket: the receiver delivers the packet at the marker's place, so a
//! packet never overtakes earlier ring messages, nor they it, and one order holds for all
//! senders. The packet itself wakes a sleeping receiver, so no message waits on a wake-up that
//! was never sent. A packet the receiver finds before its marker (the sender is between the two)
//! is delivered then if the ring is still empty, and its ticket remembered so that the marker is
//! skipped. Only the receiver clears `ASLEEP`, when it is awake again.
//!
//! ## A ring once a channel carries traffic
//!
//! A channel starts as a plain socket pair: making one and passing its sender costs what it
//! did before the ring. A sender that knows of no ring sends plain packets (ticket 0), and
//! after each one looks (`MSG_PEEK`) for the ring's control memfd. The danger is a plain packet
//! `p` that a later ring message `m` overtakes (`m` sent by another process, told by the first
//! after `p`). Two rules keep the one order:
//!
//! - A sender that finds the ring *after* sending `p` sends a **place holder** (an empty packet
//!   with a ticket) and publishes its marker before its send returns. Anything sent because of
//!   `p` comes after that marker, and the receiver reads the socket up to the place holder, so
//!   up to `p`, before it passes the marker. The look installs a copy of the control memfd;
//!   a process at its descriptor limit makes the room by closing the one descriptor it keeps
//!   in reserve for this (`reserve.rs`), so that the look finds the ring there too.
//! - A sender whose look found no ring sent `p` before the ring was announced, so `p` was
//!   queued then. The receiver makes the ring `ASLEEP` (so every sender that knows of it uses
//!   the socket, with markers), notes how many bytes of packets were queued once the control
//!   memfd was (`FIONREAD`), and clears `ASLEEP` only once it has read that many bytes (the
//!   socket is a queue: they are the oldest), or seen its socket empty, that is, once every
//!   such `p` is read. Counting bytes, not waiting for an empty socket, engages the ring also
//!   while a fast sender keeps the socket from ever being empty (which kept a few fresh
//!   streams in a hundred on the socket from first message to last). A receiver that arrives
//!   in another process starts the same way, counting what is queued when it arrives.
//!
//! So a channel that carries a handful of messages never pays for a ring, and one that streams
//! pays once: a memfd, two mappings, and one look per plain send until the ring is found.
//! A receiver whose process turned rings off leaves a "no ring" packet where the control memfd
//! would be: senders that see it stop looking, and the receiver never makes a ring, wherever it
//! moves (a later one would sit behind that packet, unseen).
//!
//! Descriptors: the control memfd is held by the receiver (one more descriptor, in the
//! receiver's process only); a copy waits, queued in the *sender's* direction of the socket
//! pair, for any sending process to take with `MSG_PEEK`, map, and close. A receiver that moves
//! takes the control memfd along. See `SECURITY.md` for what a hostile peer can do with it.

mod control;
mod reader;
mod writer;

pub(super) use control::Control;
pub(super) use reader::{Front, RingReader};
pub(super) use writer::{Outcome, RingWriter};

/// Writer slots per channel: processes that can send through the ring at once. One more sending
/// process retires the ring (the channel goes on over the socket alone).
pub(super) const SLOTS: usize = 16;
/// Bytes of one writer slot's ring.
pub(super) const RING_BYTES: usize = 32 * 1024;
/// The largest message that travels in the ring; larger ones take the socket.
pub(crate) const RING_MESSAGE_MAX: usize = 8 * 1024;
/// Messages a receiver takes from its socket before it gives the channel a ring.
pub(crate) const RING_AFTER: u32 = 16;
/// Compare-and-swap attempts on the word before a sender or the receiver gives up on a word
/// that never settles (a peer writing it without end). More than honest senders can make fail:
/// each failure is another publish, and the slots hold fewer entries than this while the
/// receiver takes none.
const MAX_ATTEMPTS: usize = 1 << 16;

/// Runs the ring reader over arbitrary contents, as a hostile peer could leave them (the fuzz
/// target's entry): the first 16 bytes are the word and the cursor, the rest the start of slot
/// 0's ring. Returns how many entries were delivered before the ring was empty or refused.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn read_arbitrary_ring(input: &[u8]) -> std::io::Result<usize> {
    let (fd, control) = Control::create()?;
    let (words, ring) = input.split_at(input.len().min(16));
    control.scribble(0, words);
    control.scribble(Control::ring_start(0), ring);
    let reader = RingReader::new(std::sync::Arc::new(control), fd, super::fork::generation());
    let mut delivered = 0;
    let mut buffer = Vec::new();
    // A peer can make a ring that never ends (as it can send without end): look at a few.
    for _ in 0..256 {
        match reader.front(&mut buffer)? {
            Front::Empty => break,
            Front::Data(data) => buffer = data,
            Front::Marker(_) => reader.pass()?,
        }
        delivered += 1;
    }
    Ok(delivered)
}

/// Runs the ring reader while a hostile peer writes into the ring at the same time (the fuzz
/// target's entry): an honest writer publishes messages, the reader takes them, and another
/// thread applies the input's writes to the mapping over and over meanwhile. The input is a
/// list of writes, each two bytes of offset (into the control words and the first two slots'
/// rings), one byte of length and that many bytes. Returns how many messages were delivered;
/// the reader must return from every call, and never panic, whatever the writes do.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn race_arbitrary_writes(input: &[u8]) -> std::io::Result<usize> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut writes = Vec::new();
    let mut rest = input;
    while let [high, low, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let offset = usize::from(u16::from_be_bytes([*high, *low])) % (Control::ring_start(2));
        writes.push((offset, &tail[..len]));
        rest = &tail[len..];
    }
    let generation = super::fork::generation();
    let (fd, control) = Control::create()?;
    let control = std::sync::Arc::new(control);
    let reader = RingReader::new(control.clone(), fd, generation);
    reader.settle();
    let mut writer = RingWriter::claim(control.clone(), generation);
    let done = AtomicBool::new(false);
    let mut delivered = 0;
    std::thread::scope(|scope| {
        scope.spawn(|| {
            // The hostile peer stands for another process, whose writes no Rust rule orders
            // with ours: it copies its bytes in plainly.
            while !done.load(Ordering::Relaxed) && !writes.is_empty() {
                for &(offset, bytes) in &writes {
                    control.scribble(offset, bytes);
                }
            }
        });
        let mut buffer = Vec::new();
        for round in 0..512u32 {
            if let Some(writer) = writer.as_mut() {
                let message = round.to_le_bytes();
                if writer.send(&message[..(round % 5) as usize]) != Outcome::Sent {
                    if let Some(ticket) = writer.ticket() {
                        writer.mark(ticket);
                    }
                }
            }
            match reader.front(&mut buffer) {
                Ok(Front::Data(data)) => {
                    buffer = data;
                    delivered += 1;
                }
                Ok(Front::Marker(_)) => {
                    if reader.pass().is_err() {
                        break;
                    }
                }
                Ok(Front::Empty) => {}
                Err(_) => break,
            }
        }
        done.store(true, Ordering::Relaxed);
    });
    Ok(delivered)
}

#[cfg(test)]
mod tests;
