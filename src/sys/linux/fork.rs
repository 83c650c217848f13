//! Noticing that this process is a child made by `fork`, without a system call.
//!
//! A page of this process is marked `MADV_WIPEONFORK`: a forked child finds it zeroed. Reading
//! the generation costs three loads (the page's address, its word, the counter) and no system
//! call, so a sender can check on every message whether the ring it writes in belongs to its
//! parent (`getpid` would cost a system call per message).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use rustix::mm::{madvise, mmap_anonymous, munmap, Advice, MapFlags, ProtFlags};

/// The number of forks between this process and the one that first asked; 0 in that one.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// The page's first word: [`GENERATION`] is this process's.
const MARKED: usize = 1;
/// The page's first word while a thread of a new child counts the fork ([`GENERATION`] may
/// still hold the parent's number).
const COUNTING: usize = 2;

/// Which fork generation this process is: it changes in a child made by `fork`, so a value
/// recorded before the fork differs from the one read after it in the child (never in the
/// parent).
///
/// In a new child the first thread to look counts the fork; the page is marked only after the
/// count, and other threads wait for it meanwhile: a thread that found the page marked before
/// the count read the parent's number (review 7, R7-1: 17 of 3,000 children with two threads).
/// A child forked while its parent counted starts from the number before or after the count;
/// either way it ends with one no value recorded in its memory has.
pub(super) fn generation() -> u64 {
    let Some(page) = page() else {
        // No page (no memory, or a kernel before 4.14): forks go unnoticed, as before the ring.
        return 0;
    };
    loop {
        match page.load(Ordering::Acquire) {
            MARKED => return GENERATION.load(Ordering::Acquire),
            0 => {
                // A signal handled on this thread while it counts would find the count under
                // way and wait for itself (review 8, R8-1): none is handled until it is done.
                let _blocked = SignalsBlocked::new();
                if page.compare_exchange(0, COUNTING, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                    let generation = GENERATION.fetch_add(1, Ordering::AcqRel) + 1;
                    page.store(MARKED, Ordering::Release);
                    return generation;
                }
            }
            // Another thread counts: two instructions away, unless it was preempted.
            _ => std::thread::yield_now(),
        }
    }
}

/// Whether this process can tell a forked child from itself (the kernel took the wipe-on-fork
/// advice). Where it cannot (before Linux 4.14, or a seccomp filter that refuses `madvise`),
/// nothing may use a ring: a child would write into its parent's slot, or read its messages.
pub(super) fn detectable() -> bool {
    page().is_some()
}

/// The wipe-on-fork page's address; 0 until it is made, [`NO_PAGE`] where it cannot be.
///
/// Made without a lock: a child forked while another thread of its parent held a lock around
/// the making (a `OnceLock`, before) waited for it for ever at its first use (review 8, R8-2:
/// 7 children of 300 processes). Threads that race each make a page, and all but the first to
/// publish unmap theirs; a child forked before the page was published makes its own.
static PAGE: AtomicUsize = AtomicUsize::new(0);
/// [`PAGE`] when no page can be had (a page address is never 1).
const NO_PAGE: usize = 1;
const PAGE_LEN: usize = 4096;

/// The wipe-on-fork page's first word: [`MARKED`] in the process that made it, 0 in a forked
/// child until [`generation`] counts the fork and marks it again.
fn page() -> Option<&'static AtomicUsize> {
    let mut address = PAGE.load(Ordering::Acquire);
    if address == 0 {
        let made = make_page();
        address = match PAGE.compare_exchange(0, made.unwrap_or(NO_PAGE), Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => made.unwrap_or(NO_PAGE),
            Err(published) => {
                if let Some(made) = made {
                    // SAFETY: this thread's own page, never published: nothing else knows it.
                    let _ = unsafe { munmap(made as *mut std::ffi::c_void, PAGE_LEN) };
                }
                published
            }
        };
    }
    // SAFETY: a published page lives for ever and is only accessed through this atomic.
    (address != NO_PAGE).then(|| unsafe { &*(address as *const AtomicUsize) })
}

