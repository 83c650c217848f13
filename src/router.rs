//! The router: one background thread that waits on many receivers and hands each message to a
//! callback or a crossbeam channel.
//!
//! Use the global [`ROUTER`], or a [`RouterProxy`] of your own. A route's handler is dropped
//! when every sender of its receiver is gone. A handler that panics ends only its own route: the
//! panic is reported through the panic hook, its receiver is closed, and every other route goes
//! on.
//!
//! ```
//! use crossproc::{ipc, router::ROUTER};
//! let (tx, rx) = ipc::channel::<String>().unwrap();
//! let messages = ROUTER.route_ipc_receiver_to_new_crossbeam_receiver(rx);
//! tx.send("routed".into()).unwrap();
//! assert_eq!(messages.recv().unwrap(), "routed");
//! ```

use std::collections::HashMap;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{LazyLock, Mutex};
use std::thread;

use serde::{Deserialize, Serialize};

use crate::error::SerDeError;
use crate::ipc::{self, IpcMessage, IpcReceiver, IpcReceiverSet, IpcSelectionResult, IpcSender, OpaqueIpcReceiver};

/// A callback for every message of a route.
pub type RouterMultiHandler = Box<dyn FnMut(IpcMessage) + Send>;
/// A callback for the first message of a route. Later messages are discarded (their sends
/// still succeed) until every sender is gone, as in `ipc-channel`.
pub type RouterOneShotHandler = Box<dyn FnOnce(IpcMessage) + Send>;
/// Like [`RouterMultiHandler`], with the message decoded as a `T`.
pub type TypedRouterMultiHandler<T> = Box<dyn FnMut(Result<T, SerDeError>) + Send>;
/// Like [`RouterOneShotHandler`], with the message decoded as a `T`.
pub type TypedRouterOneShotHandler<T> = Box<dyn FnOnce(Result<T, SerDeError>) + Send>;

/// The global router, started on first use.
pub static ROUTER: LazyLock<RouterProxy> = LazyLock::new(RouterProxy::new);

enum Handler {
    Multi(RouterMultiHandler),
    /// `None` once the handler has run: the receiver stays registered and discards messages.
    OneShot(Option<RouterOneShotHandler>),
}

enum Command {
    AddRoute(OpaqueIpcReceiver, Handler),
    Shutdown(crossbeam_channel::Sender<()>),
}

struct Comm {
    commands: crossbeam_channel::Sender<Command>,
    wakeup: IpcSender<()>,
    shutdown: bool,
    thread: Option<thread::JoinHandle<()>>,
}

/// A handle to a router thread: registers routes with it and shuts it down.
///
/// ```
/// use crossproc::{ipc, router::RouterProxy};
/// let router = RouterProxy::new();
/// let (tx, rx) = ipc::channel::<u32>().unwrap();
/// let (done_tx, done_rx) = crossbeam_channel::bounded(1);
/// router.add_typed_route(rx, Box::new(move |value| done_tx.send(value.unwrap()).unwrap()));
/// tx.send(5).unwrap();
/// assert_eq!(done_rx.recv().unwrap(), 5);
/// router.shutdown();
/// ```
pub struct RouterProxy {
    comm: Mutex<Comm>,
}

impl RouterProxy {
    /// Starts a router thread and returns its proxy.
    ///
    /// # Panics
    /// When the operating system cannot create the router's wakeup channel or thread.
    #[allow(clippy::new_without_default)]
    pub fn new() -> RouterProxy {
        let (wakeup, wakeup_receiver) = ipc::channel::<()>().expect("cannot create the router's wakeup channel");
        let (commands, command_receiver) = crossbeam_channel::unbounded();
        let mut set = IpcReceiverSet::new().expect("cannot create the router's receiver set");
        let wakeup_id = set.add(wakeup_receiver).expect("cannot register the router's wakeup channel");
        let thread = thread::Builder::new()
            .name("crossproc-router".into())
            .spawn(move || Router { set, wakeup_id, commands: command_receiver, handlers: HashMap::new() }.run())
            .expect("cannot start the router thread");
        RouterProxy { comm: Mutex::new(Comm { commands, wakeup, shutdown: false, thread: Some(thread) }) }
    }

    /// Calls `handler` with every raw message of `receiver` (for the crate's own streams).
    #[cfg(feature = "async")]
    pub(crate) fn add_raw_route(&self, receiver: OpaqueIpcReceiver, handler: RouterMultiHandler) {
        self.add_route(receiver, Handler::Multi(handler));
    }

    fn add_route(&self, receiver: OpaqueIpcReceiver, handler: Handler) {
        let comm = self.comm.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if comm.shutdown {
            return;
        }
        if comm.commands.send(Command::AddRoute(receiver, handler)).is_ok() {
            let _ = comm.wakeup.send(());
        }
    }

    /// Calls `callback` with every message `receiver` gets, decoded as a `T`. The callback is
    /// dropped when every sender of `receiver` is gone.
    pub fn add_typed_route<T>(&self, receiver: IpcReceiver<T>, mut callback: TypedRouterMultiHandler<T>)
    where
        T: Serialize + for<'de> Deserialize<'de> + 'static,
    {
        let handler = Handler::Multi(Box::new(move |message: IpcMessage| callback(message.to::<T>())));
        self.add_route(receiver.to_opaque(), handler);
    }

