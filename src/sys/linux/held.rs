//! The channel ends and regions this process holds, by kernel object, so that one that arrives
//! again shares what the process already has instead of keeping a second descriptor.
//!
//! Every descriptor received in a message is a new one, even when it names a socket or a memfd
//! this process already holds: a sender received 10,000 times cost 10,000 descriptors (and each
//! copy claimed its own slot of the channel's ring, so the 17th retired it). A [`Held`] table
//! maps an object's identity to the value that holds it here; a received descriptor whose
//! object is in the table is closed at once, and the value already held is cloned instead.
//!
//! The rules:
//! - **Weak.** The table holds no reference: a value that every copy dropped is gone (its
//!   descriptor closed, so a sender's last copy still hangs the channel up), and an entry that
//!   names it is dead. Dead entries are pruned whenever the table doubled since the last prune.
//! - **Exact keys.** A key names one kernel object for as long as an entry for it is live: for a
//!   socket its cookie (`SO_COOKIE`, never reused while the system runs), for a memfd its device
//!   and inode (reused only once the file is freed, which a live entry, holding a descriptor of
//!   it, prevents; a dead entry with a reused key is simply replaced).
//! - **One table per role.** Senders and regions have a table each; receivers have none (a
//!   channel has one receiver; the same receiving socket arrives twice only as copies made by
//!   `fork`, which keep a descriptor each as before).
//! - **Fork.** A child made by `fork` inherits the table with the values it names, descriptors
//!   and all, so the entries stay true. A child forked while another thread held the table's
//!   lock can never take it: there, ends arrive as new values, each with its descriptor, as
//!   before the table.
//!
//! - **Keyed when needed.** A value this process sends away is recorded without its key (a
//!   `getsockopt` for a sender) and keyed only when an end next arrives here: a process that
//!   sends a new reply sender with every request, and is never sent one, never pays for the
//!   identity of the senders it sends.
//!
//! What it costs: the identity (one `getsockopt` for a socket; the `fstat` a region's seal
//! check makes anyway), one uncontended lock and a lookup in an ordered map per received end.

use std::collections::BTreeMap;
use std::sync::MutexGuard;

use crate::sys::ForkLock;

/// A value that is shared by cloning and can be held weakly: what a [`Held`] table names.
pub(super) trait Shared: Clone {
    /// The weak form the table keeps.
    type Weak;

    /// The weak form of `self`.
    fn downgrade(&self) -> Self::Weak;

    /// The value again, if a copy of it is still alive.
    fn upgrade(weak: &Self::Weak) -> Option<Self>;

    /// Whether every copy of the value is gone (without making a new one).
    fn is_gone(weak: &Self::Weak) -> bool;
}

/// A process-wide weak table of the values that hold kernel objects, keyed by the object.
pub(super) struct Held<K, T: Shared> {
    entries: ForkLock<Entries<K, T::Weak>>,
    /// The key of a value recorded without one (see [`hold`](Self::hold)).
    key_of: fn(&T) -> Option<K>,
}

/// The table's map, the values recorded without a key yet, and the sizes at which each is
/// pruned next.
struct Entries<K, W> {
    map: BTreeMap<K, W>,
    prune_at: usize,
    unkeyed: Vec<W>,
    unkeyed_prune_at: usize,
}

/// The smallest size at which a table is pruned.
const PRUNE_FROM: usize = 64;

impl<K: Ord + Copy, T: Shared> Held<K, T> {
    /// An empty table; `key_of` finds the key of a value recorded without one (`None`: it has
    /// none, and is forgotten).
    pub const fn new(key_of: fn(&T) -> Option<K>) -> Self {
        let entries =
            Entries { map: BTreeMap::new(), prune_at: PRUNE_FROM, unkeyed: Vec::new(), unkeyed_prune_at: PRUNE_FROM };
        Held { entries: ForkLock::new(entries), key_of }
    }

