//! One named server, many client processes, each admitted by a policy on its kernel-reported
//! credentials and given a channel of its own.
//!
//! Run: `cargo run --example server`

use std::process::Command;

use crossproc::ipc::{AccessPolicy, IpcSender, IpcServer, PeerCredentials};

const CLIENTS: usize = 3;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, role, name] = &args[..] {
        if role == "client" {
            // A client: connect by name, send a greeting with a channel for the answer.
            let (reply_tx, reply_rx) = crossproc::ipc::channel::<String>().unwrap();
            let server = IpcSender::<(String, IpcSender<String>)>::connect(name.clone()).unwrap();
            server.send((format!("hello from {}", std::process::id()), reply_tx)).unwrap();
            println!("client {} got {:?}", std::process::id(), reply_rx.recv().unwrap());
            return;
        }
    }
    // The server admits processes of this user only, and only children of this process.
    let me = PeerCredentials::of_this_process();
    let policy = AccessPolicy::custom(move |peer| peer.uid == me.uid && peer.pid != me.pid);
    let (server, name) = IpcServer::<(String, IpcSender<String>)>::new_with_policy(policy).unwrap();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| Command::new(std::env::current_exe().unwrap()).args(["client", &name]).spawn().unwrap())
        .collect();
    for _ in 0..CLIENTS {
        let (_channel, (greeting, reply), who) = server.accept().unwrap();
        println!("server: {greeting:?} from pid {} (uid {})", who.pid, who.uid);
        reply.send(format!("welcome, {}", who.pid)).unwrap();
    }
    for mut client in clients {
        assert!(client.wait().unwrap().success());
    }
}
