//! The exit hook (`src/sys/linux/at_exit.rs`) and a send in progress (review 3, finding F1).
//! Before, the hook gave a slot back whenever it could take the sender's state lock, but a send
//! that took a ticket (`Route::Ticket`: a message the ring cannot
//! carry, or any message while the receiver sleeps) does not hold that lock while its packet goes
//! on the socket (`OsIpcSender::send_message`, between `route` and `settle`). The hook then drops
//! the writer (state `Unaware`), `settle` finds no writer and publishes no marker, and the send
//! returns `Ok`: the packet has a ticket but no marker, and a message sent after it through the
//! ring by another process (told after the send returned) is delivered first.
//!
//! The child's worker thread blocks in exactly that window (the socket's buffer is full); the
//! child's main thread calls `exit`; a `.fini_array` entry of this test, which runs after
//! crossproc's (prioritised entries are placed before the plain ones, and the array runs
//! backwards), tells the parent, which reads a little so that the blocked send completes.

#![cfg(all(target_os = "linux", not(feature = "force-inprocess")))]

mod util;

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crossproc::ipc::{self, inherited_receiver, IpcCommandExt, IpcSender, TryRecvError};
use serde::{Deserialize, Serialize};
use util::{child_command, child_role, thread_id, wait_until_asleep, with_watchdog};

const ENTRY: &str = "child_entry";
const HOOK_RAN: u32 = u32::MAX;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
enum Msg {
    Warm(u32),
    Small(u32),
    /// Larger than the ring's 8 KiB: always a ticket and a marker once the ring is known.
    Big(u32, Vec<u8>),
    /// Sent by the parent through the ring once the child said `Big(n)` was sent.
    After(u32),
}

#[derive(Serialize, Deserialize)]
struct Setup {
    tx: IpcSender<Msg>,
    told: IpcSender<u32>,
}

static ARMED: AtomicBool = AtomicBool::new(false);
static TOLD: OnceLock<IpcSender<u32>> = OnceLock::new();
/// Big messages the worker sent (and told the parent of).
static SENT: AtomicU32 = AtomicU32::new(0);
/// Set once crossproc's exit hook ran (by the entry that runs after it).
static HOOK_DONE: AtomicBool = AtomicBool::new(false);

/// Runs after crossproc's `.fini_array` entry: tells the parent the hook ran, then waits until
/// the worker's blocked send completed (the parent reads to make room) and it told the parent.
extern "C" fn after_crossproc_hook() {
    if !ARMED.load(Ordering::Acquire) {
        return;
    }
    let at = SENT.load(Ordering::Acquire);
    // The exiting thread's thread-locals are gone by now: another thread tells the parent.
    HOOK_DONE.store(true, Ordering::Release);
    let deadline = Instant::now() + Duration::from_secs(10);
    while SENT.load(Ordering::Acquire) <= at + 1 && Instant::now() < deadline {
        std::thread::yield_now();
    }
}

#[used]
#[link_section = ".fini_array.00100"]
static AFTER_CROSSPROC_HOOK: extern "C" fn() = after_crossproc_hook;

#[test]
fn child_entry() {
    let Some(role) = child_role() else { return };
    assert!(role == "exit" || role == "control", "{role}");
    let setup = inherited_receiver::<Setup>().unwrap();
    let Setup { tx, told } = setup.recv().unwrap();
    // Takes the socket, finds the ring and takes a slot (a place holder and its marker).
    tx.send(Msg::Small(0)).unwrap();
    TOLD.set(told.clone()).ok().unwrap();
    static WORKER: AtomicI32 = AtomicI32::new(0);
    std::thread::spawn(move || {
        WORKER.store(thread_id(), Ordering::Release);
        for n in 0.. {
            tx.send(Msg::Big(n, vec![n as u8; 9000])).unwrap();
            told.send(n).unwrap();
            SENT.store(n + 1, Ordering::Release);
        }
    });
    std::thread::spawn(|| {
        while !HOOK_DONE.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        TOLD.get().unwrap().send(HOOK_RAN).unwrap();
    });
    while WORKER.load(Ordering::Acquire) == 0 {
        std::thread::yield_now();
    }
    // The parent reads nothing yet: the worker fills the socket's buffer and blocks in a send,
    // between taking its ticket and publishing its marker.
    loop {
        wait_until_asleep(WORKER.load(Ordering::Acquire), "the worker's send");
        let sent = SENT.load(Ordering::Acquire);
        wait_until_asleep(WORKER.load(Ordering::Acquire), "the worker's send");
        if sent >= 4 && SENT.load(Ordering::Acquire) == sent {
            break;
        }
    }
    ARMED.store(true, Ordering::Release);
    if role == "control" {
        // The same steps without `exit` (so without crossproc's hook), then `_exit`.
        after_crossproc_hook();
        // SAFETY: _exit has no preconditions.
        unsafe { libc::_exit(0) };
    }
    std::process::exit(0);
}

#[test]
fn a_send_in_progress_at_exit_keeps_its_place_before_a_later_ring_message() {
    run("exit");
}

/// The same, with the child ending by `_exit` where the other calls `exit`: passes.
#[test]
fn control_the_same_without_the_exit_hook() {
    run("control");
}

fn run(role: &'static str) {
    if child_role().is_some() {
        return;
    }
    with_watchdog(Duration::from_secs(120), move || {
        let (tx, rx) = util::os_channel_with_awake_ring(Msg::Warm);
        let (mut child, to_child) = child_command(ENTRY, role).spawn_with_channel::<Setup>().unwrap();
        let (told, tell) = ipc::os_channel::<u32>().unwrap();
        to_child.send(Setup { tx: tx.clone(), told }).unwrap();
        // Until the hook ran: relay what the child tells, but read nothing of `rx`.
        loop {
            let n = tell.recv().unwrap();
            if n == HOOK_RAN {
                break;
            }
            tx.send(Msg::After(n)).unwrap();
        }
        // Now read slowly (one message per millisecond at most), relaying as told.
        let mut order = Vec::new();
        let mut child_gone = false;
        loop {
            match rx.try_recv_timeout(Duration::from_millis(1)) {
                Ok(message) => order.push(message),
                Err(TryRecvError::Empty) if child_gone => break,
                Err(TryRecvError::Empty) => {}
                Err(error) => panic!("receive: {error:?}"),
            }
            match tell.try_recv_timeout(Duration::from_millis(1)) {
                Ok(n) => tx.send(Msg::After(n)).unwrap(),
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::IpcError(ipc::IpcError::Disconnected)) => {
                    child_gone = true;
                }
                Err(error) => panic!("tell: {error:?}"),
            }
        }
        let status = child.wait().unwrap();
        assert!(status.success(), "the child failed: {status}");
        let position = |wanted: &dyn Fn(&Msg) -> bool| order.iter().position(wanted);
        let mut checked = 0;
        for message in &order {
            if let Msg::After(n) = message {
                let after = position(&|m| m == &Msg::After(*n)).unwrap();
                match position(&|m| matches!(m, Msg::Big(k, _) if k == n)) {
                    Some(big) => assert!(
                        big < after,
                        "After({n}) (sent through the ring once Big({n})'s send returned) came first: {:?}",
                        order.iter().map(short).collect::<Vec<_>>()
                    ),
                    None => panic!("Big({n}) was told of but never came"),
                }
                checked += 1;
            }
        }
        assert!(checked > 0, "nothing was checked");
    });
}

fn short(message: &Msg) -> String {
    match message {
        Msg::Big(n, _) => format!("Big({n})"),
        other => format!("{other:?}"),
    }
}
