//! Sealed memfd regions (shared memory), and the writer that encodes messages.
//!
//! Every region we create is written with `write()` (faster than faulting in fresh pages through
//! a mapping) and then sealed against shrinking, growing and writing, so a receiver that maps it
//! can trust its size and contents for as long as it holds the mapping. A region received from a
//! peer is refused unless it carries those seals: an unsealed file could be truncated under our
//! mapping (SIGBUS) or rewritten while we read it. Message payloads too large for a packet go
//! through the channel's pooled memfds instead (see [`super::pool`]).

use std::fmt;
use std::io;
use std::ops::Deref;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::{Arc, Weak};

use rustix::fs::{fcntl_add_seals, fcntl_get_seals, fstat, ftruncate, memfd_create, MemfdFlags, SealFlags};
use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};

use super::frame::INLINE_MAX;
use super::held::{Held, Shared};
use super::pool::{Lease, PayloadPool};
use super::sys::invalid_data;
use super::sys::retry_on_intr;

/// The seals a region must carry before we map it.
const REQUIRED_SEALS: SealFlags = SealFlags::SHRINK.union(SealFlags::GROW).union(SealFlags::WRITE);

/// Creates a sealed memfd holding exactly `data`.
pub(super) fn sealed_memfd_from(data: &[u8]) -> io::Result<OwnedFd> {
    let fd = new_memfd()?;
    write_all(fd.as_fd(), data)?;
    seal(&fd)?;
    Ok(fd)
}

/// Encoded bytes on their way out: kept in a buffer while they fit in a packet, and spilled into
/// one of the channel's pooled memfds (see [`super::pool`]), chunk by chunk, once they outgrow
/// one — so a large message is never held whole on the heap, and is copied once (into pages the
/// memfd usually already has) instead of twice.
pub(crate) struct PayloadWriter {
    buffer: Vec<u8>,
    pool: Arc<PayloadPool>,
    spill: Option<Lease>,
    error: Option<io::Error>,
}

/// What a [`PayloadWriter`] produced.
pub(crate) enum Encoded {
    /// Small enough for one packet.
    Inline(Vec<u8>),
    /// In a pooled memfd; `buffer` is the emptied buffer, for reuse.
    Pooled { lease: Lease, buffer: Vec<u8> },
}

impl PayloadWriter {
    /// A writer that reuses `buffer`'s allocation and spills into `pool`'s memfds.
    pub(super) fn new(mut buffer: Vec<u8>, pool: Arc<PayloadPool>) -> Self {
        buffer.clear();
        PayloadWriter { buffer, pool, spill: None, error: None }
    }

    #[inline]
    pub fn push(&mut self, byte: u8) {
        self.buffer.push(byte);
        if self.buffer.len() > INLINE_MAX {
            self.spill_buffer();
        }
    }

    #[inline]
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() > INLINE_MAX {
            self.spill_buffer();
        }
    }

    #[cold]
    fn spill_buffer(&mut self) {
        if self.error.is_none() {
            if self.spill.is_none() {
                match self.pool.lease() {
                    Ok(lease) => self.spill = Some(lease),
                    Err(error) => self.error = Some(error),
                }
            }
            if let Some(lease) = &mut self.spill {
                let end = lease.len();
                self.error = lease.write_at(end, &self.buffer).err();
            }
        }
        self.buffer.clear();
    }

    /// The encoded message, or the error that spilling it met.
    pub fn finish(mut self) -> io::Result<Encoded> {
        if self.spill.is_none() {
            return Ok(Encoded::Inline(self.buffer));
        }
        self.spill_buffer();
        if let Some(error) = self.error {
            return Err(error);
        }
        let lease = self.spill.take().ok_or_else(|| io::Error::other("spilled payload vanished"))?;
        Ok(Encoded::Pooled { lease, buffer: self.buffer })
    }
}

impl Encoded {
    /// The buffer, for the next message.
    pub fn into_buffer(self) -> Vec<u8> {
        match self {
            Encoded::Inline(buffer) | Encoded::Pooled { buffer, .. } => buffer,
        }
    }
}

