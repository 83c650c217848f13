//! Descriptor shares: how many control memfds this process leaves queued in sockets, and how
//! many payload memfds its pools keep, each a small share of `RLIMIT_NOFILE`.
//!
//! ## Control memfds left in flight
//!
//! A channel's ring leaves a copy of its control memfd queued in the senders' direction of the
//! socket pair (`ring/mod.rs`), where senders find it with `MSG_PEEK`. The kernel counts every
//! descriptor queued in an `AF_UNIX` socket against the *user* that sent it
//! (`user->unix_inflight`), and refuses every descriptor-passing `sendmsg` of a process whose
//! user has more in flight than that process's `RLIMIT_NOFILE` (`ETOOMANYREFS`; root and
//! `CAP_SYS_RESOURCE` are exempt). One process of a user with 1,100 rings would stop every other
//! process of that user under the default limit of 1,024 from passing a descriptor: crossproc's
//! own channels, and Wayland or D-Bus clients alike.
//!
//! So each process keeps a budget of queued control memfds: [`queued_budget`], the soft
//! `RLIMIT_NOFILE` read once divided by 8, at least [`QUEUED_FLOOR`] and at most
//! [`QUEUED_CAP`] (128: an eighth of the default 1,024, whatever this process raised its own
//! limit to, since the limit that matters is that of the *other* processes of the user). A
//! receiver takes a unit before it queues the copy; with none left, the channel stays on its
//! socket and tries again at its next [`RING_AFTER`](super::ring::RING_AFTER) socket messages.
//!
//! When is a unit given back? The queued copy sits in the receive queue of the *sending* end's
//! socket, and stays charged to this process's user until that skb is freed: when a sender
//! reads it (senders only peek, so never) or when the sending socket is released, that is, when
//! the last copy of the sending end anywhere (every process, every message in flight) is
//! closed. Dropping the receiver frees nothing while a sender lives. The kernel charges the
//! user, and compares the user's total with the rlimit of whichever process sends, so what this
//! process must bound is the number of copies *it queued* that may still be queued, wherever the
//! senders are. This process can tell that a copy is gone only while it still holds the
//! receiving socket: the bytes that socket sent and the peer has not freed (`SIOCOUTQ`, the
//! socket's write allocation, which the queued packet holds until it is freed) are zero once the
//! sending socket is released. So:
//!
//! - a receiver dropped here gives its unit back if its socket then has nothing outstanding
//!   (every sender was gone first, the usual end of a channel);
//! - a receiver dropped while a sender lives, or one that moved to another process (its ring
//!   goes along, but the queued copy stays where this process put it, charged to the user
//!   through this process's send; the process it arrives in takes no unit), hands its unit to
//!   a watch list, with the inode of the sending socket the copy is queued on, which the
//!   kernel tells (`sock_diag.rs`). When the budget is spent, a unit is taken back from every
//!   watched socket the kernel no longer knows (one look every as many refused takes as units
//!   are watched: each watched socket costs a netlink query). Where the kernel cannot be asked
//!   (a sandbox without netlink), the unit stays charged for the life of the process;
//! - a child made by `fork` inherits the count (an over-count of what it queued: conservative)
//!   and never gives back a unit taken before the fork.
//!
//! A unit whose sending socket lives on stays charged while it does: a process whose dropped
//! receivers' senders all live (in processes that keep them) makes no more rings past the
//! budget (its channels stay on the socket, which is correct, only slower), and never
//! contributes more than the budget.
//!
//! ## Pooled payload memfds
//!
//! The payload pools (`pool.rs`) keep memfds open in this process between messages. They are
//! bounded by bytes and per channel, and by count across the process: [`pooled_budget`], the
//! soft limit divided by 8, between [`POOLED_FLOOR`] and [`POOLED_CAP`]. A memfd past it is
//! closed after its one message, as one past the byte budget is.

