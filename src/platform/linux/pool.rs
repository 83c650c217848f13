//! Reusable payload memfds: a channel's large messages are written into pages that already
//! exist, instead of into a fresh memfd each time.
//!
//! On Linux the dominant cost of a large message is fresh shared memory: the kernel allocates and
//! zeroes every page of a new memfd, and frees it again once the receiver is done (measured here:
//! several times a plain copy). So each channel's senders in one process keep a few memfds and
//! lease one per large message:
//!
//! - the first 4 bytes hold a state word: `BUSY` from the moment a sender leases the memfd until
//!   the receiver has copied the payload out, when the receiver writes `FREE` into it;
//! - the payload starts at [`DATA_OFFSET`]; the receiver copies it out through a read-only
//!   mapping at once, so it never decodes in place memory that its sender could still change;
//! - the memfd is sealed against shrinking and against further seals, so neither side can take
//!   pages away from the other (no `SIGBUS`, no surprise `EPERM`); it may grow to fit a larger
//!   payload; a receiver refuses a payload memfd without the shrink seal;
//! - a pool belongs to one channel, so whatever stale bytes lie past a payload's end were sent
//!   on the same channel before;
//! - at most [`MAX_ENTRIES`] memfds per channel, none larger than [`MAX_RETAINED`], and
//!   [`PROCESS_BUDGET`] bytes across the process are kept; a memfd beyond that is closed after
//!   its one message (its pages go when the receiver closes it too).
//!
//! A memfd whose message is never read (dropped with its channel) stays `BUSY` and is simply
//! not reused; it leaves the pool when the pool is dropped.

use std::cell::Cell;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rustix::fs::{
    fallocate, fcntl_add_seals, fcntl_get_seals, fstat, ftruncate, memfd_create, FallocateFlags, MemfdFlags, SealFlags,
};

use rustix::mm::{madvise, mmap, munmap, Advice, MapFlags, ProtFlags};

use super::sys::{invalid_data, retry_on_intr};

/// Where the payload starts in a pooled memfd (the first page holds the state word).
pub(super) const DATA_OFFSET: u64 = 4096;
/// Memfds kept per channel.
const MAX_ENTRIES: usize = 4;
/// Payload bytes a kept memfd may hold; a larger one is closed after its message.
pub(super) const MAX_RETAINED: usize = 64 << 20;
/// Bytes of pooled memfds kept across the whole process.
const PROCESS_BUDGET: usize = 256 << 20;

const FREE: [u8; 4] = [0; 4];
const BUSY: [u8; 4] = *b"BUSY";

/// Bytes held by every pool in this process.
static RETAINED: AtomicUsize = AtomicUsize::new(0);

/// The memfds one channel's senders in this process keep for reuse.
#[derive(Default)]
pub(super) struct PayloadPool {
    entries: Mutex<Vec<Entry>>,
}

/// A pooled memfd and the bytes it counts against [`PROCESS_BUDGET`].
struct Entry {
    fd: OwnedFd,
    /// Payload bytes earlier messages wrote, whose pages therefore exist.
    counted: usize,
    /// A writable mapping of those pages: copying into it is cheaper than `pwrite`, which looks
    /// every page up again (1 MiB one-way: see the closing notes of issue 4).
    map: Option<SharedMap>,
}

impl Entry {
    /// Copies `data` to `offset` in the memfd: through the mapping where earlier payloads left
    /// pages, with `pwrite` (which allocates fresh pages faster than faulting) beyond them.
    fn write(&mut self, offset: usize, data: &[u8]) -> io::Result<()> {
        let end = offset + data.len();
        let warm = DATA_OFFSET as usize + self.counted;
        if end > warm {
            return write_all_at(self.fd.as_fd(), data, offset as u64);
        }
        if !matches!(&self.map, Some(map) if map.len >= warm) {
            self.map = None;
            self.map = Some(SharedMap::new(self.fd.as_fd(), warm, true)?);
        }
        self.map.as_mut().expect("just mapped").write(offset, data);
        Ok(())
    }
}

/// A shared mapping of the start of a pooled memfd, unmapped when dropped: writable for the
/// sender that leases the memfd, read-only for the receiver that copies a payload out.
struct SharedMap {
    ptr: NonNull<u8>,
    len: usize,
    writable: bool,
}

// The mapping is shared memory owned by this value: written only through `&mut self`, and read
// only by copying out (never lent as a slice, since its peer may write to it meanwhile).
// SAFETY: sending or sharing it between threads is as safe as for a `Vec<u8>`.
unsafe impl Send for SharedMap {}
// SAFETY: see `Send` above; `&self` only copies bytes out.
unsafe impl Sync for SharedMap {}

