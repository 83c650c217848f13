//! The ring on its own, in one process over a real memfd: publishing, taking, the sleep
//! protocol, and a hostile peer's contents.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::control::{Field, Word, ASLEEP};
use super::*;

fn ring() -> (RingWriter, RingReader) {
    let (fd, control) = Control::create().unwrap();
    let control = Arc::new(control);
    let writer = RingWriter::claim(control.clone(), 0).unwrap();
    let reader = RingReader::new(control, fd, 0);
    reader.settle(); // as after the receiver's first look at an empty socket
    (writer, reader)
}

fn next(reader: &RingReader) -> Front {
    reader.front(&mut Vec::new()).unwrap()
}

#[test]
fn messages_come_out_in_the_order_they_went_in_across_wrap_arounds() {
    let (mut writer, reader) = ring();
    // Many times the ring's size, in varied lengths, read a few behind the writer.
    let mut pending = std::collections::VecDeque::new();
    for seq in 0..20_000u32 {
        let data: Vec<u8> = (0..(seq as usize * 7) % 700).map(|at| (seq as usize + at) as u8).collect();
        assert_eq!(writer.send(&data), Outcome::Sent, "message {seq}");
        pending.push_back(data);
        if pending.len() > 20 {
            assert_eq!(next(&reader), Front::Data(pending.pop_front().unwrap()));
        }
    }
    while let Some(expected) = pending.pop_front() {
        assert_eq!(next(&reader), Front::Data(expected));
    }
    assert_eq!(next(&reader), Front::Empty);
}

#[test]
fn a_full_ring_sends_to_the_socket_and_runs_out_of_marker_room_last() {
    let (mut writer, reader) = ring();
    let mut sent = 0;
    while writer.send(&[7; 100]) == Outcome::Sent {
        sent += 1;
    }
    assert!(sent > 100, "a ring holds many small messages ({sent})");
    // Markers still fit for a while, then the channel is full.
    let mut tickets = 0;
    while let Some(ticket) = writer.ticket() {
        writer.mark(ticket);
        tickets += 1;
    }
    assert!(tickets > 0);
    assert!(!reader.control().is_closed());
    // Reading makes room again.
    for _ in 0..sent {
        assert_eq!(next(&reader), Front::Data(vec![7; 100]));
    }
    assert!(matches!(next(&reader), Front::Marker(_)));
    reader.pass().unwrap();
    assert!(writer.ticket().is_some());
}

#[test]
fn a_sleeping_receiver_gets_packets_and_markers_only() {
    let (mut writer, reader) = ring();
    assert!(reader.sleep());
    assert_eq!(writer.send(b"x"), Outcome::UseSocket, "the packet must wake the receiver");
    let ticket = writer.ticket().unwrap();
    writer.mark(ticket);
    // The marker keeps `ASLEEP` (only the receiver clears it) and makes sleeping impossible.
    assert!(Word(reader.control().word().load(Ordering::Relaxed)).has(ASLEEP));
    assert!(!reader.sleep());
    reader.wake();
    assert_eq!(next(&reader), Front::Marker(ticket));
    reader.pass().unwrap();
    assert_eq!(writer.send(b"y"), Outcome::Sent);
    assert!(!reader.sleep(), "a published message keeps the receiver awake");
    assert_eq!(next(&reader), Front::Data(b"y".to_vec()));
}

