//! Temporary: the pass-sender pattern between two processes, for profiling.
use crossproc::ipc::{self, IpcOneShotServer, IpcReceiver, IpcSender};
fn main() {
    if let Ok(name) = std::env::var("DBG_CHILD") {
        let (tx, rx) = ipc::channel::<IpcSender<Vec<u8>>>().unwrap();
        IpcSender::<IpcSender<IpcSender<Vec<u8>>>>::connect(name).unwrap().send(tx).unwrap();
        let rx: IpcReceiver<IpcSender<Vec<u8>>> = rx;
        while let Ok(sender) = rx.recv() {
            sender.send(vec![1; 8]).unwrap();
        }
        return;
    }
    let (server, name) = IpcOneShotServer::<IpcSender<IpcSender<Vec<u8>>>>::new().unwrap();
    let mut child =
        std::process::Command::new(std::env::current_exe().unwrap()).env("DBG_CHILD", name).spawn().unwrap();
    let (_, senders) = server.accept().unwrap();
    let n = 20000;
    let t = std::time::Instant::now();
    for _ in 0..n {
        let (tx, rx) = ipc::channel::<Vec<u8>>().unwrap();
        senders.send(tx).unwrap();
        assert_eq!(rx.recv().unwrap().len(), 8);
    }
    eprintln!("per iteration: {:?}", t.elapsed() / n);
    drop(senders);
    child.wait().unwrap();
}
