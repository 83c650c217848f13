//! The control memfd's layout, and typed access to its mapping.
//!
//! ```text
//! offset            size   field
//!      0               8   word: bit 0 ASLEEP, bit 1 CLOSED, bits 2..18 head (an entry
//!                          reference, 0 = none), bits 18..64 publish count
//!     64               8   cursor: the next entry to deliver (receiver's), 0 = none
//!     72               8   ahead count (receiver's)
//!     80               8   owner: the token of the process that reads the ring (receiver's;
//!                          0 once it let go, see `owner.rs`)
//!    128         8 × 64    ahead tickets (receiver's)
//!    640     4 × SLOTS     waiting flags: a futex word per slot, 1 while its writer waits for
//!                          room (set by the writer, cleared by the receiver, which wakes it)
//!   1024   64 × SLOTS      slot headers: owner token, head, tail, ticket count (writer's)
//!   2048  RING_BYTES × SLOTS  the slots' rings of entries
//! ```
//!
//! The rings start within the first page, so that a channel that carried one message has one
//! page of it resident.
//!
//! An entry (32-byte aligned in its slot's ring) is a 32-byte header and its payload:
//! `state` u32 (1 written, 2 consumed by the receiver, 3 padding), `kind` u32 (1 data,
//! 2 marker), `len` u32, `next` u32 (the entry published before it), `fwd` u32 (the entry after
//! it, set by the receiver), `seq` u32 (low bits of its publish count), `ticket` u64 (markers).
//! An entry reference is `1 + slot × (RING_BYTES / 32) + offset / 32`.
//!
//! The memfd is sealed against shrinking and growing, so no access to the mapping can fault.
//! Every process that maps it can write anywhere in it: readers check everything they read.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use rustix::fs::{fcntl_add_seals, fcntl_get_seals, fstat, ftruncate, memfd_create, MemfdFlags, SealFlags};
use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};
use rustix::thread::futex;

use super::super::sys::{invalid_data, retry_on_intr};
use super::{RING_BYTES, SLOTS};

/// Where the slots' rings start.
const RINGS_START: usize = 2048;
/// The mapping's length: the control words and every slot's ring.
const MAP_LEN: usize = RINGS_START + SLOTS * RING_BYTES;
/// Entries start, and their sizes are rounded, at this alignment.
pub(super) const ALIGN: usize = 32;
/// Bytes of an entry before its payload.
pub(super) const ENTRY_HEADER: usize = 32;
/// Tickets the receiver remembers of packets it delivered before their markers.
const AHEAD: usize = 64;
/// Entry references fit in 16 bits.
const UNITS_PER_RING: usize = RING_BYTES / ALIGN;

// The word has a cache line of its own: every send and every take writes it, and the receiver's
// cursor beside it would make each of those writes evict the other process's copy once more.
const WORD: usize = 0;
const CURSOR: usize = 64;
const AHEAD_COUNT: usize = 72;
const OWNER: usize = 80;
const AHEAD_TICKETS: usize = 128;
// Read by the receiver at every take: on a line of their own that writers set only when they
// wait, so the look is a hit in the receiver's cache.
const WAITING: usize = 640;
const _: () = assert!(AHEAD_TICKETS + AHEAD * 8 <= WAITING && WAITING + SLOTS * 4 <= SLOT_HEADERS);
const SLOT_HEADERS: usize = 1024;
const SLOT_HEADER_LEN: usize = 64;

/// Entry states.
pub(super) const WRITTEN: u32 = 1;
pub(super) const CONSUMED: u32 = 2;
pub(super) const PADDING: u32 = 3;
/// Entry kinds.
pub(super) const DATA: u32 = 1;
pub(super) const MARKER: u32 = 2;

/// The word's bits.
pub(super) const ASLEEP: u64 = 1;
pub(super) const CLOSED: u64 = 2;
const FLAGS: u64 = ASLEEP | CLOSED;
const HEAD_SHIFT: u32 = 2;
const HEAD_MASK: u64 = 0xFFFF;
const COUNT_SHIFT: u32 = 18;

/// The control word, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Word(pub u64);