#[test]
fn a_new_ring_sends_everything_to_the_socket_until_the_receiver_settles_it() {
    let (fd, control) = Control::create().unwrap();
    let control = Arc::new(control);
    let mut writer = RingWriter::claim(control.clone(), 0).unwrap();
    let reader = RingReader::unannounced(control, fd, 0);
    let asleep = || Word(reader.control().word().load(Ordering::Relaxed)).has(ASLEEP);
    assert!(asleep());
    // Neither waking nor a look at the socket begun before the announcement settles it.
    reader.wake();
    assert!(!reader.is_fresh());
    reader.settle();
    assert!(asleep() && !reader.is_settled());
    assert_eq!(writer.send(b"x"), Outcome::UseSocket);
    // 10 bytes of packets were queued at the announcement: reading 4, then 6, settles it.
    reader.announced(10);
    assert!(reader.is_fresh());
    reader.wake();
    assert!(asleep(), "plain packets sent before the announcement may still be on the socket");
    reader.consumed(4);
    reader.wake();
    assert!(asleep() && reader.is_fresh(), "6 bytes queued before the announcement are unread");
    reader.consumed(6);
    reader.wake();
    assert!(!asleep() && reader.is_settled());
    assert_eq!(writer.send(b"y"), Outcome::Sent);
    assert_eq!(next(&reader), Front::Data(b"y".to_vec()));
}

#[test]
fn a_retired_ring_takes_nothing_new_but_delivers_what_it_has() {
    let (mut writer, reader) = ring();
    assert_eq!(writer.send(b"before"), Outcome::Sent);
    reader.control().close();
    assert_eq!(writer.send(b"after"), Outcome::UseSocket);
    assert_eq!(next(&reader), Front::Data(b"before".to_vec()));
    assert_eq!(next(&reader), Front::Empty);
}

#[test]
fn slots_are_claimed_once_and_given_back() {
    let (fd, control) = Control::create().unwrap();
    let control = Arc::new(control);
    let writers: Vec<RingWriter> = (0..SLOTS).map(|_| RingWriter::claim(control.clone(), 0).unwrap()).collect();
    assert!(RingWriter::claim(control.clone(), 0).is_none());
    drop(writers);
    assert!(RingWriter::claim(control, 0).is_some());
    drop(fd);
}

/// Each corruption is an `InvalidData` error that retires the ring for good; nothing panics or
/// hangs.
#[test]
fn a_corrupt_ring_is_an_error_on_its_channel() {
    type Corruption = fn(&Control);
    let corruptions: [(&str, Corruption); 6] = [
        ("head out of bounds", |control| control.word().store(Word::new(0xFFFF, 1, 0).0, Ordering::Relaxed)),
        ("wrong publish count", |control| control.field(0, 0, Field::Seq).store(99, Ordering::Relaxed)),
        ("unknown kind", |control| control.field(0, 0, Field::Kind).store(9, Ordering::Relaxed)),
        ("length past the limit", |control| control.field(0, 0, Field::Len).store(1 << 30, Ordering::Relaxed)),
        ("entry not written", |control| control.field(0, 0, Field::State).store(0, Ordering::Relaxed)),
        ("a cycle", |control| {
            // The first entry's `next` points at itself; counts cannot match all the way.
            control.field(0, 0, Field::Next).store(Control::reference(0, 0), Ordering::Relaxed)
        }),
    ];
    for (what, corrupt) in corruptions {
        let (mut writer, reader) = ring();
        assert_eq!(writer.send(b"hello"), Outcome::Sent);
        corrupt(reader.control());
        let error = reader.front(&mut Vec::new()).expect_err(what);
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{what}");
        assert!(reader.control().is_closed(), "{what}: the ring is retired");
        // A peer that goes on writing the word (clearing `CLOSED`, pointing at an entry) cannot
        // make the broken ring look busy again: it is never read, nor waited on, again.
        reader.control().word().store(Word::new(Control::reference(0, 0), 1, 0).0, Ordering::Relaxed);
        assert!(reader.is_closed() && !reader.has_work(), "{what}: the broken ring stays quiet");
        assert_eq!(next(&reader), Front::Empty, "{what}");
        assert!(reader.sleep(), "{what}");
    }
}

/// Arbitrary bytes where the ring is: the reader delivers or refuses, and always returns.
#[test]
fn arbitrary_ring_contents_never_panic() {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..3_000 {
        let len = (random() % 600) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| random() as u8).collect();
        if round % 2 == 0 && bytes.len() >= 16 {
            // Mostly plausible: a head into slot 0 and a small count.
            let word = Word::new(1 + (random() % 8) as u32, random() % 4, random() % 4);
            bytes[..8].copy_from_slice(&word.0.to_le_bytes());
            bytes[8..16].copy_from_slice(&[0; 8]);
        }
        let _ = read_arbitrary_ring(&bytes);
    }
}

