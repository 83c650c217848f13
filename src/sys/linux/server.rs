//! Named servers: a listening socket, and the acceptor thread that admits clients.
//!
//! Every server — the one-shot kind and the long-lived multi-client kind — works the same way:
//! an acceptor thread accepts each connection at once, reads the client's credentials from the
//! kernel (`SO_PEERCRED`), asks the server's admission rule, and answers with a verdict packet
//! (see [`super::frame`]); [`OsIpcSender::connect`](super::OsIpcSender::connect) waits for that
//! verdict, so a refused client gets a clear error from `connect` itself. An admitted connection
//! is handed to the server only once its first message (or its hang-up) is readable, so a client
//! that connects and stays silent never holds up anyone else. Silent connections are bounded:
//! each is closed after [`SILENT_DEADLINE`], and when [`waiting_room`] of them wait, a new client
//! evicts the oldest — so a flood of connections that never speak costs a bounded share of the
//! process's descriptors and locks out no client that speaks at once.
//!
//! Names: a private server lives in a fresh directory with mode 0700 (no other user can connect
//! or replace the socket); a server bound at a caller's path replaces a stale socket left by a
//! crashed server, but never a live one or a file that is not a socket. The name is removed when
//! the server's guard is dropped.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use rustix::event::epoll::{self, CreateFlags, Event, EventData, EventFlags};
use rustix::event::Timespec;
use rustix::event::{eventfd, EventfdFlags};
use rustix::io::Errno;
use rustix::net::{
    accept_with, bind, connect, listen, send, socket_with, sockopt::socket_peercred, AddressFamily, SendFlags,
    SocketAddrUnix, SocketFlags, SocketType,
};
use tempfile::TempDir;

use super::frame::{VERDICT_ADMITTED, VERDICT_REFUSED};
use super::socket::channel;
use super::sys::retry_on_intr;
use super::{OsIpcReceiver, OsIpcSender};
use crate::sys::PeerCredentials;
use crate::sys::{AcceptorFailure, Admit, OsIpcChannel, Wait};

/// Connections admitted but silent so far (no first message yet) are held at most this long,
/// then closed: a client is expected to speak as soon as it has connected.
pub(super) const SILENT_DEADLINE: Duration = Duration::from_secs(10);
/// At most this many silent connections (one descriptor each) are held, and never more than a
/// quarter of the process's descriptor limit ([`waiting_room`]); a new client beyond that evicts
/// the oldest.
pub(super) const MAX_WAITING: usize = 1024;
/// Connections accepted before the acceptor looks at the ones waiting again.
const ACCEPTS_PER_TURN: usize = 64;
const LISTENER: u64 = 0;
const STOP: u64 = 1;
const OUTLET: u64 = 2;
const FIRST_CONNECTION: u64 = 3;

/// How a server's name is removed when it stops.
enum Name {
    /// A fresh private directory, removed whole.
    PrivateDir { _dir: TempDir },
    /// A socket at a caller's path, removed if it is still ours (same device and inode).
    Path { path: PathBuf, dev: u64, ino: u64 },
}

/// A bound, listening socket and its name.
pub(crate) struct OsListener {
    fd: OwnedFd,
    name: Name,
}

fn listening_socket() -> io::Result<OwnedFd> {
    let flags = SocketFlags::CLOEXEC | SocketFlags::NONBLOCK;
    retry_on_intr(|| socket_with(AddressFamily::UNIX, SocketType::SEQPACKET, flags, None))
}

impl OsListener {
    /// Listens in a fresh private directory; returns the listener and its name.
    pub fn bind_private() -> io::Result<(OsListener, String)> {
        let dir = tempfile::Builder::new()
            .prefix("crossproc-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()?;
        let path = dir.path().join("socket");
        let name = path.to_str().ok_or_else(|| io::Error::other("temporary directory is not UTF-8"))?.to_owned();
        let fd = listening_socket()?;
        bind(&fd, &SocketAddrUnix::new(path.as_path())?)?;
        listen(&fd, 128)?;
        Ok((OsListener { fd, name: Name::PrivateDir { _dir: dir } }, name))
    }

    /// Listens at `path`, replacing a stale socket left there by a server that is gone.
    pub fn bind(path: &Path) -> io::Result<OsListener> {
        let fd = listening_socket()?;
        let address = SocketAddrUnix::new(path)?;
        match bind(&fd, &address) {
            Ok(()) => {}
            Err(Errno::ADDRINUSE) if is_stale_socket(path)? => {
                std::fs::remove_file(path)?;
                bind(&fd, &address)?;
            }
            Err(Errno::ADDRINUSE) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use by a live server or is not a socket", path.display()),
                ))
            }
            Err(error) => return Err(error.into()),
        }
        listen(&fd, 128)?;
        let metadata = std::fs::metadata(path)?;
        Ok(OsListener { fd, name: Name::Path { path: path.to_owned(), dev: metadata.dev(), ino: metadata.ino() } })
    }
}

