//! The wire format: every packet on a channel starts with a 32-byte header.
//!
//! ```text
//! offset  size  field
//!      0     4  magic "CXP" and the protocol version, one ASCII digit ("CXP2")
//!      4     4  flags: bit 0 = reserved (never set),
//!                      bit 1 = handles travel on a side socket (the next descriptor),
//!                      bit 2 = payload is in a pooled memfd at offset 4096 (the first
//!                              descriptor; see `pool.rs`)
//!      8     4  number of channel ends carried
//!     12     4  number of shared-memory regions carried
//!     16     8  payload length in bytes
//!     24     8  ticket: nonzero when a marker with the same ticket follows in the ring (a
//!               Linux backend's; see `ring/mod.rs`), else 0
//!     32     …  one byte per channel end carried: 1 when the end is a receiver that brings its
//!               ring's control memfd (the descriptor after the end's own), else 0
//!      …     …  the payload itself; when bit 2 is set, zeros instead (the buffer claim)
//! ```
//!
//! A payload in a pooled memfd would cost the channel's kernel send buffer only its header, so
//! a sender could pile up large payloads without bound while the receiver falls behind. Its
//! header packet therefore carries [`buffer_claim`] bytes of zeros: 64 KiB for a payload that
//! needed fresh pages (a new memfd, or one that grew), and only 1 KiB per MiB for one written
//! into pages its sender's pool already holds (which that pool bounds: `pool.rs`). The kernel's
//! own backpressure (`send` blocks, `try_send` reports full, async senders await writability)
//! then bounds the fresh memory in flight too: about four payloads beyond the pool's with the
//! default buffer (about 208 KiB), at least two of any size. A stream of large messages thus
//! settles on reusing the pool's memfds instead of making new ones. A send buffer set smaller
//! than a claim gets half of it, and so on until it fits (at last the header alone). The claim is
//! released when the receiver takes the packet; the receiver ignores those bytes.
//!
//! Descriptors arrive with the packet (`SCM_RIGHTS`) in this order: the payload memfd (bit 2),
//! the side socket (bit 1), then the channel ends (each followed by its control memfd when its byte says so), then the
//! shared-memory regions. When bit 1 is
//! set, the channel ends and regions come instead as packets on the side socket, at most
//! [`MAX_FDS_PER_PACKET`] per packet, each with a one-byte body; the sender writes them all and
//! closes its end before it sends the header packet, so the receiver never waits for them.

use std::io;

use super::sys::invalid_data;

/// Bytes in a packet before the payload.
pub(super) const HEADER_LEN: usize = 32;
/// Largest payload carried inside the packet; larger payloads travel in a pooled memfd. A
/// packet must fit the socket's send buffer (Linux's default `wmem_default` is 212,992 bytes,
/// less 32); a sender whose buffer is smaller falls back to a memfd (`EMSGSIZE`).
pub(crate) const INLINE_MAX: usize = 200 * 1024;
/// The most buffer one payload claims, whatever its size: a claim must leave room in the
/// default buffer (212,992 bytes) for more than one payload in flight.
pub(super) const MAX_BUFFER_CLAIM: usize = 64 * 1024;

/// How many bytes of the channel's send buffer a payload of `len` bytes in a pooled memfd
/// claims with its header packet: [`MAX_BUFFER_CLAIM`] if it needed `fresh` pages, else (in
/// pages its sender's pool holds anyway) 1 KiB per MiB, at most that.
pub(super) fn buffer_claim(len: usize, fresh: bool) -> usize {
    if fresh {
        MAX_BUFFER_CLAIM
    } else {
        (len >> 10).min(MAX_BUFFER_CLAIM)
    }
}

/// Descriptors sent per packet (the kernel accepts at most 253, `SCM_MAX_FD`).
pub(super) const MAX_FDS_PER_PACKET: usize = 250;
/// Channels and regions that travel in the message's own packet; a message with more sends
/// them on a side socket (room is left for the payload memfd and the side socket itself).
pub(super) const MAX_HANDLES_IN_PACKET: usize = MAX_FDS_PER_PACKET - 2;
/// Descriptors accepted per packet: the kernel's own limit, so a peer cannot truncate us.
pub(super) const MAX_FDS_RECEIVED: usize = 253;

/// What starts every packet: "CXP" and then [`PROTOCOL_VERSION`].
const MAGIC: [u8; 3] = *b"CXP";
/// The version of this wire format (and of the server verdicts). Two builds of crossproc that
/// speak different versions refuse each other's first packet with an error that names both
/// versions — never a misparse. Bump it with any change to what travels between processes.
pub(super) const PROTOCOL_VERSION: u8 = b'3';
/// Flag: the handles travel on a side socket, the next descriptor.
pub(super) const HANDLES_ON_SIDE_SOCKET: u32 = 2;
/// Flag: the payload is in a pooled memfd, the first descriptor; the receiver copies it out and
/// marks the memfd free for reuse.
pub(super) const PAYLOAD_IN_POOLED_MEMFD: u32 = 4;
/// Flag: no message, only a place in the order for the marker with the packet's ticket (a
/// sender that sent a plain packet just before it found the channel's ring: see `ring/mod.rs`).
pub(super) const PLACE_HOLDER: u32 = 8;
const KNOWN_FLAGS: u32 = HANDLES_ON_SIDE_SOCKET | PAYLOAD_IN_POOLED_MEMFD | PLACE_HOLDER;