impl SharedMap {
    /// Maps the first `len` bytes of `fd`, a memfd that is at least that long and sealed
    /// against shrinking (every caller checks).
    fn new(fd: BorrowedFd<'_>, len: usize, writable: bool) -> io::Result<SharedMap> {
        let protection = if writable { ProtFlags::READ | ProtFlags::WRITE } else { ProtFlags::READ };
        // A fresh mapping (null hint, no MAP_FIXED) touches no existing memory. The file is at
        // least `len` bytes long and cannot shrink, so no access can fault (SIGBUS).
        // SAFETY: a new mapping, within a file that cannot shrink under it.
        let ptr = unsafe { mmap(ptr::null_mut(), len, protection, MapFlags::SHARED, fd, 0)? };
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(SharedMap { ptr, len, writable })
    }

    /// Copies `data` to `offset`, a large payload in two halves on two threads (see
    /// [`in_halves`]).
    fn write(&mut self, offset: usize, data: &[u8]) {
        assert!(self.writable && offset + data.len() <= self.len, "a write inside a writable mapping");
        // An address rather than a pointer, so that the closure can go to a second thread.
        let base = self.ptr.as_ptr() as usize + offset;
        in_halves(data.len(), |range| {
            let part = &data[range.clone()];
            // The destination lies inside `data`'s range of the live, writable mapping (checked
            // above), which `&mut self` keeps to this call; the ranges `in_halves` gives are
            // disjoint, and `data` is ordinary memory of this process, so nothing overlaps.
            // SAFETY: a copy into valid, writable, non-overlapping memory.
            unsafe { ptr::copy_nonoverlapping(part.as_ptr(), (base + range.start) as *mut u8, part.len()) };
        });
    }

    /// Copies the bytes at `offset` into all of `destination`.
    fn read(&self, offset: usize, destination: &mut [MaybeUninit<u8>]) {
        assert!(offset + destination.len() <= self.len, "a read inside the mapping");
        // The source lies inside the live mapping (checked above); the destination is memory of
        // this process that `&mut` makes exclusive, so the two cannot overlap. The peer may be
        // writing the source meanwhile: that changes only which bytes arrive.
        // SAFETY: a copy between valid, non-overlapping ranges.
        unsafe {
            let source = self.ptr.as_ptr().add(offset);
            ptr::copy_nonoverlapping(source, destination.as_mut_ptr().cast::<u8>(), destination.len());
        }
    }
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping made by `SharedMap::new`, unmapped only here.
        let _ = unsafe { munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        RETAINED.fetch_sub(self.counted, Ordering::Relaxed);
    }
}

impl PayloadPool {
    /// A memfd for one message: a free one from the pool, or a new one.
    pub fn lease(self: &Arc<Self>) -> io::Result<Lease> {
        let reused = {
            let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let free = entries.iter().position(|entry| is_free(entry.fd.as_fd()));
            free.map(|index| entries.swap_remove(index))
        };
        let entry = match reused {
            Some(entry) => entry,
            None => Entry { fd: new_pooled_memfd()?, counted: 0, map: None },
        };
        write_all_at(entry.fd.as_fd(), &BUSY, 0)?;
        Ok(Lease { pool: self.clone(), entry: Some(entry), len: 0, sent: Cell::new(false) })
    }
}

/// One message's memfd, returned to its pool when dropped (still `BUSY` if the message was sent:
/// the receiver frees it).
pub(crate) struct Lease {
    pool: Arc<PayloadPool>,
    entry: Option<Entry>,
    len: usize,
    sent: Cell<bool>,
}

impl Lease {
    /// Writes `data` at payload offset `at`.
    pub fn write_at(&mut self, at: usize, data: &[u8]) -> io::Result<()> {
        let entry = self.entry.as_mut().expect("a lease holds its memfd until dropped");
        entry.write(DATA_OFFSET as usize + at, data)?;
        self.len = self.len.max(at + data.len());
        Ok(())
    }