    /// Calls `callback` with the first message `receiver` gets. The receiver stays registered:
    /// later messages are discarded, and their sends succeed, until every sender is gone.
    ///
    /// ```
    /// use crossproc::{ipc, router::ROUTER};
    /// let (tx, rx) = ipc::channel::<u8>().unwrap();
    /// let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    /// ROUTER.add_typed_one_shot_route(rx, Box::new(move |value| done_tx.send(value.unwrap()).unwrap()));
    /// tx.send(3).unwrap();
    /// assert_eq!(done_rx.recv().unwrap(), 3);
    /// ```
    pub fn add_typed_one_shot_route<T>(&self, receiver: IpcReceiver<T>, callback: TypedRouterOneShotHandler<T>)
    where
        T: Serialize + for<'de> Deserialize<'de> + 'static,
    {
        let handler = Handler::OneShot(Some(Box::new(move |message: IpcMessage| callback(message.to::<T>()))));
        self.add_route(receiver.to_opaque(), handler);
    }

    /// Stops the router thread and waits until it has ended, every handler and receiver
    /// dropped. Calling it again does nothing; routes added afterwards are ignored. (Called by a
    /// handler, on the router thread itself, it stops the router without waiting for itself.)
    pub fn shutdown(&self) {
        let mut comm = self.comm.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if comm.shutdown {
            return;
        }
        comm.shutdown = true;
        let router = comm.thread.take().filter(|router| router.thread().id() != thread::current().id());
        let (ack, acked) = crossbeam_channel::bounded(1);
        if comm.commands.send(Command::Shutdown(ack)).is_ok() && comm.wakeup.send(()).is_ok() && router.is_some() {
            let _ = acked.recv();
        }
        if let Some(router) = router {
            let _ = router.join();
        }
    }

    /// Forwards every message of `ipc_receiver` into `crossbeam_sender`. Messages that fail to
    /// decode are dropped.
    pub fn route_ipc_receiver_to_crossbeam_sender<T>(
        &self,
        ipc_receiver: IpcReceiver<T>,
        crossbeam_sender: crossbeam_channel::Sender<T>,
    ) where
        T: for<'de> Deserialize<'de> + Serialize + Send + 'static,
    {
        self.add_typed_route(
            ipc_receiver,
            Box::new(move |message| {
                if let Ok(value) = message {
                    let _ = crossbeam_sender.send(value);
                }
            }),
        );
    }

    /// Forwards every message of `ipc_receiver` into a new crossbeam channel and returns its
    /// receiver, which disconnects when every sender of `ipc_receiver` is gone.
    pub fn route_ipc_receiver_to_new_crossbeam_receiver<T>(
        &self,
        ipc_receiver: IpcReceiver<T>,
    ) -> crossbeam_channel::Receiver<T>
    where
        T: for<'de> Deserialize<'de> + Serialize + Send + 'static,
    {
        let (sender, receiver) = crossbeam_channel::unbounded();
        self.route_ipc_receiver_to_crossbeam_sender(ipc_receiver, sender);
        receiver
    }
}

impl Drop for RouterProxy {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The router thread's state.
struct Router {
    set: IpcReceiverSet,
    wakeup_id: u64,
    commands: crossbeam_channel::Receiver<Command>,
    handlers: HashMap<u64, Handler>,
}

/// How long the router waits before it looks again at a route whose next message this process
/// has no descriptors for.
const OUT_OF_DESCRIPTORS_PAUSE: std::time::Duration = std::time::Duration::from_millis(5);

impl Router {
    fn run(mut self) {
        loop {
            let results = match self.set.select() {
                Ok(results) => results,
                // A route's next message waits for descriptors this process has none free for:
                // it stays queued, and is taken once the program closes some. Look again soon
                // rather than spin on it (or end every route).
                Err(error) if crate::sys::OutOfDescriptors::is(&error) => {
                    std::thread::sleep(OUT_OF_DESCRIPTORS_PAUSE);
                    continue;
                }
                Err(_) => return,
            };
            for result in results {
                match result {
                    IpcSelectionResult::MessageReceived(id, _) if id == self.wakeup_id => {
                        if !self.take_commands() {
                            return;
                        }
                    }
                    IpcSelectionResult::MessageReceived(id, message) => self.deliver(id, message),
                    IpcSelectionResult::ChannelClosed(id) => {
                        self.handlers.remove(&id);
                    }
                }
            }
        }
    }

    /// Applies every queued command; `false` means shut down now.
    fn take_commands(&mut self) -> bool {
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::AddRoute(receiver, handler) => {
                    if let Ok(id) = self.set.add_opaque(receiver) {
                        self.handlers.insert(id, handler);
                    }
                }
                Command::Shutdown(ack) => {
                    self.handlers.clear();
                    let _ = ack.send(());
                    return false;
                }
            }
        }
        true
    }

    /// Runs the route's handler on `message`. A handler that panics loses its route (the panic
    /// hook has already reported it); the other routes never notice.
    fn deliver(&mut self, id: u64, message: IpcMessage) {
        let Some(handler) = self.handlers.get_mut(&id) else { return };
        let ran = panic::catch_unwind(AssertUnwindSafe(|| match handler {
            Handler::Multi(handler) => handler(message),
            Handler::OneShot(handler) => {
                if let Some(handler) = handler.take() {
                    handler(message);
                }
            }
        }));
        if ran.is_err() {
            self.handlers.remove(&id);
            self.set.remove(id);
        }
    }
}
