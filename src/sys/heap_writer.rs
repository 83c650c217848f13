//! The payload writer of the backends that keep an outgoing message on the heap until it is
//! sent: the in-process backend, and Windows (which copies a large message into a section as it
//! sends it).

use std::io;

/// Encoded bytes on their way out.
pub(crate) struct PayloadWriter(Vec<u8>);

/// What a [`PayloadWriter`] produced.
pub(crate) struct Encoded(Vec<u8>);

impl PayloadWriter {
    /// A writer that reuses `buffer`'s allocation.
    pub fn new(mut buffer: Vec<u8>) -> Self {
        buffer.clear();
        PayloadWriter(buffer)
    }

    #[inline]
    pub fn push(&mut self, byte: u8) {
        self.0.push(byte);
    }

    #[inline]
    pub fn extend(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }

    /// The encoded message.
    pub fn finish(self) -> io::Result<Encoded> {
        Ok(Encoded(self.0))
    }
}

impl Encoded {
    /// The encoded bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The buffer, for the next message.
    pub fn into_buffer(self) -> Vec<u8> {
        self.0
    }
}
