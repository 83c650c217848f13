//! The bare system-call floor: a `SOCK_SEQPACKET` ping-pong written with plain `send`/`recv`,
//! no framing, no serialization, no descriptor passing. Two variants: receives that sleep at
//! once (as `ipc-channel` does), and receives that first poll for the same window crossproc
//! polls by default, so each library can be held against the floor of its own strategy.

use std::time::{Duration, Instant};

use rustix::net::{
    accept_with, bind, connect, listen, recv, send, socket_with, AddressFamily, RecvFlags, SendFlags, SocketAddrUnix,
    SocketFlags, SocketType,
};
use std::os::fd::OwnedFd;

fn seqpacket() -> OwnedFd {
    socket_with(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None).unwrap()
}

/// How long the polling variant polls before it sleeps (crossproc's default window).
const POLL_WINDOW: Duration = Duration::from_micros(200);

/// The parent's connected socket and its child.
pub struct Peer {
    socket: OwnedFd,
    child: std::process::Child,
    polling: bool,
    _dir: tempfile::TempDir,
}

/// Receives one packet; the polling variant tries without sleeping for [`POLL_WINDOW`] first.
fn receive(socket: &OwnedFd, buffer: &mut [u8], polling: bool) -> rustix::io::Result<usize> {
    let start = Instant::now();
    while polling && start.elapsed() < POLL_WINDOW {
        match recv(socket, &mut *buffer, RecvFlags::DONTWAIT) {
            Err(rustix::io::Errno::AGAIN) => std::hint::spin_loop(),
            result => return result.map(|(_, len)| len),
        }
    }
    recv(socket, buffer, RecvFlags::empty()).map(|(_, len)| len)
}

impl Peer {
    /// Starts a child that echoes every packet, except that it answers a one-byte packet `F`
    /// only after counting it, and swallows packets that start with `S`. Both sides poll before
    /// they sleep when `polling` is set.
    pub fn spawn(polling: bool) -> Peer {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("floor.sock");
        let listener = seqpacket();
        bind(&listener, &SocketAddrUnix::new(path.as_path()).unwrap()).unwrap();
        listen(&listener, 1).unwrap();
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .env(super::CHILD_VAR, if polling { "floor-polling" } else { "floor" })
            .env(super::SERVER_VAR, &path)
            .spawn()
            .unwrap();
        let socket = accept_with(&listener, SocketFlags::CLOEXEC).unwrap();
        Peer { socket, child, polling, _dir: dir }
    }

    pub fn round_trip(&self, data: &[u8]) {
        let mut buffer = [0u8; 256];
        send(&self.socket, data, SendFlags::NOSIGNAL).unwrap();
        receive(&self.socket, &mut buffer, self.polling).unwrap();
    }

    pub fn stream(&self, data: &[u8], count: u64) -> Duration {
        let mut sink = data.to_vec();
        sink[0] = b'S';
        let mut buffer = [0u8; 256];
        let start = Instant::now();
        for _ in 0..count {
            send(&self.socket, &sink, SendFlags::NOSIGNAL).unwrap();
        }
        send(&self.socket, b"F", SendFlags::NOSIGNAL).unwrap();
        receive(&self.socket, &mut buffer, self.polling).unwrap();
        start.elapsed()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn child_main(path: String, polling: bool) {
    let socket = seqpacket();
    connect(&socket, &SocketAddrUnix::new(path.as_str()).unwrap()).unwrap();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let Ok(len) = receive(&socket, &mut buffer[..], polling) else { return };
        if len == 0 {
            return;
        }
        if buffer[0] == b'S' && len > 1 {
            continue;
        }
        if send(&socket, &buffer[..len], SendFlags::NOSIGNAL).is_err() {
            return;
        }
    }
}