impl Word {
    pub fn new(head: u32, count: u64, flags: u64) -> Word {
        Word((count << COUNT_SHIFT) | ((u64::from(head) & HEAD_MASK) << HEAD_SHIFT) | (flags & FLAGS))
    }
    /// The newest published entry, 0 when the chain is empty.
    pub fn head(self) -> u32 {
        ((self.0 >> HEAD_SHIFT) & HEAD_MASK) as u32
    }
    /// How many entries were ever published.
    pub fn count(self) -> u64 {
        self.0 >> COUNT_SHIFT
    }
    pub fn flags(self) -> u64 {
        self.0 & FLAGS
    }
    pub fn has(self, flag: u64) -> bool {
        self.0 & flag != 0
    }
}

/// The offset of an entry's field, from the start of the entry.
#[derive(Clone, Copy)]
pub(in super::super) enum Field {
    State = 0,
    Kind = 4,
    Len = 8,
    Next = 12,
    Fwd = 16,
    Seq = 20,
}

/// A mapping of a channel's control memfd.
pub(in super::super) struct Control {
    ptr: NonNull<u8>,
}

// The mapping is shared memory that every access goes through atomics or raw copies.
// SAFETY: moving or sharing the pointer between threads is as safe as for the atomics it holds.
unsafe impl Send for Control {}
// SAFETY: see `Send`.
unsafe impl Sync for Control {}

impl Control {
    /// A new control memfd, sealed at its size, and its mapping.
    pub fn create() -> io::Result<(OwnedFd, Control)> {
        let fd = retry_on_intr(|| memfd_create("crossproc-ring", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING))?;
        ftruncate(&fd, MAP_LEN as u64)?;
        fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
        let control = Control::map(fd.as_fd())?;
        Ok((fd, control))
    }

    /// Maps a control memfd a peer sent, refusing anything that could fault or is too short.
    pub fn open(fd: BorrowedFd<'_>) -> io::Result<Control> {
        let seals = fcntl_get_seals(fd).map_err(|_| invalid_data("ring control is not a memfd"))?;
        if !seals.contains(SealFlags::SHRINK) || fstat(fd)?.st_size != MAP_LEN as i64 {
            return Err(invalid_data("ring control memfd is not sealed at its size"));
        }
        Control::map(fd)
    }

