//! Many receivers behind one I/O completion port.
//!
//! Each member's pipe is associated with the set's port under the member's id, so every read
//! that completes on any member queues a packet naming it. `select` reads on only the members
//! named by packets (and those added since the last call), so waiting on 1,000 receivers costs
//! what waiting on one does. A packet is only a hint: the member's read is polled, and a stale
//! packet (a read already taken, a member removed) is skipped.

use std::collections::{HashMap, HashSet};
use std::io;
use std::mem;
use std::os::windows::io::OwnedHandle;
use std::ptr;

use windows_sys::Win32::Foundation::{INVALID_HANDLE_VALUE, WAIT_TIMEOUT};
use windows_sys::Win32::System::IO::{CreateIoCompletionPort, GetQueuedCompletionStatusEx, OVERLAPPED_ENTRY};

use super::pipe::OsIpcReceiver;
use super::sys::{deadline, millis_until, owned, raw};
use crate::sys::ReceiveLimits;
use crate::sys::{drain_member, Drained, OsIpcSelectionResult, Wait};

/// A set of receivers waited on together.
pub(crate) struct OsIpcReceiverSet {
    // Declared before `port`: members are dropped (their reads cancelled) before the port closes.
    members: HashMap<u64, OsIpcReceiver>,
    port: OwnedHandle,
    /// Members to poll on the next call whatever the port says (new, or not emptied last time).
    due: HashSet<u64>,
    next_id: u64,
    limits: Option<ReceiveLimits>,
}

impl OsIpcReceiverSet {
    /// An empty set.
    pub fn new() -> io::Result<Self> {
        // SAFETY: creates a new port not tied to any file; checked by `owned`.
        let port = owned(unsafe { CreateIoCompletionPort(INVALID_HANDLE_VALUE, ptr::null_mut(), 0, 1) })?;
        Ok(OsIpcReceiverSet { members: HashMap::new(), port, due: HashSet::new(), next_id: 0, limits: None })
    }

    /// Whether the set has no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Adds a receiver and returns its id.
    pub fn add(&mut self, receiver: OsIpcReceiver) -> io::Result<u64> {
        if let Some(limits) = self.limits {
            receiver.set_limits(limits);
        }
        let id = self.next_id;
        {
            let reader = receiver.reader();
            // The receiver lives in the set (or is dropped, cancelling its read) while the port
            // lives.
            // SAFETY: associates a live pipe with this set's live port under `id`.
            let port = unsafe { CreateIoCompletionPort(raw(reader.pipe()), raw(&self.port), id as usize, 0) };
            if port.is_null() {
                return Err(io::Error::last_os_error());
            }
        }
        self.next_id += 1;
        self.members.insert(id, receiver);
        self.due.insert(id);
        Ok(id)
    }

    /// Sets the receive limits of every member, present and future.
    pub fn set_limits(&mut self, limits: ReceiveLimits) {
        self.limits = Some(limits);
        for receiver in self.members.values() {
            receiver.set_limits(limits);
        }
    }

    /// Removes (and drops) the receiver with this id.
    pub fn remove(&mut self, id: u64) {
        self.members.remove(&id);
        self.due.remove(&id);
    }

    /// Waits as `mode` allows, then reports what arrived and which channels closed.
    pub fn select(&mut self, mode: Wait) -> io::Result<Vec<OsIpcSelectionResult>> {
        let deadline = deadline(mode);
        let mut timeout = 0;
        loop {
            self.take_packets(timeout)?;
            let results = self.poll_due();
            if !results.is_empty() {
                return Ok(results);
            }
            timeout = millis_until(deadline);
            if timeout == 0 || self.members.is_empty() {
                return Ok(results);
            }
        }
    }

    /// Marks the members the port names as due, waiting up to `timeout` ms for the first packet.
    fn take_packets(&mut self, timeout: u32) -> io::Result<()> {
        // SAFETY: all-zero is a valid OVERLAPPED_ENTRY.
        let mut entries: [OVERLAPPED_ENTRY; 64] = unsafe { mem::zeroed() };
        let mut taken = 0;
        let (port, into) = (raw(&self.port), entries.as_mut_ptr());
        // SAFETY: `entries` has room for 64 packets; not alertable.
        let ok = unsafe { GetQueuedCompletionStatusEx(port, into, 64, &mut taken, timeout, 0) };
        if ok == 0 {
            let error = io::Error::last_os_error();
            return match error.raw_os_error().map(|code| code as u32) {
                Some(WAIT_TIMEOUT) => Ok(()),
                _ => Err(error),
            };
        }
        for entry in &entries[..taken as usize] {
            let id = entry.lpCompletionKey as u64;
            if self.members.contains_key(&id) {
                self.due.insert(id);
            }
        }
        Ok(())
    }

    /// Reads what the due members have.
    fn poll_due(&mut self) -> Vec<OsIpcSelectionResult> {
        let mut results = Vec::new();
        for id in mem::take(&mut self.due) {
            let Some(receiver) = self.members.get(&id) else { continue };
            match drain_member(id, || receiver.recv(Wait::NonBlocking), &mut results) {
                Drained::Empty => {}
                // No new packet will name it: it stays due for the next call.
                Drained::More | Drained::Stuck(_) => {
                    self.due.insert(id);
                }
                Drained::Closed => {
                    self.members.remove(&id);
                }
            }
        }
        results
    }
}
