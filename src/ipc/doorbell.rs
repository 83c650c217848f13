//! How an [`IpcReceiverSet`](super::IpcReceiverSet) waits on its local members: a doorbell that
//! their senders ring, in the same wait as the OS members.
//!
//! A local channel's receiver has no descriptor to wait on. A member of a set registers a waker
//! in its channel's core (the slot a tokio receive uses) whenever the set finds its queue empty;
//! a send, the last sender's drop and the change to an OS channel call it once. The waker notes
//! the member as rung and, when it is the first since the set last looked, sends one byte on
//! the doorbell: an OS channel of the set's own, whose receiver waits in the OS set beside the
//! OS members. So one `select` serves local and OS members, with no helper thread, no timed
//! polling, and two descriptors per set (the doorbell's socket pair, or pipe), made with the
//! set so that adding a member never needs one.

use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Wake, Waker};

use crate::sys::{OsIpcReceiverSet, OsIpcSender, Wait};

/// The doorbell of one set.
pub(super) struct Doorbell {
    /// The doorbell's receiver's id in the OS set.
    pub os_id: u64,
    bell: Arc<Bell>,
}

/// What the members' wakers share.
struct Bell {
    /// The members rung since the set last looked.
    rung: Mutex<Vec<u64>>,
    sender: OsIpcSender,
}

/// The waker a local member registers in its channel.
struct MemberWaker {
    id: u64,
    bell: Arc<Bell>,
}

impl Doorbell {
    /// A doorbell whose receiver waits in `os`.
    pub fn new(os: &mut OsIpcReceiverSet) -> io::Result<Doorbell> {
        let (sender, receiver) = crate::sys::channel()?;
        let os_id = os.add(receiver)?;
        Ok(Doorbell { os_id, bell: Arc::new(Bell { rung: Mutex::new(Vec::new()), sender }) })
    }

    /// The waker of member `id`.
    pub fn waker(&self, id: u64) -> Waker {
        Waker::from(Arc::new(MemberWaker { id, bell: self.bell.clone() }))
    }

    /// Notes member `id` as rung without ringing (the set looks at it before it next waits).
    pub fn note(&self, id: u64) {
        self.bell.rung.lock().unwrap_or_else(PoisonError::into_inner).push(id);
    }

    /// Whether a member was rung (or noted) since the set last looked.
    pub fn has_rung(&self) -> bool {
        !self.bell.rung.lock().unwrap_or_else(PoisonError::into_inner).is_empty()
    }

    /// Sends a byte on the doorbell if a member waits to be looked at: a select that stops
    /// with members still rung (an async set then sleeps on the OS set) is woken at once.
    pub fn ring_if_rung(&self) {
        if self.has_rung() {
            let _ = self.bell.sender.send(&[0], Vec::new(), Vec::new(), Wait::NonBlocking);
        }
    }

    /// The members rung since the last call.
    pub fn take_rung(&self) -> Vec<u64> {
        std::mem::take(&mut *self.bell.rung.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Wake for MemberWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let first = {
            let mut rung = self.bell.rung.lock().unwrap_or_else(PoisonError::into_inner);
            rung.push(self.id);
            rung.len() == 1
        };
        if first {
            // One byte wakes the set's wait; a full doorbell (the set is not reading) already
            // holds bytes that will, and a set that is gone needs none.
            let _ = self.bell.sender.send(&[0], Vec::new(), Vec::new(), Wait::NonBlocking);
        }
    }
}
