//! File mappings ("sections"): shared memory, and payloads too large to travel inside a pipe
//! message.
//!
//! A region is written once by its creator; what travels is a handle narrowed to read access, so
//! a receiver can map it but never write it. Unlike a sealed memfd on Linux, the creator keeps
//! its writable handle: a hostile sender could still change bytes a receiver is reading (never
//! their length, so no access past the end is possible).

use std::fmt;
use std::io;
use std::ops::Deref;
use std::os::windows::io::OwnedHandle;
use std::ptr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use windows_sys::Win32::Foundation::INVALID_HANDLE_VALUE;
use windows_sys::Win32::System::Memory::{
    CreateFileMappingW, MapViewOfFile, UnmapViewOfFile, FILE_MAP_READ, FILE_MAP_WRITE, MEMORY_MAPPED_VIEW_ADDRESS,
    PAGE_READWRITE, SECTION_QUERY,
};

use super::sys::{owned, raw, Peer};

/// A mapped view of a section, unmapped when dropped.
pub(crate) struct View {
    address: *mut u8,
    len: usize,
    section: OwnedHandle,
}

// SAFETY: the view is plain memory owned by this value; its bytes are only read after creation.
unsafe impl Send for View {}
// SAFETY: as above; shared access is read-only.
unsafe impl Sync for View {}

impl View {
    /// A new section of `len` bytes (at least one), mapped for writing, filled by `fill`.
    pub fn create(len: usize, fill: impl FnOnce(&mut [u8])) -> io::Result<View> {
        let size = len.max(1) as u64;
        // SAFETY: a pagefile-backed section with no name or security attributes; checked by `owned`.
        let section = owned(unsafe {
            CreateFileMappingW(
                INVALID_HANDLE_VALUE,
                ptr::null(),
                PAGE_READWRITE,
                (size >> 32) as u32,
                size as u32,
                ptr::null(),
            )
        })?;
        let view = View::map(section, len, FILE_MAP_READ | FILE_MAP_WRITE)?;
        // SAFETY: the view was just mapped writable for `len` bytes and nobody else sees it yet.
        fill(unsafe { std::slice::from_raw_parts_mut(view.address, len) });
        Ok(view)
    }

    /// Maps `len` bytes of `section` (a handle a peer sent), failing if the section is smaller.
    pub fn open(section: OwnedHandle, len: usize) -> io::Result<View> {
        View::map(section, len, FILE_MAP_READ)
    }

    fn map(section: OwnedHandle, len: usize, access: u32) -> io::Result<View> {
        if len == 0 {
            return Ok(View { address: ptr::NonNull::dangling().as_ptr(), len, section });
        }
        // Mapping `len` bytes fails cleanly when the section is smaller.
        // SAFETY: `section` is a live section handle, and the view never extends past it.
        let view = unsafe { MapViewOfFile(raw(&section), access, 0, 0, len) };
        if view.Value.is_null() {
            return Err(io::Error::last_os_error());
        }
        Ok(View { address: view.Value.cast(), len, section })
    }

    /// Places a read-only handle to this section in `peer`.
    pub(super) fn give(&self, peer: &Peer) -> io::Result<u64> {
        peer.give(&self.section, Some(FILE_MAP_READ | SECTION_QUERY))
    }
}

impl Deref for View {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: the view maps `len` readable bytes for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.address, self.len) }
    }
}

impl Drop for View {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: `address` is a view this value mapped and nothing borrows it any more.
            unsafe { UnmapViewOfFile(MEMORY_MAPPED_VIEW_ADDRESS { Value: self.address.cast() }) };
        }
    }
}

/// What every process holding an end of one channel must agree on, in a small section they all
/// map: which process holds the receiving end (written only under the channel's lock), and the
/// channel's byte budget (what `set_buffer_size` sets and `try_send` is checked against).
///
/// Layout: owner pid (`u32`), capacity in bytes (`u32`), bytes in flight (`u64`).
pub(super) struct ChannelCell(View);

/// The cost of one queued pipe message beyond its bytes (like a socket buffer's per-packet cost).
pub(super) const MESSAGE_OVERHEAD: u64 = 768;

