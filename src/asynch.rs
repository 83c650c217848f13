//! Receivers as `futures` streams (feature `async`): [`IpcReceiver::to_stream`] and
//! [`IpcStream`], at the path `ipc-channel` gives them (`asynch`).
//!
//! Every stream is fed by one private router thread of its own, never by the public
//! [`ROUTER`](crate::router::ROUTER): a stream works whatever happened to the global router
//! (even after `ROUTER.shutdown()`). That thread only queues the raw messages; each one is
//! decoded in `poll_next`, by the task that polls the stream, so `T` needs no `Send`.

use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll, Waker};

use futures_core::stream::{FusedStream, Stream};
use serde::{Deserialize, Serialize};

use crate::error::SerDeError;
use crate::ipc::{IpcMessage, IpcReceiver};
use crate::router::RouterProxy;

/// The router thread that feeds every stream; private, so nothing can shut it down.
static STREAM_ROUTER: LazyLock<RouterProxy> = LazyLock::new(RouterProxy::new);

struct State {
    queue: VecDeque<IpcMessage>,
    waker: Option<Waker>,
    closed: bool,
}

type Shared = Arc<Mutex<State>>;

fn update(shared: &Shared, change: impl FnOnce(&mut State)) {
    let mut state = shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    change(&mut state);
    if let Some(waker) = state.waker.take() {
        waker.wake();
    }
}

/// Marks the stream closed when the router drops the route (every sender is gone).
struct CloseOnDrop(Shared);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        update(&self.0, |state| state.closed = true);
    }
}

/// The messages of an [`IpcReceiver`] as a stream that ends when every sender is gone; see
/// [`IpcReceiver::to_stream`]. It is a `FusedStream`: once it has ended, it stays ended.
///
/// ```
/// use futures::{FutureExt, StreamExt};
/// let (tx, rx) = crossproc::ipc::channel::<u8>().unwrap();
/// let mut stream: crossproc::asynch::IpcStream<u8> = rx.to_stream();
/// tx.send(4).unwrap();
/// futures::executor::block_on(async {
///     futures::select! {
///         value = stream.next() => assert_eq!(value.unwrap().unwrap(), 4),
///         complete => unreachable!(),
///     }
/// });
/// ```
pub struct IpcStream<T> {
    shared: Shared,
    ended: bool,
    phantom: PhantomData<fn() -> T>,
}

impl<T> IpcReceiver<T>
where
    T: for<'de> Deserialize<'de> + Serialize,
{
    /// Turns this receiver into a stream of decoded messages that ends when every sender is gone.
    ///
    /// ```
    /// use futures::StreamExt;
    /// let (tx, rx) = crossproc::ipc::channel::<u32>().unwrap();
    /// let mut stream = rx.to_stream();
    /// tx.send(1).unwrap();
    /// drop(tx);
    /// futures::executor::block_on(async {
    ///     assert_eq!(stream.next().await.unwrap().unwrap(), 1);
    ///     assert!(stream.next().await.is_none());
    /// });
    /// ```
    pub fn to_stream(self) -> IpcStream<T> {
        let shared: Shared = Arc::new(Mutex::new(State { queue: VecDeque::new(), waker: None, closed: false }));
        let guard = CloseOnDrop(shared.clone());
        let handler = Box::new(move |message| update(&guard.0, |state| state.queue.push_back(message)));
        STREAM_ROUTER.add_raw_route(self.to_opaque(), handler);
        IpcStream { shared, ended: false, phantom: PhantomData }
    }
}

impl<T> Stream for IpcStream<T>
where
    T: for<'de> Deserialize<'de> + Serialize,
{
    type Item = Result<T, SerDeError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let mut state = self.shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(message) = state.queue.pop_front() {
            return Poll::Ready(Some(message.to()));
        }
        if state.closed {
            drop(state);
            self.ended = true;
            return Poll::Ready(None);
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl<T> FusedStream for IpcStream<T>
where
    T: for<'de> Deserialize<'de> + Serialize,
{
    fn is_terminated(&self) -> bool {
        self.ended
    }
}

impl<T> fmt::Debug for IpcStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpcStream").field("ended", &self.ended).finish()
    }
}
