//! Children made by `fork` (Linux tests only): they run a closure and leave with `_exit`, so
//! that nothing of the test harness runs in them.

/// Forks a child that runs `child` and leaves with `_exit`: status 0, or 1 if it panicked.
/// Returns the child's pid.
pub fn fork_child(child: impl FnOnce()) -> libc::pid_t {
    // SAFETY: fork has no preconditions; the child runs only `child` and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).is_ok();
        // SAFETY: _exit has no preconditions.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    pid
}

/// Waits for the child `pid` and asserts that it succeeded.
pub fn assert_exits_successfully(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waits for a child of this process.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child failed: status {status}");
}