use crate::sys::found_once::FoundOnce;
use crate::sys::ForkLock;
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::MutexGuard;

use rustix::process::{getrlimit, Resource};

use super::fork;
use super::sock_diag::SockDiag;

/// The fewest control memfds a process may leave queued, however low its limit.
pub(super) const QUEUED_FLOOR: usize = 4;
/// The most control memfds a process leaves queued: an eighth of the default `RLIMIT_NOFILE`
/// (1,024) of the other processes of its user.
pub(super) const QUEUED_CAP: usize = 128;
/// The fewest pooled payload memfds a process keeps.
pub(super) const POOLED_FLOOR: usize = 16;
/// The most pooled payload memfds a process keeps, however high its limit.
pub(super) const POOLED_CAP: usize = 1024;

/// This process's soft `RLIMIT_NOFILE`, read once (a limit changed later is not seen).
fn soft_limit() -> usize {
    static LIMIT: FoundOnce = FoundOnce::new();
    LIMIT.get(|| {
        getrlimit(Resource::Nofile).current.map_or(usize::MAX, |limit| usize::try_from(limit).unwrap_or(usize::MAX))
    })
}

/// An eighth of `limit`, between `floor` and `cap`.
fn eighth(limit: usize, floor: usize, cap: usize) -> usize {
    (limit / 8).clamp(floor, cap)
}

/// Control memfds this process may leave queued at once (128 under the default limit).
pub(super) fn queued_budget() -> usize {
    eighth(soft_limit(), QUEUED_FLOOR, QUEUED_CAP)
}

/// Payload memfds the pools of this process may keep at once (128 under the default limit).
pub(super) fn pooled_budget() -> usize {
    eighth(soft_limit(), POOLED_FLOOR, POOLED_CAP)
}

/// A count of units against a limit, shared by the whole process.
pub(super) struct Budget {
    used: AtomicUsize,
}

impl Budget {
    /// An empty budget.
    pub const fn new() -> Budget {
        Budget { used: AtomicUsize::new(0) }
    }

    /// Takes a unit if fewer than `limit` are taken.
    pub fn take(&self, limit: usize) -> bool {
        self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| (used < limit).then_some(used + 1)).is_ok()
    }

    /// Gives a unit back.
    pub fn give_back(&self) {
        let _ = self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| used.checked_sub(1));
    }

    /// Units taken now.
    #[cfg(test)]
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// Control memfds this process queued that may still be queued.
static QUEUED: Budget = Budget::new();

/// One control memfd this process queued for a channel's senders, held by the channel's
/// receiver: dropped, it gives its unit back (in the fork generation that took it).
pub(super) struct QueuedUnit {
    /// The fork generation that took it; a forked child's copy gives nothing back.
    born: u64,
    /// The sending socket's inode and the network namespace it was found in, asked when the
    /// copy was queued ([`QueuedUnit::queued_on`]), so that a receiver dropped at the
    /// descriptor limit (no room for a netlink socket then) can still have its unit watched.
    peer: Option<(u32, u64)>,
}

/// A unit whose copy may still be queued on a sending socket, given back once the kernel no
/// longer knows that socket.
struct Watched {
    /// The sending socket's inode.
    peer: u32,
    /// The network namespace the socket was found in (its inode): the kernel knows a Unix
    /// socket by inode only in its own namespace, so only a thread in the same one may ask.
    namespace: u64,
    unit: QueuedUnit,
}

/// The watched units. Held only to add or take entries, never across a query.
static WATCHED: ForkLock<Vec<Watched>> = ForkLock::new(Vec::new());

/// The watch list, held only for a few steps (`None` in a child forked while another thread
/// held it: see [`ForkLock`]).
fn watched() -> Option<MutexGuard<'static, Vec<Watched>>> {
    WATCHED.lock()
}

/// The inode of this thread's network namespace (`None` where `/proc` cannot tell).
fn network_namespace() -> Option<u64> {
    rustix::fs::stat("/proc/thread-self/ns/net").ok().map(|stat| stat.st_ino)
}

