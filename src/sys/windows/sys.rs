//! The small helpers every file of the Windows backend uses: checked calls, events, waits,
//! another process's handle table, and a lock shared between processes.

use std::io;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle, RawHandle};
use std::ptr;
use std::time::Instant;

use windows_sys::core::BOOL;

use windows_sys::Win32::Foundation::{
    DuplicateHandle, DUPLICATE_CLOSE_SOURCE, DUPLICATE_SAME_ACCESS, ERROR_IO_PENDING, ERROR_OPERATION_ABORTED, HANDLE,
    INVALID_HANDLE_VALUE, WAIT_ABANDONED, WAIT_OBJECT_0, WAIT_TIMEOUT,
};
use windows_sys::Win32::System::Threading::{
    CreateEventW, CreateMutexW, GetCurrentProcess, OpenProcess, ReleaseMutex, WaitForSingleObject, INFINITE,
    PROCESS_DUP_HANDLE,
};
use windows_sys::Win32::System::IO::{CancelIoEx, GetOverlappedResult, OVERLAPPED};

use crate::sys::Wait;

extern "C" {
    /// The C runtime's: runs `callback` when `main` returns, before `ExitProcess` stops the
    /// process's other threads.
    fn atexit(callback: extern "C" fn()) -> std::ffi::c_int;
}

/// Runs `callback` when `main` returns, while the process's other threads still run. (Where the
/// C runtime refuses it, out of memory for its table, the exit does not wait: as before the hook.)
pub(crate) fn call_at_exit(callback: extern "C" fn()) {
    // `atexit` only keeps the function pointer, a plain `extern "C" fn()`, and calls it once.
    // SAFETY: no argument is read after the call; the pointer is valid for the process's life.
    unsafe { atexit(callback) };
}

/// `Ok` when a call returned a true `BOOL`, else the thread's last error.
pub(super) fn check(ok: BOOL) -> io::Result<()> {
    if ok == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Takes ownership of a handle a creating call returned (null or invalid means it failed).
pub(super) fn owned(handle: HANDLE) -> io::Result<OwnedHandle> {
    if handle.is_null() || handle == INVALID_HANDLE_VALUE {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the handle was just returned by a creating call, is valid, and nothing else owns it.
    Ok(unsafe { OwnedHandle::from_raw_handle(handle as RawHandle) })
}

/// Takes ownership of a handle value a peer placed in this process with `DuplicateHandle`.
pub(super) fn adopt(value: u64) -> io::Result<OwnedHandle> {
    if value == 0 || value > u32::MAX as u64 || value % 4 != 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "a message named an impossible handle value"));
    }
    // The message is decoded once, so no other owner exists (see SECURITY.md "On Windows" for
    // what a hostile sender can do with a forged value).
    // SAFETY: the sender duplicated this handle into this process for this message.
    Ok(unsafe { OwnedHandle::from_raw_handle(value as usize as RawHandle) })
}

/// The raw value of a handle.
pub(super) fn raw(handle: &impl AsRawHandle) -> HANDLE {
    handle.as_raw_handle() as HANDLE
}

/// UTF-16 with a terminating zero, for the `W` calls.
pub(super) fn wide(text: &str) -> Vec<u16> {
    text.encode_utf16().chain(Some(0)).collect()
}

/// A new manual-reset event, not signaled.
pub(super) fn event() -> io::Result<OwnedHandle> {
    // SAFETY: no security attributes and no name; the result is checked by `owned`.
    owned(unsafe { CreateEventW(ptr::null(), 1, 0, ptr::null()) })
}

/// Milliseconds left until `deadline` (`INFINITE` without one), for the wait calls.
pub(super) fn millis_until(deadline: Option<Instant>) -> u32 {
    match deadline {
        None => INFINITE,
        Some(deadline) => {
            let left = deadline.saturating_duration_since(Instant::now());
            left.as_micros().div_ceil(1000).min(u128::from(INFINITE - 1)) as u32
        }
    }
}

/// When a wait of this kind gives up (`None`: never).
pub(super) fn deadline(wait: Wait) -> Option<Instant> {
    match wait {
        Wait::Blocking => None,
        Wait::NonBlocking => Some(Instant::now()),
        Wait::Timeout(timeout) => Instant::now().checked_add(timeout),
    }
}

