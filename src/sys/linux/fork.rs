//! Noticing that this process is a child made by `fork`, without a system call.
//!
//! A page of this process is marked `MADV_WIPEONFORK`: a forked child finds it zeroed. Reading
//! it is one memory load, so a sender can check on every message whether the ring it writes in
//! belongs to its parent (`getpid` would cost a system call per message).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

use rustix::mm::{madvise, mmap_anonymous, Advice, MapFlags, ProtFlags};

/// The number of forks between this process and the one that first asked; 0 in that one.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Which fork generation this process is: it changes in a child made by `fork`, so a value
/// recorded before the fork differs from the one read after it in the child (never in the
/// parent).
pub(super) fn generation() -> u64 {
    let Some(page) = page() else {
        // No page (no memory, or a kernel before 4.14): forks go unnoticed, as before the ring.
        return 0;
    };
    if page.load(Ordering::Acquire) == 0 && page.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire).is_ok() {
        GENERATION.fetch_add(1, Ordering::AcqRel);
    }
    GENERATION.load(Ordering::Acquire)
}

/// Whether this process can tell a forked child from itself (the kernel took the wipe-on-fork
/// advice). Where it cannot (before Linux 4.14, or a seccomp filter that refuses `madvise`),
/// nothing may use a ring: a child would write into its parent's slot, or read its messages.
pub(super) fn detectable() -> bool {
    page().is_some()
}

/// The wipe-on-fork page's first word: 1 in the process that made it, 0 in a forked child until
/// [`generation`] notices and sets it again.
fn page() -> Option<&'static AtomicUsize> {
    static PAGE: OnceLock<Option<usize>> = OnceLock::new();
    let address = (*PAGE.get_or_init(|| {
        const LEN: usize = 4096;
        // A new private anonymous mapping, never unmapped: it touches no existing memory.
        // SAFETY: a fresh mapping with no aliases.
        let ptr = unsafe {
            mmap_anonymous(std::ptr::null_mut(), LEN, ProtFlags::READ | ProtFlags::WRITE, MapFlags::PRIVATE).ok()?
        };
        // SAFETY: `ptr` is the whole mapping just made; advice does not change its contents.
        unsafe { madvise(ptr, LEN, Advice::LinuxWipeOnFork).ok()? };
        // SAFETY: the mapping is page-aligned, writable and lives for the rest of the process.
        unsafe { (*ptr.cast::<AtomicUsize>()).store(1, Ordering::Release) };
        Some(ptr as usize)
    }))?;
    // SAFETY: the page lives forever and is only accessed through this atomic.
    Some(unsafe { &*(address as *const AtomicUsize) })
}

pub(super) use crate::sys::lock_unless_orphaned;
