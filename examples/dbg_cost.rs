use std::time::Instant;
fn main() {
    let n = 2000;
    let t = Instant::now();
    for _ in 0..n {
        let (tx, rx) = crossproc::ipc::channel::<u8>().unwrap();
        drop((tx, rx));
    }
    eprintln!("channel+drop: {:?}", t.elapsed() / n);
    let t = Instant::now();
    for _ in 0..n {
        let (tx, rx) = crossproc::ipc::channel::<u8>().unwrap();
        tx.send(1).unwrap();
        rx.recv().unwrap();
    }
    eprintln!("channel+send+recv: {:?}", t.elapsed() / n);
    let (stx, srx) = crossproc::ipc::channel::<crossproc::ipc::IpcSender<u8>>().unwrap();
    let t = Instant::now();
    for _ in 0..n {
        let (tx, rx) = crossproc::ipc::channel::<u8>().unwrap();
        stx.send(tx).unwrap();
        let tx = srx.recv().unwrap();
        tx.send(1).unwrap();
        rx.recv().unwrap();
    }
    eprintln!("channel+pass+send+recv: {:?}", t.elapsed() / n);
}