/// A writer that claims a slot whose counters a peer broke starts over instead of trusting them.
#[test]
fn a_slot_with_broken_counters_starts_over() {
    let top = u64::MAX - 31;
    for (head, tail) in [(64, 16), (16, 0), (1 << 40, 0), (32, 64), (top, top), (top, top - 32 * 1024)] {
        let (fd, control) = Control::create().unwrap();
        control.slot_word(0, 1).store(head, Ordering::Relaxed);
        control.slot_word(0, 2).store(tail, Ordering::Relaxed);
        let control = Arc::new(control);
        let mut writer = RingWriter::claim(control.clone(), 0).unwrap();
        let reader = RingReader::new(control, fd, 0);
        for round in 0..2_000u32 {
            assert_eq!(writer.send(&round.to_le_bytes()), Outcome::Sent, "({head}, {tail}) round {round}");
            assert_eq!(next(&reader), Front::Data(round.to_le_bytes().to_vec()));
        }
    }
}

/// A free slot whose counters say it is full of entries that were never consumed (a peer's junk,
/// or an earlier process's messages still unread) is passed over: the claimant takes the next
/// slot instead of staying "full" for ever.
#[test]
fn a_slot_that_is_not_free_is_passed_over() {
    let (fd, control) = Control::create().unwrap();
    control.slot_word(0, 1).store(RING_BYTES as u64, Ordering::Relaxed);
    control.slot_word(0, 2).store(0, Ordering::Relaxed);
    let control = Arc::new(control);
    let mut writer = RingWriter::claim(control.clone(), 0).unwrap();
    let reader = RingReader::new(control.clone(), fd, 0);
    reader.settle();
    for round in 0..2_000u32 {
        assert_eq!(writer.send(&round.to_le_bytes()), Outcome::Sent, "round {round}");
        assert_eq!(next(&reader), Front::Data(round.to_le_bytes().to_vec()));
    }
    assert_eq!(control.slot_word(0, 0).load(Ordering::Relaxed), 0, "the passed-over slot is given back");
    drop(writer);
}

/// A ticket delivered ahead is kept while any of the list's entries is free: 64 other packets
/// delivered ahead and passed meanwhile (each marker forgetting its ticket) do not push it out.
#[test]
fn a_ticket_delivered_ahead_is_kept_while_entries_are_free() {
    let (_writer, reader) = ring();
    let waiting = (1 << 56) | 7;
    reader.delivered_ahead(waiting);
    for other in 1..=200u64 {
        let ticket = (2 << 56) | other;
        reader.delivered_ahead(ticket);
        assert!(reader.was_delivered(ticket), "ticket {other}");
    }
    assert!(reader.was_delivered(waiting), "the waiting ticket was overwritten");
    assert!(!reader.was_delivered(waiting), "a ticket is forgotten once its marker passed");
}

/// A hostile peer writing arbitrary bytes into the ring while it is read: every call returns,
/// nothing panics (the fuzz target `race_ring` explores the same with chosen writes).
#[test]
fn arbitrary_writes_during_reads_never_panic() {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..200 {
        let input: Vec<u8> = (0..(random() % 64) as usize).map(|_| random() as u8).collect();
        let _ = race_arbitrary_writes(&input);
    }
}

