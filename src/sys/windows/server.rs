//! Named servers: a named pipe whose instances clients open, and the acceptor thread that admits
//! them.
//!
//! A client creates a channel for itself, opens an instance of the server's pipe, learns the
//! server's process from the kernel (`GetNamedPipeServerProcessId`), moves the channel's
//! receiver there in a hello message and waits for the verdict. The acceptor reads the client's
//! process id from the kernel (`GetNamedPipeClientProcessId`), asks the admission rule, answers,
//! and hands an admitted client's receiver to the server.
//!
//! Names: `\\.\pipe\crossproc-…` with a random part for private servers; a caller's name is used
//! under `\\.\pipe\` as given. The first instance is created with `FILE_FLAG_FIRST_PIPE_INSTANCE`,
//! so no other process can already own (or later squat) the name while the server lives, and the
//! pipe's default security admits only the creating user, administrators and the system, so
//! Windows itself keeps other users out. There are no stale names: a pipe vanishes with its last
//! handle. Windows has no user and group ids here: `PeerCredentials` carries the process id and
//! zeros.

use std::collections::VecDeque;
use std::io;
use std::mem;
use std::os::windows::io::OwnedHandle;
use std::path::Path;
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::{
    ERROR_ACCESS_DENIED, ERROR_FILE_NOT_FOUND, ERROR_IO_PENDING, ERROR_NO_DATA, ERROR_PIPE_BUSY, ERROR_PIPE_CONNECTED,
    GENERIC_READ, GENERIC_WRITE, HANDLE, WAIT_FAILED, WAIT_OBJECT_0,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, ReadFile, FILE_FLAG_FIRST_PIPE_INSTANCE, FILE_FLAG_OVERLAPPED, OPEN_EXISTING, PIPE_ACCESS_DUPLEX,
};
use windows_sys::Win32::System::Pipes::{
    ConnectNamedPipe, CreateNamedPipeW, GetNamedPipeClientProcessId, GetNamedPipeServerProcessId,
    SetNamedPipeHandleState, WaitNamedPipeW, PIPE_READMODE_MESSAGE, PIPE_REJECT_REMOTE_CLIENTS, PIPE_TYPE_MESSAGE,
    PIPE_UNLIMITED_INSTANCES, PIPE_WAIT,
};
use windows_sys::Win32::System::Threading::{SetEvent, WaitForMultipleObjects, INFINITE};
use windows_sys::Win32::System::IO::{CancelIoEx, GetOverlappedResult, OVERLAPPED};

use super::frame::{other_version, version_mismatch, VERDICT_ADMITTED, VERDICT_REFUSED};
use super::pipe::{channel, write_message, OsIpcReceiver, OsIpcSender};
use super::sys::{check, event, finish_overlapped, owned, random_u64, raw, wide, Peer};
use super::transfer::{import, Exporter};
use crate::sys::{AcceptorFailure, Admit, OsIpcChannel, RecvError, Wait};
use crate::sys::{PeerCredentials, ReceiveLimits};

/// How long either side waits for the other during the hello exchange.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client waits for a free instance of a busy server's pipe. Generous: a Linux client
/// of a server whose backlog is full waits without limit, and under Wine a hundred clients
/// connecting at once were seen to wait over 10 s for their turn.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

static NEXT_SERVER: AtomicU64 = AtomicU64::new(0);

/// The pipe path for a server name.
fn pipe_path(name: &str) -> String {
    const PREFIX: &str = r"\\.\pipe\";
    if name.starts_with(PREFIX) {
        name.to_owned()
    } else {
        format!("{PREFIX}{}", name.replace('\\', "/"))
    }
}

/// A reserved server name: the first instance of its pipe.
pub(crate) struct OsListener {
    path: String,
    first: OwnedHandle,
}

impl OsListener {
    /// A fresh private name.
    pub fn bind_private() -> io::Result<(OsListener, String)> {
        let name = format!(
            r"\\.\pipe\crossproc-server-{}-{}-{:016x}",
            std::process::id(),
            NEXT_SERVER.fetch_add(1, Ordering::Relaxed),
            random_u64()
        );
        Ok((OsListener::reserve(&name)?, name))
    }