/// A new wipe-on-fork page, marked; `None` where the kernel refuses the advice (before 4.14, or
/// a seccomp filter).
fn make_page() -> Option<usize> {
    // A new private anonymous mapping: it touches no existing memory.
    // SAFETY: a fresh mapping with no aliases.
    let ptr = unsafe {
        mmap_anonymous(std::ptr::null_mut(), PAGE_LEN, ProtFlags::READ | ProtFlags::WRITE, MapFlags::PRIVATE).ok()?
    };
    // SAFETY: `ptr` is the whole mapping just made; advice does not change its contents.
    if unsafe { madvise(ptr, PAGE_LEN, Advice::LinuxWipeOnFork) }.is_err() {
        // SAFETY: the mapping just made, known to nobody else.
        let _ = unsafe { munmap(ptr, PAGE_LEN) };
        return None;
    }
    // SAFETY: the mapping is page-aligned, writable, and nobody else knows it yet.
    unsafe { (*ptr.cast::<AtomicUsize>()).store(MARKED, Ordering::Release) };
    Some(ptr as usize)
}

/// Every signal blocked on this thread while it lives (two system calls, once per child).
struct SignalsBlocked(libc::sigset_t);

impl SignalsBlocked {
    fn new() -> SignalsBlocked {
        // SAFETY: both sets are plain values this function owns; `pthread_sigmask` changes only
        // this thread's mask, which the drop restores.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut before: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut before);
            SignalsBlocked(before)
        }
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask `new` read from this same thread.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    use std::sync::atomic::Ordering;

    use crate::sys::fork_lock::ForkLock;

    /// A holder that keeps the lock far longer than the old bound of tries lasted (10,000
    /// yields: 10–20 ms here) is waited for, not taken for orphaned.
    #[test]
    fn a_long_holder_of_this_process_is_waited_for() {
        let lock = Arc::new(ForkLock::new(0u32));
        let held = Arc::new(Barrier::new(2));
        let released = Arc::new(AtomicBool::new(false));
        let holder = {
            let (lock, held, released) = (lock.clone(), held.clone(), released.clone());
            std::thread::spawn(move || {
                let mut guard = lock.lock().unwrap();
                held.wait();
                std::thread::sleep(Duration::from_millis(300));
                *guard = 1;
                released.store(true, Ordering::SeqCst);
            })
        };
        held.wait();
        let guard = lock.lock().expect("a lock held by a thread of this process was given up on");
        assert!(released.load(Ordering::SeqCst));
        assert_eq!(*guard, 1);
        drop(guard);
        holder.join().unwrap();
    }

    /// A child forked while another thread held the lock neither waits for ever nor takes it
    /// for free: `None`. A lock free at the fork is the child's to take.
    #[test]
    fn a_child_forked_while_another_thread_held_it_is_told_so() {
        let held = Arc::new(ForkLock::new(()));
        let free = ForkLock::new(());
        // The parent's generation is recorded before the fork, as any use of the crate does.
        drop(held.lock());
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = {
            let held = held.clone();
            std::thread::spawn(move || {
                let _guard = held.lock().unwrap();
                locked_tx.send(()).unwrap();
                release_rx.recv().unwrap();
            })
        };
        locked_rx.recv().unwrap();
        // SAFETY: the child only takes locks, and leaves with `_exit`.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let code = match (held.lock().is_none(), free.lock().is_some()) {
                (true, true) => 0,
                (false, _) => 1,
                (_, false) => 2,
            };
            // SAFETY: ends the forked child at once.
            unsafe { libc::_exit(code) };
        }
        assert!(pid > 0, "fork failed");
        let status = super::super::receiver::takeover_review::wait_child(pid, Duration::from_secs(20));
        release_tx.send(()).unwrap();
        holder.join().unwrap();
        let status = status.expect("the child waited for a lock held at the fork");
        assert!(libc::WIFEXITED(status), "child status {status}");
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "1: the child took a lock held at the fork; 2: a free lock was refused"
        );
    }
}
