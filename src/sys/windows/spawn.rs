//! Handing a channel end to a child process.
//!
//! The parent creates a private bootstrap channel, lets the child inherit the three handles of
//! its receiving end (inheritable only for the moment of the spawn), names the child as the
//! bootstrap channel's owner, and then sends the real end through it as an ordinary message, so
//! a receiver with messages queued moves exactly as it would to any other process. The child
//! learns the handle values from an environment variable and takes the end out of that first
//! message, once.
//!
//! Windows offers no way to limit inheritance to chosen handles through `std::process`, so a
//! process spawned by another thread at the same moment may inherit a copy of the bootstrap
//! receiver's handles too; it never learns their values, and the bootstrap channel carries
//! nothing after the first message.

use std::io;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use windows_sys::Win32::Foundation::{SetHandleInformation, HANDLE_FLAG_INHERIT};

use super::pipe::{channel, ChannelState, OsIpcReceiver, OsOpaqueIpcChannel};
use super::section::ChannelCell;
use super::sys::{adopt, check, raw, SharedLock};
use crate::sys::{OsIpcChannel, RecvError, Wait};

/// The environment variable that tells a child its bootstrap handles: `PIPE:LOCK:OWNER`.
const INHERITED_VAR: &str = "CROSSPROC_INHERITED_CHANNEL";
/// How long a child waits for its parent's first message.
const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(30);

static TAKEN: AtomicBool = AtomicBool::new(false);

/// Spawns `command` so that the child can take `end` with [`take_inherited`].
pub(crate) fn spawn_with_inherited(command: &mut Command, end: OsIpcChannel) -> io::Result<Child> {
    let (bootstrap, inherited) = channel()?;
    let mut reader = inherited.into_reader();
    // The child owns what is queued in the bootstrap pipe, not this process.
    reader.detached = true;
    let handles = [raw(reader.pipe()), raw(&reader.state.lock.0), reader.state.cell.handle()];
    let set_inherit = |on: bool| -> io::Result<()> {
        for handle in handles {
            // SAFETY: `handle` is live (owned by `reader`) for the whole spawn.
            check(unsafe { SetHandleInformation(handle, HANDLE_FLAG_INHERIT, u32::from(on)) })?;
        }
        Ok(())
    };
    let values: Vec<String> = handles.iter().map(|handle| (*handle as usize).to_string()).collect();
    command.env(INHERITED_VAR, values.join(":"));
    set_inherit(true)?;
    let child = command.spawn();
    set_inherit(false)?;
    let child = child?;
    {
        let _guard = bootstrap.state().lock.lock()?;
        bootstrap.state().cell.set_owner(child.id());
    }
    bootstrap.send(&[], vec![end], Vec::new(), Wait::Blocking).map_err(io::Error::from)?;
    Ok(child)
}

/// Takes the channel end this process's parent passed with [`spawn_with_inherited`]. Only the
/// first call succeeds.
pub(crate) fn take_inherited() -> io::Result<OsOpaqueIpcChannel> {
    let not_found = || io::Error::new(io::ErrorKind::NotFound, "this process did not inherit a crossproc channel");
    let value = std::env::var(INHERITED_VAR).map_err(|_| not_found())?;
    let values: Vec<u64> = value.split(':').map(str::parse).collect::<Result<_, _>>().map_err(|_| not_found())?;
    let [pipe, lock, cell] = values[..] else { return Err(not_found()) };
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err(not_found());
    }
    let (pipe, lock, cell) = (adopt(pipe)?, adopt(lock)?, adopt(cell)?);
    let state = Arc::new(ChannelState { lock: SharedLock(lock), cell: ChannelCell::open(cell)? });
    let bootstrap = OsIpcReceiver::from_parts(pipe, state, Default::default())?;
    let mut message = match bootstrap.recv(Wait::Timeout(BOOTSTRAP_TIMEOUT)) {
        Ok(message) => message,
        Err(RecvError::Io(error)) => return Err(error),
        Err(_) => return Err(not_found()),
    };
    if message.channels.is_empty() {
        return Err(not_found());
    }
    Ok(message.channels.remove(0))
}