    /// The value this process holds for the object `key`, or, when it holds none, the one
    /// `make` makes, which later arrivals of the object then share. When the value is already
    /// held, `make` is not called (dropping it closes what it captured: the received
    /// descriptor).
    pub fn adopt<E>(&self, key: K, make: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        // Values keyed here are dropped after the lock is let go: dropping the last copy of
        // one runs its `Drop`.
        let mut keyed = Vec::new();
        let Some(mut entries) = self.entries() else { return make() };
        let unkeyed = std::mem::take(&mut entries.unkeyed);
        entries.unkeyed_prune_at = PRUNE_FROM;
        keyed.extend(unkeyed.iter().filter_map(T::upgrade).filter_map(|value| Some(((self.key_of)(&value)?, value))));
        for (key, value) in &keyed {
            if entries.map.get(key).is_none_or(|held| T::is_gone(held)) {
                entries.insert::<T>(*key, value.downgrade());
            }
        }
        if let Some(held) = entries.map.get(&key).and_then(T::upgrade) {
            return Ok(held);
        }
        let made = make()?;
        entries.insert::<T>(key, made.downgrade());
        Ok(made)
    }

    /// Records `value` as what this process holds for its object, unless a live value is
    /// recorded for that already. Its key is found only when an object next arrives (by
    /// [`adopt`](Self::adopt)), if the value is alive then.
    pub fn hold(&self, value: &T) {
        let Some(mut entries) = self.entries() else { return };
        let entries = &mut *entries;
        if entries.unkeyed.len() >= entries.unkeyed_prune_at {
            entries.unkeyed.retain(|weak| !T::is_gone(weak));
            entries.unkeyed_prune_at = (entries.unkeyed.len() * 2).max(PRUNE_FROM);
        }
        entries.unkeyed.push(value.downgrade());
    }

    /// The number of entries, dead ones and those without a key yet included (for tests).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries().map_or(0, |entries| entries.map.len() + entries.unkeyed.len())
    }

    /// The entries; `None` in a child forked while another thread held them, which no thread
    /// here can ever take (see [`ForkLock`]).
    fn entries(&self) -> Option<MutexGuard<'_, Entries<K, T::Weak>>> {
        self.entries.lock()
    }
}

impl<K: Ord, W> Entries<K, W> {
    /// Inserts (or replaces) an entry, first pruning dead ones if the map doubled since the
    /// last prune, so that its size stays within twice the live entries (and the work per
    /// insert constant on average).
    fn insert<T: Shared<Weak = W>>(&mut self, key: K, weak: W) {
        if self.map.len() >= self.prune_at {
            self.map.retain(|_, weak| !T::is_gone(weak));
            self.prune_at = (self.map.len() * 2).max(PRUNE_FROM);
        }
        self.map.insert(key, weak);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Weak};

    use super::super::receiver::OsIpcReceiver;
    use super::super::ring::RING_AFTER;
    use super::super::sender::OsIpcSender;
    use super::super::socket::channel;
    use super::*;
    use crate::sys::{OsIpcChannel, OsIpcSharedMemory, RecvError, Wait};

    #[derive(Clone)]
    struct Value(Arc<u32>);

    impl Shared for Value {
        type Weak = Weak<u32>;

        fn downgrade(&self) -> Weak<u32> {
            Arc::downgrade(&self.0)
        }

        fn upgrade(weak: &Weak<u32>) -> Option<Self> {
            weak.upgrade().map(Value)
        }

        fn is_gone(weak: &Weak<u32>) -> bool {
            weak.strong_count() == 0
        }
    }

    #[test]
    fn a_held_value_is_shared_and_a_dropped_one_is_made_anew() {
        let table = Held::<u64, Value>::new(|_| None);
        let first = table.adopt(1, || Ok::<_, ()>(Value(Arc::new(10)))).unwrap();
        let again = table.adopt(1, || Err(())).unwrap();
        assert!(Arc::ptr_eq(&first.0, &again.0));
        let other = table.adopt(2, || Ok::<_, ()>(Value(Arc::new(20)))).unwrap();
        assert_eq!(*other.0, 20);
        drop((first, again));
        let made = table.adopt(1, || Ok::<_, ()>(Value(Arc::new(11)))).unwrap();
        assert_eq!(*made.0, 11, "a value every copy dropped is not brought back");
    }