/// A socket file nobody listens on any more: connecting to it is refused.
fn is_stale_socket(path: &Path) -> io::Result<bool> {
    if !std::fs::symlink_metadata(path)?.file_type().is_socket() {
        return Ok(false);
    }
    let probe = retry_on_intr(|| socket_with(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None))?;
    Ok(matches!(connect(&probe, &SocketAddrUnix::new(path)?), Err(Errno::CONNREFUSED)))
}

/// How many silent connections a server holds: [`MAX_WAITING`], or a quarter of the process's
/// soft descriptor limit if that is less (at least 16), so that a flood of connections that
/// never speak cannot take the descriptors every other channel of the process needs.
fn waiting_room() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    let quarter = limit.map_or(usize::MAX, |limit| usize::try_from(limit / 4).unwrap_or(usize::MAX));
    quarter.clamp(16, MAX_WAITING)
}

/// Stops a server's acceptor thread and removes its name when dropped.
pub(crate) struct OsServerGuard {
    stop: OwnedFd,
    name: Option<Name>,
    acceptor: Option<thread::JoinHandle<()>>,
    failure: AcceptorFailure,
}

impl OsServerGuard {
    /// Why the acceptor stopped admitting clients, if it failed (the server's incoming channel
    /// then reports `Disconnected`).
    pub fn take_failure(&self) -> Option<io::Error> {
        self.failure.take()
    }
}

impl Drop for OsServerGuard {
    fn drop(&mut self) {
        if let Some(Name::Path { path, dev, ino }) = &self.name {
            let ours = std::fs::symlink_metadata(path).is_ok_and(|m| m.dev() == *dev && m.ino() == *ino);
            if ours {
                let _ = std::fs::remove_file(path);
            }
        }
        self.name = None; // a private directory is removed here
        let _ = rustix::io::write(&self.stop, &1u64.to_ne_bytes());
        // Waiting for the thread means its descriptors are closed when the drop returns.
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

impl fmt::Debug for OsServerGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OsServerGuard")
    }
}

/// The credentials of this process, as the kernel would report them to a peer.
pub(crate) fn current_credentials() -> PeerCredentials {
    PeerCredentials {
        pid: rustix::process::getpid().as_raw_nonzero().get() as u32,
        uid: rustix::process::geteuid().as_raw(),
        gid: rustix::process::getegid().as_raw(),
    }
}

/// Starts the acceptor thread for `listener`. `admit` decides each client from its credentials
/// and returns the bytes that announce it; every admitted client then arrives on the returned
/// receiver as one message carrying those bytes and, as its one channel, the client's connection.
pub(crate) fn serve(listener: OsListener, admit: Admit) -> io::Result<(OsIpcReceiver, OsServerGuard)> {
    let (outlet, incoming) = channel()?;
    let stop = retry_on_intr(|| eventfd(0, EventfdFlags::CLOEXEC))?;
    let epoll = retry_on_intr(|| epoll::create(CreateFlags::CLOEXEC))?;
    epoll::add(&epoll, &listener.fd, EventData::new_u64(LISTENER), EventFlags::IN)?;
    epoll::add(&epoll, &stop, EventData::new_u64(STOP), EventFlags::IN)?;
    // No interest flags: only the hang-up of the incoming side (the server was dropped) wakes us.
    epoll::add(&epoll, outlet.as_fd(), EventData::new_u64(OUTLET), EventFlags::empty())?;
    let thread_stop = stop.try_clone()?;
    let failure = AcceptorFailure::default();
    let acceptor = Acceptor {
        listener: listener.fd,
        epoll,
        _stop: thread_stop,
        outlet,
        admit,
        waiting: HashMap::new(),
        arrivals: VecDeque::new(),
        room: waiting_room(),
    };
    let report = failure.clone();
    let run = move || {
        if let Err(error) = acceptor.run() {
            report.record(error);
        }
    };
    let acceptor = thread::Builder::new().name("crossproc-acceptor".into()).spawn(run)?;
    Ok((incoming, OsServerGuard { stop, name: Some(listener.name), acceptor: Some(acceptor), failure }))
}

/// An admitted connection waiting for its first message.
struct Waiting {
    connection: OwnedFd,
    announcement: Vec<u8>,
}