/// A slot passed over (its earlier owner left messages the receiver has yet to read) is left
/// untouched: the next claimant passes it over too, and the messages arrive (found in review:
/// the first claimant wrote its rebased counters back, the second then started the slot over
/// and overwrote them).
#[test]
fn a_passed_over_slot_keeps_its_unread_messages() {
    let (fd, control) = Control::create().unwrap();
    let control = Arc::new(control);
    let reader = RingReader::new(control.clone(), fd, 0);
    reader.settle();
    let mut first = RingWriter::claim(control.clone(), 0).unwrap();
    // 1,024 entries of 32 bytes: the slot's counters are exactly one ring past zero.
    for round in 0..1024u32 {
        assert_eq!(first.send(&[]), Outcome::Sent, "round {round}");
        assert_eq!(next(&reader), Front::Data(vec![]));
    }
    for message in [b"one", b"two", b"six"] {
        assert_eq!(first.send(message), Outcome::Sent);
    }
    drop(first); // its process is done; three messages unread in slot 0
    let others: Vec<RingWriter> = (0..4).map(|_| RingWriter::claim(control.clone(), 0).unwrap()).collect();
    assert_eq!(control.slot_word(0, 0).load(Ordering::Relaxed), 0, "a claimant took slot 0 with unread messages");
    for message in [b"one", b"two", b"six"] {
        assert_eq!(next(&reader), Front::Data(message.to_vec()));
    }
    drop(others);
}

/// A co-sender that sets an entry of another writer's slot back to "written" after the receiver
/// consumed it would keep that writer full for ever: the writer sees that it is stalled (full
/// while the receiver holds nothing), and its sender retires the ring. A writer that is full
/// because the receiver has not read yet is not stalled.
#[test]
fn a_writer_kept_full_by_a_peer_knows_it_is_stalled() {
    let (mut honest, reader) = ring();
    while honest.send(&[1; 100]) == Outcome::Sent {}
    while let Some(ticket) = honest.ticket() {
        honest.mark(ticket);
    }
    assert!(!honest.stalled(), "full with entries the receiver has yet to read");
    while next(&reader) != Front::Empty {
        let _ = reader.pass();
    }
    let (mut honest, reader) = {
        drop((honest, reader));
        ring()
    };
    fill_behind_a_written_back_tail(&mut honest, &reader, super::control::WRITTEN);
    assert_eq!(next(&reader), Front::Empty, "the receiver has taken everything");
    assert!(honest.stalled(), "the writer does not see that a peer keeps it full");
}

/// The same with the consumed entry set to a state no writer leaves (0): the writer sees a
/// broken slot. (Review 5, R5-1: its tail stopped there and `stalled` looked at no sign, so a
/// blocking send waited for ever while the receiver held nothing.)
#[test]
fn a_writer_whose_consumed_entry_a_peer_set_to_junk_knows_it_is_stalled() {
    let (mut honest, reader) = ring();
    fill_behind_a_written_back_tail(&mut honest, &reader, 0);
    assert!(honest.stalled(), "the writer does not see that a peer broke its slot");
    assert!(reader.control().is_closed(), "the ring of a broken slot is not retired");
}

/// A hostile peer's one store, at `honest`'s oldest entry once the receiver consumed it (set to
/// `state`), then `honest` filled up with messages and markers the receiver all takes.
fn fill_behind_a_written_back_tail(honest: &mut RingWriter, reader: &RingReader, state: u32) {
    assert_eq!(honest.send(b"first"), Outcome::Sent);
    assert_eq!(next(reader), Front::Data(b"first".to_vec()));
    reader.control().field(0, 0, Field::State).store(state, Ordering::Relaxed);
    while honest.send(&[1; 100]) == Outcome::Sent {
        while let Front::Data(_) = next(reader) {}
    }
    // Until the writer is full (or sees a broken slot and retires the ring).
    while !reader.control().is_closed() {
        let Some(ticket) = honest.ticket() else { break };
        honest.mark(ticket);
        while let Front::Marker(_) = next(reader) {
            reader.pass().unwrap();
        }
    }
}