    #[test]
    fn hold_keeps_a_live_entry() {
        // A value's key is its tens.
        let table = Held::<u64, Value>::new(|value| Some(u64::from(*value.0) / 10));
        let first = Value(Arc::new(70));
        table.hold(&first);
        table.hold(&Value(Arc::new(71)));
        assert_eq!(*table.adopt(7, || Err(())).unwrap().0, 70);
        table.hold(&Value(Arc::new(72)));
        assert_eq!(*table.adopt(7, || Err(())).unwrap().0, 70, "a later value replaced a live one");
        drop(first);
        let second = Value(Arc::new(73));
        table.hold(&second);
        assert_eq!(*table.adopt(7, || Err(())).unwrap().0, 73);
    }

    #[test]
    fn values_held_and_dropped_before_any_arrival_are_pruned() {
        let table = Held::<u64, Value>::new(|value| Some(u64::from(*value.0)));
        let kept = Value(Arc::new(5));
        table.hold(&kept);
        for number in 10..10_000 {
            table.hold(&Value(Arc::new(number)));
        }
        assert!(table.len() <= 2 * PRUNE_FROM, "{} entries for 1 live value", table.len());
        assert!(Arc::ptr_eq(&table.adopt(5, || Err(())).unwrap().0, &kept.0));
        assert_eq!(table.len(), 1, "the dropped values were keyed");
    }

    #[test]
    fn dead_entries_are_pruned() {
        let table = Held::<u64, Value>::new(|_| None);
        let kept: Vec<Value> =
            (0..10).map(|key| table.adopt(key, || Ok::<_, ()>(Value(Arc::new(0)))).unwrap()).collect();
        for key in 10..10_000 {
            drop(table.adopt(key, || Ok::<_, ()>(Value(Arc::new(0)))).unwrap());
        }
        assert!(table.len() <= 2 * PRUNE_FROM, "{} entries for 10 live values", table.len());
        for (key, value) in kept.iter().enumerate() {
            let again = table.adopt(key as u64, || Err("a live entry was pruned")).unwrap();
            assert!(Arc::ptr_eq(&value.0, &again.0));
        }
    }

    /// A sender passed through `carrier` and taken out again, in this process.
    fn passed(carrier: &(OsIpcSender, OsIpcReceiver), sender: &OsIpcSender) -> OsIpcSender {
        let channels = vec![OsIpcChannel::Sender(sender.clone())];
        assert!(carrier.0.send(&[], channels, vec![], Wait::Blocking).is_ok());
        let mut message = carrier.1.recv(Wait::Blocking).unwrap();
        message.channels.pop().unwrap().into_sender().unwrap()
    }

    /// A sender whose ring is engaged, received again 20 times: each copy is the sender itself
    /// (its descriptor, pool and ring slot), so the copies' sends, which took a slot each
    /// before and retired the ring at the 16th, keep the ring (ring: 16 slots).
    #[test]
    fn a_sender_received_again_keeps_its_ring_slot() {
        let (tx, rx) = channel().unwrap();
        for byte in 0..=RING_AFTER as u8 {
            assert!(tx.send(&[byte], vec![], vec![], Wait::Blocking).is_ok());
            assert_eq!(rx.recv(Wait::Blocking).unwrap().data, [byte]);
        }
        assert!(matches!(rx.recv(Wait::NonBlocking), Err(RecvError::Empty)));
        assert!(tx.send(b"ring", vec![], vec![], Wait::Blocking).is_ok());
        assert_eq!(rx.recv(Wait::Blocking).unwrap().data, b"ring");
        assert!(tx.writes_in_ring(), "the channel has no ring to test with");

        let carrier = channel().unwrap();
        let mut copies = Vec::new();
        for round in 0..20u8 {
            let copy = passed(&carrier, &tx);
            assert!(copy.is_shared_with(&tx), "copy {round} is a sender of its own");
            assert!(copy.send(&[round], vec![], vec![], Wait::Blocking).is_ok());
            assert_eq!(rx.recv(Wait::Blocking).unwrap().data, [round]);
            copies.push(copy);
        }
        // A copy of a copy is the same sender too.
        assert!(passed(&carrier, &copies[19]).is_shared_with(&tx));
        assert!(tx.writes_in_ring(), "the copies retired the ring");
        assert!(copies.iter().all(OsIpcSender::writes_in_ring));
    }