struct Acceptor {
    listener: OwnedFd,
    epoll: OwnedFd,
    _stop: OwnedFd,
    outlet: OsIpcSender,
    admit: Admit,
    /// Admitted connections whose first message is not readable yet, with their announcement.
    waiting: HashMap<u64, Waiting>,
    /// The ids of `waiting`, oldest first, with the moment each is closed if still silent (ids
    /// handed over meanwhile are skipped when they come up).
    arrivals: VecDeque<(u64, Instant)>,
    /// How many silent connections may wait at once.
    room: usize,
}

impl Acceptor {
    /// Admits clients until the server is dropped (`Ok`) or the system fails (`Err`).
    fn run(mut self) -> io::Result<()> {
        let mut next_id = FIRST_CONNECTION;
        let mut events = [MaybeUninit::<Event>::uninit(); 64];
        loop {
            let timeout = self.close_overdue();
            let ready: Vec<u64> = match epoll::wait(&self.epoll, &mut events[..], timeout.as_ref()) {
                Ok((ready, _)) => ready.iter().map(|event| event.data.u64()).collect(),
                Err(Errno::INTR) => continue,
                Err(error) => return Err(error.into()),
            };
            for id in ready {
                match id {
                    STOP | OUTLET => return Ok(()),
                    LISTENER => self.accept_all(&mut next_id)?,
                    id => {
                        if !self.hand_over(id) {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }

    /// Closes every connection silent past its deadline; returns how long until the next one's.
    fn close_overdue(&mut self) -> Option<Timespec> {
        let now = Instant::now();
        while let Some(&(id, deadline)) = self.arrivals.front() {
            if !self.waiting.contains_key(&id) {
                self.arrivals.pop_front();
            } else if deadline <= now {
                self.arrivals.pop_front();
                self.waiting.remove(&id); // closed: epoll forgets it with its last descriptor
            } else {
                let left = deadline - now;
                return Some(Timespec { tv_sec: left.as_secs() as i64, tv_nsec: i64::from(left.subsec_nanos()) });
            }
        }
        None
    }

    /// Makes room for one more silent connection by closing the oldest.
    fn evict_oldest(&mut self) {
        while let Some((id, _)) = self.arrivals.pop_front() {
            if self.waiting.remove(&id).is_some() {
                return;
            }
        }
    }

    /// Accepts queued connections, [`ACCEPTS_PER_TURN`] at most, and answers each with a verdict.
    /// (Clients that keep connecting must not keep the acceptor from handing over the ones that
    /// have spoken meanwhile: the listener, level-triggered, is reported again.)
    fn accept_all(&mut self, next_id: &mut u64) -> io::Result<()> {
        for _ in 0..ACCEPTS_PER_TURN {
            let connection = match accept_with(&self.listener, SocketFlags::CLOEXEC) {
                Ok(connection) => connection,
                Err(Errno::AGAIN) => return Ok(()),
                Err(Errno::INTR | Errno::CONNABORTED | Errno::PROTO) => continue,
                Err(Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM) => {
                    // Out of descriptors or memory: give back the oldest silent connection,
                    // leave the rest in the backlog and retry soon, rather than spinning on a
                    // listener that stays readable.
                    self.evict_oldest();
                    thread::sleep(Duration::from_millis(20));
                    return Ok(());
                }
                Err(error) => return Err(error.into()),
            };
            let announcement = match socket_peercred(&connection) {
                Ok(cred) => {
                    let credentials = PeerCredentials {
                        pid: cred.pid.as_raw_nonzero().get() as u32,
                        uid: cred.uid.as_raw(),
                        gid: cred.gid.as_raw(),
                    };
                    (self.admit)(&credentials)
                }
                Err(_) => None,
            };
            let verdict = if announcement.is_some() { VERDICT_ADMITTED } else { VERDICT_REFUSED };
            let _ = send(&connection, &verdict, SendFlags::DONTWAIT | SendFlags::NOSIGNAL);
            if let Some(announcement) = announcement {
                if self.waiting.len() >= self.room {
                    self.evict_oldest();
                }
                let id = *next_id;
                *next_id += 1;
                if epoll::add(&self.epoll, &connection, EventData::new_u64(id), EventFlags::IN).is_ok() {
                    self.waiting.insert(id, Waiting { connection, announcement });
                    self.arrivals.push_back((id, Instant::now() + SILENT_DEADLINE));
                }
            }
        }
        Ok(())
    }

    /// Hands a connection that became readable to the server; `false` when the server is gone.
    fn hand_over(&mut self, id: u64) -> bool {
        let Some(Waiting { connection, announcement }) = self.waiting.remove(&id) else { return true };
        let _ = epoll::delete(&self.epoll, &connection);
        let channels = vec![OsIpcChannel::Receiver(OsIpcReceiver::new(connection))];
        self.outlet.send(&announcement, channels, Vec::new(), Wait::Blocking).is_ok()
    }
}
