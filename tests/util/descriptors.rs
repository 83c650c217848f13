//! Filling this process's descriptor table (Linux tests of what happens at the limit).

use std::os::fd::OwnedFd;

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Lowers this process's soft limit of descriptors to `limit`.
pub fn lower_the_limit(limit: u64) {
    let current = getrlimit(Resource::Nofile);
    setrlimit(Resource::Nofile, Rlimit { current: Some(limit), maximum: current.maximum }).unwrap();
}

/// Fills the descriptor table with copies kept in `held` (of a descriptor it opens for the
/// purpose and closes after), so that exactly one slot is left free: the one it opened.
pub fn fill_leaving_one(held: &mut Vec<OwnedFd>) {
    let template = std::fs::File::open("/proc/self/stat").unwrap();
    while let Ok(fd) = rustix::io::fcntl_dupfd_cloexec(&template, 0) {
        held.push(fd);
    }
}

/// Takes every slot left free (copies of a held descriptor) into `held`.
pub fn take_the_rest(held: &mut Vec<OwnedFd>) {
    while let Ok(fd) = rustix::io::fcntl_dupfd_cloexec(&held[0], 0) {
        held.push(fd);
    }
}

/// How many descriptors this process could open now.
pub fn free_slots() -> usize {
    let mut probe = Vec::new();
    fill_leaving_one(&mut probe);
    probe.len() + 1
}