    /// A sender handed to a spawned child, while a clone stays here: the copy the child would
    /// send back is that clone.
    #[test]
    fn a_sender_handed_to_a_child_comes_back_as_the_clone_kept() {
        let (tx, _rx) = channel().unwrap();
        let inherited = OsIpcChannel::Sender(tx.clone()).into_fd().unwrap();
        let back = super::super::socket::OsOpaqueIpcChannel::from_inherited(inherited).into_sender().unwrap();
        assert!(back.is_shared_with(&tx));
    }

    /// The copies of a sender received again share one descriptor, yet the last one dropped
    /// still hangs the channel up, also when the first sender was dropped long before.
    #[test]
    fn the_last_copy_of_a_sender_received_again_hangs_up() {
        let (tx, rx) = channel().unwrap();
        let carrier = channel().unwrap();
        let copies: Vec<OsIpcSender> = (0..5).map(|_| passed(&carrier, &tx)).collect();
        drop(tx);
        let copy = passed(&carrier, &copies[0]);
        assert!(copy.is_shared_with(&copies[4]));
        drop(copies);
        assert!(copy.send(b"last", vec![], vec![], Wait::Blocking).is_ok());
        assert!(matches!(rx.recv(Wait::NonBlocking), Ok(message) if message.data == b"last"));
        assert!(matches!(rx.recv(Wait::NonBlocking), Err(RecvError::Empty)), "hung up while a copy lives");
        drop(copy);
        assert!(matches!(rx.recv(Wait::Blocking), Err(RecvError::Disconnected)));
    }

    /// A region received again is the region already held (one descriptor, one mapping); once
    /// every copy is dropped, the next arrival maps it anew.
    #[test]
    fn a_region_received_again_is_the_one_held() {
        let carrier = channel().unwrap();
        let pass = |region: &OsIpcSharedMemory| {
            assert!(carrier.0.send(&[], vec![], vec![region.clone(), region.clone()], Wait::Blocking).is_ok());
            let mut message = carrier.1.recv(Wait::Blocking).unwrap();
            let (second, first) = (message.shared_memory.pop().unwrap(), message.shared_memory.pop().unwrap());
            assert!(first.is_shared_with(&second), "one message, two regions");
            first
        };
        let region = OsIpcSharedMemory::from_bytes(b"one region").unwrap();
        let copies: Vec<_> = (0..10).map(|_| pass(&region)).collect();
        assert!(copies.iter().all(|copy| copy.is_shared_with(&region) && &copy[..] == b"one region"));

        // Dropped everywhere here but in flight: it arrives as a new mapping of the same file.
        assert!(carrier.0.send(&[], vec![], vec![region.clone()], Wait::Blocking).is_ok());
        drop((region, copies));
        let arrived = carrier.1.recv(Wait::Blocking).unwrap().shared_memory.pop().unwrap();
        assert_eq!(&arrived[..], b"one region");
        assert!(pass(&arrived).is_shared_with(&arrived));
    }

    #[test]
    fn a_failed_make_records_nothing() {
        let table = Held::<u64, Value>::new(|_| None);
        assert!(table.adopt(1, || Err(())).is_err());
        assert_eq!(table.len(), 0);
    }
}
