//! A large payload through `IpcSharedMemory`: the child maps the same pages, nothing is copied.
//!
//! Run: `cargo run --release --example shared_memory`

use std::process::Command;
use std::time::Instant;

use crossproc::ipc::{self, inherited_receiver, IpcCommandExt, IpcSender, IpcSharedMemory};

const SIZE: usize = 64 << 20;

fn main() {
    if std::env::args().nth(1).as_deref() == Some("child") {
        let from_parent = inherited_receiver::<(IpcSharedMemory, IpcSender<u64>)>().unwrap();
        let (region, reply) = from_parent.recv().unwrap();
        reply.send(region.iter().map(|&byte| u64::from(byte)).sum()).unwrap();
        return;
    }
    let region = IpcSharedMemory::from_byte(3, SIZE);
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.arg("child");
    let (mut child, to_child) = command.spawn_with_channel::<(IpcSharedMemory, IpcSender<u64>)>().unwrap();
    let (reply_tx, reply_rx) = ipc::channel::<u64>().unwrap();
    let start = Instant::now();
    to_child.send((region, reply_tx)).unwrap();
    let sum = reply_rx.recv().unwrap();
    println!("the child summed {} MiB in {:?} (sent by reference)", SIZE >> 20, start.elapsed());
    assert_eq!(sum, 3 * SIZE as u64);
    assert!(child.wait().unwrap().success());
}
