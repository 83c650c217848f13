//! A shared mapping of a pooled payload memfd, and copies in and out of it that two threads
//! share when the payload is large.
//!
//! The peer may write to the same pages at any time, so the mapping is never lent out as a slice:
//! bytes only go in and out by copying.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::BorrowedFd;
use std::ptr::{self, NonNull};

use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};

use crate::sys::found_once::FoundOnce;

/// A shared mapping of the start of a pooled memfd, unmapped when dropped: writable for the
/// sender that leases the memfd, read-only for the receiver that copies a payload out.
pub(super) struct SharedMap {
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
    pub fn new(fd: BorrowedFd<'_>, len: usize, writable: bool) -> io::Result<SharedMap> {
        let protection = if writable { ProtFlags::READ | ProtFlags::WRITE } else { ProtFlags::READ };
        // A fresh mapping (null hint, no MAP_FIXED) touches no existing memory. The file is at
        // least `len` bytes long and cannot shrink, so no access can fault (SIGBUS).
        // SAFETY: a new mapping, within a file that cannot shrink under it.
        let ptr = unsafe { mmap(ptr::null_mut(), len, protection, MapFlags::SHARED, fd, 0)? };
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(SharedMap { ptr, len, writable })
    }

    /// The mapped length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Copies `data` to `offset`, a large payload in two halves on two threads (see
    /// [`in_halves`]).
    pub fn write(&mut self, offset: usize, data: &[u8]) {
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
    pub fn read(&self, offset: usize, destination: &mut [MaybeUninit<u8>]) {
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

/// Payloads from this size on are copied by two threads, each taking one half, when the machine
/// has more than one CPU: copying into memory that is not yet touched is bound by one core
/// faulting pages in, and the other side is idle meanwhile (16 MiB typed one-way: 29 → 13 ms
/// here).
const PARALLEL_FROM: usize = 8 << 20;

/// Runs `copy` over all of `0..len`: from [`PARALLEL_FROM`] on, and when the machine has a spare
/// core, as two halves at once, the first on a helper thread (on this one if none can start).
pub(super) fn in_halves(len: usize, copy: impl Fn(std::ops::Range<usize>) + Sync) {
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
    static SPARE_CORE: FoundOnce = FoundOnce::new();
    SPARE_CORE.get(|| usize::from(std::thread::available_parallelism().is_ok_and(|cpus| cpus.get() > 1))) == 1
}