impl ChannelCell {
    /// A new cell naming this process, with `capacity` bytes of budget.
    pub fn new(capacity: u32) -> io::Result<ChannelCell> {
        let pid = std::process::id().to_le_bytes();
        View::create(16, |cell| {
            cell[..4].copy_from_slice(&pid);
            cell[4..8].copy_from_slice(&capacity.to_le_bytes());
        })
        .map(ChannelCell)
    }

    /// Maps a cell whose handle a peer sent.
    pub fn open(section: OwnedHandle) -> io::Result<ChannelCell> {
        View::map(section, 16, FILE_MAP_READ | FILE_MAP_WRITE).map(ChannelCell)
    }

    fn fields(&self) -> (&AtomicU32, &AtomicU32, &AtomicU64) {
        // Every process accesses these fields only through atomics.
        // SAFETY: the view is 16 bytes, page-aligned, mapped writable and lives as long as `self`.
        unsafe {
            let base = self.0.address;
            (&*base.cast::<AtomicU32>(), &*base.add(4).cast::<AtomicU32>(), &*base.add(8).cast::<AtomicU64>())
        }
    }

    /// The receiving end's process id.
    pub fn owner(&self) -> u32 {
        self.fields().0.load(Ordering::SeqCst)
    }

    /// Names a new owner (under the channel's lock).
    pub fn set_owner(&self, pid: u32) {
        self.fields().0.store(pid, Ordering::SeqCst)
    }

    /// The byte budget.
    pub fn capacity(&self) -> u32 {
        self.fields().1.load(Ordering::Relaxed)
    }

    /// Sets the byte budget.
    pub fn set_capacity(&self, bytes: u32) {
        self.fields().1.store(bytes, Ordering::Relaxed)
    }

    /// Takes `cost` bytes of budget if they fit (or nothing is in flight); `force` takes them
    /// regardless (a blocking send, which the pipe itself holds back when it is full).
    pub fn try_reserve(&self, cost: u64, force: bool) -> bool {
        let (_, capacity, in_flight) = self.fields();
        let capacity = u64::from(capacity.load(Ordering::Relaxed));
        in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                (force || used == 0 || used + cost <= capacity).then_some(used + cost)
            })
            .is_ok()
    }

    /// Whether `cost` more bytes would fit the budget now (without taking them).
    pub fn has_room(&self, cost: u64) -> bool {
        let (_, capacity, in_flight) = self.fields();
        let used = in_flight.load(Ordering::SeqCst);
        used == 0 || used + cost <= u64::from(capacity.load(Ordering::Relaxed))
    }

    /// Gives `cost` bytes of budget back (a message was read, or never written).
    pub fn release(&self, cost: u64) {
        let _ =
            self.fields().2.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| Some(used.saturating_sub(cost)));
    }

    /// The cell's section handle (for inheritance).
    pub fn handle(&self) -> windows_sys::Win32::Foundation::HANDLE {
        raw(&self.0.section)
    }

    /// Places a (writable) handle to the cell in `peer`.
    pub fn give(&self, peer: &Peer) -> io::Result<u64> {
        peer.give(&self.0.section, None)
    }
}

/// An immutable region that travels by reference.
#[derive(Clone)]
pub(crate) struct OsIpcSharedMemory(pub(super) Arc<View>);

impl OsIpcSharedMemory {
    /// A new region holding a copy of `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> io::Result<Self> {
        View::create(bytes.len(), |region| region.copy_from_slice(bytes)).map(|view| OsIpcSharedMemory(Arc::new(view)))
    }

    /// A new region of `len` bytes, each equal to `byte`.
    pub fn from_byte(byte: u8, len: usize) -> io::Result<Self> {
        View::create(len, |region| {
            if byte != 0 {
                region.fill(byte)
            }
        })
        .map(|view| OsIpcSharedMemory(Arc::new(view)))
    }
}

impl Deref for OsIpcSharedMemory {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for OsIpcSharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OsIpcSharedMemory({} bytes)", self.0.len)
    }
}
