//! The wire format: what one pipe message holds.
//!
//! ```text
//! "CXW1" | header length (u32 LE) | header (postcard) | trailing bytes (the payload, when inline)
//! ```
//!
//! The header names the process the message's handles were placed in (`target_pid`) and lists
//! message bodies in one flat array: body 0 is the message itself; a receiver end carried by a
//! body lists the messages that were queued for it (its backlog) as a range of later bodies. The
//! tree is flat so that decoding never recurses, whatever a hostile sender writes, and it is
//! checked whole (every range later than its owner, every body claimed once, limits respected)
//! before any handle value in it is adopted.
//!
//! A message larger than the pipe should hold (a receiver that moves with a large backlog
//! inline) travels *indirect*: the pipe message is the prefix with [`INDIRECT`] for a header
//! length, then the process the section's handle was placed in (u32 LE: checked before the
//! handle is taken), the handle and the section's length (u64 LE each), and the section holds
//! the whole message as above. A blocking write of more than the pipe buffers waits for a reader, and the
//! reader may be the sending thread itself, which then never reads (a receiver sent through a
//! channel of its own process: it hung under Wine).
//!
//! ```text
//! "CXW1" | 0xFFFF_FFFF | target pid (u32 LE) | section handle (u64 LE) | section length (u64 LE)
//! ```

use std::io;

use serde::{Deserialize, Serialize};

/// What starts every pipe message: "CXW" and then [`PROTOCOL_VERSION`].
const MAGIC: [u8; 3] = *b"CXW";
/// The version of this wire format (and of the server verdicts): two builds that speak
/// different versions refuse each other's first message with an error naming both.
pub(super) const PROTOCOL_VERSION: u8 = b'1';
/// The verdicts a server's acceptor sends a client (admitted, refused).
pub(super) const VERDICT_ADMITTED: [u8; 7] = [MAGIC[0], MAGIC[1], MAGIC[2], PROTOCOL_VERSION, b'-', b'O', b'K'];
pub(super) const VERDICT_REFUSED: [u8; 7] = [MAGIC[0], MAGIC[1], MAGIC[2], PROTOCOL_VERSION, b'-', b'N', b'O'];

/// The version a packet (or verdict) from another crossproc build speaks, if it is not ours.
pub(super) fn other_version(bytes: &[u8]) -> Option<u8> {
    crate::sys::other_version(bytes, MAGIC, PROTOCOL_VERSION)
}

/// The error for a peer whose crossproc build speaks protocol version `theirs`.
pub(super) fn version_mismatch(theirs: u8) -> io::Error {
    crate::sys::version_mismatch(theirs, PROTOCOL_VERSION)
}

const PREFIX: usize = 8;

/// The header length that marks an indirect message.
const INDIRECT: u32 = u32::MAX;

/// Messages longer than this travel indirect (half the pipe's buffer: room for others).
pub(super) const INDIRECT_ABOVE: usize = super::pipe::PIPE_BUFFER as usize / 2;

/// The length of an indirect pipe message.
const INDIRECT_LEN: usize = PREFIX + 4 + 16;

/// The pipe message that names `section`, placed in process `target_pid`, as the one that
/// holds the whole message.
pub(super) fn encode_indirect(target_pid: u32, section: SectionWire) -> Vec<u8> {
    let mut message = Vec::with_capacity(INDIRECT_LEN);
    message.extend_from_slice(&MAGIC);
    message.push(PROTOCOL_VERSION);
    message.extend_from_slice(&INDIRECT.to_le_bytes());
    message.extend_from_slice(&target_pid.to_le_bytes());
    message.extend_from_slice(&section.handle.to_le_bytes());
    message.extend_from_slice(&section.len.to_le_bytes());
    message
}

/// The target process and the section an indirect message names (`None` for a message that
/// holds itself, or one of another version, which [`Header::decode`] refuses as such).
pub(super) fn decode_indirect(message: &[u8]) -> io::Result<Option<(u32, SectionWire)>> {
    if message.len() < PREFIX || message[..3] != MAGIC || message[3] != PROTOCOL_VERSION {
        return Ok(None);
    }
    if message[4..8] != INDIRECT.to_le_bytes() {
        return Ok(None);
    }
    if message.len() != INDIRECT_LEN {
        let what = "malformed message: an indirect message of the wrong length";
        return Err(io::Error::new(io::ErrorKind::InvalidData, what));
    }
    let target_pid = u32::from_le_bytes(message[PREFIX..PREFIX + 4].try_into().expect("4 bytes"));
    let field = |at: usize| u64::from_le_bytes(message[at..at + 8].try_into().expect("8 bytes"));
    Ok(Some((target_pid, SectionWire { handle: field(PREFIX + 4), len: field(PREFIX + 12) })))
}

/// The decoded header of one pipe message.
#[derive(Serialize, Deserialize, Debug, Default)]
pub(super) struct Header {
    /// The process the handles below were placed in.
    pub target_pid: u32,
    pub bodies: Vec<BodyWire>,
}

/// One message: its payload, channel ends and shared memory regions.
#[derive(Serialize, Deserialize, Debug)]
pub(super) struct BodyWire {
    pub payload: PayloadWire,
    pub channels: Vec<EndWire>,
    pub shared_memory: Vec<SectionWire>,
}

/// Where a message's bytes are.
#[derive(Serialize, Deserialize, Debug)]
pub(super) enum PayloadWire {
    /// After the header, to the end of the pipe message (body 0 only).
    Trailing,
    /// In the header itself (a queued message that travels with its receiver).
    Inline(Vec<u8>),
    /// In a section.
    Section(SectionWire),
}

/// A section handle and the length of the bytes it holds.
#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
pub(super) struct SectionWire {
    pub handle: u64,
    pub len: u64,
}

