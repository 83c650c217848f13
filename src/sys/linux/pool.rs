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
//!   [`PROCESS_BUDGET`] bytes and [`pooled_budget`] memfds (an eighth of `RLIMIT_NOFILE`, 128
//!   under the default limit: `inflight.rs`) across the process are kept; a memfd beyond that is
//!   closed after its one message (its pages go when the receiver closes it too).
//!
//! A memfd whose message is never read (dropped with its channel) stays `BUSY` and is simply
//! not reused; it leaves the pool when the pool is dropped.
//!
//! A pool belongs to one process. A child made by `fork` inherits the parent's pool, memfds and
//! all, and if both leased from it, both could find the same memfd free and write their payloads
//! over each other. So a pool remembers the process that owns it, and a forked child that finds
//! itself in a pool it does not own first drops every inherited memfd (the parent keeps them)
//! and starts afresh.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rustix::fs::{fcntl_add_seals, ftruncate, memfd_create, MemfdFlags, SealFlags};

use super::inflight::{pooled_budget, Budget};
use super::shared_map::SharedMap;
use super::sys::retry_on_intr;

/// Where the payload starts in a pooled memfd (the first page holds the state word).
pub(super) const DATA_OFFSET: u64 = 4096;
/// Memfds kept per channel: enough that a stream of large messages, whose fresh memfds the
/// channel's buffer lets only a few be in flight at once (`frame.rs`, the buffer claim),
/// settles on reusing them (8 were made in a stream of 1 MiB messages).
pub(super) const MAX_ENTRIES: usize = 16;
/// Payload bytes a kept memfd may hold; a larger one is closed after its message.
pub(super) const MAX_RETAINED: usize = 64 << 20;
/// Bytes of pooled memfds kept across the whole process.
const PROCESS_BUDGET: usize = 256 << 20;

const FREE: [u8; 4] = [0; 4];
const BUSY: [u8; 4] = *b"BUSY";

/// Bytes held by every pool in this process.
static RETAINED: AtomicUsize = AtomicUsize::new(0);
/// Memfds held by every pool in this process (each a descriptor), leased ones included.
static POOLED: Budget = Budget::new();

/// The memfds one channel's senders in this process keep for reuse.
pub(super) struct PayloadPool {
    entries: Mutex<Pooled>,
}

/// A pool's memfds, and the process they belong to.
struct Pooled {
    owner: u32,
    entries: Vec<Entry>,
}

impl Default for PayloadPool {
    fn default() -> Self {
        // The owner is set at the first lease (`getpid` is a system call, and most channels
        // never lease a memfd).
        PayloadPool { entries: Mutex::new(Pooled { owner: 0, entries: Vec::new() }) }
    }
}

impl PayloadPool {
    /// The memfds this process may lease from: none inherited through `fork`.
    fn lock(&self) -> std::sync::MutexGuard<'_, Pooled> {
        let mut pooled = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let me = std::process::id();
        if pooled.owner != me {
            pooled.entries.clear();
            pooled.owner = me;
        }
        pooled
    }
}

/// A pooled memfd and the bytes it counts against [`PROCESS_BUDGET`].
struct Entry {
    fd: OwnedFd,
    /// Payload bytes earlier messages wrote, whose pages therefore exist.
    counted: usize,
    /// Whether it counts against the process's [`pooled_budget`] (it was kept once).
    kept: bool,
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
        if !matches!(&self.map, Some(map) if map.len() >= warm) {
            self.map = None;
            self.map = Some(SharedMap::new(self.fd.as_fd(), warm, true)?);
        }
        self.map.as_mut().expect("just mapped").write(offset, data);
        Ok(())
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        RETAINED.fetch_sub(self.counted, Ordering::Relaxed);
        if self.kept {
            POOLED.give_back();
        }
    }
}

impl PayloadPool {
    /// A memfd for one message: a free one from the pool, or a new one.
    pub fn lease(self: &Arc<Self>) -> io::Result<Lease> {
        let reused = {
            let mut pooled = self.lock();
            let free = pooled.entries.iter().position(|entry| is_free(entry.fd.as_fd()));
            free.map(|index| pooled.entries.swap_remove(index))
        };
        let entry = match reused {
            Some(entry) => entry,
            None => Entry { fd: new_pooled_memfd()?, counted: 0, kept: false, map: None },
        };
        write_all_at(entry.fd.as_fd(), &BUSY, 0)?;
        Ok(Lease { pool: self.clone(), entry: Some(entry), len: 0, fresh: false, sent: Cell::new(false) })
    }
}

/// One message's memfd, returned to its pool when dropped (still `BUSY` if the message was sent:
/// the receiver frees it).
pub(crate) struct Lease {
    pool: Arc<PayloadPool>,
    entry: Option<Entry>,
    len: usize,
    /// Whether the payload needed pages the pool did not hold yet.
    fresh: bool,
    sent: Cell<bool>,
}

impl Lease {
    /// Writes `data` at payload offset `at`.
    pub fn write_at(&mut self, at: usize, data: &[u8]) -> io::Result<()> {
        let entry = self.entry.as_mut().expect("a lease holds its memfd until dropped");
        entry.write(DATA_OFFSET as usize + at, data)?;
        self.fresh |= at + data.len() > entry.counted;
        self.len = self.len.max(at + data.len());
        Ok(())
    }

