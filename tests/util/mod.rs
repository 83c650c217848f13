//! Helpers shared by the integration tests: real child processes, descriptor counting, and a
//! watchdog that turns a hang into a failure.

#![allow(dead_code)]

pub mod bytes;
#[cfg(target_os = "linux")]
pub mod descriptors;
#[cfg(target_os = "linux")]
pub mod fork;

use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// The environment variable that tells a re-run test executable which child role to play.
pub const ROLE_VAR: &str = "CROSSPROC_TEST_CHILD_ROLE";
/// The environment variable that carries a one-shot server name to the child.
pub const SERVER_VAR: &str = "CROSSPROC_TEST_SERVER";

/// Starts this test executable again as a child process that runs only the test named
/// `entry_test` (which dispatches on [`ROLE_VAR`]), with a one-shot server name to connect to.
pub fn spawn_child(entry_test: &str, role: &str, server_name: &str) -> Child {
    child_command(entry_test, role).env(SERVER_VAR, server_name).spawn().expect("spawn child test process")
}

/// The command that re-runs this test executable as a child playing `role`.
pub fn child_command(entry_test: &str, role: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("current test executable"));
    command
        .args([entry_test, "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(ROLE_VAR, role)
        .stdout(Stdio::null());
    command
}

/// The role this process plays, when it was started by [`spawn_child`].
pub fn child_role() -> Option<String> {
    std::env::var(ROLE_VAR).ok()
}

/// The one-shot server name handed to this child.
pub fn server_name() -> String {
    std::env::var(SERVER_VAR).expect("child started without a server name")
}

/// Waits for `child` and asserts that it exited successfully.
pub fn assert_child_succeeds(mut child: Child) {
    let status = child.wait().expect("wait for child");
    assert!(status.success(), "child failed: {status}");
}

/// Runs this test executable as a child playing `role` and asserts that it succeeds, within
/// two minutes.
pub fn child_in_role_succeeds(entry_test: &str, role: &str) {
    let (entry_test, role) = (entry_test.to_owned(), role.to_owned());
    with_watchdog(Duration::from_secs(120), move || {
        assert_child_succeeds(child_command(&entry_test, &role).spawn().expect("spawn child test process"));
    });
}

/// How many descriptors this process has open.
#[cfg(target_os = "linux")]
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("read /proc/self/fd").count()
}

/// How many handles this process has open: every value up to 0x10000 that names a handle
/// (`GetProcessHandleCount` is not kept by Wine, so the table is probed instead).
#[cfg(windows)]
pub fn open_fds() -> usize {
    (1..=0x4000usize)
        .filter(|slot| {
            let mut flags = 0;
            // SAFETY: only asks whether the value names an open handle; nothing is touched.
            unsafe { windows_sys::Win32::Foundation::GetHandleInformation((slot * 4) as _, &mut flags) != 0 }
        })
        .count()
}

/// Runs `body` on another thread and fails the test if it takes longer than `limit`.
pub fn with_watchdog<T: Send + 'static>(limit: Duration, body: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, finished) = mpsc::channel();
    let worker = thread::spawn(move || {
        let value = body();
        let _ = done.send(());
        value
    });
    match finished.recv_timeout(limit) {
        Ok(()) => worker.join().expect("test body panicked"),
        Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("test hung for more than {limit:?}"),
    }
}

/// The kernel's id of the calling thread.
#[cfg(target_os = "linux")]
pub fn thread_id() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// Waits until thread `tid` of this process sleeps in the kernel (state `S` in
/// `/proc/self/task/<tid>/stat`): how a test sees that a send is blocked, waiting for room.
/// Fails, naming `what`, if that does not happen within 30 s.
#[cfg(target_os = "linux")]
pub fn wait_until_asleep(tid: i32, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).expect("read the thread's stat");
        // The state follows the command name, which is in parentheses and may hold spaces.
        let state = stat.rsplit(')').next().and_then(|rest| rest.trim_start().chars().next());
        if state == Some('S') {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: thread {tid} never blocked (state {state:?})");
        thread::yield_now();
    }
}

/// Waits until `child` (started with a piped stdout) prints the line `marker`: how a child says
/// it has reached a state the parent must not act before. Fails if the child ends first.
pub fn wait_for_line(child: &mut Child, marker: &str) {
    let stdout = std::io::BufReader::new(child.stdout.take().expect("the child's stdout is piped"));
    let said = std::io::BufRead::lines(stdout).map_while(Result::ok).any(|line| line == marker);
    assert!(said, "the child ended before it printed {marker:?}");
}

/// An OS channel whose ring is made and awake: `warm(n)` for n in 0..40 sent and read back, in
/// order (a ring is made after a few messages, and the receiver that polls keeps it awake).
pub fn os_channel_with_awake_ring<T>(
    warm: impl Fn(u32) -> T,
) -> (crossproc::ipc::IpcSender<T>, crossproc::ipc::IpcReceiver<T>)
where
    T: serde::Serialize + for<'de> serde::Deserialize<'de> + PartialEq + std::fmt::Debug,
{
    let (tx, rx) = crossproc::ipc::os_channel::<T>().unwrap();
    for n in 0..40 {
        tx.send(warm(n)).unwrap();
        assert_eq!(rx.recv().unwrap(), warm(n));
    }
    (tx, rx)
}