/// The three handles of a channel end: the pipe end, the channel's lock and its owner cell.
#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
pub(super) struct ChannelWire {
    pub pipe: u64,
    pub lock: u64,
    pub cell: u64,
}

/// A channel end in a message.
#[derive(Serialize, Deserialize, Debug)]
pub(super) enum EndWire {
    Sender(ChannelWire),
    /// A receiver, and the bodies `first .. first + count` that were queued for it.
    Receiver {
        channel: ChannelWire,
        first: u32,
        count: u32,
    },
}

impl Header {
    /// The pipe message: prefix, header, then `trailing`.
    pub fn encode(&self, trailing: &[u8]) -> io::Result<Vec<u8>> {
        let header = postcard::to_stdvec(self).map_err(io::Error::other)?;
        let mut message = Vec::with_capacity(PREFIX + header.len() + trailing.len());
        message.extend_from_slice(&MAGIC);
        message.push(PROTOCOL_VERSION);
        message.extend_from_slice(&(header.len() as u32).to_le_bytes());
        message.extend_from_slice(&header);
        message.extend_from_slice(trailing);
        Ok(message)
    }

    /// Splits a pipe message into its checked header and the offset of its trailing bytes.
    pub fn decode(message: &[u8]) -> io::Result<(Header, usize)> {
        let malformed = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("malformed message: {what}"));
        if let Some(theirs) = other_version(message) {
            return Err(version_mismatch(theirs));
        }
        if message.len() < PREFIX || message[..3] != MAGIC || message[3] != PROTOCOL_VERSION {
            return Err(malformed("no crossproc prefix"));
        }
        let header_len = u32::from_le_bytes(message[4..8].try_into().expect("four bytes")) as usize;
        let header_bytes = message.get(PREFIX..PREFIX + header_len).ok_or_else(|| malformed("header is cut short"))?;
        let header: Header = postcard::from_bytes(header_bytes).map_err(|_| malformed("header does not decode"))?;
        header.check().map_err(malformed)?;
        Ok((header, PREFIX + header_len))
    }

    /// The tree rules: body 0 exists, backlog ranges point forward and claim every other body
    /// exactly once, only body 0 has trailing bytes.
    fn check(&self) -> Result<(), &'static str> {
        let count = self.bodies.len();
        if count == 0 {
            return Err("no message body");
        }
        let mut claimed = vec![false; count];
        claimed[0] = true;
        for (index, body) in self.bodies.iter().enumerate() {
            if index > 0 && matches!(body.payload, PayloadWire::Trailing) {
                return Err("a queued message claims trailing bytes");
            }
            for end in &body.channels {
                if let EndWire::Receiver { first, count: len, .. } = *end {
                    let (first, len) = (first as usize, len as usize);
                    if first <= index || !matches!(first.checked_add(len), Some(end) if end <= count) {
                        return Err("a backlog range points outside the message");
                    }
                    for slot in &mut claimed[first..first + len] {
                        if std::mem::replace(slot, true) {
                            return Err("a queued message is claimed twice");
                        }
                    }
                }
            }
        }
        if claimed.contains(&false) {
            return Err("a queued message belongs to no receiver");
        }
        Ok(())
    }

    /// How many handles the message carries (channel ends count one each), and how many
    /// payload bytes, given `trailing` bytes after the header.
    pub fn totals(&self, trailing: usize) -> (usize, u64) {
        let mut handles = 0;
        let mut bytes = 0u64;
        for body in &self.bodies {
            handles += body.channels.len() + body.shared_memory.len();
            bytes = bytes.saturating_add(match &body.payload {
                PayloadWire::Trailing => trailing as u64,
                PayloadWire::Inline(data) => data.len() as u64,
                PayloadWire::Section(section) => section.len,
            });
        }
        (handles, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(channels: Vec<EndWire>) -> BodyWire {
        BodyWire { payload: PayloadWire::Inline(Vec::new()), channels, shared_memory: Vec::new() }
    }

    fn receiver(first: u32, count: u32) -> EndWire {
        EndWire::Receiver { channel: ChannelWire { pipe: 4, lock: 8, cell: 12 }, first, count }
    }

    #[test]
    fn a_well_formed_tree_round_trips() {
        let header = Header { target_pid: 7, bodies: vec![body(vec![receiver(1, 2)]), body(vec![]), body(vec![])] };
        let message = header.encode(b"tail").unwrap();
        let (decoded, offset) = Header::decode(&message).unwrap();
        assert_eq!(decoded.target_pid, 7);
        assert_eq!(&message[offset..], b"tail");
    }

    #[test]
    fn an_indirect_message_names_its_section_and_nothing_else() {
        let section = SectionWire { handle: 0x44, len: 1 << 20 };
        let message = encode_indirect(9, section);
        let (target_pid, decoded) = decode_indirect(&message).unwrap().expect("indirect");
        assert_eq!((target_pid, decoded.handle, decoded.len), (9, 0x44, 1 << 20));
        assert!(decode_indirect(&Header::default().encode(b"x").unwrap()).unwrap().is_none());
        assert_eq!(decode_indirect(&message[..message.len() - 1]).unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn backward_shared_and_orphan_ranges_are_refused() {
        for bodies in [
            vec![body(vec![receiver(0, 1)])],
            vec![body(vec![receiver(1, 1), receiver(1, 1)]), body(vec![])],
            vec![body(vec![]), body(vec![])],
            vec![body(vec![receiver(1, u32::MAX)]), body(vec![])],
        ] {
            let message = Header { target_pid: 1, bodies }.encode(&[]).unwrap();
            assert_eq!(Header::decode(&message).unwrap_err().kind(), io::ErrorKind::InvalidData);
        }
    }
}
