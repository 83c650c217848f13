//! The receiving side of a pooled payload: checking the memfd a peer sent, copying the payload
//! out into a new vector, and freeing the memfd for its sender (see [`super::pool`]).
//!
//! A sender reuses its few pooled memfds message after message, so each receiver keeps its
//! read-only mappings of the last few it saw ([`PeerMaps`]): mapping and unmapping a memfd for
//! every message costs more than the copy itself up to several MiB (page faults on the new
//! mapping, and a TLB shootdown across the process's threads on every unmap).

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use rustix::fs::{fallocate, fcntl_get_seals, fstat, FallocateFlags, SealFlags};
use rustix::mm::{madvise, Advice};

use super::pool::{free_for_sender, DATA_OFFSET, MAX_ENTRIES, MAX_RETAINED};
use super::shared_map::{in_halves, SharedMap};
use super::sys::invalid_data;

/// Mappings one receiver keeps: as many memfds as one sender pools, which a stream of large
/// messages cycles through.
pub(super) const MAPS_PER_RECEIVER: usize = MAX_ENTRIES;
/// Bytes of kept mappings across the whole process. A kept mapping holds its memfd's pages even
/// after the sender lets the memfd go, so this bounds what receivers can hold on to.
pub(super) const MAPPED_BUDGET: usize = 256 << 20;

/// Bytes mapped by every [`PeerMaps`] in this process.
static MAPPED: AtomicUsize = AtomicUsize::new(0);

/// One receiver's mappings of the pooled memfds its peers sent last, most recent last.
#[derive(Default)]
pub(super) struct PeerMaps(Mutex<Vec<PeerMap>>);

/// A kept mapping, and the file it maps: while the mapping lives, no other file can have the
/// same device and inode numbers.
struct PeerMap {
    file: (u64, u64),
    map: SharedMap,
}

impl Drop for PeerMap {
    fn drop(&mut self) {
        MAPPED.fetch_sub(self.map.len(), Ordering::Relaxed);
    }
}

impl PeerMaps {
    /// Lets every kept mapping go (the peers are gone: their memfds will not come again).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Runs `copy` with a read-only mapping of the first `len` bytes of `fd`, a memfd sealed
    /// against shrinking and at least that long: a kept one when `fd` is a memfd seen before,
    /// else a new one, kept if the budget allows.
    fn with<R>(
        &self,
        fd: BorrowedFd<'_>,
        file: (u64, u64),
        len: usize,
        copy: impl FnOnce(&SharedMap) -> R,
    ) -> io::Result<R> {
        let mut maps = self.lock();
        if let Some(index) = maps.iter().position(|kept| kept.file == file && kept.map.len() >= len) {
            let kept = maps.remove(index);
            let result = copy(&kept.map);
            maps.push(kept);
            return Ok(result);
        }
        let map = SharedMap::new(fd, len, false)?;
        let result = copy(&map);
        maps.retain(|kept| kept.file != file); // a smaller mapping of the same memfd
        if MAPPED.fetch_add(len, Ordering::Relaxed) + len > MAPPED_BUDGET {
            MAPPED.fetch_sub(len, Ordering::Relaxed);
            return Ok(result);
        }
        if maps.len() == MAPS_PER_RECEIVER {
            maps.remove(0);
        }
        maps.push(PeerMap { file, map });
        Ok(result)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PeerMap>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Copies the payload out of a pooled memfd that a peer sent into `bytes` (whose contents go,
/// and whose allocation is reused when large enough), then marks the memfd free for its sender.
/// Refuses anything but a memfd sealed against shrinking (so that its mapping cannot fault) that
/// holds the whole payload.
pub(super) fn take_payload(fd: BorrowedFd<'_>, len: usize, maps: &PeerMaps, mut bytes: Vec<u8>) -> io::Result<Vec<u8>> {
    let seals = fcntl_get_seals(fd).map_err(|_| invalid_data("payload is not in a memfd"))?;
    if !seals.contains(SealFlags::SHRINK) {
        return Err(invalid_data("payload memfd is not sealed against shrinking"));
    }
    let stat = fstat(fd)?;
    let mapped = (DATA_OFFSET as usize)
        .checked_add(len)
        .filter(|&mapped| stat.st_size as u64 >= mapped as u64)
        .ok_or_else(|| invalid_data("payload memfd shorter than its length"))?;
    // Allocated fallibly, and before anything is mapped: the length is the peer's word.
    bytes.clear();
    let fresh = bytes.capacity() < len;
    if fresh {
        bytes = crate::sys::message_buffer(len)?;
    }
    let payload = if len > MAX_RETAINED {
        // Its sender does not keep it: map it this once, and give its pages back as they are copied.
        copy_out(&SharedMap::new(fd, mapped, false)?, len, Some(fd), bytes, fresh)
    } else {
        maps.with(fd, (stat.st_dev, stat.st_ino), mapped, |map| copy_out(map, len, None, bytes, fresh))?
    };
    free_for_sender(fd);
    Ok(payload)
}

/// Payloads over this size land in memory glibc maps anew, whose pages are faulted in ahead (see
/// [`populate_pages`]); glibc serves smaller allocations from memory it already has, where that
/// would only cost time.
const POPULATE_FROM: usize = 32 << 20;

/// Copies the `len`-byte payload out of `map` into `bytes` (empty, with room for it; `fresh` when
/// its allocation is new, so its pages are not there yet): the kernel's own copy (`pread`) moves a few GB/s less on large payloads
/// (64 MiB here: 46 ms against 19 ms for mapping and copying). With `release`, each step's pages
/// go back to the system once copied (`FALLOC_FL_PUNCH_HOLE`), so a payload too large for its
/// sender to keep is never held twice over: a 256 MiB message peaks at the sender's bytes plus
/// the receiver's, not plus a third copy in the memfd.
fn copy_out(map: &SharedMap, len: usize, release: Option<BorrowedFd<'_>>, mut bytes: Vec<u8>, fresh: bool) -> Vec<u8> {
    const STEP: usize = 8 << 20;
    debug_assert!(bytes.is_empty() && bytes.capacity() >= len);
    // Pages of a vector being reused are there already; a new one's are faulted in ahead.
    let populate = fresh && len > POPULATE_FROM;
    // An address rather than a pointer, so that the closure can go to a second thread.
    let destination = bytes.as_mut_ptr() as usize;
    in_halves(len, |range| {
        let start = (destination + range.start) as *mut MaybeUninit<u8>;
        // `range` lies within the vector's capacity, and the ranges `in_halves` gives are
        // disjoint, so this part is borrowed by nothing else.
        // SAFETY: valid, exclusive (possibly uninitialized) memory of `bytes`.
        let part = unsafe { std::slice::from_raw_parts_mut(start, range.len()) };
        for (index, step) in part.chunks_mut(STEP).enumerate() {
            let at = DATA_OFFSET as usize + range.start + index * STEP;
            // Step by step, so that a released payload's pages go as fast as the vector's come.
            if populate {
                populate_pages(step);
            }
            map.read(at, step);
            if let Some(fd) = release {
                // Best effort: a memfd sealed against writes keeps its pages until it is closed.
                let _ =
                    fallocate(fd, FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE, at as u64, step.len() as u64);
            }
        }
    });
    // SAFETY: `in_halves` ran the copy over all of `0..len` (or panicked).
    unsafe { bytes.set_len(len) };
    bytes
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
