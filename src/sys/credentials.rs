//! Who a peer is: the credentials a server learns from the kernel.

use serde::{Deserialize, Serialize};

/// Who a client is, as the kernel reports it (`SO_PEERCRED` on Linux) when it connects: never
/// the client's own word.
///
/// ```
/// let me = crossproc::ipc::PeerCredentials::of_this_process();
/// assert_eq!(me.pid, std::process::id());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PeerCredentials {
    /// The client's process id (when it connected).
    pub pid: u32,
    /// The client's effective user id (0 on Windows, which has no numeric user ids).
    pub uid: u32,
    /// The client's effective group id (0 on Windows).
    pub gid: u32,
}

impl PeerCredentials {
    /// The credentials this process presents to a server.
    pub fn of_this_process() -> PeerCredentials {
        super::current_credentials()
    }
}
