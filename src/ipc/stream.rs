//! `IpcReceiver::to_stream`: a receiver as a `futures_core::Stream` (feature `async`).
//!
//! The receiver is handed to the global [`ROUTER`](crate::router::ROUTER), whose thread decodes
//! each message and wakes the stream's task; the stream ends when every sender is gone.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use futures_core::Stream;
use serde::{Deserialize, Serialize};

use super::IpcReceiver;
use crate::error::SerDeError;
use crate::router::ROUTER;

struct State<T> {
    queue: VecDeque<Result<T, SerDeError>>,
    waker: Option<Waker>,
    closed: bool,
}

type Shared<T> = Arc<Mutex<State<T>>>;

fn update<T>(shared: &Shared<T>, change: impl FnOnce(&mut State<T>)) {
    let mut state = shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    change(&mut state);
    if let Some(waker) = state.waker.take() {
        waker.wake();
    }
}

/// Marks the stream closed when the router drops the route (every sender is gone).
struct CloseOnDrop<T>(Shared<T>);

impl<T> Drop for CloseOnDrop<T> {
    fn drop(&mut self) {
        update(&self.0, |state| state.closed = true);
    }
}

/// The messages of an [`IpcReceiver`] as a stream; see [`IpcReceiver::to_stream`].
pub struct IpcStream<T> {
    shared: Shared<T>,
}

impl<T> IpcReceiver<T>
where
    T: for<'de> Deserialize<'de> + Serialize + Send + 'static,
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
        let shared: Shared<T> = Arc::new(Mutex::new(State { queue: VecDeque::new(), waker: None, closed: false }));
        let guard = CloseOnDrop(shared.clone());
        ROUTER.add_typed_route(self, Box::new(move |message| update(&guard.0, |state| state.queue.push_back(message))));
        IpcStream { shared }
    }
}

impl<T> Stream for IpcStream<T> {
    type Item = Result<T, SerDeError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut state = self.shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(message) = state.queue.pop_front() {
            return Poll::Ready(Some(message));
        }
        if state.closed {
            return Poll::Ready(None);
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl<T> fmt::Debug for IpcStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IpcStream")
    }
}