    /// The caller's name (a pipe name, or any text that becomes one under `\\.\pipe\`); fails
    /// with `AddrInUse` while another server holds it.
    pub fn bind(path: &Path) -> io::Result<OsListener> {
        let name = path.to_str().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "name is not UTF-8"))?;
        OsListener::reserve(name)
    }

    fn reserve(name: &str) -> io::Result<OsListener> {
        let path = pipe_path(name);
        let first = instance(&path, true).map_err(|error| match error.raw_os_error().map(|code| code as u32) {
            Some(ERROR_ACCESS_DENIED | ERROR_PIPE_BUSY) => {
                io::Error::new(io::ErrorKind::AddrInUse, format!("{name} is in use by a live server"))
            }
            _ => error,
        })?;
        Ok(OsListener { path, first })
    }
}

/// A new instance of the server pipe at `path`.
fn instance(path: &str, first: bool) -> io::Result<OwnedHandle> {
    let flags = PIPE_ACCESS_DUPLEX | FILE_FLAG_OVERLAPPED | if first { FILE_FLAG_FIRST_PIPE_INSTANCE } else { 0 };
    let path = wide(path);
    // SAFETY: `path` is zero-terminated UTF-16; default security; checked by `owned`.
    owned(unsafe {
        CreateNamedPipeW(
            path.as_ptr(),
            flags,
            PIPE_TYPE_MESSAGE | PIPE_READMODE_MESSAGE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS,
            PIPE_UNLIMITED_INSTANCES,
            4096,
            64 * 1024,
            0,
            ptr::null(),
        )
    })
}

/// Stops the acceptor (and so removes the name) when dropped.
#[derive(Debug)]
pub(crate) struct OsServerGuard {
    stop: OwnedHandle,
    acceptor: Option<JoinHandle<()>>,
    failure: AcceptorFailure,
}

impl OsServerGuard {
    /// Why the acceptor stopped admitting clients, if it failed.
    pub fn take_failure(&self) -> Option<io::Error> {
        self.failure.take()
    }
}