    /// The payload's length: the end of the furthest write.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The memfd, to send with the message.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.entry.as_ref().expect("a lease holds its memfd until dropped").fd.as_fd()
    }

    /// The message went out: the receiver will free the memfd.
    pub fn mark_sent(&self) {
        self.sent.set(true);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(mut entry) = self.entry.take() else { return };
        if !self.sent.get() && write_all_at(entry.fd.as_fd(), &FREE, 0).is_err() {
            return;
        }
        // Keep the memfd if it is small enough and the process budget has room for its growth.
        let size = self.len.max(entry.counted);
        if size > MAX_RETAINED {
            return;
        }
        let growth = size - entry.counted;
        let counted = RETAINED.fetch_add(growth, Ordering::Relaxed) + growth;
        entry.counted = size;
        if counted > PROCESS_BUDGET {
            return;
        }
        let mut entries = self.pool.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if entries.len() < MAX_ENTRIES {
            entries.push(entry);
        }
    }
}

/// Copies the payload out of a pooled memfd that a peer sent, then marks it free for its sender.
/// Refuses anything but a memfd sealed against shrinking (so that its mapping cannot fault) that
/// holds the whole payload.
pub(super) fn take_payload(fd: BorrowedFd<'_>, len: usize) -> io::Result<Vec<u8>> {
    let seals = fcntl_get_seals(fd).map_err(|_| invalid_data("payload is not in a memfd"))?;
    if !seals.contains(SealFlags::SHRINK) {
        return Err(invalid_data("payload memfd is not sealed against shrinking"));
    }
    let size = fstat(fd)?.st_size;
    if (size as u64) < DATA_OFFSET.saturating_add(len as u64) {
        return Err(invalid_data("payload memfd shorter than its length"));
    }
    let payload = copy_out(fd, len)?;
    // Best effort: a sender that sealed its memfd against writes only loses its reuse.
    let _ = write_all_at(fd, &FREE, 0);
    Ok(payload)
}

/// Payloads from this size on are copied by two threads, each taking one half, when the machine
/// has more than one CPU: copying into memory that is not yet touched is bound by one core
/// faulting pages in, and the other side is idle meanwhile (16 MiB typed one-way: 29 → 13 ms
/// here).
const PARALLEL_FROM: usize = 8 << 20;

/// Payloads over this size land in memory glibc maps anew, whose pages are faulted in ahead (see
/// [`populate_pages`]); glibc serves smaller allocations from memory it already has, where that
/// would only cost time.
const POPULATE_FROM: usize = 32 << 20;

/// Copies a payload out of a pooled memfd into a new vector, through a read-only mapping: the
/// kernel's own copy (`pread`) moves a few GB/s less on large payloads (64 MiB here: 46 ms
/// against 19 ms for mapping and copying). A payload too large for its sender to keep is copied
/// in steps whose pages go back to the system at once (`FALLOC_FL_PUNCH_HOLE`), so it is never
/// held twice over: a 256 MiB message peaks at the sender's bytes plus the receiver's, not plus
/// a third copy in the memfd.
fn copy_out(fd: BorrowedFd<'_>, len: usize) -> io::Result<Vec<u8>> {
    const STEP: usize = 8 << 20;
    let map = SharedMap::new(fd, DATA_OFFSET as usize + len, false)?;
    let release = len > MAX_RETAINED;
    let mut bytes = Vec::<u8>::with_capacity(len);
    // An address rather than a pointer, so that the closure can go to a second thread.
    let destination = bytes.as_mut_ptr() as usize;
    in_halves(len, |range| {
        // `range` lies within the vector's capacity, and the ranges `in_halves` gives are
        // disjoint, so this part is borrowed by nothing else.
        // SAFETY: valid, exclusive (possibly uninitialized) memory of `bytes`.
        let part =
            unsafe { std::slice::from_raw_parts_mut((destination + range.start) as *mut MaybeUninit<u8>, range.len()) };
        if len > POPULATE_FROM {
            populate_pages(part);
        }
        for (index, step) in part.chunks_mut(STEP).enumerate() {
            let at = DATA_OFFSET as usize + range.start + index * STEP;
            map.read(at, step);
            if release {
                // Best effort: a memfd sealed against writes keeps its pages until it is closed.
                let _ =
                    fallocate(fd, FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE, at as u64, step.len() as u64);
            }
        }
    });
    // SAFETY: `in_halves` ran the copy over all of `0..len` (or panicked).
    unsafe { bytes.set_len(len) };
    Ok(bytes)
}

/// Runs `copy` over all of `0..len`: from [`PARALLEL_FROM`] on, and when the machine has a spare
/// core, as two halves at once, the first on a helper thread (on this one if none can start).
fn in_halves(len: usize, copy: impl Fn(std::ops::Range<usize>) + Sync) {
    if len < PARALLEL_FROM || !spare_core() {
        return copy(0..len);
    }
    let half = len / 2;
    std::thread::scope(|scope| {
        let helper = std::thread::Builder::new().spawn_scoped(scope, || copy(0..half)).ok();
        copy(half..len);
        if helper.and_then(|helper| helper.join().ok()).is_none() {
            copy(0..half);
        }
    });
}