/// Creates a sealed memfd of `len` bytes, each equal to `byte`.
fn sealed_memfd_filled(byte: u8, len: usize) -> io::Result<OwnedFd> {
    let fd = new_memfd()?;
    if byte == 0 {
        // A truncated memfd reads as zeros and costs no memory until touched.
        retry_on_intr(|| ftruncate(&fd, len as u64))?;
    } else {
        let chunk = vec![byte; len.min(1 << 20)];
        let mut left = len;
        while left > 0 {
            let step = left.min(chunk.len());
            write_all(fd.as_fd(), &chunk[..step])?;
            left -= step;
        }
    }
    seal(&fd)?;
    Ok(fd)
}

fn new_memfd() -> io::Result<OwnedFd> {
    retry_on_intr(|| memfd_create("crossproc", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING))
}

fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let written = retry_on_intr(|| rustix::io::write(fd, data))?;
        if written == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "memfd accepted no bytes"));
        }
        data = &data[written..];
    }
    Ok(())
}

/// Seals a memfd we wrote. `F_SEAL_WRITE` fails with `EBUSY` while the kernel still holds
/// transient references to freshly written pages (seen once under load in the benchmarks), so
/// it is retried a few times before the error is returned.
fn seal(fd: &OwnedFd) -> io::Result<()> {
    let mut attempts = 0;
    loop {
        match retry_on_intr(|| fcntl_add_seals(fd, REQUIRED_SEALS | SealFlags::SEAL)) {
            Err(error) if error.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) && attempts < 3 => {
                attempts += 1;
                std::thread::yield_now();
            }
            result => return result,
        }
    }
}

/// Checks that a received descriptor is a memfd sealed as ours are, and returns its size and
/// its file's identity (device and inode), from the same `fstat`.
fn sealed_file(fd: BorrowedFd<'_>) -> io::Result<(usize, (u64, u64))> {
    let seals = fcntl_get_seals(fd).map_err(|_| invalid_data("shared memory is not a sealable memfd"))?;
    if !seals.contains(REQUIRED_SEALS) {
        return Err(invalid_data("shared memory is not sealed against changes"));
    }
    let stat = fstat(fd)?;
    let size = usize::try_from(stat.st_size).map_err(|_| invalid_data("shared memory has an impossible size"))?;
    // The field types differ between targets (`c_ulong` on some).
    #[allow(clippy::useless_conversion)]
    let identity = (u64::from(stat.st_dev), u64::from(stat.st_ino));
    Ok((size, identity))
}

/// A read-only shared mapping of a whole sealed memfd, unmapped on drop.
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// The mapping is read-only and its file is sealed against writes, so the bytes never change.
// SAFETY: moving the pointer between threads is as safe as moving a `&[u8]`.
unsafe impl Send for Mapping {}
// SAFETY: see `Send` above; `Mapping` offers only shared, read-only access.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the first `len` bytes of a sealed memfd read-only; pages fault in when first read.
    pub(super) fn map(fd: BorrowedFd<'_>, len: usize) -> io::Result<Mapping> {
        if len == 0 {
            return Ok(Mapping { ptr: NonNull::dangling(), len: 0 });
        }
        let flags = MapFlags::SHARED;
        // A fresh mapping (null hint, no MAP_FIXED) affects no existing memory; the file is sealed
        // (checked by every caller through `sealed_file`) so it cannot shrink and raise SIGBUS.
        // SAFETY: a new read-only mapping of a sealed file.
        let ptr = unsafe { mmap(std::ptr::null_mut(), len, ProtFlags::READ, flags, fd, 0)? };
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapping { ptr, len })
    }
}

impl Deref for Mapping {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // `ptr` is either dangling with `len == 0` (a valid empty slice) or the start of a live
        // read-only mapping of `len` bytes that stays mapped until `drop`, and whose sealed file
        // cannot change or shrink.
        // SAFETY: `ptr`/`len` describe valid, immutable bytes for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.len != 0 {
            // No slice borrowed from the mapping outlives `self`.
            // SAFETY: `ptr`/`len` describe a mapping made by `Mapping::map`, unmapped only here.
            let _ = unsafe { munmap(self.ptr.as_ptr().cast(), self.len) };
        }
    }
}

