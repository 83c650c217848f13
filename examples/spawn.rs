//! A child process started with a channel already connected: no name, nothing to race for.
//!
//! Run: `cargo run --example spawn`

use std::process::Command;

use crossproc::ipc::{self, inherited_receiver, IpcCommandExt, IpcSender};

fn main() {
    if std::env::args().nth(1).as_deref() == Some("child") {
        // The child: its end of the channel was inherited; the parent sends where to answer.
        let from_parent = inherited_receiver::<(String, IpcSender<String>)>().expect("started with a channel");
        while let Ok((question, reply)) = from_parent.recv() {
            reply.send(question.to_uppercase()).unwrap();
        }
        return;
    }
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.arg("child");
    let (mut child, to_child) = command.spawn_with_channel::<(String, IpcSender<String>)>().unwrap();
    let (reply_tx, reply_rx) = ipc::channel::<String>().unwrap();
    for question in ["hello", "from", "your parent"] {
        to_child.send((question.to_string(), reply_tx.clone())).unwrap();
        println!("parent asked {question:?}, child answered {:?}", reply_rx.recv().unwrap());
    }
    drop(to_child); // the child's receive now ends, and so does the child
    assert!(child.wait().unwrap().success());
}