/// Waits for `handle` to be signaled; `false` when `deadline` passed first.
pub(super) fn wait_for(handle: HANDLE, deadline: Option<Instant>) -> io::Result<bool> {
    // SAFETY: `handle` is a live waitable handle owned by the caller.
    match unsafe { WaitForSingleObject(handle, millis_until(deadline)) } {
        WAIT_OBJECT_0 | WAIT_ABANDONED => Ok(true),
        WAIT_TIMEOUT => Ok(false),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Finishes an overlapped operation on `file` that a call just started (`started` is what the
/// call returned): waits for its event until `deadline`, cancels it then, and always waits until
/// the kernel is done with `overlapped` and the buffer. The bytes transferred, or `None` when it
/// was cancelled (nothing transferred).
pub(super) fn finish_overlapped(
    file: HANDLE,
    overlapped: &OVERLAPPED,
    started: BOOL,
    deadline: Option<Instant>,
) -> io::Result<Option<u32>> {
    if started == 0 {
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(ERROR_IO_PENDING as i32) {
            return Err(error);
        }
        if !wait_for(overlapped.hEvent, deadline)? {
            // SAFETY: cancels only this operation; its completion is still waited for below.
            unsafe { CancelIoEx(file, overlapped) };
        }
    }
    let mut transferred = 0;
    // SAFETY: waits for this operation to finish, so its buffers are no longer in use after.
    match check(unsafe { GetOverlappedResult(file, overlapped, &mut transferred, 1) }) {
        Ok(()) => Ok(Some(transferred)),
        Err(error) if error.raw_os_error() == Some(ERROR_OPERATION_ABORTED as i32) => Ok(None),
        Err(error) => Err(error),
    }
}

/// Another process (or this one), opened to place handles in its handle table.
pub(super) struct Peer {
    pub pid: u32,
    process: OwnedHandle,
}

impl Peer {
    /// Opens process `pid` for handle duplication.
    pub fn open(pid: u32) -> io::Result<Peer> {
        // SAFETY: plain call; the result is checked by `owned`.
        let process = owned(unsafe { OpenProcess(PROCESS_DUP_HANDLE, 0, pid) })?;
        Ok(Peer { pid, process })
    }

    /// Places a copy of `handle` in the peer's handle table and returns its value there; `access`
    /// narrows the copy's rights (`None`: the same rights).
    pub fn give(&self, handle: &impl AsRawHandle, access: Option<u32>) -> io::Result<u64> {
        let mut target: HANDLE = ptr::null_mut();
        let options = if access.is_some() { 0 } else { DUPLICATE_SAME_ACCESS };
        // SAFETY: both process handles and `handle` are live; `target` is a valid out-pointer.
        check(unsafe {
            DuplicateHandle(
                GetCurrentProcess(),
                raw(handle),
                raw(&self.process),
                &mut target,
                access.unwrap_or(0),
                0,
                options,
            )
        })?;
        Ok(target as usize as u64)
    }

    /// Closes a handle this process placed in the peer with [`give`](Self::give) (the message
    /// that named it was never sent).
    pub fn take_back(&self, value: u64) {
        // DUPLICATE_CLOSE_SOURCE with no target only closes the handle.
        // SAFETY: `value` names a handle this process placed in the peer, unseen there yet.
        unsafe {
            DuplicateHandle(
                raw(&self.process),
                value as usize as HANDLE,
                ptr::null_mut(),
                ptr::null_mut(),
                0,
                0,
                DUPLICATE_CLOSE_SOURCE,
            );
        }
    }
}

/// A lock shared by every process that holds an end of one channel (an unnamed mutex whose
/// handle travels with the ends). A holder that dies releases it.
pub(super) struct SharedLock(pub OwnedHandle);

impl SharedLock {
    pub fn new() -> io::Result<SharedLock> {
        // SAFETY: no security attributes, not owned, no name; checked by `owned`.
        owned(unsafe { CreateMutexW(ptr::null(), 0, ptr::null()) }).map(SharedLock)
    }

    /// Takes the lock, waiting until `deadline`; `None` when it passed.
    pub fn lock_until(&self, deadline: Option<Instant>) -> io::Result<Option<SharedLockGuard<'_>>> {
        Ok(wait_for(raw(&self.0), deadline)?.then_some(SharedLockGuard(self)))
    }

    /// Takes the lock, waiting as long as it takes.
    pub fn lock(&self) -> io::Result<SharedLockGuard<'_>> {
        self.lock_until(None)?.ok_or_else(|| io::Error::other("an infinite wait ended"))
    }
}

/// Holds a [`SharedLock`] until dropped.
pub(super) struct SharedLockGuard<'a>(&'a SharedLock);

impl Drop for SharedLockGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: this thread owns the mutex (the guard exists only after a successful wait).
        unsafe { ReleaseMutex(raw(&self.0 .0)) };
    }
}

/// A random number for names no other process can guess (from std's seeded hasher).
pub(super) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish()
}