/// The decoded header of one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FrameHeader {
    pub flags: u32,
    pub channels: u32,
    pub shared_memory: u32,
    pub payload_len: u64,
    pub ticket: u64,
}

impl FrameHeader {
    /// The header's bytes, as they go on the wire.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut bytes = [0u8; HEADER_LEN];
        bytes[0..3].copy_from_slice(&MAGIC);
        bytes[3] = PROTOCOL_VERSION;
        bytes[4..8].copy_from_slice(&self.flags.to_le_bytes());
        bytes[8..12].copy_from_slice(&self.channels.to_le_bytes());
        bytes[12..16].copy_from_slice(&self.shared_memory.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.payload_len.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.ticket.to_le_bytes());
        bytes
    }

    /// Reads the header at the start of `packet`, refusing anything this version did not write.
    pub fn decode(packet: &[u8]) -> io::Result<FrameHeader> {
        let field = |at: usize| -> [u8; 4] { [packet[at], packet[at + 1], packet[at + 2], packet[at + 3]] };
        if packet.len() < HEADER_LEN {
            return Err(invalid_data("packet shorter than its header"));
        }
        if let Some(theirs) = other_version(packet) {
            return Err(version_mismatch(theirs));
        }
        if packet[0..4] != [MAGIC[0], MAGIC[1], MAGIC[2], PROTOCOL_VERSION] {
            return Err(invalid_data("bad magic number"));
        }
        let flags = u32::from_le_bytes(field(4));
        if flags & !KNOWN_FLAGS != 0 {
            return Err(invalid_data("unknown header flags"));
        }
        let long = |at: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&packet[at..at + 8]);
            u64::from_le_bytes(bytes)
        };
        Ok(FrameHeader {
            flags,
            channels: u32::from_le_bytes(field(8)),
            shared_memory: u32::from_le_bytes(field(12)),
            payload_len: long(16),
            ticket: long(24),
        })
    }

    /// Whether `flag` is set.
    pub fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }
}

/// The version a packet (or verdict) from another crossproc build speaks, if it is not ours.
pub(super) fn other_version(bytes: &[u8]) -> Option<u8> {
    crate::sys::other_version(bytes, MAGIC, PROTOCOL_VERSION)
}

/// The error for a peer whose crossproc build speaks protocol version `theirs`.
pub(super) fn version_mismatch(theirs: u8) -> io::Error {
    crate::sys::version_mismatch(theirs, PROTOCOL_VERSION)
}

/// The packet a receiver leaves queued in its senders' direction of the socket pair, carrying
/// the ring's control memfd; each sending process takes a copy with `MSG_PEEK`.
pub(super) const CONTROL_PACKET: [u8; 8] = [MAGIC[0], MAGIC[1], MAGIC[2], PROTOCOL_VERSION, b'R', b'N', b'G', 0];
/// The packet a receiver leaves queued in its senders' direction instead, when the channel never
/// gets a ring (rings turned off in its process): senders that see it stop looking.
pub(super) const NO_RING_PACKET: [u8; 8] = [MAGIC[0], MAGIC[1], MAGIC[2], PROTOCOL_VERSION, b'N', b'O', b'R', 0];
/// The packet a server's acceptor sends a new client that it admitted.
pub(super) const VERDICT_ADMITTED: [u8; 8] = [MAGIC[0], MAGIC[1], MAGIC[2], PROTOCOL_VERSION, b'-', b'O', b'K', 0];
/// The packet a server's acceptor sends a client that its access policy refused.
pub(super) const VERDICT_REFUSED: [u8; 8] = [MAGIC[0], MAGIC[1], MAGIC[2], PROTOCOL_VERSION, b'-', b'N', b'O', 0];
/// How long `connect` waits for a server's verdict.
pub(super) const VERDICT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let header = FrameHeader { flags: 6, channels: 7, shared_memory: 2, payload_len: 1 << 40, ticket: 9 };
        assert_eq!(FrameHeader::decode(&header.encode()).unwrap(), header);
    }

    #[test]
    fn short_packet_is_refused() {
        let error = FrameHeader::decode(&[0u8; HEADER_LEN - 1]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn garbage_is_refused() {
        assert!(FrameHeader::decode(&[0xAB; HEADER_LEN]).is_err());
        let mut unknown_flag =
            FrameHeader { flags: 0, channels: 0, shared_memory: 0, payload_len: 0, ticket: 0 }.encode();
        unknown_flag[4] = 0x80;
        assert!(FrameHeader::decode(&unknown_flag).is_err());
    }
}