/// Whether the machine has more than one CPU, so that a second copying thread can help.
fn spare_core() -> bool {
    static SPARE_CORE: OnceLock<bool> = OnceLock::new();
    *SPARE_CORE.get_or_init(|| std::thread::available_parallelism().is_ok_and(|cpus| cpus.get() > 1))
}

/// Faults in the pages of a large buffer with one system call, which is cheaper than the one
/// fault per page that a copy into fresh memory takes (64 MiB one-way: 55.6 → 46.3 ms here), and
/// asks for 2 MiB pages where the system allows them (`MADV_HUGEPAGE`; 64 MiB one-way:
/// 76 → 49 ms here). Best effort; contents are unchanged.
fn populate_pages(buffer: &mut [MaybeUninit<u8>]) {
    const PAGE: usize = 4096;
    let start = buffer.as_mut_ptr() as usize;
    let aligned = start.next_multiple_of(PAGE);
    let len = (start + buffer.len()).saturating_sub(aligned) / PAGE * PAGE;
    let range = aligned as *mut std::ffi::c_void;
    // MADV_HUGEPAGE only asks for 2 MiB pages where the system allows them; MADV_POPULATE_WRITE
    // only makes pages present and writable. Neither changes the contents or the mapping.
    // SAFETY: the range lies inside memory the caller owns.
    let _ = unsafe { madvise(range, len, Advice::LinuxHugepage) };
    // SAFETY: as above.
    let _ = unsafe { madvise(range, len, Advice::LinuxPopulateWrite) };
}

fn new_pooled_memfd() -> io::Result<OwnedFd> {
    let fd = retry_on_intr(|| memfd_create("crossproc-payload", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING))?;
    retry_on_intr(|| ftruncate(&fd, DATA_OFFSET))?;
    retry_on_intr(|| fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::SEAL))?;
    Ok(fd)
}

fn is_free(fd: BorrowedFd<'_>) -> bool {
    let mut word = [0xFF; 4];
    matches!(rustix::io::pread(fd, &mut word, 0), Ok(4)) && word == FREE
}

fn write_all_at(fd: BorrowedFd<'_>, mut data: &[u8], mut offset: u64) -> io::Result<()> {
    while !data.is_empty() {
        let written = retry_on_intr(|| rustix::io::pwrite(fd, data, offset))?;
        if written == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "memfd accepted no bytes"));
        }
        data = &data[written..];
        offset += written as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memfd_is_reused_only_after_its_receiver_frees_it() {
        let pool = Arc::new(PayloadPool::default());
        let mut first = pool.lease().unwrap();
        first.write_at(0, b"first payload").unwrap();
        first.mark_sent();
        let sent = first.fd().try_clone_to_owned().unwrap();
        drop(first);
        // Still busy: a second lease gets a new memfd.
        let second = pool.lease().unwrap();
        assert_ne!(fstat(second.fd()).unwrap().st_ino, fstat(&sent).unwrap().st_ino);
        drop(second);
        // The receiver copies the payload out and frees the memfd; the next lease reuses it.
        assert_eq!(take_payload(sent.as_fd(), 13).unwrap(), b"first payload");
        let mut third = pool.lease().unwrap();
        assert_eq!(fstat(third.fd()).unwrap().st_ino, fstat(&sent).unwrap().st_ino);
        // The reused memfd takes new bytes through its mapping, and beyond it with pwrite.
        third.write_at(0, b"second").unwrap();
        third.write_at(6, &[7u8; 20_000]).unwrap();
        third.mark_sent();
        let mut expected = b"second".to_vec();
        expected.extend([7u8; 20_000]);
        assert_eq!(take_payload(third.fd(), expected.len()).unwrap(), expected);
    }

    #[test]
    fn a_pooled_memfd_cannot_shrink_and_a_short_one_is_refused() {
        let pool = Arc::new(PayloadPool::default());
        let lease = pool.lease().unwrap();
        assert!(ftruncate(lease.fd(), 0).is_err(), "sealed against shrinking");
        assert_eq!(take_payload(lease.fd(), 1).unwrap_err().kind(), io::ErrorKind::InvalidData);
        let (pipe, _writer) = rustix::pipe::pipe().unwrap();
        assert_eq!(take_payload(pipe.as_fd(), 0).unwrap_err().kind(), io::ErrorKind::InvalidData);
    }
}
