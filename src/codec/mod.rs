//! The codec: how a value becomes bytes plus channels, and back.
//!
//! **Encoding.** [`handles::encode`] installs an empty outgoing table and runs the value's
//! `Serialize` through [`encoder`] (postcard's wire format, byte sequences copied in bulk) into
//! the channel's payload writer. Every sender, receiver and shared-memory region met on the way
//! goes into the table (a sender as a clone, a receiver moved — with a slot to come back to if
//! the send fails — a region as a reference) and is written as its index there. The message is
//! the bytes plus the table's channel ends and regions, which the OS layer sends alongside.
//!
//! **Decoding.** [`handles::decode`] installs the received ends and regions as an incoming
//! table and runs `Deserialize` on the bytes through [`depth`] (which bounds nesting, so a
//! hostile value cannot overflow the stack) and [`byte_seq`] (byte sequences copied in bulk).
//! Each index claims its entry once; whatever no index claimed is closed when decoding ends.

pub(crate) mod byte_seq;
pub(crate) mod depth;
pub(crate) mod encoder;
pub(crate) mod handles;