impl Drop for OsServerGuard {
    fn drop(&mut self) {
        // SAFETY: `stop` is a live event.
        unsafe { SetEvent(raw(&self.stop)) };
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// This process's credentials: its id (Windows has no numeric user or group ids).
pub(crate) fn current_credentials() -> PeerCredentials {
    PeerCredentials { pid: std::process::id(), uid: 0, gid: 0 }
}

/// Starts the acceptor thread; see the module documentation.
pub(crate) fn serve(listener: OsListener, admit: Admit) -> io::Result<(OsIpcReceiver, OsServerGuard)> {
    let (outlet, incoming) = channel()?;
    let stop = event()?;
    let stop_raw = raw(&stop) as usize;
    let failure = AcceptorFailure::default();
    let report = failure.clone();
    let acceptor = thread::Builder::new().name("crossproc-acceptor".into()).spawn(move || {
        let stop = stop_raw as HANDLE;
        if let Err(error) = accept_loop(&listener.path, listener.first, stop, Arc::new(Mutex::new(admit)), &outlet) {
            report.record(error);
        }
    })?;
    Ok((incoming, OsServerGuard { stop, acceptor: Some(acceptor), failure }))
}

/// The acceptor: waits at once for the next client, for `stop`, for handshakes that finished,
/// and for the first message of every admitted client not yet handed over (the waiting room).
///
/// Each new client's handshake (its hello, the verdict) runs on a thread of its own, at most
/// [`HANDSHAKES`] at once, so a client that connects and says nothing delays nobody; a new
/// connection beyond that cancels the oldest handshake (a client that speaks at once is done
/// with its handshake in a moment, long before it is the oldest). An admitted client waits at most
/// [`SILENT_DEADLINE`] for its first message, and when [`WAITING_ROOM`] of them wait, a new
/// one evicts the oldest: silent clients never lock the others out.
fn accept_loop(
    path: &str,
    first: OwnedHandle,
    stop: HANDLE,
    admit: Arc<Mutex<Admit>>,
    outlet: &OsIpcSender,
) -> io::Result<()> {
    let mut connecting = Connecting::start(first)?;
    let mut waiting: VecDeque<Waiting> = VecDeque::new();
    // Shared with the handshake threads, so it outlives any of them that is still running.
    let handshake_done = Arc::new(event()?);
    let (finished_tx, finished) = std::sync::mpsc::channel::<(u64, Option<Waiting>)>();
    // The pipes of the handshakes in progress, oldest first (shared with their threads, so that
    // cancelling one never touches a closed handle).
    let mut handshakes: VecDeque<Handshake> = VecDeque::new();
    let mut next_handshake = 0u64;
    loop {
        while let Ok((id, outcome)) = finished.try_recv() {
            handshakes.retain(|handshake| handshake.id != id);
            if let Some(admitted) = outcome {
                if waiting.len() == WAITING_ROOM {
                    waiting.pop_front(); // the oldest silent client makes room
                }
                waiting.push_back(admitted);
            }
        }
        let now = Instant::now();
        waiting.retain_mut(|client| match client.state() {
            Readiness::Ready => {
                let receiver = client.receiver.take().expect("handed over once");
                let channels = vec![OsIpcChannel::Receiver(receiver)];
                let _ = outlet.send(&client.announcement, channels, Vec::new(), Wait::Blocking);
                false
            }
            Readiness::Pending => client.deadline > now,
            Readiness::Dropped => false,
        });
        let timeout = waiting.iter().map(|client| client.deadline.saturating_duration_since(now)).min();
        let timeout = timeout.map_or(INFINITE, |left| u32::try_from(left.as_millis() + 1).unwrap_or(INFINITE - 1));
        let mut events = vec![raw(&connecting.event), stop, raw(&*handshake_done)];
        events.extend(waiting.iter().map(Waiting::event));
        // SAFETY: every handle is a live event (`events` holds at most 3 + WAITING_ROOM).
        let woken = unsafe { WaitForMultipleObjects(events.len() as u32, events.as_ptr(), 0, timeout) };
        if woken == WAIT_OBJECT_0 + 1 {
            return Ok(());
        }
        if woken == WAIT_FAILED {
            return Err(io::Error::last_os_error());
        }
        if woken != WAIT_OBJECT_0 {
            continue; // a handshake finished, a waiting client's read completed, or a deadline
        }
        // The next instance first, so clients arriving meanwhile find one.
        let next = Connecting::start(instance(path, false)?)?;
        let Ok(pipe) = mem::replace(&mut connecting, next).finish() else { continue };
        if handshakes.len() >= 2 * HANDSHAKES {
            continue; // cancelled handshakes have not ended yet: closing refuses this client
        }
        if handshakes.len() >= HANDSHAKES {
            if let Some(oldest) = handshakes.iter_mut().find(|handshake| !handshake.cancelled) {
                // Its read ends (aborted), its thread reports it, and it leaves the list then.
                // SAFETY: the pipe is live (shared with its thread); this cancels its I/O only.
                unsafe { CancelIoEx(raw(&*oldest.pipe), ptr::null()) };
                oldest.cancelled = true;
            }
        }
        let handshake = Handshake { id: next_handshake, pipe: Arc::new(pipe), cancelled: false };
        next_handshake += 1;
        let (admit, finished_tx, done) = (admit.clone(), finished_tx.clone(), handshake_done.clone());
        let (id, pipe) = (handshake.id, handshake.pipe.clone());
        let spawned = thread::Builder::new().name("crossproc-handshake".into()).spawn(move || {
            let _ = finished_tx.send((id, welcome(&pipe, &admit)));
            // SAFETY: `done` is a live event (this thread holds it).
            unsafe { SetEvent(raw(&*done)) };
        });
        if spawned.is_ok() {
            handshakes.push_back(handshake);
        }
    }
}

/// A client's handshake in progress on its own thread.
struct Handshake {
    id: u64,
    /// The client's pipe instance, shared with the thread.
    pipe: Arc<OwnedHandle>,
    /// Whether its I/O was cancelled to make room (it ends soon).
    cancelled: bool,
}

/// Handshakes (hello, verdict) in progress at once; a new connection beyond that cancels the
/// oldest (and beyond twice that, while cancelled ones have not ended yet, is closed).
const HANDSHAKES: usize = 32;

/// Admitted clients whose first message has not arrived yet, at most (the limit of one
/// `WaitForMultipleObjects`, less the acceptor's own three events); a new one evicts the oldest.
const WAITING_ROOM: usize = 60;

/// How long an admitted client may stay silent before it is dropped.
const SILENT_DEADLINE: Duration = Duration::from_secs(10);

/// A `ConnectNamedPipe` on one pipe instance, in flight until a client opens the instance.
struct Connecting {
    pipe: Option<OwnedHandle>,
    overlapped: Box<OVERLAPPED>,
    event: OwnedHandle,
}

impl Connecting {
    fn start(pipe: OwnedHandle) -> io::Result<Connecting> {
        let event = event()?;
        // SAFETY: all-zero is a valid OVERLAPPED.
        let mut overlapped: Box<OVERLAPPED> = Box::new(unsafe { mem::zeroed() });
        overlapped.hEvent = raw(&event);
        // The connect completes, or is cancelled and waited for in `Drop`.
        // SAFETY: the boxed OVERLAPPED lives until then.
        if unsafe { ConnectNamedPipe(raw(&pipe), &mut *overlapped) } == 0 {
            match io::Error::last_os_error().raw_os_error().map(|code| code as u32) {
                Some(ERROR_IO_PENDING) => {}
                // Already connected (or connected and gone): make the wait see it.
                // SAFETY: `event` is a live event.
                Some(ERROR_PIPE_CONNECTED | ERROR_NO_DATA) => unsafe {
                    SetEvent(raw(&event));
                },
                _ => return Err(io::Error::last_os_error()),
            }
        }
        Ok(Connecting { pipe: Some(pipe), overlapped, event })
    }

    /// The connected instance (after its event fired).
    fn finish(mut self) -> io::Result<OwnedHandle> {
        let pipe = self.pipe.take().expect("finished once");
        let mut ignored = 0;
        // Waits (briefly): Wine may signal the event a moment before it records the outcome.
        // SAFETY: the connect on `pipe` has completed (its event fired), or never started.
        let outcome = check(unsafe { GetOverlappedResult(raw(&pipe), &*self.overlapped, &mut ignored, 1) });
        match outcome {
            Err(error)
                if !matches!(
                    error.raw_os_error().map(|code| code as u32),
                    Some(ERROR_PIPE_CONNECTED | ERROR_NO_DATA)
                ) =>
            {
                Err(error)
            }
            _ => Ok(pipe),
        }
    }
}

impl Drop for Connecting {
    fn drop(&mut self) {
        if let Some(pipe) = &self.pipe {
            let mut ignored = 0;
            // SAFETY: cancels this connect, then waits until the kernel is done with `overlapped`.
            unsafe {
                CancelIoEx(raw(pipe), &*self.overlapped);
                GetOverlappedResult(raw(pipe), &*self.overlapped, &mut ignored, 1);
            }
        }
    }
}

/// An admitted client, held back until its first message (or its hang-up) has arrived, so that a
/// client that connects and stays silent never holds up `accept` for anyone else.
struct Waiting {
    announcement: Vec<u8>,
    receiver: Option<OsIpcReceiver>,
    /// When it is dropped if it is still silent.
    deadline: Instant,
}

/// Where a waiting client stands.
enum Readiness {
    Ready,
    Pending,
    Dropped,
}

impl Waiting {
    /// Reads on: a first message goes into the receiver's backlog, to be received first.
    fn state(&self) -> Readiness {
        let Some(receiver) = &self.receiver else { return Readiness::Dropped };
        let mut reader = receiver.reader();
        if !reader.backlog.is_empty() {
            return Readiness::Ready;
        }
        match reader.poll(&ReceiveLimits::DEFAULT) {
            Ok(None) => Readiness::Pending,
            Ok(Some(message)) => match import(&message, &ReceiveLimits::DEFAULT) {
                Ok(parcel) => {
                    reader.backlog.push_back(parcel);
                    Readiness::Ready
                }
                Err(_) => Readiness::Dropped,
            },
            // A hang-up is handed over too: the server's receive reports it.
            Err(RecvError::Disconnected) => Readiness::Ready,
            Err(_) => Readiness::Dropped,
        }
    }

    /// The event that the client's read in flight signals.
    fn event(&self) -> HANDLE {
        self.receiver.as_ref().map_or(ptr::null_mut(), |receiver| receiver.reader().event())
    }
}

/// Reads one client's hello, asks `admit`, answers, and returns an admitted client for the
/// waiting room.
fn welcome(pipe: &OwnedHandle, admit: &Mutex<Admit>) -> Option<Waiting> {
    let mut pid = 0;
    // SAFETY: `pipe` is a connected server instance; `pid` is a valid out-pointer.
    if unsafe { GetNamedPipeClientProcessId(raw(pipe), &mut pid) } == 0 {
        return None;
    }
    let deadline = Instant::now().checked_add(HELLO_TIMEOUT);
    let hello = read_once(pipe, deadline).ok()??;
    let mut parcel = import(&hello, &ReceiveLimits::DEFAULT).ok()?;
    let Some(OsIpcChannel::Receiver(receiver)) = parcel.take_channel() else { return None };
    let verdict =
        (admit.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))(&PeerCredentials { pid, uid: 0, gid: 0 });
    let answer = if verdict.is_some() { VERDICT_ADMITTED } else { VERDICT_REFUSED };
    if !matches!(write_message(pipe, &answer, deadline), Ok(Some(()))) {
        return None;
    }
    // Keep the instance open until the client has read the verdict and closed its end.
    let _ = read_once(pipe, Instant::now().checked_add(HELLO_TIMEOUT));
    let deadline = Instant::now() + SILENT_DEADLINE;
    verdict.map(|announcement| Waiting { announcement, receiver: Some(receiver), deadline })
}

/// Reads one message from `pipe` (at most 64 KiB), waiting until `deadline`; `None` on timeout.
fn read_once(pipe: &OwnedHandle, deadline: Option<Instant>) -> io::Result<Option<Vec<u8>>> {
    let done = event()?;
    let mut buffer = vec![0u8; 64 * 1024];
    // SAFETY: all-zero is a valid OVERLAPPED.
    let mut overlapped: OVERLAPPED = unsafe { mem::zeroed() };
    overlapped.hEvent = raw(&done);
    let (into, len) = (buffer.as_mut_ptr(), buffer.len() as u32);
    // `finish_overlapped` waits until the kernel is done before either is dropped.
    // SAFETY: `buffer` and `overlapped` outlive the read.
    let started = unsafe { ReadFile(raw(pipe), into, len, ptr::null_mut(), &mut overlapped) };
    let got = finish_overlapped(raw(pipe), &overlapped, started, deadline)?;
    Ok(got.map(|got| {
        buffer.truncate(got as usize);
        buffer
    }))
}

/// Connects to the server named `name`; see the module documentation.
pub(super) fn connect(name: &str) -> io::Result<OsIpcSender> {
    let path = wide(&pipe_path(name));
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let pipe = loop {
        // SAFETY: `path` is zero-terminated UTF-16; checked by `owned`.
        let opened = owned(unsafe {
            CreateFileW(
                path.as_ptr(),
                GENERIC_READ | GENERIC_WRITE,
                0,
                ptr::null(),
                OPEN_EXISTING,
                FILE_FLAG_OVERLAPPED,
                ptr::null_mut(),
            )
        });
        match opened {
            Ok(pipe) => break pipe,
            Err(error) if error.raw_os_error() == Some(ERROR_PIPE_BUSY as i32) && Instant::now() < deadline => {
                // SAFETY: `path` is zero-terminated UTF-16.
                unsafe { WaitNamedPipeW(path.as_ptr(), 100) };
            }
            Err(error) if error.raw_os_error() == Some(ERROR_FILE_NOT_FOUND as i32) => {
                return Err(io::Error::new(io::ErrorKind::NotFound, format!("no server named {name}")));
            }
            Err(error) => return Err(error),
        }
    };
    let mode = PIPE_READMODE_MESSAGE;
    let mut server_pid = 0;
    // SAFETY: `pipe` is an open client end; the pointers are valid for the calls.
    unsafe {
        check(SetNamedPipeHandleState(raw(&pipe), &mode, ptr::null(), ptr::null()))?;
        check(GetNamedPipeServerProcessId(raw(&pipe), &mut server_pid))?;
    }
    let (sender, receiver) = channel()?;
    let server = Peer::open(server_pid)?;
    let mut exporter = Exporter::new(&server);
    let hello = exporter.message(&[], vec![OsIpcChannel::Receiver(receiver)], Vec::new())?;
    let deadline = Instant::now().checked_add(HELLO_TIMEOUT);
    if !matches!(write_message(&pipe, &hello, deadline), Ok(Some(()))) {
        exporter.take_back();
        return Err(io::Error::new(io::ErrorKind::ConnectionRefused, "the server did not take the hello"));
    }
    match read_once(&pipe, deadline)? {
        Some(verdict) if verdict == VERDICT_ADMITTED => Ok(sender),
        Some(verdict) if verdict == VERDICT_REFUSED => {
            Err(io::Error::new(io::ErrorKind::PermissionDenied, "the server's access policy refused this client"))
        }
        // A verdict in another protocol version: a server from another build.
        Some(verdict) if other_version(&verdict).is_some() => Err(version_mismatch(verdict[3])),
        _ => Err(io::Error::new(io::ErrorKind::ConnectionRefused, "the server did not answer")),
    }
}