    /// The payload's length: the end of the furthest write.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the payload needed pages the pool did not hold yet: new memory in flight, rather
    /// than memory the pool keeps anyway.
    pub fn is_fresh(&self) -> bool {
        self.fresh
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
        let mut pooled = self.pool.lock();
        if pooled.entries.len() >= MAX_ENTRIES {
            return;
        }
        // A memfd new to the pools counts against the process's count of them; past it, it is
        // closed after its one message.
        if !entry.kept {
            if !POOLED.take(pooled_budget()) {
                return;
            }
            entry.kept = true;
        }
        pooled.entries.push(entry);
    }
}

/// Marks a pooled memfd whose payload the receiver has copied out free for its sender. Best
/// effort: a sender that sealed its memfd against writes only loses its reuse.
pub(super) fn free_for_sender(fd: BorrowedFd<'_>) {
    let _ = write_all_at(fd, &FREE, 0);
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
    use super::super::intake::{take_payload, PeerMaps};
    use super::*;
    use rustix::fs::fstat;

    #[test]
    fn a_memfd_is_reused_only_after_its_receiver_frees_it() {
        let pool = Arc::new(PayloadPool::default());
        // One receiver's kept mappings throughout: the reused memfd is read through the mapping
        // of its first payload, then through a larger one.
        let maps = PeerMaps::default();
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
        assert_eq!(take_payload(sent.as_fd(), 13, &maps, Vec::new()).unwrap(), b"first payload");
        let mut third = pool.lease().unwrap();
        assert_eq!(fstat(third.fd()).unwrap().st_ino, fstat(&sent).unwrap().st_ino);
        // The reused memfd takes new bytes through its mapping, and beyond it with pwrite.
        third.write_at(0, b"second").unwrap();
        third.write_at(6, &[7u8; 20_000]).unwrap();
        third.mark_sent();
        let mut expected = b"second".to_vec();
        expected.extend([7u8; 20_000]);
        assert_eq!(take_payload(third.fd(), expected.len(), &maps, Vec::new()).unwrap(), expected);
    }

    #[test]
    fn only_a_payload_in_pages_the_pool_already_holds_is_not_fresh() {
        let pool = Arc::new(PayloadPool::default());
        let maps = PeerMaps::default();
        let send = |len: usize| {
            let mut lease = pool.lease().unwrap();
            lease.write_at(0, &vec![1u8; len]).unwrap();
            lease.mark_sent();
            let fresh = lease.is_fresh();
            let fd = lease.fd().try_clone_to_owned().unwrap();
            drop(lease);
            take_payload(fd.as_fd(), len, &maps, Vec::new()).unwrap();
            fresh
        };
        assert!(send(10_000), "a new memfd");
        assert!(!send(10_000), "the same pages again");
        assert!(!send(5_000), "fewer of them");
        assert!(send(20_000), "the memfd grew");
    }

    /// Item 4 of issue 23: the pools of one process keep no more memfds than the process's
    /// count allows (an eighth of `RLIMIT_NOFILE`), however many channels each keep one; the
    /// byte budget alone (256 MiB) let 1,300 memfds of 200 KiB stay open. Past the count, a
    /// message's memfd is closed after it, and a later lease makes a new one.
    #[test]
    fn the_pools_of_a_process_keep_a_bounded_count_of_memfds() {
        let budget = pooled_budget();
        let pools: Vec<_> = (0..budget + 20)
            .map(|_| {
                let pool = Arc::new(PayloadPool::default());
                // Leased and dropped unsent: free, and kept by its pool if the count allows.
                let mut lease = pool.lease().unwrap();
                lease.write_at(0, b"payload").unwrap();
                drop(lease);
                pool
            })
            .collect();
        let kept: usize = pools.iter().map(|pool| pool.lock().entries.len()).sum();
        assert!(kept <= budget, "{kept} memfds kept, the count allows {budget}");
        // Every pool still leases (a one-time memfd where it keeps none).
        for pool in &pools {
            let mut lease = pool.lease().unwrap();
            lease.write_at(0, b"again").unwrap();
        }
        drop(pools);
        // The pools gave their memfds back to the count: another pool keeps one again.
        let pool = Arc::new(PayloadPool::default());
        drop(pool.lease().unwrap());
        assert_eq!(pool.lock().entries.len(), 1, "the count did not come back");
    }

    #[test]
    fn a_pooled_memfd_cannot_shrink_and_a_short_one_is_refused() {
        let pool = Arc::new(PayloadPool::default());
        let lease = pool.lease().unwrap();
        assert!(ftruncate(lease.fd(), 0).is_err(), "sealed against shrinking");
        assert_eq!(
            take_payload(lease.fd(), 1, &PeerMaps::default(), Vec::new()).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        let (pipe, _writer) = rustix::pipe::pipe().unwrap();
        assert_eq!(
            take_payload(pipe.as_fd(), 0, &PeerMaps::default(), Vec::new()).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }
}