impl fmt::Debug for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mapping({} bytes)", self.len)
    }
}

/// A sealed memfd together with its read-only mapping.
pub(super) struct Region {
    fd: OwnedFd,
    map: Mapping,
}

/// An immutable shared-memory region; clones share the same pages. So does a copy of it that
/// arrives in this process again: one descriptor and one mapping (see [`super::held`]).
#[derive(Clone)]
pub(crate) struct OsIpcSharedMemory {
    region: Arc<Region>,
}

/// The regions this process holds, by the device and inode of their memfd: a region received
/// again is a clone of the one held. The inode is the file itself, so a region found here
/// carries the seals the received descriptor was just checked for.
static REGIONS: Held<(u64, u64), OsIpcSharedMemory> = Held::new(|_| None);

impl Shared for OsIpcSharedMemory {
    type Weak = Weak<Region>;

    fn downgrade(&self) -> Weak<Region> {
        Arc::downgrade(&self.region)
    }

    fn upgrade(weak: &Weak<Region>) -> Option<Self> {
        weak.upgrade().map(|region| OsIpcSharedMemory { region })
    }

    fn is_gone(weak: &Weak<Region>) -> bool {
        weak.strong_count() == 0
    }
}

impl OsIpcSharedMemory {
    /// A new region holding a copy of `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> io::Result<Self> {
        Self::from_sealed(sealed_memfd_from(bytes)?)
    }

    /// A new region of `len` bytes, each equal to `byte`.
    pub fn from_byte(byte: u8, len: usize) -> io::Result<Self> {
        Self::from_sealed(sealed_memfd_filled(byte, len)?)
    }

    /// Adopts a descriptor received from a peer (or made here), refusing anything that is not a
    /// sealed memfd: the region this process already holds for the same file, if any (`fd`, a
    /// second descriptor of it, is closed), else a new mapping that later arrivals share.
    pub(super) fn from_sealed(fd: OwnedFd) -> io::Result<Self> {
        let (len, identity) = sealed_file(fd.as_fd())?;
        REGIONS.adopt(identity, || {
            let map = Mapping::map(fd.as_fd(), len)?;
            Ok(OsIpcSharedMemory { region: Arc::new(Region { fd, map }) })
        })
    }

    /// Whether `self` and `other` are one region here: the same descriptor and mapping.
    #[cfg(test)]
    pub(super) fn is_shared_with(&self, other: &OsIpcSharedMemory) -> bool {
        Arc::ptr_eq(&self.region, &other.region)
    }
}

impl AsFd for OsIpcSharedMemory {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.region.fd.as_fd()
    }
}

impl Deref for OsIpcSharedMemory {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.region.map
    }
}

impl fmt::Debug for OsIpcSharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OsIpcSharedMemory({} bytes)", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_holds_its_bytes_and_refuses_writes() {
        let region = OsIpcSharedMemory::from_bytes(b"sealed").unwrap();
        assert_eq!(&*region, b"sealed");
        let error = rustix::io::write(region.as_fd(), b"x").unwrap_err();
        assert_eq!(error, rustix::io::Errno::PERM);
    }

    #[test]
    fn filled_region_is_filled() {
        assert!(OsIpcSharedMemory::from_byte(7, 100_000).unwrap().iter().all(|&b| b == 7));
        assert!(OsIpcSharedMemory::from_byte(0, 100_000).unwrap().iter().all(|&b| b == 0));
        assert!(OsIpcSharedMemory::from_byte(1, 0).unwrap().is_empty());
    }

    #[test]
    fn unsealed_memfd_is_refused() {
        let fd = new_memfd().unwrap();
        write_all(fd.as_fd(), b"mutable").unwrap();
        let error = OsIpcSharedMemory::from_sealed(fd).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }
}
