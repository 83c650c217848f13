//! Review of 7fd193e (side-socket descriptors taken in while the message's packet stays queued):
//! a receiver shared by two `fork` copies that read at the same time. docs/behaviour.md says each
//! message still reaches one of them, once (only at the descriptor limit may one be lost).
//! Each copy now peeks at the message's packet and reads the side socket *before* the packet is
//! taken, so both copies take side packets from the same side socket, and one message's
//! descriptors are split between them: the message is refused ("side socket ended early" /
//! "an unreadable side socket") though neither process is anywhere near its limit.

#![cfg(all(target_os = "linux", not(feature = "force-inprocess")))]

mod util;

use std::time::Duration;

use crossproc::ipc::{self, IpcError, IpcSharedMemory, TryRecvError};
use util::fork::fork_child;
use util::with_watchdog;

/// Descriptors in each message: three side packets (253 + 253 + 94).
const DESCRIPTORS: usize = 600;
/// Messages sent per batch (then the parent waits for their outcomes: the per-user count of
/// descriptors in flight stays low).
const BATCH: u32 = 4;
const BATCHES: u32 = 25;

#[test]
fn two_fork_copies_reading_at_once_lose_no_side_socket_message() {
    with_watchdog(Duration::from_secs(240), || {
        let (tx, rx) = ipc::os_channel::<(u32, Vec<IpcSharedMemory>)>().unwrap();
        let (report_tx, report_rx) = ipc::os_channel::<Result<u32, String>>().unwrap();
        let mut children = Vec::new();
        for _ in 0..2 {
            let (rx, report_tx) = (&rx, &report_tx);
            children.push(fork_child(move || loop {
                match rx.try_recv_timeout(Duration::from_secs(5)) {
                    Ok((seq, regions)) if regions.len() == DESCRIPTORS => report_tx.send(Ok(seq)).unwrap(),
                    Ok((seq, regions)) => report_tx.send(Err(format!("{seq}: {} regions", regions.len()))).unwrap(),
                    Err(TryRecvError::Empty) | Err(TryRecvError::IpcError(IpcError::Disconnected)) => break,
                    Err(TryRecvError::IpcError(error)) => report_tx.send(Err(format!("{error:?}"))).unwrap(),
                }
            }));
        }
        drop(rx);
        let region = IpcSharedMemory::from_bytes(b"side");
        let (mut delivered, mut failures) = (Vec::new(), Vec::new());
        'batches: for batch in 0..BATCHES {
            for seq in batch * BATCH..(batch + 1) * BATCH {
                tx.send((seq, vec![region.clone(); DESCRIPTORS])).unwrap();
            }
            for _ in 0..BATCH {
                match report_rx.try_recv_timeout(Duration::from_secs(10)) {
                    Ok(Ok(seq)) => delivered.push(seq),
                    Ok(Err(error)) => failures.push(error),
                    Err(error) => {
                        failures.push(format!("no outcome within 10 s: {error:?}"));
                        break 'batches;
                    }
                }
            }
        }
        for pid in children {
            let mut status = 0;
            // SAFETY: waits for a child of this process.
            unsafe { libc::waitpid(pid, &mut status, 0) };
        }
        assert!(
            failures.is_empty(),
            "{} of {} messages delivered; {} refused, first: {:?}",
            delivered.len(),
            BATCH * BATCHES,
            failures.len(),
            failures.first()
        );
    });
}
