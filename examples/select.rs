//! `IpcReceiverSet`: one thread waits on many channels, here one per child process, and sees
//! each close when its child exits.
//!
//! Run: `cargo run --example select`

use std::collections::HashMap;
use std::process::Command;

use crossproc::ipc::{inherited_sender, IpcCommandExt, IpcReceiverSet, IpcSelectionResult};

const CHILDREN: u32 = 3;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, role, count] = &args[..] {
        if role == "child" {
            let to_parent = inherited_sender::<String>().unwrap();
            for i in 0..count.parse::<u32>().unwrap() {
                to_parent.send(format!("message {i} from {}", std::process::id())).unwrap();
            }
            return; // the channel closes with the process
        }
    }
    let mut set = IpcReceiverSet::new().unwrap();
    let mut children = HashMap::new();
    for n in 1..=CHILDREN {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command.args(["child", &n.to_string()]);
        let (child, receiver) = command.spawn_with_receiver::<String>().unwrap();
        children.insert(set.add(receiver).unwrap(), child);
    }
    while !children.is_empty() {
        for event in set.select().unwrap() {
            match event {
                IpcSelectionResult::MessageReceived(id, message) => {
                    println!("channel {id}: {}", message.to::<String>().unwrap())
                }
                IpcSelectionResult::ChannelClosed(id) => {
                    let mut child = children.remove(&id).unwrap();
                    println!("channel {id} closed: its child exited with {}", child.wait().unwrap());
                }
            }
        }
    }
}