impl QueuedUnit {
    /// A unit of this process's budget, or `None` when the budget is spent (and none of the
    /// watched units could be taken back).
    pub fn take() -> Option<QueuedUnit> {
        let budget = queued_budget();
        let taken = QUEUED.take(budget) || (reclaim(false) > 0 && QUEUED.take(budget));
        taken.then(|| QueuedUnit { born: fork::generation(), peer: None })
    }

    /// Notes which sending socket the copy was queued on (`socket` is the receiving end): one
    /// netlink query per ring made. Where it cannot be asked, the drop asks instead.
    pub fn queued_on(mut self, socket: BorrowedFd<'_>) -> QueuedUnit {
        if let (Some(namespace), Ok(Some(peer))) =
            (network_namespace(), SockDiag::open().and_then(|diag| diag.peer_of(socket)))
        {
            self.peer = Some((peer, namespace));
        }
        self
    }

    /// The receiver that held the unit is dropped; `socket` is its receiving end (still open),
    /// whose sent copy holds the unit. Given back now if the copy is freed, else watched until
    /// the sending socket is released (see the module); kept charged for the life of the
    /// process where that cannot be watched.
    pub fn settle_at_drop(self, socket: BorrowedFd<'_>) {
        if self.born != fork::generation() || matches!(outstanding_bytes(socket), Ok(0)) {
            return; // dropped: given back if this generation took it
        }
        if let Some((peer, namespace)) = self.peer {
            // Known since the copy was queued: no query now (which a process at its descriptor
            // limit could not make: review 3, F4).
            return match watched() {
                Some(mut watched) => watched.push(Watched { peer, namespace, unit: self }),
                None => std::mem::forget(self),
            };
        }
        let Some(namespace) = network_namespace() else { return std::mem::forget(self) };
        match SockDiag::open().and_then(|diag| diag.peer_of(socket)) {
            Ok(None) => {} // the sending socket is gone, and the copy with it
            Ok(Some(peer)) => match watched() {
                Some(mut watched) => watched.push(Watched { peer, namespace, unit: self }),
                None => std::mem::forget(self),
            },
            // Unknown (no netlink here, or the socket is in another namespace than this thread).
            Err(_) => std::mem::forget(self),
        }
    }
}

impl Drop for QueuedUnit {
    fn drop(&mut self) {
        if self.born == fork::generation() {
            QUEUED.give_back();
        }
    }
}

/// Gives back the watched units whose sending sockets the kernel no longer knows; returns how
/// many. A look costs a netlink query per watched unit, so unless `now`, a spent budget looks
/// once every as many refused takes as units are watched: one query per refused take, on
/// average (a refused take comes at most every 16 socket messages of a channel without a ring).
/// Only units found in this thread's network namespace are looked at; the list is not held
/// during the queries.
fn reclaim(now: bool) -> usize {
    static REFUSED_SINCE_LOOK: AtomicUsize = AtomicUsize::new(0);
    let Some(namespace) = network_namespace() else { return 0 };
    let generation = fork::generation();
    let mut looked_at = {
        let Some(mut watched) = watched() else { return 0 };
        // A forked child's entries are its parent's: dropped here without giving anything back.
        watched.retain(|entry| entry.unit.born == generation);
        let refused = REFUSED_SINCE_LOOK.fetch_add(1, Ordering::Relaxed) + 1;
        if watched.is_empty() || (!now && refused < watched.len()) {
            return 0;
        }
        REFUSED_SINCE_LOOK.store(0, Ordering::Relaxed);
        std::mem::take(&mut *watched)
    };
    let before = looked_at.len();
    if let Ok(diag) = SockDiag::open() {
        looked_at.retain(|entry| entry.namespace != namespace || !matches!(diag.exists(entry.peer), Ok(false)));
    }
    let given_back = before - looked_at.len();
    match watched() {
        Some(mut watched) => watched.append(&mut looked_at),
        None => looked_at.into_iter().for_each(std::mem::forget),
    }
    given_back
}