/// The same peer, which also keeps the chain from ever being empty (it publishes in a slot of
/// its own, and the receiver reads those): more entries published than the ring holds, while
/// the honest writer's oldest entry stayed "written", tell the honest writer that a peer wrote
/// it back (review 3, F7: before, its blocking send waited for room for ever).
#[test]
fn a_writer_kept_full_by_a_peer_that_keeps_the_chain_busy_knows_it_is_stalled() {
    let (mut honest, reader) = ring();
    let mut peer = RingWriter::claim(reader.control().clone(), 0).unwrap();
    fill_behind_a_written_back_tail(&mut honest, &reader, super::control::WRITTEN);
    // The peer's message waits in the chain whenever the honest writer looks.
    assert_eq!(peer.send(b"busy"), Outcome::Sent);
    assert!(!honest.stalled(), "a tail found stuck for the first time is not proof yet");
    for _ in 0..=super::writer::STALL_PUBLISHES {
        assert_eq!(next(&reader), Front::Data(b"busy".to_vec()));
        assert_eq!(peer.send(b"busy"), Outcome::Sent);
    }
    assert!(honest.stalled(), "the writer does not see that a peer keeps it full");
}

/// A peer that writes every consumed entry of the honest writer back, keeps the chain busy,
/// and lets the oldest go now and then (so that no one tail entry stays stuck) keeps the writer
/// full: the writer sees it once it has had no room for `STALL_TIME` (review 5, R5-2: before,
/// the timer started over whenever the tail moved, so such a peer held the writer to about a
/// message a second for ever). A writer whose receiver really takes its entries starts over.
#[test]
fn a_writer_kept_full_by_a_peer_that_lets_an_entry_go_now_and_then_knows_it_is_stalled() {
    let (mut honest, reader) = ring();
    let mut peer = RingWriter::claim(reader.control().clone(), 0).unwrap();
    let state = |offset: usize| reader.control().field(0, offset, Field::State);
    // Each entry the receiver consumes, the peer writes back.
    let mut written_back = Vec::new();
    loop {
        let offset = written_back.len() * super::writer::entry_size(100);
        if honest.send(&[1; 100]) != Outcome::Sent {
            break;
        }
        assert_eq!(next(&reader), Front::Data(vec![1; 100]));
        state(offset).store(super::control::WRITTEN, Ordering::Relaxed);
        written_back.push(offset);
    }
    let use_marker_room = |honest: &mut RingWriter| {
        while let Some(ticket) = honest.ticket() {
            honest.mark(ticket);
            while let Front::Marker(_) = next(&reader) {
                reader.pass().unwrap();
            }
        }
    };
    use_marker_room(&mut honest);
    assert_eq!(peer.send(b"busy"), Outcome::Sent);
    assert!(!honest.stalled(), "a writer found full for the first time is not proof yet");
    // The peer lets the oldest entry go, and the writer uses the room at once.
    state(written_back[0]).store(super::control::CONSUMED, Ordering::Relaxed);
    use_marker_room(&mut honest);
    // The peer keeps the chain busy whenever the writer looks.
    if !reader.has_work() {
        assert_eq!(peer.send(b"busy"), Outcome::Sent);
    }
    assert!(!honest.stalled(), "no sign yet: the writer has been full for a moment only");
    honest.pretend_full_for(super::writer::STALL_TIME);
    state(written_back[1]).store(super::control::CONSUMED, Ordering::Relaxed);
    use_marker_room(&mut honest);
    if !reader.has_work() {
        assert_eq!(peer.send(b"busy"), Outcome::Sent);
    }
    assert!(honest.stalled(), "a peer that lets one entry go now and then holds the writer for ever");

    // Honest: a writer kept full by a slow receiver, which then takes everything, starts over.
    let (mut honest, reader) = {
        drop((honest, peer, reader));
        ring()
    };
    let fill = |honest: &mut RingWriter| {
        while honest.send(&[1; 100]) == Outcome::Sent {}
        let mut promised = 0;
        while honest.ticket().is_some() {
            promised += 1;
        }
        promised
    };
    let promised = fill(&mut honest);
    assert!(!honest.stalled(), "full with entries the receiver has yet to read");
    honest.pretend_full_for(super::writer::STALL_TIME);
    while let Front::Data(_) = next(&reader) {}
    for _ in 0..promised {
        honest.cancel();
    }
    fill(&mut honest);
    assert!(!honest.stalled(), "a writer whose receiver took its entries still counts an old wait");
}
