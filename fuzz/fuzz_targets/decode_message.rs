//! The message decoder: any payload decodes into a rich message type or fails cleanly, and never
//! conjures a channel or region the message does not carry.
#![no_main]

use std::collections::BTreeMap;

use crossproc::ipc::{IpcMessage, IpcReceiver, IpcSender, IpcSharedMemory};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
enum Message {
    Text(String),
    Numbers(Vec<i64>, Option<u128>, f64),
    Map(BTreeMap<String, Vec<u8>>),
    Channel(IpcSender<Message>),
    Receiver(IpcReceiver<u8>),
    Region(IpcSharedMemory),
    Nested(Vec<Message>),
    Boxed(Box<Message>, (u8, char, bool)),
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = IpcMessage::from_data(data.to_vec()).to::<Message>();
});