/// Whether a unit waits for the sending socket with this inode to go.
#[cfg(test)]
pub(super) fn is_watched(peer: u32) -> bool {
    WATCHED.lock().unwrap().iter().any(|entry| entry.peer == peer)
}

/// Looks at the watched units now (what a spent budget does every so many refused takes).
#[cfg(test)]
pub(super) fn reclaim_now() {
    reclaim(true);
}

/// `SIOCOUTQ` (`TIOCOUTQ`, the same number on every Linux architecture crossproc builds for).
const SIOCOUTQ: rustix::ioctl::Opcode = 0x5411;

/// Bytes `socket` sent that are not freed yet: for an `AF_UNIX` socket, its write allocation,
/// which each packet it sent holds until the peer reads it or the peer socket is released.
fn outstanding_bytes(socket: BorrowedFd<'_>) -> io::Result<i32> {
    // SAFETY: `SIOCOUTQ` on a socket writes one `int` (the kernel's `unix_ioctl`), which is
    // what the getter provides room for; the descriptor is borrowed for the call.
    let getter = unsafe { rustix::ioctl::Getter::<SIOCOUTQ, i32>::new() };
    // SAFETY: as above: the opcode and the output type match.
    Ok(unsafe { rustix::ioctl::ioctl(socket, getter) }?)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn the_shares_are_an_eighth_of_the_limit_within_bounds() {
        assert_eq!(eighth(1024, QUEUED_FLOOR, QUEUED_CAP), 128);
        assert_eq!(eighth(1 << 20, QUEUED_FLOOR, QUEUED_CAP), QUEUED_CAP);
        assert_eq!(eighth(256, QUEUED_FLOOR, QUEUED_CAP), 32);
        assert_eq!(eighth(16, QUEUED_FLOOR, QUEUED_CAP), QUEUED_FLOOR);
        assert_eq!(eighth(1024, POOLED_FLOOR, POOLED_CAP), 128);
        assert_eq!(eighth(1 << 20, POOLED_FLOOR, POOLED_CAP), POOLED_CAP);
        // Well under a quarter of the default limit, each.
        const { assert!(QUEUED_CAP * 4 < 1024) };
        assert!(eighth(1024, POOLED_FLOOR, POOLED_CAP) * 4 < 1024);
    }

    #[test]
    fn a_budget_gives_no_more_than_its_limit() {
        let budget = Budget::new();
        assert!((0..3).all(|_| budget.take(3)));
        assert!(!budget.take(3));
        budget.give_back();
        assert!(budget.take(3));
        assert_eq!(budget.used(), 3);
    }

    /// A packet queued in the peer's direction holds the sending socket's write allocation
    /// until the peer socket is released: what tells a receiver that its queued control memfd
    /// is gone.
    #[test]
    fn outstanding_bytes_go_when_the_peer_socket_is_released() {
        let (a, b) = super::super::socket::seqpacket_pair().unwrap();
        assert_eq!(outstanding_bytes(a.as_fd()).unwrap(), 0);
        let (passed, _other_end) = rustix::pipe::pipe().unwrap();
        let packet = [io::IoSlice::new(b"control")];
        super::super::socket::send_packet(a.as_fd(), &packet, &[passed.as_fd()], rustix::net::SendFlags::DONTWAIT)
            .unwrap();
        assert!(outstanding_bytes(a.as_fd()).unwrap() > 0);
        let copy = b.try_clone().unwrap();
        drop(b);
        assert!(outstanding_bytes(a.as_fd()).unwrap() > 0, "a copy of the peer keeps the packet queued");
        drop(copy);
        assert_eq!(outstanding_bytes(a.as_fd()).unwrap(), 0);
    }
}