    fn map(fd: BorrowedFd<'_>) -> io::Result<Control> {
        let protection = ProtFlags::READ | ProtFlags::WRITE;
        // A fresh shared mapping (null hint, no MAP_FIXED) of a memfd sealed against shrinking at
        // `MAP_LEN` bytes or more: no existing memory is touched, and no access can fault.
        // SAFETY: a new mapping, within a file that cannot shrink under it.
        let ptr = unsafe { mmap(ptr::null_mut(), MAP_LEN, protection, MapFlags::SHARED, fd, 0)? };
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Control { ptr })
    }

    fn u64_at(&self, offset: usize) -> &AtomicU64 {
        assert!(offset % 8 == 0 && offset + 8 <= MAP_LEN);
        // In bounds and aligned (checked); the mapping lives as long as `self`, and every access to
        // shared words goes through atomics.
        // SAFETY: a valid, aligned `AtomicU64` for the lifetime of `&self`.
        unsafe { &*self.ptr.as_ptr().add(offset).cast::<AtomicU64>() }
    }

    fn u32_at(&self, offset: usize) -> &AtomicU32 {
        assert!(offset % 4 == 0 && offset + 4 <= MAP_LEN);
        // SAFETY: as in `u64_at`.
        unsafe { &*self.ptr.as_ptr().add(offset).cast::<AtomicU32>() }
    }

    /// The control word.
    pub fn word(&self) -> &AtomicU64 {
        self.u64_at(WORD)
    }

    /// The receiver's cursor: the next entry to deliver.
    pub fn cursor(&self) -> &AtomicU64 {
        self.u64_at(CURSOR)
    }

    /// The token of the process that reads the ring (see `owner.rs`).
    pub fn owner(&self) -> &AtomicU64 {
        self.u64_at(OWNER)
    }

    /// Retires the ring: from now on every message takes the socket.
    pub fn close(&self) {
        self.word().fetch_or(CLOSED, Ordering::AcqRel);
    }

    /// Whether the ring is retired.
    pub fn is_closed(&self) -> bool {
        Word(self.word().load(Ordering::Acquire)).has(CLOSED)
    }

    /// Slot `slot`'s header word `index`: 0 owner, 1 head, 2 tail, 3 ticket count.
    pub fn slot_word(&self, slot: usize, index: usize) -> &AtomicU64 {
        assert!(slot < SLOTS && index < SLOT_HEADER_LEN / 8);
        self.u64_at(SLOT_HEADERS + slot * SLOT_HEADER_LEN + index * 8)
    }

    /// Slot `slot`'s waiting flag (a futex word): 1 while its writer waits for room.
    pub fn waiting(&self, slot: usize) -> &AtomicU32 {
        assert!(slot < SLOTS);
        self.u32_at(WAITING + slot * 4)
    }

    /// Waits until the receiver clears slot `slot`'s waiting flag (it wakes the slot's writer
    /// once it has taken entries), or `timeout` passes.
    pub fn wait_for_room(&self, slot: usize, timeout: std::time::Duration) {
        let flag = self.waiting(slot);
        let timeout = super::super::sys::timespec(timeout);
        // Shared (not process-private): the receiver that wakes it is another process.
        let _ = futex::wait(flag, futex::Flags::empty(), 1, Some(&timeout));
        flag.store(0, Ordering::Relaxed);
    }

    /// Wakes the writers that wait for room: called once the receiver consumed entries.
    pub fn wake_waiting_writers(&self) {
        // Ordered with a writer's flag-then-look (`RingWriter::announce_wait`): either its look
        // finds the entries consumed before this, or this finds its flag.
        std::sync::atomic::fence(Ordering::SeqCst);
        for slot in 0..SLOTS {
            let flag = self.waiting(slot);
            if flag.load(Ordering::Relaxed) != 0 && flag.swap(0, Ordering::AcqRel) != 0 {
                let _ = futex::wake(flag, futex::Flags::empty(), u32::MAX);
            }
        }
    }

    /// Remembers that the packet with `ticket` was delivered before its marker: in the first
    /// free entry from the one after the last written, so that a ticket is overwritten only
    /// when all [`AHEAD`] entries hold tickets whose markers have not come (then the oldest
    /// written goes; a sender is between its packet and its marker for microseconds).
    pub fn remember_ahead(&self, ticket: u64) {
        let count = self.u64_at(AHEAD_COUNT);
        let start = count.load(Ordering::Relaxed);
        let free = (0..AHEAD as u64)
            .map(|step| start.wrapping_add(step))
            .find(|&at| self.ahead_ticket(at).load(Ordering::Relaxed) == 0)
            .unwrap_or(start);
        count.store(free.wrapping_add(1), Ordering::Relaxed);
        self.ahead_ticket(free).store(ticket, Ordering::Relaxed);
    }

    /// The ahead entry that position `at` (counted without end) falls on.
    fn ahead_ticket(&self, at: u64) -> &AtomicU64 {
        self.u64_at(AHEAD_TICKETS + (at % AHEAD as u64) as usize * 8)
    }

    /// Whether the packet with `ticket` was delivered before its marker (forgetting it).
    pub fn forget_ahead(&self, ticket: u64) -> bool {
        (0..AHEAD as u64).any(|at| {
            let slot = self.ahead_ticket(at);
            slot.load(Ordering::Relaxed) == ticket
                && slot.compare_exchange(ticket, 0, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        })
    }

    /// The reference of the entry at byte `offset` of slot `slot`'s ring.
    pub fn reference(slot: usize, offset: usize) -> u32 {
        (1 + slot * UNITS_PER_RING + offset / ALIGN) as u32
    }

    /// The slot and offset an entry reference points at, or `None` if it points nowhere.
    pub fn locate(reference: u32) -> Option<(usize, usize)> {
        let index = (reference as usize).checked_sub(1)?;
        let slot = index / UNITS_PER_RING;
        (slot < SLOTS).then_some((slot, (index % UNITS_PER_RING) * ALIGN))
    }

    fn entry_start(slot: usize, offset: usize) -> usize {
        assert!(slot < SLOTS && offset % ALIGN == 0 && offset + ENTRY_HEADER <= RING_BYTES);
        RINGS_START + slot * RING_BYTES + offset
    }

    /// A 32-bit field of the entry at `offset` in slot `slot`.
    pub fn field(&self, slot: usize, offset: usize, field: Field) -> &AtomicU32 {
        self.u32_at(Control::entry_start(slot, offset) + field as usize)
    }

    /// The ticket of the marker at `offset` in slot `slot`.
    pub fn ticket(&self, slot: usize, offset: usize) -> &AtomicU64 {
        self.u64_at(Control::entry_start(slot, offset) + 24)
    }

    /// Copies `data` into the payload of the entry at `offset` in slot `slot` (the caller checked
    /// it fits the ring), a 64-bit word at a time (the last one padded with zeros, inside the
    /// entry, whose size is a multiple of [`ALIGN`]).
    pub fn write_payload(&self, slot: usize, offset: usize, data: &[u8]) {
        assert!(offset + ENTRY_HEADER + data.len() <= RING_BYTES);
        let words = self.words(Control::entry_start(slot, offset) + ENTRY_HEADER, data.len().div_ceil(8));
        let whole = data.chunks_exact(8);
        let rest = whole.remainder();
        for (word, chunk) in words.iter().zip(whole) {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(chunk);
            word.store(u64::from_ne_bytes(bytes), Ordering::Relaxed);
        }
        if !rest.is_empty() {
            let mut bytes = [0u8; 8];
            bytes[..rest.len()].copy_from_slice(rest);
            words[words.len() - 1].store(u64::from_ne_bytes(bytes), Ordering::Relaxed);
        }
    }

    /// Appends the `len`-byte payload of the entry at `offset` in slot `slot` to `out`, or
    /// refuses a length that leaves the ring.
    ///
    /// Peers may write these bytes while they are read (a hostile one on purpose): each is read
    /// once, a 64-bit word at a time through atomics, so a concurrent write changes only which
    /// bytes arrive, never the program's behaviour (a plain copy would be a data race).
    pub fn read_payload(&self, slot: usize, offset: usize, len: usize, out: &mut Vec<u8>) -> io::Result<()> {
        if offset + ENTRY_HEADER + len > RING_BYTES {
            return Err(invalid_data("ring entry runs past its ring"));
        }
        let words = self.words(Control::entry_start(slot, offset) + ENTRY_HEADER, len.div_ceil(8));
        let start = out.len();
        out.resize(start + len, 0);
        let mut whole = out[start..].chunks_exact_mut(8);
        for (into, word) in whole.by_ref().zip(words) {
            into.copy_from_slice(&word.load(Ordering::Relaxed).to_ne_bytes());
        }
        let rest = whole.into_remainder();
        if !rest.is_empty() {
            let len = rest.len();
            rest.copy_from_slice(&words[words.len() - 1].load(Ordering::Relaxed).to_ne_bytes()[..len]);
        }
        Ok(())
    }

    /// The `count` 64-bit words of the mapping from byte `start` (8-aligned).
    fn words(&self, start: usize, count: usize) -> &[AtomicU64] {
        assert!(start % 8 == 0 && start + count * 8 <= MAP_LEN);
        // In bounds and aligned (checked); the mapping lives as long as `self`, and every access
        // to these words goes through atomics.
        // SAFETY: `count` valid, aligned `AtomicU64`s for the lifetime of `&self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(start).cast::<AtomicU64>(), count) }
    }
}

#[cfg(any(test, feature = "fuzzing"))]
impl Control {
    /// Writes arbitrary bytes at `offset` of the mapping, as a hostile peer could.
    pub fn scribble(&self, offset: usize, bytes: &[u8]) {
        let len = bytes.len().min(MAP_LEN.saturating_sub(offset));
        // SAFETY: `offset..offset + len` lies inside the live mapping; `bytes` is ours.
        unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.as_ptr().add(offset), len) };
    }

    /// Where slot `slot`'s ring starts in the mapping.
    pub fn ring_start(slot: usize) -> usize {
        RINGS_START + slot * RING_BYTES
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        // SAFETY: `ptr` and `MAP_LEN` describe the mapping made in `map`, unmapped only here.
        let _ = unsafe { munmap(self.ptr.as_ptr().cast(), MAP_LEN) };
    }
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Control({:#x})", self.word().load(Ordering::Relaxed))
    }
}
